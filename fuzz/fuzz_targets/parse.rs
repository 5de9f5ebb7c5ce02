//! Arbitrary bytes into the receive path: `check` and `Advert::parse` must
//! never panic, and whatever they accept must re-emit to the same header.
#![no_main]

#[path = "carrier.rs"]
mod carrier;

use carp_proto::Advert;
use carp_proto::packet::{self, DropReason};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((carrier, relax_ttl, payload)) = carrier::split(data) else {
        return;
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
