//! Network namespaces for the engine's kernel tests.
//!
//! Every namespace is named `carpeng-<test binary>-<pid>-<n>-<tag>` and
//! deleted on drop (also when a test panics), so nothing outside them is
//! touched. Code under test runs on a thread that entered one of them.

// Each test binary uses a different part of this module.
#![allow(dead_code)]

use std::future::Future;
use std::os::fd::AsRawFd;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The MAC address of `va`, the first end of a [`Pair`].
pub const MAC_A: [u8; 6] = [0x02, 0x00, 0x00, 0x00, 0x00, 0x0a];
pub const MAC_A_STR: &str = "02:00:00:00:00:0a";

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A name unique to this test binary, process and call.
pub fn unique(tag: &str) -> String {
    format!(
        "carpeng-{}-{}-{}-{tag}",
        env!("CARGO_CRATE_NAME"),
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// Runs a command to completion and returns its stdout; fails the test if
/// the command fails.
pub fn run(program: &str, args: &[&str]) -> String {
    let out = Command::new(program).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Fails the calling test unless it runs as root: these tests create
/// network namespaces, and a test that passes without running proves nothing.
pub fn require_root() {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    assert!(
        root,
        "the engine's kernel tests create network namespaces: run them as root"
    );
}

/// A network namespace, deleted on drop.
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new(tag: &str) -> Netns {
        require_root();
        let name = unique(tag);
        run("ip", &["netns", "add", &name]);
        let ns = Netns { name };
        // No duplicate address detection: addresses are usable at once.
        ns.exec(&["sysctl", "-qw", "net.ipv6.conf.all.accept_dad=0"]);
        ns.exec(&["sysctl", "-qw", "net.ipv6.conf.default.accept_dad=0"]);
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    pub fn ip(&self, args: &[&str]) -> String {
        let mut all = vec!["-n", &self.name];
        all.extend_from_slice(args);
        run("ip", &all)
    }

    pub fn exec(&self, args: &[&str]) -> String {
        let mut all = vec!["netns", "exec", &self.name];
        all.extend_from_slice(args);
        run("ip", &all)
    }

    pub fn ifindex(&self, dev: &str) -> u32 {
        let out = self.ip(&["-o", "link", "show", "dev", dev]);
        out.split(':').next().unwrap().trim().parse().unwrap()
    }

    pub fn has_addr(&self, dev: &str, addr: &str) -> bool {
        self.ip(&["-o", "addr", "show", "dev", dev])
            .split_whitespace()
            .any(|w| w.split('/').next() == Some(addr))
    }

    /// Spawn `f` on a thread inside this namespace, with its own
    /// current-thread runtime: sockets opened there belong to the namespace.
    pub fn spawn<T, Fut>(
        &self,
        f: impl FnOnce() -> Fut + Send + 'static,
    ) -> std::thread::JoinHandle<T>
    where
        T: Send + 'static,
        Fut: Future<Output = T>,
    {
        let path = format!("/var/run/netns/{}", self.name);
        std::thread::spawn(move || {
            let file = std::fs::File::open(&path).unwrap();
            // SAFETY: plain syscall on a valid, open descriptor; it only
            // changes the network namespace of this thread.
            let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(f())
        })
    }

    /// Like [`Netns::spawn`], and wait for the result; a panic on that
    /// thread fails the caller.
    pub fn run<T, Fut>(&self, f: impl FnOnce() -> Fut + Send + 'static) -> T
    where
        T: Send + 'static,
        Fut: Future<Output = T>,
    {
        match self.spawn(f).join() {
            Ok(value) => value,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// Two namespaces joined by a veth pair `va` (MAC_A, in `a`) <-> `vb` (in
/// `b`), both up. The `a` side is dropped first so the veth goes away with
/// it.
pub struct Pair {
    pub a: Netns,
    pub b: Netns,
}

impl Pair {
    pub fn new() -> Pair {
        let a = Netns::new("a");
        let b = Netns::new("b");
        a.ip(&[
            "link", "add", "va", "address", MAC_A_STR, "type", "veth", "peer", "name", "vb",
            "netns", &b.name,
        ]);
        a.ip(&["link", "set", "va", "up"]);
        b.ip(&["link", "set", "vb", "up"]);
        Pair { a, b }
    }
}
