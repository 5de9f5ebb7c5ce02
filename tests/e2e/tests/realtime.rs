//! `realtime = true`: carpd's runtime thread runs SCHED_RR at
//! `realtime_priority` while its other threads and its hooks stay at
//! SCHED_OTHER, its memory is locked, the metrics say so, and a reload
//! cannot change it. Without the capability or the limit it needs
//! (CAP_SYS_NICE / RLIMIT_RTPRIO, CAP_IPC_LOCK / RLIMIT_MEMLOCK) it does
//! not start, and says which.

#![allow(clippy::unwrap_used)]

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use carpd_testbed::{Cluster, Daemon, carpd_exe, client, http_get, sample, text, wait_until};

const VIP: &str = "10.99.0.120";
const VHID: u8 = 20;
const METRICS_PORT: u16 = 9760;
const PRIORITY: u8 = 37;
/// `nobody`: a user with no rights of its own.
const UID: &str = "65534";

/// A lone node becomes MASTER after three missed intervals (3 s at advbase
/// 1); the rest is slack for a busy machine.
const MASTER_WITHIN: Duration = Duration::from_secs(20);

const SCHED_OTHER: u64 = 0;
const SCHED_RR: u64 = 2;

fn config(dir: &Path, head: &str) -> String {
    let d = dir.display();
    format!(
        "{head}\npassword = \"rt\"\nup = \"{d}/up.sh\"\n\n\
         [metrics]\nlisten = \"127.0.0.1:{METRICS_PORT}\"\n\n\
         [[interface]]\nname = \"eth0\"\n\n  [[interface.vhid]]\n  id = {VHID}\n  \
         addresses = [\"{VIP}/24\"]\n"
    )
}

/// `(policy, rt_priority)` of a task: fields 41 and 40 of its `stat`,
/// counted after the command name, which may hold spaces.
fn sched_of_stat(stat: &str) -> (u64, u64) {
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    // field 3 (state) is the first after the name
    let fields: Vec<u64> = after
        .split_whitespace()
        .map(|f| f.parse().unwrap_or(0))
        .collect();
    (fields[41 - 3], fields[40 - 3])
}

/// Each thread of `pid`: its id and `(policy, rt_priority)`.
fn threads(pid: i32) -> Vec<(i32, (u64, u64))> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let tid: i32 = e.file_name().to_str().unwrap().parse().unwrap();
            let stat = std::fs::read_to_string(e.path().join("stat")).unwrap();
            (tid, sched_of_stat(&stat))
        })
        .collect()
}

fn vm_locked_kib(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmLck:"))
        .unwrap()
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn the_runtime_thread_runs_round_robin_with_memory_locked_and_hooks_do_not() {
    let mut c = Cluster::new(1, 1);
    let dir = c.dir.path().to_path_buf();
    // the up hook records its own policy and priority
    let hook = dir.join("up.sh");
    std::fs::write(
        &hook,
        format!(
            "#!/bin/sh\nread stat < /proc/$$/stat\n\
             echo \"$stat\" > {d}/up.stat.tmp && mv {d}/up.stat.tmp {d}/up.stat\n",
            d = dir.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).unwrap();
    let head = format!("realtime = true\nrealtime_priority = {PRIORITY}");
    let pid = c.start_toml(0, &config(&dir, &head)).pid();
    c.wait_owners(VIP, &[0], MASTER_WITHIN);
    let recorded = dir.join("up.stat");
    let ran = wait_until(MASTER_WITHIN, Duration::from_millis(50), || {
        recorded.exists()
    });
    assert!(ran.is_some(), "the up hook did not run");
    let hook_stat = std::fs::read_to_string(&recorded).unwrap();

    // the main thread runs the runtime: SCHED_RR at the priority; every
    // other thread (log writers, blocking pool) at SCHED_OTHER
    let all = threads(pid);
    for (tid, sched) in &all {
        if *tid == pid {
            assert_eq!(*sched, (SCHED_RR, u64::from(PRIORITY)), "runtime thread");
        } else {
            assert_eq!(*sched, (SCHED_OTHER, 0), "thread {tid} of {all:?}");
        }
    }
    assert!(all.iter().any(|(tid, _)| *tid == pid), "{all:?}");
    assert!(vm_locked_kib(pid) > 0, "no memory locked");
    // the hook, started while the daemon ran real-time, did not
    assert_eq!(sched_of_stat(&hook_stat), (SCHED_OTHER, 0), "{hook_stat}");

    let metrics = http_get(c.host(0), METRICS_PORT, "/metrics");
    assert_eq!(
        sample(&metrics, "carpd_realtime"),
        Some(f64::from(PRIORITY)),
        "{metrics}"
    );

    // a reload cannot change it: refused, nothing changes, restart named
    let socket = c.node(0).socket();
    let socket = socket.to_str().unwrap();
    c.write_config(0, &config(&dir, "realtime = true\nrealtime_priority = 38"));
    for dry in [true, false] {
        let mut args = vec!["reload", "--socket", socket];
        if dry {
            args.push("--dry-run");
        }
        let out = client(&args);
        assert!(!out.status.success(), "reload {args:?} accepted");
        let err = text(&out.stderr);
        assert!(
            err.contains(
                "realtime cannot change on reload (priority 37 -> priority 38); restart carpd"
            ),
            "{err}"
        );
    }
    c.write_config(0, &config(&dir, ""));
    let err = text(&client(&["reload", "--socket", socket]).stderr);
    assert!(
        err.contains("realtime cannot change on reload (priority 37 -> off)"),
        "{err}"
    );
    let (_, main) = threads(pid).into_iter().find(|(t, _)| *t == pid).unwrap();
    assert_eq!(main, (SCHED_RR, u64::from(PRIORITY)));
    assert!(c.node(0).is_running());
}

/// carpd as `nobody` with CAP_NET_RAW, CAP_NET_ADMIN and `extra_caps`
/// (`,+cap...`), under the resource `limits` (prlimit options).
fn unprivileged_carpd(
    c: &Cluster,
    label: &str,
    config: &Path,
    extra_caps: &str,
    limits: &[&str],
) -> Daemon {
    let dir = c.dir.path();
    let socket = dir.join(format!("{label}.sock"));
    let caps = format!("-all,+net_raw,+net_admin{extra_caps}");
    let (inh, ambient, bounding) = (
        format!("--inh-caps={caps}"),
        format!("--ambient-caps={caps}"),
        format!("--bounding-set={caps}"),
    );
    let (uid, gid) = (format!("--reuid={UID}"), format!("--regid={UID}"));
    let mut args: Vec<&str> = limits.to_vec();
    args.extend([
        "--",
        "setpriv",
        &uid,
        &gid,
        "--clear-groups",
        "--no-new-privs",
        &inh,
        &ambient,
        &bounding,
        "--",
        carpd_exe(),
        "--config",
        config.to_str().unwrap(),
        "--control-socket",
        socket.to_str().unwrap(),
    ]);
    // prlimit and setpriv exec, so the daemon keeps this pid
    Daemon::spawn(c.host(0), label, dir, "prlimit", &args)
}

/// A scratch directory the unprivileged daemon can use, with a
/// configuration whose hook does nothing.
fn unprivileged_setup(c: &Cluster, head: &str) -> std::path::PathBuf {
    let dir = c.dir.path();
    // the unprivileged daemon creates its control socket in here
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    let hook = dir.join("up.sh");
    std::fs::write(&hook, "#!/bin/sh\n").unwrap();
    std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).unwrap();
    let cfg = c.write_config(0, &config(dir, head));
    std::fs::set_permissions(&cfg, std::fs::Permissions::from_mode(0o644)).unwrap();
    cfg
}

/// As the packaged unit runs it with the real-time drop-in its comments
/// give: its own user with CAP_SYS_NICE and CAP_IPC_LOCK besides the
/// network ones; the capabilities, not the limits (lowered to nothing
/// here), make it work.
#[test]
fn the_real_time_drop_ins_capabilities_are_enough_for_an_unprivileged_daemon() {
    let c = Cluster::new(1, 1);
    let cfg = unprivileged_setup(&c, "realtime = true");
    let d = unprivileged_carpd(
        &c,
        "unit",
        &cfg,
        ",+sys_nice,+ipc_lock",
        &["--rtprio=0", "--memlock=0"],
    );
    c.wait_owners(VIP, &[0], MASTER_WITHIN);
    let pid = d.pid();
    let (_, main) = threads(pid).into_iter().find(|(t, _)| *t == pid).unwrap();
    assert_eq!(main, (SCHED_RR, 50), "{}", d.log());
    assert!(vm_locked_kib(pid) > 0, "no memory locked");
}

#[test]
fn without_real_time_rights_it_does_not_start_and_names_what_is_missing() {
    let c = Cluster::new(1, 1);
    let cfg = unprivileged_setup(&c, "realtime = true");
    let dir = c.dir.path();

    // (extra capabilities, limits, expected message)
    let cases = [
        (
            "",
            "--rtprio=0",
            "realtime: cannot run at SCHED_RR priority 50: needs CAP_SYS_NICE or \
             RLIMIT_RTPRIO (LimitRTPRIO=) of at least 50 (it is 0)",
        ),
        (
            ",+sys_nice",
            "--memlock=65536",
            "realtime: cannot lock memory (mlockall): needs CAP_IPC_LOCK or an \
             RLIMIT_MEMLOCK (LimitMEMLOCK=) that holds the whole process (it is 65536 bytes)",
        ),
    ];
    for (i, (caps, limit, want)) in cases.into_iter().enumerate() {
        let label = format!("refused{i}");
        let socket = dir.join(format!("{label}.sock"));
        let mut d = unprivileged_carpd(&c, &label, &cfg, caps, &[limit]);
        let status = d
            .wait_exit(Duration::from_secs(20))
            .expect("carpd exits without its real-time rights");
        assert_eq!(status.code(), Some(1), "{}", d.log());
        let log = d.log();
        assert!(log.contains(want), "want {want:?} in:\n{log}");
        // nothing was started: no address, no socket left behind
        assert!(c.owners(VIP).is_empty());
        assert!(!socket.exists());
    }
}
