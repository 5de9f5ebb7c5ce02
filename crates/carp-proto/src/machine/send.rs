//! The advertisements the machine asks for, how they are signed, and what
//! the outcome of sending them does to the demotion.

use crate::auth::Authenticator;
use crate::packet::{Advert, HEADER_LEN};
use crate::timing::Timing;
use crate::vrrp;

/// Send failures in a row that add one to the demotion.
const SEND_FAILURES_TO_DEMOTE: u8 = 3;
/// Successful sends in a row that take that demotion away again.
const SEND_SUCCESSES_TO_RESTORE: u8 = 3;

/// One advertisement to send, in the VHID's protocol. The caller builds the
/// wire format from it ([`SendCarp::sign`], [`SendVrrp::advert`]), puts it
/// on the wire, then reports the outcome with
/// [`Machine::handle_send_result`](super::Machine::handle_send_result).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendAdvert {
    Carp(SendCarp),
    Vrrp(SendVrrp),
}

/// A CARP advertisement to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SendCarp {
    /// Advertised timing (demotion already folded in for
    /// [`DemoteStyle::Skew`](super::DemoteStyle::Skew);
    /// [`Timing::BOW_OUT`] when bowing out).
    pub timing: Timing,
    pub demote: u8,
    pub counter: u64,
}

/// A VRRP advertisement to send: what the machine decides. The addresses
/// and (VRRPv2) the authentication come from the configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SendVrrp {
    pub version: vrrp::Version,
    /// The priority in effect (demotion applied), or 0 when leaving.
    pub priority: u8,
    /// Advertisement_Interval, centiseconds.
    pub interval_cs: u16,
}

impl SendVrrp {
    /// The advertisement of virtual router `vrid`, ready for
    /// [`vrrp::Advert::emit`].
    pub fn advert(&self, vrid: u8, auth: vrrp::Auth, addresses: vrrp::Addresses) -> vrrp::Advert {
        let auth = match self.version {
            vrrp::Version::V2 => auth,
            vrrp::Version::V3 => vrrp::Auth::None,
        };
        vrrp::Advert {
            version: self.version,
            vrid,
            priority: self.priority,
            interval_cs: self.interval_cs,
            auth,
            addresses,
        }
    }
}

impl SendCarp {
    /// This advertisement of VHID `vhid`, its HMAC made with `auth`, as it
    /// goes on the wire. `mark_own` is called with its counter before the
    /// bytes are returned: the caller records the counter as its own there,
    /// so that a copy looped back to us is recognised however soon it
    /// arrives.
    pub fn sign(
        &self,
        vhid: u8,
        auth: &Authenticator,
        mark_own: impl FnOnce(u64),
    ) -> [u8; HEADER_LEN] {
        let advert = Advert {
            vhid,
            advskew: self.timing.advskew,
            advbase: self.timing.advbase,
            demote: self.demote,
            counter: self.counter,
            hmac: auth.sign(self.counter),
        };
        mark_own(self.counter);
        advert.to_bytes()
    }
}

/// The outcomes of the last sends: 3 failures in a row demote by one, 3
/// successes after that undo it. Kept in every state: only a MASTER sends,
/// so a BACKUP keeps the demotion until it is MASTER again.
#[derive(Debug, Default)]
pub(super) struct SendHealth {
    /// The extra demotion is in effect.
    demoted: bool,
    failures: u8,
    successes: u8,
}

impl SendHealth {
    /// The demotion that failing sends add (0 or 1).
    pub(super) fn demotion(&self) -> u8 {
        u8::from(self.demoted)
    }

    /// No failure since the last success, and no demotion from earlier
    /// ones.
    pub(super) fn is_clean(&self) -> bool {
        !self.demoted && self.failures == 0
    }

    pub(super) fn record(&mut self, ok: bool) {
        if ok {
            self.failures = 0;
            if self.demoted {
                self.successes = self.successes.saturating_add(1);
                if self.successes >= SEND_SUCCESSES_TO_RESTORE {
                    self.demoted = false;
                    self.successes = 0;
                }
            }
        } else {
            self.successes = 0;
            self.failures = self.failures.saturating_add(1);
            if self.failures >= SEND_FAILURES_TO_DEMOTE {
                self.demoted = true;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};

    use super::*;
    use crate::auth::HmacMode;

    #[test]
    fn signed_advert_carries_the_fields_and_is_marked_as_own() {
        let vip = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 100));
        let auth = Authenticator::new(HmacMode::Bsd, b"key", 9, &[vip]).expect("key");
        let send = SendCarp {
            timing: Timing::new(2, 30),
            demote: 4,
            counter: 77,
        };
        let mut marked = Vec::new();
        let bytes = send.sign(9, &auth, |c| marked.push(c));
        assert_eq!(marked, [77]);
        let advert = Advert::parse(&bytes).expect("a valid advertisement");
        assert_eq!(
            (advert.vhid, advert.timing(), advert.demote, advert.counter),
            (9, Timing::new(2, 30), 4, 77)
        );
        assert!(auth.verify(77, &advert.hmac));
    }

    #[test]
    fn vrrp_advert_takes_auth_only_in_version_2() {
        let addrs = vrrp::Addresses::V4(vec![Ipv4Addr::new(10, 0, 0, 100)]);
        let pass = vrrp::Auth::simple(b"pw");
        let v3 = SendVrrp {
            version: vrrp::Version::V3,
            priority: 0,
            interval_cs: 10,
        };
        let a = v3.advert(5, pass, addrs.clone());
        assert_eq!(
            (a.vrid, a.priority, a.interval_cs, a.auth),
            (5, 0, 10, vrrp::Auth::None)
        );
        let v2 = SendVrrp {
            version: vrrp::Version::V2,
            interval_cs: 100,
            ..v3
        };
        assert_eq!(v2.advert(5, pass, addrs).auth, pass);
    }

    #[test]
    fn three_failures_demote_and_three_successes_restore() {
        let mut h = SendHealth::default();
        h.record(false);
        h.record(false);
        assert!(!h.is_clean());
        assert_eq!(h.demotion(), 0);
        h.record(false);
        assert_eq!(h.demotion(), 1);
        h.record(true);
        h.record(true);
        assert_eq!(h.demotion(), 1);
        h.record(true);
        assert_eq!(h.demotion(), 0);
        assert!(h.is_clean());
    }
}
