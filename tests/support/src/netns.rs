//! Network namespace guards: every namespace the tests and the benchmark
//! create is named `carpt-<pid>-<n>-<tag>`, deleted on drop together with
//! every process still running in it, and listed while alive (see
//! [`live_namespaces`]) so that a signal handler can delete it too. The
//! root namespace is never touched.

use std::collections::BTreeSet;
use std::fs::File;
use std::io;
use std::path::Path;
use std::sync::Mutex;
use std::sync::Once;
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread;

use nix::sched::{CloneFlags, setns};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::Error;
use crate::command::{check_tool, require_tool, try_run};

/// Prefix of every namespace and scratch directory the test bed creates.
const PREFIX: &str = "carpt-";

static COUNTER: AtomicU32 = AtomicU32::new(0);
static REAP: Once = Once::new();
/// Namespaces this process has created and not yet deleted.
static LIVE: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// A name unique to this process and call: `carpt-<pid>-<n>-<tag>`.
pub fn unique(tag: &str) -> String {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{PREFIX}{}-{n}-{tag}", std::process::id())
}

/// The namespaces this process created that still exist, oldest first.
pub fn live_namespaces() -> Vec<String> {
    LIVE.lock().map(|l| l.clone()).unwrap_or_default()
}

/// Kills every process in namespace `name` and deletes it.
pub fn delete_namespace(name: &str) -> Result<(), Error> {
    kill_namespace_processes(name);
    let deleted = try_run(&["ip", "netns", "del", name]);
    if let Ok(mut live) = LIVE.lock() {
        live.retain(|n| n != name);
    }
    deleted.map(|_| ())
}

/// Deletes namespaces left behind by earlier processes that were killed
/// before their guards could run (only ours: the pid in the name is gone).
/// Runs once per process, before its first namespace is created.
pub fn reap_stale_namespaces() {
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
    pub fn try_new(tag: &str) -> Result<Netns, Error> {
        if !nix::unistd::geteuid().is_root() {
            return Err(Error::Setup(
                "network namespaces need root: run the end-to-end tests and the benchmark as root"
                    .into(),
            ));
        }
        check_tool("ip")?;
        check_tool("sysctl")?;
        reap_stale_namespaces();
        let name = unique(tag);
        try_run(&["ip", "netns", "add", &name])?;
        if let Ok(mut live) = LIVE.lock() {
            live.push(name.clone());
        }
        // The guard exists from here on, so a failure below still cleans up.
        let ns = Netns { name };
        ns.try_ip(&["link", "set", "lo", "up"])?;
        ns.try_exec(&[
            "sysctl",
            "-q",
            "-w",
            "net.ipv6.conf.all.accept_dad=0",
            "net.ipv6.conf.default.accept_dad=0",
        ])?;
        Ok(ns)
    }

    /// [`Netns::try_new`], failing the test on error.
    pub fn new(tag: &str) -> Netns {
        Netns::try_new(tag).unwrap_or_else(|e| panic!("{e}"))
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs `args` inside the namespace; a tool that is not installed is
    /// named with its Debian package.
    pub fn try_exec(&self, args: &[&str]) -> Result<String, Error> {
        let mut full = vec!["ip", "netns", "exec", &self.name];
        full.extend_from_slice(args);
        try_run(&full).map_err(|e| match args.first().map(|tool| check_tool(tool)) {
            // `ip netns exec` started, the tool inside it did not
            Some(Err(missing)) => missing,
            _ => e,
        })
    }

    /// [`Netns::try_exec`], failing the test on error.
    pub fn exec(&self, args: &[&str]) -> String {
        self.try_exec(args).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Runs `ip -n <ns> args...`.
    pub fn try_ip(&self, args: &[&str]) -> Result<String, Error> {
        let mut full = vec!["ip", "-n", &self.name];
        full.extend_from_slice(args);
        try_run(&full)
    }

    /// [`Netns::try_ip`], failing the test on error.
    pub fn ip(&self, args: &[&str]) -> String {
        self.try_ip(args).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Every address in the namespace as `(device, "addr/prefix")`.
    pub fn try_addr_entries(&self) -> Result<BTreeSet<(String, String)>, Error> {
        Ok(self
            .try_ip(&["-o", "addr", "show"])?
            .lines()
            .filter_map(|line| {
                let t: Vec<&str> = line.split_whitespace().collect();
                (t.len() >= 4).then(|| (t[1].to_string(), t[3].to_string()))
            })
            .collect())
    }

    /// [`Netns::try_addr_entries`], failing the test on error.
    pub fn addr_entries(&self) -> BTreeSet<(String, String)> {
        self.try_addr_entries().unwrap_or_else(|e| panic!("{e}"))
    }

    /// Every address in the namespace, without prefix length.
    pub fn try_addrs(&self) -> Result<BTreeSet<String>, Error> {
        Ok(self
            .try_addr_entries()?
            .into_iter()
            .map(|(_, cidr)| strip_prefix_len(&cidr).to_string())
            .collect())
    }

    /// [`Netns::try_addrs`], failing the test on error.
    pub fn addrs(&self) -> BTreeSet<String> {
        self.try_addrs().unwrap_or_else(|e| panic!("{e}"))
    }

    /// Whether `addr` (without prefix length) is configured in the namespace.
    pub fn has_addr(&self, addr: &str) -> bool {
        self.addrs().contains(addr)
    }

    /// Drops (or stops dropping) every CARP packet arriving in the namespace,
    /// to cut it off from its peers while its links stay up.
    pub fn block_carp(&self, block: bool) {
        require_tool("nft");
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
}

impl Drop for Netns {
    fn drop(&mut self) {
        if let Err(e) = delete_namespace(&self.name) {
            eprintln!("cleanup: {e}");
        }
    }
}

/// `"addr/prefix"` -> `"addr"`.
pub(crate) fn strip_prefix_len(cidr: &str) -> &str {
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

/// Runs `f` on a thread that has entered `ns`'s network namespace.
pub fn try_in_netns<T: Send + 'static>(
    ns: &Netns,
    f: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    let path = format!("/run/netns/{}", ns.name());
    thread::spawn(move || {
        let fd = File::open(&path)?;
        setns(&fd, CloneFlags::CLONE_NEWNET).map_err(io::Error::from)?;
        f()
    })
    .join()
    .map_err(|_| io::Error::other("namespace thread panicked"))?
}

/// [`try_in_netns`] for an `f` that cannot fail, failing the test if the
/// namespace cannot be entered.
pub fn in_netns<T: Send + 'static>(ns: &Netns, f: impl FnOnce() -> T + Send + 'static) -> T {
    try_in_netns(ns, move || Ok(f())).unwrap_or_else(|e| panic!("enter {}: {e}", ns.name()))
}
