//! Load sharing: three carpd nodes with the same `[[load_sharing]]` group of
//! twelve VIPs spread the masters 4/4/4 with no advskew written down; when
//! one node stops its VIPs split 6/6 over the other two (each to the node
//! the shared assignment ranks second), and when it comes back it takes
//! back exactly its own four. After each convergence no VIP ever has two
//! owners (the kernel's own address notifications are recorded).

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::thread::sleep;
use std::time::{Duration, Instant};

use carp_engine::share;
use carpd_testbed::{Daemon, Lan, Scratch, Watcher, wait_until};

const NODES: usize = 3;
const VIPS: u8 = 12;
const GROUP: &str = "web";

/// Generous: start-up is a 3 s master-down time plus process start on a
/// busy machine.
const CONVERGE: Duration = Duration::from_secs(25);
/// How long a converged layout is watched for a second owner.
const STEADY: Duration = Duration::from_secs(3);

fn vip(vhid: u8) -> String {
    format!("10.99.0.{}", 100 + vhid)
}

fn node_addr(i: usize) -> String {
    Lan::host_addr(i, 0)
}

/// The same file on every node: each finds itself by its eth0 address.
fn config() -> String {
    let nodes: Vec<String> = (0..NODES).map(|i| format!("{:?}", node_addr(i))).collect();
    let mut s = format!(
        "password = \"share\"\n\n[[load_sharing]]\nname = \"{GROUP}\"\ninterface = \"eth0\"\nnodes = [{}]\nvhid = [\n",
        nodes.join(", ")
    );
    for v in 1..=VIPS {
        s.push_str(&format!(
            "  {{ id = {v}, addresses = [\"{}/24\"] }},\n",
            vip(v)
        ));
    }
    s.push_str("]\n");
    s
}

/// Node index preferred for each VHID, first and second, from the same
/// function the daemons use.
fn expected() -> BTreeMap<u8, Vec<usize>> {
    let nodes: Vec<IpAddr> = (0..NODES).map(|i| node_addr(i).parse().unwrap()).collect();
    let ids: Vec<u8> = (1..=VIPS).collect();
    share::assignment(GROUP, &nodes, &ids)
        .into_iter()
        .map(|(v, order)| {
            let idx = order
                .iter()
                .map(|a| nodes.iter().position(|n| n == a).unwrap())
                .collect();
            (v, idx)
        })
        .collect()
}

/// The owner of every VIP, if each has exactly one.
fn layout(lan: &Lan) -> Option<BTreeMap<u8, usize>> {
    let addrs: Vec<_> = lan.hosts.iter().map(|h| h.addrs()).collect();
    (1..=VIPS)
        .map(|v| {
            let owners: Vec<usize> = (0..NODES).filter(|i| addrs[*i].contains(&vip(v))).collect();
            match owners.as_slice() {
                [one] => Some((v, *one)),
                _ => None,
            }
        })
        .collect()
}

fn counts(l: &BTreeMap<u8, usize>) -> Vec<usize> {
    (0..NODES)
        .map(|i| l.values().filter(|o| **o == i).count())
        .collect()
}

/// Waits for `want` (owner per VIP), then watches it hold for [`STEADY`]
/// with never two owners of a VIP.
fn converge(lan: &Lan, w: &Watcher, want: &BTreeMap<u8, usize>, what: &str) {
    let mut last = None;
    let took = wait_until(CONVERGE, Duration::from_millis(50), || {
        last = layout(lan);
        last.as_ref() == Some(want)
    });
    assert!(
        took.is_some(),
        "{what}: owners {last:?} (counts {:?}), expected {want:?}",
        last.as_ref().map(counts)
    );
    eprintln!("{what}: converged in {took:?}: {:?}", counts(want));
    let since = Instant::now();
    sleep(STEADY);
    assert_eq!(layout(lan).as_ref(), Some(want), "{what}: layout changed");
    let h = w.history();
    for v in 1..=VIPS {
        assert_eq!(
            h.max_owners_since(&vip(v), since),
            1,
            "{what}: {} had two owners: {:?}",
            vip(v),
            h.timeline(&vip(v))
        );
    }
}

#[test]
fn three_nodes_twelve_vips_spread_then_split_then_return() {
    let dir = Scratch::new();
    let lan = Lan::new(NODES, 1);
    let w = Watcher::start(&lan.refs());
    let cfg = dir.write("carpd.toml", &config());
    let order = expected();

    let mut daemons: Vec<Daemon> = (0..NODES)
        .map(|i| Daemon::carpd(&lan.hosts[i], &format!("node{i}"), dir.path(), &cfg, &[]))
        .collect();

    // All three up: every VIP on its first-ranked node, 4 each.
    let all: BTreeMap<u8, usize> = order.iter().map(|(v, o)| (*v, o[0])).collect();
    assert_eq!(counts(&all), [4, 4, 4]);
    converge(&lan, &w, &all, "three nodes");

    // Node 2 stops (bows out): its four VIPs go to their second-ranked
    // nodes, two to each survivor.
    daemons[2].sigterm();
    assert!(daemons[2].wait_exit(Duration::from_secs(10)).is_some());
    let without: BTreeMap<u8, usize> = order
        .iter()
        .map(|(v, o)| (*v, if o[0] == 2 { o[1] } else { o[0] }))
        .collect();
    assert_eq!(counts(&without), [6, 6, 0]);
    converge(&lan, &w, &without, "node 2 stopped");

    // Node 2 returns: it preempts exactly its own VIPs back.
    let since = Instant::now();
    daemons[2] = Daemon::carpd(&lan.hosts[2], "node2-again", dir.path(), &cfg, &[]);
    converge(&lan, &w, &all, "node 2 back");
    // The others' VIPs never moved meanwhile.
    let h = w.history();
    for (v, o) in &order {
        if o[0] != 2 {
            assert!(
                !h.ever_owned_since(2, &vip(*v), since),
                "{} visited node 2: {:?}",
                vip(*v),
                h.timeline(&vip(*v))
            );
        }
    }
    for d in &mut daemons {
        assert!(d.is_running());
    }
}
