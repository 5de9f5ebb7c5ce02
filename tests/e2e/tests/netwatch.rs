//! carpd follows the kernel: interfaces deleted and recreated under the same
//! name, virtual addresses removed or added behind its back, an interface
//! without its address at start, and a process paused and continued.
//!
//! All nodes run advbase 1 and dead ratio 3, so the master-down time of a
//! backup with advskew `s` is 3 s + s/256 s. Margins are generous: the
//! machine running these is small and busy.

use std::thread::sleep;
use std::time::{Duration, Instant};

use carpd_testbed::{
    Cluster, Config, Daemon, Lan, Netns, adv_interval, master_down, try_run, wait_until,
};
use nix::sys::signal::Signal;

const VIP: &str = "10.99.0.100";

/// Slack for process start, scheduling and netlink on a loaded machine.
const MARGIN: Duration = Duration::from_millis(1500);

fn config(iface: &str, vip: &str, advskew: u8, preempt: bool) -> Config {
    Config::default()
        .advskew(advskew)
        .preempt(preempt)
        .vhid(iface, 1, &[format!("{vip}/24")])
}

/// Node 0 (advskew 0) master, node 1 (advskew 100) its backup, both with
/// preemption, on `iface` of every host.
fn master_and_backup(c: &mut Cluster, iface: &str, vip: &str) {
    c.start(0, &config(iface, vip, 0, true));
    c.wait_owners(vip, &[0], master_down(3, 0) + 2 * MARGIN);
    c.start(1, &config(iface, vip, 100, true));
    wait_for(c, 1, "BACKUP", master_down(3, 100) + MARGIN);
    assert_eq!(
        c.owners(vip),
        vec![0],
        "the backup must leave the VIP alone"
    );
}

/// VHID 1 in node `i`'s status (`Null` until its control socket answers).
fn vhid_status(c: &mut Cluster, i: usize) -> serde_json::Value {
    let sock = c.node(i).socket();
    let out = try_run(&[
        carpd_testbed::carpd_exe(),
        "status",
        "--json",
        "--socket",
        sock.to_str().expect("utf-8 path"),
    ]);
    let status: serde_json::Value = out
        .ok()
        .and_then(|o| serde_json::from_str(&o).ok())
        .unwrap_or_default();
    status["vhids"][0].clone()
}

fn state(c: &mut Cluster, i: usize) -> String {
    vhid_status(c, i)["state"]
        .as_str()
        .unwrap_or("?")
        .to_string()
}

fn counter(c: &mut Cluster, i: usize, name: &str) -> u64 {
    vhid_status(c, i)[name].as_u64().unwrap_or(0)
}

fn wait_for(c: &mut Cluster, i: usize, wanted: &str, timeout: Duration) {
    let mut last = String::new();
    let ok = wait_until(timeout, Duration::from_millis(50), || {
        last = state(c, i);
        last == wanted
    });
    assert!(
        ok.is_some(),
        "node {i}: {last} after {timeout:?}, expected {wanted}"
    );
}

/// Delete host `i`'s `eth0` (both ends of its veth pair go).
fn delete_eth0(lan: &Lan, i: usize) {
    lan.hosts[i].ip(&["link", "del", "eth0"]);
}

/// The interface stacked on `eth0` that the VLAN test runs on.
const STACKED: &str = "eth0.10";

/// Adds VLAN 10 on `eth0` as `eth0.10` with `10.98.0.<i+1>/24`. Where the
/// kernel has no 802.1Q support, a macvlan child of `eth0` stands in: it is
/// stacked on the parent the same way, and deleted and recreated the same.
fn add_stacked(host: &Netns, i: usize) {
    let vlan = try_run(&[
        "ip",
        "-n",
        host.name(),
        "link",
        "add",
        "link",
        "eth0",
        "name",
        STACKED,
        "type",
        "vlan",
        "id",
        "10",
    ]);
    if let Err(e) = vlan {
        assert!(e.to_string().contains("Unknown device type"), "{e}");
        host.ip(&[
            "link", "add", "link", "eth0", "name", STACKED, "type", "macvlan", "mode", "bridge",
        ]);
    }
    host.ip(&[
        "addr",
        "add",
        &format!("10.98.0.{}/24", i + 1),
        "dev",
        STACKED,
    ]);
    host.ip(&["link", "set", STACKED, "up"]);
}

/// Starts carpd on host `i` with a configuration written out.
fn start_toml(c: &Cluster, i: usize, toml: &str) -> Daemon {
    let label = format!("toml{i}");
    let path = c.dir.write(&format!("{label}.toml"), toml);
    Daemon::carpd(c.host(i), &label, c.dir.path(), &path, &[])
}

/// Stops node `i` and checks it found nothing to complain about.
fn stop_clean(c: &mut Cluster, i: usize) {
    let d = c.node(i);
    d.sigterm();
    assert!(
        d.wait_exit(Duration::from_secs(10)).is_some(),
        "carpd exits"
    );
    let log = d.log();
    assert!(!log.contains("could not be removed"), "{log}");
}

#[test]
fn master_interface_recreated_is_used_again() {
    let mut c = Cluster::new(2, 1);
    master_and_backup(&mut c, "eth0", VIP);
    delete_eth0(&c.lan, 0);
    c.wait_owners(VIP, &[1], master_down(3, 100) + 2 * MARGIN);
    // status keeps listing the VHID, in INIT, waiting for its interface
    let mut waiting = serde_json::Value::Null;
    wait_until(MARGIN, Duration::from_millis(50), || {
        waiting = vhid_status(&mut c, 0);
        waiting["waiting_for"].is_string()
    });
    assert_eq!(waiting["state"], "INIT", "{waiting}");
    assert!(
        waiting["waiting_for"]
            .as_str()
            .unwrap_or("")
            .contains("eth0"),
        "{waiting}"
    );
    sleep(Duration::from_secs(1));
    c.lan.wire(0, 0);
    // back as BACKUP, then it preempts the worse master
    c.wait_owners(
        VIP,
        &[0],
        master_down(3, 0) + Duration::from_secs(1) + MARGIN,
    );
    wait_for(&mut c, 1, "BACKUP", MARGIN);
    stop_clean(&mut c, 0);
    let log = c.node(0).log();
    assert!(!log.contains("No such device"), "{log}");
}

#[test]
fn backup_interface_recreated_is_used_again() {
    let mut c = Cluster::new(2, 1);
    master_and_backup(&mut c, "eth0", VIP);
    delete_eth0(&c.lan, 1);
    wait_for(&mut c, 1, "INIT", MARGIN);
    sleep(Duration::from_secs(1));
    c.lan.wire(1, 0);
    wait_for(
        &mut c,
        1,
        "BACKUP",
        master_down(3, 100) + Duration::from_secs(1) + MARGIN,
    );
    assert_eq!(c.owners(VIP), vec![0]);
    // it hears the master again: the master's bow-out hands it the VIP at once
    c.node(0).sigterm();
    c.wait_owners(VIP, &[1], adv_interval(100) + MARGIN);
    stop_clean(&mut c, 1);
}

#[test]
fn vlan_interface_recreated_is_used_again() {
    let vip = "10.98.0.100";
    let mut c = Cluster::new(2, 1);
    for i in 0..2 {
        add_stacked(c.host(i), i);
    }
    master_and_backup(&mut c, STACKED, vip);
    c.host(0).ip(&["link", "del", STACKED]);
    c.wait_owners(vip, &[1], master_down(3, 100) + 2 * MARGIN);
    sleep(Duration::from_secs(1));
    add_stacked(c.host(0), 0);
    c.wait_owners(
        vip,
        &[0],
        master_down(3, 0) + Duration::from_secs(1) + MARGIN,
    );
    stop_clean(&mut c, 0);
}

#[test]
fn address_removed_from_master_is_restored() {
    let mut c = Cluster::new(2, 1);
    master_and_backup(&mut c, "eth0", VIP);
    c.host(0)
        .ip(&["addr", "del", &format!("{VIP}/24"), "dev", "eth0"]);
    let back = wait_until(
        Duration::from_secs(1) + Duration::from_millis(500),
        Duration::from_millis(20),
        || c.owners(VIP) == [0],
    );
    assert!(back.is_some(), "owners {:?}", c.owners(VIP));
    assert!(counter(&mut c, 0, "address_restored") >= 1);
    assert_eq!(state(&mut c, 0), "MASTER");
    let log = c.node(0).log();
    assert!(log.contains("added back"), "{log}");
}

#[test]
fn address_removed_from_master_is_put_back_by_the_up_hook_when_hooks_own_it() {
    let c = Cluster::new(1, 1);
    let dir = c.dir.path();
    let up = dir.join("up.sh");
    let down = dir.join("down.sh");
    let runs = dir.join("up.runs");
    std::fs::write(
        &up,
        format!(
            "#!/bin/sh\necho run >> {}\nip addr replace \"$2/24\" dev \"$1\"\n",
            runs.display()
        ),
    )
    .expect("write up.sh");
    std::fs::write(&down, "#!/bin/sh\nip addr del \"$2/24\" dev \"$1\"\n").expect("write down.sh");
    for script in [&up, &down] {
        c.host(0)
            .exec(&["chmod", "755", script.to_str().expect("utf-8 path")]);
    }
    let toml = config("eth0", VIP, 0, false).to_toml()
        + &format!("manage_addresses = false\nup = {up:?}\ndown = {down:?}\n");
    let d = start_toml(&c, 0, &toml);
    c.wait_owners(VIP, &[0], master_down(3, 0) + 2 * MARGIN);
    c.host(0)
        .ip(&["addr", "del", &format!("{VIP}/24"), "dev", "eth0"]);
    let back = wait_until(MARGIN, Duration::from_millis(20), || c.owners(VIP) == [0]);
    assert!(back.is_some(), "owners {:?}\n{}", c.owners(VIP), d.log());
    let ran = std::fs::read_to_string(&runs).unwrap_or_default();
    assert_eq!(ran.lines().count(), 2, "the up hook runs again once");
    assert!(d.log().contains("running the up hook again"), "{}", d.log());
}

#[test]
fn address_added_on_backup_is_removed() {
    let mut c = Cluster::new(2, 1);
    master_and_backup(&mut c, "eth0", VIP);
    c.host(1)
        .ip(&["addr", "add", &format!("{VIP}/24"), "dev", "eth0"]);
    let gone = wait_until(
        Duration::from_secs(1) + Duration::from_millis(500),
        Duration::from_millis(20),
        || c.owners(VIP) == [0],
    );
    assert!(gone.is_some(), "owners {:?}", c.owners(VIP));
    assert!(counter(&mut c, 1, "address_removed_foreign") >= 1);
    // carpd's own adds and removes are not counted
    assert_eq!(counter(&mut c, 0, "address_restored"), 0);
    assert_eq!(counter(&mut c, 0, "address_removed_foreign"), 0);
}

#[test]
fn interface_without_address_waits_for_it() {
    let mut c = Cluster::new(1, 1);
    c.host(0).ip(&["-4", "addr", "flush", "dev", "eth0"]);
    c.start(0, &config("eth0", VIP, 0, false));
    sleep(Duration::from_secs(2));
    assert!(c.node(0).is_running(), "{}", c.node(0).log());
    assert_eq!(state(&mut c, 0), "INIT");
    assert!(c.owners(VIP).is_empty());
    let log = c.node(0).log();
    assert_eq!(log.matches("waits in INIT").count(), 1, "{log}");
    c.host(0).ip(&[
        "addr",
        "add",
        &format!("{}/24", Lan::host_addr(0, 0)),
        "dev",
        "eth0",
    ]);
    c.wait_owners(VIP, &[0], master_down(3, 0) + 2 * MARGIN);
    stop_clean(&mut c, 0);
}

#[test]
fn paused_master_leaves_one_holder() {
    let mut c = Cluster::new(2, 1);
    let w = c.watch();
    master_and_backup(&mut c, "eth0", VIP);
    c.node(0).signal(Signal::SIGSTOP);
    sleep(Duration::from_secs(5));
    assert_eq!(c.owners(VIP), vec![0, 1], "the backup took over meanwhile");
    c.node(0).signal(Signal::SIGCONT);
    let cont = Instant::now();
    let settle = adv_interval(0) + MARGIN;
    wait_until(settle, Duration::from_millis(20), || {
        c.owners(VIP).len() == 1
    })
    .unwrap_or_else(|| panic!("owners {:?} after {settle:?}", c.owners(VIP)));
    sleep(Duration::from_secs(3));
    let h = w.history();
    assert_eq!(
        h.max_owners_since(VIP, cont + settle),
        1,
        "{:?}",
        h.timeline(VIP)
    );
    assert_eq!(c.owners(VIP).len(), 1);
}

#[test]
fn paused_backup_does_not_take_over() {
    let mut c = Cluster::new(2, 1);
    let w = c.watch();
    master_and_backup(&mut c, "eth0", VIP);
    let since = Instant::now();
    c.node(1).signal(Signal::SIGSTOP);
    sleep(Duration::from_secs(5));
    c.node(1).signal(Signal::SIGCONT);
    sleep(adv_interval(100) + Duration::from_secs(3));
    let h = w.history();
    assert!(!h.ever_owned_since(1, VIP, since), "{:?}", h.timeline(VIP));
    assert_eq!(c.owners(VIP), vec![0]);
    assert_eq!(state(&mut c, 1), "BACKUP");
}

#[test]
fn master_that_cannot_restore_its_address_hands_over() {
    let vip6 = "fd00:99::100";
    // Advertisements go to the peer over IPv4 unicast, so they keep flowing
    // when IPv6 stops on the master's interface.
    let toml = |i: usize, advskew: u8| {
        let peer = Lan::host_addr(1 - i, 0);
        Config::default()
            .advskew(advskew)
            .vhid("eth0", 1, &[format!("{VIP}/24"), format!("{vip6}/64")])
            .to_toml()
            + &format!("peers = [{peer:?}]\n")
    };
    let c = Cluster::new(2, 1);
    let d0 = start_toml(&c, 0, &toml(0, 0));
    c.wait_owners(VIP, &[0], master_down(3, 0) + 2 * MARGIN);
    let _d1 = start_toml(&c, 1, &toml(1, 100));
    sleep(Duration::from_secs(2));
    assert_eq!(c.owners(VIP), vec![0]);
    // IPv6 off on the master's interface: its IPv6 VIP goes and cannot be
    // added back, so it must not go on advertising as the holder
    c.host(0)
        .exec(&["sysctl", "-qw", "net.ipv6.conf.eth0.disable_ipv6=1"]);
    c.wait_owners(VIP, &[1], adv_interval(0) + MARGIN);
    sleep(master_down(3, 0) + MARGIN);
    assert_eq!(c.owners(VIP), vec![1], "{}", d0.log());
    assert!(d0.log().contains("cannot be added back"), "{}", d0.log());
}

#[test]
fn tracked_interface_recreated_is_tracked_again() {
    // Node 0 tracks its uplink eth1; a demotion of 200 loses to advskew 100
    // whether it goes out in the demotion byte or in advskew.
    let toml = |i: usize, advskew: u8| {
        let track = if i == 0 {
            "\n[[track]]\nlink = \"eth1\"\nweight = 200\n"
        } else {
            ""
        };
        config("eth0", VIP, advskew, true).to_toml() + track
    };
    let c = Cluster::new(2, 2);
    let d0 = start_toml(&c, 0, &toml(0, 0));
    c.wait_owners(VIP, &[0], master_down(3, 0) + 2 * MARGIN);
    let _d1 = start_toml(&c, 1, &toml(1, 100));
    sleep(master_down(3, 100) + MARGIN);
    assert_eq!(c.owners(VIP), vec![0]);
    c.host(0).ip(&["link", "del", "eth1"]);
    c.wait_owners(VIP, &[1], adv_interval(0) + 2 * MARGIN);
    sleep(Duration::from_secs(1));
    c.lan.wire(0, 1);
    // the new eth1 is tracked: the demotion lifts and node 0 preempts
    c.wait_owners(VIP, &[0], adv_interval(100) + 2 * MARGIN);
    let log = d0.log();
    assert!(log.contains("tracked interface deleted"), "{log}");
    assert!(log.contains("demotion lifted"), "{log}");
}

#[test]
fn operator_demotion_outlives_a_recreated_interface() {
    let mut c = Cluster::new(2, 1);
    master_and_backup(&mut c, "eth0", VIP);
    let sock = c.node(0).socket();
    let demote = try_run(&[
        carpd_testbed::carpd_exe(),
        "demote",
        "--by",
        "2",
        "--socket",
        sock.to_str().expect("utf-8 path"),
    ]);
    assert!(demote.is_ok(), "{demote:?}");
    c.wait_owners(VIP, &[1], adv_interval(0) + 2 * MARGIN);
    delete_eth0(&c.lan, 0);
    sleep(Duration::from_secs(1));
    c.lan.wire(0, 0);
    wait_for(
        &mut c,
        0,
        "BACKUP",
        master_down(3, 0) + Duration::from_secs(1) + MARGIN,
    );
    // still demoted: the preferred node leaves the VIP where it is
    sleep(master_down(3, 0) + MARGIN);
    assert_eq!(c.owners(VIP), vec![1]);
    assert_eq!(vhid_status(&mut c, 0)["demote"], 2);
}
