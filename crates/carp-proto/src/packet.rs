//! The CARP advertisement on the wire (36 bytes, big-endian), for IPv4 and
//! IPv6 carriers alike.
//!
//! CONTRACT (filled in by the packet/auth work): keep these names and
//! signatures; add private helpers freely.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::timing::Timing;

/// IP protocol number shared by CARP and VRRP.
pub const IPPROTO_CARP: u8 = 112;
/// Length of the CARP header, which is the whole advertisement.
pub const HEADER_LEN: usize = 36;
/// IPv4 group (also VRRP's).
pub const GROUP_V4: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 18);
/// IPv6 group.
pub const GROUP_V6: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 0x12);
/// TTL / hop limit every advertisement carries and every receiver checks.
pub const TTL: u8 = 255;
/// CARP version 2, type 1 (advertisement).
pub const VERSION: u8 = 2;
pub const TYPE_ADVERTISEMENT: u8 = 1;
/// Counter + HMAC, in 32-bit words.
pub const AUTHLEN: u8 = 7;

/// A decoded advertisement (all fields, checksum already verified on parse,
/// recomputed on emit).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Advert {
    pub vhid: u8,
    pub advskew: u8,
    pub advbase: u8,
    /// OpenBSD demotion count (byte 4); 0 from FreeBSD and UCARP.
    pub demote: u8,
    pub counter: u64,
    pub hmac: [u8; 20],
}

/// Why a received packet was not accepted. One variant per reason so that
/// every drop can be counted separately.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, thiserror::Error)]
pub enum DropReason {
    #[error("shorter than a CARP header")]
    TooShort,
    #[error("longer than a CARP header")]
    TooLong,
    #[error("TTL or hop limit is not 255")]
    BadTtl,
    #[error("CARP version is not 2")]
    BadVersion,
    #[error("type is not advertisement")]
    BadType,
    #[error("authlen is not 7")]
    BadAuthLen,
    #[error("bad checksum")]
    BadChecksum,
    #[error("HMAC does not match (password or address set differ)")]
    BadHmac,
    #[error("no such VHID on this interface")]
    UnknownVhid,
    #[error("VRRP packet")]
    Vrrp,
    #[error("our own advertisement looped back")]
    OwnPacket,
    #[error("source is not a configured peer")]
    NotPeer,
    #[error("counter replayed")]
    Replay,
    #[error("inbox full")]
    InboxFull,
}

impl DropReason {
    /// Every reason, for exhaustive counters and metrics labels.
    pub const ALL: [DropReason; 14] = [
        DropReason::TooShort,
        DropReason::TooLong,
        DropReason::BadTtl,
        DropReason::BadVersion,
        DropReason::BadType,
        DropReason::BadAuthLen,
        DropReason::BadChecksum,
        DropReason::BadHmac,
        DropReason::UnknownVhid,
        DropReason::Vrrp,
        DropReason::OwnPacket,
        DropReason::NotPeer,
        DropReason::Replay,
        DropReason::InboxFull,
    ];

    /// A stable snake_case name for logs, status output and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::TooShort => "too_short",
            DropReason::TooLong => "too_long",
            DropReason::BadTtl => "bad_ttl",
            DropReason::BadVersion => "bad_version",
            DropReason::BadType => "bad_type",
            DropReason::BadAuthLen => "bad_authlen",
            DropReason::BadChecksum => "bad_checksum",
            DropReason::BadHmac => "bad_hmac",
            DropReason::UnknownVhid => "unknown_vhid",
            DropReason::Vrrp => "vrrp",
            DropReason::OwnPacket => "own_packet",
            DropReason::NotPeer => "not_peer",
            DropReason::Replay => "replay",
            DropReason::InboxFull => "inbox_full",
        }
    }
}

/// What the carrier (IPv4 or IPv6 header) told us about a received packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Carrier {
    /// TTL (IPv4) or hop limit (IPv6).
    pub ttl: u8,
    pub src: IpAddr,
    pub dst: IpAddr,
}

impl Advert {
    /// Decode and verify the checksum of a CARP payload (the bytes after the
    /// IP header). Never panics.
    pub fn parse(_payload: &[u8]) -> Result<Advert, DropReason> {
        todo!()
    }

    /// Encode into `buf` (at least [`HEADER_LEN`] bytes), checksum last.
    pub fn emit(&self, _buf: &mut [u8]) {
        todo!()
    }

    pub fn to_bytes(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        self.emit(&mut b);
        b
    }

    pub fn timing(&self) -> Timing {
        Timing::new(self.advbase, self.advskew)
    }
}

/// Receive-side checks that need no per-VHID state: VRRP detection, length,
/// TTL (unless `relax_ttl`, for unicast peers), version, type, authlen,
/// checksum. The caller then looks up the VHID and verifies the HMAC.
pub fn check(_carrier: &Carrier, _payload: &[u8], _relax_ttl: bool) -> Result<Advert, DropReason> {
    todo!()
}

/// Internet checksum (RFC 1071) of `data`.
pub fn checksum(_data: &[u8]) -> u16 {
    todo!()
}
