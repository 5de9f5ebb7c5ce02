//! The file's raw tables as serde reads them, each value with its span.
//!
//! The settings that cascade are repeated in every table that may hold them
//! by [`cascading_table!`]; [`Common`] borrows them from any of those tables.

use serde::Deserialize;
use toml::Spanned;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(super) enum AuthName {
    Bsd,
    Ucarp,
}

/// `protocol`: what a VHID speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(super) enum ProtocolName {
    Carp,
    Vrrp3,
    Vrrp2,
}

impl ProtocolName {
    pub(super) fn as_str(self) -> &'static str {
        match self {
            ProtocolName::Carp => "carp",
            ProtocolName::Vrrp3 => "vrrp3",
            ProtocolName::Vrrp2 => "vrrp2",
        }
    }
}

/// `auth_type`: VRRPv2 authentication.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(super) enum VrrpAuthName {
    None,
    Simple,
}

/// Declares a table type holding its own fields plus every setting that
/// cascades (serde's `flatten` cannot be combined with
/// `deny_unknown_fields`, so the shared fields are repeated by the macro).
macro_rules! cascading_table {
    ($(#[$m:meta])* struct $name:ident { $($(#[$fm:meta])* $f:ident : $t:ty,)* }) => {
        $(#[$m])*
        #[derive(Debug, Deserialize)]
        #[serde(deny_unknown_fields)]
        pub(super) struct $name {
            $($(#[$fm])* pub(super) $f: $t,)*
            pub(super) advbase: Option<Spanned<i64>>,
            pub(super) advskew: Option<Spanned<i64>>,
            pub(super) dead_ratio: Option<Spanned<i64>>,
            pub(super) preempt: Option<bool>,
            pub(super) preempt_delay: Option<Spanned<String>>,
            pub(super) announce_interval: Option<Spanned<String>>,
            pub(super) password: Option<Spanned<String>>,
            pub(super) password_file: Option<Spanned<String>>,
            pub(super) password_env: Option<Spanned<String>>,
            pub(super) auth: Option<Spanned<AuthName>>,
            pub(super) hook_timeout: Option<Spanned<String>>,
            pub(super) up: Option<Spanned<String>>,
            pub(super) down: Option<Spanned<String>>,
            pub(super) xparam: Option<String>,
            pub(super) down_at_start: Option<bool>,
            pub(super) down_on_exit: Option<bool>,
            pub(super) group: Option<Spanned<String>>,
            pub(super) broadcast: Option<Spanned<bool>>,
            pub(super) manage_addresses: Option<bool>,
            pub(super) replay_protection: Option<Spanned<bool>>,
            pub(super) peers: Option<Spanned<Vec<Spanned<String>>>>,
            pub(super) unicast_ttl_check: Option<bool>,
            pub(super) virtual_mac: Option<Spanned<bool>>,
            pub(super) protocol: Option<Spanned<ProtocolName>>,
            pub(super) priority: Option<Spanned<i64>>,
            pub(super) advert_interval: Option<Spanned<String>>,
            pub(super) auth_type: Option<Spanned<VrrpAuthName>>,
            pub(super) accept_mode: Option<Spanned<bool>>,
        }

        impl $name {
            pub(super) fn common(&self) -> Common<'_> {
                Common {
                    advbase: self.advbase.as_ref(),
                    advskew: self.advskew.as_ref(),
                    dead_ratio: self.dead_ratio.as_ref(),
                    preempt: self.preempt,
                    preempt_delay: self.preempt_delay.as_ref(),
                    announce_interval: self.announce_interval.as_ref(),
                    password: self.password.as_ref(),
                    password_file: self.password_file.as_ref(),
                    password_env: self.password_env.as_ref(),
                    auth: self.auth.as_ref(),
                    hook_timeout: self.hook_timeout.as_ref(),
                    up: self.up.as_ref(),
                    down: self.down.as_ref(),
                    xparam: self.xparam.as_deref(),
                    down_at_start: self.down_at_start,
                    down_on_exit: self.down_on_exit,
                    group: self.group.as_ref(),
                    broadcast: self.broadcast.as_ref(),
                    manage_addresses: self.manage_addresses,
                    replay_protection: self.replay_protection.as_ref(),
                    peers: self.peers.as_ref(),
                    unicast_ttl_check: self.unicast_ttl_check,
                    virtual_mac: self.virtual_mac.as_ref(),
                    protocol: self.protocol.as_ref(),
                    priority: self.priority.as_ref(),
                    advert_interval: self.advert_interval.as_ref(),
                    auth_type: self.auth_type.as_ref(),
                    accept_mode: self.accept_mode.as_ref(),
                }
            }
        }
    };
}

cascading_table! {
    struct RawFile {
        ignore_link_state: Option<bool>,
        control_socket: Option<Spanned<String>>,
        control_group: Option<Spanned<String>>,
        allow_readable_password_file: Option<bool>,
        realtime: Option<Spanned<bool>>,
        realtime_priority: Option<Spanned<i64>>,
        metrics: Option<RawMetrics>,
        #[serde(default)]
        interface: Vec<Spanned<RawInterface>>,
        #[serde(default)]
        track: Vec<Spanned<RawTrack>>,
        #[serde(default)]
        load_sharing: Vec<Spanned<RawLoadSharing>>,
    }
}

cascading_table! {
    struct RawInterface {
        name: Spanned<String>,
        source: Option<Spanned<String>>,
        ignore_link_state: Option<bool>,
        groups: Option<Vec<Spanned<String>>>,
        #[serde(default)]
        track: Vec<Spanned<RawTrack>>,
        #[serde(default)]
        vhid: Vec<Spanned<RawVhid>>,
    }
}

cascading_table! {
    struct RawVhid {
        id: Spanned<i64>,
        addresses: Option<Spanned<Vec<Spanned<String>>>>,
        label: Option<Spanned<String>>,
        source: Option<Spanned<String>>,
        groups: Option<Vec<Spanned<String>>>,
        #[serde(default)]
        track: Vec<Spanned<RawTrack>>,
    }
}

cascading_table! {
    /// `[[load_sharing]]`: VHIDs whose masters spread over `nodes`.
    struct RawLoadSharing {
        name: Spanned<String>,
        interface: Spanned<String>,
        nodes: Spanned<Vec<Spanned<String>>>,
        #[serde(rename = "self")]
        this_node: Option<Spanned<String>>,
        groups: Option<Vec<Spanned<String>>>,
        #[serde(default)]
        track: Vec<Spanned<RawTrack>>,
        #[serde(default)]
        vhid: Vec<Spanned<RawVhid>>,
    }
}

/// A `[[track]]` table: exactly one of `link`, `command`, `file`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTrack {
    pub(super) link: Option<Spanned<String>>,
    pub(super) command: Option<Spanned<String>>,
    pub(super) file: Option<Spanned<String>>,
    pub(super) weight: Option<Spanned<i64>>,
    pub(super) interval: Option<Spanned<String>>,
    pub(super) timeout: Option<Spanned<String>>,
    pub(super) rise: Option<Spanned<i64>>,
    pub(super) fall: Option<Spanned<i64>>,
    pub(super) groups: Option<Vec<Spanned<String>>>,
}

/// The `[metrics]` table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMetrics {
    pub(super) listen: Spanned<String>,
}

/// The cascading settings of one table, borrowed from it.
pub(super) struct Common<'a> {
    pub(super) advbase: Option<&'a Spanned<i64>>,
    pub(super) advskew: Option<&'a Spanned<i64>>,
    pub(super) dead_ratio: Option<&'a Spanned<i64>>,
    pub(super) preempt: Option<bool>,
    pub(super) preempt_delay: Option<&'a Spanned<String>>,
    pub(super) announce_interval: Option<&'a Spanned<String>>,
    pub(super) password: Option<&'a Spanned<String>>,
    pub(super) password_file: Option<&'a Spanned<String>>,
    pub(super) password_env: Option<&'a Spanned<String>>,
    pub(super) auth: Option<&'a Spanned<AuthName>>,
    pub(super) hook_timeout: Option<&'a Spanned<String>>,
    pub(super) up: Option<&'a Spanned<String>>,
    pub(super) down: Option<&'a Spanned<String>>,
    pub(super) xparam: Option<&'a str>,
    pub(super) down_at_start: Option<bool>,
    pub(super) down_on_exit: Option<bool>,
    pub(super) group: Option<&'a Spanned<String>>,
    pub(super) broadcast: Option<&'a Spanned<bool>>,
    pub(super) manage_addresses: Option<bool>,
    pub(super) replay_protection: Option<&'a Spanned<bool>>,
    pub(super) peers: Option<&'a Spanned<Vec<Spanned<String>>>>,
    pub(super) unicast_ttl_check: Option<bool>,
    pub(super) virtual_mac: Option<&'a Spanned<bool>>,
    pub(super) protocol: Option<&'a Spanned<ProtocolName>>,
    pub(super) priority: Option<&'a Spanned<i64>>,
    pub(super) advert_interval: Option<&'a Spanned<String>>,
    pub(super) auth_type: Option<&'a Spanned<VrrpAuthName>>,
    pub(super) accept_mode: Option<&'a Spanned<bool>>,
}
