//! Operating carpd: the control socket (`status`, `demote`, `promote`,
//! `reload`), metrics, start-up hygiene after a crash, and refusing a
//! second daemon on the same socket. Real processes in network namespaces
//! (needs root).

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::time::{Duration, Instant};

use carpd_testbed::{
    Cluster, Config, Daemon, adv_interval, client, http_get, master_down, sample, text, try_status,
    wait_until,
};
use serde_json::Value;

const VIP: &str = "10.99.0.100";
const POLL: Duration = Duration::from_millis(20);
/// Generous: start-up, elections and restarts on a busy 2-core machine.
const SETTLE: Duration = Duration::from_secs(15);

fn vip(n: u8) -> String {
    format!("10.99.0.{}/24", 100 + n)
}

fn config(advskew: u8) -> Config {
    Config::default()
        .advskew(advskew)
        .vhid("eth0", 1, &[vip(0)])
}

/// `carpd status --json`, parsed.
fn status(socket: &Path) -> Value {
    let o = client(&["status", "--json", "--socket", socket.to_str().unwrap()]);
    assert!(o.status.success(), "status failed: {}", text(&o.stderr));
    serde_json::from_slice(&o.stdout).expect("status --json is JSON")
}

fn vhid(status: &Value, vhid: u64) -> &Value {
    status["vhids"]
        .as_array()
        .expect("vhids array")
        .iter()
        .find(|v| v["vhid"] == vhid)
        .unwrap_or_else(|| panic!("vhid {vhid} missing from {status}"))
}

fn state(socket: &Path, id: u64) -> Option<String> {
    let s = try_status(socket)?;
    Some(vhid(&s, id)["state"].as_str()?.to_string())
}

fn wait_state(socket: &Path, id: u64, want: &str, timeout: Duration) {
    let mut last = None;
    let ok = wait_until(timeout, POLL, || {
        last = state(socket, id);
        last.as_deref() == Some(want)
    });
    assert!(
        ok.is_some(),
        "vhid {id}: state {last:?} after {timeout:?}, expected {want}"
    );
}

#[test]
fn status_reflects_a_failover_within_one_interval() {
    let mut c = Cluster::new(2, 1);
    c.start(0, &config(0));
    c.start(1, &config(100));
    let (s0, s1) = (c.node(0).socket(), c.node(1).socket());
    c.wait_owners(VIP, &[0], SETTLE);
    wait_state(&s0, 1, "MASTER", SETTLE);
    wait_state(&s1, 1, "BACKUP", SETTLE);
    let before = status(&s1);
    let b = vhid(&before, 1);
    assert_eq!(b["interface"], "eth0");
    assert_eq!(b["addresses"][0], vip(0));
    assert_eq!(b["advbase"], 1);
    assert_eq!(b["advskew"], 100);
    assert_eq!(b["demote"], 0);
    assert_eq!(b["master"], "10.99.0.1");
    assert_eq!(b["last_reason"], "startup");
    assert!(b["adverts_received"].as_u64().unwrap() > 0, "{b}");
    assert_eq!(b["adverts_sent"], 0);
    assert!(b["drops"].is_object() && b["transitions_by_reason"]["startup"] == 1);
    let table = client(&["status", "--socket", s1.to_str().unwrap()]);
    assert!(table.status.success());
    assert!(
        text(&table.stdout).contains("BACKUP"),
        "{}",
        text(&table.stdout)
    );

    c.node(0).sigkill();
    // node 0's address stays (it was killed): wait for node 1 to add its own
    wait_until(SETTLE, POLL, || c.owners(VIP).contains(&1)).expect("node 1 took over");
    let appeared = Instant::now();
    wait_state(&s1, 1, "MASTER", adv_interval(100));
    assert!(appeared.elapsed() <= adv_interval(100));
    let after = status(&s1);
    let a = vhid(&after, 1);
    assert_eq!(a["last_reason"], "master_down");
    assert_eq!(a["last_transition"], "BACKUP -> MASTER (master_down)");
    assert_eq!(a["transitions"], 2);
    assert!(a["master"].is_null(), "{a}");
}

#[test]
fn demote_hands_over_and_promote_takes_back() {
    let mut c = Cluster::new(2, 1);
    c.start(0, &config(0).preempt(true));
    c.start(1, &config(100).preempt(true));
    let (s0, s1) = (c.node(0).socket(), c.node(1).socket());
    c.wait_owners(VIP, &[0], SETTLE);
    wait_state(&s1, 1, "BACKUP", SETTLE);

    let o = client(&[
        "demote",
        "--by",
        "2",
        "--vhid",
        "1",
        "--socket",
        s0.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(
        text(&o.stdout).contains("eth0/1 demote 2"),
        "{}",
        text(&o.stdout)
    );
    c.wait_owners(VIP, &[1], SETTLE);
    wait_state(&s0, 1, "BACKUP", SETTLE);
    assert_eq!(vhid(&status(&s0), 1)["demote"], 2);

    let o = client(&["promote", "--by", "2", "--socket", s0.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(text(&o.stdout).contains("promoted"), "{}", text(&o.stdout));
    c.wait_owners(VIP, &[0], SETTLE);
    wait_state(&s0, 1, "MASTER", SETTLE);
    assert_eq!(vhid(&status(&s0), 1)["demote"], 0);

    // Nothing matches: an error, and a non-zero exit.
    let o = client(&["demote", "--vhid", "9", "--socket", s0.to_str().unwrap()]);
    assert!(!o.status.success());
    assert!(text(&o.stderr).contains("no VHID 9"), "{}", text(&o.stderr));
}

#[test]
fn reload_keeps_unchanged_vhids_and_refuses_a_broken_file() {
    let mut c = Cluster::new(2, 1);
    let mut cfg = config(0)
        .vhid("eth0", 2, &[vip(2)])
        .vhid("eth0", 3, &[vip(3)]);
    // node 1 is master of everything; node 0 stays BACKUP
    c.start(1, &cfg.clone());
    c.wait_owners("10.99.0.100", &[1], SETTLE);
    cfg = cfg.advskew(100);
    c.start(0, &cfg);
    let s0 = c.node(0).socket();
    for id in 1..=3 {
        wait_state(&s0, id, "BACKUP", SETTLE);
    }
    let before = status(&s0);

    cfg.vhid_mut("eth0", 2).advskew = Some(120);
    c.write_config(0, &cfg.to_toml());
    let o = client(&["reload", "--socket", s0.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let out = text(&o.stdout);
    assert!(
        out.contains("1 changed (eth0/2)") && out.contains("2 unchanged"),
        "{out}"
    );
    wait_state(&s0, 2, "BACKUP", SETTLE);
    let after = status(&s0);
    for id in [1, 3] {
        let (b, a) = (vhid(&before, id), vhid(&after, id));
        assert_eq!(a["transitions"], b["transitions"], "vhid {id}");
        assert_eq!(
            a["transitions_by_reason"], b["transitions_by_reason"],
            "vhid {id}"
        );
        assert!(a["in_state_secs"].as_f64() >= b["in_state_secs"].as_f64());
    }
    assert_eq!(vhid(&after, 2)["advskew"], 120);

    // A broken file: refused with the reason, nothing changes.
    let path = c.write_config(0, &cfg.to_toml().replace("advbase = 1", "advbase = 300"));
    let o = client(&["reload", "--socket", s0.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o.stdout));
    let err = text(&o.stderr);
    assert!(
        err.contains(&format!(
            "{}:1: advbase: 300 is not in 0..=255",
            path.display()
        )),
        "{err}"
    );
    assert!(c.node(0).is_running());
    // Log lines are written by a thread of their own, a moment after the
    // answer may have gone out.
    assert!(
        wait_until(Duration::from_secs(5), POLL, || c
            .node(0)
            .log()
            .contains("reload refused"))
        .is_some(),
        "{}",
        c.node(0).log()
    );
    let still = status(&s0);
    for id in 1..=3 {
        assert_eq!(
            vhid(&still, id)["transitions"],
            vhid(&after, id)["transitions"]
        );
    }
    assert_eq!(vhid(&still, 2)["advskew"], 120);
}

#[test]
fn metrics_serve_the_documented_series_and_follow_a_failover() {
    let c = Cluster::new(2, 1);
    let start = |i: usize, advskew: u8| {
        let toml = format!(
            "{}\n[metrics]\nlisten = \"127.0.0.1:9750\"\n",
            config(advskew).to_toml()
        );
        let path = c.write_config(i, &toml);
        Daemon::carpd(c.host(i), &format!("m{i}"), c.dir.path(), &path, &[])
    };
    let d0 = start(0, 0);
    let d1 = start(1, 100);
    c.wait_owners(VIP, &[0], SETTLE);
    wait_state(&d1.socket(), 1, "BACKUP", SETTLE);

    let m = http_get(c.host(1), 9750, "/metrics");
    assert!(m.starts_with("HTTP/1.1 200 OK\r\n"), "{m}");
    assert!(m.contains("Content-Type: application/openmetrics-text; version=1.0.0; charset=utf-8"));
    let labels = r#"{interface="eth0",vhid="1""#;
    for series in [
        "# TYPE carpd_vhid_state gauge",
        "# TYPE carpd_vhid_transitions counter",
        "# TYPE carpd_vhid_advertisements_sent counter",
        "# TYPE carpd_vhid_advertisements_received counter",
        "# TYPE carpd_vhid_drops counter",
        "# TYPE carpd_interface_drops counter",
        "# TYPE carpd_vhid_demote gauge",
        "# TYPE carpd_hook_runs counter",
        "# TYPE carpd_hook_failures counter",
        "# TYPE carpd_timer_lateness_seconds histogram",
        "# TYPE carpd_timer_earliness_seconds histogram",
        &format!("carpd_vhid_drops_total{labels},reason=\"bad_hmac\"}} 0"),
        &format!("carpd_hook_runs_total{labels}}} 0"),
        "# EOF",
    ] {
        assert!(m.lines().any(|l| l == series), "{series} missing:\n{m}");
    }
    let backup = format!("carpd_vhid_state{labels},state=\"BACKUP\"}}");
    let master = format!("carpd_vhid_state{labels},state=\"MASTER\"}}");
    let received = format!("carpd_vhid_advertisements_received_total{labels}}}");
    let taken = format!("carpd_vhid_transitions_total{labels},reason=\"master_down\"}}");
    assert_eq!(sample(&m, &backup), Some(1.0), "{m}");
    assert_eq!(sample(&m, &master), Some(0.0));
    assert!(sample(&m, &received) > Some(0.0));
    assert_eq!(sample(&m, &taken), None);
    let m0 = http_get(c.host(0), 9750, "/metrics");
    // every advertisement sent is counted early or late
    let late = sample(&m0, "carpd_timer_lateness_seconds_count").unwrap_or(0.0);
    let early = sample(&m0, "carpd_timer_earliness_seconds_count").unwrap_or(0.0);
    assert!(late + early > 0.0, "{m0}");
    assert!(http_get(c.host(1), 9750, "/").starts_with("HTTP/1.1 404 "));

    d0.sigkill();
    wait_until(SETTLE, POLL, || c.owners(VIP).contains(&1)).expect("node 1 took over");
    let ok = wait_until(SETTLE, POLL, || {
        sample(&http_get(c.host(1), 9750, "/metrics"), &master) == Some(1.0)
    });
    assert!(ok.is_some(), "MASTER never reported by the metrics");
    let m = http_get(c.host(1), 9750, "/metrics");
    assert_eq!(sample(&m, &backup), Some(0.0));
    assert_eq!(sample(&m, &taken), Some(1.0), "{m}");
    assert!(
        sample(
            &m,
            &format!("carpd_vhid_advertisements_sent_total{labels}}}")
        ) > Some(0.0)
    );
    drop(d1);
}

#[test]
fn restart_after_sigkill_removes_the_stale_address_and_socket() {
    let mut c = Cluster::new(2, 1);
    c.start(0, &config(0));
    c.start(1, &config(100));
    let s0 = c.node(0).socket();
    c.wait_owners(VIP, &[0], SETTLE);
    c.node(0).sigkill();
    c.node(0).wait_exit(Duration::from_secs(5)).expect("killed");
    // the killed master's address and socket file stay behind
    wait_until(SETTLE, POLL, || c.owners(VIP) == [0, 1]).expect("node 1 took over");
    assert!(s0.exists());

    // Restarted on the same socket, it is not preferred (no preemption):
    // it stays BACKUP and must drop the address it left.
    let path = c.write_config(0, &config(0).to_toml());
    let s = s0.to_str().unwrap();
    let d = Daemon::carpd(
        c.host(0),
        "restarted",
        c.dir.path(),
        &path,
        &["--control-socket", s],
    );
    c.wait_owners(VIP, &[1], SETTLE);
    wait_state(&s0, 1, "BACKUP", SETTLE);
    let log = d.log();
    assert!(
        log.contains("removed an address left by a previous run"),
        "{log}"
    );
    assert!(log.contains("replaced a stale control socket"), "{log}");
    // and it stays that way
    std::thread::sleep(master_down(3, 0));
    assert_eq!(c.owners(VIP), [1]);
}

#[test]
fn a_second_carpd_on_the_same_socket_refuses_to_start() {
    let mut c = Cluster::new(1, 1);
    c.start(0, &config(0));
    let s0 = c.node(0).socket();
    wait_state(&s0, 1, "BACKUP", SETTLE);

    let other = c.write_config(0, &config(0).vhid("eth0", 2, &[vip(2)]).to_toml());
    let s = s0.to_str().unwrap();
    let mut second = Daemon::carpd(
        c.host(0),
        "second",
        c.dir.path(),
        &other,
        &["--control-socket", s],
    );
    let status = second.wait_exit(SETTLE).expect("second carpd exits");
    assert_eq!(status.code(), Some(1));
    let log = second.log();
    assert_eq!(log.lines().count(), 1, "{log}");
    assert!(
        log.contains(&format!(
            "another carpd is already running on the control socket {s}"
        )),
        "{log}"
    );
    assert!(log.starts_with("carpd: "), "{log}");
    // the first one is untouched and still answers
    assert!(c.node(0).is_running());
    assert_eq!(status_len(&s0), 1);
    assert!(!c.host(0).has_addr("10.99.0.102"));
}

fn status_len(socket: &Path) -> usize {
    status(socket)["vhids"].as_array().map_or(0, Vec::len)
}

#[test]
fn man_page_and_completions() {
    let o = client(&["man"]);
    assert!(o.status.success());
    let man = text(&o.stdout);
    assert!(
        man.contains(".TH carpd") && man.contains("control\\-socket"),
        "{man}"
    );
    for shell in ["bash", "zsh", "fish"] {
        let o = client(&["completions", shell]);
        assert!(o.status.success(), "{shell}");
        assert!(text(&o.stdout).contains("stepdown"), "{shell}");
    }
    assert!(!client(&["completions", "cmd.exe"]).status.success());
}
