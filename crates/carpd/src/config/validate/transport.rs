//! How a VHID reaches its peers: `peers` (unicast) and `virtual_mac`.

use std::net::IpAddr;
use std::ops::Range;

use carp_engine::{VirtualAddr, vmac};
use toml::Spanned;

use super::Validator;
use crate::config::cascade::{At, Level};
use crate::error::Error;

impl Validator<'_> {
    /// `peers`: unicast addresses, each once.
    pub(in crate::config) fn peers(
        &self,
        raw: &Spanned<Vec<Spanned<String>>>,
        ctx: &str,
    ) -> Result<Vec<At<IpAddr>>, Error> {
        let mut out: Vec<At<IpAddr>> = Vec::with_capacity(raw.get_ref().len());
        for p in raw.get_ref() {
            let at = self.diag.of(p, ctx, "peers");
            let text = p.get_ref();
            let addr: IpAddr = text
                .trim()
                .parse()
                .map_err(|_| at.err(format!("{text:?} is not an IP address")))?;
            let unusable = addr.is_unspecified()
                || addr.is_multicast()
                || addr.is_loopback()
                || matches!(addr, IpAddr::V4(a) if a.is_broadcast());
            if unusable {
                return Err(at.err(format!("{addr} is not a unicast address")));
            }
            if let Some(first) = out.iter().find(|a| a.value == addr) {
                return Err(at.err(format!(
                    "{addr} is listed twice (first at line {})",
                    self.diag.line(&first.span)
                )));
            }
            out.push(At {
                value: addr,
                span: p.span(),
            });
        }
        Ok(out)
    }

    /// The unicast peers one VHID advertises to. Peers inherited from the
    /// interface or the top level whose family the VHID does not use are
    /// left out; written in the VHID's own table (`own_peers`) they are an
    /// error.
    pub(super) fn unicast_peers(
        &self,
        l: &Level,
        own_peers: bool,
        addresses: &[VirtualAddr],
        table: &Range<usize>,
        ctx: &str,
    ) -> Result<Vec<IpAddr>, Error> {
        let Some(list) = &l.peers else {
            return Ok(Vec::new());
        };
        let mut peers = Vec::new();
        for p in list {
            let at = self.diag.at(p.span.clone(), ctx, "peers");
            if addresses.iter().any(|a| a.addr == p.value) {
                return Err(at.err(format!("{} is one of the VHID's own addresses", p.value)));
            }
            if !addresses
                .iter()
                .any(|a| a.addr.is_ipv4() == p.value.is_ipv4())
            {
                if own_peers {
                    let family = if p.value.is_ipv4() { "IPv4" } else { "IPv6" };
                    return Err(at.err(format!(
                        "{} is {family} and the VHID has no {family} address to advertise over it",
                        p.value
                    )));
                }
                continue;
            }
            peers.push(p.value);
        }
        let first = list.first().map_or(table.clone(), |p| p.span.clone());
        let at = self.diag.at(first, ctx, "peers");
        if peers.is_empty() {
            return Err(at.err("no peer of an address family the VHID uses"));
        }
        if l.broadcast == Some(true) {
            return Err(at.err("broadcast applies to group advertisements, not to unicast peers"));
        }
        Ok(peers)
    }

    /// Whether the VHID `(ifname, id)` holds its addresses on a virtual MAC
    /// interface, whose name must be its own.
    /// `virtual_mac`: off by default, on by default for VRRP
    /// (`default_on`, blamed on the VHID's `table` if refused).
    pub(super) fn virtual_mac(
        &mut self,
        l: &Level,
        (ifname, id): (&str, u8),
        has_label: bool,
        default_on: bool,
        table: &Range<usize>,
        ctx: &str,
    ) -> Result<bool, Error> {
        let span = match &l.virtual_mac {
            Some(At { span, value: true }) => span.clone(),
            Some(At { value: false, .. }) => return Ok(false),
            None if default_on => table.clone(),
            None => return Ok(false),
        };
        let at = self.diag.at(span, ctx, "virtual_mac");
        if l.manage_addresses == Some(false) {
            return Err(at.err(
                "the virtual MAC interface holds the addresses: it needs manage_addresses = true",
            ));
        }
        if has_label {
            return Err(at.err(
                "address labels name the parent interface and cannot be combined with virtual_mac",
            ));
        }
        let child = vmac::child_name(ifname, id);
        if let Some((first, owner)) = self.seen_children.get(&child) {
            return Err(at.err(format!(
                "its interface name {child} is also the one of {owner} (line {first}); rename an interface"
            )));
        }
        self.seen_children
            .insert(child, (at.line(), ctx.to_string()));
        Ok(true)
    }
}
