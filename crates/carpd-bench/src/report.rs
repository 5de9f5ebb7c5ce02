//! Figures (median, min, max over rounds) and the Markdown report.

use std::fmt::Write as _;

/// Median, min and max of one figure over repeated rounds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Summary {
    pub n: usize,
    pub median: f64,
    pub min: f64,
    pub max: f64,
    /// Scaled from a measurement at another count, not measured: the cell
    /// says so.
    pub extrapolated: bool,
}

impl Summary {
    pub fn of(values: &[f64]) -> Option<Summary> {
        let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        let n = v.len();
        let median = if n % 2 == 1 {
            v[n / 2]
        } else {
            f64::midpoint(v[n / 2 - 1], v[n / 2])
        };
        Some(Summary {
            n,
            median,
            min: v[0],
            max: v[n - 1],
            extrapolated: false,
        })
    }
}

/// The nearest-rank `q` quantile of `values` (`q` = 0: the smallest).
pub fn nearest_rank(values: &[f64], q: f64) -> Option<f64> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    v.sort_by(f64::total_cmp);
    let rank = ((v.len() as f64 * q).ceil() as usize).clamp(1, v.len().max(1)) - 1;
    v.get(rank).copied()
}

/// How a figure compares with its target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Met,
    Missed,
    /// No target (ucarp, or a figure given for context).
    None,
}

/// One row of the results table.
#[derive(Debug, Clone)]
pub struct Row {
    pub item: String,
    pub what: String,
    pub unit: &'static str,
    pub carpd: Option<Summary>,
    pub ucarp: Option<Summary>,
    pub target: String,
    pub verdict: Verdict,
    pub note: String,
}

fn fmt_num(x: f64) -> String {
    let a = x.abs();
    if a >= 100.0 {
        format!("{x:.0}")
    } else if a >= 10.0 {
        format!("{x:.1}")
    } else if a >= 1.0 {
        format!("{x:.2}")
    } else {
        format!("{x:.3}")
    }
}

pub fn fmt_summary(s: Option<Summary>) -> String {
    let Some(s) = s else {
        return "–".to_string();
    };
    let figure = if s.n == 1 {
        fmt_num(s.median)
    } else {
        format!(
            "{} ({}–{}, n={})",
            fmt_num(s.median),
            fmt_num(s.min),
            fmt_num(s.max),
            s.n
        )
    };
    if s.extrapolated {
        format!("{figure}, extrapolated")
    } else {
        figure
    }
}

/// The results table: carpd and ucarp side by side, with the target.
pub fn table(rows: &[Row]) -> String {
    table_against(rows, "ucarp")
}

/// The results table with `other` naming the second column (the
/// [`Row::ucarp`] figures).
pub fn table_against(rows: &[Row], other: &str) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "| # | figure | unit | carpd: median (min–max, n) | {other}: median (min–max, n) | carpd target | met | notes |"
    );
    s.push_str("|---|---|---|---|---|---|---|---|\n");
    for r in rows {
        let verdict = match r.verdict {
            Verdict::Met => "yes",
            Verdict::Missed => "**no**",
            Verdict::None => "",
        };
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            r.item,
            r.what,
            r.unit,
            fmt_summary(r.carpd),
            fmt_summary(r.ucarp),
            r.target,
            verdict,
            r.note
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summaries() {
        assert_eq!(Summary::of(&[]), None);
        let s = Summary::of(&[3.0, 1.0, 2.0]).unwrap();
        assert_eq!((s.n, s.median, s.min, s.max), (3, 2.0, 1.0, 3.0));
        assert_eq!(Summary::of(&[1.0, 2.0, 4.0, 8.0]).unwrap().median, 3.0);
        assert_eq!(fmt_summary(Summary::of(&[0.5])), "0.500");
        let v = [-3.0, 0.5, -2.5, 1.0, f64::NAN];
        assert_eq!(nearest_rank(&v, 0.0), Some(-3.0));
        assert_eq!(nearest_rank(&v, 0.5), Some(-2.5));
        assert_eq!(nearest_rank(&v, 1.0), Some(1.0));
        assert_eq!(nearest_rank(&[], 0.5), None);
    }
}
