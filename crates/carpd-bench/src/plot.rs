//! A small SVG line plot written as text: panels side by side, each with
//! logarithmic axes (the implementations differ by orders of magnitude),
//! measured points filled and extrapolated ones hollow.

use std::fmt::Write as _;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Point {
    pub x: f64,
    pub y: f64,
    /// Measured, or extrapolated (drawn hollow, named in the legend).
    pub measured: bool,
}

#[derive(Debug, Clone)]
pub struct Series {
    name: String,
    color: &'static str,
    dashed: bool,
    points: Vec<Point>,
}

impl Series {
    pub fn new(name: &str, color: &'static str, dashed: bool, points: Vec<Point>) -> Series {
        Series {
            name: name.into(),
            color,
            dashed,
            // a point with no positive value has no place on a log axis
            points: points
                .into_iter()
                .filter(|p| p.x > 0.0 && p.y > 0.0 && p.x.is_finite() && p.y.is_finite())
                .collect(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Panel {
    pub y_label: String,
    pub series: Vec<Series>,
}

const PANEL_W: f64 = 460.0;
const PANEL_H: f64 = 420.0;
/// Plot area inside a panel: left, top, right, bottom margins.
const MARGIN: (f64, f64, f64, f64) = (64.0, 40.0, 16.0, 150.0);

/// A logarithmic axis over whole powers of `base` around the data.
#[derive(Debug, Clone, Copy)]
struct LogAxis {
    lo: f64,
    hi: f64,
}

impl LogAxis {
    fn around(values: impl Iterator<Item = f64>, base: f64) -> LogAxis {
        let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
        for v in values {
            lo = lo.min(v.log(base));
            hi = hi.max(v.log(base));
        }
        if !lo.is_finite() || !hi.is_finite() {
            return LogAxis { lo: 0.0, hi: 1.0 };
        }
        let (lo, hi) = (lo.floor(), hi.ceil());
        LogAxis {
            lo,
            hi: if hi > lo { hi } else { lo + 1.0 },
        }
    }

    /// Room for the markers at either end, in powers of the base.
    fn padded(self, by: f64) -> LogAxis {
        LogAxis {
            lo: self.lo - by,
            hi: self.hi + by,
        }
    }

    /// Where `exp` (log of a value) falls, 0 to 1.
    fn frac(self, exp: f64) -> f64 {
        (exp - self.lo) / (self.hi - self.lo)
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn fmt_tick(v: f64) -> String {
    if v >= 1.0 {
        format!("{v:.0}")
    } else {
        let s = format!("{v:.4}");
        s.trim_end_matches('0').to_string()
    }
}

/// The whole figure: `title` over the panels, left to right.
pub fn svg(title: &str, panels: &[Panel]) -> String {
    let width = PANEL_W * panels.len() as f64;
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{PANEL_H}" viewBox="0 0 {width} {PANEL_H}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(
        s,
        r#"<rect width="{width}" height="{PANEL_H}" fill="white"/>"#
    );
    let _ = writeln!(
        s,
        r#"<text x="{}" y="18" text-anchor="middle" font-size="14">{}</text>"#,
        width / 2.0,
        escape(title)
    );
    for (i, p) in panels.iter().enumerate() {
        panel(&mut s, PANEL_W * i as f64, p);
    }
    s.push_str("</svg>\n");
    s
}

fn panel(s: &mut String, left: f64, p: &Panel) {
    let (ml, mt, mr, mb) = MARGIN;
    let (x0, y0) = (left + ml, mt);
    let (w, h) = (PANEL_W - ml - mr, PANEL_H - mt - mb);
    let points = || p.series.iter().flat_map(|se| se.points.iter());
    let xa = LogAxis::around(points().map(|pt| pt.x), 2.0).padded(0.3);
    let ya = LogAxis::around(points().map(|pt| pt.y), 10.0);
    let px = |x: f64| x0 + xa.frac(x.log2()) * w;
    let py = |y: f64| y0 + h - ya.frac(y.log10()) * h;
    let _ = writeln!(
        s,
        r##"<rect x="{x0}" y="{y0}" width="{w}" height="{h}" fill="none" stroke="#444"/>"##
    );
    // y: a line and a label per power of ten
    for e in (ya.lo as i32)..=(ya.hi as i32) {
        let v = 10f64.powi(e);
        let y = py(v);
        let _ = writeln!(
            s,
            r##"<line x1="{x0}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
            x0 + w,
            x0 - 4.0,
            y + 4.0,
            fmt_tick(v)
        );
    }
    // x: a line and a label per VHID count plotted
    let mut xs: Vec<f64> = points().map(|pt| pt.x).collect();
    xs.sort_by(f64::total_cmp);
    xs.dedup();
    for x in xs {
        let xp = px(x);
        let _ = writeln!(
            s,
            r##"<line x1="{xp:.1}" y1="{y0}" x2="{xp:.1}" y2="{:.1}" stroke="#eee"/><text x="{xp:.1}" y="{:.1}" text-anchor="middle">{x:.0}</text>"##,
            y0 + h,
            y0 + h + 16.0
        );
    }
    let _ = writeln!(
        s,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">VHIDs per node</text>"#,
        x0 + w / 2.0,
        y0 + h + 34.0
    );
    let _ = writeln!(
        s,
        r#"<text transform="translate({:.1},{:.1}) rotate(-90)" text-anchor="middle">{}</text>"#,
        left + 14.0,
        y0 + h / 2.0,
        escape(&p.y_label)
    );
    for se in &p.series {
        let dash = if se.dashed {
            r#" stroke-dasharray="6 4""#
        } else {
            ""
        };
        let path: Vec<String> = se
            .points
            .iter()
            .map(|pt| format!("{:.1},{:.1}", px(pt.x), py(pt.y)))
            .collect();
        let _ = writeln!(
            s,
            r#"<polyline points="{}" fill="none" stroke="{}" stroke-width="2"{dash}/>"#,
            path.join(" "),
            se.color
        );
        for pt in &se.points {
            let fill = if pt.measured { se.color } else { "white" };
            let _ = writeln!(
                s,
                r#"<circle cx="{:.1}" cy="{:.1}" r="4" fill="{fill}" stroke="{}" stroke-width="1.5"/>"#,
                px(pt.x),
                py(pt.y),
                se.color
            );
        }
    }
    legend(s, left + ml, y0 + h + 52.0, &p.series);
}

fn legend(s: &mut String, x: f64, mut y: f64, series: &[Series]) {
    for se in series {
        let dash = if se.dashed {
            r#" stroke-dasharray="6 4""#
        } else {
            ""
        };
        let _ = writeln!(
            s,
            r#"<line x1="{x}" y1="{y}" x2="{}" y2="{y}" stroke="{}" stroke-width="2"{dash}/><text x="{}" y="{}">{}</text>"#,
            x + 24.0,
            se.color,
            x + 30.0,
            y + 4.0,
            escape(&se.name)
        );
        y += 18.0;
    }
    let extrapolated: Vec<&str> = series
        .iter()
        .filter(|se| se.points.iter().any(|p| !p.measured))
        .map(|se| se.name.as_str())
        .collect();
    if !extrapolated.is_empty() {
        let _ = writeln!(
            s,
            r##"<circle cx="{}" cy="{y}" r="4" fill="white" stroke="#444" stroke-width="1.5"/><text x="{}" y="{}">hollow: extrapolated, not measured</text>"##,
            x + 12.0,
            x + 30.0,
            y + 4.0
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pt(x: f64, y: f64, measured: bool) -> Point {
        Point { x, y, measured }
    }

    #[test]
    fn extrapolated_points_are_hollow_and_named_in_the_legend() {
        let panel = Panel {
            y_label: "CPU".into(),
            series: vec![
                Series::new(
                    "carpd",
                    "#00f",
                    false,
                    vec![pt(250.0, 0.1, true), pt(4000.0, 1.5, true)],
                ),
                Series::new(
                    "ucarp",
                    "#f00",
                    true,
                    vec![pt(250.0, 3.0, true), pt(4000.0, 48.0, false)],
                ),
            ],
        };
        let out = svg("t", &[panel]);
        assert!(out.starts_with("<svg") && out.trim_end().ends_with("</svg>"));
        // four points and the legend's hollow marker
        assert_eq!(out.matches("<circle").count(), 5);
        assert_eq!(out.matches(r##"fill="white" stroke="#f00""##).count(), 1);
        assert_eq!(out.matches("hollow: extrapolated, not measured").count(), 1);
        // decades from 0.1 to 100 on the y axis
        for tick in [">0.1<", ">1<", ">10<", ">100<"] {
            assert!(out.contains(tick), "{tick}");
        }
    }

    #[test]
    fn no_extrapolation_note_when_all_is_measured() {
        let panel = Panel {
            y_label: "PSS".into(),
            series: vec![Series::new(
                "carpd",
                "#00f",
                false,
                vec![pt(250.0, 10.0, true), pt(4000.0, 40.0, true)],
            )],
        };
        assert!(!svg("t", &[panel]).contains("extrapolated"));
    }

    #[test]
    fn points_off_a_log_axis_are_left_out() {
        let s = Series::new(
            "x",
            "#000",
            false,
            vec![
                pt(250.0, 0.0, true),
                pt(500.0, f64::NAN, true),
                pt(1000.0, 2.0, true),
            ],
        );
        assert_eq!(s.points, vec![pt(1000.0, 2.0, true)]);
    }

    #[test]
    fn log_axis_spans_whole_decades() {
        let a = LogAxis::around([0.3, 45.0].into_iter(), 10.0);
        assert_eq!((a.lo, a.hi), (-1.0, 2.0));
        let one = LogAxis::around([10.0].into_iter(), 10.0);
        assert_eq!((one.lo, one.hi), (1.0, 2.0));
    }
}
