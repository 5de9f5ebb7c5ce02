//! The BSD rules between carpd nodes and against crafted peers: several
//! addresses per VHID with the BSD HMAC, IPv6-only and dual-stack VHIDs
//! failing over, the demote byte sent (after send errors) and honoured, the
//! bow-out honoured, and VRRP packets with the same id ignored and counted.
//!
//! Crafted peers are a few lines of Python on a raw socket in a namespace of
//! their own, signing their advertisements with the BSD HMAC.

// A test binary: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::thread::sleep;
use std::time::{Duration, Instant};

use carpd_testbed::{Daemon, Lan, Netns, Scratch, Watcher, wait_until};

const MARGIN: Duration = Duration::from_millis(1500);

/// Sends CARP advertisements (`carp`) or VRRPv2/v3 packets (`vrrp2`,
/// `vrrp3`) to 224.0.0.18 with TTL 255.
/// argv: mode key vhid vips(comma) demote advbase advskew count period_s
const INJECT_PY: &str = r#"
import hashlib, hmac, ipaddress, os, socket, struct, sys, time
mode, key, vhid = sys.argv[1], sys.argv[2].encode()[:19], int(sys.argv[3])
vips = [ipaddress.ip_address(a) for a in sys.argv[4].split(",")]
demote, advbase, advskew = int(sys.argv[5]), int(sys.argv[6]), int(sys.argv[7])
count, period = int(sys.argv[8]), float(sys.argv[9])

def csum(b):
    if len(b) % 2:
        b += b"\0"
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    while s > 0xFFFF:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF

def packet(counter):
    if mode == "carp":
        msg = bytes([2, 1, vhid])
        msg += b"".join(a.packed for a in sorted(a for a in vips if a.version == 4))
        msg += b"".join(a.packed for a in sorted(a for a in vips if a.version == 6))
        msg += counter.to_bytes(8, "big")
        mac = hmac.new(key, msg, hashlib.sha1).digest()
        p = bytes([0x21, vhid, advskew, 7, demote, advbase, 0, 0]) + counter.to_bytes(8, "big") + mac
    elif mode == "vrrp2":
        p = bytes([0x21, vhid, 200, 1, 0, 1, 0, 0]) + vips[0].packed + b"\0" * 8
    else:
        p = bytes([0x31, vhid, 200, 1, 0, 100, 0, 0]) + vips[0].packed
    c = csum(p)
    return p[:6] + struct.pack("!H", c) + p[8:]

s = socket.socket(socket.AF_INET, socket.SOCK_RAW, 112)
s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 255)
s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, b"eth0")
counter = int.from_bytes(os.urandom(8), "big")
for i in range(count):
    s.sendto(packet(counter + i), ("224.0.0.18", 0))
    if i + 1 < count:
        time.sleep(period)
"#;

/// A crafted peer's packets.
struct Inject<'a> {
    mode: &'a str,
    key: &'a str,
    vhid: u8,
    vips: &'a str,
    demote: u8,
    advbase: u8,
    advskew: u8,
    count: u32,
}

impl Inject<'_> {
    fn args(&self) -> Vec<String> {
        vec![
            "-c".into(),
            INJECT_PY.into(),
            self.mode.into(),
            self.key.into(),
            self.vhid.to_string(),
            self.vips.into(),
            self.demote.to_string(),
            self.advbase.to_string(),
            self.advskew.to_string(),
            self.count.to_string(),
            "1".into(),
        ]
    }

    /// Sends everything, one packet a second, and returns.
    fn run(&self, ns: &Netns) {
        let mut full = vec!["python3".to_string()];
        full.extend(self.args());
        let refs: Vec<&str> = full.iter().map(String::as_str).collect();
        ns.exec(&refs);
    }

    /// Sends in the background.
    fn spawn(&self, ns: &Netns, dir: &Path, label: &str) -> Daemon {
        let args = self.args();
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        Daemon::spawn(ns, label, dir, "python3", &refs)
    }
}

/// A BSD-mode config on eth0: `vhids` as (id, addresses).
fn config(advskew: u8, dead_ratio: u8, preempt: bool, vhids: &[(u8, &[&str])]) -> String {
    let mut s = format!(
        "advskew = {advskew}\ndead_ratio = {dead_ratio}\npreempt = {preempt}\n\
         password = \"bsd-secret\"\n\n[[interface]]\nname = \"eth0\"\n"
    );
    for (id, addrs) in vhids {
        let a: Vec<String> = addrs.iter().map(|a| format!("{a:?}")).collect();
        s.push_str(&format!(
            "\n[[interface.vhid]]\nid = {id}\naddresses = [{}]\n",
            a.join(", ")
        ));
    }
    s
}

fn start(lan: &Lan, dir: &Scratch, i: usize, label: &str, toml: &str, extra: &[&str]) -> Daemon {
    let path = dir.write(&format!("{label}.toml"), toml);
    Daemon::carpd(&lan.hosts[i], label, dir.path(), &path, extra)
}

fn bare(a: &str) -> &str {
    a.split('/').next().unwrap()
}

/// Waits until host set `expected` holds every one of `addrs`.
fn wait_all(lan: &Lan, addrs: &[&str], expected: &[usize], timeout: Duration, what: &str) {
    let mut last = Vec::new();
    let ok = wait_until(timeout, Duration::from_millis(20), || {
        last = addrs.iter().map(|a| lan.owners(bare(a))).collect();
        last.iter().all(|o| o == expected)
    });
    assert!(
        ok.is_some(),
        "{what}: owners {last:?} of {addrs:?}, expected {expected:?}"
    );
}

const V4_MULTI: &[&str] = &["10.99.0.103/24", "10.99.0.101/24", "10.99.0.102/24"];
const V6_ONLY: &[&str] = &["fd00:99::3/64", "fd00:99::2/64"];
const DUAL: &[&str] = &["10.99.0.110/24", "fd00:99::10/64", "fd00:99::11/64"];

/// Several IPv4 addresses, IPv6 only, dual stack: elected, stable, SIGKILL
/// failover, preemption back, and the bow-out on SIGTERM honoured at once.
#[test]
fn several_addresses_ipv6_and_dual_stack_fail_over() {
    let dir = Scratch::new();
    let lan = Lan::new(2, 1);
    let vhids: &[(u8, &[&str])] = &[(1, V4_MULTI), (2, V6_ONLY), (3, DUAL)];
    let all: Vec<&str> = vhids.iter().flat_map(|(_, a)| a.iter().copied()).collect();
    let w = Watcher::start(&lan.refs());

    let mut d0 = start(&lan, &dir, 0, "a1", &config(0, 3, false, vhids), &[]);
    wait_all(
        &lan,
        &all,
        &[0],
        Duration::from_secs(3) + 2 * MARGIN,
        "start",
    );
    let joined = Instant::now();
    let mut d1 = start(&lan, &dir, 1, "b", &config(100, 3, false, vhids), &[]);
    sleep(Duration::from_secs(5));
    let h = w.history();
    let moves = h.changes_since(joined, |_| true);
    assert!(moves.is_empty(), "moved while both ran: {moves:?}");

    let killed = Instant::now();
    d0.sigkill();
    let _ = d0.wait_exit(Duration::from_secs(2));
    wait_all(
        &lan,
        &all,
        &[0, 1],
        carpd_testbed::master_down(3, 100) + 2 * MARGIN,
        "after SIGKILL",
    );
    for a in &all {
        let t = w.time_to_own(1, bare(a), killed);
        assert!(
            t <= carpd_testbed::master_down(3, 100) + MARGIN,
            "{a}: {t:?}"
        );
    }
    for a in &all {
        lan.hosts[0].ip(&["addr", "del", a, "dev", "eth0"]);
    }

    let mut d0 = start(&lan, &dir, 0, "a2", &config(0, 3, true, vhids), &[]);
    wait_all(&lan, &all, &[0], Duration::from_secs(4) + MARGIN, "preempt");

    // Bow-out: host 1 takes every VHID at once, well before its
    // master-down time of 3.4 s.
    let stopped = Instant::now();
    d0.sigterm();
    wait_all(&lan, &all, &[1], Duration::from_secs(3), "bow-out");
    for a in &all {
        let t = w.time_to_own(1, bare(a), stopped);
        assert!(t < MARGIN, "{a}: taken over after {t:?}: no bow-out");
    }
    assert!(
        d0.wait_exit(Duration::from_secs(5))
            .is_some_and(|s| s.success())
    );
    assert!(d1.is_running());
}

/// A peer with the better interval but a higher demote byte loses, with or
/// without preemption (OpenBSD); with demote 0 it keeps carpd BACKUP, and a
/// MASTER carpd does not yield to it while it stays demoted.
#[test]
fn demote_byte_honoured() {
    let dir = Scratch::new();
    let lan = Lan::new(2, 1);
    let vip = "10.99.0.120";
    let vhids: &[(u8, &[&str])] = &[(9, &["10.99.0.120/24"])];
    // master-down 3.8 s, interval 1.78 s: worse than the peer's 1 s.
    let mut d = start(&lan, &dir, 0, "carpd", &config(200, 3, false, vhids), &[]);
    let peer = |demote, count| Inject {
        mode: "carp",
        key: "bsd-secret",
        vhid: 9,
        vips: vip,
        demote,
        advbase: 1,
        advskew: 0,
        count,
    };
    // Heard from the start: carpd stays BACKUP past its master-down time.
    peer(0, 6).run(&lan.hosts[1]);
    assert!(lan.owners(vip).is_empty(), "took over from a better peer");

    let sent = Instant::now();
    let _bg = peer(1, 8).spawn(&lan.hosts[1], dir.path(), "demoted-peer");
    let took = wait_until(Duration::from_secs(3), Duration::from_millis(20), || {
        lan.owners(vip) == [0]
    });
    assert!(took.is_some(), "a demoted peer was not beaten");
    assert!(sent.elapsed() < Duration::from_secs(3));
    // The demoted peer keeps advertising its better interval: carpd stays.
    let w = Watcher::start(&lan.refs());
    let since = Instant::now();
    sleep(Duration::from_secs(4));
    let h = w.history();
    let moves = h.changes_since(since, |a| a == vip);
    assert!(moves.is_empty(), "yielded to a demoted peer: {moves:?}");
    let log = d.log();
    assert!(log.contains("peer_demoted"), "{log}");
    assert!(d.is_running());
}

/// A master's bow-out (advbase 255, advskew 255) hands over at once, long
/// before the master-down time (10 s here).
#[test]
fn bow_out_honoured() {
    let dir = Scratch::new();
    let lan = Lan::new(2, 1);
    let vip = "10.99.0.121";
    let vhids: &[(u8, &[&str])] = &[(11, &["10.99.0.121/24"])];
    let _d = start(&lan, &dir, 0, "carpd", &config(0, 10, false, vhids), &[]);
    let peer = |advbase, advskew, count| Inject {
        mode: "carp",
        key: "bsd-secret",
        vhid: 11,
        vips: vip,
        demote: 0,
        advbase,
        advskew,
        count,
    };
    peer(1, 0, 3).run(&lan.hosts[1]);
    sleep(Duration::from_millis(500));
    assert!(lan.owners(vip).is_empty());
    let sent = Instant::now();
    peer(255, 255, 1).run(&lan.hosts[1]);
    let took = wait_until(Duration::from_secs(5), Duration::from_millis(20), || {
        lan.owners(vip) == [0]
    });
    assert!(took.is_some(), "bow-out ignored");
    assert!(
        sent.elapsed() < MARGIN + Duration::from_millis(500),
        "took over only after {:?}",
        sent.elapsed()
    );
}

/// Three failed sends demote a MASTER; the demotion goes out in the next
/// advertisements: in byte 4 for a BSD VHID, added to advskew for a UCARP
/// VHID (whose peers ignore byte 4), until three sends succeed.
#[test]
fn demotion_sent_after_send_errors() {
    let dir = Scratch::new();
    let lan = Lan::new(1, 1);
    let ns = &lan.hosts[0];
    let toml = "advskew = 10\npassword = \"pw\"\n\n[[interface]]\nname = \"eth0\"\n\n\
                [[interface.vhid]]\nid = 1\naddresses = [\"10.99.0.130/24\"]\n\n\
                [[interface.vhid]]\nid = 2\nauth = \"ucarp\"\naddresses = [\"10.99.0.131/24\"]\n";
    let _d = start(&lan, &dir, 0, "carpd", toml, &[]);
    assert!(
        wait_until(Duration::from_secs(8), Duration::from_millis(20), || {
            ns.has_addr("10.99.0.130") && ns.has_addr("10.99.0.131")
        })
        .is_some()
    );
    // Sends fail with EPERM while the rule is in place.
    ns.exec(&["nft", "add", "table", "inet", "carpt"]);
    ns.exec(&[
        "nft",
        "add chain inet carpt out { type filter hook output priority 0 ; }",
    ]);
    ns.exec(&["nft", "add rule inet carpt out meta l4proto 112 drop"]);
    sleep(Duration::from_millis(4500));
    let (mut tcpdump, pcap) = Daemon::pcap(ns, dir.path(), "demote.pcap", "ip proto 112");
    ns.exec(&["nft", "delete", "table", "inet", "carpt"]);
    sleep(Duration::from_millis(5500));
    tcpdump.sigterm();
    tcpdump.wait_exit(Duration::from_secs(5));
    let out = carpd_testbed::run(&[
        "tshark",
        "-n",
        "-r",
        pcap.to_str().unwrap(),
        "-d",
        "ip.proto==112,carp",
        "-T",
        "fields",
        "-E",
        "separator=|",
        "-e",
        "carp.vhid",
        "-e",
        "carp.demotion",
        "-e",
        "carp.advskew",
    ]);
    let rows: Vec<(u8, u8, u8)> = out
        .lines()
        .map(|l| {
            let f: Vec<u8> = l.split('|').map(|x| x.parse().unwrap()).collect();
            (f[0], f[1], f[2])
        })
        .collect();
    let bsd: Vec<_> = rows.iter().filter(|r| r.0 == 1).collect();
    let ucarp: Vec<_> = rows.iter().filter(|r| r.0 == 2).collect();
    // First the demoted advertisements, then back to normal.
    assert!(
        bsd.first().is_some_and(|r| r.1 >= 1 && r.2 == 10),
        "BSD VHID: {bsd:?}"
    );
    assert!(bsd.last().is_some_and(|r| r.1 == 0 && r.2 == 10), "{bsd:?}");
    assert!(
        ucarp.first().is_some_and(|r| r.1 == 0 && r.2 > 10),
        "UCARP VHID: {ucarp:?}"
    );
    assert!(
        ucarp.last().is_some_and(|r| r.1 == 0 && r.2 == 10),
        "{ucarp:?}"
    );
}

/// VRRPv2 and VRRPv3 packets with the VHID's id, on the CARP group, are
/// dropped as VRRP (nothing else: no other drop reason, no state change).
#[test]
fn vrrp_ignored_and_counted() {
    let dir = Scratch::new();
    let lan = Lan::new(3, 1);
    let vip = "10.99.0.140";
    let vhids: &[(u8, &[&str])] = &[(12, &["10.99.0.140/24"])];
    let mut m = start(
        &lan,
        &dir,
        0,
        "master",
        &config(0, 3, false, vhids),
        &["-D"],
    );
    assert!(
        wait_until(Duration::from_secs(8), Duration::from_millis(20), || {
            lan.owners(vip) == [0]
        })
        .is_some()
    );
    let mut b = start(
        &lan,
        &dir,
        1,
        "backup",
        &config(100, 3, false, vhids),
        &["-D"],
    );
    sleep(Duration::from_secs(2));
    let w = Watcher::start(&lan.refs());
    let (mm, bm) = (m.log_mark(), b.log_mark());
    let since = Instant::now();
    let mut senders = Vec::new();
    for mode in ["vrrp2", "vrrp3"] {
        senders.push(
            Inject {
                mode,
                key: "",
                vhid: 12,
                vips: vip,
                demote: 0,
                advbase: 1,
                advskew: 0,
                count: 3,
            }
            .spawn(&lan.hosts[2], dir.path(), mode),
        );
    }
    sleep(Duration::from_secs(4));
    for s in &mut senders {
        let status = s.wait_exit(Duration::from_secs(5));
        assert!(status.is_some_and(|s| s.success()), "{}", s.log());
    }
    assert_eq!(lan.owners(vip), vec![0]);
    let h = w.history();
    assert!(h.changes_since(since, |a| a == vip).is_empty());
    for (d, mark) in [(&m, mm), (&b, bm)] {
        let log = d.log_since(mark);
        let drops: Vec<&str> = log.lines().filter(|l| l.contains("dropped")).collect();
        assert!(
            drops
                .iter()
                .any(|l| l.contains("reason=\"vrrp\"") || l.contains("reason=vrrp")),
            "no VRRP drop logged: {log}"
        );
        assert!(
            drops.iter().all(|l| l.contains("vrrp")),
            "other drop reasons: {drops:?}"
        );
        assert!(!log.contains("->"), "state changed on VRRP packets: {log}");
    }
    // Both packets counted as VRRP on the VHID they name.
    for d in [&m, &b] {
        let status = carpd_testbed::run(&[
            carpd_testbed::carpd_exe(),
            "status",
            "--json",
            "--socket",
            d.socket().to_str().unwrap(),
        ]);
        let doc: serde_json::Value = serde_json::from_str(&status).unwrap();
        let vhid = doc["vhids"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["vhid"] == 12)
            .unwrap_or_else(|| panic!("{status}"));
        assert_eq!(vhid["drops"]["vrrp"], 6, "{status}");
    }
    assert!(m.is_running() && b.is_running());
}

/// `carpd demote` on the MASTER: the demote byte it then sends makes the
/// BACKUP take over although the BACKUP does not preempt and has the
/// longer interval; the demoted node stays BACKUP.
#[test]
fn operator_demotion_hands_over() {
    let dir = Scratch::new();
    let lan = Lan::new(2, 1);
    let vip = "10.99.0.150";
    let vhids: &[(u8, &[&str])] = &[(13, &["10.99.0.150/24"])];
    let a = start(&lan, &dir, 0, "a", &config(0, 3, false, vhids), &[]);
    assert!(
        wait_until(Duration::from_secs(8), Duration::from_millis(20), || {
            lan.owners(vip) == [0]
        })
        .is_some()
    );
    let mut b = start(&lan, &dir, 1, "b", &config(100, 3, false, vhids), &[]);
    sleep(Duration::from_secs(2));
    assert_eq!(lan.owners(vip), vec![0]);
    let w = Watcher::start(&lan.refs());
    let demoted = Instant::now();
    carpd_testbed::run(&[
        carpd_testbed::carpd_exe(),
        "demote",
        "--by",
        "2",
        "--socket",
        a.socket().to_str().unwrap(),
    ]);
    assert!(
        wait_until(Duration::from_secs(3), Duration::from_millis(20), || {
            lan.owners(vip) == [1]
        })
        .is_some(),
        "the demoted master kept the address: {:?}",
        lan.owners(vip)
    );
    let took = demoted.elapsed();
    assert!(took < MARGIN + Duration::from_secs(1), "took {took:?}");
    let settled = Instant::now();
    sleep(Duration::from_secs(4));
    let h = w.history();
    let moves = h.changes_since(settled, |x| x == vip);
    assert!(moves.is_empty(), "flapped: {:?}", h.timeline(vip));
    assert!(b.log().contains("peer_demoted"), "{}", b.log());
    assert!(b.is_running());
}
