//! Counters shared between the receive path and the VHID tasks, and the
//! timer lateness record the benchmarks read.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use carp_proto::DropReason;

/// One counter per [`DropReason`].
#[derive(Debug, Default)]
pub(crate) struct DropCounters {
    counts: [AtomicU64; DropReason::ALL.len()],
}

impl DropCounters {
    pub(crate) fn add(&self, reason: DropReason) {
        if let Some(i) = DropReason::ALL.iter().position(|r| *r == reason) {
            self.counts[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    #[cfg(test)]
    pub(crate) fn get(&self, reason: DropReason) -> u64 {
        DropReason::ALL
            .iter()
            .position(|r| *r == reason)
            .map_or(0, |i| self.counts[i].load(Ordering::Relaxed))
    }

    /// Non-zero counters by reason name.
    pub(crate) fn snapshot(&self) -> BTreeMap<&'static str, u64> {
        DropReason::ALL
            .iter()
            .zip(&self.counts)
            .filter_map(|(r, c)| {
                let n = c.load(Ordering::Relaxed);
                (n > 0).then_some((r.as_str(), n))
            })
            .collect()
    }
}

/// Per-VHID counters, written by the receiver and the VHID task.
#[derive(Debug, Default)]
pub(crate) struct VhidStats {
    pub(crate) drops: DropCounters,
    /// Valid advertisements handed to the task.
    pub(crate) received: AtomicU64,
    pub(crate) sent: AtomicU64,
    /// Hook commands started, and those that failed, timed out or could not
    /// be run.
    pub(crate) hook_runs: AtomicU64,
    pub(crate) hook_failures: AtomicU64,
    /// Addresses removed by something else while MASTER and added back.
    pub(crate) address_restored: AtomicU64,
    /// Addresses added by something else while not MASTER and removed.
    pub(crate) address_removed_foreign: AtomicU64,
    /// Claims of our addresses by foreign MACs seen while MASTER.
    pub(crate) address_conflicts: AtomicU64,
    /// Counter of the last advertisement we sent, for loop detection.
    last_counter: AtomicU64,
    sent_any: AtomicBool,
}

impl VhidStats {
    pub(crate) fn set_last_counter(&self, counter: u64) {
        self.last_counter.store(counter, Ordering::Relaxed);
        self.sent_any.store(true, Ordering::Release);
    }

    pub(crate) fn is_own_counter(&self, counter: u64) -> bool {
        self.sent_any.load(Ordering::Acquire)
            && self.last_counter.load(Ordering::Relaxed) == counter
    }
}

/// How late advertisement timers fire (send time minus deadline), engine
/// wide. Keeps the most recent samples only, so memory stays bounded.
#[derive(Debug)]
pub(crate) struct Lateness {
    inner: Mutex<LatenessInner>,
}

#[derive(Debug, Default)]
struct LatenessInner {
    samples: VecDeque<u32>,
    count: u64,
    max_us: u64,
    sum_us: u64,
    /// Samples at or below each of [`LATENESS_BUCKETS_US`] (not cumulative).
    buckets: [u64; LATENESS_BUCKETS_US.len()],
}

const LATENESS_SAMPLES: usize = 16_384;

/// Upper bounds of the lateness histogram buckets, in microseconds: from
/// scheduler noise to a stall long enough to cost a failover (2 ms: the
/// p99 the daemon is held to under load, with bounds either side of it so
/// that a p99 near it can be told under or over).
pub const LATENESS_BUCKETS_US: [u64; 14] = [
    100, 250, 500, 1_000, 1_500, 2_000, 3_000, 5_000, 10_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000,
];

/// Summary of timer lateness, in microseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LatenessSummary {
    /// Samples taken since start (the percentiles cover the most recent
    /// 16384).
    pub count: u64,
    pub p50_us: u64,
    pub p99_us: u64,
    /// Largest lateness ever seen.
    pub max_us: u64,
    /// Sum of all samples since start.
    pub sum_us: u64,
    /// Samples since start at or below each bound of
    /// [`LATENESS_BUCKETS_US`], cumulative (as a Prometheus histogram).
    pub buckets: [u64; LATENESS_BUCKETS_US.len()],
}

impl Lateness {
    pub(crate) fn new() -> Lateness {
        Lateness {
            inner: Mutex::new(LatenessInner::default()),
        }
    }

    pub(crate) fn record(&self, late: Duration) {
        let us = u64::try_from(late.as_micros()).unwrap_or(u64::MAX);
        let Ok(mut g) = self.inner.lock() else { return };
        if g.samples.len() == LATENESS_SAMPLES {
            g.samples.pop_front();
        }
        g.samples.push_back(u32::try_from(us).unwrap_or(u32::MAX));
        g.count += 1;
        g.max_us = g.max_us.max(us);
        g.sum_us = g.sum_us.saturating_add(us);
        if let Some(i) = LATENESS_BUCKETS_US.iter().position(|b| us <= *b) {
            g.buckets[i] += 1;
        }
    }

    pub(crate) fn summary(&self) -> LatenessSummary {
        let Ok(g) = self.inner.lock() else {
            return LatenessSummary::default();
        };
        let (count, max_us, sum_us) = (g.count, g.max_us, g.sum_us);
        let mut buckets = g.buckets;
        let mut v: Vec<u32> = g.samples.iter().copied().collect();
        drop(g);
        let mut total = 0;
        for b in &mut buckets {
            total += *b;
            *b = total;
        }
        v.sort_unstable();
        // nearest-rank percentile
        let pct = |p: usize| -> u64 {
            let rank = (v.len() * p).div_ceil(100).saturating_sub(1);
            v.get(rank).map_or(0, |x| u64::from(*x))
        };
        LatenessSummary {
            count,
            p50_us: pct(50),
            p99_us: pct(99),
            max_us,
            sum_us,
            buckets,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drop_counters_by_name() {
        let c = DropCounters::default();
        c.add(DropReason::BadHmac);
        c.add(DropReason::BadHmac);
        c.add(DropReason::InboxFull);
        assert_eq!(c.get(DropReason::BadHmac), 2);
        let s = c.snapshot();
        assert_eq!(s.len(), 2);
        assert_eq!(s["bad_hmac"], 2);
        assert_eq!(s["inbox_full"], 1);
    }

    #[test]
    fn own_counter_only_after_a_send() {
        let s = VhidStats::default();
        assert!(!s.is_own_counter(0));
        s.set_last_counter(42);
        assert!(s.is_own_counter(42));
        assert!(!s.is_own_counter(43));
    }

    #[test]
    fn lateness_percentiles() {
        let l = Lateness::new();
        assert_eq!(l.summary(), LatenessSummary::default());
        for us in 1..=100u64 {
            l.record(Duration::from_micros(us));
        }
        let s = l.summary();
        assert_eq!(s.count, 100);
        assert_eq!(s.p50_us, 50);
        assert_eq!(s.p99_us, 99);
        assert_eq!(s.max_us, 100);
        assert_eq!(s.sum_us, 5050);
        // 100 us bucket holds them all; the histogram is cumulative
        assert_eq!(s.buckets, [100; LATENESS_BUCKETS_US.len()]);
        l.record(Duration::from_secs(5));
        let s = l.summary();
        assert_eq!(s.buckets[LATENESS_BUCKETS_US.len() - 1], 100);
        assert_eq!(s.count, 101);
    }
}
