//! The TOML configuration file, validated into an [`EngineSpec`].
//!
//! Settings may appear at the top level, in an `[[interface]]` table and in
//! an `[[interface.vhid]]` table; the most specific one wins. Every value the
//! daemon checks keeps its byte span, so an error names the file, the line
//! and the key. `config/carpd.toml` documents every key.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use carp_engine::{
    EngineSpec, HookSpec, InterfaceSpec, ShareSpec, TrackScope, TrackerKind, TrackerSpec,
    TransportSpec, VhidKey, VhidSpec, VirtualAddr, share, vmac,
};
use carp_proto::HmacMode;
use carp_proto::machine::DemoteStyle;
use serde::Deserialize;
use toml::Spanned;

use crate::error::{Error, Location};

/// Where the daemon looks when `--config` is not given.
pub const DEFAULT_PATH: &str = "/etc/carpd.toml";

/// The CARP multicast group (224.0.0.18).
pub const DEFAULT_GROUP: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 18);

pub const DEFAULT_ADVBASE: u8 = 1;
pub const DEFAULT_ADVSKEW: u8 = 0;
pub const DEFAULT_DEAD_RATIO: u8 = 3;
const DEFAULT_HOOK_TIMEOUT: Duration = Duration::from_secs(10);

/// Tracker defaults: the demotion of a failing link or command tracker
/// (enough to lose against a healthy peer in both demotion styles), and
/// how often commands and files are checked.
const DEFAULT_TRACK_WEIGHT: u8 = 50;
const DEFAULT_CHECK_INTERVAL: Duration = Duration::from_secs(2);
const DEFAULT_FILE_INTERVAL: Duration = Duration::from_secs(1);
const DEFAULT_RISE: u32 = 2;
const DEFAULT_FALL: u32 = 3;

/// Most nodes a load-sharing group may have (every rank keeps a distinct
/// advskew up to [`share::MAX_RANK_SKEW`]).
const MAX_SHARE_NODES: usize = 64;

/// The longest key UCARP accepts (the BSDs truncate to the same length).
pub const UCARP_MAX_KEY: usize = 19;

/// Linux interface names and address labels fit in IFNAMSIZ (16) with the
/// terminating NUL.
const IFNAMSIZ_MAX: usize = 15;

/// Where the control socket is when neither the file nor the command line
/// says.
pub const DEFAULT_CONTROL_SOCKET: &str = "/run/carpd.sock";

/// The longest path a Unix socket address holds (`sun_path` less the NUL).
const SUN_PATH_MAX: usize = 107;

/// A validated configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub spec: EngineSpec,
    /// `control_socket`, if the file sets it.
    pub control_socket: Option<PathBuf>,
    /// `[metrics] listen`: where to serve Prometheus metrics (off if unset).
    pub metrics_listen: Option<SocketAddr>,
    /// `control_group`: members may use the control socket too.
    pub control_group: Option<ControlGroup>,
}

/// The group whose members may use the control socket, resolved when the
/// file is read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControlGroup {
    pub name: String,
    pub gid: u32,
}

impl Config {
    /// Read and validate `path`.
    pub fn load(path: &Path) -> Result<Config, Error> {
        let src = std::fs::read_to_string(path).map_err(|source| Error::ReadConfig {
            path: path.to_path_buf(),
            source,
        })?;
        Config::from_toml(&src, path)
    }

    /// Validate `src` as if read from `path` (which names the file in errors
    /// and anchors relative paths).
    pub fn from_toml(src: &str, path: &Path) -> Result<Config, Error> {
        let mut raw: RawFile = toml::from_str(src).map_err(|e| parse_error(src, path, &e))?;
        let base = path.parent().unwrap_or(Path::new(""));
        let v = Validator {
            src,
            line_starts: line_starts(src),
            path,
            base,
            seen_addrs: HashMap::new(),
            seen_children: HashMap::new(),
            allow_readable_password_file: raw.allow_readable_password_file.unwrap_or(false),
        };
        let control_socket = raw
            .control_socket
            .take()
            .map(|s| v.control_socket(&s))
            .transpose()?;
        let metrics_listen = raw
            .metrics
            .take()
            .map(|m| v.metrics_listen(&m.listen))
            .transpose()?;
        let control_group = raw
            .control_group
            .take()
            .map(|g| v.control_group(&g))
            .transpose()?;
        v.file(raw).map(|spec| Config {
            spec,
            control_socket,
            metrics_listen,
            control_group,
        })
    }

    pub fn vhid_count(&self) -> usize {
        self.spec.interfaces.iter().map(|i| i.vhids.len()).sum()
    }

    /// `N interfaces, M VHIDs`, for `--check-config` and the start-up log.
    pub fn summary(&self) -> String {
        let n = self.spec.interfaces.len();
        let m = self.vhid_count();
        format!(
            "{n} interface{}, {m} VHID{}",
            if n == 1 { "" } else { "s" },
            if m == 1 { "" } else { "s" }
        )
    }
}

/// Byte offsets where the lines of `src` start, so that line numbers are a
/// binary search instead of a rescan of the file: a file with 1000 VHIDs asks
/// for about 2000 of them, and rescanning made every reload take ~60 ms.
fn line_starts(src: &str) -> Vec<usize> {
    std::iter::once(0)
        .chain(src.match_indices('\n').map(|(i, _)| i + 1))
        .collect()
}

/// 1-based line and column of a byte offset.
fn line_col(src: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(src.len());
    let before = src.get(..offset).unwrap_or(src);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let col = before
        .get(line_start..)
        .map_or(1, |s| s.chars().count() + 1);
    (line, col)
}

/// The key whose value starts at `offset`: the name just before the last `=`
/// on that line, if there is one (also inside inline tables).
fn key_at(src: &str, offset: usize) -> Option<&str> {
    let before = src.get(..offset.min(src.len()))?;
    let line = &before[before.rfind('\n').map_or(0, |i| i + 1)..];
    let lhs = line[..line.rfind('=')?].trim_end();
    // after the last character that cannot be part of a key (which may be
    // several bytes long: slice after all of it)
    let start = lhs
        .char_indices()
        .rev()
        .find(|&(_, c)| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '"' | '\'' | '.')))
        .map_or(0, |(i, c)| i + c.len_utf8());
    let key = lhs[start..].trim_matches(|c| c == '"' || c == '\'');
    (!key.is_empty()).then_some(key)
}

/// A TOML syntax or type error as `file:line:col: [key: ]message`.
fn parse_error(src: &str, path: &Path, e: &toml::de::Error) -> Error {
    let Some(span) = e.span() else {
        return Error::Config {
            location: Location {
                path: path.to_path_buf(),
                line: None,
                col: None,
            },
            message: e.message().to_string(),
        };
    };
    let (line, col) = line_col(src, span.start);
    // Integers are read as i64 to range-check them with a clear message;
    // name the kind of value, not the Rust type.
    let text = e.message().replace("expected i64", "expected an integer");
    let key = key_at(src, span.start);
    let text = match key {
        Some(key) if key.rsplit('.').next() == Some("password") => without_value(&text),
        _ => text,
    };
    let message = match key {
        // Unknown/missing field messages already quote the key.
        Some(key) if !text.contains(&format!("`{key}`")) => format!("{key}: {text}"),
        _ => text,
    };
    Error::Config {
        location: Location {
            path: path.to_path_buf(),
            line: Some(line),
            col: Some(col),
        },
        message,
    }
}

/// A type error without the value it quotes: serde writes "invalid type:
/// integer `123456`, expected a string", and for `password` that value is
/// the secret.
fn without_value(text: &str) -> String {
    let Some((found, expected)) = text.split_once(", expected") else {
        return text.to_string();
    };
    match found.find(['`', '"', '\'']) {
        Some(quote) => format!("{}, expected{expected}", found[..quote].trim_end()),
        None => text.to_string(),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum AuthName {
    Bsd,
    Ucarp,
}

/// Declares a table type holding its own fields plus every setting that
/// cascades (serde's `flatten` cannot be combined with
/// `deny_unknown_fields`, so the shared fields are repeated by the macro).
macro_rules! cascading_table {
    ($(#[$m:meta])* struct $name:ident { $($(#[$fm:meta])* $f:ident : $t:ty,)* }) => {
        $(#[$m])*
        #[derive(Debug, Deserialize)]
        #[serde(deny_unknown_fields)]
        struct $name {
            $($(#[$fm])* $f: $t,)*
            advbase: Option<Spanned<i64>>,
            advskew: Option<Spanned<i64>>,
            dead_ratio: Option<Spanned<i64>>,
            preempt: Option<bool>,
            password: Option<Spanned<String>>,
            password_file: Option<Spanned<String>>,
            password_env: Option<Spanned<String>>,
            auth: Option<Spanned<AuthName>>,
            hook_timeout: Option<Spanned<String>>,
            up: Option<Spanned<String>>,
            down: Option<Spanned<String>>,
            xparam: Option<String>,
            down_at_start: Option<bool>,
            down_on_exit: Option<bool>,
            group: Option<Spanned<String>>,
            broadcast: Option<bool>,
            manage_addresses: Option<bool>,
            replay_protection: Option<bool>,
            peers: Option<Spanned<Vec<Spanned<String>>>>,
            unicast_ttl_check: Option<bool>,
            virtual_mac: Option<Spanned<bool>>,
        }

        impl $name {
            fn common(&self) -> Common<'_> {
                Common {
                    advbase: self.advbase.as_ref(),
                    advskew: self.advskew.as_ref(),
                    dead_ratio: self.dead_ratio.as_ref(),
                    preempt: self.preempt,
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
                    broadcast: self.broadcast,
                    manage_addresses: self.manage_addresses,
                    replay_protection: self.replay_protection,
                    peers: self.peers.as_ref(),
                    unicast_ttl_check: self.unicast_ttl_check,
                    virtual_mac: self.virtual_mac.as_ref(),
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
struct RawTrack {
    link: Option<Spanned<String>>,
    command: Option<Spanned<String>>,
    file: Option<Spanned<String>>,
    weight: Option<Spanned<i64>>,
    interval: Option<Spanned<String>>,
    timeout: Option<Spanned<String>>,
    rise: Option<Spanned<i64>>,
    fall: Option<Spanned<i64>>,
    groups: Option<Vec<Spanned<String>>>,
}

/// The `[metrics]` table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMetrics {
    listen: Spanned<String>,
}

/// The cascading settings of one table, borrowed from it.
struct Common<'a> {
    advbase: Option<&'a Spanned<i64>>,
    advskew: Option<&'a Spanned<i64>>,
    dead_ratio: Option<&'a Spanned<i64>>,
    preempt: Option<bool>,
    password: Option<&'a Spanned<String>>,
    password_file: Option<&'a Spanned<String>>,
    password_env: Option<&'a Spanned<String>>,
    auth: Option<&'a Spanned<AuthName>>,
    hook_timeout: Option<&'a Spanned<String>>,
    up: Option<&'a Spanned<String>>,
    down: Option<&'a Spanned<String>>,
    xparam: Option<&'a str>,
    down_at_start: Option<bool>,
    down_on_exit: Option<bool>,
    group: Option<&'a Spanned<String>>,
    broadcast: Option<bool>,
    manage_addresses: Option<bool>,
    replay_protection: Option<bool>,
    peers: Option<&'a Spanned<Vec<Spanned<String>>>>,
    unicast_ttl_check: Option<bool>,
    virtual_mac: Option<&'a Spanned<bool>>,
}

/// A setting's value and the span it was written at.
#[derive(Debug, Clone)]
struct At<T> {
    value: T,
    span: Range<usize>,
}

/// The checked cascading settings of one table; `None` means "inherit".
#[derive(Debug, Clone, Default)]
struct Level {
    advbase: Option<At<u8>>,
    advskew: Option<At<u8>>,
    dead_ratio: Option<u8>,
    preempt: Option<bool>,
    /// Password bytes and a description of their origin for errors.
    key: Option<At<(Vec<u8>, String)>>,
    auth: Option<At<AuthName>>,
    hook_timeout: Option<Duration>,
    up: Option<PathBuf>,
    down: Option<PathBuf>,
    xparam: Option<String>,
    down_at_start: Option<bool>,
    down_on_exit: Option<bool>,
    group: Option<Ipv4Addr>,
    broadcast: Option<bool>,
    manage_addresses: Option<bool>,
    replay_protection: Option<bool>,
    /// Unicast peers, each with its span.
    peers: Option<Vec<At<IpAddr>>>,
    unicast_ttl_check: Option<bool>,
    virtual_mac: Option<At<bool>>,
    source: Option<IpAddr>,
    ignore_link_state: Option<bool>,
}

impl Level {
    /// `self` with every setting `more` specifies replaced by it.
    fn overlay(&self, more: &Level) -> Level {
        fn pick<T: Clone>(a: &Option<T>, b: &Option<T>) -> Option<T> {
            b.clone().or_else(|| a.clone())
        }
        Level {
            advbase: pick(&self.advbase, &more.advbase),
            advskew: pick(&self.advskew, &more.advskew),
            dead_ratio: pick(&self.dead_ratio, &more.dead_ratio),
            preempt: pick(&self.preempt, &more.preempt),
            key: pick(&self.key, &more.key),
            auth: pick(&self.auth, &more.auth),
            hook_timeout: pick(&self.hook_timeout, &more.hook_timeout),
            up: pick(&self.up, &more.up),
            down: pick(&self.down, &more.down),
            xparam: pick(&self.xparam, &more.xparam),
            down_at_start: pick(&self.down_at_start, &more.down_at_start),
            down_on_exit: pick(&self.down_on_exit, &more.down_on_exit),
            group: pick(&self.group, &more.group),
            broadcast: pick(&self.broadcast, &more.broadcast),
            manage_addresses: pick(&self.manage_addresses, &more.manage_addresses),
            replay_protection: pick(&self.replay_protection, &more.replay_protection),
            peers: pick(&self.peers, &more.peers),
            unicast_ttl_check: pick(&self.unicast_ttl_check, &more.unicast_ttl_check),
            virtual_mac: pick(&self.virtual_mac, &more.virtual_mac),
            source: pick(&self.source, &more.source),
            ignore_link_state: pick(&self.ignore_link_state, &more.ignore_link_state),
        }
    }
}

struct Validator<'a> {
    src: &'a str,
    /// Where each line of `src` starts ([`line_starts`]).
    line_starts: Vec<usize>,
    path: &'a Path,
    /// Directory of the file: relative paths in it are relative to this.
    base: &'a Path,
    /// Every virtual address so far, with the line and owner that claimed it.
    seen_addrs: HashMap<IpAddr, (usize, String)>,
    /// Every virtual MAC interface name so far, with its line and owner.
    seen_children: HashMap<String, (usize, String)>,
    /// `allow_readable_password_file`: accept password files other users
    /// can read.
    allow_readable_password_file: bool,
}

impl Validator<'_> {
    fn line(&self, span: &Range<usize>) -> usize {
        let offset = span.start.min(self.src.len());
        self.line_starts.partition_point(|start| *start <= offset)
    }

    /// `file:line: [ctx: ]key: message`.
    fn err(&self, span: &Range<usize>, ctx: &str, key: &str, msg: impl std::fmt::Display) -> Error {
        let mut message = String::new();
        if !ctx.is_empty() {
            message.push_str(ctx);
            message.push_str(": ");
        }
        if !key.is_empty() {
            message.push_str(key);
            message.push_str(": ");
        }
        message.push_str(&msg.to_string());
        Error::Config {
            location: Location {
                path: self.path.to_path_buf(),
                line: Some(self.line(span)),
                col: None,
            },
            message,
        }
    }

    fn resolve(&self, p: &str) -> PathBuf {
        self.base.join(p)
    }

    fn file(mut self, raw: RawFile) -> Result<EngineSpec, Error> {
        let mut top = self.level(raw.common(), "")?;
        top.ignore_link_state = raw.ignore_link_state;

        let mut interfaces = Vec::with_capacity(raw.interface.len());
        let mut names: HashMap<String, usize> = HashMap::new();
        for iface in &raw.interface {
            let span = iface.span();
            let iface = iface.get_ref();
            let name = iface.name.get_ref();
            check_ifname(name)
                .map_err(|m| self.err(&iface.name.span(), "", "interface name", m))?;
            if let Some(first) = names.insert(name.clone(), self.line(&span)) {
                return Err(self.err(
                    &iface.name.span(),
                    "",
                    "interface name",
                    format!("\"{name}\" is already configured at line {first}"),
                ));
            }
            interfaces.push(self.interface(&top, iface)?);
        }
        let mut shares: HashMap<&str, usize> = HashMap::new();
        for ls in &raw.load_sharing {
            let name = ls.get_ref().name.get_ref();
            if let Some(first) = shares.insert(name, self.line(&ls.span())) {
                return Err(self.err(
                    &ls.get_ref().name.span(),
                    "",
                    "load_sharing name",
                    format!("\"{name}\" is already used at line {first}"),
                ));
            }
            self.load_sharing(&top, ls, &mut interfaces)?;
        }
        let trackers = self.trackers(&raw, &interfaces)?;
        Ok(EngineSpec {
            interfaces,
            trackers,
        })
    }

    /// A load-sharing group's VHIDs, added to its interface (created if no
    /// `[[interface]]` names it).
    fn load_sharing(
        &mut self,
        top: &Level,
        raw: &Spanned<RawLoadSharing>,
        interfaces: &mut Vec<InterfaceSpec>,
    ) -> Result<(), Error> {
        let table = raw.span();
        let raw = raw.get_ref();
        let name = raw.name.get_ref().clone();
        let ctx = format!("load_sharing \"{name}\"");
        if name.trim().is_empty() {
            return Err(self.err(&raw.name.span(), "load_sharing", "name", "empty"));
        }
        let ifname = raw.interface.get_ref().clone();
        check_ifname(&ifname).map_err(|m| self.err(&raw.interface.span(), &ctx, "interface", m))?;
        self.rank_settings(raw.advskew.as_ref(), raw.preempt, &table, &ctx)?;

        let mut nodes: Vec<IpAddr> = Vec::new();
        for n in raw.nodes.get_ref() {
            let addr: IpAddr = n.get_ref().parse().map_err(|_| {
                self.err(
                    &n.span(),
                    &ctx,
                    "nodes",
                    format!("{:?} is not an IP address", n.get_ref()),
                )
            })?;
            if nodes.contains(&addr) {
                return Err(self.err(&n.span(), &ctx, "nodes", format!("{addr} is listed twice")));
            }
            nodes.push(addr);
        }
        if !(2..=MAX_SHARE_NODES).contains(&nodes.len()) {
            return Err(self.err(
                &raw.nodes.span(),
                &ctx,
                "nodes",
                format!("{} nodes; a group has 2 to {MAX_SHARE_NODES}", nodes.len()),
            ));
        }
        let this_node = match &raw.this_node {
            Some(me) => match me.get_ref().parse::<IpAddr>() {
                Ok(a) if nodes.contains(&a) => Some(a),
                _ => {
                    return Err(self.err(
                        &me.span(),
                        &ctx,
                        "self",
                        format!("{:?} is not one of the nodes", me.get_ref()),
                    ));
                }
            },
            None => None,
        };
        let level = top.overlay(&self.level(raw.common(), &ctx)?);

        if raw.vhid.is_empty() {
            return Err(self.err(
                &table,
                &ctx,
                "vhid",
                "a load-sharing group needs at least one VHID",
            ));
        }
        let existing: BTreeSet<u8> = interfaces
            .iter()
            .filter(|i| i.name == ifname)
            .flat_map(|i| i.vhids.iter().map(|v| v.vhid))
            .collect();
        let mut ids: BTreeMap<u8, usize> = BTreeMap::new();
        for v in &raw.vhid {
            let id = v.get_ref().id.get_ref();
            let span = v.get_ref().id.span();
            let id = match u8::try_from(*id) {
                Ok(id @ 1..=255) => id,
                _ => {
                    return Err(self.err(
                        &span,
                        &ctx,
                        "vhid id",
                        format!("{id} is not in 1..=255"),
                    ));
                }
            };
            if existing.contains(&id) {
                return Err(self.err(
                    &span,
                    &ctx,
                    "vhid id",
                    format!("vhid {id} is already configured on interface \"{ifname}\""),
                ));
            }
            if let Some(first) = ids.insert(id, self.line(&span)) {
                return Err(self.err(
                    &span,
                    &ctx,
                    "vhid id",
                    format!("vhid {id} is already configured at line {first}"),
                ));
            }
        }
        let ids: Vec<u8> = ids.into_keys().collect();
        let mut orders = share::assignment(&name, &nodes, &ids);
        let mut vhids = Vec::with_capacity(raw.vhid.len());
        for (v, id) in raw.vhid.iter().zip(
            raw.vhid
                .iter()
                .filter_map(|v| u8::try_from(*v.get_ref().id.get_ref()).ok()),
        ) {
            let span = v.span();
            let v = v.get_ref();
            let vctx = format!("{ctx} vhid {id}");
            self.rank_settings(v.advskew.as_ref(), v.preempt, &span, &vctx)?;
            let mut spec = self.vhid(&level, &ifname, id, v, &span)?;
            let mut groups = vec![name.clone()];
            groups.extend(self.group_names(&[raw.groups.as_ref(), v.groups.as_ref()], &vctx)?);
            groups.dedup();
            spec.groups = groups;
            // advskew comes from the rank, found at start
            spec.advskew = 0;
            spec.preempt = true;
            spec.share = Some(ShareSpec {
                group: name.clone(),
                order: orders.remove(&id).unwrap_or_default(),
                this_node,
            });
            vhids.push(spec);
        }
        match interfaces.iter_mut().find(|i| i.name == ifname) {
            Some(i) => i.vhids.extend(vhids),
            None => interfaces.push(InterfaceSpec {
                name: ifname,
                ignore_link_state: top.ignore_link_state.unwrap_or(false),
                vhids,
            }),
        }
        Ok(())
    }

    /// In a load-sharing group the rank sets advskew and preemption is on.
    fn rank_settings(
        &self,
        advskew: Option<&Spanned<i64>>,
        preempt: Option<bool>,
        table: &Range<usize>,
        ctx: &str,
    ) -> Result<(), Error> {
        if let Some(a) = advskew {
            return Err(self.err(
                &a.span(),
                ctx,
                "advskew",
                "set by each node's rank in a load-sharing group; remove it",
            ));
        }
        if preempt == Some(false) {
            return Err(self.err(
                table,
                ctx,
                "preempt",
                "a load-sharing group needs preemption",
            ));
        }
        Ok(())
    }

    /// Interface group names from several lists, in order, each once.
    fn group_names(
        &self,
        lists: &[Option<&Vec<Spanned<String>>>],
        ctx: &str,
    ) -> Result<Vec<String>, Error> {
        let mut out: Vec<String> = Vec::new();
        for g in lists.iter().flatten().flat_map(|l| l.iter()) {
            let name = g.get_ref();
            if name.is_empty() || name.contains(char::is_whitespace) {
                return Err(self.err(
                    &g.span(),
                    ctx,
                    "groups",
                    format!("{name:?} is not a group name"),
                ));
            }
            if !out.contains(name) {
                out.push(name.clone());
            }
        }
        Ok(out)
    }

    /// Every `track` table, with the VHIDs it covers: top-level ones every
    /// VHID or their `groups`; an interface's its group; a load-sharing
    /// group's its VHIDs; a VHID's that VHID.
    fn trackers(
        &self,
        raw: &RawFile,
        interfaces: &[InterfaceSpec],
    ) -> Result<Vec<TrackerSpec>, Error> {
        let known: BTreeSet<&str> = interfaces
            .iter()
            .flat_map(|i| {
                std::iter::once(i.name.as_str()).chain(
                    i.vhids
                        .iter()
                        .flat_map(|v| v.groups.iter().map(String::as_str)),
                )
            })
            .collect();
        let mut out = Vec::new();
        for t in &raw.track {
            let scope = match &t.get_ref().groups {
                None => TrackScope::All,
                Some(groups) => {
                    let names = self.group_names(&[Some(groups)], "track")?;
                    if let Some(g) = groups
                        .iter()
                        .find(|g| !known.contains(g.get_ref().as_str()))
                    {
                        return Err(self.err(
                            &g.span(),
                            "track",
                            "groups",
                            format!("no VHID is in group {:?}", g.get_ref()),
                        ));
                    }
                    TrackScope::Groups(names)
                }
            };
            out.push(self.tracker(t, "", scope)?);
        }
        let vhid_tracks =
            |tables: &[Spanned<RawVhid>], ifname: &str, out: &mut Vec<TrackerSpec>| {
                for v in tables {
                    let Ok(id) = u8::try_from(*v.get_ref().id.get_ref()) else {
                        continue;
                    };
                    let ctx = format!("interface \"{ifname}\" vhid {id}");
                    for t in &v.get_ref().track {
                        let key = VhidKey {
                            interface: ifname.to_string(),
                            vhid: id,
                        };
                        out.push(self.tracker(t, &ctx, TrackScope::Vhid(key))?);
                    }
                }
                Ok::<(), Error>(())
            };
        for iface in &raw.interface {
            let iface = iface.get_ref();
            let name = iface.name.get_ref();
            let ctx = format!("interface \"{name}\"");
            for t in &iface.track {
                out.push(self.tracker(t, &ctx, TrackScope::Groups(vec![name.clone()]))?);
            }
            vhid_tracks(&iface.vhid, name, &mut out)?;
        }
        for ls in &raw.load_sharing {
            let ls = ls.get_ref();
            let name = ls.name.get_ref();
            let ctx = format!("load_sharing \"{name}\"");
            for t in &ls.track {
                out.push(self.tracker(t, &ctx, TrackScope::Groups(vec![name.clone()]))?);
            }
            vhid_tracks(&ls.vhid, ls.interface.get_ref(), &mut out)?;
        }
        Ok(out)
    }

    fn tracker(
        &self,
        t: &Spanned<RawTrack>,
        ctx: &str,
        scope: TrackScope,
    ) -> Result<TrackerSpec, Error> {
        let span = t.span();
        let t = t.get_ref();
        let top_level = ctx.is_empty();
        let ctx = if ctx.is_empty() {
            "track".to_string()
        } else {
            format!("{ctx}: track")
        };
        if !top_level && let Some(g) = t.groups.as_ref().and_then(|g| g.first()) {
            return Err(self.err(
                &g.span(),
                &ctx,
                "groups",
                "only a top-level [[track]] names groups; this one covers the VHIDs of its table",
            ));
        }
        let duration =
            |v: Option<&Spanned<String>>, key: &str| -> Result<Option<Duration>, Error> {
                v.map(|v| match humantime::parse_duration(v.get_ref()) {
                    Ok(d) if !d.is_zero() => Ok(d),
                    Ok(_) => Err(self.err(&v.span(), &ctx, key, "must be greater than zero")),
                    Err(e) => Err(self.err(
                        &v.span(),
                        &ctx,
                        key,
                        format!("{:?}: {e} (write e.g. \"2s\")", v.get_ref()),
                    )),
                })
                .transpose()
            };
        let int = |v: Option<&Spanned<i64>>, key: &str, hi: u32| -> Result<Option<u32>, Error> {
            v.map(|v| match u32::try_from(*v.get_ref()) {
                Ok(n) if (1..=hi).contains(&n) => Ok(n),
                _ => Err(self.err(
                    &v.span(),
                    &ctx,
                    key,
                    format!("{} is not in 1..={hi}", v.get_ref()),
                )),
            })
            .transpose()
        };
        let weight =
            int(t.weight.as_ref(), "weight", 255)?.map(|w| u8::try_from(w).unwrap_or(u8::MAX));
        let only_commands = |kind: &str| -> Result<(), Error> {
            let extra = [
                ("timeout", t.timeout.as_ref().map(Spanned::span)),
                ("rise", t.rise.as_ref().map(Spanned::span)),
                ("fall", t.fall.as_ref().map(Spanned::span)),
            ];
            match extra.into_iter().find_map(|(k, s)| s.map(|s| (k, s))) {
                Some((key, s)) => Err(self.err(
                    &s,
                    &ctx,
                    key,
                    format!("only for command trackers, not {kind}"),
                )),
                None => Ok(()),
            }
        };
        let (kind, weight) = match (&t.link, &t.command, &t.file) {
            (Some(link), None, None) => {
                check_ifname(link.get_ref())
                    .map_err(|m| self.err(&link.span(), &ctx, "link", m))?;
                only_commands("link")?;
                if let Some(i) = &t.interval {
                    return Err(self.err(
                        &i.span(),
                        &ctx,
                        "interval",
                        "a link tracker follows link events; remove it",
                    ));
                }
                (
                    TrackerKind::Link {
                        interface: link.get_ref().clone(),
                    },
                    weight.unwrap_or(DEFAULT_TRACK_WEIGHT),
                )
            }
            (None, Some(command), None) => {
                if command.get_ref().trim().is_empty() {
                    return Err(self.err(&command.span(), &ctx, "command", "empty command"));
                }
                let interval =
                    duration(t.interval.as_ref(), "interval")?.unwrap_or(DEFAULT_CHECK_INTERVAL);
                (
                    TrackerKind::Command {
                        command: command.get_ref().clone(),
                        interval,
                        timeout: duration(t.timeout.as_ref(), "timeout")?.unwrap_or(interval),
                        rise: int(t.rise.as_ref(), "rise", 100)?.unwrap_or(DEFAULT_RISE),
                        fall: int(t.fall.as_ref(), "fall", 100)?.unwrap_or(DEFAULT_FALL),
                    },
                    weight.unwrap_or(DEFAULT_TRACK_WEIGHT),
                )
            }
            (None, None, Some(file)) => {
                if file.get_ref().is_empty() {
                    return Err(self.err(&file.span(), &ctx, "file", "empty path"));
                }
                only_commands("file")?;
                (
                    TrackerKind::File {
                        path: self.resolve(file.get_ref()),
                        interval: duration(t.interval.as_ref(), "interval")?
                            .unwrap_or(DEFAULT_FILE_INTERVAL),
                    },
                    // the file holds the demotion itself
                    weight.unwrap_or(1),
                )
            }
            _ => {
                return Err(self.err(&span, &ctx, "", "set exactly one of link, command and file"));
            }
        };
        Ok(TrackerSpec {
            kind,
            weight,
            scope,
        })
    }

    fn interface(&mut self, top: &Level, raw: &RawInterface) -> Result<InterfaceSpec, Error> {
        let name = raw.name.get_ref().clone();
        let ctx = format!("interface \"{name}\"");
        let mut level = self.level(raw.common(), &ctx)?;
        level.source = raw
            .source
            .as_ref()
            .map(|s| self.source(s, &ctx))
            .transpose()?;
        level.ignore_link_state = raw.ignore_link_state;
        let level = top.overlay(&level);

        let mut ids: BTreeMap<u8, usize> = BTreeMap::new();
        let mut vhids = Vec::with_capacity(raw.vhid.len());
        for v in &raw.vhid {
            let table_span = v.span();
            let v = v.get_ref();
            let id = match u8::try_from(*v.id.get_ref()) {
                Ok(id @ 1..=255) => id,
                _ => {
                    return Err(self.err(
                        &v.id.span(),
                        &ctx,
                        "vhid id",
                        format!("{} is not in 1..=255", v.id.get_ref()),
                    ));
                }
            };
            if let Some(first) = ids.insert(id, self.line(&v.id.span())) {
                return Err(self.err(
                    &v.id.span(),
                    &ctx,
                    "vhid id",
                    format!("vhid {id} is already configured at line {first}"),
                ));
            }
            let mut spec = self.vhid(&level, &name, id, v, &table_span)?;
            spec.groups = self.group_names(&[raw.groups.as_ref(), v.groups.as_ref()], &ctx)?;
            vhids.push(spec);
        }
        Ok(InterfaceSpec {
            name,
            ignore_link_state: level.ignore_link_state.unwrap_or(false),
            vhids,
        })
    }

    fn vhid(
        &mut self,
        inherited: &Level,
        ifname: &str,
        id: u8,
        raw: &RawVhid,
        table: &Range<usize>,
    ) -> Result<VhidSpec, Error> {
        let ctx = format!("interface \"{ifname}\" vhid {id}");
        let mut level = self.level(raw.common(), &ctx)?;
        level.source = raw
            .source
            .as_ref()
            .map(|s| self.source(s, &ctx))
            .transpose()?;
        let l = inherited.overlay(&level);

        let addresses = self.addresses(raw.addresses.as_ref(), table, &ctx)?;

        let auth = l.auth.as_ref().map_or(AuthName::Bsd, |a| a.value);
        let advbase = l.advbase.as_ref().map_or(DEFAULT_ADVBASE, |a| a.value);
        let advskew = l.advskew.as_ref().map_or(DEFAULT_ADVSKEW, |a| a.value);
        // The span to blame for a timing combination: the most specific of
        // the two keys that was written down, else the VHID table.
        let timing_span = l
            .advskew
            .as_ref()
            .or(l.advbase.as_ref())
            .map_or(table.clone(), |a| a.span.clone());
        if advbase == 255 && advskew == 255 {
            return Err(self.err(
                &timing_span,
                &ctx,
                "advbase, advskew",
                "255/255 is the bow-out advertisement and cannot be a VHID's timing",
            ));
        }

        let Some(key) = l.key.clone() else {
            return Err(self.err(
                table,
                &ctx,
                "password",
                "no password: set password, password_file or password_env (here, in the interface or at the top)",
            ));
        };

        let label = match &raw.label {
            Some(label) => {
                check_label(label.get_ref(), ifname)
                    .map_err(|m| self.err(&label.span(), &ctx, "label", m))?;
                if !addresses.iter().any(|a| a.addr.is_ipv4()) {
                    return Err(self.err(
                        &label.span(),
                        &ctx,
                        "label",
                        "labels apply to IPv4 addresses and this VHID has none",
                    ));
                }
                Some(label.get_ref().clone())
            }
            None => None,
        };

        let transport = self.transport(
            &l,
            level.peers.is_some(),
            ifname,
            id,
            &addresses,
            label.as_ref(),
            table,
            &ctx,
        )?;

        if auth == AuthName::Ucarp {
            let auth_span = l.auth.as_ref().map_or(table.clone(), |a| a.span.clone());
            let v4 = addresses.iter().filter(|a| a.addr.is_ipv4()).count();
            let v6 = addresses.len() - v4;
            if v4 != 1 || v6 != 0 {
                let span = raw.addresses.as_ref().map_or(auth_span, |a| a.span());
                return Err(self.err(
                    &span,
                    &ctx,
                    "addresses",
                    format!("auth = \"ucarp\" needs exactly one IPv4 address, got {v4} IPv4 and {v6} IPv6"),
                ));
            }
            let (bytes, origin) = &key.value;
            if bytes.is_empty() {
                return Err(self.err(
                    &key.span,
                    &ctx,
                    "password",
                    format!("{origin} is empty; UCARP peers need one"),
                ));
            }
            if bytes.len() > UCARP_MAX_KEY {
                return Err(self.err(
                    &key.span,
                    &ctx,
                    "password",
                    format!(
                        "{origin} is {} bytes; auth = \"ucarp\" allows at most {UCARP_MAX_KEY}",
                        bytes.len()
                    ),
                ));
            }
            if advbase == 0 && advskew == 0 {
                return Err(self.err(
                    &timing_span,
                    &ctx,
                    "advbase, advskew",
                    "UCARP peers need advbase > 0 or advskew > 0",
                ));
            }
        }

        Ok(VhidSpec {
            vhid: id,
            addresses,
            label,
            key: key.value.0,
            auth: match auth {
                AuthName::Bsd => HmacMode::Bsd,
                AuthName::Ucarp => HmacMode::Ucarp,
            },
            // UCARP and FreeBSD ignore the demote byte; tell them through
            // the advertised skew instead.
            demote_style: match auth {
                AuthName::Bsd => DemoteStyle::Byte,
                AuthName::Ucarp => DemoteStyle::Skew,
            },
            advbase,
            advskew,
            dead_ratio: l.dead_ratio.unwrap_or(DEFAULT_DEAD_RATIO),
            preempt: l.preempt.unwrap_or(false),
            source: l.source,
            group_v4: l.group.unwrap_or(DEFAULT_GROUP),
            broadcast: l.broadcast.unwrap_or(false),
            manage_addresses: l.manage_addresses.unwrap_or(true),
            // off by default: OpenBSD peers send a constant counter
            replay_protection: l.replay_protection.unwrap_or(false),
            hooks: HookSpec {
                up: l.up,
                down: l.down,
                xparam: l.xparam,
                timeout: l.hook_timeout.unwrap_or(DEFAULT_HOOK_TIMEOUT),
                down_at_start: l.down_at_start.unwrap_or(true),
                // carpd removes the addresses on exit, so by default the
                // down hook hears about it.
                down_on_exit: l.down_on_exit.unwrap_or(true),
            },
            groups: Vec::new(),
            share: None,
            transport,
        })
    }

    fn addresses(
        &mut self,
        raw: Option<&Spanned<Vec<Spanned<String>>>>,
        table: &Range<usize>,
        ctx: &str,
    ) -> Result<Vec<VirtualAddr>, Error> {
        let Some(raw) = raw else {
            return Err(self.err(
                table,
                ctx,
                "addresses",
                "missing: a VHID needs at least one address",
            ));
        };
        if raw.get_ref().is_empty() {
            return Err(self.err(
                &raw.span(),
                ctx,
                "addresses",
                "empty: a VHID needs at least one address",
            ));
        }
        let mut out = Vec::with_capacity(raw.get_ref().len());
        for a in raw.get_ref() {
            let text = a.get_ref();
            let va = parse_vaddr(text)
                .map_err(|m| self.err(&a.span(), ctx, "addresses", format!("{text}: {m}")))?;
            let line = self.line(&a.span());
            if let Some((first, owner)) = self.seen_addrs.get(&va.addr) {
                return Err(self.err(
                    &a.span(),
                    ctx,
                    "addresses",
                    format!("{} is already used by {owner} at line {first}", va.addr),
                ));
            }
            self.seen_addrs.insert(va.addr, (line, ctx.to_string()));
            out.push(va);
        }
        Ok(out)
    }

    /// `peers`: unicast addresses, each once.
    fn peers(
        &self,
        raw: &Spanned<Vec<Spanned<String>>>,
        ctx: &str,
    ) -> Result<Vec<At<IpAddr>>, Error> {
        let mut out: Vec<At<IpAddr>> = Vec::with_capacity(raw.get_ref().len());
        for p in raw.get_ref() {
            let text = p.get_ref();
            let addr: IpAddr = text.trim().parse().map_err(|_| {
                self.err(
                    &p.span(),
                    ctx,
                    "peers",
                    format!("{text:?} is not an IP address"),
                )
            })?;
            let unusable = addr.is_unspecified()
                || addr.is_multicast()
                || addr.is_loopback()
                || matches!(addr, IpAddr::V4(a) if a.is_broadcast());
            if unusable {
                return Err(self.err(
                    &p.span(),
                    ctx,
                    "peers",
                    format!("{addr} is not a unicast address"),
                ));
            }
            if let Some(first) = out.iter().find(|a| a.value == addr) {
                return Err(self.err(
                    &p.span(),
                    ctx,
                    "peers",
                    format!(
                        "{addr} is listed twice (first at line {})",
                        self.line(&first.span)
                    ),
                ));
            }
            out.push(At {
                value: addr,
                span: p.span(),
            });
        }
        Ok(out)
    }

    /// Unicast peers and the virtual MAC of one VHID. Peers inherited from
    /// the interface or the top level whose family the VHID does not use
    /// are left out; written in the VHID's own table they are an error.
    #[allow(clippy::too_many_arguments)]
    fn transport(
        &mut self,
        l: &Level,
        own_peers: bool,
        ifname: &str,
        id: u8,
        addresses: &[VirtualAddr],
        label: Option<&String>,
        table: &Range<usize>,
        ctx: &str,
    ) -> Result<TransportSpec, Error> {
        let mut peers = Vec::new();
        if let Some(list) = &l.peers {
            for p in list {
                if addresses.iter().any(|a| a.addr == p.value) {
                    return Err(self.err(
                        &p.span,
                        ctx,
                        "peers",
                        format!("{} is one of the VHID's own addresses", p.value),
                    ));
                }
                if !addresses
                    .iter()
                    .any(|a| a.addr.is_ipv4() == p.value.is_ipv4())
                {
                    if own_peers {
                        let family = if p.value.is_ipv4() { "IPv4" } else { "IPv6" };
                        return Err(self.err(
                            &p.span,
                            ctx,
                            "peers",
                            format!("{} is {family} and the VHID has no {family} address to advertise over it", p.value),
                        ));
                    }
                    continue;
                }
                peers.push(p.value);
            }
            if peers.is_empty() {
                let span = list.first().map_or(table.clone(), |p| p.span.clone());
                return Err(self.err(
                    &span,
                    ctx,
                    "peers",
                    "no peer of an address family the VHID uses",
                ));
            }
            if l.broadcast == Some(true) {
                let span = list.first().map_or(table.clone(), |p| p.span.clone());
                return Err(self.err(
                    &span,
                    ctx,
                    "peers",
                    "broadcast applies to group advertisements, not to unicast peers",
                ));
            }
        }
        let virtual_mac = l.virtual_mac.as_ref().is_some_and(|v| v.value);
        if let Some(At { span, value: true }) = &l.virtual_mac {
            if l.manage_addresses == Some(false) {
                return Err(self.err(
                    span,
                    ctx,
                    "virtual_mac",
                    "the virtual MAC interface holds the addresses: it needs manage_addresses = true",
                ));
            }
            if label.is_some() {
                return Err(self.err(
                    span,
                    ctx,
                    "virtual_mac",
                    "address labels name the parent interface and cannot be combined with virtual_mac",
                ));
            }
            let child = vmac::child_name(ifname, id);
            let line = self.line(span);
            if let Some((first, owner)) = self.seen_children.get(&child) {
                return Err(self.err(
                    span,
                    ctx,
                    "virtual_mac",
                    format!("its interface name {child} is also the one of {owner} (line {first}); rename an interface"),
                ));
            }
            self.seen_children.insert(child, (line, ctx.to_string()));
        }
        Ok(TransportSpec {
            peers,
            unicast_ttl_check: l.unicast_ttl_check.unwrap_or(false),
            virtual_mac,
        })
    }

    fn source(&self, s: &Spanned<String>, ctx: &str) -> Result<IpAddr, Error> {
        match s.get_ref().parse::<Ipv4Addr>() {
            Ok(a) if a.is_unspecified() || a.is_multicast() || a.is_broadcast() => Err(self.err(
                &s.span(),
                ctx,
                "source",
                format!("{a} cannot be a source address"),
            )),
            Ok(a) => Ok(IpAddr::V4(a)),
            Err(_) => Err(self.err(
                &s.span(),
                ctx,
                "source",
                format!("{:?} is not an IPv4 address", s.get_ref()),
            )),
        }
    }

    /// The password from the environment variable `name` (as bytes: the
    /// password is not necessarily UTF-8).
    fn password_env(&self, name: &Spanned<String>, ctx: &str) -> Result<Vec<u8>, Error> {
        let n = name.get_ref();
        if n.is_empty() || n.contains(['=', '\0']) {
            return Err(self.err(
                &name.span(),
                ctx,
                "password_env",
                format!("{n:?} is not an environment variable name"),
            ));
        }
        match std::env::var_os(n) {
            Some(v) => Ok(std::os::unix::ffi::OsStrExt::as_bytes(v.as_os_str()).to_vec()),
            None => Err(self.err(
                &name.span(),
                ctx,
                "password_env",
                format!("the environment variable {n} is not set"),
            )),
        }
    }

    fn control_socket(&self, s: &Spanned<String>) -> Result<PathBuf, Error> {
        let p = Path::new(s.get_ref());
        if !p.is_absolute() {
            return Err(self.err(
                &s.span(),
                "",
                "control_socket",
                format!("{:?} is not an absolute path", s.get_ref()),
            ));
        }
        if s.get_ref().len() > SUN_PATH_MAX {
            return Err(self.err(
                &s.span(),
                "",
                "control_socket",
                format!("longer than the {SUN_PATH_MAX} bytes a socket path can have"),
            ));
        }
        Ok(p.to_path_buf())
    }

    fn control_group(&self, g: &Spanned<String>) -> Result<ControlGroup, Error> {
        let name = g.get_ref();
        let err = |m: String| self.err(&g.span(), "", "control_group", m);
        // A name with a NUL cannot be looked up (and is in no group file).
        if name.is_empty() || name.contains('\0') {
            return Err(err(format!("{name:?} is not a group name")));
        }
        match nix::unistd::Group::from_name(name) {
            Ok(Some(group)) => Ok(ControlGroup {
                name: name.clone(),
                gid: group.gid.as_raw(),
            }),
            Ok(None) => Err(err(format!("no group named {name:?} on this system"))),
            Err(e) => Err(err(format!("cannot look up group {name:?}: {e}"))),
        }
    }

    fn metrics_listen(&self, s: &Spanned<String>) -> Result<SocketAddr, Error> {
        s.get_ref().parse().map_err(|_| {
            self.err(
                &s.span(),
                "metrics",
                "listen",
                format!(
                    "{:?} is not an address:port (e.g. \"127.0.0.1:9750\")",
                    s.get_ref()
                ),
            )
        })
    }

    /// Check the cascading settings written in one table.
    fn level(&self, c: Common<'_>, ctx: &str) -> Result<Level, Error> {
        let int = |v: Option<&Spanned<i64>>, key: &str, lo: u8| -> Result<Option<At<u8>>, Error> {
            v.map(|v| match u8::try_from(*v.get_ref()) {
                Ok(n) if n >= lo => Ok(At {
                    value: n,
                    span: v.span(),
                }),
                _ => Err(self.err(
                    &v.span(),
                    ctx,
                    key,
                    format!("{} is not in {lo}..=255", v.get_ref()),
                )),
            })
            .transpose()
        };

        let given = [
            c.password.map(|p| ("password", p)),
            c.password_file.map(|p| ("password_file", p)),
            c.password_env.map(|p| ("password_env", p)),
        ];
        let mut given = given.iter().flatten();
        if let (Some((first, at)), Some((second, _))) = (given.next(), given.next()) {
            return Err(self.err(
                &at.span(),
                ctx,
                first,
                format!("set only one of password, password_file and password_env, not {first} and {second}"),
            ));
        }
        let key = match (c.password, c.password_file) {
            (Some(p), _) => Some(At {
                value: (p.get_ref().as_bytes().to_vec(), "the password".to_string()),
                span: p.span(),
            }),
            (None, Some(f)) => {
                let path = self.resolve(f.get_ref());
                let file = read_password_file(&path).map_err(|e| {
                    self.err(
                        &f.span(),
                        ctx,
                        "password_file",
                        format!("{}: {}", path.display(), e),
                    )
                })?;
                if !self.allow_readable_password_file
                    && let Some(exposed) = exposure(file.mode)
                {
                    return Err(self.err(
                        &f.span(),
                        ctx,
                        "password_file",
                        format!(
                            "{} is mode {:04o}: {exposed}; run chmod 600 on it (in Kubernetes, \
                             give the Secret volume defaultMode: 0400) or set \
                             allow_readable_password_file = true",
                            path.display(),
                            file.mode
                        ),
                    ));
                }
                Some(At {
                    value: (file.key, format!("the password in {}", path.display())),
                    span: f.span(),
                })
            }
            (None, None) => match c.password_env {
                Some(name) => Some(At {
                    value: (
                        self.password_env(name, ctx)?,
                        format!("the password in ${}", name.get_ref()),
                    ),
                    span: name.span(),
                }),
                None => None,
            },
        };

        let hook_timeout = c
            .hook_timeout
            .map(|t| match humantime::parse_duration(t.get_ref()) {
                Ok(d) if !d.is_zero() => Ok(d),
                Ok(_) => Err(self.err(&t.span(), ctx, "hook_timeout", "must be greater than zero")),
                Err(e) => Err(self.err(
                    &t.span(),
                    ctx,
                    "hook_timeout",
                    format!("{:?}: {e} (write e.g. \"10s\")", t.get_ref()),
                )),
            })
            .transpose()?;

        let group = c
            .group
            .map(|g| match g.get_ref().parse::<Ipv4Addr>() {
                Ok(a) if a.is_multicast() => Ok(a),
                Ok(a) => Err(self.err(
                    &g.span(),
                    ctx,
                    "group",
                    format!("{a} is not an IPv4 multicast address"),
                )),
                Err(_) => Err(self.err(
                    &g.span(),
                    ctx,
                    "group",
                    format!("{:?} is not an IPv4 address", g.get_ref()),
                )),
            })
            .transpose()?;

        let script = |s: Option<&Spanned<String>>, key: &str| -> Result<Option<PathBuf>, Error> {
            s.map(|s| {
                if s.get_ref().is_empty() {
                    Err(self.err(&s.span(), ctx, key, "empty command path"))
                } else {
                    Ok(self.resolve(s.get_ref()))
                }
            })
            .transpose()
        };

        Ok(Level {
            advbase: int(c.advbase, "advbase", 0)?,
            advskew: int(c.advskew, "advskew", 0)?,
            dead_ratio: int(c.dead_ratio, "dead_ratio", 1)?.map(|a| a.value),
            preempt: c.preempt,
            key,
            auth: c.auth.map(|a| At {
                value: *a.get_ref(),
                span: a.span(),
            }),
            hook_timeout,
            up: script(c.up, "up")?,
            down: script(c.down, "down")?,
            xparam: c.xparam.map(str::to_string),
            down_at_start: c.down_at_start,
            down_on_exit: c.down_on_exit,
            group,
            broadcast: c.broadcast,
            manage_addresses: c.manage_addresses,
            replay_protection: c.replay_protection,
            peers: c.peers.map(|p| self.peers(p, ctx)).transpose()?,
            unicast_ttl_check: c.unicast_ttl_check,
            virtual_mac: c.virtual_mac.map(|v| At {
                value: *v.get_ref(),
                span: v.span(),
            }),
            source: None,
            ignore_link_state: None,
        })
    }
}

/// Longest first line read from a password file: far more than any key
/// (only 19 bytes count), and a bound for a file like `/dev/zero`.
const MAX_PASSWORD_LINE: u64 = 64 * 1024;

/// A password file's first line and its permission bits.
#[derive(Debug)]
pub struct PasswordFile {
    pub key: Vec<u8>,
    /// `st_mode & 0o7777` of the file read (after symlinks).
    pub mode: u32,
}

/// The first line of a password file, without its line ending (as UCARP's
/// `--passfile` reads it), and the mode of the file it came from.
pub fn read_password_file(path: &Path) -> std::io::Result<PasswordFile> {
    use std::io::{BufRead, Read};
    use std::os::unix::fs::PermissionsExt;
    let file = std::fs::File::open(path)?;
    // The mode of the file actually read, not of whatever the path names
    // a moment later.
    let mode = file.metadata()?.permissions().mode() & 0o7777;
    let mut line = Vec::new();
    std::io::BufReader::new(file)
        .take(MAX_PASSWORD_LINE + 1)
        .read_until(b'\n', &mut line)?;
    if line.strip_suffix(b"\n").unwrap_or(&line).len() as u64 > MAX_PASSWORD_LINE {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("the first line is longer than {MAX_PASSWORD_LINE} bytes"),
        ));
    }
    let line = line.strip_suffix(b"\n").unwrap_or(&line);
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    Ok(PasswordFile {
        key: line.to_vec(),
        mode,
    })
}

/// Who else a password file with permission bits `mode` is open to, if
/// anyone: any group or other bit counts (write access lets the password be
/// replaced).
pub fn exposure(mode: u32) -> Option<&'static str> {
    match (mode & 0o070 != 0, mode & 0o007 != 0) {
        (false, false) => None,
        (true, false) => Some("its group can access it"),
        (false, true) => Some("every user can access it"),
        (true, true) => Some("its group and every user can access it"),
    }
}

/// `addr[/prefix]`; the prefix defaults to a host route (/32, /128).
pub fn parse_vaddr(s: &str) -> Result<VirtualAddr, String> {
    let (addr, prefix) = match s.split_once('/') {
        Some((a, p)) => (a, Some(p)),
        None => (s, None),
    };
    let addr: IpAddr = addr
        .trim()
        .parse()
        .map_err(|_| "not an IP address".to_string())?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let prefix_len = match prefix {
        None => max,
        Some(p) => {
            let n: u32 = p
                .trim()
                .parse()
                .map_err(|_| format!("prefix length {p:?} is not a number"))?;
            if n > u32::from(max) {
                return Err(format!("prefix length {n} > {max}"));
            }
            n as u8
        }
    };
    if addr.is_unspecified() || addr.is_multicast() || addr.is_loopback() {
        return Err("not usable as a virtual address (unspecified, multicast or loopback)".into());
    }
    if let IpAddr::V4(v4) = addr {
        if v4.is_broadcast() {
            return Err("not usable as a virtual address (broadcast)".into());
        }
    }
    Ok(VirtualAddr { addr, prefix_len })
}

fn check_ifname(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("empty".into());
    }
    if name.len() > IFNAMSIZ_MAX {
        return Err(format!("{name:?} is longer than {IFNAMSIZ_MAX} bytes"));
    }
    // What the kernel's dev_valid_name refuses.
    if name == "."
        || name == ".."
        || name.contains(|c: char| c == '/' || c == ':' || c.is_whitespace())
    {
        return Err(format!("{name:?} is not a valid interface name"));
    }
    Ok(())
}

/// iproute2's rule: the label is the interface name or starts with
/// `<interface>:`.
fn check_label(label: &str, ifname: &str) -> Result<(), String> {
    if label.len() > IFNAMSIZ_MAX {
        return Err(format!("{label:?} is longer than {IFNAMSIZ_MAX} bytes"));
    }
    if label != ifname
        && !label
            .strip_prefix(ifname)
            .is_some_and(|rest| rest.starts_with(':'))
    {
        return Err(format!(
            "{label:?} must be \"{ifname}\" or start with \"{ifname}:\""
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "/etc/test.toml";

    fn load(src: &str) -> Result<Config, Error> {
        Config::from_toml(src, Path::new(FILE))
    }

    fn err(src: &str) -> String {
        match load(src) {
            Ok(c) => panic!("accepted: {c:?}"),
            Err(e) => e.to_string(),
        }
    }

    /// Each `source(body)` is refused with an error that starts with
    /// `FILE:` and the expected line, key and message.
    fn assert_refused(cases: &[(&str, &str)], source: impl Fn(&str) -> String) {
        for (body, want) in cases {
            let got = err(&source(body));
            let want = format!("{FILE}:{want}");
            assert!(
                got.starts_with(&want),
                "for {body:?}\n got: {got}\nwant: {want}"
            );
        }
    }

    /// Found by the config fuzz target: a multi-byte character before a key
    /// with a type error must not split a character when naming the key.
    #[test]
    fn key_after_multibyte_character() {
        let e = err("password = \"pw\"\néadvbase = \"x\"\n");
        assert!(e.starts_with("/etc/test.toml:2:"), "{e}");
        assert_eq!(key_at("é=1", 2), None);
        assert_eq!(key_at("xé advbase = 1", 14), Some("advbase"));
    }

    fn one_vhid(src: &str) -> VhidSpec {
        let c = load(src).unwrap();
        assert_eq!(c.vhid_count(), 1);
        c.spec.interfaces[0].vhids[0].clone()
    }

    /// A unique scratch directory, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(tag: &str) -> TempDir {
            use std::sync::atomic::{AtomicUsize, Ordering};
            static N: AtomicUsize = AtomicUsize::new(0);
            let n = N.fetch_add(1, Ordering::Relaxed);
            let dir =
                std::env::temp_dir().join(format!("carpd-config-{tag}-{}-{n}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            TempDir(dir)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    const MINIMAL: &str = r#"
password = "pw"
[[interface]]
name = "eth0"
  [[interface.vhid]]
  id = 7
  addresses = ["192.0.2.1"]
"#;

    #[test]
    fn every_shipped_config_is_valid() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config");
        let mut n = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "toml") {
                let c = Config::load(&path).unwrap_or_else(|e| panic!("{e}"));
                assert!(c.vhid_count() > 0, "{} has no VHID", path.display());
                n += 1;
            }
        }
        assert!(n >= 2, "expected the example files in {}", dir.display());
    }

    #[test]
    fn unicast_peers_and_virtual_mac() {
        let src = r#"
password = "pw"
peers = ["10.0.0.2", "fe80::2"]
[[interface]]
name = "eth0"
  [[interface.vhid]]
  id = 1
  addresses = ["10.0.0.100/24"]
  [[interface.vhid]]
  id = 2
  addresses = ["2001:db8::100/64"]
  unicast_ttl_check = true
  virtual_mac = true
  [[interface.vhid]]
  id = 3
  addresses = ["10.0.0.101/24"]
  peers = []
"#;
        let c = load(src);
        // an explicitly empty list is refused
        assert!(
            c.unwrap_err()
                .to_string()
                .contains("vhid 3: peers: no peer of an address family")
        );
        let c = load(&src.replace("  peers = []\n", "  peers = [\"10.0.0.3\", \"10.0.0.4\"]\n"))
            .unwrap();
        let v = &c.spec.interfaces[0].vhids;
        // inherited peers of a family the VHID does not use are left out
        assert_eq!(
            v[0].transport.peers,
            ["10.0.0.2".parse::<IpAddr>().unwrap()]
        );
        assert!(!v[0].transport.unicast_ttl_check && !v[0].transport.virtual_mac);
        assert_eq!(v[1].transport.peers, ["fe80::2".parse::<IpAddr>().unwrap()]);
        assert!(v[1].transport.unicast_ttl_check && v[1].transport.virtual_mac);
        assert_eq!(v[2].transport.peers.len(), 2);
        // multicast by default
        assert!(!one_vhid(MINIMAL).transport.unicast());

        let vhid = |body: &str| {
            format!(
                "password = \"pw\"\n[[interface]]\nname = \"eth0\"\n  [[interface.vhid]]\n  id = 1\n  addresses = [\"10.0.0.1\"]\n{body}"
            )
        };
        let cases: &[(&str, &str)] = &[
            (
                "  peers = [\"10.0.0.2\", \"10.0.0.2\"]\n",
                "7: interface \"eth0\" vhid 1: peers: 10.0.0.2 is listed twice (first at line 7)",
            ),
            (
                "  peers = [\"10.0.0.1\"]\n",
                "7: interface \"eth0\" vhid 1: peers: 10.0.0.1 is one of the VHID's own addresses",
            ),
            (
                "  peers = [\"fe80::1\"]\n",
                "7: interface \"eth0\" vhid 1: peers: fe80::1 is IPv6 and the VHID has no IPv6 address",
            ),
            (
                "  peers = [\"224.0.0.18\"]\n",
                "7: interface \"eth0\" vhid 1: peers: 224.0.0.18 is not a unicast address",
            ),
            (
                "  peers = [\"peer\"]\n",
                "7: interface \"eth0\" vhid 1: peers: \"peer\" is not an IP address",
            ),
            (
                "  peers = [\"10.0.0.2\"]\n  broadcast = true\n",
                "7: interface \"eth0\" vhid 1: peers: broadcast applies to group",
            ),
            (
                "  virtual_mac = true\n  manage_addresses = false\n",
                "7: interface \"eth0\" vhid 1: virtual_mac: the virtual MAC interface holds",
            ),
            (
                "  virtual_mac = true\n  label = \"eth0:v\"\n",
                "7: interface \"eth0\" vhid 1: virtual_mac: address labels",
            ),
        ];
        assert_refused(cases, vhid);
        // two long interface names whose children would share a name
        let e = err(
            "password = \"pw\"\nvirtual_mac = true\n[[interface]]\nname = \"verylongname012\"\n  [[interface.vhid]]\n  id = 1\n  addresses = [\"10.0.0.1\"]\n[[interface]]\nname = \"verylongname013\"\n  [[interface.vhid]]\n  id = 1\n  addresses = [\"10.0.0.2\"]\n",
        );
        assert!(
            e.contains("vhid 1: virtual_mac: its interface name verylongname.c1 is also the one of interface \"verylongname012\" vhid 1 (line 2)"),
            "{e}"
        );
    }

    #[test]
    fn replay_protection_cascades() {
        let c = load(
            r#"
password = "pw"
replay_protection = true
[[interface]]
name = "eth0"
  [[interface.vhid]]
  id = 7
  addresses = ["192.0.2.1"]
  [[interface.vhid]]
  id = 8
  addresses = ["192.0.2.2"]
  replay_protection = false
"#,
        )
        .unwrap();
        let v = &c.spec.interfaces[0].vhids;
        assert!(v[0].replay_protection);
        assert!(!v[1].replay_protection);
        assert!(err("replay_protection = 1\n").contains("replay_protection"));
    }

    #[test]
    fn defaults() {
        let v = one_vhid(MINIMAL);
        assert_eq!(v.vhid, 7);
        assert_eq!(
            v.addresses,
            vec![VirtualAddr {
                addr: "192.0.2.1".parse().unwrap(),
                prefix_len: 32
            }]
        );
        assert_eq!(v.key, b"pw");
        assert_eq!(v.auth, HmacMode::Bsd);
        assert_eq!(v.demote_style, DemoteStyle::Byte);
        assert_eq!((v.advbase, v.advskew, v.dead_ratio), (1, 0, 3));
        assert!(!v.preempt && !v.broadcast && v.manage_addresses);
        assert!(!v.replay_protection);
        assert_eq!(v.source, None);
        assert_eq!(v.label, None);
        assert_eq!(v.group_v4, DEFAULT_GROUP);
        assert_eq!(
            v.hooks,
            HookSpec {
                up: None,
                down: None,
                xparam: None,
                timeout: Duration::from_secs(10),
                down_at_start: true,
                down_on_exit: true,
            }
        );
        let c = load(MINIMAL).unwrap();
        assert!(!c.spec.interfaces[0].ignore_link_state);
        assert_eq!(c.summary(), "1 interface, 1 VHID");
        // The password never shows in debug output.
        assert!(!format!("{c:?}").contains("\"pw\""));
    }

    #[test]
    fn settings_cascade() {
        let c = load(
            r#"
advbase = 2
advskew = 5
dead_ratio = 4
preempt = true
password = "top"
hook_timeout = "1500ms"
up = "/bin/up"
xparam = "x"
group = "239.1.2.3"
ignore_link_state = true

[[interface]]
name = "eth0"
advskew = 20
source = "192.0.2.9"
broadcast = true
  [[interface.vhid]]
  id = 1
  addresses = ["192.0.2.1/24", "2001:db8::1"]
  [[interface.vhid]]
  id = 2
  addresses = ["192.0.2.2/24"]
  advskew = 30
  preempt = false
  password = "vhid"
  source = "192.0.2.10"
  down = "down.sh"
  manage_addresses = false
  down_at_start = false
  down_on_exit = false

[[interface]]
name = "eth1"
ignore_link_state = false
  [[interface.vhid]]
  id = 1
  addresses = ["198.51.100.1/24"]
  auth = "ucarp"
"#,
        )
        .unwrap();
        assert_eq!(c.summary(), "2 interfaces, 3 VHIDs");
        let eth0 = &c.spec.interfaces[0];
        assert!(eth0.ignore_link_state);
        let (a, b) = (&eth0.vhids[0], &eth0.vhids[1]);

        assert_eq!(
            (a.advbase, a.advskew, a.dead_ratio, a.preempt),
            (2, 20, 4, true)
        );
        assert_eq!(a.key, b"top");
        assert_eq!(a.source, Some("192.0.2.9".parse().unwrap()));
        assert_eq!(a.group_v4, Ipv4Addr::new(239, 1, 2, 3));
        assert!(a.broadcast && a.manage_addresses);
        assert_eq!(a.hooks.timeout, Duration::from_millis(1500));
        assert_eq!(a.hooks.up, Some(PathBuf::from("/bin/up")));
        assert_eq!(a.hooks.xparam.as_deref(), Some("x"));
        assert_eq!(
            a.addresses[1],
            VirtualAddr {
                addr: "2001:db8::1".parse().unwrap(),
                prefix_len: 128
            }
        );

        assert_eq!((b.advbase, b.advskew, b.preempt), (2, 30, false));
        assert_eq!(b.key, b"vhid");
        assert_eq!(b.source, Some("192.0.2.10".parse().unwrap()));
        // Relative to the file's directory.
        assert_eq!(b.hooks.down, Some(PathBuf::from("/etc/down.sh")));
        assert!(!b.manage_addresses && !b.hooks.down_at_start && !b.hooks.down_on_exit);

        let eth1 = &c.spec.interfaces[1];
        assert!(!eth1.ignore_link_state);
        let u = &eth1.vhids[0];
        assert_eq!(
            (u.auth, u.demote_style),
            (HmacMode::Ucarp, DemoteStyle::Skew)
        );
        assert_eq!((u.advskew, u.source, u.broadcast), (5, None, false));
    }

    #[test]
    fn password_files() {
        let dir = TempDir::new("pw");
        std::fs::write(dir.0.join("secret"), "s3cret\r\nsecond line\n").unwrap();
        std::fs::write(dir.0.join("vhid"), "other").unwrap();
        for f in ["secret", "vhid"] {
            use std::os::unix::fs::PermissionsExt;
            let private = std::fs::Permissions::from_mode(0o600);
            std::fs::set_permissions(dir.0.join(f), private).unwrap();
        }
        let src = r#"
password_file = "secret"
[[interface]]
name = "eth0"
  [[interface.vhid]]
  id = 1
  addresses = ["192.0.2.1"]
  [[interface.vhid]]
  id = 2
  addresses = ["192.0.2.2"]
  password_file = "vhid"
  [[interface.vhid]]
  id = 3
  addresses = ["192.0.2.3"]
  password = "inline"
"#;
        let c = Config::from_toml(src, &dir.0.join("carpd.toml")).unwrap();
        let keys: Vec<&[u8]> = c.spec.interfaces[0]
            .vhids
            .iter()
            .map(|v| v.key.as_slice())
            .collect();
        assert_eq!(keys, [&b"s3cret"[..], b"other", b"inline"]);

        // A file that cannot be read: the error names the config line, the
        // key and the password file.
        let e = Config::from_toml(
            "\n\npassword_file = \"missing\"\n",
            &dir.0.join("carpd.toml"),
        )
        .unwrap_err();
        let missing = dir.0.join("missing");
        let want = format!(
            "{}:3: password_file: {}: ",
            dir.0.join("carpd.toml").display(),
            missing.display()
        );
        assert!(e.to_string().starts_with(&want), "{e}");
        // A directory is not a password file, even for root.
        let e =
            Config::from_toml("password_file = \".\"\n", &dir.0.join("carpd.toml")).unwrap_err();
        assert!(e.to_string().contains(":1: password_file: "), "{e}");
    }

    #[test]
    fn password_files_open_to_others_are_refused_unless_allowed() {
        use std::os::unix::fs::PermissionsExt;
        let dir = TempDir::new("pwmode");
        let secret = dir.0.join("secret");
        std::fs::write(&secret, "s3cret-value\n").unwrap();
        let path = dir.0.join("carpd.toml");
        let src = MINIMAL.replace("password = \"pw\"", "password_file = \"secret\"");
        let chmod = |mode| {
            std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(mode)).unwrap()
        };
        for (mode, who) in [
            (0o644, "its group and every user can access it"),
            (0o640, "its group can access it"),
            (0o620, "its group can access it"),
            (0o604, "every user can access it"),
            (0o602, "every user can access it"),
        ] {
            chmod(mode);
            let e = Config::from_toml(&src, &path).unwrap_err().to_string();
            assert_eq!(
                e,
                format!(
                    "{}:2: password_file: {} is mode {mode:04o}: {who}; run chmod 600 on it (in \
                     Kubernetes, give the Secret volume defaultMode: 0400) or set \
                     allow_readable_password_file = true",
                    path.display(),
                    secret.display()
                )
            );
            assert!(!e.contains("s3cret-value"));
            let allowed = format!("allow_readable_password_file = true\n{src}");
            assert_eq!(
                Config::from_toml(&allowed, &path).unwrap().spec.interfaces[0].vhids[0].key,
                b"s3cret-value"
            );
        }
        for mode in [0o600, 0o400, 0o700] {
            chmod(mode);
            Config::from_toml(&src, &path).unwrap();
        }
        assert_eq!(exposure(0o4700), None);
    }

    #[test]
    fn a_bounded_first_line() {
        let dir = TempDir::new("pwlong");
        let f = dir.0.join("long");
        let line = vec![b'x'; usize::try_from(MAX_PASSWORD_LINE).unwrap()];
        std::fs::write(&f, [&line[..], b"\nrest"].concat()).unwrap();
        assert_eq!(read_password_file(&f).unwrap().key, line);
        std::fs::write(&f, [&line[..], b"y"].concat()).unwrap();
        let e = read_password_file(&f).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::InvalidData);
        // A device that never ends is cut, not read forever.
        assert!(read_password_file(Path::new("/dev/zero")).is_err());
    }

    #[test]
    fn errors_never_quote_the_password() {
        for (src, want) in [
            (
                "password = 918273645\n",
                "/etc/test.toml:1:12: password: invalid type: integer, expected a string",
            ),
            (
                "password = true\n",
                "/etc/test.toml:1:12: password: invalid type: boolean, expected a string",
            ),
            (
                "password = 91827.3645\n",
                "/etc/test.toml:1:12: password: invalid type: floating point, expected a string",
            ),
            (
                "[[interface]]\nname = \"eth0\"\n  [[interface.vhid]]\n  id = 1\n  password = 918273645\n",
                "/etc/test.toml:5:14: password: invalid type: integer, expected a string",
            ),
            (
                "x.password = 918273645\n",
                "/etc/test.toml:1:1: unknown field `x`, expected one of",
            ),
        ] {
            let e = err(src);
            assert!(e.starts_with(want), "{e}");
            assert!(!e.contains("918273645") && !e.contains("91827.3645"), "{e}");
        }
        // Syntax errors on the password line: the position, not the text.
        for src in [
            "password = s3cr3tvalue\n",
            "password = \"s3cr3tvalue\n",
            "password = 's3cr3tvalue\n",
            "password = \"s3cr3tvalue\" junk\n",
            "password = \"s3cr3tvalue\\q\"\n",
            "password = \"\"\"s3cr3tvalue\n",
            "password = [\"s3cr3tvalue\"]\n",
            "password = { v = \"s3cr3tvalue\" }\n",
            "password = \"s3cr3tvalue\"\npassword = \"s3cr3tvalue\"\n",
        ] {
            let e = err(src);
            assert!(e.starts_with("/etc/test.toml:"), "{e}");
            assert!(!e.contains("s3cr3tvalue"), "{e}");
        }
        // The value of other keys is still quoted.
        assert!(err("advbase = true\n").contains("boolean `true`"));
        assert_eq!(
            without_value("invalid type: string \"x\", expected a u8"),
            "invalid type: string, expected a u8"
        );
        assert_eq!(without_value("duplicate key"), "duplicate key");
    }

    #[test]
    fn control_group() {
        // Group 0 exists everywhere; its name varies.
        let root = nix::unistd::Group::from_gid(nix::unistd::Gid::from_raw(0))
            .unwrap()
            .unwrap()
            .name;
        let c = load(&format!("control_group = {root:?}\n{MINIMAL}")).unwrap();
        assert_eq!(
            c.control_group,
            Some(ControlGroup {
                name: root.clone(),
                gid: 0
            })
        );
        assert_eq!(load(MINIMAL).unwrap().control_group, None);
        assert_eq!(
            err(&format!(
                "control_group = \"carpd-no-such-group\"\n{MINIMAL}"
            )),
            "/etc/test.toml:1: control_group: no group named \"carpd-no-such-group\" on this system"
        );
        assert_eq!(
            err(&format!("control_group = \"\"\n{MINIMAL}")),
            "/etc/test.toml:1: control_group: \"\" is not a group name"
        );
    }

    #[test]
    fn labels() {
        let with =
            |label: &str| load(&MINIMAL.replace("id = 7", &format!("id = 7\n  label = {label:?}")));
        assert_eq!(
            with("eth0").unwrap().spec.interfaces[0].vhids[0]
                .label
                .as_deref(),
            Some("eth0")
        );
        assert_eq!(
            with("eth0:vip1").unwrap().spec.interfaces[0].vhids[0]
                .label
                .as_deref(),
            Some("eth0:vip1")
        );
        for bad in ["eth1:x", "eth0x", "eth0:0123456789a", ""] {
            let e = with(bad).unwrap_err().to_string();
            assert!(
                e.starts_with("/etc/test.toml:7: interface \"eth0\" vhid 7: label: "),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn durations() {
        let with = |t: &str| load(&format!("hook_timeout = {t:?}\n{MINIMAL}"));
        assert_eq!(
            with("2m").unwrap().spec.interfaces[0].vhids[0]
                .hooks
                .timeout,
            Duration::from_secs(120)
        );
        assert_eq!(
            with("250ms").unwrap().spec.interfaces[0].vhids[0]
                .hooks
                .timeout,
            Duration::from_millis(250)
        );
        assert!(
            with("0s")
                .unwrap_err()
                .to_string()
                .starts_with("/etc/test.toml:1: hook_timeout: must be")
        );
        assert!(
            with("soon")
                .unwrap_err()
                .to_string()
                .starts_with("/etc/test.toml:1: hook_timeout: \"soon\"")
        );
    }

    /// Every invalid value is reported with the file, its line and its key.
    #[test]
    fn errors_name_file_line_and_key() {
        let cases: &[(&str, &str)] = &[
            // Syntax and types, from the TOML parser: file:line:col.
            ("password = \"x\" junk\n", "/etc/test.toml:1:16: "),
            (
                "password = \"x\"\nadvbase = \"1\"\n",
                "/etc/test.toml:2:11: advbase: invalid type: string \"1\", expected an integer",
            ),
            (
                "password = \"x\"\n\nbogus = 1\n",
                "/etc/test.toml:3:1: unknown field `bogus`",
            ),
            (
                "[[interface]]\nname = \"eth0\"\n  [[interface.vhid]]\n  id = 1\n  adresses = []\n",
                "/etc/test.toml:5:3: unknown field `adresses`",
            ),
            (
                "[[interface]]\nname = 5\n",
                "/etc/test.toml:2:8: name: invalid type: integer `5`, expected a string",
            ),
            (
                "auth = \"md5\"\n",
                "/etc/test.toml:1:8: auth: unknown variant `md5`, expected `bsd` or `ucarp`",
            ),
            (
                "[[interface]]\n[[interface.vhid]]\nid = 1\n",
                "/etc/test.toml:1:1: missing field `name`",
            ),
            (
                "preempt = 1\n",
                "/etc/test.toml:1:11: preempt: invalid type: integer `1`, expected a boolean",
            ),
            // Values, from validation: file:line: [where:] key: problem.
            (
                "advbase = 256\n",
                "/etc/test.toml:1: advbase: 256 is not in 0..=255",
            ),
            (
                "\nadvskew = -1\n",
                "/etc/test.toml:2: advskew: -1 is not in 0..=255",
            ),
            (
                "dead_ratio = 0\n",
                "/etc/test.toml:1: dead_ratio: 0 is not in 1..=255",
            ),
            (
                "password = \"a\"\npassword_file = \"b\"\n",
                "/etc/test.toml:1: password: set only one of password, password_file and password_env, not password and password_file",
            ),
            (
                "group = \"10.0.0.1\"\n",
                "/etc/test.toml:1: group: 10.0.0.1 is not an IPv4 multicast address",
            ),
            (
                "group = \"nope\"\n",
                "/etc/test.toml:1: group: \"nope\" is not an IPv4 address",
            ),
            ("up = \"\"\n", "/etc/test.toml:1: up: empty command path"),
            (
                "[[interface]]\nname = \"eth0/x\"\n",
                "/etc/test.toml:2: interface name: \"eth0/x\" is not a valid interface name",
            ),
            (
                "[[interface]]\nname = \"a-very-long-name0\"\n",
                "/etc/test.toml:2: interface name: \"a-very-long-name0\" is longer than 15 bytes",
            ),
            (
                "[[interface]]\nname = \"eth0\"\n[[interface]]\nname = \"eth0\"\n",
                "/etc/test.toml:4: interface name: \"eth0\" is already configured at line 1",
            ),
            (
                "[[interface]]\nname = \"eth0\"\nsource = \"2001:db8::1\"\n",
                "/etc/test.toml:3: interface \"eth0\": source: \"2001:db8::1\" is not an IPv4 address",
            ),
            (
                "[[interface]]\nname = \"eth0\"\nadvskew = 999\n",
                "/etc/test.toml:3: interface \"eth0\": advskew: 999 is not in 0..=255",
            ),
        ];
        for (src, want) in cases {
            let got = err(src);
            assert!(
                got.starts_with(want),
                "for {src:?}\n got: {got}\nwant: {want}"
            );
            assert!(!got.contains('\n'), "multi-line: {got}");
        }
    }

    #[test]
    fn vhid_errors() {
        let vhid = |body: &str| {
            format!(
                "password = \"pw\"\n[[interface]]\nname = \"eth0\"\n  [[interface.vhid]]\n  id = 1\n{body}"
            )
        };
        let cases: &[(&str, &str)] = &[
            (
                "  addresses = [\"10.0.0.1/33\"]\n",
                "6: interface \"eth0\" vhid 1: addresses: 10.0.0.1/33: prefix length 33 > 32",
            ),
            (
                "  addresses = [\"2001:db8::1/129\"]\n",
                "6: interface \"eth0\" vhid 1: addresses: 2001:db8::1/129: prefix length 129 > 128",
            ),
            (
                "  addresses = [\"10.0.0.1/x\"]\n",
                "6: interface \"eth0\" vhid 1: addresses: 10.0.0.1/x: prefix length \"x\" is not a number",
            ),
            (
                "  addresses = [\"10.0.0.300\"]\n",
                "6: interface \"eth0\" vhid 1: addresses: 10.0.0.300: not an IP address",
            ),
            (
                "  addresses = [\"224.0.0.1\"]\n",
                "6: interface \"eth0\" vhid 1: addresses: 224.0.0.1: not usable",
            ),
            (
                "  addresses = [\"127.0.0.1\"]\n",
                "6: interface \"eth0\" vhid 1: addresses: 127.0.0.1: not usable",
            ),
            (
                "  addresses = [\"0.0.0.0\"]\n",
                "6: interface \"eth0\" vhid 1: addresses: 0.0.0.0: not usable",
            ),
            (
                "  addresses = []\n",
                "6: interface \"eth0\" vhid 1: addresses: empty",
            ),
            ("", "4: interface \"eth0\" vhid 1: addresses: missing"),
            (
                "  addresses = [\"10.0.0.1\",\n    \"10.0.0.1/24\"]\n",
                "7: interface \"eth0\" vhid 1: addresses: 10.0.0.1 is already used by interface \"eth0\" vhid 1 at line 6",
            ),
            (
                "  addresses = [\"10.0.0.1\"]\n  [[interface.vhid]]\n  id = 1\n  addresses = [\"10.0.0.2\"]\n",
                "8: interface \"eth0\": vhid id: vhid 1 is already configured at line 5",
            ),
            (
                "  addresses = [\"10.0.0.1\"]\n[[interface]]\nname = \"eth1\"\n  [[interface.vhid]]\n  id = 1\n  addresses = [\"10.0.0.1\"]\n",
                "11: interface \"eth1\" vhid 1: addresses: 10.0.0.1 is already used by interface \"eth0\" vhid 1 at line 6",
            ),
            (
                "  addresses = [\"10.0.0.1\"]\n  label = \"eth0:v\"\n  id2 = 3\n",
                "8:3: unknown field `id2`",
            ),
            (
                "  addresses = [\"2001:db8::1\"]\n  label = \"eth0:v\"\n",
                "7: interface \"eth0\" vhid 1: label: labels apply to IPv4",
            ),
            (
                "  addresses = [\"10.0.0.1\"]\n  advbase = 255\n  advskew = 255\n",
                "8: interface \"eth0\" vhid 1: advbase, advskew: 255/255 is the bow-out",
            ),
            (
                "  addresses = [\"10.0.0.1\", \"10.0.0.2\"]\n  auth = \"ucarp\"\n",
                "6: interface \"eth0\" vhid 1: addresses: auth = \"ucarp\" needs exactly one IPv4 address, got 2 IPv4 and 0 IPv6",
            ),
            (
                "  addresses = [\"10.0.0.1\"]\n  auth = \"ucarp\"\n  password = \"01234567890123456789\"\n",
                "8: interface \"eth0\" vhid 1: password: the password is 20 bytes; auth = \"ucarp\" allows at most 19",
            ),
            (
                "  addresses = [\"10.0.0.1\"]\n  auth = \"ucarp\"\n  password = \"\"\n",
                "8: interface \"eth0\" vhid 1: password: the password is empty",
            ),
            (
                "  addresses = [\"10.0.0.1\"]\n  auth = \"ucarp\"\n  advbase = 0\n",
                "8: interface \"eth0\" vhid 1: advbase, advskew: UCARP peers need advbase > 0 or advskew > 0",
            ),
            ("  id = 2\n", "6:3: duplicate key"),
        ];
        assert_refused(cases, vhid);
        // vhid id range.
        let e = err(
            "password = \"pw\"\n[[interface]]\nname = \"eth0\"\n  [[interface.vhid]]\n  id = 0\n",
        );
        assert_eq!(
            e,
            "/etc/test.toml:5: interface \"eth0\": vhid id: 0 is not in 1..=255"
        );
        let e = err(
            "password = \"pw\"\n[[interface]]\nname = \"eth0\"\n  [[interface.vhid]]\n  id = 256\n",
        );
        assert_eq!(
            e,
            "/etc/test.toml:5: interface \"eth0\": vhid id: 256 is not in 1..=255"
        );
        // No password anywhere.
        let e = err(
            "[[interface]]\nname = \"eth0\"\n  [[interface.vhid]]\n  id = 1\n  addresses = [\"10.0.0.1\"]\n",
        );
        assert!(
            e.starts_with("/etc/test.toml:3: interface \"eth0\" vhid 1: password: no password"),
            "{e}"
        );
    }

    const SHARED: &str = r#"
password = "pw"
[[load_sharing]]
name = "web"
interface = "eth0"
nodes = ["10.0.0.1", "10.0.0.2", "10.0.0.3"]
self = "10.0.0.2"
groups = ["front"]
vhid = [
  { id = 1, addresses = ["10.0.0.101/24"] },
  { id = 2, addresses = ["10.0.0.102/24"], groups = ["extra"] },
  { id = 3, addresses = ["10.0.0.103/24"] },
]
"#;

    #[test]
    fn load_sharing_groups() {
        let c = load(SHARED).unwrap();
        assert_eq!(c.summary(), "1 interface, 3 VHIDs");
        let iface = &c.spec.interfaces[0];
        assert_eq!(iface.name, "eth0");
        let nodes: Vec<IpAddr> = ["10.0.0.1", "10.0.0.2", "10.0.0.3"]
            .iter()
            .map(|n| n.parse().unwrap())
            .collect();
        let orders = share::assignment("web", &nodes, &[1, 2, 3]);
        for v in &iface.vhids {
            assert!(v.preempt);
            assert_eq!(v.advskew, 0);
            let s = v.share.as_ref().unwrap();
            assert_eq!(s.group, "web");
            assert_eq!(s.this_node, Some(nodes[1]));
            assert_eq!(s.order, orders[&v.vhid]);
        }
        assert_eq!(iface.vhids[0].groups, ["web", "front"]);
        assert_eq!(iface.vhids[1].groups, ["web", "front", "extra"]);

        // Joins an [[interface]] of the same name; `self` is optional.
        let c = load(&format!(
            "{}\n[[interface]]\nname = \"eth0\"\n[[interface.vhid]]\nid = 9\naddresses = [\"10.0.0.9\"]\n",
            SHARED.replace("self = \"10.0.0.2\"\n", "")
        ))
        .unwrap();
        assert_eq!(c.summary(), "1 interface, 4 VHIDs");
        let v = &c.spec.interfaces[0].vhids;
        assert!(v[0].share.is_none() && v[1].share.as_ref().unwrap().this_node.is_none());

        let cases: &[(&str, &str, &str)] = &[
            (
                "self = \"10.0.0.2\"",
                "self = \"10.0.0.9\"",
                "7: load_sharing \"web\": self: \"10.0.0.9\" is not one of the nodes",
            ),
            (
                "\"10.0.0.3\"]",
                "\"10.0.0.1\"]",
                "6: load_sharing \"web\": nodes: 10.0.0.1 is listed twice",
            ),
            (
                "nodes = [\"10.0.0.1\", \"10.0.0.2\", \"10.0.0.3\"]",
                "nodes = [\"10.0.0.2\"]",
                "6: load_sharing \"web\": nodes: 1 nodes; a group has 2 to 64",
            ),
            (
                "groups = [\"front\"]",
                "advskew = 10",
                "8: load_sharing \"web\": advskew: set by each node's rank",
            ),
            (
                "{ id = 3,",
                "{ id = 3, advskew = 5,",
                "12: load_sharing \"web\" vhid 3: advskew: set by each node's rank",
            ),
            (
                "groups = [\"front\"]",
                "preempt = false",
                "load_sharing \"web\": preempt: a load-sharing group needs preemption",
            ),
            (
                "{ id = 3,",
                "{ id = 1,",
                "12: load_sharing \"web\": vhid id: vhid 1 is already configured at line 10",
            ),
            (
                "groups = [\"front\"]",
                "groups = [\"a b\"]",
                "8: load_sharing \"web\" vhid 1: groups: \"a b\" is not a group name",
            ),
        ];
        for (from, to, want) in cases {
            let src = SHARED.replace(from, to);
            assert_ne!(src, SHARED, "{from}");
            let got = err(&src);
            assert!(got.contains(want), "for {to}\n got: {got}\nwant: {want}");
        }
        let dup = format!(
            "{SHARED}\n[[interface]]\nname = \"eth0\"\n[[interface.vhid]]\nid = 2\naddresses = [\"10.0.0.9\"]\n"
        );
        assert!(
            err(&dup).contains("vhid 2 is already configured on interface \"eth0\""),
            "{}",
            err(&dup)
        );
        let twice = format!(
            "{SHARED}{}",
            SHARED
                .replace("password = \"pw\"", "")
                .replace("10.0.0.10", "10.0.0.20")
        );
        assert!(
            err(&twice).contains("load_sharing name: \"web\" is already used at line 3"),
            "{}",
            err(&twice)
        );
    }

    #[test]
    fn trackers_and_groups() {
        let c = load(
            r#"
password = "pw"
[[track]]
file = "demote"
[[track]]
command = "test -e /run/ok"
interval = "500ms"
rise = 3
fall = 1
weight = 20
groups = ["fw"]

[[interface]]
name = "eth0"
groups = ["fw"]
  [[interface.track]]
  link = "eth1"
  [[interface.vhid]]
  id = 1
  addresses = ["192.0.2.1"]
  [[interface.vhid]]
  id = 2
  addresses = ["192.0.2.2"]
  groups = ["db", "fw"]
    [[interface.vhid.track]]
    link = "eth2"
    weight = 255
"#,
        )
        .unwrap();
        let v = &c.spec.interfaces[0].vhids;
        assert_eq!(v[0].groups, ["fw"]);
        assert_eq!(v[1].groups, ["fw", "db"]);
        let key = VhidKey {
            interface: "eth0".into(),
            vhid: 2,
        };
        assert_eq!(
            c.spec.trackers,
            vec![
                TrackerSpec {
                    kind: TrackerKind::File {
                        path: PathBuf::from("/etc/demote"),
                        interval: Duration::from_secs(1),
                    },
                    weight: 1,
                    scope: TrackScope::All,
                },
                TrackerSpec {
                    kind: TrackerKind::Command {
                        command: "test -e /run/ok".into(),
                        interval: Duration::from_millis(500),
                        timeout: Duration::from_millis(500),
                        rise: 3,
                        fall: 1,
                    },
                    weight: 20,
                    scope: TrackScope::Groups(vec!["fw".into()]),
                },
                TrackerSpec {
                    kind: TrackerKind::Link {
                        interface: "eth1".into(),
                    },
                    weight: 50,
                    scope: TrackScope::Groups(vec!["eth0".into()]),
                },
                TrackerSpec {
                    kind: TrackerKind::Link {
                        interface: "eth2".into(),
                    },
                    weight: 255,
                    scope: TrackScope::Vhid(key),
                },
            ]
        );

        let cases: &[(&str, &str)] = &[
            (
                "[[track]]\nlink = \"eth1\"\ncommand = \"true\"\n",
                "/etc/test.toml:2: track: set exactly one of link, command and file",
            ),
            ("[[track]]\n", "/etc/test.toml:2: track: set exactly one"),
            (
                "[[track]]\nlink = \"eth1\"\ngroups = [\"nope\"]\n",
                "/etc/test.toml:4: track: groups: no VHID is in group \"nope\"",
            ),
            (
                "[[track]]\nlink = \"eth1\"\nrise = 2\n",
                "/etc/test.toml:4: track: rise: only for command trackers, not link",
            ),
            (
                "[[track]]\nlink = \"eth1\"\ninterval = \"1s\"\n",
                "/etc/test.toml:4: track: interval: a link tracker follows link events",
            ),
            (
                "[[track]]\ncommand = \"true\"\nweight = 0\n",
                "/etc/test.toml:4: track: weight: 0 is not in 1..=255",
            ),
            (
                "[[track]]\ncommand = \"true\"\ninterval = \"0s\"\n",
                "/etc/test.toml:4: track: interval: must be greater than zero",
            ),
            (
                "[[track]]\ncommand = \"true\"\nfall = 101\n",
                "/etc/test.toml:4: track: fall: 101 is not in 1..=100",
            ),
            (
                "[[track]]\nfile = \"x\"\ntimeout = \"1s\"\n",
                "/etc/test.toml:4: track: timeout: only for command trackers, not file",
            ),
            (
                "[[track]]\nlink = \"eth1\"\nbogus = 1\n",
                "/etc/test.toml:4:1: unknown field `bogus`",
            ),
        ];
        for (track, want) in cases {
            let got = err(&format!(
                "password = \"pw\"\n{track}{}",
                MINIMAL.replace("password = \"pw\"", "")
            ));
            assert!(
                got.starts_with(want),
                "for {track:?}\n got: {got}\nwant: {want}"
            );
        }
        let got = err(&MINIMAL.replace(
            "name = \"eth0\"\n",
            "name = \"eth0\"\n[[interface.track]]\nlink = \"eth1\"\ngroups = [\"eth0\"]\n",
        ));
        assert!(
            got.contains(
                "interface \"eth0\": track: groups: only a top-level [[track]] names groups"
            ),
            "{got}"
        );
        // Every VHID is in the group named after its interface.
        let c = load(&format!(
            "{MINIMAL}[[track]]\nlink = \"eth1\"\ngroups = [\"eth0\"]\n"
        ))
        .unwrap();
        assert_eq!(
            c.spec.trackers[0].scope,
            TrackScope::Groups(vec!["eth0".into()])
        );
    }

    #[test]
    fn bsd_allows_what_ucarp_cannot() {
        // Empty password, long password, sub-second 0/0 timing and several
        // addresses are all legal between BSD peers.
        let v = one_vhid(
            "password = \"\"\nadvbase = 0\n[[interface]]\nname = \"eth0\"\n[[interface.vhid]]\nid = 1\naddresses = [\"10.0.0.1\", \"10.0.0.2\", \"fe80::1/64\"]\n",
        );
        assert_eq!(
            (v.advbase, v.advskew, v.key.len(), v.addresses.len()),
            (0, 0, 0, 3)
        );
        let v = one_vhid(&MINIMAL.replace("\"pw\"", "\"0123456789012345678901234\""));
        assert_eq!(v.key.len(), 25);
    }

    #[test]
    fn line_and_key_helpers() {
        let src = "a = 1\nbb = 2\n  [t]\n  c.d = { e = 3 }\n";
        assert_eq!(line_col(src, 0), (1, 1));
        assert_eq!(line_col(src, 6), (2, 1));
        assert_eq!(line_col(src, 11), (2, 6));
        assert_eq!(line_col(src, 10_000), (5, 1));
        let starts = line_starts(src);
        for offset in [0, 5, 6, 11, 10_000] {
            let line = starts.partition_point(|s| *s <= offset.min(src.len()));
            assert_eq!(line, line_col(src, offset).0, "offset {offset}");
        }
        assert_eq!(key_at(src, 4), Some("a"));
        assert_eq!(key_at(src, 11), Some("bb"));
        assert_eq!(key_at(src, 14), None);
        let e3 = src.find('3').unwrap();
        assert_eq!(key_at(src, e3), Some("e"));
    }

    #[test]
    fn control_socket_and_metrics() {
        let c = load(MINIMAL).unwrap();
        assert_eq!((c.control_socket, c.metrics_listen), (None, None));
        let c = load(&format!(
            "control_socket = \"/run/x/carpd.sock\"\n{MINIMAL}\n[metrics]\nlisten = \"127.0.0.1:9750\"\n"
        ))
        .unwrap();
        assert_eq!(c.control_socket, Some(PathBuf::from("/run/x/carpd.sock")));
        assert_eq!(c.metrics_listen, Some("127.0.0.1:9750".parse().unwrap()));
        assert_eq!(
            err(&format!("control_socket = \"x.sock\"\n{MINIMAL}")),
            "/etc/test.toml:1: control_socket: \"x.sock\" is not an absolute path"
        );
        assert_eq!(
            err(&format!("{MINIMAL}\n[metrics]\nlisten = \"localhost\"\n")),
            "/etc/test.toml:10: metrics: listen: \"localhost\" is not an address:port (e.g. \"127.0.0.1:9750\")"
        );
        assert!(err(&format!("{MINIMAL}\n[metrics]\nport = 1\n")).contains("unknown field `port`"));
    }

    #[test]
    fn password_from_the_environment() {
        // PATH is set wherever tests run; any variable shows the mechanism.
        let path = std::env::var_os("PATH").unwrap();
        let v = one_vhid(&MINIMAL.replace("password = \"pw\"", "password_env = \"PATH\""));
        assert_eq!(
            v.key,
            std::os::unix::ffi::OsStrExt::as_bytes(path.as_os_str())
        );
        assert_eq!(
            err(&MINIMAL.replace(
                "password = \"pw\"",
                "password_env = \"CARPD_TEST_NEVER_SET_3141\""
            )),
            "/etc/test.toml:2: password_env: the environment variable CARPD_TEST_NEVER_SET_3141 is not set"
        );
        assert_eq!(
            err(&MINIMAL.replace("password = \"pw\"", "password_env = \"\"")),
            "/etc/test.toml:2: password_env: \"\" is not an environment variable name"
        );
        assert_eq!(
            err(&MINIMAL.replace(
                "password = \"pw\"",
                "password_file = \"x\"\npassword_env = \"PATH\""
            )),
            "/etc/test.toml:2: password_file: set only one of password, password_file and password_env, not password_file and password_env"
        );
    }
}
