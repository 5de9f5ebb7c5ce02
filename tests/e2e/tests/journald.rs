//! Native journald logging: started with stderr connected to the journal
//! (`JOURNAL_STREAM` naming fd 2) or with `--log-format journald`, carpd
//! sends structured records to journald's socket. A fake journald (a Unix
//! datagram socket of the test) is bind-mounted over
//! /run/systemd/journal/socket in a private mount namespace of the daemon.
//! Needs root.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use carpd_testbed::{Config, Daemon, Lan, Scratch, carpd_exe};

const VIP: &str = "10.99.0.100";

/// One journal record in the native protocol: `KEY=value` lines, or `KEY`,
/// a little-endian 64-bit length and the value, for values with newlines.
fn parse(mut d: &[u8]) -> BTreeMap<String, String> {
    let mut fields = BTreeMap::new();
    while !d.is_empty() {
        let Some(end) = d.iter().position(|b| *b == b'\n' || *b == b'=') else {
            break;
        };
        let name = String::from_utf8_lossy(&d[..end]).into_owned();
        if d[end] == b'=' {
            let rest = &d[end + 1..];
            let stop = rest.iter().position(|b| *b == b'\n').unwrap_or(rest.len());
            fields.insert(name, String::from_utf8_lossy(&rest[..stop]).into_owned());
            d = rest.get(stop + 1..).unwrap_or_default();
        } else {
            let rest = &d[end + 1..];
            let len = u64::from_le_bytes(rest[..8].try_into().unwrap()) as usize;
            let value = &rest[8..8 + len];
            fields.insert(name, String::from_utf8_lossy(value).into_owned());
            d = rest.get(8 + len + 1..).unwrap_or_default();
        }
    }
    fields
}

/// Starts carpd in host 0 of `lan` with the fake journald bound in its
/// mount namespace; `before` runs in the shell before carpd (its
/// environment), `extra` follows carpd's arguments.
fn carpd_with_journal(lan: &Lan, dir: &Scratch, label: &str, env: &str, extra: &str) -> Daemon {
    let config = Config::default().vhid("eth0", 1, &[format!("{VIP}/24")]);
    let path = dir.write(&format!("{label}.toml"), &config.to_toml());
    let journal = dir.path().join("journal.sock");
    let socket = dir.path().join(format!("{label}.sock"));
    let script = format!(
        "mount -t tmpfs tmpfs /run/systemd && mkdir /run/systemd/journal && \
         touch /run/systemd/journal/socket && \
         mount --bind {journal} /run/systemd/journal/socket && \
         exec env {env} {carpd} --config {path} --control-socket {socket} {extra}",
        journal = journal.display(),
        carpd = carpd_exe(),
        path = path.display(),
        socket = socket.display(),
    );
    Daemon::spawn(
        &lan.hosts[0],
        label,
        dir.path(),
        "unshare",
        &["--mount", "--propagation", "private", "sh", "-c", &script],
    )
}

/// Records received until one satisfies `want` (or `timeout`).
fn wait_record(
    journal: &UnixDatagram,
    timeout: Duration,
    want: impl Fn(&BTreeMap<String, String>) -> bool,
) -> Option<BTreeMap<String, String>> {
    let start = Instant::now();
    let mut buf = vec![0u8; 65536];
    while start.elapsed() < timeout {
        let Ok(n) = journal.recv(&mut buf) else {
            continue;
        };
        let fields = parse(&buf[..n]);
        if want(&fields) {
            return Some(fields);
        }
    }
    None
}

#[test]
fn records_reach_journald_with_structured_fields() {
    let lan = Lan::new(1, 1);
    let dir = Scratch::new();
    let journal = UnixDatagram::bind(dir.path().join("journal.sock")).unwrap();
    journal
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();

    // systemd's way: JOURNAL_STREAM names the stream on fd 2
    let d = carpd_with_journal(
        &lan,
        &dir,
        "stream",
        "JOURNAL_STREAM=$(stat -L -c %d:%i /proc/self/fd/2)",
        "",
    );
    let master = wait_record(&journal, Duration::from_secs(20), |f| {
        f.get("STATE").map(String::as_str) == Some("MASTER")
    });
    let master = master.unwrap_or_else(|| panic!("no MASTER record; stderr:\n{}", d.log()));
    for (key, value) in [
        ("INTERFACE", "eth0"),
        ("VHID", "1"),
        ("STATE", "MASTER"),
        ("REASON", "master_down"),
        ("SPAN_NAME", "vhid"),
        ("SYSLOG_IDENTIFIER", "carpd"),
        ("PRIORITY", "5"),
    ] {
        assert_eq!(
            master.get(key).map(String::as_str),
            Some(value),
            "{key}: {master:?}"
        );
    }
    assert!(master["MESSAGE"].contains("BACKUP -> MASTER"), "{master:?}");
    // the records went to the journal instead of stderr
    assert!(!d.log().contains("BACKUP -> MASTER"), "{}", d.log());
    drop(d);

    // asked for on the command line, without JOURNAL_STREAM
    let d = carpd_with_journal(
        &lan,
        &dir,
        "flag",
        "-u JOURNAL_STREAM",
        "--log-format journald",
    );
    let started = wait_record(&journal, Duration::from_secs(20), |f| {
        f.get("MESSAGE")
            .is_some_and(|m| m.contains("engine started"))
    });
    assert!(started.is_some(), "no start record; stderr:\n{}", d.log());
    assert!(!d.log().contains("engine started"), "{}", d.log());
    drop(d);

    // an explicit text format keeps plain lines on stderr under systemd
    let d = carpd_with_journal(
        &lan,
        &dir,
        "text",
        "JOURNAL_STREAM=$(stat -L -c %d:%i /proc/self/fd/2)",
        "--log-format text",
    );
    let on_stderr =
        carpd_testbed::wait_until(Duration::from_secs(20), Duration::from_millis(20), || {
            d.log().contains("engine started")
        });
    assert!(on_stderr.is_some(), "{}", d.log());
}
