//! Network namespaces the benchmark creates and always removes: on drop, and
//! from a signal thread on SIGINT/SIGTERM/SIGHUP (see [`install_cleanup`]).
//!
//! Names are `carpb-<pid>-<n>-<tag>`; namespaces left by a killed earlier run
//! (whose pid is gone) are removed at start. A LAN is a "switch" namespace
//! with one bridge per link, and host namespaces wired to every bridge by a
//! veth pair whose host end is `eth<k>` (address `10.99.<k>.<i+1>/24`);
//! every veth end receives through a threaded NAPI ([`napi_threaded`]).

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::{SigSet, Signal, kill};
use nix::unistd::Pid;

use crate::error::{Error, Result};

const PREFIX: &str = "carpb-";

static COUNTER: AtomicU32 = AtomicU32::new(0);
/// Namespaces and directories alive right now, for the signal thread.
static LIVE: Mutex<Vec<Resource>> = Mutex::new(Vec::new());

#[derive(Debug, Clone, PartialEq, Eq)]
enum Resource {
    Netns(String),
    Dir(PathBuf),
}

fn register(r: Resource) {
    if let Ok(mut live) = LIVE.lock() {
        live.push(r);
    }
}

fn unregister(r: &Resource) {
    if let Ok(mut live) = LIVE.lock() {
        live.retain(|x| x != r);
    }
}

fn unique(tag: &str) -> String {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{PREFIX}{}-{n}-{tag}", std::process::id())
}

/// Blocks the termination signals in this thread (and so in every thread
/// started after it) and starts a thread that, on any of them, kills the
/// processes in our namespaces, deletes the namespaces and directories,
/// and exits. Call first thing in `main`.
pub fn install_cleanup() -> Result<()> {
    let mut set = SigSet::empty();
    for s in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        set.add(s);
    }
    set.thread_block()
        .map_err(|e| Error::Setup(format!("block signals: {e}")))?;
    thread::spawn(move || {
        let Ok(sig) = set.wait() else { return };
        eprintln!("carpd-bench: {sig}, removing namespaces");
        let live = LIVE.lock().map(|l| l.clone()).unwrap_or_default();
        for r in live.iter().rev() {
            match r {
                Resource::Netns(name) => {
                    kill_namespace_processes(name);
                    let _ = try_run(&["ip", "netns", "del", name]);
                }
                Resource::Dir(p) => {
                    let _ = fs::remove_dir_all(p);
                }
            }
        }
        std::process::exit(130);
    });
    Ok(())
}

/// Runs a command to completion; the error carries its stderr.
pub fn try_run(args: &[&str]) -> Result<String> {
    let Some((program, rest)) = args.split_first() else {
        return Err(Error::Command("empty command".into()));
    };
    let out = Command::new(program)
        .args(rest)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| Error::Command(format!("{}: {e}", args.join(" "))))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(Error::Command(format!(
            "`{}` failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

/// Polls `cond` every `poll` until it holds (the time it took) or `timeout`
/// passes (`None`).
pub fn wait_until(
    timeout: Duration,
    poll: Duration,
    mut cond: impl FnMut() -> bool,
) -> Option<Duration> {
    let start = Instant::now();
    loop {
        if cond() {
            return Some(start.elapsed());
        }
        if start.elapsed() >= timeout {
            return None;
        }
        thread::sleep(poll);
    }
}

/// Deletes namespaces of earlier runs whose process is gone.
pub fn reap_stale() {
    let Ok(list) = try_run(&["ip", "netns", "list"]) else {
        return;
    };
    for line in list.lines() {
        let Some(name) = line.split_whitespace().next() else {
            continue;
        };
        let Some(pid) = name
            .strip_prefix(PREFIX)
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
            kill_namespace_processes(name);
            let _ = try_run(&["ip", "netns", "del", name]);
        }
    }
}

fn kill_namespace_processes(name: &str) {
    if let Ok(pids) = try_run(&["ip", "netns", "pids", name]) {
        for pid in pids
            .split_whitespace()
            .filter_map(|p| p.parse::<i32>().ok())
        {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
    }
}

/// One network namespace, deleted on drop with every process in it.
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// `lo` up, IPv6 DAD off, secondary addresses promoted (so removing
    /// one virtual address never takes others in its subnet along).
    pub fn new(tag: &str) -> Result<Netns> {
        let name = unique(tag);
        try_run(&["ip", "netns", "add", &name])?;
        register(Resource::Netns(name.clone()));
        let ns = Netns { name };
        ns.ip(&["link", "set", "lo", "up"])?;
        ns.exec(&[
            "sysctl",
            "-q",
            "-w",
            "net.ipv6.conf.all.accept_dad=0",
            "net.ipv6.conf.default.accept_dad=0",
            "net.ipv4.conf.all.promote_secondaries=1",
            "net.ipv4.conf.default.promote_secondaries=1",
        ])?;
        Ok(ns)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn exec(&self, args: &[&str]) -> Result<String> {
        let mut full = vec!["ip", "netns", "exec", &self.name];
        full.extend_from_slice(args);
        try_run(&full)
    }

    pub fn ip(&self, args: &[&str]) -> Result<String> {
        let mut full = vec!["ip", "-n", &self.name];
        full.extend_from_slice(args);
        try_run(&full)
    }

    /// Every address in the namespace, without prefix length.
    pub fn addrs(&self) -> BTreeSet<String> {
        self.ip(&["-o", "addr", "show"])
            .unwrap_or_default()
            .lines()
            .filter_map(|line| {
                let t: Vec<&str> = line.split_whitespace().collect();
                let cidr = t.get(3)?;
                Some(cidr.split('/').next().unwrap_or(cidr).to_string())
            })
            .collect()
    }

    pub fn has_addr(&self, addr: &str) -> bool {
        self.addrs().contains(addr)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        kill_namespace_processes(&self.name);
        if let Err(e) = try_run(&["ip", "netns", "del", &self.name]) {
            eprintln!("cleanup: {e}");
        }
        unregister(&Resource::Netns(self.name.clone()));
    }
}

/// Makes `dev` (a veth end in `ns`) receive through a NAPI kernel thread,
/// as a NIC's interrupt and softirq would. Without it a veth hands each
/// frame to the peer's receive path in the sender's own context, so the
/// bridge, the other hosts' IP input and the wake-up of their readers are
/// all charged to the process that sent. veth takes the NAPI path with GRO
/// on and only for frames that need no segmentation (TSO and GSO off).
fn napi_threaded(ns: &Netns, dev: &str) -> Result<()> {
    ns.exec(&[
        "ethtool", "-K", dev, "gro", "on", "tso", "off", "gso", "off",
    ])
    .map_err(|e| Error::Setup(format!("ethtool on {dev} (Debian: ethtool): {e}")))?;
    ns.exec(&[
        "sh",
        "-c",
        &format!("echo 1 > /sys/class/net/{dev}/threaded"),
    ])
    .map_err(|e| Error::Setup(format!("threaded NAPI on {dev}: {e}")))?;
    Ok(())
}

/// A segment: a switch namespace with one bridge per link, hosts wired to
/// every bridge; host `i`'s port on link `k` is `h<i>l<k>`.
#[derive(Debug)]
pub struct Lan {
    pub hosts: Vec<Netns>,
    pub switch: Netns,
}

impl Lan {
    pub fn new(hosts: usize, links: usize) -> Result<Lan> {
        let switch = Netns::new("sw")?;
        // bridged frames skip netfilter: a real switch does not run it
        let _ = switch.exec(&[
            "sysctl",
            "-q",
            "-w",
            "net.bridge.bridge-nf-call-iptables=0",
            "net.bridge.bridge-nf-call-ip6tables=0",
            "net.bridge.bridge-nf-call-arptables=0",
        ]);
        let hosts = (0..hosts)
            .map(|i| Netns::new(&format!("h{i}")))
            .collect::<Result<Vec<_>>>()?;
        let lan = Lan { hosts, switch };
        for k in 0..links {
            let br = format!("br{k}");
            // no snooping: every CARP packet reaches every port
            lan.switch.ip(&[
                "link",
                "add",
                &br,
                "type",
                "bridge",
                "mcast_snooping",
                "0",
                "stp_state",
                "0",
            ])?;
            lan.switch.ip(&["link", "set", &br, "up"])?;
        }
        for (i, host) in lan.hosts.iter().enumerate() {
            for k in 0..links {
                let port = Lan::port_name(i, k);
                let dev = format!("eth{k}");
                lan.switch.ip(&[
                    "link",
                    "add",
                    &port,
                    "type",
                    "veth",
                    "peer",
                    "name",
                    &dev,
                    "netns",
                    host.name(),
                ])?;
                lan.switch
                    .ip(&["link", "set", &port, "master", &format!("br{k}"), "up"])?;
                host.ip(&[
                    "addr",
                    "add",
                    &format!("{}/24", Lan::host_addr(i, k)),
                    "dev",
                    &dev,
                ])?;
                host.ip(&["link", "set", &dev, "up"])?;
                napi_threaded(&lan.switch, &port)?;
                napi_threaded(host, &dev)?;
            }
        }
        for host in &lan.hosts {
            for k in 0..links {
                let dev = format!("eth{k}");
                let up = wait_until(Duration::from_secs(10), Duration::from_millis(20), || {
                    host.ip(&["-o", "link", "show", "dev", &dev])
                        .is_ok_and(|l| l.contains("state UP"))
                });
                if up.is_none() {
                    return Err(Error::Setup(format!(
                        "{} {dev} did not come up",
                        host.name()
                    )));
                }
            }
        }
        Ok(lan)
    }

    pub fn host_addr(host: usize, link: usize) -> String {
        format!("10.99.{link}.{}", host + 1)
    }

    pub fn port_name(host: usize, link: usize) -> String {
        format!("h{host}l{link}")
    }
}

/// A directory for configurations, scripts and logs, removed on drop.
#[derive(Debug)]
pub struct Scratch {
    path: PathBuf,
}

impl Scratch {
    pub fn new() -> Result<Scratch> {
        let path = std::env::temp_dir().join(unique("files"));
        fs::create_dir_all(&path)?;
        register(Resource::Dir(path.clone()));
        Ok(Scratch { path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn write(&self, name: &str, contents: &str) -> Result<PathBuf> {
        let p = self.path.join(name);
        fs::write(&p, contents)?;
        Ok(p)
    }

    /// Writes an executable shell script.
    pub fn script(&self, name: &str, body: &str) -> Result<PathBuf> {
        use std::os::unix::fs::PermissionsExt;
        let p = self.write(name, &format!("#!/bin/sh\n{body}\n"))?;
        fs::set_permissions(&p, fs::Permissions::from_mode(0o755))?;
        Ok(p)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if std::env::var_os("CARPD_BENCH_KEEP").is_some() {
            eprintln!("kept {}", self.path.display());
        } else {
            let _ = fs::remove_dir_all(&self.path);
        }
        unregister(&Resource::Dir(self.path.clone()));
    }
}
