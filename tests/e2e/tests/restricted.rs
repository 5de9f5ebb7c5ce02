//! carpd under the restrictions of the shipped systemd unit
//! (`examples/carpd.service`): an unprivileged user holding only
//! CAP_NET_RAW and CAP_NET_ADMIN, no new privileges, and `/proc/sys`
//! read-only except `/proc/sys/net/ipv6/conf` (the unit's
//! `ProtectKernelTunables=yes` with its `ReadWritePaths=` carve-out), in a
//! mount namespace of its own. Next to a normal peer, with `virtual_mac`
//! on, it starts, becomes MASTER, runs its hooks (their output reaches its
//! log), its tracker, its control socket and its metrics, fails over to the
//! peer and back, and logs nothing about `/proc/sys` and no error.
//!
//! A second run makes all of `/proc/sys` read-only: the virtual MAC still
//! works (its settings go over netlink), and only the IPv6 settings that
//! have no netlink form are reported as left alone.

#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use carpd_testbed::{Cluster, Daemon, Netns, carpd_exe, in_netns, wait_until};

const VIP: &str = "10.99.0.107";
const VHID: u8 = 7;
const CHILD: &str = "eth0.c7";
const METRICS_PORT: u16 = 9757;
/// `nobody`: a user with no rights of its own.
const UID: &str = "65534";

/// A demotion reaches the peer with the next advertisement (1 s), the check
/// needs two failed runs 300 ms apart; the rest is slack for a busy machine.
const MOVE: Duration = Duration::from_secs(10);

/// How `/proc/sys` looks to the restricted daemon.
#[derive(Clone, Copy, PartialEq, Eq)]
enum ProcSys {
    /// Read-only but for `/proc/sys/net/ipv6/conf`, as the unit has it.
    AsTheUnit,
    /// All read-only.
    ReadOnly,
}

/// The shell run inside the new mount namespace before carpd is executed
/// (as `"$@"`) under the unit's user and capabilities.
fn sandbox_script(proc_sys: ProcSys) -> String {
    let carve_out = match proc_sys {
        ProcSys::AsTheUnit => {
            "mount --bind /proc/sys/net/ipv6/conf /proc/sys/net/ipv6/conf && \
             mount -o remount,bind,rw /proc/sys/net/ipv6/conf && "
        }
        ProcSys::ReadOnly => "",
    };
    format!(
        "set -e; mount --bind /proc/sys /proc/sys && {carve_out}\
         mount -o remount,bind,ro /proc/sys && \
         exec setpriv --reuid={UID} --regid={UID} --clear-groups --no-new-privs \
         --inh-caps=-all,+net_raw,+net_admin --ambient-caps=-all,+net_raw,+net_admin \
         --bounding-set=-all,+net_raw,+net_admin -- \"$@\""
    )
}

/// carpd started in `ns` as the unit would run it.
fn restricted_carpd(
    ns: &Netns,
    label: &str,
    dir: &Path,
    config: &Path,
    proc_sys: ProcSys,
) -> Daemon {
    let socket = dir.join(format!("{label}.sock"));
    let script = sandbox_script(proc_sys);
    let args = [
        "--mount",
        "--propagation",
        "private",
        "sh",
        "-c",
        &script,
        "sh",
        carpd_exe(),
        "--config",
        config.to_str().unwrap(),
        "--control-socket",
        socket.to_str().unwrap(),
    ];
    // unshare and sh exec, so the daemon keeps this pid
    Daemon::spawn(ns, label, dir, "unshare", &args)
}

/// Node 0 (the restricted one) is preferred, with preemption, hooks, a
/// health check that fails while `<dir>/fail` exists, and metrics; node 1
/// is the backup without preemption.
fn config(node: usize, dir: &Path) -> String {
    let (advskew, preempt) = if node == 0 { (0, true) } else { (100, false) };
    let mut s = format!("password = \"sandbox\"\nadvskew = {advskew}\npreempt = {preempt}\n");
    if node == 0 {
        let d = dir.display();
        s.push_str(&format!(
            "up = \"{d}/up.sh\"\ndown = \"{d}/down.sh\"\n\n\
             [[track]]\ncommand = \"test ! -e {d}/fail\"\ninterval = \"300ms\"\n\
             timeout = \"2s\"\nrise = 2\nfall = 2\nweight = 50\n\n\
             [metrics]\nlisten = \"127.0.0.1:{METRICS_PORT}\"\n"
        ));
    }
    s.push_str(&format!(
        "\n[[interface]]\nname = \"eth0\"\n\n  [[interface.vhid]]\n  id = {VHID}\n  \
         addresses = [\"{VIP}/24\"]\n  virtual_mac = true\n"
    ));
    s
}

/// A hook that records its kind in `<dir>/hooks` and prints a line that
/// must show up in carpd's log.
fn write_hook(dir: &Path, kind: &str) {
    let path = dir.join(format!("{kind}.sh"));
    let d = dir.display();
    std::fs::write(
        &path,
        format!(
            "#!/bin/sh\necho {kind} >> {d}/hooks\necho \"{kind} hook says hello to the log\"\n"
        ),
    )
    .unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// `GET /metrics` from inside `ns`.
fn metrics(ns: &Netns) -> String {
    in_netns(ns, || {
        let mut s = TcpStream::connect(("127.0.0.1", METRICS_PORT)).expect("connect to metrics");
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n")
            .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).expect("read response");
        out
    })
}

fn sysctl(ns: &Netns, path: &str) -> String {
    ns.exec(&["cat", &format!("/proc/sys/net/{path}")])
        .trim()
        .to_string()
}

/// The `Uid:` and `CapEff:` lines of the daemon's `/proc/<pid>/status`.
fn credentials(pid: i32) -> (String, String) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .unwrap()
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    };
    (field("Uid:"), field("CapEff:"))
}

fn wait_log(d: &Daemon, needle: &str, within: Duration) {
    let seen = wait_until(within, Duration::from_millis(50), || {
        d.log().contains(needle)
    });
    assert!(seen.is_some(), "{needle:?} not logged within {within:?}");
}

fn run_restricted(proc_sys: ProcSys) -> (String, String) {
    let c = Cluster::new(2, 1);
    let dir = c.dir.path();
    // the unprivileged daemon creates its control socket, and its hooks
    // their record, in here
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    write_hook(dir, "up");
    write_hook(dir, "down");
    let cfg0 = c.write_config(0, &config(0, dir));
    let cfg1 = c.write_config(1, &config(1, dir));

    let mut a = restricted_carpd(c.host(0), "restricted", dir, &cfg0, proc_sys);
    c.wait_owners(VIP, &[0], Duration::from_secs(15));
    let b = Daemon::carpd(c.host(1), "peer", dir, &cfg1, &[]);

    // really unprivileged: nobody, CAP_NET_RAW (13) and CAP_NET_ADMIN (12)
    assert_eq!(
        credentials(a.pid()),
        (
            "65534 65534 65534 65534".to_string(),
            "0000000000003000".to_string()
        )
    );

    // MASTER with the address on the virtual MAC child, whose settings
    // were made over netlink although /proc/sys is read-only
    let on_child = c.host(0).ip(&["-o", "addr", "show", "dev", CHILD]);
    assert!(on_child.contains(VIP), "{on_child}");
    assert_eq!(
        sysctl(c.host(0), &format!("ipv4/conf/{CHILD}/arp_ignore")),
        "1"
    );
    assert_eq!(
        sysctl(c.host(0), &format!("ipv4/conf/{CHILD}/arp_announce")),
        "2"
    );
    assert_eq!(
        sysctl(c.host(0), &format!("ipv4/conf/{CHILD}/rp_filter")),
        "0"
    );
    assert_eq!(
        sysctl(c.host(0), &format!("ipv6/conf/{CHILD}/addr_gen_mode")),
        "1"
    );
    let disabled = sysctl(c.host(0), &format!("ipv6/conf/{CHILD}/disable_ipv6"));
    assert_eq!(
        disabled,
        if proc_sys == ProcSys::AsTheUnit {
            "1"
        } else {
            "0"
        }
    );

    // hooks ran, and their output went to the log
    wait_log(&a, "up hook says hello to the log", Duration::from_secs(10));
    // the control socket answers, and so do the metrics
    let status = a.status();
    assert_eq!(status["vhids"][0]["state"], "MASTER", "{status}");
    let m = metrics(c.host(0));
    assert!(m.contains("carpd_"), "{m}");

    // the tracker fails: the peer takes over, and gives it back once the
    // check passes again (preemption)
    std::thread::sleep(Duration::from_secs(3));
    c.wait_owners(VIP, &[0], MOVE);
    c.dir.write("fail", "");
    c.wait_owners(VIP, &[1], MOVE);
    std::fs::remove_file(dir.join("fail")).unwrap();
    c.wait_owners(VIP, &[0], MOVE);

    // a clean stop hands over and deletes the child
    a.sigterm();
    assert!(a.wait_exit(Duration::from_secs(10)).is_some(), "no exit");
    c.wait_owners(VIP, &[1], MOVE);
    assert!(!c.host(0).ip(&["-o", "link"]).contains(CHILD));
    let hooks = std::fs::read_to_string(dir.join("hooks")).unwrap();
    assert!(
        hooks.contains("up\ndown\nup\n"),
        "hooks of MASTER, BACKUP, MASTER: {hooks:?}"
    );
    drop(b);
    (a.log(), hooks)
}

#[test]
fn every_feature_works_under_the_units_restrictions() {
    let (log, _) = run_restricted(ProcSys::AsTheUnit);
    assert!(!log.contains("/proc/sys"), "{log}");
    assert!(!log.contains("ERROR"), "{log}");
}

#[test]
fn a_read_only_proc_sys_leaves_only_the_ipv6_settings() {
    let (log, _) = run_restricted(ProcSys::ReadOnly);
    assert!(!log.contains("ERROR"), "{log}");
    assert!(
        log.contains("cannot set net.ipv6.conf.eth0.c7.disable_ipv6=1"),
        "{log}"
    );
    assert!(!log.contains("using the real MAC"), "{log}");
}
