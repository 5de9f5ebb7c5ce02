//! rtnetlink: interface lookup, virtual address install/remove, link and
//! address events.
//!
//! Every operation names one interface index and one exact address (address
//! and prefix length), so addresses the daemon was not asked about are never
//! touched.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::num::NonZeroI32;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use netlink_packet_core::{
    DefaultNla, Emitable, ErrorMessage, NLA_F_NESTED, NetlinkMessage, NetlinkPayload,
};
use netlink_packet_route::address::{
    AddressAttribute, AddressFlags, AddressHeaderFlags, AddressMessage, AddressScope,
};
use netlink_packet_route::link::MacVlanMode;
use netlink_packet_route::link::{
    AfSpecInet, AfSpecInet6, AfSpecUnspec, In6AddrGenMode, LinkAttribute, LinkFlags, LinkMessage,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::AsyncSocket;
use rtnetlink::{AddressMessageBuilder, Handle, LinkMacVlan, LinkUnspec, MulticastGroup};
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{Semaphore, SemaphorePermit, mpsc};
use tokio::task::JoinSet;

use crate::error::Error;
use crate::spec::VirtualAddr;

/// Longest interface name or address label the kernel accepts (IFNAMSIZ - 1).
pub const MAX_NAME_LEN: usize = 15;

/// Link events waiting for the engine; a burst longer than this is logged and
/// the surplus dropped (the next event for the same link carries the state).
const LINK_EVENT_QUEUE: usize = 256;

/// Receive buffer requested for the link and address event sockets.
const EVENT_SOCKET_RCVBUF: usize = 1 << 20;

/// Requests on the address/link socket waiting for their answer at once.
/// Hundreds of VHIDs starting together each remove or add addresses; unbounded,
/// their answers overrun the socket buffer and the kernel drops some, so
/// those requests never complete (seen with 1000 VHIDs at start-up).
const MAX_IN_FLIGHT: usize = 32;

/// Receive buffer of the address/link socket (capped by net.core.rmem_max).
const REQUEST_RCVBUF: usize = 1 << 20;

/// How long the kernel has to answer one request (counted once it is sent,
/// not while it waits for a slot). An answer lost on the way would
/// otherwise hold the caller, a VHID's task, forever; as an error, the
/// caller's retry takes over.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// What the engine needs to know about a parent interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkInfo {
    pub index: u32,
    pub name: String,
    pub mac: [u8; 6],
    /// Administratively up and carrier present (IFF_UP and IFF_RUNNING /
    /// operstate up).
    pub up: bool,
    /// First (primary) IPv4 address, if any.
    pub primary_v4: Option<Ipv4Addr>,
    /// Link-local IPv6 address, if any (IPv6 advertisements come from it).
    pub link_local_v6: Option<Ipv6Addr>,
}

/// A link went up or down, or was removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkEvent {
    pub index: u32,
    /// The interface's name, where the kernel's message carries it (not for
    /// a link found gone after lost notifications).
    pub name: Option<String>,
    pub up: bool,
    /// The link is gone (`up` is false); its index will not come back.
    pub removed: bool,
}

/// An address appeared on or left an interface (RTNLGRP_IPV4_IFADDR /
/// RTNLGRP_IPV6_IFADDR), whoever did it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressEvent {
    Added {
        index: u32,
        addr: IpAddr,
    },
    Removed {
        index: u32,
        addr: IpAddr,
    },
    /// Notifications were lost: any address may have changed.
    Lost,
}

/// Address events waiting for the engine; on overflow the surplus is dropped
/// and [`AddressEvent::Lost`] delivered once there is room.
const ADDRESS_EVENT_QUEUE: usize = 1024;

/// A cloneable handle on one rtnetlink connection (its driver runs as a
/// tokio task, which ends when the last handle is dropped).
#[derive(Debug, Clone)]
pub struct Netlink {
    handle: Handle,
    in_flight: Arc<Semaphore>,
}

impl Netlink {
    /// Open an rtnetlink socket in the network namespace of the calling
    /// thread. Must be called inside a tokio runtime.
    pub async fn connect() -> Result<Netlink, Error> {
        let (mut conn, handle, _unsolicited) =
            rtnetlink::new_connection().map_err(|source| Error::Io {
                context: "opening rtnetlink socket".into(),
                source,
            })?;
        if let Err(e) = conn.socket_mut().socket_mut().set_rx_buf_sz(REQUEST_RCVBUF) {
            tracing::debug!(error = %e, "enlarging the rtnetlink socket buffer");
        }
        // The kernel then lists one interface's addresses when asked for
        // them (without it, every address of the host is sent and sorted
        // out here: thousands on a MASTER of thousands of VHIDs, for each
        // interface a reload looks up).
        if let Err(e) = conn
            .socket_mut()
            .socket_mut()
            .set_netlink_get_strict_chk(true)
        {
            tracing::debug!(error = %e, "asking for strict rtnetlink dump filtering");
        }
        tokio::spawn(conn);
        Ok(Netlink {
            handle,
            in_flight: Arc::new(Semaphore::new(MAX_IN_FLIGHT)),
        })
    }

    /// A slot for one request; taken before the request is built, since
    /// building it sends it. The semaphore is never closed.
    async fn slot(&self) -> Option<SemaphorePermit<'_>> {
        self.in_flight.acquire().await.ok()
    }

    /// The kernel's neighbour table (ARP and ND caches): interface index,
    /// address and link-layer address of every entry that has one.
    pub async fn neighbours(&self) -> Result<Vec<(u32, IpAddr, [u8; 6])>, Error> {
        use netlink_packet_route::neighbour::{NeighbourAddress, NeighbourAttribute};
        let mut out = Vec::new();
        for family in [AddressFamily::Inet, AddressFamily::Inet6] {
            let request = self.handle.neighbours().get().set_address_family(family);
            let _slot = self.slot().await;
            let entries: Vec<_> = answered(request.execute().try_collect())
                .await
                .map_err(|e| nl_error("listing neighbours", e))?;
            for n in entries {
                let mut addr = None;
                let mut mac = None;
                for attr in &n.attributes {
                    match attr {
                        NeighbourAttribute::Destination(NeighbourAddress::Inet(a)) => {
                            addr = Some(IpAddr::V4(*a));
                        }
                        NeighbourAttribute::Destination(NeighbourAddress::Inet6(a)) => {
                            addr = Some(IpAddr::V6(*a));
                        }
                        NeighbourAttribute::LinkLayerAddress(bytes) => {
                            mac = <[u8; 6]>::try_from(bytes.as_slice()).ok();
                        }
                        _ => {}
                    }
                }
                if let (Some(addr), Some(mac)) = (addr, mac) {
                    out.push((n.header.ifindex, addr, mac));
                }
            }
        }
        Ok(out)
    }

    /// `None` if there is no such interface.
    pub async fn link(&self, name: &str) -> Result<Option<LinkInfo>, Error> {
        if name.is_empty() || name.len() > MAX_NAME_LEN || name.contains(['\0', '/']) {
            return Ok(None);
        }
        let slot = self.slot().await;
        let request = self.handle.link().get().match_name(name).execute();
        let found = answered(first(request)).await;
        drop(slot);
        let msg = match found {
            Ok(Some(msg)) => msg,
            Ok(None) => return Ok(None),
            Err(e) if errno(&e) == Some(libc::ENODEV) => return Ok(None),
            Err(e) => return Err(nl_error(&format!("looking up interface {name}"), e)),
        };
        let index = msg.header.index;
        let mut mac = [0u8; 6];
        for attr in &msg.attributes {
            if let LinkAttribute::Address(bytes) = attr
                && let Ok(bytes) = <[u8; 6]>::try_from(bytes.as_slice())
            {
                mac = bytes;
            }
        }
        let primary_v4 = self
            .addresses(index, AddressFamily::Inet)
            .await?
            .iter()
            .filter(|a| !a.header.flags.contains(AddressHeaderFlags::Secondary))
            .find_map(|a| match local_address(a) {
                Some(IpAddr::V4(v4)) => Some(v4),
                _ => None,
            });
        let link_local_v6 = self
            .addresses(index, AddressFamily::Inet6)
            .await?
            .iter()
            .filter(|a| a.header.scope == AddressScope::Link)
            .find_map(|a| match local_address(a) {
                Some(IpAddr::V6(v6)) if v6.is_unicast_link_local() => Some(v6),
                _ => None,
            });
        Ok(Some(LinkInfo {
            index,
            name: link_name(&msg).unwrap_or_else(|| name.to_owned()),
            mac,
            up: is_up(&msg),
            primary_v4,
            link_local_v6,
        }))
    }

    /// Add an address (IPv6 with IFA_F_NODAD so it is usable at once; IPv4
    /// with `label` if given, which must be the interface name or start with
    /// `<interface>:`; labels do not exist for IPv6 and are ignored there).
    /// Already present -> Ok(false), added -> Ok(true).
    pub async fn add_address(
        &self,
        index: u32,
        addr: VirtualAddr,
        label: Option<&str>,
    ) -> Result<bool, Error> {
        let mut message = address_message(index, addr);
        match addr.addr {
            IpAddr::V4(_) => {
                if let Some(label) = label {
                    let interface = self.link_name_by_index(index).await?;
                    validate_label(&interface, label)?;
                    message
                        .attributes
                        .push(AddressAttribute::Label(label.to_owned()));
                }
            }
            IpAddr::V6(_) => {
                // Without NODAD the address stays "tentative" (unusable as a
                // source and not answered for) until DAD ends, and DAD fails
                // outright if the old master still holds it.
                message.header.flags |= AddressHeaderFlags::Nodad;
                message
                    .attributes
                    .push(AddressAttribute::Flags(AddressFlags::Nodad));
            }
        }
        let mut request = self.handle.address().add(index, addr.addr, addr.prefix_len);
        *request.message_mut() = message;
        let _slot = self.slot().await;
        match answered(request.execute()).await {
            Ok(()) => Ok(true),
            Err(e) if errno(&e) == Some(libc::EEXIST) => Ok(false),
            Err(e) => Err(nl_error(
                &format!("adding {} on ifindex {index}", show(addr)),
                e,
            )),
        }
    }

    /// Remove an address (matching address and prefix length). Not present
    /// (also: no such interface any more) -> Ok(false), removed -> Ok(true).
    pub async fn del_address(&self, index: u32, addr: VirtualAddr) -> Result<bool, Error> {
        let message = address_message(index, addr);
        let _slot = self.slot().await;
        match answered(self.handle.address().del(message).execute()).await {
            Ok(()) => Ok(true),
            Err(e)
                // ENODEV: the interface is gone, and its addresses with it.
                if matches!(
                    errno(&e),
                    Some(libc::EADDRNOTAVAIL | libc::ENOENT | libc::ESRCH | libc::ENODEV)
                ) =>
            {
                Ok(false)
            }
            Err(e) => Err(nl_error(
                &format!("removing {} from ifindex {index}", show(addr)),
                e,
            )),
        }
    }

    /// Whether `addr` (address and prefix length) is configured on `index`.
    pub async fn has_address(&self, index: u32, addr: VirtualAddr) -> Result<bool, Error> {
        let family = match addr.addr {
            IpAddr::V4(_) => AddressFamily::Inet,
            IpAddr::V6(_) => AddressFamily::Inet6,
        };
        Ok(self
            .addresses(index, family)
            .await?
            .iter()
            .any(|a| a.header.prefix_len == addr.prefix_len && local_address(a) == Some(addr.addr)))
    }

    /// Every IPv4 and IPv6 address configured on `index`.
    pub async fn local_addresses(&self, index: u32) -> Result<Vec<IpAddr>, Error> {
        let mut out = Vec::new();
        for family in [AddressFamily::Inet, AddressFamily::Inet6] {
            out.extend(
                self.addresses(index, family)
                    .await?
                    .iter()
                    .filter_map(local_address),
            );
        }
        Ok(out)
    }

    /// Create a macvlan child of `parent` named `name` with MAC `mac`, down
    /// (bridge mode, see [`crate::vmac`]). A link already named so (left by
    /// a run that was killed) is deleted first. Returns the child's index.
    pub async fn create_macvlan(
        &self,
        parent: u32,
        name: &str,
        mac: [u8; 6],
    ) -> Result<u32, Error> {
        if let Some(old) = self.link(name).await? {
            self.delete_link(old.index).await?;
        }
        let message = LinkMacVlan::new(name, parent, MacVlanMode::Bridge)
            .address(mac.to_vec())
            .down()
            .build();
        let slot = self.slot().await;
        let added = answered(self.handle.link().add(message).execute()).await;
        drop(slot);
        added.map_err(|e| nl_error(&format!("creating macvlan {name}"), e))?;
        self.link(name)
            .await?
            .map(|l| l.index)
            .ok_or_else(|| Error::NoSuchInterface(name.to_owned()))
    }

    /// Set a link administratively up or down.
    pub async fn set_link_up(&self, index: u32, up: bool) -> Result<(), Error> {
        let builder = LinkUnspec::new_with_index(index);
        let message = if up { builder.up() } else { builder.down() }.build();
        let _slot = self.slot().await;
        answered(self.handle.link().set(message).execute())
            .await
            .map_err(|e| {
                nl_error(
                    &format!("setting ifindex {index} {}", if up { "up" } else { "down" }),
                    e,
                )
            })
    }

    /// Delete a link; already gone is fine.
    pub async fn delete_link(&self, index: u32) -> Result<(), Error> {
        let _slot = self.slot().await;
        match answered(self.handle.link().del(index).execute()).await {
            Ok(()) => Ok(()),
            Err(e) if errno(&e) == Some(libc::ENODEV) => Ok(()),
            Err(e) => Err(nl_error(&format!("deleting ifindex {index}"), e)),
        }
    }

    /// Set IPv4 per-interface settings (`net.ipv4.conf.<link>.*`) of a link
    /// through IFLA_AF_SPEC, which needs only CAP_NET_ADMIN, not a
    /// writable `/proc/sys`.
    pub(crate) async fn set_ipv4_conf(
        &self,
        index: u32,
        settings: &[(Ipv4Conf, u32)],
    ) -> Result<(), Error> {
        let spec = AfSpecUnspec::Inet(vec![AfSpecInet::Other(ipv4_conf_nla(settings))]);
        self.set_af_spec(index, spec)
            .await
            .map_err(|e| nl_error(&format!("setting IPv4 settings of ifindex {index}"), e))
    }

    /// Stop the kernel from giving a link IPv6 addresses of its own
    /// (`addr_gen_mode` none: no link-local address derived from its MAC).
    /// The only IPv6 per-interface setting the kernel takes over netlink.
    pub(crate) async fn set_no_ipv6_addr_gen(&self, index: u32) -> Result<(), Error> {
        let spec = AfSpecUnspec::Inet6(vec![AfSpecInet6::AddrGenMode(In6AddrGenMode::None)]);
        self.set_af_spec(index, spec).await.map_err(|e| {
            nl_error(
                &format!("setting the IPv6 address generation of ifindex {index}"),
                e,
            )
        })
    }

    async fn set_af_spec(&self, index: u32, spec: AfSpecUnspec) -> Result<(), rtnetlink::Error> {
        let message = LinkUnspec::new_with_index(index)
            .append_extra_attribute(LinkAttribute::AfSpecUnspec(vec![spec]))
            .build();
        let _slot = self.slot().await;
        answered(self.handle.link().set(message).execute()).await
    }

    /// All addresses of one family on one interface, in kernel order (for
    /// IPv4 the primary address comes first).
    async fn addresses(
        &self,
        index: u32,
        family: AddressFamily,
    ) -> Result<Vec<AddressMessage>, Error> {
        let mut request = self.handle.address().get().set_link_index_filter(index);
        // The family selects the kernel's dump handler, so only this family
        // is walked; the index, with strict checking (see `connect`), only
        // this interface (the filter above stays for kernels without it).
        request.message_mut().header.family = family;
        request.message_mut().header.index = index;
        let _slot = self.slot().await;
        answered(request.execute().try_collect())
            .await
            .map_err(|e| nl_error(&format!("listing addresses of ifindex {index}"), e))
    }

    async fn link_name_by_index(&self, index: u32) -> Result<String, Error> {
        let slot = self.slot().await;
        let request = self.handle.link().get().match_index(index).execute();
        let found = answered(first(request)).await;
        drop(slot);
        match found {
            Ok(Some(msg)) => {
                link_name(&msg).ok_or_else(|| Error::NoSuchInterface(format!("ifindex {index}")))
            }
            Ok(None) => Err(Error::NoSuchInterface(format!("ifindex {index}"))),
            Err(e) if errno(&e) == Some(libc::ENODEV) => {
                Err(Error::NoSuchInterface(format!("ifindex {index}")))
            }
            Err(e) => Err(nl_error(&format!("looking up ifindex {index}"), e)),
        }
    }
}

/// IPv4 per-interface settings carpd sets, by their IPV4_DEVCONF_* number
/// (linux/ip.h).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u16)]
pub(crate) enum Ipv4Conf {
    RpFilter = 8,
    ArpAnnounce = 18,
    ArpIgnore = 19,
}

/// IFLA_INET_CONF: a nested u32 attribute per setting. Built by hand since
/// the crate's request form leaves out settings whose value is zero, and
/// `rp_filter` is set to zero.
fn ipv4_conf_nla(settings: &[(Ipv4Conf, u32)]) -> DefaultNla {
    const IFLA_INET_CONF: u16 = 1;
    let mut value = Vec::new();
    for &(conf, v) in settings {
        let nla = DefaultNla::new(conf as u16, v.to_ne_bytes().to_vec());
        let start = value.len();
        value.resize(start + nla.buffer_len(), 0);
        nla.emit(&mut value[start..]);
    }
    DefaultNla::new(IFLA_INET_CONF | NLA_F_NESTED, value)
}

/// Check an IPv4 address label the way `ip address add ... label` does: the
/// kernel shows the address under the label as if it were an interface, so
/// it must be the interface name itself or `<interface>:<suffix>`, at most
/// 15 bytes.
pub fn validate_label(interface: &str, label: &str) -> Result<(), Error> {
    let prefixed = label == interface
        || label
            .strip_prefix(interface)
            .is_some_and(|rest| rest.starts_with(':'));
    if !prefixed || label.len() > MAX_NAME_LEN || label.contains('\0') {
        return Err(Error::InvalidLabel {
            label: label.to_owned(),
            interface: interface.to_owned(),
        });
    }
    Ok(())
}

/// A multicast rtnetlink socket: the connection to drive, a handle for
/// requests on it, and the notifications of the groups it joined.
type EventSocket = (
    rtnetlink::proto::Connection<RouteNetlinkMessage>,
    Handle,
    futures::channel::mpsc::UnboundedReceiver<(
        NetlinkMessage<RouteNetlinkMessage>,
        rtnetlink::sys::SocketAddr,
    )>,
);

/// Open a netlink socket that joins `groups`; `what` names its events
/// ("link", "address") in the error and the log.
fn open_event_socket(groups: &[MulticastGroup], what: &str) -> Result<EventSocket, Error> {
    let (mut conn, handle, messages) =
        rtnetlink::new_multicast_connection(groups).map_err(|source| Error::Io {
            context: format!("opening rtnetlink {what} event socket"),
            source,
        })?;
    // Room for bursts (many links or addresses changing at once) before the
    // kernel has to drop notifications; capped by net.core.rmem_max.
    if let Err(e) = conn
        .socket_mut()
        .socket_mut()
        .set_rx_buf_sz(EVENT_SOCKET_RCVBUF)
    {
        tracing::debug!(error = %e, "enlarging the {what} event socket buffer");
    }
    Ok((conn, handle, messages))
}

/// Subscribe to link up/down events (RTNLGRP_LINK) on a separate netlink
/// socket; events arrive on the returned channel until it is dropped.
///
/// Only changes are delivered: the first event seen for a link, then one per
/// up/down transition, and its removal (`removed`, `up: false`). If the kernel
/// drops notifications (socket buffer overrun), all links are re-read and
/// any change missed meanwhile is delivered.
pub async fn watch_links() -> Result<mpsc::Receiver<LinkEvent>, Error> {
    let (conn, handle, mut messages) = open_event_socket(&[MulticastGroup::Link], "link")?;
    let (tx, rx) = mpsc::channel(LINK_EVENT_QUEUE);
    tokio::spawn(async move {
        // The connection is driven here rather than in its own task so that
        // dropping the receiver closes the socket at once.
        let mut conn = pin!(conn);
        let mut watch = LinkWatch {
            tx,
            last: HashMap::new(),
        };
        let mut resync = JoinSet::new();
        loop {
            tokio::select! {
                () = &mut conn => {
                    tracing::error!("rtnetlink link event socket closed; link state is no longer followed");
                    break;
                }
                () = watch.tx.closed() => break,
                msg = messages.next() => {
                    let Some((msg, _)) = msg else { break };
                    if let NetlinkPayload::Overrun(_) = msg.payload {
                        tracing::warn!("link notifications lost; re-reading all links");
                        if resync.is_empty() {
                            let handle = handle.clone();
                            resync.spawn(async move {
                                answered(handle.link().get().execute().try_collect::<Vec<_>>()).await
                            });
                        }
                        continue;
                    }
                    let Some(event) = link_event(msg) else { continue };
                    if !watch.deliver(event) {
                        break;
                    }
                }
                Some(dump) = resync.join_next(), if !resync.is_empty() => {
                    match dump {
                        Ok(Ok(links)) => {
                            if !watch.resync(&links) {
                                break;
                            }
                        }
                        Ok(Err(e)) => tracing::error!(error = %e, "re-reading links after lost notifications"),
                        Err(e) => tracing::error!(error = %e, "re-reading links after lost notifications"),
                    }
                }
            }
        }
    });
    Ok(rx)
}

/// The sending side of [`watch_links`]: the last state delivered per link.
struct LinkWatch {
    tx: mpsc::Sender<LinkEvent>,
    last: HashMap<u32, bool>,
}

impl LinkWatch {
    /// Deliver `event` if it is a change; false once the receiver is gone.
    fn deliver(&mut self, event: LinkEvent) -> bool {
        if !event.removed && self.last.get(&event.index) == Some(&event.up) {
            return true;
        }
        let (index, up, removed) = (event.index, event.up, event.removed);
        match self.tx.try_send(event) {
            // Interface indexes are not reused, so a removed link's entry is
            // dropped rather than kept forever.
            Ok(()) if removed => {
                self.last.remove(&index);
            }
            Ok(()) => {
                self.last.insert(index, up);
            }
            Err(TrySendError::Full(event)) => {
                // Not recorded as delivered, so the next event for this link
                // is sent even if its state is unchanged.
                tracing::warn!(
                    ifindex = event.index,
                    up = event.up,
                    "link event queue full, event dropped"
                );
            }
            Err(TrySendError::Closed(_)) => return false,
        }
        true
    }

    /// Deliver what changed according to a full link dump, including links
    /// that disappeared.
    fn resync(&mut self, links: &[LinkMessage]) -> bool {
        let present: HashMap<u32, (bool, Option<String>)> = links
            .iter()
            .map(|link| (link.header.index, (is_up(link), link_name(link))))
            .collect();
        let gone: Vec<u32> = self
            .last
            .keys()
            .filter(|index| !present.contains_key(index))
            .copied()
            .collect();
        for index in gone {
            let gone = LinkEvent {
                index,
                name: None,
                up: false,
                removed: true,
            };
            if !self.deliver(gone) {
                return false;
            }
        }
        for (index, (up, name)) in present {
            let event = LinkEvent {
                index,
                name,
                up,
                removed: false,
            };
            if !self.deliver(event) {
                return false;
            }
        }
        true
    }
}

/// The event carried by a link notification.
fn link_event(msg: NetlinkMessage<RouteNetlinkMessage>) -> Option<LinkEvent> {
    match msg.payload {
        NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(link)) => Some(LinkEvent {
            index: link.header.index,
            name: link_name(&link),
            up: is_up(&link),
            removed: false,
        }),
        NetlinkPayload::InnerMessage(RouteNetlinkMessage::DelLink(link)) => Some(LinkEvent {
            index: link.header.index,
            name: link_name(&link),
            up: false,
            removed: true,
        }),
        _ => None,
    }
}

/// Subscribe to address events (RTNLGRP_IPV4_IFADDR and RTNLGRP_IPV6_IFADDR)
/// on a separate netlink socket; events arrive on the returned channel until
/// it is dropped. carpd's own adds and removes are reported too.
pub async fn watch_addresses() -> Result<mpsc::Receiver<AddressEvent>, Error> {
    let (conn, _handle, mut messages) = open_event_socket(
        &[MulticastGroup::Ipv4Ifaddr, MulticastGroup::Ipv6Ifaddr],
        "address",
    )?;
    let (tx, rx) = mpsc::channel(ADDRESS_EVENT_QUEUE);
    tokio::spawn(async move {
        let mut conn = pin!(conn);
        let mut watch = AddressWatch { tx, lost: false };
        loop {
            tokio::select! {
                () = &mut conn => {
                    tracing::error!("rtnetlink address event socket closed; addresses are no longer followed");
                    break;
                }
                () = watch.tx.closed() => break,
                msg = messages.next() => {
                    let Some((msg, _)) = msg else { break };
                    let event = match msg.payload {
                        NetlinkPayload::Overrun(_) => {
                            tracing::warn!("address notifications lost; every address is checked again");
                            AddressEvent::Lost
                        }
                        _ => match address_event(msg) {
                            Some(event) => event,
                            None => continue,
                        },
                    };
                    if !watch.deliver(event) {
                        break;
                    }
                }
            }
        }
    });
    Ok(rx)
}

/// The sending side of [`watch_addresses`].
struct AddressWatch {
    tx: mpsc::Sender<AddressEvent>,
    /// Events were dropped on a full queue: [`AddressEvent::Lost`] is owed.
    lost: bool,
}

impl AddressWatch {
    /// Deliver `event` (after a `Lost` that is owed); false once the
    /// receiver is gone.
    fn deliver(&mut self, event: AddressEvent) -> bool {
        if self.lost {
            match self.tx.try_send(AddressEvent::Lost) {
                Ok(()) => self.lost = false,
                Err(TrySendError::Full(_)) => return true,
                Err(TrySendError::Closed(_)) => return false,
            }
        }
        match self.tx.try_send(event) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) => {
                tracing::warn!(
                    "address event queue full, events dropped; every address is checked again"
                );
                self.lost = true;
                true
            }
            Err(TrySendError::Closed(_)) => false,
        }
    }
}

/// The event carried by an address notification.
fn address_event(msg: NetlinkMessage<RouteNetlinkMessage>) -> Option<AddressEvent> {
    match msg.payload {
        NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewAddress(a)) => {
            Some(AddressEvent::Added {
                index: a.header.index,
                addr: local_address(&a)?,
            })
        }
        NetlinkPayload::InnerMessage(RouteNetlinkMessage::DelAddress(a)) => {
            Some(AddressEvent::Removed {
                index: a.header.index,
                addr: local_address(&a)?,
            })
        }
        _ => None,
    }
}

/// IFF_RUNNING is set by the kernel when the operational state is up (or
/// unknown, for drivers without carrier reporting), so together with IFF_UP
/// it means "usable".
fn is_up(link: &LinkMessage) -> bool {
    link.header
        .flags
        .contains(LinkFlags::Up | LinkFlags::Running)
}

fn link_name(link: &LinkMessage) -> Option<String> {
    link.attributes.iter().find_map(|a| match a {
        LinkAttribute::IfName(name) => Some(name.clone()),
        _ => None,
    })
}

/// The interface's own address: IFA_LOCAL for IPv4 (IFA_ADDRESS is the peer
/// on point-to-point links), IFA_ADDRESS for IPv6.
fn local_address(msg: &AddressMessage) -> Option<IpAddr> {
    let mut address = None;
    for attr in &msg.attributes {
        match attr {
            AddressAttribute::Local(a) => return Some(*a),
            AddressAttribute::Address(a) => address = Some(*a),
            _ => {}
        }
    }
    address
}

/// The message naming exactly this address: with IFA_ADDRESS present the
/// kernel also matches the prefix length when deleting.
fn address_message(index: u32, addr: VirtualAddr) -> AddressMessage {
    match addr.addr {
        IpAddr::V4(v4) => AddressMessageBuilder::<Ipv4Addr>::new()
            .index(index)
            .address(v4, addr.prefix_len)
            .build(),
        IpAddr::V6(v6) => AddressMessageBuilder::<Ipv6Addr>::new()
            .index(index)
            .address(v6, addr.prefix_len)
            .build(),
    }
}

/// `request`'s outcome, or ETIMEDOUT after [`REQUEST_TIMEOUT`].
async fn answered<T>(
    request: impl Future<Output = Result<T, rtnetlink::Error>>,
) -> Result<T, rtnetlink::Error> {
    answered_within(REQUEST_TIMEOUT, request).await
}

async fn answered_within<T>(
    limit: Duration,
    request: impl Future<Output = Result<T, rtnetlink::Error>>,
) -> Result<T, rtnetlink::Error> {
    tokio::time::timeout(limit, request)
        .await
        .unwrap_or_else(|_| Err(timed_out()))
}

/// A request left unanswered, as the errno ETIMEDOUT in the form of a
/// kernel error, so that every caller's errno handling applies unchanged.
fn timed_out() -> rtnetlink::Error {
    let mut message = ErrorMessage::default();
    message.code = NonZeroI32::new(-libc::ETIMEDOUT);
    rtnetlink::Error::NetlinkError(message)
}

async fn first<T>(
    stream: impl futures::Stream<Item = Result<T, rtnetlink::Error>>,
) -> Result<Option<T>, rtnetlink::Error> {
    let mut stream = pin!(stream);
    stream.try_next().await
}

fn errno(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(msg) => Some(msg.raw_code().abs()),
        _ => None,
    }
}

fn nl_error(context: &str, e: rtnetlink::Error) -> Error {
    match e {
        rtnetlink::Error::NetlinkError(msg) => Error::Io {
            context: context.to_owned(),
            source: msg.to_io(),
        },
        other => Error::Netlink(format!("{context}: {other}")),
    }
}

fn show(addr: VirtualAddr) -> String {
    format!("{}/{}", addr.addr, addr.prefix_len)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_follow_the_kernel_rules() {
        assert!(validate_label("eth0", "eth0").is_ok());
        assert!(validate_label("eth0", "eth0:vip").is_ok());
        assert!(validate_label("eth0", "eth0:0123456789").is_ok());
        assert!(validate_label("eth0", "eth0:01234567890").is_err());
        assert!(validate_label("eth0", "eth1:vip").is_err());
        assert!(validate_label("eth0", "eth0vip").is_err());
        assert!(validate_label("eth0", "vip").is_err());
        assert!(validate_label("eth0", "").is_err());
        assert!(validate_label("eth0", "eth0:a\0").is_err());
    }

    #[tokio::test]
    async fn an_unanswered_request_times_out_as_etimedout() {
        let never = std::future::pending::<Result<(), rtnetlink::Error>>();
        let e = answered_within(Duration::from_millis(50), never)
            .await
            .unwrap_err();
        assert_eq!(errno(&e), Some(libc::ETIMEDOUT));
        match nl_error("adding 10.0.0.1/24 on ifindex 2", e) {
            Error::Io { source, .. } => assert_eq!(source.kind(), std::io::ErrorKind::TimedOut),
            other => panic!("{other}"),
        }
        let answered = answered_within(Duration::from_secs(5), async { Ok(7) }).await;
        assert_eq!(answered, Ok(7));
    }

    #[test]
    fn ipv4_conf_is_nested_u32_settings_zero_included() {
        let nla = ipv4_conf_nla(&[(Ipv4Conf::ArpIgnore, 1), (Ipv4Conf::RpFilter, 0)]);
        let mut buf = vec![0; nla.buffer_len()];
        nla.emit(&mut buf);
        let mut want = Vec::new();
        // IFLA_INET_CONF, nested: 4 + 2 * 8 bytes
        want.extend(20u16.to_ne_bytes());
        want.extend((1u16 | NLA_F_NESTED).to_ne_bytes());
        for (kind, value) in [(19u16, 1u32), (8, 0)] {
            want.extend(8u16.to_ne_bytes());
            want.extend(kind.to_ne_bytes());
            want.extend(value.to_ne_bytes());
        }
        assert_eq!(buf, want);
    }

    fn link(index: u32, up: bool) -> LinkMessage {
        let mut link = LinkMessage::default();
        link.header.index = index;
        if up {
            link.header.flags = LinkFlags::Up | LinkFlags::Running | LinkFlags::LowerUp;
        } else {
            link.header.flags = LinkFlags::Up;
        }
        link
    }

    fn drain(rx: &mut mpsc::Receiver<LinkEvent>) -> Vec<LinkEvent> {
        let mut events = Vec::new();
        while let Ok(event) = rx.try_recv() {
            events.push(event);
        }
        events.sort_by_key(|e| e.index);
        events
    }

    #[test]
    fn only_changes_are_delivered_and_a_resync_fills_the_gaps() {
        let (tx, mut rx) = mpsc::channel(8);
        let mut watch = LinkWatch {
            tx,
            last: HashMap::new(),
        };
        let ev = |index, up| LinkEvent {
            index,
            name: None,
            up,
            removed: false,
        };
        let gone = |index| LinkEvent {
            index,
            name: None,
            up: false,
            removed: true,
        };
        assert!(watch.deliver(ev(2, true)));
        assert!(watch.deliver(ev(2, true)));
        assert!(watch.deliver(ev(3, true)));
        assert!(watch.deliver(ev(4, false)));
        assert_eq!(drain(&mut rx), [ev(2, true), ev(3, true), ev(4, false)]);

        // Missed meanwhile: 2 went down, 3 was removed, 4 unchanged, 5 new.
        assert!(watch.resync(&[link(2, false), link(4, false), link(5, true)]));
        assert_eq!(drain(&mut rx), [ev(2, false), gone(3), ev(5, true)]);
        assert!(!watch.last.contains_key(&3));

        // A full queue does not record the event as delivered.
        for index in 10..18 {
            assert!(watch.deliver(ev(index, true)));
        }
        assert!(watch.deliver(ev(2, true)));
        assert!(!watch.last.get(&2).copied().unwrap_or(false));
        drain(&mut rx);
        assert!(watch.deliver(ev(2, true)));
        assert_eq!(drain(&mut rx), [ev(2, true)]);

        drop(rx);
        assert!(!watch.deliver(ev(2, false)));
    }

    #[test]
    fn a_full_address_queue_owes_a_lost_event() {
        let (tx, mut rx) = mpsc::channel(2);
        let mut watch = AddressWatch { tx, lost: false };
        let added = |n: u8| AddressEvent::Added {
            index: 2,
            addr: IpAddr::V4(Ipv4Addr::new(192, 0, 2, n)),
        };
        assert!(watch.deliver(added(1)));
        assert!(watch.deliver(added(2)));
        assert!(watch.deliver(added(3)));
        assert!(watch.lost);
        assert_eq!(rx.try_recv().ok(), Some(added(1)));
        // room for the owed Lost only: the new event is dropped too
        assert!(watch.deliver(added(4)));
        assert_eq!(rx.try_recv().ok(), Some(added(2)));
        assert_eq!(rx.try_recv().ok(), Some(AddressEvent::Lost));
        assert!(watch.lost);
        assert!(watch.deliver(added(5)));
        assert!(!watch.lost);
        assert_eq!(rx.try_recv().ok(), Some(AddressEvent::Lost));
        assert_eq!(rx.try_recv().ok(), Some(added(5)));
        drop(rx);
        assert!(!watch.deliver(added(6)));
    }
}
