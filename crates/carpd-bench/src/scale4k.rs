//! Item 8: carpd at 250 to 4000 VHIDs per node (up to 16 links of 250),
//! 1000 IPv6-only VHIDs against 1000 IPv4 ones in the same run, and ucarp
//! at the counts this machine allows; the targets at 4000, the cost curve
//! as a table and as a plot.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use crate::cleanup::Scratch;
use crate::error::Result;
use crate::plot::{Panel, Point, Series};
use crate::report::{Row, Summary, Verdict, fmt_summary};
use crate::scale::{self, CarpdScale, Family, Layout, PER_LINK, Run, UcarpScale};
use crate::{lan, log_step, ms_summary, under, verdict};

/// VHIDs per node along the curve.
pub const COUNTS: [usize; 5] = [250, 500, 1000, 2000, 4000];
/// The count the IPv6 run compares at.
const V6_COUNT: usize = 1000;

/// Targets at 4000 VHIDs.
const CPU_OVER_FLOOR: f64 = 1.3;
const PSS_MIB: f64 = 48.0;
const START_MS: f64 = 300.0;
const RELOAD_MS: f64 = 60.0;
const LATENESS_P99_MS: f64 = 1.0;
/// IPv6's CPU over IPv4's, at [`V6_COUNT`].
const V6_OVER_V4: f64 = 1.1;

#[derive(Debug, Clone)]
pub struct Settings {
    pub rounds: usize,
    pub windows: usize,
    pub window: Duration,
    /// Most ucarp processes per node measured.
    pub ucarp_max: usize,
}

pub struct Scale4k {
    pub rows: Vec<Row>,
    /// The curve as a Markdown table.
    pub curve: String,
    pub svg: String,
}

/// One count of the curve: carpd's run, and ucarp's if measured there.
struct Step {
    n: usize,
    carpd: CarpdScale,
    ucarp: Option<UcarpScale>,
}

pub fn run(carpd: &Path, ucarp: &Path, s: &Settings) -> Result<Scale4k> {
    let dir = Scratch::new()?;
    let links = COUNTS[COUNTS.len() - 1].div_ceil(PER_LINK);
    log_step(&format!(
        "8: setting up 2 hosts × {links} links (veth pairs)"
    ));
    let (lan, _) = lan::tuned_lan(2, links)?;
    let mut steps = Vec::new();
    let mut v6 = None;
    for n in COUNTS {
        let full = n == COUNTS[COUNTS.len() - 1];
        for family in [Family::V4, Family::V6] {
            if family == Family::V6 && n != V6_COUNT {
                continue;
            }
            log_step(&format!("8: carpd {n} VHIDs per node, {family:?}"));
            let c = scale::carpd(
                &lan,
                &dir,
                carpd,
                Run {
                    layout: Layout::for_vhids(n, family),
                    n,
                    rounds: if full || family == Family::V6 {
                        s.rounds
                    } else {
                        1
                    },
                    windows: s.windows,
                    window: s.window,
                    extras: full || family == Family::V6,
                },
            )?;
            if family == Family::V6 {
                v6 = Some(c);
            } else {
                steps.push(Step {
                    n,
                    carpd: c,
                    ucarp: None,
                });
            }
        }
    }
    log_step(&format!(
        "8: carpd {V6_COUNT} IPv4 and {V6_COUNT} IPv6-only VHIDs per node side by side"
    ));
    let side = scale::side_by_side(
        &lan,
        &dir,
        carpd,
        V6_COUNT,
        s.rounds,
        s.windows.div_ceil(2),
        s.window,
    )?;
    for step in steps.iter_mut().filter(|st| st.n <= s.ucarp_max) {
        log_step(&format!(
            "8: ucarp {} VHIDs per node ({} processes)",
            step.n,
            2 * step.n
        ));
        let layout = Layout::for_vhids(step.n, Family::V4);
        match scale::ucarp(&lan, &dir, ucarp, layout, step.n, s.windows, s.window) {
            Ok(u) => step.ucarp = Some(u),
            // larger counts are extrapolated from the last one measured
            Err(e) => {
                log_step(&format!("8: ucarp at {} VHIDs not measured: {e}", step.n));
                break;
            }
        }
    }
    let mut rows = targets(&steps, s);
    if let Some(v6) = &v6 {
        rows.extend(ipv6_rows(&steps, v6, &side));
    }
    let curve = Curve::of(&steps);
    Ok(Scale4k {
        rows,
        curve: curve.table(),
        svg: curve.plot(),
    })
}

/// % of one core, per window.
fn cpu_pct(c: &[f64]) -> Option<Summary> {
    ms_summary(c.iter().map(|x| x / 60.0 * 100.0))
}

fn targets(steps: &[Step], s: &Settings) -> Vec<Row> {
    let mut rows = Vec::new();
    let Some(last) = steps.last() else {
        return rows;
    };
    let (n, c) = (last.n, &last.carpd);
    let links = n.div_ceil(PER_LINK);
    let floor = ms_summary(c.send_floor_pct.iter().copied());
    for (node, role) in [(0, "master node"), (1, "backup node")] {
        let cpu = cpu_pct(&c.load.cpu_s_per_min[node]);
        let ratio = cpu.zip(floor).map(|(c, f)| c.median / f.median);
        rows.push(Row {
            item: "8".into(),
            what: format!("CPU, {n} VHIDs on {links} links, {role} (1 process)"),
            unit: "% of one core",
            carpd: cpu,
            ucarp: None,
            target: format!("< {CPU_OVER_FLOOR} × floor (medians)"),
            verdict: ratio.map_or(Verdict::Missed, |r| verdict(r < CPU_OVER_FLOOR)),
            note: format!(
                "{} × the bare-sender floor of this run; kernel share {:.0} %; {} windows of {} s",
                ratio.map_or("?".into(), |r| format!("{r:.2}")),
                c.load.system_share[node] * 100.0,
                s.windows,
                s.window.as_secs()
            ),
        });
    }
    rows.push(Row {
        item: "8".into(),
        what: format!("testbed floor: a bare sender putting {n} CARP packets/s into {links} veths"),
        unit: "% of one core",
        carpd: floor,
        ucarp: None,
        target: String::new(),
        verdict: Verdict::None,
        note: "context: one burst per second, one sendto each, measured after carpd's windows"
            .into(),
    });
    for (node, role) in [(0, "master node"), (1, "backup node")] {
        let pss = ms_summary(c.load.pss_mib[node].iter().copied());
        let (anon, file) = c.load.pss_anon_file_mib[node];
        rows.push(Row {
            item: "8".into(),
            what: format!("PSS, {n} VHIDs, {role}"),
            unit: "MiB",
            carpd: pss,
            ucarp: None,
            target: format!("< {PSS_MIB} (max)"),
            verdict: under(pss, |s| s.max, PSS_MIB),
            note: format!("at the end: {anon:.1} MiB anonymous, {file:.1} MiB file-backed"),
        });
    }
    let start = ms_summary(c.start_ms.iter().copied());
    rows.push(Row {
        item: "8".into(),
        what: format!("start → all {n} VHIDs BACKUP (peer master running)"),
        unit: "ms",
        carpd: start,
        ucarp: None,
        target: format!("< {START_MS} (max)"),
        verdict: under(start, |s| s.max, START_MS),
        note: format!(
            "spawn to the last INIT → BACKUP log line; first node, alone: {:.0} ms",
            c.start_alone_ms
        ),
    });
    for (node, role) in [(1, "backup node"), (0, "master node")] {
        let r = ms_summary(c.reload_ms[node].iter().copied());
        rows.push(Row {
            item: "8".into(),
            what: format!("reload changing one VHID's advskew, {n} VHIDs, {role}"),
            unit: "ms",
            carpd: r,
            ucarp: None,
            target: format!("< {RELOAD_MS} (max)"),
            verdict: under(r, |s| s.max, RELOAD_MS),
            note: "control socket `reload` round trip".into(),
        });
    }
    rows.push(lateness_row(n, "IPv4", c, Some(LATENESS_P99_MS)));
    for (q, name) in [(0.5, "p50"), (0.99, "p99"), (1.0, "max")] {
        rows.push(Row {
            item: "8".into(),
            what: format!(
                "advertisement interval on the wire − 1 s, {name}, {n} VHIDs, master node"
            ),
            unit: "ms",
            carpd: quantile(&c.wire_excess_ms, q),
            ucarp: None,
            target: String::new(),
            verdict: Verdict::None,
            note: format!("{} intervals", c.wire_excess_ms.len()),
        });
    }
    rows
}

/// carpd's own lateness histograms over the windows: the p99 of every
/// advertisement's signed lateness (see [`scale::signed_quantile_ms`]).
fn lateness_row(n: usize, family: &str, c: &CarpdScale, target_ms: Option<f64>) -> Row {
    let (h, e) = (&c.late, &c.early);
    let p99 = scale::signed_quantile_ms(h, e, 0.99);
    let late_bound = |q: f64| {
        h.quantile_bound(q)
            .map_or("?".into(), |b| format!("{}", b * 1e3))
    };
    Row {
        item: "8".into(),
        what: format!(
            "advertisement lateness p99 over every advertisement (one sent before its deadline is late by nothing), {n} {family} VHIDs, master node"
        ),
        unit: "ms",
        carpd: p99.and_then(|b| Summary::of(&[b])),
        ucarp: None,
        target: target_ms.map_or(String::new(), |t| format!("< {t}")),
        verdict: match target_ms {
            Some(t) => p99.map_or(Verdict::Missed, |b| verdict(b < t)),
            None => Verdict::None,
        },
        note: format!(
            "bucket bounds of `carpd_timer_lateness_seconds` and `_earliness_seconds`: {} adverts, {} after their deadline (of those: p50 ≤ {} ms, p99 ≤ {} ms, max ≤ {} ms, mean {:.3} ms); the metrics scrapes around the windows took {:.0} and {:.0} ms (round trip)",
            h.count + e.count,
            h.count,
            late_bound(0.5),
            late_bound(0.99),
            late_bound(1.0),
            if h.count > 0 {
                h.sum / h.count as f64 * 1e3
            } else {
                f64::NAN
            },
            c.scrape_ms[0],
            c.scrape_ms[1]
        ),
    }
}

fn quantile(v: &[f64], q: f64) -> Option<Summary> {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    let i = ((v.len() as f64 * q).ceil() as usize).clamp(1, v.len().max(1)) - 1;
    v.get(i).and_then(|x| Summary::of(&[*x]))
}

/// IPv6 against IPv4 at [`V6_COUNT`]: the CPU ratio window by window from
/// the side-by-side run (the target's verdict), beside the two families'
/// runs one after the other; PSS, start and lateness from the IPv6 run.
fn ipv6_rows(steps: &[Step], v6: &CarpdScale, side: &scale::SideBySide) -> Vec<Row> {
    let mut rows = Vec::new();
    let Some(v4) = steps.iter().find(|st| st.n == V6_COUNT).map(|st| &st.carpd) else {
        return rows;
    };
    let n = V6_COUNT;
    for (node, role) in [(0, "master node"), (1, "backup node")] {
        let ratios = Summary::of(&side.ratios(node));
        let c6 = cpu_pct(&v6.load.cpu_s_per_min[node]);
        let c4 = cpu_pct(&v4.load.cpu_s_per_min[node]);
        let apart = c6.zip(c4).map(|(a, b)| a.median / b.median);
        rows.push(Row {
            item: "8".into(),
            what: format!(
                "CPU, {n} IPv6-only VHIDs (ff02::12, link-local sources) over {n} IPv4 ones, side by side, {role}"
            ),
            unit: "ratio",
            carpd: ratios,
            ucarp: None,
            target: format!("< {V6_OVER_V4} (median)"),
            verdict: ratios.map_or(Verdict::Missed, |r| verdict(r.median < V6_OVER_V4)),
            note: format!(
                "per window, both families in the same windows: IPv6 {} against IPv4 {} % of one core; run one after the other: IPv6 {} against IPv4 {}, IPv6 / IPv4 = {}; kernel share {:.0} % (IPv4 {:.0} %)",
                fmt_summary(cpu_pct(&side.v6[node])),
                fmt_summary(cpu_pct(&side.v4[node])),
                fmt_summary(c6),
                fmt_summary(c4),
                apart.map_or("?".into(), |r| format!("{r:.2}")),
                v6.load.system_share[node] * 100.0,
                v4.load.system_share[node] * 100.0
            ),
        });
    }
    for (node, role) in [(0, "master node"), (1, "backup node")] {
        rows.push(Row {
            item: "8".into(),
            what: format!("PSS, {n} IPv6-only VHIDs, {role}"),
            unit: "MiB",
            carpd: ms_summary(v6.load.pss_mib[node].iter().copied()),
            ucarp: None,
            target: String::new(),
            verdict: Verdict::None,
            note: format!(
                "IPv4 in this run: {}",
                fmt_summary(ms_summary(v4.load.pss_mib[node].iter().copied()))
            ),
        });
    }
    rows.push(Row {
        item: "8".into(),
        what: format!("start → all {n} IPv6-only VHIDs BACKUP (peer master running)"),
        unit: "ms",
        carpd: ms_summary(v6.start_ms.iter().copied()),
        ucarp: None,
        target: String::new(),
        verdict: Verdict::None,
        note: format!("first node, alone: {:.0} ms", v6.start_alone_ms),
    });
    rows.push(lateness_row(n, "IPv6-only", v6, None));
    rows
}

/// Medians along the curve: carpd measured at every count, ucarp measured
/// where it ran and extrapolated linearly from its largest measured count
/// elsewhere.
struct Curve {
    /// (VHIDs, [master, backup]) for carpd's CPU (% of a core) and PSS (MiB).
    carpd_cpu: Vec<(usize, [f64; 2])>,
    carpd_pss: Vec<(usize, [f64; 2])>,
    ucarp_cpu: Vec<(usize, [f64; 2], Origin)>,
    ucarp_pss: Vec<(usize, [f64; 2], Origin)>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Origin {
    Measured,
    /// Scaled from the measurement at this count.
    Extrapolated(usize),
}

fn median(s: Option<Summary>) -> f64 {
    s.map_or(f64::NAN, |s| s.median)
}

impl Curve {
    fn of(steps: &[Step]) -> Curve {
        let mut c = Curve {
            carpd_cpu: Vec::new(),
            carpd_pss: Vec::new(),
            ucarp_cpu: Vec::new(),
            ucarp_pss: Vec::new(),
        };
        let base = steps
            .iter()
            .rev()
            .find_map(|st| st.ucarp.as_ref().map(|u| (st.n, u)));
        for st in steps {
            let l = &st.carpd.load;
            c.carpd_cpu
                .push((st.n, [0, 1].map(|k| median(cpu_pct(&l.cpu_s_per_min[k])))));
            c.carpd_pss.push((
                st.n,
                [0, 1].map(|k| median(ms_summary(l.pss_mib[k].iter().copied()))),
            ));
            let (u, origin, factor) = match (&st.ucarp, base) {
                (Some(u), _) => (u, Origin::Measured, 1.0),
                (None, Some((bn, u))) => (u, Origin::Extrapolated(bn), st.n as f64 / bn as f64),
                (None, None) => continue,
            };
            let cpu = [0, 1].map(|k| median(cpu_pct(&u.load.cpu_s_per_min[k])) * factor);
            let pss =
                [0, 1].map(|k| median(ms_summary(u.load.pss_mib[k].iter().copied())) * factor);
            c.ucarp_cpu.push((st.n, cpu, origin));
            c.ucarp_pss.push((st.n, pss, origin));
        }
        c
    }

    fn table(&self) -> String {
        let mut s = String::new();
        s.push_str("| VHIDs per node | carpd CPU master / backup (% of a core) | carpd PSS master / backup (MiB) | ucarp CPU master / backup (% of a core) | ucarp PSS master / backup (MiB) |\n");
        s.push_str("|---|---|---|---|---|\n");
        for (i, (n, cpu)) in self.carpd_cpu.iter().enumerate() {
            let pss = self.carpd_pss.get(i).map_or([f64::NAN; 2], |p| p.1);
            let ucarp = |v: &[(usize, [f64; 2], Origin)], digits: usize| {
                v.iter().find(|u| u.0 == *n).map_or("–".to_string(), |u| {
                    let label = match u.2 {
                        Origin::Measured => format!("measured, {} processes per node", n),
                        Origin::Extrapolated(b) => {
                            format!("extrapolated: measured at {b} × {}", *n as f64 / b as f64)
                        }
                    };
                    format!(
                        "{:.digits$} / {:.digits$} ({label})",
                        u.1[0],
                        u.1[1],
                        digits = digits
                    )
                })
            };
            let _ = writeln!(
                s,
                "| {n} | {:.3} / {:.3} | {:.1} / {:.1} | {} | {} |",
                cpu[0],
                cpu[1],
                pss[0],
                pss[1],
                ucarp(&self.ucarp_cpu, 2),
                ucarp(&self.ucarp_pss, 0)
            );
        }
        s
    }

    fn plot(&self) -> String {
        let carpd = |v: &[(usize, [f64; 2])], k: usize| -> Vec<Point> {
            v.iter()
                .map(|(n, y)| Point {
                    x: *n as f64,
                    y: y[k],
                    measured: true,
                })
                .collect()
        };
        let ucarp = |v: &[(usize, [f64; 2], Origin)], k: usize| -> Vec<Point> {
            v.iter()
                .map(|(n, y, o)| Point {
                    x: *n as f64,
                    y: y[k],
                    measured: *o == Origin::Measured,
                })
                .collect()
        };
        let series = |c: &[(usize, [f64; 2])], u: &[(usize, [f64; 2], Origin)]| {
            vec![
                Series::new("carpd, master node", "#1f77b4", false, carpd(c, 0)),
                Series::new("carpd, backup node", "#1f77b4", true, carpd(c, 1)),
                Series::new("ucarp, master node", "#d62728", false, ucarp(u, 0)),
                Series::new("ucarp, backup node", "#d62728", true, ucarp(u, 1)),
            ]
        };
        crate::plot::svg(
            "Cost per node against VHIDs per node (advbase 1; carpd: one process, ucarp: one per VHID)",
            &[
                Panel {
                    y_label: "CPU, % of one core".into(),
                    series: series(&self.carpd_cpu, &self.ucarp_cpu),
                },
                Panel {
                    y_label: "PSS, MiB".into(),
                    series: series(&self.carpd_pss, &self.ucarp_pss),
                },
            ],
        )
    }
}
