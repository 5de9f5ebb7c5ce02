//! What the benchmark observes, on one clock (`CLOCK_REALTIME`, in
//! nanoseconds):
//!
//! * [`Capture`]: CARP packets as they arrive at the switch ports, stamped
//!   by the kernel on receipt (`SO_TIMESTAMPNS` on an `AF_PACKET` socket);
//! * [`AddrWatch`]: address additions and removals in host namespaces, from
//!   rtnetlink notifications, stamped when a thread blocked on the socket
//!   wakes up with them (netlink carries no kernel timestamp).

use std::collections::HashMap;
use std::ffi::CString;
use std::io;
use std::mem;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{SystemTime, UNIX_EPOCH};

use carpd_testbed::Netns;

use crate::error::{Error, Result};

/// Nanoseconds since the epoch, the clock of every timestamp here.
pub type Ns = i64;

pub fn now_ns() -> Ns {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

/// Milliseconds between two timestamps.
pub fn ms(from: Ns, to: Ns) -> f64 {
    (to - from) as f64 / 1e6
}

const CARP_PROTO: u8 = 112;
const PACKET_OUTGOING: u8 = 4;

/// One CARP (or VRRPv3) advertisement seen at a switch port.
#[derive(Debug, Clone, Copy)]
pub struct WirePacket {
    pub at: Ns,
    pub src: Ipv4Addr,
    /// The VHID (VRRP: the VRID).
    pub vhid: u8,
    /// 0 for VRRPv3.
    pub advbase: u8,
}

fn setsockopt<T>(fd: &OwnedFd, level: i32, name: i32, value: &T) -> io::Result<()> {
    let len = libc::socklen_t::try_from(mem::size_of::<T>()).unwrap_or(0);
    // SAFETY: `value` points to a live `T` of `len` bytes for the call.
    let r = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            std::ptr::from_ref(value).cast(),
            len,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn socket(domain: i32, ty: i32, proto: i32) -> io::Result<OwnedFd> {
    // SAFETY: plain syscall; the descriptor is owned from here on.
    let fd = unsafe { libc::socket(domain, ty | libc::SOCK_CLOEXEC, proto) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// A receive timeout, so reader threads notice when they are asked to stop.
fn poll_timeout(fd: &OwnedFd) -> io::Result<()> {
    let tv = libc::timeval {
        tv_sec: 0,
        tv_usec: 100_000,
    };
    setsockopt(fd, libc::SOL_SOCKET, libc::SO_RCVTIMEO, &tv)
}

fn would_block(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
    )
}

/// A reader thread in a namespace, stopped and joined on drop.
#[derive(Debug)]
struct Reader {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Reader {
    /// Runs `open` inside namespace `ns` on a new thread, reports its
    /// outcome, then calls `step` until stopped (`step` returns false on a
    /// fatal error).
    fn spawn<S: Send + 'static>(
        ns: &Netns,
        open: impl FnOnce() -> io::Result<S> + Send + 'static,
        mut step: impl FnMut(&mut S) -> bool + Send + 'static,
    ) -> Result<Reader> {
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = mpsc::channel();
        let name = ns.name().to_string();
        let netns = format!("/var/run/netns/{name}");
        let flag = Arc::clone(&stop);
        let thread = thread::spawn(move || {
            let opened = std::fs::File::open(&netns)
                .and_then(|f| {
                    nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET)
                        .map_err(io::Error::from)
                })
                .and_then(|()| open());
            let mut state = match opened {
                Ok(s) => {
                    let _ = tx.send(Ok(()));
                    s
                }
                Err(e) => {
                    let _ = tx.send(Err(format!("{name}: {e}")));
                    return;
                }
            };
            while !flag.load(Ordering::Relaxed) && step(&mut state) {}
        });
        match rx.recv() {
            Ok(Ok(())) => Ok(Reader {
                stop,
                thread: Some(thread),
            }),
            Ok(Err(e)) => Err(Error::Setup(e)),
            Err(_) => Err(Error::Setup("reader thread died".into())),
        }
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Which frames a [`Capture`] keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frames {
    /// Those arriving at the interfaces: at a switch port, what a host
    /// sent, once its link delivered it.
    Arriving,
    /// Those leaving too: in a host, what it sent, timed as it left.
    Both,
}

/// CARP packets at the given interfaces of one namespace: at switch ports,
/// what the hosts sent; in a host, what it sent and what reached it.
#[derive(Debug)]
pub struct Capture {
    packets: Arc<Mutex<Vec<WirePacket>>>,
    _reader: Reader,
}

struct CaptureState {
    fd: OwnedFd,
    ports: Vec<i32>,
    frames: Frames,
    out: Arc<Mutex<Vec<WirePacket>>>,
}

impl Capture {
    pub fn start(ns: &Netns, ports: &[String], frames: Frames) -> Result<Capture> {
        let packets = Arc::new(Mutex::new(Vec::new()));
        let out = Arc::clone(&packets);
        let ports = ports.to_vec();
        let reader = Reader::spawn(
            ns,
            move || {
                // every protocol: only taps for all protocols see frames
                // before the bridge consumes them
                let proto = i32::from(u16::try_from(libc::ETH_P_ALL).unwrap_or(0).to_be());
                let fd = socket(libc::AF_PACKET, libc::SOCK_DGRAM, proto)?;
                setsockopt(&fd, libc::SOL_SOCKET, libc::SO_TIMESTAMPNS, &1i32)?;
                setsockopt(&fd, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, &(8i32 << 20))?;
                poll_timeout(&fd)?;
                let mut idx = Vec::new();
                for p in &ports {
                    let c = CString::new(p.as_str()).map_err(io::Error::other)?;
                    // SAFETY: `c` is a valid NUL-terminated string.
                    let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
                    if i == 0 {
                        return Err(io::Error::last_os_error());
                    }
                    idx.push(i32::try_from(i).map_err(io::Error::other)?);
                }
                Ok(CaptureState {
                    fd,
                    ports: idx,
                    frames,
                    out,
                })
            },
            |s| match recv_packet(s) {
                Ok(()) => true,
                Err(e) if would_block(&e) => true,
                Err(e) => {
                    eprintln!("capture: {e}");
                    false
                }
            },
        )?;
        Ok(Capture {
            packets,
            _reader: reader,
        })
    }

    pub fn packets(&self) -> Vec<WirePacket> {
        self.packets.lock().map(|p| p.clone()).unwrap_or_default()
    }

    /// The last advertisement from `src` for `vhid` at or before `until`,
    /// bow-outs (advbase 255) left out.
    pub fn last_advert(&self, src: Ipv4Addr, vhid: u8, until: Ns) -> Option<Ns> {
        self.advert_times(src, vhid, Ns::MIN, until)
            .into_iter()
            .max()
    }

    /// The first advertisement from `src` for `vhid` after `after` and at
    /// or before `until`, bow-outs left out.
    pub fn first_advert(&self, src: Ipv4Addr, vhid: u8, after: Ns, until: Ns) -> Option<Ns> {
        self.advert_times(src, vhid, after, until).into_iter().min()
    }

    /// When the advertisements from `src` for `vhid` after `after` and at
    /// or before `until` were seen, bow-outs left out.
    fn advert_times(&self, src: Ipv4Addr, vhid: u8, after: Ns, until: Ns) -> Vec<Ns> {
        let Ok(packets) = self.packets.lock() else {
            return Vec::new();
        };
        packets
            .iter()
            .filter(|p| {
                p.src == src && p.vhid == vhid && p.at > after && p.at <= until && p.advbase != 255
            })
            .map(|p| p.at)
            .collect()
    }
}

fn recv_packet(s: &mut CaptureState) -> io::Result<()> {
    let mut buf = [0u8; 2048];
    let mut control = [0u64; 16];
    // SAFETY: all-zero is a valid sockaddr_ll and msghdr.
    let mut addr: libc::sockaddr_ll = unsafe { mem::zeroed() };
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: see above.
    let mut msg: libc::msghdr = unsafe { mem::zeroed() };
    msg.msg_name = std::ptr::from_mut(&mut addr).cast();
    msg.msg_namelen = libc::socklen_t::try_from(mem::size_of::<libc::sockaddr_ll>()).unwrap_or(0);
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = mem::size_of_val(&control);
    // SAFETY: every pointer in `msg` refers to a live local buffer of the
    // stated length.
    let n = unsafe { libc::recvmsg(s.fd.as_raw_fd(), &mut msg, 0) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let len = usize::try_from(n).unwrap_or(0).min(buf.len());
    let ipv4 = u16::try_from(libc::ETH_P_IP).unwrap_or(0).to_be();
    if (addr.sll_pkttype == PACKET_OUTGOING && s.frames == Frames::Arriving)
        || addr.sll_protocol != ipv4
        || !s.ports.contains(&addr.sll_ifindex)
    {
        return Ok(());
    }
    let mut at = None;
    // SAFETY: the CMSG_* macros walk the control buffer the kernel filled,
    // bounded by `msg_controllen`.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_TIMESTAMPNS {
                let ts: libc::timespec = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast());
                at = Some(ts.tv_sec * 1_000_000_000 + ts.tv_nsec);
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
    }
    let pkt = &buf[..len];
    let ihl = usize::from(pkt.first().map_or(0, |b| b & 0x0f)) * 4;
    if pkt.get(9) != Some(&CARP_PROTO) {
        return Ok(());
    }
    // CARP (version 2, type 1) or VRRPv3 (version 3, type 1, one IPv4
    // address at least), which share the protocol number
    let advbase = match pkt.get(ihl) {
        Some(0x21) if pkt.len() >= ihl + 36 => pkt[ihl + 5],
        Some(0x31) if pkt.len() >= ihl + 12 => 0,
        _ => return Ok(()),
    };
    let src = Ipv4Addr::new(pkt[12], pkt[13], pkt[14], pkt[15]);
    let p = WirePacket {
        at: at.unwrap_or_else(now_ns),
        src,
        vhid: pkt[ihl + 1],
        advbase,
    };
    if let Ok(mut out) = s.out.lock() {
        out.push(p);
    }
    Ok(())
}

/// One address appearing in or leaving a host namespace.
#[derive(Debug, Clone)]
pub struct AddrEvent {
    pub at: Ns,
    pub node: usize,
    pub added: bool,
    pub addr: IpAddr,
}

/// Address changes in a set of namespaces (node = index in the set).
#[derive(Debug)]
pub struct AddrWatch {
    events: Arc<Mutex<Vec<AddrEvent>>>,
    _readers: Vec<Reader>,
}

const RTM_NEWADDR: u16 = 20;
const RTM_DELADDR: u16 = 21;
const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;
const RTMGRP_IPV4_IFADDR: u32 = 0x10;
const RTMGRP_IPV6_IFADDR: u32 = 0x100;

impl AddrWatch {
    /// Subscribed to every namespace when this returns.
    pub fn start(nss: &[&Netns]) -> Result<AddrWatch> {
        let events = Arc::new(Mutex::new(Vec::new()));
        let mut readers = Vec::new();
        for (node, ns) in nss.iter().enumerate() {
            let out = Arc::clone(&events);
            readers.push(Reader::spawn(
                ns,
                || {
                    let fd = socket(libc::AF_NETLINK, libc::SOCK_RAW, libc::NETLINK_ROUTE)?;
                    setsockopt(&fd, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, &(8i32 << 20))?;
                    poll_timeout(&fd)?;
                    // SAFETY: all-zero is a valid sockaddr_nl.
                    let mut sa: libc::sockaddr_nl = unsafe { mem::zeroed() };
                    sa.nl_family = u16::try_from(libc::AF_NETLINK).unwrap_or(0);
                    sa.nl_groups = RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR;
                    let len =
                        libc::socklen_t::try_from(mem::size_of::<libc::sockaddr_nl>()).unwrap_or(0);
                    // SAFETY: `sa` is a valid sockaddr_nl of `len` bytes.
                    let r =
                        unsafe { libc::bind(fd.as_raw_fd(), std::ptr::from_ref(&sa).cast(), len) };
                    if r != 0 {
                        return Err(io::Error::last_os_error());
                    }
                    Ok(fd)
                },
                move |fd| {
                    let mut buf = vec![0u8; 64 * 1024];
                    // SAFETY: `buf` is a live buffer of the given length.
                    let n = unsafe {
                        libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0)
                    };
                    let at = now_ns();
                    if n < 0 {
                        let e = io::Error::last_os_error();
                        if would_block(&e) {
                            return true;
                        }
                        eprintln!("address watch: {e}");
                        return e.raw_os_error() == Some(libc::ENOBUFS);
                    }
                    let got = parse_addr_messages(&buf[..usize::try_from(n).unwrap_or(0)]);
                    if let Ok(mut ev) = out.lock() {
                        ev.extend(got.into_iter().map(|(added, addr)| AddrEvent {
                            at,
                            node,
                            added,
                            addr,
                        }));
                    }
                    true
                },
            )?);
        }
        Ok(AddrWatch {
            events,
            _readers: readers,
        })
    }

    pub fn events(&self) -> Vec<AddrEvent> {
        self.events.lock().map(|e| e.clone()).unwrap_or_default()
    }

    /// The first time `node` gained `addr` at or after `since`.
    pub fn first_added(&self, node: usize, addr: IpAddr, since: Ns) -> Option<Ns> {
        // searched in place: callers poll this while thousands of events pile up
        self.events
            .lock()
            .ok()?
            .iter()
            .find(|e| e.node == node && e.added && e.addr == addr && e.at >= since)
            .map(|e| e.at)
    }

    /// Waits up to `timeout` for `node` to gain `addr` at or after `since`.
    pub fn wait_added(
        &self,
        node: usize,
        addr: IpAddr,
        since: Ns,
        timeout: std::time::Duration,
    ) -> Option<Ns> {
        let mut at = None;
        carpd_testbed::wait_until(timeout, std::time::Duration::from_millis(2), || {
            at = self.first_added(node, addr, since);
            at.is_some()
        });
        at
    }

    /// The first time `node` lost `addr` at or after `since`.
    pub fn first_removed(&self, node: usize, addr: IpAddr, since: Ns) -> Option<Ns> {
        self.events
            .lock()
            .ok()?
            .iter()
            .find(|e| e.node == node && !e.added && e.addr == addr && e.at >= since)
            .map(|e| e.at)
    }

    /// How many times each node gained `addr` at or after `since`.
    pub fn additions_since(&self, addr: IpAddr, since: Ns) -> HashMap<usize, usize> {
        let mut out = HashMap::new();
        for e in self.events() {
            if e.added && e.addr == addr && e.at >= since {
                *out.entry(e.node).or_insert(0) += 1;
            }
        }
        out
    }
}

fn u16_at(b: &[u8], i: usize) -> Option<u16> {
    Some(u16::from_ne_bytes([*b.get(i)?, *b.get(i + 1)?]))
}

fn u32_at(b: &[u8], i: usize) -> Option<u32> {
    Some(u32::from_ne_bytes([
        *b.get(i)?,
        *b.get(i + 1)?,
        *b.get(i + 2)?,
        *b.get(i + 3)?,
    ]))
}

/// `(added, address)` for each RTM_NEWADDR / RTM_DELADDR in a datagram.
fn parse_addr_messages(buf: &[u8]) -> Vec<(bool, IpAddr)> {
    let mut out = Vec::new();
    let mut off = 0;
    while let (Some(len), Some(ty)) = (u32_at(buf, off), u16_at(buf, off + 4)) {
        let len = usize::try_from(len).unwrap_or(0);
        if len < 16 || off + len > buf.len() {
            break;
        }
        let msg = &buf[off..off + len];
        off += len.div_ceil(4) * 4;
        if ty != RTM_NEWADDR && ty != RTM_DELADDR {
            continue;
        }
        // nlmsghdr (16) + ifaddrmsg (8), then attributes
        let family = msg.get(16).copied().map(i32::from);
        let mut a = 24;
        let (mut local, mut address) = (None, None);
        while let (Some(alen), Some(aty)) = (u16_at(msg, a), u16_at(msg, a + 2)) {
            let alen = usize::from(alen);
            if alen < 4 || a + alen > msg.len() {
                break;
            }
            let data = &msg[a + 4..a + alen];
            let ip = match (family, data.len()) {
                (Some(libc::AF_INET), 4) => Some(IpAddr::V4(Ipv4Addr::new(
                    data[0], data[1], data[2], data[3],
                ))),
                (Some(libc::AF_INET6), 16) => {
                    let mut o = [0u8; 16];
                    o.copy_from_slice(data);
                    Some(IpAddr::V6(Ipv6Addr::from(o)))
                }
                _ => None,
            };
            match aty {
                IFA_LOCAL => local = ip,
                IFA_ADDRESS => address = ip,
                _ => {}
            }
            a += alen.div_ceil(4) * 4;
        }
        if let Some(ip) = local.or(address) {
            out.push((ty == RTM_NEWADDR, ip));
        }
    }
    out
}
