//! What differs between the protocols a machine speaks: who wins, how long
//! a BACKUP waits, what is advertised and what leaving sends. The machine
//! keeps the states and their transitions and asks [`Rules`] every
//! question whose answer depends on the protocol.

use std::net::IpAddr;
use std::time::Duration;

use super::Reason;
use super::send::{SendAdvert, SendCarp};
use crate::packet::Advert;
use crate::timing::Timing;
use crate::vrrp;

mod carp;
mod vrrp_rules;

#[cfg(test)]
pub(super) use carp::tie_rank;
pub use carp::{CarpRules, DemoteStyle};
pub use vrrp_rules::VrrpRules;

/// The protocol of one VHID, with its parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rules {
    Carp(CarpRules),
    /// VRRPv3 or VRRPv2; the VHID number is the VRID.
    Vrrp(VrrpRules),
}

/// A valid advertisement heard from a peer, of either protocol.
#[derive(Debug, Clone, Copy)]
pub(super) enum PeerAdvert<'a> {
    Carp(&'a Advert),
    Vrrp(&'a vrrp::Advert),
}

/// What this node brings to a decision.
#[derive(Debug, Clone, Copy)]
pub(super) struct Ours {
    /// The demotion in effect.
    pub(super) demote: u8,
    pub(super) preempt: bool,
    /// A step-down holds preemption off.
    pub(super) held: bool,
    pub(super) addr: IpAddr,
}

/// What an advertisement does to a BACKUP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum InBackup {
    /// Take over at once.
    TakeOver(Reason),
    /// The master is alive: the master-down timer restarts, with the
    /// interval the master advertises where the protocol learns it
    /// (VRRPv3's Active_Adver_Interval).
    Restart { active_interval: Option<Duration> },
    /// VRRP preemption: we outrank the master, so its advertisement is
    /// discarded and the running master-down timer decides.
    Outrank,
    /// VRRP priority 0: the master is leaving; wait only the skew time.
    MasterLeaving,
}

/// What an advertisement does to a MASTER.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum InMaster {
    /// Become BACKUP. `last_word`: send one more advertisement first (CARP,
    /// as UCARP does).
    Yield {
        reason: Reason,
        last_word: bool,
        active_interval: Option<Duration>,
    },
    /// A worse or leaving peer: stay MASTER and answer with an announcement
    /// and an advertisement, at most once per master-down time.
    Answer,
    /// VRRP priority 0: advertise at once and restart the schedule from
    /// there (RFC 9568 6.4.3).
    AdvertiseNow,
}

impl Rules {
    /// The advertisement is of this protocol and for VHID/VRID `id`.
    pub(super) fn speaks(&self, heard: PeerAdvert<'_>, id: u8) -> bool {
        match (self, heard) {
            (Rules::Carp(_), PeerAdvert::Carp(a)) => a.vhid == id,
            (Rules::Vrrp(r), PeerAdvert::Vrrp(a)) => a.vrid == id && a.version == r.version,
            _ => false,
        }
    }

    /// The timing this node's advertisements carry, in CARP's units. VRRP:
    /// the advertisement interval as whole seconds and 1/256 s, rounded
    /// down (for status output only).
    pub(super) fn effective_timing(&self, demote: u8) -> Timing {
        match self {
            Rules::Carp(r) => r.effective_timing(demote),
            Rules::Vrrp(r) => {
                let nanos = r.interval().as_nanos();
                let secs = u8::try_from(nanos / 1_000_000_000).unwrap_or(u8::MAX);
                let skew =
                    u8::try_from((nanos % 1_000_000_000) * 256 / 1_000_000_000).unwrap_or(u8::MAX);
                Timing::new(secs, skew)
            }
        }
    }

    /// Between a MASTER's periodic advertisements.
    pub(super) fn advert_interval(&self, demote: u8) -> Duration {
        match self {
            Rules::Carp(r) => r.effective_timing(demote).interval(),
            Rules::Vrrp(r) => r.interval(),
        }
    }

    /// How long a BACKUP waits for the master. `active_interval`: the
    /// master's advertised interval, where learned (VRRPv3); `leaving`: the
    /// master sent VRRP priority 0.
    pub(super) fn master_down(
        &self,
        demote: u8,
        active_interval: Option<Duration>,
        leaving: bool,
    ) -> Duration {
        match self {
            Rules::Carp(r) => r.master_down(demote),
            Rules::Vrrp(r) => {
                let priority = r.advertised_priority(demote);
                let active = active_interval.unwrap_or_else(|| r.interval());
                if leaving {
                    r.skew_time(priority, active)
                } else {
                    r.master_down(priority, active)
                }
            }
        }
    }

    /// VRRP address owner (priority 255, undemoted): INIT -> MASTER at
    /// once.
    pub(super) fn is_owner(&self, demote: u8) -> bool {
        match self {
            Rules::Carp(_) => false,
            Rules::Vrrp(r) => r.advertised_priority(demote) == vrrp::OWNER_PRIORITY,
        }
    }

    /// The periodic advertisement.
    pub(super) fn advert(&self, demote: u8, counter: u64) -> SendAdvert {
        match self {
            Rules::Carp(r) => SendAdvert::Carp(SendCarp {
                timing: r.effective_timing(demote),
                demote: r.advertised_demote(demote),
                counter,
            }),
            Rules::Vrrp(r) => SendAdvert::Vrrp(r.advert(r.advertised_priority(demote))),
        }
    }

    /// The advertisement a leaving MASTER sends: CARP's bow-out (advbase
    /// and advskew 255), VRRP's priority 0.
    pub(super) fn leaving_advert(&self, demote: u8, counter: u64) -> SendAdvert {
        match self {
            Rules::Carp(r) => SendAdvert::Carp(SendCarp {
                timing: Timing::BOW_OUT,
                demote: r.advertised_demote(demote),
                counter,
            }),
            Rules::Vrrp(r) => SendAdvert::Vrrp(r.advert(vrrp::STOP_PRIORITY)),
        }
    }

    /// What `heard` does to a BACKUP; `None` if it is of the other
    /// protocol.
    pub(super) fn in_backup(&self, ours: &Ours, heard: PeerAdvert<'_>) -> Option<InBackup> {
        match (self, heard) {
            (Rules::Carp(r), PeerAdvert::Carp(a)) => Some(r.in_backup(ours, a)),
            (Rules::Vrrp(r), PeerAdvert::Vrrp(a)) => Some(r.in_backup(ours, a)),
            _ => None,
        }
    }

    /// What `heard` from `src` does to a MASTER; `None` if it is of the
    /// other protocol.
    pub(super) fn in_master(
        &self,
        ours: &Ours,
        src: IpAddr,
        heard: PeerAdvert<'_>,
    ) -> Option<InMaster> {
        match (self, heard) {
            (Rules::Carp(r), PeerAdvert::Carp(a)) => Some(r.in_master(ours, src, a)),
            (Rules::Vrrp(r), PeerAdvert::Vrrp(a)) => Some(r.in_master(ours, src, a)),
            _ => None,
        }
    }
}
