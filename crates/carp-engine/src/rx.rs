//! The receive path: every packet is checked once (carrier, header, VHID,
//! loop, HMAC, or VRRP's checks for a VRRP VHID) and handed to its VHID's
//! task without ever blocking the shared socket. CARP and VRRP share the
//! sockets: the VHID the packet's number names on its interface decides
//! which protocol's checks it gets, and a packet of the other protocol is
//! dropped there (counted as `vrrp` on a CARP VHID, `carp` on a VRRP one).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use carp_proto::packet::{self, Carrier};
use carp_proto::vrrp;
use carp_proto::{Advert, Authenticator, DropReason};
use tokio::sync::mpsc::{self, error::TrySendError};
use tokio_util::sync::CancellationToken;

use crate::clock::std_now;
use crate::keepalive::Keepalives;
use crate::log_limit::LogLimiter;
use crate::peers::Peers;
use crate::socket::{RECV_BATCH, Received, RecvBatch, V4Socket, V6Socket};
use crate::spec::VhidKey;
use crate::stats::{DropCounters, VhidStats};
use crate::vhid::Command;

/// Capacity of a VHID's inbox. A stale advertisement is worthless, so a
/// full inbox drops rather than waits.
pub(crate) const INBOX: usize = 16;

/// At most one log line per (VHID or interface, reason) per this period.
const LOG_EVERY: Duration = Duration::from_secs(10);

/// A valid CARP advertisement for one VHID.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Inbound {
    pub(crate) src: IpAddr,
    pub(crate) advert: Advert,
}

/// A valid VRRP advertisement for one virtual router.
#[derive(Debug, Clone)]
pub(crate) struct VrrpInbound {
    pub(crate) src: IpAddr,
    pub(crate) advert: vrrp::Advert,
}

/// What a VHID's inbox carries. Boxed: a tokio channel allocates room for
/// 32 messages with each VHID's inbox, whatever its capacity, and most
/// advertisements never take it (a BACKUP's keepalives are noted aside).
#[derive(Debug, Clone)]
pub(crate) enum Delivery {
    Carp(Box<Inbound>),
    Vrrp(Box<VrrpInbound>),
}

/// How the receiver validates one VHID's advertisements.
#[derive(Debug)]
pub(crate) enum Check {
    /// CARP: the HMAC (the VHID task signs with the same authenticator).
    Carp(Arc<Authenticator>),
    /// VRRP: what they must carry (boxed: larger than the CARP check, and
    /// one per entry).
    Vrrp(Box<VrrpCheck>),
}

/// A VRRP virtual router's receive-side checks
/// ([`vrrp::Advert::check_against`]).
#[derive(Debug)]
pub(crate) struct VrrpCheck {
    pub(crate) version: vrrp::Version,
    pub(crate) priority: u8,
    pub(crate) interval_cs: u16,
    pub(crate) auth: vrrp::Auth,
    /// The virtual addresses of each family.
    pub(crate) v4: vrrp::Addresses,
    pub(crate) v6: vrrp::Addresses,
}

impl VrrpCheck {
    fn expected(&self, ipv6: bool) -> vrrp::Expected<'_> {
        vrrp::Expected {
            version: self.version,
            priority: self.priority,
            interval_cs: self.interval_cs,
            auth: &self.auth,
            addresses: if ipv6 { &self.v6 } else { &self.v4 },
        }
    }
}

/// What the receiver knows about one running VHID.
#[derive(Debug)]
pub(crate) struct VhidEntry {
    pub(crate) key: VhidKey,
    pub(crate) check: Check,
    pub(crate) inbox: mpsc::Sender<Delivery>,
    pub(crate) commands: mpsc::Sender<Command>,
    pub(crate) stats: Arc<VhidStats>,
    pub(crate) keepalives: Arc<Keepalives>,
    /// The peers heard; the receiver notes the keepalives it keeps from
    /// the task.
    pub(crate) peers: Arc<Peers>,
}

/// The demultiplexing table: one part per interface (by index), so that a
/// change to the VHIDs of one interface replaces that part and shares the
/// others with the table before.
#[derive(Debug, Default)]
pub(crate) struct Demux {
    pub(crate) links: HashMap<u32, Arc<LinkDemux>>,
    /// Drops on interfaces we do not manage.
    pub(crate) other: Arc<DropCounters>,
}

/// What the receiver knows of the VHIDs running on one interface.
#[derive(Debug, Default, Clone)]
pub(crate) struct LinkDemux {
    pub(crate) vhids: VhidSlots,
    /// Our own source addresses here: a packet from one of them is our own
    /// advertisement looping back.
    pub(crate) own: Vec<IpAddr>,
    /// The interface's name, and its drops that belong to no known VHID.
    pub(crate) drops: Option<(String, Arc<DropCounters>)>,
    /// VHIDs with unicast peers.
    pub(crate) unicast: HashMap<u8, Unicast>,
}

/// The entries of one interface's VHIDs, indexed by VHID id: a packet's
/// entry is found without hashing.
#[derive(Debug, Clone)]
pub(crate) struct VhidSlots(Box<[Option<Arc<VhidEntry>>; 256]>);

impl Default for VhidSlots {
    fn default() -> VhidSlots {
        VhidSlots(Box::new([const { None }; 256]))
    }
}

impl VhidSlots {
    pub(crate) fn get(&self, vhid: u8) -> Option<&Arc<VhidEntry>> {
        self.0[usize::from(vhid)].as_ref()
    }

    pub(crate) fn insert(&mut self, vhid: u8, entry: Arc<VhidEntry>) {
        self.0[usize::from(vhid)] = Some(entry);
    }

    pub(crate) fn values(&self) -> impl Iterator<Item = &Arc<VhidEntry>> {
        self.0.iter().flatten()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.values().next().is_none()
    }
}

/// The receive rules of a VHID with unicast peers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Unicast {
    /// Only advertisements from these sources are accepted.
    pub(crate) peers: Vec<IpAddr>,
    /// Skip the TTL / hop limit check for advertisements sent to a unicast
    /// address (routed peers; the source check stands instead).
    pub(crate) relax_ttl: bool,
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
    /// The entry of VHID `vhid` on interface `ifindex`.
    pub(crate) fn entry(&self, ifindex: u32, vhid: u8) -> Option<&Arc<VhidEntry>> {
        self.links.get(&ifindex)?.vhids.get(vhid)
    }

    /// The part of interface `ifindex`, made if missing, to fill in a table
    /// by hand (the receive benchmark, tests).
    #[cfg(any(test, feature = "bench"))]
    pub(crate) fn link_mut(&mut self, ifindex: u32) -> &mut LinkDemux {
        Arc::make_mut(self.links.entry(ifindex).or_default())
    }

    /// The name of interface `ifindex` if VHIDs run on it.
    fn name(&self, ifindex: u32) -> Option<&str> {
        let link = self.links.get(&ifindex)?;
        link.drops.as_ref().map(|(name, _)| name.as_str())
    }

    fn count_unowned(&self, ifindex: u32, reason: DropReason) -> DropScope {
        let link = self.links.get(&ifindex);
        match link.and_then(|l| l.drops.as_ref()) {
            Some((_, c)) => c.add(reason),
            None => self.other.add(reason),
        }
        DropScope::Interface(ifindex)
    }

    /// Start loading what [`Demux::deliver`] reads of the VHID of each
    /// packet of a batch (`keys`: interface and VHID id), so that the cache
    /// misses of a batch overlap instead of coming one after another: with
    /// many VHIDs, a VHID's entry, counters, peers and keys were last read
    /// an interval ago and are no longer cached.
    pub(crate) fn warm(&self, keys: impl Iterator<Item = (u32, u8)>) {
        let mut entries: [Option<&VhidEntry>; RECV_BATCH] = [None; RECV_BATCH];
        for (slot, key) in entries.iter_mut().zip(keys) {
            *slot = self.entry(key.0, key.1).map(|e| {
                prefetch(Arc::as_ptr(e));
                &**e
            });
        }
        for e in entries.iter().flatten() {
            prefetch(Arc::as_ptr(&e.stats));
            prefetch(Arc::as_ptr(&e.keepalives));
            prefetch(Arc::as_ptr(&e.peers));
            if let Check::Carp(auth) = &e.check {
                prefetch(Arc::as_ptr(auth));
            }
        }
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
        let link = self.links.get(&ifindex).map(|l| &**l);
        let unicast = payload.get(1).and_then(|vhid| link?.unicast.get(vhid));
        let relax_ttl = unicast.is_some_and(|u| u.relax_ttl) && !carrier.dst.is_multicast();
        let named = payload.get(1).and_then(|vhid| link?.vhids.get(*vhid));
        if let Some(entry) = named {
            if let Check::Vrrp(check) = &entry.check {
                return self.deliver_vrrp(link, entry, check, carrier, payload, relax_ttl);
            }
        }
        let advert = match packet::check(carrier, payload, relax_ttl) {
            Ok(a) => a,
            Err(reason) => {
                let scope = match named {
                    Some(e) => {
                        e.stats.drops.add(reason);
                        DropScope::Vhid(e.key.clone())
                    }
                    None => self.count_unowned(ifindex, reason),
                };
                return Err((scope, reason));
            }
        };
        let Some(entry) = link.and_then(|l| l.vhids.get(advert.vhid)) else {
            return Err((
                self.count_unowned(ifindex, DropReason::UnknownVhid),
                DropReason::UnknownVhid,
            ));
        };
        let drop = |reason: DropReason| {
            entry.stats.drops.add(reason);
            Err((DropScope::Vhid(entry.key.clone()), reason))
        };
        let own_src = link.is_some_and(|l| l.own.contains(&carrier.src));
        if own_src || entry.stats.is_own_counter(advert.counter) {
            return drop(DropReason::OwnPacket);
        }
        if unicast.is_some_and(|u| !u.peers.contains(&carrier.src)) {
            return drop(DropReason::NotPeer);
        }
        // (a VRRP VHID took its packets above)
        let Check::Carp(auth) = &entry.check else {
            return drop(DropReason::Carp);
        };
        if !auth.verify(advert.counter, &advert.hmac) {
            return drop(DropReason::BadHmac);
        }
        let now = std_now();
        if entry.keepalives.note(now, carrier.src, &advert) {
            entry.peers.heard(now, carrier.src, &advert);
            entry.stats.received.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        }
        let delivery = Delivery::Carp(Box::new(Inbound {
            src: carrier.src,
            advert,
        }));
        match entry.inbox.try_send(delivery) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(_)) => drop(DropReason::InboxFull),
            // the task is being replaced by a reload; the new table follows
            Err(TrySendError::Closed(_)) => Ok(()),
        }
    }

    /// The VRRP checks, in order: [`vrrp::check`] (CARP, length, TTL,
    /// version, type, count, checksum, interval, authentication type), our
    /// own packet looped back, a unicast VHID's peers, then
    /// [`vrrp::Advert::check_against`] (owner, version, VRRPv2
    /// authentication and interval, addresses).
    fn deliver_vrrp(
        &self,
        link: Option<&LinkDemux>,
        entry: &VhidEntry,
        check: &VrrpCheck,
        carrier: &Carrier,
        payload: &[u8],
        relax_ttl: bool,
    ) -> Result<(), (DropScope, DropReason)> {
        let drop = |reason: DropReason| {
            entry.stats.drops.add(reason);
            Err((DropScope::Vhid(entry.key.clone()), reason))
        };
        let advert = match vrrp::check(carrier, payload, relax_ttl) {
            Ok(a) => a,
            Err(reason) => return drop(reason),
        };
        let own_src = link.is_some_and(|l| l.own.contains(&carrier.src));
        if own_src {
            return drop(DropReason::OwnPacket);
        }
        let unicast = link.and_then(|l| l.unicast.get(&advert.vrid));
        if unicast.is_some_and(|u| !u.peers.contains(&carrier.src)) {
            return drop(DropReason::NotPeer);
        }
        if let Err(reason) = advert.check_against(&check.expected(carrier.src.is_ipv6())) {
            return drop(reason);
        }
        let delivery = Delivery::Vrrp(Box::new(VrrpInbound {
            src: carrier.src,
            advert,
        }));
        match entry.inbox.try_send(delivery) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(_)) => drop(DropReason::InboxFull),
            Err(TrySendError::Closed(_)) => Ok(()),
        }
    }
}

/// Drop log lines, at most one per (VHID or interface, reason) per
/// [`LOG_EVERY`].
#[derive(Debug)]
pub(crate) struct DropLog {
    limit: LogLimiter<(DropScope, DropReason)>,
}

impl Default for DropLog {
    fn default() -> DropLog {
        DropLog {
            limit: LogLimiter::new(LOG_EVERY),
        }
    }
}

impl DropLog {
    pub(crate) fn log(&mut self, demux: &Demux, scope: DropScope, reason: DropReason, src: IpAddr) {
        let key = (scope, reason);
        if !self.limit.allow(&key) {
            return;
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
                let name = demux.name(*ifindex).unwrap_or("-");
                tracing::debug!(interface = name, ifindex, %src, reason = reason.as_str(), "dropped packet: {reason}");
            }
        }
    }
}

pub(crate) fn current(demux: &SharedDemux) -> Arc<Demux> {
    match demux.read() {
        Ok(g) => Arc::clone(&g),
        Err(poisoned) => Arc::clone(&poisoned.into_inner()),
    }
}

/// The CARP or VRRP message of `r` in the buffer it was read into.
fn payload<'a>(buf: &'a [u8], r: &Received) -> &'a [u8] {
    buf.get(r.payload.0..r.payload.1).unwrap_or(&[])
}

fn handle(table: &Demux, log: &mut DropLog, buf: &[u8], r: Received) {
    if let Err((scope, reason)) = table.deliver(r.ifindex, &r.carrier, payload(buf, &r)) {
        log.log(table, scope, reason, r.carrier.src);
    }
}

/// Ask the CPU to start loading the cache lines at `p` (the first two, for
/// an object larger than one), without waiting for them.
fn prefetch<T>(p: *const T) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        let first = p.cast::<i8>();
        // SAFETY: SSE is part of every x86_64 CPU, and a prefetch reads
        // nothing the program sees (nor faults on any address).
        unsafe {
            _mm_prefetch::<_MM_HINT_T0>(first);
            if std::mem::size_of::<T>() > 64 {
                _mm_prefetch::<_MM_HINT_T0>(first.wrapping_add(64));
            }
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// One of the shared CARP sockets, as the receiver reads it.
pub(crate) trait CarpSocket: Send + Sync + 'static {
    /// For log lines.
    const FAMILY: &'static str;

    /// Wait for packets and read some into `batch`; how many.
    fn recv_batch(
        &self,
        batch: &mut RecvBatch,
    ) -> impl Future<Output = std::io::Result<usize>> + Send;
}

impl CarpSocket for V4Socket {
    const FAMILY: &'static str = "IPv4";

    fn recv_batch(
        &self,
        batch: &mut RecvBatch,
    ) -> impl Future<Output = std::io::Result<usize>> + Send {
        V4Socket::recv_batch(self, batch)
    }
}

impl CarpSocket for V6Socket {
    const FAMILY: &'static str = "IPv6";

    fn recv_batch(
        &self,
        batch: &mut RecvBatch,
    ) -> impl Future<Output = std::io::Result<usize>> + Send {
        V6Socket::recv_batch(self, batch)
    }
}

/// Read one shared socket until cancelled.
pub(crate) async fn run<S: CarpSocket>(
    sock: Arc<S>,
    demux: SharedDemux,
    cancel: CancellationToken,
) {
    let mut batch = RecvBatch::new();
    let mut log = DropLog::default();
    loop {
        let r = tokio::select! {
            _ = cancel.cancelled() => return,
            r = sock.recv_batch(&mut batch) => r,
        };
        match r {
            Ok(n) => {
                let table = current(&demux);
                let packets = || batch.got.iter().zip(&batch.bufs).take(n);
                table.warm(packets().filter_map(|(got, buf)| {
                    let r = got.as_ref()?;
                    Some((r.ifindex, *payload(buf, r).get(1)?))
                }));
                for (got, buf) in packets() {
                    match got {
                        Some(r) => handle(&table, &mut log, buf, *r),
                        None => table.other.add(DropReason::TooShort),
                    }
                }
            }
            Err(e) => {
                tracing::warn!(family = S::FAMILY, error = %e, "receive error on the CARP socket");
                // a persistent error must not spin
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use carp_proto::HmacMode;

    use super::*;
    use crate::stats::DropCounters;

    const IF: u32 = 7;
    const VHID: u8 = 5;
    const PEER: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2));
    const OURS: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));
    const GROUP: IpAddr = IpAddr::V4(Ipv4Addr::new(224, 0, 0, 18));

    fn auth() -> Authenticator {
        Authenticator::new(
            HmacMode::Bsd,
            b"secret",
            VHID,
            &[IpAddr::V4(Ipv4Addr::new(10, 0, 0, 100))],
        )
        .unwrap()
    }

    struct Fixture {
        demux: Demux,
        inbox: mpsc::Receiver<Delivery>,
        stats: Arc<VhidStats>,
        iface: Arc<DropCounters>,
    }

    fn fixture() -> Fixture {
        let (tx, inbox) = mpsc::channel(INBOX);
        let (cmd, _) = mpsc::channel(1);
        let stats = Arc::new(VhidStats::default());
        let iface = Arc::new(DropCounters::default());
        let entry = VhidEntry {
            key: VhidKey {
                interface: "eth0".into(),
                vhid: VHID,
            },
            check: Check::Carp(Arc::new(auth())),
            inbox: tx,
            commands: cmd,
            stats: Arc::clone(&stats),
            keepalives: Arc::default(),
            peers: Arc::default(),
        };
        let mut demux = Demux::default();
        let link = demux.link_mut(IF);
        link.vhids.insert(VHID, Arc::new(entry));
        link.own.push(OURS);
        link.drops = Some(("eth0".into(), Arc::clone(&iface)));
        Fixture {
            demux,
            inbox,
            stats,
            iface,
        }
    }

    fn carp(d: Delivery) -> Inbound {
        match d {
            Delivery::Carp(i) => *i,
            Delivery::Vrrp(v) => panic!("VRRP delivered: {v:?}"),
        }
    }

    const VRID: u8 = 9;

    fn vip() -> vrrp::Addresses {
        vrrp::Addresses::V4(vec![Ipv4Addr::new(10, 0, 0, 100)])
    }

    /// VRRPv3 VRID 9, priority 100, 1 s, beside CARP VHID 5 on `IF`.
    fn with_vrrp(f: &mut Fixture) -> (mpsc::Receiver<Delivery>, Arc<VhidStats>) {
        let (tx, inbox) = mpsc::channel(INBOX);
        let (cmd, _) = mpsc::channel(1);
        let stats = Arc::new(VhidStats::default());
        let entry = VhidEntry {
            key: VhidKey {
                interface: "eth0".into(),
                vhid: VRID,
            },
            check: Check::Vrrp(Box::new(VrrpCheck {
                version: vrrp::Version::V3,
                priority: 100,
                interval_cs: 100,
                auth: vrrp::Auth::None,
                v4: vip(),
                v6: vrrp::Addresses::V6(Vec::new()),
            })),
            inbox: tx,
            commands: cmd,
            stats: Arc::clone(&stats),
            keepalives: Arc::default(),
            peers: Arc::default(),
        };
        f.demux.link_mut(IF).vhids.insert(VRID, Arc::new(entry));
        (inbox, stats)
    }

    fn vrrp_advert(vrid: u8, addresses: vrrp::Addresses) -> Vec<u8> {
        vrrp_advert_from(PEER, vrid, addresses)
    }

    fn vrrp_advert_from(src: IpAddr, vrid: u8, addresses: vrrp::Addresses) -> Vec<u8> {
        vrrp::Advert {
            version: vrrp::Version::V3,
            vrid,
            priority: 150,
            interval_cs: 100,
            auth: vrrp::Auth::None,
            addresses,
        }
        .to_bytes(src, GROUP)
    }

    #[test]
    fn each_protocol_reaches_its_own_vhid_only() {
        let mut f = fixture();
        let (mut inbox, stats) = with_vrrp(&mut f);
        f.demux
            .deliver(IF, &carrier(255, PEER), &vrrp_advert(VRID, vip()))
            .unwrap();
        match inbox.try_recv().unwrap() {
            Delivery::Vrrp(v) => assert_eq!((v.src, v.advert.priority), (PEER, 150)),
            Delivery::Carp(c) => panic!("CARP delivered: {c:?}"),
        }
        // CARP for the VRRP VHID, VRRP for the CARP one
        let (_, reason) = f
            .demux
            .deliver(IF, &carrier(255, PEER), &advert(VRID, 1))
            .unwrap_err();
        assert_eq!(reason, DropReason::Carp);
        assert_eq!(stats.drops.get(DropReason::Carp), 1);
        let (_, reason) = f
            .demux
            .deliver(IF, &carrier(255, PEER), &vrrp_advert(VHID, vip()))
            .unwrap_err();
        assert_eq!(reason, DropReason::Vrrp);
        assert_eq!(f.stats.drops.get(DropReason::Vrrp), 1);
    }

    #[test]
    fn vrrp_drops_are_counted_on_the_virtual_router() {
        let mut f = fixture();
        let (mut inbox, stats) = with_vrrp(&mut f);
        let good = vrrp_advert(VRID, vip());
        let mut bad_sum = good.clone();
        bad_sum[7] ^= 1;
        let other = vrrp::Addresses::V4(vec![Ipv4Addr::new(10, 0, 0, 101)]);
        for (c, bytes, reason) in [
            (carrier(254, PEER), good.clone(), DropReason::BadTtl),
            (carrier(255, PEER), bad_sum, DropReason::BadChecksum),
            (
                carrier(255, PEER),
                vrrp_advert(VRID, other),
                DropReason::AddressMismatch,
            ),
            (
                carrier(255, OURS),
                vrrp_advert_from(OURS, VRID, vip()),
                DropReason::OwnPacket,
            ),
        ] {
            let (scope, got) = f.demux.deliver(IF, &c, &bytes).unwrap_err();
            assert_eq!(got, reason);
            assert!(matches!(scope, DropScope::Vhid(ref k) if k.vhid == VRID));
            assert_eq!(stats.drops.get(reason), 1);
        }
        assert!(inbox.try_recv().is_err());
    }

    /// No RFC 9568 mixed mode (8.4): a VRRPv3 virtual router takes no
    /// VRRPv2 advertisement, however well formed.
    #[test]
    fn a_vrrpv3_router_drops_vrrpv2_advertisements_as_bad_version() {
        let mut f = fixture();
        let (mut inbox, stats) = with_vrrp(&mut f);
        let v2 = vrrp::Advert {
            version: vrrp::Version::V2,
            vrid: VRID,
            priority: 150,
            interval_cs: 100,
            auth: vrrp::Auth::None,
            addresses: vip(),
        }
        .to_bytes(PEER, GROUP);
        let (_, reason) = f.demux.deliver(IF, &carrier(255, PEER), &v2).unwrap_err();
        assert_eq!(reason, DropReason::BadVersion);
        assert_eq!(stats.drops.get(DropReason::BadVersion), 1);
        assert!(inbox.try_recv().is_err());
    }

    fn advert(vhid: u8, counter: u64) -> [u8; 36] {
        Advert {
            vhid,
            advskew: 0,
            advbase: 1,
            demote: 0,
            counter,
            hmac: auth().sign(counter),
        }
        .to_bytes()
    }

    fn carrier(ttl: u8, src: IpAddr) -> Carrier {
        Carrier {
            ttl,
            src,
            dst: GROUP,
        }
    }

    #[test]
    fn warming_a_batch_of_known_and_unknown_vhids_changes_no_delivery() {
        let mut f = fixture();
        let (_inbox, _stats) = with_vrrp(&mut f);
        // more keys than a batch holds, known (CARP and VRRP) and unknown
        let keys = (0..=u8::MAX).map(|id| (IF, id)).chain([(IF + 1, VHID)]);
        f.demux.warm(keys);
        f.demux
            .deliver(IF, &carrier(255, PEER), &advert(VHID, 9))
            .unwrap();
        assert_eq!(carp(f.inbox.try_recv().unwrap()).advert.counter, 9);
        assert!(f.stats.drops.snapshot().is_empty());
    }

    #[test]
    fn valid_advert_reaches_the_inbox() {
        let mut f = fixture();
        f.demux
            .deliver(IF, &carrier(255, PEER), &advert(VHID, 9))
            .unwrap();
        let got = carp(f.inbox.try_recv().unwrap());
        assert_eq!(got.src, PEER);
        assert_eq!(got.advert.counter, 9);
        assert!(f.stats.drops.snapshot().is_empty());
    }

    #[test]
    fn unknown_vhid_and_interface_count_per_interface() {
        let f = fixture();
        let (scope, reason) = f
            .demux
            .deliver(IF, &carrier(255, PEER), &advert(6, 1))
            .unwrap_err();
        assert_eq!(
            (scope, reason),
            (DropScope::Interface(IF), DropReason::UnknownVhid)
        );
        assert_eq!(f.iface.get(DropReason::UnknownVhid), 1);
        f.demux
            .deliver(99, &carrier(255, PEER), &advert(VHID, 1))
            .unwrap_err();
        assert_eq!(f.demux.other.get(DropReason::UnknownVhid), 1);
        assert!(f.stats.drops.snapshot().is_empty());
    }

    #[test]
    fn header_errors_count_on_the_named_vhid() {
        let f = fixture();
        let (scope, reason) = f
            .demux
            .deliver(IF, &carrier(64, PEER), &advert(VHID, 1))
            .unwrap_err();
        assert_eq!(reason, DropReason::BadTtl);
        assert!(matches!(scope, DropScope::Vhid(ref k) if k.vhid == VHID));
        let mut bad = advert(VHID, 1);
        bad[7] ^= 0xff;
        assert_eq!(
            f.demux
                .deliver(IF, &carrier(255, PEER), &bad)
                .unwrap_err()
                .1,
            DropReason::BadChecksum
        );
        assert_eq!(f.stats.drops.get(DropReason::BadTtl), 1);
        assert_eq!(f.stats.drops.get(DropReason::BadChecksum), 1);
    }

    #[test]
    fn odd_payloads_never_panic() {
        let f = fixture();
        for len in 0..64 {
            let payload = vec![0x21; len];
            let _ = f.demux.deliver(IF, &carrier(255, PEER), &payload);
        }
        // a payload too short to name a VHID counts on the interface
        let (scope, reason) = f
            .demux
            .deliver(IF, &carrier(255, PEER), &[0x21])
            .unwrap_err();
        assert_eq!(
            (scope, reason),
            (DropScope::Interface(IF), DropReason::TooShort)
        );
    }

    #[test]
    fn own_packets_are_dropped() {
        let f = fixture();
        assert_eq!(
            f.demux
                .deliver(IF, &carrier(255, OURS), &advert(VHID, 1))
                .unwrap_err()
                .1,
            DropReason::OwnPacket
        );
        f.stats.set_last_counter(77);
        assert_eq!(
            f.demux
                .deliver(IF, &carrier(255, PEER), &advert(VHID, 77))
                .unwrap_err()
                .1,
            DropReason::OwnPacket
        );
        assert_eq!(f.stats.drops.get(DropReason::OwnPacket), 2);
    }

    #[test]
    fn bad_hmac_is_dropped() {
        let f = fixture();
        let mut a = Advert::parse(&advert(VHID, 3)).unwrap();
        a.hmac[0] ^= 1;
        assert_eq!(
            f.demux
                .deliver(IF, &carrier(255, PEER), &a.to_bytes())
                .unwrap_err()
                .1,
            DropReason::BadHmac
        );
        assert_eq!(f.stats.drops.get(DropReason::BadHmac), 1);
    }

    /// Each VHID's inbox holds room for 32 of these from its start.
    #[test]
    fn an_inbox_message_is_two_words() {
        assert_eq!(std::mem::size_of::<Delivery>(), 16);
    }

    #[test]
    fn full_inbox_drops_instead_of_blocking() {
        let f = fixture();
        for i in 0..INBOX as u64 {
            f.demux
                .deliver(IF, &carrier(255, PEER), &advert(VHID, i))
                .unwrap();
        }
        let (_, reason) = f
            .demux
            .deliver(IF, &carrier(255, PEER), &advert(VHID, 100))
            .unwrap_err();
        assert_eq!(reason, DropReason::InboxFull);
        assert_eq!(f.stats.drops.get(DropReason::InboxFull), 1);
    }

    fn unicast(f: &mut Fixture, relax_ttl: bool) {
        f.demux.link_mut(IF).unicast.insert(
            VHID,
            Unicast {
                peers: vec![PEER],
                relax_ttl,
            },
        );
    }

    fn to_us(ttl: u8, src: IpAddr) -> Carrier {
        Carrier {
            ttl,
            src,
            dst: OURS,
        }
    }

    #[test]
    fn unicast_accepts_only_peers() {
        let mut f = fixture();
        unicast(&mut f, true);
        let stranger = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 9));
        f.demux
            .deliver(IF, &to_us(255, PEER), &advert(VHID, 1))
            .unwrap();
        // to the group as well as to us: the source decides
        for c in [to_us(255, stranger), carrier(255, stranger)] {
            let (scope, reason) = f.demux.deliver(IF, &c, &advert(VHID, 2)).unwrap_err();
            assert_eq!(reason, DropReason::NotPeer);
            assert!(matches!(scope, DropScope::Vhid(ref k) if k.vhid == VHID));
        }
        assert_eq!(f.stats.drops.get(DropReason::NotPeer), 2);
        assert_eq!(carp(f.inbox.try_recv().unwrap()).src, PEER);
    }

    #[test]
    fn unicast_ttl_is_relaxed_unless_strict_or_multicast() {
        let mut f = fixture();
        unicast(&mut f, true);
        f.demux
            .deliver(IF, &to_us(61, PEER), &advert(VHID, 1))
            .unwrap();
        // a multicast advertisement keeps the check
        assert_eq!(
            f.demux
                .deliver(IF, &carrier(61, PEER), &advert(VHID, 2))
                .unwrap_err()
                .1,
            DropReason::BadTtl
        );
        unicast(&mut f, false);
        assert_eq!(
            f.demux
                .deliver(IF, &to_us(61, PEER), &advert(VHID, 3))
                .unwrap_err()
                .1,
            DropReason::BadTtl
        );
        // a multicast VHID never relaxes it
        let f = fixture();
        assert_eq!(
            f.demux
                .deliver(IF, &to_us(61, PEER), &advert(VHID, 4))
                .unwrap_err()
                .1,
            DropReason::BadTtl
        );
    }

    #[test]
    fn drop_log_is_rate_limited() {
        let f = fixture();
        let mut log = DropLog::default();
        let scope = DropScope::Vhid(VhidKey {
            interface: "eth0".into(),
            vhid: VHID,
        });
        log.log(&f.demux, scope.clone(), DropReason::BadHmac, PEER);
        assert!(!log.limit.allow(&(scope.clone(), DropReason::BadHmac)));
        assert!(log.limit.allow(&(scope, DropReason::BadTtl)));
    }
}
