//! Processes under test: spawned inside a namespace, logged to a file,
//! killed on drop; their CPU time and proportional memory.

use std::fs::{self, File};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use carpd_testbed::{Netns, wait_until};
use nix::sys::signal::{SigSet, Signal, kill};
use nix::unistd::Pid;

use crate::error::{Error, Result};
use crate::watch::{Ns, now_ns};

/// A process running inside a namespace with stdout and stderr in a file.
#[derive(Debug)]
pub struct Daemon {
    child: Child,
    log: PathBuf,
    /// When it was spawned.
    pub started: Ns,
    exited: bool,
}

impl Daemon {
    pub fn spawn(
        ns: &Netns,
        label: &str,
        dir: &Path,
        program: &Path,
        args: &[&str],
    ) -> Result<Daemon> {
        let log = dir.join(format!("{label}.log"));
        let out = File::create(&log)?;
        let err = out.try_clone()?;
        let started = now_ns();
        // `ip netns exec` execs the program: the child is the daemon itself
        let mut cmd = Command::new("ip");
        // SAFETY: only pthread_sigmask, which is async-signal-safe, runs
        // between fork and exec.
        unsafe {
            // the benchmark blocks termination signals for its cleanup
            // thread; the daemons must receive them
            cmd.pre_exec(|| {
                SigSet::empty()
                    .thread_set_mask()
                    .map_err(std::io::Error::from)
            });
        }
        let child = cmd
            .args(["netns", "exec", ns.name()])
            .arg(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|e| Error::Command(format!("spawn {}: {e}", program.display())))?;
        Ok(Daemon {
            child,
            log,
            started,
            exited: false,
        })
    }

    pub fn pid(&self) -> i32 {
        i32::try_from(self.child.id()).unwrap_or(i32::MAX)
    }

    pub fn signal(&self, sig: Signal) -> Result<()> {
        kill(Pid::from_raw(self.pid()), sig).map_err(|e| Error::Command(format!("kill {sig}: {e}")))
    }

    /// Waits up to `timeout` for the process to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> bool {
        let child = &mut self.child;
        let done = wait_until(timeout, Duration::from_millis(5), || {
            matches!(child.try_wait(), Ok(Some(_)))
        })
        .is_some();
        self.exited |= done;
        done
    }

    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if !self.exited {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// CPU time of `pid`, every thread it ever had included (threads of a
/// pool come and go: a sum over the live ones drops when one exits), in
/// nanoseconds, from the process's CPU clock (`clock_getcpuclockid`); 0 if
/// the process is gone.
pub fn cpu_ns(pid: i32) -> u64 {
    let mut clock: libc::clockid_t = 0;
    // SAFETY: `clock` is a valid out-pointer for the call.
    if unsafe { libc::clock_getcpuclockid(pid, &mut clock) } != 0 {
        return 0;
    }
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid out-pointer for the call.
    if unsafe { libc::clock_gettime(clock, &mut ts) } != 0 {
        return 0;
    }
    u64::try_from(ts.tv_sec).unwrap_or(0) * 1_000_000_000 + u64::try_from(ts.tv_nsec).unwrap_or(0)
}

/// User and system CPU time of `pid` and its threads, in clock ticks
/// (`/proc/<pid>/stat` fields 14 and 15).
pub fn user_system_ticks(pid: i32) -> (u64, u64) {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // the command name may contain spaces: fields count from its `)`
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or("", |(_, rest)| rest)
        .split_whitespace()
        .collect();
    let field = |i: usize| fields.get(i).and_then(|f| f.parse().ok()).unwrap_or(0);
    (field(11), field(12))
}

/// Proportional set size of `pid` in KiB (`/proc/<pid>/smaps_rollup`).
pub fn pss_kib(pid: i32) -> u64 {
    smaps_rollup_kib(&smaps_rollup(pid), "Pss:")
}

/// The anonymous and file-backed parts of the PSS of `pid` in KiB
/// (`Pss_Anon`, `Pss_File` in `/proc/<pid>/smaps_rollup`).
pub fn pss_anon_file_kib(pid: i32) -> (u64, u64) {
    let text = smaps_rollup(pid);
    (
        smaps_rollup_kib(&text, "Pss_Anon:"),
        smaps_rollup_kib(&text, "Pss_File:"),
    )
}

/// `/proc/<pid>/smaps_rollup` (empty if the process is gone).
fn smaps_rollup(pid: i32) -> String {
    fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default()
}

/// The value in kB of the line starting with `name` (0 if none).
fn smaps_rollup_kib(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| {
            l.strip_prefix(name)?
                .trim()
                .strip_suffix("kB")?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

/// One request to carpd's control socket, its JSON answer.
pub fn control(socket: &Path, request: &str) -> Result<serde_json::Value> {
    let mut s = UnixStream::connect(socket)
        .map_err(|e| Error::Measure(format!("connect {}: {e}", socket.display())))?;
    s.set_read_timeout(Some(Duration::from_secs(20)))?;
    s.write_all(request.as_bytes())?;
    s.write_all(b"\n")?;
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line)?;
    serde_json::from_str(&line).map_err(|e| Error::Measure(format!("control answer: {e}")))
}

/// Number of VHIDs in each state (`INIT`, `BACKUP`, `MASTER`) from
/// `{"command":"status"}`.
pub fn state_counts(socket: &Path) -> Result<[usize; 3]> {
    let v = control(socket, r#"{"command":"status"}"#)?;
    let mut n = [0; 3];
    for s in v["vhids"].as_array().into_iter().flatten() {
        match s["state"].as_str() {
            Some("INIT") => n[0] += 1,
            Some("BACKUP") => n[1] += 1,
            Some("MASTER") => n[2] += 1,
            _ => {}
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_time_keeps_the_work_of_threads_that_exited() {
        let pid = i32::try_from(std::process::id()).unwrap();
        let before = cpu_ns(pid);
        std::thread::spawn(|| {
            let t = std::time::Instant::now();
            while t.elapsed() < std::time::Duration::from_millis(50) {}
        })
        .join()
        .unwrap();
        // the thread is gone; its 50 ms of work are still counted
        assert!(cpu_ns(pid) - before >= 40_000_000);
    }
}
