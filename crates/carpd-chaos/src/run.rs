//! One chaos run: set up the bed, start the nodes, let them converge, carry
//! out the schedule while sampling resources and checking the invariants,
//! heal everything, check the final steady state, stop the nodes cleanly,
//! and check the whole recorded timeline.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use crate::adverts::{self, Counters};
use crate::bed::Bed;
use crate::check::{self, Bounds, Invariant, Violation};
use crate::config::{MAX_SKEW, base_skew};
use crate::error::Result;
use crate::fault::{Direction, Fault, FaultKind, ReloadChange};
use crate::inject::{self, Injected};
use crate::resources::{self, Incarnation, Limits, Sample};
use crate::schedule::{self, Planned, ScheduleSpec};
use crate::timeline::{AddrChange, FaultRecord, Journal, Timeline};

#[derive(Debug, Clone)]
pub struct RunSpec {
    pub seed: u64,
    pub nodes: usize,
    /// Links per node (eth0, eth1, ...), each with `vhids` VHIDs.
    pub links: usize,
    pub vhids: u8,
    pub duration: Duration,
    pub kinds: Vec<FaultKind>,
    pub advbase: u8,
    pub out: PathBuf,
    pub carpd: String,
    /// Resource samples of a carpd younger than this are not compared.
    pub warmup: Duration,
    pub rss_growth_kib: u64,
    /// The soak: this share of CARP packets dropped on every node's input
    /// for the whole run, and the advertisement accounting checked.
    pub steady_loss: Option<u8>,
}

impl RunSpec {
    pub fn ids(&self) -> Vec<u8> {
        (1..=self.vhids).collect()
    }

    /// The bounds for the largest advskew the schedule configures.
    pub fn bounds(&self, plan: &[Planned]) -> Bounds {
        let base = self
            .ids()
            .iter()
            .flat_map(|id| (0..self.nodes).map(|n| base_skew(n, self.nodes, *id)))
            .max()
            .unwrap_or(0);
        let reloaded = plan
            .iter()
            .filter_map(|p| match &p.fault {
                Fault::Reload(ReloadChange::Skew(_, s)) => Some(*s),
                Fault::Reload(ReloadChange::Add(_)) => Some(100),
                _ => None,
            })
            .max()
            .unwrap_or(0);
        let skew =
            Duration::from_micros(u64::from(base.max(reloaded).min(MAX_SKEW)) * 1_000_000 / 256);
        let advbase = Duration::from_secs(u64::from(self.advbase));
        Bounds {
            adv_interval: advbase + skew,
            master_down: advbase * 3 + skew,
            margin: Duration::from_millis(100),
            startup: Duration::from_millis(500),
        }
    }

    pub fn schedule_spec(&self, settle: Duration) -> ScheduleSpec {
        ScheduleSpec {
            seed: self.seed,
            nodes: self.nodes,
            vhids: self.ids(),
            duration: self.duration,
            kinds: self.kinds.clone(),
            settle,
        }
    }
}

/// A fault as it went.
#[derive(Debug, Clone)]
pub struct Done {
    pub planned: Planned,
    /// Why it was not carried out.
    pub skipped: Option<String>,
}

#[derive(Debug)]
pub struct Outcome {
    pub spec: RunSpec,
    pub bounds: Bounds,
    /// Start of the fault phase: the instant schedule offsets count from.
    pub t0: Instant,
    pub timeline: Timeline,
    pub done: Vec<Done>,
    pub violations: Vec<Violation>,
    pub incarnations: Vec<Incarnation>,
    pub log_files: Vec<Vec<PathBuf>>,
    pub capture_file: PathBuf,
    pub interrupted: bool,
    /// The soak's advertisement counters per node over the run.
    pub soak_counters: Option<Vec<Counters>>,
    /// The soak: each node's RSS (KiB) before the end-of-run status read
    /// and after it and two more.
    pub status_rss: Option<Vec<Vec<Option<u64>>>>,
}

impl Outcome {
    pub fn injected_by_kind(&self) -> BTreeMap<FaultKind, (usize, usize)> {
        let mut m: BTreeMap<FaultKind, (usize, usize)> = BTreeMap::new();
        for d in &self.done {
            let e = m.entry(d.planned.fault.kind()).or_default();
            if d.skipped.is_some() {
                e.1 += 1;
            } else {
                e.0 += 1;
            }
        }
        m
    }
}

/// The quiet time on a node after a fault healed before its next one.
fn settle(bounds: &Bounds) -> Duration {
    bounds.master_down + bounds.adv_interval + Duration::from_secs(1)
}

/// An action of the fault phase: start or heal planned fault `index`.
#[derive(Debug, Clone, Copy)]
struct Step {
    at: Duration,
    index: usize,
    heal: bool,
}

/// A fault that is on.
#[derive(Debug)]
struct Active {
    index: usize,
    node: usize,
    fault: Fault,
    start: Instant,
}

pub fn run(spec: &RunSpec, stop: &AtomicBool) -> Result<Outcome> {
    // Drawn first: the schedule depends on the seed and the spec only.
    let probe = spec.bounds(&[]);
    let plan = schedule::draw(&spec.schedule_spec(settle(&probe)));
    let bounds = spec.bounds(&plan);
    let plan = schedule::draw(&spec.schedule_spec(settle(&bounds)));

    let mut bed = Bed::new(
        spec.nodes,
        spec.links,
        &spec.ids(),
        spec.advbase,
        &spec.out,
        &spec.carpd,
    )?;
    let recorded_from = Instant::now();
    let mut journal = Journal::default();
    let mut violations = Vec::new();
    for i in 0..spec.nodes {
        bed.spawn(i, &mut journal)?;
    }
    for i in 0..spec.nodes {
        bed.nodes[i].wait_ready(&mut journal)?;
    }
    // Converged: every address held by exactly one node.
    let converge_by = Instant::now() + bounds.master_down * 2 + Duration::from_secs(10);
    loop {
        let held = bed.holders()?;
        if held.iter().all(|(_, who)| who.len() == 1) {
            break;
        }
        if Instant::now() >= converge_by {
            let bad: Vec<String> = held
                .iter()
                .filter(|(_, w)| w.len() != 1)
                .map(|(a, w)| format!("{a}: {w:?}"))
                .collect();
            return Err(crate::error::Error::Setup(format!(
                "the nodes did not converge: {}",
                bad.join(", ")
            )));
        }
        thread::sleep(Duration::from_millis(100));
    }
    let from = Instant::now();
    eprintln!(
        "carpd-chaos: seed {} converged, {} faults planned over {:?}; files in {}",
        spec.seed,
        plan.len(),
        spec.duration,
        spec.out.display()
    );

    let mut steps: Vec<Step> = plan
        .iter()
        .enumerate()
        .flat_map(|(index, p)| {
            [
                Step {
                    at: p.at,
                    index,
                    heal: false,
                },
                Step {
                    at: p.heal_at(),
                    index,
                    heal: true,
                },
            ]
        })
        .collect();
    // The end of the fault phase (it waits like any step, and does nothing).
    steps.push(Step {
        at: spec.duration,
        index: usize::MAX,
        heal: true,
    });
    steps.sort_by_key(|s| (s.at, !s.heal));

    let soak = steady_loss(spec);
    let mut counters_before = Vec::new();
    if let Some(loss) = &soak {
        for i in 0..spec.nodes {
            let start = Instant::now();
            inject::inject(&mut bed, i, loss, &mut journal)?;
            // On until healed at the end (the heal instant is set then), so
            // the checks while running know of it.
            journal.faults.push(FaultRecord {
                node: i,
                fault: loss.clone(),
                start,
                heal: start + spec.duration * 2 + Duration::from_secs(3600),
            });
        }
        counters_before = counters(&bed)?;
    }

    let t0 = Instant::now();
    let mut active: Vec<Active> = Vec::new();
    let mut done: Vec<Done> = Vec::new();
    let mut samples: Vec<Sample> = Vec::new();
    let mut next_sample = t0;
    let mut next_check = t0 + Duration::from_secs(10);
    let mut reported: BTreeSet<String> = BTreeSet::new();
    let mut interrupted = false;
    for step in steps {
        let due = t0 + step.at;
        while Instant::now() < due {
            if stop.load(Ordering::Relaxed) {
                interrupted = true;
                break;
            }
            let now = Instant::now();
            if now >= next_sample {
                sample(&bed, &mut samples);
                next_sample = now + Duration::from_secs(1);
            }
            watch_deaths(&mut bed, &mut journal, &mut violations)?;
            if now >= next_check {
                check_so_far(
                    &bed,
                    &journal,
                    &active,
                    recorded_from,
                    from,
                    &bounds,
                    &mut reported,
                );
                next_check = now + Duration::from_secs(10);
            }
            thread::sleep((due - Instant::now().min(due)).min(Duration::from_millis(20)));
        }
        if interrupted {
            break;
        }
        let Some(planned) = plan.get(step.index) else {
            continue;
        };
        if step.heal {
            let Some(pos) = active.iter().position(|a| a.index == step.index) else {
                continue;
            };
            let a = active.swap_remove(pos);
            heal(&mut bed, planned, a.start, &mut journal, &mut violations);
        } else {
            match inject::inject(&mut bed, planned.node, &planned.fault, &mut journal) {
                Ok(Injected::On(start)) => {
                    eprintln!(
                        "{:>8.3} s node {} {}",
                        (start - t0).as_secs_f64(),
                        planned.node,
                        planned.fault
                    );
                    active.push(Active {
                        index: step.index,
                        node: planned.node,
                        fault: planned.fault.clone(),
                        start,
                    });
                    done.push(Done {
                        planned: planned.clone(),
                        skipped: None,
                    });
                }
                Ok(Injected::Done(at)) => {
                    eprintln!(
                        "{:>8.3} s node {} {}",
                        (at - t0).as_secs_f64(),
                        planned.node,
                        planned.fault
                    );
                    journal.faults.push(FaultRecord {
                        node: planned.node,
                        fault: planned.fault.clone(),
                        start: at,
                        heal: at,
                    });
                    done.push(Done {
                        planned: planned.clone(),
                        skipped: None,
                    });
                }
                Ok(Injected::Skipped(why)) => done.push(Done {
                    planned: planned.clone(),
                    skipped: Some(why),
                }),
                Err(e) => {
                    // Still recorded as on: whatever part of it happened
                    // gets its grace, and the heal undoes it.
                    eprintln!("node {}: {}: {e}", planned.node, planned.fault);
                    violations.push(exit_violation(
                        planned.node,
                        format!("{}: {e}", planned.fault),
                    ));
                    active.push(Active {
                        index: step.index,
                        node: planned.node,
                        fault: planned.fault.clone(),
                        start: Instant::now(),
                    });
                    done.push(Done {
                        planned: planned.clone(),
                        skipped: None,
                    });
                }
            }
        }
    }
    // Heal what is still on (an interrupted run), then let things settle.
    let mut soak_counters = None;
    let mut status_rss = None;
    // The soak's resource check ends before its own status reads (their
    // answers grow carpd's heap; recorded apart in `status_rss`).
    let mut resources_until: Option<Instant> = None;
    if let Some(loss) = &soak {
        // The counters come from `carpd status --json`, whose answer for
        // every VHID is built in carpd's heap: RSS is recorded around that
        // read and two more, so that growth from answering can be told
        // from growth while running.
        sample(&bed, &mut samples);
        resources_until = Some(Instant::now());
        let mut rss = vec![rss_of(&bed)];
        let after = counters(&bed)?;
        rss.push(rss_of(&bed));
        for _ in 0..2 {
            counters(&bed)?;
            rss.push(rss_of(&bed));
        }
        status_rss = Some(rss);
        for i in 0..spec.nodes {
            let heal = inject::heal(&mut bed, i, loss, &mut journal)?;
            if let Some(f) = journal
                .faults
                .iter_mut()
                .find(|f| f.node == i && f.fault == *loss)
            {
                f.heal = heal;
            }
        }
        let deltas: Vec<Counters> = after
            .iter()
            .zip(&counters_before)
            .map(|(a, b)| a.since(b))
            .collect();
        violations.extend(adverts::check(
            &deltas,
            spec.steady_loss.unwrap_or(0),
            u64::from(spec.vhids) * spec.links as u64,
        ));
        soak_counters = Some(deltas);
    }
    for a in std::mem::take(&mut active) {
        heal(
            &mut bed,
            &plan[a.index],
            a.start,
            &mut journal,
            &mut violations,
        );
    }
    let settle_until = Instant::now() + settle(&bounds) + bounds.startup;
    while Instant::now() < settle_until {
        sample(&bed, &mut samples);
        watch_deaths(&mut bed, &mut journal, &mut violations)?;
        thread::sleep(Duration::from_millis(500));
    }
    sample(&bed, &mut samples);
    for (addr, who) in bed.holders()? {
        if who.len() != 1 {
            violations.push(Violation {
                invariant: Invariant::FinalState,
                at: Instant::now(),
                length: Duration::ZERO,
                addr: Some(addr),
                node: None,
                detail: format!("held by nodes {who:?} once every fault was healed and settled"),
            });
        }
    }
    let steady_until = Instant::now();
    // All at once, and cut off from each other first: a node that heard
    // another bow out would take its VHIDs over on the way out, which is the
    // term fault's business, not the shutdown's.
    for i in 0..spec.nodes {
        inject::inject(&mut bed, i, &Fault::Partition, &mut journal)?;
    }
    for n in &bed.nodes {
        n.signal(nix::sys::signal::Signal::SIGTERM);
    }
    for i in 0..spec.nodes {
        if let Err(e) = bed.nodes[i].wait_terminated(&mut journal) {
            violations.push(exit_violation(i, e));
        }
    }
    thread::sleep(Duration::from_millis(500));
    let until = Instant::now();
    bed.stop_capture();

    let timeline = timeline(&bed, &journal, recorded_from, from, steady_until, until);
    violations.extend(check::check(&timeline, &bounds));
    let limits = Limits {
        warmup: spec.warmup,
        rss_growth_kib: spec.rss_growth_kib,
    };
    let checked: Vec<Sample> = match resources_until {
        Some(until) => samples.iter().filter(|s| s.at <= until).copied().collect(),
        None => samples,
    };
    violations.extend(resources::check(&checked, &limits));
    violations.sort_by_key(|v| v.at);
    Ok(Outcome {
        spec: spec.clone(),
        bounds,
        t0,
        timeline,
        done,
        violations,
        incarnations: resources::incarnations(&checked, &limits),
        log_files: bed.nodes.iter().map(|n| n.log_files(&bed.out)).collect(),
        capture_file: bed.capture_file.clone(),
        interrupted,
        soak_counters,
        status_rss,
    })
}

/// The soak's loss: on every node's input for the whole run.
fn steady_loss(spec: &RunSpec) -> Option<Fault> {
    spec.steady_loss.map(|percent| Fault::Loss {
        percent,
        direction: Direction::In,
    })
}

fn counters(bed: &Bed) -> Result<Vec<Counters>> {
    bed.nodes
        .iter()
        .map(|n| Counters::read(&bed.carpd, &bed.out.join(format!("node{}.sock", n.index))))
        .collect()
}

fn heal(
    bed: &mut Bed,
    planned: &Planned,
    start: Instant,
    journal: &mut Journal,
    violations: &mut Vec<Violation>,
) {
    let heal = match inject::heal(bed, planned.node, &planned.fault, journal) {
        Ok(at) => at,
        Err(e) => {
            eprintln!("node {}: healing {}: {e}", planned.node, planned.fault);
            violations.push(exit_violation(
                planned.node,
                format!("healing {}: {e}", planned.fault),
            ));
            Instant::now()
        }
    };
    journal.faults.push(FaultRecord {
        node: planned.node,
        fault: planned.fault.clone(),
        start,
        heal,
    });
}

fn exit_violation(node: usize, detail: String) -> Violation {
    Violation {
        invariant: Invariant::Exit,
        at: Instant::now(),
        length: Duration::ZERO,
        addr: None,
        node: Some(node),
        detail,
    }
}

/// Each node's RSS (KiB) now.
fn rss_of(bed: &Bed) -> Vec<Option<u64>> {
    (bed.nodes.iter())
        .map(|n| n.pid().and_then(resources::read).map(|(rss, _)| rss))
        .collect()
}

fn sample(bed: &Bed, samples: &mut Vec<Sample>) {
    let now = Instant::now();
    for n in &bed.nodes {
        if let Some((rss_kib, fds)) = n.pid().and_then(resources::read) {
            samples.push(Sample {
                at: now,
                node: n.index,
                pid: n.pid().unwrap_or(0),
                age: now - n.spawned_at,
                rss_kib,
                fds,
            });
        }
    }
}

/// A carpd that exited without being told to is a finding; it is started
/// again so the run goes on.
fn watch_deaths(
    bed: &mut Bed,
    journal: &mut Journal,
    violations: &mut Vec<Violation>,
) -> Result<()> {
    for i in 0..bed.nodes.len() {
        if bed.nodes[i].died() {
            let log = bed.nodes[i]
                .daemon
                .as_ref()
                .map(|d| d.log())
                .unwrap_or_default();
            bed.nodes[i].daemon = None;
            journal.life(i, crate::timeline::Life::Killed);
            violations.push(exit_violation(
                i,
                format!("carpd exited by itself:\n{}", crate::bed::tail(&log, 20)),
            ));
            bed.spawn(i, journal)?;
            bed.nodes[i].wait_ready(journal)?;
        }
    }
    Ok(())
}

fn addr_changes(
    bed: &Bed,
    recorded_from: Instant,
) -> (Vec<std::collections::BTreeSet<String>>, Vec<AddrChange>) {
    let history = bed.watcher.history();
    let vips: BTreeSet<String> = bed
        .nodes
        .iter()
        .flat_map(|n| {
            let mut all = n.base.addrs();
            all.extend(n.current.addrs());
            all
        })
        .collect();
    let mut initial = vec![BTreeSet::new(); bed.nodes.len()];
    for addr in &vips {
        if let Some((_, owners)) = history.timeline(addr).first() {
            for n in owners {
                initial[*n].insert(addr.clone());
            }
        }
    }
    let changes = history
        .changes_since(recorded_from, |_| true)
        .into_iter()
        .map(|e| AddrChange {
            at: e.at,
            node: e.node,
            added: e.added,
            addr: e.addr.clone(),
        })
        .collect();
    (initial, changes)
}

fn timeline(
    bed: &Bed,
    journal: &Journal,
    recorded_from: Instant,
    from: Instant,
    steady_until: Instant,
    until: Instant,
) -> Timeline {
    let (initial, addrs) = addr_changes(bed, recorded_from);
    Timeline {
        nodes: bed.nodes.len(),
        initial,
        recorded_from,
        addrs,
        faults: journal.faults.clone(),
        life: journal.life.clone(),
        configs: journal.configs.clone(),
        hooked: bed
            .nodes
            .iter()
            .flat_map(|n| n.base.hooked_addrs())
            .chain(
                // VHIDs a reload adds are hooked by the same rule.
                (1..=u8::MAX)
                    .filter(|id| crate::config::vhid_hooked(*id))
                    .flat_map(|id| {
                        crate::config::vhid_addrs(0, id)
                            .into_iter()
                            .map(|a| crate::config::strip_len(&a).to_string())
                    }),
            )
            .collect(),
        from,
        steady_until,
        until,
    }
}

/// The checks over what is recorded so far, faults still on counted as
/// lasting; violations not reported before are printed at once.
fn check_so_far(
    bed: &Bed,
    journal: &Journal,
    active: &[Active],
    recorded_from: Instant,
    from: Instant,
    bounds: &Bounds,
    reported: &mut BTreeSet<String>,
) {
    let now = Instant::now();
    // The last stretch may still be in a grace that a later event ends.
    let upto = now - (bounds.master_down + bounds.adv_interval).min(now - from);
    if upto <= from {
        return;
    }
    let mut j = Journal {
        faults: journal.faults.clone(),
        life: journal.life.clone(),
        configs: journal.configs.clone(),
    };
    let far = now + Duration::from_secs(3600);
    for a in active {
        j.faults.push(FaultRecord {
            node: a.node,
            fault: a.fault.clone(),
            start: a.start,
            heal: far,
        });
    }
    let tl = timeline(bed, &j, recorded_from, from, upto, upto);
    for v in check::check(&tl, bounds) {
        // A stretch may be cut at another place by a later check: one
        // report per address, node and invariant and second of the run.
        let second = (v.at - from).as_secs();
        let key = format!("{:?}{:?}{:?}{second}", v.invariant, v.addr, v.node);
        if reported.insert(key) {
            eprintln!(
                "VIOLATION ({}) at {:?} after convergence: {} {}",
                v.invariant,
                v.at - from,
                v.addr.as_deref().unwrap_or(""),
                v.detail
            );
        }
    }
}
