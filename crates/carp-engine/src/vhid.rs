//! One tokio task per VHID: it drives a [`Machine`] with real timers and
//! turns its actions into effects (advertisements, addresses, ARP/NA,
//! hooks).
//!
//! ```text
//!  start         virtual MAC created, stale addresses removed, out of INIT
//!    │
//!    ▼
//!  ┌─> delegate    steady work to the advertiser / the receiver (offload.rs)
//!  │   sleep       one select!: timer, cancellation, commands, trackers,
//!  │               inbox, schedule handed back, address retry
//!  │   reclaim     the machine learns what happened while it slept
//!  │   handle      the wake-up, as input to the machine
//!  └── run_actions sends, addresses, ARP/NA, hook requests (hooks.rs)
//!    │ cancelled
//!    ▼
//!  stop          last actions (bow-out, down hook), virtual MAC deleted,
//!                exit hook waited for
//! ```
//!
//! A task is made of parts, each in its own module: the machine
//! (carp-proto), the hand-offs to the advertiser and the receiver
//! (`offload.rs`), the addresses (`addresses.rs`), the virtual MAC
//! (`vmac.rs`), the status history (`history.rs`), the peers heard
//! (`peers.rs`), the hooks, which run
//! one at a time in transition order in a task of their own (`hooks.rs`).
//! In the steady states it mostly sleeps: see `offload.rs`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use carp_proto::machine::{CarpRules, Rules, SendAdvert, SendCarp, SendVrrp, VrrpRules};
use carp_proto::packet::GROUP_V6;
use carp_proto::replay::ReplayWindow;
use carp_proto::vrrp;
use carp_proto::{Action, Authenticator, Machine, MachineConfig, Reason, State, Timing};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::addresses::Addresses;
use crate::advertiser::{self, Advertiser, Order};
use crate::announce::Announcer;
use crate::clock::{advert_grid, sleep_until_opt, std_now};
use crate::conflict::{Claims, Conflict, ConflictAnswers, mac_text};
use crate::engine::{PeerStatus, VhidStatus};
use crate::events::{EventBus, EventKind};
use crate::history::History;
use crate::hooks::{HookContext, HookKind, HookRequest, HookRunner};
use crate::keepalive::Keepalives;
use crate::log_limit::LogLimiter;
use crate::netlink::{AddressEvent, Netlink};
use crate::offload::Offload;
use crate::operator::OperatorDemotions;
use crate::peers::Peers;
use crate::rx::{Check, Delivery, INBOX, Inbound, VhidEntry, VrrpCheck, VrrpInbound};
use crate::socket::{Dest, Sockets};
use crate::spec::{Protocol, VhidKey, VhidSpec};
use crate::stats::{Lateness, VhidStats};
use crate::track::Demotions;
use crate::vmac;

/// Send failures and replayed advertisements are each logged at most this
/// often per VHID.
const LOG_EVERY: Duration = Duration::from_secs(10);
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

/// Operator requests and link events for one VHID task. Two words: a
/// tokio channel allocates room for 32 of them with each VHID's queue,
/// whatever its capacity, so the rare larger variants are boxed.
#[derive(Debug)]
pub(crate) enum Command {
    Status(oneshot::Sender<VhidStatus>),
    /// Replies whether the VHID was MASTER (and so stepped down).
    StepDown(oneshot::Sender<bool>),
    Demote(i32, oneshot::Sender<()>),
    Link(bool),
    /// One of this VHID's addresses was added or removed (by anyone).
    Address(Box<AddressEvent>),
    /// One of its addresses was claimed on the wire for a foreign MAC.
    Conflict(Box<Conflict>),
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
    /// The names of the settings that differ from `new` (configuration
    /// keys where there is one), for a reload to report.
    pub(crate) fn changed(&self, new: &VhidParams) -> Vec<&'static str> {
        let (a, b) = (&self.spec, &new.spec);
        let fields = [
            ("addresses", a.addresses != b.addresses),
            ("label", a.label != b.label),
            ("password", a.key != b.key),
            ("auth", a.auth != b.auth),
            ("demote_style", a.demote_style != b.demote_style),
            ("advbase", a.advbase != b.advbase),
            ("advskew", a.advskew != b.advskew),
            ("dead_ratio", a.dead_ratio != b.dead_ratio),
            ("preempt", a.preempt != b.preempt),
            ("source", a.source != b.source),
            ("group", a.group_v4 != b.group_v4),
            ("broadcast", a.broadcast != b.broadcast),
            ("manage_addresses", a.manage_addresses != b.manage_addresses),
            (
                "replay_protection",
                a.replay_protection != b.replay_protection,
            ),
            ("hooks", a.hooks != b.hooks),
            ("groups", a.groups != b.groups),
            ("share", a.share != b.share),
            ("peers", a.transport.peers != b.transport.peers),
            (
                "unicast_ttl_check",
                a.transport.unicast_ttl_check != b.transport.unicast_ttl_check,
            ),
            (
                "interface",
                self.ifindex != new.ifindex || self.mac != new.mac,
            ),
            (
                "source_address",
                self.src_v4 != new.src_v4 || self.src_v6 != new.src_v6,
            ),
            (
                "virtual_mac",
                a.transport.virtual_mac != b.transport.virtual_mac || self.vmac != new.vmac,
            ),
            (
                "ignore_link_state",
                self.ignore_link_state != new.ignore_link_state,
            ),
        ];
        let mut out: Vec<&'static str> = fields
            .iter()
            .filter(|(_, differs)| *differs)
            .map(|(name, _)| *name)
            .collect();
        // accept_mode belongs to the engine's filter, not to the task
        let mut same_filter = new.clone();
        if let (Protocol::Vrrp(a), Protocol::Vrrp(b)) =
            (&self.spec.protocol, &mut same_filter.spec.protocol)
        {
            b.accept_mode = a.accept_mode;
        }
        if out.is_empty() && *self != same_filter {
            // a setting without a name of its own here
            out.push("other");
        }
        out
    }

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
    pub(crate) events: EventBus,
    /// The MASTERs' addresses, for the conflict watch.
    pub(crate) claims: Arc<Claims>,
    /// The operator's demotions, which outlive a task.
    pub(crate) operator: Arc<OperatorDemotions>,
}

/// The engine's handle on one running VHID task.
#[derive(Debug)]
pub(crate) struct VhidHandle {
    /// Shared with the task, which holds them for its life.
    pub(crate) params: Arc<VhidParams>,
    /// The parameters' interface index, kept here so that finding one
    /// interface's VHIDs reads no other VHID's parameters.
    pub(crate) ifindex: u32,
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
    // Held once: the parameters by the task and the engine's handle, the
    // authenticator by the task, the receive entry and the advertiser.
    let params = Arc::new(params);
    let auth = Arc::new(auth);
    let (inbox_tx, inbox_rx) = mpsc::channel(INBOX);
    let (cmd_tx, cmd_rx) = mpsc::channel(64);
    let own_commands = cmd_tx.downgrade();
    let stats = Arc::new(VhidStats::default());
    let keepalives = Arc::new(Keepalives::default());
    let peers = Arc::new(Peers::default());
    let cancel = CancellationToken::new();
    let entry = Arc::new(VhidEntry {
        key: params.key.clone(),
        check: receive_check(&params.spec, &auth),
        inbox: inbox_tx,
        commands: cmd_tx,
        stats: Arc::clone(&stats),
        keepalives: Arc::clone(&keepalives),
        peers: Arc::clone(&peers),
    });
    let config = MachineConfig {
        vhid: params.spec.vhid,
        rules: machine_rules(&params.spec),
        preempt: params.spec.preempt,
        preempt_delay: params.spec.preempt_delay,
        local_addr: params.local_addr(),
        initial_counter: rand::random(),
        advert_grid: Some(advert_grid(params.spec.vhid)),
    };
    let replay = params.spec.replay_protection.then(ReplayWindow::new);
    let operator_demote = effects.operator.get(&params.key);
    let hooks = HookRunner::spawn(HookContext {
        spec: params.spec.hooks.clone(),
        interface: params.key.interface.clone(),
        vhid: params.key.vhid,
        addresses: params.spec.addresses.iter().map(|a| a.addr).collect(),
        stats: Arc::clone(&stats),
        events: effects.events.clone(),
        key: params.key.clone(),
    });
    let task = Task {
        machine: Machine::new(config),
        offload: Offload::new(
            Arc::clone(&effects.advertiser),
            keepalives,
            replay.is_none(),
        ),
        addresses: Addresses::new(&params.spec),
        vmac: None,
        history: History::new(Instant::now()),
        params: Arc::clone(&params),
        auth,
        effects,
        stats,
        peers,
        operator_demote,
        tracked,
        link_up: link_up || params.ignore_link_state,
        started: false,
        hooks,
        replay,
        noisy: LogLimiter::new(LOG_EVERY),
        lateness_from: None,
        resume_grace: None,
        address_demote: 0,
        announce_at: None,
        conflicts: ConflictAnswers::default(),
        own_commands,
    };
    // Every line the task logs names its VHID through this span (text:
    // `vhid{interface=eth0 vhid=1}:`, JSON: the `span` object). At ERROR,
    // so that no level filter disables it while letting its events through.
    let span =
        tracing::error_span!("vhid", interface = %params.key.interface, vhid = params.key.vhid);
    let join = tokio::spawn(
        Box::new(task)
            .run(inbox_rx, cmd_rx, cancel.clone())
            .instrument(span),
    );
    VhidHandle {
        ifindex: params.ifindex,
        params,
        entry,
        cancel,
        join,
    }
}

struct Task {
    machine: Machine,
    /// The hand-offs to the advertiser (MASTER) and the receiver (BACKUP).
    offload: Offload,
    addresses: Addresses,
    /// The macvlan child, with `virtual_mac`, once created.
    vmac: Option<vmac::Device>,
    history: History,
    params: Arc<VhidParams>,
    /// Shared with the receive entry and the advertiser.
    auth: Arc<Authenticator>,
    effects: Effects,
    stats: Arc<VhidStats>,
    /// The peers heard lately (the receiver notes a BACKUP's keepalives).
    peers: Arc<Peers>,
    operator_demote: u8,
    /// Demotions of the trackers (the ones covering this VHID count).
    tracked: watch::Receiver<Arc<Demotions>>,
    link_up: bool,
    /// The down-at-start hook has had its chance.
    started: bool,
    /// Runs the hooks one after the other, in transition order.
    hooks: HookRunner,
    /// Counters accepted per peer, when replay protection is on.
    replay: Option<ReplayWindow>,
    /// Rate limits of the log lines a peer or a broken link could repeat.
    noisy: LogLimiter<Noisy>,
    /// The deadline whose expiry is being handled: how late the resulting
    /// advertisement leaves is measured from it.
    lateness_from: Option<Instant>,
    /// A deadline that fired [`FROZEN`] late, and when it counts instead.
    resume_grace: Option<(Instant, Instant)>,
    /// [`ADDRESS_LOST_DEMOTION`] from a failed restore until the addresses
    /// are added as MASTER again; else 0.
    address_demote: u8,
    /// MASTER with `announce_interval`: when to announce again. `None`
    /// otherwise, so a VHID without it has no timer for it.
    announce_at: Option<Instant>,
    /// Answers to address conflicts seen while MASTER.
    conflicts: ConflictAnswers,
    /// This task's command queue, for the conflict watch to reach it
    /// (weak: the task must not keep its own queue open).
    own_commands: mpsc::WeakSender<Command>,
}

/// Log lines of a VHID that are rate limited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Noisy {
    SendError,
    Replay,
}

/// What woke a VHID task.
enum Wake {
    /// The machine's deadline (or the early wake-up for it) has come, or
    /// the advertiser handed back an advertisement due then.
    Timer(Option<Instant>),
    Cancelled,
    Command(Command),
    Tracked,
    Advert(Delivery),
    /// One of the rarer deadlines has come (see [`Task::chores_due`]).
    Chores,
}

/// When to wake for the machine's deadline.
struct Timers {
    deadline: Option<Instant>,
    /// MASTER: the next advertisement, a little early (see
    /// [`advertiser::WAKE_EARLY`]).
    advert: Option<Instant>,
    /// Otherwise, at the deadline: a master-down timer that fired early
    /// would take over early.
    other: Option<Instant>,
}

impl Task {
    // One such future per VHID stays resident for the daemon's life. The
    // task comes boxed: an `async fn` keeps its arguments twice. The rare
    // steps (start, stop, commands, address changes, sends the advertiser
    // does not make) are boxed too, so that the future is not as large as
    // the largest of them and only their turn allocates them.
    async fn run(
        mut self: Box<Self>,
        mut inbox: mpsc::Receiver<Delivery>,
        mut commands: mpsc::Receiver<Command>,
        cancel: CancellationToken,
    ) {
        Box::pin(self.start()).await;
        // Kept across iterations: made anew each time, it would register
        // and unregister with the token on every advertisement.
        let cancelled = cancel.cancelled();
        tokio::pin!(cancelled);
        loop {
            self.delegate();
            let timers = self.timers();
            let chores = self.chores_due();
            let woken = tokio::select! {
                biased;
                // A MASTER's timer first: most of its wake-ups are its
                // advertisements.
                () = sleep_until_opt(timers.advert) => Wake::Timer(timers.deadline),
                () = &mut cancelled => Wake::Cancelled,
                Some(cmd) = commands.recv() => Wake::Command(cmd),
                Ok(()) = self.tracked.changed() => Wake::Tracked,
                Some(msg) = inbox.recv() => Wake::Advert(msg),
                // what the advertiser could not send, the machine sends
                due = self.offload.handed_back(&mut self.machine) => Wake::Timer(due),
                // Any other timer after the inbox, so that an advertisement
                // already received counts before the master-down deadline.
                () = sleep_until_opt(timers.other) => Wake::Timer(timers.deadline),
                () = sleep_until_opt(chores) => Wake::Chores,
            };
            // the machine first learns what happened while it slept
            self.offload.reclaim(&mut self.machine);
            match woken {
                Wake::Cancelled => break,
                Wake::Timer(deadline) => self.timer_fired(deadline),
                Wake::Command(cmd) => Box::pin(self.command(cmd)).await,
                Wake::Tracked => self.update_demote(),
                Wake::Advert(msg) => self.advert(msg),
                Wake::Chores => Box::pin(self.chores()).await,
            }
            self.run_actions().await;
            self.lateness_from = None;
        }
        Box::pin((*self).stop()).await;
    }

    /// Before the first wake-up: the virtual MAC, no stale addresses, and
    /// the machine out of INIT.
    async fn start(&mut self) {
        self.create_vmac().await;
        self.addresses
            .remove_stale(&self.effects.netlink, self.params.ifindex)
            .await;
        // before leaving INIT, so the first advertisement carries it
        self.update_demote();
        self.machine.handle_link(std_now(), self.link_up);
        self.run_actions().await;
    }

    /// After cancellation: the machine's last actions (bow-out, addresses
    /// removed, down hook), the virtual MAC deleted, the exit hook waited
    /// for.
    async fn stop(mut self) {
        let requested = self.hooks.requested();
        self.machine.shutdown(std_now());
        self.run_actions().await;
        let exit_hook = self.hooks.requested() > requested;
        if self.addresses.retry_at().is_some() {
            tracing::error!(
                "exiting with addresses that could not be removed; another host may own them"
            );
        }
        if let Some(vmac) = self.vmac.take() {
            vmac.delete(&self.effects.netlink).await;
        }
        // The exit hook runs after the hook running now, each bounded by
        // the hook timeout; without one, a running hook finishes on its own.
        if exit_hook {
            self.hooks.close().await;
        }
    }

    /// The earliest of the rarer deadlines: an address retry, a MASTER's
    /// `announce_interval`, a conflict's answer. One timer serves the
    /// three: each timer awaited in `run` makes every VHID's future larger.
    fn chores_due(&self) -> Option<Instant> {
        [
            self.addresses.retry_at(),
            self.announce_at,
            self.conflicts.due(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Whatever of [`Task::chores_due`] has come.
    async fn chores(&mut self) {
        let now = Instant::now();
        let due = |at: Option<Instant>| at.is_some_and(|at| at <= now);
        if due(self.addresses.retry_at()) {
            self.retry_addresses().await;
        }
        if due(self.announce_at) {
            self.refresh_announcement();
        }
        if due(self.conflicts.due()) {
            self.answer_conflicts();
        }
    }

    /// Hand off what the steady states repeat (see `offload.rs`).
    fn delegate(&mut self) {
        let Task {
            offload,
            machine,
            params,
            effects,
            auth,
            stats,
            vmac,
            ..
        } = self;
        offload.delegate(machine, |steady| Order {
            vhid: params.spec.vhid,
            steady,
            dests: destinations(params, &effects.sockets, vmac.as_ref()),
            sockets: effects.sockets.clone(),
            auth: Arc::clone(auth),
            stats: Arc::clone(stats),
        });
    }

    /// When to wake for the machine's deadline; none while the advertiser
    /// holds the schedule.
    fn timers(&self) -> Timers {
        let deadline = if self.offload.advertising() {
            None
        } else {
            self.machine.poll_timeout().map(Instant::from_std)
        };
        if self.machine.state() == State::Master {
            let early = deadline.map(|d| d.checked_sub(advertiser::WAKE_EARLY).unwrap_or(d));
            Timers {
                deadline,
                advert: early,
                other: None,
            }
        } else {
            // after a freeze, the grace the receiver gets (see
            // `defer_after_freeze`)
            let other = match (deadline, self.resume_grace) {
                (Some(d), Some((late, until))) if late == d => Some(until),
                _ => deadline,
            };
            Timers {
                deadline,
                advert: None,
                other,
            }
        }
    }

    fn advert(&mut self, delivery: Delivery) {
        match delivery {
            Delivery::Carp(msg) => self.carp_advert(*msg),
            Delivery::Vrrp(msg) => self.vrrp_advert(&msg),
        }
    }

    fn vrrp_advert(&mut self, msg: &VrrpInbound) {
        self.stats.received.fetch_add(1, Ordering::Relaxed);
        self.machine
            .handle_vrrp_advert(std_now(), msg.src, &msg.advert);
    }

    fn carp_advert(&mut self, msg: Inbound) {
        if self.passes_replay_check(&msg) {
            self.stats.received.fetch_add(1, Ordering::Relaxed);
            self.peers.heard(std_now(), msg.src, &msg.advert);
            self.machine.handle_advert(std_now(), msg.src, &msg.advert);
            self.offload.heard(msg);
        }
    }

    /// The machine's deadline (or the early wake-up for it) has come.
    fn timer_fired(&mut self, deadline: Option<Instant>) {
        if self.defer_after_freeze(deadline) {
            return;
        }
        self.lateness_from = deadline;
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
        tracing::info!(
            late_ms = late.as_millis(),
            "master-down timer fired late (the process was not running): advertisements received meanwhile count first"
        );
        self.resume_grace = Some((d, Instant::now() + RESUME_GRACE));
        true
    }

    /// Replay protection: whether an authenticated advertisement is new
    /// enough to reach the machine (always, with the protection off).
    fn passes_replay_check(&mut self, msg: &Inbound) -> bool {
        let Some(window) = &mut self.replay else {
            return true;
        };
        let Err(reason) = window.check(msg.src, msg.advert.counter) else {
            return true;
        };
        self.stats.drops.add(reason);
        if self.noisy.allow(&Noisy::Replay) {
            tracing::info!(src = %msg.src, reason = reason.as_str(),
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
                self.operator_demote = self.effects.operator.add(&self.params.key, delta);
                self.update_demote();
                let _ = reply.send(());
            }
            Command::Link(up) => {
                if !self.params.ignore_link_state && up != self.link_up {
                    self.link_up = up;
                    tracing::info!("link {}", if up { "up" } else { "down" });
                    self.machine.handle_link(std_now(), up);
                }
            }
            Command::Address(event) => self.address_changed(*event).await,
            Command::Conflict(c) => self.conflict(*c),
        }
    }

    /// One of our addresses claimed for a foreign MAC: counted and, while
    /// MASTER, answered (see `conflict.rs`).
    fn conflict(&mut self, c: Conflict) {
        if self.machine.state() != State::Master {
            return;
        }
        self.stats.address_conflicts.fetch_add(1, Ordering::Relaxed);
        self.publish(EventKind::AddressConflict {
            address: c.addr,
            detail: format!("claimed by {}", mac_text(c.mac)),
        });
        if self.conflicts.seen(c, Instant::now()) {
            tracing::warn!(
                address = %c.addr,
                mac = %mac_text(c.mac),
                "address conflict: another host claims our address; announcing again (logged at most every 10 s per address)"
            );
        }
    }

    /// Announce again the addresses conflicts were seen for.
    fn answer_conflicts(&mut self) {
        let addrs = self.conflicts.take(Instant::now());
        if self.machine.state() == State::Master {
            self.announce_only(|a| addrs.contains(&a));
        }
    }

    /// Someone added or removed one of our addresses: a MASTER puts back
    /// what it lost (and demotes itself and steps down if it cannot), any
    /// other state removes what appeared (see `Addresses::follow`).
    async fn address_changed(&mut self, event: AddressEvent) {
        let master = self.machine.state() == State::Master;
        let ifindex = self.address_ifindex();
        let followed = (self.addresses)
            .follow(&self.effects.netlink, ifindex, master, event)
            .await;
        self.stats
            .address_restored
            .fetch_add(followed.restored, Ordering::Relaxed);
        self.stats
            .address_removed_foreign
            .fetch_add(followed.removed, Ordering::Relaxed);
        if followed.restored > 0 {
            self.publish(EventKind::AddressRestored {
                count: followed.restored,
            });
        }
        if followed.run_up_hook {
            self.stats.address_restored.fetch_add(1, Ordering::Relaxed);
            self.hooks.request(HookRequest {
                kind: HookKind::Up,
                state: State::Master,
            });
        }
        if followed.cannot_restore {
            // the demotion is advertised at once, so a peer takes over
            // without waiting for master-down
            self.address_demote = ADDRESS_LOST_DEMOTION;
            self.update_demote();
            self.machine.step_down(std_now());
        }
    }

    /// The demotion in effect: the operator's plus the trackers', plus
    /// [`ADDRESS_LOST_DEMOTION`] after a failed restore.
    fn update_demote(&mut self) {
        let p = &self.params;
        let tracked = self.tracked.borrow_and_update().for_vhid(&p.key, &p.spec);
        let demote = (self.operator_demote)
            .saturating_add(tracked)
            .saturating_add(self.address_demote);
        let before = self.machine.demote();
        if demote != before {
            tracing::info!(
                operator = self.operator_demote,
                tracked,
                address_lost = self.address_demote,
                "demotion {demote}"
            );
        }
        self.machine.set_demote(std_now(), demote);
        self.demotion_changed(before);
    }

    /// Publish a change of the demotion in effect (operator, trackers,
    /// lost addresses, failing sends) since it was `before`.
    fn demotion_changed(&self, before: u8) {
        let to = self.machine.demote();
        if to != before {
            self.publish(EventKind::Demotion { from: before, to });
        }
    }

    fn publish(&self, kind: EventKind) {
        self.effects
            .events
            .publish(Some(self.params.key.clone()), kind);
    }

    /// The peers heard within three master-down times, and why the machine
    /// is in its state: a BACKUP's decision is about its master, a
    /// MASTER's about the best peer it heard.
    fn peers_and_explanation(&self) -> (Vec<PeerStatus>, carp_proto::Explanation) {
        let now = std_now();
        let timing = self.machine.effective_timing();
        let window = timing.master_down(self.params.spec.dead_ratio) * 3;
        let recent = self.peers.recent(now, window);
        let state = self.machine.state();
        let master = self
            .machine
            .master_addr()
            .filter(|_| state == State::Backup);
        let about = match state {
            State::Backup => recent.iter().find(|p| Some(p.src) == master),
            State::Master => (recent.iter())
                .filter(|p| !p.advert.timing().is_bow_out())
                .min_by_key(|p| (p.advert.demote, p.advert.timing().interval())),
            State::Init => None,
        };
        let explanation = self.machine.explain(now, about.map(|p| (p.src, &p.advert)));
        let peers = recent
            .iter()
            .map(|p| PeerStatus {
                address: p.src,
                mac: None,
                advbase: p.advert.advbase,
                advskew: p.advert.advskew,
                demote: p.advert.demote,
                last_heard: now.saturating_duration_since(p.last_heard),
                jitter: p.jitter,
                adverts: p.heard,
                master: Some(p.src) == master,
            })
            .collect();
        (peers, explanation)
    }

    fn status(&self) -> VhidStatus {
        let timing = self.machine.effective_timing();
        let (peers, explanation) = self.peers_and_explanation();
        let h = &self.history;
        VhidStatus {
            key: self.params.key.clone(),
            state: self.machine.state(),
            addresses: self.params.spec.addresses.clone(),
            protocol: self.params.spec.protocol.name(),
            priority: self.machine.effective_priority(),
            advbase: timing.advbase,
            advskew: timing.advskew,
            demote: self.machine.demote(),
            master: self.machine.master_addr(),
            in_state_for: h.state_since.elapsed(),
            last_transition: h.last_transition.clone(),
            last_reason: h.last_reason,
            transitions: h.transitions,
            transitions_by_reason: h.by_reason.clone(),
            hook_runs: self.stats.hook_runs.load(Ordering::Relaxed),
            hook_failures: self.stats.hook_failures.load(Ordering::Relaxed),
            address_restored: self.stats.address_restored.load(Ordering::Relaxed),
            address_removed_foreign: self.stats.address_removed_foreign.load(Ordering::Relaxed),
            address_conflicts: self.stats.address_conflicts.load(Ordering::Relaxed),
            waiting_for: None,
            adverts_sent: self.stats.sent.load(Ordering::Relaxed),
            adverts_received: self.stats.received.load(Ordering::Relaxed),
            drops: self.stats.drops.snapshot(),
            peers,
            explanation: Some(explanation),
        }
    }

    /// Carry out what the machine decided.
    async fn run_actions(&mut self) {
        while let Some(action) = self.machine.poll_action() {
            match action {
                // boxed: see `run` (steady advertisements leave from the
                // advertiser, not from here)
                Action::Send(s) => Box::pin(self.send(s)).await,
                Action::InstallAddresses => Box::pin(self.install_addresses()).await,
                Action::RemoveAddresses => Box::pin(self.remove_addresses()).await,
                Action::Announce => self.announce(),
                Action::StateChanged { from, to, reason } => self.state_changed(from, to, reason),
            }
        }
    }

    async fn send(&mut self, s: SendAdvert) {
        let result = match s {
            SendAdvert::Carp(s) => self.send_carp(s).await,
            SendAdvert::Vrrp(s) => self.send_vrrp(s).await,
        };
        let ok = result.is_ok();
        match result {
            Ok(()) => {
                self.stats.sent.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                if self.noisy.allow(&Noisy::SendError) {
                    tracing::warn!(error = %e, "cannot send advertisement");
                }
            }
        }
        let before = self.machine.demote();
        self.machine.handle_send_result(std_now(), ok);
        self.demotion_changed(before);
    }

    /// When the advertisement due at the deadline being handled leaves
    /// against that deadline (before it, if the task was woken early).
    fn record_lateness(&mut self) {
        if let Some(deadline) = self.lateness_from.take() {
            self.effects.lateness.record(std_now(), deadline.into_std());
        }
    }

    async fn send_carp(&mut self, s: SendCarp) -> std::io::Result<()> {
        let bytes = s.sign(self.params.spec.vhid, &self.auth, |counter| {
            self.stats.set_last_counter(counter);
        });
        self.record_lateness();
        let mut result = Ok(());
        for dest in destinations(&self.params, &self.effects.sockets, self.vmac.as_ref()) {
            let r = self.effects.sockets.send(dest, &bytes).await;
            result = result.and(r);
        }
        result
    }

    /// VRRP: one message per destination, with the addresses of its family
    /// (VRRPv3's checksum covers the carrier's addresses).
    async fn send_vrrp(&mut self, s: SendVrrp) -> std::io::Result<()> {
        let auth = match &self.params.spec.protocol {
            Protocol::Vrrp(v) => v.auth(&self.params.spec.key),
            Protocol::Carp => vrrp::Auth::None,
        };
        self.record_lateness();
        let mut result = Ok(());
        for dest in destinations(&self.params, &self.effects.sockets, self.vmac.as_ref()) {
            let (src, dst, addresses) = match dest {
                Dest::V4 { src, dst, .. } | Dest::Broadcast { src, dst, .. } => (
                    IpAddr::V4(src),
                    IpAddr::V4(dst),
                    vrrp_addresses(&self.params.spec, false),
                ),
                Dest::V6 { src, dst, .. } => (
                    IpAddr::V6(src),
                    IpAddr::V6(dst),
                    vrrp_addresses(&self.params.spec, true),
                ),
            };
            let bytes = s
                .advert(self.params.spec.vhid, auth, addresses)
                .to_bytes(src, dst);
            let r = self.effects.sockets.send(dest, &bytes).await;
            result = result.and(r);
        }
        result
    }

    /// Where the addresses go: the virtual MAC if there is one, else the
    /// parent.
    fn address_ifindex(&self) -> u32 {
        self.vmac
            .as_ref()
            .map_or(self.params.ifindex, vmac::Device::index)
    }

    /// Create the macvlan child (down) for `virtual_mac`.
    async fn create_vmac(&mut self) {
        let Some(child) = &self.params.vmac else {
            return;
        };
        let addresses = &self.params.spec.addresses;
        self.vmac = vmac::Device::create(
            &self.effects.netlink,
            self.params.ifindex,
            &self.params.key.interface,
            child,
            addresses.iter().any(|a| a.addr.is_ipv4()),
            addresses.iter().any(|a| a.addr.is_ipv6()),
        )
        .await;
    }

    /// MASTER: the virtual MAC up, then the addresses on it.
    async fn install_addresses(&mut self) {
        if let Some(vmac) = &mut self.vmac {
            vmac.set_up(&self.effects.netlink, true).await;
        }
        let ifindex = self.address_ifindex();
        let added = self.addresses.add(&self.effects.netlink, ifindex).await;
        if added && self.address_demote > 0 {
            self.address_demote = 0;
            self.update_demote();
        }
    }

    /// Not MASTER: the addresses removed, then the virtual MAC down.
    async fn remove_addresses(&mut self) {
        let ifindex = self.address_ifindex();
        self.addresses.remove(&self.effects.netlink, ifindex).await;
        if let Some(vmac) = &mut self.vmac {
            vmac.set_up(&self.effects.netlink, false).await;
        }
    }

    /// Try again to make the addresses match the state: present while
    /// MASTER, absent otherwise.
    async fn retry_addresses(&mut self) {
        if self.machine.state() == State::Master {
            self.install_addresses().await;
        } else {
            self.remove_addresses().await;
        }
    }

    fn announce(&self) {
        self.announce_only(|_| true);
    }

    /// Gratuitous ARP / unsolicited NA for the addresses `which` selects.
    fn announce_only(&self, which: impl Fn(IpAddr) -> bool) {
        let p = &self.params;
        let (ifindex, mac) = match &self.vmac {
            Some(vmac) => (vmac.index(), vmac.mac()),
            None => (p.ifindex, p.mac),
        };
        for a in p.spec.addresses.iter().filter(|a| which(a.addr)) {
            let r = match a.addr {
                IpAddr::V4(ip) => self.effects.announcer.gratuitous_arp(ifindex, mac, ip),
                IpAddr::V6(ip) => self.effects.announcer.unsolicited_na(ifindex, mac, ip),
            };
            if let Err(e) = r {
                tracing::warn!(address = %a.addr, error = %e, "cannot announce address");
            }
        }
    }

    /// `announce_interval`: announce again, and schedule the next one a
    /// period after this one was due (or after now, if far behind).
    fn refresh_announcement(&mut self) {
        let (Some(due), Some(every)) = (self.announce_at, self.params.spec.announce_interval)
        else {
            self.announce_at = None;
            return;
        };
        self.announce();
        let now = Instant::now();
        let next = due + every;
        self.announce_at = Some(if next > now { next } else { now + every });
    }

    /// The conflict watch follows our addresses while MASTER.
    fn update_claims(&mut self, from: State, to: State) {
        let Some(commands) = self.own_commands.upgrade() else {
            return;
        };
        let addrs: Vec<IpAddr> = self.params.spec.addresses.iter().map(|a| a.addr).collect();
        if to == State::Master {
            let mut macs = vec![self.params.mac];
            macs.extend(self.vmac.as_ref().map(vmac::Device::mac));
            self.effects.claims.claim(&addrs, macs, &commands);
        } else if from == State::Master {
            self.effects.claims.release(&addrs, &commands);
            self.conflicts.clear();
        }
    }

    fn state_changed(&mut self, from: State, to: State, reason: Reason) {
        // the takeover announces; the refreshes follow from there
        self.announce_at = match self.params.spec.announce_interval {
            Some(every) if to == State::Master => Some(Instant::now() + every),
            _ => None,
        };
        self.update_claims(from, to);
        self.publish(EventKind::Transition { from, to, reason });
        let line = self.history.record(from, to, reason, Instant::now());
        tracing::info!(
            from = from.as_str(),
            to = to.as_str(),
            // the state entered, under the name journald users filter on
            state = to.as_str(),
            reason = reason.as_str(),
            "{} vhid {}: {line}",
            self.params.key.interface,
            self.params.key.vhid
        );

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
            self.hooks.request(HookRequest { kind, state: to });
        }
    }
}

/// The machine's rules for the VHID's protocol.
fn machine_rules(spec: &VhidSpec) -> Rules {
    match &spec.protocol {
        Protocol::Carp => Rules::Carp(CarpRules {
            timing: Timing::new(spec.advbase, spec.advskew),
            dead_ratio: spec.dead_ratio,
            demote_style: spec.demote_style,
        }),
        Protocol::Vrrp(v) => Rules::Vrrp(VrrpRules {
            version: v.version,
            priority: v.priority,
            interval_cs: v.interval_cs,
        }),
    }
}

/// What the receiver checks of the VHID's advertisements.
fn receive_check(spec: &VhidSpec, auth: &Arc<Authenticator>) -> Check {
    match &spec.protocol {
        Protocol::Carp => Check::Carp(Arc::clone(auth)),
        Protocol::Vrrp(v) => Check::Vrrp(Box::new(VrrpCheck {
            version: v.version,
            priority: v.priority,
            interval_cs: v.interval_cs,
            auth: v.auth(&spec.key),
            v4: vrrp_addresses(spec, false),
            v6: vrrp_addresses(spec, true),
        })),
    }
}

/// The VHID's virtual addresses of one family, in configuration order.
fn vrrp_addresses(spec: &VhidSpec, ipv6: bool) -> vrrp::Addresses {
    if ipv6 {
        vrrp::Addresses::V6(
            spec.addresses
                .iter()
                .filter_map(|a| match a.addr {
                    IpAddr::V6(ip) => Some(ip),
                    IpAddr::V4(_) => None,
                })
                .collect(),
        )
    } else {
        vrrp::Addresses::V4(
            spec.addresses
                .iter()
                .filter_map(|a| match a.addr {
                    IpAddr::V4(ip) => Some(ip),
                    IpAddr::V6(_) => None,
                })
                .collect(),
        )
    }
}

/// Every copy of an advertisement.
fn destinations(p: &VhidParams, sockets: &Sockets, vmac: Option<&vmac::Device>) -> Vec<Dest> {
    let peers = &p.spec.transport.peers;
    // Unicast advertisements leave from the parent: peers may be routed,
    // and they check the source address. Group ones leave from the
    // virtual MAC while it is up, so that switches learn it.
    let group_if = match vmac {
        Some(vmac) if vmac.is_up() => vmac.index(),
        _ => p.ifindex,
    };
    let mut dests = Vec::new();
    if let Some(src) = p.src_v4 {
        if peers.is_empty() {
            let (ifindex, dst) = (group_if, p.spec.group_v4);
            dests.push(match &sockets.broadcast {
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
    if let (Some(src), Some(_)) = (p.src_v6, &sockets.v6) {
        if peers.is_empty() {
            dests.push(Dest::V6 {
                ifindex: group_if,
                src,
                dst: GROUP_V6,
            });
        }
        for peer in peers {
            if let IpAddr::V6(dst) = *peer {
                // CARP: the kernel picks the source the peer knows us by
                // (the link-local address for a link-local peer). VRRPv3's
                // checksum covers the source, so it is set: the link-local
                // one, as RFC 9568 wants.
                let src = match p.spec.protocol {
                    Protocol::Carp => Ipv6Addr::UNSPECIFIED,
                    Protocol::Vrrp(_) => src,
                };
                dests.push(Dest::V6 {
                    ifindex: p.ifindex,
                    src,
                    dst,
                });
            }
        }
    }
    dests
}

#[cfg(test)]
mod tests {
    use carp_proto::HmacMode;

    use super::*;
    use crate::spec::{VirtualAddr, VrrpSpec};

    fn params() -> VhidParams {
        let addr = VirtualAddr {
            addr: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)),
            prefix_len: 24,
        };
        VhidParams {
            key: VhidKey {
                interface: "eth0".into(),
                vhid: 1,
            },
            spec: VhidSpec::new(1, vec![addr], b"secret".to_vec(), HmacMode::Bsd),
            ifindex: 2,
            mac: [2, 0, 0, 0, 0, 1],
            src_v4: Some(Ipv4Addr::new(192, 0, 2, 10)),
            src_v6: None,
            vmac: None,
            ignore_link_state: false,
        }
    }

    /// The size of the future `f` returns, without calling it.
    fn future_size<A, B, C, D, R>(_: impl FnOnce(A, B, C, D) -> R) -> usize {
        std::mem::size_of::<R>()
    }

    /// One VHID task future stays resident per VHID: it holds neither the
    /// task (boxed, and an `async fn` would keep it twice) nor the rare
    /// steps' futures (each about as large as the task again: 8 KiB in all
    /// when `run` took the task by value and awaited them in place), and
    /// one timer serves the rare deadlines (with a timer for each of the
    /// three, the future was 1152 bytes).
    #[test]
    fn a_vhid_task_future_holds_no_task_and_no_rare_step() {
        let run = future_size(Task::run);
        let task = std::mem::size_of::<Task>();
        assert!(
            run < 1024,
            "the VHID task future is {run} bytes for a {task}-byte task"
        );
    }

    /// Per VHID, the parameters and the authenticator are held once, shared
    /// by the task, the engine's handle, the receive entry and the
    /// advertiser (by value, the task alone was 1.7 KB and the handle, a
    /// B-tree entry, 0.5 KB); the handle copies only the interface index.
    #[test]
    fn parameters_and_authenticator_are_shared_not_copied() {
        use std::mem::size_of;
        assert!(size_of::<VhidHandle>() <= 40, "{}", size_of::<VhidHandle>());
        assert!(size_of::<VhidEntry>() <= 96, "{}", size_of::<VhidEntry>());
        assert!(size_of::<Order>() <= 104, "{}", size_of::<Order>());
        assert!(size_of::<Task>() <= 1024, "{}", size_of::<Task>());
    }

    /// Each VHID's command queue allocates room for 32 commands up front.
    #[test]
    fn a_command_is_two_words() {
        assert_eq!(std::mem::size_of::<Command>(), 16);
    }

    #[test]
    fn changed_names_the_settings_that_differ() {
        let old = params();
        assert!(old.changed(&old.clone()).is_empty());
        let mut new = old.clone();
        new.spec.advskew = 20;
        new.spec.preempt = true;
        new.spec.key = b"other".to_vec();
        assert_eq!(old.changed(&new), ["password", "advskew", "preempt"]);
        let mut moved = old.clone();
        moved.ifindex = 3;
        moved.src_v4 = Some(Ipv4Addr::new(192, 0, 2, 11));
        assert_eq!(old.changed(&moved), ["interface", "source_address"]);
        // the engine's filter follows accept_mode: the task stays
        let mut vrrp = old.clone();
        vrrp.spec.protocol = Protocol::Vrrp(VrrpSpec {
            version: vrrp::Version::V3,
            priority: 100,
            interval_cs: 100,
            simple_auth: false,
            accept_mode: true,
        });
        let mut dropping = vrrp.clone();
        if let Protocol::Vrrp(v) = &mut dropping.spec.protocol {
            v.accept_mode = false;
        }
        assert!(vrrp.changed(&dropping).is_empty());
        assert_eq!(old.changed(&vrrp), ["other"]);
    }
}
