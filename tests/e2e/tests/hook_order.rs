//! The hooks of a VHID run one after the other, in transition order, when
//! the scripts own the address (ucarp's way, and `manage_addresses = false`).
//!
//! Node A becomes MASTER; its up script takes 2 s before `ip addr add`.
//! Meanwhile node B starts with preemption and a better priority and takes
//! over, so A becomes BACKUP while its up script still runs. A's down script
//! must run after the up script, not beside it: run beside it, it removes
//! nothing, the up script then adds the address, and A (BACKUP) and B
//! (MASTER) both hold it for good.

// A test binary: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::fs;
use std::path::{Path, PathBuf};
use std::thread::sleep;
use std::time::{Duration, Instant};

use carpd_testbed::{Daemon, Lan, Scratch, Watcher, transitions, wait_until};

const VIP: &str = "10.99.0.100";
const VHID: u8 = 1;

/// How long A's up script takes before it adds the address.
const UP_DELAY: Duration = Duration::from_secs(2);

/// Slack for process start, scheduling and netlink on a loaded machine.
const MARGIN: Duration = Duration::from_secs(3);

/// How a node is started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cli {
    /// ucarp's command line: the scripts own the address.
    Ucarp,
    /// A TOML file with `manage_addresses = false`.
    Toml,
}

/// The scripts of one node, logging `<event> start|end` to `<tag>.hooks`.
/// A slow up script waits for the file `<tag>.go` (so that it is certainly
/// still running when the node leaves MASTER), then `UP_DELAY`, then adds
/// the address.
struct Scripts {
    up: PathBuf,
    down: PathBuf,
    log: PathBuf,
    started: PathBuf,
    go: PathBuf,
}

impl Scripts {
    fn write(dir: &Scratch, tag: &str, slow_up: bool) -> Scripts {
        let log = dir.path().join(format!("{tag}.hooks"));
        let started = dir.path().join(format!("{tag}.up-started"));
        let go = dir.path().join(format!("{tag}.go"));
        let wait = if slow_up {
            format!(
                "touch {started}\n\
                 i=0\n\
                 while [ ! -e {go} ] && [ $i -lt 400 ]; do sleep 0.05; i=$((i+1)); done\n\
                 sleep {delay}\n",
                started = started.display(),
                go = go.display(),
                delay = UP_DELAY.as_secs(),
            )
        } else {
            String::new()
        };
        let up = script(
            dir,
            &format!("{tag}-up.sh"),
            &format!(
                "echo 'up start' >> {log}\n{wait}ip addr add \"$2/24\" dev \"$1\"\necho 'up end' >> {log}\n",
                log = log.display()
            ),
        );
        let down = script(
            dir,
            &format!("{tag}-down.sh"),
            &format!(
                "echo 'down start' >> {log}\nip addr del \"$2/24\" dev \"$1\" 2>/dev/null\necho 'down end' >> {log}\n",
                log = log.display()
            ),
        );
        Scripts {
            up,
            down,
            log,
            started,
            go,
        }
    }

    fn lines(&self) -> Vec<String> {
        fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }
}

fn script(dir: &Scratch, name: &str, body: &str) -> PathBuf {
    let p = dir.write(name, &format!("#!/bin/sh\n{body}exit 0\n"));
    carpd_testbed::run(&["chmod", "755", p.to_str().unwrap()]);
    p
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// One node's settings.
struct Node<'a> {
    cli: Cli,
    scripts: &'a Scripts,
    advskew: u8,
    preempt: bool,
}

/// Starts `node` on host `i`; `tag` names its files.
fn start(lan: &Lan, dir: &Scratch, i: usize, node: &Node, tag: &str) -> Daemon {
    let Node {
        cli,
        scripts,
        advskew,
        preempt,
    } = *node;
    let ns = &lan.hosts[i];
    let src = Lan::host_addr(i, 0);
    match cli {
        Cli::Ucarp => {
            let (vhid, skew) = (VHID.to_string(), advskew.to_string());
            let mut args = vec![
                "-i",
                "eth0",
                "-s",
                &src,
                "-v",
                &vhid,
                "-p",
                "pass",
                "-a",
                VIP,
                "-k",
                &skew,
                "-u",
                path(&scripts.up),
                "-d",
                path(&scripts.down),
            ];
            if preempt {
                args.push("-P");
            }
            Daemon::spawn(ns, tag, dir.path(), carpd_testbed::carpd_exe(), &args)
        }
        Cli::Toml => {
            let toml = format!(
                "advbase = 1\nadvskew = {advskew}\npreempt = {preempt}\npassword = \"pass\"\n\
                 manage_addresses = false\nup = {up:?}\ndown = {down:?}\n\n\
                 [[interface]]\nname = \"eth0\"\nsource = {src:?}\n\n\
                 [[interface.vhid]]\nid = {VHID}\naddresses = [\"{VIP}/24\"]\n",
                up = path(&scripts.up),
                down = path(&scripts.down),
            );
            let config = dir.write(&format!("{tag}.toml"), &toml);
            Daemon::carpd(ns, tag, dir.path(), &config, &[])
        }
    }
}

fn preempted_while_up_script_runs(cli: Cli) {
    let dir = Scratch::new();
    let lan = Lan::new(2, 1);
    let watcher = Watcher::start(&lan.refs());
    let a_scripts = Scripts::write(&dir, "a", true);
    let b_scripts = Scripts::write(&dir, "b", false);

    // A alone: MASTER after its master-down time, and its up script starts.
    let a_node = Node {
        cli,
        scripts: &a_scripts,
        advskew: 100,
        preempt: false,
    };
    let a = start(&lan, &dir, 0, &a_node, "a");
    assert!(
        wait_until(Duration::from_secs(20), Duration::from_millis(20), || {
            a_scripts.started.exists()
        })
        .is_some(),
        "A's up script never started"
    );

    // B preempts while A's up script runs.
    let b_node = Node {
        cli,
        scripts: &b_scripts,
        advskew: 0,
        preempt: true,
    };
    let b = start(&lan, &dir, 1, &b_node, "b");
    let left_master = wait_until(Duration::from_secs(20), Duration::from_millis(20), || {
        transitions(&a.log(), "eth0", VHID)
            .iter()
            .any(|l| l.contains("MASTER -> BACKUP"))
    });
    assert!(left_master.is_some(), "A never left MASTER");
    assert!(
        wait_until(MARGIN, Duration::from_millis(20), || lan.hosts[1]
            .has_addr(VIP))
        .is_some(),
        "B never took the address"
    );
    // A is BACKUP now; only then does its up script go on to add the address.
    fs::write(&a_scripts.go, "").unwrap();

    // Well past the up script's end: only B holds the address, and it stays so.
    sleep(UP_DELAY + MARGIN);
    let settled = Instant::now();
    assert_eq!(lan.owners(VIP), vec![1], "owners after the up script ended");
    sleep(Duration::from_secs(5));
    assert_eq!(lan.owners(VIP), vec![1], "owners later");
    let history = watcher.history();
    let moves = history.changes_since(settled, |x| x == VIP);
    assert!(
        moves.is_empty(),
        "the address moved after settling: {moves:?}"
    );

    // A's hooks ran one after the other: down at start, up, then down.
    assert_eq!(
        a_scripts.lines(),
        [
            "down start",
            "down end",
            "up start",
            "up end",
            "down start",
            "down end"
        ],
        "A's hooks"
    );
    drop((a, b));
}

#[test]
fn ucarp_command_line_down_script_waits_for_the_up_script() {
    preempted_while_up_script_runs(Cli::Ucarp);
}

#[test]
fn toml_scripts_owning_the_address_run_in_transition_order() {
    preempted_while_up_script_runs(Cli::Toml);
}
