//! carpd against the real `ucarp` binary (Debian's ucarp 1.5.2) on one
//! segment: election, crash failover and preemption in both directions,
//! the equal-priority tie-break, a matrix of passwords, timers and carrier
//! settings, and the argv the scripts and hooks receive.
//!
//! carpd runs either with ucarp's own command line (the scripts own the
//! address, as with ucarp) or from a TOML file with `auth = "ucarp"` (carpd
//! installs the address and runs hooks). ucarp's scripts add and remove the
//! address with `ip addr`, so in every case the host holding the address is
//! the one that thinks it is MASTER.

// A test binary: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::fs;
use std::path::{Path, PathBuf};
use std::thread::{self, sleep};
use std::time::{Duration, Instant};

use carpd_testbed::{Daemon, Lan, Scratch, Watcher, wait_until};

const VIP: &str = "10.99.0.100";
const XPARAM: &str = "xp";

/// Slack for process start, scheduling, ucarp's 1 s capture timeout and
/// netlink on a loaded machine.
const MARGIN: Duration = Duration::from_millis(2500);

/// How a node runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Ucarp,
    /// carpd with ucarp's command line; the scripts own the address.
    CarpdCli,
    /// carpd run through a symlink named `ucarp`, with ucarp's command line.
    CarpdAsUcarp,
    /// carpd from a TOML file with `auth = "ucarp"`; carpd owns the address.
    CarpdToml,
}

/// Settings shared by both nodes of a VHID, and each node's own.
#[derive(Debug, Clone)]
struct Node {
    kind: Kind,
    vhid: u8,
    password: String,
    advbase: u8,
    advskew: u8,
    preempt: bool,
    /// `--nomcast` (Ethernet broadcast)
    nomcast: bool,
    /// `--mcast=<group>`
    mcast: Option<&'static str>,
}

impl Node {
    fn new(kind: Kind, advskew: u8) -> Node {
        Node {
            kind,
            vhid: 7,
            password: "secret".to_string(),
            advbase: 1,
            advskew,
            preempt: false,
            nomcast: false,
            mcast: None,
        }
    }

    fn preempt(mut self) -> Node {
        self.preempt = true;
        self
    }

    fn master_down(&self) -> Duration {
        Duration::from_secs(3 * u64::from(self.advbase)) + skew(self.advskew)
    }

    fn interval(&self) -> Duration {
        Duration::from_secs(u64::from(self.advbase)) + skew(self.advskew)
    }
}

fn skew(advskew: u8) -> Duration {
    Duration::from_micros(u64::from(advskew) * 1_000_000 / 256)
}

/// A script that logs `<event> <argv...>` to `<dir>/<tag>.argv` and, when
/// `manage` is set, adds or removes the address (argv: iface vip [xparam]).
fn write_script(dir: &Scratch, tag: &str, event: &str, manage: bool) -> PathBuf {
    let argv_log = dir.path().join(format!("{tag}.argv"));
    let action = match (manage, event) {
        (true, "up") => "ip addr add \"$2/24\" dev \"$1\"",
        (true, _) => "ip addr del \"$2/24\" dev \"$1\" 2>/dev/null",
        (false, _) => "",
    };
    let body = format!(
        "#!/bin/sh\necho \"{event} $*\" >> {log}\n{action}\nexit 0\n",
        log = argv_log.display()
    );
    let p = dir.write(&format!("{tag}-{event}.sh"), &body);
    run_chmod(&p);
    p
}

fn run_chmod(p: &Path) {
    carpd_testbed::run(&["chmod", "755", p.to_str().unwrap()]);
}

/// The argv lines a node's scripts or hooks logged.
fn argv_lines(dir: &Scratch, tag: &str) -> Vec<String> {
    fs::read_to_string(dir.path().join(format!("{tag}.argv")))
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

/// Starts `node` on host `i` of `lan`; `tag` names its files.
fn start(lan: &Lan, dir: &Scratch, i: usize, node: &Node, tag: &str) -> Daemon {
    let ns = &lan.hosts[i];
    let src = Lan::host_addr(i, 0);
    let manage_in_scripts = node.kind != Kind::CarpdToml;
    let up = write_script(dir, tag, "up", manage_in_scripts);
    let down = write_script(dir, tag, "down", manage_in_scripts);
    let (up, down) = (up.to_str().unwrap(), down.to_str().unwrap());
    let vhid = node.vhid.to_string();
    let advbase = node.advbase.to_string();
    let advskew = node.advskew.to_string();
    let mcast = node.mcast.map(|g| format!("--mcast={g}"));
    if node.kind == Kind::CarpdToml {
        let mut toml = format!(
            "advbase = {advbase}\nadvskew = {advskew}\npreempt = {}\nauth = \"ucarp\"\n\
             password = {:?}\nup = {up:?}\ndown = {down:?}\nxparam = {XPARAM:?}\n\
             broadcast = {}\n",
            node.preempt, node.password, node.nomcast
        );
        if let Some(g) = node.mcast {
            toml.push_str(&format!("group = {g:?}\n"));
        }
        toml.push_str(&format!(
            "\n[[interface]]\nname = \"eth0\"\nsource = {src:?}\n\n\
             [[interface.vhid]]\nid = {vhid}\naddresses = [\"{VIP}/24\"]\n"
        ));
        let path = dir.write(&format!("{tag}.toml"), &toml);
        return Daemon::carpd(ns, tag, dir.path(), &path, &[]);
    }
    let mut args = vec![
        "-i",
        "eth0",
        "-s",
        &src,
        "-v",
        &vhid,
        "-p",
        &node.password,
        "-a",
        VIP,
        "-b",
        &advbase,
        "-k",
        &advskew,
        "-u",
        up,
        "-d",
        down,
        "-x",
        XPARAM,
        "-z",
    ];
    if node.preempt {
        args.push("-P");
    }
    if node.nomcast {
        args.push("-M");
    }
    if let Some(m) = &mcast {
        args.push(m);
    }
    match node.kind {
        Kind::Ucarp => {
            // No syslog: everything to the log file.
            args.extend(["-f", "none"]);
            Daemon::spawn(ns, tag, dir.path(), "ucarp", &args)
        }
        Kind::CarpdAsUcarp => {
            let link = dir.path().join(format!("{tag}-bin")).join("ucarp");
            fs::create_dir_all(link.parent().unwrap()).unwrap();
            std::os::unix::fs::symlink(carpd_testbed::carpd_exe(), &link).unwrap();
            Daemon::spawn(ns, tag, dir.path(), link.to_str().unwrap(), &args)
        }
        _ => Daemon::spawn(ns, tag, dir.path(), carpd_testbed::carpd_exe(), &args),
    }
}

fn owners(lan: &Lan) -> Vec<usize> {
    lan.owners(VIP)
}

fn wait_owners(lan: &Lan, expected: &[usize], timeout: Duration, what: &str) {
    let mut last = Vec::new();
    let ok = wait_until(timeout, Duration::from_millis(20), || {
        last = owners(lan);
        last == expected
    });
    assert!(
        ok.is_some(),
        "{what}: owners {last:?} after {timeout:?}, expected {expected:?}"
    );
}

/// Host 0 starts first with the better priority and becomes MASTER, host 1
/// joins as BACKUP: nothing moves for 20 s. Then host 0 is SIGKILLed and
/// host 1 takes over; then host 0 comes back with preemption and takes the
/// address back.
fn first_master_kill_preempt(first: Kind, second: Kind) {
    let dir = Scratch::new();
    let lan = Lan::new(2, 1);
    let w = Watcher::start(&lan.refs());
    let a = Node::new(first, 0);
    let b = Node::new(second, 100);

    let mut d0 = start(&lan, &dir, 0, &a, "a1");
    wait_owners(&lan, &[0], a.master_down() + 2 * MARGIN, "first node");
    let joined = Instant::now();
    let mut d1 = start(&lan, &dir, 1, &b, "b1");
    sleep(Duration::from_secs(20));
    assert_eq!(owners(&lan), vec![0]);
    let h = w.history();
    let moves = h.changes_since(joined, |x| x == VIP);
    assert!(moves.is_empty(), "the address moved: {moves:?}");
    assert!(d0.is_running() && d1.is_running());

    // Same event, same argv: the first node's up and the backup's
    // down-at-start, in either implementation.
    let want_up = format!("up eth0 {VIP} {XPARAM}");
    let want_down = format!("down eth0 {VIP} {XPARAM}");
    assert!(
        argv_lines(&dir, "a1").contains(&want_up),
        "{:?}",
        argv_lines(&dir, "a1")
    );
    assert_eq!(argv_lines(&dir, "b1"), vec![want_down.clone()]);

    // Crash: the address stays on host 0 (nothing can remove it); the
    // backup adds it within its master-down time.
    let killed = Instant::now();
    d0.sigkill();
    let _ = d0.wait_exit(Duration::from_secs(2));
    wait_owners(&lan, &[0, 1], b.master_down() + 2 * MARGIN, "takeover");
    let took = w.history().time_to_own(1, VIP, killed);
    assert!(took <= b.master_down() + MARGIN, "takeover took {took:?}");
    assert_eq!(
        argv_lines(&dir, "b1"),
        vec![want_down.clone(), want_up.clone()]
    );
    lan.hosts[0].ip(&["addr", "del", &format!("{VIP}/24"), "dev", "eth0"]);

    // Host 0 back with preemption: it takes over on the first
    // advertisement it hears, long before its master-down time would pass.
    let back = Instant::now();
    let mut d0 = start(&lan, &dir, 0, &a.clone().preempt(), "a2");
    wait_owners(
        &lan,
        &[0],
        b.interval() + a.master_down() + 2 * MARGIN,
        "preemption",
    );
    let took = w.history().time_to_own(0, VIP, back);
    eprintln!("preemption after {took:?}");
    let settled = Instant::now();
    sleep(Duration::from_secs(4));
    assert_eq!(owners(&lan), vec![0]);
    let h = w.history();
    let moves = h.changes_since(settled, |x| x == VIP);
    assert!(moves.is_empty(), "flapping after preemption: {moves:?}");
    // Host 1 left MASTER: its down script/hook ran with the same argv.
    assert_eq!(
        argv_lines(&dir, "b1"),
        vec![want_down.clone(), want_up.clone(), want_down]
    );
    assert!(argv_lines(&dir, "a2").contains(&want_up));
    assert!(d0.is_running() && d1.is_running());
}

#[test]
fn ucarp_master_carpd_cli_backup() {
    first_master_kill_preempt(Kind::Ucarp, Kind::CarpdCli);
}

#[test]
fn ucarp_master_carpd_toml_backup() {
    first_master_kill_preempt(Kind::Ucarp, Kind::CarpdToml);
}

#[test]
fn carpd_cli_master_ucarp_backup() {
    first_master_kill_preempt(Kind::CarpdCli, Kind::Ucarp);
}

#[test]
fn carpd_toml_master_ucarp_backup() {
    first_master_kill_preempt(Kind::CarpdToml, Kind::Ucarp);
}

/// Runs `f` on `n` fresh LANs at once (they are independent segments), so
/// that rounds of a slow scenario cost the time of one.
fn parallel_lans<T: Send>(n: usize, f: impl Fn(usize, &Lan, &Scratch) -> T + Sync) -> Vec<T> {
    let lans: Vec<(Lan, Scratch)> = thread::scope(|s| {
        let hs: Vec<_> = (0..n)
            .map(|_| s.spawn(|| (Lan::new(2, 1), Scratch::new())))
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    thread::scope(|s| {
        let hs: Vec<_> = lans
            .iter()
            .enumerate()
            .map(|(i, (lan, dir))| {
                let f = &f;
                s.spawn(move || f(i, lan, dir))
            })
            .collect();
        hs.into_iter()
            .map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
            .collect()
    })
}

/// Equal advbase and advskew, started at the same moment: UCARP's
/// tie-break (the lower source address as a little-endian u32, 10.99.0.1
/// here) leaves exactly one MASTER within a few seconds, every time, and
/// nothing flaps afterwards. Ten rounds, on ten segments at once, with
/// ucarp and carpd alternating on the winning address.
#[test]
fn equal_priority_ten_rounds() {
    parallel_lans(10, |round, lan, dir| {
        let carpd = if round >= 8 {
            Kind::CarpdAsUcarp
        } else if round % 4 < 2 {
            Kind::CarpdCli
        } else {
            Kind::CarpdToml
        };
        let kinds = if round % 2 == 0 {
            [Kind::Ucarp, carpd]
        } else {
            [carpd, Kind::Ucarp]
        };
        let w = Watcher::start(&lan.refs());
        let nodes: Vec<Node> = kinds.iter().map(|&k| Node::new(k, 0)).collect();
        let mut d: Vec<Daemon> = thread::scope(|s| {
            let hs: Vec<_> = nodes
                .iter()
                .enumerate()
                .map(|(i, n)| s.spawn(move || start(lan, dir, i, n, &format!("r{round}n{i}"))))
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let started = Instant::now();
        // Both time out after about 3 s. The one whose timer fires first
        // may be heard by the other in time to keep it BACKUP; otherwise
        // both become MASTER and host 1 (10.99.0.2) yields on hearing host
        // 0. ucarp may hear a packet up to 1 s late, so "one master" means
        // one owner that holds for 2 s.
        let what = format!("round {round} ({kinds:?})");
        let mut since: Option<(Vec<usize>, Instant)> = None;
        let one = wait_until(
            nodes[0].master_down() + 3 * MARGIN,
            Duration::from_millis(20),
            || {
                let o = owners(lan);
                let t = match &since {
                    Some((prev, t)) if *prev == o => *t,
                    _ => Instant::now(),
                };
                since = Some((o.clone(), t));
                o.len() == 1 && t.elapsed() >= Duration::from_secs(2)
            },
        );
        let (winner, at) = since.clone().unwrap();
        assert!(one.is_some(), "{what}: owners {winner:?}, no single master");
        let converged = at - started;
        let h = w.history();
        if h.max_owners_since(VIP, started) > 1 {
            assert_eq!(
                winner,
                vec![0],
                "{what}: after two masters the lower address must win: {:?}",
                h.timeline(VIP)
            );
        }
        sleep(Duration::from_secs(10));
        assert_eq!(owners(lan), winner, "{what}");
        let h = w.history();
        let moves = h.changes_since(at, |x| x == VIP);
        assert!(moves.is_empty(), "{what} flapped: {:?}", h.timeline(VIP));
        assert!(
            converged <= nodes[0].master_down() + MARGIN,
            "{what}: one master only after {converged:?}"
        );
        assert!(d.iter_mut().all(Daemon::is_running));
        eprintln!("{what}: host {winner:?} alone MASTER from {converged:?}");
    });
}

/// Passwords of 1 to 19 bytes, advbase 1..3, advskews across 0..254,
/// multicast, broadcast (`--nomcast`) and a non-default group: the less
/// preferred node starts alone and becomes MASTER, then the preferred one
/// starts with preemption and takes over on the first advertisement it
/// hears (so it accepted the other's HMAC), and the other yields (so it
/// accepted the preferred one's). Each case runs on its own segment, all at
/// once.
#[test]
fn parameter_matrix() {
    struct Case {
        password: &'static str,
        advbase: u8,
        /// (ucarp, carpd) advskew.
        skews: (u8, u8),
        carpd: Kind,
        nomcast: bool,
        mcast: Option<&'static str>,
    }
    let cases = [
        Case {
            password: "x",
            advbase: 1,
            skews: (254, 0),
            carpd: Kind::CarpdCli,
            nomcast: false,
            mcast: None,
        },
        Case {
            password: "nineteen-bytes-key!",
            advbase: 2,
            skews: (10, 100),
            carpd: Kind::CarpdCli,
            nomcast: true,
            mcast: None,
        },
        Case {
            password: "seven77",
            advbase: 3,
            skews: (2, 1),
            carpd: Kind::CarpdToml,
            nomcast: false,
            mcast: Some("239.1.2.3"),
        },
        Case {
            password: "twelve-bytes",
            advbase: 1,
            skews: (128, 200),
            carpd: Kind::CarpdToml,
            nomcast: true,
            mcast: Some("239.77.0.9"),
        },
        Case {
            password: "ab",
            advbase: 2,
            skews: (0, 254),
            carpd: Kind::CarpdToml,
            nomcast: true,
            mcast: None,
        },
        Case {
            password: "0123456789abcdefghi",
            advbase: 1,
            skews: (50, 49),
            carpd: Kind::CarpdAsUcarp,
            nomcast: false,
            mcast: Some("239.255.18.18"),
        },
    ];
    parallel_lans(cases.len(), |i, lan, dir| {
        let c = &cases[i];
        let mk = |kind, advskew| Node {
            kind,
            vhid: 10 + i as u8 * 20,
            password: c.password.to_string(),
            advbase: c.advbase,
            advskew,
            preempt: false,
            nomcast: c.nomcast,
            mcast: c.mcast,
        };
        let ucarp = mk(Kind::Ucarp, c.skews.0);
        let carpd = mk(c.carpd, c.skews.1);
        // The preferred one is the one with the lower skew (same advbase).
        let (worse, better) = if c.skews.0 > c.skews.1 {
            (ucarp, carpd)
        } else {
            (carpd, ucarp)
        };
        let what = format!(
            "case {i}: pw {} bytes, advbase {}, skews {:?}, {:?}, nomcast {}, mcast {:?}",
            c.password.len(),
            c.advbase,
            c.skews,
            c.carpd,
            c.nomcast,
            c.mcast
        );
        let w = Watcher::start(&lan.refs());
        let mut d0 = start(lan, dir, 0, &worse, &format!("c{i}w"));
        wait_owners(lan, &[0], worse.master_down() + 2 * MARGIN, &what);
        let mut d1 = start(lan, dir, 1, &better.clone().preempt(), &format!("c{i}b"));
        wait_owners(
            lan,
            &[1],
            worse.interval() + better.master_down() + 2 * MARGIN,
            &what,
        );
        let settled = Instant::now();
        sleep(worse.master_down() + MARGIN);
        assert_eq!(owners(lan), vec![1], "{what}");
        let h = w.history();
        let moves = h.changes_since(settled, |x| x == VIP);
        assert!(moves.is_empty(), "{what}: flapped: {:?}", h.timeline(VIP));
        assert!(d0.is_running() && d1.is_running(), "{what}");
    });
}
