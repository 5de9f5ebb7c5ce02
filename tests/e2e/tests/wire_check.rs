//! Every packet carpd emits, checked by code that is not carpd's: captured
//! with `tcpdump`, decoded by tshark's CARP dissector, HMACs recomputed
//! with Python's `hmac` module from the configured key and addresses.
//!
//! One carpd serves a UCARP-mode VHID, BSD-mode VHIDs with one and several
//! IPv4 addresses, a dual-stack VHID and an IPv6-only VHID; it becomes
//! MASTER of all of them, advertises for a few seconds and is stopped with
//! SIGTERM, so the capture also holds the takeover announcements (ARP and
//! unsolicited neighbour advertisements) and the bow-out.

// A test binary: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::thread::sleep;
use std::time::Duration;

use carpd_testbed::{Daemon, Lan, Scratch, require_tool, run, wait_until};

/// One VHID of the test configuration.
struct Vhid {
    id: u8,
    /// "ucarp" or "bsd"
    auth: &'static str,
    password: &'static str,
    addresses: &'static [&'static str],
}

const VHIDS: &[Vhid] = &[
    Vhid {
        id: 1,
        auth: "ucarp",
        password: "ucarp-pw",
        addresses: &["10.99.0.101/24"],
    },
    Vhid {
        id: 2,
        auth: "bsd",
        password: "x",
        addresses: &["10.99.0.102/24"],
    },
    // Several IPv4 addresses, not in order; a key longer than the 19 bytes
    // that count on the wire.
    Vhid {
        id: 3,
        auth: "bsd",
        password: "a-key-longer-than-nineteen-bytes",
        addresses: &["10.99.0.105/24", "10.99.0.13/24", "10.99.0.104/24"],
    },
    Vhid {
        id: 4,
        auth: "bsd",
        password: "dual-stack",
        addresses: &["fd00:99::6/64", "10.99.0.106/24", "fd00:99::5/64"],
    },
    Vhid {
        id: 5,
        auth: "bsd",
        password: "six",
        addresses: &["fd00:99::8/64", "fd00:99::7/64"],
    },
];

/// Recomputes a CARP HMAC the way the BSDs and UCARP do, from the key (at
/// most 19 bytes count), the mode, the VHID, the addresses and the counter.
const HMAC_PY: &str = r#"
import hashlib, hmac, ipaddress, sys
key, mode, vhid, counter = bytes.fromhex(sys.argv[1])[:19], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
addrs = [ipaddress.ip_address(a) for a in sys.argv[5:]]
msg = bytes([2, 1, vhid])
if mode == "ucarp":
    assert len(addrs) == 1 and addrs[0].version == 4
    msg += addrs[0].packed
else:
    msg += b"".join(a.packed for a in sorted({a for a in addrs if a.version == 4}))
    msg += b"".join(a.packed for a in sorted({a for a in addrs if a.version == 6}))
msg += counter.to_bytes(8, "big")
print(hmac.new(key, msg, hashlib.sha1).hexdigest())
"#;

fn expected_hmac(v: &Vhid, counter: u64) -> String {
    let key: String = v.password.bytes().map(|b| format!("{b:02x}")).collect();
    let mut args = vec![
        "python3".to_string(),
        "-c".to_string(),
        HMAC_PY.to_string(),
        key,
        v.auth.to_string(),
        v.id.to_string(),
        counter.to_string(),
    ];
    args.extend(
        v.addresses
            .iter()
            .map(|a| a.split('/').next().unwrap().to_string()),
    );
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    run(&refs).trim().to_string()
}

fn config() -> String {
    let mut s = String::from("advbase = 1\n\n[[interface]]\nname = \"eth0\"\n");
    for v in VHIDS {
        let addrs: Vec<String> = v.addresses.iter().map(|a| format!("{a:?}")).collect();
        s.push_str(&format!(
            "\n[[interface.vhid]]\nid = {}\nauth = {:?}\npassword = {:?}\naddresses = [{}]\n",
            v.id,
            v.auth,
            v.password,
            addrs.join(", ")
        ));
    }
    s
}

/// `tshark -r file -Y filter -T fields -e f...`, one map per packet.
fn tshark(file: &Path, filter: &str, fields: &[&str]) -> Vec<BTreeMap<String, String>> {
    let mut args = vec![
        "tshark",
        "-n",
        "-r",
        file.to_str().unwrap(),
        "-d",
        "ip.proto==112,carp",
        "-Y",
        filter,
        "-T",
        "fields",
        "-E",
        "separator=|",
    ];
    for f in fields {
        args.extend(["-e", f]);
    }
    require_tool("tshark");
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap();
    assert!(
        out.status.success(),
        "tshark: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            fields
                .iter()
                .zip(l.split('|'))
                .map(|(f, v)| (f.to_string(), v.to_string()))
                .collect()
        })
        .collect()
}

#[test]
fn every_packet_decodes_and_verifies() {
    let dir = Scratch::new();
    let lan = Lan::new(1, 1);
    let ns = &lan.hosts[0];
    let link_local = ns.ip(&["-o", "-6", "addr", "show", "dev", "eth0", "scope", "link"]);
    let link_local = link_local
        .split_whitespace()
        .nth(3)
        .and_then(|c| c.split('/').next())
        .unwrap()
        .to_string();

    // DAD on for eth0 (the harness turns it off): carpd must install its
    // IPv6 addresses without it, or they would be tentative for a while.
    ns.exec(&["sysctl", "-q", "-w", "net.ipv6.conf.eth0.accept_dad=1"]);

    // Every address change, to prove no IPv6 VIP is ever tentative.
    let monitor = Daemon::spawn(
        ns,
        "monitor",
        dir.path(),
        "ip",
        &["-o", "monitor", "address"],
    );
    let (mut tcpdump, pcap) = Daemon::pcap(
        ns,
        dir.path(),
        "carpd.pcap",
        "ip proto 112 or ip6 proto 112 or icmp6 or arp",
    );
    let cfg = dir.write("carpd.toml", &config());
    let mut carpd = Daemon::carpd(ns, "carpd", dir.path(), &cfg, &[]);
    let all_up = wait_until(Duration::from_secs(10), Duration::from_millis(50), || {
        VHIDS
            .iter()
            .flat_map(|v| v.addresses)
            .all(|a| ns.has_addr(a.split('/').next().unwrap()))
    });
    assert!(all_up.is_some(), "carpd did not become MASTER everywhere");
    let tentative = ns.ip(&["-o", "-6", "addr", "show", "tentative"]);
    assert!(tentative.is_empty(), "tentative addresses: {tentative}");
    // A few periodic advertisements, then the bow-out.
    sleep(Duration::from_millis(3500));
    carpd.sigterm();
    let status = carpd.wait_exit(Duration::from_secs(5));
    assert!(status.is_some_and(|s| s.success()), "{status:?}");
    sleep(Duration::from_millis(500));
    tcpdump.sigterm();
    tcpdump.wait_exit(Duration::from_secs(5));
    drop(monitor);
    let mon = std::fs::read_to_string(dir.path().join("monitor.log")).unwrap();
    assert!(mon.contains("fd00:99::5"), "monitor saw nothing: {mon}");
    assert!(
        !mon.contains("tentative"),
        "an address was tentative at some point: {mon}"
    );

    let fields = [
        "frame.number",
        "ip.src",
        "ip.dst",
        "ip.ttl",
        "ipv6.src",
        "ipv6.dst",
        "ipv6.hlim",
        "carp.version",
        "carp.type",
        "carp.vhid",
        "carp.advskew",
        "carp.authlen",
        "carp.demotion",
        "carp.adver_int",
        "carp.counter",
        "carp.hmac",
        "carp.checksum.status",
    ];
    let packets = tshark(&pcap, "carp", &fields);
    let mut per_vhid: BTreeMap<(u8, bool), (usize, usize)> = BTreeMap::new();
    for p in &packets {
        let what = format!("{p:?}");
        let vhid: u8 = p["carp.vhid"].parse().unwrap();
        let v = VHIDS.iter().find(|v| v.id == vhid).expect(&what);
        assert_eq!(p["carp.version"], "2", "{what}");
        assert_eq!(p["carp.type"], "1", "{what}");
        assert_eq!(p["carp.authlen"], "7", "{what}");
        assert_eq!(p["carp.demotion"], "0", "{what}");
        // tshark: 0 bad, 1 good, 2 not checked.
        assert_eq!(p["carp.checksum.status"], "1", "checksum: {what}");
        let v6 = !p["ipv6.src"].is_empty();
        if v6 {
            assert_eq!(p["ipv6.hlim"], "255", "{what}");
            assert_eq!(p["ipv6.dst"], "ff02::12", "{what}");
            assert_eq!(p["ipv6.src"], link_local, "{what}");
            assert!(v.addresses.iter().any(|a| a.contains(':')), "{what}");
        } else {
            assert_eq!(p["ip.ttl"], "255", "{what}");
            assert_eq!(p["ip.dst"], "224.0.0.18", "{what}");
            assert_eq!(p["ip.src"], Lan::host_addr(0, 0), "{what}");
            assert!(v.addresses.iter().any(|a| !a.contains(':')), "{what}");
        }
        let counter: u64 = p["carp.counter"].parse().unwrap();
        let hmac = p["carp.hmac"].replace(':', "");
        assert_eq!(hmac, expected_hmac(v, counter), "HMAC of {what}");
        let e = per_vhid.entry((vhid, v6)).or_default();
        if p["carp.adver_int"] == "255" && p["carp.advskew"] == "255" {
            e.1 += 1;
        } else {
            assert_eq!(p["carp.adver_int"], "1", "{what}");
            assert_eq!(p["carp.advskew"], "0", "{what}");
            e.0 += 1;
        }
    }
    // Every VHID advertised on each of its families, then bowed out there.
    for v in VHIDS {
        for v6 in [false, true] {
            let has = v.addresses.iter().any(|a| a.contains(':') == v6);
            let (adverts, bowouts) = per_vhid.get(&(v.id, v6)).copied().unwrap_or_default();
            if has {
                assert!(adverts >= 3, "vhid {} v6 {v6}: {adverts} adverts", v.id);
                assert!(bowouts >= 1, "vhid {} v6 {v6}: no bow-out", v.id);
            } else {
                assert_eq!(adverts + bowouts, 0, "vhid {} sent on v6 {v6}", v.id);
            }
        }
    }

    // Unsolicited neighbour advertisements for every IPv6 VIP.
    let na = tshark(
        &pcap,
        "icmpv6.type == 136",
        &[
            "ipv6.dst",
            "ipv6.hlim",
            "icmpv6.nd.na.flag.o",
            "icmpv6.nd.na.flag.s",
            "icmpv6.nd.na.target_address",
        ],
    );
    for v in VHIDS {
        for a in v.addresses.iter().filter(|a| a.contains(':')) {
            let a = a.split('/').next().unwrap();
            let mine: Vec<_> = na
                .iter()
                .filter(|p| p["icmpv6.nd.na.target_address"] == a)
                .collect();
            assert!(!mine.is_empty(), "no NA for {a}: {na:?}");
            for p in mine {
                assert_eq!(p["ipv6.dst"], "ff02::1", "{p:?}");
                assert_eq!(p["ipv6.hlim"], "255", "{p:?}");
                assert_eq!(p["icmpv6.nd.na.flag.o"], "1", "override: {p:?}");
                assert_eq!(p["icmpv6.nd.na.flag.s"], "0", "solicited: {p:?}");
            }
        }
    }
    // Gratuitous ARP for every IPv4 VIP: sender = target = VIP.
    let arp = tshark(&pcap, "arp", &["arp.src.proto_ipv4", "arp.dst.proto_ipv4"]);
    for v in VHIDS {
        for a in v.addresses.iter().filter(|a| !a.contains(':')) {
            let a = a.split('/').next().unwrap();
            assert!(
                arp.iter()
                    .any(|p| p["arp.src.proto_ipv4"] == a && p["arp.dst.proto_ipv4"] == a),
                "no gratuitous ARP for {a}: {arp:?}"
            );
        }
    }
}
