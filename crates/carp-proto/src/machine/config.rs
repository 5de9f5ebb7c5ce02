//! The static parameters of one VHID's machine.

use std::net::IpAddr;
use std::time::Duration;

use super::rules::{CarpRules, Rules};
use super::schedule::AdvertGrid;

/// Static parameters of one VHID.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MachineConfig {
    /// The VHID (CARP) or VRID (VRRP).
    pub vhid: u8,
    /// The protocol and its parameters.
    pub rules: Rules,
    pub preempt: bool,
    /// After the link comes up (at startup too), how long preemption stays
    /// off (CARP: rules 2 and 3; VRRP: a lower master is not outranked);
    /// zero: not at all.
    pub preempt_delay: Duration,
    /// Our source address on this VHID's link, for the equal-priority
    /// tie-break (see [`Reason::PeerWinsTie`](super::Reason::PeerWinsTie)).
    pub local_addr: IpAddr,
    /// First CARP counter value (random, chosen by the caller).
    pub initial_counter: u64,
    /// Where a MASTER's periodic advertisements fall; `None`: one interval
    /// after the takeover, then every interval.
    pub advert_grid: Option<AdvertGrid>,
}

impl MachineConfig {
    /// CARP's parameters, if this VHID speaks CARP.
    pub fn carp(&self) -> Option<&CarpRules> {
        match &self.rules {
            Rules::Carp(c) => Some(c),
            Rules::Vrrp(_) => None,
        }
    }
}
