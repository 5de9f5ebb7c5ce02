//! The carrier both packet fuzz targets derive from their input: the first
//! byte is the TTL, the second chooses IPv4 or IPv6 (bit 0), the source
//! address and whether the TTL check is relaxed (bit 1); the rest is the
//! payload.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use carp_proto::packet::{self, Carrier};

/// `(carrier, relax_ttl, payload)`, or `None` for inputs under two bytes.
pub fn split(data: &[u8]) -> Option<(Carrier, bool, &[u8])> {
    let [ttl, flags, payload @ ..] = data else {
        return None;
    };
    let (src, dst) = if flags & 1 == 0 {
        (
            IpAddr::V4(Ipv4Addr::new(10, 0, 0, *flags)),
            IpAddr::V4(packet::GROUP_V4),
        )
    } else {
        (
            IpAddr::V6(Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, u16::from(*flags))),
            IpAddr::V6(packet::GROUP_V6),
        )
    };
    let carrier = Carrier {
        ttl: *ttl,
        src,
        dst,
    };
    Some((carrier, flags & 2 != 0, payload))
}
