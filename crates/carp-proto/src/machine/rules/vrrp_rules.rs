//! VRRP's rules (RFC 9568 6.4, RFC 3768 6.4): higher priority wins, an
//! equal one goes to the higher primary address, and a BACKUP times out
//! after `3 * Active_Adver_Interval + Skew_Time`.

use std::net::IpAddr;
use std::time::Duration;

use super::{InBackup, InMaster, Ours};
use crate::machine::Reason;
use crate::machine::send::SendVrrp;
use crate::vrrp::{Advert, Version};

/// One 1/256 of a second, VRRPv2's skew unit (3906.25 µs).
const V2_SKEW_UNIT_NANOS: u64 = 1_000_000_000 / 256;

/// VRRP's parameters of one virtual router (the VHID number is the VRID).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VrrpRules {
    pub version: Version,
    /// 1..=254, or 255 for the owner of the virtual addresses.
    pub priority: u8,
    /// Advertisement_Interval in centiseconds (VRRPv3 1..=4095; VRRPv2
    /// whole seconds, a multiple of 100).
    pub interval_cs: u16,
}

impl VrrpRules {
    /// Our Advertisement_Interval.
    pub fn interval(&self) -> Duration {
        Duration::from_millis(u64::from(self.interval_cs) * 10)
    }

    /// The configured priority less the demotion in effect, never below 1
    /// (0 is reserved for leaving).
    pub fn advertised_priority(&self, demote: u8) -> u8 {
        if demote == 0 {
            self.priority
        } else {
            self.priority.saturating_sub(demote).max(1)
        }
    }

    /// Skew_Time of a BACKUP with `priority`: VRRPv3 `((256 - priority) *
    /// active) / 256` (truncated to the nanosecond), VRRPv2 `(256 -
    /// priority) / 256` s.
    pub fn skew_time(&self, priority: u8, active: Duration) -> Duration {
        let share = 256 - u64::from(priority);
        match self.version {
            Version::V3 => {
                let nanos = active.as_nanos() * u128::from(share) / 256;
                Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
            }
            Version::V2 => Duration::from_nanos(share * V2_SKEW_UNIT_NANOS),
        }
    }

    /// Master_Down_Interval: `3 * active + Skew_Time`. `active` is the
    /// master's advertised interval (VRRPv3) or our own (VRRPv2, where all
    /// routers must agree on it).
    pub fn master_down(&self, priority: u8, active: Duration) -> Duration {
        active * 3 + self.skew_time(priority, active)
    }

    /// The advertisement we send with `priority`.
    pub(crate) fn advert(&self, priority: u8) -> SendVrrp {
        SendVrrp {
            version: self.version,
            priority,
            interval_cs: self.interval_cs,
        }
    }

    /// The interval a BACKUP adopts from `advert`: VRRPv3 only.
    fn learned(&self, advert: &Advert) -> Option<Duration> {
        match self.version {
            Version::V3 => Some(advert.interval()),
            Version::V2 => None,
        }
    }

    /// RFC 9568 6.4.2: priority 0 shortens the wait to Skew_Time; without
    /// preemption (or held by a step-down), or from a master at least as
    /// good, the timer restarts with the master's interval; otherwise the
    /// advertisement is discarded and we take over when the timer fires.
    pub(super) fn in_backup(&self, ours: &Ours, advert: &Advert) -> InBackup {
        if advert.priority == 0 {
            return InBackup::MasterLeaving;
        }
        let preempting = ours.preempt && !ours.held;
        if !preempting || advert.priority >= self.advertised_priority(ours.demote) {
            InBackup::Restart {
                active_interval: self.learned(advert),
            }
        } else {
            InBackup::Outrank
        }
    }

    /// RFC 9568 6.4.3: priority 0 is answered at once; a higher priority,
    /// or an equal one from a higher primary address (unsigned, network
    /// byte order), wins; a lower one is answered.
    pub(super) fn in_master(&self, ours: &Ours, src: IpAddr, advert: &Advert) -> InMaster {
        if advert.priority == 0 {
            return InMaster::AdvertiseNow;
        }
        let mine = self.advertised_priority(ours.demote);
        let reason = if advert.priority > mine {
            Reason::PeerPreferred
        } else if advert.priority == mine && src > ours.addr {
            Reason::PeerWinsTie
        } else {
            return InMaster::Answer;
        };
        InMaster::Yield {
            reason,
            last_word: false,
            active_interval: self.learned(advert),
        }
    }
}
