//! Opt-in replay protection for peers whose counters increase (carpd, UCARP,
//! FreeBSD). CARP itself has none: OpenBSD sends one constant counter, so
//! this must stay off for VHIDs with OpenBSD peers.
//!
//! The 64-bit counter is read as a sequence number modulo 2^64: `new` is
//! ahead of `old` when `new - old` (wrapping) is in `1..2^63`, so a counter
//! that wraps past `u64::MAX` keeps being accepted.
//!
//! Rules, per VHID:
//!
//! * a known peer (by source address) must send a counter ahead of the last
//!   one accepted from it;
//! * a source never accepted before must send a counter ahead of the highest
//!   counter accepted from any peer. The source address is not covered by
//!   the HMAC, so without this rule an old advertisement replayed under a
//!   fresh source address would pass. Honest peers pass it because they
//!   adopt the counter they hear before they advertise (a peer that could
//!   not hear us is accepted one interval later, once it has adopted ours).
//!
//! The number of remembered peers is bounded: only authenticated, fresh
//! advertisements add one, and the least recently heard is forgotten first.

use std::net::IpAddr;

use crate::packet::DropReason;

/// Peers remembered per VHID; a VHID has a handful in practice.
const MAX_PEERS: usize = 16;

/// Whether `new` comes after `old` in wrapping counter order.
pub fn is_ahead(new: u64, old: u64) -> bool {
    let d = new.wrapping_sub(old);
    d != 0 && d < 1 << 63
}

/// The accepted-counter record of one VHID.
#[derive(Debug, Clone, Default)]
pub struct ReplayWindow {
    /// (peer, last accepted counter), most recently accepted last.
    peers: Vec<(IpAddr, u64)>,
    /// The highest counter accepted from any peer.
    highest: Option<u64>,
}

impl ReplayWindow {
    pub fn new() -> ReplayWindow {
        ReplayWindow::default()
    }

    /// Accept (and remember) `counter` from `src`, or refuse it as
    /// [`DropReason::Replay`]. Call only for advertisements whose HMAC has
    /// been verified, so that forgeries cannot move the window.
    pub fn check(&mut self, src: IpAddr, counter: u64) -> Result<(), DropReason> {
        let known = self.peers.iter().position(|(a, _)| *a == src);
        let fresh = match known {
            Some(i) => is_ahead(counter, self.peers[i].1),
            None => self.highest.is_none_or(|h| is_ahead(counter, h)),
        };
        if !fresh {
            return Err(DropReason::Replay);
        }
        if let Some(i) = known {
            self.peers.remove(i);
        } else if self.peers.len() == MAX_PEERS {
            self.peers.remove(0);
        }
        self.peers.push((src, counter));
        if self.highest.is_none_or(|h| is_ahead(counter, h)) {
            self.highest = Some(counter);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    const A: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));
    const B: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2));

    #[test]
    fn ahead_wraps() {
        assert!(is_ahead(1, 0));
        assert!(is_ahead(0, u64::MAX));
        assert!(is_ahead(5, u64::MAX - 5));
        assert!(!is_ahead(7, 7));
        assert!(!is_ahead(6, 7));
        assert!(!is_ahead(u64::MAX, 0));
        assert!(is_ahead((1 << 63) - 1, 0));
        assert!(!is_ahead(1 << 63, 0));
    }

    #[test]
    fn increasing_counters_pass_repeats_do_not() {
        let mut w = ReplayWindow::new();
        assert_eq!(w.check(A, 100), Ok(()));
        assert_eq!(w.check(A, 101), Ok(()));
        assert_eq!(w.check(A, 101), Err(DropReason::Replay));
        assert_eq!(w.check(A, 50), Err(DropReason::Replay));
        assert_eq!(w.check(A, 200), Ok(()));
    }

    #[test]
    fn counter_wraps_around() {
        let mut w = ReplayWindow::new();
        assert_eq!(w.check(A, u64::MAX - 1), Ok(()));
        assert_eq!(w.check(A, u64::MAX), Ok(()));
        assert_eq!(w.check(A, 0), Ok(()));
        assert_eq!(w.check(A, 1), Ok(()));
        assert_eq!(w.check(A, u64::MAX), Err(DropReason::Replay));
    }

    #[test]
    fn constant_counter_is_a_replay() {
        // what OpenBSD sends: the reason the protection is opt-in
        let mut w = ReplayWindow::new();
        assert_eq!(w.check(A, 9), Ok(()));
        assert_eq!(w.check(A, 9), Err(DropReason::Replay));
    }

    #[test]
    fn new_source_must_be_ahead_of_everything_seen() {
        let mut w = ReplayWindow::new();
        assert_eq!(w.check(A, 1000), Ok(()));
        // A's old advertisement under another source address
        assert_eq!(w.check(B, 999), Err(DropReason::Replay));
        assert_eq!(w.check(B, 1000), Err(DropReason::Replay));
        // B adopted A's counter: accepted, and tracked on its own from now
        assert_eq!(w.check(B, 1001), Ok(()));
        // both known: each only has to move past its own last counter
        assert_eq!(w.check(A, 1001), Ok(()));
        assert_eq!(w.check(B, 1002), Ok(()));
        assert_eq!(w.check(A, 1001), Err(DropReason::Replay));
    }

    #[test]
    fn peers_are_bounded() {
        let mut w = ReplayWindow::new();
        for i in 0..100u8 {
            let src = IpAddr::V4(Ipv4Addr::new(10, 0, 1, i));
            assert_eq!(w.check(src, u64::from(i) + 1), Ok(()));
        }
        assert_eq!(w.peers.len(), MAX_PEERS);
        // the forgotten first peer is now held to the highest counter
        let first = IpAddr::V4(Ipv4Addr::new(10, 0, 1, 0));
        assert_eq!(w.check(first, 2), Err(DropReason::Replay));
        assert_eq!(w.check(first, 101), Ok(()));
    }
}
