//! The fault schedule: every fault of a run (kind, node, start, how long it
//! lasts, its parameters) drawn from the seed before the run starts, so the
//! same seed replays the same schedule.

use std::time::Duration;

use crate::fault::{Direction, Fault, FaultKind, ReloadChange};
use crate::rng::Rng;

/// What a schedule is drawn for.
#[derive(Debug, Clone)]
pub struct ScheduleSpec {
    pub seed: u64,
    pub nodes: usize,
    /// The VHIDs every node runs at the start.
    pub vhids: Vec<u8>,
    /// Faults start within this time after the fault phase begins, and are
    /// all healed by its end.
    pub duration: Duration,
    pub kinds: Vec<FaultKind>,
    /// Quiet time on a node between one fault's heal and its next fault.
    pub settle: Duration,
}

/// One fault of the schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Planned {
    /// Since the start of the fault phase.
    pub at: Duration,
    pub node: usize,
    pub fault: Fault,
    /// How long until it is healed (for kill and term: until the restart).
    pub hold: Duration,
}

impl Planned {
    pub fn heal_at(&self) -> Duration {
        self.at + self.hold
    }
}

/// Time between the starts of two faults (anywhere).
const GAP: (Duration, Duration) = (Duration::from_millis(300), Duration::from_millis(3000));

/// Draws the schedule. At most `nodes - 1` nodes are under a fault (or
/// settling after one) at any time, so some node is always in good shape;
/// on each node a fault is healed, and the node settled, before its next.
pub fn draw(spec: &ScheduleSpec) -> Vec<Planned> {
    let mut rng = Rng::new(spec.seed);
    let mut free_at = vec![Duration::ZERO; spec.nodes];
    let max_busy = spec.nodes.saturating_sub(1).max(1);
    let mut plan = Vec::new();
    let mut t = Duration::ZERO;
    if spec.kinds.is_empty() || spec.nodes == 0 {
        return plan;
    }
    loop {
        t += rng.duration(GAP.0, GAP.1);
        let busy = free_at.iter().filter(|f| **f > t).count();
        let free: Vec<usize> = (0..spec.nodes).filter(|n| free_at[*n] <= t).collect();
        if busy >= max_busy || free.is_empty() {
            // Wait for the first node to become free and draw again from there.
            let next = free_at
                .iter()
                .copied()
                .filter(|f| *f > t)
                .min()
                .unwrap_or(t);
            t = next;
            continue;
        }
        if t >= spec.duration {
            break;
        }
        let node = free[rng.index(free.len())];
        let kind = spec.kinds[rng.index(spec.kinds.len())];
        let (fault, hold) = draw_fault(&mut rng, kind, spec);
        // Healed by the end of the fault phase.
        let hold = hold.min(spec.duration - t);
        plan.push(Planned {
            at: t,
            node,
            fault,
            hold,
        });
        free_at[node] = t + hold + spec.settle;
    }
    plan
}

fn draw_fault(rng: &mut Rng, kind: FaultKind, spec: &ScheduleSpec) -> (Fault, Duration) {
    let ms = Duration::from_millis;
    let secs = Duration::from_secs;
    let direction = |rng: &mut Rng| match rng.below(3) {
        0 => Direction::In,
        1 => Direction::Out,
        _ => Direction::Both,
    };
    match kind {
        FaultKind::Kill => (Fault::Kill, rng.duration(ms(500), secs(5))),
        FaultKind::Term => (Fault::Term, rng.duration(ms(500), secs(5))),
        FaultKind::Pause => (Fault::Pause, rng.duration(ms(200), secs(8))),
        FaultKind::Link => (Fault::Link, rng.duration(ms(500), secs(8))),
        FaultKind::Recreate => (Fault::Recreate, rng.duration(ms(500), secs(5))),
        FaultKind::AddrDelete => (Fault::AddrDelete(rng.below(256) as u8), Duration::ZERO),
        FaultKind::Partition => (Fault::Partition, rng.duration(secs(1), secs(10))),
        FaultKind::OneWay => {
            let d = if rng.chance(50) {
                Direction::In
            } else {
                Direction::Out
            };
            (Fault::OneWay(d), rng.duration(secs(1), secs(10)))
        }
        FaultKind::Loss => {
            let percent = rng.range(5, 30) as u8;
            let direction = direction(rng);
            (
                Fault::Loss { percent, direction },
                rng.duration(secs(5), secs(15)),
            )
        }
        FaultKind::Reload => {
            let change = match rng.below(3) {
                0 => {
                    // Ids above the base set, at most 255.
                    let top = spec.vhids.iter().copied().max().unwrap_or(0);
                    let count = rng.range(1, 5) as u8;
                    let add: Vec<u8> = (1..=count).filter_map(|k| top.checked_add(k)).collect();
                    ReloadChange::Add(add)
                }
                1 => ReloadChange::Remove(pick(rng, &spec.vhids, 5)),
                _ => ReloadChange::Skew(pick(rng, &spec.vhids, 5), rng.range(120, 240) as u8),
            };
            (Fault::Reload(change), rng.duration(secs(2), secs(10)))
        }
        FaultKind::SlowHooks => (
            Fault::SlowHooks(rng.duration(ms(500), secs(3))),
            rng.duration(secs(5), secs(15)),
        ),
        FaultKind::FailHooks => (Fault::FailHooks, rng.duration(secs(5), secs(15))),
    }
}

/// Up to `most` distinct elements of `from`, in ascending order.
fn pick(rng: &mut Rng, from: &[u8], most: u64) -> Vec<u8> {
    let count = rng.range(1, most) as usize;
    let mut pool = from.to_vec();
    let mut out = Vec::new();
    while out.len() < count && !pool.is_empty() {
        out.push(pool.swap_remove(rng.index(pool.len())));
    }
    out.sort_unstable();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(seed: u64) -> ScheduleSpec {
        ScheduleSpec {
            seed,
            nodes: 3,
            vhids: (1..=50).collect(),
            duration: Duration::from_secs(300),
            kinds: FaultKind::ALL.to_vec(),
            settle: Duration::from_secs(5),
        }
    }

    #[test]
    fn same_seed_same_schedule() {
        assert_eq!(draw(&spec(1)), draw(&spec(1)));
        assert_ne!(draw(&spec(1)), draw(&spec(2)));
    }

    #[test]
    fn faults_on_a_node_never_overlap_and_heal_in_time() {
        for seed in 0..20 {
            let s = spec(seed);
            let plan = draw(&s);
            assert!(plan.len() > 10, "seed {seed}: only {} faults", plan.len());
            for n in 0..s.nodes {
                let mine: Vec<&Planned> = plan.iter().filter(|p| p.node == n).collect();
                for w in mine.windows(2) {
                    assert!(
                        w[0].heal_at() + s.settle <= w[1].at,
                        "seed {seed}: {:?} then {:?}",
                        w[0],
                        w[1]
                    );
                }
            }
            for p in &plan {
                assert!(p.heal_at() <= s.duration);
            }
        }
    }

    #[test]
    fn some_node_is_always_left_alone() {
        let s = spec(9);
        let plan = draw(&s);
        for p in &plan {
            let busy = plan
                .iter()
                .filter(|q| q.at <= p.at && p.at < q.heal_at() + s.settle)
                .map(|q| q.node)
                .collect::<std::collections::BTreeSet<_>>();
            assert!(busy.len() < s.nodes, "at {:?}: {busy:?}", p.at);
        }
    }

    #[test]
    fn only_selected_kinds_and_every_selected_kind() {
        let mut s = spec(3);
        s.kinds = vec![FaultKind::Pause, FaultKind::Loss];
        let plan = draw(&s);
        assert!(plan.iter().all(|p| s.kinds.contains(&p.fault.kind())));
        for k in &s.kinds {
            assert!(plan.iter().any(|p| p.fault.kind() == *k));
        }
        s.kinds = FaultKind::ALL.to_vec();
        s.duration = Duration::from_secs(1800);
        let plan = draw(&s);
        for k in FaultKind::ALL {
            assert!(plan.iter().any(|p| p.fault.kind() == k), "{k} never drawn");
        }
    }

    #[test]
    fn parameters_in_their_ranges() {
        let mut s = spec(5);
        s.duration = Duration::from_secs(3600);
        for p in draw(&s) {
            match &p.fault {
                Fault::Pause => assert!(p.hold >= Duration::from_millis(200)),
                Fault::Loss { percent, .. } => assert!((5..=30).contains(percent)),
                Fault::Reload(ReloadChange::Add(v)) => assert!(v.iter().all(|id| *id > 50)),
                Fault::Reload(ReloadChange::Remove(v) | ReloadChange::Skew(v, _)) => {
                    assert!(!v.is_empty() && v.iter().all(|id| (1..=50).contains(id)));
                }
                _ => {}
            }
        }
    }
}
