//! The state machine of one VHID, sans I/O.
//!
//! The machine never reads a clock: every input carries `now`, and it answers
//! with [`Action`]s (drained with [`Machine::poll_action`]) and its next
//! deadline ([`Machine::poll_timeout`]). The caller calls
//! [`Machine::handle_timeout`] once that deadline has passed.
//!
//! # Rules (CARP)
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
//!   Rules 1 to 4 (and VRRP's preemption and priority 0) apply only to the
//!   master we follow, the source of the last advertisement that restarted
//!   the timer, or while we follow none: after a partition heals, a second
//!   master that advertises a demotion or leaves is worse than the one we
//!   follow, which is alive and outranks us, and the two settle it between
//!   themselves (the worse yields on the better's next advertisement).
//!   Taking over from it would add a third holder for an interval.
//!
//!   For one master-down time after [`Machine::step_down`], rules 2 and 3 are
//!   suspended, so the operator's step-down sticks while the peer takes over.
//!   For [`MachineConfig::preempt_delay`] after INIT -> BACKUP (startup or
//!   link up) they are suspended too, so a node that keeps restarting does
//!   not pull the addresses over each time; rules 1 and 4 and the
//!   master-down timer still apply, a dead or leaving master is replaced at
//!   once.
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
//! # VRRP
//!
//! A VHID whose [`Rules`] are [`Rules::Vrrp`] keeps the states and the
//! takeover/announce/link/step-down/shutdown steps above, with VRRP's
//! decisions (RFC 9568 6.4, RFC 3768 6.4) in place of CARP's:
//!
//! * priority: the configured one less the demotion in effect, never below
//!   1; higher is better. 255 (undemoted) is the address owner: link up
//!   takes INIT -> MASTER at once ([`Reason::Owner`]).
//! * a BACKUP waits `3 * Active_Adver_Interval + Skew_Time`, Skew_Time =
//!   `((256 - priority) * Active_Adver_Interval) / 256` (VRRPv2: `(256 -
//!   priority) / 256` s, with our own interval). VRRPv3's
//!   Active_Adver_Interval is the one the master advertises, learned from
//!   each advertisement the BACKUP accepts; ours until then.
//! * BACKUP, on an advertisement: priority 0: the timer is set to Skew_Time,
//!   then MASTER ([`Reason::PeerBowedOut`]); preemption on (not held by a
//!   step-down) and a lower priority than ours: discarded, so the running
//!   timer makes us MASTER ([`Reason::Preempt`]); otherwise the timer
//!   restarts.
//! * MASTER, on an advertisement: priority 0: advertise at once and restart
//!   the schedule; a higher priority, or an equal one from a higher
//!   primary address (unsigned, network byte order): BACKUP
//!   ([`Reason::PeerPreferred`], [`Reason::PeerWinsTie`]), no last
//!   advertisement; a lower one: answered as CARP answers a worse master.
//! * leaving sends priority 0 instead of CARP's bow-out.
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
//!
//! # Files
//!
//! The inputs and the states' steps are here; what depends on the protocol
//! (who wins, how long a BACKUP waits, what is advertised) is in `rules`
//! (`rules/carp.rs`, `rules/vrrp_rules.rs`); the static parameters are in
//! `config`, each state's own data in `state`, the CARP rule that applies
//! to a given peer, as data for operators, in `explain`, the advertisement
//! schedule
//! and grid in `schedule`, what to send, how it is signed and what failed
//! sends do in `send`, and what a driver may do in the machine's place in
//! `offload`.

use std::collections::VecDeque;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use crate::packet::Advert;
use crate::timing::Timing;
use crate::vrrp;

mod config;
mod explain;
mod offload;
mod rules;
mod schedule;
mod send;
mod state;

pub use config::MachineConfig;
pub use explain::{Explanation, Heard, Priority, Rule};
pub use offload::SteadyAdverts;
pub use rules::{CarpRules, DemoteStyle, Rules, VrrpRules};
use rules::{InBackup, InMaster, Ours, PeerAdvert};
pub use schedule::{AdvertGrid, SteadySchedule};
use send::SendHealth;
pub use send::{SendAdvert, SendCarp, SendVrrp};
use state::{Backup, Init, Master, Phase, Wait};

/// Periodic advertisements after a takeover before the announcement is
/// repeated.
const ADVERTS_BEFORE_REPEAT_ANNOUNCE: u8 = 2;

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
    /// BACKUP -> MASTER: preemption; CARP: our interval is shorter; VRRP:
    /// our priority is higher and the master-down time ran out.
    Preempt,
    /// BACKUP -> MASTER: the master advertises a higher demotion than ours.
    PeerDemoted,
    /// BACKUP -> MASTER: the master's interval exceeds dead_ratio * advbase.
    PeerWillTimeOut,
    /// BACKUP -> MASTER: the master left: a CARP bow-out (255/255), or VRRP
    /// priority 0 followed by our skew time.
    PeerBowedOut,
    /// MASTER -> BACKUP: a better peer (CARP: lower demotion or shorter
    /// interval; VRRP: higher priority).
    PeerPreferred,
    /// MASTER -> BACKUP: equal priority and the peer wins the tie-break
    /// (CARP: UCARP's address order, see the module docs; VRRP: the higher
    /// primary address).
    PeerWinsTie,
    /// any -> INIT: the parent link went down.
    LinkDown,
    /// INIT -> BACKUP: the parent link came back.
    LinkUp,
    /// MASTER -> BACKUP: operator asked (SIGUSR2, control socket).
    StepDown,
    /// MASTER/BACKUP -> INIT: shutting down.
    Shutdown,
    /// INIT -> MASTER: VRRP address owner (priority 255), at once.
    Owner,
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
            Reason::Owner => "owner",
        }
    }
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
    phase: Phase,
    /// Last CARP counter sent or adopted; the next advertisement carries + 1.
    counter: u64,
    external_demote: u8,
    send_health: SendHealth,
    master_addr: Option<IpAddr>,
    actions: VecDeque<Action>,
}

impl Machine {
    /// A machine in INIT. Nothing happens until [`Machine::handle_link`]
    /// reports the link up.
    pub fn new(config: MachineConfig) -> Self {
        Machine {
            counter: config.initial_counter,
            config,
            phase: Phase::Init(Init {
                link_up: Reason::Startup,
                no_preempt_until: None,
            }),
            external_demote: 0,
            send_health: SendHealth::default(),
            master_addr: None,
            actions: VecDeque::new(),
        }
    }

    pub fn config(&self) -> &MachineConfig {
        &self.config
    }

    pub fn state(&self) -> State {
        self.phase.state()
    }

    /// Local demotion in effect (operator + trackers + send errors).
    pub fn demote(&self) -> u8 {
        self.external_demote
            .saturating_add(self.send_health.demotion())
    }

    /// The timing we advertise now (CARP: configured, plus demotion in
    /// [`DemoteStyle::Skew`]; VRRP: the interval in CARP's units, see
    /// [`Rules`]).
    pub fn effective_timing(&self) -> Timing {
        self.config.rules.effective_timing(self.demote())
    }

    /// VRRP: the priority we advertise now (configured less demotion, never
    /// below 1); `None` for CARP.
    pub fn effective_priority(&self) -> Option<u8> {
        match &self.config.rules {
            Rules::Carp(_) => None,
            Rules::Vrrp(r) => Some(r.advertised_priority(self.demote())),
        }
    }

    /// Source address of the last valid advertisement from another node (kept
    /// while we are MASTER).
    pub fn master_addr(&self) -> Option<IpAddr> {
        self.master_addr
    }

    /// Link up: INIT -> BACKUP (arms the master-down timer), or MASTER at
    /// once for a VRRP address owner. Link down: any -> INIT (removes
    /// addresses if MASTER).
    pub fn handle_link(&mut self, now: Instant, up: bool) {
        match (&self.phase, up) {
            (Phase::Init(_), true) if self.config.rules.is_owner(self.demote()) => {
                self.become_master(now, Reason::Owner);
            }
            (Phase::Init(init), true) => {
                let reason = init.link_up;
                let delay = self.config.preempt_delay;
                let delayed = (!delay.is_zero()).then(|| now + delay);
                let backup = Backup {
                    // whichever hold ends later: a step-down's or the delay
                    no_preempt_until: init.no_preempt_until.max(delayed),
                    ..Backup::since(now)
                };
                self.enter(Phase::Backup(backup), reason);
            }
            (Phase::Backup(backup), false) => {
                let hold = backup.no_preempt_until;
                self.link_down(hold);
            }
            (Phase::Master(_), false) => {
                // a MASTER holds no step-down
                self.link_down(None);
                self.actions.push_back(Action::RemoveAddresses);
            }
            _ => {}
        }
    }

    /// A valid (checksum and HMAC verified) CARP advertisement from `src`.
    /// Ignored unless this VHID speaks CARP.
    pub fn handle_advert(&mut self, now: Instant, src: IpAddr, advert: &Advert) {
        self.handle_heard(now, src, PeerAdvert::Carp(advert));
    }

    /// A VRRP advertisement from `src` that passed [`vrrp::check`] and
    /// [`vrrp::Advert::check_against`]. Ignored unless this VHID speaks
    /// that VRRP version.
    pub fn handle_vrrp_advert(&mut self, now: Instant, src: IpAddr, advert: &vrrp::Advert) {
        self.handle_heard(now, src, PeerAdvert::Vrrp(advert));
    }

    fn handle_heard(&mut self, now: Instant, src: IpAddr, heard: PeerAdvert<'_>) {
        let listening = matches!(self.phase, Phase::Backup(_) | Phase::Master(_));
        if !listening || !self.config.rules.speaks(heard, self.config.vhid) {
            return;
        }
        if let PeerAdvert::Carp(advert) = heard {
            // UCARP and FreeBSD continue from the peer's counter; OpenBSD
            // only needs ours to differ from its own cookie, which + 1
            // guarantees.
            self.counter = advert.counter;
        }
        if let Phase::Backup(backup) = &self.phase
            && backup.follows_another(src)
            && !self.restarts_timer(heard)
        {
            return;
        }
        self.master_addr = Some(src);
        match self.phase {
            Phase::Backup(_) => self.advert_as_backup(now, src, heard),
            Phase::Master(_) => self.advert_as_master(now, src, heard),
            Phase::Init(_) | Phase::ShutDown => {}
        }
    }

    /// Call when `now >= poll_timeout()`.
    pub fn handle_timeout(&mut self, now: Instant) {
        if let Phase::Backup(backup) = &self.phase {
            let reason = backup.wait.reason();
            if self.poll_timeout().is_some_and(|t| now >= t) {
                self.become_master(now, reason);
            }
            return;
        }
        let grid = self.config.advert_grid;
        let Phase::Master(master) = &mut self.phase else {
            return;
        };
        if !master.adverts.is_due(now) {
            return;
        }
        master.adverts.advance(now, grid);
        let repeat_announce = match master.adverts_since_takeover {
            Some(n) if n + 1 >= ADVERTS_BEFORE_REPEAT_ANNOUNCE => {
                master.adverts_since_takeover = None;
                true
            }
            Some(n) => {
                master.adverts_since_takeover = Some(n + 1);
                false
            }
            None => false,
        };
        self.send();
        if repeat_announce {
            self.actions.push_back(Action::Announce);
        }
    }

    /// Outcome of the last [`Action::Send`]: 3 failures in a row demote by
    /// one, 3 successes after that undo it.
    pub fn handle_send_result(&mut self, now: Instant, ok: bool) {
        if matches!(self.phase, Phase::ShutDown) {
            return;
        }
        let before = self.effective();
        self.send_health.record(ok);
        self.effective_changed(now, before);
    }

    /// Set the externally managed demotion (operator, trackers, groups).
    /// While MASTER a change is advertised at once.
    pub fn set_demote(&mut self, now: Instant, demote: u8) {
        if matches!(self.phase, Phase::ShutDown) {
            return;
        }
        let before = self.effective();
        self.external_demote = demote;
        self.effective_changed(now, before);
    }

    /// MASTER -> BACKUP once; no preemption for one master-down time.
    pub fn step_down(&mut self, now: Instant) {
        if self.state() != State::Master {
            return;
        }
        let backup = Backup {
            no_preempt_until: Some(now + self.master_down_time()),
            ..Backup::since(now)
        };
        self.enter(Phase::Backup(backup), Reason::StepDown);
        self.actions.push_back(Action::RemoveAddresses);
    }

    /// Leave: a MASTER sends its leaving advertisement (CARP bow-out, VRRP
    /// priority 0) and removes its addresses; ends in INIT with no
    /// deadline, for good.
    pub fn shutdown(&mut self, _now: Instant) {
        match self.phase {
            Phase::Master(_) => {
                self.enter(Phase::ShutDown, Reason::Shutdown);
                self.counter = self.counter.wrapping_add(1);
                let leaving = self
                    .config
                    .rules
                    .leaving_advert(self.demote(), self.counter);
                self.actions.push_back(Action::Send(leaving));
                self.actions.push_back(Action::RemoveAddresses);
            }
            Phase::Backup(_) => self.enter(Phase::ShutDown, Reason::Shutdown),
            Phase::Init(_) => self.phase = Phase::ShutDown,
            Phase::ShutDown => {}
        }
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        match &self.phase {
            Phase::Init(_) | Phase::ShutDown => None,
            Phase::Backup(backup) => Some(backup.master_down_from + self.backup_wait(backup)),
            Phase::Master(master) => Some(master.adverts.next()),
        }
    }

    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// What we bring to a decision; `held`: a step-down holds preemption
    /// off.
    fn ours(&self, held: bool) -> Ours {
        Ours {
            demote: self.demote(),
            preempt: self.config.preempt,
            held,
            addr: self.config.local_addr,
        }
    }

    /// `heard` would only restart a BACKUP's master-down timer (the
    /// step-down hold aside): its sender outranks us.
    fn restarts_timer(&self, heard: PeerAdvert<'_>) -> bool {
        matches!(
            self.config.rules.in_backup(&self.ours(false), heard),
            Some(InBackup::Restart { .. })
        )
    }

    fn advert_as_backup(&mut self, now: Instant, src: IpAddr, heard: PeerAdvert<'_>) {
        let held = match &self.phase {
            Phase::Backup(backup) => backup.holds_preemption(now),
            _ => false,
        };
        let ours = self.ours(held);
        let Some(verdict) = self.config.rules.in_backup(&ours, heard) else {
            return;
        };
        if let InBackup::TakeOver(reason) = verdict {
            self.become_master(now, reason);
            return;
        }
        let Phase::Backup(backup) = &mut self.phase else {
            return;
        };
        match verdict {
            InBackup::Restart { active_interval } => {
                backup.following = Some(src);
                backup.master_down_from = now;
                backup.wait = Wait::MasterDown;
                if active_interval.is_some() {
                    backup.active_interval = active_interval;
                }
            }
            InBackup::Outrank => {
                if backup.wait == Wait::MasterDown {
                    backup.wait = Wait::Outranking;
                }
            }
            InBackup::MasterLeaving => {
                backup.master_down_from = now;
                backup.wait = Wait::MasterLeaving;
            }
            InBackup::TakeOver(_) => {}
        }
    }

    fn advert_as_master(&mut self, now: Instant, src: IpAddr, heard: PeerAdvert<'_>) {
        let ours = self.ours(false);
        let Some(verdict) = self.config.rules.in_master(&ours, src, heard) else {
            return;
        };
        match verdict {
            InMaster::Yield {
                reason,
                last_word,
                active_interval,
            } => {
                let backup = Backup {
                    active_interval,
                    ..Backup::since(now)
                };
                self.enter(Phase::Backup(backup), reason);
                if last_word {
                    self.send();
                }
                self.actions.push_back(Action::RemoveAddresses);
            }
            InMaster::AdvertiseNow => {
                self.send();
                self.restart_schedule(now);
            }
            InMaster::Answer => {
                let master_down_time = self.master_down_time();
                let Phase::Master(master) = &mut self.phase else {
                    return;
                };
                let may_answer = master
                    .last_reassert
                    .is_none_or(|t| now >= t + master_down_time);
                if may_answer {
                    master.last_reassert = Some(now);
                    self.actions.push_back(Action::Announce);
                    self.send();
                }
            }
        }
    }

    /// The CARP rule that applies to `advert` in BACKUP, as `explain`
    /// shows it (a VRRP machine waits).
    fn backup_rule(&self, advert: &Advert, held: bool) -> Rule {
        let ours = self.ours(held);
        match self.config.rules.in_backup(&ours, PeerAdvert::Carp(advert)) {
            Some(InBackup::TakeOver(reason)) => Rule::TakeOver(reason),
            _ => Rule::Wait { held },
        }
    }

    /// The CARP rule that applies to `advert` from `src` in MASTER, as
    /// `explain` shows it (a VRRP machine stays).
    fn master_rule(&self, src: IpAddr, advert: &Advert) -> Rule {
        let ours = self.ours(false);
        match self
            .config
            .rules
            .in_master(&ours, src, PeerAdvert::Carp(advert))
        {
            Some(InMaster::Yield { reason, .. }) => Rule::Yield(reason),
            _ => Rule::Stay,
        }
    }

    /// CARP's (demotion, interval) of ours, as `explain` shows it.
    fn our_priority(&self) -> (u8, Duration) {
        match &self.config.rules {
            Rules::Carp(c) => c.ours(self.demote()),
            Rules::Vrrp(v) => (0, v.interval()),
        }
    }

    /// CARP's (demotion, interval) of `advert`, as `explain` shows it.
    fn their_priority(&self, advert: &Advert) -> (u8, Duration) {
        match &self.config.rules {
            Rules::Carp(c) => c.theirs(advert),
            Rules::Vrrp(_) => (advert.demote, advert.timing().interval()),
        }
    }

    fn become_master(&mut self, now: Instant, reason: Reason) {
        let interval = self.config.rules.advert_interval(self.demote());
        let master = Master {
            adverts: SteadySchedule::after(now, interval, self.config.advert_grid),
            adverts_since_takeover: Some(0),
            last_reassert: None,
        };
        self.enter(Phase::Master(master), reason);
        self.actions.push_back(Action::InstallAddresses);
        self.send();
        self.actions.push_back(Action::Announce);
    }

    /// Any -> INIT, keeping a step-down's hold on preemption.
    fn link_down(&mut self, no_preempt_until: Option<Instant>) {
        let init = Init {
            link_up: Reason::LinkUp,
            no_preempt_until,
        };
        self.enter(Phase::Init(init), Reason::LinkDown);
    }

    /// Leave the current state (dropping its data) for `to`.
    fn enter(&mut self, to: Phase, reason: Reason) {
        let from = self.state();
        self.phase = to;
        self.actions.push_back(Action::StateChanged {
            from,
            to: self.state(),
            reason,
        });
    }

    /// The periodic advertisement, now.
    fn send(&mut self) {
        self.counter = self.counter.wrapping_add(1);
        let advert = self.config.rules.advert(self.demote(), self.counter);
        self.actions.push_back(Action::Send(advert));
    }

    /// A MASTER's next periodic advertisement one interval after `now`.
    fn restart_schedule(&mut self, now: Instant) {
        let interval = self.config.rules.advert_interval(self.demote());
        let adverts = SteadySchedule::after(now, interval, self.config.advert_grid);
        if let Phase::Master(master) = &mut self.phase {
            master.adverts = adverts;
        }
    }

    /// The demotion in effect and what peers see of us (the advertisement,
    /// counter aside).
    fn effective(&self) -> (u8, SendAdvert) {
        (self.demote(), self.config.rules.advert(self.demote(), 0))
    }

    fn effective_changed(&mut self, now: Instant, before: (u8, SendAdvert)) {
        // BACKUP: the master-down deadline is derived from the current
        // demotion, nothing to do.
        if self.state() != State::Master || self.effective() == before {
            return;
        }
        self.send();
        self.restart_schedule(now);
    }

    /// The master-down time with our own parameters (step-down hold,
    /// answer rate limit).
    fn master_down_time(&self) -> Duration {
        self.config.rules.master_down(self.demote(), None, false)
    }

    /// How long `backup` waits from `master_down_from`.
    fn backup_wait(&self, backup: &Backup) -> Duration {
        let leaving = backup.wait == Wait::MasterLeaving;
        self.config
            .rules
            .master_down(self.demote(), backup.active_interval, leaving)
    }
}

#[cfg(test)]
mod tests;
