//! Reloading the configuration with SIGHUP: only what changed moves, a
//! broken file changes nothing.
//!
//! Two nodes share 50 VHIDs on eth0, one address each; node 0 (advskew 0)
//! is master of all of them, node 1 (advskew 100, preempt) backs them up.
//! One test runs five VHIDs on each of eth0 and eth1 instead.

use std::collections::BTreeSet;
use std::thread::sleep;
use std::time::{Duration, Instant};

use carpd_testbed::{Cluster, Config, Watcher, adv_interval, master_down, transitions};

const VHIDS: u8 = 50;
const MARGIN: Duration = Duration::from_millis(1500);

fn vip(vhid: u8) -> String {
    vip_on("eth0", vhid)
}

/// The address of `vhid` on `iface` (eth0 or eth1).
fn vip_on(iface: &str, vhid: u8) -> String {
    let net = if iface == "eth0" { 100 } else { 101 };
    format!("10.{net}.{vhid}.1")
}

fn config(advskew: u8, preempt: bool, vhids: impl Iterator<Item = u8>) -> Config {
    config_on(&["eth0"], advskew, preempt, &vhids.collect::<Vec<_>>())
}

/// The VHIDs `vhids` on each of `ifaces`, one address each.
fn config_on(ifaces: &[&str], advskew: u8, preempt: bool, vhids: &[u8]) -> Config {
    let mut cfg = Config::default().advskew(advskew).preempt(preempt);
    for iface in ifaces {
        for &v in vhids {
            cfg = cfg.vhid(iface, v, &[format!("{}/24", vip_on(iface, v))]);
        }
    }
    cfg
}

fn all_vhids() -> impl Iterator<Item = u8> {
    1..=VHIDS
}

/// Node 0 master of every VHID, node 1 backup; returns node 0's config.
fn setup(c: &mut Cluster) -> Config {
    let master = config(0, false, all_vhids());
    c.start(0, &master);
    let ok = carpd_testbed::wait_until(
        master_down(3, 0) + 3 * MARGIN,
        Duration::from_millis(100),
        || all_vhids().all(|v| c.host(0).has_addr(&vip(v))),
    );
    assert!(ok.is_some(), "node 0 never held all {VHIDS} addresses");
    // The log check of `assert_untouched` is only worth something if it
    // recognises the transitions that did happen.
    let log = c.node(0).log();
    for v in all_vhids() {
        assert!(
            !transitions(&log, "eth0", v).is_empty(),
            "no transition line found for vhid {v} in:\n{log}"
        );
    }
    c.start(1, &config(100, true, all_vhids()));
    sleep(Duration::from_millis(2500));
    for v in all_vhids() {
        assert_eq!(c.owners(&vip(v)), vec![0], "vhid {v} before the reload");
    }
    master
}

/// Asserts that none of `vhids` changed state or address after `since`
/// (log marks are per node), and that node 0 still holds them.
fn assert_untouched(
    c: &mut Cluster,
    w: &Watcher,
    vhids: &BTreeSet<u8>,
    since: Instant,
    marks: [usize; 2],
) {
    let h = w.history();
    let addrs: BTreeSet<String> = vhids.iter().map(|v| vip(*v)).collect();
    let moved = h.changes_since(since, |a| addrs.contains(a));
    assert!(
        moved.is_empty(),
        "unchanged VHIDs lost or gained addresses: {moved:?}"
    );
    for (node, mark) in marks.iter().enumerate() {
        let log = c.node(node).log_since(*mark);
        for v in vhids {
            let t = transitions(&log, "eth0", *v);
            assert!(
                t.is_empty(),
                "node {node}: unchanged vhid {v} changed state: {t:?}"
            );
        }
    }
    for v in vhids {
        assert_eq!(c.owners(&vip(*v)), vec![0], "vhid {v}");
    }
}

#[test]
fn hup_changes_one_vhid_only() {
    let mut c = Cluster::new(2, 1);
    let w = c.watch();
    let mut cfg = setup(&mut c);

    // Vhid 7 on node 0 now advertises worse than node 1, which preempts.
    cfg.vhid_mut("eth0", 7).advskew = Some(200);
    c.write_config(0, &cfg.to_toml());
    let marks = [c.node(0).log_mark(), c.node(1).log_mark()];
    let hup = Instant::now();
    c.node(0).sighup();
    c.wait_owners(&vip(7), &[1], adv_interval(200) + 2 * MARGIN);

    let settled = Instant::now();
    sleep(Duration::from_secs(4));
    assert_eq!(c.owners(&vip(7)), vec![1]);
    let h = w.history();
    assert_eq!(
        h.max_owners_since(&vip(7), settled),
        1,
        "{:?}",
        h.timeline(&vip(7))
    );
    let others: BTreeSet<u8> = all_vhids().filter(|v| *v != 7).collect();
    assert_untouched(&mut c, &w, &others, hup, marks);
    assert!(c.node(0).is_running() && c.node(1).is_running());
}

#[test]
fn hup_with_broken_or_identical_config_changes_nothing() {
    let mut c = Cluster::new(2, 1);
    let w = c.watch();
    let cfg = setup(&mut c);
    let marks = [c.node(0).log_mark(), c.node(1).log_mark()];
    let first_hup = Instant::now();

    let broken = [
        "advbase = 1\n[[interface]\n".to_string(),
        format!("{}no_such_key = 1\n", cfg.to_toml()),
        cfg.to_toml().replace("id = 2\n", "id = 1\n"),
    ];
    for bad in &broken {
        c.write_config(0, bad);
        let mark = c.node(0).log_mark();
        c.node(0).sighup();
        sleep(Duration::from_millis(1500));
        assert!(c.node(0).is_running(), "a broken reload killed carpd");
        let log = c.node(0).log_since(mark).to_lowercase();
        assert!(
            ["error", "invalid", "fail"].iter().any(|w| log.contains(w)),
            "no error logged for a broken reload of:\n{bad}\nlog: {log}"
        );
    }

    // The good file again: nothing changed, so nothing moves either.
    c.write_config(0, &cfg.to_toml());
    c.node(0).sighup();
    sleep(Duration::from_secs(3));
    assert_untouched(&mut c, &w, &all_vhids().collect(), first_hup, marks);
    assert!(c.node(0).is_running() && c.node(1).is_running());
}

#[test]
fn hup_adds_and_removes_vhids() {
    let mut c = Cluster::new(2, 1);
    let w = c.watch();
    let mut cfg = setup(&mut c);

    // Vhid 50 leaves node 0 (it bows out: node 1 takes over at once), vhid
    // 51 is new on node 0 alone (master after its master-down time).
    cfg.remove_vhid("eth0", 50);
    cfg = cfg.vhid("eth0", 51, &[format!("{}/24", vip(51))]);
    c.write_config(0, &cfg.to_toml());
    let marks = [c.node(0).log_mark(), c.node(1).log_mark()];
    let hup = Instant::now();
    c.node(0).sighup();

    c.wait_owners(&vip(50), &[1], master_down(3, 100) + 2 * MARGIN);
    let took = w.time_to_own(1, &vip(50), hup);
    assert!(
        took < MARGIN,
        "vhid 50 moved after {took:?}: no bow-out on removal"
    );
    c.wait_owners(&vip(51), &[0], master_down(3, 0) + 2 * MARGIN);

    sleep(Duration::from_secs(2));
    let others: BTreeSet<u8> = (1..VHIDS).collect();
    assert_untouched(&mut c, &w, &others, hup, marks);
    assert_eq!(c.owners(&vip(50)), vec![1]);
    assert_eq!(c.owners(&vip(51)), vec![0]);
    assert!(c.node(0).is_running() && c.node(1).is_running());
}

/// A reload that changes one VHID on eth0 of the backup rebuilds eth0's
/// part of the receive table and keeps eth1's: the backup goes on hearing
/// the master on both links (a VHID that stopped hearing it would take
/// over after master-down), the changed VHID included.
#[test]
fn hup_on_one_interface_keeps_the_other_interface_heard() {
    let mut c = Cluster::new(2, 2);
    let w = c.watch();
    let config = |advskew: u8, preempt: bool| {
        config_on(&["eth0", "eth1"], advskew, preempt, &[1, 2, 3, 4, 5])
    };
    let all: Vec<String> = ["eth0", "eth1"]
        .iter()
        .flat_map(|i| (1..=5).map(move |v| (*i, v)))
        .map(|(i, v)| vip_on(i, v))
        .collect();
    c.start(0, &config(0, false));
    let ok = carpd_testbed::wait_until(
        master_down(3, 0) + 3 * MARGIN,
        Duration::from_millis(100),
        || all.iter().all(|a| c.host(0).has_addr(a)),
    );
    assert!(ok.is_some(), "node 0 never held all addresses");
    let mut backup = config(100, true);
    c.start(1, &backup);
    sleep(Duration::from_millis(2500));

    backup.vhid_mut("eth0", 1).advskew = Some(90);
    c.write_config(1, &backup.to_toml());
    let mark = c.node(1).log_mark();
    let hup = Instant::now();
    c.node(1).sighup();
    // long enough for a VHID that hears nothing to take over
    sleep(master_down(3, 100) + 2 * MARGIN);

    let log = c.node(1).log_since(mark);
    assert!(log.contains("reloaded"), "no reload logged: {log}");
    let h = w.history();
    let moved = h.changes_since(hup, |a| all.iter().any(|x| x == a));
    assert!(
        moved.is_empty(),
        "addresses moved after the reload: {moved:?}"
    );
    for iface in ["eth0", "eth1"] {
        for v in 1..=5 {
            let t = transitions(&log, iface, v);
            if (iface, v) == ("eth0", 1) {
                // restarted: INIT -> BACKUP, and no further
                assert!(
                    t.iter().all(|l| !l.contains("MASTER")),
                    "node 1: the changed vhid took over: {t:?}"
                );
            } else {
                assert!(
                    t.is_empty(),
                    "node 1: {iface} vhid {v} changed state: {t:?}"
                );
            }
            assert_eq!(c.owners(&vip_on(iface, v)), vec![0], "{iface} vhid {v}");
        }
    }
}
