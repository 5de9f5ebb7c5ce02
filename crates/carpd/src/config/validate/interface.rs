//! `[[interface]]` tables and the VHID numbers on an interface.

use std::collections::{BTreeMap, BTreeSet};

use carp_engine::InterfaceSpec;
use toml::Spanned;

use super::Validator;
use crate::config::cascade::Level;
use crate::config::check;
use crate::config::schema::RawInterface;
use crate::error::Error;

impl Validator<'_> {
    pub(super) fn interface(
        &mut self,
        top: &Level,
        raw: &RawInterface,
    ) -> Result<InterfaceSpec, Error> {
        let name = raw.name.get_ref().clone();
        let ctx = format!("interface \"{name}\"");
        let mut level = self.level_with_source(raw.common(), raw.source.as_ref(), &ctx)?;
        level.ignore_link_state = raw.ignore_link_state;
        let written = level;
        let level = top.overlay(&written);
        self.protocol_keys(&written, &level, &ctx)?;

        let mut ids: BTreeMap<u8, usize> = BTreeMap::new();
        let mut vhids = Vec::with_capacity(raw.vhid.len());
        for v in &raw.vhid {
            let id = self.new_vhid_id(&v.get_ref().id, &ctx, &mut ids, None)?;
            let mut spec = self.vhid(&level, &name, id, v.get_ref(), &v.span())?;
            spec.groups =
                self.group_names(&[raw.groups.as_ref(), v.get_ref().groups.as_ref()], &ctx)?;
            vhids.push(spec);
        }
        Ok(InterfaceSpec {
            name,
            ignore_link_state: level.ignore_link_state.unwrap_or(false),
            vhids,
        })
    }

    /// A VHID table's `id`: in range, not one of `taken` (VHIDs the
    /// interface named in `taken` already has from other tables) and not
    /// in `ids` (the ones so far in this table, with their lines), to which
    /// it is added.
    pub(super) fn new_vhid_id(
        &self,
        id: &Spanned<i64>,
        ctx: &str,
        ids: &mut BTreeMap<u8, usize>,
        taken: Option<(&str, &BTreeSet<u8>)>,
    ) -> Result<u8, Error> {
        let at = self.diag.of(id, ctx, "vhid id");
        let id = check::vhid_id(&at, *id.get_ref())?;
        if let Some((ifname, taken)) = taken
            && taken.contains(&id)
        {
            return Err(at.err(format!(
                "vhid {id} is already configured on interface \"{ifname}\""
            )));
        }
        if let Some(first) = ids.insert(id, at.line()) {
            return Err(at.err(format!("vhid {id} is already configured at line {first}")));
        }
        Ok(id)
    }
}
