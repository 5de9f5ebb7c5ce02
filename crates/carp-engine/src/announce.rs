//! Gratuitous ARP (IPv4) and unsolicited neighbour advertisements (IPv6), so
//! switches and neighbours follow a new master.

use std::mem::size_of;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV6};

use socket2::{Domain, Protocol, SockAddr, SockAddrStorage, SockFilter, Socket, Type, socklen_t};

use crate::error::Error;

const ETH_P_ARP: u16 = 0x0806;
const ETH_P_IP: u16 = 0x0800;
const ARPHRD_ETHER: u16 = 1;
const ARPOP_REQUEST: u16 = 1;
const BROADCAST_MAC: [u8; 6] = [0xff; 6];

const ND_NEIGHBOR_ADVERT: u8 = 136;
const NA_FLAG_OVERRIDE: u8 = 0x20;
const ND_OPT_TARGET_LINKADDR: u8 = 2;
/// All-nodes link-local multicast group.
const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
/// Receivers drop neighbour discovery packets with any other hop limit
/// (RFC 4861 section 7.1.2).
const ND_HOP_LIMIT: u32 = 255;

/// One AF_PACKET socket (for ARP) and one ICMPv6 raw socket (for NA),
/// shared by all VHIDs. Sends are non-blocking and never wait on the network.
#[derive(Debug)]
pub struct Announcer {
    arp: Socket,
    icmp6: Socket,
}

impl Announcer {
    /// Open both sockets in the network namespace of the calling thread
    /// (needs CAP_NET_RAW).
    pub fn new() -> Result<Announcer, Error> {
        // Protocol 0: the socket only sends (each send names its protocol in
        // the link-layer address) and never queues received frames.
        let arp = Socket::new(Domain::PACKET, Type::DGRAM, Some(Protocol::from(0)))
            .map_err(|source| io_error("opening ARP packet socket", source))?;
        arp.set_nonblocking(true)
            .map_err(|source| io_error("setting ARP socket non-blocking", source))?;

        let icmp6 = Socket::new(Domain::IPV6, Type::RAW, Some(Protocol::ICMPV6))
            .map_err(|source| io_error("opening ICMPv6 socket", source))?;
        // A raw ICMPv6 socket receives a copy of every ICMPv6 packet; this one
        // only sends, so a "drop everything" filter keeps its queue empty.
        let drop_all = [SockFilter::new(0x06 /* BPF_RET | BPF_K */, 0, 0, 0)];
        icmp6
            .attach_filter(&drop_all)
            .map_err(|source| io_error("filtering ICMPv6 socket input", source))?;
        icmp6
            .set_multicast_hops_v6(ND_HOP_LIMIT)
            .map_err(|source| io_error("setting ICMPv6 hop limit", source))?;
        // Our own advertisement looped back would only reach our own stack.
        icmp6
            .set_multicast_loop_v6(false)
            .map_err(|source| io_error("disabling ICMPv6 multicast loop", source))?;
        icmp6
            .set_nonblocking(true)
            .map_err(|source| io_error("setting ICMPv6 socket non-blocking", source))?;
        Ok(Announcer { arp, icmp6 })
    }

    /// Broadcast ARP request with sender = target = `ip`, sender MAC `mac`.
    pub fn gratuitous_arp(&self, ifindex: u32, mac: [u8; 6], ip: Ipv4Addr) -> Result<(), Error> {
        let frame = arp_request(mac, ip);
        let dest = link_layer_broadcast(ifindex)?;
        self.arp.send_to(&frame, &dest).map_err(|source| {
            io_error(
                &format!("sending gratuitous ARP for {ip} on ifindex {ifindex}"),
                source,
            )
        })?;
        Ok(())
    }

    /// Unsolicited NA for `ip` (override flag, target link-layer option
    /// `mac`) to ff02::1 with hop limit 255. The kernel computes the
    /// checksum and picks the source address (the interface's link-local
    /// address).
    pub fn unsolicited_na(&self, ifindex: u32, mac: [u8; 6], ip: Ipv6Addr) -> Result<(), Error> {
        let packet = neighbour_advert(mac, ip);
        // The scope id picks the outgoing interface per packet, so the shared
        // socket needs no per-interface state.
        let dest = SockAddr::from(SocketAddrV6::new(ALL_NODES, 0, 0, ifindex));
        self.icmp6.send_to(&packet, &dest).map_err(|source| {
            io_error(
                &format!("sending neighbour advertisement for {ip} on ifindex {ifindex}"),
                source,
            )
        })?;
        Ok(())
    }
}

/// ARP payload (the kernel adds the Ethernet header on a SOCK_DGRAM packet
/// socket).
fn arp_request(mac: [u8; 6], ip: Ipv4Addr) -> [u8; 28] {
    let mut p = [0u8; 28];
    p[0..2].copy_from_slice(&ARPHRD_ETHER.to_be_bytes());
    p[2..4].copy_from_slice(&ETH_P_IP.to_be_bytes());
    p[4] = 6; // hardware address length
    p[5] = 4; // protocol address length
    p[6..8].copy_from_slice(&ARPOP_REQUEST.to_be_bytes());
    p[8..14].copy_from_slice(&mac);
    p[14..18].copy_from_slice(&ip.octets());
    // p[18..24]: target hardware address, unknown, all zero.
    p[24..28].copy_from_slice(&ip.octets());
    p
}

/// ICMPv6 neighbour advertisement with a target link-layer address option;
/// checksum left zero for the kernel.
fn neighbour_advert(mac: [u8; 6], target: Ipv6Addr) -> [u8; 32] {
    let mut p = [0u8; 32];
    p[0] = ND_NEIGHBOR_ADVERT;
    // p[1]: code 0; p[2..4]: checksum.
    // Override, not solicited (nobody asked), not router.
    p[4] = NA_FLAG_OVERRIDE;
    p[8..24].copy_from_slice(&target.octets());
    p[24] = ND_OPT_TARGET_LINKADDR;
    p[25] = 1; // option length in units of 8 bytes
    p[26..32].copy_from_slice(&mac);
    p
}

/// `sockaddr_ll` for an Ethernet broadcast ARP frame out of `ifindex`.
fn link_layer_broadcast(ifindex: u32) -> Result<SockAddr, Error> {
    let ifindex = i32::try_from(ifindex).map_err(|_| {
        io_error(
            "building link-layer address",
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("ifindex {ifindex} out of range"),
            ),
        )
    })?;
    let mut storage = SockAddrStorage::zeroed();
    // SAFETY: sockaddr_ll is one of this platform's sockaddr types and fits
    // in sockaddr_storage (view_as asserts it); the storage is zeroed, so
    // every field not set below is a valid zero.
    let ll = unsafe { storage.view_as::<libc::sockaddr_ll>() };
    ll.sll_family = libc::AF_PACKET as libc::sa_family_t;
    ll.sll_protocol = ETH_P_ARP.to_be();
    ll.sll_ifindex = ifindex;
    ll.sll_halen = 6;
    ll.sll_addr[..6].copy_from_slice(&BROADCAST_MAC);
    // SAFETY: the family is AF_PACKET and the storage holds a fully
    // initialised sockaddr_ll of exactly the given length.
    Ok(unsafe { SockAddr::new(storage, size_of::<libc::sockaddr_ll>() as socklen_t) })
}

fn io_error(context: &str, source: std::io::Error) -> Error {
    Error::Io {
        context: context.to_owned(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC: [u8; 6] = [0x02, 0x00, 0x5e, 0x00, 0x01, 0x07];

    #[test]
    fn arp_request_layout() {
        let p = arp_request(MAC, Ipv4Addr::new(192, 0, 2, 10));
        assert_eq!(
            p,
            [
                0x00, 0x01, 0x08, 0x00, 6, 4, 0x00, 0x01, // ether, ipv4, request
                0x02, 0x00, 0x5e, 0x00, 0x01, 0x07, 192, 0, 2, 10, // sender
                0, 0, 0, 0, 0, 0, 192, 0, 2, 10, // target
            ]
        );
    }

    #[test]
    fn neighbour_advert_layout() {
        let target: Ipv6Addr = "2001:db8::10".parse().unwrap();
        let p = neighbour_advert(MAC, target);
        assert_eq!(&p[0..8], &[136, 0, 0, 0, 0x20, 0, 0, 0]);
        assert_eq!(&p[8..24], &target.octets());
        assert_eq!(&p[24..32], &[2, 1, 0x02, 0x00, 0x5e, 0x00, 0x01, 0x07]);
    }
}
