//! The carpd configuration each node runs: M VHIDs on each of its links
//! (eth0, eth1, ...) mixing IPv4, IPv6 and dual stack, every fifth owned by
//! hooks, advskews spread so that the masters spread over the nodes; and
//! what a reload fault changes (on eth0).

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use crate::fault::ReloadChange;

/// The interface the link, link-down, recreate and reload faults act on.
pub const IFACE: &str = "eth0";

/// The interface of link `link`.
pub fn iface(link: usize) -> String {
    format!("eth{link}")
}

/// One VHID as one node runs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VhidSpec {
    pub link: usize,
    pub id: u8,
    /// "addr/prefix".
    pub addrs: Vec<String>,
    /// `manage_addresses = false`: the up/down hooks add and remove them.
    pub hooked: bool,
    pub advskew: u8,
}

/// The up and down hook scripts of one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hooks {
    pub up: PathBuf,
    pub down: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeConfig {
    pub advbase: u8,
    pub dead_ratio: u8,
    pub hook_timeout: Duration,
    pub hooks: Hooks,
    pub vhids: Vec<VhidSpec>,
}

/// The addresses of VHID `id` on link `link`: IPv4 (id % 3 == 0), IPv6 (1)
/// or both (2).
pub fn vhid_addrs(link: usize, id: u8) -> Vec<String> {
    let v4 = format!("10.98.{link}.{id}/24");
    let v6 = if link == 0 {
        format!("fd98::{id:x}/64")
    } else {
        format!("fd98:0:0:{link:x}::{id:x}/64")
    };
    match id % 3 {
        0 => vec![v4],
        1 => vec![v6],
        _ => vec![v4, v6],
    }
}

/// Whether the hooks own VHID `id`'s addresses.
pub fn vhid_hooked(id: u8) -> bool {
    id % 5 == 0
}

/// `node`'s advskew for VHID `id`: 20, 60, 100, ... rotating with the id,
/// so each node is the preferred master of about 1/N of the VHIDs.
pub fn base_skew(node: usize, nodes: usize, id: u8) -> u8 {
    let rank = (node + usize::from(id)) % nodes.max(1);
    u8::try_from(20 + 40 * rank).unwrap_or(u8::MAX).min(200)
}

/// The largest advskew the run can configure (base or by a reload).
pub const MAX_SKEW: u8 = 240;

impl NodeConfig {
    /// VHIDs `ids` on each of `links` links.
    pub fn base(
        node: usize,
        nodes: usize,
        links: usize,
        ids: &[u8],
        advbase: u8,
        hooks: Hooks,
    ) -> NodeConfig {
        NodeConfig {
            advbase,
            dead_ratio: 3,
            hook_timeout: Duration::from_secs(5),
            hooks,
            vhids: (0..links.max(1))
                .flat_map(|link| {
                    ids.iter().map(move |id| VhidSpec {
                        link,
                        id: *id,
                        addrs: vhid_addrs(link, *id),
                        hooked: vhid_hooked(*id),
                        advskew: base_skew(node, nodes, *id),
                    })
                })
                .collect(),
        }
    }

    /// This configuration with a reload fault's change applied (to the
    /// VHIDs of eth0).
    pub fn with(&self, change: &ReloadChange) -> NodeConfig {
        let mut c = self.clone();
        match change {
            ReloadChange::Add(ids) => {
                for id in ids {
                    if !c.vhids.iter().any(|v| v.link == 0 && v.id == *id) {
                        c.vhids.push(VhidSpec {
                            link: 0,
                            id: *id,
                            addrs: vhid_addrs(0, *id),
                            hooked: vhid_hooked(*id),
                            advskew: 100,
                        });
                    }
                }
            }
            ReloadChange::Remove(ids) => {
                c.vhids.retain(|v| v.link != 0 || !ids.contains(&v.id));
            }
            ReloadChange::Skew(ids, skew) => {
                let on_eth0 = |v: &&mut VhidSpec| v.link == 0 && ids.contains(&v.id);
                for v in c.vhids.iter_mut().filter(on_eth0) {
                    v.advskew = *skew;
                }
            }
        }
        c
    }

    /// The virtual addresses, without prefix length.
    pub fn addrs(&self) -> BTreeSet<String> {
        self.vhids
            .iter()
            .flat_map(|v| v.addrs.iter())
            .map(|a| strip_len(a).to_string())
            .collect()
    }

    /// The virtual addresses the hooks own, without prefix length.
    pub fn hooked_addrs(&self) -> BTreeSet<String> {
        self.vhids
            .iter()
            .filter(|v| v.hooked)
            .flat_map(|v| v.addrs.iter())
            .map(|a| strip_len(a).to_string())
            .collect()
    }

    /// The virtual addresses as "addr/prefix".
    pub fn cidrs(&self) -> BTreeSet<String> {
        self.vhids
            .iter()
            .flat_map(|v| v.addrs.iter().cloned())
            .collect()
    }

    pub fn to_toml(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "advbase = {}", self.advbase);
        let _ = writeln!(s, "dead_ratio = {}", self.dead_ratio);
        let _ = writeln!(s, "preempt = false");
        let _ = writeln!(s, "password = \"chaos\"");
        let _ = writeln!(s, "hook_timeout = \"{}ms\"", self.hook_timeout.as_millis());
        let links: BTreeSet<usize> = self.vhids.iter().map(|v| v.link).collect();
        for link in links {
            let _ = writeln!(s, "\n[[interface]]\nname = \"{}\"", iface(link));
            for v in self.vhids.iter().filter(|v| v.link == link) {
                self.vhid_toml(&mut s, v);
            }
        }
        s
    }

    fn vhid_toml(&self, s: &mut String, v: &VhidSpec) {
        {
            let addrs: Vec<String> = v.addrs.iter().map(|a| format!("{a:?}")).collect();
            let _ = writeln!(
                s,
                "\n  [[interface.vhid]]\n  id = {}\n  addresses = [{}]\n  advskew = {}",
                v.id,
                addrs.join(", "),
                v.advskew
            );
            if v.hooked {
                let _ = writeln!(
                    s,
                    "  manage_addresses = false\n  up = {:?}\n  down = {:?}",
                    self.hooks.up.display().to_string(),
                    self.hooks.down.display().to_string()
                );
            }
        }
    }
}

pub fn strip_len(cidr: &str) -> &str {
    cidr.split('/').next().unwrap_or(cidr)
}

/// The up (`up` true) or down hook script of a node: it adds (removes)
/// every address of `CARP_ADDRESSES` on the interface carpd passes first,
/// after the delay written in `mode_file` ("slow <seconds>"), and exits
/// with a failure after acting when the file says "fail".
pub fn hook_script(up: bool, mode_file: &str) -> String {
    // Deleting what is not there (down at start) is not worth a log line.
    let (verb, quiet) = if up {
        ("replace", "")
    } else {
        ("del", " 2>/dev/null")
    };
    format!(
        "#!/bin/sh\n\
         # carpd runs this as `<script> <interface> <first address>`.\n\
         mode=$(cat '{mode_file}' 2>/dev/null)\n\
         case \"$mode\" in slow\\ *) sleep \"${{mode#slow }}\" ;; esac\n\
         for a in $CARP_ADDRESSES; do\n\
         \x20 case \"$a\" in\n\
         \x20   *:*) ip addr {verb} \"$a/64\" dev \"$1\"{quiet} ;;\n\
         \x20   *) ip addr {verb} \"$a/24\" dev \"$1\"{quiet} ;;\n\
         \x20 esac\n\
         done\n\
         [ \"$mode\" = fail ] && exit 1\n\
         exit 0\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hooks() -> Hooks {
        Hooks {
            up: "/x/up.sh".into(),
            down: "/x/down.sh".into(),
        }
    }

    #[test]
    fn families_and_hooks_mix() {
        assert_eq!(vhid_addrs(0, 3), ["10.98.0.3/24"]);
        assert_eq!(vhid_addrs(0, 4), ["fd98::4/64"]);
        assert_eq!(vhid_addrs(0, 255), ["10.98.0.255/24"]);
        assert_eq!(vhid_addrs(0, 26), ["10.98.0.26/24", "fd98::1a/64"]);
        assert_eq!(vhid_addrs(3, 26), ["10.98.3.26/24", "fd98:0:0:3::1a/64"]);
        let c = NodeConfig::base(0, 3, 1, &(1..=50).collect::<Vec<_>>(), 1, hooks());
        assert_eq!(c.vhids.iter().filter(|v| v.hooked).count(), 10);
        assert!(c.hooked_addrs().contains("10.98.0.5"));
        assert_eq!(c.addrs().len(), 50 + 50 / 3 + 1);
    }

    #[test]
    fn skews_rotate_over_nodes() {
        let firsts: BTreeSet<usize> = (1..=30u8)
            .map(|id| (0..3).min_by_key(|n| base_skew(*n, 3, id)).unwrap_or(0))
            .collect();
        assert_eq!(firsts.len(), 3);
        assert!((0..3).all(|n| base_skew(n, 3, 7) <= MAX_SKEW));
    }

    #[test]
    fn reload_changes_touch_eth0_only() {
        let c = NodeConfig::base(0, 2, 2, &[1, 2], 1, hooks());
        let removed = c.with(&ReloadChange::Remove(vec![2]));
        assert_eq!(removed.vhids.len(), 3);
        assert!(removed.vhids.iter().any(|v| v.link == 1 && v.id == 2));
    }

    #[test]
    fn reload_changes() {
        let c = NodeConfig::base(1, 3, 1, &[1, 2, 3], 1, hooks());
        let added = c.with(&ReloadChange::Add(vec![4, 5]));
        assert_eq!(added.vhids.len(), 5);
        assert!(added.to_toml().contains("id = 5"));
        let removed = c.with(&ReloadChange::Remove(vec![2]));
        assert_eq!(
            removed.vhids.iter().map(|v| v.id).collect::<Vec<_>>(),
            [1, 3]
        );
        let skewed = c.with(&ReloadChange::Skew(vec![3], 200));
        assert_eq!(skewed.vhids[2].advskew, 200);
        assert_eq!(skewed.vhids[0], c.vhids[0]);
    }

    #[test]
    fn toml_names_hooks_for_hooked_vhids_only() {
        let c = NodeConfig::base(0, 2, 1, &[4, 5], 1, hooks());
        let t = c.to_toml();
        assert_eq!(t.matches("manage_addresses = false").count(), 1);
        let four = NodeConfig::base(0, 2, 4, &[4, 5], 1, hooks()).to_toml();
        assert_eq!(four.matches("[[interface]]").count(), 4);
        assert_eq!(four.matches("[[interface.vhid]]").count(), 8);
        assert!(four.contains("name = \"eth3\"") && four.contains("10.98.3.5/24"));
        assert!(t.contains("up = \"/x/up.sh\""));
        assert!(t.contains("addresses = [\"10.98.0.5/24\", \"fd98::5/64\"]"));
    }

    #[test]
    fn hook_scripts() {
        let up = hook_script(true, "/x/mode");
        assert!(up.contains("ip addr replace \"$a/24\" dev \"$1\""));
        assert!(up.contains("sleep \"${mode#slow }\""));
        let down = hook_script(false, "/x/mode");
        assert!(down.contains("ip addr del \"$a/64\" dev \"$1\""));
    }
}
