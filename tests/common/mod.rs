//! Test bed for the end-to-end tests: real carpd processes exchanging real
//! packets between network namespaces.
//!
//! Everything lives in namespaces named `carpt-<pid>-<n>-<tag>` that the
//! guards below create and always delete (also when a test panics); the
//! root namespace is never touched. A LAN is a "switch" namespace holding
//! one bridge per link plus one namespace per host, each host wired to every
//! bridge by a veth pair whose host end is called `eth<k>`.

// Each test binary uses a different part of this module.
#![allow(dead_code)]

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::fs::{self, File};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, Once};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// Prefix of every namespace and scratch directory these tests create.
const PREFIX: &str = "carpt-";

static COUNTER: AtomicU32 = AtomicU32::new(0);
static REAP: Once = Once::new();

/// A name unique to this process and call: `carpt-<pid>-<n>-<tag>`.
fn unique(tag: &str) -> String {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{PREFIX}{}-{n}-{tag}", std::process::id())
}

/// Runs a command to completion; `Err` carries its stderr.
pub fn try_run(args: &[&str]) -> Result<String, String> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{}: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "`{}` failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Runs a command to completion and panics if it fails.
pub fn run(args: &[&str]) -> String {
    try_run(args).unwrap_or_else(|e| panic!("{e}"))
}

/// Polls `cond` every `poll` until it holds (returns the time it took) or
/// `timeout` passes (returns `None`).
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

/// Deletes namespaces left behind by earlier test processes that were killed
/// before their guards could run (only ours: the pid in the name is gone).
fn reap_stale_namespaces() {
    REAP.call_once(|| {
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
    });
}

/// SIGKILLs every process still running inside namespace `name`.
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

/// One network namespace, deleted on drop together with every process
/// still running in it.
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates `carpt-<pid>-<n>-<tag>` with `lo` up and IPv6 duplicate
    /// address detection off (so link-local and virtual IPv6 addresses are
    /// usable at once).
    pub fn new(tag: &str) -> Netns {
        assert!(
            nix::unistd::geteuid().is_root(),
            "the end-to-end tests create network namespaces: run them as root"
        );
        reap_stale_namespaces();
        let name = unique(tag);
        run(&["ip", "netns", "add", &name]);
        // The guard exists from here on, so a failure below still cleans up.
        let ns = Netns { name };
        ns.ip(&["link", "set", "lo", "up"]);
        ns.exec(&[
            "sysctl",
            "-q",
            "-w",
            "net.ipv6.conf.all.accept_dad=0",
            "net.ipv6.conf.default.accept_dad=0",
        ]);
        ns
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs `args` inside the namespace.
    pub fn exec(&self, args: &[&str]) -> String {
        let mut full = vec!["ip", "netns", "exec", &self.name];
        full.extend_from_slice(args);
        run(&full)
    }

    /// Runs `ip -n <ns> args...`.
    pub fn ip(&self, args: &[&str]) -> String {
        let mut full = vec!["ip", "-n", &self.name];
        full.extend_from_slice(args);
        run(&full)
    }

    /// Every address in the namespace as `(device, "addr/prefix")`.
    pub fn addr_entries(&self) -> BTreeSet<(String, String)> {
        self.ip(&["-o", "addr", "show"])
            .lines()
            .filter_map(|line| {
                let t: Vec<&str> = line.split_whitespace().collect();
                (t.len() >= 4).then(|| (t[1].to_string(), t[3].to_string()))
            })
            .collect()
    }

    /// Every address in the namespace, without prefix length.
    pub fn addrs(&self) -> BTreeSet<String> {
        self.addr_entries()
            .into_iter()
            .map(|(_, cidr)| strip_prefix_len(&cidr).to_string())
            .collect()
    }

    /// Drops (or stops dropping) every CARP packet arriving in the namespace,
    /// to cut it off from its peers while its links stay up.
    pub fn block_carp(&self, block: bool) {
        if block {
            self.exec(&["nft", "add", "table", "inet", "carpt"]);
            self.exec(&[
                "nft",
                "add chain inet carpt input { type filter hook input priority 0 ; }",
            ]);
            self.exec(&["nft", "add rule inet carpt input meta l4proto 112 drop"]);
        } else {
            self.exec(&["nft", "delete", "table", "inet", "carpt"]);
        }
    }

    /// Whether `addr` (without prefix length) is configured in the namespace.
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
    }
}

fn strip_prefix_len(cidr: &str) -> &str {
    cidr.split('/').next().unwrap_or(cidr)
}

/// Indexes of the namespaces that hold `addr` right now.
pub fn owners(nss: &[&Netns], addr: &str) -> Vec<usize> {
    nss.iter()
        .enumerate()
        .filter(|(_, ns)| ns.has_addr(addr))
        .map(|(i, _)| i)
        .collect()
}

/// A segment: a switch namespace with one bridge per link, and hosts wired
/// to every bridge. Host `i` has `eth<k>` with `10.99.<k>.<i+1>/24` (and an
/// IPv6 link-local address); its switch port is `h<i>l<k>`.
#[derive(Debug)]
pub struct Lan {
    pub hosts: Vec<Netns>,
    pub switch: Netns,
}

impl Lan {
    pub fn new(hosts: usize, links: usize) -> Lan {
        let switch = Netns::new("sw");
        let hosts: Vec<Netns> = (0..hosts).map(|i| Netns::new(&format!("h{i}"))).collect();
        let lan = Lan { hosts, switch };
        for k in 0..links {
            let br = format!("br{k}");
            // No snooping: every CARP group packet reaches every port.
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
            ]);
            lan.switch.ip(&["link", "set", &br, "up"]);
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
                ]);
                lan.switch
                    .ip(&["link", "set", &port, "master", &format!("br{k}"), "up"]);
                host.ip(&[
                    "addr",
                    "add",
                    &format!("{}/24", Lan::host_addr(i, k)),
                    "dev",
                    &dev,
                ]);
                host.ip(&["link", "set", &dev, "up"]);
            }
        }
        for host in &lan.hosts {
            for k in 0..links {
                let dev = format!("eth{k}");
                let up = wait_until(Duration::from_secs(10), Duration::from_millis(20), || {
                    let link = host.ip(&["-o", "link", "show", "dev", &dev]);
                    let ll = host.ip(&["-o", "-6", "addr", "show", "dev", &dev, "scope", "link"]);
                    link.contains("state UP") && !ll.is_empty() && !ll.contains("tentative")
                });
                assert!(up.is_some(), "{} {dev} did not come up", host.name());
            }
        }
        lan
    }

    pub fn host_addr(host: usize, link: usize) -> String {
        format!("10.99.{link}.{}", host + 1)
    }

    pub fn port_name(host: usize, link: usize) -> String {
        format!("h{host}l{link}")
    }

    /// Cuts (or restores) host `host`'s cable on link `link`: its switch port
    /// goes down, so the host sees carrier loss on `eth<link>`.
    pub fn set_port(&self, host: usize, link: usize, up: bool) {
        let state = if up { "up" } else { "down" };
        self.switch
            .ip(&["link", "set", &Lan::port_name(host, link), state]);
    }

    pub fn refs(&self) -> Vec<&Netns> {
        self.hosts.iter().collect()
    }

    /// Hosts that hold `addr` right now.
    pub fn owners(&self, addr: &str) -> Vec<usize> {
        owners(&self.refs(), addr)
    }
}

/// A per-test directory for configurations and logs, removed on drop.
#[derive(Debug)]
pub struct Scratch {
    path: PathBuf,
}

impl Scratch {
    pub fn new() -> Scratch {
        let path = std::env::temp_dir().join(unique("files"));
        fs::create_dir_all(&path).expect("create scratch directory");
        Scratch { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn write(&self, name: &str, contents: &str) -> PathBuf {
        let p = self.path.join(name);
        fs::write(&p, contents).expect("write scratch file");
        p
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.path);
    }
}

/// A process running inside a namespace, with stdout and stderr captured to
/// a file. Killed on drop; its log is printed if the test is failing.
#[derive(Debug)]
pub struct Daemon {
    label: String,
    child: Child,
    log: PathBuf,
    status: Option<ExitStatus>,
}

impl Daemon {
    /// Starts `program args...` in `ns`, logging to `<dir>/<label>.log`.
    pub fn spawn(ns: &Netns, label: &str, dir: &Path, program: &str, args: &[&str]) -> Daemon {
        let log = dir.join(format!("{label}.log"));
        let out = File::create(&log).expect("create log file");
        let err = out.try_clone().expect("clone log file");
        let child = Command::new("ip")
            .args(["netns", "exec", ns.name(), program])
            .args(args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {program}: {e}"));
        Daemon {
            label: label.to_string(),
            child,
            log,
            status: None,
        }
    }

    /// Starts tcpdump writing what `filter` matches on `eth0` of `ns` to
    /// `<dir>/<file>`, and waits until it listens.
    pub fn pcap(ns: &Netns, dir: &Path, file: &str, filter: &str) -> (Daemon, PathBuf) {
        let pcap = dir.join(file);
        let args = [
            "-i",
            "eth0",
            "-n",
            "-U",
            // Packets still in a capture block at SIGTERM would be lost.
            "--immediate-mode",
            "-w",
            pcap.to_str().expect("utf-8 path"),
            filter,
        ];
        let tcpdump = Daemon::spawn(ns, "tcpdump", dir, "tcpdump", &args);
        assert!(
            wait_until(Duration::from_secs(5), Duration::from_millis(20), || {
                tcpdump.log().contains("listening")
            })
            .is_some(),
            "tcpdump did not start: {}",
            tcpdump.log()
        );
        (tcpdump, pcap)
    }

    /// Starts `carpd --config <config> extra...` in `ns`, with its control
    /// socket at `<dir>/<label>.sock` (see [`Daemon::socket`]) unless
    /// `extra` names one: daemons of parallel tests must not share the
    /// default `/run/carpd.sock`.
    pub fn carpd(ns: &Netns, label: &str, dir: &Path, config: &Path, extra: &[&str]) -> Daemon {
        let config = config.to_str().expect("utf-8 path");
        let socket = dir.join(format!("{label}.sock"));
        let mut args = vec!["--config", config];
        if !extra.iter().any(|a| a.starts_with("--control-socket")) {
            args.extend(["--control-socket", socket.to_str().expect("utf-8 path")]);
        }
        args.extend_from_slice(extra);
        Daemon::spawn(ns, label, dir, env!("CARGO_BIN_EXE_carpd"), &args)
    }

    /// The control socket [`Daemon::carpd`] gave this daemon.
    pub fn socket(&self) -> PathBuf {
        self.log.with_extension("sock")
    }

    /// `carpd status --json` against this daemon's control socket.
    pub fn status(&self) -> serde_json::Value {
        let sock = self.socket();
        let out = run(&[
            env!("CARGO_BIN_EXE_carpd"),
            "status",
            "--json",
            "--socket",
            sock.to_str().expect("utf-8 path"),
        ]);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("status output {out:?}: {e}"))
    }

    /// `ip netns exec` execs the program, so this is the daemon's own pid.
    pub fn pid(&self) -> i32 {
        i32::try_from(self.child.id()).expect("pid fits i32")
    }

    pub fn signal(&self, sig: Signal) {
        kill(Pid::from_raw(self.pid()), sig).expect("send signal");
    }

    pub fn sigterm(&self) {
        self.signal(Signal::SIGTERM);
    }

    pub fn sigkill(&self) {
        self.signal(Signal::SIGKILL);
    }

    pub fn sighup(&self) {
        self.signal(Signal::SIGHUP);
    }

    /// Waits up to `timeout` for the process to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        wait_until(timeout, Duration::from_millis(10), || self.is_exited());
        self.status
    }

    fn is_exited(&mut self) -> bool {
        if self.status.is_none() {
            self.status = self.child.try_wait().expect("try_wait");
        }
        self.status.is_some()
    }

    pub fn is_running(&mut self) -> bool {
        !self.is_exited()
    }

    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Current length of the log, to read only what comes after with
    /// [`Daemon::log_since`].
    pub fn log_mark(&self) -> usize {
        self.log().len()
    }

    pub fn log_since(&self, mark: usize) -> String {
        self.log().get(mark..).unwrap_or_default().to_string()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.status.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if thread::panicking() {
            let log = self.log();
            let lines: Vec<&str> = log.lines().collect();
            let skip = lines.len().saturating_sub(400);
            eprintln!(
                "----- log of {} ({} lines{}) -----",
                self.label,
                lines.len(),
                if skip > 0 { ", last 400 shown" } else { "" }
            );
            for line in &lines[skip..] {
                eprintln!("{line}");
            }
            eprintln!("----- end of log of {} -----", self.label);
        }
    }
}

/// Lines of `log` that report a state change of `vhid` on `iface` (text or
/// JSON format: the line names the VHID and an arrow between two states).
pub fn transitions<'a>(log: &'a str, iface: &str, vhid: u8) -> Vec<&'a str> {
    log.lines()
        .filter(|l| l.contains(iface) && l.contains("->") && mentions_vhid(l, vhid))
        .collect()
}

/// Whether `line` names `vhid` as `vhid N`, `vhid=N` or `"vhid":N`.
fn mentions_vhid(line: &str, vhid: u8) -> bool {
    let mut rest = line;
    while let Some(i) = rest.find("vhid") {
        rest = &rest[i + 4..];
        let digits: String = rest
            .trim_start_matches([' ', '=', ':', '"'])
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        if digits.parse::<u32>().ok() == Some(u32::from(vhid)) {
            return true;
        }
    }
    false
}

/// carpd's TOML configuration, built in code.
#[derive(Debug, Clone)]
pub struct Config {
    pub advbase: u8,
    pub advskew: u8,
    pub dead_ratio: u8,
    pub preempt: bool,
    pub password: String,
    pub interfaces: Vec<InterfaceConfig>,
}

#[derive(Debug, Clone)]
pub struct InterfaceConfig {
    pub name: String,
    pub advskew: Option<u8>,
    pub vhids: Vec<VhidConfig>,
}

#[derive(Debug, Clone)]
pub struct VhidConfig {
    pub id: u8,
    pub addresses: Vec<String>,
    pub advskew: Option<u8>,
    pub preempt: Option<bool>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            advbase: 1,
            advskew: 0,
            dead_ratio: 3,
            preempt: false,
            password: "secret".to_string(),
            interfaces: Vec::new(),
        }
    }
}

impl Config {
    pub fn advskew(mut self, advskew: u8) -> Self {
        self.advskew = advskew;
        self
    }

    pub fn preempt(mut self, preempt: bool) -> Self {
        self.preempt = preempt;
        self
    }

    pub fn dead_ratio(mut self, dead_ratio: u8) -> Self {
        self.dead_ratio = dead_ratio;
        self
    }

    /// Adds VHID `id` with `addresses` ("addr/prefix") on `iface`.
    pub fn vhid(mut self, iface: &str, id: u8, addresses: &[String]) -> Self {
        let vhid = VhidConfig {
            id,
            addresses: addresses.to_vec(),
            advskew: None,
            preempt: None,
        };
        match self.interfaces.iter_mut().find(|i| i.name == iface) {
            Some(i) => i.vhids.push(vhid),
            None => self.interfaces.push(InterfaceConfig {
                name: iface.to_string(),
                advskew: None,
                vhids: vec![vhid],
            }),
        }
        self
    }

    pub fn vhid_mut(&mut self, iface: &str, id: u8) -> &mut VhidConfig {
        self.interfaces
            .iter_mut()
            .filter(|i| i.name == iface)
            .flat_map(|i| i.vhids.iter_mut())
            .find(|v| v.id == id)
            .expect("vhid configured")
    }

    pub fn remove_vhid(&mut self, iface: &str, id: u8) {
        for i in self.interfaces.iter_mut().filter(|i| i.name == iface) {
            i.vhids.retain(|v| v.id != id);
        }
    }

    pub fn to_toml(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "advbase = {}", self.advbase);
        let _ = writeln!(s, "advskew = {}", self.advskew);
        let _ = writeln!(s, "dead_ratio = {}", self.dead_ratio);
        let _ = writeln!(s, "preempt = {}", self.preempt);
        let _ = writeln!(s, "password = {:?}", self.password);
        for iface in &self.interfaces {
            let _ = writeln!(s, "\n[[interface]]\nname = {:?}", iface.name);
            if let Some(skew) = iface.advskew {
                let _ = writeln!(s, "advskew = {skew}");
            }
            for v in &iface.vhids {
                let _ = writeln!(s, "\n[[interface.vhid]]\nid = {}", v.id);
                let addrs: Vec<String> = v.addresses.iter().map(|a| format!("{a:?}")).collect();
                let _ = writeln!(s, "addresses = [{}]", addrs.join(", "));
                if let Some(skew) = v.advskew {
                    let _ = writeln!(s, "advskew = {skew}");
                }
                if let Some(preempt) = v.preempt {
                    let _ = writeln!(s, "preempt = {preempt}");
                }
            }
        }
        s
    }
}

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
        let label = format!("node{i}-{}", COUNTER.fetch_add(1, Ordering::Relaxed));
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

/// One address appearing in or leaving a namespace.
#[derive(Debug, Clone)]
pub struct AddrEvent {
    pub at: Instant,
    pub node: usize,
    pub added: bool,
    pub addr: String,
}

/// Records every address change in a set of namespaces from the kernel's
/// own notifications (`ip monitor address`), so that no change is missed,
/// however short, and none costs a poll.
#[derive(Debug)]
pub struct Watcher {
    initial: Vec<BTreeSet<String>>,
    events: Arc<Mutex<Vec<AddrEvent>>>,
    monitors: Vec<Child>,
    readers: Vec<JoinHandle<()>>,
}

/// An address added and removed on `lo` to learn that a monitor is listening.
const PROBE: &str = "192.0.2.254";

impl Watcher {
    pub fn start(nss: &[&Netns]) -> Watcher {
        let events = Arc::new(Mutex::new(Vec::new()));
        let mut monitors = Vec::new();
        let mut readers = Vec::new();
        for (node, ns) in nss.iter().enumerate() {
            let mut child = Command::new("ip")
                .args(["-n", ns.name(), "-o", "monitor", "address"])
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn ip monitor");
            let stdout = child.stdout.take().expect("piped stdout");
            let events = Arc::clone(&events);
            readers.push(thread::spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    if let Some((added, addr)) = parse_monitor_line(&line) {
                        let mut ev = events.lock().expect("events lock");
                        ev.push(AddrEvent {
                            at: Instant::now(),
                            node,
                            added,
                            addr,
                        });
                    }
                }
            }));
            monitors.push(child);
        }
        let mut w = Watcher {
            initial: Vec::new(),
            events,
            monitors,
            readers,
        };
        // Only once a monitor reports the probe is it surely subscribed (it
        // may subscribe after a first probe, so probe until one is seen); the
        // state it then tracks starts from a dump taken after that.
        let probe = format!("{PROBE}/32");
        for (node, ns) in nss.iter().enumerate() {
            let seen = || {
                w.events
                    .lock()
                    .expect("events lock")
                    .iter()
                    .any(|e| e.node == node && e.addr == PROBE)
            };
            let started = Instant::now();
            loop {
                for op in ["add", "del"] {
                    ns.ip(&["addr", op, &probe, "dev", "lo"]);
                    wait_until(Duration::from_millis(300), Duration::from_millis(5), seen);
                }
                if seen() {
                    break;
                }
                assert!(
                    started.elapsed() < Duration::from_secs(20),
                    "ip monitor in {} never started",
                    ns.name()
                );
            }
        }
        // Changes from the dump on are kept: replaying one the dump already
        // shows is harmless, losing one is not.
        let dumped = Instant::now();
        w.initial = nss.iter().map(|ns| ns.addrs()).collect();
        w.events
            .lock()
            .expect("events lock")
            .retain(|e| e.at >= dumped);
        w
    }

    /// Everything recorded so far.
    pub fn history(&self) -> History {
        History {
            initial: self.initial.clone(),
            events: self.events.lock().expect("events lock").clone(),
        }
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        for m in &mut self.monitors {
            let _ = m.kill();
            let _ = m.wait();
        }
        for r in self.readers.drain(..) {
            let _ = r.join();
        }
    }
}

/// `[Deleted ]<idx>: <dev> inet[6] <addr>/<len> ...` -> (added, addr).
fn parse_monitor_line(line: &str) -> Option<(bool, String)> {
    let (added, rest) = match line.strip_prefix("Deleted ") {
        Some(rest) => (false, rest),
        None => (true, line),
    };
    let t: Vec<&str> = rest.split_whitespace().collect();
    if t.len() < 4 || !t[2].starts_with("inet") {
        return None;
    }
    Some((added, strip_prefix_len(t[3]).to_string()))
}

/// A recorded address history of a set of namespaces.
#[derive(Debug, Clone)]
pub struct History {
    initial: Vec<BTreeSet<String>>,
    events: Vec<AddrEvent>,
}

impl History {
    /// The owners of `addr` from the start of the recording, then after
    /// every change of them, with the time of the change (`None`: start).
    pub fn timeline(&self, addr: &str) -> Vec<(Option<Instant>, BTreeSet<usize>)> {
        let mut owners: BTreeSet<usize> = self
            .initial
            .iter()
            .enumerate()
            .filter(|(_, a)| a.contains(addr))
            .map(|(i, _)| i)
            .collect();
        let mut out = vec![(None, owners.clone())];
        for e in self.events.iter().filter(|e| e.addr == addr) {
            let changed = if e.added {
                owners.insert(e.node)
            } else {
                owners.remove(&e.node)
            };
            if changed {
                out.push((Some(e.at), owners.clone()));
            }
        }
        out
    }

    /// Every owner set of `addr` that held at some moment at or after
    /// `since` (the one current at `since` first).
    pub fn owner_sets_since(&self, addr: &str, since: Instant) -> Vec<BTreeSet<usize>> {
        let tl = self.timeline(addr);
        let first_after = tl
            .iter()
            .position(|(at, _)| at.is_some_and(|t| t >= since))
            .unwrap_or(tl.len());
        tl[first_after.saturating_sub(1)..]
            .iter()
            .map(|(_, o)| o.clone())
            .collect()
    }

    /// The most owners `addr` had at once at or after `since`.
    pub fn max_owners_since(&self, addr: &str, since: Instant) -> usize {
        self.owner_sets_since(addr, since)
            .iter()
            .map(BTreeSet::len)
            .max()
            .unwrap_or(0)
    }

    /// Whether `node` held `addr` at any moment at or after `since`.
    pub fn ever_owned_since(&self, node: usize, addr: &str, since: Instant) -> bool {
        self.owner_sets_since(addr, since)
            .iter()
            .any(|o| o.contains(&node))
    }

    /// How long after `since` `node` got `addr` (zero if it already held
    /// it); fails the test if it never did.
    pub fn time_to_own(&self, node: usize, addr: &str, since: Instant) -> Duration {
        self.first_owned_since(node, addr, since)
            .unwrap_or_else(|| panic!("node {node} never took {addr}: {:?}", self.timeline(addr)))
            - since
    }

    /// When `node` got `addr` first at or after `since` (already holding it
    /// at `since` counts as `since`).
    pub fn first_owned_since(&self, node: usize, addr: &str, since: Instant) -> Option<Instant> {
        let mut current = false;
        for (at, owners) in self.timeline(addr) {
            match at {
                Some(t) if t >= since => {
                    if current {
                        return Some(since);
                    }
                    if owners.contains(&node) {
                        return Some(t);
                    }
                }
                _ => current = owners.contains(&node),
            }
        }
        current.then_some(since)
    }

    /// Address changes at or after `since` whose address satisfies `pred`.
    pub fn changes_since(&self, since: Instant, pred: impl Fn(&str) -> bool) -> Vec<&AddrEvent> {
        self.events
            .iter()
            .filter(|e| e.at >= since && pred(&e.addr))
            .collect()
    }
}

/// The master-down time for `advskew` at advbase 1.
pub fn master_down(dead_ratio: u8, advskew: u8) -> Duration {
    Duration::from_secs(u64::from(dead_ratio)) + skew(advskew)
}

/// The advertisement interval for `advskew` at advbase 1.
pub fn adv_interval(advskew: u8) -> Duration {
    Duration::from_secs(1) + skew(advskew)
}

fn skew(advskew: u8) -> Duration {
    Duration::from_micros(u64::from(advskew) * 1_000_000 / 256)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn monitor_lines() {
        assert_eq!(
            parse_monitor_line(
                "3: eth0    inet 10.99.0.100/24 scope global secondary eth0\\       valid_lft forever preferred_lft forever"
            ),
            Some((true, "10.99.0.100".to_string()))
        );
        assert_eq!(
            parse_monitor_line("Deleted 1: lo    inet6 fd00::5/64 scope global \\       valid_lft"),
            Some((false, "fd00::5".to_string()))
        );
        assert_eq!(parse_monitor_line("garbage"), None);
    }

    #[test]
    fn vhid_mentions() {
        let l = "INFO carpd: eth0 vhid 17: BACKUP -> MASTER (master_down)";
        assert_eq!(transitions(l, "eth0", 17).len(), 1);
        assert!(transitions(l, "eth0", 1).is_empty());
        assert!(transitions(l, "eth1", 17).is_empty());
        assert!(mentions_vhid("interface=eth0 vhid=3 from=BACKUP", 3));
        assert!(mentions_vhid(r#"{"vhid":3,"iface":"eth0"}"#, 3));
        assert!(!mentions_vhid("vhid 31", 3));
    }
}
