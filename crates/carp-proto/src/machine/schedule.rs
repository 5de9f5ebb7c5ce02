//! When a MASTER's periodic advertisements are due.
//!
//! [`SteadySchedule`] holds the rules for the machine and for any driver
//! that sends the steady advertisements on its behalf, so both keep the
//! same deadlines.

use std::time::{Duration, Instant};

/// A grid shared by many VHIDs that puts the advertisements of those with
/// the same interval on the same instants: `epoch + (k + slot/slots) *
/// interval`. A host then wakes `slots` times per interval for all of them
/// rather than once per VHID or two, and its peers receive them in as many
/// bursts. The first periodic advertisement after a takeover (or a change
/// of interval) leaves on the last grid instant within one interval, so up
/// to one interval early; early is safe, a backup only acts on silence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdvertGrid {
    pub epoch: Instant,
    pub slot: u16,
    pub slots: u16,
}

impl AdvertGrid {
    /// The last instant of this grid not after `limit`, for `interval`;
    /// `None` if it cannot be represented.
    pub fn at_or_before(&self, limit: Instant, interval: Duration) -> Option<Instant> {
        let period = interval.as_nanos();
        if period == 0 {
            return None;
        }
        let slots = u128::from(self.slots.max(1));
        let offset = period * (u128::from(self.slot) % slots) / slots;
        let base = self
            .epoch
            .checked_add(Duration::from_nanos(u64::try_from(offset).ok()?))?;
        if limit >= base {
            let k = (limit - base).as_nanos() / period;
            base.checked_add(Duration::from_nanos(u64::try_from(k * period).ok()?))
        } else {
            let k = (base - limit).as_nanos().div_ceil(period);
            base.checked_sub(Duration::from_nanos(u64::try_from(k * period).ok()?))
        }
    }
}

/// The deadline of the next periodic advertisement, and the interval
/// between them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SteadySchedule {
    next: Instant,
    interval: Duration,
}

impl SteadySchedule {
    /// Next due at `next`, then every `interval`.
    pub fn new(next: Instant, interval: Duration) -> SteadySchedule {
        SteadySchedule { next, interval }
    }

    /// The schedule after an advertisement sent at `now` outside it (a
    /// takeover, a change of what we advertise): the next one interval
    /// later, or on the last instant of `grid` within that interval.
    pub fn after(now: Instant, interval: Duration, grid: Option<AdvertGrid>) -> SteadySchedule {
        let limit = now + interval;
        let next = grid
            .and_then(|g| g.at_or_before(limit, interval))
            .filter(|t| *t > now)
            .unwrap_or(limit);
        SteadySchedule { next, interval }
    }

    /// When the next advertisement is due.
    pub fn next(&self) -> Instant {
        self.next
    }

    pub fn interval(&self) -> Duration {
        self.interval
    }

    pub fn is_due(&self, now: Instant) -> bool {
        now >= self.next
    }

    /// More than one interval behind (a stalled host): the schedule
    /// restarts from now rather than send a catch-up burst.
    pub fn is_behind(&self, now: Instant) -> bool {
        self.next + self.interval <= now
    }

    /// The advertisement due went out at `now`: the next is due one
    /// interval after its deadline, not after `now`, so that a late
    /// wake-up does not push every later one back; if that is past too
    /// ([`SteadySchedule::is_behind`]), one interval after `now` (or on the
    /// last instant of `grid` within that).
    pub fn advance(&mut self, now: Instant, grid: Option<AdvertGrid>) {
        *self = if self.is_behind(now) {
            SteadySchedule::after(now, self.interval, grid)
        } else {
            SteadySchedule::new(self.next + self.interval, self.interval)
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn late_sends_keep_the_deadlines_and_a_stall_restarts_from_now() {
        let second = Duration::from_secs(1);
        let t = Instant::now();
        let mut s = SteadySchedule::new(t, second);
        assert!(!s.is_due(t - Duration::from_nanos(1)));
        assert!(s.is_due(t));
        // sent 300 ms late: the next is still one interval after the deadline
        s.advance(t + Duration::from_millis(300), None);
        assert_eq!(s.next(), t + second);
        // exactly one interval behind counts as behind: restart from now
        assert!(!s.is_behind(t + second * 2 - Duration::from_nanos(1)));
        assert!(s.is_behind(t + second * 2));
        let stalled = t + second * 5 + Duration::from_millis(500);
        s.advance(stalled, None);
        assert_eq!(s, SteadySchedule::new(stalled + second, second));
        // with a grid, the restart lands on its last instant within an
        // interval of now
        let grid = AdvertGrid {
            epoch: t,
            slot: 0,
            slots: 1,
        };
        let later = stalled + second * 3;
        s.advance(later, Some(grid));
        assert_eq!(s.next(), t + second * 9);
    }
}
