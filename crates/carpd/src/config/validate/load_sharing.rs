//! `[[load_sharing]]` tables: VHIDs whose masters spread over a group of
//! nodes (see [`carp_engine::share`]).

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::ops::Range;

use carp_engine::{InterfaceSpec, ShareSpec, share};
use toml::Spanned;

use super::Validator;
use crate::config::cascade::Level;
use crate::config::check;
use crate::config::schema::RawLoadSharing;
use crate::error::Error;

/// Most nodes a load-sharing group may have (every rank keeps a distinct
/// advskew up to [`share::MAX_RANK_SKEW`]).
const MAX_SHARE_NODES: usize = 64;

impl Validator<'_> {
    /// A load-sharing group's VHIDs, added to its interface (created if no
    /// `[[interface]]` names it).
    pub(super) fn load_sharing(
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
            return Err(self.diag.of(&raw.name, "load_sharing", "name").err("empty"));
        }
        let ifname = raw.interface.get_ref().clone();
        check::ifname(&ifname)
            .map_err(|m| self.diag.of(&raw.interface, &ctx, "interface").err(m))?;
        self.rank_settings(raw.advskew.as_ref(), raw.preempt, &table, &ctx)?;
        let nodes = self.nodes(&raw.nodes, &ctx)?;
        let this_node = match &raw.this_node {
            Some(me) => match me.get_ref().parse::<IpAddr>() {
                Ok(a) if nodes.contains(&a) => Some(a),
                _ => {
                    return Err(self
                        .diag
                        .of(me, &ctx, "self")
                        .err(format!("{:?} is not one of the nodes", me.get_ref())));
                }
            },
            None => None,
        };
        let written = self.level(raw.common(), &ctx)?;
        let level = top.overlay(&written);
        self.protocol_keys(&written, &level, &ctx)?;
        let ids = self.share_ids(raw, &table, &ifname, interfaces, &ctx)?;

        let mut orders = share::assignment(&name, &nodes, &ids);
        let mut vhids = Vec::with_capacity(raw.vhid.len());
        for (v, id) in raw.vhid.iter().zip(ids) {
            let span = v.span();
            let v = v.get_ref();
            let vctx = format!("{ctx} vhid {id}");
            self.rank_settings(v.advskew.as_ref(), v.preempt, &span, &vctx)?;
            let mut spec = self.vhid(&level, &ifname, id, v, &span)?;
            let mut groups = vec![name.clone()];
            groups.extend(self.group_names(&[raw.groups.as_ref(), v.groups.as_ref()], &vctx)?);
            groups.dedup();
            spec.groups = groups;
            let order = orders.remove(&id).unwrap_or_default();
            share::join(
                &mut spec,
                ShareSpec {
                    group: name.clone(),
                    order,
                    this_node,
                },
            );
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

    /// `nodes`: 2 to [`MAX_SHARE_NODES`] addresses, each once.
    fn nodes(&self, raw: &Spanned<Vec<Spanned<String>>>, ctx: &str) -> Result<Vec<IpAddr>, Error> {
        let mut nodes: Vec<IpAddr> = Vec::new();
        for n in raw.get_ref() {
            let at = self.diag.of(n, ctx, "nodes");
            let addr: IpAddr = n
                .get_ref()
                .parse()
                .map_err(|_| at.err(format!("{:?} is not an IP address", n.get_ref())))?;
            if nodes.contains(&addr) {
                return Err(at.err(format!("{addr} is listed twice")));
            }
            nodes.push(addr);
        }
        if !(2..=MAX_SHARE_NODES).contains(&nodes.len()) {
            return Err(self.diag.of(raw, ctx, "nodes").err(format!(
                "{} nodes; a group has 2 to {MAX_SHARE_NODES}",
                nodes.len()
            )));
        }
        Ok(nodes)
    }

    /// The group's VHID numbers in table order: at least one, none already
    /// on the interface, each once.
    fn share_ids(
        &self,
        raw: &RawLoadSharing,
        table: &Range<usize>,
        ifname: &str,
        interfaces: &[InterfaceSpec],
        ctx: &str,
    ) -> Result<Vec<u8>, Error> {
        if raw.vhid.is_empty() {
            return Err(self
                .diag
                .at(table.clone(), ctx, "vhid")
                .err("a load-sharing group needs at least one VHID"));
        }
        let existing: BTreeSet<u8> = interfaces
            .iter()
            .filter(|i| i.name == ifname)
            .flat_map(|i| i.vhids.iter().map(|v| v.vhid))
            .collect();
        let mut seen: BTreeMap<u8, usize> = BTreeMap::new();
        raw.vhid
            .iter()
            .map(|v| self.new_vhid_id(&v.get_ref().id, ctx, &mut seen, Some((ifname, &existing))))
            .collect()
    }

    /// In a load-sharing group the rank sets advskew and preemption is on
    /// ([`share::join`]): a table may not say otherwise.
    fn rank_settings(
        &self,
        advskew: Option<&Spanned<i64>>,
        preempt: Option<bool>,
        table: &Range<usize>,
        ctx: &str,
    ) -> Result<(), Error> {
        if let Some(a) = advskew {
            return Err(self
                .diag
                .of(a, ctx, "advskew")
                .err("set by each node's rank in a load-sharing group; remove it"));
        }
        if preempt == Some(false) {
            return Err(self
                .diag
                .at(table.clone(), ctx, "preempt")
                .err("a load-sharing group needs preemption"));
        }
        Ok(())
    }
}
