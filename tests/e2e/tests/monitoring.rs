//! The monitoring kit in `examples/monitoring` against the daemon: every
//! `carpd_*` series its alerting rules, their tests and its dashboard name
//! is one a running carpd serves on `/metrics` (scraped inside a network
//! namespace: needs root), every alert has a unit test, and the dashboard
//! is JSON importable with a Prometheus datasource input.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::time::Duration;

use carpd_testbed::{Cluster, Config, Daemon, Netns, try_in_netns, wait_until};

const RULES: &str = "carpd.rules.yml";
const RULE_TESTS: &str = "carpd.rules.test.yml";
const DASHBOARD: &str = "carpd.dashboard.json";
const METRICS_PORT: u16 = 9750;
/// Generous: start-up on a busy 2-core machine.
const SETTLE: Duration = Duration::from_secs(15);

fn kit_file(name: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples/monitoring")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every `carpd_...` token of `text`: the series names a rule, test or
/// query refers to (alert names are CamelCase and do not match).
fn series_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("carpd_") {
        let tail = &rest[at..];
        let len = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        // Part of a longer identifier (`xcarpd_...`) is not a series.
        let starts_word = rest[..at]
            .chars()
            .next_back()
            .is_none_or(|c| !(c.is_ascii_alphanumeric() || c == '_'));
        if starts_word {
            names.insert(tail[..len].to_string());
        }
        rest = &tail[len..];
    }
    names
}

/// The names an OpenMetrics exposition serves: every sample's name, and
/// for each `# TYPE` line the family and the sample names it implies
/// (`_total` for a counter, `_bucket`, `_sum`, `_count` for a histogram),
/// so that a family without samples yet still counts.
fn served_names(exposition: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in exposition.lines() {
        if let Some(decl) = line.strip_prefix("# TYPE ") {
            let mut parts = decl.split(' ');
            let (Some(family), Some(kind)) = (parts.next(), parts.next()) else {
                continue;
            };
            names.insert(family.to_string());
            let suffixes: &[&str] = match kind {
                "counter" => &["_total"],
                "histogram" => &["_bucket", "_sum", "_count"],
                _ => &[],
            };
            names.extend(suffixes.iter().map(|s| format!("{family}{s}")));
        } else if !line.starts_with('#') && !line.is_empty() {
            let end = line.find(['{', ' ']).unwrap_or(line.len());
            names.insert(line[..end].to_string());
        }
    }
    names
}

/// `GET /metrics` from inside `ns`; `None` while nothing listens yet.
fn scrape(ns: &Netns) -> Option<String> {
    try_in_netns(ns, || {
        let mut s = TcpStream::connect(("127.0.0.1", METRICS_PORT))?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n")?;
        let mut out = String::new();
        s.read_to_string(&mut out)?;
        Ok(out)
    })
    .ok()
}

#[test]
fn every_series_the_kit_uses_is_served_by_the_daemon() {
    let mut used = BTreeSet::new();
    for file in [RULES, RULE_TESTS, DASHBOARD] {
        used.extend(series_names(&kit_file(file)));
    }
    // The extraction found the kit's series at all (state, transitions,
    // drops, hooks, demotion, lateness, ...).
    assert!(used.len() >= 10, "too few series found: {used:?}");

    let c = Cluster::new(1, 1);
    let config = format!(
        "{}\n[metrics]\nlisten = \"127.0.0.1:{METRICS_PORT}\"\n",
        Config::default()
            .vhid("eth0", 1, &["10.99.0.100/24".to_string()])
            .to_toml()
    );
    let path = c.write_config(0, &config);
    let _daemon = Daemon::carpd(c.host(0), "monitoring", c.dir.path(), &path, &[]);
    let mut body = String::new();
    let ok = wait_until(SETTLE, Duration::from_millis(50), || {
        body = scrape(c.host(0)).unwrap_or_default();
        // Running, with its VHID past start-up.
        body.contains("carpd_vhid_transitions_total{")
    });
    assert!(ok.is_some(), "no VHID series on /metrics:\n{body}");
    let (head, exposition) = body.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");

    let served = served_names(exposition);
    let missing: Vec<&String> = used.iter().filter(|n| !served.contains(*n)).collect();
    assert!(
        missing.is_empty(),
        "the kit uses series carpd does not serve: {missing:?}\nserved: {served:?}"
    );
}

#[test]
fn every_alert_has_a_unit_test() {
    let rules = kit_file(RULES);
    let tests = kit_file(RULE_TESTS);
    let alerts: Vec<&str> = rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert: "))
        .map(str::trim)
        .collect();
    assert!(alerts.len() >= 9, "alerts found: {alerts:?}");
    let tested: BTreeSet<&str> = tests
        .lines()
        .filter_map(|l| l.trim().strip_prefix("alertname: "))
        .map(str::trim)
        .collect();
    for alert in &alerts {
        assert!(
            tested.contains(alert),
            "{alert} has no test in {RULE_TESTS}"
        );
    }
    for name in &tested {
        assert!(
            alerts.contains(name),
            "{RULE_TESTS} tests unknown alert {name}"
        );
    }
}

#[test]
fn the_dashboard_is_json_with_a_prometheus_input() {
    let dashboard: serde_json::Value = serde_json::from_str(&kit_file(DASHBOARD)).unwrap();
    let inputs = dashboard["__inputs"].as_array().unwrap();
    assert!(
        inputs
            .iter()
            .any(|i| i["name"] == "DS_PROMETHEUS" && i["pluginId"] == "prometheus"),
        "{inputs:?}"
    );
    let panels = dashboard["panels"].as_array().unwrap();
    let mut queries = 0;
    for panel in panels.iter().filter(|p| p["type"] != "row") {
        assert_eq!(panel["datasource"]["uid"], "${DS_PROMETHEUS}", "{panel}");
        for target in panel["targets"].as_array().unwrap() {
            assert_eq!(target["datasource"]["uid"], "${DS_PROMETHEUS}", "{target}");
            assert!(target["expr"].as_str().is_some_and(|e| !e.is_empty()));
            queries += 1;
        }
    }
    assert!(queries >= 8, "{queries} queries");
}

#[test]
fn series_names_are_read_as_whole_words() {
    assert_eq!(
        series_names("sum(rate(carpd_hook_runs_total[5m])) / x_carpd_y carpd_vhid_demote>0"),
        ["carpd_hook_runs_total", "carpd_vhid_demote"]
            .map(String::from)
            .into()
    );
    let served = served_names(
        "# TYPE carpd_hook_runs counter\n# TYPE carpd_t histogram\ncarpd_vhid_demote{a=\"b\"} 0\n# EOF\n",
    );
    for name in [
        "carpd_hook_runs_total",
        "carpd_t_bucket",
        "carpd_t_count",
        "carpd_vhid_demote",
    ] {
        assert!(served.contains(name), "{name}: {served:?}");
    }
}
