//! 10 % loss of CARP packets for 120 s at advbase 1: the backup never takes
//! over. Alone in its binary because it is long.
//!
//! The loss is random (nftables `numgen random`, in the backup's input
//! path), so the bound is statistical. With dead ratio 3 a takeover needs 3
//! consecutive losses: 1e-3 per advertisement, about 11 % per 120 s run, a
//! flaky test. With dead ratio 7 (master-down 7.4 s for advskew 100) it
//! needs 7 in a row: 1e-7 per advertisement, about 1e-5 per run.

use std::thread::sleep;
use std::time::{Duration, Instant};

use carpd_testbed::{Cluster, Config, Daemon, master_down, transitions};

const VIP: &str = "10.99.0.100";
const DEAD_RATIO: u8 = 7;
const RUN: Duration = Duration::from_secs(120);

#[test]
fn ten_percent_loss_for_two_minutes_no_transition() {
    let c = Cluster::new(2, 1);
    let w = c.watch();
    let cfg = |skew: u8| {
        Config::default()
            .advskew(skew)
            .dead_ratio(DEAD_RATIO)
            .vhid("eth0", 1, &[format!("{VIP}/24")])
            .to_toml()
    };
    let start = |i: usize, skew: u8| {
        let path = c.write_config(i, &cfg(skew));
        Daemon::carpd(c.host(i), &format!("node{i}"), c.dir.path(), &path, &[])
    };
    let n0 = start(0, 0);
    c.wait_owners(
        VIP,
        &[0],
        master_down(DEAD_RATIO, 0) + Duration::from_secs(3),
    );
    let n1 = start(1, 100);
    sleep(Duration::from_secs(3));
    assert_eq!(c.owners(VIP), vec![0]);
    let mark1 = n1.log_mark();
    let mark0 = n0.log_mark();
    let sent0 = adverts(&n0, "adverts_sent");
    let received0 = adverts(&n1, "adverts_received");

    c.host(1).exec(&[
        "nft",
        "add table inet loss; \
         add chain inet loss in { type filter hook input priority 0; }; \
         add rule inet loss in ip protocol 112 numgen random mod 100 < 10 counter drop",
    ]);
    let began = Instant::now();
    sleep(RUN);
    let rules = c.host(1).exec(&["nft", "list table inet loss"]);
    c.host(1).exec(&["nft", "delete table inet loss"]);

    let sent = adverts(&n0, "adverts_sent") - sent0;
    let received = adverts(&n1, "adverts_received") - received0;
    let dropped: u64 = rules
        .split_whitespace()
        .skip_while(|t| *t != "packets")
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    eprintln!(
        "{RUN:?} at 10 % loss: master sent {sent} adverts, backup received {received}, nftables dropped {dropped} ({:.1} %)",
        100.0 * dropped as f64 / (received + dropped).max(1) as f64
    );
    // about one advertisement a second for the whole run
    assert!(
        sent >= RUN.as_secs() * 5 / 6,
        "the master sent {sent} adverts in {RUN:?}"
    );
    // every advertisement sent was either received or dropped by the rule
    // (give or take those in flight while the counters were read)
    assert!(
        (received + dropped).abs_diff(sent) <= 3,
        "sent {sent}, received {received} + dropped {dropped}"
    );
    // the configured 10 % loss: dropped is binomial (n about 120, p 0.1,
    // mean 12, standard deviation about 3.3); a run crosses either bound
    // (none dropped, or more than 30 %) with a chance below 1e-5
    assert!(dropped > 0, "no loss was applied: {rules}");
    assert!(
        dropped <= sent * 3 / 10,
        "dropped {dropped} of {sent}: more than the configured 10 % loss explains"
    );
    assert!(
        received >= sent * 7 / 10,
        "received {received} of {sent} adverts at 10 % loss"
    );
    assert_eq!(c.owners(VIP), vec![0]);
    let h = w.history();
    assert!(
        h.changes_since(began, |a| a == VIP).is_empty(),
        "the VIP moved: {:?}",
        h.timeline(VIP)
    );
    for (i, log) in [n0.log_since(mark0), n1.log_since(mark1)]
        .iter()
        .enumerate()
    {
        let t = transitions(log, "eth0", 1);
        assert!(t.is_empty(), "node {i}: {t:?}");
    }
}

/// Counter `name` of the daemon's first VHID.
fn adverts(d: &Daemon, name: &str) -> u64 {
    d.status()["vhids"][0][name].as_u64().unwrap_or(0)
}
