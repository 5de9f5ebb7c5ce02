//! What happened during a run, as recorded: address changes per node (from
//! the kernel's notifications), the faults with the instants they were
//! injected and healed, each carpd's life (spawned, ready, exited cleanly,
//! killed) and the configuration each node was running.

use std::collections::BTreeSet;
use std::time::Instant;

use crate::fault::Fault;

/// One virtual address appearing on or leaving a node.
#[derive(Debug, Clone)]
pub struct AddrChange {
    pub at: Instant,
    pub node: usize,
    pub added: bool,
    pub addr: String,
}

/// A fault as it was carried out.
#[derive(Debug, Clone)]
pub struct FaultRecord {
    pub node: usize,
    pub fault: Fault,
    pub start: Instant,
    /// For kill and term: when the restarted carpd was ready.
    pub heal: Instant,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Life {
    Spawned,
    /// It logged that it is running.
    Ready,
    /// It exited by itself (after SIGTERM) with success.
    ExitedClean,
    /// SIGKILLed, or exited any other way.
    Killed,
}

#[derive(Debug, Clone)]
pub struct LifeEvent {
    pub at: Instant,
    pub node: usize,
    pub what: Life,
}

/// From `at` on, node `node`'s carpd runs a configuration with these
/// virtual addresses (written at a start, or before a SIGHUP).
#[derive(Debug, Clone)]
pub struct ConfigChange {
    pub at: Instant,
    pub node: usize,
    pub addrs: BTreeSet<String>,
}

/// Everything the checker looks at.
#[derive(Debug, Clone)]
pub struct Timeline {
    pub nodes: usize,
    /// Every node's addresses when the recording started.
    pub initial: Vec<BTreeSet<String>>,
    pub recorded_from: Instant,
    pub addrs: Vec<AddrChange>,
    pub faults: Vec<FaultRecord>,
    pub life: Vec<LifeEvent>,
    pub configs: Vec<ConfigChange>,
    /// Addresses the hooks own (`manage_addresses = false`).
    pub hooked: BTreeSet<String>,
    /// The checks start here (the nodes have converged).
    pub from: Instant,
    /// The checks of ownership (two holders, an address left unheld) end
    /// here, before the final shutdown.
    pub steady_until: Instant,
    /// The checks of holders without a running carpd end here.
    pub until: Instant,
}

impl Timeline {
    /// Every virtual address any node was ever configured for.
    pub fn vips(&self) -> BTreeSet<String> {
        self.configs
            .iter()
            .flat_map(|c| c.addrs.iter().cloned())
            .collect()
    }

    /// The addresses `node` holds at `t`.
    pub fn held_at(&self, node: usize, t: Instant) -> BTreeSet<String> {
        let mut held = self.initial.get(node).cloned().unwrap_or_default();
        for e in self.addrs.iter().filter(|e| e.node == node && e.at <= t) {
            if e.added {
                held.insert(e.addr.clone());
            } else {
                held.remove(&e.addr);
            }
        }
        held
    }

    /// The state of `node`'s carpd at `t` (the last life event at or before).
    pub fn life_at(&self, node: usize, t: Instant) -> Option<Life> {
        self.life
            .iter()
            .filter(|e| e.node == node && e.at <= t)
            .max_by_key(|e| e.at)
            .map(|e| e.what)
    }

    /// Whether `node` runs a carpd (started, not exited) configured for `addr`.
    pub fn configured_at(&self, node: usize, addr: &str, t: Instant) -> bool {
        let running = matches!(self.life_at(node, t), Some(Life::Spawned | Life::Ready));
        running
            && self
                .configs
                .iter()
                .filter(|c| c.node == node && c.at <= t)
                .max_by_key(|c| c.at)
                .is_some_and(|c| c.addrs.contains(addr))
    }

    /// Ready, and under no fault that keeps it from holding addresses.
    pub fn healthy_at(&self, node: usize, t: Instant) -> bool {
        self.life_at(node, t) == Some(Life::Ready)
            && !self
                .faults
                .iter()
                .any(|f| f.node == node && f.fault.disables_node() && f.start <= t && t < f.heal)
    }
}

/// The records of a run in progress.
#[derive(Debug, Default)]
pub struct Journal {
    pub faults: Vec<FaultRecord>,
    pub life: Vec<LifeEvent>,
    pub configs: Vec<ConfigChange>,
}

impl Journal {
    pub fn life(&mut self, node: usize, what: Life) -> Instant {
        let at = Instant::now();
        self.life.push(LifeEvent { at, node, what });
        at
    }

    pub fn config(&mut self, node: usize, addrs: BTreeSet<String>) {
        self.configs.push(ConfigChange {
            at: Instant::now(),
            node,
            addrs,
        });
    }
}
