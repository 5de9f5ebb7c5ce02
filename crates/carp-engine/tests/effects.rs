//! The engine's side effects against a real kernel: rtnetlink lookups,
//! address install/remove and link events, gratuitous ARP and unsolicited
//! neighbour advertisements on the wire, and hook commands.
//!
//! Network tests need root. Each one creates its own pair of network
//! namespaces joined by a veth pair (`va` in the first, `vb` in the second)
//! and runs the code under test on a thread that has entered the first
//! namespace, so nothing outside them is touched.

// Helpers outside #[test] functions are test code too: a failed setup step
// should fail the test loudly.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Read};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use carp_engine::announce::Announcer;
use carp_engine::hooks::{HookKind, HookOutcome, spawn_hook};
use carp_engine::netlink::{LinkEvent, Netlink, watch_links};
use carp_engine::{Error, HookSpec, VirtualAddr};
use carp_proto::State;

mod common;
use common::{MAC_A, MAC_A_STR, Netns, Pair, run, unique};

/// Generous bound for anything the kernel does asynchronously, so a loaded
/// 2-core machine does not fail the tests.
const PATIENCE: Duration = Duration::from_secs(15);

impl Pair {
    /// Wait for va's link-local address (it appears once the carrier is up).
    fn link_local_a(&self) -> Ipv6Addr {
        wait_for("a link-local address on va", || {
            let out = self
                .a
                .ip(&["-6", "-o", "addr", "show", "dev", "va", "scope", "link"]);
            if out.contains("tentative") {
                return None;
            }
            let addr = out
                .split_whitespace()
                .skip_while(|w| *w != "inet6")
                .nth(1)?;
            addr.split('/').next()?.parse().ok()
        })
    }
}

fn wait_for<T>(what: &str, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(value) = probe() {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn v4(s: &str, prefix_len: u8) -> VirtualAddr {
    VirtualAddr {
        addr: IpAddr::V4(s.parse().unwrap()),
        prefix_len,
    }
}

fn v6(s: &str, prefix_len: u8) -> VirtualAddr {
    VirtualAddr {
        addr: IpAddr::V6(s.parse().unwrap()),
        prefix_len,
    }
}

#[test]
fn link_reports_index_mac_state_and_addresses() {
    let pair = Pair::new();
    pair.a.ip(&["addr", "add", "192.0.2.1/24", "dev", "va"]);
    pair.a.ip(&["addr", "add", "192.0.2.2/24", "dev", "va"]);
    pair.a.ip(&["addr", "add", "2001:db8::1/64", "dev", "va"]);
    let link_local = pair.link_local_a();
    let index = pair.a.ifindex("va");

    let (up, gone) = pair.a.run(|| async {
        let nl = Netlink::connect().await.unwrap();
        let up = nl.link("va").await.unwrap();
        let gone = nl.link("nosuchlink").await.unwrap();
        (up, gone)
    });
    let up = up.expect("va exists");
    assert_eq!(up.index, index);
    assert_eq!(up.name, "va");
    assert_eq!(up.mac, MAC_A);
    assert!(up.up);
    // The secondary 192.0.2.2 is never the primary.
    assert_eq!(up.primary_v4, Some(Ipv4Addr::new(192, 0, 2, 1)));
    assert_eq!(up.link_local_v6, Some(link_local));
    assert_eq!(gone, None);

    // Carrier lost: the peer goes down.
    pair.b.ip(&["link", "set", "vb", "down"]);
    pair.a.run(|| wait_for_link_state("va", false));
    // Back, then administratively down.
    pair.b.ip(&["link", "set", "vb", "up"]);
    pair.a.run(|| wait_for_link_state("va", true));
    pair.a.ip(&["link", "set", "va", "down"]);
    pair.a.run(|| wait_for_link_state("va", false));
}

/// The kernel updates the operational state asynchronously: poll `link()`.
async fn wait_for_link_state(name: &'static str, up: bool) {
    let nl = Netlink::connect().await.unwrap();
    let deadline = Instant::now() + PATIENCE;
    loop {
        let link = nl.link(name).await.unwrap().unwrap();
        if link.up == up {
            return;
        }
        assert!(Instant::now() < deadline, "{name} never became up={up}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[test]
fn ipv4_addresses_are_added_and_removed_idempotently_with_label() {
    let pair = Pair::new();
    // Configured by someone else: must survive everything below.
    pair.a.ip(&["addr", "add", "198.51.100.1/24", "dev", "va"]);
    let index = pair.a.ifindex("va");
    let vip = v4("198.51.100.50", 32);

    let steps = pair.a.run(move || async move {
        let nl = Netlink::connect().await.unwrap();
        let added = nl.add_address(index, vip, Some("va:vip")).await.unwrap();
        let again = nl.add_address(index, vip, Some("va:vip")).await.unwrap();
        let present = nl.has_address(index, vip).await.unwrap();
        (nl, added, again, present)
    });
    let (nl, added, again, present) = steps;
    assert!(added, "first add installs");
    assert!(!again, "second add is a no-op");
    assert!(present);
    let shown = pair.a.ip(&["-4", "-o", "addr", "show", "dev", "va"]);
    let line = shown
        .lines()
        .find(|l| l.contains("198.51.100.50/32"))
        .unwrap_or_else(|| panic!("VIP missing: {shown}"));
    assert!(line.contains("va:vip"), "label missing: {line}");
    drop(nl);

    let (removed, removed_again, present, other_prefix, bad_labels) =
        pair.a.run(move || async move {
            let nl = Netlink::connect().await.unwrap();
            let removed = nl.del_address(index, vip).await.unwrap();
            let removed_again = nl.del_address(index, vip).await.unwrap();
            let present = nl.has_address(index, vip).await.unwrap();
            // Same address, other prefix length: not ours, left alone.
            let other_prefix = nl.del_address(index, v4("198.51.100.1", 32)).await.unwrap();
            let mut bad_labels = Vec::new();
            for label in ["vb:vip", "vavip", "va:0123456789abc"] {
                bad_labels.push(nl.add_address(index, vip, Some(label)).await);
            }
            (removed, removed_again, present, other_prefix, bad_labels)
        });
    assert!(removed);
    assert!(!removed_again);
    assert!(!present);
    assert!(!other_prefix);
    for result in bad_labels {
        assert!(
            matches!(result, Err(Error::InvalidLabel { .. })),
            "{result:?}"
        );
    }
    let shown = pair.a.ip(&["-4", "-o", "addr", "show", "dev", "va"]);
    assert!(shown.contains("198.51.100.1/24"), "{shown}");
    assert!(!shown.contains("198.51.100.50"), "{shown}");
}

#[test]
fn ipv6_addresses_are_never_tentative() {
    let pair = Pair::new();
    pair.link_local_a();
    // Turn duplicate address detection back on for va, slowly (5 probes), so
    // an address added without NODAD would visibly stay tentative.
    pair.a
        .exec(&["sysctl", "-qw", "net.ipv6.conf.va.accept_dad=1"]);
    pair.a
        .exec(&["sysctl", "-qw", "net.ipv6.conf.va.dad_transmits=5"]);
    let index = pair.a.ifindex("va");
    let vip = v6("2001:db8::50", 64);

    let (added, again, present) = pair.a.run(move || async move {
        let nl = Netlink::connect().await.unwrap();
        let added = nl.add_address(index, vip, Some("ignored")).await.unwrap();
        let again = nl.add_address(index, vip, None).await.unwrap();
        let present = nl.has_address(index, vip).await.unwrap();
        (added, again, present)
    });
    assert!(added && !again && present);
    // The control: the same kernel makes a plain address tentative.
    pair.a.ip(&["addr", "add", "2001:db8::99/64", "dev", "va"]);
    let shown = pair.a.ip(&["-6", "-o", "addr", "show", "dev", "va"]);
    let ours = shown
        .lines()
        .find(|l| l.contains("2001:db8::50/64"))
        .unwrap_or_else(|| panic!("VIP missing: {shown}"));
    assert!(!ours.contains("tentative"), "{ours}");
    let control = shown
        .lines()
        .find(|l| l.contains("2001:db8::99/64"))
        .unwrap();
    assert!(
        control.contains("tentative"),
        "DAD is not active: {control}"
    );

    let (removed, removed_again, control_kept) = pair.a.run(move || async move {
        let nl = Netlink::connect().await.unwrap();
        let removed = nl.del_address(index, vip).await.unwrap();
        let removed_again = nl.del_address(index, vip).await.unwrap();
        let control_kept = nl.has_address(index, v6("2001:db8::99", 64)).await.unwrap();
        (removed, removed_again, control_kept)
    });
    assert!(removed && !removed_again && control_kept);
}

#[test]
fn link_events_follow_the_link() {
    let pair = Pair::new();
    let index = pair.a.ifindex("va");
    let a_name = pair.a.name.clone();

    let events = pair.a.run(move || async move {
        let mut rx = watch_links().await.unwrap();
        let set = |state: &str| {
            run("ip", &["-n", &a_name, "link", "set", "va", state]);
        };
        // Collect events for va until one with the wanted state arrives.
        async fn until(
            rx: &mut tokio::sync::mpsc::Receiver<LinkEvent>,
            index: u32,
            up: bool,
            seen: &mut Vec<LinkEvent>,
        ) {
            loop {
                let event = tokio::time::timeout(PATIENCE, rx.recv())
                    .await
                    .unwrap_or_else(|_| panic!("no link event with up={up}; got {seen:?}"))
                    .expect("event channel open");
                if event.index != index {
                    continue;
                }
                let reached = event.up == up;
                seen.push(event);
                if reached {
                    return;
                }
            }
        }
        let mut seen = Vec::new();
        set("down");
        until(&mut rx, index, false, &mut seen).await;
        set("up");
        until(&mut rx, index, true, &mut seen).await;
        seen
    });
    let event = |up| LinkEvent {
        index,
        name: Some("va".to_string()),
        up,
        removed: false,
    };
    assert_eq!(events.first(), Some(&event(false)));
    assert_eq!(events.last(), Some(&event(true)));
    // Only changes are delivered.
    for window in events.windows(2) {
        assert_ne!(window[0].up, window[1].up, "{events:?}");
    }
}

/// `tcpdump -c1` in a namespace, killed on drop if it is still running.
struct Capture {
    child: Child,
}

impl Capture {
    /// Start capturing and wait until tcpdump is really listening.
    fn start(ns: &Netns, dev: &str, filter: &str) -> Capture {
        let mut child = Command::new("ip")
            .args([
                "netns", "exec", &ns.name, "tcpdump", "-c1", "-l", "-n", "-e", "-v",
            ])
            .args(["-i", dev, filter])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stderr = BufReader::new(child.stderr.take().unwrap());
        let mut capture = Capture { child };
        let mut line = String::new();
        loop {
            line.clear();
            let n = stderr.read_line(&mut line).unwrap();
            if n == 0 {
                let _ = capture.child.wait();
                panic!("tcpdump exited before listening");
            }
            if line.contains("listening on") {
                break;
            }
        }
        capture
    }

    /// The captured packet, as tcpdump prints it.
    fn finish(mut self) -> String {
        let deadline = Instant::now() + PATIENCE;
        while self.child.try_wait().unwrap().is_none() {
            assert!(Instant::now() < deadline, "nothing captured");
            std::thread::sleep(Duration::from_millis(50));
        }
        let mut out = String::new();
        self.child
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut out)
            .unwrap();
        out
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn gratuitous_arp_is_broadcast_to_the_segment() {
    let pair = Pair::new();
    let index = pair.a.ifindex("va");
    let capture = Capture::start(&pair.b, "vb", "arp");
    pair.a.run(move || async move {
        let announcer = Announcer::new().unwrap();
        announcer
            .gratuitous_arp(index, MAC_A, Ipv4Addr::new(192, 0, 2, 77))
            .unwrap();
    });
    let seen = capture.finish();
    assert!(
        seen.contains(&format!("{MAC_A_STR} > ff:ff:ff:ff:ff:ff")),
        "{seen}"
    );
    assert!(
        seen.contains("Request who-has 192.0.2.77 tell 192.0.2.77"),
        "{seen}"
    );
}

#[test]
fn unsolicited_na_is_sent_to_all_nodes() {
    let pair = Pair::new();
    let link_local = pair.link_local_a();
    let index = pair.a.ifindex("va");
    // Only neighbour advertisements (ICMPv6 type 136 right after the fixed
    // IPv6 header).
    let capture = Capture::start(&pair.b, "vb", "icmp6 and ip6[40] == 136");
    pair.a.run(move || async move {
        let announcer = Announcer::new().unwrap();
        announcer
            .unsolicited_na(index, MAC_A, "2001:db8::77".parse().unwrap())
            .unwrap();
    });
    let seen = capture.finish();
    for expected in [
        format!("{MAC_A_STR} > 33:33:00:00:00:01"),
        "hlim 255".to_owned(),
        format!("{link_local} > ff02::1"),
        "neighbor advertisement".to_owned(),
        "tgt is 2001:db8::77".to_owned(),
        "Flags [override]".to_owned(),
        // tcpdump calls option 2 "destination link-address".
        format!("link-address option (2), length 8 (1): {MAC_A_STR}"),
    ] {
        assert!(seen.contains(&expected), "missing {expected:?} in {seen}");
    }
    assert!(seen.contains("icmp6 sum ok"), "{seen}");
}

/// A scratch directory for hook scripts, removed on drop.
struct Scratch {
    dir: PathBuf,
}

impl Scratch {
    fn new() -> Scratch {
        let dir = std::env::temp_dir().join(unique("hooks"));
        std::fs::create_dir(&dir).unwrap();
        Scratch { dir }
    }

    fn script(&self, name: &str, body: &str) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let path = self.dir.join(name);
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn hook_spec(up: &Path, timeout: Duration) -> HookSpec {
    HookSpec {
        up: Some(up.to_owned()),
        down: None,
        xparam: Some("extra param".into()),
        timeout,
        down_at_start: false,
        down_on_exit: false,
    }
}

/// Spawn the up hook and wait for its outcome.
async fn run_up_hook(spec: &HookSpec, addresses: &[IpAddr]) -> HookOutcome {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let task = spawn_hook(
        spec,
        HookKind::Up,
        "eth7",
        42,
        State::Master,
        addresses,
        move |outcome| {
            let _ = tx.send(outcome);
        },
    )
    .expect("an up hook is configured");
    let outcome = tokio::time::timeout(PATIENCE * 2, rx)
        .await
        .expect("hook outcome in time")
        .unwrap();
    task.await.unwrap();
    outcome
}

#[tokio::test]
async fn hook_gets_ucarp_argv_and_environment() {
    let scratch = Scratch::new();
    let out = scratch.path("out");
    let script = scratch.script(
        "up.sh",
        &format!(
            "for a in \"$0\" \"$@\"; do echo \"arg=$a\"; done > {out}\n\
             echo \"CARP_INTERFACE=$CARP_INTERFACE\" >> {out}\n\
             echo \"CARP_VHID=$CARP_VHID\" >> {out}\n\
             echo \"CARP_STATE=$CARP_STATE\" >> {out}\n\
             echo \"CARP_ADDRESSES=$CARP_ADDRESSES\" >> {out}\n\
             read line && echo \"stdin=$line\" >> {out}\n\
             exit 0",
            out = out.display()
        ),
    );
    let spec = hook_spec(&script, Duration::from_secs(30));
    let addresses: Vec<IpAddr> = vec![
        "10.0.0.100".parse().unwrap(),
        "2001:db8::100".parse().unwrap(),
    ];
    assert_eq!(run_up_hook(&spec, &addresses).await, HookOutcome::Success);
    let written = std::fs::read_to_string(&out).unwrap();
    let expected = format!(
        "arg={}\narg=eth7\narg=10.0.0.100\narg=extra param\n\
         CARP_INTERFACE=eth7\nCARP_VHID=42\nCARP_STATE=MASTER\n\
         CARP_ADDRESSES=10.0.0.100 2001:db8::100\n",
        script.display()
    );
    // stdin is /dev/null: `read` fails and writes nothing.
    assert_eq!(written, expected);
}

#[tokio::test]
async fn hook_without_xparam_gets_two_arguments() {
    let scratch = Scratch::new();
    let out = scratch.path("out");
    let script = scratch.script("up.sh", &format!("echo \"$#:$*\" > {}", out.display()));
    let mut spec = hook_spec(&script, Duration::from_secs(30));
    spec.xparam = None;
    let addresses: Vec<IpAddr> = vec!["10.0.0.100".parse().unwrap()];
    assert_eq!(run_up_hook(&spec, &addresses).await, HookOutcome::Success);
    assert_eq!(
        std::fs::read_to_string(&out).unwrap(),
        "2:eth7 10.0.0.100\n"
    );
}

#[tokio::test]
async fn failing_hook_reports_its_exit_code() {
    let scratch = Scratch::new();
    let script = scratch.script("up.sh", "exit 3");
    let spec = hook_spec(&script, Duration::from_secs(30));
    let outcome = run_up_hook(&spec, &["10.0.0.1".parse().unwrap()]).await;
    assert_eq!(outcome, HookOutcome::Failed(Some(3)));
}

#[tokio::test]
async fn missing_hook_is_a_spawn_error() {
    let scratch = Scratch::new();
    let spec = hook_spec(&scratch.path("does-not-exist"), Duration::from_secs(30));
    let outcome = run_up_hook(&spec, &["10.0.0.1".parse().unwrap()]).await;
    assert!(matches!(outcome, HookOutcome::SpawnError(_)), "{outcome:?}");
}

#[tokio::test]
async fn unconfigured_hook_is_not_run() {
    let spec = HookSpec::default();
    let task = spawn_hook(&spec, HookKind::Down, "eth0", 1, State::Backup, &[], |_| {
        panic!("no hook should run")
    });
    assert!(task.is_none());
}

fn process_is_gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        // A zombie is dead; only its parent's bookkeeping is left.
        Ok(stat) => stat
            .rsplit(')')
            .next()
            .is_some_and(|rest| rest.trim_start().starts_with('Z')),
    }
}

#[tokio::test]
async fn hanging_hook_and_its_children_are_killed_after_the_timeout() {
    let scratch = Scratch::new();
    let pids = scratch.path("pids");
    let script = scratch.script(
        "up.sh",
        &format!(
            "sleep 1000 &\necho \"$$ $!\" > {}.tmp\nmv {0}.tmp {0}\nwait",
            pids.display()
        ),
    );
    let spec = hook_spec(&script, Duration::from_secs(2));
    let started = Instant::now();
    let outcome = run_up_hook(&spec, &["10.0.0.1".parse().unwrap()]).await;
    let elapsed = started.elapsed();
    assert_eq!(outcome, HookOutcome::TimedOut);
    assert!(elapsed >= Duration::from_secs(2), "{elapsed:?}");
    let pids: Vec<u32> = std::fs::read_to_string(&pids)
        .unwrap()
        .split_whitespace()
        .map(|p| p.parse().unwrap())
        .collect();
    assert_eq!(pids.len(), 2);
    for pid in pids {
        let deadline = Instant::now() + PATIENCE;
        while !process_is_gone(pid) {
            assert!(Instant::now() < deadline, "process {pid} survived");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

#[tokio::test]
async fn spawn_hook_returns_at_once_for_a_slow_hook() {
    let scratch = Scratch::new();
    let script = scratch.script("up.sh", "sleep 3");
    let spec = hook_spec(&script, Duration::from_secs(60));
    let (tx, rx) = tokio::sync::oneshot::channel();
    let started = Instant::now();
    let task = spawn_hook(
        &spec,
        HookKind::Up,
        "eth0",
        1,
        State::Master,
        &["10.0.0.1".parse().unwrap()],
        move |outcome| {
            let _ = tx.send((outcome, Instant::now()));
        },
    )
    .unwrap();
    let returned = started.elapsed();
    assert!(returned < Duration::from_secs(1), "{returned:?}");
    let (outcome, finished) = tokio::time::timeout(PATIENCE * 2, rx)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(outcome, HookOutcome::Success);
    assert!(finished - started >= Duration::from_secs(3));
    task.await.unwrap();
}
