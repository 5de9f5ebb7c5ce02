//! Each carpd's resident memory and open descriptors, sampled from /proc
//! during the run, and the check that they stay flat: per process after its
//! warm-up, and between successive processes of a node at the same age.

use std::collections::BTreeMap;
use std::fs;
use std::time::{Duration, Instant};

use crate::check::{Invariant, Violation};

#[derive(Debug, Clone, Copy)]
pub struct Sample {
    pub at: Instant,
    pub node: usize,
    pub pid: i32,
    /// Since the process was spawned.
    pub age: Duration,
    pub rss_kib: u64,
    pub fds: usize,
}

/// VmRSS (KiB) and the number of open descriptors of `pid`, if it exists.
pub fn read(pid: i32) -> Option<(u64, usize)> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    let fds = fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count();
    Some((rss, fds))
}

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Samples younger than this are not compared (start-up allocations).
    pub warmup: Duration,
    pub rss_growth_kib: u64,
}

/// One process's figures after its warm-up.
#[derive(Debug, Clone)]
pub struct Incarnation {
    pub node: usize,
    pub pid: i32,
    pub samples: usize,
    pub rss_first_kib: u64,
    pub rss_max_kib: u64,
    pub fds_first: usize,
    pub fds_last: usize,
    pub first_at: Instant,
    /// RSS (KiB) at the end of each quarter of the process's samples after
    /// warm-up: whether it grew at the start and then held, or kept growing.
    pub rss_quarters_kib: [u64; 4],
}

/// Descriptors of a short-lived child (a hook's pipes) may be open at one
/// sample: the fewest over this many samples in a row is the process's own.
const FD_RUN: usize = 3;

pub fn incarnations(samples: &[Sample], limits: &Limits) -> Vec<Incarnation> {
    let mut by_pid: BTreeMap<(usize, i32), Vec<&Sample>> = BTreeMap::new();
    for s in samples.iter().filter(|s| s.age >= limits.warmup) {
        by_pid.entry((s.node, s.pid)).or_default().push(s);
    }
    let mut out: Vec<Incarnation> = by_pid
        .into_iter()
        .filter(|(_, v)| v.len() >= 2 * FD_RUN)
        .map(|((node, pid), mut v)| {
            v.sort_by_key(|s| s.at);
            let min_fds = |w: &[&Sample]| w.iter().map(|s| s.fds).min().unwrap_or(0);
            Incarnation {
                node,
                pid,
                samples: v.len(),
                rss_first_kib: v[0].rss_kib,
                rss_max_kib: v.iter().map(|s| s.rss_kib).max().unwrap_or(0),
                fds_first: min_fds(&v[..FD_RUN]),
                fds_last: min_fds(&v[v.len() - FD_RUN..]),
                first_at: v[0].at,
                rss_quarters_kib: [1, 2, 3, 4].map(|q| v[(v.len() * q / 4).max(1) - 1].rss_kib),
            }
        })
        .collect();
    out.sort_by_key(|i| i.first_at);
    out
}

/// RSS growth and descriptor leaks within each process, and between the
/// first process of a node and its later ones (same configuration, same
/// age at the first compared sample).
pub fn check(samples: &[Sample], limits: &Limits) -> Vec<Violation> {
    let incs = incarnations(samples, limits);
    let mut out = Vec::new();
    let violation = |inc: &Incarnation, detail: String| Violation {
        invariant: Invariant::Resources,
        at: inc.first_at,
        length: Duration::ZERO,
        addr: None,
        node: Some(inc.node),
        detail,
    };
    for inc in &incs {
        let growth = inc.rss_max_kib.saturating_sub(inc.rss_first_kib);
        if growth >= limits.rss_growth_kib {
            out.push(violation(
                inc,
                format!(
                    "pid {}: RSS grew {growth} KiB after warm-up ({} -> {} KiB)",
                    inc.pid, inc.rss_first_kib, inc.rss_max_kib
                ),
            ));
        }
        if inc.fds_last > inc.fds_first {
            out.push(violation(
                inc,
                format!(
                    "pid {}: open descriptors {} -> {} after warm-up",
                    inc.pid, inc.fds_first, inc.fds_last
                ),
            ));
        }
        if let Some(first) = incs.iter().find(|i| i.node == inc.node)
            && first.pid != inc.pid
        {
            let growth = inc.rss_first_kib.saturating_sub(first.rss_first_kib);
            if growth >= limits.rss_growth_kib {
                out.push(violation(
                    inc,
                    format!(
                        "pid {}: RSS after warm-up {} KiB, {growth} KiB above the node's first carpd (pid {})",
                        inc.pid, inc.rss_first_kib, first.pid
                    ),
                ));
            }
            if inc.fds_first > first.fds_first {
                out.push(violation(
                    inc,
                    format!(
                        "pid {}: {} descriptors after warm-up, the node's first carpd (pid {}) had {}",
                        inc.pid, inc.fds_first, first.pid, first.fds_first
                    ),
                ));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series(t0: Instant, node: usize, pid: i32, rss: &[u64], fds: &[usize]) -> Vec<Sample> {
        rss.iter()
            .zip(fds)
            .enumerate()
            .map(|(i, (r, f))| Sample {
                at: t0 + Duration::from_secs(i as u64),
                node,
                pid,
                age: Duration::from_secs(i as u64),
                rss_kib: *r,
                fds: *f,
            })
            .collect()
    }

    const LIMITS: Limits = Limits {
        warmup: Duration::from_secs(2),
        rss_growth_kib: 2048,
    };

    #[test]
    fn flat_process_passes_and_warmup_is_ignored() {
        let t0 = Instant::now();
        let s = series(
            t0,
            0,
            10,
            &[1000, 5000, 9000, 9100, 9000, 9500, 9200, 9300],
            &[3, 9, 12, 12, 14, 12, 12, 12],
        );
        assert!(check(&s, &LIMITS).is_empty());
    }

    #[test]
    fn rss_growth_and_descriptor_leak() {
        let t0 = Instant::now();
        let s = series(
            t0,
            0,
            10,
            &[9000, 9000, 9000, 9500, 10_000, 10_500, 11_000, 11_100],
            &[12, 12, 12, 12, 12, 13, 13, 13],
        );
        let v = check(&s, &LIMITS);
        assert_eq!(v.len(), 2, "{v:?}");
        assert!(v[0].detail.contains("RSS grew"));
        assert!(v[1].detail.contains("12 -> 13"));
    }

    #[test]
    fn later_process_compared_with_the_first() {
        let t0 = Instant::now();
        let mut s = series(t0, 1, 10, &[9000; 8], &[12; 8]);
        s.extend(series(
            t0 + Duration::from_secs(20),
            1,
            11,
            &[12_000; 8],
            &[13; 8],
        ));
        // Another node's figures do not count.
        s.extend(series(t0, 0, 12, &[20_000; 8], &[40; 8]));
        let v = check(&s, &LIMITS);
        assert_eq!(v.len(), 2, "{v:?}");
        assert!(v.iter().all(|v| v.node == Some(1)));
    }

    #[test]
    fn reads_own_process() {
        let (rss, fds) = read(std::process::id() as i32).expect("own /proc entry");
        assert!(rss > 0 && fds > 0);
        assert_eq!(read(-1), None);
    }
}
