//! Several CARP machines on a simulated wire with a virtual clock (see
//! `sim/harness.rs`); every time below is exact, to the nanosecond. Wire
//! delay is 1 ms unless said otherwise. Addresses are 10.0.0.x.
//!
//! | Rule | Test |
//! |---|---|
//! | INIT -> BACKUP on link up (Startup), INIT ignores adverts | `start_better_node_wins`, `link_down_and_up`, `prop_single_machine` |
//! | BACKUP, master-down fires -> MASTER (MasterDown), `dead_ratio * advbase + advskew/256` after the last advert | `takeover_exactly_master_down_after_last_advert`, `dead_ratio_5`, `advbase_0_failover`, `advbase_0_advskew_0_failover` |
//! | BACKUP, bow-out -> MASTER (PeerBowedOut); a lost bow-out falls back to master-down | `bow_out_hands_over_in_one_wire_delay`, `lost_bow_out_falls_back_to_master_down` |
//! | BACKUP, their demote > ours -> MASTER even without preempt (PeerDemoted) | `demote_byte_loses_then_preempt_wins_back` |
//! | BACKUP, rules 1-4 only for the master we follow while it is heard | `demoted_second_master_after_a_cut_is_left_to_the_master_we_follow` |
//! | BACKUP, preempt and shorter interval -> MASTER (Preempt) | `preempt_better_node_joins_later`, `demote_byte_loses_then_preempt_wins_back`, `demote_skew_raises_advskew` |
//! | BACKUP, no preempt: nothing moves | `no_preempt_nothing_moves` |
//! | BACKUP, master's interval > dead_ratio * advbase -> MASTER (PeerWillTimeOut); advbase 0: > our master-down | `master_will_time_out`, `master_will_time_out_advbase_0`, `master_will_not_time_out_with_higher_dead_ratio` |
//! | Becoming MASTER: StateChanged, Install, Send, Announce; periodic Send; 2nd Announce after two adverts | `second_announce_after_two_adverts` (+ unit tests in `machine.rs`) |
//! | MASTER, better peer -> last Send, BACKUP (PeerPreferred) | `preempt_better_node_joins_later`, `demote_byte_loses_then_preempt_wins_back`, `partition_then_heal` |
//! | MASTER, equal priority -> UCARP tie-break (PeerWinsTie), no flap | `equal_timing_tie_break_table`, `equal_timing_random_pairs_never_flap` |
//! | MASTER, worse peer -> Announce + immediate Send, once per master-down time | `worse_master_is_answered_with_rate_limit`, `partition_then_heal` |
//! | Demotion in byte 4 / in advskew (capped at 240), advertised at once | `demote_byte_loses_then_preempt_wins_back`, `demote_skew_raises_advskew` |
//! | Send errors: 3 failures demote, 3 successes undo | `send_errors_demote_and_recover` |
//! | Link down -> INIT (LinkDown), addresses removed; link up -> BACKUP (LinkUp) | `link_down_and_up`, `link_up_with_preempt_takes_back` |
//! | Step down -> BACKUP (StepDown), no preemption for one master-down time | `step_down_holds_for_one_master_down_time`, `step_down_alone_retakes_after_master_down` |
//! | Shutdown: MASTER sends bow-out and removes; INIT, no deadline | `bow_out_hands_over_in_one_wire_delay` |
//! | Partition: both MASTER; heal: one MASTER within interval + delay, winner announces | `partition_then_heal`, `three_nodes_partition_then_heal` |
//! | 10% loss for an hour: the master never moves; a backup takes over only after 3 lost adverts in a row | `random_loss_one_hour` |
//! | No input sequence panics or leaves a non-MASTER holding addresses | `prop_single_machine`, `prop_cluster_converges` |

#[path = "sim/harness.rs"]
mod harness;

use std::net::IpAddr;
use std::time::{Duration, Instant};

use carp_proto::machine::{
    Action, AdvertGrid, CarpRules, DemoteStyle, MachineConfig, Rules, SendAdvert,
};
use carp_proto::{Advert, Machine, Reason, State, Timing};
use harness::{Rng, Sim, VHID, carp, config, ms, ns, secs, skew, v4};
use proptest::prelude::*;

use State::{Backup, Init, Master};

const D: Duration = Duration::from_millis(1);

fn a1() -> IpAddr {
    v4([10, 0, 0, 1])
}

fn a2() -> IpAddr {
    v4([10, 0, 0, 2])
}

fn a3() -> IpAddr {
    v4([10, 0, 0, 3])
}

/// Two nodes, both link up at 0.
fn pair(a: MachineConfig, b: MachineConfig) -> Sim {
    let mut sim = Sim::new(D);
    sim.add(a);
    sim.add(b);
    sim.link(0, true);
    sim.link(1, true);
    sim
}

#[test]
fn takeover_exactly_master_down_after_last_advert() {
    let mut sim = pair(config(a1(), 1, 0), config(a2(), 1, 10));
    sim.run_until(ms(10_500));
    assert_eq!(
        sim.history(0),
        [
            (secs(0), Backup, Reason::Startup),
            (secs(3), Master, Reason::MasterDown)
        ]
    );
    sim.kill(0);
    sim.run_until(secs(60));
    let last = sim.last_delivery(0, 1).unwrap();
    assert_eq!(last, secs(10) + D);
    let takeover = secs(10) + D + secs(3) + skew(10);
    assert_eq!(takeover, ns(13_040_062_500));
    assert_eq!(
        sim.history(1),
        [
            (secs(0), Backup, Reason::Startup),
            (takeover, Master, Reason::MasterDown)
        ]
    );
    assert_eq!(sim.holders.last().unwrap().0, takeover);
}

#[test]
fn dead_ratio_5() {
    let mut a = config(a1(), 1, 0);
    let mut b = config(a2(), 1, 10);
    carp(&mut a).dead_ratio = 5;
    carp(&mut b).dead_ratio = 5;
    let mut sim = pair(a, b);
    sim.run_until(ms(10_500));
    assert_eq!(sim.history(0)[1], (secs(5), Master, Reason::MasterDown));
    sim.kill(0);
    sim.run_until(secs(60));
    assert_eq!(
        sim.history(1),
        [
            (secs(0), Backup, Reason::Startup),
            (ns(15_040_062_500), Master, Reason::MasterDown)
        ]
    );
}

#[test]
fn advbase_0_failover() {
    // 31.25 ms and 62.5 ms intervals; master-down 93.75 ms and 187.5 ms.
    let mut sim = pair(config(a1(), 0, 8), config(a2(), 0, 16));
    sim.run_until(ms(1_010));
    assert_eq!(
        sim.history(0)[1],
        (ns(93_750_000), Master, Reason::MasterDown)
    );
    // 29 intervals after the takeover: 93.75 ms + 29 * 31.25 ms = 1 s.
    assert_eq!(sim.sends_of(0).last().unwrap().at, secs(1));
    sim.kill(0);
    sim.run_until(secs(5));
    assert_eq!(sim.last_delivery(0, 1), Some(secs(1) + D));
    assert_eq!(
        sim.history(1),
        [
            (secs(0), Backup, Reason::Startup),
            (ns(1_188_500_000), Master, Reason::MasterDown)
        ]
    );
}

#[test]
fn advbase_0_advskew_0_failover() {
    // advbase 0 advskew 0 advertises every 1/256 s (3.90625 ms).
    let mut sim = pair(config(a1(), 0, 0), config(a2(), 0, 2));
    sim.run_until(ns(500_500_000));
    assert_eq!(
        sim.history(0)[1],
        (ns(11_718_750), Master, Reason::MasterDown)
    );
    let sends = sim.sends_of(0);
    assert_eq!(sends[1].at - sends[0].at, ns(3_906_250));
    assert_eq!(sends.last().unwrap().at, ms(500));
    sim.kill(0);
    sim.run_until(secs(2));
    // 501 ms + 3 * 2/256 s.
    assert_eq!(
        sim.history(1)[1],
        (ns(524_437_500), Master, Reason::MasterDown)
    );
}

#[test]
fn start_better_node_wins() {
    let mut sim = pair(config(a1(), 1, 20), config(a2(), 1, 0));
    sim.run_until(secs(600));
    assert_eq!(sim.history(0), [(secs(0), Backup, Reason::Startup)]);
    assert_eq!(
        sim.history(1),
        [
            (secs(0), Backup, Reason::Startup),
            (secs(3), Master, Reason::MasterDown)
        ]
    );
    assert_eq!(sim.holding(), [1]);
}

/// Both start together with equal timing: both time out at 3 s, and the
/// one that is lower in UCARP's order keeps the addresses.
fn tie(x: IpAddr, y: IpAddr) -> usize {
    let mut sim = pair(config(x, 1, 0), config(y, 1, 0));
    sim.run_until(secs(600));
    let winner = sim.masters();
    assert_eq!(winner.len(), 1, "{x} vs {y}");
    let (w, l) = (winner[0], 1 - winner[0]);
    assert_eq!(
        sim.history(w),
        [
            (secs(0), Backup, Reason::Startup),
            (secs(3), Master, Reason::MasterDown)
        ],
        "{x} vs {y}"
    );
    assert_eq!(
        sim.history(l),
        [
            (secs(0), Backup, Reason::Startup),
            (secs(3), Master, Reason::MasterDown),
            (secs(3) + D, Backup, Reason::PeerWinsTie)
        ],
        "{x} vs {y}"
    );
    assert_eq!(sim.holding(), [w]);
    w
}

#[test]
fn equal_timing_tie_break_table() {
    // (x, y, winner): UCARP compares raw network-order u32s on a
    // little-endian host, so the last octet decides first.
    let cases: [([u8; 4], [u8; 4], [u8; 4]); 6] = [
        ([10, 0, 0, 1], [10, 0, 0, 2], [10, 0, 0, 1]),
        ([10, 0, 0, 2], [10, 0, 1, 1], [10, 0, 1, 1]),
        ([192, 168, 1, 200], [10, 0, 0, 201], [192, 168, 1, 200]),
        ([10, 0, 0, 5], [10, 1, 0, 5], [10, 0, 0, 5]),
        ([10, 0, 0, 5], [11, 0, 0, 5], [10, 0, 0, 5]),
        ([10, 0, 0, 255], [172, 16, 9, 254], [172, 16, 9, 254]),
    ];
    for (x, y, w) in cases {
        for (x, y) in [(x, y), (y, x)] {
            let winner = tie(v4(x), v4(y));
            assert_eq!([x, y][winner], w, "{x:?} vs {y:?}");
        }
    }
    let (x, y): (IpAddr, IpAddr) = ("fe80::1".parse().unwrap(), "fe80::2".parse().unwrap());
    assert_eq!(tie(x, y), 0);
    assert_eq!(tie(y, x), 1);
}

#[test]
fn equal_timing_random_pairs_never_flap() {
    let mut rng = Rng::new(7);
    for _ in 0..100 {
        let mut x = (rng.next_u64() as u32).to_be_bytes();
        let mut y = (rng.next_u64() as u32).to_be_bytes();
        x[0] = 10;
        y[0] = 10;
        if x == y {
            continue;
        }
        let winner = tie(v4(x), v4(y));
        let expected = usize::from(u32::from_le_bytes(y) < u32::from_le_bytes(x));
        assert_eq!(winner, expected, "{x:?} vs {y:?}");
    }
}

#[test]
fn preempt_better_node_joins_later() {
    let mut b = config(a2(), 1, 0);
    b.preempt = true;
    let mut sim = Sim::new(D);
    sim.add(config(a1(), 1, 100));
    sim.add(b);
    sim.link(0, true);
    sim.run_until(secs(10));
    sim.link(1, true);
    sim.run_until(secs(600));
    // A: master-down 3 + 100/256 s, then every 1 + 100/256 s; its first
    // advertisement after 10 s leaves at 3.390625 + 5 * 1.390625 s.
    let first = ns(10_343_750_000);
    assert!(sim.sends_of(0).iter().any(|s| s.at == first));
    assert_eq!(
        sim.history(1),
        [
            (secs(10), Backup, Reason::Startup),
            (first + D, Master, Reason::Preempt)
        ]
    );
    assert_eq!(
        sim.history(0),
        [
            (secs(0), Backup, Reason::Startup),
            (ns(3_390_625_000), Master, Reason::MasterDown),
            (first + 2 * D, Backup, Reason::PeerPreferred)
        ]
    );
    // Both hold the addresses for exactly one wire delay.
    assert!(sim.holders.contains(&(first + D, vec![0, 1])));
    assert!(sim.holders.contains(&(first + 2 * D, vec![1])));
    assert_eq!(sim.holding(), [1]);
}

#[test]
fn preempt_delay_holds_a_better_node_back_after_startup_and_link_up() {
    let mut a = config(a1(), 1, 0);
    a.preempt = true;
    a.preempt_delay = secs(30);
    let mut sim = Sim::new(D);
    sim.add(config(a2(), 1, 100));
    sim.add(a);
    sim.link(0, true);
    sim.run_until(secs(10));
    sim.link(1, true);
    sim.run_until(ms(39_900));
    // every advertisement of B before 40 s leaves A a BACKUP
    assert_eq!(sim.history(1), [(secs(10), Backup, Reason::Startup)]);
    assert_eq!(sim.holding(), [0]);
    sim.run_until(secs(120));
    let preempted = sim.history(1)[1];
    assert_eq!((preempted.1, preempted.2), (Master, Reason::Preempt));
    assert!(
        preempted.0 >= secs(40) && preempted.0 < secs(42),
        "{preempted:?}"
    );
    // a link flap starts the delay again
    sim.link(1, false);
    sim.run_until(secs(125));
    sim.link(1, true);
    sim.run_until(secs(154));
    assert_eq!(sim.history(1)[3], (secs(125), Backup, Reason::LinkUp));
    assert_eq!(sim.history(1).len(), 4);
    assert_eq!(sim.holding(), [0]);
    sim.run_until(secs(200));
    assert_eq!(sim.holding(), [1]);
}

#[test]
fn preempt_delay_does_not_delay_taking_over_a_dead_or_leaving_master() {
    let mut a = config(a1(), 1, 0);
    a.preempt = true;
    a.preempt_delay = secs(300);
    let mut sim = Sim::new(D);
    sim.add(config(a2(), 1, 100));
    sim.add(a.clone());
    sim.link(0, true);
    sim.run_until(secs(10));
    sim.link(1, true);
    sim.run_until(secs(20));
    sim.kill(0);
    sim.run_until(secs(30));
    let took = sim.history(1)[1];
    assert_eq!((took.1, took.2), (Master, Reason::MasterDown));
    assert!(took.0 < secs(24), "{took:?}");

    // the master leaves: a bow-out hands over in one wire delay
    let mut sim = Sim::new(D);
    sim.add(config(a2(), 1, 100));
    sim.add(a);
    sim.link(0, true);
    sim.run_until(secs(10));
    sim.link(1, true);
    sim.run_until(ms(20_500));
    sim.with(0, |m, now| m.shutdown(now));
    sim.run_until(secs(30));
    assert_eq!(
        sim.history(1)[1],
        (ms(20_500) + D, Master, Reason::PeerBowedOut)
    );
}

#[test]
fn no_preempt_nothing_moves() {
    let mut sim = Sim::new(D);
    sim.add(config(a1(), 1, 100));
    sim.add(config(a2(), 1, 0));
    sim.link(0, true);
    sim.run_until(secs(10));
    sim.link(1, true);
    sim.run_until(secs(600));
    assert_eq!(sim.history(1), [(secs(10), Backup, Reason::Startup)]);
    assert_eq!(sim.history(0).len(), 2);
    assert_eq!(sim.holding(), [0]);
}

#[test]
fn bow_out_hands_over_in_one_wire_delay() {
    let mut sim = pair(config(a1(), 1, 0), config(a2(), 1, 10));
    sim.run_until(ms(10_500));
    sim.with(0, |m, now| m.shutdown(now));
    sim.run_until(secs(600));
    let bow_out = sim.sends_of(0).last().copied().unwrap();
    assert_eq!(bow_out.at, ms(10_500));
    assert_eq!(bow_out.carp().timing, Timing::BOW_OUT);
    assert_eq!(sim.history(0)[2], (ms(10_500), Init, Reason::Shutdown));
    assert_eq!(
        sim.history(1),
        [
            (secs(0), Backup, Reason::Startup),
            (ms(10_500) + D, Master, Reason::PeerBowedOut)
        ]
    );
    assert_eq!(sim.nodes[0].machine.poll_timeout(), None);
    assert!(sim.holders.contains(&(ms(10_500), vec![])));
    assert_eq!(sim.holding(), [1]);
}

#[test]
fn lost_bow_out_falls_back_to_master_down() {
    let mut sim = pair(config(a1(), 1, 0), config(a2(), 1, 10));
    sim.set_loss(|p, _| p.carp().timing().is_bow_out());
    sim.run_until(ms(10_500));
    sim.with(0, |m, now| m.shutdown(now));
    sim.run_until(secs(60));
    assert_eq!(sim.lost.len(), 1);
    assert_eq!(
        sim.history(1)[1],
        (ns(13_040_062_500), Master, Reason::MasterDown)
    );
}

#[test]
fn demote_byte_loses_then_preempt_wins_back() {
    let mut a = config(a1(), 1, 0);
    a.preempt = true;
    let mut sim = pair(a, config(a2(), 1, 50));
    sim.run_until(ms(10_500));
    sim.with(0, |m, now| m.set_demote(now, 1));
    // Advertised at once, in byte 4, timing unchanged.
    let s = sim.sends_of(0).last().copied().unwrap();
    assert_eq!(
        (s.at, s.carp().demote, s.carp().timing),
        (ms(10_500), 1, Timing::new(1, 0))
    );
    sim.run_until(ms(20_500));
    // B takes over without preemption; A yields to the lower demotion.
    assert_eq!(sim.history(1)[1], (ms(10_501), Master, Reason::PeerDemoted));
    assert_eq!(
        sim.history(0)[2],
        (ms(10_502), Backup, Reason::PeerPreferred)
    );
    assert_eq!(sim.history(0).len(), 3);
    sim.with(0, |m, now| m.set_demote(now, 0));
    sim.run_until(secs(600));
    // B advertises every 1 + 50/256 s from 10.501 s; the ninth one
    // (21.2588125 s) is the first after the promotion.
    assert_eq!(
        &sim.history(0)[3..],
        [(ns(21_259_812_500), Master, Reason::Preempt)]
    );
    assert_eq!(
        &sim.history(1)[2..],
        [(ns(21_260_812_500), Backup, Reason::PeerPreferred)]
    );
    assert_eq!(sim.holding(), [0]);
}

#[test]
fn demote_skew_raises_advskew() {
    let mut a = config(a1(), 1, 0);
    let mut b = config(a2(), 1, 10);
    for c in [&mut a, &mut b] {
        c.preempt = true;
        carp(c).demote_style = DemoteStyle::Skew;
    }
    let mut sim = pair(a, b);
    sim.run_until(ms(10_500));
    sim.with(0, |m, now| m.set_demote(now, 20));
    assert_eq!(sim.nodes[0].machine.effective_timing(), Timing::new(1, 20));
    let s = sim.sends_of(0).last().copied().unwrap();
    assert_eq!(
        (s.at, s.carp().demote, s.carp().timing),
        (ms(10_500), 0, Timing::new(1, 20))
    );
    sim.run_until(secs(15));
    assert_eq!(sim.history(1)[1], (ms(10_501), Master, Reason::Preempt));
    assert_eq!(
        sim.history(0)[2],
        (ms(10_502), Backup, Reason::PeerPreferred)
    );
    sim.with(0, |m, now| m.set_demote(now, 250));
    assert_eq!(sim.nodes[0].machine.effective_timing(), Timing::new(1, 240));
    sim.run_until(ms(20_500));
    sim.with(0, |m, now| m.set_demote(now, 0));
    sim.run_until(secs(600));
    // B: every 1 + 10/256 s from 10.501 s; the tenth is the first after
    // 20.5 s.
    assert_eq!(
        &sim.history(0)[3..],
        [(ns(20_892_625_000), Master, Reason::Preempt)]
    );
    assert_eq!(sim.holding(), [0]);
}

#[test]
fn master_will_time_out() {
    let mut sim = Sim::new(D);
    sim.add(config(a1(), 5, 0));
    sim.add(config(a2(), 1, 0));
    sim.link(0, true);
    sim.run_until(ms(19_500));
    assert_eq!(sim.history(0)[1], (secs(15), Master, Reason::MasterDown));
    sim.link(1, true);
    sim.run_until(secs(600));
    // A's advertisement at 20 s says 5 s > 3 * 1 s.
    assert_eq!(
        sim.history(1)[1],
        (secs(20) + D, Master, Reason::PeerWillTimeOut)
    );
    assert_eq!(
        sim.history(0)[2],
        (secs(20) + 2 * D, Backup, Reason::PeerPreferred)
    );
    assert_eq!(sim.transitions.len(), 5);
}

#[test]
fn master_will_time_out_advbase_0() {
    let mut sim = Sim::new(D);
    sim.add(config(a1(), 0, 64));
    sim.add(config(a2(), 0, 8));
    sim.link(0, true);
    sim.run_until(ms(2_200));
    assert_eq!(sim.history(0)[1], (ms(750), Master, Reason::MasterDown));
    sim.link(1, true);
    sim.run_until(secs(60));
    // 250 ms > B's master-down (93.75 ms).
    assert_eq!(
        sim.history(1)[1],
        (ms(2_251), Master, Reason::PeerWillTimeOut)
    );
    assert_eq!(
        sim.history(0)[2],
        (ms(2_252), Backup, Reason::PeerPreferred)
    );
    assert_eq!(sim.transitions.len(), 5);
}

#[test]
fn master_will_not_time_out_with_higher_dead_ratio() {
    let mut b = config(a2(), 1, 0);
    carp(&mut b).dead_ratio = 6;
    let mut sim = Sim::new(D);
    sim.add(config(a1(), 5, 0));
    sim.add(b);
    sim.link(0, true);
    sim.run_until(ms(19_500));
    sim.link(1, true);
    sim.run_until(secs(600));
    assert_eq!(sim.history(1), [(ms(19_500), Backup, Reason::Startup)]);
    assert_eq!(sim.holding(), [0]);
}

#[test]
fn send_errors_demote_and_recover() {
    let mut sim = pair(config(a1(), 1, 0), config(a2(), 1, 10));
    sim.run_until(ms(10_500));
    sim.nodes[0].send_fails = true;
    sim.run_until(ms(20_500));
    let at = |sim: &Sim, t: Duration| {
        sim.sends_of(0)
            .iter()
            .filter(|s| s.at == t)
            .map(|s| s.carp().demote)
            .collect::<Vec<_>>()
    };
    // 11 s, 12 s fail; the third failure (13 s) demotes, advertised at once.
    assert_eq!(at(&sim, secs(12)), [0]);
    assert_eq!(at(&sim, secs(13)), [0, 1]);
    assert_eq!(sim.nodes[0].machine.demote(), 1);
    // Nothing got through since 10 s: B times out; A yields to it.
    assert_eq!(
        sim.history(1)[1],
        (ns(13_040_062_500), Master, Reason::MasterDown)
    );
    assert_eq!(
        sim.history(0)[2],
        (ns(13_041_062_500), Backup, Reason::PeerPreferred)
    );
    sim.nodes[0].send_fails = false;
    sim.run_until(ms(30_500));
    sim.with(1, |m, now| m.shutdown(now));
    sim.run_until(secs(60));
    assert_eq!(
        sim.history(0)[3],
        (ms(30_501), Master, Reason::PeerBowedOut)
    );
    // Successes at 30.501, 31.501 and 32.501 s undo the demotion.
    assert_eq!(at(&sim, ms(30_501)), [1]);
    assert_eq!(at(&sim, ms(31_501)), [1]);
    assert_eq!(at(&sim, ms(32_501)), [1, 0]);
    assert_eq!(sim.nodes[0].machine.demote(), 0);
}

#[test]
fn link_down_and_up() {
    let mut sim = pair(config(a1(), 1, 0), config(a2(), 1, 10));
    sim.run_until(ms(10_500));
    sim.link(0, false);
    assert_eq!(sim.history(0)[2], (ms(10_500), Init, Reason::LinkDown));
    assert_eq!(sim.holders.last().unwrap(), &(ms(10_500), vec![]));
    assert_eq!(sim.nodes[0].machine.poll_timeout(), None);
    sim.run_until(ms(20_500));
    assert_eq!(
        sim.history(1)[1],
        (ns(13_040_062_500), Master, Reason::MasterDown)
    );
    sim.link(0, true);
    sim.run_until(secs(600));
    assert_eq!(&sim.history(0)[3..], [(ms(20_500), Backup, Reason::LinkUp)]);
    assert_eq!(sim.holding(), [1]);
}

#[test]
fn link_up_with_preempt_takes_back() {
    let mut a = config(a1(), 1, 0);
    a.preempt = true;
    let mut sim = pair(a, config(a2(), 1, 10));
    sim.run_until(ms(10_500));
    sim.link(0, false);
    sim.run_until(ms(20_500));
    sim.link(0, true);
    sim.run_until(secs(600));
    // B: every 1 + 10/256 s from 13.0400625 s; the eighth is the first
    // after 20.5 s.
    assert_eq!(
        &sim.history(0)[3..],
        [
            (ms(20_500), Backup, Reason::LinkUp),
            (ns(21_353_562_500), Master, Reason::Preempt)
        ]
    );
    assert_eq!(
        &sim.history(1)[2..],
        [(ns(21_354_562_500), Backup, Reason::PeerPreferred)]
    );
}

#[test]
fn step_down_holds_for_one_master_down_time() {
    let mut a = config(a1(), 1, 0);
    a.preempt = true;
    let mut sim = pair(a, config(a2(), 1, 10));
    sim.run_until(ms(10_500));
    sim.with(0, |m, now| m.step_down(now));
    assert_eq!(sim.holders.last().unwrap(), &(ms(10_500), vec![]));
    sim.run_until(secs(600));
    // B's first advertisement (13.0400625 s) reaches A inside the 3 s hold
    // (until 13.5 s); the second (14.079125 s) is preempted.
    assert_eq!(
        &sim.history(0)[2..],
        [
            (ms(10_500), Backup, Reason::StepDown),
            (ns(14_080_125_000), Master, Reason::Preempt)
        ]
    );
    assert_eq!(
        &sim.history(1)[1..],
        [
            (ns(13_040_062_500), Master, Reason::MasterDown),
            (ns(14_081_125_000), Backup, Reason::PeerPreferred)
        ]
    );
}

#[test]
fn step_down_alone_retakes_after_master_down() {
    let mut sim = Sim::new(D);
    sim.add(config(a1(), 1, 0));
    sim.link(0, true);
    sim.run_until(ms(10_500));
    sim.with(0, |m, now| m.step_down(now));
    sim.run_until(secs(60));
    assert_eq!(
        &sim.history(0)[2..],
        [
            (ms(10_500), Backup, Reason::StepDown),
            (ms(13_500), Master, Reason::MasterDown)
        ]
    );
}

#[test]
fn second_announce_after_two_adverts() {
    let mut sim = Sim::new(D);
    sim.add(config(a1(), 1, 0));
    sim.link(0, true);
    sim.run_until(secs(60));
    assert_eq!(sim.announces_of(0), [secs(3), secs(5)]);
    let sends: Vec<_> = sim.sends_of(0).iter().map(|s| s.at).take(3).collect();
    assert_eq!(sends, [secs(3), secs(4), secs(5)]);
}

#[test]
fn worse_master_is_answered_with_rate_limit() {
    // B (1 + 50/256 s) hears nothing and keeps advertising as MASTER.
    let mut sim = pair(config(a1(), 1, 0), config(a2(), 1, 50));
    sim.set_loss(|p, _| p.to == 1);
    sim.run_until(ms(11_000));
    // B's advertisements reach A at 3.1963125 s + k * 1.1953125 s; A answers
    // the first, then the first arriving a master-down time (3 s) after
    // its previous answer.
    let answers = [ns(3_196_312_500), ns(6_782_250_000), ns(10_368_187_500)];
    assert_eq!(
        sim.announces_of(0),
        [secs(3), answers[0], secs(5), answers[1], answers[2]]
    );
    let extra: Vec<_> = sim
        .sends_of(0)
        .iter()
        .map(|s| s.at)
        .filter(|t| t.subsec_nanos() != 0)
        .collect();
    assert_eq!(extra, answers);
    assert_eq!(sim.history(0).len(), 2);
}

#[test]
fn partition_then_heal() {
    let mut sim = pair(config(a1(), 1, 0), config(a2(), 1, 20));
    sim.run_until(ms(10_500));
    sim.partition(&[&[0], &[1]]);
    sim.run_until(ms(20_300));
    assert_eq!(sim.masters(), [0, 1]);
    assert_eq!(
        sim.history(1)[1],
        (ns(13_079_125_000), Master, Reason::MasterDown)
    );
    sim.heal();
    sim.run_until(secs(600));
    // B advertises at 20.626 s; A answers on arrival and B yields.
    assert_eq!(
        &sim.history(1)[2..],
        [(ms(20_628), Backup, Reason::PeerPreferred)]
    );
    assert!(ms(20_628) <= ms(20_300) + Timing::new(1, 20).interval() + D);
    assert!(sim.announces_of(0).contains(&ms(20_627)));
    assert_eq!(sim.history(0).len(), 2);
    assert_eq!(sim.holding(), [0]);
}

/// advskews 0, 10 and 20 from 0; from 10.5 s node 0 (the master) is cut
/// off from the other two.
fn three_nodes_cut_off_the_master() -> Sim {
    let mut sim = Sim::new(D);
    for (addr, skew) in [(a1(), 0), (a2(), 10), (a3(), 20)] {
        let n = sim.add(config(addr, 1, skew));
        sim.link(n, true);
    }
    sim.run_until(ms(10_500));
    sim.partition(&[&[0], &[1, 2]]);
    sim
}

#[test]
fn three_nodes_partition_then_heal() {
    let mut sim = three_nodes_cut_off_the_master();
    sim.run_until(ms(30_250));
    assert_eq!(sim.masters(), [0, 1]);
    let heal = sim.now();
    sim.heal();
    sim.run_until(secs(600));
    assert_eq!(sim.masters(), [0]);
    assert_eq!(sim.holding(), [0]);
    let last = sim.transitions.last().unwrap();
    assert_eq!((last.node, last.to), (1, Backup));
    assert!(last.at <= heal + Timing::new(1, 10).interval() + 2 * D);
    assert!(sim.announces_of(0).iter().any(|&t| t > heal && t < last.at));
    assert_eq!(sim.history(2), [(secs(0), Backup, Reason::Startup)]);
}

/// A cut that makes the master's sends fail (nftables dropping its
/// output) demotes it; once healed it advertises that demotion until three
/// sends succeed. The third node follows the master that took over and
/// must not take over from the demoted one as well.
#[test]
fn demoted_second_master_after_a_cut_is_left_to_the_master_we_follow() {
    let mut sim = three_nodes_cut_off_the_master();
    sim.nodes[0].send_fails = true;
    sim.run_until(ms(30_250));
    assert_eq!(sim.masters(), [0, 1]);
    assert_eq!(sim.nodes[0].machine.demote(), 1);
    let heal = sim.now();
    sim.heal();
    sim.nodes[0].send_fails = false;
    sim.run_until(secs(600));
    // A's demoted advertisement (31 s) reaches C, which follows B: C stays.
    assert!(
        sim.sends_of(0)
            .iter()
            .any(|s| s.at > heal && s.carp().demote == 1)
    );
    assert_eq!(sim.history(2), [(secs(0), Backup, Reason::Startup)]);
    assert_eq!(sim.masters(), [1]);
    assert_eq!(sim.holding(), [1]);
    let last = sim.transitions.last().unwrap();
    assert_eq!(
        (last.node, last.to, last.reason),
        (0, Backup, Reason::PeerPreferred)
    );
    assert!(last.at <= heal + Timing::new(1, 10).interval() + 2 * D);
}

#[test]
fn random_loss_one_hour() {
    let mut sim = pair(config(a1(), 1, 0), config(a2(), 1, 10));
    sim.set_loss(|_, rng| rng.chance(0.10));
    sim.run_until(secs(3_600));
    // The master never moves and never drops its addresses.
    assert_eq!(
        sim.history(0),
        [
            (secs(0), Backup, Reason::Startup),
            (secs(3), Master, Reason::MasterDown)
        ]
    );
    assert!(
        sim.holders
            .iter()
            .all(|(t, h)| *t < secs(3) || h.contains(&0))
    );
    let lost = sim.lost.len() as f64 / sim.sent.len() as f64;
    assert!((0.08..0.12).contains(&lost), "{lost}");
    // The backup only takes over when three advertisements in a row were
    // lost (one hour at 10% makes that happen a few times), exactly one
    // master-down time after the last it heard, and yields again within one
    // interval and two wire delays.
    let b = sim.transitions_of(1);
    for t in b.iter().filter(|t| t.to == Master) {
        assert_eq!(t.reason, Reason::MasterDown);
        let heard = sim
            .delivered
            .iter()
            .rfind(|d| d.from == 0 && d.to == 1 && d.at < t.at)
            .unwrap()
            .at;
        assert_eq!(t.at, heard + secs(3) + skew(10));
        let missed = sim
            .lost
            .iter()
            .filter(|p| p.from == 0 && p.to == 1 && p.sent_at > heard - D && p.sent_at < t.at)
            .count();
        assert!(missed >= 3, "takeover at {:?} after {missed} losses", t.at);
        let back = b.iter().find(|u| u.at > t.at).unwrap();
        assert_eq!(back.to, Backup);
        assert!(back.at - t.at <= secs(1) + 2 * D);
    }
}

/// One input to a lone machine, for the property test.
#[derive(Debug, Clone)]
enum Input {
    Wait(u32),
    Timeout,
    Link(bool),
    Advert {
        src: u8,
        vhid_ok: bool,
        advbase: u8,
        advskew: u8,
        demote: u8,
        counter: u64,
    },
    SendResult(bool),
    Demote(u8),
    StepDown,
    Shutdown,
}

fn input() -> impl Strategy<Value = Input> {
    prop_oneof![
        4 => (0u32..5_000_000).prop_map(Input::Wait),
        4 => Just(Input::Timeout),
        1 => any::<bool>().prop_map(Input::Link),
        4 => (0u8..4, prop::bool::weighted(0.9), any::<u8>(), any::<u8>(), prop_oneof![Just(0u8), any::<u8>()], any::<u64>())
            .prop_map(|(src, vhid_ok, advbase, advskew, demote, counter)| Input::Advert { src, vhid_ok, advbase, advskew, demote, counter }),
        2 => any::<bool>().prop_map(Input::SendResult),
        1 => prop_oneof![Just(0u8), Just(1), any::<u8>()].prop_map(Input::Demote),
        1 => Just(Input::StepDown),
        1 => Just(Input::Shutdown),
    ]
}

fn machine_config() -> impl Strategy<Value = MachineConfig> {
    (
        any::<u8>(),
        any::<u8>(),
        any::<u8>(),
        any::<bool>(),
        any::<bool>(),
        0u8..4,
        any::<u64>(),
        prop::option::of((any::<u16>(), 0u16..64, -5_000i64..5_000)),
        prop_oneof![Just(0u64), 1u64..10_000],
    )
        .prop_map(
            |(advbase, advskew, dead_ratio, preempt, skew_style, addr, counter, grid, delay_ms)| {
                MachineConfig {
                    vhid: VHID,
                    rules: Rules::Carp(CarpRules {
                        timing: Timing::new(advbase, advskew),
                        dead_ratio,
                        demote_style: if skew_style {
                            DemoteStyle::Skew
                        } else {
                            DemoteStyle::Byte
                        },
                    }),
                    preempt,
                    preempt_delay: Duration::from_millis(delay_ms),
                    local_addr: v4([10, 0, 0, addr]),
                    initial_counter: counter,
                    advert_grid: grid.map(|(slot, slots, epoch_ms)| {
                        let now = Instant::now();
                        let shift = Duration::from_millis(epoch_ms.unsigned_abs());
                        AdvertGrid {
                            epoch: if epoch_ms < 0 {
                                now - shift
                            } else {
                                now + shift
                            },
                            slot,
                            slots,
                        }
                    }),
                }
            },
        )
}

proptest! {
    #[test]
    fn prop_single_machine(config in machine_config(), inputs in prop::collection::vec(input(), 1..200)) {
        let origin = Instant::now();
        let mut now = origin;
        let mut m = Machine::new(config.clone());
        let mut holds = false;
        let mut state = Init;
        let mut finished = false;
        let mut counter = config.initial_counter;
        for i in inputs {
            match i {
                Input::Wait(us) => now += Duration::from_micros(u64::from(us)),
                Input::Timeout => {
                    if let Some(t) = m.poll_timeout() {
                        now = now.max(t);
                        m.handle_timeout(now);
                        prop_assert!(m.poll_timeout().is_none_or(|t| t > now));
                        // a MASTER advertises at least once an interval,
                        // on a grid or not
                        if m.state() == Master {
                            let interval = m.effective_timing().interval();
                            prop_assert!(m.poll_timeout().is_some_and(|t| t <= now + interval));
                        }
                    }
                }
                Input::Link(up) => m.handle_link(now, up),
                Input::Advert { src, vhid_ok, advbase, advskew, demote, counter: c } => {
                    let advert = Advert {
                        vhid: if vhid_ok { VHID } else { VHID.wrapping_add(1) },
                        advbase,
                        advskew,
                        demote,
                        counter: c,
                        hmac: [0; 20],
                    };
                    let before = m.state();
                    m.handle_advert(now, v4([10, 0, 0, 100 + src]), &advert);
                    if vhid_ok && before != Init && !finished {
                        counter = c;
                    }
                }
                Input::SendResult(ok) => m.handle_send_result(now, ok),
                Input::Demote(d) => m.set_demote(now, d),
                Input::StepDown => m.step_down(now),
                Input::Shutdown => {
                    m.shutdown(now);
                    finished = true;
                }
            }
            while let Some(a) = m.poll_action() {
                match a {
                    Action::InstallAddresses => {
                        prop_assert!(!holds);
                        holds = true;
                    }
                    Action::RemoveAddresses => {
                        prop_assert!(holds);
                        holds = false;
                    }
                    Action::Announce => prop_assert!(holds),
                    Action::StateChanged { from, to, .. } => {
                        prop_assert_eq!(from, state);
                        prop_assert_ne!(from, to);
                        state = to;
                    }
                    Action::Send(SendAdvert::Vrrp(s)) => {
                        prop_assert!(false, "VRRP from a CARP machine: {:?}", s);
                    }
                    Action::Send(SendAdvert::Carp(s)) => {
                        counter = counter.wrapping_add(1);
                        prop_assert_eq!(s.counter, counter);
                        if config.carp().is_some_and(|c| c.demote_style == DemoteStyle::Skew) {
                            prop_assert_eq!(s.demote, 0);
                        }
                    }
                }
            }
            prop_assert_eq!(state, m.state());
            prop_assert_eq!(holds, state == Master);
            if state == Init {
                prop_assert_eq!(m.poll_timeout(), None);
            }
            if finished {
                prop_assert_eq!(state, Init);
            }
        }
    }
}

/// A scripted event in the cluster property test.
#[derive(Debug, Clone)]
enum Event {
    Link(usize, bool),
    Demote(usize, u8),
    StepDown(usize),
    Shutdown(usize),
    Partition(usize),
    Heal,
    Mute(usize, bool),
    SendFails(usize, bool),
    Loss(u8),
}

fn event(n: usize) -> impl Strategy<Value = Event> {
    prop_oneof![
        (0..n, any::<bool>()).prop_map(|(i, up)| Event::Link(i, up)),
        (0..n, 0u8..3).prop_map(|(i, d)| Event::Demote(i, d)),
        (0..n).prop_map(Event::StepDown),
        (0..n).prop_map(Event::Shutdown),
        (0..n).prop_map(Event::Partition),
        Just(Event::Heal),
        (0..n, any::<bool>()).prop_map(|(i, m)| Event::Mute(i, m)),
        (0..n, any::<bool>()).prop_map(|(i, f)| Event::SendFails(i, f)),
        (0u8..50).prop_map(Event::Loss),
    ]
}

fn cluster() -> impl Strategy<Value = (Vec<MachineConfig>, Vec<(u32, Event)>, u64)> {
    (2usize..=3, 1u8..=2, any::<bool>()).prop_flat_map(|(n, advbase, skew_style)| {
        let node = (any::<u8>(), 2u8..=5, any::<bool>());
        (
            prop::collection::vec(node, n).prop_map(move |nodes| {
                nodes
                    .into_iter()
                    .enumerate()
                    .map(|(i, (advskew, dead_ratio, preempt))| {
                        let mut c = config(v4([10, 0, 0, 1 + i as u8]), advbase, advskew);
                        carp(&mut c).dead_ratio = dead_ratio;
                        c.preempt = preempt;
                        if skew_style {
                            carp(&mut c).demote_style = DemoteStyle::Skew;
                        }
                        c
                    })
                    .collect::<Vec<_>>()
            }),
            prop::collection::vec((0u32..60_000, event(n)), 0..40),
            any::<u64>(),
        )
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Random chaos for a minute (the harness checks after every input that
    /// only MASTERs hold the addresses), then calm: every live node's link
    /// up, no loss, no demotion. The cluster must settle on exactly one
    /// MASTER and stay there.
    #[test]
    fn prop_cluster_converges((configs, mut events, seed) in cluster()) {
        let mut sim = Sim::new(D);
        sim.rng = Rng::new(seed);
        let n = configs.len();
        for c in configs {
            let i = sim.add(c);
            sim.link(i, true);
        }
        let mut finished = vec![false; n];
        events.sort_by_key(|(t, _)| *t);
        for (t, e) in events {
            sim.run_until(ms(u64::from(t)));
            match e {
                Event::Link(i, up) => sim.link(i, up),
                Event::Demote(i, d) => sim.with(i, |m, now| m.set_demote(now, d)),
                Event::StepDown(i) => sim.with(i, |m, now| m.step_down(now)),
                Event::Shutdown(i) => {
                    sim.with(i, |m, now| m.shutdown(now));
                    finished[i] = true;
                }
                Event::Partition(i) => {
                    let rest: Vec<usize> = (0..n).filter(|&j| j != i).collect();
                    sim.partition(&[&[i], &rest]);
                }
                Event::Heal => sim.heal(),
                Event::Mute(i, m) => sim.nodes[i].muted = m,
                Event::SendFails(i, f) => sim.nodes[i].send_fails = f,
                Event::Loss(p) => {
                    let p = f64::from(p) / 100.0;
                    sim.set_loss(move |_, rng| rng.chance(p));
                }
            }
        }
        sim.run_until(secs(61));
        sim.heal();
        sim.set_loss(|_, _| false);
        for i in 0..n {
            sim.nodes[i].muted = false;
            sim.nodes[i].deaf = false;
            sim.nodes[i].send_fails = false;
            sim.link(i, true);
            sim.with(i, |m, now| m.set_demote(now, 0));
        }
        sim.run_until(secs(121));
        let settled = sim.transitions.len();
        sim.run_until(secs(181));
        prop_assert_eq!(sim.transitions.len(), settled, "still moving: {:?}", &sim.transitions[settled..]);
        let live = finished.iter().filter(|f| !**f).count();
        prop_assert_eq!(sim.masters().len(), usize::from(live > 0));
        prop_assert_eq!(sim.holding(), sim.masters());
    }
}
