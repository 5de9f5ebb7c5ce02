//! Trackers and interface groups between two carpd nodes: a failing health
//! check, a tracked uplink losing its link and a demotion file each move
//! every VIP of the group they demote to the healthy node at once, whose
//! preemption is off (the demote byte wins on its own), and the VIPs come
//! back through the first node's preemption once it is healthy again. A
//! VHID outside the group stays where it is.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::thread::sleep;
use std::time::{Duration, Instant};

use carpd_testbed::{Daemon, Lan, Scratch, Watcher, wait_until};

/// VHIDs 1..=3 are in group "fw"; VHID 4 is not.
const FW: [u8; 3] = [1, 2, 3];
const OTHER: u8 = 4;

/// A demotion reaches the peer with the next advertisement (1 s), the check
/// needs two failed runs 300 ms apart; the rest is slack for a busy machine.
const MOVE: Duration = Duration::from_secs(8);

fn vip(vhid: u8) -> String {
    format!("10.99.0.{}", 100 + vhid)
}

/// Node `i`: node 0 is preferred (advskew 0, preemption on), node 1 is the
/// backup without preemption. Both track their health check (a file the
/// test creates makes it fail) and their uplink eth1 for group "fw", and a
/// demotion file for every VHID.
fn config(i: usize, dir: &Path) -> String {
    let (advskew, preempt) = if i == 0 { (0, true) } else { (100, false) };
    let fail = dir.join(format!("fail{i}"));
    let demote = dir.join(format!("demote{i}"));
    let mut s = format!(
        r#"password = "track"
advskew = {advskew}
preempt = {preempt}

[[track]]
command = "test ! -e {fail}"
interval = "300ms"
timeout = "2s"
rise = 2
fall = 2
weight = 50
groups = ["fw"]

[[track]]
link = "eth1"
groups = ["fw"]

[[track]]
file = "{demote}"
interval = "300ms"

[[interface]]
name = "eth0"
"#,
        fail = fail.display(),
        demote = demote.display(),
    );
    for v in FW {
        s.push_str(&format!(
            "\n[[interface.vhid]]\nid = {v}\naddresses = [\"{}/24\"]\ngroups = [\"fw\"]\n",
            vip(v)
        ));
    }
    s.push_str(&format!(
        "\n[[interface.vhid]]\nid = {OTHER}\naddresses = [\"{}/24\"]\n",
        vip(OTHER)
    ));
    s
}

/// Owner of each VIP 1..=4 (`None` unless exactly one).
fn owners(lan: &Lan) -> Vec<Option<usize>> {
    (1..=4)
        .map(|v| match lan.owners(&vip(v)).as_slice() {
            [one] => Some(*one),
            _ => None,
        })
        .collect()
}

/// Waits until VIPs 1..=3 are on `fw` and VIP 4 on `other`, then checks
/// that no VIP has two owners for a while.
fn expect(lan: &Lan, w: &Watcher, fw: usize, other: usize, within: Duration, what: &str) {
    let want: Vec<Option<usize>> = vec![Some(fw), Some(fw), Some(fw), Some(other)];
    let mut last = Vec::new();
    let took = wait_until(within, Duration::from_millis(50), || {
        last = owners(lan);
        last == want
    });
    assert!(
        took.is_some(),
        "{what}: owners {last:?}, expected {want:?} within {within:?}"
    );
    eprintln!("{what}: {took:?}");
    let since = Instant::now();
    sleep(Duration::from_secs(2));
    assert_eq!(owners(lan), want, "{what}: changed again");
    let h = w.history();
    for v in 1..=4 {
        assert_eq!(
            h.max_owners_since(&vip(v), since),
            1,
            "{what}: {}: {:?}",
            vip(v),
            h.timeline(&vip(v))
        );
    }
}

#[test]
fn health_check_link_and_file_move_the_whole_group() {
    let dir = Scratch::new();
    let lan = Lan::new(2, 2);
    let w = Watcher::start(&lan.refs());
    let cfgs: Vec<_> = (0..2)
        .map(|i| dir.write(&format!("node{i}.toml"), &config(i, dir.path())))
        .collect();
    let n0 = Daemon::carpd(&lan.hosts[0], "node0", dir.path(), &cfgs[0], &[]);
    expect(&lan, &w, 0, 0, Duration::from_secs(15), "node 0 alone");
    let mut n1 = Daemon::carpd(&lan.hosts[1], "node1", dir.path(), &cfgs[1], &[]);
    sleep(Duration::from_secs(3));
    expect(&lan, &w, 0, 0, MOVE, "node 1 started as backup");
    let group_moves = n1.log_mark();

    // The health check fails on node 0: the group goes, VHID 4 stays.
    dir.write("fail0", "");
    expect(&lan, &w, 1, 0, MOVE, "health check failing");
    // Node 1 took over because node 0 advertised a higher demotion, not by
    // preemption (it has none).
    let log = n1.log_since(group_moves);
    assert!(log.contains("peer_demoted"), "{log}");
    std::fs::remove_file(dir.path().join("fail0")).unwrap();
    expect(&lan, &w, 0, 0, MOVE, "health check passes again");

    // The tracked uplink of node 0 loses its link.
    lan.set_port(0, 1, false);
    expect(&lan, &w, 1, 0, MOVE, "uplink down");
    lan.set_port(0, 1, true);
    expect(&lan, &w, 0, 0, MOVE, "uplink up");

    // A demotion file covers every VHID, VHID 4 too.
    dir.write("demote0", "20\n");
    expect(&lan, &w, 1, 1, MOVE, "demotion file 20");
    dir.write("demote0", "0\n");
    expect(&lan, &w, 0, 0, MOVE, "demotion file 0");

    // The operator demotes the group by name: the group goes, VHID 4 stays;
    // promoting it brings the group back.
    let socket = n0.socket();
    control(&socket, &["demote", "--group", "fw", "--by", "10"]);
    expect(&lan, &w, 1, 0, MOVE, "operator demotes group fw");
    control(&socket, &["promote", "--group", "fw", "--by", "10"]);
    expect(&lan, &w, 0, 0, MOVE, "operator promotes group fw");
    let refused = std::process::Command::new(carpd_testbed::carpd_exe())
        .args(["demote", "--group", "nosuch", "--socket"])
        .arg(&socket)
        .output()
        .unwrap();
    assert!(
        !refused.status.success(),
        "a group without VHIDs is refused"
    );
    assert!(n1.is_running());
}

/// `carpd <args>` against the daemon's control socket; must succeed.
fn control(socket: &Path, args: &[&str]) {
    let out = std::process::Command::new(carpd_testbed::carpd_exe())
        .args(args)
        .arg("--socket")
        .arg(socket)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "carpd {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A tracked link that does not exist is refused at start, with one line.
#[test]
fn missing_tracked_interface_is_refused() {
    let dir = Scratch::new();
    let lan = Lan::new(1, 1);
    let cfg = dir.write(
        "carpd.toml",
        "password = \"x\"\n[[track]]\nlink = \"nosuch0\"\n[[interface]]\nname = \"eth0\"\n[[interface.vhid]]\nid = 1\naddresses = [\"10.99.0.101/24\"]\n",
    );
    let mut d = Daemon::carpd(&lan.hosts[0], "node0", dir.path(), &cfg, &[]);
    let status = d.wait_exit(Duration::from_secs(10)).expect("carpd exits");
    assert!(!status.success());
    assert!(
        d.log().contains("interface nosuch0 not found"),
        "{}",
        d.log()
    );
    assert!(!lan.hosts[0].has_addr(&vip(1)));
}
