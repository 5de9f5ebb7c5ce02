//! Many VHIDs on two nodes at advbase 1: node 0 (advskew 0) masters all of
//! them, node 1 (advskew 100) backs them up. carpd serves them all from one
//! process per node; ucarp needs one process per VHID. The VHIDs lie on a
//! [`Layout`]: so many links, IPv4 or IPv6 addresses.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::thread::sleep;
use std::time::Duration;

use nix::sys::signal::Signal;

use crate::error::{Error, Result};
use carpd_testbed::{Lan, Netns, wait_until};

use crate::cleanup::Scratch;
use crate::proc::{self, Daemon, control, cpu_ns, pss_kib, state_counts};
use crate::watch::{Ns, ms, now_ns};

/// Links of the `all` item's scale test (1000 VHIDs: 250 per link).
pub const LINKS: usize = 4;
/// VHIDs per link: ids 1 to 250 of the 255 one interface can have.
pub const PER_LINK: usize = 250;
const ADVSKEW: [u8; 2] = [0, 100];

/// The address family of the virtual addresses (and so of the
/// advertisements: IPv6-only VHIDs advertise to ff02::12 from the link's
/// link-local address).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    V4,
    V6,
}

/// How the VHIDs of a node lie on its links: VHID `j` is on link
/// `j % links`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    pub links: usize,
    pub family: Family,
    /// The LAN link the first of them is on (links `first_link` to
    /// `first_link + links - 1`).
    pub first_link: usize,
}

impl Layout {
    /// As few links as `n` VHIDs need at [`PER_LINK`] each, from link 0.
    pub fn for_vhids(n: usize, family: Family) -> Layout {
        Layout {
            links: n.div_ceil(PER_LINK).max(1),
            family,
            first_link: 0,
        }
    }

    /// The same VHIDs on the links that follow `before`'s.
    pub fn after(self, before: Layout) -> Layout {
        Layout {
            first_link: before.first_link + before.links,
            ..self
        }
    }

    /// VHID `j` of a node: LAN link, id and host address (without prefix
    /// length).
    fn vhid(self, j: usize) -> (usize, u8, String) {
        let k = j % self.links;
        let id = u8::try_from(j / self.links + 1).unwrap_or(u8::MAX);
        let addr = match self.family {
            Family::V4 => format!("10.{}.0.{id}", 100 + k),
            Family::V6 => format!("fd00:{}::{id}", 100 + k),
        };
        (self.first_link + k, id, addr)
    }

    fn prefix_len(self) -> u8 {
        match self.family {
            Family::V4 => 32,
            Family::V6 => 128,
        }
    }
}

/// Whether `addr` (as `ip addr` lists it) is one of the virtual addresses
/// of [`Layout::vhid`], IPv4: 10.100.0.0 to 10.199.255.255 (the LAN's own
/// are in 10.99/16).
fn is_virtual_v4(addr: &str) -> bool {
    addr.strip_prefix("10.1")
        .and_then(|rest| rest.get(..2))
        .is_some_and(|d| d.bytes().all(|b| b.is_ascii_digit()))
}

/// Per node, over the measurement windows.
#[derive(Debug, Clone, Default)]
pub struct Load {
    /// CPU seconds per minute, one value per window.
    pub cpu_s_per_min: [Vec<f64>; 2],
    /// PSS in MiB at the end of each window.
    pub pss_mib: [Vec<f64>; 2],
    /// Anonymous and file-backed parts of the PSS at the end, MiB.
    pub pss_anon_file_mib: [(f64, f64); 2],
    /// Share of the CPU time spent in the kernel (`/proc/<pid>/stat`).
    pub system_share: [f64; 2],
}

/// Sleeps `window` and returns the CPU each of `pids` used meanwhile, in
/// CPU seconds per minute.
fn cpu_over_window(pids: &[i32], window: Duration) -> Vec<f64> {
    let before: Vec<u64> = pids.iter().map(|p| cpu_ns(*p)).collect();
    sleep(window);
    pids.iter()
        .zip(before)
        .map(|(p, b)| cpu_ns(*p).saturating_sub(b) as f64 / 1e9 * 60.0 / window.as_secs_f64())
        .collect()
}

/// Measures CPU and PSS of the processes of each node over `windows`
/// windows of `window` each.
fn measure(pids: &[Vec<i32>; 2], windows: usize, window: Duration) -> Load {
    let mut load = Load::default();
    let ticks = |n: usize| {
        pids[n].iter().fold((0u64, 0u64), |(u, s), p| {
            let (pu, ps) = proc::user_system_ticks(*p);
            (u + pu, s + ps)
        })
    };
    let start_ticks = [ticks(0), ticks(1)];
    for _ in 0..windows {
        let used = cpu_over_window(&pids.concat(), window);
        let (first, second) = used.split_at(pids[0].len());
        for (n, per_pid) in [first, second].into_iter().enumerate() {
            load.cpu_s_per_min[n].push(per_pid.iter().sum());
            let pss: u64 = pids[n].iter().map(|p| pss_kib(*p)).sum();
            load.pss_mib[n].push(pss as f64 / 1024.0);
        }
    }
    for (n, pids) in pids.iter().enumerate() {
        let (anon, file) = pids
            .iter()
            .map(|p| proc::pss_anon_file_kib(*p))
            .fold((0u64, 0u64), |(a, f), (pa, pf)| (a + pa, f + pf));
        load.pss_anon_file_mib[n] = (anon as f64 / 1024.0, file as f64 / 1024.0);
    }
    for (n, (u0, s0)) in start_ticks.iter().enumerate() {
        let (u1, s1) = ticks(n);
        let (u, s) = (u1.saturating_sub(*u0), s1.saturating_sub(*s0));
        load.system_share[n] = if u + s > 0 {
            s as f64 / (u + s) as f64
        } else {
            f64::NAN
        };
    }
    load
}

#[derive(Debug, Clone, Default)]
pub struct CarpdScale {
    pub load: Load,
    /// Spawn -> every VHID in BACKUP, for the first node (alone) and for
    /// restarts of the second (its peer master).
    pub start_alone_ms: f64,
    pub start_ms: Vec<f64>,
    /// Control-socket reload round trip, one VHID changed, per node.
    pub reload_ms: [Vec<f64>; 2],
    /// carpd's own histograms of advertisements sent after and before
    /// their deadlines, master node, over the windows.
    pub late: Histogram,
    pub early: Histogram,
    /// Arrival of each advertisement of the master node at the switch less
    /// its grid instant, in ms: negative when early.
    pub wire_offset_ms: Vec<f64>,
    /// How long the master's `/metrics` took to answer, before and after
    /// the windows (the first one's stall counts in `late`).
    pub scrape_ms: [f64; 2],
    /// Advertisement intervals on the wire less the nominal 1 s, master node.
    pub wire_excess_ms: Vec<f64>,
    /// [`send_floor`] for `n` packets per second, per window.
    pub send_floor_pct: Vec<f64>,
}

/// A Prometheus histogram: cumulative counts by upper bound (seconds).
#[derive(Debug, Clone, Default)]
pub struct Histogram {
    pub buckets: Vec<(f64, u64)>,
    pub count: u64,
    pub sum: f64,
}

impl Histogram {
    /// Parses `name_bucket{le="x"} n`, `name_count n`, `name_sum x`.
    fn parse(text: &str, name: &str) -> Histogram {
        let mut h = Histogram::default();
        for line in text.lines() {
            let Some(rest) = line.strip_prefix(name) else {
                continue;
            };
            let mut it = rest.rsplitn(2, ' ');
            let (Some(value), Some(key)) = (it.next(), it.next()) else {
                continue;
            };
            if let Some(le) = key
                .strip_prefix("_bucket{le=\"")
                .and_then(|k| k.strip_suffix("\"}"))
            {
                let le = if le == "+Inf" {
                    f64::INFINITY
                } else {
                    le.parse().unwrap_or(f64::NAN)
                };
                h.buckets.push((le, value.parse().unwrap_or(0)));
            } else if key == "_count" {
                h.count = value.parse().unwrap_or(0);
            } else if key == "_sum" {
                h.sum = value.parse().unwrap_or(0.0);
            }
        }
        h
    }

    /// What was recorded between `earlier` and `self`.
    fn since(&self, earlier: &Histogram) -> Histogram {
        Histogram {
            buckets: self
                .buckets
                .iter()
                .map(|(le, n)| {
                    let before = earlier
                        .buckets
                        .iter()
                        .find(|(l, _)| l == le)
                        .map_or(0, |(_, b)| *b);
                    (*le, n.saturating_sub(before))
                })
                .collect(),
            count: self.count.saturating_sub(earlier.count),
            sum: self.sum - earlier.sum,
        }
    }

    /// `n adverts, p50 ≤ x ms, p99 ≤ y ms, max ≤ z ms, mean m ms`, from
    /// the bucket bounds.
    pub fn describe_ms(&self) -> String {
        if self.count == 0 {
            return "no advertisement in this histogram".into();
        }
        let bound = |q: f64| {
            self.quantile_bound(q)
                .map_or("?".into(), |b| format!("{}", b * 1e3))
        };
        let mean = self.sum / self.count as f64 * 1e3;
        format!(
            "{} adverts, p50 ≤ {} ms, p99 ≤ {} ms, max ≤ {} ms, mean {mean:.3} ms",
            self.count,
            bound(0.5),
            bound(0.99),
            bound(1.0)
        )
    }

    /// The smallest bucket bound (s) holding at least `q` of the samples.
    pub fn quantile_bound(&self, q: f64) -> Option<f64> {
        let need = (self.count as f64 * q).ceil() as u64;
        self.buckets
            .iter()
            .find(|(_, n)| *n >= need.max(1))
            .map(|(le, _)| *le)
    }
}

/// The `q` quantile's upper bound (ms) of the signed lateness of every
/// advertisement, from carpd's two histograms: one sent at or before its
/// deadline (`early`) is late by nothing, so the quantile is 0 while the
/// late ones are fewer than `1 - q` of all; `None` without any.
pub fn signed_quantile_ms(late: &Histogram, early: &Histogram, q: f64) -> Option<f64> {
    let total = late.count + early.count;
    if total == 0 {
        return None;
    }
    let need = (total as f64 * q).ceil() as u64;
    if need <= early.count {
        return Some(0.0);
    }
    let rank = need - early.count;
    late.buckets
        .iter()
        .find(|(_, n)| *n >= rank)
        .map(|(le, _)| le * 1e3)
}

const METRICS_PORT: u16 = 9750;

/// carpd's own view of its advertisement timing, from its metrics.
struct Timing {
    late: Histogram,
    early: Histogram,
    /// Unix time (s) of the advertisement grid's origin.
    grid_origin: f64,
}

impl Timing {
    fn parse(text: &str) -> Timing {
        let grid_origin = text
            .lines()
            .find_map(|l| l.strip_prefix("carpd_advert_grid_origin_seconds "))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(f64::NAN);
        Timing {
            late: Histogram::parse(text, "carpd_timer_lateness_seconds"),
            early: Histogram::parse(text, "carpd_timer_earliness_seconds"),
            grid_origin,
        }
    }
}

fn scrape_timing(ns: &Netns) -> Result<Timing> {
    let text = carpd_testbed::try_in_netns(ns, || {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", METRICS_PORT))?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        s.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")?;
        let mut out = String::new();
        s.read_to_string(&mut out)?;
        Ok(out)
    })?;
    Ok(Timing::parse(&text))
}

/// CPU (% of one core) a bare sender spends putting `n` CARP-sized
/// multicast packets per second on node 0's links for `window`, as one
/// burst per second: the kernel's cost of sending them (up to the veth's
/// NAPI queue, see `lan::napi_threaded`), which any implementation pays.
fn send_floor(lan: &Lan, n: usize, links: usize, window: Duration) -> Result<f64> {
    carpd_testbed::try_in_netns(&lan.hosts[0], move || {
        use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
        let mut socks = Vec::new();
        for k in 0..links {
            // SAFETY: plain syscalls on a descriptor owned right away.
            let fd =
                unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 112) };
            if fd < 0 {
                return Err(std::io::Error::last_os_error());
            }
            // SAFETY: fresh descriptor.
            let fd = unsafe { OwnedFd::from_raw_fd(fd) };
            let name = std::ffi::CString::new(format!("eth{k}")).map_err(std::io::Error::other)?;
            // SAFETY: valid NUL-terminated name.
            let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
            let mreq = libc::ip_mreqn {
                imr_multiaddr: libc::in_addr { s_addr: 0 },
                imr_address: libc::in_addr { s_addr: 0 },
                imr_ifindex: i32::try_from(ifindex).unwrap_or(0),
            };
            let opts: [(i32, &[u8]); 3] = [
                (libc::IP_MULTICAST_TTL, &255i32.to_ne_bytes()),
                (libc::IP_MULTICAST_LOOP, &0i32.to_ne_bytes()),
                (libc::IP_MULTICAST_IF, {
                    // SAFETY: ip_mreqn is plain old data.
                    unsafe {
                        std::slice::from_raw_parts(
                            std::ptr::from_ref(&mreq).cast::<u8>(),
                            std::mem::size_of::<libc::ip_mreqn>(),
                        )
                    }
                }),
            ];
            for (opt, val) in opts {
                // SAFETY: `val` is a live buffer of its length.
                let r = unsafe {
                    libc::setsockopt(
                        fd.as_raw_fd(),
                        libc::IPPROTO_IP,
                        opt,
                        val.as_ptr().cast(),
                        libc::socklen_t::try_from(val.len()).unwrap_or(0),
                    )
                };
                if r != 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            socks.push(fd);
        }
        // SAFETY: all-zero is a valid sockaddr_in.
        let mut dst: libc::sockaddr_in = unsafe { std::mem::zeroed() };
        dst.sin_family = u16::try_from(libc::AF_INET).unwrap_or(0);
        dst.sin_addr.s_addr = u32::from(std::net::Ipv4Addr::new(224, 0, 0, 18)).to_be();
        // vhid 0: every receiver drops it as unknown, after the full path
        let payload = [
            0x21u8, 0, 0, 7, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
            0, 0, 0, 0, 0, 0, 0, 0, 0,
        ];
        let cpu = || {
            // SAFETY: writes one timespec.
            let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
            unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
            ts.tv_sec * 1_000_000_000 + ts.tv_nsec
        };
        let start_cpu = cpu();
        let start = std::time::Instant::now();
        let mut second = 0u32;
        while start.elapsed() < window {
            for j in 0..n {
                let fd = &socks[j % links];
                // SAFETY: payload and address are live for the call.
                unsafe {
                    libc::sendto(
                        fd.as_raw_fd(),
                        payload.as_ptr().cast(),
                        payload.len(),
                        0,
                        std::ptr::from_ref(&dst).cast(),
                        libc::socklen_t::try_from(std::mem::size_of::<libc::sockaddr_in>())
                            .unwrap_or(0),
                    );
                }
            }
            second += 1;
            let next = Duration::from_secs(u64::from(second));
            if let Some(wait) = next.checked_sub(start.elapsed()) {
                sleep(wait);
            }
        }
        let used = (cpu() - start_cpu) as f64 / 1e9;
        Ok(used / start.elapsed().as_secs_f64() * 100.0)
    })
    .map_err(Error::from)
}

/// Each advertisement less its grid instant, in ms (negative: early), for
/// advertisements every `interval` on the grid of `origin` (Unix time, s),
/// as carpd lays it out: VHID `v` at `origin + interval * (v % slots) /
/// slots + k * interval`. Each is set against its nearest instant.
fn grid_offsets(
    packets: &[crate::watch::WirePacket],
    src: std::net::Ipv4Addr,
    origin: f64,
    interval: Duration,
) -> Vec<f64> {
    let period = i128::try_from(interval.as_nanos()).unwrap_or(i128::MAX);
    if period == 0 || !origin.is_finite() {
        return Vec::new();
    }
    let origin_ns = (origin * 1e9) as i128;
    let slots = i128::from(carp_engine::ADVERT_GRID_SLOTS.max(1));
    packets
        .iter()
        .filter(|p| p.src == src)
        .map(|p| {
            let base = origin_ns + period * (i128::from(p.vhid) % slots) / slots;
            let since = i128::from(p.at) - base;
            // the nearest grid instant: remainder in [-period/2, period/2)
            let off = (since + period / 2).rem_euclid(period) - period / 2;
            off as f64 / 1e6
        })
        .collect()
}

/// Each advertisement interval on the wire less `nominal`, in ms, per
/// sender and VHID.
fn interval_excess(packets: &[crate::watch::WirePacket], nominal: Duration) -> Vec<f64> {
    let mut by: std::collections::HashMap<(std::net::Ipv4Addr, u8), Vec<Ns>> =
        std::collections::HashMap::new();
    for p in packets {
        by.entry((p.src, p.vhid)).or_default().push(p.at);
    }
    let nominal = nominal.as_secs_f64() * 1e3;
    let mut out = Vec::new();
    for times in by.values_mut() {
        times.sort_unstable();
        out.extend(times.windows(2).map(|w| ms(w[0], w[1]) - nominal));
    }
    out
}

/// Node `node`'s configuration for `n` VHIDs laid out as `layout` (one
/// `[[interface]]` per link, the last link last), `changed` the advskew of
/// the last VHID if set.
pub fn carpd_config(
    layout: Layout,
    n: usize,
    node: usize,
    changed: Option<u8>,
    socket: &Path,
) -> String {
    let mut s = format!(
        "advbase = 1\nadvskew = {}\npreempt = false\npassword = \"secret\"\ncontrol_socket = {:?}\n",
        ADVSKEW[node],
        socket.to_string_lossy()
    );
    // one listener per host: the pair on the LAN's first links has it
    if layout.first_link == 0 {
        let _ = write!(s, "\n[metrics]\nlisten = \"127.0.0.1:{METRICS_PORT}\"\n");
    }
    for k in 0..layout.links {
        let _ = write!(
            s,
            "\n[[interface]]\nname = \"eth{}\"\n",
            layout.first_link + k
        );
        for j in (0..n).filter(|j| j % layout.links == k) {
            let (_, id, addr) = layout.vhid(j);
            let _ = write!(
                s,
                "\n[[interface.vhid]]\nid = {id}\naddresses = [\"{addr}/{}\"]\n",
                layout.prefix_len()
            );
            if j + 1 == n
                && let Some(skew) = changed
            {
                let _ = writeln!(s, "advskew = {skew}");
            }
        }
    }
    s
}

/// Timestamp (ns since the epoch) of an RFC 3339 UTC time as tracing
/// writes it, e.g. `2026-11-25T20:51:44.123456Z`.
pub fn parse_rfc3339(t: &str) -> Option<Ns> {
    let (date, time) = t.strip_suffix('Z')?.split_once('T')?;
    let mut d = date.split('-').map(|x| x.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let (hms, frac) = time.split_once('.').unwrap_or((time, "0"));
    let mut h = hms.split(':').map(|x| x.parse::<i64>().ok());
    let (hh, mm, ss) = (h.next()??, h.next()??, h.next()??);
    let nanos: i64 = format!("{frac:0<9}").get(..9)?.parse().ok()?;
    // days from civil (Howard Hinnant)
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(((days * 86_400 + hh * 3600 + mm * 60 + ss) * 1_000_000_000) + nanos)
}

/// When the `n`-th transition to BACKUP was logged, if it was.
fn nth_backup(log: &str, n: usize) -> Option<Ns> {
    let mut seen = 0;
    for line in log.lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if v["fields"]["to"].as_str() == Some("BACKUP") {
            seen += 1;
            if seen == n {
                return parse_rfc3339(v["timestamp"].as_str()?);
            }
        }
    }
    None
}

struct CarpdNode<'a> {
    dir: &'a Scratch,
    lan: &'a Lan,
    carpd: &'a Path,
    layout: Layout,
    n: usize,
    node: usize,
    socket: PathBuf,
    config: PathBuf,
    seq: usize,
}

impl<'a> CarpdNode<'a> {
    /// Node `node` of a pair whose files in `dir` are named after `name`.
    fn new(
        dir: &'a Scratch,
        lan: &'a Lan,
        carpd: &'a Path,
        layout: Layout,
        n: usize,
        node: usize,
        name: &str,
    ) -> CarpdNode<'a> {
        CarpdNode {
            dir,
            lan,
            carpd,
            layout,
            n,
            node,
            socket: dir.path().join(format!("{name}{node}.sock")),
            config: dir.path().join(format!("{name}{node}.toml")),
            seq: 0,
        }
    }

    fn start(&mut self) -> Result<(Daemon, f64)> {
        self.seq += 1;
        let label = format!("scale-carpd-{}-{}", self.node, self.seq);
        let d = Daemon::spawn(
            &self.lan.hosts[self.node],
            &label,
            self.dir.path(),
            self.carpd,
            &[
                "--config",
                &self.config.to_string_lossy(),
                "--log-format",
                "json",
            ],
        )?;
        let mut at = None;
        wait_until(Duration::from_secs(30), Duration::from_millis(20), || {
            at = nth_backup(&d.log(), self.n);
            at.is_some()
        });
        let at = at.ok_or_else(|| {
            let log = d.log();
            let tail: Vec<&str> = log.lines().rev().take(5).collect();
            Error::Measure(format!(
                "carpd node {}: not all {} VHIDs reached BACKUP; last log lines: {}",
                self.node,
                self.n,
                tail.join(" | ")
            ))
        })?;
        let t = ms(d.started, at);
        Ok((d, t))
    }

    fn write(&self, changed: Option<u8>) -> Result<()> {
        let text = carpd_config(self.layout, self.n, self.node, changed, &self.socket);
        std::fs::write(&self.config, text)?;
        Ok(())
    }

    /// Rewrites the file with one VHID changed and times the reload.
    fn reload(&self, changed: Option<u8>) -> Result<f64> {
        self.write(changed)?;
        let t0 = now_ns();
        let v = control(&self.socket, r#"{"command":"reload"}"#)?;
        let t = ms(t0, now_ns());
        let n_changed = v["reload"]["changed"].as_array().map_or(0, Vec::len);
        if v["ok"] != serde_json::Value::Bool(true) || n_changed != 1 {
            return Err(Error::Measure(format!("reload: unexpected answer {v}")));
        }
        Ok(t)
    }
}

/// One carpd scale run: `n` VHIDs per node on `layout`.
#[derive(Debug, Clone, Copy)]
pub struct Run {
    pub layout: Layout,
    pub n: usize,
    /// Starts of the backup node (and reloads per node).
    pub rounds: usize,
    pub windows: usize,
    pub window: Duration,
    /// Also the wire intervals and the bare-sender floor (IPv4 only) and
    /// the reload times.
    pub extras: bool,
}

pub fn carpd(lan: &Lan, dir: &Scratch, carpd: &Path, run: Run) -> Result<CarpdScale> {
    let Run {
        layout,
        n,
        rounds,
        windows,
        window,
        extras,
    } = run;
    let mut nodes: Vec<CarpdNode> = (0..2)
        .map(|node| CarpdNode::new(dir, lan, carpd, layout, n, node, "scale"))
        .collect();
    for node in &nodes {
        node.write(None)?;
    }
    let mut out = CarpdScale::default();
    let (d0, alone) = nodes[0].start()?;
    out.start_alone_ms = alone;
    let all_master = wait_until(Duration::from_secs(30), Duration::from_millis(200), || {
        state_counts(&nodes[0].socket).is_ok_and(|c| c[2] == n)
    });
    if all_master.is_none() {
        return Err(Error::Measure(
            "carpd node 0: not every VHID became MASTER".into(),
        ));
    }
    let mut d1 = None;
    for round in 0..rounds {
        if let Some(mut d) = d1.take() {
            let d: &mut Daemon = &mut d;
            d.signal(Signal::SIGTERM)?;
            d.wait_exit(Duration::from_secs(10));
        }
        let (d, t) = nodes[1].start()?;
        out.start_ms.push(t);
        d1 = Some(d);
        if round + 1 < rounds {
            sleep(Duration::from_millis(500));
        }
    }
    let Some(d1) = d1 else {
        return Err(Error::Measure("no scale rounds".into()));
    };
    // settle, then check the roles
    sleep(Duration::from_secs(4));
    let c = state_counts(&nodes[1].socket)?;
    if c[1] != n {
        return Err(Error::Measure(format!(
            "carpd node 1: states {c:?}, expected all {n} BACKUP"
        )));
    }
    let t0 = now_ns();
    let before = scrape_timing(&lan.hosts[0])?;
    out.scrape_ms[0] = ms(t0, now_ns());
    out.load = measure(&[vec![d0.pid()], vec![d1.pid()]], windows, window);
    let t0 = now_ns();
    let after = scrape_timing(&lan.hosts[0])?;
    out.scrape_ms[1] = ms(t0, now_ns());
    out.late = after.late.since(&before.late);
    out.early = after.early.since(&before.early);
    if extras && layout.family == Family::V4 {
        let packets = wire_capture(lan, layout.links, window)?;
        out.wire_excess_ms = interval_excess(&packets, Duration::from_secs(1));
        // node 0 sends from its own address on each link
        out.wire_offset_ms = (0..layout.links)
            .filter_map(|k| Lan::host_addr(0, k).parse().ok())
            .flat_map(|src| grid_offsets(&packets, src, after.grid_origin, Duration::from_secs(1)))
            .collect();
        for _ in 0..windows.min(3) {
            out.send_floor_pct
                .push(send_floor(lan, n, layout.links, window)?);
        }
    }
    for (node, skews) in [(1usize, [90u8, 100]), (0, [1, 0])] {
        for r in (0..rounds).filter(|_| extras) {
            out.reload_ms[node].push(nodes[node].reload(Some(skews[r % 2]))?);
            sleep(Duration::from_millis(300));
        }
    }
    nodes.clear();
    drop((d0, d1));
    Ok(out)
}

/// CPU seconds per minute of `n` IPv4 VHIDs and `n` IPv6-only ones per
/// node, one value per window and node, the two families measured in the
/// same windows.
#[derive(Debug, Clone, Default)]
pub struct SideBySide {
    pub v4: [Vec<f64>; 2],
    pub v6: [Vec<f64>; 2],
}

impl SideBySide {
    /// IPv6's CPU over IPv4's on `node`, window by window.
    pub fn ratios(&self, node: usize) -> Vec<f64> {
        self.v6[node]
            .iter()
            .zip(&self.v4[node])
            .filter(|(_, v4)| **v4 > 0.0)
            .map(|(v6, v4)| v6 / v4)
            .collect()
    }
}

/// Runs an IPv4 pair and an IPv6-only pair of carpd at once, each on its
/// own links, and measures all four processes over the same windows: on a
/// shared machine the load moves between two runs one after the other,
/// while both families see the same load in one window. Each of `rounds`
/// starts both pairs afresh, since where the scheduler puts the four
/// processes (beside which link's receive thread) holds for a run.
pub fn side_by_side(
    lan: &Lan,
    dir: &Scratch,
    carpd: &Path,
    n: usize,
    rounds: usize,
    windows: usize,
    window: Duration,
) -> Result<SideBySide> {
    let v4 = Layout::for_vhids(n, Family::V4);
    let v6 = Layout::for_vhids(n, Family::V6).after(v4);
    let mut out = SideBySide::default();
    for _ in 0..rounds {
        let mut nodes: Vec<CarpdNode> = [(v4, "pair-v4-"), (v6, "pair-v6-")]
            .into_iter()
            .flat_map(|(layout, name)| {
                (0..2).map(move |node| CarpdNode::new(dir, lan, carpd, layout, n, node, name))
            })
            .collect();
        for node in &nodes {
            node.write(None)?;
        }
        // masters first (nodes 0), then their backups (nodes 1)
        let mut daemons = Vec::new();
        for node in [0, 2, 1, 3] {
            let (d, _) = nodes[node].start()?;
            if nodes[node].node == 0 {
                let socket = &nodes[node].socket;
                wait_until(Duration::from_secs(30), Duration::from_millis(200), || {
                    state_counts(socket).is_ok_and(|c| c[2] == n)
                })
                .ok_or_else(|| {
                    Error::Measure(format!(
                        "side by side, {:?}: not every VHID became MASTER",
                        nodes[node].layout.family
                    ))
                })?;
            }
            daemons.push((node, d));
        }
        sleep(Duration::from_secs(4));
        for node in &nodes {
            let c = state_counts(&node.socket)?;
            let want = if node.node == 0 { c[2] } else { c[1] };
            if want != n {
                return Err(Error::Measure(format!(
                    "side by side, {:?} node {}: states {c:?}",
                    node.layout.family, node.node
                )));
            }
        }
        daemons.sort_by_key(|(node, _)| *node);
        let pids: Vec<i32> = daemons.iter().map(|(_, d)| d.pid()).collect();
        for _ in 0..windows {
            for (i, x) in cpu_over_window(&pids, window).into_iter().enumerate() {
                let family = if i < 2 { &mut out.v4 } else { &mut out.v6 };
                family[i % 2].push(x);
            }
        }
    }
    Ok(out)
}

#[derive(Debug, Clone, Default)]
pub struct UcarpScale {
    pub vhids: usize,
    pub load: Load,
    pub wire_excess_ms: Vec<f64>,
    /// Addresses the backup node held although every master ran: 5 s after
    /// start, and after the windows.
    pub held_by_backup: [usize; 2],
}

/// The advertisements node 0 puts on its first `links` links over
/// `window`, kernel timestamped at the switch. Not during the CPU windows,
/// so that those measure the daemons alone.
fn wire_capture(
    lan: &Lan,
    links: usize,
    window: Duration,
) -> Result<Vec<crate::watch::WirePacket>> {
    let ports: Vec<String> = (0..links).map(|k| Lan::port_name(0, k)).collect();
    let capture =
        crate::watch::Capture::start(&lan.switch, &ports, crate::watch::Frames::Arriving)?;
    sleep(window);
    Ok(capture.packets())
}

pub fn ucarp(
    lan: &Lan,
    dir: &Scratch,
    ucarp: &Path,
    layout: Layout,
    n: usize,
    windows: usize,
    window: Duration,
) -> Result<UcarpScale> {
    let up = dir.script("scale-up.sh", "exec ip addr add \"$2/32\" dev \"$1\"")?;
    let down = dir.script(
        "scale-down.sh",
        "ip addr del \"$2/32\" dev \"$1\" 2>/dev/null\nexit 0",
    )?;
    let mut daemons: [Vec<Daemon>; 2] = [Vec::new(), Vec::new()];
    for node in 0..2 {
        for j in 0..n {
            let (k, id, addr) = layout.vhid(j);
            let (iface, src) = (format!("--interface=eth{k}"), Lan::host_addr(node, k));
            let (id, skew) = (id.to_string(), ADVSKEW[node].to_string());
            let args = [
                iface.as_str(),
                "--srcip",
                &src,
                "--vhid",
                &id,
                "--pass",
                "secret",
                "--addr",
                &addr,
                "--advbase",
                "1",
                "--advskew",
                &skew,
                "--upscript",
                &up.to_string_lossy(),
                "--downscript",
                &down.to_string_lossy(),
                "--neutral",
                "--facility=none",
            ];
            let label = format!("scale-ucarp-{node}-{j}");
            daemons[node].push(Daemon::spawn(
                &lan.hosts[node],
                &label,
                dir.path(),
                ucarp,
                &args,
            )?);
        }
        if node == 0 {
            let host = &lan.hosts[0];
            let all = wait_until(Duration::from_secs(60), Duration::from_millis(250), || {
                host.try_addrs()
                    .unwrap_or_default()
                    .iter()
                    .filter(|a| is_virtual_v4(a))
                    .count()
                    >= n
            });
            if all.is_none() {
                return Err(Error::Measure(
                    "ucarp node 0 did not take every address".into(),
                ));
            }
        }
    }
    sleep(Duration::from_secs(5));
    let count_backup_held = || {
        lan.hosts[1]
            .try_addrs()
            .unwrap_or_default()
            .iter()
            .filter(|a| is_virtual_v4(a))
            .count()
    };
    let held_at_rest = count_backup_held();
    let pids = [
        daemons[0].iter().map(Daemon::pid).collect(),
        daemons[1].iter().map(Daemon::pid).collect(),
    ];
    let load = measure(&pids, windows, window);
    let wire_excess_ms = interval_excess(
        &wire_capture(lan, layout.links, window)?,
        Duration::from_secs(1),
    );
    for d in daemons.iter_mut().flatten() {
        let _ = d.signal(Signal::SIGKILL);
    }
    let held_after = count_backup_held();
    Ok(UcarpScale {
        held_by_backup: [held_at_rest, held_after],
        vhids: n,
        load,
        wire_excess_ms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:01.5Z"), Some(1_500_000_000));
        assert_eq!(
            parse_rfc3339("2026-11-25T20:51:44.123456Z"),
            Some(1_795_639_904_123_456_000)
        );
        assert_eq!(parse_rfc3339("garbage"), None);
    }

    #[test]
    fn lateness_quantiles_count_early_advertisements_as_not_late() {
        let late = Histogram {
            buckets: vec![(0.001, 5), (0.01, 9), (f64::INFINITY, 10)],
            count: 10,
            sum: 0.0,
        };
        let early = Histogram {
            count: 990,
            ..Histogram::default()
        };
        // 990 early of 1000: the 99th percentile is one of them
        assert_eq!(signed_quantile_ms(&late, &early, 0.99), Some(0.0));
        // the 995th of 1000 is the 5th late one, in the 1 ms bucket
        assert_eq!(signed_quantile_ms(&late, &early, 0.995), Some(1.0));
        assert_eq!(signed_quantile_ms(&late, &early, 0.999), Some(10.0));
        let none = Histogram::default();
        assert_eq!(signed_quantile_ms(&none, &none, 0.99), None);
        assert_eq!(signed_quantile_ms(&late, &none, 0.5), Some(1.0));
    }

    #[test]
    fn histograms() {
        let a = Histogram::parse(
            "# TYPE x histogram\nx_bucket{le=\"0.001\"} 5\nx_bucket{le=\"+Inf\"} 6\nx_count 6\nx_sum 0.01\n",
            "x",
        );
        assert_eq!(a.count, 6);
        assert_eq!(a.buckets, vec![(0.001, 5), (f64::INFINITY, 6)]);
        let b = Histogram::parse(
            "x_bucket{le=\"0.001\"} 105\nx_bucket{le=\"+Inf\"} 106\nx_count 106\nx_sum 0.02\n",
            "x",
        );
        let d = b.since(&a);
        assert_eq!(d.count, 100);
        assert_eq!(d.quantile_bound(0.99), Some(0.001));
        assert_eq!(d.quantile_bound(1.0), Some(0.001));
        assert_eq!(a.quantile_bound(1.0), Some(f64::INFINITY));
    }

    #[test]
    fn offsets_from_the_grid() {
        use crate::watch::WirePacket;
        let src = std::net::Ipv4Addr::new(10, 99, 0, 1);
        let origin_s = 1_000;
        let at = |vhid: u8, ns: i64| WirePacket {
            at: origin_s * 1_000_000_000 + ns,
            src,
            vhid,
            advbase: 1,
        };
        let packets = [
            // VHID 4: slot 0; 3 ms early for the instant 5 s on
            at(4, 5_000_000_000 - 3_000_000),
            // VHID 1: slot 1 (250 ms); 0.5 ms late, 2 s on
            at(1, 2_250_500_000),
            // VHID 6: slot 2 (500 ms); on time
            at(6, 7_500_000_000),
            // another sender: not counted
            WirePacket {
                src: std::net::Ipv4Addr::new(10, 99, 0, 2),
                ..at(4, 0)
            },
        ];
        let off = grid_offsets(&packets, src, origin_s as f64, Duration::from_secs(1));
        assert_eq!(off.len(), 3);
        assert!((off[0] + 3.0).abs() < 1e-6, "{off:?}");
        assert!((off[1] - 0.5).abs() < 1e-6, "{off:?}");
        assert!(off[2].abs() < 1e-6, "{off:?}");
        assert!(grid_offsets(&packets, src, f64::NAN, Duration::from_secs(1)).is_empty());
    }

    #[test]
    fn a_layout_after_another_takes_the_next_links_and_no_second_metrics_listener() {
        let v4 = Layout::for_vhids(1000, Family::V4);
        let v6 = Layout::for_vhids(1000, Family::V6).after(v4);
        assert_eq!((v6.first_link, v6.links), (4, 4));
        assert_eq!(v6.vhid(0), (4, 1, "fd00:100::1".into()));
        assert_eq!(v6.vhid(999), (7, 250, "fd00:103::250".into()));
        let socket = Path::new("/run/x.sock");
        let first = carpd_config(v4, 1000, 0, None, socket);
        let second = carpd_config(v6, 1000, 0, None, socket);
        assert!(first.contains("[metrics]") && first.contains("name = \"eth0\""));
        assert!(!second.contains("[metrics]"));
        assert!(second.contains("name = \"eth4\"") && second.contains("name = \"eth7\""));
        assert!(!second.contains("name = \"eth3\""));
    }

    #[test]
    fn side_by_side_ratios_are_taken_window_by_window() {
        let side = SideBySide {
            v4: [vec![1.0, 2.0, 0.0], vec![1.0]],
            v6: [vec![1.1, 2.4, 0.5], vec![0.9]],
        };
        let r = side.ratios(0);
        assert_eq!(r.len(), 2, "a window without IPv4 CPU has no ratio");
        assert!((r[0] - 1.1).abs() < 1e-9 && (r[1] - 1.2).abs() < 1e-9);
        assert!((side.ratios(1)[0] - 0.9).abs() < 1e-9);
    }

    #[test]
    fn vhid_layout() {
        let v4 = Layout::for_vhids(LINKS * PER_LINK, Family::V4);
        assert_eq!(v4.vhid(0), (0, 1, "10.100.0.1".into()));
        assert_eq!(v4.vhid(5), (1, 2, "10.101.0.2".into()));
        assert_eq!(v4.vhid(999), (3, 250, "10.103.0.250".into()));
        let big = Layout::for_vhids(4000, Family::V4);
        assert_eq!(big.links, 16);
        assert_eq!(big.vhid(3999), (15, 250, "10.115.0.250".into()));
        let v6 = Layout::for_vhids(1000, Family::V6);
        assert_eq!(v6.links, 4);
        assert_eq!(v6.vhid(999), (3, 250, "fd00:103::250".into()));
        assert_eq!(Layout::for_vhids(250, Family::V4).links, 1);
        // every virtual address of 16 links counts, the LAN's own do not
        assert!((0..4000).all(|j| is_virtual_v4(&big.vhid(j).2)));
        assert!(!is_virtual_v4("10.99.15.1/24"));
        assert!(!is_virtual_v4("10.1.0.1/32"));
    }
}
