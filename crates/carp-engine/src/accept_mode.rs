//! VRRPv3 `accept_mode = false` (RFC 9568 6.1): a non-owner master must not
//! accept packets addressed to the virtual addresses, VRRP itself and
//! neighbour discovery excepted. carpd's master installs the addresses, so
//! the kernel would accept them; an nftables table (`inet carpd_accept_mode`,
//! one input chain) drops them instead.
//!
//! The rules name every address of every such VHID, whatever its state: an
//! address only reaches the input hook while it is local, that is while the
//! VHID is MASTER, so nothing has to follow the transitions, and a takeover
//! never opens a window before the rules catch up.
//!
//! One task owns the table and rewrites it whole (one `nft` transaction)
//! whenever the set of addresses changes; the VHID tasks and the engine
//! never wait for it. Each `nft` run is bounded. The table goes when the
//! engine stops; after a crash, the next start replaces what was left.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::net::IpAddr;
use std::process::Stdio;
use std::time::Duration;

use carp_proto::vrrp;
use tokio::process::Command;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::spec::{EngineSpec, Protocol};

/// The nftables table carpd owns.
pub const TABLE: &str = "carpd_accept_mode";

/// How long one `nft` run may take before it is killed; within the
/// engine's bound on stopping, so that the table goes on a clean exit.
const NFT_BOUND: Duration = Duration::from_millis(1500);

/// The addresses whose traffic is dropped: those of the VRRP VHIDs with
/// `accept_mode = false`, but for the address owner's (priority 255),
/// which are its own and always accepted.
pub(crate) fn dropped_addresses(spec: &EngineSpec) -> BTreeSet<IpAddr> {
    spec.interfaces
        .iter()
        .flat_map(|i| &i.vhids)
        .filter(|v| {
            matches!(&v.protocol, Protocol::Vrrp(r)
                if !r.accept_mode && r.priority != vrrp::OWNER_PRIORITY)
        })
        .flat_map(|v| v.addresses.iter().map(|a| a.addr))
        .collect()
}

/// The handle: tell the task which addresses to drop.
#[derive(Debug)]
pub(crate) struct AcceptFilter {
    wanted: watch::Sender<BTreeSet<IpAddr>>,
}

impl AcceptFilter {
    /// Start the task with `addresses`; it removes the table when `cancel`
    /// fires.
    pub(crate) fn start(
        addresses: BTreeSet<IpAddr>,
        cancel: CancellationToken,
    ) -> (AcceptFilter, JoinHandle<()>) {
        let (wanted, rx) = watch::channel(addresses);
        (AcceptFilter { wanted }, tokio::spawn(run(rx, cancel)))
    }

    /// Drop traffic to `addresses` from now on (and to no other).
    pub(crate) fn set(&self, addresses: BTreeSet<IpAddr>) {
        self.wanted.send_if_modified(|w| {
            let changed = *w != addresses;
            *w = addresses;
            changed
        });
    }
}

async fn run(mut wanted: watch::Receiver<BTreeSet<IpAddr>>, cancel: CancellationToken) {
    // what a crashed predecessor left is replaced (or removed) at once
    let mut installed = true;
    loop {
        let addresses = wanted.borrow_and_update().clone();
        if !addresses.is_empty() || installed {
            apply(&addresses).await;
            installed = !addresses.is_empty();
        }
        tokio::select! {
            changed = wanted.changed() => if changed.is_err() { break },
            () = cancel.cancelled() => break,
        }
    }
    if installed {
        apply(&BTreeSet::new()).await;
    }
}

/// Replace the table by one dropping traffic to `addresses` (none: remove
/// it), logging a failure.
async fn apply(addresses: &BTreeSet<IpAddr>) {
    let script = script(addresses);
    let mut command = Command::new("nft");
    command
        .arg(&script)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    match run_bounded(command).await {
        Ok(()) => tracing::debug!(addresses = addresses.len(), "accept_mode filter applied"),
        // without any such VHID, a missing nft only means nothing to remove
        Err(e) if addresses.is_empty() => {
            tracing::debug!(error = %e, "accept_mode filter not removed");
        }
        Err(e) => tracing::error!(
            error = %e,
            "cannot install the accept_mode = false filter: traffic to the virtual addresses is accepted"
        ),
    }
}

/// Run `command` (started on the blocking pool: `exec` may hang on a file
/// system) for at most [`NFT_BOUND`].
async fn run_bounded(mut command: Command) -> Result<(), String> {
    let spawned = tokio::task::spawn_blocking(move || command.spawn()).await;
    let child = match spawned {
        Ok(Ok(child)) => child,
        Ok(Err(e)) => return Err(format!("cannot run nft: {e}")),
        Err(e) => return Err(format!("cannot run nft: {e}")),
    };
    // the child is killed if the bound passes (kill_on_drop)
    match tokio::time::timeout(NFT_BOUND, child.wait_with_output()).await {
        Err(_) => Err(format!("nft took longer than {NFT_BOUND:?}")),
        Ok(Err(e)) => Err(format!("nft: {e}")),
        Ok(Ok(out)) if out.status.success() => Ok(()),
        Ok(Ok(out)) => Err(format!(
            "nft: {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )),
    }
}

/// One nftables transaction: the table is created (so that deleting it
/// cannot fail), deleted, and made again with the rules if there are
/// addresses.
fn script(addresses: &BTreeSet<IpAddr>) -> String {
    let mut s = format!("table inet {TABLE}\ndelete table inet {TABLE}\n");
    if addresses.is_empty() {
        return s;
    }
    let list = |v6: bool| {
        addresses
            .iter()
            .filter(|a| a.is_ipv6() == v6)
            .map(IpAddr::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    };
    let (v4, v6) = (list(false), list(true));
    let _ = write!(
        s,
        "table inet {TABLE} {{\n  chain input {{\n    type filter hook input priority -10; policy accept;\n"
    );
    if !v4.is_empty() {
        let _ = writeln!(s, "    ip daddr {{ {v4} }} ip protocol != 112 drop");
    }
    if !v6.is_empty() {
        let _ = writeln!(
            s,
            "    ip6 daddr {{ {v6} }} icmpv6 type {{ nd-neighbor-solicit, nd-neighbor-advert }} accept"
        );
        let _ = writeln!(s, "    ip6 daddr {{ {v6} }} meta l4proto != 112 drop");
    }
    s.push_str("  }\n}\n");
    s
}

#[cfg(test)]
mod tests {
    use carp_proto::HmacMode;

    use super::*;
    use crate::spec::{InterfaceSpec, VhidSpec, VirtualAddr, VrrpSpec};

    fn vhid(id: u8, addr: &str, protocol: Protocol) -> VhidSpec {
        let addr = VirtualAddr {
            addr: addr.parse().unwrap(),
            prefix_len: 24,
        };
        let mut v = VhidSpec::new(id, vec![addr], Vec::new(), HmacMode::Bsd);
        v.protocol = protocol;
        v
    }

    fn vrrp(priority: u8, accept_mode: bool) -> Protocol {
        Protocol::Vrrp(VrrpSpec {
            version: vrrp::Version::V3,
            priority,
            interval_cs: 100,
            simple_auth: false,
            accept_mode,
        })
    }

    #[test]
    fn only_non_owners_without_accept_mode_drop() {
        let spec = EngineSpec {
            interfaces: vec![InterfaceSpec {
                name: "eth0".into(),
                ignore_link_state: false,
                vhids: vec![
                    vhid(1, "10.0.0.1", Protocol::Carp),
                    vhid(2, "10.0.0.2", vrrp(100, true)),
                    vhid(3, "10.0.0.3", vrrp(100, false)),
                    vhid(4, "10.0.0.4", vrrp(255, false)),
                ],
            }],
            trackers: Vec::new(),
        };
        let want: BTreeSet<IpAddr> = ["10.0.0.3".parse().unwrap()].into();
        assert_eq!(dropped_addresses(&spec), want);
    }

    #[test]
    fn the_script_replaces_the_table_in_one_transaction() {
        assert_eq!(
            script(&BTreeSet::new()),
            "table inet carpd_accept_mode\ndelete table inet carpd_accept_mode\n"
        );
        let addrs: BTreeSet<IpAddr> = ["10.0.0.1", "fe80::1", "2001:db8::1", "10.0.0.2"]
            .iter()
            .map(|a| a.parse().unwrap())
            .collect();
        let s = script(&addrs);
        assert!(s.starts_with(
            "table inet carpd_accept_mode\ndelete table inet carpd_accept_mode\ntable inet carpd_accept_mode {\n"
        ));
        assert!(s.contains("ip daddr { 10.0.0.1, 10.0.0.2 } ip protocol != 112 drop\n"));
        assert!(s.contains("ip6 daddr { 2001:db8::1, fe80::1 } icmpv6 type"));
        assert!(s.contains("ip6 daddr { 2001:db8::1, fe80::1 } meta l4proto != 112 drop\n"));
        let v4_only: BTreeSet<IpAddr> = [addrs.iter().next().copied().unwrap()].into();
        assert!(!script(&v4_only).contains("ip6"));
    }
}
