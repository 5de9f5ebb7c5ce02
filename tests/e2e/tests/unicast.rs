//! Unicast peers on a segment that drops CARP multicast (as many clouds
//! do): an nftables rule in each host namespace drops everything sent to
//! the group. With group advertisements both nodes become MASTER; with
//! unicast peers one does, and failover still works, over IPv4 and over
//! IPv6 link-local peers. A node that is not in the peer list is dropped
//! and counted as `not_peer`.

use std::thread::sleep;
use std::time::Duration;

use carpd_testbed::{Cluster, Daemon, Lan, Netns, master_down, transitions, wait_until};

const PASSWORD: &str = "secret";

/// Drops every packet to the CARP groups arriving in `ns` (a network where
/// multicast does not work).
fn block_group(ns: &Netns) {
    ns.exec(&["nft", "add", "table", "inet", "nomcast"]);
    ns.exec(&[
        "nft",
        "add chain inet nomcast input { type filter hook input priority 0 ; }",
    ]);
    ns.exec(&[
        "nft",
        "add rule inet nomcast input ip daddr 224.0.0.18 drop",
    ]);
    ns.exec(&["nft", "add rule inet nomcast input ip6 daddr ff02::12 drop"]);
}

fn config(vip: &str, vhid: u8, advskew: u8, peers: &[String]) -> String {
    let peers: Vec<String> = peers.iter().map(|p| format!("{p:?}")).collect();
    let peers = if peers.is_empty() {
        String::new()
    } else {
        format!("peers = [{}]\n", peers.join(", "))
    };
    format!(
        "password = {PASSWORD:?}\nadvbase = 1\ndead_ratio = 3\n\n[[interface]]\nname = \"eth0\"\n\n  [[interface.vhid]]\n  id = {vhid}\n  addresses = [{vip:?}]\n  advskew = {advskew}\n{peers}"
    )
}

fn start(c: &Cluster, host: usize, label: &str, toml: &str) -> Daemon {
    let path = c.dir.write(&format!("{label}.toml"), toml);
    Daemon::carpd(c.host(host), label, c.dir.path(), &path, &[])
}

fn drops(d: &Daemon, reason: &str) -> u64 {
    d.status()["vhids"][0]["drops"][reason]
        .as_u64()
        .unwrap_or(0)
}

/// The first link-local IPv6 address of `eth0` in `ns`.
fn link_local(ns: &Netns) -> String {
    let out = ns.ip(&["-o", "-6", "addr", "show", "dev", "eth0", "scope", "link"]);
    let cidr = out
        .split_whitespace()
        .skip_while(|t| *t != "inet6")
        .nth(1)
        .expect("link-local address");
    cidr.split('/').next().unwrap_or(cidr).to_string()
}

/// Holds for `how_long` that exactly `expected` hold `addr`.
fn stays(c: &Cluster, addr: &str, expected: &[usize], how_long: Duration) {
    let moved = wait_until(how_long, Duration::from_millis(100), || {
        c.owners(addr) != expected
    });
    assert!(
        moved.is_none(),
        "{addr}: owners {:?}, expected {expected:?} to stay",
        c.owners(addr)
    );
}

#[test]
fn ipv4_unicast_elects_one_master_where_multicast_cannot() {
    let vip = "10.99.0.100";
    let c = Cluster::new(3, 1);
    block_group(c.host(0));
    block_group(c.host(1));

    // Group advertisements never arrive: both nodes end up MASTER.
    {
        let mut a = start(&c, 0, "mcast0", &config("10.99.0.100/24", 1, 0, &[]));
        let mut b = start(&c, 1, "mcast1", &config("10.99.0.100/24", 1, 100, &[]));
        c.wait_owners(vip, &[0, 1], Duration::from_secs(10));
        for d in [&mut a, &mut b] {
            d.sigterm();
            assert!(d.wait_exit(Duration::from_secs(5)).is_some());
        }
        c.wait_owners(vip, &[], Duration::from_secs(5));
    }

    // Unicast peers: one MASTER.
    let (h0, h1) = (Lan::host_addr(0, 0), Lan::host_addr(1, 0));
    let a = start(
        &c,
        0,
        "ucast0",
        &config("10.99.0.100/24", 1, 0, std::slice::from_ref(&h1)),
    );
    let b = start(
        &c,
        1,
        "ucast1",
        &config("10.99.0.100/24", 1, 100, std::slice::from_ref(&h0)),
    );
    c.wait_owners(vip, &[0], Duration::from_secs(10));
    stays(&c, vip, &[0], Duration::from_secs(3));
    assert!(drops(&b, "not_peer") == 0 && drops(&b, "bad_ttl") == 0);

    // A third node that is not in the backup's peer list, sending to it
    // with a better skew: dropped and counted, nothing moves.
    let intruder = start(
        &c,
        2,
        "intruder",
        &config("10.99.0.100/24", 1, 0, std::slice::from_ref(&h1)),
    );
    let counted = wait_until(Duration::from_secs(10), Duration::from_millis(200), || {
        drops(&b, "not_peer") >= 3
    });
    assert!(counted.is_some(), "not_peer: {}", drops(&b, "not_peer"));
    assert!(
        transitions(&b.log(), "eth0", 1)
            .iter()
            .all(|t| !t.contains("-> MASTER"))
    );
    drop(intruder);
    // the intruder held the address (nobody it listens to talks to it)
    c.wait_owners(vip, &[0, 2], Duration::from_secs(10));
    carpd_testbed::run(&[
        "ip",
        "-n",
        c.host(2).name(),
        "addr",
        "del",
        "10.99.0.100/24",
        "dev",
        "eth0",
    ]);

    // Failover: the master dies without a word.
    a.sigkill();
    let took = wait_until(Duration::from_secs(10), Duration::from_millis(50), || {
        c.host(1).has_addr(vip)
    });
    assert!(took.is_some(), "backup did not take over:\n{}", b.log());
    drop(a);
}

/// The IPv6 backup's dead ratio: its master-down time (6 s + 100/256 s)
/// runs out at least 5.4 s after the master's last advertisement, and so
/// after its SIGTERM (the last one is at most 1 s older).
const BACKUP_DEAD_RATIO: u8 = 6;

/// How soon after the master's SIGTERM the backup must hold the address:
/// time for the bow-out and the address change on a busy machine, and more
/// than 2 s short of the earliest takeover without a bow-out.
const BOW_OUT_BOUND: Duration = Duration::from_secs(3);

#[test]
fn ipv6_link_local_peers() {
    assert!(
        BOW_OUT_BOUND + Duration::from_secs(3) < master_down(BACKUP_DEAD_RATIO, 100),
        "the bound must tell a bow-out from a master-down"
    );
    let vip = "fd00:99::100";
    let c = Cluster::new(2, 1);
    block_group(c.host(0));
    block_group(c.host(1));
    let (ll0, ll1) = (link_local(c.host(0)), link_local(c.host(1)));
    let a = start(&c, 0, "v6a", &config("fd00:99::100/64", 3, 0, &[ll1]));
    // A long master-down time on the backup, so that only a bow-out lets it
    // take over within BOW_OUT_BOUND of the master's SIGTERM.
    let backup = config("fd00:99::100/64", 3, 100, &[ll0]).replace(
        "dead_ratio = 3",
        &format!("dead_ratio = {BACKUP_DEAD_RATIO}"),
    );
    let b = start(&c, 1, "v6b", &backup);
    c.wait_owners(vip, &[0], Duration::from_secs(10));
    stays(&c, vip, &[0], Duration::from_secs(3));
    assert!(
        b.status()["vhids"][0]["adverts_received"]
            .as_u64()
            .unwrap_or(0)
            > 0
    );

    // graceful stop: the bow-out reaches the peer, which takes over at once
    a.sigterm();
    let took = wait_until(BOW_OUT_BOUND, Duration::from_millis(20), || {
        c.host(1).has_addr(vip)
    });
    assert!(
        took.is_some(),
        "the backup did not take over within {BOW_OUT_BOUND:?} of the master's SIGTERM \
         (no bow-out; its master-down time is {:?}):\n{}",
        master_down(BACKUP_DEAD_RATIO, 100),
        b.log()
    );
    c.wait_owners(vip, &[1], Duration::from_secs(5));
    sleep(Duration::from_millis(200));
    drop(a);
    drop(b);
}
