//! The async CARP engine: the only place with sockets and time.
//!
//! CONTRACT: `spec` (what to run) and `Engine` (the handle the daemon
//! drives) are the interface to the daemon; keep their names and
//! signatures, add freely.

pub mod announce;
pub mod engine;
pub mod error;
pub mod hooks;
pub mod netlink;
pub mod spec;

pub use engine::{Engine, ReloadReport, VhidStatus};
pub use error::Error;
pub use spec::{EngineSpec, HookSpec, InterfaceSpec, VhidKey, VhidSpec, VirtualAddr};
