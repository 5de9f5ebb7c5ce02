//! Running carpd's command-line client (`carpd status`, `demote`, ...)
//! against a daemon's control socket.

use std::path::Path;
use std::process::{Command, Output};

use crate::daemon::carpd_exe;

/// `carpd <args>` run to completion as root.
pub fn client(args: &[&str]) -> Output {
    Command::new(carpd_exe())
        .args(args)
        .output()
        .expect("run carpd client")
}

/// A client's stdout or stderr as text.
pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// `carpd status --json` against `socket`, parsed; `None` while the daemon
/// does not answer (not started yet, exiting).
pub fn try_status(socket: &Path) -> Option<serde_json::Value> {
    let o = client(&["status", "--json", "--socket", socket.to_str()?]);
    if !o.status.success() {
        return None;
    }
    serde_json::from_slice(&o.stdout).ok()
}
