//! The static parameters of one VHID's machine.

use std::net::IpAddr;
use std::time::Duration;

use super::schedule::AdvertGrid;
use crate::timing::Timing;

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
    /// After the link comes up (at startup too), how long preemption (rules
    /// 2 and 3) stays off; zero: not at all.
    pub preempt_delay: Duration,
    pub demote_style: DemoteStyle,
    /// Our source address on this VHID's link, for the equal-interval
    /// tie-break (see [`Reason::PeerWinsTie`](super::Reason::PeerWinsTie)).
    pub local_addr: IpAddr,
    /// First counter value (random, chosen by the caller).
    pub initial_counter: u64,
    /// Where a MASTER's periodic advertisements fall; `None`: one interval
    /// after the takeover, then every interval.
    pub advert_grid: Option<AdvertGrid>,
}
