//! The engine handle: start, reload, status, operator actions, shutdown.
//!
//! CONTRACT (filled in by the engine work): keep these names and
//! signatures.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use carp_proto::State;

use crate::error::Error;
use crate::spec::{EngineSpec, VhidKey, VirtualAddr};

/// A running engine. Dropping it without [`Engine::shutdown`] aborts the
/// tasks (addresses stay, as after a crash).
#[derive(Debug)]
pub struct Engine {}

/// What a reload did, by VHID.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReloadReport {
    pub added: Vec<VhidKey>,
    pub removed: Vec<VhidKey>,
    pub changed: Vec<VhidKey>,
    pub unchanged: usize,
}

/// A snapshot of one VHID, for status output and metrics.
#[derive(Debug, Clone)]
pub struct VhidStatus {
    pub key: VhidKey,
    pub state: State,
    pub addresses: Vec<VirtualAddr>,
    pub advbase: u8,
    /// Advertised advskew (after demotion in skew style).
    pub advskew: u8,
    pub demote: u8,
    /// Source of the last advertisement from another master.
    pub master: Option<IpAddr>,
    pub in_state_for: Duration,
    /// Last transition and its reason, e.g. "BACKUP -> MASTER (master_down)".
    pub last_transition: Option<String>,
    pub transitions: u64,
    pub adverts_sent: u64,
    pub adverts_received: u64,
    /// Drops by reason name ([`carp_proto::DropReason::as_str`]).
    pub drops: BTreeMap<&'static str, u64>,
}

impl Engine {
    /// Open the shared sockets, join the groups, start one task per VHID.
    /// Fails before touching anything if an interface or source address is
    /// missing.
    pub async fn start(_spec: EngineSpec) -> Result<Engine, Error> {
        todo!()
    }

    /// Apply a new spec: unchanged VHIDs keep their task and state, removed
    /// ones bow out and remove their addresses, changed ones restart, new
    /// ones start.
    pub async fn reload(&self, _spec: EngineSpec) -> Result<ReloadReport, Error> {
        todo!()
    }

    pub async fn status(&self) -> Vec<VhidStatus> {
        todo!()
    }

    /// Every MASTER matching the filter steps down once.
    pub async fn step_down(&self, _filter: Option<&VhidKey>) -> Vec<VhidKey> {
        todo!()
    }

    /// Add `delta` (may be negative) to the operator demotion of the matching
    /// VHIDs (all when both filters are `None`).
    pub async fn demote(&self, _interface: Option<&str>, _vhid: Option<u8>, _delta: i32) -> Vec<VhidKey> {
        todo!()
    }

    /// Graceful: every MASTER bows out and removes its addresses, hooks
    /// finish or time out, then the tasks end.
    pub async fn shutdown(self) {
        todo!()
    }
}
