//! The report of a run: what was injected, what held and what did not;
//! each violation with the seed, the faults around it and the tails of the
//! nodes' logs.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use crate::bed::tail;
use crate::check::{Invariant, Violation};
use crate::fault::FaultKind;
use crate::run::Outcome;
use crate::timeline::Life;

/// Faults shown around a violation: those on within this much of it.
const AROUND: Duration = Duration::from_secs(10);
/// Violations shown in full; the others are counted.
const SHOWN: usize = 10;
/// Violations listed in one line each.
const LISTED: usize = 300;
/// Log lines shown per node and violation.
const LOG_LINES: usize = 12;

pub fn render(o: &Outcome) -> String {
    let s = &o.spec;
    let mut r = String::new();
    let kinds: Vec<&str> = s.kinds.iter().map(|k| k.name()).collect();
    let _ = writeln!(
        r,
        "carpd-chaos seed {}: {} nodes x {} links x {} VHIDs, {:?} of faults ({}), advbase {}",
        s.seed,
        s.nodes,
        s.links,
        s.vhids,
        s.duration,
        kinds.join(","),
        s.advbase
    );
    let _ = writeln!(
        r,
        "bounds: advertisement interval {:?}, master-down {:?}, margin {:?}, startup {:?}",
        o.bounds.adv_interval, o.bounds.master_down, o.bounds.margin, o.bounds.startup
    );
    let _ = writeln!(
        r,
        "checked: {:.1} s from convergence to the final shutdown, {} address changes of {} virtual addresses recorded",
        (o.timeline.steady_until - o.timeline.from).as_secs_f64(),
        o.timeline.addrs.len(),
        o.timeline.vips().len()
    );
    if o.interrupted {
        let _ = writeln!(r, "INTERRUPTED before the end of the schedule");
    }
    let _ = writeln!(r, "\nfaults injected (skipped: nothing to do at the time):");
    let by_kind = o.injected_by_kind();
    for k in &s.kinds {
        let (n, skipped) = by_kind.get(k).copied().unwrap_or_default();
        let _ = writeln!(r, "  {:<10} {n:>4}  (skipped {skipped})", k.name());
    }
    let total: usize = by_kind.values().map(|(n, _)| n).sum();
    let _ = writeln!(r, "  {:<10} {total:>4}", "total");
    let _ = writeln!(r, "\nviolations by invariant:");
    for (inv, n) in counts(&o.violations) {
        let _ = writeln!(r, "  {inv:<20} {n}");
    }
    let _ = writeln!(r, "  {:<20} {}", "total", o.violations.len());
    let _ = writeln!(
        r,
        "\nviolations by fault kind on at the time (or within its grace):"
    );
    for (k, n) in blame(o) {
        let _ = writeln!(r, "  {:<10} {n}", k.map_or("none", FaultKind::name));
    }

    for v in o.violations.iter().take(SHOWN) {
        render_violation(&mut r, o, v);
    }
    if o.violations.len() > SHOWN {
        let _ = writeln!(r, "\nevery violation, one line each (first {LISTED}):");
        for v in o.violations.iter().take(LISTED) {
            let _ = writeln!(
                r,
                "  {} {:<18} {:>7.3} s  {:<12} {}",
                offset(o, v.at),
                v.invariant.to_string(),
                v.length.as_secs_f64(),
                v.addr.as_deref().unwrap_or("-"),
                v.node.map_or(String::new(), |n| format!("node {n}"))
            );
        }
    }

    let _ = writeln!(r, "\ncarpd resources after warm-up ({:?}):", s.warmup);
    for i in &o.incarnations {
        let _ = writeln!(
            r,
            "  node {} pid {:>7}: {:>3} samples, RSS {} -> max {} KiB (by quarter of its life: {}), descriptors {} -> {}",
            i.node,
            i.pid,
            i.samples,
            i.rss_first_kib,
            i.rss_max_kib,
            i.rss_quarters_kib.map(|k| k.to_string()).join(" / "),
            i.fds_first,
            i.fds_last
        );
    }
    if let Some(rss) = &o.status_rss {
        let _ = writeln!(
            r,
            "\nRSS before the end-of-run `carpd status --json` read, after it, and after two more (KiB):"
        );
        for node in 0..rss.first().map_or(0, Vec::len) {
            let seq: Vec<String> = rss
                .iter()
                .map(|at| at[node].map_or("?".into(), |k| k.to_string()))
                .collect();
            let _ = writeln!(r, "  node {node}: {}", seq.join(" -> "));
        }
    }
    if let Some(c) = &o.soak_counters {
        let _ = writeln!(r, "\nadvertisements over the run (soak accounting):");
        for (i, c) in c.iter().enumerate() {
            let _ = writeln!(
                r,
                "  node {i}: sent {}, received {}, dropped {}",
                c.sent, c.received, c.dropped
            );
        }
    }
    let _ = writeln!(
        r,
        "\ncapture at the switch (link 0): {} ({} packets)",
        o.capture_file.display(),
        packets(&o.capture_file).map_or("unreadable".to_string(), |n| n.to_string())
    );
    let _ = writeln!(
        r,
        "files (configurations, logs, hooks): {}",
        s.out.display()
    );
    let _ = writeln!(r, "replay: {}", replay_command(o));
    r
}

pub fn replay_command(o: &Outcome) -> String {
    let s = &o.spec;
    let kinds: Vec<&str> = s.kinds.iter().map(|k| k.name()).collect();
    let faults = if kinds.is_empty() {
        "none".to_string()
    } else {
        kinds.join(",")
    };
    format!(
        "carpd-chaos --seed {} --nodes {} --links {} --vhids {} --duration {}s --advbase {} --faults {faults}{}",
        s.seed,
        s.nodes,
        s.links,
        s.vhids,
        s.duration.as_secs(),
        s.advbase,
        if s.steady_loss.is_some() {
            " --soak"
        } else {
            ""
        }
    )
}

fn counts(v: &[Violation]) -> BTreeMap<Invariant, usize> {
    let mut m = BTreeMap::new();
    for x in v {
        *m.entry(x.invariant).or_insert(0) += 1;
    }
    m
}

/// For each violation, the kind of the latest fault whose window (start to
/// heal + master-down + interval) contains it.
fn blame(o: &Outcome) -> BTreeMap<Option<FaultKind>, usize> {
    let grace = o.bounds.master_down + o.bounds.adv_interval + o.bounds.margin;
    let mut m = BTreeMap::new();
    for v in &o.violations {
        let kind = o
            .timeline
            .faults
            .iter()
            .filter(|f| f.start <= v.at && v.at <= f.heal + grace + f.fault.hook_delay())
            .max_by_key(|f| f.start)
            .map(|f| f.fault.kind());
        *m.entry(kind).or_insert(0) += 1;
    }
    m
}

fn offset(o: &Outcome, t: Instant) -> String {
    if t >= o.t0 {
        format!("+{:.3} s", (t - o.t0).as_secs_f64())
    } else {
        format!("-{:.3} s", (o.t0 - t).as_secs_f64())
    }
}

fn render_violation(r: &mut String, o: &Outcome, v: &Violation) {
    let _ = writeln!(
        r,
        "\nVIOLATION [{}] seed {} at {} (fault phase clock) for {:.3} s{}{}: {}",
        v.invariant,
        o.spec.seed,
        offset(o, v.at),
        v.length.as_secs_f64(),
        v.addr
            .as_ref()
            .map_or(String::new(), |a| format!(", address {a}")),
        v.node.map_or(String::new(), |n| format!(", node {n}")),
        v.detail
    );
    let _ = writeln!(r, "  faults within {AROUND:?}:");
    for f in &o.timeline.faults {
        if f.start <= v.at + AROUND && v.at <= f.heal + AROUND {
            let _ = writeln!(
                r,
                "    {} .. {}  node {}  {}",
                offset(o, f.start),
                offset(o, f.heal),
                f.node,
                f.fault
            );
        }
    }
    for e in o
        .timeline
        .life
        .iter()
        .filter(|e| e.at + AROUND >= v.at && e.at <= v.at + AROUND && e.what != Life::Spawned)
    {
        let _ = writeln!(
            r,
            "    {}  node {}  carpd {:?}",
            offset(o, e.at),
            e.node,
            e.what
        );
    }
    // The wall-clock time of the violation, to cut each log there.
    let wall = SystemTime::now()
        .checked_sub(v.at.elapsed())
        .map(|t| t + Duration::from_secs(2));
    for (node, files) in o.log_files.iter().enumerate() {
        let Some(file) = log_alive_at(files, wall) else {
            continue;
        };
        let text = fs::read_to_string(file).unwrap_or_default();
        let before: String = text
            .lines()
            .filter(|l| wall.is_none_or(|w| line_time(l).is_none_or(|t| t <= w)))
            .collect::<Vec<_>>()
            .join("\n");
        let _ = writeln!(r, "  node {node} log {} (up to 2 s after):", file.display());
        for line in tail(&before, LOG_LINES).lines() {
            let _ = writeln!(r, "    {line}");
        }
    }
}

/// The last log file of a node whose first line is not later than `wall`.
fn log_alive_at(files: &[std::path::PathBuf], wall: Option<SystemTime>) -> Option<&Path> {
    files
        .iter()
        .rev()
        .find(|f| {
            let first = fs::read_to_string(f)
                .ok()
                .and_then(|t| t.lines().next().and_then(line_time));
            match (first, wall) {
                (Some(first), Some(w)) => first <= w,
                _ => true,
            }
        })
        .map(|p| p.as_path())
}

/// The timestamp a log line starts with (RFC 3339), if any.
fn line_time(line: &str) -> Option<SystemTime> {
    let first = line.split_whitespace().next()?;
    humantime::parse_rfc3339_weak(first.trim_end_matches('Z')).ok()
}

/// Packets in a capture file, counted by tcpdump.
fn packets(file: &Path) -> Option<usize> {
    let out = std::process::Command::new("tcpdump")
        .args(["-r", file.to_str()?, "-n", "-q"])
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    Some(out.stdout.iter().filter(|b| **b == b'\n').count())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_timestamps() {
        let t = line_time("2026-11-29T20:31:29.123456Z  INFO carpd: running").expect("parsed");
        let back = humantime::format_rfc3339_micros(t).to_string();
        assert_eq!(back, "2026-11-29T20:31:29.123456Z");
        assert_eq!(line_time("INFO no time"), None);
    }
}
