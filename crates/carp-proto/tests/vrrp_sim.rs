//! VRRP machines on the simulated wire of `sim/harness.rs`, with a virtual
//! clock; every time below is exact, to the nanosecond. Wire delay is 1 ms,
//! addresses are 10.0.0.x, preemption is on (the RFC default) unless said
//! otherwise. With a 1 s interval, Skew_Time is 609.375 ms at priority 100
//! and 218.75 ms at priority 200, so Master_Down_Interval is 3.609375 s and
//! 3.21875 s.
//!
//! | Rule (RFC 9568 6.4 / RFC 3768 6.4) | Test |
//! |---|---|
//! | BACKUP, master-down `3 * Active_Adver_Interval + Skew_Time` fires -> MASTER (MasterDown); the higher priority times out first | `higher_priority_times_out_first`, `failover_exactly_master_down_after_last_advert` |
//! | BACKUP, priority 0 heard: wait only Skew_Time, then MASTER (PeerBowedOut) | `priority_0_hands_over_after_skew_time` |
//! | BACKUP, preemption on and a lower master: its advertisements are discarded, MASTER when the timer fires (Preempt) | `preemption_takes_over_when_the_timer_fires`, `demotion_lowers_the_priority_and_hands_over` |
//! | BACKUP, preemption off: a lower master keeps the addresses | `no_preemption_keeps_a_lower_master` |
//! | VRRPv3 BACKUP learns the master's interval (Active_Adver_Interval) | `backup_learns_the_master_interval` |
//! | VRRPv2: own interval, Skew_Time `(256 - priority) / 256` s | `v2_skew_is_in_256ths_of_a_second` |
//! | MASTER, higher priority heard -> BACKUP (PeerPreferred) | `preemption_takes_over_when_the_timer_fires`, `owner_takes_over_at_once` |
//! | MASTER, equal priority: the higher primary address wins (PeerWinsTie), no flapping | `equal_priority_higher_address_wins_without_flapping` |
//! | MASTER, lower priority heard: stays MASTER and advertises at once | `master_answers_a_lower_priority_at_once` |
//! | MASTER, priority 0 heard: advertises at once | `master_answers_priority_0_at_once` |
//! | Owner (priority 255): INIT -> MASTER at once (Owner) | `owner_takes_over_at_once` |
//! | Demotion lowers the advertised priority, never below 1 | `demotion_lowers_the_priority_and_hands_over` |
//! | Shutdown: MASTER sends priority 0, removes its addresses | `priority_0_hands_over_after_skew_time` |

#[path = "sim/harness.rs"]
mod harness;

use std::net::IpAddr;
use std::time::Duration;

use carp_proto::vrrp::Version;
use carp_proto::{Reason, State};
use harness::{Sim, ms, ns, secs, v4, vrrp_config};

use State::{Backup, Master};

const D: Duration = Duration::from_millis(1);
/// Master_Down_Interval at 1 s: priority 200 and 100.
const MD_200: Duration = Duration::from_nanos(3_218_750_000);
const MD_100: Duration = Duration::from_nanos(3_609_375_000);
/// Skew_Time at 1 s, priority 100.
const SKEW_100: Duration = Duration::from_nanos(609_375_000);

fn a1() -> IpAddr {
    v4([10, 0, 0, 1])
}

fn a2() -> IpAddr {
    v4([10, 0, 0, 2])
}

/// VRRPv3 at 1 s with `priority`.
fn v3(addr: IpAddr, priority: u8) -> carp_proto::MachineConfig {
    vrrp_config(addr, Version::V3, priority, 100)
}

/// Two nodes, both link up at 0.
fn pair(a: carp_proto::MachineConfig, b: carp_proto::MachineConfig) -> Sim {
    let mut sim = Sim::new(D);
    sim.add(a);
    sim.add(b);
    sim.link(0, true);
    sim.link(1, true);
    sim
}

/// Priorities of a node's advertisements and when they left.
fn sent_priorities(sim: &Sim, node: usize) -> Vec<(Duration, u8)> {
    sim.sends_of(node)
        .iter()
        .map(|s| (s.at, s.priority()))
        .collect()
}

#[test]
fn higher_priority_times_out_first() {
    let mut sim = pair(v3(a1(), 200), v3(a2(), 100));
    sim.run_until(secs(10));
    assert_eq!(
        sim.history(0),
        [
            (secs(0), Backup, Reason::Startup),
            (MD_200, Master, Reason::MasterDown)
        ]
    );
    assert_eq!(sim.history(1), [(secs(0), Backup, Reason::Startup)]);
    // one advertisement per second from the takeover on
    let sends = sent_priorities(&sim, 0);
    assert_eq!(sends[0], (MD_200, 200));
    assert_eq!(sends[6], (MD_200 + secs(6), 200));
    assert_eq!(sim.holding(), [0]);
}

#[test]
fn failover_exactly_master_down_after_last_advert() {
    let mut sim = pair(v3(a1(), 200), v3(a2(), 100));
    sim.run_until(ms(10_500));
    sim.kill(0);
    sim.run_until(secs(30));
    let last = sim.last_delivery(0, 1).unwrap();
    assert_eq!(last, MD_200 + secs(7) + D);
    assert_eq!(
        sim.history(1)[1],
        (last + MD_100, Master, Reason::MasterDown)
    );
    assert_eq!(last + MD_100, ns(13_829_125_000));
}

#[test]
fn priority_0_hands_over_after_skew_time() {
    let mut sim = pair(v3(a1(), 200), v3(a2(), 100));
    sim.run_until(ms(10_500));
    sim.with(0, |m, now| m.shutdown(now));
    assert_eq!(
        sim.history(0)[2],
        (ms(10_500), State::Init, Reason::Shutdown)
    );
    assert_eq!(sent_priorities(&sim, 0).last(), Some(&(ms(10_500), 0)));
    assert_eq!(sim.holding(), Vec::<usize>::new());
    sim.run_until(secs(20));
    let takeover = ms(10_500) + D + SKEW_100;
    assert_eq!(takeover, ns(11_110_375_000));
    assert_eq!(sim.history(1)[1], (takeover, Master, Reason::PeerBowedOut));
}

#[test]
fn preemption_takes_over_when_the_timer_fires() {
    let mut sim = Sim::new(D);
    sim.add(v3(a1(), 200));
    sim.add(v3(a2(), 100));
    sim.link(1, true);
    sim.run_until(secs(5));
    assert_eq!(sim.history(1)[1], (MD_100, Master, Reason::MasterDown));
    sim.link(0, true);
    sim.run_until(secs(20));
    // the lower master's advertisements are discarded: one master-down
    // time after the link came up
    let takeover = secs(5) + MD_200;
    assert_eq!(
        sim.history(0),
        [
            (secs(5), Backup, Reason::Startup),
            (takeover, Master, Reason::Preempt)
        ]
    );
    assert_eq!(
        sim.history(1)[2],
        (takeover + D, Backup, Reason::PeerPreferred)
    );
    assert_eq!(sim.holding(), [0]);
}

#[test]
fn no_preemption_keeps_a_lower_master() {
    let mut better = v3(a1(), 200);
    better.preempt = false;
    let mut sim = Sim::new(D);
    sim.add(better);
    sim.add(v3(a2(), 100));
    sim.link(1, true);
    sim.run_until(secs(5));
    sim.link(0, true);
    sim.run_until(secs(60));
    assert_eq!(sim.history(0), [(secs(5), Backup, Reason::Startup)]);
    assert_eq!(sim.holding(), [1]);
}

#[test]
fn equal_priority_higher_address_wins_without_flapping() {
    let mut sim = pair(v3(a1(), 100), v3(a2(), 100));
    sim.run_until(secs(60));
    // both time out together; 10.0.0.2 has the higher address and stays
    assert_eq!(
        sim.history(0),
        [
            (secs(0), Backup, Reason::Startup),
            (MD_100, Master, Reason::MasterDown),
            (MD_100 + D, Backup, Reason::PeerWinsTie)
        ]
    );
    assert_eq!(
        sim.history(1),
        [
            (secs(0), Backup, Reason::Startup),
            (MD_100, Master, Reason::MasterDown)
        ]
    );
    assert_eq!(sim.holding(), [1]);
}

#[test]
fn master_answers_a_lower_priority_at_once() {
    let mut sim = pair(v3(a1(), 200), v3(a2(), 100));
    sim.partition(&[&[0], &[1]]);
    sim.run_until(ms(10_500));
    assert_eq!(sim.masters(), [0, 1]);
    sim.heal();
    sim.run_until(secs(20));
    // B's next advertisement reaches A, which answers at once; B yields
    let heard = MD_100 + secs(7) + D;
    assert!(sent_priorities(&sim, 0).contains(&(heard, 200)));
    assert!(sim.announces_of(0).contains(&heard));
    assert_eq!(
        sim.history(1).last(),
        Some(&(heard + D, Backup, Reason::PeerPreferred))
    );
    assert_eq!(sim.holding(), [0]);
}

#[test]
fn master_answers_priority_0_at_once() {
    let mut sim = pair(v3(a1(), 200), v3(a2(), 100));
    sim.partition(&[&[0], &[1]]);
    sim.run_until(ms(10_500));
    sim.heal();
    // B stops before its next advertisement: A hears priority 0
    sim.with(1, |m, now| m.shutdown(now));
    sim.run_until(secs(12));
    let heard = ms(10_500) + D;
    let sends = sent_priorities(&sim, 0);
    assert!(sends.contains(&(heard, 200)), "{sends:?}");
    // the schedule restarts from there
    assert!(sends.contains(&(heard + secs(1), 200)), "{sends:?}");
    assert_eq!(sim.holding(), [0]);
}

#[test]
fn backup_learns_the_master_interval() {
    // A advertises every 3 s, B would every 1 s.
    let mut sim = pair(vrrp_config(a1(), Version::V3, 200, 300), v3(a2(), 100));
    sim.run_until(secs(20));
    // B times out first; A outranks it and takes over at its own
    // master-down time: 3 * 3 s + 56/256 * 3 s
    let a_takeover = ns(9_656_250_000);
    assert_eq!(sim.history(0)[1], (a_takeover, Master, Reason::Preempt));
    assert_eq!(
        sim.history(1)[2],
        (a_takeover + D, Backup, Reason::PeerPreferred)
    );
    sim.kill(0);
    sim.run_until(secs(60));
    // B waits 3 * 3 s + 156/256 * 3 s, the interval it learned
    let last = sim.last_delivery(0, 1).unwrap();
    assert_eq!(last, a_takeover + secs(9) + D);
    assert_eq!(
        sim.history(1)[3],
        (last + ns(10_828_125_000), Master, Reason::MasterDown)
    );
}

#[test]
fn v2_skew_is_in_256ths_of_a_second() {
    let mut sim = Sim::new(D);
    sim.add(vrrp_config(a1(), Version::V2, 100, 200));
    sim.link(0, true);
    sim.run_until(secs(10));
    // 3 * 2 s + 156/256 s (VRRPv3 would add 156/256 * 2 s)
    assert_eq!(
        sim.history(0)[1],
        (secs(6) + SKEW_100, Master, Reason::MasterDown)
    );
}

#[test]
fn owner_takes_over_at_once() {
    let mut sim = Sim::new(D);
    sim.add(v3(a1(), 255));
    sim.add(v3(a2(), 100));
    sim.link(1, true);
    sim.run_until(secs(5));
    sim.link(0, true);
    sim.run_until(secs(10));
    assert_eq!(sim.history(0), [(secs(5), Master, Reason::Owner)]);
    assert_eq!(
        sim.history(1)[2],
        (secs(5) + D, Backup, Reason::PeerPreferred)
    );
    assert_eq!(sim.holding(), [0]);
}

#[test]
fn demotion_lowers_the_priority_and_hands_over() {
    let mut sim = pair(v3(a1(), 200), v3(a2(), 100));
    sim.run_until(secs(10));
    sim.with(0, |m, now| m.set_demote(now, 150));
    // advertised at once
    assert_eq!(sent_priorities(&sim, 0).last(), Some(&(secs(10), 50)));
    sim.run_until(secs(30));
    // B discards A's advertisements from then on: master-down after the
    // last one it accepted
    let accepted = MD_200 + secs(6) + D;
    let takeover = accepted + MD_100;
    assert_eq!(sim.history(1)[1], (takeover, Master, Reason::Preempt));
    assert_eq!(
        sim.history(0)[2],
        (takeover + D, Backup, Reason::PeerPreferred)
    );
    // never below 1
    sim.with(1, |m, now| m.set_demote(now, 255));
    assert_eq!(sent_priorities(&sim, 1).last(), Some(&(secs(30), 1)));
}
