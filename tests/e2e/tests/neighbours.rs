//! Neighbours stay right: a MASTER answers another host's claim of its
//! addresses (gratuitous ARP, override neighbour advertisement) by
//! announcing again, and with `announce_interval` repeats its announcement.
//! Real processes in network namespaces (needs root).

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use carpd_testbed::{Claimer, Cluster, Config, Daemon, Netns, in_netns, wait_until};
use serde_json::Value;

const VIP4: &str = "10.99.0.100";
const VIP6: &str = "fd00:99::100";
const POLL: Duration = Duration::from_millis(20);
/// Generous: start-up and elections on a busy 2-core machine.
const SETTLE: Duration = Duration::from_secs(15);
/// The brief's goal is 100 ms; the assertion leaves room for a noisy host.
const RESTORED_WITHIN: Duration = Duration::from_secs(1);

fn config(advskew: u8) -> Config {
    Config::default().advskew(advskew).vhid(
        "eth0",
        1,
        &[format!("{VIP4}/24"), format!("{VIP6}/64")],
    )
}

/// Host `i`'s carpd with `extra` top-level keys before the generated ones.
fn start(c: &mut Cluster, i: usize, extra: &str, config: &Config) {
    c.start_toml(i, &format!("{extra}\n{}", config.to_toml()));
}

fn mac_of(ns: &Netns, dev: &str) -> String {
    let out = ns.ip(&["-j", "link", "show", "dev", dev]);
    let v: Value = serde_json::from_str(&out).unwrap();
    v[0]["address"].as_str().unwrap().to_string()
}

fn mac_bytes(mac: &str) -> [u8; 6] {
    let mut b = [0u8; 6];
    for (i, part) in mac.split(':').enumerate() {
        b[i] = u8::from_str_radix(part, 16).unwrap();
    }
    b
}

/// The MAC `ns` has for `addr` on eth0, if any.
fn neighbour(ns: &Netns, addr: &str) -> Option<String> {
    let out = ns.ip(&["-j", "neigh", "show", addr, "dev", "eth0"]);
    let v: Value = serde_json::from_str(&out).ok()?;
    v.as_array()?
        .first()?
        .get("lladdr")?
        .as_str()
        .map(str::to_string)
}

/// Sends one UDP datagram from `ns` to `to`, so that its kernel resolves
/// the address (ARP, neighbour solicitation).
fn poke(ns: &Netns, to: &str) {
    let to: SocketAddr = to.parse().unwrap();
    in_netns(ns, move || {
        let any: SocketAddr = if to.is_ipv4() {
            "0.0.0.0:0".parse().unwrap()
        } else {
            "[::]:0".parse().unwrap()
        };
        let s = UdpSocket::bind(any).unwrap();
        let _ = s.send_to(b"hello", to);
    });
}

fn vhid1(d: &Daemon) -> Value {
    let s = d.status();
    s["vhids"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["vhid"] == 1)
        .cloned()
        .unwrap()
}

/// Seconds since midnight of an `ip -ts monitor` line
/// (`[2026-01-01T12:00:00.123456] ...`).
fn stamp(line: &str) -> Option<f64> {
    let ts = line.strip_prefix('[')?.split(']').next()?;
    let time = ts.split('T').nth(1)?;
    let mut parts = time.split(':');
    let h: f64 = parts.next()?.parse().ok()?;
    let m: f64 = parts.next()?.parse().ok()?;
    let s: f64 = parts.next()?.parse().ok()?;
    Some(h * 3600.0 + m * 60.0 + s)
}

/// From the neighbour monitor's log: how long `addr` pointed at `foreign`
/// before it pointed at `ours` again (`None` if it never came back).
fn time_on_foreign(log: &str, addr: &str, foreign: &str, ours: &str) -> Option<Duration> {
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains(&format!("] {addr} ")))
        .collect();
    let bad = lines.iter().position(|l| l.contains(foreign))?;
    let back = lines[bad..].iter().find(|l| l.contains(ours))?;
    let d = stamp(back)? - stamp(lines[bad])?;
    Some(Duration::from_secs_f64(d.max(0.0)))
}

#[test]
fn a_foreign_claim_of_the_vip_is_answered_and_neighbours_come_back() {
    let mut c = Cluster::new(4, 1);
    start(&mut c, 0, "", &config(0));
    start(&mut c, 1, "", &config(100));
    c.wait_owners(VIP4, &[0], SETTLE);
    // past the takeover's second announcement (after two advertisements),
    // so that only an answer to the claims can put the entries back
    std::thread::sleep(Duration::from_secs(3));
    let master_mac = mac_of(c.host(0), "eth0");
    let intruder_mac = mac_of(c.host(2), "eth0");
    let observer = c.host(3);
    observer.ip(&["addr", "add", "fd00:99::4/64", "dev", "eth0", "nodad"]);
    // the observer learns the VIPs from the master
    let learnt = wait_until(SETTLE, POLL, || {
        poke(observer, &format!("{VIP4}:9"));
        poke(observer, &format!("[{VIP6}]:9"));
        std::thread::sleep(Duration::from_millis(100));
        neighbour(observer, VIP4).as_deref() == Some(master_mac.as_str())
            && neighbour(observer, VIP6).as_deref() == Some(master_mac.as_str())
    });
    assert!(learnt.is_some(), "observer did not learn the VIPs");
    let monitor = Daemon::spawn(
        observer,
        "neigh-monitor",
        c.dir.path(),
        "ip",
        &["-ts", "monitor", "neigh"],
    );
    std::thread::sleep(Duration::from_millis(300));

    let intruder = Claimer::open(c.host(2), "eth0");
    let mac = mac_bytes(&intruder_mac);
    intruder
        .gratuitous_arp(mac, VIP4.parse::<Ipv4Addr>().unwrap())
        .unwrap();
    intruder
        .override_na(mac, VIP6.parse::<Ipv6Addr>().unwrap())
        .unwrap();
    let sent = Instant::now();

    let mut took = (None, None);
    let back = wait_until(Duration::from_secs(5), POLL, || {
        let log = monitor.log();
        took = (
            time_on_foreign(&log, VIP4, &intruder_mac, &master_mac),
            time_on_foreign(&log, VIP6, &intruder_mac, &master_mac),
        );
        took.0.is_some() && took.1.is_some()
    });
    assert!(
        back.is_some(),
        "neighbour entries not back on the master's MAC {master_mac} (intruder {intruder_mac}) {:?} after the claims:\n{}",
        sent.elapsed(),
        monitor.log()
    );
    let (v4, v6) = (took.0.unwrap(), took.1.unwrap());
    eprintln!("neighbour entry on the intruder's MAC for: IPv4 {v4:?}, IPv6 {v6:?}");
    assert!(
        v4 < RESTORED_WITHIN && v6 < RESTORED_WITHIN,
        "{v4:?} {v6:?}"
    );
    assert_eq!(
        neighbour(observer, VIP4).as_deref(),
        Some(master_mac.as_str())
    );
    assert_eq!(
        neighbour(observer, VIP6).as_deref(),
        Some(master_mac.as_str())
    );

    let counted = wait_until(Duration::from_secs(5), POLL, || {
        vhid1(c.node(0))["address_conflicts"].as_u64() >= Some(2)
    });
    assert!(counted.is_some(), "{}", vhid1(c.node(0)));
    // a BACKUP does not answer or count
    assert_eq!(vhid1(c.node(1))["address_conflicts"].as_u64(), Some(0));
    assert!(
        c.node(0).log().contains(&intruder_mac),
        "{}",
        c.node(0).log()
    );
}

#[test]
fn announce_interval_repeats_the_masters_announcement() {
    let mut c = Cluster::new(2, 1);
    start(&mut c, 0, "announce_interval = \"1s\"", &config(0));
    c.wait_owners(VIP4, &[0], SETTLE);
    // past the takeover's two announcements (at once and after two
    // advertisements)
    std::thread::sleep(Duration::from_secs(4));
    let tcpdump = Daemon::spawn(
        c.host(1),
        "tcpdump",
        c.dir.path(),
        "tcpdump",
        &["-l", "-n", "-i", "eth0", "arp or icmp6"],
    );
    assert!(
        wait_until(Duration::from_secs(5), POLL, || tcpdump
            .log()
            .contains("listening"))
        .is_some(),
        "tcpdump did not start: {}",
        tcpdump.log()
    );
    std::thread::sleep(Duration::from_millis(4500));
    let log = tcpdump.log();
    let garps = log
        .lines()
        .filter(|l| l.contains(&format!("who-has {VIP4} tell {VIP4}")))
        .count();
    let nas = log
        .lines()
        .filter(|l| l.contains(&format!("neighbor advertisement, tgt is {VIP6}")))
        .count();
    assert!(
        (3..=6).contains(&garps),
        "{garps} gratuitous ARPs in 4.5 s:\n{log}"
    );
    assert!(
        (3..=6).contains(&nas),
        "{nas} neighbour advertisements in 4.5 s:\n{log}"
    );
}
