//! A hostile host: raw IPv4 sockets opened inside a test namespace to
//! forge, replay and flood protocol-112 packets.
//!
//! Sockets keep the namespace they were created in, so each is created on a
//! short-lived thread that has entered the namespace (see
//! [`in_netns`](crate::netns::in_netns)); the test then uses it from anywhere.

use std::io;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::thread;
use std::time::{Duration, Instant};

use carp_proto::packet::{HEADER_LEN, IPPROTO_CARP};
use carp_proto::{Advert, Authenticator, HmacMode};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use crate::netns::{Netns, in_netns};

/// An IPv4 header for a protocol-112 packet (the kernel fills in the
/// checksum, the id and the total length).
pub fn ipv4_packet(src: Ipv4Addr, dst: Ipv4Addr, ttl: u8, payload: &[u8]) -> Vec<u8> {
    let mut p = vec![0u8; 20];
    p[0] = 0x45;
    p[1] = 0x10;
    let len = u16::try_from(20 + payload.len()).expect("packet fits");
    p[2..4].copy_from_slice(&len.to_be_bytes());
    p[6] = 0x40; // DF
    p[8] = ttl;
    p[9] = IPPROTO_CARP;
    p[12..16].copy_from_slice(&src.octets());
    p[16..20].copy_from_slice(&dst.octets());
    p.extend_from_slice(payload);
    p
}

/// Sends hand-made IPv4 packets (any source, TTL and payload) out of one
/// interface of a namespace.
#[derive(Debug)]
pub struct Injector {
    sock: Socket,
}

impl Injector {
    pub fn open(ns: &Netns, dev: &str) -> Injector {
        let dev = dev.to_string();
        let sock = in_netns(ns, move || {
            // IPPROTO_RAW: the caller writes the IP header
            let s = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::from(255)))
                .expect("raw socket");
            s.set_header_included_v4(true).expect("IP_HDRINCL");
            s.bind_device(Some(dev.as_bytes()))
                .expect("SO_BINDTODEVICE");
            s
        });
        Injector { sock }
    }

    /// Sends `payload` as protocol 112 from `src` to `dst` with `ttl`.
    pub fn send(&self, src: Ipv4Addr, dst: Ipv4Addr, ttl: u8, payload: &[u8]) -> io::Result<()> {
        self.send_raw(&ipv4_packet(src, dst, ttl, payload), dst)
    }

    /// Sends a complete IPv4 packet (header included) towards `dst`.
    pub fn send_raw(&self, packet: &[u8], dst: Ipv4Addr) -> io::Result<()> {
        let to = SockAddr::from(SocketAddrV4::new(dst, 0));
        self.sock.send_to(packet, &to).map(|_| ())
    }

    /// Sends `packet` (header included) `rate` times a second for
    /// `duration`, paced in 1 ms steps; returns how many were sent and how
    /// many the kernel refused (a full queue under load).
    pub fn flood(&self, packet: &[u8], dst: Ipv4Addr, rate: u64, duration: Duration) -> (u64, u64) {
        self.flood_with(dst, rate, duration, |_| packet.to_vec())
    }

    /// As [`Injector::flood`], with packet `n` built by `make(n)`.
    pub fn flood_with(
        &self,
        dst: Ipv4Addr,
        rate: u64,
        duration: Duration,
        mut make: impl FnMut(u64) -> Vec<u8>,
    ) -> (u64, u64) {
        let to = SockAddr::from(SocketAddrV4::new(dst, 0));
        let start = Instant::now();
        let total = rate * duration.as_millis() as u64 / 1000;
        let (mut sent, mut failed) = (0u64, 0u64);
        while sent + failed < total {
            let due = (rate * start.elapsed().as_micros() as u64 / 1_000_000).min(total);
            while sent + failed < due {
                match self.sock.send_to(&make(sent + failed), &to) {
                    Ok(_) => sent += 1,
                    Err(_) => failed += 1,
                }
            }
            thread::sleep(Duration::from_millis(1));
        }
        (sent, failed)
    }
}

/// A signed advertisement, as a peer that knows the password would send it
/// (BSD HMAC over `vip`, which for one IPv4 address is also UCARP's).
pub fn signed_advert(
    password: &str,
    vhid: u8,
    vip: Ipv4Addr,
    advbase: u8,
    advskew: u8,
    counter: u64,
) -> [u8; HEADER_LEN] {
    let auth = Authenticator::new(HmacMode::Bsd, password.as_bytes(), vhid, &[vip.into()])
        .expect("authenticator");
    Advert {
        vhid,
        advskew,
        advbase,
        demote: 0,
        counter,
        hmac: auth.sign(counter),
    }
    .to_bytes()
}
