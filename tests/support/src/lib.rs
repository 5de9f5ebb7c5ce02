//! Test bed for carpd's end-to-end tests and its benchmark: real carpd
//! processes exchanging real packets between network namespaces.
//!
//! Everything lives in namespaces named `carpt-<pid>-<n>-<tag>` that the
//! guards in [`netns`] create and always delete (also when a test panics);
//! the root namespace is never touched. A [`Lan`] is a "switch" namespace
//! holding one bridge per link plus one namespace per host; a [`Cluster`]
//! adds a carpd per host. Functions named `try_*` return errors (for the
//! benchmark); the others fail the calling test.

pub mod capture;
pub mod cluster;
pub mod command;
pub mod config;
pub mod daemon;
pub mod inject;
pub mod lan;
pub mod netns;
pub mod scratch;
pub mod timing;
pub mod watch;

pub use capture::{Captured, Sniffer, gaps};
pub use cluster::Cluster;
pub use command::{check_tool, require_tool, run, try_run, wait_until};
pub use config::{Config, InterfaceConfig, VhidConfig};
pub use daemon::{Daemon, carpd_exe, cpu_time, interface_drops, transitions, vhid_drops};
pub use inject::{Injector, ipv4_packet, signed_advert};
pub use lan::Lan;
pub use netns::{Netns, in_netns, owners, try_in_netns};
pub use scratch::Scratch;
pub use timing::{adv_interval, master_down};
pub use watch::{AddrEvent, History, Watcher};

/// Why setting up or running part of the test bed failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An external command failed or could not be started.
    #[error("{0}")]
    Command(String),
    /// An external tool is not installed.
    #[error("{0}")]
    MissingTool(String),
    /// The bed could not be built (no root, a link that did not come up).
    #[error("set-up: {0}")]
    Setup(String),
}
