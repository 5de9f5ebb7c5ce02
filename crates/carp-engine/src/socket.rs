//! The raw sockets shared by every VHID and interface: one IPv4 socket for
//! protocol 112, one IPv6 socket when some VHID has IPv6 addresses, and a
//! packet socket for VHIDs that advertise to the Ethernet broadcast address.

use std::io::{self, IoSlice, IoSliceMut};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;
use std::time::Duration;

use carp_proto::packet::{self, Carrier, GROUP_V6, HEADER_LEN, IPPROTO_CARP, TTL};
use nix::sys::socket::{
    ControlMessage, ControlMessageOwned, MsgFlags, SockaddrIn, SockaddrIn6, recvmsg, sendmsg,
    setsockopt, sockopt,
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
        if msgs.is_empty() {
            return;
        }
        let fd = raw(&self.fd);
        // SAFETY: CMSG_* only compute sizes.
        let (space, len) = unsafe {
            let data = std::mem::size_of::<libc::in_pktinfo>() as libc::c_uint;
            (libc::CMSG_SPACE(data) as usize, libc::CMSG_LEN(data))
        };
        let words = space.div_ceil(8);
        // u64 words: control messages must be aligned like `cmsghdr`
        let mut control = vec![0u64; words * msgs.len()];
        let mut addrs: Vec<libc::sockaddr_in> = msgs
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
        let mut iovs: Vec<libc::iovec> = msgs
            .iter()
            .map(|m| libc::iovec {
                iov_base: m.payload.as_ptr().cast_mut().cast(),
                iov_len: m.payload.len(),
            })
            .collect();
        let mut hdrs = Vec::with_capacity(msgs.len());
        for (i, m) in msgs.iter().enumerate() {
            // SAFETY: msghdr is plain old data; all-zero is a valid value.
            let mut hdr: libc::mmsghdr = unsafe { std::mem::zeroed() };
            hdr.msg_hdr.msg_name = (&raw mut addrs[i]).cast();
            hdr.msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
            hdr.msg_hdr.msg_iov = &raw mut iovs[i];
            hdr.msg_hdr.msg_iovlen = 1;
            hdr.msg_hdr.msg_control = control[i * words..].as_mut_ptr().cast();
            hdr.msg_hdr.msg_controllen = space as _;
            let info = pktinfo_v4(m.ifindex, m.src);
            // SAFETY: the control buffer of this message is `space` bytes,
            // enough for one cmsghdr with an in_pktinfo, and aligned.
            unsafe {
                let c = libc::CMSG_FIRSTHDR(&raw const hdr.msg_hdr);
                (*c).cmsg_level = libc::IPPROTO_IP;
                (*c).cmsg_type = libc::IP_PKTINFO;
                (*c).cmsg_len = len as _;
                std::ptr::write_unaligned(libc::CMSG_DATA(c).cast::<libc::in_pktinfo>(), info);
            }
            hdrs.push(hdr);
        }
        send_mmsg(fd, hdrs, failed);
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
                    iov.iov_base = batch.bufs[i].as_mut_ptr().cast();
                    iov.iov_len = RECV_BUF;
                    hdr.msg_hdr.msg_iov = iov;
                    hdr.msg_hdr.msg_iovlen = 1;
                    hdr.msg_hdr.msg_control = batch.control[i].as_mut_ptr().cast();
                    hdr.msg_hdr.msg_controllen = std::mem::size_of_val(&batch.control[i]) as _;
                }
                // SAFETY: every header points to live buffers of the sizes
                // it gives; the kernel writes at most that much.
                let rc = unsafe {
                    libc::recvmmsg(
                        s.as_raw_fd(),
                        hdrs.as_mut_ptr(),
                        RECV_BATCH as libc::c_uint,
                        libc::MSG_DONTWAIT,
                        std::ptr::null_mut(),
                    )
                };
                let n = usize::try_from(rc).map_err(|_| io::Error::last_os_error())?;
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

/// Most packets read with one system call. The peers' advertisements
/// arrive in bursts (a MASTER sends all those of a grid instant at once).
pub(crate) const RECV_BATCH: usize = 32;

/// Receive buffers for [`RECV_BATCH`] packets.
#[derive(Debug)]
pub(crate) struct RecvBatch {
    pub(crate) bufs: Vec<[u8; RECV_BUF]>,
    /// Room for the control messages of each packet (u64: aligned like
    /// `cmsghdr`).
    control: Vec<[u64; 8]>,
    pub(crate) got: [Option<Received>; RECV_BATCH],
}

impl RecvBatch {
    pub(crate) fn new() -> RecvBatch {
        RecvBatch {
            bufs: vec![[0; RECV_BUF]; RECV_BATCH],
            control: vec![[0; 8]; RECV_BATCH],
            got: [None; RECV_BATCH],
        }
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

    /// Wait for and read one packet into `buf` (the CARP payload only).
    /// `Ok(None)` when the kernel left out the arrival information.
    pub(crate) async fn recv(&self, buf: &mut [u8]) -> io::Result<Option<Received>> {
        let (n, src, info, hops) = self
            .fd
            .async_io(Interest::READABLE, |s| {
                let mut iov = [IoSliceMut::new(buf)];
                let mut cmsg = nix::cmsg_space!(libc::in6_pktinfo, libc::c_int);
                let msg = recvmsg::<SockaddrIn6>(
                    s.as_raw_fd(),
                    &mut iov,
                    Some(&mut cmsg),
                    MsgFlags::empty(),
                )
                .map_err(io::Error::from)?;
                let (mut info, mut hops) = (None, None);
                if let Ok(cmsgs) = msg.cmsgs() {
                    for c in cmsgs {
                        match c {
                            ControlMessageOwned::Ipv6PacketInfo(i) => info = Some(i),
                            ControlMessageOwned::Ipv6HopLimit(h) => hops = Some(h),
                            _ => {}
                        }
                    }
                }
                Ok((msg.bytes, msg.address.map(|a| a.ip()), info, hops))
            })
            .await?;
        let (Some(src), Some(info), Some(hops)) = (src, info, hops) else {
            return Ok(None);
        };
        let carrier = Carrier {
            ttl: u8::try_from(hops).unwrap_or(0),
            src: IpAddr::V6(src),
            dst: IpAddr::V6(Ipv6Addr::from(info.ipi6_addr.s6_addr)),
        };
        Ok(Some(Received {
            ifindex: info.ipi6_ifindex,
            carrier,
            payload: (0, n.min(buf.len())),
        }))
    }
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

/// `sendmmsg` until every message is sent or has failed (see
/// [`V4Socket::try_send_batch`]).
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
    let info = libc::in6_pktinfo {
        ipi6_addr: libc::in6_addr {
            s6_addr: src.octets(),
        },
        ipi6_ifindex: ifindex,
    };
    let scope = if dst.is_multicast() || dst.is_unicast_link_local() {
        ifindex
    } else {
        0
    };
    let to = SockaddrIn6::from(SocketAddrV6::new(dst, 0, 0, scope));
    let iov = [IoSlice::new(payload)];
    let cmsg = [ControlMessage::Ipv6PacketInfo(&info)];
    sendmsg(fd, &iov, &cmsg, MsgFlags::empty(), Some(&to)).map_err(io::Error::from)
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
