//! The test bed of a run: the LAN of namespaces, one carpd per node with its
//! configuration and hook scripts, the address watcher and the capture at
//! the switch. Field order is drop order: processes go before the
//! namespaces they run in.

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use carpd_testbed::{Daemon, Lan, Netns, Watcher};
use nix::sys::signal::Signal;

use crate::config::{Hooks, NodeConfig, hook_script};
use crate::error::{Error, Result};
use crate::timeline::{Journal, Life};

/// How long a carpd gets to log that it runs, and to exit after SIGTERM.
pub const START_TIMEOUT: Duration = Duration::from_secs(15);
pub const EXIT_TIMEOUT: Duration = Duration::from_secs(20);

/// One node: its configurations and its current carpd.
#[derive(Debug)]
pub struct Node {
    pub index: usize,
    /// What it runs when no reload fault is on.
    pub base: NodeConfig,
    pub current: NodeConfig,
    pub daemon: Option<Daemon>,
    pub spawned_at: Instant,
    /// Processes started so far (names the log files).
    pub started: usize,
    pub config_path: PathBuf,
    /// Read by the hook scripts: "", "slow <s>" or "fail".
    pub hook_mode: PathBuf,
    /// The nftables rules of a partition or loss fault.
    pub nft_file: PathBuf,
}

impl Node {
    pub fn log_files(&self, out: &Path) -> Vec<PathBuf> {
        (0..self.started)
            .map(|k| out.join(format!("node{}-{k}.log", self.index)))
            .collect()
    }

    pub fn pid(&self) -> Option<i32> {
        self.daemon.as_ref().map(Daemon::pid)
    }

    fn write_config(&self) -> Result<()> {
        fs::write(&self.config_path, self.current.to_toml())?;
        Ok(())
    }

    /// Writes the current configuration and starts carpd with it.
    pub fn spawn(
        &mut self,
        ns: &Netns,
        carpd: &str,
        out: &Path,
        journal: &mut Journal,
    ) -> Result<()> {
        self.write_config()?;
        let label = format!("node{}-{}", self.index, self.started);
        self.started += 1;
        let socket = out.join(format!("node{}.sock", self.index));
        let args = [
            "--config",
            path_str(&self.config_path)?,
            "--control-socket",
            path_str(&socket)?,
        ];
        self.daemon = Some(Daemon::spawn(ns, &label, out, carpd, &args));
        self.spawned_at = journal.life(self.index, Life::Spawned);
        journal.config(self.index, self.current.addrs());
        Ok(())
    }

    /// Waits until the carpd started last logs that it runs; returns when.
    pub fn wait_ready(&mut self, journal: &mut Journal) -> Result<Instant> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let Some(d) = self.daemon.as_mut() else {
                return Err(Error::Setup(format!("node {}: no carpd", self.index)));
            };
            if d.log().lines().any(is_running_line) {
                return Ok(journal.life(self.index, Life::Ready));
            }
            if !d.is_running() || Instant::now() >= deadline {
                return Err(Error::Setup(format!(
                    "node {}: carpd did not start:\n{}",
                    self.index,
                    tail(&d.log(), 20)
                )));
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn signal(&self, sig: Signal) {
        if let Some(d) = &self.daemon {
            d.signal(sig);
        }
    }

    /// SIGKILL, and reap it.
    pub fn kill(&mut self, journal: &mut Journal) {
        if let Some(mut d) = self.daemon.take() {
            d.sigkill();
            d.wait_exit(EXIT_TIMEOUT);
            journal.life(self.index, Life::Killed);
        }
    }

    /// SIGTERM and wait for the exit; `Err` when it did not exit cleanly in
    /// time (it is then killed).
    pub fn terminate(&mut self, journal: &mut Journal) -> std::result::Result<(), String> {
        self.signal(Signal::SIGTERM);
        self.wait_terminated(journal)
    }

    /// Waits for the exit after a SIGTERM (see [`Node::terminate`]).
    pub fn wait_terminated(&mut self, journal: &mut Journal) -> std::result::Result<(), String> {
        let Some(mut d) = self.daemon.take() else {
            return Ok(());
        };
        match d.wait_exit(EXIT_TIMEOUT) {
            Some(status) if status.success() => {
                journal.life(self.index, Life::ExitedClean);
                Ok(())
            }
            Some(status) => {
                journal.life(self.index, Life::Killed);
                Err(format!("carpd exited with {status} after SIGTERM"))
            }
            None => {
                d.sigkill();
                d.wait_exit(EXIT_TIMEOUT);
                journal.life(self.index, Life::Killed);
                Err(format!(
                    "carpd still running {EXIT_TIMEOUT:?} after SIGTERM"
                ))
            }
        }
    }

    /// Rewrites the configuration and sends SIGHUP.
    pub fn reload(&mut self, config: NodeConfig, journal: &mut Journal) -> Result<()> {
        self.current = config;
        self.write_config()?;
        journal.config(self.index, self.current.addrs());
        self.signal(Signal::SIGHUP);
        Ok(())
    }

    pub fn set_hook_mode(&self, mode: &str) -> Result<()> {
        fs::write(&self.hook_mode, mode)?;
        Ok(())
    }

    /// Whether the carpd that should run has exited by itself.
    pub fn died(&mut self) -> bool {
        self.daemon.as_mut().is_some_and(|d| !d.is_running())
    }
}

/// carpd's "running" line (text or JSON log), logged once it serves.
fn is_running_line(line: &str) -> bool {
    line.contains("running") && line.contains("control_socket")
}

pub fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

fn path_str(p: &Path) -> Result<&str> {
    p.to_str()
        .ok_or_else(|| Error::Setup(format!("path is not UTF-8: {}", p.display())))
}

#[derive(Debug)]
pub struct Bed {
    pub nodes: Vec<Node>,
    pub capture: Option<Daemon>,
    pub watcher: Watcher,
    pub lan: Lan,
    pub out: PathBuf,
    pub capture_file: PathBuf,
    pub carpd: String,
}

impl Bed {
    /// The LAN, the capture at its switch, the watcher, and each node's
    /// files (carpd not started yet).
    pub fn new(
        nodes: usize,
        links: usize,
        ids: &[u8],
        advbase: u8,
        out: &Path,
        carpd: &str,
    ) -> Result<Bed> {
        fs::create_dir_all(out)?;
        let lan = Lan::try_new(nodes, links)?;
        lan.promote_secondaries()?;
        let capture_file = out.join("switch.pcap");
        let capture = Some(start_capture(&lan.switch, out, &capture_file)?);
        let watcher = Watcher::start(&lan.refs());
        let mut list = Vec::new();
        for i in 0..nodes {
            let hook_mode = out.join(format!("node{i}.hooks"));
            fs::write(&hook_mode, "")?;
            let hooks = Hooks {
                up: out.join(format!("node{i}-up.sh")),
                down: out.join(format!("node{i}-down.sh")),
            };
            for (path, up) in [(&hooks.up, true), (&hooks.down, false)] {
                fs::write(path, hook_script(up, path_str(&hook_mode)?))?;
                fs::set_permissions(path, fs::Permissions::from_mode(0o755))?;
            }
            let base = NodeConfig::base(i, nodes, links, ids, advbase, hooks);
            list.push(Node {
                index: i,
                current: base.clone(),
                base,
                daemon: None,
                spawned_at: Instant::now(),
                started: 0,
                config_path: out.join(format!("node{i}.toml")),
                hook_mode,
                nft_file: out.join(format!("node{i}.nft")),
            });
        }
        Ok(Bed {
            nodes: list,
            capture,
            watcher,
            lan,
            out: out.to_path_buf(),
            capture_file,
            carpd: carpd.to_string(),
        })
    }

    pub fn host(&self, i: usize) -> &Netns {
        &self.lan.hosts[i]
    }

    /// Starts node `i`'s carpd.
    pub fn spawn(&mut self, i: usize, journal: &mut Journal) -> Result<()> {
        let ns = &self.lan.hosts[i];
        self.nodes[i].spawn(ns, &self.carpd, &self.out, journal)
    }

    /// Every virtual address of the base configurations, with the nodes
    /// holding it now.
    pub fn holders(&self) -> Result<Vec<(String, Vec<usize>)>> {
        let held: Vec<BTreeSet<String>> = self
            .lan
            .hosts
            .iter()
            .map(Netns::try_addrs)
            .collect::<std::result::Result<_, _>>()?;
        let vips: BTreeSet<String> = self.nodes.iter().flat_map(|n| n.base.addrs()).collect();
        Ok(vips
            .into_iter()
            .map(|a| {
                let who = (0..held.len()).filter(|n| held[*n].contains(&a)).collect();
                (a, who)
            })
            .collect())
    }

    /// Stops the capture so that its file is complete.
    pub fn stop_capture(&mut self) {
        if let Some(mut c) = self.capture.take() {
            c.sigterm();
            c.wait_exit(Duration::from_secs(5));
        }
    }
}

/// tcpdump on the switch's bridge, writing every CARP packet to `file`.
fn start_capture(switch: &Netns, out: &Path, file: &Path) -> Result<Daemon> {
    let args = [
        "-i",
        "br0",
        "-n",
        "-U",
        "--immediate-mode",
        "-s",
        "256",
        "-w",
        path_str(file)?,
        "ip proto 112 or ip6 proto 112",
    ];
    let mut tcpdump = Daemon::spawn(switch, "tcpdump", out, "tcpdump", &args);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !tcpdump.log().contains("listening") {
        if !tcpdump.is_running() || Instant::now() >= deadline {
            return Err(Error::Setup(format!(
                "tcpdump did not start: {}",
                tcpdump.log()
            )));
        }
        thread::sleep(Duration::from_millis(20));
    }
    Ok(tcpdump)
}
