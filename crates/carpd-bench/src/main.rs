//! carpd against ucarp, side by side, on the same network namespaces:
//! failover excess, sub-second failover, planned failover, the two-master
//! window, cost at 1000 VHIDs, timer accuracy and the receive path; apart
//! from `all`, cost from 250 to 4000 VHIDs and IPv6 at 1000 (`scale4k`).
//!
//! Needs root and ucarp (Debian package `ucarp`). Build carpd first:
//! `cargo build --release -p carpd -p carpd-bench && sudo target/release/carpd-bench all`.

mod cleanup;
mod error;
mod failover;
mod lan;
mod limit;
mod plot;
mod proc;
mod report;
mod scale;
mod scale4k;
mod watch;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use carpd_testbed::Lan;
use clap::{Parser, ValueEnum};
use nix::sys::signal::Signal;

use crate::cleanup::Scratch;
use crate::error::{Error, Result};
use crate::failover::{Bed, Impl, Timers};
use crate::report::{Row, Summary, Verdict};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Item {
    /// Everything, and write the report
    All,
    /// 1: unplanned failover (SIGKILL) at advbase 1
    Crash,
    /// 2: sub-second timers (carpd): failover and false takeovers
    Subsecond,
    /// 3: planned failover (SIGTERM)
    Planned,
    /// 4: two-master window when a preferred node joins
    Preempt,
    /// 5 and 6: 1000 VHIDs per node, timer lateness under that load
    Scale,
    /// 7: receive path throughput
    Rx,
    /// Failover at the protocol's limit (advbase 0, advskew 1 to 8) under
    /// 1000 background VHIDs, keepalived at 10 ms as the anchor; not part
    /// of `all`; appends its section to `--out`
    Limit,
    /// 8: 250 to 4000 VHIDs per node on 16 links, IPv6 against IPv4 at
    /// 1000, ucarp alongside; writes the cost plot (not part of `all`)
    Scale4k,
}

#[derive(Debug, Parser)]
#[command(about = "carpd against ucarp in network namespaces (needs root)")]
struct Args {
    #[arg(value_enum, default_value_t = Item::All)]
    item: Item,
    /// Few rounds and short windows (about 3 minutes instead of 12)
    #[arg(long)]
    quick: bool,
    /// The failover items on carpd-testbed's LAN as the tests build it
    /// (veth without the receive tuning of `lan.rs`)
    #[arg(long)]
    plain_lan: bool,
    /// Rounds per failover figure [default: 10, quick: 3]
    #[arg(long)]
    rounds: Option<usize>,
    /// The carpd binary [default: `carpd` next to this program]
    #[arg(long)]
    carpd: Option<PathBuf>,
    #[arg(long, default_value = "/usr/sbin/ucarp")]
    ucarp: PathBuf,
    /// ucarp processes per node in the scale test; fewer than 1000 are
    /// extrapolated to 1000 (and labelled so) [default: 1000, quick: 50]
    #[arg(long)]
    ucarp_vhids: Option<usize>,
    /// Where `all` writes its report (`limit` appends a section)
    #[arg(long, default_value = "BENCHMARKS.md")]
    out: PathBuf,
    /// limit: false takeovers with one busy process per core, carpd
    /// without and with `realtime = true`, instead of the failovers
    #[arg(long)]
    hog: bool,
    /// limit: the backup's advskew is the master's plus this
    #[arg(long, default_value_t = 0)]
    backup_extra: u8,
    /// limit: only these of the master's advskews (comma-separated; the
    /// keepalived anchor runs only without this)
    #[arg(long, value_delimiter = ',')]
    advskew: Vec<u8>,
    /// limit: the SCHED_FIFO priority of the links' NAPI threads (0: the
    /// kernel's default, normal priority)
    #[arg(long, default_value_t = limit::LINK_PRIORITY)]
    link_priority: i32,
    /// scale4k: most ucarp processes per node measured; larger counts are
    /// extrapolated (and labelled so) [default: 1000, quick: 250]
    #[arg(long)]
    ucarp_max: Option<usize>,
    /// Where scale4k writes its plot
    #[arg(long, default_value = "docs/scale.svg")]
    svg: PathBuf,
}

struct Plan {
    rounds: usize,
    sub_rounds: usize,
    steady: Duration,
    windows: usize,
    window: Duration,
    ucarp_vhids: usize,
    ucarp_max: usize,
    rx_rounds: usize,
}

fn main() {
    if let Err(e) = run() {
        eprintln!("carpd-bench: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<()> {
    cleanup::install_cleanup()?;
    let args = Args::parse();
    if !nix::unistd::geteuid().is_root() {
        return Err(Error::Setup(
            "needs root (it creates network namespaces)".into(),
        ));
    }
    let carpd = match &args.carpd {
        Some(p) => p.clone(),
        None => std::env::current_exe()?.with_file_name("carpd"),
    };
    for bin in [&carpd, &args.ucarp] {
        if !bin.exists() {
            return Err(Error::Setup(format!(
                "{} not found (cargo build --release -p carpd; apt install ucarp)",
                bin.display()
            )));
        }
    }
    let plan = if args.quick {
        Plan {
            rounds: args.rounds.unwrap_or(3),
            sub_rounds: 5,
            steady: Duration::from_secs(10),
            windows: 2,
            window: Duration::from_secs(5),
            ucarp_vhids: args.ucarp_vhids.unwrap_or(50),
            ucarp_max: args.ucarp_max.unwrap_or(250),
            rx_rounds: 3,
        }
    } else {
        Plan {
            rounds: args.rounds.unwrap_or(10),
            sub_rounds: 20,
            steady: Duration::from_secs(60),
            windows: 6,
            window: Duration::from_secs(10),
            ucarp_vhids: args.ucarp_vhids.unwrap_or(1000),
            ucarp_max: args.ucarp_max.unwrap_or(1000),
            rx_rounds: 10,
        }
    };
    carpd_testbed::netns::reap_stale_namespaces();
    if args.item == Item::Limit {
        return limit_item(&args, &carpd);
    }
    let load_before = loadavg();
    let began = Instant::now();
    let mut rows = Vec::new();
    let want = |i: Item| args.item == Item::All || args.item == i;
    if [
        Item::Crash,
        Item::Subsecond,
        Item::Planned,
        Item::Preempt,
        Item::Scale,
    ]
    .into_iter()
    .any(want)
    {
        let dir = Scratch::new()?;
        eprintln!("setting up namespaces");
        let lan = if args.plain_lan {
            lan::plain_lan(2, scale::LINKS)?
        } else {
            lan::tuned_lan(2, scale::LINKS)?.0
        };
        {
            let bed = Bed::new(&lan, &dir, &carpd, &args.ucarp)?;
            if want(Item::Crash) {
                rows.extend(crash(&bed, &plan)?);
            }
            if want(Item::Subsecond) {
                rows.extend(subsecond(&bed, &plan)?);
            }
            if want(Item::Planned) {
                rows.extend(planned(&bed, &plan)?);
            }
            if want(Item::Preempt) {
                rows.extend(preempt(&bed, &plan)?);
            }
        }
        if want(Item::Scale) {
            rows.extend(scale_rows(&lan, &dir, &carpd, &args.ucarp, &plan)?);
        }
    }
    if want(Item::Rx) {
        rows.extend(rx(&plan));
    }
    if args.item == Item::Scale4k {
        let settings = scale4k::Settings {
            rounds: plan.rounds.min(5),
            windows: plan.windows,
            window: plan.window,
            ucarp_max: plan.ucarp_max,
        };
        let out = scale4k::run(&carpd, &args.ucarp, &settings)?;
        rows.extend(out.rows);
        if let Some(dir) = args.svg.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(&args.svg, out.svg)?;
        eprintln!("wrote {}", args.svg.display());
        println!("{}", out.curve);
        println!(
            "load average before: {load_before}, after: {}; took {:.0} s",
            loadavg(),
            began.elapsed().as_secs_f64()
        );
    }
    let table = report::table(&rows);
    println!("{table}");
    if args.item == Item::All {
        let mut doc = document(&args, &plan, &table, load_before, began.elapsed());
        // hand-written analysis below the marker survives a new run
        if let Ok(old) = std::fs::read_to_string(&args.out)
            && let Some(i) = old.find(KEEP_MARKER)
        {
            doc.push('\n');
            doc.push_str(&old[i..]);
        }
        std::fs::write(&args.out, doc)?;
        eprintln!("wrote {}", args.out.display());
    }
    Ok(())
}

/// The `limit` item: runs it and appends its section to `--out`.
fn limit_item(args: &Args, carpd: &Path) -> Result<()> {
    let mut plan = limit::Plan::new(args.quick, args.rounds, args.backup_extra);
    plan.link_priority = args.link_priority;
    if !args.advskew.is_empty() {
        plan.only(&args.advskew)?;
    }
    let load_before = loadavg();
    let began = Instant::now();
    let dir = Scratch::new()?;
    eprintln!("setting up namespaces");
    let out = {
        let (lan, links) = lan::tuned_lan(2, scale::LINKS)?;
        if plan.link_priority > 0 {
            links.realtime(plan.link_priority)?;
            eprintln!(
                "{} NAPI threads of the links at SCHED_FIFO {}",
                links.len(),
                plan.link_priority
            );
        }
        if args.hog {
            limit::run_hog(&lan, &dir, carpd, &plan)?
        } else {
            limit::run(&lan, &dir, carpd, &plan)?
        }
    };
    let section = limit::section(
        &plan,
        args.hog,
        &out,
        &load_before,
        &loadavg(),
        began.elapsed(),
    );
    println!("{section}");
    let report = std::fs::read_to_string(&args.out).unwrap_or_default();
    let section = if report.contains(limit::HEADING) {
        section
    } else {
        format!("\n{}\n{section}", limit::HEADING)
    };
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(&args.out)?;
    std::io::Write::write_all(&mut file, section.as_bytes())?;
    eprintln!("appended to {}", args.out.display());
    Ok(())
}

fn ms_summary(v: impl IntoIterator<Item = f64>) -> Option<Summary> {
    Summary::of(&v.into_iter().collect::<Vec<_>>())
}

fn verdict(ok: bool) -> Verdict {
    if ok { Verdict::Met } else { Verdict::Missed }
}

fn under(s: Option<Summary>, pick: fn(&Summary) -> f64, limit: f64) -> Verdict {
    s.map_or(Verdict::Missed, |s| verdict(pick(&s) < limit))
}

fn log_step(what: &str) {
    eprintln!("[{}] {what}", chrono_now());
}

/// Wall-clock time of day (UTC) for progress lines.
fn chrono_now() -> String {
    let s = watch::now_ns() / 1_000_000_000;
    format!("{:02}:{:02}:{:02}", (s / 3600) % 24, (s / 60) % 60, s % 60)
}

const ADVBASE1: Timers = Timers {
    advbase: 1,
    advskew: 0,
    preempt: false,
};

/// `plan.rounds` failovers with timers `t` caused by `signal`, for each of
/// `imps` (in that order in the result).
fn failovers(
    bed: &Bed,
    plan: &Plan,
    item: &str,
    imps: &[Impl],
    t: Timers,
    signal: Signal,
) -> Result<Vec<Vec<failover::FailoverSample>>> {
    imps.iter()
        .map(|&imp| {
            log_step(&format!(
                "{item}: {} {signal:?} failover, advskew {}, {} rounds",
                imp.name(),
                t.advskew,
                plan.rounds
            ));
            failover::failover(bed, imp, t, signal, plan.rounds)
        })
        .collect()
}

/// carpd, ucarp, and carpd with ucarp's command line and scripts.
const WITH_CONTROL: [Impl; 3] = [Impl::Carpd, Impl::Ucarp, Impl::CarpdUcarpCli];

/// advbase 1 and advskew 100 on both nodes: ucarp's idle wake-up period
/// (advbase + advskew/256) no longer divides its master-down time.
const ADVSKEW100: Timers = Timers {
    advbase: 1,
    advskew: 100,
    preempt: false,
};

fn crash(bed: &Bed, plan: &Plan) -> Result<Vec<Row>> {
    let res = failovers(bed, plan, "1", &WITH_CONTROL, ADVBASE1, Signal::SIGKILL)?;
    let pick = |i: usize, f: fn(&failover::FailoverSample) -> f64| ms_summary(res[i].iter().map(f));
    let excess = pick(0, |s| s.excess_ms);
    let skewed = failovers(
        bed,
        plan,
        "1",
        &[Impl::Carpd, Impl::Ucarp],
        ADVSKEW100,
        Signal::SIGKILL,
    )?;
    let skewed_excess = |i: usize| ms_summary(skewed[i].iter().map(|s| s.excess_ms));
    Ok(vec![
        Row {
            item: "1".into(),
            what: "unplanned failover excess at advskew 100 on both nodes (master-down 3.39 s)".into(),
            unit: "ms",
            carpd: skewed_excess(0),
            ucarp: skewed_excess(1),
            target: String::new(),
            verdict: Verdict::None,
            note: "idle link, as a new user runs ucarp (a backup with advskew > 0): ucarp checks its master-down timer only when its poll() returns, which on an idle link is after advbase + advskew/256 s (its carp.c main loop); with advskew 0, as in the row above, three such waits end at master-down".into(),
        },
        Row {
            item: "1".into(),
            what:
                "unplanned failover excess: takeover − last advert − master-down (3 s), advbase 1"
                    .into(),
            unit: "ms",
            carpd: excess,
            ucarp: pick(1, |s| s.excess_ms),
            target: "median < 5, max < 20".into(),
            verdict: verdict(excess.is_some_and(|s| s.median < 5.0 && s.max < 20.0)),
            note: "SIGKILL at a random phase; takeover = address added (rtnetlink)".into(),
        },
        Row {
            item: "1".into(),
            what: "unplanned failover: SIGKILL → backup has the address".into(),
            unit: "ms",
            carpd: pick(0, |s| s.from_signal_ms),
            ucarp: pick(1, |s| s.from_signal_ms),
            target: String::new(),
            verdict: Verdict::None,
            note: "context: master-down 3000 ms less the phase of the kill".into(),
        },
        Row {
            item: "1".into(),
            what: "control: unplanned failover excess, carpd with ucarp's command line and up script".into(),
            unit: "ms",
            carpd: pick(2, |s| s.excess_ms),
            ucarp: pick(1, |s| s.excess_ms),
            target: String::new(),
            verdict: Verdict::None,
            note: CONTROL_NOTE.into(),
        },
    ])
}

/// What the control rows compare.
const CONTROL_NOTE: &str = "carpd column: carpd started with ucarp's arguments, the address added by the same up script (`sh` + `ip addr add`); ucarp column: ucarp as above";

fn subsecond(bed: &Bed, plan: &Plan) -> Result<Vec<Row>> {
    let t = Timers {
        advbase: 0,
        advskew: 8,
        preempt: false,
    };
    log_step(&format!(
        "2: carpd advbase 0 advskew 8 failover, {} rounds",
        plan.sub_rounds
    ));
    let res = failover::failover(bed, Impl::Carpd, t, Signal::SIGKILL, plan.sub_rounds)?;
    log_step(&format!(
        "2: carpd advbase 0 steady state, {:?}",
        plan.steady
    ));
    let false_takeovers = failover::false_takeovers(bed, Impl::Carpd, t, plan.steady)?;
    let from_kill = ms_summary(res.iter().map(|s| s.from_signal_ms));
    let n = false_takeovers as f64;
    Ok(vec![
        Row {
            item: "2".into(),
            what: "sub-second failover: SIGKILL → backup has the address (advbase 0, advskew 8: 31.25 ms interval, 93.75 ms master-down)".into(),
            unit: "ms",
            carpd: from_kill,
            ucarp: None,
            target: "median < 120".into(),
            verdict: under(from_kill, |s| s.median, 120.0),
            note: "ucarp cannot: libpcap's 1 s timeout".into(),
        },
        Row {
            item: "2".into(),
            what: "sub-second: last advert → backup has the address".into(),
            unit: "ms",
            carpd: ms_summary(res.iter().map(|s| s.from_last_advert_ms)),
            ucarp: None,
            target: String::new(),
            verdict: Verdict::None,
            note: format!(
                "excess over master-down: {}",
                report::fmt_summary(ms_summary(res.iter().map(|s| s.excess_ms)))
            ),
        },
        Row {
            item: "2".into(),
            what: format!("sub-second: false takeovers in {} s of steady state", plan.steady.as_secs()),
            unit: "count",
            carpd: Summary::of(&[n]),
            ucarp: None,
            target: "0".into(),
            verdict: verdict(false_takeovers == 0),
            note: String::new(),
        },
    ])
}

fn planned(bed: &Bed, plan: &Plan) -> Result<Vec<Row>> {
    let res = failovers(bed, plan, "3", &WITH_CONTROL, ADVBASE1, Signal::SIGTERM)?;
    let c = ms_summary(res[0].iter().map(|s| s.from_signal_ms));
    Ok(vec![
        Row {
            item: "3".into(),
            what: "planned failover: SIGTERM → backup has the address, advbase 1".into(),
            unit: "ms",
            carpd: c,
            ucarp: ms_summary(res[1].iter().map(|s| s.from_signal_ms)),
            target: "< 20 (max)".into(),
            verdict: under(c, |s| s.max, 20.0),
            note: "carpd bows out (255/255); ucarp with --shutdown".into(),
        },
        Row {
            item: "3".into(),
            what:
                "control: planned failover (SIGTERM), carpd with ucarp's command line and up script"
                    .into(),
            unit: "ms",
            carpd: ms_summary(res[2].iter().map(|s| s.from_signal_ms)),
            ucarp: ms_summary(res[1].iter().map(|s| s.from_signal_ms)),
            target: String::new(),
            verdict: Verdict::None,
            note: CONTROL_NOTE.into(),
        },
    ])
}

fn preempt(bed: &Bed, plan: &Plan) -> Result<Vec<Row>> {
    let mut res = Vec::new();
    for imp in [Impl::Carpd, Impl::Ucarp] {
        log_step(&format!(
            "4: {} preemption, {} rounds",
            imp.name(),
            plan.rounds
        ));
        res.push(failover::preempt(bed, imp, plan.rounds)?);
    }
    let c = ms_summary(res[0].iter().map(|s| s.overlap_ms));
    Ok(vec![
        Row {
            item: "4".into(),
            what: "two-master window: preferred node (advskew 0, preempt) joins a master (advskew 100)".into(),
            unit: "ms",
            carpd: c,
            ucarp: ms_summary(res[1].iter().map(|s| s.overlap_ms)),
            target: "< 10 (max)".into(),
            verdict: under(c, |s| s.max, 10.0),
            note: "both hold the address: from the new master's add to the old one's removal".into(),
        },
        Row {
            item: "4".into(),
            what: "preemption: start of the preferred node → it has the address".into(),
            unit: "ms",
            carpd: ms_summary(res[0].iter().map(|s| s.takeover_ms)),
            ucarp: ms_summary(res[1].iter().map(|s| s.takeover_ms)),
            target: String::new(),
            verdict: Verdict::None,
            note: "context: includes process start".into(),
        },
    ])
}

fn scale_rows(
    lan: &Lan,
    dir: &Scratch,
    carpd: &Path,
    ucarp: &Path,
    plan: &Plan,
) -> Result<Vec<Row>> {
    let n = 4 * 250;
    log_step(&format!("5: carpd {n} VHIDs per node"));
    let layout = scale::Layout::for_vhids(n, scale::Family::V4);
    let c = scale::carpd(
        lan,
        dir,
        carpd,
        scale::Run {
            layout,
            n,
            rounds: plan.rounds.min(5),
            windows: plan.windows,
            window: plan.window,
            extras: true,
        },
    )?;
    log_step(&format!(
        "5: ucarp {} VHIDs per node ({} processes)",
        plan.ucarp_vhids,
        2 * plan.ucarp_vhids
    ));
    let u = scale::ucarp(
        lan,
        dir,
        ucarp,
        layout,
        plan.ucarp_vhids,
        plan.windows,
        plan.window,
    )?;
    let factor = n as f64 / u.vhids as f64;
    let scaled = |s: Option<Summary>| {
        s.map(|s| Summary {
            median: s.median * factor,
            min: s.min * factor,
            max: s.max * factor,
            extrapolated: u.vhids != n,
            ..s
        })
    };
    // what the ucarp cell is: measured at n, or scaled from u.vhids
    let ucarp_source = |measured: String| {
        if u.vhids == n {
            format!("ucarp: measured, {n} processes")
        } else {
            format!(
                "ucarp: measured {measured} for {} processes, × {factor:.0} (linear extrapolation)",
                u.vhids
            )
        }
    };
    let pct = |v: &[f64]| ms_summary(v.iter().map(|x| x / 60.0 * 100.0));
    let mut rows = Vec::new();
    for (node, role) in [(0, "master node"), (1, "backup node")] {
        let cpu = pct(&c.load.cpu_s_per_min[node]);
        let ucpu = pct(&u.load.cpu_s_per_min[node]);
        rows.push(Row {
            item: "5".into(),
            what: format!("CPU, {n} VHIDs, {role} (carpd: 1 process)"),
            unit: "% of one core",
            carpd: cpu,
            ucarp: scaled(ucpu),
            target: "< 0.5 (max)".into(),
            verdict: under(cpu, |s| s.max, 0.5),
            note: format!(
                "= CPU s/min × 100/60, per {} s window; kernel share: carpd {:.0} %, ucarp {:.0} %; {}",
                plan.window.as_secs(),
                c.load.system_share[node] * 100.0,
                u.load.system_share[node] * 100.0,
                ucarp_source(report::fmt_summary(ucpu)),
            ),
        });
        let pss = ms_summary(c.load.pss_mib[node].iter().copied());
        let upss = ms_summary(u.load.pss_mib[node].iter().copied());
        rows.push(Row {
            item: "5".into(),
            what: format!("PSS, {n} VHIDs, {role}"),
            unit: "MiB",
            carpd: pss,
            ucarp: scaled(upss),
            target: "< 32 (max)".into(),
            verdict: under(pss, |s| s.max, 32.0),
            note: ucarp_source(format!("{} MiB", report::fmt_summary(upss))),
        });
    }
    let floor = ms_summary(c.send_floor_pct.iter().copied());
    rows.push(Row {
        item: "5".into(),
        what: format!("testbed floor: a bare sender putting {n} CARP packets/s into veth"),
        unit: "% of one core",
        carpd: floor,
        ucarp: None,
        target: String::new(),
        verdict: Verdict::None,
        note: "context: kernel cost any master pays here, up to the veth's queue (one burst per second, one sendto each)".into(),
    });
    if u.held_by_backup.iter().any(|n| *n > 0) {
        rows.push(Row {
            item: "5".into(),
            what: "ucarp backups holding an address while its master runs".into(),
            unit: "count",
            carpd: Summary::of(&[0.0]),
            ucarp: Summary::of(&[u.held_by_backup[0] as f64, u.held_by_backup[1] as f64]),
            target: String::new(),
            verdict: Verdict::None,
            note: format!(
                "at {} ucarp processes per node: 5 s after start and after the windows (two masters)",
                u.vhids
            ),
        });
    }
    let start = ms_summary(c.start_ms.iter().copied());
    rows.push(Row {
        item: "5".into(),
        what: format!("start → all {n} VHIDs BACKUP (peer master running)"),
        unit: "ms",
        carpd: start,
        ucarp: None,
        target: "< 200 (max)".into(),
        verdict: under(start, |s| s.max, 200.0),
        note: format!(
            "from spawn to the last INIT → BACKUP log line; first node, alone: {:.0} ms",
            c.start_alone_ms
        ),
    });
    for (node, role) in [(1, "backup node"), (0, "master node")] {
        let r = ms_summary(c.reload_ms[node].iter().copied());
        rows.push(Row {
            item: "5".into(),
            what: format!("reload changing one VHID's advskew, {n} VHIDs, {role}"),
            unit: "ms",
            carpd: r,
            ucarp: None,
            target: "< 50 (max)".into(),
            verdict: under(r, |s| s.max, 50.0),
            note: "control socket `reload` round trip (parse, diff, restart the VHID)".into(),
        });
    }
    let h = &c.late;
    // over every advertisement: one that left early is late by nothing
    let p99 = scale::signed_quantile_ms(h, &c.early, 0.99);
    let span = plan.windows as u64 * plan.window.as_secs();
    rows.push(Row {
        item: "6".into(),
        what: format!("advertisement lateness p99 under {n} VHIDs, master node, over every advertisement (one sent before its deadline is late by nothing; carpd's own measure)"),
        unit: "ms",
        carpd: p99.and_then(|b| Summary::of(&[b])),
        ucarp: None,
        target: "< 2".into(),
        verdict: p99.map_or(Verdict::Missed, |b| verdict(b < 2.0)),
        note: format!(
            "upper bounds from the `carpd_timer_lateness_seconds` buckets over the {span} s of windows: {}",
            h.describe_ms()
        ),
    });
    let e = &c.early;
    rows.push(Row {
        item: "6".into(),
        what: format!("advertisement earliness p99 under {n} VHIDs, master node, sends before their deadline (carpd's own measure)"),
        unit: "ms",
        carpd: e.quantile_bound(0.99).and_then(|b| Summary::of(&[b * 1e3])),
        ucarp: None,
        target: String::new(),
        verdict: Verdict::None,
        note: format!(
            "upper bounds from the `carpd_timer_earliness_seconds` buckets over the {span} s of windows: {}",
            e.describe_ms()
        ),
    });
    for (q, name) in [
        (0.0, "min"),
        (0.01, "p1"),
        (0.5, "p50"),
        (0.99, "p99"),
        (1.0, "max"),
    ] {
        rows.push(Row {
            item: "6".into(),
            what: format!("advertisement arrival on the wire − its grid instant, {name}, master node"),
            unit: "ms",
            carpd: report::nearest_rank(&c.wire_offset_ms, q).and_then(|x| Summary::of(&[x])),
            ucarp: None,
            target: String::new(),
            verdict: Verdict::None,
            note: format!(
                "negative: early; kernel timestamps at the switch against `carpd_advert_grid_origin_seconds`; {} advertisements",
                c.wire_offset_ms.len()
            ),
        });
    }
    let pq = |v: &[f64], q: f64| -> Option<Summary> {
        let mut v: Vec<f64> = v.to_vec();
        v.sort_by(f64::total_cmp);
        let i = ((v.len() as f64 * q).ceil() as usize).clamp(1, v.len().max(1)) - 1;
        v.get(i).and_then(|x| Summary::of(&[*x]))
    };
    for (q, name) in [(0.5, "p50"), (0.99, "p99"), (1.0, "max")] {
        rows.push(Row {
            item: "6".into(),
            what: format!("advertisement interval on the wire − 1 s, {name}, master node"),
            unit: "ms",
            carpd: pq(&c.wire_excess_ms, q),
            ucarp: pq(&u.wire_excess_ms, q),
            target: String::new(),
            verdict: Verdict::None,
            note: format!(
                "kernel timestamps at the switch; {} carpd and {} ucarp intervals",
                c.wire_excess_ms.len(),
                u.wire_excess_ms.len()
            ),
        });
    }
    Ok(rows)
}

fn rx(plan: &Plan) -> Vec<Row> {
    log_step("7: receive path");
    let mut rows = Vec::new();
    for (name, mode) in [
        ("UCARP", carp_proto::HmacMode::Ucarp),
        ("BSD", carp_proto::HmacMode::Bsd),
    ] {
        let mut path = carp_engine::bench::ReceivePath::new(4, 250, mode);
        let packets = path.packets(0x1234_5678_9abc_def0);
        let mut rates = Vec::new();
        for _ in 0..plan.rx_rounds {
            let t = Instant::now();
            let mut n = 0u64;
            while t.elapsed() < Duration::from_millis(500) {
                for p in &packets {
                    if path.deliver(std::hint::black_box(p)) {
                        n += 1;
                    }
                }
            }
            rates.push(n as f64 / t.elapsed().as_secs_f64() / 1e6);
        }
        let s = Summary::of(&rates);
        rows.push(Row {
            item: "7".into(),
            what: format!("receive path: parse + validate + HMAC verify + demux over 1000 VHIDs, {name} HMAC, one thread"),
            unit: "M adverts/s/core",
            carpd: s,
            ucarp: None,
            target: "> 1".into(),
            verdict: s.map_or(Verdict::Missed, |s| verdict(s.min > 1.0)),
            note: "0.5 s per round; criterion: `cargo bench -p carp-engine --features bench --bench rx`".into(),
        });
    }
    rows
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// First non-empty line a command prints (stdout, else stderr), whatever
/// its exit status (`ucarp --help` exits non-zero).
fn first_line(args: &[&str]) -> String {
    let Some((program, rest)) = args.split_first() else {
        return String::new();
    };
    std::process::Command::new(program)
        .args(rest)
        .stdin(std::process::Stdio::null())
        .output()
        .map(|o| {
            let text = if o.stdout.is_empty() {
                o.stderr
            } else {
                o.stdout
            };
            String::from_utf8_lossy(&text)
                .lines()
                .map(str::trim)
                .find(|l| !l.is_empty())
                .unwrap_or("")
                .to_string()
        })
        .unwrap_or_default()
}

/// CPUs, their model and the kernel.
fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .map(|m| m.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_default();
    let nproc = std::thread::available_parallelism().map_or(0, usize::from);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!("{nproc} CPUs ({cpu}), kernel {}", kernel.trim())
}

/// The commit the benchmark was built from (short hash).
fn commit() -> String {
    carpd_testbed::try_run(&[
        "git",
        "-C",
        env!("CARGO_MANIFEST_DIR"),
        "rev-parse",
        "--short",
        "HEAD",
    ])
    .map_or_else(|_| "unknown".into(), |s| s.trim().to_string())
}

fn document(args: &Args, plan: &Plan, table: &str, load_before: String, took: Duration) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "# Benchmarks: carpd against ucarp\n");
    let _ = writeln!(
        s,
        "Generated by `carpd-bench`; regenerate with (root, Debian `ucarp` and `ethtool` installed):\n"
    );
    let _ = writeln!(
        s,
        "```sh\ncargo build --release -p carpd -p carpd-bench && sudo target/release/carpd-bench all\n```\n"
    );
    let _ = writeln!(s, "## This run\n");
    let _ = writeln!(
        s,
        "- date: {}",
        first_line(&["date", "-u", "+%Y-%m-%d %H:%M UTC"])
    );
    let _ = writeln!(
        s,
        "- command: `{}`",
        std::env::args().collect::<Vec<_>>().join(" ")
    );
    let _ = writeln!(s, "- machine: {}", machine());
    let _ = writeln!(
        s,
        "- load average (1/5/15 min) before: {load_before}, after: {} (the machine is shared with other builds)",
        loadavg()
    );
    let _ = writeln!(
        s,
        "- carpd: {} (commit {})",
        args.carpd
            .as_deref()
            .map_or_else(|| "release build".into(), |p| p.display().to_string()),
        commit()
    );
    let _ = writeln!(
        s,
        "- ucarp: {}",
        first_line(&[&args.ucarp.to_string_lossy(), "--help"])
    );
    let _ = writeln!(
        s,
        "- rounds: {} per failover figure (crash, planned, preemption), {} sub-second failovers, {} s steady state, {} windows of {} s for CPU and memory, {} receive-path rounds; the run took {:.0} s",
        plan.rounds,
        plan.sub_rounds,
        plan.steady.as_secs(),
        plan.windows,
        plan.window.as_secs(),
        plan.rx_rounds,
        took.as_secs_f64()
    );
    let _ = writeln!(s, "\n## Results\n");
    let _ = writeln!(s, "Each cell: median (min–max, n = rounds).\n");
    s.push_str(table);
    s.push_str(METHOD);
    s
}

/// Everything from this line on in an existing report is kept.
const KEEP_MARKER: &str = "<!-- kept across runs -->";

const METHOD: &str = r"
## How it is measured

- Topology: a switch namespace with four bridges (no multicast snooping) and
  two host namespaces, each with `eth0`..`eth3` on veth pairs. Every veth
  end receives through a threaded NAPI (GRO on, TSO/GSO off, `threaded`
  = 1), as a NIC would: otherwise a veth runs the bridge, the other hosts'
  IP input and the wake-up of their readers in the sender's context and
  charges it all to the sending process. carpd and
  ucarp run in the same namespaces, one after the other. The address is
  installed by carpd itself, and by ucarp's up script (`ip addr add`).
- Clock: every timestamp is `CLOCK_REALTIME`. Advertisements are captured
  at the switch ports with an `AF_PACKET` socket and kernel receive
  timestamps (`SO_TIMESTAMPNS`); address changes come from an rtnetlink
  socket per host (timestamped when the blocked reader wakes, tens of µs).
- 1 (crash): both nodes advbase 1, advskew 0; the master is SIGKILLed at a
  random phase of its interval; excess = (address added on the backup) −
  (last advertisement of the master on the wire) − 3 s master-down. The
  killed node restarts as backup, so roles alternate.
- 2 (sub-second, carpd only): advbase 0, advskew 8 on both nodes. False
  takeovers: the backup adding the address while the master runs.
- 3 (planned): as 1 with SIGTERM; time from the signal to the address on the
  backup. carpd sends a bow-out (advbase 255, advskew 255) that hands over at
  once; ucarp has none, so its backup waits for master-down.
- 4 (preemption): node 1 (advskew 100) is master; node 0 (advskew 0,
  preempt) starts; the window is the time both hold the address.
- 5 (scale): 4 interfaces × 250 VHIDs, one /32 address each, on both nodes;
  node 0 advskew 0 (masters), node 1 advskew 100 (backups). CPU = sum of the
  schedstat run time of every thread of every process of a node over each
  window; PSS = sum of `Pss` in `/proc/<pid>/smaps_rollup`. ucarp needs one
  process per VHID; it is measured at fewer VHIDs (stated in the row) with
  `--neutral`, and multiplied up linearly (labelled). Start time: from
  spawn to the JSON log line of the last INIT → BACKUP transition. Reload:
  one VHID's advskew changes in the file, timed around the control socket's
  `reload` request.
- 6 (lateness): carpd's own measure, from the timer deadline to the send,
  early sends (`carpd_timer_earliness_seconds`) and late ones
  (`carpd_timer_lateness_seconds`) apart, scraped from the master node's
  metrics before and after the scale windows. On the wire: each
  advertisement of the master node, kernel timestamped at the switch,
  against its instant on the advertisement grid (origin from
  `carpd_advert_grid_origin_seconds`), signed.
- 7 (receive path): `carp_engine::bench::ReceivePath`, the real
  demultiplexer over 1000 VHIDs fed in a loop on one thread (the inbox is
  drained after each packet, as the VHID's task would).
";
