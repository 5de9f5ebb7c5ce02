//! What a driver may do in the machine's place.
//!
//! In the steady states one input follows another with nothing new in it: a
//! BACKUP hears the same advertisement every interval, a MASTER sends the
//! same one every interval. The methods here tell a driver when that is
//! the case, so that it can handle those inputs without waking the VHID's
//! task for each, and report back what happened before anything else; the
//! machine's behaviour is the same as if it had handled each itself.

use std::time::Instant;

use super::Machine;
use super::rules::{PeerAdvert, Rules};
use super::schedule::SteadySchedule;
use super::send::SendCarp;
use super::state::Phase;
use crate::packet::Advert;
use crate::timing::Timing;

/// A MASTER's steady advertisements (see [`Machine::steady_adverts`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SteadyAdverts {
    /// When the next one is due; the ones after follow every
    /// `timing.interval()`.
    pub next: Instant,
    pub timing: Timing,
    pub demote: u8,
    /// The last counter sent; the next advertisement carries + 1.
    pub counter: u64,
}

impl SteadyAdverts {
    /// When they are due, from the next one on.
    pub fn schedule(&self) -> SteadySchedule {
        SteadySchedule::new(self.next, self.timing.interval())
    }

    /// The advertisement that follows `sent` of them.
    pub fn advert(&self, sent: u64) -> SendCarp {
        SendCarp {
            timing: self.timing,
            demote: self.demote,
            counter: self.counter.wrapping_add(sent).wrapping_add(1),
        }
    }
}

impl Machine {
    /// BACKUP: whether `advert` would do nothing but restart the
    /// master-down timer (and have its counter adopted), at any time, for as
    /// long as no other input arrives. A driver may then only take note of
    /// such advertisements as they come and hand the machine the latest one
    /// (with its arrival time) before any other input or at the
    /// master-down deadline: for the machine, a run of them is the same as
    /// its last.
    /// CARP only: a VRRP machine answers false.
    pub fn is_keepalive(&self, advert: &Advert) -> bool {
        if !matches!(self.phase, Phase::Backup(_)) {
            return false;
        }
        let heard = PeerAdvert::Carp(advert);
        self.config.rules.speaks(heard, self.config.vhid) && self.restarts_timer(heard)
    }

    /// MASTER with nothing pending and nothing left to do but advertise:
    /// from now on, until another input arrives, every periodic
    /// advertisement is alike (timing, demotion) and one interval after the
    /// previous one. A driver may send them itself (counters `counter + 1`,
    /// `counter + 2`, ...) and report with [`Machine::steady_adverts_sent`]
    /// before anything else. A failed send is not part of that: hand the
    /// machine back its schedule and let [`Machine::handle_timeout`] send.
    /// CARP only: a VRRP machine sends its own.
    pub fn steady_adverts(&self) -> Option<SteadyAdverts> {
        let Phase::Master(master) = &self.phase else {
            return None;
        };
        let Rules::Carp(carp) = &self.config.rules else {
            return None;
        };
        let steady = master.adverts_since_takeover.is_none()
            && self.send_health.is_clean()
            && self.actions.is_empty();
        steady.then(|| SteadyAdverts {
            next: master.adverts.next(),
            timing: carp.effective_timing(self.demote()),
            demote: carp.advertised_demote(self.demote()),
            counter: self.counter,
        })
    }

    /// The driver sent `sent` advertisements of [`Machine::steady_adverts`],
    /// all successfully, and the next one is due at `next` (an instant of
    /// that schedule).
    pub fn steady_adverts_sent(&mut self, sent: u64, next: Instant) {
        let Phase::Master(master) = &mut self.phase else {
            return;
        };
        self.counter = self.counter.wrapping_add(sent);
        master.adverts = SteadySchedule::new(next, master.adverts.interval());
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn steady_adverts_continue_the_counter_on_their_schedule() {
        let next = Instant::now();
        let steady = SteadyAdverts {
            next,
            timing: Timing::new(1, 128),
            demote: 2,
            counter: u64::MAX - 1,
        };
        assert_eq!(
            steady.schedule(),
            SteadySchedule::new(next, Duration::from_millis(1500))
        );
        let send = |counter| SendCarp {
            timing: Timing::new(1, 128),
            demote: 2,
            counter,
        };
        assert_eq!(steady.advert(0), send(u64::MAX));
        assert_eq!(steady.advert(1), send(0));
    }
}
