//! Unit tests of the machine: its rules, one at a time.

use std::net::Ipv4Addr;

use super::rules::tie_rank;
use super::*;

const SKEW_UNIT: Duration = Duration::from_nanos(3_906_250);

fn cfg(advbase: u8, advskew: u8, style: DemoteStyle) -> MachineConfig {
    MachineConfig {
        vhid: 1,
        rules: Rules::Carp(CarpRules {
            timing: Timing::new(advbase, advskew),
            dead_ratio: 3,
            demote_style: style,
        }),
        preempt: false,
        preempt_delay: Duration::ZERO,
        local_addr: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)),
        initial_counter: 41,
        advert_grid: None,
    }
}

fn advert(advbase: u8, advskew: u8, demote: u8, counter: u64) -> Advert {
    Advert {
        vhid: 1,
        advskew,
        advbase,
        demote,
        counter,
        hmac: [0; 20],
    }
}

fn peer(last: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 0, 0, last))
}

fn drain(m: &mut Machine) -> Vec<Action> {
    std::iter::from_fn(|| m.poll_action()).collect()
}

fn changed(from: State, to: State, reason: Reason) -> Action {
    Action::StateChanged { from, to, reason }
}

fn send(advbase: u8, advskew: u8, demote: u8, counter: u64) -> Action {
    Action::Send(SendAdvert::Carp(SendCarp {
        timing: Timing::new(advbase, advskew),
        demote,
        counter,
    }))
}

/// The master-down time of a CARP configuration.
fn carp_master_down(config: &MachineConfig) -> Duration {
    let carp = config.carp().expect("a CARP configuration");
    carp.timing.master_down(carp.dead_ratio)
}

/// A BACKUP (advbase 1, advskew 10) since `t`.
fn backup_at(t: Instant, preempt: bool) -> Machine {
    let mut c = cfg(1, 10, DemoteStyle::Byte);
    c.preempt = preempt;
    let mut m = Machine::new(c);
    m.handle_link(t, true);
    drain(&mut m);
    m
}

/// A lone machine that has just become MASTER at `t0 + 3 s`.
fn master(config: MachineConfig) -> (Machine, Instant) {
    let at = Instant::now() + carp_master_down(&config);
    master_at(config, at)
}

/// A MASTER that took over (master-down) at `at`.
fn master_at(config: MachineConfig, at: Instant) -> (Machine, Instant) {
    let t0 = at - carp_master_down(&config);
    let mut m = Machine::new(config);
    m.handle_link(t0, true);
    assert_eq!(m.poll_timeout(), Some(at));
    m.handle_timeout(at);
    assert_eq!(m.state(), State::Master);
    drain(&mut m);
    (m, at)
}

#[test]
fn startup_and_takeover_order() {
    let t0 = Instant::now();
    let mut m = Machine::new(cfg(1, 10, DemoteStyle::Byte));
    assert_eq!(m.poll_timeout(), None);
    m.handle_link(t0, true);
    assert_eq!(
        drain(&mut m),
        [changed(State::Init, State::Backup, Reason::Startup)]
    );
    let down = t0 + Duration::from_secs(3) + SKEW_UNIT * 10;
    assert_eq!(m.poll_timeout(), Some(down));
    m.handle_timeout(down - Duration::from_nanos(1));
    assert!(drain(&mut m).is_empty());
    m.handle_timeout(down);
    assert_eq!(
        drain(&mut m),
        [
            changed(State::Backup, State::Master, Reason::MasterDown),
            Action::InstallAddresses,
            send(1, 10, 0, 42),
            Action::Announce,
        ]
    );
    let interval = Duration::from_secs(1) + SKEW_UNIT * 10;
    assert_eq!(m.poll_timeout(), Some(down + interval));
    m.handle_timeout(down + interval);
    assert_eq!(drain(&mut m), [send(1, 10, 0, 43)]);
    m.handle_timeout(down + interval * 2);
    assert_eq!(drain(&mut m), [send(1, 10, 0, 44), Action::Announce]);
    m.handle_timeout(down + interval * 3);
    assert_eq!(drain(&mut m), [send(1, 10, 0, 45)]);
}

#[test]
fn link_reasons_and_no_ops() {
    let t = Instant::now();
    let mut m = Machine::new(cfg(1, 0, DemoteStyle::Byte));
    m.handle_link(t, false);
    m.step_down(t);
    assert!(drain(&mut m).is_empty());
    m.handle_link(t, true);
    m.handle_link(t, true);
    m.step_down(t);
    m.handle_link(t, false);
    m.handle_link(t, true);
    assert_eq!(
        drain(&mut m),
        [
            changed(State::Init, State::Backup, Reason::Startup),
            changed(State::Backup, State::Init, Reason::LinkDown),
            changed(State::Init, State::Backup, Reason::LinkUp),
        ]
    );
}

#[test]
fn init_and_foreign_vhid_ignore_adverts() {
    let t = Instant::now();
    let mut m = Machine::new(cfg(1, 0, DemoteStyle::Byte));
    m.handle_advert(t, peer(2), &advert(1, 0, 0, 1000));
    assert_eq!(m.master_addr(), None);
    m.handle_link(t, true);
    let mut other = advert(1, 0, 0, 2000);
    other.vhid = 2;
    m.handle_advert(t, peer(3), &other);
    assert_eq!(m.master_addr(), None);
    m.handle_timeout(t + Duration::from_secs(3));
    assert!(drain(&mut m).contains(&send(1, 0, 0, 42)));
}

#[test]
fn adopts_peer_counter_with_wrap() {
    let t = Instant::now();
    let mut m = Machine::new(cfg(1, 0, DemoteStyle::Byte));
    m.handle_link(t, true);
    m.handle_advert(t, peer(2), &advert(1, 10, 0, u64::MAX));
    assert_eq!(m.master_addr(), Some(peer(2)));
    m.handle_timeout(m.poll_timeout().unwrap());
    assert!(drain(&mut m).contains(&send(1, 0, 0, 0)));
    // Kept while MASTER.
    assert_eq!(m.master_addr(), Some(peer(2)));
}

#[test]
fn yield_order() {
    let (mut m, t) = master(cfg(1, 10, DemoteStyle::Byte));
    m.handle_advert(t, peer(2), &advert(1, 0, 0, 100));
    assert_eq!(
        drain(&mut m),
        [
            changed(State::Master, State::Backup, Reason::PeerPreferred),
            send(1, 10, 0, 101),
            Action::RemoveAddresses,
        ]
    );
    assert_eq!(
        m.poll_timeout(),
        Some(t + Duration::from_secs(3) + SKEW_UNIT * 10)
    );
}

#[test]
fn tie_break_follows_ucarp_order() {
    let (mut m, t) = master(cfg(1, 0, DemoteStyle::Byte));
    // 10.0.0.2 is not lower than 10.0.0.1: answer, stay MASTER.
    m.handle_advert(t, peer(2), &advert(1, 0, 0, 7));
    assert_eq!(drain(&mut m), [Action::Announce, send(1, 0, 0, 8)]);
    // 10.0.1.0: last octet 0 < 1, so lower in UCARP's order.
    m.handle_advert(
        t,
        IpAddr::V4(Ipv4Addr::new(10, 0, 1, 0)),
        &advert(1, 0, 0, 7),
    );
    assert_eq!(
        drain(&mut m)[0],
        changed(State::Master, State::Backup, Reason::PeerWinsTie)
    );
    let rank = |a: [u8; 4]| tie_rank(IpAddr::V4(Ipv4Addr::from(a)));
    assert!(rank([10, 0, 1, 1]) < rank([10, 0, 0, 2]));
    assert!(rank([255, 255, 255, 1]) < rank([0, 0, 0, 2]));
    assert!(rank([255, 255, 255, 255]) < tie_rank("::".parse().unwrap()));
    assert!(tie_rank("fe80::1".parse().unwrap()) < tie_rank("fe80::1:0".parse().unwrap()));
}

#[test]
fn bow_out_never_wins_against_a_master() {
    let (mut m, t) = master(cfg(1, 0, DemoteStyle::Byte));
    m.set_demote(t, 5);
    drain(&mut m);
    m.handle_advert(t, peer(0), &advert(255, 255, 0, 7));
    assert_eq!(drain(&mut m), [Action::Announce, send(1, 0, 5, 8)]);
    assert_eq!(m.state(), State::Master);
}

#[test]
fn backup_rules() {
    let t = Instant::now();
    let backup = |preempt| backup_at(t, preempt);
    let reason = |m: &mut Machine| match drain(m).first() {
        Some(Action::StateChanged { reason, .. }) => Some(*reason),
        _ => None,
    };
    let mut m = backup(false);
    m.handle_advert(t, peer(2), &advert(255, 255, 0, 0));
    assert_eq!(reason(&mut m), Some(Reason::PeerBowedOut));
    let mut m = backup(false);
    m.handle_advert(t, peer(2), &advert(1, 0, 1, 0));
    assert_eq!(reason(&mut m), Some(Reason::PeerDemoted));
    let mut m = backup(false);
    m.handle_advert(t, peer(2), &advert(1, 20, 0, 0));
    assert_eq!(reason(&mut m), None);
    let mut m = backup(true);
    m.handle_advert(t, peer(2), &advert(1, 20, 0, 0));
    assert_eq!(reason(&mut m), Some(Reason::Preempt));
    // Preemption needs equal demotion.
    let mut m = backup(true);
    m.set_demote(t, 1);
    m.handle_advert(t, peer(2), &advert(1, 20, 0, 0));
    assert_eq!(reason(&mut m), None);
    // 3 s is not more than 3 * 1 s; 3 + 1/256 s is.
    let mut m = backup(false);
    m.handle_advert(t, peer(2), &advert(3, 0, 0, 0));
    assert_eq!(reason(&mut m), None);
    assert_eq!(
        m.poll_timeout(),
        Some(t + Duration::from_secs(3) + SKEW_UNIT * 10)
    );
    m.handle_advert(t, peer(2), &advert(3, 1, 0, 0));
    assert_eq!(reason(&mut m), Some(Reason::PeerWillTimeOut));
}

#[test]
fn keepalives_handled_in_a_run_or_only_the_last_agree() {
    let t = Instant::now();
    let backup = |preempt| backup_at(t, preempt);
    let m = backup(false);
    assert!(m.is_keepalive(&advert(1, 0, 0, 7)));
    assert!(m.is_keepalive(&advert(1, 20, 0, 7)));
    assert!(!m.is_keepalive(&advert(255, 255, 0, 7)));
    assert!(!m.is_keepalive(&advert(1, 0, 1, 7)));
    assert!(!m.is_keepalive(&advert(3, 1, 0, 7)));
    assert!(!m.is_keepalive(&Advert {
        vhid: 2,
        ..advert(1, 0, 0, 7)
    }));
    assert!(!backup(true).is_keepalive(&advert(1, 20, 0, 7)));
    // Not while a step-down holds preemption off: the same advert takes
    // over once the hold ends.
    let (mut held, at) = master(cfg(1, 10, DemoteStyle::Byte));
    held.step_down(at);
    drain(&mut held);
    assert_eq!(held.state(), State::Backup);
    assert!(!held.is_keepalive(&advert(1, 0, 1, 7)));
    // INIT and MASTER: never.
    assert!(!Machine::new(cfg(1, 10, DemoteStyle::Byte)).is_keepalive(&advert(1, 0, 0, 7)));
    assert!(
        !master(cfg(1, 10, DemoteStyle::Byte))
            .0
            .is_keepalive(&advert(1, 0, 0, 7))
    );

    // Each of a run, or only the last: same deadline, same counter.
    let mut each = backup(false);
    let mut last = backup(false);
    let second = Duration::from_secs(1);
    for k in 1..=5u32 {
        let a = advert(1, 0, 0, 100 + u64::from(k));
        assert!(each.is_keepalive(&a));
        each.handle_advert(t + second * k, peer(2), &a);
    }
    last.handle_advert(t + second * 5, peer(2), &advert(1, 0, 0, 105));
    assert_eq!(drain(&mut each), []);
    assert_eq!(drain(&mut last), []);
    assert_eq!(each.poll_timeout(), last.poll_timeout());
    assert_eq!(each.master_addr(), last.master_addr());
    let down = each.poll_timeout().unwrap();
    each.handle_timeout(down);
    last.handle_timeout(down);
    assert_eq!(drain(&mut each), drain(&mut last));
}

#[test]
fn steady_adverts_sent_by_the_driver_match_the_machine() {
    let second = Duration::from_secs(1);
    let at = Instant::now();
    // A MASTER past its repeated announcement.
    let steady_master = || {
        let (mut m, at) = master_at(cfg(1, 0, DemoteStyle::Byte), at);
        // Not before the repeated announcement has gone out.
        assert_eq!(m.steady_adverts(), None);
        for k in 1..=ADVERTS_BEFORE_REPEAT_ANNOUNCE {
            m.handle_timeout(at + second * u32::from(k));
            drain(&mut m);
            m.handle_send_result(at, true);
        }
        m
    };
    let mut own = steady_master();
    let mut driven = steady_master();
    let steady = own.steady_adverts().expect("steady");
    assert_eq!(
        steady,
        SteadyAdverts {
            next: at + second * (u32::from(ADVERTS_BEFORE_REPEAT_ANNOUNCE) + 1),
            timing: Timing::new(1, 0),
            demote: 0,
            counter: 42 + u64::from(ADVERTS_BEFORE_REPEAT_ANNOUNCE),
        }
    );
    // The machine sending five itself, or the driver sending them.
    let mut sent = Vec::new();
    for k in 0..5u32 {
        let due = steady.next + second * k;
        own.handle_timeout(due);
        sent.extend(drain(&mut own));
        own.handle_send_result(due, true);
    }
    let expected: Vec<Action> = (1..=5).map(|k| send(1, 0, 0, steady.counter + k)).collect();
    assert_eq!(sent, expected);
    driven.steady_adverts_sent(5, steady.next + second * 5);
    assert_eq!(driven.poll_timeout(), own.poll_timeout());
    assert_eq!(driven.steady_adverts(), own.steady_adverts());
    // What follows is alike too: a demotion is advertised at once.
    own.set_demote(at, 1);
    driven.set_demote(at, 1);
    assert_eq!(drain(&mut own), drain(&mut driven));

    // Not steady: actions pending, a failed send, BACKUP.
    assert!(driven.steady_adverts().is_some());
    driven.set_demote(at, 2);
    assert_eq!(driven.steady_adverts(), None);
    drain(&mut driven);
    driven.handle_send_result(at, false);
    assert_eq!(driven.steady_adverts(), None);
    driven.handle_send_result(at, true);
    assert!(driven.steady_adverts().is_some());
    driven.step_down(at);
    assert_eq!(driven.steady_adverts(), None);
}

#[test]
fn send_errors_demote_once_and_recover_after_three_successes() {
    let (mut m, t) = master(cfg(1, 0, DemoteStyle::Byte));
    m.handle_send_result(t, false);
    m.handle_send_result(t, false);
    m.handle_send_result(t, true);
    m.handle_send_result(t, false);
    m.handle_send_result(t, false);
    assert!(drain(&mut m).is_empty());
    m.handle_send_result(t, false);
    assert_eq!(drain(&mut m), [send(1, 0, 1, 43)]);
    m.handle_send_result(t, false);
    m.handle_send_result(t, false);
    m.handle_send_result(t, false);
    assert!(drain(&mut m).is_empty());
    assert_eq!(m.demote(), 1);
    m.handle_send_result(t, true);
    m.handle_send_result(t, true);
    m.handle_send_result(t, false);
    m.handle_send_result(t, true);
    m.handle_send_result(t, true);
    assert!(drain(&mut m).is_empty());
    m.handle_send_result(t, true);
    assert_eq!(drain(&mut m), [send(1, 0, 0, 44)]);
    assert_eq!(m.demote(), 0);
    // Added to the external demotion, saturating.
    m.set_demote(t, 255);
    for _ in 0..3 {
        m.handle_send_result(t, false);
    }
    assert_eq!(m.demote(), 255);
}

#[test]
fn skew_style_folds_demotion_into_advskew() {
    let timing = |advskew: u8, demote: u8| {
        let mut m = Machine::new(cfg(1, advskew, DemoteStyle::Skew));
        m.set_demote(Instant::now(), demote);
        m.effective_timing()
    };
    assert_eq!(timing(10, 0), Timing::new(1, 10));
    assert_eq!(timing(10, 5), Timing::new(1, 15));
    assert_eq!(timing(230, 50), Timing::new(1, 240));
    assert_eq!(timing(0, 255), Timing::new(1, 240));
    assert_eq!(timing(250, 10), Timing::new(1, 250));
    let mut m = Machine::new(cfg(1, 10, DemoteStyle::Byte));
    m.set_demote(Instant::now(), 5);
    assert_eq!(m.effective_timing(), Timing::new(1, 10));

    let (mut m, t) = master(cfg(1, 0, DemoteStyle::Skew));
    m.set_demote(t, 3);
    assert_eq!(drain(&mut m), [send(1, 3, 0, 43)]);
    // The periodic timer restarts with the new interval.
    assert_eq!(
        m.poll_timeout(),
        Some(t + Duration::from_secs(1) + SKEW_UNIT * 3)
    );
    // Same value again: nothing to advertise.
    m.set_demote(t, 3);
    assert!(drain(&mut m).is_empty());
}

#[test]
fn backup_deadline_follows_demotion() {
    let t = Instant::now();
    let mut m = Machine::new(cfg(1, 0, DemoteStyle::Skew));
    m.handle_link(t, true);
    assert_eq!(m.poll_timeout(), Some(t + Duration::from_secs(3)));
    m.set_demote(t + Duration::from_secs(2), 10);
    assert_eq!(
        m.poll_timeout(),
        Some(t + Duration::from_secs(3) + SKEW_UNIT * 10)
    );
    assert!(drain(&mut m).iter().all(|a| !matches!(a, Action::Send(_))));
}

#[test]
fn step_down_and_hold() {
    let mut c = cfg(1, 0, DemoteStyle::Byte);
    c.preempt = true;
    let (mut m, t) = master(c);
    m.step_down(t);
    assert_eq!(
        drain(&mut m),
        [
            changed(State::Master, State::Backup, Reason::StepDown),
            Action::RemoveAddresses,
        ]
    );
    // Worse and demoted peers do not bring us back during the hold...
    let hold = Duration::from_secs(3);
    m.handle_advert(t + hold / 2, peer(2), &advert(1, 50, 0, 0));
    m.handle_advert(t + hold / 2, peer(2), &advert(1, 50, 9, 0));
    assert!(drain(&mut m).is_empty());
    // ...a bow-out does...
    let mut config = m.config().clone();
    config.initial_counter = 0;
    m.handle_advert(t + hold / 2, peer(2), &advert(255, 255, 0, 0));
    assert_eq!(
        drain(&mut m)[0],
        changed(State::Backup, State::Master, Reason::PeerBowedOut)
    );
    // ...and after the hold preemption works again.
    let (mut m, t) = master(config);
    m.step_down(t);
    drain(&mut m);
    m.handle_advert(t + hold, peer(2), &advert(1, 50, 0, 0));
    assert_eq!(
        drain(&mut m)[0],
        changed(State::Backup, State::Master, Reason::Preempt)
    );
}

#[test]
fn shutdown() {
    let (mut m, t) = master(cfg(1, 0, DemoteStyle::Byte));
    m.set_demote(t, 2);
    drain(&mut m);
    m.shutdown(t);
    assert_eq!(
        drain(&mut m),
        [
            changed(State::Master, State::Init, Reason::Shutdown),
            send(255, 255, 2, 44),
            Action::RemoveAddresses,
        ]
    );
    assert_eq!(m.poll_timeout(), None);
    m.handle_link(t, true);
    m.handle_advert(t, peer(2), &advert(1, 0, 0, 0));
    m.handle_send_result(t, false);
    m.set_demote(t, 0);
    m.shutdown(t);
    assert!(drain(&mut m).is_empty());
    assert_eq!(m.state(), State::Init);

    let t = Instant::now();
    let mut m = Machine::new(cfg(1, 0, DemoteStyle::Skew));
    m.handle_link(t, true);
    drain(&mut m);
    m.shutdown(t);
    assert_eq!(
        drain(&mut m),
        [changed(State::Backup, State::Init, Reason::Shutdown)]
    );
    assert_eq!(m.poll_timeout(), None);
}

#[test]
fn late_wake_ups_do_not_drift() {
    let (mut m, t) = master(cfg(1, 0, DemoteStyle::Byte));
    let second = Duration::from_secs(1);
    // 3 ms late: the next one is still due one interval after the
    // missed deadline.
    m.handle_timeout(t + second + Duration::from_millis(3));
    assert_eq!(m.poll_timeout(), Some(t + second * 2));
    // More than one interval behind: restart from now, no burst.
    m.handle_timeout(t + second * 3 + Duration::from_millis(500));
    assert_eq!(
        drain(&mut m),
        [send(1, 0, 0, 43), send(1, 0, 0, 44), Action::Announce]
    );
    assert_eq!(
        m.poll_timeout(),
        Some(t + second * 4 + Duration::from_millis(500))
    );
}

#[test]
fn grid_puts_masters_with_one_interval_on_the_same_instants() {
    let second = Duration::from_secs(1);
    let epoch = Instant::now();
    let grid = AdvertGrid {
        epoch,
        slot: 4,
        slots: 16,
    };
    let mut config = cfg(1, 0, DemoteStyle::Byte);
    config.advert_grid = Some(grid);
    // slot 4 of 16 at 1 s: epoch + k s + 250 ms, the last one within an
    // interval of the takeover
    let (mut a, ta) = master_at(config.clone(), epoch + Duration::from_millis(3100));
    let (b, tb) = master_at(config.clone(), epoch + Duration::from_millis(3900));
    let first = epoch + Duration::from_millis(3250);
    assert_eq!(a.poll_timeout(), Some(first));
    assert!(first > ta && first <= ta + second);
    assert_eq!(b.poll_timeout(), Some(first + second));
    assert!(first + second > tb && first + second <= tb + second);
    // then every interval: both on the same instants
    a.handle_timeout(first);
    assert_eq!(a.poll_timeout(), Some(first + second));
    assert_eq!(a.poll_timeout(), b.poll_timeout());
    // on the grid instant itself: the next one, a whole interval on
    let (c, _) = master_at(config.clone(), first + second);
    assert_eq!(c.poll_timeout(), Some(first + second * 2));
    // another slot, another instant
    config.advert_grid = Some(AdvertGrid { slot: 5, ..grid });
    let (d, _) = master_at(config, epoch + Duration::from_millis(3100));
    assert_eq!(
        d.poll_timeout(),
        Some(epoch + Duration::from_millis(3312) + Duration::from_micros(500))
    );
}

#[test]
fn grid_follows_a_change_of_interval() {
    let epoch = Instant::now();
    let mut config = cfg(1, 0, DemoteStyle::Skew);
    config.advert_grid = Some(AdvertGrid {
        epoch,
        slot: 0,
        slots: 16,
    });
    let (mut m, t) = master_at(config, epoch + Duration::from_millis(10_500));
    assert_eq!(m.poll_timeout(), Some(epoch + Duration::from_secs(11)));
    // demoted by 128 in the advskew: interval 1.5 s, grid of 1.5 s
    m.set_demote(t, 128);
    let _ = drain(&mut m);
    assert_eq!(m.poll_timeout(), Some(epoch + Duration::from_secs(12)));
}

#[test]
fn grid_before_its_epoch_and_at_the_limits() {
    let epoch = Instant::now() + Duration::from_secs(100);
    let grid = AdvertGrid {
        epoch,
        slot: 17,
        slots: 16,
    };
    let second = Duration::from_secs(1);
    // slot 17 of 16 wraps to 1: epoch + k s + 62.5 ms
    let limit = epoch - Duration::from_millis(2500);
    assert_eq!(
        grid.at_or_before(limit, second),
        Some(epoch - Duration::from_millis(3000) + Duration::from_micros(62_500))
    );
    assert_eq!(grid.at_or_before(limit, Duration::ZERO), None);
    let one = AdvertGrid { slots: 0, ..grid };
    assert_eq!(one.at_or_before(epoch, second), Some(epoch));
}

#[test]
fn advbase_0_intervals() {
    let (mut m, t) = master(cfg(0, 0, DemoteStyle::Byte));
    assert_eq!(m.poll_timeout(), Some(t + SKEW_UNIT));
    m.handle_timeout(t + SKEW_UNIT);
    assert_eq!(m.poll_timeout(), Some(t + SKEW_UNIT * 2));
    // advbase 0: "will time out" compares with our master-down time
    // (3/256 s here).
    let t = Instant::now();
    let mut m = Machine::new(cfg(0, 0, DemoteStyle::Byte));
    m.handle_link(t, true);
    m.handle_advert(t, peer(2), &advert(0, 3, 0, 0));
    assert_eq!(m.state(), State::Backup);
    m.handle_advert(t, peer(2), &advert(0, 4, 0, 0));
    assert_eq!(m.state(), State::Master);
}

#[test]
fn step_down_hold_outlasts_a_link_flap() {
    let mut c = cfg(1, 0, DemoteStyle::Byte);
    c.preempt = true;
    let (mut m, t) = master(c.clone());
    m.step_down(t);
    let second = Duration::from_secs(1);
    m.handle_link(t + second, false);
    m.handle_link(t + second, true);
    drain(&mut m);
    // still within one master-down time of the step-down: no preemption
    m.handle_advert(t + second * 2, peer(2), &advert(1, 50, 0, 0));
    assert!(drain(&mut m).is_empty());
    assert_eq!(m.state(), State::Backup);
    // after it, preemption again
    m.handle_advert(t + second * 3, peer(2), &advert(1, 50, 0, 0));
    assert_eq!(
        drain(&mut m)[0],
        changed(State::Backup, State::Master, Reason::Preempt)
    );
    // a MASTER's link flap holds nothing
    let (mut m, t) = master(c);
    m.handle_link(t, false);
    m.handle_link(t, true);
    drain(&mut m);
    m.handle_advert(t, peer(2), &advert(1, 50, 0, 0));
    assert_eq!(
        drain(&mut m)[0],
        changed(State::Backup, State::Master, Reason::Preempt)
    );
}

#[test]
fn preempt_delay_suspends_rules_2_and_3_only() {
    let mut c = cfg(1, 10, DemoteStyle::Byte);
    c.preempt = true;
    c.preempt_delay = Duration::from_secs(30);
    let t = Instant::now();
    let second = Duration::from_secs(1);
    let reason = |m: &mut Machine| match drain(m).first() {
        Some(Action::StateChanged { reason, .. }) => Some(*reason),
        _ => None,
    };
    let started = |at: Instant| {
        let mut m = Machine::new(c.clone());
        m.handle_link(at, true);
        drain(&mut m);
        m
    };
    // within the delay: neither a worse interval nor a demoted master
    let mut m = started(t);
    m.handle_advert(t + second, peer(2), &advert(1, 20, 0, 0));
    m.handle_advert(t + second * 2, peer(2), &advert(1, 0, 1, 0));
    assert_eq!(reason(&mut m), None);
    // a bow-out and a master about to time out still count
    m.handle_advert(t + second * 3, peer(2), &advert(255, 255, 0, 0));
    assert_eq!(reason(&mut m), Some(Reason::PeerBowedOut));
    let mut m = started(t);
    m.handle_advert(t + second, peer(2), &advert(3, 1, 0, 0));
    assert_eq!(reason(&mut m), Some(Reason::PeerWillTimeOut));
    // and so does silence
    let mut m = started(t);
    m.handle_timeout(t + second * 4);
    assert_eq!(reason(&mut m), Some(Reason::MasterDown));
    // after the delay: preemption as configured
    let mut m = started(t);
    m.handle_advert(t + second * 30, peer(2), &advert(1, 20, 0, 0));
    assert_eq!(reason(&mut m), Some(Reason::Preempt));
    // a link flap starts it again
    m.handle_link(t + second * 31, false);
    m.handle_link(t + second * 31, true);
    drain(&mut m);
    m.handle_advert(t + second * 40, peer(2), &advert(1, 0, 1, 0));
    assert_eq!(reason(&mut m), None);
    m.handle_advert(t + second * 61, peer(2), &advert(1, 0, 1, 0));
    assert_eq!(reason(&mut m), Some(Reason::PeerDemoted));
}
