//! A cluster: a LAN with one carpd per host (started on demand) and the
//! scratch directory holding their configurations and logs.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use crate::command::wait_until;
use crate::config::Config;
use crate::daemon::Daemon;
use crate::lan::Lan;
use crate::netns::Netns;
use crate::scratch::Scratch;
use crate::watch::Watcher;

/// Numbers the daemons' labels, so a restarted node gets a fresh log.
static NODE_LABELS: AtomicU32 = AtomicU32::new(0);

/// A LAN plus one (optional) carpd per host and the files they use.
/// Field order is drop order: processes die (and dump their logs on failure)
/// before the namespaces and files go.
#[derive(Debug)]
pub struct Cluster {
    nodes: Vec<Option<Daemon>>,
    pub lan: Lan,
    pub dir: Scratch,
}

impl Cluster {
    pub fn new(hosts: usize, links: usize) -> Cluster {
        let dir = Scratch::new();
        let lan = Lan::new(hosts, links);
        Cluster {
            nodes: (0..hosts).map(|_| None).collect(),
            lan,
            dir,
        }
    }

    /// Writes host `i`'s configuration file (also for a later reload).
    pub fn write_config(&self, i: usize, config: &str) -> PathBuf {
        self.dir.write(&format!("node{i}.toml"), config)
    }

    /// Writes `config` for host `i` and starts carpd there.
    pub fn start(&mut self, i: usize, config: &Config) -> &mut Daemon {
        let path = self.write_config(i, &config.to_toml());
        let label = format!("node{i}-{}", NODE_LABELS.fetch_add(1, Ordering::Relaxed));
        let d = Daemon::carpd(&self.lan.hosts[i], &label, self.dir.path(), &path, &[]);
        self.nodes[i] = Some(d);
        self.node(i)
    }

    pub fn node(&mut self, i: usize) -> &mut Daemon {
        self.nodes[i].as_mut().expect("node started")
    }

    pub fn host(&self, i: usize) -> &Netns {
        &self.lan.hosts[i]
    }

    pub fn owners(&self, addr: &str) -> Vec<usize> {
        self.lan.owners(addr)
    }

    /// Waits until exactly `expected` holds `addr`; returns how long it took.
    pub fn wait_owners(&self, addr: &str, expected: &[usize], timeout: Duration) -> Duration {
        let mut last = Vec::new();
        wait_until(timeout, Duration::from_millis(20), || {
            last = self.owners(addr);
            last == expected
        })
        .unwrap_or_else(|| {
            panic!("{addr}: owners {last:?} after {timeout:?}, expected {expected:?}")
        })
    }

    pub fn watch(&self) -> Watcher {
        Watcher::start(&self.lan.refs())
    }
}
