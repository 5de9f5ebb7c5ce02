//! The receive path: every packet is checked once (carrier, header, VHID,
//! loop, HMAC) and handed to its VHID's task without ever blocking the
//! shared socket.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use carp_proto::packet::{self, Carrier};
use carp_proto::{Advert, Authenticator, DropReason};
use tokio::sync::mpsc::{self, error::TrySendError};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::socket::{RECV_BUF, Received, V4Socket, V6Socket};
use crate::spec::VhidKey;
use crate::stats::{DropCounters, VhidStats};
use crate::vhid::Command;

/// Capacity of a VHID's inbox. A stale advertisement is worthless, so a
/// full inbox drops rather than waits.
pub(crate) const INBOX: usize = 16;

/// At most one log line per (VHID or interface, reason) per this period.
const LOG_EVERY: Duration = Duration::from_secs(10);

/// A valid advertisement for one VHID.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Inbound {
    pub(crate) src: IpAddr,
    pub(crate) advert: Advert,
}

/// What the receiver knows about one running VHID.
#[derive(Debug)]
pub(crate) struct VhidEntry {
    pub(crate) key: VhidKey,
    pub(crate) auth: Authenticator,
    pub(crate) inbox: mpsc::Sender<Inbound>,
    pub(crate) commands: mpsc::Sender<Command>,
    pub(crate) stats: Arc<VhidStats>,
}

/// The demultiplexing table, replaced as a whole on reload.
#[derive(Debug, Default)]
pub(crate) struct Demux {
    pub(crate) vhids: HashMap<(u32, u8), Arc<VhidEntry>>,
    /// Our own source addresses per interface: a packet from one of them is
    /// our own advertisement looping back.
    pub(crate) own: HashMap<u32, Vec<IpAddr>>,
    /// Drops that belong to no known VHID, per configured interface.
    pub(crate) interfaces: HashMap<u32, (String, Arc<DropCounters>)>,
    /// Drops on interfaces we do not manage.
    pub(crate) other: Arc<DropCounters>,
}

/// The shared, swappable table.
pub(crate) type SharedDemux = Arc<RwLock<Arc<Demux>>>;

/// Where a drop was counted.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum DropScope {
    Vhid(VhidKey),
    Interface(u32),
}

impl Demux {
    fn count_unowned(&self, ifindex: u32, reason: DropReason) -> DropScope {
        match self.interfaces.get(&ifindex) {
            Some((_, c)) => c.add(reason),
            None => self.other.add(reason),
        }
        DropScope::Interface(ifindex)
    }

    /// Validate one packet and hand it to its VHID, counting any drop where
    /// it belongs (the VHID if the header names a known one, otherwise the
    /// interface).
    pub(crate) fn deliver(
        &self,
        ifindex: u32,
        carrier: &Carrier,
        payload: &[u8],
    ) -> Result<(), (DropScope, DropReason)> {
        let advert = match packet::check(carrier, payload, false) {
            Ok(a) => a,
            Err(reason) => {
                let entry = payload
                    .get(1)
                    .and_then(|vhid| self.vhids.get(&(ifindex, *vhid)));
                let scope = match entry {
                    Some(e) => {
                        e.stats.drops.add(reason);
                        DropScope::Vhid(e.key.clone())
                    }
                    None => self.count_unowned(ifindex, reason),
                };
                return Err((scope, reason));
            }
        };
        let Some(entry) = self.vhids.get(&(ifindex, advert.vhid)) else {
            return Err((
                self.count_unowned(ifindex, DropReason::UnknownVhid),
                DropReason::UnknownVhid,
            ));
        };
        let drop = |reason: DropReason| {
            entry.stats.drops.add(reason);
            Err((DropScope::Vhid(entry.key.clone()), reason))
        };
        let own_src = self
            .own
            .get(&ifindex)
            .is_some_and(|a| a.contains(&carrier.src));
        if own_src || entry.stats.is_own_counter(advert.counter) {
            return drop(DropReason::OwnPacket);
        }
        if !entry.auth.verify(advert.counter, &advert.hmac) {
            return drop(DropReason::BadHmac);
        }
        match entry.inbox.try_send(Inbound {
            src: carrier.src,
            advert,
        }) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(_)) => drop(DropReason::InboxFull),
            // the task is being replaced by a reload; the new table follows
            Err(TrySendError::Closed(_)) => Ok(()),
        }
    }
}

/// Rate limit for drop log lines.
#[derive(Debug, Default)]
pub(crate) struct DropLog {
    last: HashMap<(DropScope, DropReason), Instant>,
}

impl DropLog {
    pub(crate) fn log(&mut self, demux: &Demux, scope: DropScope, reason: DropReason, src: IpAddr) {
        let now = Instant::now();
        let key = (scope, reason);
        if self
            .last
            .get(&key)
            .is_some_and(|t| now.duration_since(*t) < LOG_EVERY)
        {
            return;
        }
        // keep the map bounded by forgetting expired entries
        if self.last.len() > 4096 {
            self.last.retain(|_, t| now.duration_since(*t) < LOG_EVERY);
        }
        let (scope, reason) = key;
        match &scope {
            DropScope::Vhid(k) => {
                if reason == DropReason::BadHmac {
                    tracing::info!(interface = %k.interface, vhid = k.vhid, %src, reason = reason.as_str(),
                        "dropped advertisement: {reason} (further drops for this reason counted silently for 10 s)");
                } else {
                    tracing::debug!(interface = %k.interface, vhid = k.vhid, %src, reason = reason.as_str(),
                        "dropped advertisement: {reason}");
                }
            }
            DropScope::Interface(ifindex) => {
                let name = demux
                    .interfaces
                    .get(ifindex)
                    .map_or("-", |(n, _)| n.as_str());
                tracing::debug!(interface = name, ifindex, %src, reason = reason.as_str(), "dropped packet: {reason}");
            }
        }
        self.last.insert((scope, reason), now);
    }
}

pub(crate) fn current(demux: &SharedDemux) -> Arc<Demux> {
    match demux.read() {
        Ok(g) => Arc::clone(&g),
        Err(poisoned) => Arc::clone(&poisoned.into_inner()),
    }
}

fn handle(demux: &SharedDemux, log: &mut DropLog, buf: &[u8], r: Received) {
    let table = current(demux);
    let payload = buf.get(r.payload.0..r.payload.1).unwrap_or(&[]);
    if let Err((scope, reason)) = table.deliver(r.ifindex, &r.carrier, payload) {
        log.log(&table, scope, reason, r.carrier.src);
    }
}

fn recv_error(family: &str, e: &std::io::Error) {
    tracing::warn!(family, error = %e, "receive error on the CARP socket");
}

/// Read the IPv4 socket until cancelled.
pub(crate) async fn run_v4(sock: Arc<V4Socket>, demux: SharedDemux, cancel: CancellationToken) {
    let mut buf = vec![0u8; RECV_BUF];
    let mut log = DropLog::default();
    loop {
        let r = tokio::select! {
            _ = cancel.cancelled() => return,
            r = sock.recv(&mut buf) => r,
        };
        match r {
            Ok(Some(r)) => handle(&demux, &mut log, &buf, r),
            Ok(None) => current(&demux).other.add(DropReason::TooShort),
            Err(e) => {
                recv_error("IPv4", &e);
                // a persistent error must not spin
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Read the IPv6 socket until cancelled.
pub(crate) async fn run_v6(sock: Arc<V6Socket>, demux: SharedDemux, cancel: CancellationToken) {
    let mut buf = vec![0u8; RECV_BUF];
    let mut log = DropLog::default();
    loop {
        let r = tokio::select! {
            _ = cancel.cancelled() => return,
            r = sock.recv(&mut buf) => r,
        };
        match r {
            Ok(Some(r)) => handle(&demux, &mut log, &buf, r),
            Ok(None) => current(&demux).other.add(DropReason::TooShort),
            Err(e) => {
                recv_error("IPv6", &e);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}
