//! The receive path as the IPv4 and IPv6 readers run it (parse, validate,
//! loop check, HMAC verify, demultiplex, hand to the VHID's inbox), reachable
//! from benchmarks with the `bench` feature. No sockets: packets come from
//! the caller.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use carp_proto::packet::{Carrier, GROUP_V4};
use carp_proto::{Advert, Authenticator, HmacMode};
use tokio::sync::mpsc;

use crate::rx::{Check, Delivery, Demux, INBOX, VhidEntry};
use crate::spec::VhidKey;
use crate::stats::{DropCounters, VhidStats};

/// One peer's advertisement for one VHID, as it arrives.
#[derive(Debug, Clone)]
pub struct Packet {
    pub ifindex: u32,
    pub carrier: Carrier,
    pub payload: [u8; 36],
}

/// A demultiplexing table of synthetic VHIDs and their inboxes.
#[derive(Debug)]
pub struct ReceivePath {
    demux: Demux,
    inboxes: HashMap<(u32, u8), mpsc::Receiver<Delivery>>,
    auths: Vec<(u32, u8, Authenticator)>,
}

impl ReceivePath {
    /// `interfaces` interfaces (ifindex 1..) with VHIDs 1..=`per_interface`
    /// each, one IPv4 address per VHID, keyed `secret`.
    pub fn new(interfaces: u32, per_interface: u8, mode: HmacMode) -> ReceivePath {
        let mut demux = Demux::default();
        let mut inboxes = HashMap::new();
        let mut auths = Vec::new();
        for ifindex in 1..=interfaces {
            let own = IpAddr::V4(Ipv4Addr::new(10, 99, 0, 1));
            let link = demux.link_mut(ifindex);
            link.own.push(own);
            link.drops = Some((format!("eth{ifindex}"), Arc::new(DropCounters::default())));
            for vhid in 1..=per_interface {
                let vip = IpAddr::V4(Ipv4Addr::new(
                    10,
                    100,
                    u8::try_from(ifindex).unwrap_or(0),
                    vhid,
                ));
                let Ok(auth) = Authenticator::new(mode, b"secret", vhid, &[vip]) else {
                    continue;
                };
                let (tx, rx) = mpsc::channel(INBOX);
                let (commands, _) = mpsc::channel(1);
                let entry = VhidEntry {
                    key: VhidKey {
                        interface: format!("eth{ifindex}"),
                        vhid,
                    },
                    check: Check::Carp(Arc::new(auth.clone())),
                    inbox: tx,
                    commands,
                    stats: Arc::new(VhidStats::default()),
                    keepalives: Arc::default(),
                    peers: Arc::default(),
                };
                demux.link_mut(ifindex).vhids.insert(vhid, Arc::new(entry));
                inboxes.insert((ifindex, vhid), rx);
                auths.push((ifindex, vhid, auth));
            }
        }
        ReceivePath {
            demux,
            inboxes,
            auths,
        }
    }

    /// A valid advertisement from a peer for every VHID, in table order.
    pub fn packets(&self, counter: u64) -> Vec<Packet> {
        self.auths
            .iter()
            .map(|(ifindex, vhid, auth)| Packet {
                ifindex: *ifindex,
                carrier: Carrier {
                    ttl: 255,
                    src: IpAddr::V4(Ipv4Addr::new(10, 99, 0, 2)),
                    dst: IpAddr::V4(GROUP_V4),
                },
                payload: Advert {
                    vhid: *vhid,
                    advskew: 0,
                    advbase: 1,
                    demote: 0,
                    counter,
                    hmac: auth.sign(counter),
                }
                .to_bytes(),
            })
            .collect()
    }

    /// Runs one packet through the receive path and takes it out of the
    /// VHID's inbox again (as its task would); whether it was delivered.
    pub fn deliver(&mut self, p: &Packet) -> bool {
        let ok = self
            .demux
            .deliver(p.ifindex, &p.carrier, &p.payload)
            .is_ok();
        if let Some(rx) = self.inboxes.get_mut(&(p.ifindex, p.payload[1])) {
            while rx.try_recv().is_ok() {}
        }
        ok
    }
}
