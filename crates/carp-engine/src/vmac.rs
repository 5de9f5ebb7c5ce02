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
//! Its settings are made on the child alone, never on `all`, `default` or
//! the parent: `arp_ignore=1` (answer ARP only for the addresses it holds, not
//! for the host's other addresses), `arp_announce=2` (ARP requests from the
//! child name one of its own addresses), `rp_filter=0` (replies may come
//! back through the parent), set over netlink (so a read-only `/proc/sys`
//! does not stop them), as is IPv6 `addr_gen_mode=1` (the nodes' children
//! share the MAC, so no link-local address from it). The kernel takes the
//! other IPv6 settings only through `/proc/sys`: `accept_ra=0`,
//! `autoconf=0`, `accept_dad=0`, or `disable_ipv6=1` for a VHID without
//! IPv6 addresses; when it is read-only they are left as they are, with a
//! warning. The parent also sees every ARP request and
//! answers for the VHID's addresses with its own MAC unless its
//! `arp_ignore` is at least 1, and replies from the addresses may leave
//! through it, whose ARP requests then name them with the real MAC unless
//! its `arp_announce` is 2. carpd only warns about those two, since they
//! are the operator's and also govern the parent's other addresses.

use std::io;
use std::path::PathBuf;

use crate::error::Error;
use crate::netlink::{Ipv4Conf, MAX_NAME_LEN, Netlink};

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
            Ok(index) => match configure_child(netlink, index, &child.name, has_ipv6).await {
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
                let leaks = parent_arp_leaks(parent_name).await;
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

/// Set the child's per-interface settings: over netlink what the kernel
/// takes there, the rest of IPv6 through `/proc/sys` off the runtime's
/// thread. Only a failure of the netlink part is an error.
async fn configure_child(
    netlink: &Netlink,
    index: u32,
    child: &str,
    has_ipv6: bool,
) -> Result<(), Error> {
    netlink
        .set_ipv4_conf(
            index,
            &[
                (Ipv4Conf::ArpIgnore, 1),
                (Ipv4Conf::ArpAnnounce, 2),
                (Ipv4Conf::RpFilter, 0),
            ],
        )
        .await?;
    // the other nodes' children have the same MAC: no link-local address
    // derived from it
    match netlink.set_no_ipv6_addr_gen(index).await {
        Ok(()) => {}
        // a kernel without IPv6 (or with it disabled on the child)
        Err(Error::Io { source, .. })
            if !has_ipv6 && source.raw_os_error() == Some(libc::EAFNOSUPPORT) => {}
        Err(e) => return Err(e),
    }
    let settings = ipv6_sysctls(has_ipv6);
    let name = child.to_owned();
    let failed = tokio::task::spawn_blocking(move || write_sysctls(&name, settings))
        .await
        .unwrap_or_else(|e| vec![format!("the settings task failed: {e}")]);
    if !failed.is_empty() {
        tracing::warn!(
            child,
            "cannot set {}; the virtual MAC works, but {} (these settings need a writable \
             /proc/sys/net/ipv6/conf)",
            failed.join(", "),
            if has_ipv6 {
                "router advertisements may give it addresses of its own"
            } else {
                "it keeps IPv6 enabled and may take addresses from router advertisements"
            }
        );
    }
    Ok(())
}

/// The child's IPv6 sysctls the kernel takes only through `/proc/sys`.
fn ipv6_sysctls(has_ipv6: bool) -> Vec<(&'static str, &'static str)> {
    if has_ipv6 {
        // no addresses from router adverts, and the virtual addresses are
        // usable at once
        vec![("accept_ra", "0"), ("autoconf", "0"), ("accept_dad", "0")]
    } else {
        vec![("disable_ipv6", "1")]
    }
}

/// Write `net.ipv6.conf.<child>.<key>` for each setting, in the network
/// namespace of the calling thread (a blocking-pool thread, started by the
/// runtime's thread and so in its namespace); returns the ones that failed,
/// with why. Blocks.
fn write_sysctls(child: &str, settings: Vec<(&'static str, &'static str)>) -> Vec<String> {
    let mut failed = Vec::new();
    for (key, value) in settings {
        let path = conf("ipv6", child, key);
        match std::fs::write(&path, value) {
            Ok(()) => {}
            // no IPv6 in this kernel: nothing to turn off
            Err(e) if e.kind() == io::ErrorKind::NotFound && key == "disable_ipv6" => {}
            Err(e) => failed.push(format!("net.ipv6.conf.{child}.{key}={value} ({e})")),
        }
    }
    failed
}

/// The parent's ARP settings that let its real MAC leak out for addresses
/// it does not hold, as `sysctl` assignments to fix (the kernel applies the
/// larger of `all` and the interface's value). Read from `/proc/sys` (which
/// works read-only too) off the runtime's thread: `all` has no netlink
/// form. An unreadable setting counts as 0.
async fn parent_arp_leaks(parent: &str) -> Vec<String> {
    let parent = parent.to_owned();
    tokio::task::spawn_blocking(move || {
        let read = |ifname: &str, key: &str| {
            std::fs::read_to_string(conf("ipv4", ifname, key))
                .ok()
                .and_then(|s| s.trim().parse::<u32>().ok())
                .unwrap_or(0)
        };
        let mut out = Vec::new();
        for (key, want) in [("arp_ignore", 1), ("arp_announce", 2)] {
            if read("all", key).max(read(&parent, key)) < want {
                out.push(format!("net.ipv4.conf.{parent}.{key}={want}"));
            }
        }
        out
    })
    .await
    .unwrap_or_default()
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
