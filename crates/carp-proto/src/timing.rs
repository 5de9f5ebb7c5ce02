//! Advertisement intervals and master-down times, exactly as the BSDs
//! compute them (advskew counts 1/256 s).

use std::time::Duration;

/// One 1/256 of a second, the unit of advskew (3906.25 µs).
const SKEW_UNIT_NANOS: u64 = 1_000_000_000 / 256;

/// Advertisement timing parameters of one sender.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Timing {
    /// Whole seconds, 0..=255 (0 means sub-second, OpenBSD style).
    pub advbase: u8,
    /// 1/256 s units added to advbase, 0..=255.
    pub advskew: u8,
}

impl Timing {
    /// The bow-out advertisement (advbase 255, advskew 255) sent when leaving.
    pub const BOW_OUT: Timing = Timing {
        advbase: 255,
        advskew: 255,
    };

    pub const fn new(advbase: u8, advskew: u8) -> Self {
        Timing { advbase, advskew }
    }

    /// `advbase + advskew/256` s; with both zero, 1/256 s (OpenBSD).
    pub fn interval(self) -> Duration {
        if self.advbase == 0 && self.advskew == 0 {
            return Duration::from_nanos(SKEW_UNIT_NANOS);
        }
        Duration::from_secs(u64::from(self.advbase))
            + Duration::from_nanos(u64::from(self.advskew) * SKEW_UNIT_NANOS)
    }

    /// Master-down time: `dead_ratio * advbase + advskew/256` s; with advbase
    /// 0, `dead_ratio * advskew/256` (at least `dead_ratio/256`).
    pub fn master_down(self, dead_ratio: u8) -> Duration {
        let dr = u32::from(dead_ratio.max(1));
        if self.advbase == 0 {
            return self.interval() * dr;
        }
        Duration::from_secs(u64::from(self.advbase)) * dr
            + Duration::from_nanos(u64::from(self.advskew) * SKEW_UNIT_NANOS)
    }

    pub fn is_bow_out(self) -> bool {
        self == Self::BOW_OUT
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals() {
        assert_eq!(Timing::new(1, 0).interval(), Duration::from_secs(1));
        assert_eq!(Timing::new(1, 128).interval(), Duration::from_millis(1500));
        assert_eq!(Timing::new(0, 8).interval(), Duration::from_micros(31_250));
        assert_eq!(
            Timing::new(0, 0).interval(),
            Duration::from_nanos(3_906_250)
        );
        assert_eq!(
            Timing::new(1, 10).master_down(3),
            Duration::from_secs(3) + Duration::from_nanos(39_062_500)
        );
        assert_eq!(
            Timing::new(0, 8).master_down(3),
            Duration::from_micros(93_750)
        );
    }
}
