//! The validation pass: raw tables to an [`EngineSpec`] whose passwords are
//! still to be read. It reads nothing outside the file's text: passwords
//! from files and the environment, and group ids, are left to
//! [`super::resolve`], which the [`Draft`] tells what to read.

mod interface;
mod load_sharing;
mod track;
mod transport;
mod vhid;

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use carp_engine::{EngineSpec, VhidKey};
use toml::Spanned;

use super::RealtimePriority;
use super::cascade::{At, Level, Secret};
use super::diag::Diagnostics;
use super::schema::{Common, RawFile};
use crate::error::Error;

/// The longest path a Unix socket address holds (`sun_path` less the NUL).
const SUN_PATH_MAX: usize = 107;

/// A validated file whose secrets and groups are not yet resolved.
pub(super) struct Draft {
    /// Every VHID's `key` is empty until resolved.
    pub(super) spec: EngineSpec,
    /// Every password setting in the file, in file order.
    pub(super) secrets: Vec<Secret>,
    /// Which secret each VHID uses.
    pub(super) keys: Vec<KeyUse>,
    pub(super) control_socket: Option<PathBuf>,
    pub(super) metrics_listen: Option<SocketAddr>,
    /// `control_group`: a name still to be looked up.
    pub(super) control_group: Option<At<String>>,
    /// `allow_readable_password_file`: accept password files other users
    /// can read.
    pub(super) allow_readable_password_file: bool,
    pub(super) realtime: Option<RealtimePriority>,
}

/// The password of one VHID: an index into [`Draft::secrets`].
pub(super) struct KeyUse {
    pub(super) vhid: VhidKey,
    pub(super) secret: usize,
    /// `auth = "ucarp"`: the key must fit UCARP's limits.
    pub(super) ucarp: bool,
    /// The VHID's context, for errors.
    pub(super) ctx: String,
}

/// Validate the parsed file `raw`.
pub(super) fn validate(diag: &Diagnostics<'_>, mut raw: RawFile) -> Result<Draft, Error> {
    let mut v = Validator {
        diag,
        base: diag.base(),
        seen_addrs: HashMap::new(),
        seen_children: HashMap::new(),
        secrets: Vec::new(),
        keys: Vec::new(),
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
    let allow_readable_password_file = raw.allow_readable_password_file.unwrap_or(false);
    let realtime = v.realtime(raw.realtime.take(), raw.realtime_priority.take())?;
    let spec = v.file(&raw)?;
    Ok(Draft {
        spec,
        secrets: v.secrets,
        keys: v.keys,
        control_socket,
        metrics_listen,
        control_group,
        allow_readable_password_file,
        realtime,
    })
}

pub(super) struct Validator<'a> {
    pub(super) diag: &'a Diagnostics<'a>,
    /// Directory of the file: relative paths in it are relative to this.
    base: &'a Path,
    /// Every virtual address so far, with the line and owner that claimed it.
    seen_addrs: HashMap<IpAddr, (usize, String)>,
    /// Every virtual MAC interface name so far, with its line and owner.
    seen_children: HashMap<String, (usize, String)>,
    /// Every password setting so far ([`Draft::secrets`]).
    pub(super) secrets: Vec<Secret>,
    /// Every VHID's password so far ([`Draft::keys`]).
    keys: Vec<KeyUse>,
}

impl Validator<'_> {
    /// `p` as written in the file: relative to the file's directory.
    pub(super) fn resolve_path(&self, p: &str) -> PathBuf {
        self.base.join(p)
    }

    fn file(&mut self, raw: &RawFile) -> Result<EngineSpec, Error> {
        let mut top = self.level(raw.common(), "")?;
        top.ignore_link_state = raw.ignore_link_state;
        self.protocol_keys(&top, &top, "")?;

        let mut interfaces = Vec::with_capacity(raw.interface.len());
        let mut names: HashMap<String, usize> = HashMap::new();
        for iface in &raw.interface {
            let name = &iface.get_ref().name;
            let at = self.diag.of(name, "", "interface name");
            super::check::ifname(name.get_ref()).map_err(|m| at.err(m))?;
            if let Some(first) = names.insert(name.get_ref().clone(), self.diag.line(&iface.span()))
            {
                return Err(at.err(format!(
                    "\"{}\" is already configured at line {first}",
                    name.get_ref()
                )));
            }
            interfaces.push(self.interface(&top, iface.get_ref())?);
        }
        let mut shares: HashMap<&str, usize> = HashMap::new();
        for ls in &raw.load_sharing {
            let name = &ls.get_ref().name;
            if let Some(first) = shares.insert(name.get_ref(), self.diag.line(&ls.span())) {
                return Err(self.diag.of(name, "", "load_sharing name").err(format!(
                    "\"{}\" is already used at line {first}",
                    name.get_ref()
                )));
            }
            self.load_sharing(&top, ls, &mut interfaces)?;
        }
        let trackers = self.trackers(raw, &interfaces)?;
        Ok(EngineSpec {
            interfaces,
            trackers,
        })
    }

    /// Interface group names from several lists, in order, each once.
    pub(super) fn group_names(
        &self,
        lists: &[Option<&Vec<Spanned<String>>>],
        ctx: &str,
    ) -> Result<Vec<String>, Error> {
        let mut out: Vec<String> = Vec::new();
        for g in lists.iter().flatten().flat_map(|l| l.iter()) {
            let name = g.get_ref();
            if name.is_empty() || name.contains(char::is_whitespace) {
                return Err(self
                    .diag
                    .of(g, ctx, "groups")
                    .err(format!("{name:?} is not a group name")));
            }
            if !out.contains(name) {
                out.push(name.clone());
            }
        }
        Ok(out)
    }

    /// `source`: the IPv4 address advertisements are sent from.
    pub(super) fn source(&self, s: &Spanned<String>, ctx: &str) -> Result<IpAddr, Error> {
        let at = self.diag.of(s, ctx, "source");
        match s.get_ref().parse::<Ipv4Addr>() {
            Ok(a) if a.is_unspecified() || a.is_multicast() || a.is_broadcast() => {
                Err(at.err(format!("{a} cannot be a source address")))
            }
            Ok(a) => Ok(IpAddr::V4(a)),
            Err(_) => Err(at.err(format!("{:?} is not an IPv4 address", s.get_ref()))),
        }
    }

    /// The cascading settings of an interface or VHID table, which may
    /// also set `source`.
    pub(super) fn level_with_source(
        &mut self,
        common: Common<'_>,
        source: Option<&Spanned<String>>,
        ctx: &str,
    ) -> Result<Level, Error> {
        let mut level = self.level(common, ctx)?;
        level.source = source.map(|s| self.source(s, ctx)).transpose()?;
        Ok(level)
    }

    fn control_socket(&self, s: &Spanned<String>) -> Result<PathBuf, Error> {
        let at = self.diag.of(s, "", "control_socket");
        let p = Path::new(s.get_ref());
        if !p.is_absolute() {
            return Err(at.err(format!("{:?} is not an absolute path", s.get_ref())));
        }
        if s.get_ref().len() > SUN_PATH_MAX {
            return Err(at.err(format!(
                "longer than the {SUN_PATH_MAX} bytes a socket path can have"
            )));
        }
        Ok(p.to_path_buf())
    }

    /// `control_group`: a name that can be looked up.
    fn control_group(&self, g: &Spanned<String>) -> Result<At<String>, Error> {
        let name = g.get_ref();
        // A name with a NUL cannot be looked up (and is in no group file).
        if name.is_empty() || name.contains('\0') {
            return Err(self
                .diag
                .of(g, "", "control_group")
                .err(format!("{name:?} is not a group name")));
        }
        Ok(At {
            value: name.clone(),
            span: g.span(),
        })
    }

    /// `realtime` and `realtime_priority`: the SCHED_RR priority of the
    /// runtime thread, if real-time; the priority only with `realtime`.
    fn realtime(
        &self,
        on: Option<Spanned<bool>>,
        priority: Option<Spanned<i64>>,
    ) -> Result<Option<RealtimePriority>, Error> {
        let on = on.as_ref().is_some_and(|b| *b.get_ref());
        let Some(p) = priority else {
            return Ok(on.then_some(RealtimePriority::DEFAULT));
        };
        let at = self.diag.of(&p, "", "realtime_priority");
        if !on {
            return Err(at.err("needs realtime = true"));
        }
        u8::try_from(*p.get_ref())
            .ok()
            .and_then(RealtimePriority::new)
            .map(Some)
            .ok_or_else(|| {
                at.err(format!(
                    "{} is out of range {}..={}",
                    p.get_ref(),
                    RealtimePriority::MIN,
                    RealtimePriority::MAX
                ))
            })
    }

    fn metrics_listen(&self, s: &Spanned<String>) -> Result<SocketAddr, Error> {
        s.get_ref().parse().map_err(|_| {
            self.diag.of(s, "metrics", "listen").err(format!(
                "{:?} is not an address:port (e.g. \"127.0.0.1:9750\")",
                s.get_ref()
            ))
        })
    }
}
