//! What a VHID's status reports about its past transitions.

use std::collections::BTreeMap;

use carp_proto::{Reason, State};
use tokio::time::Instant;

/// The transitions of one VHID since its task started.
#[derive(Debug)]
pub(crate) struct History {
    /// When the current state was entered (the task's start, before any).
    pub(crate) state_since: Instant,
    /// The last one, e.g. "BACKUP -> MASTER (master_down)".
    pub(crate) last_transition: Option<String>,
    pub(crate) last_reason: Option<&'static str>,
    pub(crate) transitions: u64,
    pub(crate) by_reason: BTreeMap<&'static str, u64>,
}

impl History {
    pub(crate) fn new(started: Instant) -> History {
        History {
            state_since: started,
            last_transition: None,
            last_reason: None,
            transitions: 0,
            by_reason: BTreeMap::new(),
        }
    }

    /// Record a transition made at `at`; its line, as logged.
    pub(crate) fn record(&mut self, from: State, to: State, reason: Reason, at: Instant) -> &str {
        self.state_since = at;
        self.last_reason = Some(reason.as_str());
        self.transitions += 1;
        *self.by_reason.entry(reason.as_str()).or_default() += 1;
        self.last_transition.insert(format!(
            "{} -> {} ({})",
            from.as_str(),
            to.as_str(),
            reason.as_str()
        ))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn counts_by_reason_and_keeps_the_last() {
        let t0 = Instant::now();
        let mut h = History::new(t0);
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!(
            h.record(State::Init, State::Backup, Reason::Startup, t1),
            "INIT -> BACKUP (startup)"
        );
        let t2 = t1 + Duration::from_secs(3);
        h.record(State::Backup, State::Master, Reason::MasterDown, t2);
        h.record(State::Master, State::Backup, Reason::PeerPreferred, t2);
        h.record(State::Backup, State::Master, Reason::MasterDown, t2);
        assert_eq!(h.transitions, 4);
        assert_eq!(h.state_since, t2);
        assert_eq!(h.last_reason, Some("master_down"));
        assert_eq!(
            h.last_transition.as_deref(),
            Some("BACKUP -> MASTER (master_down)")
        );
        assert_eq!(h.by_reason.get("master_down"), Some(&2));
        assert_eq!(h.by_reason.len(), 3);
    }
}
