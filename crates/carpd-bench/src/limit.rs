//! Failover at the protocol's limit: CARP's fastest timers (advbase 0,
//! advskew 1, 2, 4 and 8: 3.9 to 31 ms between advertisements) on a loaded
//! host. Each node runs one carpd with the scale item's 1000 background
//! VHIDs at advbase 1 (node 0 masters them, node 1 backs them up) and the
//! measured VHID on eth3. The anchor is keepalived's VRRPv3 at its 10 ms
//! floor on the same bed, beside the same background carpd.
//!
//! Per advskew: SIGKILL of the master's carpd → the backup has the address
//! (a fresh pair each round), and takeovers while both run over a steady
//! window. `--hog` instead counts those takeovers with one busy process per
//! core, with and without `realtime = true` in carpd's configuration.

use std::cell::Cell;
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::thread::sleep;
use std::time::{Duration, Instant};

use carpd_testbed::{Lan, wait_until};
use nix::sys::signal::Signal;
use nix::unistd::Pid;

use crate::cleanup::Scratch;
use crate::error::{Error, Result};
use crate::failover::{FailoverSample, Impl, Timers, random_phase, settle};
use crate::proc::{Daemon, state_counts};
use crate::report::{Row, Summary, Verdict};
use crate::watch::{AddrWatch, Capture, Frames, Ns, now_ns};
use crate::{log_step, ms_summary, scale};

/// Background VHIDs per node, as in the scale item.
const BACKGROUND: usize = 4 * 250;
/// The measured VHID (and keepalived's VRID): the background uses 1..=250
/// on every link.
const VHID: u8 = 251;
/// The measured VHID's link: the last `[[interface]]` of the background
/// configuration, so that its `[[interface.vhid]]` table can be appended.
const LINK: usize = scale::LINKS - 1;
const VIP: Ipv4Addr = Ipv4Addr::new(10, 99, 3, 100);
/// Every background address (10.100.0.x to 10.103.0.x).
const BACKGROUND_NET: &str = "10.100.0.0/14";

/// The master's advskews measured, at advbase 0.
const SKEWS: [u8; 4] = [1, 2, 4, 8];
/// The advskews measured under `--hog`.
const HOG_SKEWS: [u8; 3] = [1, 2, 4];
/// The advskew whose steady window is the long one (its target is stated
/// over 10 minutes).
const LONG_SKEW: u8 = 4;

/// A takeover's logged transition and its address event, or the address
/// event and the new master's first advertisement, are this close at
/// most, or they are not the same takeover's.
const DECIDED_WITHIN: Ns = 100_000_000;

/// The links' NAPI threads run at this `SCHED_FIFO` priority, a real-time
/// kernel's default for interrupt threads.
pub const LINK_PRIORITY: i32 = 50;

/// keepalived's VRRPv3 floor: 1 centisecond.
const KEEPALIVED_INTERVAL: Duration = Duration::from_millis(10);
const KEEPALIVED_PRIORITY: [u8; 2] = [254, 253];

/// How long each part runs.
#[derive(Debug, Clone)]
pub struct Plan {
    pub quick: bool,
    pub rounds: usize,
    pub window: Duration,
    /// The steady window at [`LONG_SKEW`].
    pub long_window: Duration,
    /// The backup's advskew is the master's plus this.
    pub backup_extra: u8,
    /// The master's advskews measured.
    pub skews: Vec<u8>,
    /// The advskews measured under `--hog`.
    pub hog_skews: Vec<u8>,
    /// keepalived at its 10 ms floor, after the advskews.
    pub anchor: bool,
    /// `SCHED_FIFO` priority of the links' NAPI threads; 0: normal.
    pub link_priority: i32,
}

impl Plan {
    pub fn new(quick: bool, rounds: Option<usize>, backup_extra: u8) -> Plan {
        if quick {
            Plan {
                quick,
                rounds: rounds.unwrap_or(3),
                window: Duration::from_secs(30),
                long_window: Duration::from_secs(30),
                backup_extra,
                skews: SKEWS.to_vec(),
                hog_skews: HOG_SKEWS.to_vec(),
                anchor: true,
                link_priority: LINK_PRIORITY,
            }
        } else {
            Plan {
                quick,
                rounds: rounds.unwrap_or(10),
                window: Duration::from_secs(180),
                long_window: Duration::from_secs(600),
                backup_extra,
                skews: SKEWS.to_vec(),
                hog_skews: HOG_SKEWS.to_vec(),
                anchor: true,
                link_priority: LINK_PRIORITY,
            }
        }
    }

    /// Measures only `skews` (each one the item knows), without the
    /// anchor.
    pub fn only(&mut self, skews: &[u8]) -> Result<()> {
        if let Some(s) = skews.iter().find(|s| !SKEWS.contains(s)) {
            return Err(Error::Setup(format!(
                "--advskew {s}: the limit item measures advskew {SKEWS:?}"
            )));
        }
        self.skews.retain(|s| skews.contains(s));
        self.hog_skews.retain(|s| skews.contains(s));
        self.anchor = false;
        Ok(())
    }

    fn window(&self, skew: u8) -> Duration {
        if skew == LONG_SKEW {
            self.long_window
        } else {
            self.window
        }
    }

    /// Master and backup timers for the master's `skew`.
    fn timers(&self, skew: u8) -> [Timers; 2] {
        let t = |advskew| Timers {
            advbase: 0,
            advskew,
            preempt: false,
        };
        [t(skew), t(skew.saturating_add(self.backup_extra))]
    }
}

/// What one run measured, with how long each part took.
#[derive(Debug, Default)]
pub struct Outcome {
    pub rows: Vec<Row>,
    pub parts: Vec<(String, Duration)>,
}

impl Outcome {
    /// Runs `part`, logging and recording how long it took.
    fn time<T>(&mut self, name: &str, part: impl FnOnce() -> T) -> T {
        log_step(name);
        let began = Instant::now();
        let out = part();
        let took = began.elapsed();
        eprintln!("  {name}: {:.1} s", took.as_secs_f64());
        self.parts.push((name.to_string(), took));
        out
    }
}

/// A carpd serving the background VHIDs, and the measured one if set.
struct CarpdNode {
    daemon: Daemon,
    socket: PathBuf,
}

/// The two nodes, their observers and the scratch directory.
struct LimitBed<'a> {
    lan: &'a Lan,
    dir: &'a Scratch,
    carpd: &'a Path,
    watch: AddrWatch,
    /// At the switch ports of the measured link.
    capture: Capture,
    /// In each host, on the measured link: what it sent, timed as it
    /// left, and what reached it.
    at_hosts: [Capture; 2],
    seq: Cell<u32>,
}

impl<'a> LimitBed<'a> {
    fn new(lan: &'a Lan, dir: &'a Scratch, carpd: &'a Path) -> Result<LimitBed<'a>> {
        let watch = AddrWatch::start(&lan.hosts.iter().collect::<Vec<_>>())?;
        let ports: Vec<String> = (0..lan.hosts.len())
            .map(|i| Lan::port_name(i, LINK))
            .collect();
        let capture = Capture::start(&lan.switch, &ports, Frames::Arriving)?;
        let link = [format!("eth{LINK}")];
        let at_hosts = [
            Capture::start(&lan.hosts[0], &link, Frames::Both)?,
            Capture::start(&lan.hosts[1], &link, Frames::Both)?,
        ];
        Ok(LimitBed {
            lan,
            dir,
            carpd,
            watch,
            capture,
            at_hosts,
            seq: Cell::new(0),
        })
    }

    fn label(&self, what: &str, node: usize) -> String {
        let n = self.seq.get();
        self.seq.set(n + 1);
        format!("limit-{what}-{node}-{n}")
    }

    /// The background configuration of `node`, with the measured VHID at
    /// advbase 0 and `skew` if set, and `realtime = true` if asked.
    fn config(node: usize, skew: Option<u8>, realtime: bool, socket: &Path) -> String {
        let mut s = String::new();
        if realtime {
            s.push_str("realtime = true\n");
        }
        let layout = scale::Layout::for_vhids(BACKGROUND, scale::Family::V4);
        s.push_str(&scale::carpd_config(layout, BACKGROUND, node, None, socket));
        if let Some(skew) = skew {
            let _ = write!(
                s,
                "\n[[interface.vhid]]\nid = {VHID}\nadvbase = 0\nadvskew = {skew}\naddresses = [\"{VIP}/24\"]\n"
            );
        }
        s
    }

    fn start_carpd(&self, node: usize, skew: Option<u8>, realtime: bool) -> Result<CarpdNode> {
        let label = self.label("carpd", node);
        let socket = self.dir.path().join(format!("{label}.sock"));
        let path = self.dir.write(
            &format!("{label}.toml"),
            &Self::config(node, skew, realtime, &socket),
        )?;
        let daemon = Daemon::spawn(
            &self.lan.hosts[node],
            &label,
            self.dir.path(),
            self.carpd,
            &["--config", &path.to_string_lossy(), "--log-format", "json"],
        )?;
        Ok(CarpdNode { daemon, socket })
    }

    /// Waits until every VHID of `node` is in `state` (index into
    /// [`state_counts`]: 1 BACKUP, 2 MASTER); fails early if carpd exits.
    fn wait_all(&self, node: &mut CarpdNode, state: usize, total: usize) -> Result<()> {
        let mut exited = false;
        let done = wait_until(Duration::from_secs(30), Duration::from_millis(100), || {
            exited = node.daemon.wait_exit(Duration::ZERO);
            exited || state_counts(&node.socket).is_ok_and(|c| c[state] == total)
        });
        if exited || done.is_none() {
            let log = node.daemon.log();
            let tail: Vec<&str> = log.lines().rev().take(3).collect();
            return Err(Error::Measure(format!(
                "carpd {}: not all {total} VHIDs {}; log: {}",
                if exited { "exited" } else { "running" },
                ["INIT", "BACKUP", "MASTER"][state],
                tail.join(" | ")
            )));
        }
        Ok(())
    }

    /// Removes the measured address from `node` if a killed daemon left it.
    fn clear_vip(&self, node: usize) {
        let dev = format!("eth{LINK}");
        let _ = self.lan.hosts[node].try_ip(&["addr", "del", &format!("{VIP}/24"), "dev", &dev]);
    }

    /// Removes the measured and background addresses a killed daemon left.
    fn clear(&self, node: usize) {
        self.clear_vip(node);
        let _ = self.lan.hosts[node].try_ip(&["-4", "addr", "flush", "to", BACKGROUND_NET]);
    }

    fn has_vip(&self, node: usize) -> bool {
        self.lan.hosts[node]
            .try_addrs()
            .is_ok_and(|a| a.contains(&VIP.to_string()))
    }

    /// Node 0 masters everything, then node 1 joins and backs it all up.
    /// `skews` are the measured VHID's advskews (none: background only).
    fn start_pair(&self, skews: [Option<u8>; 2], realtime: bool) -> Result<[CarpdNode; 2]> {
        self.clear(0);
        self.clear(1);
        let total = BACKGROUND + usize::from(skews[0].is_some());
        let mut n0 = self.start_carpd(0, skews[0], realtime)?;
        self.wait_all(&mut n0, 2, total)?;
        let mut n1 = self.start_carpd(1, skews[1], realtime)?;
        self.wait_all(&mut n1, 1, total)?;
        if let Some(skew) = skews[1] {
            let t = Timers {
                advbase: 0,
                advskew: skew,
                preempt: false,
            };
            sleep(settle(Impl::Carpd, t));
            if self.has_vip(1) || !self.has_vip(0) {
                return Err(Error::Measure(format!(
                    "{VIP} not on node 0 alone after start"
                )));
            }
        }
        Ok([n0, n1])
    }

    /// Stops both nodes (node 0 may be dead already) and clears them.
    fn stop_pair(&self, mut nodes: [CarpdNode; 2]) {
        for n in nodes.iter_mut().rev() {
            let _ = n.daemon.signal(Signal::SIGTERM);
            n.daemon.wait_exit(Duration::from_secs(10));
        }
        drop(nodes);
        self.clear(0);
        self.clear(1);
    }

    /// Node 1's takeover once `kill` has SIGKILLed node 0's daemon (it
    /// returns when it sent the signal), with node 0's last advertisement
    /// on the wire.
    fn takeover(
        &self,
        kill: impl FnOnce() -> Result<Ns>,
        master_down: Duration,
    ) -> Result<FailoverSample> {
        let sent = kill()?;
        let takeover = self
            .watch
            .wait_added(
                1,
                IpAddr::V4(VIP),
                sent,
                master_down * 2 + Duration::from_secs(5),
            )
            .ok_or_else(|| Error::Measure(format!("node 1 did not take {VIP}")))?;
        let last = self
            .capture
            .last_advert(host_v4(0)?, VHID, takeover)
            .ok_or_else(|| Error::Measure("no advertisement of the master captured".into()))?;
        Ok(FailoverSample::new(sent, last, takeover, master_down))
    }

    /// `rounds` SIGKILLs of node 0's carpd, a fresh pair each round.
    fn carpd_failovers(&self, t: [Timers; 2], rounds: usize) -> Result<Vec<FailoverSample>> {
        each_round(rounds, || {
            let nodes = self.start_pair([Some(t[0].advskew), Some(t[1].advskew)], false)?;
            sleep(random_phase(t[0].interval()));
            let sample = self.takeover(
                || {
                    let at = now_ns();
                    nodes[0].daemon.signal(Signal::SIGKILL)?;
                    Ok(at)
                },
                t[1].master_down(),
            );
            self.stop_pair(nodes);
            sample
        })
    }

    /// The address added on either node over `window` while both run:
    /// each is a node becoming master while the other runs. `master_down`
    /// is each node's own; `logged`: the daemons are carpd, whose JSON
    /// log times each transition.
    fn count_takeovers(
        &self,
        window: Duration,
        running: &mut [&mut Daemon],
        master_down: [Duration; 2],
        logged: bool,
    ) -> Result<Takeovers> {
        let since = now_ns();
        sleep(window);
        if running.iter_mut().any(|d| d.wait_exit(Duration::ZERO)) {
            return Err(Error::Measure("a daemon exited during the window".into()));
        }
        let masters: Vec<Vec<Ns>> = running
            .iter()
            .map(|d| {
                if logged {
                    masters_logged(&d.log())
                } else {
                    Vec::new()
                }
            })
            .collect();
        let mut out = Takeovers::default();
        for e in self.watch.events() {
            if !e.added || e.addr != IpAddr::V4(VIP) || e.at < since {
                continue;
            }
            let taker = e.node.min(1);
            let other = 1 - taker;
            let decided = masters
                .get(taker)
                .and_then(|m| {
                    m.iter()
                        .rev()
                        .find(|&&t| t <= e.at && e.at - t < DECIDED_WITHIN)
                })
                .copied()
                .map_or_else(
                    || self.first_advert_as_master(taker, e.at, master_down[taker]),
                    Ok,
                )?;
            let src = host_v4(other)?;
            let before = |c: &Capture| {
                c.last_advert(src, VHID, decided)
                    .map(|t| crate::watch::ms(t, decided))
            };
            out.record(
                before(&self.at_hosts[other]),
                before(&self.at_hosts[taker]),
                ms_of(master_down[taker]),
            );
        }
        Ok(out)
    }

    /// When `taker`, whose address event was read at `seen`, decided
    /// without a log to say so: the address event is timed as this
    /// program read it, which can be late; the new master's first
    /// advertisement follows the address's addition by a netlink round
    /// trip and is timed by the kernel as it left. Any it sent as master
    /// before came at least its master-down before it took over again.
    fn first_advert_as_master(&self, taker: usize, seen: Ns, master_down: Duration) -> Result<Ns> {
        let md = Ns::try_from(master_down.as_nanos()).unwrap_or(Ns::MAX);
        Ok(self.at_hosts[taker]
            .first_advert(host_v4(taker)?, VHID, seen - md, seen + DECIDED_WITHIN)
            .map_or(seen, |t| t.min(seen)))
    }

    fn carpd_steady(&self, t: [Timers; 2], window: Duration, realtime: bool) -> Result<Takeovers> {
        let mut nodes = self.start_pair([Some(t[0].advskew), Some(t[1].advskew)], realtime)?;
        let [n0, n1] = &mut nodes;
        let n = self.count_takeovers(
            window,
            &mut [&mut n0.daemon, &mut n1.daemon],
            [t[0].master_down(), t[1].master_down()],
            true,
        );
        self.stop_pair(nodes);
        n
    }

    fn keepalived_conf(priority: u8) -> String {
        format!(
            "global_defs {{\n  vrrp_version 3\n  router_id limit{priority}\n  enable_script_security\n}}\n\
             vrrp_instance VI {{\n  state BACKUP\n  interface eth{LINK}\n  virtual_router_id {VHID}\n  \
             priority {priority}\n  advert_int {:.2}\n  nopreempt\n  virtual_ipaddress {{\n    {VIP}/24\n  }}\n}}\n",
            KEEPALIVED_INTERVAL.as_secs_f64()
        )
    }

    fn start_keepalived(&self, node: usize) -> Result<Keepalived> {
        let label = self.label("keepalived", node);
        let conf = self.dir.write(
            &format!("{label}.conf"),
            &Self::keepalived_conf(KEEPALIVED_PRIORITY[node]),
        )?;
        let pid = self.dir.path().join(format!("{label}.pid"));
        let vrrp_pid = self.dir.path().join(format!("{label}-vrrp.pid"));
        let daemon = Daemon::spawn(
            &self.lan.hosts[node],
            &label,
            self.dir.path(),
            Path::new("keepalived"),
            &[
                "-n",
                "-l",
                "-D",
                "-P",
                "-f",
                &conf.to_string_lossy(),
                "-p",
                &pid.to_string_lossy(),
                "-r",
                &vrrp_pid.to_string_lossy(),
            ],
        )?;
        let k = Keepalived { daemon, vrrp_pid };
        if wait_until(Duration::from_secs(10), Duration::from_millis(10), || {
            k.vrrp_child().is_some()
        })
        .is_none()
        {
            return Err(Error::Measure(format!(
                "keepalived on node {node} started no VRRP process; log: {}",
                k.daemon
                    .log()
                    .lines()
                    .rev()
                    .take(3)
                    .collect::<Vec<_>>()
                    .join(" | ")
            )));
        }
        Ok(k)
    }

    /// keepalived on node 0 (priority 254) as master, then node 1 (253).
    fn start_keepalived_pair(&self) -> Result<[Keepalived; 2]> {
        self.clear_vip(0);
        self.clear_vip(1);
        let since = now_ns();
        let k0 = self.start_keepalived(0)?;
        self.watch
            .wait_added(0, IpAddr::V4(VIP), since, Duration::from_secs(10))
            .ok_or_else(|| Error::Measure("keepalived node 0 did not take the address".into()))?;
        let k1 = self.start_keepalived(1)?;
        sleep(Duration::from_millis(300));
        if self.has_vip(1) {
            return Err(Error::Measure(
                "keepalived: both nodes hold the address after start".into(),
            ));
        }
        Ok([k0, k1])
    }

    fn keepalived_failovers(&self, rounds: usize) -> Result<Vec<FailoverSample>> {
        each_round(rounds, || {
            let [mut k0, k1] = self.start_keepalived_pair()?;
            sleep(random_phase(KEEPALIVED_INTERVAL));
            let sample = self.takeover(|| k0.crash(), keepalived_master_down());
            drop((k0, k1));
            sample
        })
    }

    fn keepalived_steady(&self, window: Duration) -> Result<Takeovers> {
        let [mut k0, mut k1] = self.start_keepalived_pair()?;
        // node 0's priority is higher: it never waits on node 1
        self.count_takeovers(
            window,
            &mut [&mut k0.daemon, &mut k1.daemon],
            [keepalived_master_down(); 2],
            false,
        )
    }
}

/// Takeovers while both nodes ran, each told apart by when the other
/// node's last advertisement before it left that node and reached the
/// taker.
#[derive(Debug, Default)]
struct Takeovers {
    /// The other node had sent nothing for the taker's master-down or
    /// longer: its advertisements were late.
    sent_late: usize,
    /// Sent in time, but nothing reached the taker for its master-down or
    /// longer: the link between them was late.
    delivered_late: usize,
    /// The other node's last advertisement reached the taker within its
    /// master-down: the taker did not act on it in time.
    taker_late: usize,
    /// No advertisement of the other node captured before it.
    unknown: usize,
    /// From the other node's last advertisement leaving it to the
    /// takeover, ms.
    since_sent_ms: Vec<f64>,
}

impl Takeovers {
    /// One takeover, with how long before it the other node's last
    /// advertisement left it and reached the taker.
    fn record(&mut self, sent_ms: Option<f64>, arrived_ms: Option<f64>, master_down_ms: f64) {
        match (sent_ms, arrived_ms) {
            (Some(s), _) if s >= master_down_ms => self.sent_late += 1,
            (Some(_), Some(a)) if a < master_down_ms => self.taker_late += 1,
            (Some(_), _) => self.delivered_late += 1,
            (None, _) => self.unknown += 1,
        }
        self.since_sent_ms.extend(sent_ms);
    }

    fn count(&self) -> usize {
        self.sent_late + self.delivered_late + self.taker_late + self.unknown
    }

    /// What the captures showed before them, for the row's note.
    fn note(&self) -> String {
        if self.count() == 0 {
            return String::new();
        }
        let mut s = format!(
            "the other node's last advertisement: sent master-down or more before {}, sent later but arrived master-down or more before {}, arrived within master-down {}",
            self.sent_late, self.delivered_late, self.taker_late
        );
        if self.unknown > 0 {
            let _ = write!(s, ", none captured {}", self.unknown);
        }
        if let Some(g) = ms_summary(self.since_sent_ms.iter().copied()) {
            let _ = write!(
                s,
                "; sent {:.1} ms ({:.1}–{:.1}) before",
                g.median, g.min, g.max
            );
        }
        s
    }
}

/// Runs `round` `rounds` times; a failed round is logged and left out of
/// the samples (their count shows it), and only all failing is an error.
fn each_round(
    rounds: usize,
    mut round: impl FnMut() -> Result<FailoverSample>,
) -> Result<Vec<FailoverSample>> {
    let mut out = Vec::new();
    let mut first_error = None;
    for r in 0..rounds {
        match round() {
            Ok(s) => out.push(s),
            Err(e) => {
                eprintln!("  round {r} failed: {e}");
                first_error.get_or_insert(e);
            }
        }
    }
    match first_error {
        Some(e) if out.is_empty() => Err(e),
        _ => Ok(out),
    }
}

/// `node`'s address on the measured link.
fn host_v4(node: usize) -> Result<Ipv4Addr> {
    Lan::host_addr(node, LINK)
        .parse::<Ipv4Addr>()
        .map_err(|e| Error::Setup(e.to_string()))
}

/// When carpd's JSON log says the measured VHID became MASTER, in order.
fn masters_logged(log: &str) -> Vec<Ns> {
    log.lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|v| {
            v["fields"]["to"].as_str() == Some("MASTER")
                && v["span"]["vhid"].as_u64() == Some(u64::from(VHID))
        })
        .filter_map(|v| scale::parse_rfc3339(v["timestamp"].as_str()?))
        .collect()
}

/// The backup's master-down time (RFC 9568): 3 intervals plus its skew.
fn keepalived_master_down() -> Duration {
    KEEPALIVED_INTERVAL * 3 + KEEPALIVED_INTERVAL * (256 - u32::from(KEEPALIVED_PRIORITY[1])) / 256
}

/// keepalived (parent) and its VRRP process, whose pid it writes to a file.
struct Keepalived {
    daemon: Daemon,
    vrrp_pid: PathBuf,
}

impl Keepalived {
    fn vrrp_child(&self) -> Option<Pid> {
        std::fs::read_to_string(&self.vrrp_pid)
            .ok()?
            .trim()
            .parse()
            .ok()
            .map(Pid::from_raw)
    }

    /// SIGKILLs the VRRP process; the parent is stopped first so that it
    /// cannot start another, then killed. Returns when the kill was sent.
    fn crash(&mut self) -> Result<Ns> {
        let child = self
            .vrrp_child()
            .ok_or_else(|| Error::Measure("keepalived wrote no VRRP pid".into()))?;
        self.daemon.signal(Signal::SIGSTOP)?;
        let at = now_ns();
        nix::sys::signal::kill(child, Signal::SIGKILL)
            .map_err(|e| Error::Command(format!("kill keepalived's VRRP process: {e}")))?;
        self.daemon.signal(Signal::SIGKILL)?;
        self.daemon.wait_exit(Duration::from_secs(5));
        Ok(at)
    }
}

impl Drop for Keepalived {
    /// SIGTERM: the VRRP process gives the address up (priority 0) and
    /// both exit; whatever is left is killed.
    fn drop(&mut self) {
        let child = self.vrrp_child();
        if !self.daemon.wait_exit(Duration::ZERO) {
            let _ = self.daemon.signal(Signal::SIGTERM);
            self.daemon.wait_exit(Duration::from_secs(10));
        }
        if let Some(c) = child {
            let _ = nix::sys::signal::kill(c, Signal::SIGKILL);
        }
    }
}

/// One busy process per core at normal priority, in the switch namespace
/// (so that deleting it on a signal kills them too). Each also exits on
/// its own once the benchmark is gone; all are killed on drop.
struct Hogs(Vec<Daemon>);

impl Hogs {
    fn start(lan: &Lan, dir: &Scratch) -> Result<Hogs> {
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        let body = format!(
            "while kill -0 {} 2>/dev/null; do i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done; done",
            std::process::id()
        );
        (0..cores)
            .map(|i| {
                Daemon::spawn(
                    &lan.switch,
                    &format!("hog-{i}"),
                    dir.path(),
                    Path::new("sh"),
                    &["-c", &body],
                )
            })
            .collect::<Result<Vec<_>>>()
            .map(Hogs)
    }
}

impl Drop for Hogs {
    fn drop(&mut self) {
        for h in &self.0 {
            let _ = h.signal(Signal::SIGKILL);
        }
        for h in &mut self.0 {
            h.wait_exit(Duration::from_secs(5));
        }
    }
}

/// A failed part's note in the table: the error, cut short (carpd's
/// configuration errors list every accepted key).
fn failed_note(e: &Error) -> String {
    const MAX: usize = 160;
    let text = e.to_string();
    match text.char_indices().nth(MAX) {
        Some((i, _)) => format!("failed: {}…", &text[..i]),
        None => format!("failed: {text}"),
    }
}

fn ms_of(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn count_row(
    item: &str,
    what: String,
    n: &Result<Takeovers>,
    target: &str,
    verdict: Verdict,
) -> Row {
    Row {
        item: item.into(),
        what,
        unit: "count",
        carpd: n
            .as_ref()
            .ok()
            .and_then(|n| Summary::of(&[n.count() as f64])),
        ucarp: None,
        target: target.into(),
        verdict: if n.is_err() { Verdict::Missed } else { verdict },
        note: match n {
            Ok(n) => n.note(),
            Err(e) => failed_note(e),
        },
    }
}

/// The false-takeover verdict at [`LONG_SKEW`]: none over the full 10
/// minutes; a shorter window can only miss it.
fn long_verdict(n: &Result<Takeovers>, window: Duration) -> Verdict {
    match n.as_ref().map(Takeovers::count) {
        Ok(0) if window >= Duration::from_secs(600) => Verdict::Met,
        Ok(0) => Verdict::None,
        _ => Verdict::Missed,
    }
}

fn failover_rows(
    skew: u8,
    t: [Timers; 2],
    rounds: usize,
    res: &Result<Vec<FailoverSample>>,
) -> Vec<Row> {
    let down = ms_of(t[1].master_down());
    let of =
        |f: fn(&FailoverSample) -> f64| res.as_ref().ok().and_then(|v| ms_summary(v.iter().map(f)));
    let from_kill = of(|s| s.from_signal_ms);
    let (target, verdict) = match skew {
        1 => (
            "median < 15",
            from_kill.map_or(Verdict::Missed, |s| crate::verdict(s.median < 15.0)),
        ),
        LONG_SKEW => (
            "median < 50",
            from_kill.map_or(Verdict::Missed, |s| crate::verdict(s.median < 50.0)),
        ),
        _ => ("", Verdict::None),
    };
    let failed = res.as_ref().err().map(failed_note).unwrap_or_default();
    vec![
        Row {
            item: "L".into(),
            what: format!(
                "advskew {skew} ({:.1} ms interval; backup advskew {}, master-down {down:.1} ms): SIGKILL → backup has the address",
                ms_of(t[0].interval()),
                t[1].advskew
            ),
            unit: "ms",
            carpd: from_kill,
            ucarp: None,
            target: target.into(),
            verdict: if res.is_err() {
                Verdict::Missed
            } else {
                verdict
            },
            note: if failed.is_empty() {
                format!(
                    "{rounds} rounds asked; SIGKILL at a random phase of the interval; 1000 background VHIDs in the same process"
                )
            } else {
                failed.clone()
            },
        },
        Row {
            item: "L".into(),
            what: format!(
                "advskew {skew}: excess over master-down (takeover − last advert − {down:.1} ms)"
            ),
            unit: "ms",
            carpd: of(|s| s.excess_ms),
            ucarp: None,
            target: String::new(),
            verdict: Verdict::None,
            note: failed,
        },
    ]
}

/// The item: every advskew, then the keepalived anchor.
pub fn run(lan: &Lan, dir: &Scratch, carpd: &Path, plan: &Plan) -> Result<Outcome> {
    carpd_testbed::check_tool("keepalived")?;
    let bed = LimitBed::new(lan, dir, carpd)?;
    let mut out = Outcome::default();
    for &skew in &plan.skews {
        let t = plan.timers(skew);
        let res = out.time(
            &format!("advskew {skew}: {} SIGKILL failovers", plan.rounds),
            || bed.carpd_failovers(t, plan.rounds),
        );
        out.rows.extend(failover_rows(skew, t, plan.rounds, &res));
        let window = plan.window(skew);
        let n = out.time(
            &format!("advskew {skew}: {} s steady window", window.as_secs()),
            || bed.carpd_steady(t, window, false),
        );
        let (target, verdict) = match skew {
            LONG_SKEW => ("0 in 600 s", long_verdict(&n, window)),
            1 => ("reported", Verdict::None),
            _ => ("", Verdict::None),
        };
        out.rows.push(count_row(
            "L",
            format!(
                "advskew {skew}: false takeovers in {} s (either node gaining the address while both run)",
                window.as_secs()
            ),
            &n,
            target,
            verdict,
        ));
    }
    if plan.anchor {
        let anchor = out.time(
            "anchor: keepalived VRRPv3 at 10 ms beside the background carpd",
            || -> Result<(Result<Vec<FailoverSample>>, Result<Takeovers>)> {
                let background = bed.start_pair([None, None], false)?;
                let f = bed.keepalived_failovers(plan.rounds);
                let n = bed.keepalived_steady(plan.window);
                bed.stop_pair(background);
                Ok((f, n))
            },
        );
        out.rows.extend(anchor_rows(anchor, plan));
    }
    Ok(out)
}

fn anchor_rows(
    anchor: Result<(Result<Vec<FailoverSample>>, Result<Takeovers>)>,
    plan: &Plan,
) -> Vec<Row> {
    let (f, n) = match anchor {
        Ok(x) => x,
        Err(e) => {
            let msg = e.to_string();
            (Err(Error::Measure(msg.clone())), Err(Error::Measure(msg)))
        }
    };
    let down = ms_of(keepalived_master_down());
    let of = |pick: fn(&FailoverSample) -> f64| {
        f.as_ref().ok().and_then(|v| ms_summary(v.iter().map(pick)))
    };
    let failed = |e: Option<&Error>| e.map(failed_note).unwrap_or_default();
    vec![
        Row {
            item: "L".into(),
            what: format!(
                "anchor: keepalived VRRPv3, 10 ms interval (priority 254/253, master-down {down:.1} ms): SIGKILL → backup has the address"
            ),
            unit: "ms",
            carpd: None,
            ucarp: of(|s| s.from_signal_ms),
            target: String::new(),
            verdict: Verdict::None,
            note: match failed(f.as_ref().err()) {
                s if s.is_empty() => format!(
                    "{} rounds asked; VRRP process SIGKILLed (parent stopped first); 1000 background carpd VHIDs running",
                    plan.rounds
                ),
                s => s,
            },
        },
        Row {
            item: "L".into(),
            what: format!(
                "anchor: keepalived excess over master-down (takeover − last advert − {down:.1} ms)"
            ),
            unit: "ms",
            carpd: None,
            ucarp: of(|s| s.excess_ms),
            target: String::new(),
            verdict: Verdict::None,
            note: failed(f.as_ref().err()),
        },
        Row {
            item: "L".into(),
            what: format!(
                "anchor: keepalived false takeovers in {} s",
                plan.window.as_secs()
            ),
            unit: "count",
            carpd: None,
            ucarp: n
                .as_ref()
                .ok()
                .and_then(|n| Summary::of(&[n.count() as f64])),
            target: String::new(),
            verdict: Verdict::None,
            note: match &n {
                Ok(n) => n.note(),
                Err(e) => failed_note(e),
            },
        },
    ]
}

/// `--hog`: false takeovers at [`HOG_SKEWS`] with every core busy, without
/// and with `realtime = true`.
pub fn run_hog(lan: &Lan, dir: &Scratch, carpd: &Path, plan: &Plan) -> Result<Outcome> {
    let bed = LimitBed::new(lan, dir, carpd)?;
    let mut out = Outcome::default();
    for &skew in &plan.hog_skews {
        let t = plan.timers(skew);
        let window = plan.window(skew);
        for realtime in [false, true] {
            let mode = if realtime {
                "realtime = true"
            } else {
                "normal priority"
            };
            let n = out.time(
                &format!(
                    "hog: advskew {skew}, {mode}: {} s steady window",
                    window.as_secs()
                ),
                || -> Result<Takeovers> {
                    let mut nodes =
                        bed.start_pair([Some(t[0].advskew), Some(t[1].advskew)], realtime)?;
                    let n = Hogs::start(lan, dir).and_then(|_hogs| {
                        let [n0, n1] = &mut nodes;
                        bed.count_takeovers(
                            window,
                            &mut [&mut n0.daemon, &mut n1.daemon],
                            [t[0].master_down(), t[1].master_down()],
                            true,
                        )
                    });
                    bed.stop_pair(nodes);
                    n
                },
            );
            out.rows.push(count_row(
                "L-hog",
                format!(
                    "advskew {skew}, one busy process per core, carpd {mode}: false takeovers in {} s",
                    window.as_secs()
                ),
                &n,
                "",
                Verdict::None,
            ));
        }
    }
    Ok(out)
}

/// The heading the runs' sections go under.
pub const HEADING: &str = "## Failover at the protocol's limit";

/// One run's dated section (a third-level heading), to append under
/// [`HEADING`].
pub fn section(
    plan: &Plan,
    hog: bool,
    out: &Outcome,
    load_before: &str,
    load_after: &str,
    took: Duration,
) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "\n### {}{}{}\n",
        crate::first_line(&["date", "-u", "+%Y-%m-%d %H:%M UTC"]),
        if hog { ", busy cores (`--hog`)" } else { "" },
        if plan.quick { ", quick run" } else { "" }
    );
    let _ = writeln!(
        s,
        "- command: `{}`",
        std::env::args().collect::<Vec<_>>().join(" ")
    );
    let _ = writeln!(s, "- commit: {}", crate::commit());
    let _ = writeln!(s, "- machine: {}", crate::machine());
    let _ = writeln!(
        s,
        "- load average (1/5/15 min) before: {load_before}, after: {load_after} (the machine is shared with other builds)"
    );
    let _ = writeln!(
        s,
        "- {} failover rounds per setting; steady windows {} s ({} s at advskew {LONG_SKEW}); backup advskew = master's + {}; the links' NAPI threads at {}",
        plan.rounds,
        plan.window.as_secs(),
        plan.long_window.as_secs(),
        plan.backup_extra,
        if plan.link_priority > 0 {
            format!("SCHED_FIFO {}", plan.link_priority)
        } else {
            "normal priority".to_string()
        }
    );
    let parts: Vec<String> = out
        .parts
        .iter()
        .map(|(name, d)| format!("{name}: {:.0} s", d.as_secs_f64()))
        .collect();
    let _ = writeln!(
        s,
        "- time per part: {}; the run took {:.0} s\n",
        parts.join("; "),
        took.as_secs_f64()
    );
    let _ = writeln!(s, "Each cell: median (min–max, n = rounds).\n");
    s.push_str(&crate::report::table_against(&out.rows, "keepalived"));
    s.push_str(if hog { HOG_METHOD } else { METHOD });
    s
}

const METHOD: &str = r"
How it is measured: the bed of items 1 to 6 (two hosts, four links, one
switch). Each node runs one carpd with the scale item's 1000 background
VHIDs at advbase 1 (node 0 advskew 0 masters them, node 1 advskew 100
backs them up) and, on eth3, the measured VHID 251 at advbase 0: advskew N
on node 0, N + the stated extra on node 1. Each failover round starts a
fresh pair (node 0 until every VHID is MASTER, then node 1 until every one
is BACKUP), SIGKILLs node 0's carpd at a random phase of its interval and
times the address appearing on node 1 (rtnetlink); the last advertisement
is node 0's last one for VHID 251 captured at its switch port. The backup's
master-down is 3 × its own interval, so each step of its advskew adds
11.7 ms: the failover targets (master-down 11.7 ms at advskew 1, under
50 ms at advskew 4) hold only with the backup at the master's advskew,
the default (`--backup-extra 0`); with equal timers a backup that took
over falsely hands back through the address tie-break. False takeovers:
the address added on either node during the steady window while both
carpd processes run. The anchor runs keepalived
2.2.7 (`vrrp_version 3`, `advert_int 0.01`, VRID 251 on eth3, priority 254
and 253) beside the same background carpd, SIGKILLs the VRRP process of
node 0 (its parent stopped first so that it cannot restart it) and counts
false takeovers the same way.
";

const HOG_METHOD: &str = r"
How it is measured: as the section above (fresh pair, 1000 background
VHIDs in the same carpd, measured VHID 251 at advbase 0), with one busy
shell loop per core at normal priority running for the whole steady window;
carpd runs once without and once with `realtime = true` (SCHED_RR and
mlockall) in its configuration. False takeovers: the address added on either
node during the window while both carpd processes run.
";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn measured_vhid_joins_the_last_interface() {
        let socket = Path::new("/run/x.sock");
        let c = LimitBed::config(1, Some(3), true, socket);
        // a top-level key must come before the first table
        assert!(c.starts_with("realtime = true\n"));
        let last_iface = c.rfind("[[interface]]").unwrap();
        let measured = c.find(&format!("id = {VHID}\n")).unwrap();
        assert!(c[last_iface..].starts_with(&format!("[[interface]]\nname = \"eth{LINK}\"")));
        assert!(measured > last_iface);
        assert!(c.ends_with(&format!(
            "advbase = 0\nadvskew = 3\naddresses = [\"{VIP}/24\"]\n"
        )));
        let background = LimitBed::config(1, None, false, socket);
        assert!(!background.contains(&format!("id = {VHID}\n")));
        assert!(!background.contains("realtime"));
        assert_eq!(background.matches("[[interface.vhid]]").count(), BACKGROUND);
    }

    #[test]
    fn keepalived_backup_waits_three_intervals_and_its_skew() {
        // 3 × 10 ms + (256 − 253)/256 × 10 ms
        assert_eq!(keepalived_master_down(), Duration::from_nanos(30_117_187));
        let conf = LimitBed::keepalived_conf(253);
        assert!(conf.contains("advert_int 0.01\n"));
        assert!(conf.contains("vrrp_version 3\n"));
        assert!(conf.contains(&format!("virtual_router_id {VHID}\n")));
    }

    #[test]
    fn backup_advskew_is_the_masters_plus_the_extra() {
        let t = Plan::new(true, None, 2).timers(4);
        assert_eq!((t[0].advbase, t[0].advskew), (0, 4));
        assert_eq!((t[1].advbase, t[1].advskew), (0, 6));
        let mut p = Plan::new(false, None, 0);
        assert_eq!(p.window(LONG_SKEW), Duration::from_secs(600));
        assert_eq!(p.window(1), Duration::from_secs(180));
        assert!(p.anchor);
        p.only(&[4]).unwrap();
        assert_eq!(
            (p.skews.as_slice(), p.hog_skews.as_slice(), p.anchor),
            (&[4][..], &[4][..], false)
        );
        assert!(p.only(&[3]).is_err());
    }

    #[test]
    fn failed_rounds_are_left_out_and_only_all_failing_fails() {
        let sample = FailoverSample::new(0, 0, 1_000_000, Duration::ZERO);
        let mut i = 0;
        let v = each_round(3, || {
            i += 1;
            if i == 2 {
                Err(Error::Measure("lost".into()))
            } else {
                Ok(sample)
            }
        })
        .unwrap();
        assert_eq!(v.len(), 2);
        assert!(each_round(2, || Err(Error::Measure("lost".into()))).is_err());
    }

    #[test]
    fn long_errors_are_cut_short() {
        let long = Error::Measure("x".repeat(500));
        let note = failed_note(&long);
        assert!(note.ends_with('…') && note.chars().count() < 200);
        assert_eq!(
            failed_note(&Error::Measure("lost".into())),
            "failed: measurement: lost"
        );
    }

    #[test]
    fn takeovers_are_told_apart_by_when_the_last_advertisement_left_and_arrived() {
        let mut t = Takeovers::default();
        t.record(Some(50.0), Some(49.0), 46.9);
        t.record(Some(46.9), None, 46.9);
        t.record(Some(40.0), Some(47.0), 46.9);
        t.record(Some(20.0), Some(19.5), 46.9);
        t.record(None, None, 46.9);
        assert_eq!(
            (
                t.sent_late,
                t.delivered_late,
                t.taker_late,
                t.unknown,
                t.count()
            ),
            (2, 1, 1, 1, 5)
        );
        assert_eq!(
            t.note(),
            "the other node's last advertisement: sent master-down or more before 2, sent later but arrived master-down or more before 1, arrived within master-down 1, none captured 1; sent 43.5 ms (20.0–50.0) before"
        );
        assert_eq!(Takeovers::default().note(), "");
    }

    #[test]
    fn the_measured_vhids_transitions_to_master_are_read_from_the_log() {
        let log = format!(
            "{}\n{}\nnot json\n{}\n",
            r#"{"timestamp":"1970-01-01T00:00:01.5Z","fields":{"to":"MASTER"},"span":{"vhid":251}}"#,
            r#"{"timestamp":"1970-01-01T00:00:02Z","fields":{"to":"MASTER"},"span":{"vhid":7}}"#,
            r#"{"timestamp":"1970-01-01T00:00:03Z","fields":{"to":"BACKUP"},"span":{"vhid":251}}"#,
        );
        assert_eq!(masters_logged(&log), vec![1_500_000_000]);
    }

    #[test]
    fn the_ten_minute_target_needs_ten_minutes() {
        let ten = Duration::from_secs(600);
        let none = || Ok(Takeovers::default());
        assert_eq!(long_verdict(&none(), ten), Verdict::Met);
        assert_eq!(
            long_verdict(&none(), Duration::from_secs(30)),
            Verdict::None
        );
        let mut one = Takeovers::default();
        one.record(None, None, 46.9);
        assert_eq!(
            long_verdict(&Ok(one), Duration::from_secs(30)),
            Verdict::Missed
        );
        assert_eq!(
            long_verdict(&Err(Error::Measure("x".into())), ten),
            Verdict::Missed
        );
    }
}
