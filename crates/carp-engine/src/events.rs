//! The event bus: what happens to the VHIDs (transitions, demotion changes,
//! hooks, reloads, address conflicts and restores), published by any part
//! of the engine as it happens, for any number of subscribers.
//!
//! Publishing never waits: the bus is a bounded broadcast channel, and a
//! subscriber that falls more than [`CAPACITY`] events behind loses the
//! oldest and learns it on its next receive (`RecvError::Lagged`), so a
//! slow reader costs the publishers nothing.

use std::net::IpAddr;
use std::time::SystemTime;

use carp_proto::{Reason, State};
use tokio::sync::broadcast;

use crate::hooks::{HookKind, HookOutcome};
use crate::spec::VhidKey;

/// Events kept for subscribers that have not read them yet.
pub const CAPACITY: usize = 1024;

/// What happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventKind {
    Transition {
        from: State,
        to: State,
        reason: Reason,
    },
    /// The demotion in effect changed.
    Demotion {
        from: u8,
        to: u8,
    },
    HookStarted {
        hook: HookKind,
    },
    HookFinished {
        hook: HookKind,
        outcome: HookOutcome,
    },
    /// A reload was applied (VHIDs by `interface/vhid`).
    Reload {
        added: Vec<String>,
        removed: Vec<String>,
        changed: Vec<String>,
    },
    /// Another host claims one of our addresses.
    AddressConflict {
        address: IpAddr,
        detail: String,
    },
    /// An address removed under a MASTER was added back.
    AddressRestored {
        count: u64,
    },
}

impl EventKind {
    /// The event's name on the wire, e.g. `transition`.
    pub fn name(&self) -> &'static str {
        match self {
            EventKind::Transition { .. } => "transition",
            EventKind::Demotion { .. } => "demotion",
            EventKind::HookStarted { .. } => "hook_started",
            EventKind::HookFinished { .. } => "hook_finished",
            EventKind::Reload { .. } => "reload",
            EventKind::AddressConflict { .. } => "address_conflict",
            EventKind::AddressRestored { .. } => "address_restored",
        }
    }
}

/// One event: when, which VHID (none for engine-wide ones such as a
/// reload), what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub at: SystemTime,
    pub key: Option<VhidKey>,
    pub kind: EventKind,
}

/// The publishing side; cheap to clone, one per engine.
#[derive(Debug, Clone)]
pub struct EventBus {
    tx: broadcast::Sender<Event>,
}

impl Default for EventBus {
    fn default() -> Self {
        EventBus {
            tx: broadcast::channel(CAPACITY).0,
        }
    }
}

impl EventBus {
    /// Publish at once; without subscribers the event is dropped.
    pub fn publish(&self, key: Option<VhidKey>, kind: EventKind) {
        let _ = self.tx.send(Event {
            at: SystemTime::now(),
            key,
            kind,
        });
    }

    /// Every event published from now on (until the receiver lags).
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.tx.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_lagging_subscriber_loses_the_oldest_and_is_told() {
        let bus = EventBus::default();
        bus.publish(None, EventKind::Demotion { from: 0, to: 1 });
        let mut rx = bus.subscribe();
        for i in 0..=CAPACITY {
            let to = u8::try_from(i % 256).unwrap_or(0);
            bus.publish(None, EventKind::Demotion { from: 0, to });
        }
        assert!(matches!(
            rx.recv().await,
            Err(broadcast::error::RecvError::Lagged(1))
        ));
        assert!(rx.recv().await.is_ok());
    }
}
