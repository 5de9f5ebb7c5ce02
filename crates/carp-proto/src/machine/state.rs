//! What the machine knows only in one state. Each state's data lives in its
//! variant of [`Phase`], so leaving a state drops it.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use super::schedule::SteadySchedule;
use super::{Reason, State};

/// The machine's state, with the data only that state has.
#[derive(Debug)]
pub(super) enum Phase {
    Init(Init),
    Backup(Backup),
    Master(Master),
    /// Shut down: INIT for good, every further input is ignored.
    ShutDown,
}

impl Phase {
    /// The state as the machine reports it.
    pub(super) fn state(&self) -> State {
        match self {
            Phase::Init(_) | Phase::ShutDown => State::Init,
            Phase::Backup(_) => State::Backup,
            Phase::Master(_) => State::Master,
        }
    }
}

/// INIT: waiting for the link.
#[derive(Debug)]
pub(super) struct Init {
    /// Why INIT -> BACKUP once the link is up: [`Reason::Startup`] the first
    /// time, [`Reason::LinkUp`] after that.
    pub(super) link_up: Reason,
    /// A step-down's hold on preemption, kept across a link flap: it lasts
    /// one master-down time from the step-down, whatever happens between.
    pub(super) no_preempt_until: Option<Instant>,
}

/// BACKUP: listening to the master.
#[derive(Debug)]
pub(super) struct Backup {
    /// When the master-down timer was last restarted. The deadline is
    /// derived from the current master-down time, so a demotion change
    /// moves it without losing the time already waited.
    pub(super) master_down_from: Instant,
    /// After a step-down: no preemption before this.
    pub(super) no_preempt_until: Option<Instant>,
    /// VRRPv3's Active_Adver_Interval, once learned from the master; until
    /// then our own interval counts.
    pub(super) active_interval: Option<Duration>,
    /// What the timer is waiting for.
    pub(super) wait: Wait,
    /// The master we follow: the source of the last advertisement that
    /// restarted the timer (none since entering BACKUP: `None`).
    pub(super) following: Option<IpAddr>,
}

/// What a BACKUP's master-down timer is waiting for, and so how long it
/// runs and why we take over when it fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Wait {
    /// The master's silence for the master-down time
    /// ([`Reason::MasterDown`]).
    MasterDown,
    /// VRRP preemption: we outrank the master and discard its
    /// advertisements; the master-down time runs out ([`Reason::Preempt`]).
    Outranking,
    /// VRRP priority 0: the master is leaving; Skew_Time only
    /// ([`Reason::PeerBowedOut`]).
    MasterLeaving,
}

impl Wait {
    /// Why we take over when the timer fires.
    pub(super) fn reason(self) -> Reason {
        match self {
            Wait::MasterDown => Reason::MasterDown,
            Wait::Outranking => Reason::Preempt,
            Wait::MasterLeaving => Reason::PeerBowedOut,
        }
    }
}

impl Backup {
    /// A BACKUP whose master-down timer starts at `now`.
    pub(super) fn since(now: Instant) -> Backup {
        Backup {
            master_down_from: now,
            no_preempt_until: None,
            active_interval: None,
            wait: Wait::MasterDown,
            following: None,
        }
    }

    /// We follow a master other than `src`; it was heard within the
    /// master-down time, or the timer would have fired.
    pub(super) fn follows_another(&self, src: IpAddr) -> bool {
        self.following.is_some_and(|f| f != src)
    }

    /// A step-down still holds preemption off at `now`.
    pub(super) fn holds_preemption(&self, now: Instant) -> bool {
        self.no_preempt_until.is_some_and(|t| now < t)
    }
}

/// MASTER: advertising.
#[derive(Debug)]
pub(super) struct Master {
    /// The periodic advertisements.
    pub(super) adverts: SteadySchedule,
    /// Periodic advertisements since the takeover, until the repeated
    /// announcement has gone out (`None` after that).
    pub(super) adverts_since_takeover: Option<u8>,
    /// When we last answered a worse master (rate limit).
    pub(super) last_reassert: Option<Instant>,
}
