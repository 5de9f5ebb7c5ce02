//! Health trackers: link state of other interfaces, health-check commands
//! and demotion files. Each failing tracker adds its weight to the demotion
//! of the VHIDs it covers; VHID tasks follow the current demotions through
//! a watch channel, so a check never runs on a VHID's timers.

use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::error::Error;
use crate::hooks::{self, HookOutcome};
use crate::netlink::{LinkEvent, Netlink};
use crate::spec::{TrackScope, TrackerKind, TrackerSpec, VhidKey, VhidSpec};

/// Rise/fall counting of a health check. The first result decides alone,
/// so a node whose check fails from the start is demoted before it can win
/// an election; after that, `fall` failures in a row make it unhealthy and
/// `rise` successes in a row healthy again.
#[derive(Debug, Clone)]
pub(crate) struct Health {
    rise: u32,
    fall: u32,
    healthy: Option<bool>,
    /// Consecutive results that disagree with the current state.
    streak: u32,
}

impl Health {
    /// `rise` and `fall` below 1 count as 1.
    pub(crate) fn new(rise: u32, fall: u32) -> Health {
        Health {
            rise: rise.max(1),
            fall: fall.max(1),
            healthy: None,
            streak: 0,
        }
    }

    /// Healthy until a result says otherwise.
    pub(crate) fn healthy(&self) -> bool {
        self.healthy.unwrap_or(true)
    }

    /// Count one result; returns the state after it.
    pub(crate) fn record(&mut self, ok: bool) -> bool {
        match self.healthy {
            None => self.healthy = Some(ok),
            Some(h) if h == ok => self.streak = 0,
            Some(_) => {
                self.streak += 1;
                let needed = if ok { self.rise } else { self.fall };
                if self.streak >= needed {
                    self.healthy = Some(ok);
                    self.streak = 0;
                }
            }
        }
        self.healthy()
    }
}

/// The demotion each tracker asks for right now, with what it covers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Demotions {
    entries: Vec<(TrackScope, u8)>,
}

impl Demotions {
    /// The sum of the demotions covering one VHID (at most 255).
    pub(crate) fn for_vhid(&self, key: &VhidKey, spec: &VhidSpec) -> u8 {
        self.entries
            .iter()
            .filter(|(scope, _)| scope.covers(key, spec))
            .fold(0u8, |sum, (_, d)| sum.saturating_add(*d))
    }
}

/// One tracker as status reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrackerStatus {
    pub spec: TrackerSpec,
    /// The demotion it adds now (0 while healthy).
    pub demotion: u8,
}

/// Trackers checked against the system, ready to start.
#[derive(Debug)]
pub(crate) struct PreparedTrackers {
    specs: Vec<TrackerSpec>,
    /// (tracker index, ifindex, up now) of every link tracker.
    links: Vec<(usize, u32, bool)>,
}

/// Resolve the interfaces of link trackers, touching nothing.
pub(crate) async fn prepare(
    netlink: &Netlink,
    specs: &[TrackerSpec],
) -> Result<PreparedTrackers, Error> {
    let mut links = Vec::new();
    for (i, t) in specs.iter().enumerate() {
        if let TrackerKind::Link { interface } = &t.kind {
            let link = netlink
                .link(interface)
                .await?
                .ok_or_else(|| Error::NoSuchInterface(interface.clone()))?;
            links.push((i, link.index, link.up));
        }
    }
    Ok(PreparedTrackers {
        specs: specs.to_vec(),
        links,
    })
}

/// A link tracker, followed by the name of its interface.
#[derive(Debug)]
struct LinkTrack {
    /// Index into the tracker specs.
    tracker: usize,
    interface: String,
    /// The interface's index; `None` while no interface has that name.
    index: Option<u32>,
}

impl LinkTrack {
    /// `ev` is about the tracked interface: its index, or (unless it is a
    /// removal) a new interface of its name.
    fn is_about(&self, ev: &LinkEvent) -> bool {
        self.index == Some(ev.index)
            || (!ev.removed && ev.name.as_deref() == Some(self.interface.as_str()))
    }
}

/// The running trackers and their current demotions.
#[derive(Debug)]
pub(crate) struct Tracking {
    tx: watch::Sender<Arc<Demotions>>,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    specs: Vec<TrackerSpec>,
    values: Vec<u8>,
    links: Vec<LinkTrack>,
    /// Bumped when the trackers are replaced, so a report from a stopped
    /// tracker is ignored.
    generation: u64,
    cancel: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
}

impl Tracking {
    pub(crate) fn new() -> Arc<Tracking> {
        let (tx, _) = watch::channel(Arc::new(Demotions::default()));
        Arc::new(Tracking {
            tx,
            inner: Mutex::new(Inner::default()),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(crate) fn subscribe(&self) -> watch::Receiver<Arc<Demotions>> {
        self.tx.subscribe()
    }

    /// Run `prepared` in place of the current trackers (unless they are the
    /// same, which keep their state). Its tasks stop with `parent`.
    pub(crate) fn apply(self: &Arc<Self>, prepared: PreparedTrackers, parent: &CancellationToken) {
        let mut inner = self.lock();
        if inner.specs == prepared.specs {
            return;
        }
        inner.cancel.cancel();
        for t in inner.tasks.drain(..) {
            t.abort();
        }
        inner.generation += 1;
        inner.cancel = parent.child_token();
        inner.values = vec![0; prepared.specs.len()];
        inner.links = prepared
            .links
            .iter()
            .filter_map(|(i, ix, _)| match &prepared.specs[*i].kind {
                TrackerKind::Link { interface } => Some(LinkTrack {
                    tracker: *i,
                    interface: interface.clone(),
                    index: Some(*ix),
                }),
                _ => None,
            })
            .collect();
        for (i, _, up) in &prepared.links {
            let weight = prepared.specs[*i].weight;
            inner.values[*i] = if *up { 0 } else { weight };
            if !up {
                tracing::warn!(tracker = %prepared.specs[*i].kind, demotion = weight, "tracked link is down");
            }
        }
        let generation = inner.generation;
        let reporter = |index: usize| Reporter {
            tracking: Arc::clone(self),
            generation,
            index,
            weight: prepared.specs[index].weight,
        };
        for (i, t) in prepared.specs.iter().enumerate() {
            let task = match &t.kind {
                TrackerKind::Link { .. } => continue,
                TrackerKind::Command {
                    command,
                    interval,
                    timeout,
                    rise,
                    fall,
                } => tokio::spawn(run_command(
                    reporter(i),
                    command.clone(),
                    *interval,
                    *timeout,
                    Health::new(*rise, *fall),
                    inner.cancel.clone(),
                )),
                TrackerKind::File { path, interval } => tokio::spawn(run_file(
                    reporter(i),
                    path.clone(),
                    *interval,
                    inner.cancel.clone(),
                )),
            };
            inner.tasks.push(task);
        }
        inner.specs = prepared.specs;
        self.publish(&inner);
    }

    fn publish(&self, inner: &Inner) {
        let entries = inner
            .specs
            .iter()
            .zip(&inner.values)
            .filter(|(_, d)| **d > 0)
            .map(|(s, d)| (s.scope.clone(), *d))
            .collect();
        self.tx.send_if_modified(|current| {
            let next = Demotions { entries };
            if **current == next {
                return false;
            }
            *current = Arc::new(next);
            true
        });
    }

    /// Tracker `index` of `generation` now demotes by `value`.
    fn set(&self, generation: u64, index: usize, value: u8) {
        let mut inner = self.lock();
        if inner.generation != generation {
            return;
        }
        let Some(slot) = inner.values.get_mut(index) else {
            return;
        };
        if *slot == value {
            return;
        }
        *slot = value;
        self.publish(&inner);
    }

    /// Follow a link change of a tracked interface. A deleted interface
    /// demotes until one of its name appears again, which is then tracked.
    pub(crate) fn link_event(&self, ev: &LinkEvent) {
        let mut inner = self.lock();
        let inner = &mut *inner;
        let mut changed = false;
        for link in inner.links.iter_mut().filter(|l| l.is_about(ev)) {
            link.index = (!ev.removed).then_some(ev.index);
            let i = link.tracker;
            let weight = inner.specs[i].weight;
            let value = if ev.up { 0 } else { weight };
            let tracker = &inner.specs[i].kind;
            if ev.removed {
                tracing::warn!(%tracker, demotion = weight, "tracked interface deleted: demoting until one of its name is up");
            }
            if inner.values[i] != value {
                inner.values[i] = value;
                changed = true;
                if ev.up {
                    tracing::info!(%tracker, ifindex = ev.index, "tracked link is up: demotion lifted");
                } else if !ev.removed {
                    tracing::warn!(%tracker, demotion = weight, "tracked link is down: demoting");
                }
            }
        }
        if changed {
            self.publish(inner);
        }
    }

    pub(crate) fn status(&self) -> Vec<TrackerStatus> {
        let inner = self.lock();
        inner
            .specs
            .iter()
            .zip(&inner.values)
            .map(|(spec, d)| TrackerStatus {
                spec: spec.clone(),
                demotion: *d,
            })
            .collect()
    }

    /// Stop every tracker task.
    pub(crate) fn stop(&self) {
        let mut inner = self.lock();
        inner.cancel.cancel();
        for t in inner.tasks.drain(..) {
            t.abort();
        }
    }
}

/// How a tracker task reports its demotion.
struct Reporter {
    tracking: Arc<Tracking>,
    generation: u64,
    index: usize,
    weight: u8,
}

impl Reporter {
    fn set(&self, value: u8) {
        self.tracking.set(self.generation, self.index, value);
    }
}

async fn run_command(
    reporter: Reporter,
    command: String,
    interval: Duration,
    timeout: Duration,
    mut health: Health,
    cancel: CancellationToken,
) {
    let weight = reporter.weight;
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = ticks.tick() => {}
        }
        let mut c = tokio::process::Command::new("/bin/sh");
        c.arg("-c")
            .arg(&command)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .kill_on_drop(true);
        let outcome = tokio::select! {
            _ = cancel.cancelled() => return,
            o = hooks::run(c, timeout) => o,
        };
        let was = health.healthy();
        let now = health.record(outcome == HookOutcome::Success);
        if was != now {
            if now {
                tracing::info!(command = %command, "health check passes again: demotion lifted");
            } else {
                tracing::warn!(command = %command, outcome = ?outcome, demotion = weight,
                    "health check failing: demoting");
            }
        }
        reporter.set(if now { 0 } else { weight });
    }
}

/// A demotion file's number: `Ok(0)` when the file does not exist.
async fn read_demotion(path: &Path) -> Result<u64, String> {
    match tokio::fs::read_to_string(path).await {
        Ok(text) => text
            .trim()
            .parse::<u64>()
            .map_err(|_| format!("{:?} is not a number", text.trim())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(e.to_string()),
    }
}

async fn run_file(
    reporter: Reporter,
    path: std::path::PathBuf,
    interval: Duration,
    cancel: CancellationToken,
) {
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let weight = reporter.weight;
    let mut last: Option<Result<u8, String>> = None;
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = ticks.tick() => {}
        }
        let read = read_demotion(&path)
            .await
            .map(|n| u8::try_from(n.saturating_mul(u64::from(weight))).unwrap_or(u8::MAX));
        if last.as_ref() != Some(&read) {
            match &read {
                Ok(d) => {
                    tracing::info!(file = %path.display(), demotion = d, "demotion file read");
                }
                // The last good value stays: a half-written file must not
                // promote or demote.
                Err(e) => tracing::warn!(file = %path.display(), error = %e,
                    "cannot read demotion file; keeping the last value"),
            }
            last = Some(read.clone());
        }
        if let Ok(d) = read {
            reporter.set(d);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_result_decides() {
        let mut h = Health::new(3, 3);
        assert!(h.healthy());
        assert!(!h.record(false));
        let mut h = Health::new(3, 3);
        assert!(h.record(true));
    }

    #[test]
    fn fall_then_rise() {
        let mut h = Health::new(2, 3);
        assert!(h.record(true));
        // Two failures are not enough, and a success resets the count.
        assert!(h.record(false));
        assert!(h.record(false));
        assert!(h.record(true));
        assert!(h.record(false));
        assert!(h.record(false));
        assert!(!h.record(false));
        // Failing stays failing; one success is not enough to rise.
        assert!(!h.record(false));
        assert!(!h.record(true));
        assert!(!h.record(false));
        assert!(!h.record(true));
        assert!(h.record(true));
        assert!(h.record(true));
    }

    #[test]
    fn zero_rise_and_fall_act_as_one() {
        let mut h = Health::new(0, 0);
        assert!(h.record(true));
        assert!(!h.record(false));
        assert!(h.record(true));
    }

    fn vhid(interface: &str, vhid: u8) -> VhidKey {
        VhidKey {
            interface: interface.into(),
            vhid,
        }
    }

    #[test]
    fn demotions_sum_what_covers_a_vhid() {
        let d = Demotions {
            entries: vec![
                (TrackScope::All, 1),
                (TrackScope::Groups(vec!["fw".into()]), 50),
                (TrackScope::Groups(vec!["eth1".into()]), 7),
                (TrackScope::Vhid(vhid("eth0", 2)), 200),
            ],
        };
        let mut spec = test_spec();
        assert_eq!(d.for_vhid(&vhid("eth0", 1), &spec), 1);
        assert_eq!(d.for_vhid(&vhid("eth1", 1), &spec), 8);
        spec.groups = vec!["fw".into()];
        assert_eq!(d.for_vhid(&vhid("eth0", 1), &spec), 51);
        // Saturates instead of wrapping.
        assert_eq!(d.for_vhid(&vhid("eth0", 2), &spec), 251);
        assert_eq!(d.for_vhid(&vhid("eth1", 2), &spec), 58);
        let d = Demotions {
            entries: vec![(TrackScope::All, 200), (TrackScope::All, 200)],
        };
        assert_eq!(d.for_vhid(&vhid("eth0", 1), &spec), 255);
    }

    fn test_spec() -> VhidSpec {
        VhidSpec {
            vhid: 1,
            addresses: Vec::new(),
            label: None,
            key: Vec::new(),
            auth: carp_proto::HmacMode::Bsd,
            demote_style: carp_proto::machine::DemoteStyle::Byte,
            advbase: 1,
            advskew: 0,
            dead_ratio: 3,
            preempt: false,
            preempt_delay: std::time::Duration::ZERO,
            announce_interval: None,
            source: None,
            group_v4: std::net::Ipv4Addr::new(224, 0, 0, 18),
            broadcast: false,
            manage_addresses: true,
            replay_protection: false,
            hooks: crate::spec::HookSpec::default(),
            groups: Vec::new(),
            share: None,
            transport: Default::default(),
            protocol: Default::default(),
        }
    }

    #[tokio::test]
    async fn demotion_files() {
        let dir = std::env::temp_dir().join(format!("carp-engine-track-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("demote");
        assert_eq!(read_demotion(&f).await, Ok(0));
        std::fs::write(&f, "12\n").unwrap();
        assert_eq!(read_demotion(&f).await, Ok(12));
        std::fs::write(&f, "lots").unwrap();
        assert!(read_demotion(&f).await.is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn command_and_file_trackers_publish_demotions() {
        let dir = std::env::temp_dir().join(format!("carp-engine-trk2-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let fail = dir.join("fail");
        let file = dir.join("demote");
        let tracking = Tracking::new();
        let mut rx = tracking.subscribe();
        let specs = vec![
            TrackerSpec {
                kind: TrackerKind::Command {
                    command: format!("test ! -e {}", fail.display()),
                    interval: Duration::from_millis(20),
                    timeout: Duration::from_secs(5),
                    rise: 2,
                    fall: 2,
                },
                weight: 50,
                scope: TrackScope::Groups(vec!["fw".into()]),
            },
            TrackerSpec {
                kind: TrackerKind::File {
                    path: file.clone(),
                    interval: Duration::from_millis(20),
                },
                weight: 2,
                scope: TrackScope::All,
            },
        ];
        let cancel = CancellationToken::new();
        tracking.apply(
            PreparedTrackers {
                specs,
                links: Vec::new(),
            },
            &cancel,
        );
        let mut spec = test_spec();
        spec.groups = vec!["fw".into()];
        let key = vhid("eth0", 1);
        let wait_for = |rx: &mut watch::Receiver<Arc<Demotions>>, want: u8| {
            let (key, spec) = (key.clone(), spec.clone());
            let mut rx = rx.clone();
            async move {
                tokio::time::timeout(
                    Duration::from_secs(10),
                    rx.wait_for(|d| d.for_vhid(&key, &spec) == want),
                )
                .await
                .map(|_| ())
            }
        };
        std::fs::write(&fail, "").unwrap();
        wait_for(&mut rx, 50).await.unwrap();
        std::fs::write(&file, "3").unwrap();
        wait_for(&mut rx, 56).await.unwrap();
        std::fs::remove_file(&fail).unwrap();
        wait_for(&mut rx, 6).await.unwrap();
        assert_eq!(
            tracking
                .status()
                .iter()
                .map(|s| s.demotion)
                .collect::<Vec<_>>(),
            [0, 6]
        );
        tracking.stop();
        cancel.cancel();
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
