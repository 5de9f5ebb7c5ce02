//! What the engine runs: a validated, typed description produced by the
//! daemon from its TOML file or UCARP command line. `PartialEq` is how a
//! reload decides which VHIDs changed.

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::time::Duration;

use carp_proto::HmacMode;
use carp_proto::machine::DemoteStyle;

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EngineSpec {
    pub interfaces: Vec<InterfaceSpec>,
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
