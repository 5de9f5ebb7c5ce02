//! The VRRP wire format against byte constants laid out as RFC 3768 and
//! RFC 9568 define them and as keepalived and FRR send them (checksums
//! computed apart and confirmed by tshark's VRRP dissector), every drop
//! reason, and properties over arbitrary input.

// The helpers below are test code too; clippy only exempts `#[test]` bodies.
#![allow(clippy::unwrap_used)]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use carp_proto::DropReason;
use carp_proto::packet::{Carrier, GROUP_V4, GROUP_V6};
use carp_proto::vrrp::{self, Addresses, Advert, Auth, Expected, Packet, Version};
use proptest::prelude::*;

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn v4(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

fn v6(s: &str) -> Ipv6Addr {
    s.parse().unwrap()
}

fn carrier(src: &str, ttl: u8) -> Carrier {
    let src: IpAddr = src.parse().unwrap();
    let dst = if src.is_ipv4() {
        IpAddr::V4(GROUP_V4)
    } else {
        IpAddr::V6(GROUP_V6)
    };
    Carrier { ttl, src, dst }
}

/// keepalived 2.2, `vrrp_version 2`, its sample instance: VRID 51, priority
/// 100, `advert_int 1`, `auth_type PASS` with `auth_pass 1111`, three
/// addresses; from 192.168.200.1.
const KEEPALIVED_V2: &str = "2133640301017d36c0a8c810c0a8c811c0a8c8123131313100000000";
/// keepalived, `vrrp_version 3`: VRID 51, priority 100, 1 s, 10.0.0.100;
/// from 10.0.0.1.
const KEEPALIVED_V3: &str = "31336401006475730a000064";
/// The same router stopping: priority 0.
const KEEPALIVED_V3_STOP: &str = "313300010064d9730a000064";
/// FRR vrrpd over IPv6: VRID 5, priority 100, 1 s, the link-local virtual
/// address first, then a global one; from fe80::1.
const FRR_V3_V6: &str =
    "3105640200644021fe80000000000000000000000000000520010db8000000000000000000000005";
/// VRRPv3 at 100 ms (10 cs), priority 200; from 10.0.0.2.
const V3_FAST: &str = "3105c801000a11fa0a000064";

fn keepalived_v2() -> Advert {
    Advert {
        version: Version::V2,
        vrid: 51,
        priority: 100,
        interval_cs: 100,
        auth: Auth::simple(b"1111"),
        addresses: Addresses::V4(vec![
            v4("192.168.200.16"),
            v4("192.168.200.17"),
            v4("192.168.200.18"),
        ]),
    }
}

fn keepalived_v3() -> Advert {
    Advert {
        version: Version::V3,
        vrid: 51,
        priority: 100,
        interval_cs: 100,
        auth: Auth::None,
        addresses: Addresses::V4(vec![v4("10.0.0.100")]),
    }
}

/// Parses with every check, and emits back to the same bytes.
fn known(hex: &str, src: &str, expected: &Advert) {
    let bytes = unhex(hex);
    let c = carrier(src, 255);
    let advert = vrrp::check(&c, &bytes, false).unwrap();
    assert_eq!(&advert, expected);
    assert_eq!(advert.to_bytes(c.src, c.dst), bytes);
    assert_eq!(advert.buffer_len(), bytes.len());
}

#[test]
fn keepalived_v2_with_password() {
    known(KEEPALIVED_V2, "192.168.200.1", &keepalived_v2());
    let p = Packet::new_checked(unhex(KEEPALIVED_V2), false).unwrap();
    assert_eq!((p.auth_type(), p.adver_int(), p.checksum()), (1, 1, 0x7d36));
    assert_eq!(&p.auth_data(), b"1111\0\0\0\0");
}

#[test]
fn keepalived_v3_ipv4_and_its_stop() {
    known(KEEPALIVED_V3, "10.0.0.1", &keepalived_v3());
    let stop = Advert {
        priority: vrrp::STOP_PRIORITY,
        ..keepalived_v3()
    };
    known(KEEPALIVED_V3_STOP, "10.0.0.1", &stop);
}

#[test]
fn frr_v3_ipv6() {
    let expected = Advert {
        version: Version::V3,
        vrid: 5,
        priority: 100,
        interval_cs: 100,
        auth: Auth::None,
        addresses: Addresses::V6(vec![v6("fe80::5"), v6("2001:db8::5")]),
    };
    known(FRR_V3_V6, "fe80::1", &expected);
    let p = Packet::new_checked(unhex(FRR_V3_V6), true).unwrap();
    assert_eq!(p.address_bytes().len(), 32);
}

#[test]
fn v3_centiseconds() {
    let expected = Advert {
        version: Version::V3,
        vrid: 5,
        priority: 200,
        interval_cs: 10,
        auth: Auth::None,
        addresses: Addresses::V4(vec![v4("10.0.0.100")]),
    };
    known(V3_FAST, "10.0.0.2", &expected);
    assert_eq!(expected.interval(), std::time::Duration::from_millis(100));
}

/// `bytes` with the checksum recomputed for a carrier from `src`.
fn resum(mut bytes: Vec<u8>, src: &str, ipv6: bool) -> Vec<u8> {
    let c = carrier(src, 255);
    Packet::new_unchecked(&mut bytes[..], ipv6).fill_checksum(c.src, c.dst);
    bytes
}

#[test]
fn every_stateless_drop_reason() {
    let c4 = carrier("10.0.0.1", 255);
    let v3 = unhex(KEEPALIVED_V3);
    let check = |bytes: &[u8]| vrrp::check(&c4, bytes, false);

    // CARP's shape, as UCARP sends it
    let mut carp = vec![0u8; 36];
    carp[0] = 0x21;
    carp[3] = 7;
    assert_eq!(check(&carp), Err(DropReason::Carp));
    assert_eq!(check(&v3[..7]), Err(DropReason::TooShort));
    assert_eq!(
        vrrp::check(&carrier("10.0.0.1", 254), &v3, false),
        Err(DropReason::BadTtl)
    );
    assert!(vrrp::check(&carrier("10.0.0.1", 254), &v3, true).is_ok());

    let mut b = v3.clone();
    b[0] = 0x41;
    assert_eq!(check(&b), Err(DropReason::BadVersion));
    // VRRPv2 has no IPv6
    let mut b = unhex(FRR_V3_V6);
    b[0] = 0x21;
    assert_eq!(
        vrrp::check(&carrier("fe80::1", 255), &b, false),
        Err(DropReason::BadVersion)
    );
    let mut b = v3.clone();
    b[0] = 0x32;
    assert_eq!(check(&b), Err(DropReason::BadType));
    let mut b = v3.clone();
    b[3] = 0;
    assert_eq!(check(&b), Err(DropReason::NoAddresses));
    let mut b = v3.clone();
    b[3] = 2;
    assert_eq!(check(&b), Err(DropReason::BadLength));
    let mut b = v3.clone();
    b.push(0);
    assert_eq!(check(&b), Err(DropReason::BadLength));
    // an IPv4-sized list on an IPv6 carrier
    assert_eq!(
        vrrp::check(&carrier("fe80::1", 255), &v3, false),
        Err(DropReason::BadLength)
    );
    let mut b = v3.clone();
    b[7] ^= 1;
    assert_eq!(check(&b), Err(DropReason::BadChecksum));
    // a VRRPv2 checksum (no pseudo-header) on a VRRPv3 message
    let mut b = v3.clone();
    Packet::new_unchecked(&mut b[..], false).set_checksum(0);
    let plain = carp_proto::packet::checksum(&b);
    Packet::new_unchecked(&mut b[..], false).set_checksum(plain);
    assert_eq!(check(&b), Err(DropReason::BadChecksum));
    // erratum 8301: a zero interval is dropped
    let mut b = v3.clone();
    b[5] = 0;
    let b = resum(b, "10.0.0.1", false);
    assert_eq!(check(&b), Err(DropReason::BadInterval));
    // VRRPv2 authentication type 2 (IP AH) is obsolete
    let mut b = unhex(KEEPALIVED_V2);
    b[4] = 2;
    let b = resum(b, "10.0.0.1", false);
    assert_eq!(check(&b), Err(DropReason::BadAuthType));
}

#[test]
fn per_vrid_checks() {
    let v2 = keepalived_v2();
    let v3 = keepalived_v3();
    let v3_addrs = Addresses::V4(vec![v4("10.0.0.100")]);
    let expect_v3 = Expected {
        version: Version::V3,
        priority: 100,
        // VRRPv3 learns the interval: another one is no mismatch
        interval_cs: 300,
        auth: &Auth::None,
        addresses: &v3_addrs,
    };
    assert_eq!(v3.check_against(&expect_v3), Ok(()));
    let owner = Expected {
        priority: vrrp::OWNER_PRIORITY,
        ..expect_v3
    };
    assert_eq!(v3.check_against(&owner), Err(DropReason::ToOwner));
    assert_eq!(v2.check_against(&expect_v3), Err(DropReason::BadVersion));
    let other = Addresses::V4(vec![v4("10.0.0.101")]);
    let expect_other = Expected {
        addresses: &other,
        ..expect_v3
    };
    assert_eq!(
        v3.check_against(&expect_other),
        Err(DropReason::AddressMismatch)
    );
    let owner_v3 = Advert {
        priority: vrrp::OWNER_PRIORITY,
        ..v3.clone()
    };
    assert_eq!(
        owner_v3.check_against(&expect_other),
        Err(DropReason::AddressMismatch)
    );

    let v2_addrs = Addresses::V4(vec![
        v4("192.168.200.18"),
        v4("192.168.200.16"),
        v4("192.168.200.17"),
    ]);
    let pass = Auth::simple(b"1111");
    let expect_v2 = Expected {
        version: Version::V2,
        priority: 90,
        interval_cs: 100,
        auth: &pass,
        addresses: &v2_addrs,
    };
    // the address order does not matter
    assert_eq!(v2.check_against(&expect_v2), Ok(()));
    let wrong = Auth::simple(b"2222");
    let none = Auth::None;
    for (auth, reason) in [
        (&wrong, DropReason::BadPassword),
        (&none, DropReason::BadAuthType),
    ] {
        let e = Expected { auth, ..expect_v2 };
        assert_eq!(v2.check_against(&e), Err(reason));
    }
    let slower = Expected {
        interval_cs: 200,
        ..expect_v2
    };
    assert_eq!(v2.check_against(&slower), Err(DropReason::IntervalMismatch));
    let fewer = Addresses::V4(vec![v4("192.168.200.16")]);
    let e = Expected {
        addresses: &fewer,
        ..expect_v2
    };
    assert_eq!(v2.check_against(&e), Err(DropReason::AddressMismatch));
    // RFC 3768 7.1: the owner's advertisement is accepted anyway
    let owner_v2 = Advert {
        priority: vrrp::OWNER_PRIORITY,
        ..v2
    };
    assert_eq!(owner_v2.check_against(&e), Ok(()));
}

#[test]
fn carp_receive_path_still_counts_these_as_vrrp() {
    for (hex, src) in [
        (KEEPALIVED_V2, "192.168.200.1"),
        (KEEPALIVED_V3, "10.0.0.1"),
        (FRR_V3_V6, "fe80::1"),
    ] {
        let c = carrier(src, 255);
        assert_eq!(
            carp_proto::packet::check(&c, &unhex(hex), false),
            Err(DropReason::Vrrp)
        );
    }
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic_and_what_parses_round_trips(
        bytes in proptest::collection::vec(any::<u8>(), 0..600),
        ttl in any::<u8>(),
        ipv6 in any::<bool>(),
        relax in any::<bool>(),
    ) {
        let c = if ipv6 { carrier("fe80::1", ttl) } else { carrier("10.0.0.1", ttl) };
        if let Ok(advert) = vrrp::check(&c, &bytes, relax) {
            let again = advert.to_bytes(c.src, c.dst);
            prop_assert_eq!(Advert::parse(&again, c.src, c.dst), Ok(advert));
            // reserved bits and the checksum's two zeros aside, the same bytes
            prop_assert_eq!(again.len(), bytes.len());
        }
    }

    #[test]
    fn emitted_adverts_parse_back(
        vrid in any::<u8>(),
        priority in any::<u8>(),
        interval_cs in 1u16..=vrrp::MAX_INTERVAL_V3_CS,
        n in 1usize..20,
        ipv6 in any::<bool>(),
    ) {
        let addresses = if ipv6 {
            Addresses::V6((0..n).map(|i| Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, i as u16)).collect())
        } else {
            Addresses::V4((0..n).map(|i| Ipv4Addr::new(10, 0, 0, i as u8)).collect())
        };
        let advert = Advert { version: Version::V3, vrid, priority, interval_cs, auth: Auth::None, addresses };
        let c = if ipv6 { carrier("fe80::1", 255) } else { carrier("10.0.0.1", 255) };
        let bytes = advert.to_bytes(c.src, c.dst);
        prop_assert_eq!(vrrp::check(&c, &bytes, false), Ok(advert));
    }
}
