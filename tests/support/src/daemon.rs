//! Processes under test: carpd (found next to the test executable) and the
//! tools run beside it, each inside a namespace with its output logged to a
//! file that is printed when the test fails.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::thread;
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::Error;
use crate::command::{require_tool, run, wait_until};
use crate::netns::Netns;

/// The `carpd` binary of the profile the running executable was built in:
/// a test executable is `target/<profile>/deps/<test>-<hash>`, a binary
/// `target/<profile>/<name>`, and carpd is `target/<profile>/carpd`.
/// `cargo test --workspace` builds it (carpd's own integration tests need
/// it); `cargo test -p carpd-e2e` alone does not, so it fails with one line
/// saying to run `cargo build -p carpd` first.
pub fn carpd_exe() -> &'static str {
    static EXE: OnceLock<String> = OnceLock::new();
    EXE.get_or_init(|| find_carpd().unwrap_or_else(|e| panic!("{e}")))
}

fn find_carpd() -> Result<String, Error> {
    let exe = std::env::current_exe()
        .map_err(|e| Error::Setup(format!("path of the running executable: {e}")))?;
    let mut dir = exe.parent();
    if dir.is_some_and(|d| d.ends_with("deps")) {
        dir = dir.and_then(Path::parent);
    }
    let Some(dir) = dir else {
        return Err(Error::Setup(format!(
            "no directory above {}",
            exe.display()
        )));
    };
    let carpd = dir.join("carpd");
    if !carpd.is_file() {
        return Err(Error::Setup(format!(
            "carpd binary not found at {}: build it first with `cargo build -p carpd` (same profile as the tests)",
            carpd.display()
        )));
    }
    carpd
        .into_os_string()
        .into_string()
        .map_err(|p| Error::Setup(format!("carpd path is not UTF-8: {p:?}")))
}

/// A process running inside a namespace, with stdout and stderr captured to
/// a file. Killed on drop; its log is printed if the test is failing.
#[derive(Debug)]
pub struct Daemon {
    label: String,
    child: Child,
    log: PathBuf,
    status: Option<ExitStatus>,
}

impl Daemon {
    /// Starts `program args...` in `ns`, logging to `<dir>/<label>.log`.
    pub fn spawn(ns: &Netns, label: &str, dir: &Path, program: &str, args: &[&str]) -> Daemon {
        if !program.contains('/') {
            require_tool(program);
        }
        let log = dir.join(format!("{label}.log"));
        let out = File::create(&log).expect("create log file");
        let err = out.try_clone().expect("clone log file");
        let child = Command::new("ip")
            .args(["netns", "exec", ns.name(), program])
            .args(args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {program}: {e}"));
        Daemon {
            label: label.to_string(),
            child,
            log,
            status: None,
        }
    }

    /// Starts `carpd --config <config> extra...` in `ns`, with its control
    /// socket at `<dir>/<label>.sock` (see [`Daemon::socket`]) unless
    /// `extra` names one: daemons of parallel tests must not share the
    /// default `/run/carpd/carpd.sock`.
    pub fn carpd(ns: &Netns, label: &str, dir: &Path, config: &Path, extra: &[&str]) -> Daemon {
        let config = config.to_str().expect("utf-8 path");
        let socket = dir.join(format!("{label}.sock"));
        let mut args = vec!["--config", config];
        if !extra.iter().any(|a| a.starts_with("--control-socket")) {
            args.extend(["--control-socket", socket.to_str().expect("utf-8 path")]);
        }
        args.extend_from_slice(extra);
        Daemon::spawn(ns, label, dir, carpd_exe(), &args)
    }

    /// The control socket [`Daemon::carpd`] gave this daemon.
    pub fn socket(&self) -> PathBuf {
        self.log.with_extension("sock")
    }

    /// `carpd status --json` against this daemon's control socket.
    pub fn status(&self) -> serde_json::Value {
        let sock = self.socket();
        let out = run(&[
            carpd_exe(),
            "status",
            "--json",
            "--socket",
            sock.to_str().expect("utf-8 path"),
        ]);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("status output {out:?}: {e}"))
    }

    /// `ip netns exec` execs the program, so this is the daemon's own pid.
    pub fn pid(&self) -> i32 {
        i32::try_from(self.child.id()).expect("pid fits i32")
    }

    pub fn signal(&self, sig: Signal) {
        kill(Pid::from_raw(self.pid()), sig).expect("send signal");
    }

    pub fn sigterm(&self) {
        self.signal(Signal::SIGTERM);
    }

    pub fn sigkill(&self) {
        self.signal(Signal::SIGKILL);
    }

    pub fn sighup(&self) {
        self.signal(Signal::SIGHUP);
    }

    /// Waits up to `timeout` for the process to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        wait_until(timeout, Duration::from_millis(10), || self.is_exited());
        self.status
    }

    fn is_exited(&mut self) -> bool {
        if self.status.is_none() {
            self.status = self.child.try_wait().expect("try_wait");
        }
        self.status.is_some()
    }

    pub fn is_running(&mut self) -> bool {
        !self.is_exited()
    }

    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Current length of the log, to read only what comes after with
    /// [`Daemon::log_since`].
    pub fn log_mark(&self) -> usize {
        self.log().len()
    }

    pub fn log_since(&self, mark: usize) -> String {
        self.log().get(mark..).unwrap_or_default().to_string()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.status.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if thread::panicking() {
            let log = self.log();
            let lines: Vec<&str> = log.lines().collect();
            let skip = lines.len().saturating_sub(400);
            eprintln!(
                "----- log of {} ({} lines{}) -----",
                self.label,
                lines.len(),
                if skip > 0 { ", last 400 shown" } else { "" }
            );
            for line in &lines[skip..] {
                eprintln!("{line}");
            }
            eprintln!("----- end of log of {} -----", self.label);
        }
    }
}

/// Lines of `log` that report a state change of `vhid` on `iface` (text or
/// JSON format: the line names the VHID and an arrow between two states).
pub fn transitions<'a>(log: &'a str, iface: &str, vhid: u8) -> Vec<&'a str> {
    log.lines()
        .filter(|l| l.contains(iface) && l.contains("->") && mentions_vhid(l, vhid))
        .collect()
}

/// Whether `line` names `vhid` as `vhid N`, `vhid=N` or `"vhid":N`.
pub(crate) fn mentions_vhid(line: &str, vhid: u8) -> bool {
    let mut rest = line;
    while let Some(i) = rest.find("vhid") {
        rest = &rest[i + 4..];
        let digits: String = rest
            .trim_start_matches([' ', '=', ':', '"'])
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        if digits.parse::<u32>().ok() == Some(u32::from(vhid)) {
            return true;
        }
    }
    false
}

/// Drop counters by reason of the daemon's first VHID.
pub fn vhid_drops(s: &serde_json::Value) -> std::collections::BTreeMap<String, u64> {
    counts(&s["vhids"][0]["drops"])
}

/// Drop counters by reason that belong to no VHID on `iface`.
pub fn interface_drops(
    s: &serde_json::Value,
    iface: &str,
) -> std::collections::BTreeMap<String, u64> {
    counts(&s["interface_drops"][iface])
}

fn counts(v: &serde_json::Value) -> std::collections::BTreeMap<String, u64> {
    v.as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_u64().unwrap_or(0)))
                .collect()
        })
        .unwrap_or_default()
}

/// CPU time (user + system) a process has used so far.
pub fn cpu_time(pid: i32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read stat");
    // fields after the parenthesised command name; utime and stime are
    // fields 14 and 15 of the whole line
    let rest = &stat[stat.rfind(')').expect("stat format") + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f[11].parse::<u64>().expect("utime") + f[12].parse::<u64>().expect("stime");
    let hz: u64 = run(&["getconf", "CLK_TCK"])
        .trim()
        .parse()
        .expect("CLK_TCK");
    Duration::from_millis(ticks * 1000 / hz)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vhid_mentions() {
        let l = "INFO carpd: eth0 vhid 17: BACKUP -> MASTER (master_down)";
        assert_eq!(transitions(l, "eth0", 17).len(), 1);
        assert!(transitions(l, "eth0", 1).is_empty());
        assert!(transitions(l, "eth1", 17).is_empty());
        assert!(mentions_vhid("interface=eth0 vhid=3 from=BACKUP", 3));
        assert!(mentions_vhid(r#"{"vhid":3,"iface":"eth0"}"#, 3));
        assert!(!mentions_vhid("vhid 31", 3));
    }
}
