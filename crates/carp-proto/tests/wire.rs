//! Wire format and authentication against real bytes: a UCARP capture, hand
//! built VRRP packets, and properties over arbitrary input.

// The helpers below are test code too; clippy only exempts `#[test]` bodies.
#![allow(clippy::unwrap_used)]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use carp_proto::auth::MAX_KEY_LEN;
use carp_proto::packet::{self, Carrier, GROUP_V4, GROUP_V6, HEADER_LEN, IPPROTO_CARP, Packet};
use carp_proto::{Advert, AuthError, Authenticator, DropReason, HmacMode};
use proptest::prelude::*;

const VIP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 100);

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Bytes of a fixture file: `#` lines are comments, the rest is hex.
fn fixture_bytes(text: &str) -> Vec<u8> {
    let digits: String = text
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .flat_map(|l| l.split_whitespace())
        .collect();
    (0..digits.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&digits[i..i + 2], 16).unwrap())
        .collect()
}

fn v4_carrier(ttl: u8) -> Carrier {
    Carrier {
        ttl,
        src: IpAddr::V4(Ipv4Addr::new(10, 77, 0, 1)),
        dst: IpAddr::V4(GROUP_V4),
    }
}

fn v6_carrier(ttl: u8) -> Carrier {
    Carrier {
        ttl,
        src: IpAddr::V6(Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1)),
        dst: IpAddr::V6(GROUP_V6),
    }
}

fn sample() -> Advert {
    Advert {
        vhid: 7,
        advskew: 10,
        advbase: 1,
        demote: 0,
        counter: 42,
        hmac: [0x5a; 20],
    }
}

fn addrs(list: &[&str]) -> Vec<IpAddr> {
    list.iter().map(|a| a.parse().unwrap()).collect()
}

// ---------------------------------------------------------------------------
// Authentication vectors

#[test]
fn ucarp_check_value_byte_for_byte() {
    let auth = Authenticator::new(HmacMode::Ucarp, b"secret", 7, &[IpAddr::V4(VIP)]).unwrap();
    let hmac = auth.sign(18_358_996_503_823_022_290);
    assert_eq!(hex(&hmac), "abe69cb7cadeb3326dd08a6d09313272edbdc945");
}

#[test]
fn captured_ucarp_advertisement() {
    let frame = fixture_bytes(include_str!("fixtures/ucarp-advert.hex"));
    assert_eq!(frame.len(), 56);

    // IPv4 header as UCARP sends it.
    let (ip, payload) = frame.split_at(20);
    assert_eq!(ip[0], 0x45, "IPv4, no options");
    assert_eq!(ip[1], 0x10, "TOS low delay");
    assert_eq!(u16::from_be_bytes([ip[2], ip[3]]), 56, "total length");
    assert_eq!(
        u16::from_be_bytes([ip[6], ip[7]]),
        0x4000,
        "DF, no fragment offset"
    );
    assert_eq!(ip[8], 255, "TTL");
    assert_eq!(ip[9], IPPROTO_CARP);
    assert_eq!(packet::checksum(ip), 0, "IP header checksum");
    let src = Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]);
    let dst = Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]);
    assert_eq!(src, Ipv4Addr::new(10, 77, 0, 1));
    assert_eq!(dst, GROUP_V4);

    // CARP header, field by field.
    let view = Packet::new_checked(payload).unwrap();
    assert_eq!((view.version(), view.msg_type()), (2, 1));
    assert_eq!(view.authlen(), 7);
    assert!(view.verify_checksum());
    let carrier = Carrier {
        ttl: ip[8],
        src: IpAddr::V4(src),
        dst: IpAddr::V4(dst),
    };
    let advert = packet::check(&carrier, payload, false).unwrap();
    assert_eq!(advert.vhid, 7);
    assert_eq!(advert.advskew, 10);
    assert_eq!(advert.advbase, 1);
    assert_eq!(advert.demote, 0);
    assert_eq!(advert.counter, view.counter());
    assert_eq!(advert.hmac, view.hmac());
    assert_eq!(Advert::parse(payload), Ok(advert));

    // The HMAC verifies with UCARP's message, and with the BSDs' (identical
    // for one IPv4 address); a wrong password or VIP does not.
    let vip = [IpAddr::V4(VIP)];
    for mode in [HmacMode::Ucarp, HmacMode::Bsd] {
        let auth = Authenticator::new(mode, b"secret", 7, &vip).unwrap();
        assert!(auth.verify(advert.counter, &advert.hmac), "{mode:?}");
        assert_eq!(auth.sign(advert.counter), advert.hmac);
    }
    let wrong_key = Authenticator::new(HmacMode::Ucarp, b"secreT", 7, &vip).unwrap();
    assert!(!wrong_key.verify(advert.counter, &advert.hmac));
    let wrong_vip = Authenticator::new(
        HmacMode::Ucarp,
        b"secret",
        7,
        &[IpAddr::V4(Ipv4Addr::new(10, 77, 0, 101))],
    )
    .unwrap();
    assert!(!wrong_vip.verify(advert.counter, &advert.hmac));

    // Re-emitting reproduces UCARP's bytes exactly.
    let mut buf = [0xa5u8; 64];
    advert.emit(&mut buf);
    assert_eq!(&buf[..HEADER_LEN], payload);
    assert!(buf[HEADER_LEN..].iter().all(|&b| b == 0xa5));
}

#[test]
fn link_local_addresses_verify_in_both_forms() {
    let full = addrs(&["10.0.0.1", "2001:db8::1", "fe80::1", "fe80::2"]);
    let global = addrs(&["10.0.0.1", "2001:db8::1"]);
    let auth = Authenticator::new(HmacMode::Bsd, b"pw", 3, &full).unwrap();
    let freebsd = Authenticator::new(HmacMode::Bsd, b"pw", 3, &full)
        .unwrap()
        .sign(99);
    let openbsd = Authenticator::new(HmacMode::Bsd, b"pw", 3, &global)
        .unwrap()
        .sign(99);
    assert_ne!(freebsd, openbsd);
    // Sent with the link-local addresses (FreeBSD's form) ...
    assert_eq!(auth.sign(99), freebsd);
    // ... and both forms accepted.
    assert!(auth.verify(99, &freebsd));
    assert!(auth.verify(99, &openbsd));
    assert!(!auth.verify(100, &openbsd));

    // The scope bytes the kernel embeds (bytes 2..4) do not count.
    let scoped = addrs(&["10.0.0.1", "2001:db8::1", "fe80:4::1", "fe80:9::2"]);
    let auth = Authenticator::new(HmacMode::Bsd, b"pw", 3, &scoped).unwrap();
    assert_eq!(auth.sign(99), freebsd);

    // Without link-local addresses there is one form only.
    let auth = Authenticator::new(HmacMode::Bsd, b"pw", 3, &global).unwrap();
    assert!(auth.verify(99, &openbsd));
    assert!(!auth.verify(99, &freebsd));
}

#[test]
fn only_link_local_addresses() {
    use hmac::{Hmac, KeyInit, Mac};
    let auth = Authenticator::new(HmacMode::Bsd, b"pw", 3, &addrs(&["fe80:2::1"])).unwrap();
    // OpenBSD's form then hashes the prefix and the counter only.
    let mut mac = Hmac::<sha1::Sha1>::new_from_slice(b"pw").unwrap();
    mac.update(&[0x02, 0x01, 3]);
    mac.update(&1u64.to_be_bytes());
    let without: [u8; 20] = mac.finalize().into_bytes().into();
    let with = auth.sign(1);
    assert_ne!(with, without);
    assert!(auth.verify(1, &with));
    assert!(auth.verify(1, &without));
}

#[test]
fn key_and_address_errors() {
    let vip = [IpAddr::V4(VIP)];
    let long = [b'k'; MAX_KEY_LEN + 1];
    assert_eq!(
        Authenticator::new(HmacMode::Ucarp, &long, 7, &vip).unwrap_err(),
        AuthError::KeyTooLong(20)
    );
    let bsd_long = Authenticator::new(HmacMode::Bsd, &long, 7, &vip).unwrap();
    let bsd_19 = Authenticator::new(HmacMode::Bsd, &long[..MAX_KEY_LEN], 7, &vip).unwrap();
    assert_eq!(bsd_long.sign(1), bsd_19.sign(1));
    assert!(Authenticator::new(HmacMode::Bsd, b"", 7, &vip).is_ok());
    assert_eq!(
        Authenticator::new(HmacMode::Ucarp, b"pw", 7, &addrs(&["10.0.0.1", "10.0.0.2"]))
            .unwrap_err(),
        AuthError::UcarpAddresses { v4: 2, v6: 0 }
    );
    assert_eq!(
        Authenticator::new(HmacMode::Bsd, b"pw", 7, &[]).unwrap_err(),
        AuthError::NoAddresses
    );
}

// ---------------------------------------------------------------------------
// Receive checks: one test per drop reason `check` can give

/// `bytes` from a correct sender over IPv4 and over IPv6 give `want`.
fn assert_check_on_both(bytes: &[u8], want: Result<Advert, DropReason>) {
    assert_eq!(packet::check(&v4_carrier(255), bytes, false), want, "IPv4");
    assert_eq!(packet::check(&v6_carrier(255), bytes, false), want, "IPv6");
}

#[test]
fn accepts_a_valid_advert_on_both_families() {
    let bytes = sample().to_bytes();
    assert_check_on_both(&bytes, Ok(sample()));
}

#[test]
fn too_short_and_too_long() {
    let bytes = sample().to_bytes();
    assert_eq!(
        packet::check(&v4_carrier(255), &bytes[..35], false),
        Err(DropReason::TooShort)
    );
    assert_eq!(
        packet::check(&v4_carrier(255), &[], false),
        Err(DropReason::TooShort)
    );
    let mut long = bytes.to_vec();
    long.push(0);
    assert_eq!(
        packet::check(&v4_carrier(255), &long, false),
        Err(DropReason::TooLong)
    );
    assert_eq!(Advert::parse(&long), Err(DropReason::TooLong));
}

#[test]
fn bad_ttl_unless_relaxed() {
    let bytes = sample().to_bytes();
    for ttl in [0, 1, 64, 254] {
        assert_eq!(
            packet::check(&v4_carrier(ttl), &bytes, false),
            Err(DropReason::BadTtl)
        );
        assert_eq!(
            packet::check(&v6_carrier(ttl), &bytes, false),
            Err(DropReason::BadTtl)
        );
        assert_eq!(packet::check(&v4_carrier(ttl), &bytes, true), Ok(sample()));
    }
    // Length is judged before the TTL.
    assert_eq!(
        packet::check(&v4_carrier(1), &bytes[..20], false),
        Err(DropReason::TooShort)
    );
}

/// A valid header with one field changed and the checksum fixed up, so that
/// only that field is wrong.
fn with(f: impl FnOnce(&mut Packet<&mut [u8]>)) -> [u8; HEADER_LEN] {
    let mut bytes = sample().to_bytes();
    let mut view = Packet::new_unchecked(&mut bytes[..]);
    f(&mut view);
    view.fill_checksum();
    bytes
}

#[test]
fn bad_version() {
    for version in [0, 1, 3, 15] {
        let bytes = with(|p| p.set_version(version));
        assert_check_on_both(&bytes, Err(DropReason::BadVersion));
    }
    // The TTL is judged before the version.
    let bytes = with(|p| p.set_version(3));
    assert_eq!(
        packet::check(&v4_carrier(64), &bytes, false),
        Err(DropReason::BadTtl)
    );
}

#[test]
fn carp_shaped_version_3_is_not_vrrp() {
    // 36 bytes with authlen 7 would also fit VRRPv3 with seven IPv4
    // addresses (8 + 4 * 7); CARP's shape wins.
    let bytes = with(|p| p.set_version(3));
    assert_eq!(bytes[0], 0x31);
    assert_check_on_both(&bytes, Err(DropReason::BadVersion));
}

#[test]
fn bad_type() {
    for t in [0, 2, 15] {
        let bytes = with(|p| p.set_msg_type(t));
        assert_eq!(
            packet::check(&v4_carrier(255), &bytes, false),
            Err(DropReason::BadType)
        );
    }
}

#[test]
fn bad_authlen() {
    // Demote 3 keeps byte 4 out of VRRPv2's auth_type range.
    for authlen in [0, 5, 6, 8, 255] {
        let bytes = with(|p| {
            p.set_demote(3);
            p.set_authlen(authlen);
        });
        assert_eq!(
            packet::check(&v4_carrier(255), &bytes, false),
            Err(DropReason::BadAuthLen)
        );
    }
}

#[test]
fn bad_checksum() {
    let mut bytes = sample().to_bytes();
    bytes[20] ^= 0x01;
    assert_eq!(
        packet::check(&v4_carrier(255), &bytes, false),
        Err(DropReason::BadChecksum)
    );
    let mut bytes = sample().to_bytes();
    bytes[6] ^= 0x80;
    assert_eq!(Advert::parse(&bytes), Err(DropReason::BadChecksum));
}

/// Internet checksum over an IPv4 pseudo-header and `payload` (VRRPv3).
fn v4_pseudo_checksum(src: Ipv4Addr, dst: Ipv4Addr, payload: &[u8]) -> u16 {
    let mut data = Vec::new();
    data.extend_from_slice(&src.octets());
    data.extend_from_slice(&dst.octets());
    data.extend_from_slice(&[0, IPPROTO_CARP]);
    data.extend_from_slice(&u16::try_from(payload.len()).unwrap().to_be_bytes());
    data.extend_from_slice(payload);
    packet::checksum(&data)
}

/// A VRRPv2 advertisement (RFC 3768): header, addresses, 8 bytes of
/// authentication data, checksum over the whole message.
fn vrrp_v2(vrid: u8, auth_type: u8, addrs: &[Ipv4Addr]) -> Vec<u8> {
    let mut p = vec![
        0x21,
        vrid,
        100,
        u8::try_from(addrs.len()).unwrap(),
        auth_type,
        1,
        0,
        0,
    ];
    for a in addrs {
        p.extend_from_slice(&a.octets());
    }
    let auth: &[u8; 8] = if auth_type == 1 {
        b"secret\0\0"
    } else {
        &[0; 8]
    };
    p.extend_from_slice(auth);
    let sum = packet::checksum(&p);
    p[6..8].copy_from_slice(&sum.to_be_bytes());
    p
}

/// A VRRPv3 advertisement (RFC 5798): max advert interval 100 cs.
fn vrrp_v3(vrid: u8, addrs: &[IpAddr], carrier: &Carrier) -> Vec<u8> {
    let mut p = vec![
        0x31,
        vrid,
        100,
        u8::try_from(addrs.len()).unwrap(),
        0x00,
        0x64,
        0,
        0,
    ];
    for a in addrs {
        match a {
            IpAddr::V4(a) => p.extend_from_slice(&a.octets()),
            IpAddr::V6(a) => p.extend_from_slice(&a.octets()),
        }
    }
    if let (IpAddr::V4(src), IpAddr::V4(dst)) = (carrier.src, carrier.dst) {
        let sum = v4_pseudo_checksum(src, dst, &p);
        p[6..8].copy_from_slice(&sum.to_be_bytes());
    }
    p
}

#[test]
fn vrrp_v2_is_recognised() {
    let c = v4_carrier(255);
    let one = vrrp_v2(7, 0, &[VIP]);
    assert_eq!(one.len(), 20);
    assert_eq!(packet::check(&c, &one, false), Err(DropReason::Vrrp));
    let two = vrrp_v2(7, 1, &[VIP, Ipv4Addr::new(10, 77, 0, 101)]);
    assert_eq!(packet::check(&c, &two, false), Err(DropReason::Vrrp));
    // Five addresses give CARP's length, 36 bytes, with 5 at offset 3.
    let five: Vec<Ipv4Addr> = (1..=5).map(|i| Ipv4Addr::new(10, 77, 0, i)).collect();
    let five = vrrp_v2(7, 2, &five);
    assert_eq!(five.len(), HEADER_LEN);
    assert_eq!(packet::check(&c, &five, false), Err(DropReason::Vrrp));
    // VRRP is recognised before the TTL is looked at.
    assert_eq!(
        packet::check(&v4_carrier(64), &one, false),
        Err(DropReason::Vrrp)
    );
}

#[test]
fn vrrp_v3_is_recognised() {
    let c4 = v4_carrier(255);
    let v4 = vrrp_v3(7, &[IpAddr::V4(VIP)], &c4);
    assert_eq!(v4.len(), 12);
    assert_eq!(packet::check(&c4, &v4, false), Err(DropReason::Vrrp));
    let c6 = v6_carrier(255);
    let v6 = vrrp_v3(7, &addrs(&["fe80::1", "2001:db8::100"]), &c6);
    assert_eq!(v6.len(), 40);
    assert_eq!(packet::check(&c6, &v6, false), Err(DropReason::Vrrp));
    // The address size follows the carrier's family.
    assert_eq!(packet::check(&c6, &v4, false), Err(DropReason::TooShort));
}

#[test]
fn not_vrrp_when_the_layout_does_not_fit() {
    let c = v4_carrier(255);
    // auth_type 3 is not VRRPv2.
    let mut p = vrrp_v2(7, 0, &[VIP]);
    p[4] = 3;
    assert_eq!(packet::check(&c, &p, false), Err(DropReason::TooShort));
    // Count and length disagree.
    let mut p = vrrp_v2(7, 0, &[VIP]);
    p[3] = 2;
    assert_eq!(packet::check(&c, &p, false), Err(DropReason::TooShort));
}

#[test]
fn drop_reason_names_are_distinct() {
    let mut names: Vec<&str> = DropReason::ALL.iter().map(|r| r.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), DropReason::ALL.len());
}

// ---------------------------------------------------------------------------
// Properties

fn any_advert() -> impl Strategy<Value = Advert> {
    (
        any::<u8>(),
        any::<u8>(),
        any::<u8>(),
        any::<u8>(),
        any::<u64>(),
        any::<[u8; 20]>(),
    )
        .prop_map(|(vhid, advskew, advbase, demote, counter, hmac)| Advert {
            vhid,
            advskew,
            advbase,
            demote,
            counter,
            hmac,
        })
}

fn any_ip() -> impl Strategy<Value = IpAddr> {
    prop_oneof![
        any::<[u8; 4]>().prop_map(|b| IpAddr::V4(Ipv4Addr::from(b))),
        any::<[u8; 16]>().prop_map(|b| IpAddr::V6(Ipv6Addr::from(b))),
        // Link-local, with arbitrary scope bytes.
        (any::<u16>(), any::<u64>()).prop_map(|(scope, iid)| {
            IpAddr::V6(Ipv6Addr::from(
                (0xfe80u128 << 112) | (u128::from(scope) << 96) | u128::from(iid),
            ))
        }),
    ]
}

fn any_carrier() -> impl Strategy<Value = Carrier> {
    (any::<u8>(), any_ip(), any_ip()).prop_map(|(ttl, src, dst)| Carrier { ttl, src, dst })
}

proptest! {
    #[test]
    fn parse_emit_round_trip(advert in any_advert()) {
        let mut buf = [0xa5u8; HEADER_LEN + 8];
        advert.emit(&mut buf);
        prop_assert_eq!(Advert::parse(&buf[..HEADER_LEN]), Ok(advert));
        prop_assert_eq!(&buf[HEADER_LEN..], &[0xa5u8; 8][..]);
        prop_assert_eq!(packet::check(&v6_carrier(255), &advert.to_bytes(), false), Ok(advert));
    }

    #[test]
    fn check_never_panics(
        carrier in any_carrier(),
        bytes in proptest::collection::vec(any::<u8>(), 0..=200),
        relax in any::<bool>(),
    ) {
        let _ = packet::check(&carrier, &bytes, relax);
        let _ = Advert::parse(&bytes);
    }

    #[test]
    fn every_truncation_is_too_short(advert in any_advert(), carrier in any_carrier()) {
        let bytes = advert.to_bytes();
        for len in 0..HEADER_LEN {
            prop_assert_eq!(packet::check(&carrier, &bytes[..len], false), Err(DropReason::TooShort));
            prop_assert_eq!(Advert::parse(&bytes[..len]), Err(DropReason::TooShort));
        }
    }

    #[test]
    fn bsd_hmac_ignores_order_and_duplicates(
        set in proptest::collection::vec(any_ip(), 1..8),
        dups in proptest::collection::vec(any::<prop::sample::Index>(), 0..4),
        seed in any::<u64>(),
        key in proptest::collection::vec(any::<u8>(), 0..=32),
        vhid in any::<u8>(),
        counter in any::<u64>(),
    ) {
        let mut shuffled = set.clone();
        shuffled.extend(dups.iter().map(|i| set[i.index(set.len())]));
        // A deterministic shuffle driven by the seed.
        let mut state = seed;
        for i in (1..shuffled.len()).rev() {
            state = state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            let j = usize::try_from(state >> 33).unwrap() % (i + 1);
            shuffled.swap(i, j);
        }
        let a = Authenticator::new(HmacMode::Bsd, &key, vhid, &set).unwrap();
        let b = Authenticator::new(HmacMode::Bsd, &key, vhid, &shuffled).unwrap();
        let hmac = a.sign(counter);
        prop_assert_eq!(hmac, b.sign(counter));
        prop_assert!(b.verify(counter, &hmac));
    }

    #[test]
    fn one_ipv4_address_bsd_equals_ucarp(
        key in proptest::collection::vec(any::<u8>(), 0..=MAX_KEY_LEN),
        vhid in any::<u8>(),
        vip in any::<[u8; 4]>(),
        counter in any::<u64>(),
    ) {
        let vip = [IpAddr::V4(Ipv4Addr::from(vip))];
        let bsd = Authenticator::new(HmacMode::Bsd, &key, vhid, &vip).unwrap();
        let ucarp = Authenticator::new(HmacMode::Ucarp, &key, vhid, &vip).unwrap();
        let hmac = ucarp.sign(counter);
        prop_assert_eq!(bsd.sign(counter), hmac);
        prop_assert!(bsd.verify(counter, &hmac));
        let mut wrong = hmac;
        wrong[19] ^= 1;
        prop_assert!(!ucarp.verify(counter, &wrong));
    }
}
