//! One tokio task per VHID: it drives a [`Machine`] with real timers and
//! turns its actions into effects (advertisements, addresses, ARP/NA,
//! hooks). In the steady states it mostly sleeps: a MASTER with nothing
//! else to do hands its periodic advertisements to the advertiser
//! (`advertiser.rs`), and a BACKUP has the receiver note its master's
//! keepalives (`keepalive.rs`); it takes either back before it handles
//! anything else.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::atomic::Ordering;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use carp_proto::machine::SendAdvert;
use carp_proto::packet::GROUP_V6;
use carp_proto::replay::ReplayWindow;
use carp_proto::{
    Action, Advert, AdvertGrid, Authenticator, Machine, MachineConfig, Reason, State, Timing,
};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::advertiser::{self, Advertiser, Order, Progress};
use crate::announce::Announcer;
use crate::engine::VhidStatus;
use crate::hooks::{self, HookKind};
use crate::keepalive::{Expected, Keepalives};
use crate::netlink::{AddressEvent, Netlink};
use crate::rx::{INBOX, Inbound, VhidEntry};
use crate::socket::{Dest, Sockets};
use crate::spec::{VhidKey, VhidSpec, VirtualAddr};
use crate::stats::{Lateness, VhidStats};
use crate::track::Demotions;
use crate::vmac;

/// Log send failures at most this often per VHID.
const SEND_ERROR_LOG_EVERY: Duration = Duration::from_secs(10);
/// Log replayed advertisements at most this often per VHID.
const REPLAY_LOG_EVERY: Duration = Duration::from_secs(10);
/// After an address could not be added (MASTER) or removed (otherwise),
/// try again this often until the addresses match the state: a BACKUP
/// left holding them would make two hosts answer for them.
const ADDRESS_RETRY: Duration = Duration::from_secs(1);
/// A BACKUP's master-down timer firing this late means the process did not
/// run meanwhile (stopped, a frozen VM): the master's advertisements may
/// wait unread in the socket.
const FROZEN: Duration = Duration::from_millis(250);
/// How long the receiver then gets to hand them over before the timer counts.
const RESUME_GRACE: Duration = Duration::from_millis(100);
/// Demotion of a node that, as MASTER, could not add back an address removed
/// under it: a peer takes over, and this node does not take the addresses
/// back until it holds them again.
const ADDRESS_LOST_DEMOTION: u8 = 240;
/// MASTERs with the same interval advertise on `GRID_SLOTS` instants per
/// interval, chosen by VHID number (see [`AdvertGrid`]): at 1000 VHIDs and
/// advbase 1 the advertiser wakes 4 times a second for 250 of them each,
/// and the peer's receiver as often, rather than for every few VHIDs apart.
/// Wake-ups are much of what this daemon costs: against VHIDs spread over
/// the interval, the scale benchmark's CPU drops by about a third.
const GRID_SLOTS: u16 = 4;

/// The origin of that grid, one for the process.
static GRID_EPOCH: LazyLock<std::time::Instant> = LazyLock::new(std::time::Instant::now);

/// Operator requests and link events for one VHID task.
#[derive(Debug)]
pub(crate) enum Command {
    Status(oneshot::Sender<VhidStatus>),
    /// Replies whether the VHID was MASTER (and so stepped down).
    StepDown(oneshot::Sender<bool>),
    Demote(i32, oneshot::Sender<()>),
    Link(bool),
    /// One of this VHID's addresses was added or removed (by anyone).
    Address(AddressEvent),
}

/// Everything a VHID needs to know about where it runs, resolved from the
/// spec and the interface; compared on reload to decide what changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct VhidParams {
    pub(crate) key: VhidKey,
    pub(crate) spec: VhidSpec,
    pub(crate) ifindex: u32,
    pub(crate) mac: [u8; 6],
    /// Source of IPv4 advertisements (`None` when the VHID has no IPv4
    /// address).
    pub(crate) src_v4: Option<Ipv4Addr>,
    /// Source of IPv6 advertisements (`None` when the VHID has no IPv6
    /// address).
    pub(crate) src_v6: Option<Ipv6Addr>,
    /// The macvlan child, with `virtual_mac`.
    pub(crate) vmac: Option<vmac::Child>,
    pub(crate) ignore_link_state: bool,
}

impl VhidParams {
    /// The address the machine uses for the equal-interval tie-break.
    fn local_addr(&self) -> IpAddr {
        match (self.src_v4, self.src_v6) {
            (Some(v4), _) => IpAddr::V4(v4),
            (None, Some(v6)) => IpAddr::V6(v6),
            (None, None) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        }
    }
}

/// The shared effect providers.
#[derive(Debug, Clone)]
pub(crate) struct Effects {
    pub(crate) sockets: Sockets,
    pub(crate) advertiser: Arc<Advertiser>,
    pub(crate) netlink: Netlink,
    pub(crate) announcer: Arc<Announcer>,
    pub(crate) lateness: Arc<Lateness>,
}

/// The engine's handle on one running VHID task.
#[derive(Debug)]
pub(crate) struct VhidHandle {
    pub(crate) params: VhidParams,
    pub(crate) entry: Arc<VhidEntry>,
    pub(crate) cancel: CancellationToken,
    pub(crate) join: JoinHandle<()>,
}

/// Start a VHID task. `link_up` is the parent link's state right now;
/// `tracked` follows the trackers' demotions.
pub(crate) fn spawn(
    params: VhidParams,
    auth: Authenticator,
    effects: Effects,
    link_up: bool,
    tracked: watch::Receiver<Arc<Demotions>>,
) -> VhidHandle {
    let (inbox_tx, inbox_rx) = mpsc::channel(INBOX);
    let (cmd_tx, cmd_rx) = mpsc::channel(64);
    let stats = Arc::new(VhidStats::default());
    let keepalives = Arc::new(Keepalives::default());
    let cancel = CancellationToken::new();
    let entry = Arc::new(VhidEntry {
        key: params.key.clone(),
        auth: auth.clone(),
        inbox: inbox_tx,
        commands: cmd_tx,
        stats: Arc::clone(&stats),
        keepalives: Arc::clone(&keepalives),
    });
    let config = MachineConfig {
        vhid: params.spec.vhid,
        timing: Timing::new(params.spec.advbase, params.spec.advskew),
        dead_ratio: params.spec.dead_ratio,
        preempt: params.spec.preempt,
        demote_style: params.spec.demote_style,
        local_addr: params.local_addr(),
        initial_counter: rand::random(),
        advert_grid: Some(AdvertGrid {
            epoch: *GRID_EPOCH,
            slot: u16::from(params.spec.vhid),
            slots: GRID_SLOTS,
        }),
    };
    let now = Instant::now();
    let task = Task {
        machine: Machine::new(config),
        params: params.clone(),
        auth,
        effects,
        stats,
        operator_demote: 0,
        tracked,
        link_up: link_up || params.ignore_link_state,
        state_since: now,
        last_transition: None,
        last_reason: None,
        transitions: 0,
        transitions_by_reason: BTreeMap::new(),
        started: false,
        hooks: Vec::new(),
        last_send_error_log: None,
        timer_deadline: None,
        replay: params.spec.replay_protection.then(ReplayWindow::new),
        last_replay_log: None,
        child: None,
        child_up: false,
        address_retry: None,
        keepalives,
        expected: None,
        last_advert: None,
        standing: None,
        resume_grace: None,
        address_demote: 0,
    };
    let join = tokio::spawn(task.run(inbox_rx, cmd_rx, cancel.clone()));
    VhidHandle {
        params,
        entry,
        cancel,
        join,
    }
}

struct Task {
    machine: Machine,
    params: VhidParams,
    auth: Authenticator,
    effects: Effects,
    stats: Arc<VhidStats>,
    operator_demote: u8,
    /// Demotions of the trackers (the ones covering this VHID count).
    tracked: watch::Receiver<Arc<Demotions>>,
    link_up: bool,
    state_since: Instant,
    last_transition: Option<String>,
    last_reason: Option<&'static str>,
    transitions: u64,
    transitions_by_reason: BTreeMap<&'static str, u64>,
    /// The down-at-start hook has had its chance.
    started: bool,
    /// Hook runs not known to be finished; awaited on shutdown.
    hooks: Vec<JoinHandle<()>>,
    last_send_error_log: Option<Instant>,
    /// The deadline whose expiry is being handled, to measure how late the
    /// resulting advertisement leaves.
    timer_deadline: Option<Instant>,
    /// Counters accepted per peer, when replay protection is on.
    replay: Option<ReplayWindow>,
    last_replay_log: Option<Instant>,
    /// Index of the macvlan child, once created.
    child: Option<u32>,
    /// The child is up (while MASTER): advertisements leave from it.
    child_up: bool,
    /// When to try again to bring the addresses in line with the state,
    /// after adding or removing one failed (`None`: they are in line).
    address_retry: Option<Instant>,
    /// BACKUP: keepalives the receiver notes instead of sending them here.
    keepalives: Arc<Keepalives>,
    /// What `keepalives` was last told to expect.
    expected: Option<Expected>,
    /// The last advertisement handed to the machine.
    last_advert: Option<Inbound>,
    /// MASTER: the steady advertisements, while the advertiser sends them.
    standing: Option<Standing>,
    /// A deadline that fired [`FROZEN`] late, and when it counts instead.
    resume_grace: Option<(Instant, Instant)>,
    /// [`ADDRESS_LOST_DEMOTION`] from a failed restore until the addresses
    /// are added as MASTER again; else 0.
    address_demote: u8,
}

/// A schedule handed over to the advertiser. Taken back when dropped, so
/// that no advertisement outlives its task, even one that was aborted.
struct Standing {
    id: u64,
    /// Fires when the advertiser hands it back unsent.
    returned: oneshot::Receiver<()>,
    advertiser: Arc<Advertiser>,
}

impl Standing {
    fn take_back(&self) -> Option<Progress> {
        self.advertiser.take_back(self.id)
    }
}

impl Drop for Standing {
    fn drop(&mut self) {
        self.take_back();
    }
}

/// What woke a VHID task.
enum Wake {
    Timer,
    Cancelled,
    Command(Command),
    Tracked,
    Advert(Inbound),
    /// The advertiser handed the schedule back.
    Returned,
    AddressRetry,
}

pub(crate) fn std_now() -> std::time::Instant {
    Instant::now().into_std()
}

impl Task {
    async fn run(
        mut self,
        mut inbox: mpsc::Receiver<Inbound>,
        mut commands: mpsc::Receiver<Command>,
        cancel: CancellationToken,
    ) {
        self.create_child().await;
        self.remove_stale().await;
        // before leaving INIT, so the first advertisement carries it
        self.update_demote();
        self.machine.handle_link(std_now(), self.link_up);
        self.drain().await;
        // Kept across iterations: made anew each time, it would register
        // and unregister with the token on every advertisement.
        let cancelled = cancel.cancelled();
        tokio::pin!(cancelled);
        loop {
            self.hand_over();
            self.expect_keepalives();
            let master = self.machine.state() == State::Master;
            let deadline = match self.standing {
                Some(_) => None,
                None => self.machine.poll_timeout().map(Instant::from_std),
            };
            // Only advertisements: a master-down timer that fired early
            // would take over early.
            let wake = match (deadline, self.resume_grace) {
                (Some(d), _) if master => Some(d.checked_sub(advertiser::WAKE_EARLY).unwrap_or(d)),
                (Some(d), Some((late, until))) if late == d => Some(until),
                (other, _) => other,
            };
            let address_retry = self.address_retry;
            // A MASTER's timer first: most of its wake-ups are its
            // advertisements. Any other timer after the inbox, so that an
            // advertisement already received counts before the master-down
            // deadline.
            let woken = tokio::select! {
                biased;
                () = sleep_until_opt(wake), if master => Wake::Timer,
                () = &mut cancelled => Wake::Cancelled,
                Some(cmd) = commands.recv() => Wake::Command(cmd),
                Ok(()) = self.tracked.changed() => Wake::Tracked,
                Some(msg) = inbox.recv() => Wake::Advert(msg),
                () = returned(&mut self.standing) => Wake::Returned,
                () = sleep_until_opt(wake), if !master => Wake::Timer,
                () = sleep_until_opt(address_retry) => Wake::AddressRetry,
            };
            // the machine first learns what happened while it slept
            let handed_back = self.take_back();
            self.take_keepalive();
            match woken {
                Wake::Cancelled => break,
                Wake::Timer => self.timer_fired(deadline),
                Wake::Command(cmd) => self.command(cmd).await,
                Wake::Tracked => self.update_demote(),
                Wake::Advert(msg) => self.advert(msg),
                // what the advertiser could not send, the machine sends
                Wake::Returned => self.timer_fired(handed_back),
                Wake::AddressRetry => self.retry_addresses().await,
            }
            self.drain().await;
            self.timer_deadline = None;
        }
        // earlier hook runs finish on their own (with their timeout); only
        // the exit hook is waited for
        self.hooks.clear();
        self.machine.shutdown(std_now());
        self.drain().await;
        if self.address_retry.is_some() {
            let p = &self.params.key;
            tracing::error!(interface = %p.interface, vhid = p.vhid,
                "exiting with addresses that could not be removed; another host may own them");
        }
        self.delete_child().await;
        for h in self.hooks.drain(..) {
            // bounded by the hook's own timeout
            let _ = h.await;
        }
    }

    /// MASTER with steady advertisements: hand them to the advertiser.
    fn hand_over(&mut self) {
        if self.standing.is_some() {
            return;
        }
        let Some(steady) = self
            .machine
            .steady_adverts()
            .filter(|s| s.timing.interval() >= advertiser::MIN_INTERVAL)
        else {
            return;
        };
        let (id, returned) = self.effects.advertiser.hand_over(Order {
            vhid: self.params.spec.vhid,
            steady,
            dests: self.destinations(),
            sockets: self.effects.sockets.clone(),
            auth: self.auth.clone(),
            stats: Arc::clone(&self.stats),
        });
        self.standing = Some(Standing {
            id,
            returned,
            advertiser: Arc::clone(&self.effects.advertiser),
        });
    }

    /// Take the schedule back from the advertiser and tell the machine how
    /// far it got; the deadline of the next advertisement, if any.
    fn take_back(&mut self) -> Option<Instant> {
        let progress = self.standing.take()?.take_back()?;
        self.machine
            .steady_adverts_sent(progress.sent, progress.next);
        Some(Instant::from_std(progress.next))
    }

    /// BACKUP: have the receiver note repeats of the last advertisement
    /// while all they do is restart the master-down timer (not with
    /// replay protection, which checks every counter here).
    fn expect_keepalives(&mut self) {
        let expected = self
            .last_advert
            .filter(|m| {
                self.replay.is_none()
                    && self.machine.master_addr() == Some(m.src)
                    && self.machine.is_keepalive(&m.advert)
            })
            .map(|m| Expected::of(m.src, &m.advert));
        if expected != self.expected {
            self.keepalives.expect(expected);
            self.expected = expected;
        }
    }

    /// Hand the machine the latest keepalive the receiver noted, as of
    /// when it arrived.
    fn take_keepalive(&mut self) {
        if let Some(h) = self.keepalives.take() {
            self.machine.handle_advert(h.at, h.src, &h.advert);
            self.last_advert = Some(Inbound {
                src: h.src,
                advert: h.advert,
            });
        }
    }

    fn advert(&mut self, msg: Inbound) {
        if self.fresh(&msg) {
            self.stats.received.fetch_add(1, Ordering::Relaxed);
            self.machine.handle_advert(std_now(), msg.src, &msg.advert);
            self.last_advert = Some(msg);
        }
    }

    /// The machine's deadline (or the early wake-up for it) has come.
    fn timer_fired(&mut self, deadline: Option<Instant>) {
        if self.defer_after_freeze(deadline) {
            return;
        }
        self.timer_deadline = deadline;
        // woken early: handled as at the deadline
        let now = deadline.map_or_else(std_now, |d| std_now().max(d.into_std()));
        self.machine.handle_timeout(now);
    }

    /// Whether to give the receiver [`RESUME_GRACE`] before a BACKUP's
    /// deadline that fired [`FROZEN`] late counts: once per deadline.
    fn defer_after_freeze(&mut self, deadline: Option<Instant>) -> bool {
        let Some(d) = deadline else {
            return false;
        };
        let late = Instant::now().saturating_duration_since(d);
        if self.machine.state() == State::Master
            || late < FROZEN
            || self.resume_grace.is_some_and(|(seen, _)| seen == d)
        {
            return false;
        }
        let p = &self.params.key;
        tracing::info!(interface = %p.interface, vhid = p.vhid, late_ms = late.as_millis(),
            "master-down timer fired late (the process was not running): advertisements received meanwhile count first");
        self.resume_grace = Some((d, Instant::now() + RESUME_GRACE));
        true
    }

    /// Replay protection: whether an authenticated advertisement is new
    /// enough to reach the machine (always, with the protection off).
    fn fresh(&mut self, msg: &Inbound) -> bool {
        let Some(window) = &mut self.replay else {
            return true;
        };
        let Err(reason) = window.check(msg.src, msg.advert.counter) else {
            return true;
        };
        self.stats.drops.add(reason);
        let now = Instant::now();
        if self
            .last_replay_log
            .is_none_or(|t| now.duration_since(t) >= REPLAY_LOG_EVERY)
        {
            self.last_replay_log = Some(now);
            let p = &self.params.key;
            tracing::info!(interface = %p.interface, vhid = p.vhid, src = %msg.src, reason = reason.as_str(),
                "dropped advertisement: {reason} (further drops for this reason counted silently for 10 s)");
        }
        false
    }

    async fn command(&mut self, cmd: Command) {
        match cmd {
            Command::Status(reply) => {
                let _ = reply.send(self.status());
            }
            Command::StepDown(reply) => {
                let master = self.machine.state() == State::Master;
                if master {
                    self.machine.step_down(std_now());
                }
                let _ = reply.send(master);
            }
            Command::Demote(delta, reply) => {
                let d = (i64::from(self.operator_demote) + i64::from(delta)).clamp(0, 255);
                self.operator_demote = u8::try_from(d).unwrap_or(u8::MAX);
                self.update_demote();
                let _ = reply.send(());
            }
            Command::Link(up) => {
                if !self.params.ignore_link_state && up != self.link_up {
                    self.link_up = up;
                    tracing::info!(interface = %self.params.key.interface, vhid = self.params.key.vhid,
                        "link {}", if up { "up" } else { "down" });
                    self.machine.handle_link(std_now(), up);
                }
            }
            Command::Address(event) => self.address_changed(event).await,
        }
    }

    /// Someone added or removed one of our addresses: a MASTER puts back
    /// what it lost (and demotes itself and steps down if it cannot), any
    /// other state removes what appeared. Events of our own adds and removes find the address as
    /// the state wants it (or are of the kind the state ignores), so nothing
    /// is done or counted for them.
    async fn address_changed(&mut self, event: AddressEvent) {
        if !self.params.spec.manage_addresses {
            return;
        }
        let master = self.machine.state() == State::Master;
        let only = match event {
            AddressEvent::Added { addr, .. } if !master => Some(addr),
            AddressEvent::Removed { addr, .. } if master => Some(addr),
            AddressEvent::Lost => None,
            _ => return,
        };
        let ifindex = self.address_ifindex();
        let addrs: Vec<VirtualAddr> = (self.params.spec.addresses.iter())
            .filter(|a| only.is_none_or(|o| o == a.addr))
            .copied()
            .collect();
        let p = &self.params;
        for a in addrs {
            if master {
                let label = if a.addr.is_ipv4() {
                    p.spec.label.as_deref()
                } else {
                    None
                };
                match self.effects.netlink.add_address(ifindex, a, label).await {
                    Ok(true) => {
                        self.stats.address_restored.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(interface = %p.key.interface, vhid = p.key.vhid, address = %a.addr,
                            "address removed while MASTER by something else; added back");
                    }
                    Ok(false) => {}
                    // the interface went with the address: the link events
                    // take the VHID to INIT and the engine restarts it
                    Err(e) if e.is_no_device() => return,
                    Err(e) => {
                        tracing::error!(interface = %p.key.interface, vhid = p.key.vhid, address = %a.addr, error = %e,
                            "address removed while MASTER by something else and cannot be added back; demoting and stepping down");
                        // the demotion is advertised at once, so a peer takes
                        // over without waiting for master-down
                        self.address_demote = ADDRESS_LOST_DEMOTION;
                        self.update_demote();
                        self.machine.step_down(std_now());
                        return;
                    }
                }
            } else {
                match self.effects.netlink.del_address(ifindex, a).await {
                    Ok(true) => {
                        self.stats
                            .address_removed_foreign
                            .fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(interface = %p.key.interface, vhid = p.key.vhid, address = %a.addr,
                            state = self.machine.state().as_str(),
                            "address added by something else while not MASTER; removed");
                    }
                    Ok(false) => {}
                    Err(e) => {
                        tracing::warn!(interface = %p.key.interface, vhid = p.key.vhid, address = %a.addr, error = %e,
                            "address added by something else while not MASTER and cannot be removed (trying again every second)");
                        self.addresses_done(true, "removed");
                        return;
                    }
                }
            }
        }
    }

    /// The demotion in effect: the operator's plus the trackers'.
    fn update_demote(&mut self) {
        let p = &self.params;
        let tracked = self.tracked.borrow_and_update().for_vhid(&p.key, &p.spec);
        let demote = (self.operator_demote)
            .saturating_add(tracked)
            .saturating_add(self.address_demote);
        if demote != self.machine.demote() {
            tracing::info!(interface = %p.key.interface, vhid = p.key.vhid,
                operator = self.operator_demote, tracked, address_lost = self.address_demote,
                "demotion {demote}");
        }
        self.machine.set_demote(std_now(), demote);
    }

    fn status(&self) -> VhidStatus {
        let timing = self.machine.effective_timing();
        VhidStatus {
            key: self.params.key.clone(),
            state: self.machine.state(),
            addresses: self.params.spec.addresses.clone(),
            advbase: timing.advbase,
            advskew: timing.advskew,
            demote: self.machine.demote(),
            master: self.machine.master_addr(),
            in_state_for: self.state_since.elapsed(),
            last_transition: self.last_transition.clone(),
            last_reason: self.last_reason,
            transitions: self.transitions,
            transitions_by_reason: self.transitions_by_reason.clone(),
            hook_runs: self.stats.hook_runs.load(Ordering::Relaxed),
            hook_failures: self.stats.hook_failures.load(Ordering::Relaxed),
            address_restored: self.stats.address_restored.load(Ordering::Relaxed),
            address_removed_foreign: self.stats.address_removed_foreign.load(Ordering::Relaxed),
            waiting_for: None,
            adverts_sent: self.stats.sent.load(Ordering::Relaxed),
            adverts_received: self.stats.received.load(Ordering::Relaxed),
            drops: self.stats.drops.snapshot(),
        }
    }

    async fn drain(&mut self) {
        while let Some(action) = self.machine.poll_action() {
            match action {
                Action::Send(s) => self.send(s).await,
                Action::InstallAddresses => self.install().await,
                Action::RemoveAddresses => self.remove().await,
                Action::Announce => self.announce(),
                Action::StateChanged { from, to, reason } => self.state_changed(from, to, reason),
            }
        }
    }

    async fn send(&mut self, s: SendAdvert) {
        let advert = Advert {
            vhid: self.params.spec.vhid,
            advskew: s.timing.advskew,
            advbase: s.timing.advbase,
            demote: s.demote,
            counter: s.counter,
            hmac: self.auth.sign(s.counter),
        };
        let bytes = advert.to_bytes();
        // before sending, so that a looped copy is recognised
        self.stats.set_last_counter(s.counter);
        if let Some(deadline) = self.timer_deadline.take() {
            self.effects
                .lateness
                .record(Instant::now().saturating_duration_since(deadline));
        }
        let mut result = Ok(());
        for dest in self.destinations() {
            let r = self.effects.sockets.send(dest, &bytes).await;
            result = result.and(r);
        }
        let ok = result.is_ok();
        let p = &self.params;
        if ok {
            self.stats.sent.fetch_add(1, Ordering::Relaxed);
        } else if let Err(e) = result {
            let now = Instant::now();
            if self
                .last_send_error_log
                .is_none_or(|t| now.duration_since(t) >= SEND_ERROR_LOG_EVERY)
            {
                self.last_send_error_log = Some(now);
                tracing::warn!(interface = %p.key.interface, vhid = p.key.vhid, error = %e,
                    "cannot send advertisement");
            }
        }
        self.machine.handle_send_result(std_now(), ok);
    }

    /// Every copy of an advertisement.
    fn destinations(&self) -> Vec<Dest> {
        let p = &self.params;
        let peers = &p.spec.transport.peers;
        // Unicast advertisements leave from the parent: peers may be routed,
        // and they check the source address. Group ones leave from the
        // virtual MAC while it is up, so that switches learn it.
        let group_if = match self.child {
            Some(child) if self.child_up => child,
            _ => p.ifindex,
        };
        let mut dests = Vec::new();
        if let Some(src) = p.src_v4 {
            if peers.is_empty() {
                let (ifindex, dst) = (group_if, p.spec.group_v4);
                dests.push(match &self.effects.sockets.broadcast {
                    Some(_) if p.spec.broadcast => Dest::Broadcast { ifindex, src, dst },
                    _ => Dest::V4 { ifindex, src, dst },
                });
            }
            for peer in peers {
                if let IpAddr::V4(dst) = *peer {
                    dests.push(Dest::V4 {
                        ifindex: p.ifindex,
                        src,
                        dst,
                    });
                }
            }
        }
        if let (Some(src), Some(_)) = (p.src_v6, &self.effects.sockets.v6) {
            if peers.is_empty() {
                dests.push(Dest::V6 {
                    ifindex: group_if,
                    src,
                    dst: GROUP_V6,
                });
            }
            for peer in peers {
                if let IpAddr::V6(dst) = *peer {
                    // the kernel picks the source the peer knows us by: the
                    // link-local address for a link-local peer
                    dests.push(Dest::V6 {
                        ifindex: p.ifindex,
                        src: Ipv6Addr::UNSPECIFIED,
                        dst,
                    });
                }
            }
        }
        dests
    }

    /// Where the addresses go: the child if there is one, else the parent.
    fn address_ifindex(&self) -> u32 {
        self.child.unwrap_or(self.params.ifindex)
    }

    /// Create the macvlan child (down) for `virtual_mac`. On failure the
    /// VHID runs on the parent with its real MAC, and says so.
    async fn create_child(&mut self) {
        let Some(c) = self.params.vmac.clone() else {
            return;
        };
        let p = &self.params;
        let has_ipv4 = p.spec.addresses.iter().any(|a| a.addr.is_ipv4());
        let has_ipv6 = p.spec.addresses.iter().any(|a| a.addr.is_ipv6());
        let created = match self
            .effects
            .netlink
            .create_macvlan(p.ifindex, &c.name, c.mac)
            .await
        {
            Ok(index) => match vmac::configure_child(&c.name, has_ipv6) {
                Ok(()) => Ok(index),
                Err(e) => {
                    let _ = self.effects.netlink.delete_link(index).await;
                    Err(e.to_string())
                }
            },
            Err(e) => Err(e.to_string()),
        };
        match created {
            Ok(index) => {
                tracing::info!(interface = %p.key.interface, vhid = p.key.vhid, child = %c.name,
                    "virtual MAC {} on {}", show_mac(c.mac), c.name);
                let leaks = vmac::parent_arp_leaks(&p.key.interface);
                if has_ipv4 && !leaks.is_empty() {
                    tracing::warn!(interface = %p.key.interface, vhid = p.key.vhid,
                        "{} may still show its own MAC for the virtual addresses; set {}",
                        p.key.interface, leaks.join(" and "));
                }
                self.child = Some(index);
            }
            Err(e) => {
                tracing::error!(interface = %p.key.interface, vhid = p.key.vhid, child = %c.name,
                error = %e, "cannot create the virtual MAC interface; using the real MAC")
            }
        }
    }

    async fn set_child_up(&mut self, up: bool) {
        let Some(child) = self.child else { return };
        if self.child_up == up {
            return;
        }
        match self.effects.netlink.set_link_up(child, up).await {
            Ok(()) => self.child_up = up,
            Err(e) => {
                let p = &self.params.key;
                tracing::warn!(interface = %p.interface, vhid = p.vhid, error = %e,
                    "cannot set the virtual MAC interface {}", if up { "up" } else { "down" });
            }
        }
    }

    async fn delete_child(&mut self) {
        if let Some(child) = self.child.take() {
            self.child_up = false;
            if let Err(e) = self.effects.netlink.delete_link(child).await {
                let p = &self.params.key;
                tracing::warn!(interface = %p.interface, vhid = p.vhid, error = %e,
                    "cannot delete the virtual MAC interface");
            }
        }
    }

    async fn install(&mut self) {
        self.set_child_up(true).await;
        if !self.params.spec.manage_addresses {
            return;
        }
        let ifindex = self.address_ifindex();
        let p = &self.params;
        let retrying = self.address_retry.is_some();
        let mut failed = false;
        for a in &p.spec.addresses {
            let label = if a.addr.is_ipv4() {
                p.spec.label.as_deref()
            } else {
                None
            };
            if let Err(e) = self.effects.netlink.add_address(ifindex, *a, label).await {
                failed = true;
                if !retrying {
                    tracing::warn!(interface = %p.key.interface, vhid = p.key.vhid, address = %a.addr, error = %e,
                        "cannot add address (trying again every second while MASTER)");
                }
            }
        }
        self.addresses_done(failed, "added");
        if !failed && self.address_demote > 0 {
            self.address_demote = 0;
            self.update_demote();
        }
    }

    /// Schedule (or end) retries after adding or removing the addresses.
    fn addresses_done(&mut self, failed: bool, what: &str) {
        if failed {
            self.address_retry = Some(Instant::now() + ADDRESS_RETRY);
        } else if self.address_retry.take().is_some() {
            let p = &self.params.key;
            tracing::info!(interface = %p.interface, vhid = p.vhid, "addresses {what} after retrying");
        }
    }

    /// Try again to make the addresses match the state: present while
    /// MASTER, absent otherwise.
    async fn retry_addresses(&mut self) {
        if self.machine.state() == State::Master {
            self.install().await;
        } else {
            self.remove().await;
        }
    }

    /// A task starts in INIT and goes to BACKUP before it can become
    /// MASTER, so any of its addresses present now were left by a previous
    /// run that did not stop cleanly (SIGKILL, crash): remove them, or two
    /// hosts would answer for them.
    async fn remove_stale(&mut self) {
        if !self.params.spec.manage_addresses {
            return;
        }
        let p = &self.params;
        let mut failed = false;
        for a in &p.spec.addresses {
            match self.effects.netlink.del_address(p.ifindex, *a).await {
                Ok(true) => tracing::info!(interface = %p.key.interface, vhid = p.key.vhid,
                    address = %a.addr, "removed an address left by a previous run"),
                Ok(false) => {}
                Err(e) => {
                    failed = true;
                    tracing::warn!(interface = %p.key.interface, vhid = p.key.vhid, address = %a.addr, error = %e,
                        "cannot remove an address left by a previous run (trying again every second while not MASTER)")
                }
            }
        }
        self.addresses_done(failed, "removed");
    }

    async fn remove(&mut self) {
        if self.params.spec.manage_addresses {
            let ifindex = self.address_ifindex();
            let p = &self.params;
            let retrying = self.address_retry.is_some();
            let mut failed = false;
            for a in &p.spec.addresses {
                if let Err(e) = self.effects.netlink.del_address(ifindex, *a).await {
                    failed = true;
                    if !retrying {
                        tracing::warn!(interface = %p.key.interface, vhid = p.key.vhid, address = %a.addr, error = %e,
                            "cannot remove address (trying again every second while not MASTER)");
                    }
                }
            }
            self.addresses_done(failed, "removed");
        }
        self.set_child_up(false).await;
    }

    fn announce(&self) {
        let p = &self.params;
        let (ifindex, mac) = match (self.child, &p.vmac) {
            (Some(child), Some(c)) => (child, c.mac),
            _ => (p.ifindex, p.mac),
        };
        for a in &p.spec.addresses {
            let r = match a.addr {
                IpAddr::V4(ip) => self.effects.announcer.gratuitous_arp(ifindex, mac, ip),
                IpAddr::V6(ip) => self.effects.announcer.unsolicited_na(ifindex, mac, ip),
            };
            if let Err(e) = r {
                tracing::warn!(interface = %p.key.interface, vhid = p.key.vhid, address = %a.addr, error = %e,
                    "cannot announce address");
            }
        }
    }

    fn state_changed(&mut self, from: State, to: State, reason: Reason) {
        let line = format!("{} -> {} ({})", from.as_str(), to.as_str(), reason.as_str());
        tracing::info!(interface = %self.params.key.interface, vhid = self.params.key.vhid,
            from = from.as_str(), to = to.as_str(), reason = reason.as_str(),
            "{} vhid {}: {line}", self.params.key.interface, self.params.key.vhid);
        self.last_transition = Some(line);
        self.last_reason = Some(reason.as_str());
        self.transitions += 1;
        *self
            .transitions_by_reason
            .entry(reason.as_str())
            .or_default() += 1;
        self.state_since = Instant::now();

        let hooks = &self.params.spec.hooks;
        let first_backup = !self.started && from == State::Init && to == State::Backup;
        let kind = if to == State::Master {
            Some(HookKind::Up)
        } else if from == State::Master {
            (reason != Reason::Shutdown || hooks.down_on_exit).then_some(HookKind::Down)
        } else if first_backup {
            hooks.down_at_start.then_some(HookKind::Down)
        } else {
            None
        };
        if to != State::Init {
            self.started = true;
        }
        if let Some(kind) = kind {
            self.run_hook(kind, to);
        }
    }

    fn run_hook(&mut self, kind: HookKind, state: State) {
        self.hooks.retain(|h| !h.is_finished());
        let addrs: Vec<IpAddr> = self.params.spec.addresses.iter().map(|a| a.addr).collect();
        let p = &self.params;
        let stats = Arc::clone(&self.stats);
        if let Some(h) = hooks::spawn_hook(
            &p.spec.hooks,
            kind,
            &p.key.interface,
            p.key.vhid,
            state,
            &addrs,
            move |outcome| {
                if outcome != hooks::HookOutcome::Success {
                    stats.hook_failures.fetch_add(1, Ordering::Relaxed);
                }
            },
        ) {
            self.stats.hook_runs.fetch_add(1, Ordering::Relaxed);
            self.hooks.push(h);
        }
    }
}

fn show_mac(mac: [u8; 6]) -> String {
    mac.map(|b| format!("{b:02x}")).join(":")
}

/// Until the advertiser hands the schedule back (never without one).
async fn returned(standing: &mut Option<Standing>) {
    match standing {
        Some(s) => {
            let _ = (&mut s.returned).await;
        }
        None => std::future::pending().await,
    }
}

pub(crate) async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}
