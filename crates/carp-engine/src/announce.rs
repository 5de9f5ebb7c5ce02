//! Gratuitous ARP (IPv4) and unsolicited neighbour advertisements (IPv6), so
//! switches and neighbours follow a new master.
//!
//! CONTRACT (filled in by the effects work): keep these names and
//! signatures; add freely.

use std::net::{Ipv4Addr, Ipv6Addr};

use crate::error::Error;

/// One AF_PACKET socket (for ARP) and one ICMPv6 raw socket (for NA),
/// shared by all VHIDs. Sends are non-blocking and never wait on the network.
#[derive(Debug)]
pub struct Announcer {}

impl Announcer {
    pub fn new() -> Result<Announcer, Error> {
        todo!()
    }

    /// Broadcast ARP request with sender = target = `ip`, sender MAC `mac`.
    pub fn gratuitous_arp(&self, _ifindex: u32, _mac: [u8; 6], _ip: Ipv4Addr) -> Result<(), Error> {
        todo!()
    }

    /// Unsolicited NA for `ip` (override flag, target link-layer option
    /// `mac`) to ff02::1 with hop limit 255.
    pub fn unsolicited_na(&self, _ifindex: u32, _mac: [u8; 6], _ip: Ipv6Addr) -> Result<(), Error> {
        todo!()
    }
}
