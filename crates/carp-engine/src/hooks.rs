//! Up/down hook commands, run asynchronously with a timeout so a slow or
//! hanging script never delays advertisements.

use std::net::IpAddr;
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use carp_proto::State;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::process::Command;

use crate::spec::HookSpec;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HookKind {
    Up,
    Down,
}

impl HookKind {
    pub fn as_str(self) -> &'static str {
        match self {
            HookKind::Up => "up",
            HookKind::Down => "down",
        }
    }
}

/// How a hook run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HookOutcome {
    Success,
    /// Non-zero exit code, or `None` if a signal ended it.
    Failed(Option<i32>),
    TimedOut,
    SpawnError(String),
}

/// Run the up or down command of `spec` (if configured) as
/// `<cmd> <interface> <first vip> [xparam]`, with `CARP_INTERFACE`,
/// `CARP_VHID`, `CARP_STATE`, `CARP_ADDRESSES` (space separated) in the
/// environment. Returns at once; the command runs in its own task, is killed
/// after `spec.timeout`, and its outcome is logged and passed to `done`.
///
/// Returns `None` (and does not call `done`) when no command of that kind is
/// configured. A zero `spec.timeout` means no time limit. The command runs
/// in its own process group, and on timeout the whole group is killed, so a
/// script's children do not outlive it. Aborting the returned task kills the
/// command without calling `done`. Must be called inside a tokio runtime.
pub fn spawn_hook(
    spec: &HookSpec,
    kind: HookKind,
    interface: &str,
    vhid: u8,
    state: State,
    addresses: &[IpAddr],
    done: impl FnOnce(HookOutcome) + Send + 'static,
) -> Option<tokio::task::JoinHandle<()>> {
    let program = match kind {
        HookKind::Up => spec.up.as_ref(),
        HookKind::Down => spec.down.as_ref(),
    }?
    .clone();
    let vip = addresses.first().map(IpAddr::to_string).unwrap_or_default();
    let all = addresses
        .iter()
        .map(IpAddr::to_string)
        .collect::<Vec<_>>()
        .join(" ");

    let mut command = Command::new(&program);
    command.arg(interface).arg(&vip);
    if let Some(xparam) = &spec.xparam {
        command.arg(xparam);
    }
    command
        .env("CARP_INTERFACE", interface)
        .env("CARP_VHID", vhid.to_string())
        .env("CARP_STATE", state.as_str())
        .env("CARP_ADDRESSES", &all)
        .stdin(Stdio::null())
        .process_group(0)
        .kill_on_drop(true);

    let timeout = spec.timeout;
    let interface = interface.to_owned();
    Some(tokio::spawn(async move {
        let outcome = run(command, timeout).await;
        log_outcome(&outcome, &program, kind, &interface, vhid, timeout);
        done(outcome);
    }))
}

/// Run `command` until it ends or `timeout` passes (zero: no limit); on
/// timeout its whole process group is killed.
pub(crate) async fn run(mut command: Command, timeout: Duration) -> HookOutcome {
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(e) => return HookOutcome::SpawnError(e.to_string()),
    };
    let waited = if timeout.is_zero() {
        Ok(child.wait().await)
    } else {
        tokio::time::timeout(timeout, child.wait()).await
    };
    match waited {
        Ok(Ok(status)) => outcome_of(status),
        Ok(Err(e)) => HookOutcome::SpawnError(format!("waiting for the command: {e}")),
        Err(_elapsed) => {
            // The child is not reaped yet, so its pid (= its process group id)
            // cannot have been reused.
            if let Some(pid) = child.id().and_then(|id| i32::try_from(id).ok())
                && let Err(e) = killpg(Pid::from_raw(pid), Signal::SIGKILL)
            {
                tracing::debug!(error = %e, "killing hook process group");
            }
            // Also covers a child that left its process group.
            let _ = child.start_kill();
            if let Err(e) = child.wait().await {
                tracing::warn!(error = %e, "reaping killed hook");
            }
            HookOutcome::TimedOut
        }
    }
}

fn outcome_of(status: ExitStatus) -> HookOutcome {
    if status.success() {
        HookOutcome::Success
    } else {
        HookOutcome::Failed(status.code())
    }
}

fn log_outcome(
    outcome: &HookOutcome,
    program: &Path,
    kind: HookKind,
    interface: &str,
    vhid: u8,
    timeout: Duration,
) {
    let program = program.display();
    let kind = kind.as_str();
    match outcome {
        HookOutcome::Success => {
            tracing::debug!(%program, hook = kind, interface, vhid, "hook succeeded");
        }
        HookOutcome::Failed(Some(code)) => {
            tracing::warn!(%program, hook = kind, interface, vhid, exit_code = code, "hook failed");
        }
        HookOutcome::Failed(None) => {
            tracing::warn!(%program, hook = kind, interface, vhid, "hook killed by a signal");
        }
        HookOutcome::TimedOut => {
            tracing::warn!(%program, hook = kind, interface, vhid, ?timeout, "hook timed out and was killed");
        }
        HookOutcome::SpawnError(e) => {
            tracing::warn!(%program, hook = kind, interface, vhid, error = %e, "hook could not be run");
        }
    }
}
