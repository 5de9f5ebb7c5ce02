//! The virtual MAC: with `virtual_mac = true` the MASTER holds the address
//! on a macvlan child with the MAC 00:00:5e:00:01:<vhid> and advertises
//! from it, so a neighbour's ARP entry for the address stays right across
//! a failover; without it the entry follows the gratuitous ARP to the new
//! master's own MAC, and advertisements leave with the real MAC.
//!
//! Hosts 0 and 1 run carpd, host 2 is the neighbour. As the README asks,
//! the parents have `arp_ignore = 1` and `arp_announce = 2`, or they
//! would show their own MAC for the address.

use std::time::Duration;

use carpd_testbed::{Cluster, Daemon, Netns, wait_until};

const VIP: &str = "10.99.0.100";
const VHID: u8 = 5;
const VMAC: &str = "00:00:5e:00:01:05";

fn config(advskew: u8, virtual_mac: bool) -> String {
    format!(
        "password = \"secret\"\n\n[[interface]]\nname = \"eth0\"\n\n  [[interface.vhid]]\n  id = {VHID}\n  addresses = [\"{VIP}/24\"]\n  advskew = {advskew}\n  virtual_mac = {virtual_mac}\n"
    )
}

fn start(c: &Cluster, host: usize, label: &str, toml: &str) -> Daemon {
    let path = c.dir.write(&format!("{label}.toml"), toml);
    Daemon::carpd(c.host(host), label, c.dir.path(), &path, &[])
}

fn mac_of(ns: &Netns, dev: &str) -> String {
    let out = ns.ip(&["-o", "link", "show", "dev", dev]);
    out.split_whitespace()
        .skip_while(|t| *t != "link/ether")
        .nth(1)
        .expect("link/ether")
        .to_string()
}

/// The neighbour's ARP entry for the address, if it has one.
fn neigh(ns: &Netns) -> Option<String> {
    let out = ns.ip(&["neigh", "show", VIP, "dev", "eth0"]);
    out.split_whitespace()
        .skip_while(|t| *t != "lladdr")
        .nth(1)
        .map(str::to_string)
}

/// Sends one datagram to the address from `ns`, which makes it resolve the
/// address if it has no entry.
fn poke(ns: &Netns) {
    ns.exec(&["bash", "-c", &format!("echo x > /dev/udp/{VIP}/9")]);
}

/// The source MAC of the next advertisement `ns` sees on eth0.
fn advert_source_mac(ns: &Netns) -> String {
    let out = ns.exec(&[
        "timeout", "6", "tcpdump", "-i", "eth0", "-e", "-n", "-l", "-c", "1", "ip", "proto", "112",
    ]);
    out.split_whitespace()
        .nth(1)
        .unwrap_or_else(|| panic!("no advertisement captured: {out:?}"))
        .to_string()
}

/// Runs the failover and returns (the neighbour's entry before, after,
/// the advertisement source MAC before) and the masters' real MACs.
fn failover(virtual_mac: bool) -> (String, String, String, [String; 2]) {
    let c = Cluster::new(3, 1);
    for h in 0..2 {
        c.host(h).exec(&[
            "sysctl",
            "-q",
            "-w",
            "net.ipv4.conf.eth0.arp_ignore=1",
            "net.ipv4.conf.eth0.arp_announce=2",
        ]);
    }
    let real = [mac_of(c.host(0), "eth0"), mac_of(c.host(1), "eth0")];
    let mut a = start(&c, 0, "a", &config(0, virtual_mac));
    let b = start(&c, 1, "b", &config(100, virtual_mac));
    c.wait_owners(VIP, &[0], Duration::from_secs(10));
    let advert_mac = advert_source_mac(c.host(2));

    let neighbour = c.host(2);
    poke(neighbour);
    let resolved = wait_until(Duration::from_secs(5), Duration::from_millis(50), || {
        neigh(neighbour).is_some()
    });
    assert!(resolved.is_some(), "the neighbour never resolved {VIP}");
    let before = neigh(neighbour).expect("entry");

    a.sigterm();
    assert!(a.wait_exit(Duration::from_secs(5)).is_some());
    c.wait_owners(VIP, &[1], Duration::from_secs(5));
    if virtual_mac {
        // the old master's child is gone, the new one's carries the address
        assert!(!c.host(0).ip(&["-o", "link"]).contains("eth0.c5"));
        assert_eq!(mac_of(c.host(1), "eth0.c5"), VMAC);
        let on_child = c.host(1).ip(&["-o", "addr", "show", "dev", "eth0.c5"]);
        assert!(on_child.contains(VIP), "{on_child}");
    }
    // the announcements go out right after the takeover
    std::thread::sleep(Duration::from_millis(500));
    let after = neigh(neighbour).expect("entry");
    drop(b);
    (before, after, advert_mac, real)
}

#[test]
fn virtual_mac_keeps_the_neighbours_entry() {
    let (before, after, advert_mac, _) = failover(true);
    assert_eq!(before, VMAC);
    assert_eq!(after, VMAC);
    assert_eq!(advert_mac, VMAC);
}

#[test]
fn real_mac_is_updated_by_gratuitous_arp() {
    let (before, after, advert_mac, real) = failover(false);
    assert_eq!(before, real[0]);
    assert_eq!(after, real[1]);
    assert_eq!(advert_mac, real[0]);
}
