//! Security hygiene, end to end: the password shows up nowhere a daemon
//! writes or answers, and the control socket serves only root, carpd's own
//! user and its `control_group`, whatever the socket file's mode. Real
//! processes in network namespaces (needs root).

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use carpd_testbed::{Cluster, Config, Daemon, Netns, wait_until};
use serde_json::Value;

const VIP: &str = "10.99.0.100";
/// Distinctive enough that finding it anywhere is a leak.
const PASSWORD: &str = "Zq8vK-distinct-3141";
const POLL: Duration = Duration::from_millis(50);
/// Generous: start-up and elections on a busy 2-core machine.
const SETTLE: Duration = Duration::from_secs(20);
const NOBODY: u32 = 65534;

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// `carpd <args>` as root.
fn client(args: &[&str]) -> Output {
    Command::new(carpd_testbed::carpd_exe())
        .args(args)
        .output()
        .unwrap()
}

/// `carpd <args>` as uid 65534 (nobody) with only group `gid`.
fn client_as_nobody(gid: u32, args: &[&str]) -> Output {
    Command::new(carpd_testbed::carpd_exe())
        .args(args)
        .uid(NOBODY)
        .gid(gid)
        .output()
        .unwrap()
}

fn state(socket: &Path) -> Option<String> {
    let o = client(&["status", "--json", "--socket", socket.to_str()?]);
    let v: Value = serde_json::from_slice(&o.stdout).ok()?;
    Some(v["vhids"][0]["state"].as_str()?.to_string())
}

fn wait_state(socket: &Path, want: &str) {
    let ok = wait_until(SETTLE, POLL, || state(socket).as_deref() == Some(want));
    assert!(ok.is_some(), "{}: never {want}", socket.display());
}

/// `GET /metrics` on port 9750 from inside `ns`.
fn scrape(ns: &Netns) -> String {
    let netns = format!("/run/netns/{}", ns.name());
    std::thread::spawn(move || {
        let f = std::fs::File::open(&netns).unwrap();
        nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        let mut s = TcpStream::connect(("127.0.0.1", 9750)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n")
            .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    })
    .join()
    .unwrap()
}

fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// Starts carpd with `toml` on host `i` of `c`, logging at debug level.
fn start(c: &Cluster, i: usize, toml: &str) -> Daemon {
    let path = c.write_config(i, toml);
    Daemon::carpd(
        c.host(i),
        &format!("node{i}"),
        c.dir.path(),
        &path,
        &["--debug"],
    )
}

fn config(advskew: u8) -> String {
    let mut cfg = Config::default()
        .advskew(advskew)
        .vhid("eth0", 1, &[format!("{VIP}/24")]);
    cfg.password = PASSWORD.to_string();
    format!(
        "{}\n[metrics]\nlisten = \"127.0.0.1:9750\"\n",
        cfg.to_toml()
    )
}

#[test]
fn the_password_appears_in_no_log_output_or_metrics() {
    let c = Cluster::new(2, 1);
    let mut n0 = start(&c, 0, &config(0));
    wait_state(&n0.socket(), "MASTER");
    let n1 = start(&c, 1, &config(100));
    let s1 = n1.socket();
    wait_state(&s1, "BACKUP");
    let mut seen = Vec::new();

    // A failover: the master goes, the backup takes over.
    n0.sigterm();
    assert!(n0.wait_exit(SETTLE).is_some(), "node 0 did not stop");
    wait_state(&s1, "MASTER");
    c.wait_owners(VIP, &[1], SETTLE);

    // Broken reloads: one on the password line itself, one elsewhere.
    let good = config(100);
    for broken in [
        good.replace(
            &format!("password = \"{PASSWORD}\""),
            &format!("password = \"{PASSWORD}\" junk"),
        ),
        good.replace(
            &format!("password = \"{PASSWORD}\""),
            &format!("password = {PASSWORD}"),
        ),
        good.replace("advbase = 1", "advbase = 300"),
    ] {
        assert_ne!(broken, good);
        c.write_config(1, &broken);
        let o = client(&["reload", "--socket", s1.to_str().unwrap()]);
        assert_eq!(
            o.status.code(),
            Some(1),
            "reload accepted: {}",
            text(&o.stdout)
        );
        seen.push(o);
    }
    c.write_config(1, &good);
    let o = client(&["reload", "--socket", s1.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    seen.push(o);
    // And SIGHUP and SIGUSR1 (status to the log).
    n1.sighup();
    n1.signal(nix::sys::signal::Signal::SIGUSR1);

    for args in [&["status", "--json"][..], &["status"][..]] {
        let mut args = args.to_vec();
        args.extend(["--socket", s1.to_str().unwrap()]);
        let o = client(&args);
        assert!(o.status.success(), "{}", text(&o.stderr));
        seen.push(o);
    }
    let metrics = scrape(c.host(1));
    assert!(
        sample(
            &metrics,
            "carpd_vhid_advertisements_sent_total{interface=\"eth0\",vhid=\"1\"}"
        )
        .is_some_and(|n| n > 0.0),
        "{metrics}"
    );
    assert!(
        wait_until(SETTLE, POLL, || n1.log().contains("adverts_sent")).is_some(),
        "no status in the log"
    );

    let mut everything = vec![n0.log(), n1.log(), metrics];
    for o in &seen {
        everything.push(text(&o.stdout));
        everything.push(text(&o.stderr));
    }
    for o in &seen[..2] {
        assert!(text(&o.stderr).contains(":5:"), "{}", text(&o.stderr));
    }
    for (i, s) in everything.iter().enumerate() {
        assert!(!s.contains(PASSWORD), "output {i} shows the password:\n{s}");
        // Not even its distinctive middle, e.g. cut by a message.
        assert!(!s.contains("distinct-3141"), "output {i}:\n{s}");
    }
}

#[test]
fn the_control_socket_serves_only_root_and_its_group() {
    // An existing group uid 65534 (nobody) does not belong to.
    let group = ["adm", "staff", "users"]
        .iter()
        .filter_map(|n| nix::unistd::Group::from_name(n).ok().flatten())
        .find(|g| g.gid.as_raw() != NOBODY && !g.mem.iter().any(|m| m == "nobody"))
        .expect("a group such as adm that nobody is not in");
    let gid = group.gid.as_raw();
    let c = Cluster::new(1, 1);
    let n = start(
        &c,
        0,
        &format!("control_group = {:?}\n{}", group.name, config(0)),
    );
    let socket = n.socket();
    wait_state(&socket, "MASTER");
    let sock = socket.to_str().unwrap();
    let status = ["status", "--json", "--socket", sock];

    // 0660, group-owned by the control group.
    let m = std::fs::metadata(&socket).unwrap();
    assert_eq!((m.mode() & 0o777, m.gid()), (0o660, gid));

    // A member of the group is served.
    let o = client_as_nobody(gid, &status);
    assert!(
        o.status.success(),
        "group member refused: {}",
        text(&o.stderr)
    );
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["vhids"][0]["state"], "MASTER");

    // Anyone else (nobody in its own group, nogroup) cannot even connect
    // while the mode is 0660...
    let o = client_as_nobody(NOBODY, &status);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o.stderr).contains("Permission denied"),
        "{}",
        text(&o.stderr)
    );
    let refused = |m: &str| sample(m, "carpd_control_refused_total");
    assert_eq!(refused(&scrape(c.host(0))), Some(0.0));

    // ...and with the socket open to all, the daemon's check refuses them:
    // one error line, counted, logged once per 10 s.
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o666)).unwrap();
    for _ in 0..3 {
        let o = client_as_nobody(NOBODY, &status);
        assert_eq!(o.status.code(), Some(1), "{}", text(&o.stdout));
        assert_eq!(
            text(&o.stderr),
            format!(
                "carpd: permission denied: only root and group {} may use the control socket\n",
                group.name
            )
        );
        assert!(o.stdout.is_empty());
    }
    // Nothing a refused client sends is acted on.
    let o = client_as_nobody(NOBODY, &["stepdown", "--socket", sock]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(state(&socket).as_deref(), Some("MASTER"));
    assert_eq!(refused(&scrape(c.host(0))), Some(4.0));
    let log = n.log();
    assert_eq!(
        log.matches("control socket: refused a connection").count(),
        1,
        "{log}"
    );
    assert!(log.contains("uid=65534"), "{log}");

    // Root still is.
    let o = client(&status);
    assert!(o.status.success(), "{}", text(&o.stderr));
}
