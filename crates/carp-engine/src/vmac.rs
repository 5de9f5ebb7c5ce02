//! The virtual MAC: a macvlan child of the parent interface with the MAC
//! 00:00:5e:00:01:<vhid> (00:00:5e:00:02:<vhid> for a VHID without IPv4
//! addresses) holds the VHID's addresses while MASTER, so that neighbours
//! keep their ARP and neighbour cache entries across a failover and only
//! the switches relearn the port.
//!
//! The child is in bridge mode: other macvlan devices on the same parent
//! (containers, typically) can then reach the addresses and hear the
//! gratuitous ARP, which private mode would cut off. It is created down at
//! start, up only while MASTER, and deleted on exit.
//!
//! Its sysctls are set on the child alone, never on `all`, `default` or the
//! parent: `arp_ignore=1` (answer ARP only for the addresses it holds, not
//! for the host's other addresses), `arp_announce=2` (ARP requests from the
//! child name one of its own addresses), `rp_filter=0` (replies may come
//! back through the parent). The parent also sees every ARP request and
//! answers for the VHID's addresses with its own MAC unless its
//! `arp_ignore` is at least 1, and replies from the addresses may leave
//! through it, whose ARP requests then name them with the real MAC unless
//! its `arp_announce` is 2. carpd only warns about those two, since they
//! are the operator's and also govern the parent's other addresses.

use std::io;
use std::path::PathBuf;

use crate::netlink::{MAX_NAME_LEN, Netlink};

/// The macvlan child of one VHID.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Child {
    pub(crate) name: String,
    pub(crate) mac: [u8; 6],
}

/// The virtual MAC of a VHID: 00:00:5e:00:01:<vhid>, or 00:00:5e:00:02:<vhid>
/// for a VHID without IPv4 addresses (the VRRP assignments, as OpenBSD).
pub fn mac(vhid: u8, has_ipv4: bool) -> [u8; 6] {
    [
        0x00,
        0x00,
        0x5e,
        0x00,
        if has_ipv4 { 0x01 } else { 0x02 },
        vhid,
    ]
}

/// The child's name: `<parent>.c<vhid>`, the parent's name cut short so the
/// whole fits in 15 bytes.
pub fn child_name(parent: &str, vhid: u8) -> String {
    let suffix = format!(".c{vhid}");
    let mut keep = MAX_NAME_LEN.saturating_sub(suffix.len()).min(parent.len());
    while !parent.is_char_boundary(keep) {
        keep -= 1;
    }
    format!("{}{suffix}", &parent[..keep])
}

/// A VHID's macvlan child while it exists: created down at start, up only
/// while MASTER, deleted on exit.
#[derive(Debug)]
pub(crate) struct Device {
    index: u32,
    mac: [u8; 6],
    up: bool,
}

impl Device {
    /// Create `child` (down) on the parent `parent_index`, named
    /// `parent_name`, and set its sysctls. On failure the VHID runs on the
    /// parent with its real MAC, and says so.
    pub(crate) async fn create(
        netlink: &Netlink,
        parent_index: u32,
        parent_name: &str,
        child: &Child,
        has_ipv4: bool,
        has_ipv6: bool,
    ) -> Option<Device> {
        let created = match netlink
            .create_macvlan(parent_index, &child.name, child.mac)
            .await
        {
            Ok(index) => match configure_child(&child.name, has_ipv6) {
                Ok(()) => Ok(index),
                Err(e) => {
                    let _ = netlink.delete_link(index).await;
                    Err(e.to_string())
                }
            },
            Err(e) => Err(e.to_string()),
        };
        match created {
            Ok(index) => {
                tracing::info!(child = %child.name,
                    "virtual MAC {} on {}", show_mac(child.mac), child.name);
                let leaks = parent_arp_leaks(parent_name);
                if has_ipv4 && !leaks.is_empty() {
                    tracing::warn!(
                        "{parent_name} may still show its own MAC for the virtual addresses; set {}",
                        leaks.join(" and ")
                    );
                }
                Some(Device {
                    index,
                    mac: child.mac,
                    up: false,
                })
            }
            Err(e) => {
                tracing::error!(child = %child.name, error = %e,
                    "cannot create the virtual MAC interface; using the real MAC");
                None
            }
        }
    }

    pub(crate) fn index(&self) -> u32 {
        self.index
    }

    pub(crate) fn mac(&self) -> [u8; 6] {
        self.mac
    }

    /// Up (while MASTER): group advertisements leave from it.
    pub(crate) fn is_up(&self) -> bool {
        self.up
    }

    /// Bring it up or down; a failure is logged and leaves it as it was.
    pub(crate) async fn set_up(&mut self, netlink: &Netlink, up: bool) {
        if self.up == up {
            return;
        }
        match netlink.set_link_up(self.index, up).await {
            Ok(()) => self.up = up,
            Err(e) => {
                tracing::warn!(error = %e,
                    "cannot set the virtual MAC interface {}", if up { "up" } else { "down" });
            }
        }
    }

    pub(crate) async fn delete(self, netlink: &Netlink) {
        if let Err(e) = netlink.delete_link(self.index).await {
            tracing::warn!(error = %e, "cannot delete the virtual MAC interface");
        }
    }
}

fn show_mac(mac: [u8; 6]) -> String {
    mac.map(|b| format!("{b:02x}")).join(":")
}

fn conf(family: &str, ifname: &str, key: &str) -> PathBuf {
    PathBuf::from(format!("/proc/sys/net/{family}/conf/{ifname}/{key}"))
}

/// Set the child's sysctls (in the namespace of the calling thread).
fn configure_child(child: &str, has_ipv6: bool) -> io::Result<()> {
    let mut settings = vec![
        ("ipv4", "arp_ignore", "1"),
        ("ipv4", "arp_announce", "2"),
        ("ipv4", "rp_filter", "0"),
    ];
    if has_ipv6 {
        settings.extend([
            // the other nodes' children have the same MAC: no link-local
            // address derived from it, no addresses from router adverts,
            // and the virtual addresses are usable at once
            ("ipv6", "addr_gen_mode", "1"),
            ("ipv6", "accept_ra", "0"),
            ("ipv6", "autoconf", "0"),
            ("ipv6", "accept_dad", "0"),
        ]);
    } else {
        settings.push(("ipv6", "disable_ipv6", "1"));
    }
    for (family, key, value) in settings {
        let path = conf(family, child, key);
        std::fs::write(&path, value)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
    }
    Ok(())
}

/// The parent's ARP settings that let its real MAC leak out for addresses
/// it does not hold, as `sysctl` assignments to fix (the kernel applies the
/// larger of `all` and the interface's value).
fn parent_arp_leaks(parent: &str) -> Vec<String> {
    let read = |ifname: &str, key: &str| {
        std::fs::read_to_string(conf("ipv4", ifname, key))
            .ok()
            .and_then(|s| s.trim().parse::<u32>().ok())
            .unwrap_or(0)
    };
    let mut out = Vec::new();
    for (key, want) in [("arp_ignore", 1), ("arp_announce", 2)] {
        if read("all", key).max(read(parent, key)) < want {
            out.push(format!("net.ipv4.conf.{parent}.{key}={want}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs() {
        assert_eq!(mac(7, true), [0, 0, 0x5e, 0, 1, 7]);
        assert_eq!(mac(255, false), [0, 0, 0x5e, 0, 2, 255]);
    }

    #[test]
    fn names_fit() {
        assert_eq!(child_name("eth0", 7), "eth0.c7");
        assert_eq!(child_name("enp0s31f6", 255), "enp0s31f6.c255");
        assert_eq!(child_name("verylongname012", 1), "verylongname.c1");
        assert_eq!(child_name("verylongname012", 200), "verylongna.c200");
        for parent in ["a", "exactly15bytes!", "éééééééé"] {
            for vhid in [1, 42, 255] {
                assert!(child_name(parent, vhid).len() <= MAX_NAME_LEN);
            }
        }
    }
}
