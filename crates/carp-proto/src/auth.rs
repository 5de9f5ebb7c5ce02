//! HMAC-SHA1 authentication of advertisements, as UCARP and the BSDs compute
//! it.
//!
//! CONTRACT (filled in by the packet/auth work): keep these names and
//! signatures; add private helpers freely.

use std::net::IpAddr;

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
    // filled in by the implementation
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // never print the key
        f.debug_struct("Authenticator").finish_non_exhaustive()
    }
}

impl Authenticator {
    /// `key` is the password bytes. In BSD mode keys longer than 19 bytes are
    /// truncated to 19 (as the kernels' strlcpy does); in UCARP mode they are
    /// refused.
    pub fn new(_mode: HmacMode, _key: &[u8], _vhid: u8, _addrs: &[IpAddr]) -> Result<Self, AuthError> {
        todo!()
    }

    pub fn sign(&self, _counter: u64) -> [u8; 20] {
        todo!()
    }

    /// Constant-time check; in BSD mode accepts both the form with and the
    /// form without link-local IPv6 addresses (OpenBSD sends the latter).
    pub fn verify(&self, _counter: u64, _hmac: &[u8; 20]) -> bool {
        todo!()
    }
}
