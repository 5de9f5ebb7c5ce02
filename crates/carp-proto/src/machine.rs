//! The state machine of one VHID, sans I/O.
//!
//! The machine never reads a clock: every input carries `now`, and it answers
//! with [`Action`]s (drained with [`Machine::poll_action`]) and its next
//! deadline ([`Machine::poll_timeout`]). The caller calls
//! [`Machine::handle_timeout`] once that deadline has passed.
//!
//! # Rules
//!
//! "Priority" is the pair (demotion, advertisement interval), compared in
//! that order; lower is better. Ours is built from [`Machine::demote`] and
//! [`Machine::effective_timing`], theirs from the advertisement. With
//! [`DemoteStyle::Skew`] both demotions count as 0 (the demotion is already
//! in the advertised advskew, and such peers leave byte 4 at 0).
//!
//! * INIT ignores advertisements. Link up: INIT -> BACKUP ([`Reason::Startup`]
//!   the first time, [`Reason::LinkUp`] after that), master-down timer armed.
//! * Any advertisement heard in BACKUP or MASTER sets [`Machine::master_addr`]
//!   and its counter is adopted, as UCARP and FreeBSD do: our next
//!   advertisement carries the peer's counter + 1.
//! * BACKUP, on an advertisement:
//!   1. a bow-out (advbase 255, advskew 255): MASTER ([`Reason::PeerBowedOut`]);
//!   2. their demotion higher than ours: MASTER, with or without preemption
//!      ([`Reason::PeerDemoted`], OpenBSD);
//!   3. preemption on, equal demotion, our interval shorter: MASTER
//!      ([`Reason::Preempt`]);
//!   4. their interval longer than `dead_ratio * advbase` seconds (advbase 0:
//!      longer than our master-down time), so the master is sure to time out:
//!      MASTER ([`Reason::PeerWillTimeOut`]);
//!   5. otherwise the master-down timer restarts.
//!
//!   For one master-down time after [`Machine::step_down`], rules 2 and 3 are
//!   suspended, so the operator's step-down sticks while the peer takes over.
//! * BACKUP, master-down timer fires: MASTER ([`Reason::MasterDown`]).
//! * Becoming MASTER: [`Action::StateChanged`], [`Action::InstallAddresses`],
//!   an immediate [`Action::Send`], [`Action::Announce`]; then one
//!   advertisement per interval, and a second [`Action::Announce`] after the
//!   second of them (some L3 switches miss the first).
//! * MASTER, on an advertisement with a better priority: one last
//!   advertisement, then BACKUP ([`Reason::PeerPreferred`]). With a worse
//!   priority (or a bow-out): stay MASTER and answer at once with
//!   [`Action::Announce`] and an advertisement, at most once per master-down
//!   time, so that a split brain heals within one wire delay and the switches
//!   follow the real master, while a misbehaving peer cannot make us flood.
//! * Link down: any state -> INIT, addresses removed, no timers.
//! * [`Machine::shutdown`]: a MASTER sends a bow-out and removes its
//!   addresses; the machine stays in INIT for good.
//!
//! # Equal priority: UCARP's tie-break
//!
//! The BSD kernels let a MASTER yield to any peer with the same demotion and
//! interval. UCARP yields only if the peer's source address is lower, and
//! compares the two addresses as raw network-order `u32`s on a little-endian
//! host, so the *last* octet decides first (10.0.1.1 is "lower" than
//! 10.0.0.2). carpd uses exactly UCARP's order: IPv4 addresses compare as
//! `u32::from_le_bytes(octets)`, IPv6 addresses byte by byte (UCARP has no
//! IPv6), IPv4 before IPv6. Why: with the BSD rule, a carpd node with the
//! lower address (in UCARP's order) would yield to a UCARP node that also
//! yields to it; both end up BACKUP, time out together, both become MASTER
//! and flap forever. With the same total order on both sides exactly one node
//! yields, whether the other is carpd or UCARP.
//!
//! # Demotion
//!
//! The demotion in effect is the external one ([`Machine::set_demote`]) plus
//! one while sends keep failing (3 failures in a row add it, 3 successes in
//! a row remove it; only a MASTER sends, so a BACKUP keeps it until it is
//! MASTER again). [`DemoteStyle::Byte`] advertises it in header byte 4;
//! [`DemoteStyle::Skew`] adds it to the advertised advskew, capped at 240
//! but never below the configured advskew. When it changes, a MASTER
//! advertises at once and a BACKUP's master-down deadline follows the new
//! master-down time.

use std::collections::VecDeque;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use crate::packet::Advert;
use crate::timing::Timing;

/// Send failures in a row that add one to the demotion.
const SEND_FAILURES_TO_DEMOTE: u8 = 3;
/// Successful sends in a row that take that demotion away again.
const SEND_SUCCESSES_TO_RESTORE: u8 = 3;
/// Periodic advertisements after a takeover before the announcement is
/// repeated.
const ADVERTS_BEFORE_REPEAT_ANNOUNCE: u8 = 2;
/// Highest advskew that [`DemoteStyle::Skew`] demotion advertises (FreeBSD).
const SKEW_DEMOTE_CAP: u8 = 240;

/// How local demotion is put on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum DemoteStyle {
    /// OpenBSD: in header byte 4; receivers compare it before intervals.
    #[default]
    Byte,
    /// FreeBSD/UCARP peers ignore byte 4: add the demotion to the advertised
    /// advskew instead (capped at 240), and send byte 4 as 0.
    Skew,
}

/// Static parameters of one VHID.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MachineConfig {
    pub vhid: u8,
    /// Configured advbase/advskew (before any demotion).
    pub timing: Timing,
    /// Master-down multiplier, >= 1 (3 by default; 0 counts as 1).
    pub dead_ratio: u8,
    pub preempt: bool,
    pub demote_style: DemoteStyle,
    /// Our source address on this VHID's link, for the equal-interval
    /// tie-break (see [`Reason::PeerWinsTie`]).
    pub local_addr: IpAddr,
    /// First counter value (random, chosen by the caller).
    pub initial_counter: u64,
    /// Where a MASTER's periodic advertisements fall; `None`: one interval
    /// after the takeover, then every interval.
    pub advert_grid: Option<AdvertGrid>,
}

/// A grid shared by many VHIDs that puts the advertisements of those with
/// the same interval on the same instants: `epoch + (k + slot/slots) *
/// interval`. A host then wakes `slots` times per interval for all of them
/// rather than once per VHID or two, and its peers receive them in as many
/// bursts. The first periodic advertisement after a takeover (or a change
/// of interval) leaves on the last grid instant within one interval, so up
/// to one interval early; early is safe, a backup only acts on silence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdvertGrid {
    pub epoch: Instant,
    pub slot: u16,
    pub slots: u16,
}

impl AdvertGrid {
    /// The last instant of this grid not after `limit`, for `interval`;
    /// `None` if it cannot be represented.
    pub fn at_or_before(&self, limit: Instant, interval: Duration) -> Option<Instant> {
        let period = interval.as_nanos();
        if period == 0 {
            return None;
        }
        let slots = u128::from(self.slots.max(1));
        let offset = period * (u128::from(self.slot) % slots) / slots;
        let base = self
            .epoch
            .checked_add(Duration::from_nanos(u64::try_from(offset).ok()?))?;
        if limit >= base {
            let k = (limit - base).as_nanos() / period;
            base.checked_add(Duration::from_nanos(u64::try_from(k * period).ok()?))
        } else {
            let k = (base - limit).as_nanos().div_ceil(period);
            base.checked_sub(Duration::from_nanos(u64::try_from(k * period).ok()?))
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum State {
    Init,
    Backup,
    Master,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Init => "INIT",
            State::Backup => "BACKUP",
            State::Master => "MASTER",
        }
    }
}

/// Why a transition happened (logged, counted, shown in status).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// INIT -> BACKUP: link up and addresses configured.
    Startup,
    /// BACKUP -> MASTER: no advertisement for the master-down time.
    MasterDown,
    /// BACKUP -> MASTER: preemption, our interval is shorter.
    Preempt,
    /// BACKUP -> MASTER: the master advertises a higher demotion than ours.
    PeerDemoted,
    /// BACKUP -> MASTER: the master's interval exceeds dead_ratio * advbase.
    PeerWillTimeOut,
    /// BACKUP -> MASTER: the master sent a bow-out (255/255).
    PeerBowedOut,
    /// MASTER -> BACKUP: a peer with a lower demotion or shorter interval.
    PeerPreferred,
    /// MASTER -> BACKUP: equal demotion and interval, and the peer's source
    /// address is lower (UCARP's rule, see the module docs).
    PeerWinsTie,
    /// any -> INIT: the parent link went down.
    LinkDown,
    /// INIT -> BACKUP: the parent link came back.
    LinkUp,
    /// MASTER -> BACKUP: operator asked (SIGUSR2, control socket).
    StepDown,
    /// MASTER/BACKUP -> INIT: shutting down.
    Shutdown,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Startup => "startup",
            Reason::MasterDown => "master_down",
            Reason::Preempt => "preempt",
            Reason::PeerDemoted => "peer_demoted",
            Reason::PeerWillTimeOut => "peer_will_time_out",
            Reason::PeerBowedOut => "peer_bowed_out",
            Reason::PeerPreferred => "peer_preferred",
            Reason::PeerWinsTie => "peer_wins_tie",
            Reason::LinkDown => "link_down",
            Reason::LinkUp => "link_up",
            Reason::StepDown => "step_down",
            Reason::Shutdown => "shutdown",
        }
    }
}

/// One advertisement to send; the caller signs it (counter -> HMAC) and puts
/// it on the wire, then reports the outcome with
/// [`Machine::handle_send_result`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SendAdvert {
    /// Advertised timing (demotion already folded in for
    /// [`DemoteStyle::Skew`]; [`Timing::BOW_OUT`] when bowing out).
    pub timing: Timing,
    pub demote: u8,
    pub counter: u64,
}

/// A MASTER's steady advertisements (see [`Machine::steady_adverts`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SteadyAdverts {
    /// When the next one is due; the ones after follow every
    /// `timing.interval()`.
    pub next: Instant,
    pub timing: Timing,
    pub demote: u8,
    /// The last counter sent; the next advertisement carries + 1.
    pub counter: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Send(SendAdvert),
    /// Put the virtual addresses on the interface.
    InstallAddresses,
    /// Take them off.
    RemoveAddresses,
    /// Gratuitous ARP for every IPv4 address, unsolicited NA for every IPv6
    /// address.
    Announce,
    StateChanged {
        from: State,
        to: State,
        reason: Reason,
    },
}

/// One VHID's INIT/BACKUP/MASTER machine (see the module docs for the rules).
#[derive(Debug)]
pub struct Machine {
    config: MachineConfig,
    state: State,
    /// Left INIT at least once (Startup vs LinkUp).
    started: bool,
    /// Shut down: every further input is ignored.
    finished: bool,
    /// Last counter sent or adopted; the next advertisement carries + 1.
    counter: u64,
    external_demote: u8,
    /// One extra demotion while sends keep failing.
    send_error_demote: bool,
    send_failures: u8,
    send_successes: u8,
    master_addr: Option<IpAddr>,
    /// BACKUP: when the master-down timer was last restarted. The deadline is
    /// derived from the current master-down time, so a demotion change moves
    /// it without losing the time already waited.
    master_down_from: Option<Instant>,
    /// MASTER: when the next periodic advertisement is due.
    next_advert: Option<Instant>,
    /// MASTER: periodic advertisements since the takeover, until the repeated
    /// announcement has gone out.
    adverts_since_takeover: Option<u8>,
    /// MASTER: when we last answered a worse master (rate limit).
    last_reassert: Option<Instant>,
    /// BACKUP after a step-down: no preemption before this.
    no_preempt_until: Option<Instant>,
    actions: VecDeque<Action>,
}

impl Machine {
    /// A machine in INIT. Nothing happens until [`Machine::handle_link`]
    /// reports the link up.
    pub fn new(config: MachineConfig) -> Self {
        Machine {
            counter: config.initial_counter,
            config,
            state: State::Init,
            started: false,
            finished: false,
            external_demote: 0,
            send_error_demote: false,
            send_failures: 0,
            send_successes: 0,
            master_addr: None,
            master_down_from: None,
            next_advert: None,
            adverts_since_takeover: None,
            last_reassert: None,
            no_preempt_until: None,
            actions: VecDeque::new(),
        }
    }

    pub fn config(&self) -> &MachineConfig {
        &self.config
    }

    pub fn state(&self) -> State {
        self.state
    }

    /// Local demotion in effect (operator + trackers + send errors).
    pub fn demote(&self) -> u8 {
        self.external_demote
            .saturating_add(u8::from(self.send_error_demote))
    }

    /// The timing we advertise now (configured, plus demotion in
    /// [`DemoteStyle::Skew`]).
    pub fn effective_timing(&self) -> Timing {
        let t = self.config.timing;
        let demote = self.demote();
        match self.config.demote_style {
            DemoteStyle::Skew if demote > 0 => {
                let skew = t.advskew.saturating_add(demote).min(SKEW_DEMOTE_CAP);
                Timing::new(t.advbase, t.advskew.max(skew))
            }
            _ => t,
        }
    }

    /// Source address of the last valid advertisement from another node (kept
    /// while we are MASTER).
    pub fn master_addr(&self) -> Option<IpAddr> {
        self.master_addr
    }

    /// Link up: INIT -> BACKUP (arms the master-down timer). Link down: any
    /// -> INIT (removes addresses if MASTER).
    pub fn handle_link(&mut self, now: Instant, up: bool) {
        if self.finished {
            return;
        }
        match (self.state, up) {
            (State::Init, true) => {
                let reason = if self.started {
                    Reason::LinkUp
                } else {
                    Reason::Startup
                };
                self.started = true;
                self.set_state(State::Backup, reason);
                self.arm_backup(now);
            }
            (State::Init, false) | (_, true) => {}
            (from, false) => {
                self.set_state(State::Init, Reason::LinkDown);
                if from == State::Master {
                    self.actions.push_back(Action::RemoveAddresses);
                }
                self.disarm();
            }
        }
    }

    /// A valid (checksum and HMAC verified) advertisement from `src`.
    pub fn handle_advert(&mut self, now: Instant, src: IpAddr, advert: &Advert) {
        if self.finished || self.state == State::Init || advert.vhid != self.config.vhid {
            return;
        }
        self.master_addr = Some(src);
        // UCARP and FreeBSD continue from the peer's counter; OpenBSD only
        // needs ours to differ from its own cookie, which + 1 guarantees.
        self.counter = advert.counter;
        match self.state {
            State::Backup => self.advert_as_backup(now, advert),
            State::Master => self.advert_as_master(now, src, advert),
            State::Init => {}
        }
    }

    /// BACKUP: whether `advert` would do nothing but restart the
    /// master-down timer (and have its counter adopted), at any time, for as
    /// long as no other input arrives. A driver may then only take note of
    /// such advertisements as they come and hand the machine the latest one
    /// (with its arrival time) before any other input or at the
    /// master-down deadline: for the machine, a run of them is the same as
    /// its last.
    pub fn is_keepalive(&self, advert: &Advert) -> bool {
        !self.finished
            && self.state == State::Backup
            && advert.vhid == self.config.vhid
            && self.backup_verdict(advert, false).is_none()
    }

    /// MASTER with nothing pending and nothing left to do but advertise:
    /// from now on, until another input arrives, every periodic
    /// advertisement is alike (timing, demotion) and one interval after the
    /// previous one. A driver may send them itself (counters `counter + 1`,
    /// `counter + 2`, ...) and report with [`Machine::steady_adverts_sent`]
    /// before anything else. A failed send is not part of that: hand the
    /// machine back its schedule and let [`Machine::handle_timeout`] send.
    pub fn steady_adverts(&self) -> Option<SteadyAdverts> {
        let steady = !self.finished
            && self.state == State::Master
            && self.adverts_since_takeover.is_none()
            && !self.send_error_demote
            && self.send_failures == 0
            && self.actions.is_empty();
        let next = self.next_advert.filter(|_| steady)?;
        Some(SteadyAdverts {
            next,
            timing: self.effective_timing(),
            demote: self.advertised_demote(),
            counter: self.counter,
        })
    }

    /// The driver sent `sent` advertisements of [`Machine::steady_adverts`],
    /// all successfully, and the next one is due at `next` (an instant of
    /// that schedule).
    pub fn steady_adverts_sent(&mut self, sent: u64, next: Instant) {
        if self.finished || self.state != State::Master {
            return;
        }
        self.counter = self.counter.wrapping_add(sent);
        self.next_advert = Some(next);
    }

    /// Call when `now >= poll_timeout()`.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.finished {
            return;
        }
        match self.state {
            State::Backup => {
                if self.master_down_deadline().is_some_and(|t| now >= t) {
                    self.become_master(now, Reason::MasterDown);
                }
            }
            State::Master => {
                if let Some(due) = self.next_advert.filter(|t| now >= *t) {
                    let interval = self.effective_timing().interval();
                    self.send(self.effective_timing());
                    // From the deadline, not from `now`: a late wake-up
                    // must not push every later advertisement back. More
                    // than one interval behind (a stalled host), restart
                    // from now rather than send a catch-up burst.
                    let next = due + interval;
                    self.next_advert = Some(if next > now {
                        next
                    } else {
                        self.first_advert_after(now, interval)
                    });
                    if let Some(n) = self.adverts_since_takeover {
                        let n = n + 1;
                        if n >= ADVERTS_BEFORE_REPEAT_ANNOUNCE {
                            self.actions.push_back(Action::Announce);
                            self.adverts_since_takeover = None;
                        } else {
                            self.adverts_since_takeover = Some(n);
                        }
                    }
                }
            }
            State::Init => {}
        }
    }

    /// Outcome of the last [`Action::Send`]: 3 failures in a row demote by
    /// one, 3 successes after that undo it.
    pub fn handle_send_result(&mut self, now: Instant, ok: bool) {
        if self.finished {
            return;
        }
        let before = self.effective();
        if ok {
            self.send_failures = 0;
            if self.send_error_demote {
                self.send_successes = self.send_successes.saturating_add(1);
                if self.send_successes >= SEND_SUCCESSES_TO_RESTORE {
                    self.send_error_demote = false;
                    self.send_successes = 0;
                }
            }
        } else {
            self.send_successes = 0;
            self.send_failures = self.send_failures.saturating_add(1);
            if self.send_failures >= SEND_FAILURES_TO_DEMOTE {
                self.send_error_demote = true;
            }
        }
        self.effective_changed(now, before);
    }

    /// Set the externally managed demotion (operator, trackers, groups).
    /// While MASTER a change is advertised at once.
    pub fn set_demote(&mut self, now: Instant, demote: u8) {
        if self.finished {
            return;
        }
        let before = self.effective();
        self.external_demote = demote;
        self.effective_changed(now, before);
    }

    /// MASTER -> BACKUP once; no preemption for one master-down time.
    pub fn step_down(&mut self, now: Instant) {
        if self.finished || self.state != State::Master {
            return;
        }
        self.set_state(State::Backup, Reason::StepDown);
        self.actions.push_back(Action::RemoveAddresses);
        self.arm_backup(now);
        self.no_preempt_until = Some(now + self.master_down_time());
    }

    /// Leave: a MASTER sends a bow-out and removes its addresses; ends in
    /// INIT with no deadline.
    pub fn shutdown(&mut self, _now: Instant) {
        if self.finished {
            return;
        }
        self.finished = true;
        match self.state {
            State::Master => {
                self.set_state(State::Init, Reason::Shutdown);
                self.send(Timing::BOW_OUT);
                self.actions.push_back(Action::RemoveAddresses);
            }
            State::Backup => self.set_state(State::Init, Reason::Shutdown),
            State::Init => {}
        }
        self.disarm();
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.state {
            State::Init => None,
            State::Backup => self.master_down_deadline(),
            State::Master => self.next_advert,
        }
    }

    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    fn advert_as_backup(&mut self, now: Instant, advert: &Advert) {
        let held = self.no_preempt_until.is_some_and(|t| now < t);
        match self.backup_verdict(advert, held) {
            Some(reason) => self.become_master(now, reason),
            None => self.master_down_from = Some(now),
        }
    }

    /// What an advertisement does to a BACKUP: `Some(reason)` to take over,
    /// `None` to restart the master-down timer. `held`: after a step-down,
    /// rules 2 and 3 are suspended.
    fn backup_verdict(&self, advert: &Advert, held: bool) -> Option<Reason> {
        let theirs = advert.timing();
        if theirs.is_bow_out() {
            return Some(Reason::PeerBowedOut);
        }
        let (our_demote, our_interval) = self.our_priority();
        let (their_demote, their_interval) = self.their_priority(advert);
        if !held {
            if their_demote > our_demote {
                return Some(Reason::PeerDemoted);
            }
            if self.config.preempt && their_demote == our_demote && our_interval < their_interval {
                return Some(Reason::Preempt);
            }
        }
        let ours = self.effective_timing();
        let limit = if ours.advbase > 0 {
            Duration::from_secs(u64::from(self.config.dead_ratio.max(1)) * u64::from(ours.advbase))
        } else {
            self.master_down_time()
        };
        (theirs.interval() > limit).then_some(Reason::PeerWillTimeOut)
    }

    fn advert_as_master(&mut self, now: Instant, src: IpAddr, advert: &Advert) {
        let ours = self.our_priority();
        let theirs = self.their_priority(advert);
        // A bow-out never wins: the peer is leaving.
        let yield_reason = if advert.timing().is_bow_out() {
            None
        } else if theirs < ours {
            Some(Reason::PeerPreferred)
        } else if theirs == ours && tie_rank(src) < tie_rank(self.config.local_addr) {
            Some(Reason::PeerWinsTie)
        } else {
            None
        };
        if let Some(reason) = yield_reason {
            self.set_state(State::Backup, reason);
            // As UCARP: make sure the new master hears from us once more.
            self.send(self.effective_timing());
            self.actions.push_back(Action::RemoveAddresses);
            self.arm_backup(now);
            return;
        }
        let may_answer = self
            .last_reassert
            .is_none_or(|t| now >= t + self.master_down_time());
        if may_answer {
            self.last_reassert = Some(now);
            self.actions.push_back(Action::Announce);
            self.send(self.effective_timing());
        }
    }

    fn become_master(&mut self, now: Instant, reason: Reason) {
        self.set_state(State::Master, reason);
        self.actions.push_back(Action::InstallAddresses);
        let timing = self.effective_timing();
        self.send(timing);
        self.actions.push_back(Action::Announce);
        self.master_down_from = None;
        self.next_advert = Some(self.first_advert_after(now, timing.interval()));
        self.adverts_since_takeover = Some(0);
        self.last_reassert = None;
        self.no_preempt_until = None;
    }

    /// The next periodic advertisement after one sent at `now`: one
    /// interval later, or the last grid instant within that.
    fn first_advert_after(&self, now: Instant, interval: Duration) -> Instant {
        let limit = now + interval;
        self.config
            .advert_grid
            .and_then(|g| g.at_or_before(limit, interval))
            .filter(|t| *t > now)
            .unwrap_or(limit)
    }

    /// BACKUP timers: master-down from `now`, no advertisements.
    fn arm_backup(&mut self, now: Instant) {
        self.master_down_from = Some(now);
        self.next_advert = None;
        self.adverts_since_takeover = None;
    }

    fn disarm(&mut self) {
        self.master_down_from = None;
        self.next_advert = None;
        self.adverts_since_takeover = None;
    }

    fn set_state(&mut self, to: State, reason: Reason) {
        let from = self.state;
        self.state = to;
        self.actions
            .push_back(Action::StateChanged { from, to, reason });
    }

    fn send(&mut self, timing: Timing) {
        self.counter = self.counter.wrapping_add(1);
        self.actions.push_back(Action::Send(SendAdvert {
            timing,
            demote: self.advertised_demote(),
            counter: self.counter,
        }));
    }

    /// What peers see of us: demotion and advertised timing.
    fn effective(&self) -> (u8, Timing) {
        (self.demote(), self.effective_timing())
    }

    fn effective_changed(&mut self, now: Instant, before: (u8, Timing)) {
        if self.state == State::Master && self.effective() != before {
            let timing = self.effective_timing();
            self.send(timing);
            self.next_advert = Some(self.first_advert_after(now, timing.interval()));
        }
        // BACKUP: the master-down deadline is derived from the current
        // timing, nothing to do.
    }

    fn master_down_time(&self) -> Duration {
        self.effective_timing().master_down(self.config.dead_ratio)
    }

    fn master_down_deadline(&self) -> Option<Instant> {
        self.master_down_from.map(|t| t + self.master_down_time())
    }

    /// (demotion, interval); lower is better.
    fn our_priority(&self) -> (u8, Duration) {
        (self.advertised_demote(), self.effective_timing().interval())
    }

    /// The demotion byte we advertise (0 with [`DemoteStyle::Skew`], which
    /// folds it into advskew).
    fn advertised_demote(&self) -> u8 {
        match self.config.demote_style {
            DemoteStyle::Byte => self.demote(),
            DemoteStyle::Skew => 0,
        }
    }

    fn their_priority(&self, advert: &Advert) -> (u8, Duration) {
        let demote = match self.config.demote_style {
            DemoteStyle::Byte => advert.demote,
            DemoteStyle::Skew => 0,
        };
        (demote, advert.timing().interval())
    }
}

/// UCARP's order of source addresses for the equal-priority tie-break: the
/// raw network-order IPv4 address read as a little-endian `u32` (see the
/// module docs); IPv6 byte by byte, after every IPv4 address.
fn tie_rank(addr: IpAddr) -> (u8, u128) {
    match addr {
        IpAddr::V4(a) => (0, u128::from(u32::from_le_bytes(a.octets()))),
        IpAddr::V6(a) => (1, u128::from_be_bytes(a.octets())),
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    const SKEW_UNIT: Duration = Duration::from_nanos(3_906_250);

    fn cfg(advbase: u8, advskew: u8, style: DemoteStyle) -> MachineConfig {
        MachineConfig {
            vhid: 1,
            timing: Timing::new(advbase, advskew),
            dead_ratio: 3,
            preempt: false,
            demote_style: style,
            local_addr: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)),
            initial_counter: 41,
            advert_grid: None,
        }
    }

    fn advert(advbase: u8, advskew: u8, demote: u8, counter: u64) -> Advert {
        Advert {
            vhid: 1,
            advskew,
            advbase,
            demote,
            counter,
            hmac: [0; 20],
        }
    }

    fn peer(last: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(10, 0, 0, last))
    }

    fn drain(m: &mut Machine) -> Vec<Action> {
        std::iter::from_fn(|| m.poll_action()).collect()
    }

    fn changed(from: State, to: State, reason: Reason) -> Action {
        Action::StateChanged { from, to, reason }
    }

    fn send(advbase: u8, advskew: u8, demote: u8, counter: u64) -> Action {
        Action::Send(SendAdvert {
            timing: Timing::new(advbase, advskew),
            demote,
            counter,
        })
    }

    /// A BACKUP (advbase 1, advskew 10) since `t`.
    fn backup_at(t: Instant, preempt: bool) -> Machine {
        let mut c = cfg(1, 10, DemoteStyle::Byte);
        c.preempt = preempt;
        let mut m = Machine::new(c);
        m.handle_link(t, true);
        drain(&mut m);
        m
    }

    /// A lone machine that has just become MASTER at `t0 + 3 s`.
    fn master(config: MachineConfig) -> (Machine, Instant) {
        let at = Instant::now() + config.timing.master_down(config.dead_ratio);
        master_at(config, at)
    }

    /// A MASTER that took over (master-down) at `at`.
    fn master_at(config: MachineConfig, at: Instant) -> (Machine, Instant) {
        let t0 = at - config.timing.master_down(config.dead_ratio);
        let mut m = Machine::new(config);
        m.handle_link(t0, true);
        assert_eq!(m.poll_timeout(), Some(at));
        m.handle_timeout(at);
        assert_eq!(m.state(), State::Master);
        drain(&mut m);
        (m, at)
    }

    #[test]
    fn startup_and_takeover_order() {
        let t0 = Instant::now();
        let mut m = Machine::new(cfg(1, 10, DemoteStyle::Byte));
        assert_eq!(m.poll_timeout(), None);
        m.handle_link(t0, true);
        assert_eq!(
            drain(&mut m),
            [changed(State::Init, State::Backup, Reason::Startup)]
        );
        let down = t0 + Duration::from_secs(3) + SKEW_UNIT * 10;
        assert_eq!(m.poll_timeout(), Some(down));
        m.handle_timeout(down - Duration::from_nanos(1));
        assert!(drain(&mut m).is_empty());
        m.handle_timeout(down);
        assert_eq!(
            drain(&mut m),
            [
                changed(State::Backup, State::Master, Reason::MasterDown),
                Action::InstallAddresses,
                send(1, 10, 0, 42),
                Action::Announce,
            ]
        );
        let interval = Duration::from_secs(1) + SKEW_UNIT * 10;
        assert_eq!(m.poll_timeout(), Some(down + interval));
        m.handle_timeout(down + interval);
        assert_eq!(drain(&mut m), [send(1, 10, 0, 43)]);
        m.handle_timeout(down + interval * 2);
        assert_eq!(drain(&mut m), [send(1, 10, 0, 44), Action::Announce]);
        m.handle_timeout(down + interval * 3);
        assert_eq!(drain(&mut m), [send(1, 10, 0, 45)]);
    }

    #[test]
    fn link_reasons_and_no_ops() {
        let t = Instant::now();
        let mut m = Machine::new(cfg(1, 0, DemoteStyle::Byte));
        m.handle_link(t, false);
        m.step_down(t);
        assert!(drain(&mut m).is_empty());
        m.handle_link(t, true);
        m.handle_link(t, true);
        m.step_down(t);
        m.handle_link(t, false);
        m.handle_link(t, true);
        assert_eq!(
            drain(&mut m),
            [
                changed(State::Init, State::Backup, Reason::Startup),
                changed(State::Backup, State::Init, Reason::LinkDown),
                changed(State::Init, State::Backup, Reason::LinkUp),
            ]
        );
    }

    #[test]
    fn init_and_foreign_vhid_ignore_adverts() {
        let t = Instant::now();
        let mut m = Machine::new(cfg(1, 0, DemoteStyle::Byte));
        m.handle_advert(t, peer(2), &advert(1, 0, 0, 1000));
        assert_eq!(m.master_addr(), None);
        m.handle_link(t, true);
        let mut other = advert(1, 0, 0, 2000);
        other.vhid = 2;
        m.handle_advert(t, peer(3), &other);
        assert_eq!(m.master_addr(), None);
        m.handle_timeout(t + Duration::from_secs(3));
        assert!(drain(&mut m).contains(&send(1, 0, 0, 42)));
    }

    #[test]
    fn adopts_peer_counter_with_wrap() {
        let t = Instant::now();
        let mut m = Machine::new(cfg(1, 0, DemoteStyle::Byte));
        m.handle_link(t, true);
        m.handle_advert(t, peer(2), &advert(1, 10, 0, u64::MAX));
        assert_eq!(m.master_addr(), Some(peer(2)));
        m.handle_timeout(m.poll_timeout().unwrap());
        assert!(drain(&mut m).contains(&send(1, 0, 0, 0)));
        // Kept while MASTER.
        assert_eq!(m.master_addr(), Some(peer(2)));
    }

    #[test]
    fn yield_order() {
        let (mut m, t) = master(cfg(1, 10, DemoteStyle::Byte));
        m.handle_advert(t, peer(2), &advert(1, 0, 0, 100));
        assert_eq!(
            drain(&mut m),
            [
                changed(State::Master, State::Backup, Reason::PeerPreferred),
                send(1, 10, 0, 101),
                Action::RemoveAddresses,
            ]
        );
        assert_eq!(
            m.poll_timeout(),
            Some(t + Duration::from_secs(3) + SKEW_UNIT * 10)
        );
    }

    #[test]
    fn tie_break_follows_ucarp_order() {
        let (mut m, t) = master(cfg(1, 0, DemoteStyle::Byte));
        // 10.0.0.2 is not lower than 10.0.0.1: answer, stay MASTER.
        m.handle_advert(t, peer(2), &advert(1, 0, 0, 7));
        assert_eq!(drain(&mut m), [Action::Announce, send(1, 0, 0, 8)]);
        // 10.0.1.0: last octet 0 < 1, so lower in UCARP's order.
        m.handle_advert(
            t,
            IpAddr::V4(Ipv4Addr::new(10, 0, 1, 0)),
            &advert(1, 0, 0, 7),
        );
        assert_eq!(
            drain(&mut m)[0],
            changed(State::Master, State::Backup, Reason::PeerWinsTie)
        );
        let rank = |a: [u8; 4]| tie_rank(IpAddr::V4(Ipv4Addr::from(a)));
        assert!(rank([10, 0, 1, 1]) < rank([10, 0, 0, 2]));
        assert!(rank([255, 255, 255, 1]) < rank([0, 0, 0, 2]));
        assert!(rank([255, 255, 255, 255]) < tie_rank("::".parse().unwrap()));
        assert!(tie_rank("fe80::1".parse().unwrap()) < tie_rank("fe80::1:0".parse().unwrap()));
    }

    #[test]
    fn bow_out_never_wins_against_a_master() {
        let (mut m, t) = master(cfg(1, 0, DemoteStyle::Byte));
        m.set_demote(t, 5);
        drain(&mut m);
        m.handle_advert(t, peer(0), &advert(255, 255, 0, 7));
        assert_eq!(drain(&mut m), [Action::Announce, send(1, 0, 5, 8)]);
        assert_eq!(m.state(), State::Master);
    }

    #[test]
    fn backup_rules() {
        let t = Instant::now();
        let backup = |preempt| backup_at(t, preempt);
        let reason = |m: &mut Machine| match drain(m).first() {
            Some(Action::StateChanged { reason, .. }) => Some(*reason),
            _ => None,
        };
        let mut m = backup(false);
        m.handle_advert(t, peer(2), &advert(255, 255, 0, 0));
        assert_eq!(reason(&mut m), Some(Reason::PeerBowedOut));
        let mut m = backup(false);
        m.handle_advert(t, peer(2), &advert(1, 0, 1, 0));
        assert_eq!(reason(&mut m), Some(Reason::PeerDemoted));
        let mut m = backup(false);
        m.handle_advert(t, peer(2), &advert(1, 20, 0, 0));
        assert_eq!(reason(&mut m), None);
        let mut m = backup(true);
        m.handle_advert(t, peer(2), &advert(1, 20, 0, 0));
        assert_eq!(reason(&mut m), Some(Reason::Preempt));
        // Preemption needs equal demotion.
        let mut m = backup(true);
        m.set_demote(t, 1);
        m.handle_advert(t, peer(2), &advert(1, 20, 0, 0));
        assert_eq!(reason(&mut m), None);
        // 3 s is not more than 3 * 1 s; 3 + 1/256 s is.
        let mut m = backup(false);
        m.handle_advert(t, peer(2), &advert(3, 0, 0, 0));
        assert_eq!(reason(&mut m), None);
        assert_eq!(
            m.poll_timeout(),
            Some(t + Duration::from_secs(3) + SKEW_UNIT * 10)
        );
        m.handle_advert(t, peer(2), &advert(3, 1, 0, 0));
        assert_eq!(reason(&mut m), Some(Reason::PeerWillTimeOut));
    }

    #[test]
    fn keepalives_handled_in_a_run_or_only_the_last_agree() {
        let t = Instant::now();
        let backup = |preempt| backup_at(t, preempt);
        let m = backup(false);
        assert!(m.is_keepalive(&advert(1, 0, 0, 7)));
        assert!(m.is_keepalive(&advert(1, 20, 0, 7)));
        assert!(!m.is_keepalive(&advert(255, 255, 0, 7)));
        assert!(!m.is_keepalive(&advert(1, 0, 1, 7)));
        assert!(!m.is_keepalive(&advert(3, 1, 0, 7)));
        assert!(!m.is_keepalive(&Advert {
            vhid: 2,
            ..advert(1, 0, 0, 7)
        }));
        assert!(!backup(true).is_keepalive(&advert(1, 20, 0, 7)));
        // Not while a step-down holds preemption off: the same advert takes
        // over once the hold ends.
        let (mut held, at) = master(cfg(1, 10, DemoteStyle::Byte));
        held.step_down(at);
        drain(&mut held);
        assert_eq!(held.state(), State::Backup);
        assert!(!held.is_keepalive(&advert(1, 0, 1, 7)));
        // INIT and MASTER: never.
        assert!(!Machine::new(cfg(1, 10, DemoteStyle::Byte)).is_keepalive(&advert(1, 0, 0, 7)));
        assert!(
            !master(cfg(1, 10, DemoteStyle::Byte))
                .0
                .is_keepalive(&advert(1, 0, 0, 7))
        );

        // Each of a run, or only the last: same deadline, same counter.
        let mut each = backup(false);
        let mut last = backup(false);
        let second = Duration::from_secs(1);
        for k in 1..=5u32 {
            let a = advert(1, 0, 0, 100 + u64::from(k));
            assert!(each.is_keepalive(&a));
            each.handle_advert(t + second * k, peer(2), &a);
        }
        last.handle_advert(t + second * 5, peer(2), &advert(1, 0, 0, 105));
        assert_eq!(drain(&mut each), []);
        assert_eq!(drain(&mut last), []);
        assert_eq!(each.poll_timeout(), last.poll_timeout());
        assert_eq!(each.master_addr(), last.master_addr());
        let down = each.poll_timeout().unwrap();
        each.handle_timeout(down);
        last.handle_timeout(down);
        assert_eq!(drain(&mut each), drain(&mut last));
    }

    #[test]
    fn steady_adverts_sent_by_the_driver_match_the_machine() {
        let second = Duration::from_secs(1);
        let at = Instant::now();
        // A MASTER past its repeated announcement.
        let steady_master = || {
            let (mut m, at) = master_at(cfg(1, 0, DemoteStyle::Byte), at);
            // Not before the repeated announcement has gone out.
            assert_eq!(m.steady_adverts(), None);
            for k in 1..=ADVERTS_BEFORE_REPEAT_ANNOUNCE {
                m.handle_timeout(at + second * u32::from(k));
                drain(&mut m);
                m.handle_send_result(at, true);
            }
            m
        };
        let mut own = steady_master();
        let mut driven = steady_master();
        let steady = own.steady_adverts().expect("steady");
        assert_eq!(
            steady,
            SteadyAdverts {
                next: at + second * (u32::from(ADVERTS_BEFORE_REPEAT_ANNOUNCE) + 1),
                timing: Timing::new(1, 0),
                demote: 0,
                counter: 42 + u64::from(ADVERTS_BEFORE_REPEAT_ANNOUNCE),
            }
        );
        // The machine sending five itself, or the driver sending them.
        let mut sent = Vec::new();
        for k in 0..5u32 {
            let due = steady.next + second * k;
            own.handle_timeout(due);
            sent.extend(drain(&mut own));
            own.handle_send_result(due, true);
        }
        let expected: Vec<Action> = (1..=5).map(|k| send(1, 0, 0, steady.counter + k)).collect();
        assert_eq!(sent, expected);
        driven.steady_adverts_sent(5, steady.next + second * 5);
        assert_eq!(driven.poll_timeout(), own.poll_timeout());
        assert_eq!(driven.steady_adverts(), own.steady_adverts());
        // What follows is alike too: a demotion is advertised at once.
        own.set_demote(at, 1);
        driven.set_demote(at, 1);
        assert_eq!(drain(&mut own), drain(&mut driven));

        // Not steady: actions pending, a failed send, BACKUP.
        assert!(driven.steady_adverts().is_some());
        driven.set_demote(at, 2);
        assert_eq!(driven.steady_adverts(), None);
        drain(&mut driven);
        driven.handle_send_result(at, false);
        assert_eq!(driven.steady_adverts(), None);
        driven.handle_send_result(at, true);
        assert!(driven.steady_adverts().is_some());
        driven.step_down(at);
        assert_eq!(driven.steady_adverts(), None);
    }

    #[test]
    fn send_errors_demote_once_and_recover_after_three_successes() {
        let (mut m, t) = master(cfg(1, 0, DemoteStyle::Byte));
        m.handle_send_result(t, false);
        m.handle_send_result(t, false);
        m.handle_send_result(t, true);
        m.handle_send_result(t, false);
        m.handle_send_result(t, false);
        assert!(drain(&mut m).is_empty());
        m.handle_send_result(t, false);
        assert_eq!(drain(&mut m), [send(1, 0, 1, 43)]);
        m.handle_send_result(t, false);
        m.handle_send_result(t, false);
        m.handle_send_result(t, false);
        assert!(drain(&mut m).is_empty());
        assert_eq!(m.demote(), 1);
        m.handle_send_result(t, true);
        m.handle_send_result(t, true);
        m.handle_send_result(t, false);
        m.handle_send_result(t, true);
        m.handle_send_result(t, true);
        assert!(drain(&mut m).is_empty());
        m.handle_send_result(t, true);
        assert_eq!(drain(&mut m), [send(1, 0, 0, 44)]);
        assert_eq!(m.demote(), 0);
        // Added to the external demotion, saturating.
        m.set_demote(t, 255);
        for _ in 0..3 {
            m.handle_send_result(t, false);
        }
        assert_eq!(m.demote(), 255);
    }

    #[test]
    fn skew_style_folds_demotion_into_advskew() {
        let timing = |advskew: u8, demote: u8| {
            let mut m = Machine::new(cfg(1, advskew, DemoteStyle::Skew));
            m.set_demote(Instant::now(), demote);
            m.effective_timing()
        };
        assert_eq!(timing(10, 0), Timing::new(1, 10));
        assert_eq!(timing(10, 5), Timing::new(1, 15));
        assert_eq!(timing(230, 50), Timing::new(1, 240));
        assert_eq!(timing(0, 255), Timing::new(1, 240));
        assert_eq!(timing(250, 10), Timing::new(1, 250));
        let mut m = Machine::new(cfg(1, 10, DemoteStyle::Byte));
        m.set_demote(Instant::now(), 5);
        assert_eq!(m.effective_timing(), Timing::new(1, 10));

        let (mut m, t) = master(cfg(1, 0, DemoteStyle::Skew));
        m.set_demote(t, 3);
        assert_eq!(drain(&mut m), [send(1, 3, 0, 43)]);
        // The periodic timer restarts with the new interval.
        assert_eq!(
            m.poll_timeout(),
            Some(t + Duration::from_secs(1) + SKEW_UNIT * 3)
        );
        // Same value again: nothing to advertise.
        m.set_demote(t, 3);
        assert!(drain(&mut m).is_empty());
    }

    #[test]
    fn backup_deadline_follows_demotion() {
        let t = Instant::now();
        let mut m = Machine::new(cfg(1, 0, DemoteStyle::Skew));
        m.handle_link(t, true);
        assert_eq!(m.poll_timeout(), Some(t + Duration::from_secs(3)));
        m.set_demote(t + Duration::from_secs(2), 10);
        assert_eq!(
            m.poll_timeout(),
            Some(t + Duration::from_secs(3) + SKEW_UNIT * 10)
        );
        assert!(drain(&mut m).iter().all(|a| !matches!(a, Action::Send(_))));
    }

    #[test]
    fn step_down_and_hold() {
        let mut c = cfg(1, 0, DemoteStyle::Byte);
        c.preempt = true;
        let (mut m, t) = master(c);
        m.step_down(t);
        assert_eq!(
            drain(&mut m),
            [
                changed(State::Master, State::Backup, Reason::StepDown),
                Action::RemoveAddresses,
            ]
        );
        // Worse and demoted peers do not bring us back during the hold...
        let hold = Duration::from_secs(3);
        m.handle_advert(t + hold / 2, peer(2), &advert(1, 50, 0, 0));
        m.handle_advert(t + hold / 2, peer(2), &advert(1, 50, 9, 0));
        assert!(drain(&mut m).is_empty());
        // ...a bow-out does...
        let mut config = m.config().clone();
        config.initial_counter = 0;
        m.handle_advert(t + hold / 2, peer(2), &advert(255, 255, 0, 0));
        assert_eq!(
            drain(&mut m)[0],
            changed(State::Backup, State::Master, Reason::PeerBowedOut)
        );
        // ...and after the hold preemption works again.
        let (mut m, t) = master(config);
        m.step_down(t);
        drain(&mut m);
        m.handle_advert(t + hold, peer(2), &advert(1, 50, 0, 0));
        assert_eq!(
            drain(&mut m)[0],
            changed(State::Backup, State::Master, Reason::Preempt)
        );
    }

    #[test]
    fn shutdown() {
        let (mut m, t) = master(cfg(1, 0, DemoteStyle::Byte));
        m.set_demote(t, 2);
        drain(&mut m);
        m.shutdown(t);
        assert_eq!(
            drain(&mut m),
            [
                changed(State::Master, State::Init, Reason::Shutdown),
                send(255, 255, 2, 44),
                Action::RemoveAddresses,
            ]
        );
        assert_eq!(m.poll_timeout(), None);
        m.handle_link(t, true);
        m.handle_advert(t, peer(2), &advert(1, 0, 0, 0));
        m.handle_send_result(t, false);
        m.set_demote(t, 0);
        m.shutdown(t);
        assert!(drain(&mut m).is_empty());
        assert_eq!(m.state(), State::Init);

        let t = Instant::now();
        let mut m = Machine::new(cfg(1, 0, DemoteStyle::Skew));
        m.handle_link(t, true);
        drain(&mut m);
        m.shutdown(t);
        assert_eq!(
            drain(&mut m),
            [changed(State::Backup, State::Init, Reason::Shutdown)]
        );
        assert_eq!(m.poll_timeout(), None);
    }

    #[test]
    fn late_wake_ups_do_not_drift() {
        let (mut m, t) = master(cfg(1, 0, DemoteStyle::Byte));
        let second = Duration::from_secs(1);
        // 3 ms late: the next one is still due one interval after the
        // missed deadline.
        m.handle_timeout(t + second + Duration::from_millis(3));
        assert_eq!(m.poll_timeout(), Some(t + second * 2));
        // More than one interval behind: restart from now, no burst.
        m.handle_timeout(t + second * 3 + Duration::from_millis(500));
        assert_eq!(
            drain(&mut m),
            [send(1, 0, 0, 43), send(1, 0, 0, 44), Action::Announce]
        );
        assert_eq!(
            m.poll_timeout(),
            Some(t + second * 4 + Duration::from_millis(500))
        );
    }

    #[test]
    fn grid_puts_masters_with_one_interval_on_the_same_instants() {
        let second = Duration::from_secs(1);
        let epoch = Instant::now();
        let grid = AdvertGrid {
            epoch,
            slot: 4,
            slots: 16,
        };
        let mut config = cfg(1, 0, DemoteStyle::Byte);
        config.advert_grid = Some(grid);
        // slot 4 of 16 at 1 s: epoch + k s + 250 ms, the last one within an
        // interval of the takeover
        let (mut a, ta) = master_at(config.clone(), epoch + Duration::from_millis(3100));
        let (b, tb) = master_at(config.clone(), epoch + Duration::from_millis(3900));
        let first = epoch + Duration::from_millis(3250);
        assert_eq!(a.poll_timeout(), Some(first));
        assert!(first > ta && first <= ta + second);
        assert_eq!(b.poll_timeout(), Some(first + second));
        assert!(first + second > tb && first + second <= tb + second);
        // then every interval: both on the same instants
        a.handle_timeout(first);
        assert_eq!(a.poll_timeout(), Some(first + second));
        assert_eq!(a.poll_timeout(), b.poll_timeout());
        // on the grid instant itself: the next one, a whole interval on
        let (c, _) = master_at(config.clone(), first + second);
        assert_eq!(c.poll_timeout(), Some(first + second * 2));
        // another slot, another instant
        config.advert_grid = Some(AdvertGrid { slot: 5, ..grid });
        let (d, _) = master_at(config, epoch + Duration::from_millis(3100));
        assert_eq!(
            d.poll_timeout(),
            Some(epoch + Duration::from_millis(3312) + Duration::from_micros(500))
        );
    }

    #[test]
    fn grid_follows_a_change_of_interval() {
        let epoch = Instant::now();
        let mut config = cfg(1, 0, DemoteStyle::Skew);
        config.advert_grid = Some(AdvertGrid {
            epoch,
            slot: 0,
            slots: 16,
        });
        let (mut m, t) = master_at(config, epoch + Duration::from_millis(10_500));
        assert_eq!(m.poll_timeout(), Some(epoch + Duration::from_secs(11)));
        // demoted by 128 in the advskew: interval 1.5 s, grid of 1.5 s
        m.set_demote(t, 128);
        let _ = drain(&mut m);
        assert_eq!(m.poll_timeout(), Some(epoch + Duration::from_secs(12)));
    }

    #[test]
    fn grid_before_its_epoch_and_at_the_limits() {
        let epoch = Instant::now() + Duration::from_secs(100);
        let grid = AdvertGrid {
            epoch,
            slot: 17,
            slots: 16,
        };
        let second = Duration::from_secs(1);
        // slot 17 of 16 wraps to 1: epoch + k s + 62.5 ms
        let limit = epoch - Duration::from_millis(2500);
        assert_eq!(
            grid.at_or_before(limit, second),
            Some(epoch - Duration::from_millis(3000) + Duration::from_micros(62_500))
        );
        assert_eq!(grid.at_or_before(limit, Duration::ZERO), None);
        let one = AdvertGrid { slots: 0, ..grid };
        assert_eq!(one.at_or_before(epoch, second), Some(epoch));
    }

    #[test]
    fn advbase_0_intervals() {
        let (mut m, t) = master(cfg(0, 0, DemoteStyle::Byte));
        assert_eq!(m.poll_timeout(), Some(t + SKEW_UNIT));
        m.handle_timeout(t + SKEW_UNIT);
        assert_eq!(m.poll_timeout(), Some(t + SKEW_UNIT * 2));
        // advbase 0: "will time out" compares with our master-down time
        // (3/256 s here).
        let t = Instant::now();
        let mut m = Machine::new(cfg(0, 0, DemoteStyle::Byte));
        m.handle_link(t, true);
        m.handle_advert(t, peer(2), &advert(0, 3, 0, 0));
        assert_eq!(m.state(), State::Backup);
        m.handle_advert(t, peer(2), &advert(0, 4, 0, 0));
        assert_eq!(m.state(), State::Master);
    }
}
