//! The operator's demotion of each VHID (`carpd demote`), kept by the
//! engine so that it outlives the VHID's task: a task restarted by a
//! reload, or on an interface that came back, starts with what the
//! operator set, until the operator changes it or the VHID is removed.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};

use crate::spec::VhidKey;

#[derive(Debug, Default)]
pub(crate) struct OperatorDemotions {
    by_vhid: Mutex<HashMap<VhidKey, u8>>,
}

impl OperatorDemotions {
    fn lock(&self) -> MutexGuard<'_, HashMap<VhidKey, u8>> {
        self.by_vhid.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The operator's demotion of `key` (0 if never set).
    pub(crate) fn get(&self, key: &VhidKey) -> u8 {
        self.lock().get(key).copied().unwrap_or(0)
    }

    /// Add `delta` (may be negative) to `key`'s demotion, clamped to
    /// 0..=255; returns the new value.
    pub(crate) fn add(&self, key: &VhidKey, delta: i32) -> u8 {
        let mut map = self.lock();
        let now = i64::from(map.get(key).copied().unwrap_or(0));
        let value = u8::try_from((now + i64::from(delta)).clamp(0, 255)).unwrap_or(u8::MAX);
        if value == 0 {
            map.remove(key);
        } else {
            map.insert(key.clone(), value);
        }
        value
    }

    /// `key` left the configuration: forget it.
    pub(crate) fn forget(&self, key: &VhidKey) {
        self.lock().remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clamped_kept_and_forgotten() {
        let d = OperatorDemotions::default();
        let key = VhidKey {
            interface: "eth0".into(),
            vhid: 1,
        };
        assert_eq!(d.get(&key), 0);
        assert_eq!(d.add(&key, 300), 255);
        assert_eq!(d.add(&key, -55), 200);
        assert_eq!(d.get(&key), 200);
        d.forget(&key);
        assert_eq!(d.get(&key), 0);
        assert_eq!(d.add(&key, -5), 0);
    }
}
