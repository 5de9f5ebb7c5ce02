//! Up/down hook commands, run asynchronously with a timeout so a slow or
//! hanging script never delays advertisements.
//!
//! CONTRACT (filled in by the effects work): keep these names and
//! signatures; add freely.

use std::net::IpAddr;

use carp_proto::State;

use crate::spec::HookSpec;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HookKind {
    Up,
    Down,
}

/// How a hook run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HookOutcome {
    Success,
    Failed(Option<i32>),
    TimedOut,
    SpawnError(String),
}

/// Run the up or down command of `spec` (if configured) as
/// `<cmd> <interface> <first vip> [xparam]`, with `CARP_INTERFACE`,
/// `CARP_VHID`, `CARP_STATE`, `CARP_ADDRESSES` (space separated) in the
/// environment. Returns at once; the command runs in its own task, is killed
/// after `spec.timeout`, and its outcome is logged and passed to `done`.
pub fn spawn_hook(
    _spec: &HookSpec,
    _kind: HookKind,
    _interface: &str,
    _vhid: u8,
    _state: State,
    _addresses: &[IpAddr],
    _done: impl FnOnce(HookOutcome) + Send + 'static,
) -> Option<tokio::task::JoinHandle<()>> {
    todo!()
}
