//! Arbitrary bytes into the receive path: `check` and `Advert::parse` must
//! never panic, and whatever they accept must re-emit to the same header.
#![no_main]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use carp_proto::Advert;
use carp_proto::packet::{self, Carrier, DropReason};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The first two bytes choose the carrier, the rest is the payload.
    let (carrier, relax_ttl, payload) = match data {
        [ttl, flags, payload @ ..] => {
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
            (
                Carrier {
                    ttl: *ttl,
                    src,
                    dst,
                },
                flags & 2 != 0,
                payload,
            )
        }
        _ => return,
    };

    let checked = packet::check(&carrier, payload, relax_ttl);
    let parsed = Advert::parse(payload);
    if let Ok(advert) = checked {
        assert_eq!(parsed, Ok(advert));
    }
    if let Ok(advert) = parsed {
        assert!(
            matches!(checked, Ok(_) | Err(DropReason::BadTtl)),
            "{checked:?}"
        );
        let bytes = advert.to_bytes();
        assert_eq!(Advert::parse(&bytes), Ok(advert));
        // The checksum field may differ: 0x0000 and 0xffff are both zero in
        // ones' complement, and emit always writes the first.
        assert_eq!(bytes[..6], payload[..6]);
        assert_eq!(bytes[8..], payload[8..]);
    }
});
