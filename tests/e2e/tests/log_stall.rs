//! A log reader that stops reading must not stop carpd: 400 VHIDs on two
//! interfaces, JSON logs at debug level into a pipe nobody reads, node 0
//! MASTER of everything. Once the pipe and the log queue are full, node 0
//! keeps advertising on schedule (node 1 stays BACKUP of every VHID), its
//! control socket answers, and the dropped lines are counted in its status
//! and metrics. Real processes in network namespaces (needs root).

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStderr, Command, Stdio};
use std::sync::mpsc;
use std::thread::sleep;
use std::time::{Duration, Instant};

use carpd_testbed::{Cluster, Config, Netns, wait_until};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::Value;

const VHIDS_PER_LINK: u8 = 200;
const LINKS: usize = 2;
const METRICS_PORT: u16 = 9751;
/// Start-up of 400 VHIDs on both nodes on a busy 2-core machine.
const SETTLE: Duration = Duration::from_secs(90);
/// How long the stalled node is watched once its log queue is full.
const WATCH: Duration = Duration::from_secs(8);
/// The control socket must answer within this, stalled log or not.
const ANSWER_WITHIN: Duration = Duration::from_secs(2);

fn config(advskew: u8) -> Config {
    let mut cfg = Config::default().advskew(advskew).preempt(true);
    for k in 0..LINKS {
        for v in 1..=VHIDS_PER_LINK {
            cfg = cfg.vhid(&format!("eth{k}"), v, &[format!("10.{}.{v}.1/24", 100 + k)]);
        }
    }
    cfg
}

/// carpd with its stderr a pipe whose read end is held open and never
/// read, like a hung journald. Killed on drop.
struct StalledReader {
    child: Child,
    /// Held unread so the pipe stays open (a closed pipe would fail writes
    /// instead of blocking them), until [`StalledReader::resume`].
    stderr: Option<ChildStderr>,
}

impl StalledReader {
    fn spawn(ns: &Netns, config: &Path, socket: &Path) -> StalledReader {
        let mut child = Command::new("ip")
            .args([
                "netns",
                "exec",
                ns.name(),
                carpd_testbed::carpd_exe(),
                "--config",
            ])
            .arg(config)
            .arg("--control-socket")
            .arg(socket)
            .args(["--log-format", "json", "--log-level", "debug"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn carpd");
        let stderr = child.stderr.take().expect("piped stderr");
        StalledReader {
            child,
            stderr: Some(stderr),
        }
    }

    /// Start reading the log again: its lines, as they come.
    fn resume(&mut self) -> mpsc::Receiver<String> {
        let stderr = self.stderr.take().expect("not resumed yet");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { return };
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        rx
    }

    /// SIGTERM, then wait up to `timeout` for a clean exit.
    fn stop(&mut self, timeout: Duration) -> bool {
        let pid = Pid::from_raw(i32::try_from(self.child.id()).unwrap());
        kill(pid, Signal::SIGTERM).expect("send SIGTERM");
        wait_until(
            timeout,
            Duration::from_millis(50),
            || matches!(self.child.try_wait(), Ok(Some(s)) if s.success()),
        )
        .is_some()
    }

    /// `ip netns exec` execs the program, so this is carpd's own pid.
    fn usr1(&self) {
        let pid = Pid::from_raw(i32::try_from(self.child.id()).unwrap());
        // SIGUSR1: every VHID's status in the log, one line each.
        kill(pid, Signal::SIGUSR1).expect("send SIGUSR1");
    }
}

impl Drop for StalledReader {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `carpd status --json`, or `None` if it fails or takes longer than
/// `within` (the client is killed then).
fn status_within(socket: &Path, within: Duration) -> Option<Value> {
    let child = Command::new(carpd_testbed::carpd_exe())
        .args(["status", "--json", "--socket"])
        .arg(socket)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn carpd status");
    let pid = Pid::from_raw(i32::try_from(child.id()).unwrap());
    // Read in a thread: the answer for 400 VHIDs is larger than a pipe.
    let (tx, rx) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let out = rx.recv_timeout(within);
    if out.is_err() {
        let _ = kill(pid, Signal::SIGKILL);
    }
    reader.join().expect("status reader");
    let out = out.ok()?.ok()?;
    if !out.status.success() {
        return None;
    }
    serde_json::from_slice(&out.stdout).ok()
}

/// Each VHID's state, keyed `eth0/7`.
fn states(status: &Value) -> BTreeMap<String, String> {
    per_vhid(status, |v| v["state"].as_str().unwrap().to_string())
}

fn per_vhid<T>(status: &Value, f: impl Fn(&Value) -> T) -> BTreeMap<String, T> {
    status["vhids"]
        .as_array()
        .expect("vhids array")
        .iter()
        .map(|v| {
            (
                format!("{}/{}", v["interface"].as_str().unwrap(), v["vhid"]),
                f(v),
            )
        })
        .collect()
}

fn all_in(status: &Value, state: &str) -> bool {
    let s = states(status);
    s.len() == usize::from(VHIDS_PER_LINK) * LINKS && s.values().all(|v| v == state)
}

fn dropped(status: &Value) -> u64 {
    status["log_lines_dropped"]
        .as_u64()
        .expect("log_lines_dropped in status")
}

/// `GET /metrics` from inside `ns` (a thread that joins the namespace).
fn scrape(ns: &Netns) -> String {
    let netns = format!("/run/netns/{}", ns.name());
    std::thread::spawn(move || {
        let f = std::fs::File::open(&netns).expect("open netns");
        nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
        let mut s = TcpStream::connect(("127.0.0.1", METRICS_PORT)).expect("connect to metrics");
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n")
            .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).expect("read response");
        out
    })
    .join()
    .expect("scrape thread")
}

fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[test]
fn a_stalled_log_reader_does_not_stop_the_master() {
    let mut c = Cluster::new(2, LINKS);
    let a_config = c.write_config(
        0,
        &format!(
            "{}\n[metrics]\nlisten = \"127.0.0.1:{METRICS_PORT}\"\n",
            config(0).to_toml()
        ),
    );
    let a_socket: PathBuf = c.dir.path().join("stalled.sock");
    let mut a = StalledReader::spawn(c.host(0), &a_config, &a_socket);
    let b_socket = c.start(1, &config(100)).socket();

    // Start-up alone logs more than a pipe holds.
    let mut last = (None, None);
    let settled = wait_until(SETTLE, Duration::from_millis(500), || {
        last = (
            status_within(&a_socket, ANSWER_WITHIN),
            status_within(&b_socket, ANSWER_WITHIN),
        );
        matches!(&last, (Some(sa), Some(sb)) if all_in(sa, "MASTER") && all_in(sb, "BACKUP"))
    });
    assert!(
        settled.is_some(),
        "not settled after {SETTLE:?}: node 0 {:?}, node 1 {:?}",
        last.0.as_ref().map(states),
        last.1.as_ref().map(states)
    );

    // Log until lines are dropped: then the pipe is full and so is the
    // queue in front of it.
    let mut full = None;
    wait_until(Duration::from_secs(60), Duration::from_millis(200), || {
        a.usr1();
        full = status_within(&a_socket, ANSWER_WITHIN);
        let s = full
            .as_ref()
            .expect("node 0 answers status while its log fills");
        dropped(s) > 0
    })
    .expect("no log lines dropped after 60 s of SIGUSR1");
    let sent_before = per_vhid(full.as_ref().unwrap(), |v| {
        v["adverts_sent"].as_u64().unwrap()
    });
    let b_before = status_within(&b_socket, ANSWER_WITHIN).expect("node 1 answers");
    let b_transitions = per_vhid(&b_before, |v| v["transitions"].as_u64().unwrap());

    // The log stays stuck (and keeps growing) while node 0 is watched.
    let start = Instant::now();
    let mut a_last = None;
    while start.elapsed() < WATCH {
        a.usr1();
        let asked = Instant::now();
        let sa = status_within(&a_socket, ANSWER_WITHIN);
        assert!(
            sa.is_some(),
            "node 0 did not answer status within {ANSWER_WITHIN:?} ({:?} into the stall)",
            start.elapsed()
        );
        let sa = sa.unwrap();
        assert!(all_in(&sa, "MASTER"), "node 0: {:?}", states(&sa));
        a_last = Some(sa);
        let sb = status_within(&b_socket, ANSWER_WITHIN).expect("node 1 answers");
        assert!(all_in(&sb, "BACKUP"), "node 1 took over: {:?}", states(&sb));
        sleep(Duration::from_millis(500).saturating_sub(asked.elapsed()));
    }
    let elapsed = start.elapsed();
    let a_after = a_last.unwrap();

    // Every VHID advertised about once a second throughout (advbase 1; a
    // second of slack at each end for a busy machine).
    let whole = elapsed.as_secs();
    let sent_after = per_vhid(&a_after, |v| v["adverts_sent"].as_u64().unwrap());
    for (k, n) in &sent_after {
        let delta = n - sent_before[k];
        assert!(
            delta + 2 >= whole,
            "{k}: {delta} advertisements in {elapsed:?} of stalled log"
        );
    }
    // No takeover: node 1 never left BACKUP, so it never held an address.
    let b_after = status_within(&b_socket, ANSWER_WITHIN).expect("node 1 answers");
    assert_eq!(
        per_vhid(&b_after, |v| v["transitions"].as_u64().unwrap()),
        b_transitions
    );
    assert!(
        !c.host(1).addrs().iter().any(|a| a.starts_with("10.10")),
        "node 1 holds virtual addresses: {:?}",
        c.host(1).addrs()
    );

    // The count grew during the stall and is exported.
    assert!(dropped(&a_after) > dropped(full.as_ref().unwrap()));
    let m = scrape(c.host(0));
    let exported = sample(&m, "carpd_log_lines_dropped_total").expect("series in scrape");
    assert!(exported >= 1.0, "carpd_log_lines_dropped_total {exported}");

    // Reading again: the drops are reported once the output moves.
    let lines = a.resume();
    let reported = wait_until(Duration::from_secs(30), Duration::from_millis(20), || {
        lines
            .try_iter()
            .any(|l| l.contains("log lines dropped while the log output was blocked"))
    });
    assert!(reported.is_some(), "no report of the dropped lines");
    // A clean exit writes out the last lines.
    assert!(
        a.stop(Duration::from_secs(60)),
        "node 0 did not exit cleanly"
    );
    let tail: Vec<String> = lines.iter().collect();
    assert!(
        tail.iter().any(|l| l.contains(r#""message":"stopped""#)),
        "the final line is missing: {:?}",
        &tail[tail.len().saturating_sub(5)..]
    );
}
