//! A VHID's virtual addresses on the host: added while MASTER, removed
//! otherwise, and removed at start when a previous run left them behind.
//! A change that fails is tried again every [`RETRY`] until it succeeds:
//! a BACKUP left holding the addresses would make two hosts answer for
//! them. Changes made by other software are followed from the kernel's
//! address events ([`Addresses::follow`]).

use std::time::Duration;

use tokio::time::Instant;

use crate::netlink::{AddressEvent, Netlink};
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

/// What following one kernel address event did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Followed {
    /// Addresses removed under a MASTER and added back.
    pub(crate) restored: u64,
    /// Addresses added by someone else while not MASTER, and removed.
    pub(crate) removed: u64,
    /// A MASTER's address is gone and cannot be added back.
    pub(crate) cannot_restore: bool,
    /// Scripts own the addresses and a MASTER's is gone: run the up hook
    /// again.
    pub(crate) run_up_hook: bool,
}

/// With scripts owning the addresses, the up hook is run again for a
/// removed address at most this often, so a script that deletes and adds
/// back an address cannot keep carpd running it.
const UP_HOOK_AGAIN_EVERY: Duration = Duration::from_secs(1);

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
    /// When a removed address last had the up hook run again.
    up_hook_again_at: Option<Instant>,
}

impl Addresses {
    pub(crate) fn new(spec: &VhidSpec) -> Addresses {
        Addresses {
            addresses: spec.addresses.clone(),
            label: spec.label.clone(),
            managed: spec.manage_addresses,
            retry_at: None,
            up_hook_again_at: None,
        }
    }

    /// When the last change, which failed, is due to be tried again.
    pub(crate) fn retry_at(&self) -> Option<Instant> {
        self.retry_at
    }

    /// Add the addresses on `ifindex`; whether they are all there.
    pub(crate) async fn add(&mut self, netlink: &Netlink, ifindex: u32) -> bool {
        self.apply(netlink, ifindex, Change::Add).await
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

    /// Follow an address event (anyone's, ours included) on `ifindex`: a
    /// MASTER adds back what was removed, any other state removes what
    /// appeared. Events of carpd's own adds and removes find the address
    /// as the state wants it (or are of the kind the state ignores), so
    /// nothing is done or counted for them.
    pub(crate) async fn follow(
        &mut self,
        netlink: &Netlink,
        ifindex: u32,
        master: bool,
        event: AddressEvent,
    ) -> Followed {
        let mut followed = Followed::default();
        if !self.managed {
            followed.run_up_hook = master && self.wants_up_hook_again(event);
            return followed;
        }
        let only = match event {
            AddressEvent::Added { addr, .. } if !master => Some(addr),
            AddressEvent::Removed { addr, .. } if master => Some(addr),
            AddressEvent::Lost => None,
            _ => return followed,
        };
        let concerned = self
            .addresses
            .iter()
            .filter(|a| only.is_none_or(|o| o == a.addr));
        for a in concerned {
            if master {
                match netlink.add_address(ifindex, *a, self.label_of(a)).await {
                    Ok(true) => {
                        followed.restored += 1;
                        tracing::warn!(address = %a.addr,
                            "address removed while MASTER by something else; added back");
                    }
                    Ok(false) => {}
                    // the interface went with the address: the link events
                    // take the VHID to INIT and the engine restarts it
                    Err(e) if e.is_no_device() => break,
                    Err(e) => {
                        tracing::error!(address = %a.addr, error = %e,
                            "address removed while MASTER by something else and cannot be added back; demoting and stepping down");
                        followed.cannot_restore = true;
                        break;
                    }
                }
            } else {
                match netlink.del_address(ifindex, *a).await {
                    Ok(true) => {
                        followed.removed += 1;
                        tracing::warn!(address = %a.addr,
                            "address added by something else while not MASTER; removed");
                    }
                    Ok(false) => {}
                    Err(e) => {
                        tracing::warn!(address = %a.addr, error = %e,
                            "address added by something else while not MASTER and cannot be removed (trying again every second)");
                        self.retry_at = Some(Instant::now() + RETRY);
                        break;
                    }
                }
            }
        }
        followed
    }

    /// Scripts own the addresses, one of ours was removed (under a
    /// MASTER) and the up hook was not run again for that within
    /// [`UP_HOOK_AGAIN_EVERY`].
    fn wants_up_hook_again(&mut self, event: AddressEvent) -> bool {
        let AddressEvent::Removed { addr, .. } = event else {
            return false;
        };
        let now = Instant::now();
        let ours = self.addresses.iter().any(|a| a.addr == addr);
        if !ours
            || self
                .up_hook_again_at
                .is_some_and(|t| now < t + UP_HOOK_AGAIN_EVERY)
        {
            return false;
        }
        self.up_hook_again_at = Some(now);
        tracing::warn!(address = %addr,
            "address removed while MASTER by something else; the hooks own it: running the up hook again");
        true
    }

    /// The label an address gets: IPv4 addresses carry the VHID's label.
    fn label_of(&self, a: &VirtualAddr) -> Option<&str> {
        if a.addr.is_ipv4() {
            self.label.as_deref()
        } else {
            None
        }
    }

    /// Apply `change` to every address; whether it succeeded for all.
    async fn apply(&mut self, netlink: &Netlink, ifindex: u32, change: Change) -> bool {
        if !self.managed {
            return true;
        }
        // a retry warns no more than the first try did
        let retrying = self.retry_at.is_some();
        let mut failed = false;
        for a in &self.addresses {
            let changed = match change {
                Change::Add => netlink.add_address(ifindex, *a, self.label_of(a)).await,
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
        !failed
    }
}
