//! Failover between carpd processes on one segment: election, master-down
//! timing after a crash, preemption, bow-out on SIGTERM and link loss.
//!
//! All nodes run advbase 1 and dead ratio 3 unless stated, so the
//! master-down time of a backup with advskew `s` is 3 s + s/256 s. Margins
//! are generous: the machine running these is small and busy.

use std::thread::sleep;
use std::time::{Duration, Instant};

use carpd_testbed::{Cluster, Config, Watcher, adv_interval, master_down};

const VIP: &str = "10.99.0.100";

/// Slack for process start, scheduling and netlink on a loaded machine.
const MARGIN: Duration = Duration::from_millis(1500);

fn config(advskew: u8) -> Config {
    Config::default()
        .advskew(advskew)
        .vhid("eth0", 1, &[format!("{VIP}/24")])
}

/// Starts node `i` and waits until it alone holds the VIP (nobody else runs).
fn start_master(c: &mut Cluster, i: usize, cfg: &Config) {
    c.start(i, cfg);
    c.wait_owners(
        VIP,
        &[i],
        master_down(cfg.dead_ratio, cfg.advskew) + 2 * MARGIN,
    );
}

/// Starts backups after the master and lets them hear a few advertisements.
fn start_backups(c: &mut Cluster, nodes: &[(usize, &Config)], master: usize) {
    for (i, cfg) in nodes {
        c.start(*i, cfg);
    }
    sleep(Duration::from_millis(2500));
    assert_eq!(
        c.owners(VIP),
        vec![master],
        "backups must leave the VIP alone"
    );
}

/// Node 0 (advskew 0) master, node 1 (advskew 100) its backup.
fn master_and_backup() -> (Cluster, Watcher) {
    let mut c = Cluster::new(2, 1);
    let w = c.watch();
    start_master(&mut c, 0, &config(0));
    start_backups(&mut c, &[(1, &config(100))], 0);
    (c, w)
}

/// After `hold`, `owner` alone holds the VIP, and no two nodes held it at
/// once since `since`.
fn holds_alone(c: &Cluster, w: &Watcher, owner: usize, since: Instant, hold: Duration) {
    sleep(hold);
    assert_eq!(c.owners(VIP), vec![owner]);
    let h = w.history();
    assert_eq!(h.max_owners_since(VIP, since), 1, "{:?}", h.timeline(VIP));
}

#[test]
fn single_master_emerges() {
    let mut c = Cluster::new(2, 1);
    let w = c.watch();
    let begin = Instant::now();
    // Started together: the lower skew's master-down time expires first
    // (3 s against 3.78 s) and its first advertisement holds the other back.
    c.start(0, &config(0));
    c.start(1, &config(200));
    c.wait_owners(VIP, &[0], master_down(3, 200) + 2 * MARGIN);
    holds_alone(&c, &w, 0, Instant::now(), Duration::from_secs(4));
    let h = w.history();
    assert!(
        !h.ever_owned_since(1, VIP, begin),
        "node 1 held the VIP at some point: {:?}",
        h.timeline(VIP)
    );
    assert!(c.node(0).is_running() && c.node(1).is_running());
}

#[test]
fn sigkill_master_backup_takes_over_after_master_down() {
    let (mut c, w) = master_and_backup();

    let killed = Instant::now();
    c.node(0).sigkill();
    // A SIGKILLed process cannot remove its address: node 0 keeps it.
    c.wait_owners(VIP, &[0, 1], master_down(3, 100) + 2 * MARGIN);
    let took = w.history().time_to_own(1, VIP, killed);
    eprintln!("took {took:?}");
    // The backup's timer was last restarted by an advertisement at most one
    // advertisement interval before the kill.
    let latest = master_down(3, 100) + MARGIN;
    let earliest = master_down(3, 100)
        .saturating_sub(adv_interval(0))
        .saturating_sub(Duration::from_millis(400));
    assert!(
        took <= latest,
        "takeover after {took:?}, master-down is {:?}",
        master_down(3, 100)
    );
    assert!(
        took >= earliest,
        "takeover after only {took:?}: earlier than the master-down time allows ({earliest:?})"
    );
    assert!(c.node(1).is_running());
}

#[test]
fn three_nodes_second_best_takes_over() {
    let mut c = Cluster::new(3, 1);
    let w = c.watch();
    start_master(&mut c, 0, &config(0));
    let (b1, b2) = (config(100), config(200));
    start_backups(&mut c, &[(1, &b1), (2, &b2)], 0);

    let killed = Instant::now();
    c.node(0).sigkill();
    c.wait_owners(VIP, &[0, 1], master_down(3, 100) + 2 * MARGIN);
    let took = killed.elapsed();
    eprintln!("took {took:?}");
    assert!(took <= master_down(3, 100) + MARGIN, "took {took:?}");
    sleep(Duration::from_secs(4));
    assert_eq!(c.owners(VIP), vec![0, 1]);
    let h = w.history();
    assert!(
        !h.ever_owned_since(2, VIP, killed),
        "the third best took the VIP: {:?}",
        h.timeline(VIP)
    );
}

#[test]
fn preemption_better_node_takes_over_quickly() {
    let mut c = Cluster::new(2, 1);
    let w = c.watch();
    start_master(&mut c, 1, &config(100));

    // Its dead ratio of 10 (master-down 10 s) proves that the takeover comes
    // from preemption on the first advertisement heard, not from a timeout.
    let better = config(0).preempt(true).dead_ratio(10);
    let started = Instant::now();
    c.start(0, &better);
    c.wait_owners(VIP, &[0], adv_interval(100) + 3 * MARGIN);
    let took = w.history().time_to_own(0, VIP, started);
    eprintln!("took {took:?}");
    assert!(
        took <= adv_interval(100) + 2 * MARGIN,
        "preemption took {took:?} (master-down would be {:?})",
        master_down(10, 0)
    );

    holds_alone(&c, &w, 0, Instant::now(), Duration::from_secs(4));
}

#[test]
fn without_preemption_nothing_moves() {
    let mut c = Cluster::new(2, 1);
    let w = c.watch();
    start_master(&mut c, 1, &config(100));

    let started = Instant::now();
    c.start(0, &config(0));
    sleep(Duration::from_secs(10));
    assert_eq!(c.owners(VIP), vec![1]);
    let h = w.history();
    let moves = h.changes_since(started, |a| a == VIP);
    assert!(
        moves.is_empty(),
        "the VIP moved without preemption: {moves:?}"
    );
    assert!(c.node(0).is_running() && c.node(1).is_running());
}

#[test]
fn sigterm_master_bows_out() {
    let (mut c, w) = master_and_backup();

    let stopped = Instant::now();
    c.node(0).sigterm();
    c.wait_owners(VIP, &[1], master_down(3, 100) + 2 * MARGIN);
    let took = w.history().time_to_own(1, VIP, stopped);
    eprintln!("took {took:?}");
    // The backup's master-down time cannot expire this early: it took over
    // on the bow-out advertisement.
    assert!(
        took < MARGIN,
        "takeover after {took:?}: no bow-out (master-down is {:?})",
        master_down(3, 100)
    );
    let status = c.node(0).wait_exit(Duration::from_secs(5));
    assert!(
        status.is_some_and(|s| s.success()),
        "graceful exit expected, got {status:?}"
    );
    assert!(!c.host(0).has_addr(VIP), "node 0 left its address behind");

    holds_alone(&c, &w, 1, Instant::now(), Duration::from_secs(3));
}

#[test]
fn link_down_backup_takes_over() {
    let (mut c, w) = master_and_backup();

    // Unplug node 0: its switch port goes down, it sees carrier loss.
    let cut = Instant::now();
    c.lan.set_port(0, 0, false);
    c.wait_owners(VIP, &[1], master_down(3, 100) + 2 * MARGIN);
    let took = w.history().time_to_own(1, VIP, cut);
    eprintln!("took {took:?}");
    assert!(took <= master_down(3, 100) + MARGIN, "took {took:?}");

    // Plugged back in, node 0 comes back as a backup (no preemption).
    let restored = Instant::now();
    c.lan.set_port(0, 0, true);
    holds_alone(&c, &w, 1, restored, Duration::from_secs(5));
    assert!(c.node(0).is_running() && c.node(1).is_running());
}

#[test]
fn partition_heals_to_one_master() {
    let (mut c, w) = master_and_backup();

    // Node 1 stops hearing node 0: after its master-down time both are
    // masters (split brain, as CARP must behave).
    c.host(1).block_carp(true);
    c.wait_owners(VIP, &[0, 1], master_down(3, 100) + 2 * MARGIN);

    // Healed: node 1 hears the better master and yields.
    let healed = Instant::now();
    c.host(1).block_carp(false);
    c.wait_owners(VIP, &[0], adv_interval(0) + 2 * MARGIN);
    let took = healed.elapsed();
    eprintln!("took {took:?}");

    holds_alone(&c, &w, 0, Instant::now(), Duration::from_secs(4));
    assert!(c.node(0).is_running() && c.node(1).is_running());
}
