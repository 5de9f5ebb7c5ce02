//! What the engine runs: a validated, typed description produced by the
//! daemon from its TOML file or UCARP command line. `PartialEq` is how a
//! reload decides which VHIDs changed.

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::time::Duration;

use carp_proto::HmacMode;
use carp_proto::machine::DemoteStyle;
use carp_proto::vrrp;

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EngineSpec {
    pub interfaces: Vec<InterfaceSpec>,
    /// Health trackers: each adds its weight to the demotion of the VHIDs
    /// it covers while it fails.
    pub trackers: Vec<TrackerSpec>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterfaceSpec {
    /// Parent interface name, e.g. `eth0`.
    pub name: String,
    /// Do not go to INIT when the link goes down (UCARP `--ignoreifstate`).
    pub ignore_link_state: bool,
    pub vhids: Vec<VhidSpec>,
}

/// (interface name, vhid): a VHID's identity across reloads.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct VhidKey {
    pub interface: String,
    pub vhid: u8,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct VirtualAddr {
    pub addr: IpAddr,
    pub prefix_len: u8,
}

#[derive(Clone, PartialEq, Eq)]
pub struct VhidSpec {
    pub vhid: u8,
    pub addresses: Vec<VirtualAddr>,
    /// IPv4 address label, e.g. `eth0:vip` (at most 15 bytes).
    pub label: Option<String>,
    /// Password bytes (never logged).
    pub key: Vec<u8>,
    pub auth: HmacMode,
    pub demote_style: DemoteStyle,
    pub advbase: u8,
    pub advskew: u8,
    pub dead_ratio: u8,
    pub preempt: bool,
    /// How long preemption stays off after startup or the link coming up
    /// (see [`carp_proto::MachineConfig::preempt_delay`]).
    pub preempt_delay: Duration,
    /// A MASTER repeats its gratuitous ARP / unsolicited NA this often
    /// (`None`: only on takeover and when answering a conflict).
    pub announce_interval: Option<Duration>,
    /// Source address for IPv4 advertisements; default: the interface's
    /// primary IPv4 address.
    pub source: Option<IpAddr>,
    /// IPv4 destination group (default 224.0.0.18; UCARP `--mcast`).
    pub group_v4: Ipv4Addr,
    /// Ethernet broadcast instead of multicast MAC (UCARP `--nomcast`).
    pub broadcast: bool,
    /// Install/remove the addresses ourselves (false in UCARP-compatible
    /// mode, where the scripts own them).
    pub manage_addresses: bool,
    /// Drop advertisements whose counter does not increase (see
    /// [`carp_proto::replay`]); off for OpenBSD peers, whose counter is
    /// constant.
    pub replay_protection: bool,
    pub hooks: HookSpec,
    /// Interface groups (OpenBSD's `ifconfig carpN group`) besides the one
    /// every VHID is in, named after its interface: demoting a group
    /// demotes each of its VHIDs.
    pub groups: Vec<String>,
    /// Load sharing: the advskew comes from this node's rank for the VHID
    /// (`advskew` is then not used).
    pub share: Option<ShareSpec>,
    /// Unicast peers and the virtual MAC.
    pub transport: TransportSpec,
    /// CARP (the fields above named after CARP apply), or VRRP with its
    /// own parameters (`vhid` is then the VRID).
    pub protocol: Protocol,
}

/// The protocol a VHID speaks.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Protocol {
    #[default]
    Carp,
    Vrrp(VrrpSpec),
}

impl Protocol {
    /// `carp`, `vrrp3` or `vrrp2`, as in the configuration.
    pub fn name(&self) -> &'static str {
        match self {
            Protocol::Carp => "carp",
            Protocol::Vrrp(v) if v.version == vrrp::Version::V2 => "vrrp2",
            Protocol::Vrrp(_) => "vrrp3",
        }
    }
}

/// A VRRP virtual router's parameters. `auth`, `advbase`, `advskew`,
/// `dead_ratio`, `demote_style`, `group_v4`, `broadcast` and
/// `replay_protection` of the [`VhidSpec`] are not used; its `key` is the
/// VRRPv2 plain-text password with `simple_auth`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VrrpSpec {
    pub version: vrrp::Version,
    /// 1..=254, 255 for the address owner.
    pub priority: u8,
    /// Advertisement interval, centiseconds (VRRPv2: a multiple of 100).
    pub interval_cs: u16,
    /// VRRPv2 authentication type 1: the key, in plain text on the wire
    /// (no security, as RFC 3768 says).
    pub simple_auth: bool,
    /// VRRPv3 Accept_Mode: a non-owner MASTER accepts packets addressed to
    /// the virtual addresses; without it they are dropped, VRRP and
    /// neighbour discovery excepted ([`crate::accept_mode`]).
    pub accept_mode: bool,
}

impl VrrpSpec {
    /// The authentication its advertisements carry, `key` being the
    /// VHID's.
    pub fn auth(&self, key: &[u8]) -> vrrp::Auth {
        if self.simple_auth && self.version == vrrp::Version::V2 {
            vrrp::Auth::simple(key)
        } else {
            vrrp::Auth::None
        }
    }
}

/// How a VHID reaches its peers on the segment.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TransportSpec {
    /// Unicast peers: when not empty, advertisements go to each peer of the
    /// carrier's family instead of the group, a carrier without a peer of
    /// its family stays silent, and only advertisements whose source is one
    /// of the peers are accepted. IPv6 link-local peers are on the VHID's
    /// interface.
    pub peers: Vec<IpAddr>,
    /// Keep the TTL / hop limit 255 check for advertisements sent to a
    /// unicast address (FreeBSD skips it, so that peers may be routed).
    pub unicast_ttl_check: bool,
    /// Hold the addresses on a macvlan child with the MAC
    /// 00:00:5e:00:01:<vhid> (00:00:5e:00:02:<vhid> without IPv4 addresses)
    /// while MASTER, and advertise from it.
    pub virtual_mac: bool,
}

impl TransportSpec {
    /// Whether the VHID advertises to unicast peers.
    pub fn unicast(&self) -> bool {
        !self.peers.is_empty()
    }
}

/// The CARP multicast group (224.0.0.18).
pub const DEFAULT_GROUP: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 18);
/// Advertisement interval in seconds when none is configured.
pub const DEFAULT_ADVBASE: u8 = 1;
pub const DEFAULT_ADVSKEW: u8 = 0;
/// Missed advertisement intervals before the master counts as dead.
pub const DEFAULT_DEAD_RATIO: u8 = 3;

impl VhidSpec {
    /// A VHID with the protocol defaults: advertisements every
    /// [`DEFAULT_ADVBASE`] second to [`DEFAULT_GROUP`], no preemption,
    /// addresses managed by carpd, no hooks, multicast transport. The
    /// demotion style follows from `auth` ([`demote_style_for`]). Callers
    /// override the rest with struct update syntax
    /// (`VhidSpec { advskew: 100, ..VhidSpec::new(..) }`).
    pub fn new(vhid: u8, addresses: Vec<VirtualAddr>, key: Vec<u8>, auth: HmacMode) -> VhidSpec {
        VhidSpec {
            vhid,
            addresses,
            label: None,
            key,
            auth,
            demote_style: demote_style_for(auth),
            advbase: DEFAULT_ADVBASE,
            advskew: DEFAULT_ADVSKEW,
            dead_ratio: DEFAULT_DEAD_RATIO,
            preempt: false,
            preempt_delay: Duration::ZERO,
            announce_interval: None,
            source: None,
            group_v4: DEFAULT_GROUP,
            broadcast: false,
            manage_addresses: true,
            // off by default: OpenBSD peers send a constant counter
            replay_protection: false,
            hooks: HookSpec::default(),
            groups: Vec::new(),
            share: None,
            transport: TransportSpec::default(),
            protocol: Protocol::Carp,
        }
    }

    /// Whether the VHID on `interface` is in group `group`.
    pub fn in_group(&self, interface: &str, group: &str) -> bool {
        interface == group || self.groups.iter().any(|g| g == group)
    }
}

/// How a VHID signing with `auth` tells its peers it is demoted: UCARP and
/// FreeBSD ignore the demote byte, so for UCARP peers the demotion goes into
/// the advertised skew instead.
pub fn demote_style_for(auth: HmacMode) -> DemoteStyle {
    match auth {
        HmacMode::Bsd => DemoteStyle::Byte,
        HmacMode::Ucarp => DemoteStyle::Skew,
    }
}

/// Which VHIDs an operator request applies to: all that match every filter
/// given (all VHIDs when none is).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VhidFilter {
    pub interface: Option<String>,
    pub vhid: Option<u8>,
    /// Interface group ([`VhidSpec::in_group`]).
    pub group: Option<String>,
}

impl VhidFilter {
    pub fn matches(&self, key: &VhidKey, spec: &VhidSpec) -> bool {
        self.interface.as_ref().is_none_or(|i| *i == key.interface)
            && self.vhid.is_none_or(|v| v == key.vhid)
            && self
                .group
                .as_ref()
                .is_none_or(|g| spec.in_group(&key.interface, g))
    }
}

/// A VHID's place in a load-sharing group (see [`crate::share`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShareSpec {
    /// The load-sharing group's name, for logs.
    pub group: String,
    /// Every node of the group, most preferred first for this VHID.
    pub order: Vec<IpAddr>,
    /// This node; `None`: the one node of `order` that is an address of
    /// the VHID's interface.
    pub this_node: Option<IpAddr>,
}

/// A health tracker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrackerSpec {
    pub kind: TrackerKind,
    /// The demotion while failing (for a file: per unit of its number).
    pub weight: u8,
    pub scope: TrackScope,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TrackerKind {
    /// Fails while the interface's link is down.
    Link { interface: String },
    /// `/bin/sh -c <command>` every `interval`: fails after `fall`
    /// consecutive failed runs (non-zero exit or `timeout`), recovers after
    /// `rise` consecutive successes; the first run decides alone.
    Command {
        command: String,
        interval: Duration,
        timeout: Duration,
        rise: u32,
        fall: u32,
    },
    /// A file holding a number, read every `interval`: demotes by that
    /// number times the weight (a missing file means 0).
    File { path: PathBuf, interval: Duration },
}

/// The VHIDs a tracker demotes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TrackScope {
    All,
    /// Every VHID in any of these groups ([`VhidSpec::in_group`]).
    Groups(Vec<String>),
    Vhid(VhidKey),
}

impl TrackScope {
    pub fn covers(&self, key: &VhidKey, spec: &VhidSpec) -> bool {
        match self {
            TrackScope::All => true,
            TrackScope::Groups(groups) => groups.iter().any(|g| spec.in_group(&key.interface, g)),
            TrackScope::Vhid(k) => k == key,
        }
    }
}

impl std::fmt::Display for TrackerKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TrackerKind::Link { interface } => write!(f, "link {interface}"),
            TrackerKind::Command { command, .. } => write!(f, "command `{command}`"),
            TrackerKind::File { path, .. } => write!(f, "file {}", path.display()),
        }
    }
}

impl std::fmt::Debug for VhidSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VhidSpec")
            .field("vhid", &self.vhid)
            .field("addresses", &self.addresses)
            .field("label", &self.label)
            .field("key", &"<redacted>")
            .field("auth", &self.auth)
            .field("demote_style", &self.demote_style)
            .field("advbase", &self.advbase)
            .field("advskew", &self.advskew)
            .field("dead_ratio", &self.dead_ratio)
            .field("preempt", &self.preempt)
            .field("source", &self.source)
            .field("group_v4", &self.group_v4)
            .field("broadcast", &self.broadcast)
            .field("manage_addresses", &self.manage_addresses)
            .field("replay_protection", &self.replay_protection)
            .field("hooks", &self.hooks)
            .field("groups", &self.groups)
            .field("share", &self.share)
            .field("transport", &self.transport)
            .field("protocol", &self.protocol)
            .finish()
    }
}

/// Up/down commands, run as `<cmd> <interface> <vip> [xparam]` (UCARP's
/// argv) with `CARP_VHID`, `CARP_STATE`, `CARP_INTERFACE`, `CARP_ADDRESSES`
/// in the environment.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HookSpec {
    pub up: Option<PathBuf>,
    pub down: Option<PathBuf>,
    pub xparam: Option<String>,
    pub timeout: Duration,
    /// Run the down hook at start-up when entering BACKUP (UCARP does unless
    /// `--neutral`).
    pub down_at_start: bool,
    /// Run the down hook on exit if MASTER (UCARP `--shutdown`).
    pub down_on_exit: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vrrp_auth_is_the_key_in_version_2_with_simple_auth_only() {
        let v2 = VrrpSpec {
            version: vrrp::Version::V2,
            priority: 100,
            interval_cs: 100,
            simple_auth: true,
            accept_mode: false,
        };
        assert_eq!(v2.auth(b"pw"), vrrp::Auth::simple(b"pw"));
        let none = VrrpSpec {
            simple_auth: false,
            ..v2.clone()
        };
        assert_eq!(none.auth(b"pw"), vrrp::Auth::None);
        let v3 = VrrpSpec {
            version: vrrp::Version::V3,
            ..v2
        };
        assert_eq!(v3.auth(b"pw"), vrrp::Auth::None);
    }

    #[test]
    fn a_new_vhid_has_the_protocol_defaults_and_the_demote_style_of_its_auth() {
        let bsd = VhidSpec::new(7, Vec::new(), b"pw".to_vec(), HmacMode::Bsd);
        assert_eq!(bsd.demote_style, DemoteStyle::Byte);
        assert_eq!((bsd.advbase, bsd.advskew, bsd.dead_ratio), (1, 0, 3));
        assert_eq!(bsd.group_v4, Ipv4Addr::new(224, 0, 0, 18));
        assert!(!bsd.preempt && bsd.manage_addresses && !bsd.replay_protection);
        assert!(bsd.share.is_none() && !bsd.transport.unicast());
        assert_eq!(bsd.protocol, Protocol::Carp);
        let ucarp = VhidSpec::new(7, Vec::new(), b"pw".to_vec(), HmacMode::Ucarp);
        assert_eq!(ucarp.demote_style, DemoteStyle::Skew);
    }
}
