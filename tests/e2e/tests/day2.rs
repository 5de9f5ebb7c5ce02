//! Day-2 operations: the peers in `carpd status`, `carpd explain`, the
//! `carpd events` stream (a normal and a slow client) and `carpd reload
//! --dry-run`. Real daemons in network namespaces (needs root).

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use carpd_testbed::{Cluster, Config, Lan, master_down, wait_until};
use serde_json::Value;

const POLL: Duration = Duration::from_millis(50);
/// Generous: start-up, elections and restarts on a busy 2-core machine.
const SETTLE: Duration = Duration::from_secs(15);

fn vip(n: u8) -> String {
    format!("10.99.0.{}/24", 100 + n)
}

fn config(advskew: u8) -> Config {
    Config::default()
        .advskew(advskew)
        .preempt(false)
        .vhid("eth0", 1, &[vip(1)])
}

fn client(args: &[&str]) -> Output {
    Command::new(carpd_testbed::carpd_exe())
        .args(args)
        .output()
        .expect("run carpd client")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn sock(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn try_status(socket: &Path) -> Option<Value> {
    let o = client(&["status", "--json", "--socket", sock(socket)]);
    o.status.success().then_some(())?;
    serde_json::from_slice(&o.stdout).ok()
}

fn vhid1(status: &Value) -> Value {
    status["vhids"]
        .as_array()
        .and_then(|l| l.iter().find(|v| v["vhid"] == 1))
        .cloned()
        .unwrap_or(Value::Null)
}

/// Waits until `check` holds of VHID 1's status; returns that status.
fn wait_vhid1(socket: &Path, what: &str, check: impl Fn(&Value) -> bool) -> Value {
    let mut last = Value::Null;
    let found = wait_until(SETTLE, POLL, || {
        last = try_status(socket).map(|s| vhid1(&s)).unwrap_or(Value::Null);
        check(&last)
    });
    assert!(found.is_some(), "{what}: last status {last}");
    last
}

fn state_is(want: &'static str) -> impl Fn(&Value) -> bool {
    move |v| v["state"] == want
}

fn peers(v: &Value) -> Vec<Value> {
    v["peers"].as_array().cloned().unwrap_or_default()
}

fn mac_of(c: &Cluster, host: usize) -> String {
    let out = c.host(host).ip(&["-j", "link", "show", "eth0"]);
    let v: Value = serde_json::from_str(&out).unwrap();
    v[0]["address"].as_str().unwrap().to_string()
}

#[test]
fn peers_and_explain_with_two_nodes() {
    let mut c = Cluster::new(2, 1);
    c.start(0, &config(0));
    c.start(1, &config(100));
    let (s0, s1) = (c.node(0).socket(), c.node(1).socket());
    wait_vhid1(&s0, "node 0 master", state_is("MASTER"));
    // a few advertisements, for the jitter
    let b = wait_vhid1(&s1, "node 1 hears node 0 a while", |v| {
        v["state"] == "BACKUP"
            && peers(v)
                .first()
                .is_some_and(|p| p["adverts"].as_u64() >= Some(3))
    });
    let p = &peers(&b)[0];
    assert_eq!(peers(&b).len(), 1, "{b}");
    assert_eq!(p["address"], Lan::host_addr(0, 0), "{b}");
    assert_eq!(p["master"], true, "{b}");
    assert_eq!(
        (&p["advbase"], &p["advskew"], &p["demote"]),
        (&1.into(), &0.into(), &0.into())
    );
    assert!(p["last_heard_secs"].as_f64().unwrap() < 3.0, "{b}");
    // one interval is 1 s; a deviation near it would be a lost advertisement
    assert!(p["jitter_ms"].as_f64().unwrap() < 500.0, "{b}");
    // node 0 is MASTER: a BACKUP never advertises, so it hears nobody
    let a = vhid1(&try_status(&s0).unwrap());
    assert!(peers(&a).is_empty(), "{a}");

    // The MAC comes from the neighbour table: after one datagram to the
    // peer (which resolves its address) it is there.
    let to_peer = format!("echo x > /dev/udp/{}/9", Lan::host_addr(0, 0));
    c.host(1).exec(&["bash", "-c", &to_peer]);
    let want = mac_of(&c, 0);
    let b = wait_vhid1(&s1, "node 0's MAC known", |v| {
        peers(v).first().is_some_and(|p| p["mac"] == want.as_str())
    });
    let table = text(&client(&["status", "--socket", sock(&s1)]).stdout);
    assert!(
        table.contains(&format!(
            "eth0/1: {} (master) {want} advbase 1 advskew 0 demote 0",
            Lan::host_addr(0, 0)
        )),
        "{table}\n{b}"
    );

    let explain = |socket: &Path| {
        let o = client(&["explain", "--vhid", "1", "--socket", sock(socket)]);
        assert!(o.status.success(), "{}", text(&o.stderr));
        text(&o.stdout)
    };
    let backup = explain(&s1);
    assert!(
        backup.starts_with(&format!(
            "eth0/1: BACKUP: {} advertises 1 s + 0/256 with demotion 0; we would advertise \
             1 s + 100/256 with demotion 0; preempt is off. We stay BACKUP: its interval is shorter.",
            Lan::host_addr(0, 0)
        )),
        "{backup}"
    );
    let master = explain(&s0);
    assert!(
        master.starts_with(
            "eth0/1: MASTER: no other node heard lately; we advertise 1 s + 0/256 with demotion 0."
        ),
        "{master}"
    );
    let none = client(&["explain", "--vhid", "9", "--socket", sock(&s0)]);
    assert!(!none.status.success());
}

#[test]
fn peers_with_three_nodes_follow_a_failover_and_expire() {
    let mut c = Cluster::new(3, 1);
    c.start(0, &config(0));
    c.start(1, &config(50));
    c.start(2, &config(100));
    let s0 = c.node(0).socket();
    let s2 = c.node(2).socket();
    let (a0, a1) = (Lan::host_addr(0, 0), Lan::host_addr(1, 0));
    wait_vhid1(&s0, "node 0 master", state_is("MASTER"));
    let s1 = c.node(1).socket();
    for s in [&s1, &s2] {
        let v = wait_vhid1(s, "a backup hears node 0", |v| {
            v["state"] == "BACKUP" && peers(v).iter().any(|p| p["address"] == a0.as_str())
        });
        assert_eq!(peers(&v).len(), 1, "{v}");
        assert_eq!(peers(&v)[0]["master"], true, "{v}");
    }
    c.node(0).sigkill();
    // node 1 takes over; node 2 lists both, node 1 as its master, node 0
    // until three master-down times have passed since it was last heard
    let v = wait_vhid1(&s2, "node 2 follows node 1", |v| {
        v["master"] == a1.as_str() && peers(v).len() == 2
    });
    let by = |addr: &str| {
        peers(&v)
            .into_iter()
            .find(|p| p["address"] == addr)
            .unwrap_or_else(|| panic!("{addr} missing: {v}"))
    };
    assert_eq!(by(&a1)["master"], true, "{v}");
    assert_eq!(by(&a1)["advskew"], 50, "{v}");
    assert_eq!(by(&a0)["master"], false, "{v}");
    let window = master_down(3, 100) * 3;
    let started = Instant::now();
    let v = wait_vhid1(&s2, "node 0 expires", |v| peers(v).len() == 1);
    assert_eq!(peers(&v)[0]["address"], a1.as_str(), "{v}");
    assert!(started.elapsed() < window + Duration::from_secs(5));
}

/// `carpd events --json` on `socket`, once it streams, its lines sent to
/// the receiver.
fn follow_events(socket: &Path) -> (std::process::Child, mpsc::Receiver<Value>) {
    let mut child = Command::new(carpd_testbed::carpd_exe())
        .args(["events", "--json", "--socket", sock(socket)])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // subscribed once it says so: an event published before is not for it
    let mut said = String::new();
    BufReader::new(child.stderr.take().unwrap())
        .read_line(&mut said)
        .unwrap();
    assert_eq!(said.trim(), "streaming events");
    let out = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if let Ok(v) = serde_json::from_str(&line)
                && tx.send(v).is_err()
            {
                return;
            }
        }
    });
    (child, rx)
}

#[test]
fn events_show_a_failover_in_order() {
    let mut c = Cluster::new(2, 1);
    c.start(0, &config(0));
    c.start(1, &config(100));
    let (s0, s1) = (c.node(0).socket(), c.node(1).socket());
    wait_vhid1(&s0, "node 0 master", state_is("MASTER"));
    wait_vhid1(&s1, "node 1 backup", state_is("BACKUP"));
    let (mut child, rx) = follow_events(&s1);
    let o = client(&["demote", "--by", "5", "--socket", sock(&s1)]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    c.node(0).sigkill();
    let mut seen = Vec::new();
    let deadline = Instant::now() + master_down(3, 100) + SETTLE;
    while Instant::now() < deadline {
        if let Ok(v) = rx.recv_timeout(POLL) {
            let done = v["event"] == "transition" && v["to"] == "MASTER";
            seen.push(v);
            if done {
                break;
            }
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    let kinds: Vec<String> = seen
        .iter()
        .map(|v| format!("{} {} {}", v["event"], v["to"], v["reason"]))
        .collect();
    assert_eq!(
        kinds,
        [
            r#""demotion" 5 null"#,
            r#""transition" "MASTER" "master_down""#
        ],
        "{seen:?}"
    );
    assert_eq!(seen[0]["from"], 0);
    assert_eq!(
        (&seen[1]["interface"], &seen[1]["vhid"]),
        (&"eth0".into(), &1.into())
    );
    assert_eq!(seen[1]["from"], "BACKUP");
}

#[test]
fn a_slow_events_client_is_cut_off_and_slows_nothing() {
    let mut c = Cluster::new(2, 1);
    c.start(0, &config(0));
    c.start(1, &config(100));
    let (s0, s1) = (c.node(0).socket(), c.node(1).socket());
    wait_vhid1(&s0, "node 0 master", state_is("MASTER"));
    let before = wait_vhid1(&s1, "node 1 backup", state_is("BACKUP"));
    // subscribes, then never reads
    let mut slow = UnixStream::connect(&s1).unwrap();
    slow.write_all(b"{\"command\":\"events\"}\n").unwrap();
    let mut ack = String::new();
    BufReader::new(slow.try_clone().unwrap())
        .read_line(&mut ack)
        .unwrap();
    assert!(ack.contains("streaming events"), "{ack}");
    // Many events: node 1 (BACKUP, so nothing is advertised) demoted and
    // promoted over and over on one connection.
    let mut ops = UnixStream::connect(&s1).unwrap();
    ops.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut replies = BufReader::new(ops.try_clone().unwrap());
    let mut slowest = Duration::ZERO;
    for i in 0..3000 {
        let by = if i % 2 == 0 { 1 } else { -1 };
        let t = Instant::now();
        writeln!(ops, "{{\"command\":\"demote\",\"by\":{by}}}").unwrap();
        let mut line = String::new();
        replies.read_line(&mut line).unwrap();
        slowest = slowest.max(t.elapsed());
        assert!(line.contains("\"ok\":true"), "{line}");
    }
    // the daemon answered throughout, and still does
    assert!(
        slowest < Duration::from_secs(5),
        "slowest request {slowest:?}"
    );
    let t = Instant::now();
    let after = vhid1(&try_status(&s1).unwrap());
    assert!(t.elapsed() < Duration::from_secs(5));
    // and kept its schedule: node 0's advertisements kept node 1 BACKUP
    assert_eq!(after["state"], "BACKUP", "{after}");
    assert_eq!(after["transitions"], before["transitions"], "{after}");
    assert_eq!(vhid1(&try_status(&s0).unwrap())["state"], "MASTER");
    // the slow client was cut off: what it was sent ends, and the daemon
    // says why
    slow.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut got = Vec::new();
    slow.read_to_end(&mut got)
        .expect("the stream ends instead of waiting for more events");
    let log = c.node(1).log();
    assert!(
        log.contains("an events client was too slow; disconnected")
            || log.contains("an events client stopped reading; disconnected"),
        "{log}"
    );
    let got = text(&got);
    let last = got.lines().last().unwrap_or_default();
    // the farewell line arrives whenever there was room for it
    if last.contains("disconnected") {
        assert!(last.contains("too slow, disconnected"), "{last}");
    }
}

#[test]
fn reload_dry_run_changes_nothing_and_names_the_changed_keys() {
    let mut c = Cluster::new(1, 1);
    let running = Config::default()
        .vhid("eth0", 1, &[vip(1)])
        .vhid("eth0", 2, &[vip(2)]);
    c.start(0, &running);
    let s0 = c.node(0).socket();
    wait_vhid1(&s0, "node 0 master", state_is("MASTER"));
    let before = try_status(&s0).unwrap();
    let mut next = Config::default()
        .vhid("eth0", 1, &[vip(1)])
        .vhid("eth0", 3, &[vip(3)]);
    next.vhid_mut("eth0", 1).advskew = Some(20);
    let path = c.write_config(0, &next.to_toml());
    let o = client(&["reload", "--dry-run", "--socket", sock(&s0)]);
    let out = text(&o.stdout);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(
        out.starts_with(
            "a reload would do: 1 added (eth0/3), 1 removed (eth0/2), 1 changed (eth0/1), 0 unchanged"
        ),
        "{out}"
    );
    assert!(out.contains("eth0/1 restarts: advskew changed"), "{out}");
    // nothing moved
    std::thread::sleep(Duration::from_millis(500));
    let after = try_status(&s0).unwrap();
    let summary = |s: &Value| -> Vec<(Value, Value, Value, Value)> {
        s["vhids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| {
                (
                    v["vhid"].clone(),
                    v["state"].clone(),
                    v["advskew"].clone(),
                    v["transitions"].clone(),
                )
            })
            .collect()
    };
    assert_eq!(summary(&after), summary(&before));
    assert!(c.host(0).has_addr("10.99.0.102") && !c.host(0).has_addr("10.99.0.103"));

    std::fs::write(&path, "[[interface]]\nname = 'eth0'\nbogus = 1\n").unwrap();
    let o = client(&["reload", "--dry-run", "--socket", sock(&s0)]);
    assert!(
        !o.status.success(),
        "an invalid file passed: {}",
        text(&o.stdout)
    );
    assert!(text(&o.stderr).contains("bogus"), "{}", text(&o.stderr));
    assert_eq!(summary(&try_status(&s0).unwrap()), summary(&before));
}
