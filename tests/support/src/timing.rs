//! CARP timers at advbase 1, as the tests expect them.

use std::time::Duration;

/// The master-down time for `advskew` at advbase 1.
pub fn master_down(dead_ratio: u8, advskew: u8) -> Duration {
    Duration::from_secs(u64::from(dead_ratio)) + skew(advskew)
}

/// The advertisement interval for `advskew` at advbase 1.
pub fn adv_interval(advskew: u8) -> Duration {
    Duration::from_secs(1) + skew(advskew)
}

fn skew(advskew: u8) -> Duration {
    Duration::from_micros(u64::from(advskew) * 1_000_000 / 256)
}
