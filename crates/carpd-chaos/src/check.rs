//! The invariant checker: walks the recorded timeline of every virtual
//! address and reports each stretch of time where one of the invariants
//! fails outside the grace the faults around it allow.
//!
//! - two holders: never two nodes holding an address, except while a fault
//!   lasts and one advertisement interval + margin after it heals;
//! - unheld: an address that a healthy node (carpd ready, under no fault
//!   that stops it) is configured for is held by some node, except within
//!   master-down + margin of a fault starting or healing, and for less than
//!   that while a fault is on;
//! - held without carpd: only a node whose running carpd is configured for
//!   an address holds it, except after a SIGKILL until the restarted carpd
//!   is ready (+ its startup), and briefly after a reload removed it.

use std::collections::BTreeSet;
use std::fmt;
use std::time::{Duration, Instant};

use crate::fault::Fault;
use crate::timeline::{Life, Timeline};

/// The timing the invariants allow.
#[derive(Debug, Clone, Copy)]
pub struct Bounds {
    /// The longest advertisement interval of any node for any VHID.
    pub adv_interval: Duration,
    /// The longest master-down time of any node for any VHID.
    pub master_down: Duration,
    /// Added to every bound (watcher and scheduling latency).
    pub margin: Duration,
    /// After a carpd logs that it runs, until its VHIDs have removed what a
    /// killed predecessor left.
    pub startup: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Invariant {
    TwoHolders,
    Unheld,
    HeldWithoutCarpd,
    Resources,
    FinalState,
    /// A carpd that died by itself, or did not exit cleanly on SIGTERM.
    Exit,
    /// Advertisements sent and not received or dropped beyond the loss.
    Accounting,
}

impl fmt::Display for Invariant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Invariant::TwoHolders => "two holders",
            Invariant::Unheld => "unheld",
            Invariant::HeldWithoutCarpd => "held without carpd",
            Invariant::Resources => "resources",
            Invariant::FinalState => "final state",
            Invariant::Exit => "carpd exit",
            Invariant::Accounting => "advert accounting",
        })
    }
}

/// One stretch of time where an invariant failed.
#[derive(Debug, Clone)]
pub struct Violation {
    pub invariant: Invariant,
    pub at: Instant,
    pub length: Duration,
    pub addr: Option<String>,
    pub node: Option<usize>,
    pub detail: String,
}

/// A stretch of time during which a failure of some invariant is excused.
#[derive(Debug, Clone, Copy)]
struct Window {
    start: Instant,
    end: Instant,
    /// Only for this node (held without carpd).
    node: Option<usize>,
    /// Only for addresses the hooks own.
    hooked_only: bool,
}

impl Window {
    fn covers(&self, t: Instant, node: Option<usize>, hooked: bool) -> bool {
        self.start <= t
            && t < self.end
            && (self.node.is_none() || self.node == node)
            && (!self.hooked_only || hooked)
    }
}

#[derive(Debug, Default)]
struct Windows {
    two_holders: Vec<Window>,
    unheld: Vec<Window>,
    without_carpd: Vec<Window>,
}

fn window(start: Instant, end: Instant) -> Window {
    Window {
        start,
        end,
        node: None,
        hooked_only: false,
    }
}

impl Windows {
    fn new(tl: &Timeline, b: &Bounds) -> Windows {
        let mut w = Windows::default();
        let settle_live = b.master_down + b.margin;
        for f in &tl.faults {
            let delay = f.fault.hook_delay();
            w.two_holders
                .push(window(f.start, f.heal + b.adv_interval + b.margin + delay));
            w.unheld.push(window(f.start, f.start + settle_live));
            w.unheld.push(window(f.heal, f.heal + settle_live));
            if let Fault::SlowHooks(delay) = f.fault {
                w.unheld.push(Window {
                    hooked_only: true,
                    ..window(f.start, f.heal + delay + settle_live)
                });
            }
        }
        for (i, e) in tl.life.iter().enumerate() {
            let end = match e.what {
                Life::Killed => tl.life[i + 1..]
                    .iter()
                    .find(|n| n.node == e.node && n.what == Life::Ready)
                    .map_or(tl.until, |r| r.at + b.startup),
                Life::ExitedClean => e.at + b.margin,
                Life::Spawned | Life::Ready => continue,
            };
            w.without_carpd.push(Window {
                node: Some(e.node),
                ..window(e.at, end)
            });
        }
        for c in &tl.configs {
            // A reload that removes a VHID: it bows out and removes its
            // addresses (after its down hook, when the hooks own them).
            w.without_carpd.push(Window {
                node: Some(c.node),
                ..window(c.at, c.at + b.adv_interval + b.margin)
            });
        }
        w
    }

    fn boundaries(&self) -> Vec<Instant> {
        self.two_holders
            .iter()
            .chain(&self.unheld)
            .chain(&self.without_carpd)
            .flat_map(|w| [w.start, w.end])
            .collect()
    }
}

/// Checks every virtual address of `tl` against the invariants.
pub fn check(tl: &Timeline, b: &Bounds) -> Vec<Violation> {
    let windows = Windows::new(tl, b);
    let settle_live = b.master_down + b.margin;
    let mut global: Vec<Instant> = windows.boundaries();
    global.extend(tl.faults.iter().flat_map(|f| [f.start, f.heal]));
    global.extend(tl.life.iter().map(|e| e.at));
    global.extend(tl.configs.iter().map(|c| c.at));
    global.extend([tl.from, tl.steady_until, tl.until]);

    let mut out = Vec::new();
    for addr in tl.vips() {
        check_addr(tl, &windows, &global, &addr, settle_live, &mut out);
    }
    check_killed(tl, b, &mut out);
    out.sort_by_key(|v| v.at);
    out
}

/// What a SIGKILLed carpd left must be gone once the next carpd on that
/// node is ready (+ its startup): it starts as BACKUP and removes it.
fn check_killed(tl: &Timeline, b: &Bounds, out: &mut Vec<Violation>) {
    let vips = tl.vips();
    for (i, kill) in tl.life.iter().enumerate() {
        if kill.what != Life::Killed || kill.at < tl.from {
            continue;
        }
        let Some(ready) = tl.life[i + 1..]
            .iter()
            .find(|e| e.node == kill.node && e.what == Life::Ready)
        else {
            continue;
        };
        let due = ready.at + b.startup;
        if due >= tl.until {
            continue;
        }
        for addr in tl.held_at(kill.node, kill.at).intersection(&vips) {
            let removed = tl
                .addrs
                .iter()
                .filter(|e| e.node == kill.node && &e.addr == addr && !e.added)
                .map(|e| e.at)
                .find(|at| *at > kill.at);
            if removed.is_none_or(|at| at > due) {
                out.push(Violation {
                    invariant: Invariant::HeldWithoutCarpd,
                    at: due,
                    length: removed.unwrap_or(tl.until) - due,
                    addr: Some(addr.clone()),
                    node: Some(kill.node),
                    detail: format!(
                        "left by the SIGKILLed carpd of node {} and still held once its successor was ready (+ startup)",
                        kill.node
                    ),
                });
            }
        }
    }
}

fn check_addr(
    tl: &Timeline,
    windows: &Windows,
    global: &[Instant],
    addr: &str,
    settle_live: Duration,
    out: &mut Vec<Violation>,
) {
    // Unheld stretches found: (index in `out`, when the address was last held).
    let mut unheld: Vec<(usize, Instant)> = Vec::new();
    let mut empty_since = tl.recorded_from;
    let hooked = tl.hooked.contains(addr);
    let mut events: Vec<_> = tl.addrs.iter().filter(|e| e.addr == addr).collect();
    events.sort_by_key(|e| e.at);
    let mut cuts: Vec<Instant> = global
        .iter()
        .copied()
        .chain(events.iter().map(|e| e.at))
        .filter(|t| *t >= tl.from && *t <= tl.until)
        .collect();
    cuts.sort();
    cuts.dedup();

    let mut owners: BTreeSet<usize> = tl
        .initial
        .iter()
        .enumerate()
        .filter(|(_, a)| a.contains(addr))
        .map(|(n, _)| n)
        .collect();
    let mut next = 0;
    // Open failures: (invariant, node) -> index in `out`, extended while
    // consecutive pieces fail the same way.
    let mut open: Vec<((Invariant, Option<usize>), usize, Instant)> = Vec::new();
    for pair in cuts.windows(2) {
        let (t, end) = (pair[0], pair[1]);
        while next < events.len() && events[next].at <= t {
            let e = events[next];
            if e.added {
                owners.insert(e.node);
            } else {
                owners.remove(&e.node);
                if owners.is_empty() {
                    empty_since = e.at;
                }
            }
            next += 1;
        }
        let mut failing: Vec<(Invariant, Option<usize>, String)> = Vec::new();
        if t < tl.steady_until {
            if owners.len() >= 2
                && !windows
                    .two_holders
                    .iter()
                    .any(|w| w.covers(t, None, hooked))
            {
                failing.push((
                    Invariant::TwoHolders,
                    None,
                    format!("held by nodes {owners:?}"),
                ));
            }
            if owners.is_empty() {
                let ready: Vec<usize> = (0..tl.nodes)
                    .filter(|n| tl.healthy_at(*n, t) && tl.configured_at(*n, addr, t))
                    .collect();
                if !ready.is_empty() && !windows.unheld.iter().any(|w| w.covers(t, None, hooked)) {
                    failing.push((
                        Invariant::Unheld,
                        None,
                        format!("held by no node; healthy nodes configured for it: {ready:?}"),
                    ));
                }
            }
        }
        for n in &owners {
            if !tl.configured_at(*n, addr, t)
                && !windows
                    .without_carpd
                    .iter()
                    .any(|w| w.covers(t, Some(*n), hooked))
            {
                let life = tl.life_at(*n, t);
                failing.push((
                    Invariant::HeldWithoutCarpd,
                    Some(*n),
                    format!(
                        "held by node {n}, whose carpd is not running with it (state {life:?})"
                    ),
                ));
            }
        }
        open.retain(|(key, _, until)| {
            *until == t && failing.iter().any(|(i, n, _)| (*i, *n) == *key)
        });
        for (invariant, node, detail) in failing {
            let key = (invariant, node);
            if let Some(slot) = open.iter_mut().find(|(k, _, _)| *k == key) {
                out[slot.1].length += end - t;
                slot.2 = end;
            } else {
                out.push(Violation {
                    invariant,
                    at: t,
                    length: end - t,
                    addr: Some(addr.to_string()),
                    node,
                    detail,
                });
                open.push((key, out.len() - 1, end));
                if invariant == Invariant::Unheld {
                    unheld.push((out.len() - 1, empty_since));
                }
            }
        }
    }
    // While a fault is on, a failover may leave an address unheld for a
    // moment (the old master removes it before the new one adds it): only
    // a stretch longer than master-down + margin is a failure then.
    let mut drop: Vec<usize> = Vec::new();
    for (i, since) in unheld {
        let v = &out[i];
        let held_again = events
            .iter()
            .find(|e| e.added && e.at > v.at)
            .map_or(tl.until, |e| e.at);
        let during_fault = tl
            .faults
            .iter()
            .any(|f| f.start <= v.at && v.at <= f.heal + settle_live);
        if during_fault && held_again - since < settle_live {
            drop.push(i);
        }
    }
    let mut i = 0;
    out.retain(|_| {
        i += 1;
        !drop.contains(&(i - 1))
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::timeline::{AddrChange, ConfigChange, FaultRecord, LifeEvent};

    const A: &str = "10.98.0.1";

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn bounds() -> Bounds {
        Bounds {
            adv_interval: ms(1000),
            master_down: ms(3000),
            margin: ms(100),
            startup: ms(500),
        }
    }

    /// Two nodes running A from t0; node 0 holds it; checks from t0 + 1 s
    /// for 60 s.
    fn base(t0: Instant) -> Timeline {
        let cfg = |node| ConfigChange {
            at: t0,
            node,
            addrs: [A.to_string()].into(),
        };
        let life = |node, what| LifeEvent { at: t0, node, what };
        Timeline {
            nodes: 2,
            initial: vec![[A.to_string()].into(), BTreeSet::new()],
            recorded_from: t0,
            addrs: Vec::new(),
            faults: Vec::new(),
            life: vec![
                life(0, Life::Spawned),
                life(1, Life::Spawned),
                LifeEvent {
                    at: t0 + ms(1),
                    ..life(0, Life::Ready)
                },
                LifeEvent {
                    at: t0 + ms(1),
                    ..life(1, Life::Ready)
                },
            ],
            configs: vec![cfg(0), cfg(1)],
            hooked: BTreeSet::new(),
            from: t0 + ms(1000),
            steady_until: t0 + ms(61_000),
            until: t0 + ms(62_000),
        }
    }

    fn change(t0: Instant, at: u64, node: usize, added: bool) -> AddrChange {
        AddrChange {
            at: t0 + ms(at),
            node,
            added,
            addr: A.to_string(),
        }
    }

    fn fault(t0: Instant, node: usize, fault: Fault, start: u64, heal: u64) -> FaultRecord {
        FaultRecord {
            node,
            fault,
            start: t0 + ms(start),
            heal: t0 + ms(heal),
        }
    }

    fn kinds(v: &[Violation]) -> Vec<Invariant> {
        v.iter().map(|v| v.invariant).collect()
    }

    #[test]
    fn quiet_run_is_clean() {
        let t0 = Instant::now();
        assert!(check(&base(t0), &bounds()).is_empty());
    }

    #[test]
    fn two_holders_without_a_fault() {
        let t0 = Instant::now();
        let mut tl = base(t0);
        tl.addrs = vec![change(t0, 5000, 1, true), change(t0, 5300, 1, false)];
        let v = check(&tl, &bounds());
        assert_eq!(kinds(&v), [Invariant::TwoHolders]);
        assert_eq!(v[0].at, t0 + ms(5000));
        assert_eq!(v[0].length, ms(300));
    }

    #[test]
    fn two_holders_within_grace_after_heal() {
        let t0 = Instant::now();
        let mut tl = base(t0);
        tl.faults = vec![fault(t0, 1, Fault::Partition, 5000, 9000)];
        // Node 1 takes over during the partition and steps down 1 s after
        // it heals: inside interval + margin.
        tl.addrs = vec![change(t0, 8100, 1, true), change(t0, 10_000, 1, false)];
        assert!(check(&tl, &bounds()).is_empty());
        // 1.2 s after: 100 ms too long.
        tl.addrs[1].at = t0 + ms(10_200);
        let v = check(&tl, &bounds());
        assert_eq!(kinds(&v), [Invariant::TwoHolders]);
        assert_eq!(v[0].at, t0 + ms(10_100));
        assert_eq!(v[0].length, ms(100));
    }

    #[test]
    fn unheld_beyond_master_down() {
        let t0 = Instant::now();
        let mut tl = base(t0);
        // Node 0 is paused (its kernel keeps the address), then its link
        // goes: it removes the address; node 1 must take it within
        // master-down + margin of the fault's start.
        tl.faults = vec![fault(t0, 0, Fault::Link, 5000, 12_000)];
        tl.addrs = vec![change(t0, 5050, 0, false), change(t0, 8000, 1, true)];
        assert!(check(&tl, &bounds()).is_empty());
        tl.addrs[1].at = t0 + ms(8500);
        let v = check(&tl, &bounds());
        assert_eq!(kinds(&v), [Invariant::Unheld]);
        assert_eq!(v[0].at, t0 + ms(8100));
        assert_eq!(v[0].length, ms(400));
    }

    #[test]
    fn unheld_is_fine_without_a_healthy_configured_node() {
        let t0 = Instant::now();
        let mut tl = base(t0);
        for c in &mut tl.configs {
            if c.node == 1 {
                c.addrs.clear();
            }
        }
        tl.faults = vec![fault(t0, 0, Fault::Link, 5000, 20_000)];
        tl.addrs = vec![change(t0, 5050, 0, false), change(t0, 20_500, 0, true)];
        assert!(check(&tl, &bounds()).is_empty());
        // Still missing long after the heal: a violation.
        tl.addrs[1].at = t0 + ms(25_000);
        assert_eq!(kinds(&check(&tl, &bounds())), [Invariant::Unheld]);
    }

    #[test]
    fn short_gap_while_a_fault_is_on() {
        let t0 = Instant::now();
        let mut tl = base(t0);
        tl.faults = vec![fault(
            t0,
            1,
            Fault::OneWay(crate::fault::Direction::Out),
            5000,
            30_000,
        )];
        // A handover in the middle of the fault: 50 ms without a holder.
        tl.addrs = vec![change(t0, 15_000, 0, false), change(t0, 15_050, 1, true)];
        assert!(check(&tl, &bounds()).is_empty());
        // Longer than master-down + margin: a failure even while it is on.
        tl.addrs[1].at = t0 + ms(19_000);
        assert_eq!(kinds(&check(&tl, &bounds())), [Invariant::Unheld]);
        // The same short gap without a fault: a failure.
        tl.faults.clear();
        tl.addrs[1].at = t0 + ms(15_050);
        assert_eq!(kinds(&check(&tl, &bounds())), [Invariant::Unheld]);
    }

    #[test]
    fn held_after_clean_exit() {
        let t0 = Instant::now();
        let mut tl = base(t0);
        tl.faults = vec![fault(t0, 0, Fault::Term, 5000, 9000)];
        tl.life.push(LifeEvent {
            at: t0 + ms(5200),
            node: 0,
            what: Life::ExitedClean,
        });
        tl.life.push(LifeEvent {
            at: t0 + ms(8000),
            node: 0,
            what: Life::Spawned,
        });
        tl.life.push(LifeEvent {
            at: t0 + ms(9000),
            node: 0,
            what: Life::Ready,
        });
        tl.addrs = vec![change(t0, 5100, 0, false), change(t0, 5150, 1, true)];
        assert!(check(&tl, &bounds()).is_empty());
        // The address stays on node 0 after its carpd exited.
        tl.addrs = vec![change(t0, 5150, 1, true), change(t0, 7000, 0, false)];
        let v = check(&tl, &bounds());
        assert_eq!(kinds(&v), [Invariant::HeldWithoutCarpd]);
        assert_eq!(v[0].node, Some(0));
        assert_eq!(v[0].at, t0 + ms(5300));
    }

    #[test]
    fn held_after_kill_until_restart_and_startup() {
        let t0 = Instant::now();
        let mut tl = base(t0);
        tl.faults = vec![fault(t0, 0, Fault::Kill, 5000, 9000)];
        for (at, what) in [
            (5000, Life::Killed),
            (8500, Life::Spawned),
            (9000, Life::Ready),
        ] {
            tl.life.push(LifeEvent {
                at: t0 + ms(at),
                node: 0,
                what,
            });
        }
        // Stale address removed 300 ms after ready: fine.
        tl.addrs = vec![change(t0, 8200, 1, true), change(t0, 9300, 0, false)];
        assert!(check(&tl, &bounds()).is_empty());
        // Still there 2 s after: held without carpd from ready + startup
        // (9.5 s), and two holders from heal + interval + margin (10.1 s).
        tl.addrs[1].at = t0 + ms(11_000);
        let v = check(&tl, &bounds());
        assert_eq!(
            kinds(&v),
            [Invariant::HeldWithoutCarpd, Invariant::TwoHolders]
        );
        assert_eq!(v[0].at, t0 + ms(9500));
        assert_eq!(v[1].at, t0 + ms(10_100));
    }

    #[test]
    fn slow_hooks_excuse_hooked_addresses_only() {
        let t0 = Instant::now();
        let mut tl = base(t0);
        tl.faults = vec![
            fault(t0, 1, Fault::SlowHooks(ms(2000)), 2000, 15_000),
            fault(t0, 0, Fault::Link, 5000, 12_000),
        ];
        // Node 1 holds the address only 2 s after master-down.
        tl.addrs = vec![change(t0, 5050, 0, false), change(t0, 10_000, 1, true)];
        assert_eq!(kinds(&check(&tl, &bounds())), [Invariant::Unheld]);
        tl.hooked.insert(A.to_string());
        assert!(check(&tl, &bounds()).is_empty());
    }

    #[test]
    fn before_from_and_after_steady_until_are_not_checked() {
        let t0 = Instant::now();
        let mut tl = base(t0);
        tl.addrs = vec![
            change(t0, 100, 1, true),
            change(t0, 900, 1, false),
            change(t0, 61_500, 1, true),
        ];
        assert!(check(&tl, &bounds()).is_empty());
    }
}
