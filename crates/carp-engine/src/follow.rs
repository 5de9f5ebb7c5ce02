//! Kernel events to VHID tasks: link changes go to the VHIDs on that link,
//! address changes to the VHIDs that own the address, never waiting on a
//! task's queue. What needs the engine itself (a deleted link's VHIDs, a
//! link or address that may let waiting VHIDs start) is noted here and the
//! engine's follower woken.

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;

use crate::netlink::{AddressEvent, LinkEvent};
use crate::rx::{self, SharedDemux};
use crate::track::Tracking;
use crate::vhid::{Command, VhidHandle};

/// What the link and address watchers share with the engine.
#[derive(Debug)]
pub(crate) struct Follow {
    /// The receive table: the running VHIDs by (ifindex, vhid).
    pub(crate) demux: SharedDemux,
    routes: RwLock<Arc<Routes>>,
    /// Indexes of deleted links that running VHIDs were on.
    gone: Mutex<BTreeSet<u32>>,
    /// Wakes the engine's follower: a link went, or one appeared or an
    /// address was added while VHIDs wait.
    wake: Notify,
    /// Events not delivered because a VHID's command queue was full.
    dropped: AtomicU64,
}

/// Command queues of the running VHIDs by the addresses they own, for
/// address events: one part per interface (by index), replaced with the
/// receive table's part of the same interface.
#[derive(Debug, Default)]
pub(crate) struct Routes {
    pub(crate) links: HashMap<u32, Arc<LinkRoutes>>,
    /// Some VHIDs wait for their interface or its address.
    pub(crate) waiting: bool,
}

/// The command queues of the VHIDs running on one interface, by address.
#[derive(Debug, Default)]
pub(crate) struct LinkRoutes {
    by_addr: HashMap<IpAddr, Vec<mpsc::Sender<Command>>>,
}

impl LinkRoutes {
    /// Route the events of `h`'s addresses to its task.
    pub(crate) fn add(&mut self, h: &VhidHandle) {
        for a in &h.params.spec.addresses {
            self.by_addr
                .entry(a.addr)
                .or_default()
                .push(h.entry.commands.clone());
        }
    }
}

impl Routes {
    /// The queues of the VHIDs that own `addr`, on any interface.
    fn owners(&self, addr: &IpAddr) -> impl Iterator<Item = &mpsc::Sender<Command>> {
        self.links
            .values()
            .filter_map(move |l| l.by_addr.get(addr))
            .flatten()
    }
}

impl Follow {
    pub(crate) fn new(demux: SharedDemux) -> Follow {
        Follow {
            demux,
            routes: RwLock::default(),
            gone: Mutex::default(),
            wake: Notify::new(),
            dropped: AtomicU64::new(0),
        }
    }

    pub(crate) fn routes(&self) -> Arc<Routes> {
        match self.routes.read() {
            Ok(g) => Arc::clone(&g),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    pub(crate) fn set_routes(&self, routes: Routes) {
        let routes = Arc::new(routes);
        match self.routes.write() {
            Ok(mut g) => *g = routes,
            Err(poisoned) => *poisoned.into_inner() = routes,
        }
    }

    /// Queue a command without waiting: a full queue (a task that is far
    /// behind) loses it, counted (logged at the 1st, 2nd, 4th, ... loss).
    pub(crate) fn send(&self, commands: &mpsc::Sender<Command>, cmd: Command) {
        if let Err(TrySendError::Full(cmd)) = commands.try_send(cmd) {
            let n = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            if n.is_power_of_two() {
                tracing::warn!(
                    dropped_total = n,
                    "VHID command queue full; kernel event {cmd:?} not delivered"
                );
            }
        }
    }

    /// Events lost to full command queues, since start.
    pub(crate) fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Note that running VHIDs were on the deleted link `index`.
    pub(crate) fn link_gone(&self, index: u32) {
        match self.gone.lock() {
            Ok(mut g) => g.insert(index),
            Err(poisoned) => poisoned.into_inner().insert(index),
        };
        self.wake.notify_one();
    }

    /// The deleted links noted since the last call.
    pub(crate) fn take_gone(&self) -> BTreeSet<u32> {
        match self.gone.lock() {
            Ok(mut g) => std::mem::take(&mut *g),
            Err(poisoned) => std::mem::take(&mut *poisoned.into_inner()),
        }
    }

    /// Until something may have changed for deleted links or waiting VHIDs
    /// (at once if it already has since the last wake-up).
    pub(crate) async fn woken(&self) {
        self.wake.notified().await;
    }
}

/// The next event, or `None` once `cancel` fires or the stream ends (which
/// is logged: `what` is no longer followed).
async fn next_event<T>(
    events: &mut mpsc::Receiver<T>,
    cancel: &CancellationToken,
    what: &str,
) -> Option<T> {
    let ev = tokio::select! {
        _ = cancel.cancelled() => return None,
        ev = events.recv() => ev,
    };
    if ev.is_none() {
        tracing::warn!("event stream ended; {what} are no longer followed");
    }
    ev
}

/// Hand link changes to the trackers and the VHIDs on that link; note a
/// deleted link's VHIDs, and a new link while VHIDs wait.
pub(crate) async fn watch_links(
    mut events: mpsc::Receiver<LinkEvent>,
    follow: Arc<Follow>,
    tracking: Arc<Tracking>,
    cancel: CancellationToken,
) {
    while let Some(ev) = next_event(&mut events, &cancel, "link state changes").await {
        tracking.link_event(&ev);
        let table = rx::current(&follow.demux);
        let link = table.links.get(&ev.index);
        let known = link.is_some_and(|l| !l.vhids.is_empty());
        for e in link.into_iter().flat_map(|l| l.vhids.values()) {
            follow.send(&e.commands, Command::Link(ev.up));
        }
        if ev.removed && known {
            follow.link_gone(ev.index);
        } else if !known && follow.routes().waiting {
            follow.wake.notify_one();
        }
    }
}

/// Hand address changes to the VHIDs that own the address (every VHID when
/// notifications were lost); an address added while VHIDs wait wakes the
/// follower.
pub(crate) async fn watch_addresses(
    mut events: mpsc::Receiver<AddressEvent>,
    follow: Arc<Follow>,
    cancel: CancellationToken,
) {
    while let Some(ev) = next_event(&mut events, &cancel, "address changes").await {
        let routes = follow.routes();
        match ev {
            AddressEvent::Added { addr, .. } | AddressEvent::Removed { addr, .. } => {
                for commands in routes.owners(&addr) {
                    follow.send(commands, Command::Address(Box::new(ev)));
                }
            }
            // every running VHID is in the receive table
            AddressEvent::Lost => {
                let table = rx::current(&follow.demux);
                for e in table.links.values().flat_map(|l| l.vhids.values()) {
                    follow.send(&e.commands, Command::Address(Box::new(ev)));
                }
            }
        }
        if routes.waiting && !matches!(ev, AddressEvent::Removed { .. }) {
            follow.wake.notify_one();
        }
    }
}
