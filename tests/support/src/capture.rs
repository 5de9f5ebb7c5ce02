//! Watching the wire: tcpdump writing a pcap file, and a raw socket that
//! receives every protocol-112 packet reaching one interface.

use std::io::{self, Read};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use carp_proto::Advert;
use carp_proto::packet::{GROUP_V4, IPPROTO_CARP};
use socket2::{Domain, Protocol, Socket, Type};

use crate::command::{require_tool, wait_until};
use crate::daemon::Daemon;
use crate::netns::{Netns, in_netns};

impl Daemon {
    /// Starts tcpdump writing what `filter` matches on `eth0` of `ns` to
    /// `<dir>/<file>`, and waits until it listens.
    pub fn pcap(ns: &Netns, dir: &Path, file: &str, filter: &str) -> (Daemon, PathBuf) {
        let pcap = dir.join(file);
        let args = [
            "-i",
            "eth0",
            "-n",
            "-U",
            // Packets still in a capture block at SIGTERM would be lost.
            "--immediate-mode",
            "-w",
            pcap.to_str().expect("utf-8 path"),
            filter,
        ];
        require_tool("tcpdump");
        let tcpdump = Daemon::spawn(ns, "tcpdump", dir, "tcpdump", &args);
        assert!(
            wait_until(Duration::from_secs(5), Duration::from_millis(20), || {
                tcpdump.log().contains("listening")
            })
            .is_some(),
            "tcpdump did not start: {}",
            tcpdump.log()
        );
        (tcpdump, pcap)
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

/// Gaps between consecutive captures, for schedule checks.
pub fn gaps(captures: &[&Captured]) -> Vec<Duration> {
    captures
        .windows(2)
        .map(|w| w[1].at.duration_since(w[0].at))
        .collect()
}
