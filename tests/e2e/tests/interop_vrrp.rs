//! carpd speaking VRRP against the real keepalived (Debian's 2.2.7) and FRR
//! vrrpd (8.4) on one segment: host 0 runs carpd, host 1 the peer.
//!
//! Against keepalived: VRRPv3 over IPv4 and IPv6, VRRPv2 with a plain-text
//! password; either side better; crash (SIGKILL) and graceful stop
//! (priority 0) both ways; preemption both ways; equal priority (the
//! higher address wins, no flapping); 100 ms intervals; keepalived with
//! `use_vmac`; unicast peers over IPv4, and over IPv6 (link-local) both
//! ways; demotion; a CARP VHID beside a VRRP VRID. carpd alone:
//! `accept_mode = false` over IPv4 and IPv6.
//! Against FRR: VRRPv3 over IPv4 and IPv6 and VRRPv2 with FRR the better
//! (it preempts, carpd takes over when vrrpd is killed, FRR hands over with
//! priority 0), and VRRPv3 over IPv4 and IPv6 with carpd the better (FRR,
//! asked through `vtysh`, follows carpd, takes over on its priority 0 and
//! when carpd is killed).
//!
//! Every test also checks that carpd accepted its peer's advertisements
//! (status counters and transition reasons), not only who ends up with the
//! address, and the advertisements carpd sent are checked by tshark's VRRP
//! dissector.

// A test binary: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::thread::sleep;
use std::time::Duration;

use carpd_testbed::{
    Daemon, Lan, Netns, Scratch, carpd_exe, in_netns, require_tool, run, try_run, wait_until,
};

const VIP4: &str = "10.99.0.100";
const VIP6_LL: &str = "fe80::100";
const VIP6: &str = "fd00:99::100";
const VRID: u8 = 51;
/// The nftables table of carpd's `accept_mode = false` filter.
const ACCEPT_TABLE: &str = carp_engine::accept_mode::TABLE;

/// Slack for process start, scheduling and netlink on a loaded machine.
const MARGIN: Duration = Duration::from_millis(2500);

/// Slack on top of the skew time for a priority-0 hand-over. Without the
/// priority-0 message the backup would wait for master-down, three
/// intervals more less the phase of the stop: at the 1 s interval of the
/// hand-over tests, more than this slack.
const HANDOVER_SLACK: Duration = Duration::from_millis(1000);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    V3Ipv4,
    V3Ipv6,
    V2Ipv4,
}

/// What both sides of one test run share, and each side's priority.
#[derive(Debug, Clone)]
struct Setup {
    family: Family,
    carpd_priority: u8,
    keepalived_priority: u8,
    /// Centiseconds.
    interval_cs: u16,
    preempt: bool,
    use_vmac: bool,
    unicast: bool,
    /// VRRPv2: the plain-text password (FRR's vrrpd has no authentication).
    v2_password: bool,
    /// carpd's `accept_mode`, if written.
    accept_mode: Option<bool>,
}

impl Setup {
    fn new(family: Family, carpd_priority: u8, keepalived_priority: u8) -> Setup {
        Setup {
            family,
            carpd_priority,
            keepalived_priority,
            interval_cs: 100,
            preempt: true,
            use_vmac: false,
            unicast: false,
            v2_password: true,
            accept_mode: None,
        }
    }

    fn interval(&self) -> Duration {
        Duration::from_millis(u64::from(self.interval_cs) * 10)
    }

    /// RFC 9568 Master_Down_Interval of a backup with `priority`.
    fn master_down(&self, priority: u8) -> Duration {
        self.interval() * 3 + self.skew_time(priority)
    }

    /// How long a backup of `priority` waits after a priority-0 message.
    fn skew_time(&self, priority: u8) -> Duration {
        self.interval() * (256 - u32::from(priority)) / 256
    }

    /// A hand-over on priority 0 came within the skew time (plus slack for
    /// a busy machine), well before the master-down time could have run
    /// out.
    fn assert_handed_over_in_skew_time(&self, priority: u8, took: Duration) {
        let bound = self.skew_time(priority) + HANDOVER_SLACK;
        eprintln!(
            "hand-over on priority 0 took {took:?} (skew time {:?})",
            self.skew_time(priority)
        );
        assert!(took < bound, "hand-over took {took:?}, bound {bound:?}");
    }

    /// The address whose owner is checked.
    fn vip(&self) -> &'static str {
        match self.family {
            Family::V3Ipv6 => VIP6,
            _ => VIP4,
        }
    }

    fn carpd_toml(&self) -> String {
        let protocol = match self.family {
            Family::V2Ipv4 => "vrrp2",
            _ => "vrrp3",
        };
        let addresses = match self.family {
            Family::V3Ipv6 => format!("\"{VIP6_LL}/64\", \"{VIP6}/64\""),
            _ => format!("\"{VIP4}/24\""),
        };
        let mut t = format!(
            "[[interface]]\nname = \"eth0\"\n  [[interface.vhid]]\n  id = {VRID}\n  protocol = \"{protocol}\"\n  priority = {}\n  advert_interval = \"{}ms\"\n  preempt = {}\n  addresses = [{addresses}]\n",
            self.carpd_priority,
            u32::from(self.interval_cs) * 10,
            self.preempt,
        );
        if self.family == Family::V2Ipv4 && self.v2_password {
            t.push_str("  auth_type = \"simple\"\n  password = \"secret\"\n");
        }
        if let Some(accept) = self.accept_mode {
            t.push_str(&format!("  accept_mode = {accept}\n"));
        }
        if self.unicast {
            let peer = match self.family {
                Family::V3Ipv6 => "fe80::2".to_string(),
                _ => Lan::host_addr(1, 0),
            };
            t.push_str(&format!("  peers = [\"{peer}\"]\n"));
        }
        t
    }

    fn keepalived_conf(&self, link_local: &str) -> String {
        let version = match self.family {
            Family::V2Ipv4 => 2,
            _ => 3,
        };
        let mut vips = match self.family {
            Family::V3Ipv6 => format!("    {VIP6_LL}/64\n    {VIP6}/64\n"),
            _ => format!("    {VIP4}/24\n"),
        };
        if self.family == Family::V3Ipv6 {
            vips = vips.replace("/64", "/64 dev eth0");
        }
        let mut inst = format!(
            "vrrp_instance VI {{\n  state BACKUP\n  interface eth0\n  virtual_router_id {VRID}\n  priority {}\n  advert_int {}\n",
            self.keepalived_priority,
            f64::from(self.interval_cs) / 100.0,
        );
        if !self.preempt {
            inst.push_str("  nopreempt\n");
        }
        if self.use_vmac {
            inst.push_str("  use_vmac\n");
        }
        if self.family == Family::V2Ipv4 {
            inst.push_str("  authentication {\n    auth_type PASS\n    auth_pass secret\n  }\n");
        }
        if self.unicast {
            let (src, peer) = match self.family {
                Family::V3Ipv6 => (link_local.to_string(), "fe80::1".to_string()),
                _ => (Lan::host_addr(1, 0), Lan::host_addr(0, 0)),
            };
            inst.push_str(&format!(
                "  unicast_src_ip {src}\n  unicast_peer {{\n    {peer}\n  }}\n"
            ));
        }
        inst.push_str(&format!("  virtual_ipaddress {{\n{vips}  }}\n}}\n"));
        format!(
            "global_defs {{\n  vrrp_version {version}\n  router_id keepalived_test\n  enable_script_security\n}}\n{inst}"
        )
    }
}

/// Two hosts on one segment, with fixed link-local addresses fe80::1 and
/// fe80::2 (so that unicast peers can name them).
/// Fields drop in order: the daemons (printing their logs if the test
/// failed) before their directory and namespaces.
struct Bed {
    carpd: Option<Daemon>,
    keepalived: Option<Daemon>,
    capture: Option<(Daemon, PathBuf)>,
    setup: Setup,
    dir: Scratch,
    lan: Lan,
}

impl Bed {
    fn new(setup: Setup) -> Bed {
        require_tool("keepalived");
        require_tool("tshark");
        let lan = Lan::new(2, 1);
        for (i, host) in lan.hosts.iter().enumerate() {
            host.ip(&["addr", "add", &format!("fe80::{}/64", i + 1), "dev", "eth0"]);
        }
        let dir = Scratch::new();
        let capture = Some(Daemon::pcap(
            &lan.hosts[0],
            dir.path(),
            "carpd.pcap",
            "ip proto 112 or ip6 proto 112",
        ));
        Bed {
            lan,
            dir,
            setup,
            carpd: None,
            keepalived: None,
            capture,
        }
    }

    fn start_carpd(&mut self) {
        let config = self.dir.write("carpd.toml", &self.setup.carpd_toml());
        self.carpd = Some(Daemon::carpd(
            &self.lan.hosts[0],
            "carpd",
            self.dir.path(),
            &config,
            &["--log-level", "debug"],
        ));
    }

    fn start_keepalived(&mut self) {
        let conf = self
            .dir
            .write("keepalived.conf", &self.setup.keepalived_conf("fe80::2"));
        let pid = self.dir.path().join("keepalived.pid");
        let vrrp_pid = self.dir.path().join("keepalived-vrrp.pid");
        let args = [
            "-n",
            "-l",
            "-D",
            "-P",
            "-f",
            conf.to_str().unwrap(),
            "-p",
            pid.to_str().unwrap(),
            "-r",
            vrrp_pid.to_str().unwrap(),
        ];
        self.keepalived = Some(Daemon::spawn(
            &self.lan.hosts[1],
            "keepalived",
            self.dir.path(),
            "keepalived",
            &args,
        ));
    }

    /// SIGKILL keepalived and its VRRP child (the parent does not take the
    /// child with it).
    fn crash_keepalived(&mut self) {
        let vrrp_pid = self.dir.path().join("keepalived-vrrp.pid");
        if let Ok(text) = std::fs::read_to_string(&vrrp_pid) {
            let _ = Command::new("kill").args(["-9", text.trim()]).status();
        }
        if let Some(k) = self.keepalived.as_mut() {
            k.sigkill();
            k.wait_exit(Duration::from_secs(5));
        }
        forget_addresses(&self.lan.hosts[1]);
    }

    /// SIGTERM: keepalived's VRRP child sends priority 0 and exits.
    fn stop_keepalived(&mut self) {
        if let Some(k) = self.keepalived.as_mut() {
            k.sigterm();
            assert!(k.wait_exit(Duration::from_secs(10)).is_some());
        }
    }

    fn owners(&self) -> Vec<usize> {
        self.lan.owners(self.setup.vip())
    }

    /// Waits until exactly `expected` holds the address; how long it took.
    fn wait_owner(&self, expected: &[usize], timeout: Duration) -> Duration {
        let took = wait_until(timeout, Duration::from_millis(20), || {
            self.owners() == expected
        });
        took.unwrap_or_else(|| {
            panic!(
                "owners {:?}, expected {expected:?} within {timeout:?}\ncarpd status: {}\nkeepalived log:\n{}",
                self.owners(),
                self.carpd_status(),
                self.keepalived.as_ref().map(Daemon::log).unwrap_or_default()
            )
        })
    }

    fn carpd_status(&self) -> serde_json::Value {
        match &self.carpd {
            Some(d) => d.status()["vhids"][0].clone(),
            None => serde_json::Value::Null,
        }
    }

    fn carpd(&mut self) -> &mut Daemon {
        self.carpd.as_mut().unwrap()
    }

    /// SIGKILL carpd; what it left configured goes with the dead host.
    fn crash_carpd(&mut self) {
        let d = self.carpd();
        d.sigkill();
        d.wait_exit(Duration::from_secs(5));
        forget_addresses(&self.lan.hosts[0]);
    }

    /// carpd's VHID as its control socket reports it, if it answers yet.
    fn try_carpd_status(&self) -> Option<serde_json::Value> {
        let sock = self.carpd.as_ref()?.socket();
        let out = try_run(&[carpd_exe(), "status", "--json", "--socket", sock.to_str()?]).ok()?;
        let s: serde_json::Value = serde_json::from_str(&out).ok()?;
        Some(s["vhids"][0].clone())
    }

    /// Waits until carpd answers on its control socket in `state`.
    fn wait_carpd_state(&self, state: &str, timeout: Duration) {
        let ok = wait_until(timeout, Duration::from_millis(50), || {
            self.try_carpd_status().is_some_and(|s| s["state"] == state)
        });
        assert!(ok.is_some(), "carpd not {state} within {timeout:?}");
    }

    /// carpd accepted its peer's advertisements (after a few intervals
    /// of listening) and dropped none of them.
    fn assert_carpd_hears_peer(&self) {
        sleep(self.setup.interval() * 3);
        let s = self.carpd_status();
        assert!(
            s["adverts_received"].as_u64().unwrap_or(0) >= 2,
            "carpd heard too little: {s}"
        );
        let drops = s["drops"].as_object().cloned().unwrap_or_default();
        let bad: Vec<_> = drops
            .iter()
            .filter(|(reason, n)| *reason != "own_packet" && n.as_u64() != Some(0))
            .collect();
        assert!(bad.is_empty(), "carpd dropped keepalived's packets: {s}");
    }

    /// Every VRRP packet carpd sent, as tshark dissects it: version, type,
    /// VRID, priority, interval, checksum status, destination.
    fn carpd_packets(&mut self) -> Vec<Vec<String>> {
        let Some((tcpdump, pcap)) = self.capture.take() else {
            return Vec::new();
        };
        tcpdump.sigterm();
        let mut tcpdump = tcpdump;
        tcpdump.wait_exit(Duration::from_secs(5));
        let src = match self.setup.family {
            Family::V3Ipv6 => "ipv6.src == fe80::1",
            _ => "ip.src == 10.99.0.1",
        };
        let out = Command::new("tshark")
            .args(["-r", pcap.to_str().unwrap(), "-Y"])
            .arg(format!("vrrp && {src}"))
            .args([
                "-T",
                "fields",
                "-e",
                "vrrp.version",
                "-e",
                "vrrp.type",
                "-e",
                "vrrp.virt_rtr_id",
                "-e",
                "vrrp.prio",
                // VRRPv2: 8 bits of seconds; VRRPv3: 12 bits of centiseconds
                "-e",
                "vrrp.adver_int",
                "-e",
                "vrrp.short_adver_int",
                "-e",
                "vrrp.checksum.status",
                "-e",
                "ip.dst",
                "-e",
                "ipv6.dst",
            ])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| {
                let mut f: Vec<String> = l.split('\t').map(str::to_string).collect();
                // one interval field of the two is set, and one
                // destination field of the two
                if f.len() == 9 {
                    let dst6 = f.remove(8);
                    if f[7].is_empty() {
                        f[7] = dst6;
                    }
                    let short = f.remove(5);
                    if f[4].is_empty() {
                        f[4] = short;
                    }
                }
                f
            })
            .collect()
    }

    /// tshark finds carpd's packets well formed: version, type, VRID,
    /// interval and a good checksum (over the IPv6 pseudo-header with the
    /// real source and destination, unicast ones included); priorities
    /// among `priorities`; sent to the group, or to the peer only with
    /// unicast peers.
    fn assert_carpd_packets_dissect(&mut self, priorities: &[u8]) {
        let version = match self.setup.family {
            Family::V2Ipv4 => "2",
            _ => "3",
        };
        let interval = match self.setup.family {
            Family::V2Ipv4 => (self.setup.interval_cs / 100).to_string(),
            _ => self.setup.interval_cs.to_string(),
        };
        let dst = match (self.setup.family, self.setup.unicast) {
            (Family::V3Ipv6, true) => "fe80::2".to_string(),
            (Family::V3Ipv6, false) => "ff02::12".to_string(),
            (_, true) => Lan::host_addr(1, 0),
            (_, false) => "224.0.0.18".to_string(),
        };
        let packets = self.carpd_packets();
        assert!(!packets.is_empty(), "no packet of carpd captured");
        for p in &packets {
            assert_eq!(p[0], version, "{p:?}");
            assert_eq!(p[1], "1", "{p:?}");
            assert_eq!(p[2], VRID.to_string(), "{p:?}");
            let prio: u8 = p[3].parse().unwrap();
            assert!(priorities.contains(&prio), "{p:?}");
            assert_eq!(p[4], interval, "{p:?}");
            // tshark's checksum status: 1 = good
            assert_eq!(p[5], "1", "{p:?}");
            assert_eq!(p[6], dst, "{p:?}");
        }
    }
}

/// No duplicate address detection on `dev` (`all`, `default` or an
/// interface) of `host`.
fn no_dad(host: &Netns, dev: &str) {
    host.exec(&[
        "sysctl",
        "-qw",
        &format!("net.ipv6.conf.{dev}.accept_dad=0"),
    ]);
}

/// A crashed host answers for nothing: the virtual addresses its daemon
/// left configured go with it.
fn forget_addresses(host: &Netns) {
    for (dev, cidr) in host.addr_entries() {
        let addr = cidr.split('/').next().unwrap_or_default();
        if [VIP4, VIP6, VIP6_LL].contains(&addr) {
            // the device name may carry "@parent"
            let dev = dev.split('@').next().unwrap_or_default();
            host.ip(&["addr", "del", &cidr, "dev", dev]);
        }
    }
}

fn reasons(status: &serde_json::Value) -> serde_json::Value {
    status["transitions_by_reason"].clone()
}

/// carpd the better (200 against 100): whoever starts first, carpd ends up
/// master (preempting keepalived), keepalived takes over when carpd
/// crashes and gives back when it returns.
fn carpd_better(family: Family, unicast: bool) {
    let mut setup = Setup::new(family, 200, 100);
    setup.unicast = unicast;
    let mut bed = Bed::new(setup.clone());
    bed.start_keepalived();
    bed.wait_owner(&[1], setup.master_down(100) + MARGIN * 2);
    bed.start_carpd();
    // carpd discards keepalived's lower advertisements and preempts when
    // its master-down time runs out
    bed.wait_owner(&[0], setup.master_down(200) + MARGIN);
    let s = bed.carpd_status();
    assert_eq!(s["state"], "MASTER", "{s}");
    assert_eq!(s["last_reason"], "preempt", "{s}");
    let protocol = if family == Family::V2Ipv4 {
        "vrrp2"
    } else {
        "vrrp3"
    };
    assert_eq!(
        (&s["protocol"], &s["priority"]),
        (&protocol.into(), &200.into()),
        "{s}"
    );
    bed.assert_carpd_hears_peer();

    bed.crash_carpd();
    bed.wait_owner(&[1], setup.master_down(100) + MARGIN);
    bed.start_carpd();
    bed.wait_carpd_state("MASTER", setup.master_down(200) + MARGIN);
    bed.wait_owner(&[0], MARGIN);
    assert_eq!(bed.carpd_status()["last_reason"], "preempt");
    bed.carpd().sigterm();
    bed.carpd().wait_exit(Duration::from_secs(10));
    // priority 0: keepalived waits only its skew time
    let took = bed.wait_owner(&[1], MARGIN);
    setup.assert_handed_over_in_skew_time(100, took);
    bed.assert_carpd_packets_dissect(&[0, 200]);
}

/// keepalived the better (200 against 100): carpd follows it, takes over
/// on a crash (master_down) and on a graceful stop (peer_bowed_out, after
/// its skew time only), and yields when keepalived returns.
fn keepalived_better(family: Family, unicast: bool) {
    let mut setup = Setup::new(family, 100, 200);
    setup.unicast = unicast;
    let mut bed = Bed::new(setup.clone());
    bed.start_carpd();
    bed.wait_owner(&[0], setup.master_down(100) + MARGIN);
    bed.start_keepalived();
    bed.wait_owner(&[1], setup.master_down(200) + MARGIN * 2);
    let s = bed.carpd_status();
    assert_eq!(s["state"], "BACKUP", "{s}");
    assert_eq!(s["last_reason"], "peer_preferred", "{s}");
    bed.assert_carpd_hears_peer();

    bed.crash_keepalived();
    bed.wait_owner(&[0], setup.master_down(100) + MARGIN);
    assert_eq!(bed.carpd_status()["last_reason"], "master_down");

    bed.start_keepalived();
    bed.wait_owner(&[1], setup.master_down(200) + MARGIN * 2);
    bed.stop_keepalived();
    let took = bed.wait_owner(&[0], MARGIN);
    setup.assert_handed_over_in_skew_time(100, took);
    let s = bed.carpd_status();
    assert_eq!(s["last_reason"], "peer_bowed_out", "{s}");
    assert!(reasons(&s)["peer_preferred"].as_u64() >= Some(2), "{s}");
    bed.assert_carpd_packets_dissect(&[100]);
}

#[test]
fn v3_ipv4_carpd_better() {
    carpd_better(Family::V3Ipv4, false);
}

#[test]
fn v3_ipv4_keepalived_better() {
    keepalived_better(Family::V3Ipv4, false);
}

#[test]
fn v2_ipv4_carpd_better() {
    carpd_better(Family::V2Ipv4, false);
}

#[test]
fn v2_ipv4_keepalived_better() {
    keepalived_better(Family::V2Ipv4, false);
}

#[test]
fn v3_ipv6_carpd_better() {
    carpd_better(Family::V3Ipv6, false);
}

#[test]
fn v3_ipv6_keepalived_better() {
    keepalived_better(Family::V3Ipv6, false);
}

/// Equal priority: a backup never preempts an equal master, so both are
/// made master apart (VRRP blocked on both hosts), then joined: keepalived
/// on 10.99.0.2 has the higher address and stays master, carpd
/// (10.99.0.1) yields (peer_wins_tie), and nothing flaps afterwards.
#[test]
fn v3_ipv4_equal_priority_higher_address_wins() {
    let setup = Setup::new(Family::V3Ipv4, 100, 100);
    let mut bed = Bed::new(setup.clone());
    for host in &bed.lan.hosts {
        host.block_carp(true);
    }
    bed.start_carpd();
    bed.start_keepalived();
    bed.wait_owner(&[0, 1], setup.master_down(100) + MARGIN * 2);
    for host in &bed.lan.hosts {
        host.block_carp(false);
    }
    bed.wait_owner(&[1], setup.interval() * 2 + MARGIN);
    let s = bed.carpd_status();
    assert_eq!(s["last_reason"], "peer_wins_tie", "{s}");
    let transitions = s["transitions"].as_u64();
    sleep(setup.master_down(100) * 2);
    assert_eq!(bed.owners(), [1]);
    assert_eq!(bed.carpd_status()["transitions"].as_u64(), transitions);
    bed.assert_carpd_hears_peer();
    bed.assert_carpd_packets_dissect(&[100]);
}

/// Without preemption on either side the first master keeps the address
/// against a better newcomer.
#[test]
fn v3_ipv4_no_preemption_keeps_the_first_master() {
    let mut setup = Setup::new(Family::V3Ipv4, 200, 100);
    setup.preempt = false;
    let mut bed = Bed::new(setup.clone());
    bed.start_keepalived();
    bed.wait_owner(&[1], setup.master_down(100) + MARGIN * 2);
    bed.start_carpd();
    sleep(setup.master_down(200) + MARGIN);
    assert_eq!(bed.owners(), [1]);
    assert_eq!(bed.carpd_status()["state"], "BACKUP");
    bed.assert_carpd_hears_peer();
}

/// 100 ms intervals (VRRPv3 centiseconds): failover within well under a
/// second, both ways.
#[test]
fn v3_ipv4_100ms() {
    let mut setup = Setup::new(Family::V3Ipv4, 100, 200);
    setup.interval_cs = 10;
    let mut bed = Bed::new(setup.clone());
    bed.start_keepalived();
    bed.wait_owner(&[1], setup.master_down(200) + MARGIN * 2);
    bed.start_carpd();
    sleep(Duration::from_secs(2));
    assert_eq!(bed.owners(), [1]);
    bed.assert_carpd_hears_peer();
    bed.crash_keepalived();
    bed.wait_owner(&[0], setup.master_down(100) + MARGIN);
    assert_eq!(bed.carpd_status()["last_reason"], "master_down");
    bed.assert_carpd_packets_dissect(&[100]);
}

/// keepalived with `use_vmac` (its address on a macvlan with the virtual
/// MAC), carpd with its default virtual MAC.
#[test]
fn v3_ipv4_keepalived_use_vmac() {
    let mut setup = Setup::new(Family::V3Ipv4, 100, 200);
    setup.use_vmac = true;
    let mut bed = Bed::new(setup.clone());
    bed.start_carpd();
    bed.wait_owner(&[0], setup.master_down(100) + MARGIN);
    bed.start_keepalived();
    bed.wait_owner(&[1], setup.master_down(200) + MARGIN * 2);
    bed.assert_carpd_hears_peer();
    bed.crash_keepalived();
    bed.wait_owner(&[0], setup.master_down(100) + MARGIN);
    assert_eq!(bed.carpd_status()["last_reason"], "master_down");
}

/// IPv6 unicast peers on both sides (keepalived's `unicast_src_ip` and
/// `unicast_peer` with link-local addresses, carpd's `peers`): carpd
/// sends to keepalived's link-local address only, with the checksum over
/// that pseudo-header, and accepts keepalived's unicast advertisements;
/// crash, hand-over and preemption both ways.
#[test]
fn v3_ipv6_unicast_peers_carpd_better() {
    carpd_better(Family::V3Ipv6, true);
}

#[test]
fn v3_ipv6_unicast_peers_keepalived_better() {
    keepalived_better(Family::V3Ipv6, true);
}

/// Unicast peers on both sides.
#[test]
fn v3_ipv4_unicast_peers() {
    let mut setup = Setup::new(Family::V3Ipv4, 100, 200);
    setup.unicast = true;
    let mut bed = Bed::new(setup.clone());
    bed.start_carpd();
    bed.wait_owner(&[0], setup.master_down(100) + MARGIN);
    bed.start_keepalived();
    bed.wait_owner(&[1], setup.master_down(200) + MARGIN * 2);
    bed.assert_carpd_hears_peer();
    bed.stop_keepalived();
    bed.wait_owner(&[0], MARGIN);
    assert_eq!(bed.carpd_status()["last_reason"], "peer_bowed_out");
}

/// carpd's `accept_mode = false` filter (nftables) in host 0.
fn accept_filter_present(host: &Netns) -> bool {
    host.try_exec(&["nft", "list", "table", "inet", ACCEPT_TABLE])
        .is_ok()
}

/// `addr` answers a TCP connection from `host` within a second: it
/// accepts it, or refuses it (nothing listens on the discard port); a
/// dropped SYN gets no answer.
fn answers(host: &Netns, addr: &str) -> bool {
    let to = SocketAddr::new(addr.parse().unwrap(), 9);
    in_netns(host, move || {
        match TcpStream::connect_timeout(&to, Duration::from_secs(1)) {
            Ok(_) => true,
            Err(e) => e.kind() == std::io::ErrorKind::ConnectionRefused,
        }
    })
}

/// `accept_mode = false` (RFC 9568 6.1): while carpd is MASTER, host 1's
/// connections to the virtual address get no answer (carpd's own address
/// still answers); the filter goes on SIGTERM, stays after SIGKILL until the
/// next start replaces it (here with the default, true, and the address
/// answers), and comes back on reload without a restart of the VHID.
fn accept_mode_false_drops_traffic_to_the_address(family: Family) {
    require_tool("nft");
    let mut setup = Setup::new(family, 100, 100);
    setup.accept_mode = Some(false);
    let mut bed = Bed::new(setup.clone());
    let (own, vip) = match family {
        Family::V3Ipv6 => {
            for (i, host) in bed.lan.hosts.iter().enumerate() {
                let a = format!("fd00:99::{}/64", i + 1);
                host.ip(&["addr", "add", &a, "dev", "eth0", "nodad"]);
            }
            ("fd00:99::1".to_string(), VIP6)
        }
        _ => (Lan::host_addr(0, 0), VIP4),
    };
    let answer = |bed: &Bed, addr: &str| answers(&bed.lan.hosts[1], addr);
    let master = |bed: &mut Bed| {
        bed.wait_owner(&[0], setup.master_down(100) + MARGIN * 2);
        bed.wait_carpd_state("MASTER", MARGIN);
    };
    bed.start_carpd();
    master(&mut bed);
    assert!(accept_filter_present(&bed.lan.hosts[0]));
    assert!(answer(&bed, &own), "own address silent");
    assert!(!answer(&bed, vip), "{vip} answered");
    bed.assert_carpd_packets_dissect(&[100]);

    bed.carpd().sigterm();
    bed.carpd().wait_exit(Duration::from_secs(10));
    assert!(!accept_filter_present(&bed.lan.hosts[0]));

    bed.start_carpd();
    master(&mut bed);
    assert!(!answer(&bed, vip), "{vip} answered");
    bed.crash_carpd();
    assert!(accept_filter_present(&bed.lan.hosts[0]));

    bed.setup.accept_mode = None;
    bed.start_carpd();
    let gone = wait_until(MARGIN, Duration::from_millis(50), || {
        !accept_filter_present(&bed.lan.hosts[0])
    });
    assert!(gone.is_some(), "the filter outlived its crashed carpd");
    master(&mut bed);
    assert!(answer(&bed, vip), "{vip} silent with accept_mode true");

    bed.setup.accept_mode = Some(false);
    bed.dir.write("carpd.toml", &bed.setup.carpd_toml());
    let sock = bed.carpd().socket();
    run(&[carpd_exe(), "reload", "--socket", sock.to_str().unwrap()]);
    let dropped = wait_until(
        setup.master_down(100) + MARGIN * 2,
        Duration::from_millis(100),
        || bed.owners() == [0] && !answer(&bed, vip),
    );
    assert!(dropped.is_some(), "{vip} still answers after the reload");
    let s = bed.carpd_status();
    assert_eq!(
        (&s["state"], &s["transitions"]),
        (&"MASTER".into(), &2.into()),
        "{s}"
    );
    assert!(accept_filter_present(&bed.lan.hosts[0]));
    assert!(answer(&bed, &own), "own address silent");
}

#[test]
fn v3_ipv4_accept_mode_false_drops_traffic_to_the_address() {
    accept_mode_false_drops_traffic_to_the_address(Family::V3Ipv4);
}

#[test]
fn v3_ipv6_accept_mode_false_drops_traffic_to_the_address() {
    accept_mode_false_drops_traffic_to_the_address(Family::V3Ipv6);
}

/// carpd's VHID `vhid` in its status.
fn vhid_status(carpd: &Daemon, vhid: u8) -> serde_json::Value {
    let s = carpd.status();
    s["vhids"]
        .as_array()
        .and_then(|v| v.iter().find(|v| v["vhid"] == vhid).cloned())
        .unwrap_or_else(|| panic!("no vhid {vhid} in {s}"))
}

/// A CARP VHID with its ucarp peer and a VRRP VRID with its keepalived
/// peer, with different numbers, on one interface: each election goes its
/// own way (ucarp keeps CARP VHID 7, carpd preempts keepalived on VRID 51)
/// and neither disturbs the other: no drop, no further transition.
#[test]
fn carp_and_vrrp_side_by_side_on_one_interface() {
    const CARP_VIP: &str = "10.99.0.107";
    let setup = Setup::new(Family::V3Ipv4, 200, 100);
    let mut bed = Bed::new(setup.clone());
    // ucarp on host 1, VHID 7, advskew 100, its scripts own the address
    let mut scripts = Vec::new();
    for (event, action) in [
        ("up", "ip addr add \"$2/24\" dev \"$1\""),
        ("down", "ip addr del \"$2/24\" dev \"$1\" 2>/dev/null"),
    ] {
        let p = bed.dir.write(
            &format!("ucarp-{event}.sh"),
            &format!("#!/bin/sh\n{action}\nexit 0\n"),
        );
        run(&["chmod", "755", p.to_str().unwrap()]);
        scripts.push(p);
    }
    let src = Lan::host_addr(1, 0);
    let ucarp_args = [
        "-i",
        "eth0",
        "-s",
        &src,
        "-v",
        "7",
        "-p",
        "secret",
        "-a",
        CARP_VIP,
        "-b",
        "1",
        "-k",
        "100",
        "-u",
        scripts[0].to_str().unwrap(),
        "-d",
        scripts[1].to_str().unwrap(),
        "-z",
        "-f",
        "none",
    ];
    let _ucarp = Daemon::spawn(
        &bed.lan.hosts[1],
        "ucarp",
        bed.dir.path(),
        "ucarp",
        &ucarp_args,
    );
    bed.start_keepalived();
    bed.wait_owner(&[1], setup.master_down(100) + MARGIN * 2);
    let carp_owner = |bed: &Bed| bed.lan.owners(CARP_VIP);
    assert!(
        wait_until(MARGIN * 3, Duration::from_millis(20), || carp_owner(&bed)
            == [1])
        .is_some()
    );

    let toml = format!(
        "[[interface]]\nname = \"eth0\"\n  [[interface.vhid]]\n  id = 7\n  auth = \"ucarp\"\n  password = \"secret\"\n  addresses = [\"{CARP_VIP}/24\"]\n{}",
        setup
            .carpd_toml()
            .replace("[[interface]]\nname = \"eth0\"\n", "")
    );
    let config = bed.dir.write("carpd.toml", &toml);
    bed.carpd = Some(Daemon::carpd(
        &bed.lan.hosts[0],
        "carpd",
        bed.dir.path(),
        &config,
        &[],
    ));
    bed.wait_owner(&[0], setup.master_down(200) + MARGIN);
    // settled: remember, then watch for twice the longest master-down time
    sleep(setup.master_down(100));
    let carpd = bed.carpd.as_ref().unwrap();
    let carp = vhid_status(carpd, 7);
    let vrrp = vhid_status(carpd, VRID);
    assert_eq!(carp["state"], "BACKUP", "{carp}");
    assert_eq!(vrrp["state"], "MASTER", "{vrrp}");
    assert_eq!(vrrp["last_reason"], "preempt", "{vrrp}");
    sleep(setup.master_down(100) * 2);
    let carp_after = vhid_status(carpd, 7);
    let vrrp_after = vhid_status(carpd, VRID);
    for (before, after) in [(&carp, &carp_after), (&vrrp, &vrrp_after)] {
        assert_eq!(before["transitions"], after["transitions"], "{after}");
        let heard = after["adverts_received"].as_u64().unwrap_or(0);
        let before_heard = before["adverts_received"].as_u64().unwrap_or(0);
        // the CARP BACKUP hears ucarp; the VRRP MASTER heard keepalived
        // before preempting it
        assert!(heard >= 2 && heard >= before_heard, "{after}");
        assert_eq!(after["drops"], serde_json::json!({}), "{after}");
    }
    assert!(
        carp_after["adverts_received"].as_u64() > carp["adverts_received"].as_u64(),
        "{carp_after}"
    );
    assert_eq!(carp_owner(&bed), [1]);
    assert_eq!(bed.owners(), [0]);
}

/// The operator's demotion (as a tracker's) lowers the advertised
/// priority: 200 - 150 = 50 is below keepalived's 100, which preempts;
/// promoting again takes the address back.
#[test]
fn v3_ipv4_demotion_lowers_the_priority() {
    let setup = Setup::new(Family::V3Ipv4, 200, 100);
    let mut bed = Bed::new(setup.clone());
    bed.start_carpd();
    bed.start_keepalived();
    bed.wait_owner(&[0], setup.master_down(200) + MARGIN * 2);
    let sock = bed.carpd().socket();
    let adjust = |command: &str| {
        run(&[
            carpd_exe(),
            command,
            "--by",
            "150",
            "--socket",
            sock.to_str().unwrap(),
        ])
    };
    adjust("demote");
    bed.wait_owner(&[1], setup.master_down(100) + MARGIN);
    let s = bed.carpd_status();
    assert_eq!(
        (&s["priority"], &s["last_reason"]),
        (&50.into(), &"peer_preferred".into()),
        "{s}"
    );
    adjust("promote");
    bed.wait_owner(&[0], setup.master_down(200) + MARGIN);
    assert_eq!(bed.carpd_status()["last_reason"], "preempt");
    bed.assert_carpd_packets_dissect(&[50, 200]);
}

/// FRR's vrrpd (Debian's FRR 8.4) on host 1, with its zebra: the
/// operator's macvlan `vrrp4-2-<vrid>` (`vrrp6-2-<vrid>` over IPv6) with
/// the virtual MAC holds the addresses (vrrpd turns the VRRP instance on it, not the address), so
/// carpd's status and vrrpd's own (`show vrrp` through `vtysh` on the vty
/// sockets in the test's directory) tell who is master. The daemons run as
/// the `frr` user, which may use their vty sockets.
struct Frr {
    zebra: Daemon,
    vrrpd: Option<Daemon>,
}

impl Bed {
    /// FRR's vrrpd on host 1 with `priority`, for the test's family. Over
    /// IPv6 FRR wants the macvlan `vrrp6-2-<vrid>` (MAC
    /// 00:00:5e:00:02:<vrid>) with a link-local address, which it sends
    /// from, and the virtual addresses; DAD is off on both hosts, or the
    /// link-local address of FRR's macvlan stays tentative and the virtual
    /// addresses both hosts hold conflict.
    fn start_frr(&mut self, priority: u8) -> Frr {
        require_tool("vtysh");
        let ipv6 = self.setup.family == Family::V3Ipv6;
        if ipv6 {
            for host in &self.lan.hosts {
                no_dad(host, "all");
                no_dad(host, "default");
            }
        }
        let host = &self.lan.hosts[1];
        let (child, mac_family) = if ipv6 {
            (format!("vrrp6-2-{VRID}"), 2)
        } else {
            (format!("vrrp4-2-{VRID}"), 1)
        };
        host.ip(&[
            "link", "add", "link", "eth0", "name", &child, "type", "macvlan", "mode", "bridge",
        ]);
        host.ip(&[
            "link",
            "set",
            "dev",
            &child,
            "address",
            &format!("00:00:5e:00:{mac_family:02x}:{VRID:02x}"),
        ]);
        let addresses = if ipv6 {
            no_dad(host, &child);
            vec![format!("{VIP6_LL}/64"), format!("{VIP6}/64")]
        } else {
            vec![format!("{VIP4}/24")]
        };
        for a in &addresses {
            host.ip(&["addr", "add", a, "dev", &child]);
        }
        host.ip(&["link", "set", &child, "up"]);
        // the daemons write their pid files and sockets here as `frr`
        run(&["chmod", "777", self.dir.path().to_str().unwrap()]);
        self.dir.write("zebra.conf", "");
        self.dir.write("vtysh.conf", "");
        let version = if self.setup.family == Family::V2Ipv4 {
            2
        } else {
            3
        };
        let vips = if ipv6 {
            format!(" vrrp {VRID} ipv6 {VIP6_LL}\n vrrp {VRID} ipv6 {VIP6}\n")
        } else {
            format!(" vrrp {VRID} ip {VIP4}\n")
        };
        self.dir.write(
            "vrrpd.conf",
            &format!(
                "interface eth0\n vrrp {VRID} version {version}\n vrrp {VRID} priority {priority}\n vrrp {VRID} advertisement-interval 1000\n{vips}!\n"
            ),
        );
        let zebra = self.frr_daemon("zebra");
        sleep(Duration::from_secs(1));
        let vrrpd = Some(self.frr_daemon("vrrpd"));
        Frr { zebra, vrrpd }
    }

    fn frr_daemon(&self, name: &str) -> Daemon {
        let dir = self.dir.path().to_str().unwrap();
        let conf = format!("{dir}/{name}.conf");
        let pid = format!("{dir}/{name}.pid");
        let zserv = format!("{dir}/zserv.api");
        let args = [
            "-N",
            "carpt",
            "--vty_socket",
            dir,
            "-z",
            &zserv,
            "-u",
            "frr",
            "-g",
            "frr",
            "-f",
            &conf,
            "-i",
            &pid,
        ];
        Daemon::spawn(
            &self.lan.hosts[1],
            name,
            self.dir.path(),
            &format!("/usr/lib/frr/{name}"),
            &args,
        )
    }

    /// FRR's instance of the test's family as `show vrrp <vrid> json`
    /// reports it, if vrrpd answers yet.
    fn try_frr_vrrp(&self) -> Option<serde_json::Value> {
        let dir = self.dir.path().to_str()?;
        let out = self.lan.hosts[1]
            .try_exec(&[
                "vtysh",
                "--config_dir",
                dir,
                "--vty_socket",
                dir,
                "-c",
                &format!("show vrrp {VRID} json"),
            ])
            .ok()?;
        let v: serde_json::Value = serde_json::from_str(&out).ok()?;
        let family = match self.setup.family {
            Family::V3Ipv6 => "v6",
            _ => "v4",
        };
        Some(v[0][family].clone())
    }

    /// Waits until FRR's vrrpd reports its instance in `status`
    /// (`Master`, `Backup`); how long it took.
    fn wait_frr(&self, status: &str, timeout: Duration) -> Duration {
        let took = wait_until(timeout, Duration::from_millis(100), || {
            self.try_frr_vrrp().is_some_and(|v| v["status"] == status)
        });
        took.unwrap_or_else(|| {
            panic!(
                "FRR not {status} within {timeout:?}: {:?}\ncarpd status: {}",
                self.try_frr_vrrp(),
                self.carpd_status()
            )
        })
    }

    /// Waits until carpd's VHID is in `state` for `reason`.
    fn wait_carpd(&self, state: &str, reason: &str, timeout: Duration) {
        let ok = wait_until(timeout, Duration::from_millis(50), || {
            self.try_carpd_status()
                .is_some_and(|s| s["state"] == state && s["last_reason"] == reason)
        });
        assert!(
            ok.is_some(),
            "carpd not {state} ({reason}) within {timeout:?}: {}",
            self.carpd_status()
        );
    }
}

/// FRR vrrpd better (200 against carpd's 100), carpd first: FRR preempts
/// carpd; carpd takes over when vrrpd is killed (SIGKILL: after its
/// master-down time), FRR preempts again when it returns and hands over
/// with priority 0 on SIGTERM (carpd waits only its skew time).
fn frr_better_preempts_and_hands_over(family: Family) {
    let mut setup = Setup::new(family, 100, 200);
    setup.v2_password = false;
    let mut bed = Bed::new(setup.clone());
    bed.start_carpd();
    bed.wait_carpd("MASTER", "master_down", setup.master_down(100) + MARGIN);
    let mut frr = bed.start_frr(200);
    bed.wait_carpd(
        "BACKUP",
        "peer_preferred",
        setup.master_down(200) + MARGIN * 2,
    );
    bed.assert_carpd_hears_peer();

    let mut vrrpd = frr.vrrpd.take().unwrap();
    vrrpd.sigkill();
    vrrpd.wait_exit(Duration::from_secs(5));
    bed.wait_carpd("MASTER", "master_down", setup.master_down(100) + MARGIN);
    drop(vrrpd);
    frr.vrrpd = Some(bed.frr_daemon("vrrpd"));
    bed.wait_carpd(
        "BACKUP",
        "peer_preferred",
        setup.master_down(200) + MARGIN * 2,
    );

    let vrrpd = frr.vrrpd.take().unwrap();
    vrrpd.sigterm();
    bed.wait_carpd("MASTER", "peer_bowed_out", MARGIN);
    let s = bed.carpd_status();
    assert_eq!(reasons(&s)["peer_preferred"], 2, "{s}");
    assert_eq!(reasons(&s)["master_down"], 2, "{s}");
    assert!(frr.zebra.is_running());
    bed.assert_carpd_packets_dissect(&[100]);
}

#[test]
fn frr_v3_ipv4_better_preempts_and_hands_over() {
    frr_better_preempts_and_hands_over(Family::V3Ipv4);
}

#[test]
fn frr_v2_ipv4_better_preempts_and_hands_over() {
    frr_better_preempts_and_hands_over(Family::V2Ipv4);
}

#[test]
fn frr_v3_ipv6_better_preempts_and_hands_over() {
    frr_better_preempts_and_hands_over(Family::V3Ipv6);
}

/// carpd better (200 against FRR's 100), VRRPv3: FRR starts alone and
/// becomes Master; carpd preempts it and FRR, having accepted carpd's
/// advertisements, goes Backup and counts them while carpd stays MASTER.
/// On carpd's SIGTERM (priority 0) FRR takes over within its skew time,
/// well before its master-down time; carpd preempts again when it
/// returns, and FRR takes over when carpd is killed (SIGKILL).
fn carpd_better_frr_follows(family: Family) {
    let setup = Setup::new(family, 200, 100);
    let mut bed = Bed::new(setup.clone());
    let mut frr = bed.start_frr(100);
    bed.wait_frr("Master", setup.master_down(100) + MARGIN * 3);
    bed.start_carpd();
    bed.wait_carpd("MASTER", "preempt", setup.master_down(200) + MARGIN * 2);
    bed.wait_frr("Backup", MARGIN * 2);
    bed.assert_carpd_hears_peer();
    let rx =
        |v: Option<serde_json::Value>| v.and_then(|v| v["stats"]["adverRx"].as_u64()).unwrap_or(0);
    let before = rx(bed.try_frr_vrrp());
    sleep(setup.interval() * 4);
    let v = bed.try_frr_vrrp();
    assert_eq!(
        v.as_ref().map(|v| &v["status"]),
        Some(&"Backup".into()),
        "{v:?}"
    );
    assert!(
        rx(v.clone()) >= before + 2,
        "FRR heard too little of carpd: {before} then {v:?}"
    );
    let s = bed.carpd_status();
    assert_eq!(s["state"], "MASTER", "{s}");
    assert_eq!(s["transitions"], 2, "carpd moved again: {s}");

    bed.carpd().sigterm();
    bed.carpd().wait_exit(Duration::from_secs(10));
    let took = bed.wait_frr("Master", setup.master_down(100) + MARGIN);
    setup.assert_handed_over_in_skew_time(100, took);
    bed.start_carpd();
    bed.wait_carpd("MASTER", "preempt", setup.master_down(200) + MARGIN * 2);
    bed.wait_frr("Backup", MARGIN * 2);

    bed.crash_carpd();
    bed.wait_frr("Master", setup.master_down(100) + MARGIN);
    assert!(frr.zebra.is_running());
    assert!(frr.vrrpd.as_mut().is_some_and(|d| d.is_running()));
    bed.assert_carpd_packets_dissect(&[0, 200]);
}

#[test]
fn frr_v3_ipv4_carpd_better_frr_follows() {
    carpd_better_frr_follows(Family::V3Ipv4);
}

#[test]
fn frr_v3_ipv6_carpd_better_frr_follows() {
    carpd_better_frr_follows(Family::V3Ipv6);
}
