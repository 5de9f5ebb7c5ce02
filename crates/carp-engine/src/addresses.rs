//! A VHID's virtual addresses on the host: added while MASTER, removed
//! otherwise, and removed at start when a previous run left them behind.
//! A change that fails is tried again every [`RETRY`] until it succeeds:
//! a BACKUP left holding the addresses would make two hosts answer for
//! them.

use std::time::Duration;

use tokio::time::Instant;

use crate::netlink::Netlink;
use crate::spec::{VhidSpec, VirtualAddr};

/// How often a failed change is tried again.
const RETRY: Duration = Duration::from_secs(1);

/// What to do to every address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Change {
    Add,
    Remove,
    /// At start: whatever is there was left by a previous run.
    RemoveStale,
}

impl Change {
    fn done(self) -> &'static str {
        match self {
            Change::Add => "added",
            Change::Remove | Change::RemoveStale => "removed",
        }
    }

    fn failure(self) -> &'static str {
        match self {
            Change::Add => "cannot add address (trying again every second while MASTER)",
            Change::Remove => "cannot remove address (trying again every second while not MASTER)",
            Change::RemoveStale => {
                "cannot remove an address left by a previous run (trying again every second while not MASTER)"
            }
        }
    }
}

/// The addresses of one VHID and whether they are in line with its state.
#[derive(Debug)]
pub(crate) struct Addresses {
    addresses: Vec<VirtualAddr>,
    /// Label of the IPv4 addresses.
    label: Option<String>,
    /// `false`: scripts own the addresses, carpd leaves them alone.
    managed: bool,
    /// When to try the last change again (`None`: it succeeded).
    retry_at: Option<Instant>,
}

impl Addresses {
    pub(crate) fn new(spec: &VhidSpec) -> Addresses {
        Addresses {
            addresses: spec.addresses.clone(),
            label: spec.label.clone(),
            managed: spec.manage_addresses,
            retry_at: None,
        }
    }

    /// When the last change, which failed, is due to be tried again.
    pub(crate) fn retry_at(&self) -> Option<Instant> {
        self.retry_at
    }

    /// Add the addresses on `ifindex`.
    pub(crate) async fn add(&mut self, netlink: &Netlink, ifindex: u32) {
        self.apply(netlink, ifindex, Change::Add).await;
    }

    /// Remove the addresses from `ifindex`.
    pub(crate) async fn remove(&mut self, netlink: &Netlink, ifindex: u32) {
        self.apply(netlink, ifindex, Change::Remove).await;
    }

    /// A task starts in INIT and goes to BACKUP before it can become
    /// MASTER, so any of its addresses present now were left by a previous
    /// run that did not stop cleanly (SIGKILL, crash): remove them, or two
    /// hosts would answer for them.
    pub(crate) async fn remove_stale(&mut self, netlink: &Netlink, ifindex: u32) {
        self.apply(netlink, ifindex, Change::RemoveStale).await;
    }

    async fn apply(&mut self, netlink: &Netlink, ifindex: u32, change: Change) {
        if !self.managed {
            return;
        }
        // a retry warns no more than the first try did
        let retrying = self.retry_at.is_some();
        let mut failed = false;
        for a in &self.addresses {
            let changed = match change {
                Change::Add => {
                    let label = if a.addr.is_ipv4() {
                        self.label.as_deref()
                    } else {
                        None
                    };
                    netlink.add_address(ifindex, *a, label).await
                }
                Change::Remove | Change::RemoveStale => netlink.del_address(ifindex, *a).await,
            };
            match changed {
                Ok(true) if change == Change::RemoveStale => {
                    tracing::info!(address = %a.addr, "removed an address left by a previous run");
                }
                Ok(_) => {}
                Err(e) => {
                    failed = true;
                    if !retrying {
                        tracing::warn!(address = %a.addr, error = %e, "{}", change.failure());
                    }
                }
            }
        }
        if failed {
            self.retry_at = Some(Instant::now() + RETRY);
        } else if self.retry_at.take().is_some() {
            tracing::info!("addresses {} after retrying", change.done());
        }
    }
}
