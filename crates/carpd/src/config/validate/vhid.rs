//! `[[interface.vhid]]` tables: one VHID's addresses, timing and settings,
//! with what it inherits.

use std::ops::Range;
use std::time::Duration;

use carp_engine::spec::{DEFAULT_ADVBASE, DEFAULT_ADVSKEW, Protocol, VrrpSpec};
use carp_engine::{HookSpec, TransportSpec, VhidKey, VhidSpec, VirtualAddr};
use carp_proto::{HmacMode, vrrp};
use toml::Spanned;

use super::{KeyUse, Validator};
use crate::config::cascade::Level;
use crate::config::check;
use crate::config::schema::{AuthName, ProtocolName, RawVhid, VrrpAuthName};
use crate::error::Error;

/// How long a hook may run when `hook_timeout` is not set.
const DEFAULT_HOOK_TIMEOUT: Duration = Duration::from_secs(10);

impl Validator<'_> {
    /// The VHID `id` on `ifname` from its table `raw` (at `table`) and the
    /// settings it inherits; its key is left to [`crate::config::resolve`].
    pub(super) fn vhid(
        &mut self,
        inherited: &Level,
        ifname: &str,
        id: u8,
        raw: &RawVhid,
        table: &Range<usize>,
    ) -> Result<VhidSpec, Error> {
        let ctx = format!("interface \"{ifname}\" vhid {id}");
        let level = self.level_with_source(raw.common(), raw.source.as_ref(), &ctx)?;
        let l = inherited.overlay(&level);
        self.protocol_keys(&level, &l, &ctx)?;
        let protocol_name = l.protocol.as_ref().map_or(ProtocolName::Carp, |p| p.value);

        let addresses = self.addresses(raw.addresses.as_ref(), table, &ctx)?;
        let auth = l.auth.as_ref().map_or(AuthName::Bsd, |a| a.value);
        let (advbase, advskew) = self.timing(&l, table, &ctx)?;
        let protocol = match protocol_name {
            ProtocolName::Carp => Protocol::Carp,
            ProtocolName::Vrrp3 => {
                Protocol::Vrrp(self.vrrp(&l, vrrp::Version::V3, &addresses, table, &ctx)?)
            }
            ProtocolName::Vrrp2 => {
                Protocol::Vrrp(self.vrrp(&l, vrrp::Version::V2, &addresses, table, &ctx)?)
            }
        };
        let is_vrrp = matches!(protocol, Protocol::Vrrp(_));
        let needs_key = match &protocol {
            Protocol::Carp => true,
            Protocol::Vrrp(v) => v.simple_auth,
        };
        if needs_key {
            self.use_key(&l, (ifname, id), table, &ctx)?;
        }
        let label = raw
            .label
            .as_ref()
            .map(|label| self.label(label, ifname, &addresses, &ctx))
            .transpose()?;
        let transport = TransportSpec {
            peers: self.unicast_peers(&l, level.peers.is_some(), &addresses, table, &ctx)?,
            unicast_ttl_check: l.unicast_ttl_check.unwrap_or(false),
            virtual_mac: self.virtual_mac(
                &l,
                (ifname, id),
                label.is_some(),
                // VRRP's virtual MAC, unless the addresses are not carpd's
                // to move or carry a label
                is_vrrp && l.manage_addresses != Some(false) && label.is_none(),
                table,
                &ctx,
            )?,
        };
        if auth == AuthName::Ucarp {
            self.ucarp_limits(&l, raw, &addresses, (advbase, advskew), table, &ctx)?;
        }
        let auth = match auth {
            AuthName::Bsd => HmacMode::Bsd,
            AuthName::Ucarp => HmacMode::Ucarp,
        };
        // the key is read by the resolve pass
        let defaults = VhidSpec::new(id, addresses, Vec::new(), auth);
        Ok(VhidSpec {
            label,
            advbase,
            advskew,
            dead_ratio: l.dead_ratio.unwrap_or(defaults.dead_ratio),
            // VRRP's Preempt_Mode is on by default (both RFCs)
            preempt: l.preempt.unwrap_or(defaults.preempt || is_vrrp),
            preempt_delay: l.preempt_delay.unwrap_or(defaults.preempt_delay),
            announce_interval: l.announce_interval.or(defaults.announce_interval),
            source: l.source,
            group_v4: l.group.unwrap_or(defaults.group_v4),
            broadcast: l.broadcast.unwrap_or(defaults.broadcast),
            manage_addresses: l.manage_addresses.unwrap_or(defaults.manage_addresses),
            replay_protection: l.replay_protection.unwrap_or(defaults.replay_protection),
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
            transport,
            protocol,
            ..defaults
        })
    }

    /// A VRRP virtual router's settings: `priority` (1..=255, default 100),
    /// `advert_interval` (VRRPv3: 10 ms steps up to 40.95 s; VRRPv2: whole
    /// seconds up to 255 s; default 1 s), `auth_type` (VRRPv2),
    /// `accept_mode` (VRRPv3, default true); one address family, VRRPv2
    /// IPv4 only, and an IPv6 list led by a link-local address (RFC 9568
    /// 5.2.9).
    fn vrrp(
        &self,
        l: &Level,
        version: vrrp::Version,
        addresses: &[VirtualAddr],
        table: &Range<usize>,
        ctx: &str,
    ) -> Result<VrrpSpec, Error> {
        let v4 = addresses.iter().filter(|a| a.addr.is_ipv4()).count();
        let v6 = addresses.len() - v4;
        let at_addresses = self.diag.at(table.clone(), ctx, "addresses");
        if v4 > 0 && v6 > 0 {
            return Err(at_addresses.err(
                "a VRRP virtual router carries one address family (RFC 9568 keeps IPv4 and IPv6 apart): use two VHIDs on two interfaces or with two numbers",
            ));
        }
        if version == vrrp::Version::V2 && v6 > 0 {
            return Err(
                at_addresses.err("VRRPv2 carries IPv4 addresses only: use protocol = \"vrrp3\"")
            );
        }
        if addresses.len() > 255 {
            return Err(at_addresses.err("a VRRP advertisement carries at most 255 addresses"));
        }
        if let Some(first) = addresses.first()
            && let std::net::IpAddr::V6(a) = first.addr
            && !a.is_unicast_link_local()
        {
            return Err(at_addresses.err(
                "the first IPv6 address of a VRRP virtual router must be link-local (RFC 9568 5.2.9)",
            ));
        }
        let interval = l
            .advert_interval
            .as_ref()
            .map_or(Duration::from_secs(1), |a| a.value);
        let interval_span = l
            .advert_interval
            .as_ref()
            .map_or(table.clone(), |a| a.span.clone());
        let at = self.diag.at(interval_span, ctx, "advert_interval");
        let millis = interval.as_millis();
        let interval_cs = match version {
            vrrp::Version::V3 => {
                if interval.as_nanos() % 10_000_000 != 0 || !(10..=40_950).contains(&millis) {
                    return Err(at.err("VRRPv3 intervals are 10 ms steps from 10ms to 40.95s"));
                }
                millis / 10
            }
            vrrp::Version::V2 => {
                if interval.subsec_nanos() != 0 || !(1_000..=255_000).contains(&millis) {
                    return Err(at.err("VRRPv2 intervals are whole seconds from 1s to 255s"));
                }
                millis / 10
            }
        };
        let priority = l
            .priority
            .as_ref()
            .map_or(vrrp::DEFAULT_PRIORITY, |p| p.value);
        if priority == vrrp::OWNER_PRIORITY && l.manage_addresses != Some(false) {
            let span = l
                .priority
                .as_ref()
                .map_or(table.clone(), |p| p.span.clone());
            return Err(self.diag.at(span, ctx, "priority").err(
                "255 is the address owner's, whose addresses are its own: set manage_addresses = false, or a priority below 255",
            ));
        }
        let simple_auth = l
            .auth_type
            .as_ref()
            .is_some_and(|a| a.value == VrrpAuthName::Simple);
        Ok(VrrpSpec {
            version,
            priority,
            interval_cs: u16::try_from(interval_cs).unwrap_or(u16::MAX),
            simple_auth,
            // true unless asked: the master holds the addresses and accepts
            // their traffic, as keepalived's and FRR's do by default
            accept_mode: l.accept_mode.unwrap_or(true),
        })
    }

    /// Records which password the VHID `(ifname, id)` uses, for
    /// [`crate::config::resolve`] to read; one must be set.
    fn use_key(
        &mut self,
        l: &Level,
        (ifname, id): (&str, u8),
        table: &Range<usize>,
        ctx: &str,
    ) -> Result<(), Error> {
        let Some(secret) = l.key else {
            return Err(self.diag.at(table.clone(), ctx, "password").err(
                "no password: set password, password_file or password_env (here, in the interface or at the top)",
            ));
        };
        self.keys.push(KeyUse {
            vhid: VhidKey {
                interface: ifname.to_string(),
                vhid: id,
            },
            secret,
            ucarp: l.auth.as_ref().is_some_and(|a| a.value == AuthName::Ucarp),
            ctx: ctx.to_string(),
        });
        Ok(())
    }

    /// The span to blame for a timing combination: the most specific of
    /// advskew and advbase that was written down, else the VHID table.
    fn timing_span(l: &Level, table: &Range<usize>) -> Range<usize> {
        l.advskew
            .as_ref()
            .or(l.advbase.as_ref())
            .map_or(table.clone(), |a| a.span.clone())
    }

    /// `(advbase, advskew)`, refusing the bow-out pair.
    fn timing(&self, l: &Level, table: &Range<usize>, ctx: &str) -> Result<(u8, u8), Error> {
        let advbase = l.advbase.as_ref().map_or(DEFAULT_ADVBASE, |a| a.value);
        let advskew = l.advskew.as_ref().map_or(DEFAULT_ADVSKEW, |a| a.value);
        if advbase == 255 && advskew == 255 {
            return Err(self
                .diag
                .at(Self::timing_span(l, table), ctx, "advbase, advskew")
                .err("255/255 is the bow-out advertisement and cannot be a VHID's timing"));
        }
        Ok((advbase, advskew))
    }

    /// What UCARP peers need that the file can show: one IPv4 address and
    /// a non-zero timing (the key's length is checked once it is read).
    fn ucarp_limits(
        &self,
        l: &Level,
        raw: &RawVhid,
        addresses: &[VirtualAddr],
        (advbase, advskew): (u8, u8),
        table: &Range<usize>,
        ctx: &str,
    ) -> Result<(), Error> {
        let v4 = addresses.iter().filter(|a| a.addr.is_ipv4()).count();
        let v6 = addresses.len() - v4;
        if v4 != 1 || v6 != 0 {
            let auth_span = l.auth.as_ref().map_or(table.clone(), |a| a.span.clone());
            let span = raw.addresses.as_ref().map_or(auth_span, |a| a.span());
            return Err(self.diag.at(span, ctx, "addresses").err(format!(
                "auth = \"ucarp\" needs exactly one IPv4 address, got {v4} IPv4 and {v6} IPv6"
            )));
        }
        if advbase == 0 && advskew == 0 {
            return Err(self
                .diag
                .at(Self::timing_span(l, table), ctx, "advbase, advskew")
                .err("UCARP peers need advbase > 0 or advskew > 0"));
        }
        Ok(())
    }

    /// `label`: an iproute2 label for the VHID's IPv4 addresses.
    fn label(
        &self,
        label: &Spanned<String>,
        ifname: &str,
        addresses: &[VirtualAddr],
        ctx: &str,
    ) -> Result<String, Error> {
        let at = self.diag.of(label, ctx, "label");
        check::label(label.get_ref(), ifname).map_err(|m| at.err(m))?;
        if !addresses.iter().any(|a| a.addr.is_ipv4()) {
            return Err(at.err("labels apply to IPv4 addresses and this VHID has none"));
        }
        Ok(label.get_ref().clone())
    }

    /// `addresses`: at least one, each claimed by one VHID only.
    fn addresses(
        &mut self,
        raw: Option<&Spanned<Vec<Spanned<String>>>>,
        table: &Range<usize>,
        ctx: &str,
    ) -> Result<Vec<VirtualAddr>, Error> {
        let Some(raw) = raw else {
            return Err(self
                .diag
                .at(table.clone(), ctx, "addresses")
                .err("missing: a VHID needs at least one address"));
        };
        if raw.get_ref().is_empty() {
            return Err(self
                .diag
                .of(raw, ctx, "addresses")
                .err("empty: a VHID needs at least one address"));
        }
        let mut out = Vec::with_capacity(raw.get_ref().len());
        for a in raw.get_ref() {
            let at = self.diag.of(a, ctx, "addresses");
            let text = a.get_ref();
            let va = check::parse_vaddr(text).map_err(|m| at.err(format!("{text}: {m}")))?;
            if let Some((first, owner)) = self.seen_addrs.get(&va.addr) {
                return Err(at.err(format!(
                    "{} is already used by {owner} at line {first}",
                    va.addr
                )));
            }
            self.seen_addrs
                .insert(va.addr, (at.line(), ctx.to_string()));
            out.push(va);
        }
        Ok(out)
    }
}
