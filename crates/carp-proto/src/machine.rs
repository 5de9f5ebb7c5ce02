//! The state machine of one VHID, sans I/O.
//!
//! CONTRACT (filled in by the state-machine work): keep these names and
//! signatures; add private fields and helpers freely.
//!
//! The machine never reads a clock: every input carries `now`, and it answers
//! with [`Action`]s (drained with [`Machine::poll_action`]) and its next
//! deadline ([`Machine::poll_timeout`]). The caller calls
//! [`Machine::handle_timeout`] once that deadline has passed.

use std::net::IpAddr;
use std::time::Instant;

use crate::packet::Advert;
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

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MachineConfig {
    pub vhid: u8,
    /// Configured advbase/advskew (before any demotion).
    pub timing: Timing,
    /// Master-down multiplier, >= 1 (3 by default).
    pub dead_ratio: u8,
    pub preempt: bool,
    pub demote_style: DemoteStyle,
    /// Our source address on this VHID's link, for the equal-interval
    /// tie-break (see [`Reason::PeerWinsTie`]).
    pub local_addr: IpAddr,
    /// First counter value (random, chosen by the caller).
    pub initial_counter: u64,
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
    /// address is lower (UCARP's rule, see the crate docs).
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
    StateChanged { from: State, to: State, reason: Reason },
}

#[derive(Debug)]
pub struct Machine {
    // filled in by the implementation
}

impl Machine {
    /// A machine in INIT. Nothing happens until [`Machine::handle_link`]
    /// reports the link up.
    pub fn new(_config: MachineConfig) -> Self {
        todo!()
    }

    pub fn config(&self) -> &MachineConfig {
        todo!()
    }

    pub fn state(&self) -> State {
        todo!()
    }

    /// Local demotion in effect (operator + trackers + send errors).
    pub fn demote(&self) -> u8 {
        todo!()
    }

    /// The timing we advertise now (configured, plus demotion in
    /// [`DemoteStyle::Skew`]).
    pub fn effective_timing(&self) -> Timing {
        todo!()
    }

    /// Source address of the last valid advertisement from another master.
    pub fn master_addr(&self) -> Option<IpAddr> {
        todo!()
    }

    /// Link up: INIT -> BACKUP (arms the master-down timer). Link down: any
    /// -> INIT (removes addresses if MASTER).
    pub fn handle_link(&mut self, _now: Instant, _up: bool) {
        todo!()
    }

    /// A valid (checksum and HMAC verified) advertisement from `src`.
    pub fn handle_advert(&mut self, _now: Instant, _src: IpAddr, _advert: &Advert) {
        todo!()
    }

    /// Call when `now >= poll_timeout()`.
    pub fn handle_timeout(&mut self, _now: Instant) {
        todo!()
    }

    /// Outcome of the last [`Action::Send`]: 3 failures in a row demote by
    /// one, 3 successes after that undo it.
    pub fn handle_send_result(&mut self, _now: Instant, _ok: bool) {
        todo!()
    }

    /// Set the externally managed demotion (operator, trackers, groups).
    /// While MASTER a change is advertised at once.
    pub fn set_demote(&mut self, _now: Instant, _demote: u8) {
        todo!()
    }

    /// MASTER -> BACKUP once; no preemption for one master-down time.
    pub fn step_down(&mut self, _now: Instant) {
        todo!()
    }

    /// Leave: a MASTER sends a bow-out and removes its addresses; ends in
    /// INIT with no deadline.
    pub fn shutdown(&mut self, _now: Instant) {
        todo!()
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        todo!()
    }

    pub fn poll_action(&mut self) -> Option<Action> {
        todo!()
    }
}
