//! Arbitrary bytes into the VRRP receive path: `vrrp::check` and
//! `vrrp::Advert::parse` must never panic, and whatever they accept must
//! re-emit to the same message.
#![no_main]

#[path = "carrier.rs"]
mod carrier;

use carp_proto::packet::DropReason;
use carp_proto::vrrp::{self, Advert};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((carrier, relax_ttl, payload)) = carrier::split(data) else {
        return;
    };

    let checked = vrrp::check(&carrier, payload, relax_ttl);
    let parsed = Advert::parse(payload, carrier.src, carrier.dst);
    if let Ok(advert) = &checked {
        assert_eq!(parsed.as_ref(), Ok(advert));
    }
    if let Ok(advert) = parsed {
        assert!(
            matches!(checked, Ok(_) | Err(DropReason::BadTtl)),
            "{checked:?}"
        );
        let bytes = advert.to_bytes(carrier.src, carrier.dst);
        assert_eq!(
            Advert::parse(&bytes, carrier.src, carrier.dst).as_ref(),
            Ok(&advert)
        );
        // The checksum may differ (0x0000 and 0xffff are both zero in
        // ones' complement), VRRPv3's 4 reserved bits are sent as zero, and
        // without authentication VRRPv2's 8 bytes of authentication data
        // are ignored on reception and sent as zero (RFC 3768, 5.3.10).
        assert_eq!(bytes.len(), payload.len());
        assert_eq!(bytes[..4], payload[..4]);
        assert_eq!(bytes[4] & 0x0f, payload[4] & 0x0f);
        assert_eq!(bytes[5], payload[5]);
        let auth_ignored = payload[0] >> 4 == 2 && payload[4] == 0;
        let end = if auth_ignored {
            payload.len() - 8
        } else {
            payload.len()
        };
        assert_eq!(bytes[8..end], payload[8..end]);
        assert!(bytes[end..].iter().all(|b| *b == 0));
    }
});
