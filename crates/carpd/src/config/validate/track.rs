//! `[[track]]` tables: health trackers and the VHIDs each covers.

use std::collections::BTreeSet;
use std::time::Duration;

use carp_engine::{InterfaceSpec, TrackScope, TrackerKind, TrackerSpec, VhidKey};
use toml::Spanned;

use super::Validator;
use crate::config::check;
use crate::config::schema::{RawFile, RawTrack, RawVhid};
use crate::error::Error;

/// The demotion of a failing link or command tracker: enough to lose
/// against a healthy peer in both demotion styles.
const DEFAULT_TRACK_WEIGHT: u8 = 50;
/// How often commands and files are checked.
const DEFAULT_CHECK_INTERVAL: Duration = Duration::from_secs(2);
const DEFAULT_FILE_INTERVAL: Duration = Duration::from_secs(1);
const DEFAULT_RISE: u32 = 2;
const DEFAULT_FALL: u32 = 3;

impl Validator<'_> {
    /// Every `track` table, with the VHIDs it covers: top-level ones every
    /// VHID or their `groups`; an interface's its group; a load-sharing
    /// group's its VHIDs; a VHID's that VHID.
    pub(super) fn trackers(
        &self,
        raw: &RawFile,
        interfaces: &[InterfaceSpec],
    ) -> Result<Vec<TrackerSpec>, Error> {
        let mut out = Vec::new();
        for t in &raw.track {
            let scope = self.top_level_scope(t.get_ref(), interfaces)?;
            out.push(self.tracker(t, "", scope)?);
        }
        for iface in &raw.interface {
            let iface = iface.get_ref();
            let name = iface.name.get_ref();
            let ctx = format!("interface \"{name}\"");
            for t in &iface.track {
                out.push(self.tracker(t, &ctx, TrackScope::Groups(vec![name.clone()]))?);
            }
            self.vhid_trackers(&iface.vhid, name, &mut out)?;
        }
        for ls in &raw.load_sharing {
            let ls = ls.get_ref();
            let name = ls.name.get_ref();
            let ctx = format!("load_sharing \"{name}\"");
            for t in &ls.track {
                out.push(self.tracker(t, &ctx, TrackScope::Groups(vec![name.clone()]))?);
            }
            self.vhid_trackers(&ls.vhid, ls.interface.get_ref(), &mut out)?;
        }
        Ok(out)
    }

    /// What a top-level tracker covers: every VHID, or those in its
    /// `groups`, each of which some VHID must be in.
    fn top_level_scope(
        &self,
        t: &RawTrack,
        interfaces: &[InterfaceSpec],
    ) -> Result<TrackScope, Error> {
        let Some(groups) = &t.groups else {
            return Ok(TrackScope::All);
        };
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
        let names = self.group_names(&[Some(groups)], "track")?;
        if let Some(g) = groups
            .iter()
            .find(|g| !known.contains(g.get_ref().as_str()))
        {
            return Err(self
                .diag
                .of(g, "track", "groups")
                .err(format!("no VHID is in group {:?}", g.get_ref())));
        }
        Ok(TrackScope::Groups(names))
    }

    /// The trackers in the VHID tables `tables` on `ifname`.
    fn vhid_trackers(
        &self,
        tables: &[Spanned<RawVhid>],
        ifname: &str,
        out: &mut Vec<TrackerSpec>,
    ) -> Result<(), Error> {
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
        Ok(())
    }

    /// One `track` table in the table `ctx` (empty at the top level).
    fn tracker(
        &self,
        t: &Spanned<RawTrack>,
        ctx: &str,
        scope: TrackScope,
    ) -> Result<TrackerSpec, Error> {
        let span = t.span();
        let t = t.get_ref();
        let top_level = ctx.is_empty();
        let ctx = if top_level {
            "track".to_string()
        } else {
            format!("{ctx}: track")
        };
        if !top_level && let Some(g) = t.groups.as_ref().and_then(|g| g.first()) {
            return Err(self.diag.of(g, &ctx, "groups").err(
                "only a top-level [[track]] names groups; this one covers the VHIDs of its table",
            ));
        }
        let weight = t
            .weight
            .as_ref()
            .map(|w| self.int(w, &ctx, "weight", 255))
            .transpose()?
            .map(|w| u8::try_from(w).unwrap_or(u8::MAX));
        let kind = match (&t.link, &t.command, &t.file) {
            (Some(link), None, None) => self.link_tracker(t, link, &ctx)?,
            (None, Some(command), None) => self.command_tracker(t, command, &ctx)?,
            (None, None, Some(file)) => self.file_tracker(t, file, &ctx)?,
            _ => {
                return Err(self
                    .diag
                    .at(span, &ctx, "")
                    .err("set exactly one of link, command and file"));
            }
        };
        // a file holds the demotion itself: its weight is a multiplier
        let default_weight = match kind {
            TrackerKind::File { .. } => 1,
            _ => DEFAULT_TRACK_WEIGHT,
        };
        Ok(TrackerSpec {
            kind,
            weight: weight.unwrap_or(default_weight),
            scope,
        })
    }

    fn link_tracker(
        &self,
        t: &RawTrack,
        link: &Spanned<String>,
        ctx: &str,
    ) -> Result<TrackerKind, Error> {
        check::ifname(link.get_ref()).map_err(|m| self.diag.of(link, ctx, "link").err(m))?;
        self.only_commands(t, "link", ctx)?;
        if let Some(i) = &t.interval {
            return Err(self
                .diag
                .of(i, ctx, "interval")
                .err("a link tracker follows link events; remove it"));
        }
        Ok(TrackerKind::Link {
            interface: link.get_ref().clone(),
        })
    }

    fn command_tracker(
        &self,
        t: &RawTrack,
        command: &Spanned<String>,
        ctx: &str,
    ) -> Result<TrackerKind, Error> {
        if command.get_ref().trim().is_empty() {
            return Err(self.diag.of(command, ctx, "command").err("empty command"));
        }
        let interval = self
            .duration(t.interval.as_ref(), ctx, "interval")?
            .unwrap_or(DEFAULT_CHECK_INTERVAL);
        let count =
            |v: Option<&Spanned<i64>>, key: &str| v.map(|v| self.int(v, ctx, key, 100)).transpose();
        Ok(TrackerKind::Command {
            command: command.get_ref().clone(),
            interval,
            timeout: self
                .duration(t.timeout.as_ref(), ctx, "timeout")?
                .unwrap_or(interval),
            rise: count(t.rise.as_ref(), "rise")?.unwrap_or(DEFAULT_RISE),
            fall: count(t.fall.as_ref(), "fall")?.unwrap_or(DEFAULT_FALL),
        })
    }

    fn file_tracker(
        &self,
        t: &RawTrack,
        file: &Spanned<String>,
        ctx: &str,
    ) -> Result<TrackerKind, Error> {
        if file.get_ref().is_empty() {
            return Err(self.diag.of(file, ctx, "file").err("empty path"));
        }
        self.only_commands(t, "file", ctx)?;
        Ok(TrackerKind::File {
            path: self.resolve_path(file.get_ref()),
            interval: self
                .duration(t.interval.as_ref(), ctx, "interval")?
                .unwrap_or(DEFAULT_FILE_INTERVAL),
        })
    }

    /// Refuses the keys only command trackers have in a `kind` tracker.
    fn only_commands(&self, t: &RawTrack, kind: &str, ctx: &str) -> Result<(), Error> {
        let extra = [
            ("timeout", t.timeout.as_ref().map(Spanned::span)),
            ("rise", t.rise.as_ref().map(Spanned::span)),
            ("fall", t.fall.as_ref().map(Spanned::span)),
        ];
        match extra.into_iter().find_map(|(k, s)| s.map(|s| (k, s))) {
            Some((key, span)) => Err(self
                .diag
                .at(span, ctx, key)
                .err(format!("only for command trackers, not {kind}"))),
            None => Ok(()),
        }
    }

    /// A tracker's count or weight: 1 to `hi`.
    fn int(&self, v: &Spanned<i64>, ctx: &str, key: &str, hi: u32) -> Result<u32, Error> {
        check::int_in(&self.diag.of(v, ctx, key), *v.get_ref(), 1, hi)
    }

    /// A tracker's interval or timeout, if set.
    fn duration(
        &self,
        v: Option<&Spanned<String>>,
        ctx: &str,
        key: &str,
    ) -> Result<Option<Duration>, Error> {
        v.map(|v| check::duration(&self.diag.of(v, ctx, key), v.get_ref(), "2s"))
            .transpose()
    }
}
