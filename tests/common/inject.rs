//! A hostile host for the end-to-end tests: raw IPv4 sockets opened inside
//! a test namespace to forge, replay and flood protocol-112 packets, and to
//! capture the advertisements on the segment.
//!
//! Sockets keep the namespace they were created in, so each is created on a
//! short-lived thread that has entered the namespace; the test then uses it
//! from anywhere.

#![allow(dead_code)]

use std::fs::File;
use std::io::{self, Read};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::thread;
use std::time::{Duration, Instant};

use carp_proto::packet::{GROUP_V4, HEADER_LEN, IPPROTO_CARP};
use carp_proto::{Advert, Authenticator, HmacMode};
use nix::sched::{CloneFlags, setns};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use crate::common::{Netns, run};

/// Runs `f` on a thread that has entered `ns`'s network namespace.
fn in_netns<T: Send + 'static>(ns: &Netns, f: impl FnOnce() -> T + Send + 'static) -> T {
    let path = format!("/run/netns/{}", ns.name());
    thread::spawn(move || {
        let fd = File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        setns(&fd, CloneFlags::CLONE_NEWNET).expect("setns");
        f()
    })
    .join()
    .expect("namespace thread")
}

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

/// One captured protocol-112 packet.
#[derive(Debug, Clone)]
pub struct Captured {
    pub at: Instant,
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub ttl: u8,
    /// The CARP payload (after the IP header).
    pub payload: Vec<u8>,
    /// The whole IP packet, to replay it unchanged.
    pub raw: Vec<u8>,
}

impl Captured {
    pub fn advert(&self) -> Option<Advert> {
        Advert::parse(&self.payload).ok()
    }
}

/// Receives every protocol-112 packet reaching one interface of a
/// namespace (multicast to 224.0.0.18 included).
#[derive(Debug)]
pub struct Sniffer {
    sock: Socket,
}

impl Sniffer {
    /// `local` is the interface's own address, used to join the group.
    pub fn open(ns: &Netns, dev: &str, local: Ipv4Addr) -> Sniffer {
        let dev = dev.to_string();
        let sock = in_netns(ns, move || {
            let s = Socket::new(
                Domain::IPV4,
                Type::RAW,
                Some(Protocol::from(i32::from(IPPROTO_CARP))),
            )
            .expect("raw socket");
            s.bind_device(Some(dev.as_bytes()))
                .expect("SO_BINDTODEVICE");
            s.join_multicast_v4(&GROUP_V4, &local).expect("join group");
            s.set_recv_buffer_size(1 << 20).expect("SO_RCVBUF");
            s
        });
        Sniffer { sock }
    }

    /// The next packet, or `None` after `timeout`.
    pub fn next(&self, timeout: Duration) -> Option<Captured> {
        let deadline = Instant::now() + timeout;
        let mut buf = [0u8; 2048];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            self.sock.set_read_timeout(Some(left)).expect("timeout");
            let n = match (&self.sock).read(&mut buf) {
                Ok(n) => n,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    return None;
                }
                Err(e) => panic!("capture: {e}"),
            };
            let raw = &buf[..n];
            if n < 20 {
                continue;
            }
            let ihl = usize::from(raw[0] & 0x0f) * 4;
            let Some(payload) = raw.get(ihl..) else {
                continue;
            };
            let ip = |o: usize| Ipv4Addr::new(raw[o], raw[o + 1], raw[o + 2], raw[o + 3]);
            return Some(Captured {
                at: Instant::now(),
                src: ip(12),
                dst: ip(16),
                ttl: raw[8],
                payload: payload.to_vec(),
                raw: raw.to_vec(),
            });
        }
    }

    /// Every packet for `duration`.
    pub fn collect(&self, duration: Duration) -> Vec<Captured> {
        let end = Instant::now() + duration;
        let mut out = Vec::new();
        while let Some(c) = self.next(end.saturating_duration_since(Instant::now())) {
            out.push(c);
        }
        out
    }

    /// The first advertisement from `src` for `vhid` within `timeout`.
    pub fn advert_from(&self, src: Ipv4Addr, vhid: u8, timeout: Duration) -> Option<Captured> {
        let end = Instant::now() + timeout;
        while let Some(c) = self.next(end.saturating_duration_since(Instant::now())) {
            if c.src == src && c.advert().is_some_and(|a| a.vhid == vhid) {
                return Some(c);
            }
        }
        None
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

/// Gaps between consecutive captures, for schedule checks.
pub fn gaps(captures: &[&Captured]) -> Vec<Duration> {
    captures
        .windows(2)
        .map(|w| w[1].at.duration_since(w[0].at))
        .collect()
}

/// CPU time (user + system) a process has used so far.
pub fn cpu_time(pid: i32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read stat");
    // fields after the parenthesised command name; utime and stime are
    // fields 14 and 15 of the whole line
    let rest = &stat[stat.rfind(')').expect("stat format") + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f[11].parse::<u64>().expect("utime") + f[12].parse::<u64>().expect("stime");
    let hz: u64 = run(&["getconf", "CLK_TCK"])
        .trim()
        .parse()
        .expect("CLK_TCK");
    Duration::from_millis(ticks * 1000 / hz)
}

/// Drop counters by reason of the daemon's first VHID.
pub fn vhid_drops(s: &serde_json::Value) -> std::collections::BTreeMap<String, u64> {
    counts(&s["vhids"][0]["drops"])
}

/// Drop counters by reason that belong to no VHID on `iface`.
pub fn interface_drops(
    s: &serde_json::Value,
    iface: &str,
) -> std::collections::BTreeMap<String, u64> {
    counts(&s["interface_drops"][iface])
}

fn counts(v: &serde_json::Value) -> std::collections::BTreeMap<String, u64> {
    v.as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_u64().unwrap_or(0)))
                .collect()
        })
        .unwrap_or_default()
}
