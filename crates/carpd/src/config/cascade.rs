//! The cascade: the settings one table writes ([`Level`]), checked, and
//! how a more specific table's settings replace those it inherits.

use std::net::{IpAddr, Ipv4Addr};
use std::ops::Range;
use std::path::PathBuf;
use std::time::Duration;

use toml::Spanned;

use super::check;
use super::diag::Diagnostics;
use super::schema::{AuthName, Common, ProtocolName, VrrpAuthName};
use super::validate::Validator;
use crate::error::Error;

/// The shortest `announce_interval`: neighbours need no more, and a
/// thousand VHIDs announcing faster would flood the segment.
const MIN_ANNOUNCE_INTERVAL: Duration = Duration::from_secs(1);

/// A setting's value and the span it was written at.
#[derive(Debug, Clone)]
pub(super) struct At<T> {
    pub(super) value: T,
    pub(super) span: Range<usize>,
}

impl<T: Clone> At<T> {
    fn of(v: &Spanned<T>) -> At<T> {
        At {
            value: v.get_ref().clone(),
            span: v.span(),
        }
    }
}

/// Where a password comes from, as one table writes it; read by
/// [`super::resolve`].
#[derive(Debug, Clone)]
pub(super) enum SecretSource {
    Inline(Vec<u8>),
    File(PathBuf),
    Env(String),
}

/// A password setting: its source, where it is written (span and the
/// table's context) and under which key.
#[derive(Debug, Clone)]
pub(super) struct Secret {
    pub(super) source: SecretSource,
    pub(super) span: Range<usize>,
    pub(super) ctx: String,
    pub(super) key: &'static str,
}

/// The checked cascading settings of one table; `None` means "inherit".
#[derive(Debug, Clone, Default)]
pub(super) struct Level {
    pub(super) advbase: Option<At<u8>>,
    pub(super) advskew: Option<At<u8>>,
    pub(super) dead_ratio: Option<u8>,
    pub(super) preempt: Option<bool>,
    pub(super) preempt_delay: Option<Duration>,
    pub(super) announce_interval: Option<Duration>,
    /// The password: an index into the validator's secrets.
    pub(super) key: Option<usize>,
    pub(super) auth: Option<At<AuthName>>,
    pub(super) hook_timeout: Option<Duration>,
    pub(super) up: Option<PathBuf>,
    pub(super) down: Option<PathBuf>,
    pub(super) xparam: Option<String>,
    pub(super) down_at_start: Option<bool>,
    pub(super) down_on_exit: Option<bool>,
    pub(super) group: Option<Ipv4Addr>,
    pub(super) broadcast: Option<bool>,
    pub(super) manage_addresses: Option<bool>,
    pub(super) replay_protection: Option<bool>,
    /// Unicast peers, each with its span.
    pub(super) peers: Option<Vec<At<IpAddr>>>,
    pub(super) unicast_ttl_check: Option<bool>,
    pub(super) virtual_mac: Option<At<bool>>,
    pub(super) source: Option<IpAddr>,
    pub(super) ignore_link_state: Option<bool>,
    pub(super) protocol: Option<At<ProtocolName>>,
    pub(super) priority: Option<At<u8>>,
    pub(super) advert_interval: Option<At<Duration>>,
    pub(super) auth_type: Option<At<VrrpAuthName>>,
    pub(super) accept_mode: Option<bool>,
    /// The keys written in this very table that apply to some protocols
    /// only, with their spans (not inherited: each table's are checked
    /// against the protocol in effect there, see [`Validator::protocol_keys`]).
    pub(super) one_protocol_keys: Vec<(&'static str, Range<usize>)>,
}

/// Whether `key` (one of [`Level::one_protocol_keys`]) applies to `protocol`.
fn applies(key: &str, protocol: ProtocolName) -> bool {
    match key {
        "priority" | "advert_interval" => protocol != ProtocolName::Carp,
        "auth_type" => protocol == ProtocolName::Vrrp2,
        "accept_mode" => protocol == ProtocolName::Vrrp3,
        "password" | "password_file" | "password_env" => protocol != ProtocolName::Vrrp3,
        // advbase, advskew, dead_ratio, auth, group, broadcast,
        // replay_protection
        _ => protocol == ProtocolName::Carp,
    }
}

impl Level {
    /// `self` with every setting `more` specifies replaced by it.
    pub(super) fn overlay(&self, more: &Level) -> Level {
        fn pick<T: Clone>(a: &Option<T>, b: &Option<T>) -> Option<T> {
            b.clone().or_else(|| a.clone())
        }
        Level {
            advbase: pick(&self.advbase, &more.advbase),
            advskew: pick(&self.advskew, &more.advskew),
            dead_ratio: pick(&self.dead_ratio, &more.dead_ratio),
            preempt: pick(&self.preempt, &more.preempt),
            preempt_delay: pick(&self.preempt_delay, &more.preempt_delay),
            announce_interval: pick(&self.announce_interval, &more.announce_interval),
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
            protocol: pick(&self.protocol, &more.protocol),
            priority: pick(&self.priority, &more.priority),
            advert_interval: pick(&self.advert_interval, &more.advert_interval),
            auth_type: pick(&self.auth_type, &more.auth_type),
            accept_mode: pick(&self.accept_mode, &more.accept_mode),
            one_protocol_keys: more.one_protocol_keys.clone(),
        }
    }
}

impl Validator<'_> {
    /// Check the cascading settings written in one table.
    pub(super) fn level(&mut self, c: Common<'_>, ctx: &str) -> Result<Level, Error> {
        let key = self.password(&c, ctx)?;
        let d = self.diag;
        let hook_timeout = c
            .hook_timeout
            .map(|t| check::duration(&d.of(t, ctx, "hook_timeout"), t.get_ref(), "10s"))
            .transpose()?;
        let preempt_delay = c
            .preempt_delay
            .map(|t| check::duration_or_zero(&d.of(t, ctx, "preempt_delay"), t.get_ref(), "30s"))
            .transpose()?;
        let announce_interval = c
            .announce_interval
            .map(|t| {
                let at = d.of(t, ctx, "announce_interval");
                let every = check::duration(&at, t.get_ref(), "60s")?;
                if every < MIN_ANNOUNCE_INTERVAL {
                    return Err(at.err("must be at least 1s"));
                }
                Ok(every)
            })
            .transpose()?;
        let group = c.group.map(|g| multicast_group(d, g, ctx)).transpose()?;
        let byte = |v: Option<&Spanned<i64>>, key: &str, lo: u8| {
            v.map(|v| {
                let value = check::byte_from(&d.of(v, ctx, key), *v.get_ref(), lo)?;
                Ok::<_, Error>(At {
                    value,
                    span: v.span(),
                })
            })
            .transpose()
        };
        let script = |s: Option<&Spanned<String>>, key: &str| {
            s.map(|s| self.script(s, ctx, key)).transpose()
        };
        let advert_interval = c
            .advert_interval
            .map(|t| {
                let value = check::duration(&d.of(t, ctx, "advert_interval"), t.get_ref(), "1s")?;
                Ok::<_, Error>(At {
                    value,
                    span: t.span(),
                })
            })
            .transpose()?;
        let priority = c
            .priority
            .map(|p| {
                let value = check::byte_from(&d.of(p, ctx, "priority"), *p.get_ref(), 1)?;
                Ok::<_, Error>(At {
                    value,
                    span: p.span(),
                })
            })
            .transpose()?;
        let spans = [
            ("advbase", c.advbase.map(Spanned::span)),
            ("advskew", c.advskew.map(Spanned::span)),
            ("dead_ratio", c.dead_ratio.map(Spanned::span)),
            ("auth", c.auth.map(Spanned::span)),
            ("group", c.group.map(Spanned::span)),
            ("broadcast", c.broadcast.map(Spanned::span)),
            ("replay_protection", c.replay_protection.map(Spanned::span)),
            ("priority", c.priority.map(Spanned::span)),
            ("advert_interval", c.advert_interval.map(Spanned::span)),
            ("auth_type", c.auth_type.map(Spanned::span)),
            ("accept_mode", c.accept_mode.map(Spanned::span)),
            ("password", c.password.map(Spanned::span)),
            ("password_file", c.password_file.map(Spanned::span)),
            ("password_env", c.password_env.map(Spanned::span)),
        ];
        let one_protocol_keys = spans
            .into_iter()
            .filter_map(|(k, s)| s.map(|s| (k, s)))
            .collect();
        Ok(Level {
            advbase: byte(c.advbase, "advbase", 0)?,
            advskew: byte(c.advskew, "advskew", 0)?,
            dead_ratio: byte(c.dead_ratio, "dead_ratio", 1)?.map(|a| a.value),
            preempt: c.preempt,
            preempt_delay,
            announce_interval,
            key,
            auth: c.auth.map(At::of),
            hook_timeout,
            up: script(c.up, "up")?,
            down: script(c.down, "down")?,
            xparam: c.xparam.map(str::to_string),
            down_at_start: c.down_at_start,
            down_on_exit: c.down_on_exit,
            group,
            broadcast: c.broadcast.map(|b| *b.get_ref()),
            manage_addresses: c.manage_addresses,
            replay_protection: c.replay_protection.map(|r| *r.get_ref()),
            peers: c.peers.map(|p| self.peers(p, ctx)).transpose()?,
            unicast_ttl_check: c.unicast_ttl_check,
            virtual_mac: c.virtual_mac.map(At::of),
            source: None,
            ignore_link_state: None,
            protocol: c.protocol.map(At::of),
            priority,
            advert_interval,
            auth_type: c.auth_type.map(At::of),
            accept_mode: c.accept_mode.map(|a| *a.get_ref()),
            one_protocol_keys,
        })
    }

    /// Refuse a key written in the table of `written` that does not apply
    /// to the protocol in effect there (`effective`, its overlay on what it
    /// inherits): CARP's timing and authentication in a VRRP table, VRRP's
    /// priority and interval in a CARP one, and so on.
    pub(super) fn protocol_keys(
        &self,
        written: &Level,
        effective: &Level,
        ctx: &str,
    ) -> Result<(), Error> {
        let protocol = effective
            .protocol
            .as_ref()
            .map_or(ProtocolName::Carp, |p| p.value);
        for (key, span) in &written.one_protocol_keys {
            if !applies(key, protocol) {
                return Err(self.diag.at(span.clone(), ctx, key).err(format!(
                    "does not apply to protocol = \"{}\"",
                    protocol.as_str()
                )));
            }
        }
        Ok(())
    }

    /// The one password source a table may name, recorded for
    /// [`super::resolve`] to read.
    fn password(&mut self, c: &Common<'_>, ctx: &str) -> Result<Option<usize>, Error> {
        let given = [
            c.password.map(|p| ("password", p)),
            c.password_file.map(|p| ("password_file", p)),
            c.password_env.map(|p| ("password_env", p)),
        ];
        let mut given = given.into_iter().flatten();
        let Some((key, at)) = given.next() else {
            return Ok(None);
        };
        if let Some((second, _)) = given.next() {
            return Err(self.diag.of(at, ctx, key).err(format!(
                "set only one of password, password_file and password_env, not {key} and {second}"
            )));
        }
        let text = at.get_ref();
        let source = match key {
            "password" => SecretSource::Inline(text.as_bytes().to_vec()),
            "password_file" => SecretSource::File(self.resolve_path(text)),
            _ => {
                if text.is_empty() || text.contains(['=', '\0']) {
                    return Err(self
                        .diag
                        .of(at, ctx, key)
                        .err(format!("{text:?} is not an environment variable name")));
                }
                SecretSource::Env(text.clone())
            }
        };
        self.secrets.push(Secret {
            source,
            span: at.span(),
            ctx: ctx.to_string(),
            key,
        });
        Ok(Some(self.secrets.len() - 1))
    }

    /// An `up`/`down` command, relative to the file's directory.
    fn script(&self, s: &Spanned<String>, ctx: &str, key: &str) -> Result<PathBuf, Error> {
        if s.get_ref().is_empty() {
            return Err(self.diag.of(s, ctx, key).err("empty command path"));
        }
        Ok(self.resolve_path(s.get_ref()))
    }
}

/// `group`: the IPv4 multicast group advertisements go to.
fn multicast_group(d: &Diagnostics<'_>, g: &Spanned<String>, ctx: &str) -> Result<Ipv4Addr, Error> {
    let at = d.of(g, ctx, "group");
    match g.get_ref().parse::<Ipv4Addr>() {
        Ok(a) if a.is_multicast() => Ok(a),
        Ok(a) => Err(at.err(format!("{a} is not an IPv4 multicast address"))),
        Err(_) => Err(at.err(format!("{:?} is not an IPv4 address", g.get_ref()))),
    }
}
