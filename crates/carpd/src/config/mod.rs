//! The TOML configuration file, validated into an [`EngineSpec`].
//!
//! Settings may appear at the top level, in an `[[interface]]` table and in
//! an `[[interface.vhid]]` table; the most specific one wins. Every value the
//! daemon checks keeps its byte span, so an error names the file, the line
//! and the key. `config/carpd.toml` documents every key.
//!
//! Loading runs in three steps: [`schema`] parses the TOML into raw tables,
//! [`validate`] checks them and applies the [`cascade`] without touching
//! anything outside the text (no files, environment or user database), and
//! [`resolve`] then reads the secrets and looks up the groups the file
//! names. [`diag`] turns byte spans into `file:line` errors for all three.

mod cascade;
mod check;
mod diag;
mod resolve;
mod schema;
mod validate;

#[cfg(test)]
mod tests;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use carp_engine::EngineSpec;

use crate::error::Error;

pub use check::parse_vaddr;
pub use resolve::{PasswordFile, exposure, read_password_file};

/// Where the daemon looks when `--config` is not given.
pub const DEFAULT_PATH: &str = "/etc/carpd.toml";

/// The longest key UCARP accepts (the BSDs truncate to the same length).
pub const UCARP_MAX_KEY: usize = 19;

/// Where the control socket is when neither the file nor the command line
/// says.
pub const DEFAULT_CONTROL_SOCKET: &str = "/run/carpd/carpd.sock";

/// A validated configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub spec: EngineSpec,
    /// `control_socket`, if the file sets it.
    pub control_socket: Option<PathBuf>,
    /// `[metrics] listen`: where to serve Prometheus metrics (off if unset).
    pub metrics_listen: Option<SocketAddr>,
    /// `control_group`: members may use the control socket too.
    pub control_group: Option<ControlGroup>,
    /// `realtime = true`: the runtime thread's SCHED_RR priority
    /// (`realtime_priority`); `None` when not real-time.
    pub realtime: Option<RealtimePriority>,
}

/// A SCHED_RR priority, 1..=99 (`realtime_priority`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RealtimePriority(u8);

impl RealtimePriority {
    pub const MIN: u8 = 1;
    pub const MAX: u8 = 99;
    /// Mid-range: level with the kernel's threaded interrupt handlers
    /// (SCHED_FIFO 50), not above them.
    pub const DEFAULT: RealtimePriority = RealtimePriority(50);

    pub fn new(priority: u8) -> Option<RealtimePriority> {
        (Self::MIN..=Self::MAX)
            .contains(&priority)
            .then_some(RealtimePriority(priority))
    }

    pub fn get(self) -> u8 {
        self.0
    }
}

/// The group whose members may use the control socket, resolved when the
/// file is read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControlGroup {
    pub name: String,
    pub gid: u32,
}

impl Config {
    /// Read and validate `path`.
    pub fn load(path: &Path) -> Result<Config, Error> {
        let src = std::fs::read_to_string(path).map_err(|source| Error::ReadConfig {
            path: path.to_path_buf(),
            source,
        })?;
        Config::from_toml(&src, path)
    }

    /// Validate `src` as if read from `path` (which names the file in errors
    /// and anchors relative paths), then read the secrets and look up the
    /// groups it names.
    pub fn from_toml(src: &str, path: &Path) -> Result<Config, Error> {
        let raw: schema::RawFile =
            toml::from_str(src).map_err(|e| diag::parse_error(src, path, &e))?;
        let diag = diag::Diagnostics::new(src, path);
        let draft = validate::validate(&diag, raw)?;
        resolve::resolve(&diag, draft)
    }

    pub fn vhid_count(&self) -> usize {
        self.spec.interfaces.iter().map(|i| i.vhids.len()).sum()
    }

    /// `N interfaces, M VHIDs`, for `--check-config` and the start-up log.
    pub fn summary(&self) -> String {
        let n = self.spec.interfaces.len();
        let m = self.vhid_count();
        format!(
            "{n} interface{}, {m} VHID{}",
            if n == 1 { "" } else { "s" },
            if m == 1 { "" } else { "s" }
        )
    }
}
