//! The raw sockets shared by every VHID and interface: one IPv4 socket for
//! protocol 112, one IPv6 socket when some VHID has IPv6 addresses, and a
//! packet socket for VHIDs that advertise to the Ethernet broadcast address.

use std::io::{self, IoSlice};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;
use std::time::Duration;

use carp_proto::packet::{self, Carrier, GROUP_V6, HEADER_LEN, IPPROTO_CARP, TTL};
use nix::sys::socket::{
    ControlMessage, MsgFlags, SockaddrIn, SockaddrIn6, sendmsg, setsockopt, sockopt,
};
use socket2::{Domain, InterfaceIndexOrAddress, Protocol, Socket, Type};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

use crate::error::Error;

/// TOS byte of IPv4 advertisements (OpenBSD, UCARP: IPTOS_LOWDELAY).
pub(crate) const TOS: u8 = 0x10;

/// A send that cannot get buffer space within this long fails (and counts
/// as a send error) instead of delaying the VHID's timers.
const SEND_WAIT: Duration = Duration::from_millis(200);

/// Send and receive buffer of the shared IPv4 and IPv6 sockets (the kernel
/// doubles it for its bookkeeping). The advertiser hands the kernel every
/// advertisement of a grid instant in one `sendmmsg`, and a peer's arrive
/// as a burst of as many: with thousands of VHIDs a quarter of them is
/// more than the default (about 200 KiB, some 250 small packets) holds, so
/// the rest of a batch would fail with `WouldBlock` and go back to their
/// tasks, and a backup would lose the tail of each burst.
const SOCKET_BUFFER: usize = 4 << 20;

/// Big enough for any IPv4 header plus far more than an advertisement;
/// longer packets are truncated and then rejected as too long.
pub(crate) const RECV_BUF: usize = 2048;

/// A packet received on one of the shared sockets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Received {
    pub(crate) ifindex: u32,
    pub(crate) carrier: Carrier,
    /// Where the CARP payload lies in the receive buffer.
    pub(crate) payload: (usize, usize),
}

fn io_err(context: impl Into<String>) -> impl FnOnce(io::Error) -> Error {
    let context = context.into();
    move |source| Error::Io { context, source }
}

fn nix_err(context: impl Into<String>) -> impl FnOnce(nix::Error) -> Error {
    let context = context.into();
    move |e| Error::Io {
        context,
        source: e.into(),
    }
}

/// `setsockopt(IPPROTO_IP, IP_MTU_DISCOVER, IP_PMTUDISC_DO)`, which makes
/// the kernel set DF on every packet; no safe wrapper offers it.
fn set_pmtudisc_do(fd: RawFd) -> io::Result<()> {
    let val: libc::c_int = libc::IP_PMTUDISC_DO;
    // SAFETY: `fd` is an open socket and the option value points to a live
    // c_int whose size is passed along.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::IPPROTO_IP,
            libc::IP_MTU_DISCOVER,
            (&raw const val).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Sets both buffers of `s` to [`SOCKET_BUFFER`]: beyond the system's
/// limits (`SO_SNDBUFFORCE`, `SO_RCVBUFFORCE`, which carpd may use as it
/// runs with `CAP_NET_ADMIN`), else up to them.
fn set_buffers(s: &Socket) -> io::Result<()> {
    let size = libc::c_int::try_from(SOCKET_BUFFER).unwrap_or(libc::c_int::MAX);
    for (force, plain) in [
        (libc::SO_SNDBUFFORCE, libc::SO_SNDBUF),
        (libc::SO_RCVBUFFORCE, libc::SO_RCVBUF),
    ] {
        let set = |opt: libc::c_int| {
            // SAFETY: `s` is an open socket and the option value points to
            // a live c_int whose size is passed along.
            let rc = unsafe {
                libc::setsockopt(
                    s.as_raw_fd(),
                    libc::SOL_SOCKET,
                    opt,
                    (&raw const size).cast(),
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                )
            };
            if rc == 0 {
                Ok(())
            } else {
                Err(io::Error::last_os_error())
            }
        };
        if set(force).is_err() {
            set(plain)?;
        }
    }
    Ok(())
}

fn raw(fd: &AsyncFd<Socket>) -> RawFd {
    fd.get_ref().as_raw_fd()
}

/// Hand a non-blocking socket to the tokio reactor.
pub(crate) fn register(s: Socket) -> io::Result<AsyncFd<Socket>> {
    // SAFETY: `Socket` owns its descriptor, which is neither closed nor
    // replaced while the `AsyncFd` holds the socket.
    unsafe { AsyncFd::register(s) }.map_err(io::Error::from)
}

/// Send with `f` on a non-blocking socket; wait (bounded) for buffer space.
async fn send_bounded(
    fd: &AsyncFd<Socket>,
    mut f: impl FnMut(RawFd) -> io::Result<usize>,
) -> io::Result<()> {
    match f(raw(fd)) {
        Ok(_) => return Ok(()),
        Err(e) if e.kind() != io::ErrorKind::WouldBlock => return Err(e),
        Err(_) => {}
    }
    match tokio::time::timeout(
        SEND_WAIT,
        fd.async_io(Interest::WRITABLE, |s| f(s.as_raw_fd())),
    )
    .await
    {
        Ok(r) => r.map(|_| ()),
        Err(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "socket buffer full",
        )),
    }
}

/// Parse the IPv4 header a raw socket hands over with the data. `None` for
/// anything that is not a well-formed IPv4 header of protocol 112.
pub(crate) fn parse_ipv4(buf: &[u8]) -> Option<(Carrier, (usize, usize))> {
    let first = *buf.first()?;
    if first >> 4 != 4 {
        return None;
    }
    let ihl = usize::from(first & 0x0f) * 4;
    if ihl < 20 || buf.len() < ihl {
        return None;
    }
    if buf[9] != IPPROTO_CARP {
        return None;
    }
    let total = usize::from(u16::from_be_bytes([buf[2], buf[3]]));
    if total < ihl {
        return None;
    }
    let end = total.min(buf.len());
    let src = Ipv4Addr::new(buf[12], buf[13], buf[14], buf[15]);
    let dst = Ipv4Addr::new(buf[16], buf[17], buf[18], buf[19]);
    Some((
        Carrier {
            ttl: buf[8],
            src: IpAddr::V4(src),
            dst: IpAddr::V4(dst),
        },
        (ihl, end),
    ))
}

/// The IPv4 raw socket (protocol 112).
#[derive(Debug)]
pub(crate) struct V4Socket {
    fd: AsyncFd<Socket>,
}

impl V4Socket {
    pub(crate) fn open() -> Result<V4Socket, Error> {
        let ctx = "IPv4 CARP socket";
        let s = Socket::new(
            Domain::IPV4,
            Type::RAW,
            Some(Protocol::from(i32::from(IPPROTO_CARP))),
        )
        .map_err(io_err(ctx))?;
        s.set_nonblocking(true).map_err(io_err(ctx))?;
        s.set_ttl_v4(u32::from(TTL)).map_err(io_err(ctx))?;
        s.set_multicast_ttl_v4(u32::from(TTL))
            .map_err(io_err(ctx))?;
        s.set_tos_v4(u32::from(TOS)).map_err(io_err(ctx))?;
        // our own advertisements must not come back to us
        s.set_multicast_loop_v4(false).map_err(io_err(ctx))?;
        // only the groups this socket joined, on the interfaces it joined them
        s.set_multicast_all_v4(false).map_err(io_err(ctx))?;
        set_pmtudisc_do(s.as_raw_fd()).map_err(io_err(ctx))?;
        set_buffers(&s).map_err(io_err(ctx))?;
        setsockopt(&s, sockopt::Ipv4PacketInfo, &true).map_err(nix_err(ctx))?;
        let fd = register(s).map_err(io_err(ctx))?;
        Ok(V4Socket { fd })
    }

    pub(crate) fn join(&self, ifindex: u32, group: Ipv4Addr) -> Result<(), Error> {
        self.fd
            .get_ref()
            .join_multicast_v4_n(&group, &InterfaceIndexOrAddress::Index(ifindex))
            .map_err(io_err(format!("join {group} on interface {ifindex}")))
    }

    pub(crate) fn leave(&self, ifindex: u32, group: Ipv4Addr) -> Result<(), Error> {
        self.fd
            .get_ref()
            .leave_multicast_v4_n(&group, &InterfaceIndexOrAddress::Index(ifindex))
            .map_err(io_err(format!("leave {group} on interface {ifindex}")))
    }

    /// Send every message with as few system calls as the kernel allows
    /// (`sendmmsg`), without waiting. `failed` hears the index of each
    /// message that was not sent and why; once the buffer is full, every
    /// message left fails with `WouldBlock`.
    pub(crate) fn try_send_batch(&self, msgs: &[V4Message], failed: impl FnMut(usize, io::Error)) {
        let names = msgs
            .iter()
            .map(|m| libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: 0,
                sin_addr: libc::in_addr {
                    s_addr: u32::from(m.dst).to_be(),
                },
                sin_zero: [0; 8],
            })
            .collect();
        let infos = msgs.iter().map(|m| pktinfo_v4(m.ifindex, m.src)).collect();
        let payloads: Vec<&[u8]> = msgs.iter().map(|m| &m.payload[..]).collect();
        let pktinfo = (libc::IPPROTO_IP, libc::IP_PKTINFO);
        send_batch(raw(&self.fd), names, infos, pktinfo, &payloads, failed);
    }

    /// Wait for packets and read as many as are queued, up to
    /// [`RECV_BATCH`], with one system call (`recvmmsg`); how many were
    /// read. `batch.got[i]` is `None` for a packet that carries no usable
    /// IPv4 header or arrival interface.
    pub(crate) async fn recv_batch(&self, batch: &mut RecvBatch) -> io::Result<usize> {
        let n = self
            .fd
            .async_io(Interest::READABLE, |s| {
                // SAFETY: iovec and mmsghdr are plain old data; all-zero is
                // a valid value.
                let mut iovs: [libc::iovec; RECV_BATCH] = unsafe { std::mem::zeroed() };
                let mut hdrs: [libc::mmsghdr; RECV_BATCH] = unsafe { std::mem::zeroed() };
                for (i, (iov, hdr)) in iovs.iter_mut().zip(hdrs.iter_mut()).enumerate() {
                    batch.point(i, iov, hdr);
                }
                let n = recv_mmsg(s.as_raw_fd(), &mut hdrs)?;
                for (i, hdr) in hdrs.iter().enumerate().take(n) {
                    let len = (hdr.msg_len as usize).min(RECV_BUF);
                    batch.got[i] = pktinfo_ifindex(&hdr.msg_hdr).and_then(|ifindex| {
                        let (carrier, payload) = parse_ipv4(&batch.bufs[i][..len])?;
                        Some(Received {
                            ifindex,
                            carrier,
                            payload,
                        })
                    });
                }
                Ok(n)
            })
            .await?;
        Ok(n)
    }
}

/// The arrival interface from the `IP_PKTINFO` control message of a
/// received message.
fn pktinfo_ifindex(msg: &libc::msghdr) -> Option<u32> {
    // SAFETY: the kernel filled the control buffer `msg` points to and set
    // its length; CMSG_FIRSTHDR / CMSG_NXTHDR stay within it.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::IPPROTO_IP && (*c).cmsg_type == libc::IP_PKTINFO {
                let info: libc::in_pktinfo =
                    std::ptr::read_unaligned(libc::CMSG_DATA(c).cast::<libc::in_pktinfo>());
                return u32::try_from(info.ipi_ifindex).ok();
            }
            c = libc::CMSG_NXTHDR(msg, c);
        }
    }
    None
}

/// `recvmmsg` into `hdrs` without waiting; how many were read. Every
/// header must point to live buffers of the sizes it gives
/// ([`RecvBatch::point`]).
fn recv_mmsg(fd: RawFd, hdrs: &mut [libc::mmsghdr]) -> io::Result<usize> {
    let len = libc::c_uint::try_from(hdrs.len()).unwrap_or(libc::c_uint::MAX);
    // SAFETY: every header points to live buffers of the sizes it gives
    // (the caller's contract); the kernel writes at most that much, into at
    // most `len` headers.
    let rc = unsafe {
        libc::recvmmsg(
            fd,
            hdrs.as_mut_ptr(),
            len,
            libc::MSG_DONTWAIT,
            std::ptr::null_mut(),
        )
    };
    usize::try_from(rc).map_err(|_| io::Error::last_os_error())
}

/// Most packets read with one system call. The peers' advertisements
/// arrive in bursts (a MASTER sends all those of a grid instant at once).
pub(crate) const RECV_BATCH: usize = 32;

/// Receive buffers for [`RECV_BATCH`] packets.
#[derive(Debug)]
pub(crate) struct RecvBatch {
    pub(crate) bufs: Vec<[u8; RECV_BUF]>,
    /// Room for the control messages of each packet: IPv4's packet info,
    /// or IPv6's packet info and hop limit (u64: aligned like `cmsghdr`).
    control: Vec<[u64; 12]>,
    pub(crate) got: [Option<Received>; RECV_BATCH],
}

impl RecvBatch {
    pub(crate) fn new() -> RecvBatch {
        RecvBatch {
            bufs: vec![[0; RECV_BUF]; RECV_BATCH],
            control: vec![[0; 12]; RECV_BATCH],
            got: [None; RECV_BATCH],
        }
    }

    /// Points `hdr` (through `iov`) at slot `i`'s packet buffer and control
    /// room, for [`recv_mmsg`].
    fn point(&mut self, i: usize, iov: &mut libc::iovec, hdr: &mut libc::mmsghdr) {
        iov.iov_base = self.bufs[i].as_mut_ptr().cast();
        iov.iov_len = RECV_BUF;
        hdr.msg_hdr.msg_iov = iov;
        hdr.msg_hdr.msg_iovlen = 1;
        hdr.msg_hdr.msg_control = self.control[i].as_mut_ptr().cast();
        hdr.msg_hdr.msg_controllen = std::mem::size_of_val(&self.control[i]) as _;
    }
}

/// The IPv6 raw socket (next header 112): the kernel strips the IPv6
/// header, so hop limit and destination come as control messages.
#[derive(Debug)]
pub(crate) struct V6Socket {
    fd: AsyncFd<Socket>,
}

impl V6Socket {
    pub(crate) fn open() -> Result<V6Socket, Error> {
        let ctx = "IPv6 CARP socket";
        let s = Socket::new(
            Domain::IPV6,
            Type::RAW,
            Some(Protocol::from(i32::from(IPPROTO_CARP))),
        )
        .map_err(io_err(ctx))?;
        s.set_nonblocking(true).map_err(io_err(ctx))?;
        s.set_multicast_hops_v6(u32::from(TTL))
            .map_err(io_err(ctx))?;
        s.set_unicast_hops_v6(u32::from(TTL)).map_err(io_err(ctx))?;
        s.set_multicast_loop_v6(false).map_err(io_err(ctx))?;
        s.set_multicast_all_v6(false).map_err(io_err(ctx))?;
        s.set_recv_hoplimit_v6(true).map_err(io_err(ctx))?;
        // A VHID with a virtual MAC sends from the parent's link-local
        // address out of its macvlan child, which does not hold that
        // address; the kernel allows that source only with freebind.
        s.set_freebind_v6(true).map_err(io_err(ctx))?;
        set_buffers(&s).map_err(io_err(ctx))?;
        setsockopt(&s, sockopt::Ipv6RecvPacketInfo, &true).map_err(nix_err(ctx))?;
        let fd = register(s).map_err(io_err(ctx))?;
        Ok(V6Socket { fd })
    }

    pub(crate) fn join(&self, ifindex: u32) -> Result<(), Error> {
        self.fd
            .get_ref()
            .join_multicast_v6(&GROUP_V6, ifindex)
            .map_err(io_err(format!("join {GROUP_V6} on interface {ifindex}")))
    }

    pub(crate) fn leave(&self, ifindex: u32) -> Result<(), Error> {
        self.fd
            .get_ref()
            .leave_multicast_v6(&GROUP_V6, ifindex)
            .map_err(io_err(format!("leave {GROUP_V6} on interface {ifindex}")))
    }

    /// Send every message with as few system calls as the kernel allows
    /// (`sendmmsg`), without waiting; as [`V4Socket::try_send_batch`].
    pub(crate) fn try_send_batch(&self, msgs: &[V6Message], failed: impl FnMut(usize, io::Error)) {
        let names = msgs
            .iter()
            .map(|m| sockaddr_in6(m.dst, m.ifindex))
            .collect();
        let infos = msgs.iter().map(|m| pktinfo_v6(m.ifindex, m.src)).collect();
        let payloads: Vec<&[u8]> = msgs.iter().map(|m| &m.payload[..]).collect();
        let pktinfo = (libc::IPPROTO_IPV6, libc::IPV6_PKTINFO);
        send_batch(raw(&self.fd), names, infos, pktinfo, &payloads, failed);
    }

    /// Wait for packets and read as many as are queued, up to
    /// [`RECV_BATCH`], with one system call (`recvmmsg`); how many were
    /// read. The kernel strips the IPv6 header, so each buffer holds the
    /// CARP payload only; `batch.got[i]` is `None` for a packet without
    /// source, destination or hop limit.
    pub(crate) async fn recv_batch(&self, batch: &mut RecvBatch) -> io::Result<usize> {
        let n = self
            .fd
            .async_io(Interest::READABLE, |s| {
                // SAFETY: iovec, mmsghdr and sockaddr_in6 are plain old
                // data; all-zero is a valid value.
                let mut iovs: [libc::iovec; RECV_BATCH] = unsafe { std::mem::zeroed() };
                let mut hdrs: [libc::mmsghdr; RECV_BATCH] = unsafe { std::mem::zeroed() };
                let mut names: [libc::sockaddr_in6; RECV_BATCH] = unsafe { std::mem::zeroed() };
                for (i, ((iov, hdr), name)) in iovs
                    .iter_mut()
                    .zip(hdrs.iter_mut())
                    .zip(names.iter_mut())
                    .enumerate()
                {
                    batch.point(i, iov, hdr);
                    hdr.msg_hdr.msg_name = (name as *mut libc::sockaddr_in6).cast();
                    hdr.msg_hdr.msg_namelen =
                        std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t;
                }
                let n = recv_mmsg(s.as_raw_fd(), &mut hdrs)?;
                for (i, (hdr, name)) in hdrs.iter().zip(&names).enumerate().take(n) {
                    let len = (hdr.msg_len as usize).min(RECV_BUF);
                    batch.got[i] = received_v6(&hdr.msg_hdr, name, len);
                }
                Ok(n)
            })
            .await?;
        Ok(n)
    }
}

/// What an IPv6 packet of `len` payload bytes from `name` carries, from its
/// control messages (`IPV6_PKTINFO`, `IPV6_HOPLIMIT`).
fn received_v6(msg: &libc::msghdr, name: &libc::sockaddr_in6, len: usize) -> Option<Received> {
    if usize::try_from(msg.msg_namelen).ok()? < std::mem::size_of::<libc::sockaddr_in6>()
        || i32::from(name.sin6_family) != libc::AF_INET6
    {
        return None;
    }
    let (mut info, mut hops) = (None, None);
    // SAFETY: the kernel filled the control buffer `msg` points to and set
    // its length; CMSG_FIRSTHDR / CMSG_NXTHDR stay within it.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::IPPROTO_IPV6 {
                let data = libc::CMSG_DATA(c);
                match (*c).cmsg_type {
                    libc::IPV6_PKTINFO => {
                        info = Some(std::ptr::read_unaligned(data.cast::<libc::in6_pktinfo>()));
                    }
                    libc::IPV6_HOPLIMIT => {
                        hops = Some(std::ptr::read_unaligned(data.cast::<libc::c_int>()));
                    }
                    _ => {}
                }
            }
            c = libc::CMSG_NXTHDR(msg, c);
        }
    }
    let (info, hops) = (info?, hops?);
    Some(Received {
        ifindex: info.ipi6_ifindex,
        carrier: Carrier {
            ttl: u8::try_from(hops).unwrap_or(0),
            src: IpAddr::V6(Ipv6Addr::from(name.sin6_addr.s6_addr)),
            dst: IpAddr::V6(Ipv6Addr::from(info.ipi6_addr.s6_addr)),
        },
        payload: (0, len),
    })
}

/// An AF_PACKET datagram socket that sends IPv4 advertisements to the
/// Ethernet broadcast address (UCARP `--nomcast`), with an IPv4 header built
/// here since the kernel's IP layer would pick the multicast MAC.
#[derive(Debug)]
pub(crate) struct BroadcastSocket {
    fd: AsyncFd<Socket>,
}

/// Length of the IPv4 header we build (no options).
const IPV4_HEADER_LEN: usize = 20;

/// The 56-byte IPv4 advertisement: TOS 0x10, DF, TTL 255, protocol 112.
pub(crate) fn build_ipv4(
    src: Ipv4Addr,
    dst: Ipv4Addr,
    payload: &[u8; HEADER_LEN],
) -> [u8; IPV4_HEADER_LEN + HEADER_LEN] {
    let mut b = [0u8; IPV4_HEADER_LEN + HEADER_LEN];
    let total = (IPV4_HEADER_LEN + HEADER_LEN) as u16;
    b[0] = 0x45;
    b[1] = TOS;
    b[2..4].copy_from_slice(&total.to_be_bytes());
    // identification 0: with DF set there is no fragment to reassemble
    b[6..8].copy_from_slice(&0x4000u16.to_be_bytes());
    b[8] = TTL;
    b[9] = IPPROTO_CARP;
    b[12..16].copy_from_slice(&src.octets());
    b[16..20].copy_from_slice(&dst.octets());
    let sum = packet::checksum(&b[..IPV4_HEADER_LEN]);
    b[10..12].copy_from_slice(&sum.to_be_bytes());
    b[IPV4_HEADER_LEN..].copy_from_slice(payload);
    b
}

impl BroadcastSocket {
    pub(crate) fn open() -> Result<BroadcastSocket, Error> {
        let ctx = "packet socket for broadcast advertisements";
        // protocol 0: this socket only sends and never queues received frames
        let s = Socket::new(Domain::PACKET, Type::DGRAM, None).map_err(io_err(ctx))?;
        s.set_nonblocking(true).map_err(io_err(ctx))?;
        let fd = register(s).map_err(io_err(ctx))?;
        Ok(BroadcastSocket { fd })
    }
}

/// Send `payloads[i]` to `names[i]` with the control message `infos[i]`
/// of the given level and type (the packet-info option of the family),
/// with as few `sendmmsg` calls as the kernel allows, without waiting.
/// `failed` hears the index of each message not sent and why; once the
/// buffer is full, every message left fails with `WouldBlock`.
fn send_batch<A, I: Copy>(
    fd: RawFd,
    mut names: Vec<A>,
    infos: Vec<I>,
    (level, kind): (libc::c_int, libc::c_int),
    payloads: &[&[u8]],
    failed: impl FnMut(usize, io::Error),
) {
    let n = payloads.len().min(names.len()).min(infos.len());
    if n == 0 {
        return;
    }
    // SAFETY: CMSG_* only compute sizes.
    let (space, len) = unsafe {
        let data = std::mem::size_of::<I>() as libc::c_uint;
        (libc::CMSG_SPACE(data) as usize, libc::CMSG_LEN(data))
    };
    let words = space.div_ceil(8);
    // u64 words: control messages must be aligned like `cmsghdr`
    let mut control = vec![0u64; words * n];
    let mut iovs: Vec<libc::iovec> = payloads
        .iter()
        .take(n)
        .map(|p| libc::iovec {
            iov_base: p.as_ptr().cast_mut().cast(),
            iov_len: p.len(),
        })
        .collect();
    let mut hdrs = Vec::with_capacity(n);
    for (i, info) in infos.iter().take(n).enumerate() {
        // SAFETY: msghdr is plain old data; all-zero is a valid value.
        let mut hdr: libc::mmsghdr = unsafe { std::mem::zeroed() };
        hdr.msg_hdr.msg_name = (&raw mut names[i]).cast();
        hdr.msg_hdr.msg_namelen = std::mem::size_of::<A>() as libc::socklen_t;
        hdr.msg_hdr.msg_iov = &raw mut iovs[i];
        hdr.msg_hdr.msg_iovlen = 1;
        hdr.msg_hdr.msg_control = control[i * words..].as_mut_ptr().cast();
        hdr.msg_hdr.msg_controllen = space as _;
        // SAFETY: the control buffer of this message is `space` bytes,
        // enough for one cmsghdr with an `I`, and aligned.
        unsafe {
            let c = libc::CMSG_FIRSTHDR(&raw const hdr.msg_hdr);
            (*c).cmsg_level = level;
            (*c).cmsg_type = kind;
            (*c).cmsg_len = len as _;
            std::ptr::write_unaligned(libc::CMSG_DATA(c).cast::<I>(), *info);
        }
        hdrs.push(hdr);
    }
    send_mmsg(fd, hdrs, failed);
}

/// `sendmmsg` until every message is sent or has failed (see
/// [`send_batch`]).
fn send_mmsg(fd: RawFd, mut hdrs: Vec<libc::mmsghdr>, mut failed: impl FnMut(usize, io::Error)) {
    let mut next = 0;
    while next < hdrs.len() {
        let left = hdrs.len() - next;
        // SAFETY: every header points to live buffers of the sizes it gives
        // (the caller's addresses, iovecs, payloads, control messages).
        let rc = unsafe {
            libc::sendmmsg(
                fd,
                hdrs[next..].as_mut_ptr(),
                libc::c_uint::try_from(left).unwrap_or(libc::c_uint::MAX),
                0,
            )
        };
        match usize::try_from(rc) {
            Ok(sent) if sent > 0 => next += sent,
            _ => {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::WouldBlock {
                    for i in next..hdrs.len() {
                        failed(i, io::Error::from(io::ErrorKind::WouldBlock));
                    }
                    return;
                }
                // this message fails; the kernel goes on with the next
                failed(next, e);
                next += 1;
            }
        }
    }
}

/// One IPv4 advertisement of a batch: out of `ifindex`, from `src` to
/// `dst`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct V4Message {
    pub(crate) ifindex: u32,
    pub(crate) src: Ipv4Addr,
    pub(crate) dst: Ipv4Addr,
    pub(crate) payload: [u8; HEADER_LEN],
}

/// One IPv6 advertisement of a batch: out of `ifindex`, from `src` (the
/// kernel's choice if unspecified) to `dst`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct V6Message {
    pub(crate) ifindex: u32,
    pub(crate) src: Ipv6Addr,
    pub(crate) dst: Ipv6Addr,
    pub(crate) payload: [u8; HEADER_LEN],
}

/// The shared sockets advertisements leave through (the IPv6 and the
/// broadcast one once some VHID needs them).
#[derive(Debug, Clone)]
pub(crate) struct Sockets {
    pub(crate) v4: Arc<V4Socket>,
    pub(crate) v6: Option<Arc<V6Socket>>,
    pub(crate) broadcast: Option<Arc<BroadcastSocket>>,
}

/// One copy of an advertisement: the socket, the interface it leaves from,
/// its source and destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dest {
    V4 {
        ifindex: u32,
        src: Ipv4Addr,
        dst: Ipv4Addr,
    },
    /// IPv4 in an Ethernet broadcast frame.
    Broadcast {
        ifindex: u32,
        src: Ipv4Addr,
        dst: Ipv4Addr,
    },
    V6 {
        ifindex: u32,
        src: Ipv6Addr,
        dst: Ipv6Addr,
    },
}

fn not_open(what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotConnected,
        format!("no {what} socket open"),
    )
}

impl Sockets {
    /// Send one copy, waiting (bounded) for buffer space.
    pub(crate) async fn send(&self, dest: Dest, payload: &[u8]) -> io::Result<()> {
        send_bounded(self.socket(dest)?, |fd| send_once(fd, dest, payload)).await
    }

    /// Send one copy now or fail (`WouldBlock` when the buffer is full).
    pub(crate) fn try_send(&self, dest: Dest, payload: &[u8]) -> io::Result<()> {
        send_once(raw(self.socket(dest)?), dest, payload).map(drop)
    }

    /// The socket `dest` leaves through.
    fn socket(&self, dest: Dest) -> io::Result<&AsyncFd<Socket>> {
        match dest {
            Dest::V4 { .. } => Ok(&self.v4.fd),
            Dest::Broadcast { .. } => self
                .broadcast
                .as_ref()
                .map(|b| &b.fd)
                .ok_or_else(|| not_open("broadcast")),
            Dest::V6 { .. } => self
                .v6
                .as_ref()
                .map(|v6| &v6.fd)
                .ok_or_else(|| not_open("IPv6")),
        }
    }
}

/// One `sendmsg`/`sendto` of `payload` to `dest` on `fd`, the socket
/// [`Sockets::socket`] gives for it. Broadcast frames carry CARP
/// advertisements only (UCARP `--nomcast`).
fn send_once(fd: RawFd, dest: Dest, payload: &[u8]) -> io::Result<usize> {
    match dest {
        Dest::V4 { ifindex, src, dst } => send_v4(fd, ifindex, src, dst, payload),
        Dest::Broadcast { ifindex, src, dst } => {
            let carp = <&[u8; HEADER_LEN]>::try_from(payload).map_err(|_| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "broadcast frames carry CARP advertisements only",
                )
            })?;
            send_frame(fd, ifindex, &build_ipv4(src, dst, carp))
        }
        Dest::V6 { ifindex, src, dst } => send_v6(fd, ifindex, src, dst, payload),
    }
}

/// `IP_PKTINFO` for a packet out of `ifindex` from `src`.
fn pktinfo_v4(ifindex: u32, src: Ipv4Addr) -> libc::in_pktinfo {
    libc::in_pktinfo {
        ipi_ifindex: ifindex as libc::c_int,
        ipi_spec_dst: libc::in_addr {
            s_addr: u32::from(src).to_be(),
        },
        ipi_addr: libc::in_addr { s_addr: 0 },
    }
}

/// One advertisement out of `ifindex` from `src` to `dst`.
fn send_v4(
    fd: RawFd,
    ifindex: u32,
    src: Ipv4Addr,
    dst: Ipv4Addr,
    payload: &[u8],
) -> io::Result<usize> {
    let info = pktinfo_v4(ifindex, src);
    let to = SockaddrIn::from(SocketAddrV4::new(dst, 0));
    let iov = [IoSlice::new(payload)];
    let cmsg = [ControlMessage::Ipv4PacketInfo(&info)];
    sendmsg(fd, &iov, &cmsg, MsgFlags::empty(), Some(&to)).map_err(io::Error::from)
}

/// One advertisement to `dst` (ff02::12 or a unicast peer) out of
/// `ifindex`, from `src` or, if unspecified, the address the kernel picks
/// for `dst`. A link-local `dst` is on `ifindex`.
fn send_v6(
    fd: RawFd,
    ifindex: u32,
    src: Ipv6Addr,
    dst: Ipv6Addr,
    payload: &[u8],
) -> io::Result<usize> {
    let info = pktinfo_v6(ifindex, src);
    let scope = scope_v6(dst, ifindex);
    let to = SockaddrIn6::from(SocketAddrV6::new(dst, 0, 0, scope));
    let iov = [IoSlice::new(payload)];
    let cmsg = [ControlMessage::Ipv6PacketInfo(&info)];
    sendmsg(fd, &iov, &cmsg, MsgFlags::empty(), Some(&to)).map_err(io::Error::from)
}

/// `IPV6_PKTINFO` for a packet out of `ifindex` from `src`.
fn pktinfo_v6(ifindex: u32, src: Ipv6Addr) -> libc::in6_pktinfo {
    libc::in6_pktinfo {
        ipi6_addr: libc::in6_addr {
            s6_addr: src.octets(),
        },
        ipi6_ifindex: ifindex,
    }
}

/// The scope of `dst` for a packet out of `ifindex`: the interface for
/// multicast and link-local destinations.
fn scope_v6(dst: Ipv6Addr, ifindex: u32) -> u32 {
    if dst.is_multicast() || dst.is_unicast_link_local() {
        ifindex
    } else {
        0
    }
}

/// The destination of a packet to `dst` out of `ifindex`.
fn sockaddr_in6(dst: Ipv6Addr, ifindex: u32) -> libc::sockaddr_in6 {
    // SAFETY: sockaddr_in6 is plain old data; all-zero is a valid value.
    let mut a: libc::sockaddr_in6 = unsafe { std::mem::zeroed() };
    a.sin6_family = libc::AF_INET6 as libc::sa_family_t;
    a.sin6_addr = libc::in6_addr {
        s6_addr: dst.octets(),
    };
    a.sin6_scope_id = scope_v6(dst, ifindex);
    a
}

/// One IPv4 packet in an Ethernet broadcast frame out of `ifindex`.
fn send_frame(fd: RawFd, ifindex: u32, frame: &[u8]) -> io::Result<usize> {
    // SAFETY: sockaddr_ll is plain old data; all-zero is a valid value.
    let mut to: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    to.sll_family = libc::AF_PACKET as libc::c_ushort;
    to.sll_protocol = (libc::ETH_P_IP as u16).to_be();
    to.sll_ifindex = ifindex as libc::c_int;
    to.sll_halen = 6;
    to.sll_addr[..6].copy_from_slice(&[0xff; 6]);
    // SAFETY: `frame` and `to` are live for the call and their sizes are
    // passed along.
    let rc = unsafe {
        libc::sendto(
            fd,
            frame.as_ptr().cast(),
            frame.len(),
            0,
            (&raw const to).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    };
    usize::try_from(rc).map_err(|_| io::Error::last_os_error())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(ttl: u8, proto: u8, total: u16) -> Vec<u8> {
        let mut b = vec![
            0x45, 0x10, 0, 0, 0, 0, 0x40, 0, ttl, proto, 0, 0, 10, 0, 0, 1, 224, 0, 0, 18,
        ];
        b[2..4].copy_from_slice(&total.to_be_bytes());
        b
    }

    #[test]
    fn ipv4_header_fields() {
        let mut b = header(255, 112, 56);
        b.extend_from_slice(&[0xa5; 36]);
        let (c, range) = parse_ipv4(&b).unwrap();
        assert_eq!(c.ttl, 255);
        assert_eq!(c.src, IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)));
        assert_eq!(c.dst, IpAddr::V4(Ipv4Addr::new(224, 0, 0, 18)));
        assert_eq!(range, (20, 56));
    }

    #[test]
    fn ipv4_header_odd_inputs() {
        assert!(parse_ipv4(&[]).is_none());
        assert!(parse_ipv4(&[0x45; 10]).is_none());
        // IPv6 version nibble
        let mut b = header(255, 112, 56);
        b[0] = 0x65;
        assert!(parse_ipv4(&b).is_none());
        // header length past the buffer
        let mut b = header(255, 112, 56);
        b[0] = 0x4f;
        assert!(parse_ipv4(&b).is_none());
        // header length below 20
        let mut b = header(255, 112, 56);
        b[0] = 0x44;
        assert!(parse_ipv4(&b).is_none());
        // other protocol
        assert!(parse_ipv4(&header(255, 17, 56)).is_none());
        // total length shorter than the header
        assert!(parse_ipv4(&header(255, 112, 10)).is_none());
        // total length longer than what arrived: payload ends at the buffer
        let (_, range) = parse_ipv4(&header(255, 112, 1000)).unwrap();
        assert_eq!(range, (20, 20));
        // options: payload starts after them
        let mut b = header(255, 112, 60);
        b[0] = 0x46;
        b.extend_from_slice(&[0; 40]);
        assert_eq!(parse_ipv4(&b).unwrap().1, (24, 60));
    }

    #[test]
    fn built_header_round_trips() {
        let payload = [0x5a; HEADER_LEN];
        let b = build_ipv4(
            Ipv4Addr::new(10, 0, 0, 2),
            Ipv4Addr::new(224, 0, 0, 18),
            &payload,
        );
        assert_eq!(b.len(), 56);
        assert_eq!(b[1], 0x10);
        assert_eq!(b[6] & 0x40, 0x40);
        assert_eq!(packet::checksum(&b[..20]), 0);
        let (c, range) = parse_ipv4(&b).unwrap();
        assert_eq!(c.ttl, 255);
        assert_eq!(&b[range.0..range.1], &payload);
    }
}
