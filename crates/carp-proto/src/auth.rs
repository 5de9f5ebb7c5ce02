//! HMAC-SHA1 authentication of advertisements, as UCARP and the BSDs compute
//! it.
//!
//! All of them compute a standard HMAC-SHA1 keyed with the password bytes and
//! differ only in the message: the fixed prefix `0x02 0x01 vhid`, then the
//! addresses of the VHID, then the 64-bit counter (big-endian, as on the
//! wire). [`Authenticator`] hashes key and prefix once and clones that state
//! per packet, so signing or verifying hashes only the counter.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use hmac::digest::Key;
use hmac::{Hmac, KeyInit, Mac};
use sha1::Sha1;
use subtle::ConstantTimeEq;

use crate::packet::{TYPE_ADVERTISEMENT, VERSION};

type HmacSha1 = Hmac<Sha1>;

/// Longest key UCARP accepts and the BSDs keep (they copy the password with
/// `strlcpy` into a 20-byte buffer).
pub const MAX_KEY_LEN: usize = 19;

/// Which message the HMAC covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum HmacMode {
    /// `0x02 0x01 vhid vip[4] counter[8]`: exactly one IPv4 address.
    Ucarp,
    /// FreeBSD/OpenBSD: sorted IPv4 set, sorted IPv6 set, counter.
    #[default]
    Bsd,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("UCARP authentication allows passwords of at most 19 bytes, got {0}")]
    KeyTooLong(usize),
    #[error("UCARP authentication needs exactly one IPv4 address, got {v4} IPv4 and {v6} IPv6")]
    UcarpAddresses { v4: usize, v6: usize },
    #[error("a VHID needs at least one address")]
    NoAddresses,
}

/// Signs and verifies the advertisements of one VHID. Build once per
/// (key, vhid, address set); signing and verifying then only hash the
/// counter.
#[derive(Clone)]
pub struct Authenticator {
    /// Keyed state after the prefix of the form this node sends.
    send: HmacSha1,
    /// BSD mode with link-local IPv6 addresses: the state for the form
    /// without them, which OpenBSD sends and which is accepted too.
    without_link_local: Option<HmacSha1>,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // never print the key
        f.debug_struct("Authenticator").finish_non_exhaustive()
    }
}

impl Authenticator {
    /// Prepare the HMAC state of one VHID.
    ///
    /// `key` is the password bytes; an empty key is legal (the BSDs then use
    /// twenty zero bytes, which HMAC treats the same). Keys longer than
    /// [`MAX_KEY_LEN`] are refused in UCARP mode ([`AuthError::KeyTooLong`])
    /// and silently truncated to 19 bytes in BSD mode, as the kernels'
    /// `strlcpy` does, so that a long password configured on both sides
    /// still interoperates.
    ///
    /// UCARP mode needs exactly one IPv4 address. BSD mode hashes every IPv4
    /// address in ascending order, then every IPv6 address in ascending byte
    /// order, duplicates once, with bytes 2..4 of link-local (`fe80::/10`)
    /// addresses zeroed (the BSDs' embedded scope).
    ///
    /// OpenBSD sends its HMAC without link-local addresses and accepts both
    /// forms; FreeBSD sends and expects them included. [`sign`](Self::sign)
    /// uses FreeBSD's form (with link-local addresses), which OpenBSD also
    /// accepts, and [`verify`](Self::verify) accepts either form.
    pub fn new(mode: HmacMode, key: &[u8], vhid: u8, addrs: &[IpAddr]) -> Result<Self, AuthError> {
        if addrs.is_empty() {
            return Err(AuthError::NoAddresses);
        }
        match mode {
            HmacMode::Ucarp => {
                if key.len() > MAX_KEY_LEN {
                    return Err(AuthError::KeyTooLong(key.len()));
                }
                let [IpAddr::V4(vip)] = addrs else {
                    let v4 = addrs.iter().filter(|a| a.is_ipv4()).count();
                    return Err(AuthError::UcarpAddresses {
                        v4,
                        v6: addrs.len() - v4,
                    });
                };
                Ok(Authenticator {
                    send: prefix_state(key, vhid, &[*vip], &[]),
                    without_link_local: None,
                })
            }
            HmacMode::Bsd => {
                let key = &key[..key.len().min(MAX_KEY_LEN)];
                let mut v4: Vec<Ipv4Addr> = addrs
                    .iter()
                    .filter_map(|a| match a {
                        IpAddr::V4(a) => Some(*a),
                        IpAddr::V6(_) => None,
                    })
                    .collect();
                v4.sort_unstable();
                v4.dedup();
                // Scope bytes are zeroed before sorting and deduplicating,
                // as the kernels compare the zeroed form.
                let mut v6: Vec<[u8; 16]> = addrs
                    .iter()
                    .filter_map(|a| match a {
                        IpAddr::V4(_) => None,
                        IpAddr::V6(a) => Some(hashed_v6(a)),
                    })
                    .collect();
                v6.sort_unstable();
                v6.dedup();
                let global: Vec<[u8; 16]> =
                    v6.iter().copied().filter(|a| !is_link_local(a)).collect();
                let without_link_local =
                    (global.len() != v6.len()).then(|| prefix_state(key, vhid, &v4, &global));
                Ok(Authenticator {
                    send: prefix_state(key, vhid, &v4, &v6),
                    without_link_local,
                })
            }
        }
    }

    /// The HMAC to put in an advertisement with this counter.
    pub fn sign(&self, counter: u64) -> [u8; 20] {
        finish(&self.send, counter)
    }

    /// Constant-time check; in BSD mode accepts both the form with and the
    /// form without link-local IPv6 addresses (OpenBSD sends the latter).
    pub fn verify(&self, counter: u64, hmac: &[u8; 20]) -> bool {
        let mut ok = finish(&self.send, counter)[..].ct_eq(&hmac[..]);
        if let Some(state) = &self.without_link_local {
            ok |= finish(state, counter)[..].ct_eq(&hmac[..]);
        }
        ok.into()
    }
}

/// HMAC state keyed with `key` (at most 19 bytes) after hashing
/// `0x02 0x01 vhid`, the IPv4 addresses and the IPv6 addresses.
fn prefix_state(key: &[u8], vhid: u8, v4: &[Ipv4Addr], v6: &[[u8; 16]]) -> HmacSha1 {
    // HMAC zero-pads a short key to the block size, so filling a block-sized
    // key by hand gives the same MAC without a fallible length check.
    let mut block = Key::<HmacSha1>::default();
    block[..key.len()].copy_from_slice(key);
    let mut mac = HmacSha1::new(&block);
    mac.update(&[VERSION, TYPE_ADVERTISEMENT, vhid]);
    for a in v4 {
        mac.update(&a.octets());
    }
    for a in v6 {
        mac.update(a);
    }
    mac
}

fn finish(state: &HmacSha1, counter: u64) -> [u8; 20] {
    let mut mac = state.clone();
    mac.update(&counter.to_be_bytes());
    mac.finalize().into_bytes().into()
}

/// An IPv6 address as the BSDs hash it: link-local ones with bytes 2..4
/// (where the kernel embeds the interface index) zeroed.
fn hashed_v6(addr: &Ipv6Addr) -> [u8; 16] {
    let mut bytes = addr.octets();
    if is_link_local(&bytes) {
        bytes[2] = 0;
        bytes[3] = 0;
    }
    bytes
}

/// `fe80::/10`.
fn is_link_local(bytes: &[u8; 16]) -> bool {
    bytes[0] == 0xfe && bytes[1] & 0xc0 == 0x80
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// HMAC-SHA1 of an explicit message, the way the notes describe it.
    fn reference(key: &[u8], msg: &[u8]) -> [u8; 20] {
        let mut mac = HmacSha1::new_from_slice(key).unwrap();
        mac.update(msg);
        mac.finalize().into_bytes().into()
    }

    const VIP: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 77, 0, 100));

    #[test]
    fn ucarp_check_value() {
        let auth = Authenticator::new(HmacMode::Ucarp, b"secret", 7, &[VIP]).unwrap();
        let counter = 18_358_996_503_823_022_290;
        let hmac = auth.sign(counter);
        assert_eq!(hex(&hmac), "abe69cb7cadeb3326dd08a6d09313272edbdc945");
        assert!(auth.verify(counter, &hmac));
        assert!(!auth.verify(counter + 1, &hmac));
    }

    #[test]
    fn ucarp_refusals() {
        assert_eq!(
            Authenticator::new(HmacMode::Ucarp, &[b'x'; 20], 7, &[VIP]).unwrap_err(),
            AuthError::KeyTooLong(20)
        );
        assert!(Authenticator::new(HmacMode::Ucarp, &[b'x'; 19], 7, &[VIP]).is_ok());
        let v6: IpAddr = "2001:db8::1".parse().unwrap();
        assert_eq!(
            Authenticator::new(HmacMode::Ucarp, b"k", 7, &[VIP, v6]).unwrap_err(),
            AuthError::UcarpAddresses { v4: 1, v6: 1 }
        );
        assert_eq!(
            Authenticator::new(HmacMode::Ucarp, b"k", 7, &[v6]).unwrap_err(),
            AuthError::UcarpAddresses { v4: 0, v6: 1 }
        );
        for mode in [HmacMode::Ucarp, HmacMode::Bsd] {
            assert_eq!(
                Authenticator::new(mode, b"k", 7, &[]).unwrap_err(),
                AuthError::NoAddresses
            );
        }
    }

    #[test]
    fn bsd_message_layout() {
        let addrs: Vec<IpAddr> = [
            "2001:db8::2",
            "10.0.0.2",
            "fe80:5::1",
            "10.0.0.1",
            "10.0.0.2",
        ]
        .iter()
        .map(|a| a.parse().unwrap())
        .collect();
        let auth = Authenticator::new(HmacMode::Bsd, b"pw", 9, &addrs).unwrap();
        let mut msg = vec![0x02, 0x01, 9, 10, 0, 0, 1, 10, 0, 0, 2];
        let counter = 0x1122_3344_5566_7788u64;
        let ll: Ipv6Addr = "fe80::1".parse().unwrap();
        let global: Ipv6Addr = "2001:db8::2".parse().unwrap();
        let mut with_ll = msg.clone();
        with_ll.extend_from_slice(&global.octets());
        with_ll.extend_from_slice(&ll.octets());
        with_ll.extend_from_slice(&counter.to_be_bytes());
        msg.extend_from_slice(&global.octets());
        msg.extend_from_slice(&counter.to_be_bytes());
        assert_eq!(auth.sign(counter), reference(b"pw", &with_ll));
        assert!(auth.verify(counter, &reference(b"pw", &with_ll)));
        assert!(auth.verify(counter, &reference(b"pw", &msg)));
    }

    #[test]
    fn bsd_keys() {
        let long = b"0123456789abcdefghijklmnop";
        let a = Authenticator::new(HmacMode::Bsd, long, 1, &[VIP]).unwrap();
        let b = Authenticator::new(HmacMode::Bsd, &long[..MAX_KEY_LEN], 1, &[VIP]).unwrap();
        assert_eq!(a.sign(5), b.sign(5));
        let empty = Authenticator::new(HmacMode::Bsd, b"", 1, &[VIP]).unwrap();
        assert_eq!(
            empty.sign(5),
            reference(&[0; 20], &[2, 1, 1, 10, 77, 0, 100, 0, 0, 0, 0, 0, 0, 0, 5])
        );
        assert_ne!(empty.sign(5), a.sign(5));
    }

    #[test]
    fn debug_hides_the_key() {
        let auth = Authenticator::new(HmacMode::Bsd, b"hunter2", 1, &[VIP]).unwrap();
        assert!(!format!("{auth:?}").contains("hunter2"));
    }
}
