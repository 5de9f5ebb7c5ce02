//! The CARP advertisement on the wire (36 bytes, big-endian), for IPv4 and
//! IPv6 carriers alike.
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |Version| Type  |     VHID      |    AdvSkew    |    AuthLen    |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |    Demote     |    AdvBase    |           Checksum            |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                     Counter (64 bits)                         |
//! +                                                               +
//! |                                                               |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                    HMAC-SHA1 (20 bytes)                       |
//! ~                                                               ~
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```
//!
//! [`Packet`] is a view over bytes with field accessors; [`Advert`] is the
//! decoded value. Nothing here panics on received bytes.

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
    #[error("shorter than a CARP or VRRP header")]
    TooShort,
    #[error("longer than a CARP header")]
    TooLong,
    #[error("TTL or hop limit is not 255")]
    BadTtl,
    #[error("version is not the one expected (CARP 2, VRRP 2 or 3)")]
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
    #[error("CARP packet")]
    Carp,
    #[error("VRRP length does not match its address count")]
    BadLength,
    #[error("VRRP address count is 0")]
    NoAddresses,
    #[error("VRRP advertisement interval is 0")]
    BadInterval,
    #[error("VRRPv2 authentication type is not the configured one")]
    BadAuthType,
    #[error("VRRPv2 plain-text password does not match")]
    BadPassword,
    #[error("VRRPv2 advertisement interval differs from ours")]
    IntervalMismatch,
    #[error("VRRP virtual addresses differ from ours")]
    AddressMismatch,
    #[error("VRRP advertisement received by the address owner (priority 255)")]
    ToOwner,
}

impl DropReason {
    /// Every reason, for exhaustive counters and metrics labels.
    pub const ALL: [DropReason; 23] = [
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
        DropReason::Carp,
        DropReason::BadLength,
        DropReason::NoAddresses,
        DropReason::BadInterval,
        DropReason::BadAuthType,
        DropReason::BadPassword,
        DropReason::IntervalMismatch,
        DropReason::AddressMismatch,
        DropReason::ToOwner,
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
            DropReason::Carp => "carp",
            DropReason::BadLength => "bad_length",
            DropReason::NoAddresses => "no_addresses",
            DropReason::BadInterval => "bad_interval",
            DropReason::BadAuthType => "bad_auth_type",
            DropReason::BadPassword => "bad_password",
            DropReason::IntervalMismatch => "interval_mismatch",
            DropReason::AddressMismatch => "address_mismatch",
            DropReason::ToOwner => "to_owner",
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

/// Byte offsets of the header fields.
mod field {
    use std::ops::Range;

    pub const VER_TYPE: usize = 0;
    pub const VHID: usize = 1;
    pub const ADVSKEW: usize = 2;
    pub const AUTHLEN: usize = 3;
    pub const DEMOTE: usize = 4;
    pub const ADVBASE: usize = 5;
    pub const CHECKSUM: Range<usize> = 6..8;
    pub const COUNTER: Range<usize> = 8..16;
    pub const HMAC: Range<usize> = 16..36;
}

/// A view of a CARP header in a byte buffer.
///
/// Accessors index the buffer directly, so build views of received bytes
/// with [`Packet::new_checked`]: once the length is checked no accessor can
/// panic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wrap a buffer without checking its length.
    pub const fn new_unchecked(buffer: T) -> Self {
        Packet { buffer }
    }

    /// Wrap a buffer that holds exactly one header.
    pub fn new_checked(buffer: T) -> Result<Self, DropReason> {
        let packet = Self::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// An advertisement is exactly one header: nothing may follow it.
    pub fn check_len(&self) -> Result<(), DropReason> {
        let len = self.buffer.as_ref().len();
        if len < HEADER_LEN {
            Err(DropReason::TooShort)
        } else if len > HEADER_LEN {
            Err(DropReason::TooLong)
        } else {
            Ok(())
        }
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }

    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[field::VER_TYPE] >> 4
    }

    pub fn msg_type(&self) -> u8 {
        self.buffer.as_ref()[field::VER_TYPE] & 0x0f
    }

    pub fn vhid(&self) -> u8 {
        self.buffer.as_ref()[field::VHID]
    }

    pub fn advskew(&self) -> u8 {
        self.buffer.as_ref()[field::ADVSKEW]
    }

    pub fn authlen(&self) -> u8 {
        self.buffer.as_ref()[field::AUTHLEN]
    }

    pub fn demote(&self) -> u8 {
        self.buffer.as_ref()[field::DEMOTE]
    }

    pub fn advbase(&self) -> u8 {
        self.buffer.as_ref()[field::ADVBASE]
    }

    pub fn checksum(&self) -> u16 {
        u16::from_be_bytes(array(&self.buffer.as_ref()[field::CHECKSUM]))
    }

    pub fn counter(&self) -> u64 {
        u64::from_be_bytes(array(&self.buffer.as_ref()[field::COUNTER]))
    }

    pub fn hmac(&self) -> [u8; 20] {
        array(&self.buffer.as_ref()[field::HMAC])
    }

    /// The Internet checksum of the header, checksum field included, folds
    /// to zero when the field is right (no pseudo-header, as the BSDs do).
    pub fn verify_checksum(&self) -> bool {
        checksum(&self.buffer.as_ref()[..HEADER_LEN]) == 0
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    pub fn set_version(&mut self, version: u8) {
        let b = &mut self.buffer.as_mut()[field::VER_TYPE];
        *b = (*b & 0x0f) | (version << 4);
    }

    pub fn set_msg_type(&mut self, msg_type: u8) {
        let b = &mut self.buffer.as_mut()[field::VER_TYPE];
        *b = (*b & 0xf0) | (msg_type & 0x0f);
    }

    pub fn set_vhid(&mut self, vhid: u8) {
        self.buffer.as_mut()[field::VHID] = vhid;
    }

    pub fn set_advskew(&mut self, advskew: u8) {
        self.buffer.as_mut()[field::ADVSKEW] = advskew;
    }

    pub fn set_authlen(&mut self, authlen: u8) {
        self.buffer.as_mut()[field::AUTHLEN] = authlen;
    }

    pub fn set_demote(&mut self, demote: u8) {
        self.buffer.as_mut()[field::DEMOTE] = demote;
    }

    pub fn set_advbase(&mut self, advbase: u8) {
        self.buffer.as_mut()[field::ADVBASE] = advbase;
    }

    pub fn set_checksum(&mut self, value: u16) {
        self.buffer.as_mut()[field::CHECKSUM].copy_from_slice(&value.to_be_bytes());
    }

    pub fn set_counter(&mut self, counter: u64) {
        self.buffer.as_mut()[field::COUNTER].copy_from_slice(&counter.to_be_bytes());
    }

    pub fn set_hmac(&mut self, hmac: &[u8; 20]) {
        self.buffer.as_mut()[field::HMAC].copy_from_slice(hmac);
    }

    /// Compute and store the checksum; call after every other field is set.
    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let sum = checksum(&self.buffer.as_ref()[..HEADER_LEN]);
        self.set_checksum(sum);
    }
}

/// Copy a slice whose length is fixed by a `field` range into an array.
fn array<const N: usize>(bytes: &[u8]) -> [u8; N] {
    let mut out = [0u8; N];
    out.copy_from_slice(bytes);
    out
}

impl Advert {
    /// Decode a CARP payload (the bytes after the IP header): exactly
    /// [`HEADER_LEN`] bytes, version 2, type advertisement, authlen 7 and a
    /// correct checksum, checked in that order. Never panics.
    pub fn parse(payload: &[u8]) -> Result<Advert, DropReason> {
        let packet = Packet::new_checked(payload)?;
        if packet.version() != VERSION {
            return Err(DropReason::BadVersion);
        }
        if packet.msg_type() != TYPE_ADVERTISEMENT {
            return Err(DropReason::BadType);
        }
        if packet.authlen() != AUTHLEN {
            return Err(DropReason::BadAuthLen);
        }
        if !packet.verify_checksum() {
            return Err(DropReason::BadChecksum);
        }
        Ok(Advert {
            vhid: packet.vhid(),
            advskew: packet.advskew(),
            advbase: packet.advbase(),
            demote: packet.demote(),
            counter: packet.counter(),
            hmac: packet.hmac(),
        })
    }

    /// Bytes [`Advert::emit`] writes.
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN
    }

    /// Encode into the first [`HEADER_LEN`] bytes of `buf`, checksum last;
    /// bytes after them are left untouched.
    ///
    /// # Panics
    ///
    /// If `buf` is shorter than [`HEADER_LEN`]: the caller sizes its own
    /// buffer, so that is a bug in the caller, never a property of input.
    pub fn emit(&self, buf: &mut [u8]) {
        assert!(
            buf.len() >= HEADER_LEN,
            "CARP header needs {HEADER_LEN} bytes, buffer has {}",
            buf.len()
        );
        let mut packet = Packet::new_unchecked(&mut buf[..HEADER_LEN]);
        packet.set_version(VERSION);
        packet.set_msg_type(TYPE_ADVERTISEMENT);
        packet.set_vhid(self.vhid);
        packet.set_advskew(self.advskew);
        packet.set_authlen(AUTHLEN);
        packet.set_demote(self.demote);
        packet.set_advbase(self.advbase);
        packet.set_counter(self.counter);
        packet.set_hmac(&self.hmac);
        packet.fill_checksum();
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

/// Receive-side checks that need no per-VHID state. The caller then looks
/// up the VHID and verifies the HMAC.
///
/// Checks run in this order, and the first failure is the reason:
///
/// 1. VRRP ([`DropReason::Vrrp`]), so that a VRRP router sharing protocol
///    112 and 224.0.0.18 is counted apart instead of as a broken CARP peer:
///    * VRRPv2: byte 0 is `0x21` (as CARP's), `auth_type` (byte 4) is
///      0..=2, and the length is `16 + 4 * count_ip` (8-byte header, the
///      addresses, 8 bytes of authentication data) with `count_ip` (byte 3)
///      at least 1;
///    * VRRPv3: byte 0 is `0x31` (version 3, type 1) and the length is
///      `8 + 4 * count` on an IPv4 carrier or `8 + 16 * count` on IPv6,
///      `count` (byte 3) at least 1;
///    * except that a 36-byte packet with 7 at byte 3 is CARP-shaped and is
///      judged as CARP: a CARP header with version 3 is `BadVersion`, at the
///      price of taking a VRRPv3 packet with exactly seven IPv4 addresses
///      for a broken CARP one.
/// 2. Length: [`DropReason::TooShort`] or [`DropReason::TooLong`] unless
///    exactly [`HEADER_LEN`].
/// 3. TTL or hop limit not 255: [`DropReason::BadTtl`], skipped when
///    `relax_ttl` (unicast peers across routers, as FreeBSD allows).
/// 4. Version, type, authlen and checksum, as [`Advert::parse`].
///
/// Never panics.
pub fn check(carrier: &Carrier, payload: &[u8], relax_ttl: bool) -> Result<Advert, DropReason> {
    if looks_like_vrrp(carrier, payload) {
        return Err(DropReason::Vrrp);
    }
    Packet::new_checked(payload)?;
    if !relax_ttl && carrier.ttl != TTL {
        return Err(DropReason::BadTtl);
    }
    Advert::parse(payload)
}

/// The VRRP rule documented at [`check`].
fn looks_like_vrrp(carrier: &Carrier, payload: &[u8]) -> bool {
    let (Some(&first), Some(&count)) = (payload.first(), payload.get(3)) else {
        return false;
    };
    if count == 0 || (payload.len() == HEADER_LEN && count == AUTHLEN) {
        return false;
    }
    let count = usize::from(count);
    match first {
        0x21 => {
            let auth_type_ok = payload.get(4).is_some_and(|&t| t <= 2);
            auth_type_ok && payload.len() == 16 + 4 * count
        }
        0x31 => {
            let addr_len = if carrier.src.is_ipv4() { 4 } else { 16 };
            payload.len() == 8 + addr_len * count
        }
        _ => false,
    }
}

/// Internet checksum (RFC 1071) of `data`: the value to store in a zeroed
/// checksum field, and zero over data whose checksum field is already right.
/// An odd trailing byte counts as the high byte of a last word.
pub fn checksum(data: &[u8]) -> u16 {
    checksum_parts(&[data])
}

/// [`checksum`] of the concatenation of `parts` (a pseudo-header, then the
/// message). Every part but the last must have an even length, as
/// pseudo-headers do.
pub fn checksum_parts(parts: &[&[u8]]) -> u16 {
    // u64 cannot overflow for any slices that fit in memory.
    let mut sum: u64 = 0;
    for data in parts {
        let mut words = data.chunks_exact(2);
        sum += words
            .by_ref()
            .map(|w| u64::from(u16::from_be_bytes([w[0], w[1]])))
            .sum::<u64>();
        if let [last] = words.remainder() {
            sum += u64::from(*last) << 8;
        }
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    // The loop above leaves at most 16 significant bits.
    !(sum as u16)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: Advert = Advert {
        vhid: 7,
        advskew: 10,
        advbase: 1,
        demote: 3,
        counter: 0x0102_0304_0506_0708,
        hmac: [
            0x10, 0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18, 0x19, 0x1a, 0x1b, 0x1c, 0x1d,
            0x1e, 0x1f, 0x20, 0x21, 0x22, 0x23,
        ],
    };

    #[rustfmt::skip]
    const SAMPLE_BYTES: [u8; HEADER_LEN] = [
        0x21, 0x07, 0x0a, 0x07, 0x03, 0x01, 0xc6, 0xd7,
        0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08,
        0x10, 0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18, 0x19,
        0x1a, 0x1b, 0x1c, 0x1d, 0x1e, 0x1f, 0x20, 0x21, 0x22, 0x23,
    ];

    #[test]
    fn rfc1071_example() {
        // RFC 1071 section 3: the sum is ddf2, so the checksum is 220d.
        assert_eq!(
            checksum(&[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]),
            0x220d
        );
        assert_eq!(checksum(&[]), 0xffff);
        // An odd byte is padded on the right.
        assert_eq!(checksum(&[0x12]), !0x1200);
    }

    #[test]
    fn emit_into_dirty_buffer() {
        let mut buf = [0xa5u8; HEADER_LEN + 4];
        SAMPLE.emit(&mut buf);
        assert_eq!(buf[..HEADER_LEN], SAMPLE_BYTES);
        assert_eq!(buf[HEADER_LEN..], [0xa5; 4]);
        assert_eq!(SAMPLE.to_bytes(), SAMPLE_BYTES);
        assert_eq!(SAMPLE.buffer_len(), HEADER_LEN);
    }

    #[test]
    fn parse_known_bytes() {
        assert_eq!(Advert::parse(&SAMPLE_BYTES), Ok(SAMPLE));
        let packet = Packet::new_checked(&SAMPLE_BYTES[..]).unwrap();
        assert_eq!(packet.version(), 2);
        assert_eq!(packet.msg_type(), 1);
        assert_eq!(packet.authlen(), 7);
        assert_eq!(packet.checksum(), 0xc6d7);
        assert!(packet.verify_checksum());
    }

    #[test]
    fn setters_keep_the_other_nibble() {
        let mut buf = [0xa5u8; HEADER_LEN];
        let mut packet = Packet::new_unchecked(&mut buf[..]);
        packet.set_version(2);
        assert_eq!(packet.version(), 2);
        assert_eq!(packet.msg_type(), 5);
        packet.set_msg_type(1);
        assert_eq!(packet.into_inner()[0], 0x21);
    }

    #[test]
    #[should_panic(expected = "CARP header needs 36 bytes")]
    fn emit_into_short_buffer_is_a_caller_bug() {
        SAMPLE.emit(&mut [0u8; HEADER_LEN - 1]);
    }
}
