//! CARP's rules: lower is better, and "priority" is the pair (demotion,
//! advertisement interval), compared in that order (see the machine's
//! module docs for the full list).

use std::net::IpAddr;
use std::time::Duration;

use super::{InBackup, InMaster, Ours};
use crate::machine::Reason;
use crate::packet::Advert;
use crate::timing::Timing;

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

/// CARP's parameters of one VHID.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CarpRules {
    /// Configured advbase/advskew (before any demotion).
    pub timing: Timing,
    /// Master-down multiplier, >= 1 (3 by default; 0 counts as 1).
    pub dead_ratio: u8,
    pub demote_style: DemoteStyle,
}

impl CarpRules {
    /// The timing advertised with `demote` in effect (configured, plus the
    /// demotion in [`DemoteStyle::Skew`]).
    pub fn effective_timing(&self, demote: u8) -> Timing {
        let t = self.timing;
        match self.demote_style {
            DemoteStyle::Skew if demote > 0 => {
                let skew = t.advskew.saturating_add(demote).min(SKEW_DEMOTE_CAP);
                Timing::new(t.advbase, t.advskew.max(skew))
            }
            _ => t,
        }
    }

    /// The demotion byte advertised (0 with [`DemoteStyle::Skew`], which
    /// folds it into advskew).
    pub fn advertised_demote(&self, demote: u8) -> u8 {
        match self.demote_style {
            DemoteStyle::Byte => demote,
            DemoteStyle::Skew => 0,
        }
    }

    pub fn master_down(&self, demote: u8) -> Duration {
        self.effective_timing(demote).master_down(self.dead_ratio)
    }

    /// (demotion, interval); lower is better.
    pub(in crate::machine) fn ours(&self, demote: u8) -> (u8, Duration) {
        (
            self.advertised_demote(demote),
            self.effective_timing(demote).interval(),
        )
    }

    pub(in crate::machine) fn theirs(&self, advert: &Advert) -> (u8, Duration) {
        let demote = match self.demote_style {
            DemoteStyle::Byte => advert.demote,
            DemoteStyle::Skew => 0,
        };
        (demote, advert.timing().interval())
    }

    /// BACKUP rules 1-5 of the module docs; `ours.held` suspends 2 and 3.
    pub(super) fn in_backup(&self, ours: &Ours, advert: &Advert) -> InBackup {
        let theirs = advert.timing();
        if theirs.is_bow_out() {
            return InBackup::TakeOver(Reason::PeerBowedOut);
        }
        let (our_demote, our_interval) = self.ours(ours.demote);
        let (their_demote, their_interval) = self.theirs(advert);
        if !ours.held {
            if their_demote > our_demote {
                return InBackup::TakeOver(Reason::PeerDemoted);
            }
            if ours.preempt && their_demote == our_demote && our_interval < their_interval {
                return InBackup::TakeOver(Reason::Preempt);
            }
        }
        let mine = self.effective_timing(ours.demote);
        let limit = if mine.advbase > 0 {
            Duration::from_secs(u64::from(self.dead_ratio.max(1)) * u64::from(mine.advbase))
        } else {
            self.master_down(ours.demote)
        };
        if theirs.interval() > limit {
            InBackup::TakeOver(Reason::PeerWillTimeOut)
        } else {
            InBackup::Restart {
                active_interval: None,
            }
        }
    }

    /// MASTER: yield to a better peer, or to an equal one that wins UCARP's
    /// tie-break; a bow-out never wins (the peer is leaving).
    pub(super) fn in_master(&self, ours: &Ours, src: IpAddr, advert: &Advert) -> InMaster {
        if advert.timing().is_bow_out() {
            return InMaster::Answer;
        }
        let mine = self.ours(ours.demote);
        let theirs = self.theirs(advert);
        let reason = if theirs < mine {
            Reason::PeerPreferred
        } else if theirs == mine && tie_rank(src) < tie_rank(ours.addr) {
            Reason::PeerWinsTie
        } else {
            return InMaster::Answer;
        };
        InMaster::Yield {
            reason,
            last_word: true,
            active_interval: None,
        }
    }
}

/// UCARP's order of source addresses for the equal-priority tie-break: the
/// raw network-order IPv4 address read as a little-endian `u32` (see the
/// machine's module docs); IPv6 byte by byte, after every IPv4 address.
pub(in crate::machine) fn tie_rank(addr: IpAddr) -> (u8, u128) {
    match addr {
        IpAddr::V4(a) => (0, u128::from(u32::from_le_bytes(a.octets()))),
        IpAddr::V6(a) => (1, u128::from_be_bytes(a.octets())),
    }
}
