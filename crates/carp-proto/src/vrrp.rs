//! The VRRP advertisement on the wire: version 3 (RFC 9568) over IPv4 and
//! IPv6, version 2 (RFC 3768) over IPv4. Same IP protocol (112), IPv4
//! group (224.0.0.18) and TTL (255) as CARP.
//!
//! VRRPv3 (the checksum covers an IPv4 or IPv6 pseudo-header and the
//! message; the interval is 12 bits of centiseconds):
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |Version| Type  |  Virtual Rtr ID |   Priority    |Count IPvX Addr|
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |(rsvd) |     Max Adver Int     |          Checksum             |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                  IPvX Address(es) (4 or 16 bytes each)        |
//! ~                                                               ~
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```
//!
//! VRRPv2 (the checksum covers the message only; the interval is whole
//! seconds; 8 bytes of authentication data close the message):
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |Version| Type  | Virtual Rtr ID|   Priority    | Count IP Addrs|
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |   Auth Type   |   Adver Int   |          Checksum             |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                       IP Address(es) (4 bytes each)           |
//! ~                                                               ~
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                     Authentication Data (1)                   |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                     Authentication Data (2)                   |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```
//!
//! [`Packet`] is a view over bytes with field accessors; [`Advert`] is the
//! decoded value; [`check`] runs the receive-side checks that need no
//! per-VRID state and [`Advert::check_against`] the ones that do. Drops
//! share [`DropReason`] with CARP, one variant per cause. Nothing here
//! panics on received bytes.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use subtle::ConstantTimeEq;

use crate::packet::{self, Carrier, DropReason, IPPROTO_CARP, TTL, checksum_parts};

/// The 8 bytes before the addresses, in both versions.
pub const HEADER_LEN: usize = 8;
/// VRRPv2's authentication data after the addresses.
pub const AUTH_DATA_LEN: usize = 8;
pub const TYPE_ADVERTISEMENT: u8 = 1;
/// Largest VRRPv3 interval: 12 bits of centiseconds (40.95 s).
pub const MAX_INTERVAL_V3_CS: u16 = 0x0fff;
/// Largest VRRPv2 interval in centiseconds: 255 s.
pub const MAX_INTERVAL_V2_CS: u16 = 25_500;
/// The address owner's priority: it takes over at once, and drops every
/// advertisement it receives.
pub const OWNER_PRIORITY: u8 = 255;
/// Priority advertised by an active router that stops: backups then wait
/// only their skew time.
pub const STOP_PRIORITY: u8 = 0;
/// Default priority of a non-owner (both RFCs).
pub const DEFAULT_PRIORITY: u8 = 100;
/// VRRPv2 authentication types on the wire.
pub const AUTH_TYPE_NONE: u8 = 0;
pub const AUTH_TYPE_SIMPLE: u8 = 1;

/// Protocol version of an advertisement or a virtual router.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Version {
    /// RFC 3768: IPv4 only, seconds, optional plain-text password.
    V2,
    /// RFC 9568: IPv4 and IPv6, centiseconds, pseudo-header checksum.
    V3,
}

impl Version {
    pub const fn number(self) -> u8 {
        match self {
            Version::V2 => 2,
            Version::V3 => 3,
        }
    }
}

/// VRRPv2 authentication. Neither kind is security: the password travels
/// in clear text, as RFC 3768 says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Auth {
    /// Type 0; VRRPv3 always.
    #[default]
    None,
    /// Type 1: 8 bytes of plain text, zero-padded.
    Simple([u8; AUTH_DATA_LEN]),
}

impl Auth {
    /// The simple password `text`, truncated or zero-padded to 8 bytes.
    pub fn simple(text: &[u8]) -> Auth {
        let mut data = [0u8; AUTH_DATA_LEN];
        let n = text.len().min(AUTH_DATA_LEN);
        data[..n].copy_from_slice(&text[..n]);
        Auth::Simple(data)
    }

    pub const fn type_code(&self) -> u8 {
        match self {
            Auth::None => AUTH_TYPE_NONE,
            Auth::Simple(_) => AUTH_TYPE_SIMPLE,
        }
    }
}

/// The virtual addresses of one advertisement: one family, as the IP
/// carrier (RFC 9568 keeps IPv4 and IPv6 virtual routers apart).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Addresses {
    V4(Vec<Ipv4Addr>),
    V6(Vec<Ipv6Addr>),
}

impl Addresses {
    pub fn len(&self) -> usize {
        match self {
            Addresses::V4(a) => a.len(),
            Addresses::V6(a) => a.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes one address takes on the wire.
    pub const fn addr_len(&self) -> usize {
        match self {
            Addresses::V4(_) => 4,
            Addresses::V6(_) => 16,
        }
    }

    /// The same set of addresses, in any order.
    pub fn same_set(&self, other: &Addresses) -> bool {
        fn same<T: Ord + Clone>(a: &[T], b: &[T]) -> bool {
            let (mut a, mut b) = (a.to_vec(), b.to_vec());
            a.sort();
            b.sort();
            a == b
        }
        match (self, other) {
            (Addresses::V4(a), Addresses::V4(b)) => same(a, b),
            (Addresses::V6(a), Addresses::V6(b)) => same(a, b),
            _ => false,
        }
    }
}

/// Byte offsets of the header fields.
mod field {
    use std::ops::Range;

    pub const VER_TYPE: usize = 0;
    pub const VRID: usize = 1;
    pub const PRIORITY: usize = 2;
    pub const COUNT: usize = 3;
    /// VRRPv2.
    pub const AUTH_TYPE: usize = 4;
    /// VRRPv2, seconds.
    pub const ADVER_INT: usize = 5;
    /// VRRPv3: 4 reserved bits, then 12 bits of centiseconds.
    pub const MAX_ADVER_INT: Range<usize> = 4..6;
    pub const CHECKSUM: Range<usize> = 6..8;
    pub const ADDRESSES: usize = 8;
}

/// A view of a VRRP message in a byte buffer.
///
/// Accessors index the buffer directly, so build views of received bytes
/// with [`Packet::new_checked`]: once the length is checked against the
/// version and address count no accessor can panic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
    /// Bytes per address: 4 on an IPv4 carrier, 16 on IPv6.
    addr_len: usize,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wrap a buffer without checking its length; `ipv6`: the carrier is
    /// IPv6 (16-byte addresses).
    pub const fn new_unchecked(buffer: T, ipv6: bool) -> Self {
        Packet {
            buffer,
            addr_len: if ipv6 { 16 } else { 4 },
        }
    }

    /// Wrap a buffer that holds exactly one message.
    pub fn new_checked(buffer: T, ipv6: bool) -> Result<Self, DropReason> {
        let packet = Self::new_unchecked(buffer, ipv6);
        packet.check_len()?;
        Ok(packet)
    }

    /// The message is exactly its header, `count` addresses and (VRRPv2)
    /// the authentication data; checked in that order: [`DropReason::TooShort`],
    /// [`DropReason::BadVersion`] (not 3, or 2 on IPv6: the length cannot
    /// be known), [`DropReason::NoAddresses`], [`DropReason::BadLength`].
    pub fn check_len(&self) -> Result<(), DropReason> {
        let len = self.buffer.as_ref().len();
        if len < HEADER_LEN {
            return Err(DropReason::TooShort);
        }
        let trailer = match (self.version(), self.addr_len) {
            (3, _) => 0,
            (2, 4) => AUTH_DATA_LEN,
            _ => return Err(DropReason::BadVersion),
        };
        let count = usize::from(self.count());
        if count == 0 {
            return Err(DropReason::NoAddresses);
        }
        if len != HEADER_LEN + count * self.addr_len + trailer {
            return Err(DropReason::BadLength);
        }
        Ok(())
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

    pub fn vrid(&self) -> u8 {
        self.buffer.as_ref()[field::VRID]
    }

    pub fn priority(&self) -> u8 {
        self.buffer.as_ref()[field::PRIORITY]
    }

    pub fn count(&self) -> u8 {
        self.buffer.as_ref()[field::COUNT]
    }

    /// VRRPv2 only.
    pub fn auth_type(&self) -> u8 {
        self.buffer.as_ref()[field::AUTH_TYPE]
    }

    /// VRRPv2 only: seconds.
    pub fn adver_int(&self) -> u8 {
        self.buffer.as_ref()[field::ADVER_INT]
    }

    /// VRRPv3 only: centiseconds (the low 12 bits of bytes 4-5).
    pub fn max_adver_int(&self) -> u16 {
        u16::from_be_bytes(array(&self.buffer.as_ref()[field::MAX_ADVER_INT])) & 0x0fff
    }

    pub fn checksum(&self) -> u16 {
        u16::from_be_bytes(array(&self.buffer.as_ref()[field::CHECKSUM]))
    }

    /// The raw address list (`count` addresses of the carrier's family).
    pub fn address_bytes(&self) -> &[u8] {
        let end = field::ADDRESSES + usize::from(self.count()) * self.addr_len;
        &self.buffer.as_ref()[field::ADDRESSES..end]
    }

    /// The decoded address list.
    pub fn addresses(&self) -> Addresses {
        let raw = self.address_bytes();
        if self.addr_len == 4 {
            Addresses::V4(
                raw.chunks_exact(4)
                    .map(|c| Ipv4Addr::from(array::<4>(c)))
                    .collect(),
            )
        } else {
            Addresses::V6(
                raw.chunks_exact(16)
                    .map(|c| Ipv6Addr::from(array::<16>(c)))
                    .collect(),
            )
        }
    }

    /// VRRPv2 only: the 8 bytes after the addresses.
    pub fn auth_data(&self) -> [u8; AUTH_DATA_LEN] {
        let start = field::ADDRESSES + usize::from(self.count()) * self.addr_len;
        array(&self.buffer.as_ref()[start..start + AUTH_DATA_LEN])
    }

    /// VRRPv2: the checksum over the message folds to zero. VRRPv3: the
    /// same over the pseudo-header of `src` and `dst` (RFC 768 layout for
    /// IPv4, RFC 8200 section 8.1 for IPv6) and the message; false when
    /// `src` and `dst` are of different families.
    pub fn verify_checksum(&self, src: IpAddr, dst: IpAddr) -> bool {
        let message = self.buffer.as_ref();
        if self.version() == 2 {
            return packet::checksum(message) == 0;
        }
        match PseudoHeader::new(src, dst, message.len()) {
            Some(pseudo) => checksum_parts(&[pseudo.as_bytes(), message]) == 0,
            None => false,
        }
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

    pub fn set_vrid(&mut self, vrid: u8) {
        self.buffer.as_mut()[field::VRID] = vrid;
    }

    pub fn set_priority(&mut self, priority: u8) {
        self.buffer.as_mut()[field::PRIORITY] = priority;
    }

    pub fn set_count(&mut self, count: u8) {
        self.buffer.as_mut()[field::COUNT] = count;
    }

    pub fn set_auth_type(&mut self, auth_type: u8) {
        self.buffer.as_mut()[field::AUTH_TYPE] = auth_type;
    }

    pub fn set_adver_int(&mut self, seconds: u8) {
        self.buffer.as_mut()[field::ADVER_INT] = seconds;
    }

    /// The reserved bits are sent as zero.
    pub fn set_max_adver_int(&mut self, centis: u16) {
        self.buffer.as_mut()[field::MAX_ADVER_INT]
            .copy_from_slice(&(centis & 0x0fff).to_be_bytes());
    }

    pub fn set_checksum(&mut self, value: u16) {
        self.buffer.as_mut()[field::CHECKSUM].copy_from_slice(&value.to_be_bytes());
    }

    /// Write `addresses` from byte 8 on (`count` is set apart).
    pub fn set_addresses(&mut self, addresses: &Addresses) {
        let out = &mut self.buffer.as_mut()[field::ADDRESSES..];
        match addresses {
            Addresses::V4(list) => {
                for (chunk, a) in out.chunks_exact_mut(4).zip(list) {
                    chunk.copy_from_slice(&a.octets());
                }
            }
            Addresses::V6(list) => {
                for (chunk, a) in out.chunks_exact_mut(16).zip(list) {
                    chunk.copy_from_slice(&a.octets());
                }
            }
        }
    }

    /// VRRPv2: write the authentication data after the `count` addresses.
    pub fn set_auth_data(&mut self, data: &[u8; AUTH_DATA_LEN]) {
        let start = field::ADDRESSES + usize::from(self.count()) * self.addr_len;
        self.buffer.as_mut()[start..start + AUTH_DATA_LEN].copy_from_slice(data);
    }

    /// Compute and store the checksum (see [`Packet::verify_checksum`]);
    /// call after every other field is set.
    pub fn fill_checksum(&mut self, src: IpAddr, dst: IpAddr) {
        self.set_checksum(0);
        let message = self.buffer.as_ref();
        let sum = if self.version() == 2 {
            packet::checksum(message)
        } else {
            match PseudoHeader::new(src, dst, message.len()) {
                Some(pseudo) => checksum_parts(&[pseudo.as_bytes(), message]),
                None => packet::checksum(message),
            }
        };
        self.set_checksum(sum);
    }
}

/// The pseudo-header VRRPv3's checksum covers.
struct PseudoHeader {
    bytes: [u8; 40],
    len: usize,
}

impl PseudoHeader {
    /// `None` if `src` and `dst` are of different families.
    fn new(src: IpAddr, dst: IpAddr, message_len: usize) -> Option<PseudoHeader> {
        let mut bytes = [0u8; 40];
        match (src, dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                // RFC 768: source, destination, zero, protocol, length.
                bytes[0..4].copy_from_slice(&s.octets());
                bytes[4..8].copy_from_slice(&d.octets());
                bytes[9] = IPPROTO_CARP;
                bytes[10..12].copy_from_slice(&u16::try_from(message_len).ok()?.to_be_bytes());
                Some(PseudoHeader { bytes, len: 12 })
            }
            (IpAddr::V6(s), IpAddr::V6(d)) => {
                // RFC 8200 8.1: source, destination, 32-bit length, three
                // zero bytes, next header.
                bytes[0..16].copy_from_slice(&s.octets());
                bytes[16..32].copy_from_slice(&d.octets());
                bytes[32..36].copy_from_slice(&u32::try_from(message_len).ok()?.to_be_bytes());
                bytes[39] = IPPROTO_CARP;
                Some(PseudoHeader { bytes, len: 40 })
            }
            _ => None,
        }
    }

    fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

/// Copy a slice whose length is fixed by a `field` range into an array.
fn array<const N: usize>(bytes: &[u8]) -> [u8; N] {
    let mut out = [0u8; N];
    out.copy_from_slice(bytes);
    out
}

/// A decoded advertisement (checksum verified on parse, computed on emit).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Advert {
    pub version: Version,
    pub vrid: u8,
    /// 0 (stopping) ..= 255 (address owner).
    pub priority: u8,
    /// Advertisement interval in centiseconds; VRRPv2 carries whole seconds
    /// (emit writes `interval_cs / 100`).
    pub interval_cs: u16,
    /// [`Auth::None`] for VRRPv3.
    pub auth: Auth,
    pub addresses: Addresses,
}

impl Advert {
    /// Decode a VRRP payload (the bytes after the IP header) carried from
    /// `src` to `dst`: length, version (3, or 2 over IPv4), type
    /// advertisement, at least one address, the length the count gives,
    /// checksum, a non-zero interval (RFC 9568 erratum 8301; RFC 3768
    /// likewise) and, for VRRPv2, authentication type 0 or 1; checked in
    /// that order. Never panics.
    pub fn parse(payload: &[u8], src: IpAddr, dst: IpAddr) -> Result<Advert, DropReason> {
        let ipv6 = src.is_ipv6();
        let probe = Packet::new_unchecked(payload, ipv6);
        if payload.len() < HEADER_LEN {
            return Err(DropReason::TooShort);
        }
        let version = match (probe.version(), ipv6) {
            (3, _) => Version::V3,
            (2, false) => Version::V2,
            _ => return Err(DropReason::BadVersion),
        };
        if probe.msg_type() != TYPE_ADVERTISEMENT {
            return Err(DropReason::BadType);
        }
        let packet = Packet::new_checked(payload, ipv6)?;
        if !packet.verify_checksum(src, dst) {
            return Err(DropReason::BadChecksum);
        }
        let (interval_cs, auth) = match version {
            Version::V3 => (packet.max_adver_int(), Auth::None),
            Version::V2 => {
                let auth = match packet.auth_type() {
                    AUTH_TYPE_NONE => Auth::None,
                    AUTH_TYPE_SIMPLE => Auth::Simple(packet.auth_data()),
                    _ => return Err(DropReason::BadAuthType),
                };
                (u16::from(packet.adver_int()) * 100, auth)
            }
        };
        if interval_cs == 0 {
            return Err(DropReason::BadInterval);
        }
        Ok(Advert {
            version,
            vrid: packet.vrid(),
            priority: packet.priority(),
            interval_cs,
            auth,
            addresses: packet.addresses(),
        })
    }

    /// Bytes [`Advert::emit`] writes.
    pub fn buffer_len(&self) -> usize {
        let trailer = match self.version {
            Version::V2 => AUTH_DATA_LEN,
            Version::V3 => 0,
        };
        HEADER_LEN + self.addresses.len() * self.addresses.addr_len() + trailer
    }

    /// The advertisement interval.
    pub fn interval(&self) -> Duration {
        Duration::from_millis(u64::from(self.interval_cs) * 10)
    }

    /// Encode into the first [`Advert::buffer_len`] bytes of `buf`, for a
    /// carrier from `src` to `dst` (VRRPv3's checksum covers them),
    /// checksum last; bytes after them are left untouched. VRRPv3 intervals
    /// above 12 bits are capped at [`MAX_INTERVAL_V3_CS`].
    ///
    /// # Panics
    ///
    /// If `buf` is shorter than [`Advert::buffer_len`], if there are more
    /// than 255 addresses, or if a VRRPv2 advertisement has IPv6 addresses:
    /// the caller builds the advertisement from validated configuration
    /// and sizes its own buffer, so these are bugs in the caller, never a
    /// property of input.
    pub fn emit(&self, buf: &mut [u8], src: IpAddr, dst: IpAddr) {
        let len = self.buffer_len();
        assert!(
            buf.len() >= len,
            "VRRP advertisement needs {len} bytes, buffer has {}",
            buf.len()
        );
        let count = u8::try_from(self.addresses.len());
        assert!(count.is_ok(), "VRRP carries at most 255 addresses");
        let ipv6 = matches!(self.addresses, Addresses::V6(_));
        assert!(
            !(ipv6 && self.version == Version::V2),
            "VRRPv2 carries IPv4 addresses only"
        );
        let mut packet = Packet::new_unchecked(&mut buf[..len], ipv6);
        packet.set_version(self.version.number());
        packet.set_msg_type(TYPE_ADVERTISEMENT);
        packet.set_vrid(self.vrid);
        packet.set_priority(self.priority);
        packet.set_count(count.unwrap_or(u8::MAX));
        match self.version {
            Version::V3 => packet.set_max_adver_int(self.interval_cs.min(MAX_INTERVAL_V3_CS)),
            Version::V2 => {
                packet.set_auth_type(self.auth.type_code());
                let seconds = u8::try_from(self.interval_cs / 100).unwrap_or(u8::MAX);
                packet.set_adver_int(seconds);
            }
        }
        packet.set_addresses(&self.addresses);
        if self.version == Version::V2 {
            let data = match &self.auth {
                Auth::None => [0u8; AUTH_DATA_LEN],
                Auth::Simple(data) => *data,
            };
            packet.set_auth_data(&data);
        }
        packet.fill_checksum(src, dst);
    }

    pub fn to_bytes(&self, src: IpAddr, dst: IpAddr) -> Vec<u8> {
        let mut b = vec![0u8; self.buffer_len()];
        self.emit(&mut b, src, dst);
        b
    }

    /// The receive-side checks that need the virtual router's configuration
    /// (RFC 3768 7.1, RFC 9568 7.1), in this order:
    ///
    /// 1. we own the addresses (priority 255): [`DropReason::ToOwner`];
    /// 2. another version: [`DropReason::BadVersion`];
    /// 3. VRRPv2: another authentication type ([`DropReason::BadAuthType`])
    ///    or password ([`DropReason::BadPassword`]), another interval
    ///    ([`DropReason::IntervalMismatch`]);
    /// 4. other virtual addresses (count or set, in any order):
    ///    [`DropReason::AddressMismatch`]; VRRPv2 accepts the owner's
    ///    (priority 255) anyway, as RFC 3768 says. RFC 9568 lets a VRRPv3
    ///    receiver log and go on; keepalived drops, and so does carpd, so
    ///    that a misconfigured pair is seen rather than half working.
    pub fn check_against(&self, ours: &Expected<'_>) -> Result<(), DropReason> {
        if ours.priority == OWNER_PRIORITY {
            return Err(DropReason::ToOwner);
        }
        if self.version != ours.version {
            return Err(DropReason::BadVersion);
        }
        if self.version == Version::V2 {
            match (&self.auth, ours.auth) {
                (Auth::None, Auth::None) => {}
                (Auth::Simple(theirs), Auth::Simple(mine)) => {
                    if !bool::from(theirs.ct_eq(mine)) {
                        return Err(DropReason::BadPassword);
                    }
                }
                _ => return Err(DropReason::BadAuthType),
            }
            if self.interval_cs != ours.interval_cs {
                return Err(DropReason::IntervalMismatch);
            }
        }
        let owner_v2 = self.version == Version::V2 && self.priority == OWNER_PRIORITY;
        if !owner_v2 && !self.addresses.same_set(ours.addresses) {
            return Err(DropReason::AddressMismatch);
        }
        Ok(())
    }
}

/// What a virtual router expects of the advertisements it accepts (see
/// [`Advert::check_against`]).
#[derive(Debug, Clone, Copy)]
pub struct Expected<'a> {
    pub version: Version,
    /// Our configured priority (255: we own the addresses).
    pub priority: u8,
    /// VRRPv2: must match; VRRPv3: learned from the active router instead.
    pub interval_cs: u16,
    pub auth: &'a Auth,
    pub addresses: &'a Addresses,
}

/// The virtual MAC address of virtual router `vrid`: 00:00:5e:00:01:VRID
/// for IPv4, 00:00:5e:00:02:VRID for IPv6 (RFC 9568 7.3).
pub const fn virtual_mac(vrid: u8, ipv6: bool) -> [u8; 6] {
    [0x00, 0x00, 0x5e, 0x00, if ipv6 { 0x02 } else { 0x01 }, vrid]
}

/// A CARP advertisement as the BSDs and UCARP send it: 36 bytes, first byte
/// `0x21` (version 2, type 1 as VRRPv2's) and 7 at byte 3 (CARP's authlen).
/// A VRRPv2 message of 36 bytes carries 5 addresses, so no VRRP message
/// has this shape.
pub fn is_carp(payload: &[u8]) -> bool {
    payload.len() == packet::HEADER_LEN
        && payload.first() == Some(&0x21)
        && payload.get(3) == Some(&packet::AUTHLEN)
}

/// Receive-side checks that need no per-VRID state. The caller then looks
/// up the virtual router and calls [`Advert::check_against`].
///
/// Checks run in this order, and the first failure is the reason:
///
/// 1. CARP ([`DropReason::Carp`], see [`is_carp`]), so that a CARP peer
///    sharing protocol 112 and 224.0.0.18 is counted apart;
/// 2. shorter than a header: [`DropReason::TooShort`];
/// 3. TTL or hop limit not 255: [`DropReason::BadTtl`], skipped when
///    `relax_ttl` (unicast peers across routers);
/// 4. the checks of [`Advert::parse`].
///
/// Never panics.
pub fn check(carrier: &Carrier, payload: &[u8], relax_ttl: bool) -> Result<Advert, DropReason> {
    if is_carp(payload) {
        return Err(DropReason::Carp);
    }
    if payload.len() < HEADER_LEN {
        return Err(DropReason::TooShort);
    }
    if !relax_ttl && carrier.ttl != TTL {
        return Err(DropReason::BadTtl);
    }
    Advert::parse(payload, carrier.src, carrier.dst)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::{GROUP_V4, GROUP_V6};

    fn v4(a: [u8; 4]) -> IpAddr {
        IpAddr::V4(Ipv4Addr::from(a))
    }

    const SRC_V4: [u8; 4] = [192, 168, 1, 1];

    /// VRRPv3 over IPv4 from 192.168.1.1: VRID 1, priority 100, 1 s, one
    /// address 192.168.1.254 (checksum with the IPv4 pseudo-header).
    #[rustfmt::skip]
    const V3_V4: [u8; 12] = [
        0x31, 0x01, 0x64, 0x01, 0x00, 0x64, 0x05, 0xba,
        0xc0, 0xa8, 0x01, 0xfe,
    ];

    fn v3_v4() -> Advert {
        Advert {
            version: Version::V3,
            vrid: 1,
            priority: 100,
            interval_cs: 100,
            auth: Auth::None,
            addresses: Addresses::V4(vec![Ipv4Addr::new(192, 168, 1, 254)]),
        }
    }

    #[test]
    fn v3_ipv4_known_bytes() {
        let src = v4(SRC_V4);
        let dst = IpAddr::V4(GROUP_V4);
        assert_eq!(v3_v4().to_bytes(src, dst), V3_V4);
        assert_eq!(Advert::parse(&V3_V4, src, dst), Ok(v3_v4()));
        let p = Packet::new_checked(&V3_V4[..], false).unwrap();
        assert_eq!((p.version(), p.msg_type(), p.count()), (3, 1, 1));
        assert_eq!((p.max_adver_int(), p.checksum()), (100, 0x05ba));
        // the pseudo-header counts: another source is a bad checksum
        assert_eq!(
            Advert::parse(&V3_V4, v4([192, 168, 1, 2]), dst),
            Err(DropReason::BadChecksum)
        );
    }

    #[test]
    fn reserved_bits_are_ignored_and_sent_as_zero() {
        let mut buf = [0xffu8; 8];
        let mut p = Packet::new_unchecked(&mut buf[..], false);
        p.set_max_adver_int(0xffff);
        assert_eq!(p.max_adver_int(), 0x0fff);
        assert_eq!(p.into_inner()[4], 0x0f);
    }

    #[test]
    fn emit_into_dirty_buffer_leaves_the_rest() {
        let src = v4(SRC_V4);
        let dst = IpAddr::V4(GROUP_V4);
        let mut buf = [0xa5u8; 16];
        v3_v4().emit(&mut buf, src, dst);
        assert_eq!(buf[..12], V3_V4);
        assert_eq!(buf[12..], [0xa5; 4]);
    }

    #[test]
    fn v6_and_v2_round_trip() {
        let src = IpAddr::V6("fe80::1".parse().unwrap());
        let dst = IpAddr::V6(GROUP_V6);
        let v6 = Advert {
            addresses: Addresses::V6(vec![
                "fe80::100".parse().unwrap(),
                "2001:db8::100".parse().unwrap(),
            ]),
            ..v3_v4()
        };
        let bytes = v6.to_bytes(src, dst);
        assert_eq!(bytes.len(), 8 + 32);
        assert_eq!(Advert::parse(&bytes, src, dst), Ok(v6));

        let v2 = Advert {
            version: Version::V2,
            auth: Auth::simple(b"secret"),
            ..v3_v4()
        };
        let src = v4(SRC_V4);
        let bytes = v2.to_bytes(src, IpAddr::V4(GROUP_V4));
        assert_eq!(bytes.len(), 8 + 4 + 8);
        assert_eq!(&bytes[12..], b"secret\0\0");
        // no pseudo-header: any carrier addresses
        assert_eq!(Advert::parse(&bytes, src, v4([10, 0, 0, 1])), Ok(v2));
    }

    #[test]
    fn virtual_macs() {
        assert_eq!(virtual_mac(7, false), [0, 0, 0x5e, 0, 1, 7]);
        assert_eq!(virtual_mac(255, true), [0, 0, 0x5e, 0, 2, 255]);
    }

    #[test]
    #[should_panic(expected = "VRRP advertisement needs 12 bytes")]
    fn emit_into_short_buffer_is_a_caller_bug() {
        v3_v4().emit(&mut [0u8; 11], v4(SRC_V4), IpAddr::V4(GROUP_V4));
    }
}
