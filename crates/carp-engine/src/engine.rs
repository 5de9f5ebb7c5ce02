//! The engine handle: start, reload, status, operator actions, shutdown;
//! and following the kernel: link and address events reach the VHID tasks,
//! a VHID whose interface is deleted waits in INIT until an interface of
//! that name (with the address it sends from) is there again.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use carp_proto::{Authenticator, State};
use tokio::sync::{Mutex, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::accept_mode::{self, AcceptFilter};
use crate::advertiser::Advertiser;
use crate::announce::Announcer;
use crate::conflict::{self, Claims};
use crate::error::Error;
use crate::events::{EventBus, EventKind};
use crate::follow::{self, Follow, LinkRoutes, Routes};
use crate::netlink::{self, Netlink};
use crate::rx::{self, Demux, LinkDemux, SharedDemux};
use crate::share;
use crate::socket::{BroadcastSocket, Sockets, V4Socket, V6Socket};
use crate::spec::{
    EngineSpec, InterfaceSpec, Protocol, VhidFilter, VhidKey, VhidSpec, VirtualAddr,
};
use crate::stats::{DropCounters, Lateness, LatenessSummary};
use crate::track::{self, TrackerStatus, Tracking};
use crate::vhid::{self, Command, Effects, VhidHandle, VhidParams};
use crate::vmac;

/// How long stopping VHIDs (bow-out, address removal) may take before the
/// stragglers are aborted; extended to the longest exit hook timeout.
const STOP_BOUND: Duration = Duration::from_secs(2);

/// How long a status or operator request waits for the VHID tasks.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(1);

/// VHID tasks asked at once by a status or operator request. Each one asked
/// is a task woken on the runtime thread, and an advertiser or VHID timer
/// that fires meanwhile queues behind all of them: at 4000 VHIDs, asking
/// all at once delays it by the time 4000 tasks take to answer.
const REQUEST_BATCH: usize = 128;

/// A running engine. Dropping it without [`Engine::shutdown`] aborts the
/// tasks (addresses stay, as after a crash).
#[derive(Debug)]
pub struct Engine {
    running: Arc<Mutex<Running>>,
    lateness: Arc<Lateness>,
    tracking: Arc<Tracking>,
    /// Stops the receivers, the link and address watchers and the trackers.
    cancel: CancellationToken,
    /// Stops restarting VHIDs whose interface came back (first, on shutdown).
    follow_stop: CancellationToken,
    follow: Arc<Follow>,
    events: EventBus,
}

#[derive(Debug)]
struct Running {
    effects: Effects,
    vhids: BTreeMap<VhidKey, VhidHandle>,
    joined_v4: BTreeSet<(u32, Ipv4Addr)>,
    joined_v6: BTreeSet<u32>,
    /// Drop counters of configured interfaces, kept across reloads.
    interface_drops: HashMap<String, Arc<DropCounters>>,
    other_drops: Arc<DropCounters>,
    background: Vec<JoinHandle<()>>,
    tracking: Arc<Tracking>,
    /// VHIDs that cannot run yet: listed in status as INIT, started when
    /// their interface and its address are there.
    waiting: BTreeMap<VhidKey, Waiting>,
    follow: Arc<Follow>,
    /// Stops the receivers opened on the way.
    cancel: CancellationToken,
    /// The `accept_mode = false` addresses' filter.
    accept_filter: AcceptFilter,
}

/// A configured VHID waiting for its interface or the address it sends from.
#[derive(Debug, Clone)]
struct Waiting {
    /// Its interface, with only this VHID.
    interface: InterfaceSpec,
    /// What it waits for, e.g. "interface eth0 not found".
    reason: String,
    since: Instant,
}

impl Waiting {
    fn status(&self) -> Option<VhidStatus> {
        let v = self.interface.vhids.first()?;
        Some(VhidStatus {
            key: VhidKey {
                interface: self.interface.name.clone(),
                vhid: v.vhid,
            },
            state: State::Init,
            addresses: v.addresses.clone(),
            protocol: v.protocol.name(),
            priority: match &v.protocol {
                Protocol::Carp => None,
                Protocol::Vrrp(r) => Some(r.priority),
            },
            advbase: v.advbase,
            advskew: v.advskew,
            demote: 0,
            master: None,
            in_state_for: self.since.elapsed(),
            last_transition: None,
            last_reason: None,
            transitions: 0,
            transitions_by_reason: BTreeMap::new(),
            hook_runs: 0,
            hook_failures: 0,
            adverts_sent: 0,
            adverts_received: 0,
            drops: BTreeMap::new(),
            address_restored: 0,
            address_removed_foreign: 0,
            address_conflicts: 0,
            waiting_for: Some(self.reason.clone()),
            peers: Vec::new(),
            explanation: None,
        })
    }
}

/// Drop counts by reason.
pub type DropCounts = BTreeMap<&'static str, u64>;

/// Drops that belong to no known VHID: counts by interface name (`"*"`:
/// interfaces without VHIDs).
pub type InterfaceDrops = BTreeMap<String, DropCounts>;

/// What a reload did (or, previewed, would do), by VHID.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReloadReport {
    pub added: Vec<VhidKey>,
    pub removed: Vec<VhidKey>,
    /// Restarted: a setting changed, or it starts or stops waiting for its
    /// interface.
    pub changed: Vec<VhidKey>,
    /// For each changed VHID, what changed (see [`VhidParams::changed`]).
    pub changed_keys: BTreeMap<VhidKey, Vec<&'static str>>,
    pub unchanged: usize,
}

/// A peer heard lately (within three master-down times).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerStatus {
    pub address: IpAddr,
    /// From the kernel's neighbour table; `None` if it has no entry.
    pub mac: Option<[u8; 6]>,
    pub advbase: u8,
    pub advskew: u8,
    pub demote: u8,
    pub last_heard: Duration,
    /// Largest |interval - advertised interval| among its recent
    /// advertisements.
    pub jitter: Duration,
    pub adverts: u64,
    /// It is the master this BACKUP follows.
    pub master: bool,
}

/// A snapshot of one VHID, for status output and metrics.
#[derive(Debug, Clone)]
pub struct VhidStatus {
    pub key: VhidKey,
    pub state: State,
    pub addresses: Vec<VirtualAddr>,
    /// `carp`, `vrrp3` or `vrrp2`.
    pub protocol: &'static str,
    /// VRRP: the priority advertised (after demotion); `None` for CARP.
    pub priority: Option<u8>,
    pub advbase: u8,
    /// Advertised advskew (after demotion in skew style).
    pub advskew: u8,
    pub demote: u8,
    /// Source of the last advertisement from another master.
    pub master: Option<IpAddr>,
    pub in_state_for: Duration,
    /// Last transition and its reason, e.g. "BACKUP -> MASTER (master_down)".
    pub last_transition: Option<String>,
    /// The reason of the last transition ([`carp_proto::Reason::as_str`]).
    pub last_reason: Option<&'static str>,
    pub transitions: u64,
    /// Transitions by reason name, since this VHID (re)started.
    pub transitions_by_reason: BTreeMap<&'static str, u64>,
    /// Hook commands started, and how many of them failed (non-zero exit,
    /// killed, timed out or not runnable).
    pub hook_runs: u64,
    pub hook_failures: u64,
    pub adverts_sent: u64,
    pub adverts_received: u64,
    /// Drops by reason name ([`carp_proto::DropReason::as_str`]).
    pub drops: DropCounts,
    /// Addresses removed by something else while MASTER and added back
    /// (by carpd, or by running the up hook again when the hooks own them).
    pub address_restored: u64,
    /// Addresses added by something else while not MASTER and removed.
    pub address_removed_foreign: u64,
    /// Claims of our addresses by foreign MACs (ARP, neighbour
    /// advertisements) seen while MASTER.
    pub address_conflicts: u64,
    /// Why the VHID is not running (INIT until that changes), e.g.
    /// "interface eth0 not found".
    pub waiting_for: Option<String>,
    /// Peers heard lately, most recent first.
    pub peers: Vec<PeerStatus>,
    /// Why the VHID is in its state (none while it waits).
    pub explanation: Option<carp_proto::Explanation>,
}

/// A VHID checked against the system, ready to start.
struct Prepared {
    params: VhidParams,
    auth: Authenticator,
    link_up: bool,
}

/// The VHIDs of a spec: ready to start, waiting, or running already with
/// exactly these parameters.
#[derive(Default)]
struct Preparation<'s> {
    ready: Vec<Prepared>,
    waiting: Vec<(VhidKey, Waiting)>,
    /// How many run with the parameters the spec resolves to: left alone,
    /// so a reload that changes one VHID builds no authenticator for the
    /// others.
    unchanged: usize,
    /// Every (interface, vhid) of the spec.
    keys: HashSet<(&'s str, u8)>,
}

/// Resolve every interface and source address and build the authenticator
/// of every VHID not in `running` with the same parameters, touching
/// nothing. A VHID whose interface lacks the address it sends from waits,
/// as does one whose interface is missing if `may_be_missing` says so of
/// its name; a missing interface is an error otherwise.
async fn prepare<'s>(
    netlink: &Netlink,
    spec: &'s EngineSpec,
    running: &BTreeMap<VhidKey, VhidHandle>,
    may_be_missing: &(dyn Fn(&str) -> bool + Sync),
) -> Result<Preparation<'s>, Error> {
    let mut out = Preparation::default();
    let count = spec.interfaces.iter().map(|i| i.vhids.len()).sum();
    out.ready.reserve(count);
    out.keys.reserve(count);
    let mut local_addrs: HashMap<u32, Vec<IpAddr>> = HashMap::new();
    let now = Instant::now();
    let wait = |iface: &InterfaceSpec, v: &VhidSpec, reason: String| Waiting {
        interface: InterfaceSpec {
            vhids: vec![v.clone()],
            ..iface.clone()
        },
        reason,
        since: now,
    };
    for iface in &spec.interfaces {
        let link = match netlink.link(&iface.name).await? {
            Some(link) => Some(link),
            None if may_be_missing(&iface.name) => None,
            None => return Err(Error::NoSuchInterface(iface.name.clone())),
        };
        for v in &iface.vhids {
            let key = VhidKey {
                interface: iface.name.clone(),
                vhid: v.vhid,
            };
            if !out.keys.insert((iface.name.as_str(), v.vhid)) {
                return Err(Error::DuplicateVhid {
                    interface: key.interface,
                    vhid: key.vhid,
                });
            }
            let Some(link) = &link else {
                let reason = Error::NoSuchInterface(iface.name.clone()).to_string();
                out.waiting.push((key, wait(iface, v, reason)));
                continue;
            };
            let addrs = || v.addresses.iter().map(|a| a.addr);
            // With unicast peers, a carrier without a peer of its family
            // stays silent.
            let peers = &v.transport.peers;
            let carries = |v4: bool| {
                addrs().any(|a| a.is_ipv4() == v4)
                    && (peers.is_empty() || peers.iter().any(|p| p.is_ipv4() == v4))
            };
            let src_v4 = match (carries(true), v.source) {
                (false, _) => None,
                (true, Some(IpAddr::V4(s))) => Some(s),
                (true, _) => match link.primary_v4 {
                    Some(s) => Some(s),
                    None => {
                        let reason = Error::NoSourceAddress(iface.name.clone()).to_string();
                        out.waiting.push((key, wait(iface, v, reason)));
                        continue;
                    }
                },
            };
            let src_v6 = match (carries(false), v.source) {
                (false, _) => None,
                (true, Some(IpAddr::V6(s))) => Some(s),
                (true, _) => match link.link_local_v6 {
                    Some(s) => Some(s),
                    None => {
                        let reason = Error::NoLinkLocal(iface.name.clone()).to_string();
                        out.waiting.push((key, wait(iface, v, reason)));
                        continue;
                    }
                },
            };
            let mut v = Cow::Borrowed(v);
            if v.share.is_some() {
                let locals = match local_addrs.entry(link.index) {
                    std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                    std::collections::hash_map::Entry::Vacant(e) => {
                        e.insert(netlink.local_addresses(link.index).await?)
                    }
                };
                share::take_rank(v.to_mut(), &iface.name, locals)?;
            }
            let vmac = v.transport.virtual_mac.then(|| vmac::Child {
                name: vmac::child_name(&iface.name, v.vhid),
                mac: vmac::mac(v.vhid, addrs().any(|a| a.is_ipv4())),
            });
            // Compared before anything is copied or built; every field is
            // named (no `..`), so that a new one cannot be left out.
            let same = running.get(&key).is_some_and(|h| {
                let VhidParams {
                    key: _,
                    spec,
                    ifindex,
                    mac,
                    src_v4: running_v4,
                    src_v6: running_v6,
                    vmac: running_vmac,
                    ignore_link_state,
                } = &*h.params;
                *spec == *v
                    && *ifindex == link.index
                    && *mac == link.mac
                    && *running_v4 == src_v4
                    && *running_v6 == src_v6
                    && *running_vmac == vmac
                    && *ignore_link_state == iface.ignore_link_state
            });
            if same {
                out.unchanged += 1;
                continue;
            }
            let addrs: Vec<IpAddr> = addrs().collect();
            let auth = Authenticator::new(v.auth, &v.key, v.vhid, &addrs).map_err(|source| {
                Error::Auth {
                    interface: iface.name.clone(),
                    vhid: v.vhid,
                    source,
                }
            })?;
            let params = VhidParams {
                key,
                spec: v.into_owned(),
                ifindex: link.index,
                mac: link.mac,
                src_v4,
                src_v6,
                vmac,
                ignore_link_state: iface.ignore_link_state,
            };
            out.ready.push(Prepared {
                params,
                auth,
                link_up: link.up,
            });
        }
    }
    Ok(out)
}

fn wanted_v4(params: &[&VhidParams]) -> BTreeSet<(u32, Ipv4Addr)> {
    params
        .iter()
        .filter(|p| p.src_v4.is_some() && !p.spec.transport.unicast())
        .map(|p| (p.ifindex, p.spec.group_v4))
        .collect()
}

fn wanted_v6(params: &[&VhidParams]) -> BTreeSet<u32> {
    params
        .iter()
        .filter(|p| p.src_v6.is_some() && !p.spec.transport.unicast())
        .map(|p| p.ifindex)
        .collect()
}

/// Cancel the tasks and wait for their bow-out, bounded.
async fn stop(handles: Vec<VhidHandle>) {
    if handles.is_empty() {
        return;
    }
    let bound = handles
        .iter()
        .filter(|h| h.params.spec.hooks.down_on_exit && h.params.spec.hooks.down.is_some())
        // the exit hook runs after the hook running then: two timeouts
        .map(|h| h.params.spec.hooks.timeout * 2 + Duration::from_millis(500))
        .fold(STOP_BOUND, Duration::max);
    for h in &handles {
        h.cancel.cancel();
    }
    let aborts: Vec<_> = handles
        .iter()
        .map(|h| (h.params.key.clone(), h.join.abort_handle()))
        .collect();
    let all = futures::future::join_all(handles.into_iter().map(|h| h.join));
    if tokio::time::timeout(bound, all).await.is_err() {
        for (key, a) in aborts {
            if !a.is_finished() {
                tracing::warn!(interface = %key.interface, vhid = key.vhid, "VHID did not stop in time, aborted");
                a.abort();
            }
        }
    }
}

/// Stop the VHIDs of deleted links (they wait in INIT) and start waiting
/// VHIDs whose interface and address are there, whenever the watchers say
/// something may have changed.
async fn follow_interfaces(
    running: Arc<Mutex<Running>>,
    follow: Arc<Follow>,
    cancel: CancellationToken,
) {
    loop {
        tokio::select! {
            biased;
            _ = cancel.cancelled() => return,
            () = follow.woken() => {}
        }
        let mut r = running.lock().await;
        if cancel.is_cancelled() {
            return;
        }
        let gone = follow.take_gone();
        r.interfaces_gone(&gone).await;
        r.start_waiting(&cancel).await;
    }
}

impl Running {
    /// Join the groups the new set of VHIDs needs; on failure leave the ones
    /// just joined.
    fn join_groups(&mut self, params: &[&VhidParams]) -> Result<(), Error> {
        let mut new_v4 = Vec::new();
        let mut new_v6 = Vec::new();
        let mut res = Ok(());
        for (ifindex, group) in wanted_v4(params).difference(&self.joined_v4) {
            match self.effects.sockets.v4.join(*ifindex, *group) {
                Ok(()) => new_v4.push((*ifindex, *group)),
                Err(e) => {
                    res = Err(e);
                    break;
                }
            }
        }
        if res.is_ok()
            && let Some(v6) = &self.effects.sockets.v6
        {
            for ifindex in wanted_v6(params).difference(&self.joined_v6) {
                match v6.join(*ifindex) {
                    Ok(()) => new_v6.push(*ifindex),
                    Err(e) => {
                        res = Err(e);
                        break;
                    }
                }
            }
        }
        if res.is_err() {
            for (ifindex, group) in new_v4 {
                let _ = self.effects.sockets.v4.leave(ifindex, group);
            }
            if let Some(v6) = &self.effects.sockets.v6 {
                for ifindex in new_v6 {
                    let _ = v6.leave(ifindex);
                }
            }
            return res;
        }
        self.joined_v4.extend(new_v4);
        self.joined_v6.extend(new_v6);
        Ok(())
    }

    /// Leave the groups no running VHID needs any more.
    fn leave_groups(&mut self) {
        let params: Vec<&VhidParams> = self.vhids.values().map(|h| &*h.params).collect();
        let (want_v4, want_v6) = (wanted_v4(&params), wanted_v6(&params));
        for (ifindex, group) in self.joined_v4.difference(&want_v4) {
            if let Err(e) = self.effects.sockets.v4.leave(*ifindex, *group) {
                tracing::debug!(error = %e, "leaving group");
            }
        }
        if let Some(v6) = &self.effects.sockets.v6 {
            for ifindex in self.joined_v6.difference(&want_v6) {
                if let Err(e) = v6.leave(*ifindex) {
                    tracing::debug!(error = %e, "leaving group");
                }
            }
        }
        self.joined_v4 = want_v4;
        self.joined_v6 = want_v6;
    }

    /// Open the IPv6 and broadcast sockets once some VHID needs them.
    fn open_sockets(&mut self, prepared: &[Prepared]) -> Result<(), Error> {
        if self.effects.sockets.v6.is_none() && prepared.iter().any(|p| p.params.src_v6.is_some()) {
            let v6 = Arc::new(V6Socket::open()?);
            self.background.push(tokio::spawn(rx::run(
                Arc::clone(&v6),
                Arc::clone(&self.follow.demux),
                self.cancel.clone(),
            )));
            self.effects.sockets.v6 = Some(v6);
        }
        if self.effects.sockets.broadcast.is_none()
            && prepared
                .iter()
                .any(|p| p.params.spec.broadcast && p.params.src_v4.is_some())
        {
            self.effects.sockets.broadcast = Some(Arc::new(BroadcastSocket::open()?));
        }
        Ok(())
    }

    fn start_vhid(&mut self, p: Prepared) {
        let h = vhid::spawn(
            p.params,
            p.auth,
            self.effects.clone(),
            p.link_up,
            self.tracking.subscribe(),
        );
        self.interface_drops
            .entry(h.params.key.interface.clone())
            .or_default();
        self.vhids.insert(h.params.key.clone(), h);
    }

    /// The receive table's and the address routes' parts of the interfaces
    /// `touched` selects, from the VHIDs running there. The handles carry
    /// their interface index, so only the selected VHIDs' parameters are
    /// read.
    fn link_parts(&self, touched: impl Fn(u32) -> bool) -> HashMap<u32, (LinkDemux, LinkRoutes)> {
        let mut parts: HashMap<u32, (LinkDemux, LinkRoutes)> = HashMap::new();
        for h in self.vhids.values().filter(|h| touched(h.ifindex)) {
            let (d, routes) = parts.entry(h.ifindex).or_default();
            routes.add(h);
            let p = &h.params;
            d.vhids.insert(p.spec.vhid, Arc::clone(&h.entry));
            if p.spec.transport.unicast() {
                d.unicast.insert(
                    p.spec.vhid,
                    rx::Unicast {
                        peers: p.spec.transport.peers.clone(),
                        relax_ttl: !p.spec.transport.unicast_ttl_check,
                    },
                );
            }
            for a in [p.src_v4.map(IpAddr::V4), p.src_v6.map(IpAddr::V6)]
                .into_iter()
                .flatten()
            {
                if !d.own.contains(&a) {
                    d.own.push(a);
                }
            }
            if d.drops.is_none()
                && let Some(c) = self.interface_drops.get(&p.key.interface)
            {
                d.drops = Some((p.key.interface.clone(), Arc::clone(c)));
            }
        }
        parts
    }

    /// Publish the receive table and the address routes of the VHIDs now
    /// running: the parts of the interfaces in `touched` are built again
    /// (every part when `None`), the others are kept, so that a change to
    /// one interface costs what its VHIDs cost.
    fn publish(&self, touched: Option<&BTreeSet<u32>>) {
        let parts = self.link_parts(|i| touched.is_none_or(|t| t.contains(&i)));
        let (mut links, mut routes) = match touched {
            None => (HashMap::new(), HashMap::new()),
            Some(t) => {
                let mut links = rx::current(&self.follow.demux).links.clone();
                let mut routes = self.follow.routes().links.clone();
                links.retain(|i, _| !t.contains(i));
                routes.retain(|i, _| !t.contains(i));
                (links, routes)
            }
        };
        for (i, (d, r)) in parts {
            links.insert(i, Arc::new(d));
            routes.insert(i, Arc::new(r));
        }
        let table = Arc::new(Demux {
            links,
            other: Arc::clone(&self.other_drops),
        });
        match self.follow.demux.write() {
            Ok(mut g) => *g = table,
            Err(poisoned) => *poisoned.into_inner() = table,
        }
        self.follow.set_routes(Routes {
            links: routes,
            waiting: !self.waiting.is_empty(),
        });
    }

    /// Record VHIDs that cannot run yet, logging each once as it starts to
    /// wait.
    fn wait(&mut self, waiting: Vec<(VhidKey, Waiting)>) {
        for (key, w) in waiting {
            match self.waiting.get_mut(&key) {
                Some(old) => old.reason = w.reason,
                None => {
                    tracing::warn!(interface = %key.interface, vhid = key.vhid, waiting_for = %w.reason,
                        "VHID waits in INIT: {}", w.reason);
                    self.waiting.insert(key, w);
                }
            }
        }
    }

    /// Stop the VHIDs on deleted links; they wait for an interface of the
    /// same name. What belonged to the old index goes with it.
    async fn interfaces_gone(&mut self, gone: &BTreeSet<u32>) {
        let keys: Vec<VhidKey> = (self.vhids.iter())
            .filter(|(_, h)| gone.contains(&h.params.ifindex))
            .map(|(k, _)| k.clone())
            .collect();
        if keys.is_empty() {
            return;
        }
        let mut handles = Vec::new();
        let mut waiting = Vec::new();
        for key in keys {
            let Some(h) = self.vhids.remove(&key) else {
                continue;
            };
            let p = &h.params;
            let interface = InterfaceSpec {
                name: p.key.interface.clone(),
                ignore_link_state: p.ignore_link_state,
                vhids: vec![p.spec.clone()],
            };
            let reason = Error::NoSuchInterface(p.key.interface.clone()).to_string();
            waiting.push((
                key,
                Waiting {
                    interface,
                    reason,
                    since: Instant::now(),
                },
            ));
            handles.push(h);
        }
        self.wait(waiting);
        self.publish(Some(gone));
        stop(handles).await;
        self.leave_groups();
    }

    /// Start the waiting VHIDs whose interface and source address are there
    /// now, as at start.
    async fn start_waiting(&mut self, cancel: &CancellationToken) {
        if self.waiting.is_empty() {
            return;
        }
        let mut spec = EngineSpec::default();
        for w in self.waiting.values() {
            match spec
                .interfaces
                .iter_mut()
                .find(|i| i.name == w.interface.name)
            {
                Some(i) => i.vhids.extend(w.interface.vhids.iter().cloned()),
                None => spec.interfaces.push(w.interface.clone()),
            }
        }
        let prepared = match prepare(&self.effects.netlink, &spec, &self.vhids, &|_| true).await {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = %e, "cannot start the VHIDs waiting for their interface");
                return;
            }
        };
        self.wait(prepared.waiting);
        if prepared.ready.is_empty() || cancel.is_cancelled() {
            return;
        }
        let opened = self.open_sockets(&prepared.ready).and_then(|()| {
            let params: Vec<&VhidParams> = prepared.ready.iter().map(|p| &p.params).collect();
            self.join_groups(&params)
        });
        if let Err(e) = opened {
            tracing::warn!(error = %e, "cannot start the VHIDs waiting for their interface");
            return;
        }
        let mut started = Vec::new();
        for p in prepared.ready {
            let key = p.params.key.clone();
            self.waiting.remove(&key);
            tracing::info!(interface = %key.interface, vhid = key.vhid, ifindex = p.params.ifindex,
                "interface {} is there: VHID starts", key.interface);
            started.push((key, p.params.ifindex, p.link_up));
            self.start_vhid(p);
        }
        let touched: BTreeSet<u32> = started.iter().map(|(_, ifindex, _)| *ifindex).collect();
        self.publish(Some(&touched));
        // A link change between the lookup and the publish reached no task.
        for (key, ifindex, was_up) in started {
            let Some(h) = self.vhids.get(&key) else {
                continue;
            };
            match self.effects.netlink.link(&key.interface).await {
                Ok(Some(link)) if link.index == ifindex => {
                    if link.up != was_up {
                        self.follow.send(&h.entry.commands, Command::Link(link.up));
                    }
                }
                Ok(_) => self.follow.link_gone(ifindex),
                Err(e) => {
                    tracing::warn!(interface = %key.interface, error = %e, "looking up the interface again");
                }
            }
        }
    }

    /// What applying `prepared` would do to each VHID; the one comparison
    /// both a reload and its preview use.
    fn diff(&self, prepared: &Preparation) -> ReloadReport {
        let mut report = ReloadReport {
            unchanged: prepared.unchanged,
            removed: (self.vhids.keys().chain(self.waiting.keys()))
                .filter(|k| !prepared.keys.contains(&(k.interface.as_str(), k.vhid)))
                .cloned()
                .collect(),
            ..ReloadReport::default()
        };
        let mut changed = |key: &VhidKey, what: Vec<&'static str>| {
            report.changed.push(key.clone());
            report.changed_keys.insert(key.clone(), what);
        };
        for p in &prepared.ready {
            let key = &p.params.key;
            match self.vhids.get(key) {
                Some(h) if *h.params == p.params => report.unchanged += 1,
                Some(h) => changed(key, h.params.changed(&p.params)),
                None if self.waiting.contains_key(key) => changed(key, vec!["interface_ready"]),
                None => report.added.push(key.clone()),
            }
        }
        for (key, w) in &prepared.waiting {
            if self.vhids.contains_key(key) {
                changed(key, vec!["interface_ready"]);
            } else if let Some(old) = self.waiting.get(key) {
                if old.interface == w.interface {
                    report.unchanged += 1;
                } else {
                    changed(key, vec!["settings"]);
                }
            } else {
                report.added.push(key.clone());
            }
        }
        report.added.sort();
        report.removed.sort();
        report.changed.sort();
        report
    }

    /// Send a request to the matching tasks and collect the replies (those
    /// that come within [`REQUEST_TIMEOUT`] of the call), [`REQUEST_BATCH`]
    /// tasks at a time.
    async fn ask<T>(
        &self,
        matches: impl Fn(&VhidHandle) -> bool,
        make: impl Fn(oneshot::Sender<T>) -> Command,
    ) -> Vec<(VhidKey, T)> {
        let deadline = Instant::now() + REQUEST_TIMEOUT;
        let asked: Vec<&VhidHandle> = self.vhids.values().filter(|h| matches(h)).collect();
        let mut out = Vec::with_capacity(asked.len());
        for batch in asked.chunks(REQUEST_BATCH) {
            let requests = batch.iter().map(|h| {
                let (tx, rx) = oneshot::channel();
                let key = h.params.key.clone();
                let commands = h.entry.commands.clone();
                let cmd = make(tx);
                async move {
                    let reply = tokio::time::timeout_at(deadline, async move {
                        commands.send(cmd).await.ok()?;
                        rx.await.ok()
                    })
                    .await;
                    reply.ok().flatten().map(|r| (key, r))
                }
            });
            out.extend(
                futures::future::join_all(requests)
                    .await
                    .into_iter()
                    .flatten(),
            );
        }
        out
    }
}

impl Engine {
    /// Open the shared sockets, join the groups, start one task per VHID.
    /// Fails before touching anything if an interface is missing; a VHID
    /// whose interface lacks the address it sends from waits in INIT for it.
    pub async fn start(spec: EngineSpec) -> Result<Engine, Error> {
        // subscribe first, so that no change after the lookup is missed
        let link_events = netlink::watch_links().await?;
        let address_events = netlink::watch_addresses().await?;
        let nl = Netlink::connect().await?;
        let prepared = prepare(&nl, &spec, &BTreeMap::new(), &|_| false).await?;
        let trackers = track::prepare(&nl, &spec.trackers).await?;
        let tracking = Tracking::new();
        let demux: SharedDemux = Arc::new(RwLock::new(Arc::new(Demux::default())));
        let cancel = CancellationToken::new();
        let lateness = Arc::new(Lateness::new());
        let v4 = Arc::new(V4Socket::open()?);
        let advertiser = Arc::new(Advertiser::new(Arc::clone(&v4), Arc::clone(&lateness)));
        let effects = Effects {
            sockets: Sockets {
                v4,
                v6: None,
                broadcast: None,
            },
            advertiser: Arc::clone(&advertiser),
            netlink: nl,
            announcer: Arc::new(Announcer::new()?),
            lateness: Arc::clone(&lateness),
            events: EventBus::default(),
            claims: Arc::new(Claims::default()),
            operator: Arc::default(),
        };
        let events = effects.events.clone();
        let conflict_watch = conflict::Watch::open()?;
        let follow = Arc::new(Follow::new(Arc::clone(&demux)));
        // empty until the sockets are open: a start that fails leaves no
        // table behind
        let (accept_filter, accept_task) = AcceptFilter::start(BTreeSet::new(), cancel.clone());
        let mut running = Running {
            effects,
            vhids: BTreeMap::new(),
            joined_v4: BTreeSet::new(),
            joined_v6: BTreeSet::new(),
            interface_drops: HashMap::new(),
            other_drops: Arc::new(DropCounters::default()),
            background: Vec::new(),
            tracking: Arc::clone(&tracking),
            waiting: BTreeMap::new(),
            follow: Arc::clone(&follow),
            cancel: cancel.clone(),
            accept_filter,
        };
        let started = running.open_sockets(&prepared.ready).and_then(|()| {
            let params: Vec<&VhidParams> = prepared.ready.iter().map(|p| &p.params).collect();
            running.join_groups(&params)
        });
        if let Err(e) = started {
            cancel.cancel();
            return Err(e);
        }
        // before the VHIDs, so they start with the trackers' demotions
        tracking.apply(trackers, &cancel);
        for p in prepared.ready {
            running.start_vhid(p);
        }
        running.wait(prepared.waiting);
        running.publish(None);
        running
            .accept_filter
            .set(accept_mode::dropped_addresses(&spec));
        running.background.push(accept_task);
        let v4 = Arc::clone(&running.effects.sockets.v4);
        running.background.push(tokio::spawn(rx::run(
            v4,
            Arc::clone(&demux),
            cancel.clone(),
        )));
        running
            .background
            .push(tokio::spawn(advertiser.run(cancel.clone())));
        running.background.push(tokio::spawn(conflict::run(
            conflict_watch,
            Arc::clone(&running.effects.claims),
            cancel.clone(),
        )));
        running.background.push(tokio::spawn(follow::watch_links(
            link_events,
            Arc::clone(&follow),
            Arc::clone(&tracking),
            cancel.clone(),
        )));
        running
            .background
            .push(tokio::spawn(follow::watch_addresses(
                address_events,
                Arc::clone(&follow),
                cancel.clone(),
            )));
        tracing::info!(
            vhids = running.vhids.len(),
            waiting = running.waiting.len(),
            "engine started"
        );
        let follow_stop = cancel.child_token();
        let running = Arc::new(Mutex::new(running));
        let follower = tokio::spawn(follow_interfaces(
            Arc::clone(&running),
            Arc::clone(&follow),
            follow_stop.clone(),
        ));
        running.lock().await.background.push(follower);
        Ok(Engine {
            running,
            lateness,
            tracking,
            cancel,
            follow_stop,
            follow,
            events,
        })
    }

    /// Apply a new spec: unchanged VHIDs keep their task and state, removed
    /// ones bow out and remove their addresses, changed ones restart, new
    /// ones start. VHIDs that cannot run yet wait (an interface already
    /// gone may stay gone).
    pub async fn reload(&self, spec: EngineSpec) -> Result<ReloadReport, Error> {
        let began = Instant::now();
        let mut r = self.running.lock().await;
        let gone: HashSet<String> = (r.waiting.keys()).map(|k| k.interface.clone()).collect();
        let prepared = prepare(&r.effects.netlink, &spec, &r.vhids, &|name| {
            gone.contains(name)
        })
        .await?;
        let trackers = track::prepare(&r.effects.netlink, &spec.trackers).await?;
        r.open_sockets(&prepared.ready)?;
        {
            let params: Vec<&VhidParams> = prepared.ready.iter().map(|p| &p.params).collect();
            r.join_groups(&params)?;
        }
        let report = r.diff(&prepared);
        let mut to_stop = Vec::new();
        for key in &report.removed {
            if let Some(h) = r.vhids.remove(key) {
                to_stop.push(h);
            }
            r.waiting.remove(key);
            r.effects.operator.forget(key);
        }
        let changed: HashSet<&VhidKey> = report.changed.iter().collect();
        let added: HashSet<&VhidKey> = report.added.iter().collect();
        let restart = |key: &VhidKey| added.contains(key) || changed.contains(key);
        let mut to_start = Vec::new();
        for p in prepared.ready {
            if !restart(&p.params.key) {
                continue;
            }
            if let Some(h) = r.vhids.remove(&p.params.key) {
                to_stop.push(h);
            }
            r.waiting.remove(&p.params.key);
            to_start.push(p);
        }
        let mut waiting = Vec::new();
        for (key, w) in prepared.waiting {
            if let Some(h) = r.vhids.remove(&key) {
                to_stop.push(h);
            } else if changed.contains(&key) {
                r.waiting.remove(&key);
            }
            waiting.push((key, w));
        }
        r.wait(waiting);
        // the old tasks bow out and remove their addresses before their
        // successors start
        self.tracking.apply(trackers, &self.cancel);
        r.accept_filter.set(accept_mode::dropped_addresses(&spec));
        let touched: BTreeSet<u32> = (to_stop.iter().map(|h| h.ifindex))
            .chain(to_start.iter().map(|p| p.params.ifindex))
            .collect();
        let stopping = Instant::now();
        stop(to_stop).await;
        let stopped_in = stopping.elapsed();
        for p in to_start {
            r.start_vhid(p);
        }
        // One table for the whole change: until then the stopping tasks'
        // entries stay, and what reaches a task that is bowing out is not
        // read (its inbox is bounded).
        r.publish(Some(&touched));
        r.leave_groups();
        let names: HashSet<&str> = spec.interfaces.iter().map(|i| i.name.as_str()).collect();
        r.interface_drops.retain(|n, _| names.contains(n.as_str()));
        let list = |l: &[VhidKey]| {
            l.iter()
                .map(|k| format!("{}/{}", k.interface, k.vhid))
                .collect()
        };
        self.events.publish(
            None,
            EventKind::Reload {
                added: list(&report.added),
                removed: list(&report.removed),
                changed: list(&report.changed),
            },
        );
        tracing::info!(
            added = report.added.len(),
            removed = report.removed.len(),
            changed = report.changed.len(),
            unchanged = report.unchanged,
            took_ms = began.elapsed().as_secs_f64() * 1e3,
            stopping_ms = stopped_in.as_secs_f64() * 1e3,
            "reloaded"
        );
        Ok(report)
    }

    /// What [`Engine::reload`] would do with `spec`, changing nothing.
    pub async fn preview(&self, spec: &EngineSpec) -> Result<ReloadReport, Error> {
        let r = self.running.lock().await;
        let gone: HashSet<String> = (r.waiting.keys()).map(|k| k.interface.clone()).collect();
        let prepared = prepare(&r.effects.netlink, spec, &r.vhids, &|name| {
            gone.contains(name)
        })
        .await?;
        track::prepare(&r.effects.netlink, &spec.trackers).await?;
        Ok(r.diff(&prepared))
    }

    /// The event bus: subscribe to follow the VHIDs, publish to tell the
    /// subscribers.
    pub fn events(&self) -> &EventBus {
        &self.events
    }

    /// Every VHID: the running ones, and those waiting (in INIT) for their
    /// interface or its address. Peers' MACs come from the kernel's
    /// neighbour table.
    pub async fn status(&self) -> Vec<VhidStatus> {
        let mut out = self.vhid_status().await;
        if out.iter().all(|s| s.peers.is_empty()) {
            return out;
        }
        let netlink = self.running.lock().await.effects.netlink.clone();
        match netlink.neighbours().await {
            Ok(table) => {
                for p in out.iter_mut().flat_map(|s| s.peers.iter_mut()) {
                    p.mac = table
                        .iter()
                        .find(|(_, addr, _)| *addr == p.address)
                        .map(|(_, _, mac)| *mac);
                }
            }
            Err(e) => tracing::debug!(error = %e, "cannot read the neighbour table"),
        }
        out
    }

    async fn vhid_status(&self) -> Vec<VhidStatus> {
        let r = self.running.lock().await;
        let mut out: Vec<VhidStatus> = r
            .ask(|_| true, Command::Status)
            .await
            .into_iter()
            .map(|(_, s)| s)
            .chain(r.waiting.values().filter_map(Waiting::status))
            .collect();
        out.sort_by(|a, b| a.key.cmp(&b.key));
        out
    }

    /// Every MASTER matching `filter` steps down once: each matching VHID
    /// and whether it was MASTER (and so stepped down).
    pub async fn step_down(&self, filter: &VhidFilter) -> Vec<(VhidKey, bool)> {
        let r = self.running.lock().await;
        r.ask(
            |h| filter.matches(&h.params.key, &h.params.spec),
            Command::StepDown,
        )
        .await
    }

    /// Add `delta` (may be negative) to the operator demotion of the VHIDs
    /// matching `filter` (all for the default filter).
    pub async fn demote(&self, filter: &VhidFilter, delta: i32) -> Vec<VhidKey> {
        let r = self.running.lock().await;
        r.ask(
            |h| filter.matches(&h.params.key, &h.params.spec),
            |tx| Command::Demote(delta, tx),
        )
        .await
        .into_iter()
        .map(|(k, ())| k)
        .collect()
    }

    /// The trackers and the demotion each adds now.
    pub fn trackers(&self) -> Vec<TrackerStatus> {
        self.tracking.status()
    }

    /// Link and address events a VHID did not get because its command
    /// queue was full, since start.
    pub fn kernel_events_dropped(&self) -> u64 {
        self.follow.dropped()
    }

    /// How early and how late advertisements left against their
    /// deadlines, since start.
    pub fn timer_lateness(&self) -> LatenessSummary {
        self.lateness.summary()
    }

    /// Drops that belong to no known VHID, by interface name (packets from
    /// interfaces without VHIDs under `"*"`) and reason.
    pub async fn interface_drops(&self) -> InterfaceDrops {
        let r = self.running.lock().await;
        let mut out: InterfaceDrops = r
            .interface_drops
            .iter()
            .map(|(n, c)| (n.clone(), c.snapshot()))
            .collect();
        out.insert("*".to_string(), r.other_drops.snapshot());
        out
    }

    /// Graceful: every MASTER bows out and removes its addresses, hooks
    /// finish or time out, then the tasks end.
    pub async fn shutdown(self) {
        self.follow_stop.cancel();
        let handles: Vec<VhidHandle> = {
            let mut r = self.running.lock().await;
            r.waiting.clear();
            std::mem::take(&mut r.vhids).into_values().collect()
        };
        let n = handles.len();
        stop(handles).await;
        self.tracking.stop();
        self.cancel.cancel();
        let background = std::mem::take(&mut self.running.lock().await.background);
        let _ = tokio::time::timeout(STOP_BOUND, futures::future::join_all(background)).await;
        tracing::info!(vhids = n, "engine stopped");
    }
}

impl Drop for Engine {
    /// Without a graceful shutdown the tasks are aborted and the addresses
    /// stay, as after a crash.
    fn drop(&mut self) {
        self.cancel.cancel();
        // only the follower can hold the lock, and it stops at the cancel
        if let Ok(r) = self.running.try_lock() {
            for h in r.vhids.values() {
                h.join.abort();
            }
            for h in &r.background {
                h.abort();
            }
        }
    }
}
