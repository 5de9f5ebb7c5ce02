//! Two nodes sharing one address on `eth0`: crash and planned failover,
//! sub-second timers, and the two-master window when a preferred node
//! joins. The same scenarios run with carpd and with ucarp on the same
//! namespaces.

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::thread::sleep;
use std::time::Duration;

use nix::sys::signal::Signal;

use crate::error::{Error, Result};
use carpd_testbed::{Lan, wait_until};

use crate::cleanup::Scratch;
use crate::proc::Daemon;
use crate::watch::{AddrWatch, Capture, Ns, ms, now_ns};

pub const VHID: u8 = 7;
pub const VIP: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 100);
const PASSWORD: &str = "secret";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Impl {
    Carpd,
    Ucarp,
    /// carpd started with ucarp's command line and ucarp's up and down
    /// scripts, so the address is added by forking `sh` and `ip addr add`
    /// as with ucarp: the control run for the failover rows.
    CarpdUcarpCli,
}

impl Impl {
    pub fn name(self) -> &'static str {
        match self {
            Impl::Carpd => "carpd",
            Impl::Ucarp => "ucarp",
            Impl::CarpdUcarpCli => "carpd-ucarp-cli",
        }
    }
}

/// One node's timers.
#[derive(Debug, Clone, Copy)]
pub struct Timers {
    pub advbase: u8,
    pub advskew: u8,
    pub preempt: bool,
}

impl Timers {
    pub fn interval(self) -> Duration {
        carp_proto::Timing::new(self.advbase, self.advskew).interval()
    }

    pub fn master_down(self) -> Duration {
        carp_proto::Timing::new(self.advbase, self.advskew).master_down(3)
    }
}

/// The namespaces, observers and binaries the scenarios share.
#[derive(Debug)]
pub struct Bed<'a> {
    pub lan: &'a Lan,
    pub dir: &'a Scratch,
    pub carpd: PathBuf,
    pub ucarp: PathBuf,
    pub watch: AddrWatch,
    pub capture: Capture,
    up: PathBuf,
    down: PathBuf,
    seq: std::cell::Cell<u32>,
}

impl<'a> Bed<'a> {
    pub fn new(lan: &'a Lan, dir: &'a Scratch, carpd: &Path, ucarp: &Path) -> Result<Bed<'a>> {
        let watch = AddrWatch::start(&lan.hosts.iter().collect::<Vec<_>>())?;
        let ports: Vec<String> = (0..lan.hosts.len()).map(|i| Lan::port_name(i, 0)).collect();
        let capture = Capture::start(&lan.switch, &ports, crate::watch::Frames::Arriving)?;
        // ucarp's scripts own the address (argv: interface address)
        let up = dir.script("vip-up.sh", "exec ip addr add \"$2/24\" dev \"$1\"")?;
        let down = dir.script(
            "vip-down.sh",
            "ip addr del \"$2/24\" dev \"$1\" 2>/dev/null\nexit 0",
        )?;
        Ok(Bed {
            lan,
            dir,
            carpd: carpd.to_path_buf(),
            ucarp: ucarp.to_path_buf(),
            watch,
            capture,
            up,
            down,
            seq: std::cell::Cell::new(0),
        })
    }

    fn label(&self, imp: Impl, node: usize) -> String {
        let n = self.seq.get();
        self.seq.set(n + 1);
        format!("{}-{node}-{n}", imp.name())
    }

    /// Starts `imp` on host `node` serving [`VIP`] with `t`.
    pub fn start(&self, imp: Impl, node: usize, t: Timers) -> Result<Daemon> {
        let label = self.label(imp, node);
        let ns = &self.lan.hosts[node];
        match imp {
            Impl::Carpd => {
                let conf = format!(
                    "advbase = {}\nadvskew = {}\npreempt = {}\npassword = {PASSWORD:?}\n\n\
                     [[interface]]\nname = \"eth0\"\n\n[[interface.vhid]]\nid = {VHID}\n\
                     addresses = [\"{VIP}/24\"]\n",
                    t.advbase, t.advskew, t.preempt
                );
                let path = self.dir.write(&format!("{label}.toml"), &conf)?;
                let sock = self.dir.path().join(format!("{label}.sock"));
                Daemon::spawn(
                    ns,
                    &label,
                    self.dir.path(),
                    &self.carpd,
                    &[
                        "--config",
                        &path.to_string_lossy(),
                        "--control-socket",
                        &sock.to_string_lossy(),
                    ],
                )
            }
            Impl::Ucarp | Impl::CarpdUcarpCli => {
                let src = Lan::host_addr(node, 0);
                let (b, k) = (t.advbase.to_string(), t.advskew.to_string());
                let vhid = VHID.to_string();
                let vip = VIP.to_string();
                let (up, down) = (self.up.to_string_lossy(), self.down.to_string_lossy());
                let mut args = vec![
                    "--interface=eth0",
                    "--srcip",
                    &src,
                    "--vhid",
                    &vhid,
                    "--pass",
                    PASSWORD,
                    "--addr",
                    &vip,
                    "--advbase",
                    &b,
                    "--advskew",
                    &k,
                    "--upscript",
                    &up,
                    "--downscript",
                    &down,
                    // run the down script when a master exits, as a
                    // planned failover needs
                    "--shutdown",
                    "--facility=none",
                ];
                if t.preempt {
                    args.push("--preempt");
                }
                let exe = if imp == Impl::Ucarp {
                    &self.ucarp
                } else {
                    &self.carpd
                };
                Daemon::spawn(ns, &label, self.dir.path(), exe, &args)
            }
        }
    }

    fn has_vip(&self, node: usize) -> bool {
        self.lan.hosts[node]
            .try_addrs()
            .is_ok_and(|a| a.contains(&VIP.to_string()))
    }

    fn clear_vip(&self, node: usize) {
        let _ = self.lan.hosts[node].try_ip(&["addr", "del", &format!("{VIP}/24"), "dev", "eth0"]);
    }

    /// Waits until `node` gains the address at or after `since`.
    fn wait_added(&self, node: usize, since: Ns, timeout: Duration) -> Result<Ns> {
        self.watch
            .wait_added(node, IpAddr::V4(VIP), since, timeout)
            .ok_or_else(|| {
                Error::Measure(format!("host {node} did not take {VIP} within {timeout:?}"))
            })
    }

    /// Starts node 0 and lets it become master, then node 1 as backup.
    fn start_pair(&self, imp: Impl, t: [Timers; 2]) -> Result<[Daemon; 2]> {
        self.clear_vip(0);
        self.clear_vip(1);
        let since = now_ns();
        let d0 = self.start(imp, 0, t[0])?;
        self.wait_added(0, since, t[0].master_down() + Duration::from_secs(5))?;
        let d1 = self.start(imp, 1, t[1])?;
        sleep(settle(imp, t[1]));
        if self.has_vip(1) {
            return Err(Error::Measure(format!(
                "{}: both nodes hold {VIP} after start",
                imp.name()
            )));
        }
        Ok([d0, d1])
    }
}

/// How long a new backup needs to have surely heard the master.
pub fn settle(imp: Impl, t: Timers) -> Duration {
    let base = t.interval() * 3;
    match imp {
        Impl::Carpd | Impl::CarpdUcarpCli => base.max(Duration::from_millis(300)),
        // up to 1 s of libpcap buffering on top
        Impl::Ucarp => base + Duration::from_millis(1200),
    }
}

/// A uniformly random point within one interval, to kill at any phase.
pub fn random_phase(interval: Duration) -> Duration {
    interval.mul_f64(rand::random::<f64>())
}

/// One failover.
#[derive(Debug, Clone, Copy)]
pub struct FailoverSample {
    /// Signal sent -> backup has the address.
    pub from_signal_ms: f64,
    /// Master's last advertisement on the wire -> backup has the address.
    pub from_last_advert_ms: f64,
    /// `from_last_advert_ms` less the backup's master-down time.
    pub excess_ms: f64,
}

impl FailoverSample {
    /// From the signal, the master's last advertisement on the wire and
    /// the takeover, with the backup's master-down time.
    pub fn new(signal: Ns, last_advert: Ns, takeover: Ns, master_down: Duration) -> Self {
        let from_last = ms(last_advert, takeover);
        FailoverSample {
            from_signal_ms: ms(signal, takeover),
            from_last_advert_ms: from_last,
            excess_ms: from_last - master_down.as_secs_f64() * 1e3,
        }
    }
}

/// Kills (SIGKILL) or stops (SIGTERM) the master `rounds` times; the
/// stopped node comes back as backup each time, so roles alternate. Both
/// nodes use `t`.
pub fn failover(
    bed: &Bed,
    imp: Impl,
    t: Timers,
    sig: Signal,
    rounds: usize,
) -> Result<Vec<FailoverSample>> {
    let mut nodes = bed.start_pair(imp, [t, t])?;
    let mut master = 0;
    let mut out = Vec::new();
    for round in 0..rounds {
        let backup = 1 - master;
        sleep(random_phase(t.interval()));
        let sent = now_ns();
        nodes[master].signal(sig)?;
        let takeover =
            bed.wait_added(backup, sent, t.master_down() * 2 + Duration::from_secs(5))?;
        let src = match Lan::host_addr(master, 0).parse::<Ipv4Addr>() {
            Ok(a) => a,
            Err(e) => return Err(Error::Setup(e.to_string())),
        };
        let last = bed
            .capture
            .last_advert(src, VHID, takeover)
            .ok_or_else(|| Error::Measure("no advertisement of the master captured".into()))?;
        out.push(FailoverSample::new(sent, last, takeover, t.master_down()));
        if !nodes[master].wait_exit(Duration::from_secs(10)) {
            return Err(Error::Measure(format!(
                "{} did not exit after {sig}",
                imp.name()
            )));
        }
        // a crashed node leaves the address behind (both implementations)
        bed.clear_vip(master);
        if round + 1 < rounds {
            nodes[master] = bed.start(imp, master, t)?;
            sleep(settle(imp, t));
            if bed.has_vip(master) {
                return Err(Error::Measure(format!(
                    "{}: restarted node took the address",
                    imp.name()
                )));
            }
            master = backup;
        }
    }
    Ok(out)
}

/// Counts takeovers by the backup while the master runs for `window`.
pub fn false_takeovers(bed: &Bed, imp: Impl, t: Timers, window: Duration) -> Result<usize> {
    let _nodes = bed.start_pair(imp, [t, t])?;
    let since = now_ns();
    sleep(window);
    let adds = bed.watch.additions_since(IpAddr::V4(VIP), since);
    Ok(adds.get(&1).copied().unwrap_or(0))
}

/// One preemption by a joining preferred node.
#[derive(Debug, Clone, Copy)]
pub struct PreemptSample {
    /// Start of the preferred node -> it has the address.
    pub takeover_ms: f64,
    /// Both nodes held the address (0 if the old master let go first).
    pub overlap_ms: f64,
}

/// Node 1 (advskew 100) is master; node 0 (advskew 0, preempt) joins and
/// takes over, then leaves with SIGTERM; `rounds` times.
pub fn preempt(bed: &Bed, imp: Impl, rounds: usize) -> Result<Vec<PreemptSample>> {
    let low = Timers {
        advbase: 1,
        advskew: 100,
        preempt: false,
    };
    let high = Timers {
        advbase: 1,
        advskew: 0,
        preempt: true,
    };
    bed.clear_vip(0);
    bed.clear_vip(1);
    let since = now_ns();
    let _old = bed.start(imp, 1, low)?;
    bed.wait_added(1, since, low.master_down() + Duration::from_secs(5))?;
    let mut out = Vec::new();
    for _ in 0..rounds {
        sleep(settle(imp, low) + random_phase(low.interval()));
        let joined = now_ns();
        let mut d = bed.start(imp, 0, high)?;
        let added = bed.wait_added(0, joined, Duration::from_secs(10))?;
        let mut removed = None;
        wait_until(Duration::from_secs(10), Duration::from_millis(2), || {
            removed = bed.watch.first_removed(1, IpAddr::V4(VIP), joined);
            removed.is_some()
        });
        let removed =
            removed.ok_or_else(|| Error::Measure("old master kept the address".into()))?;
        out.push(PreemptSample {
            takeover_ms: ms(joined, added),
            overlap_ms: ms(added, removed).max(0.0),
        });
        // leave again, and let node 1 take back over
        sleep(Duration::from_millis(500));
        let left = now_ns();
        d.signal(Signal::SIGTERM)?;
        bed.wait_added(1, left, low.master_down() * 2 + Duration::from_secs(5))?;
        d.wait_exit(Duration::from_secs(10));
        bed.clear_vip(0);
    }
    Ok(out)
}
