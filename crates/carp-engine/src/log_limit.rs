//! Rate limits for log lines that a peer or a broken link could otherwise
//! repeat at packet rate.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::Duration;

use tokio::time::Instant;

/// Past this many keys, expired ones are forgotten, so the map stays
/// bounded whatever keys a sender can make us see.
const MAX_KEYS: usize = 4096;

/// Lets a log line through at most once per `period` for each key.
#[derive(Debug)]
pub(crate) struct LogLimiter<K> {
    period: Duration,
    last: HashMap<K, Instant>,
}

impl<K: Eq + Hash + Clone> LogLimiter<K> {
    pub(crate) fn new(period: Duration) -> LogLimiter<K> {
        LogLimiter {
            period,
            last: HashMap::new(),
        }
    }

    /// Whether a line about `key` may be logged now; if so, the next one
    /// waits a `period`. `key` is cloned only then.
    pub(crate) fn allow(&mut self, key: &K) -> bool {
        self.allow_at(key, Instant::now())
    }

    fn allow_at(&mut self, key: &K, now: Instant) -> bool {
        if self
            .last
            .get(key)
            .is_some_and(|t| now.duration_since(*t) < self.period)
        {
            return false;
        }
        if self.last.len() > MAX_KEYS {
            let period = self.period;
            self.last.retain(|_, t| now.duration_since(*t) < period);
        }
        self.last.insert(key.clone(), now);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn once_per_period_and_key() {
        let mut limit = LogLimiter::new(Duration::from_secs(10));
        let t = Instant::now();
        assert!(limit.allow_at(&"a", t));
        assert!(!limit.allow_at(&"a", t));
        assert!(limit.allow_at(&"b", t));
        assert!(!limit.allow_at(&"a", t + Duration::from_secs(9)));
        assert!(limit.allow_at(&"a", t + Duration::from_secs(10)));
        assert!(!limit.allow_at(&"a", t + Duration::from_secs(11)));
    }

    #[test]
    fn stays_bounded() {
        let mut limit = LogLimiter::new(Duration::from_secs(10));
        let t = Instant::now();
        for k in 0..=MAX_KEYS {
            assert!(limit.allow_at(&k, t));
        }
        assert!(limit.allow_at(&usize::MAX, t + Duration::from_secs(10)));
        assert_eq!(limit.last.len(), 1);
    }
}
