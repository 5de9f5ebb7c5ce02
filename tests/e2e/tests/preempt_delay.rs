//! `preempt_delay`: a preferred node that keeps restarting next to a
//! stable master does not pull the address over each time; once it has
//! run longer than the delay, it preempts as configured. Real processes in
//! network namespaces (needs root).

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use carpd_testbed::{Cluster, Config};

const VIP: &str = "10.99.0.100";
/// Generous: start-up and elections on a busy 2-core machine.
const SETTLE: Duration = Duration::from_secs(15);
const DELAY: Duration = Duration::from_secs(8);
/// How long each run of the restarting node lasts: several of the stable
/// master's advertisements (each one would be preempted without the
/// delay), well inside the delay.
const UPTIME: Duration = Duration::from_secs(3);

fn config(advskew: u8) -> Config {
    Config::default()
        .advskew(advskew)
        .preempt(true)
        .vhid("eth0", 1, &[format!("{VIP}/24")])
}

#[test]
fn a_restarting_preferred_node_does_not_move_the_address() {
    let mut c = Cluster::new(2, 1);
    // the stable master: worse priority, no delay
    c.start(1, &config(100));
    c.wait_owners(VIP, &[1], SETTLE);
    let preferred = format!(
        "preempt_delay = \"{}s\"\n{}",
        DELAY.as_secs(),
        config(0).to_toml()
    );
    let w = c.watch();
    let since = Instant::now();
    for _ in 0..3 {
        c.start_toml(0, &preferred);
        std::thread::sleep(UPTIME);
        c.node(0).sigterm();
        assert!(c.node(0).wait_exit(Duration::from_secs(10)).is_some());
    }
    let h = w.history();
    assert!(
        !h.ever_owned_since(0, VIP, since),
        "the restarting node took the address: {:?}",
        h.timeline(VIP)
    );
    assert_eq!(c.owners(VIP), [1]);

    // Left running, it preempts once the delay is over, not before.
    let started = Instant::now();
    c.start_toml(0, &preferred);
    c.wait_owners(VIP, &[0], DELAY + SETTLE);
    let took = w.time_to_own(0, VIP, started);
    eprintln!("preempted {took:?} after start (preempt_delay {DELAY:?})");
    assert!(took >= DELAY, "{took:?}");
}
