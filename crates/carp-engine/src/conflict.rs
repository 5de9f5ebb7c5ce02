//! Address-conflict watch: while a VHID is MASTER, an ARP packet or a
//! neighbour advertisement that claims one of its addresses for a MAC that
//! is not ours makes it announce again, so neighbours come back to it.
//!
//! One packet socket (ARP) and one ICMPv6 raw socket (neighbour
//! advertisements only) for the whole process, read by one task
//! ([`run`]). It looks the claimed address up in the [`Claims`] the
//! MASTERs keep up to date on their transitions and tells the owning VHID
//! task without waiting ([`mpsc::Sender::try_send`]); the task answers,
//! rate limited ([`ConflictAnswers`]).

use std::collections::HashMap;
use std::io::{self, Read};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::AsRawFd;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::error::Error;
use crate::log_limit::LogLimiter;
use crate::socket::register;
use crate::vhid::Command;

const ETH_P_ARP: u16 = 0x0806;
const ETH_P_IP: u16 = 0x0800;
const ARPHRD_ETHER: u16 = 1;
const ND_NEIGHBOR_ADVERT: u8 = 136;
const ND_OPT_TARGET_LINKADDR: u8 = 2;
/// `ICMP6_FILTER` from `<netinet/icmp6.h>` (level `IPPROTO_ICMPV6`).
const ICMP6_FILTER: libc::c_int = 1;

/// How often one address is announced again in answer to conflicts.
const ANSWER_EVERY: Duration = Duration::from_secs(1);
/// How often a conflict over one address is logged.
const LOG_EVERY: Duration = Duration::from_secs(10);
/// A conflict is answered this much later, if still MASTER: a peer that
/// takes over sends its advertisement before its announcement, and the
/// advertisement (which makes us BACKUP) may reach this task after the
/// announcement's conflict did.
pub(crate) const ANSWER_DELAY: Duration = Duration::from_millis(20);

/// One address claimed on the wire for a MAC that is not ours.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Conflict {
    pub(crate) addr: IpAddr,
    pub(crate) mac: [u8; 6],
}

/// The addresses of the VHIDs that are MASTER now, each with the owner's
/// command queue and the MACs that are its own (parent and virtual MAC).
#[derive(Debug, Default)]
pub(crate) struct Claims {
    by_addr: RwLock<HashMap<IpAddr, Owner>>,
}

#[derive(Debug, Clone)]
struct Owner {
    commands: mpsc::Sender<Command>,
    macs: Vec<[u8; 6]>,
}

impl Claims {
    /// A VHID became MASTER for `addrs`.
    pub(crate) fn claim(
        &self,
        addrs: &[IpAddr],
        macs: Vec<[u8; 6]>,
        commands: &mpsc::Sender<Command>,
    ) {
        let owner = Owner {
            commands: commands.clone(),
            macs,
        };
        if let Ok(mut map) = self.by_addr.write() {
            for a in addrs {
                map.insert(*a, owner.clone());
            }
        }
    }

    /// A VHID left MASTER: its entries go (only its own, should another
    /// VHID claim one of the addresses by mistake).
    pub(crate) fn release(&self, addrs: &[IpAddr], commands: &mpsc::Sender<Command>) {
        if let Ok(mut map) = self.by_addr.write() {
            for a in addrs {
                if map
                    .get(a)
                    .is_some_and(|o| o.commands.same_channel(commands))
                {
                    map.remove(a);
                }
            }
        }
    }

    /// Tell the owner of `addr`, if it is claimed and `mac` is not one of
    /// its own. Never waits: with the owner's queue full, the packet is
    /// dropped (the next one will do).
    fn report(&self, addr: IpAddr, mac: [u8; 6]) {
        let Ok(map) = self.by_addr.read() else {
            return;
        };
        let Some(owner) = map.get(&addr) else {
            return;
        };
        if owner.macs.contains(&mac) {
            return;
        }
        let _ = owner
            .commands
            .try_send(Command::Conflict(Box::new(Conflict { addr, mac })));
    }
}

/// What a VHID task does about conflicts: when to answer, what to log.
#[derive(Debug)]
pub(crate) struct ConflictAnswers {
    /// When each address was last announced in answer.
    answered: HashMap<IpAddr, Instant>,
    /// When the scheduled answer is due.
    pending: Option<Instant>,
    /// The addresses it will announce.
    waiting: Vec<IpAddr>,
    log: LogLimiter<IpAddr>,
}

impl Default for ConflictAnswers {
    fn default() -> Self {
        ConflictAnswers {
            answered: HashMap::new(),
            pending: None,
            waiting: Vec::new(),
            log: LogLimiter::new(LOG_EVERY),
        }
    }
}

impl ConflictAnswers {
    /// Note a conflict seen at `now`: whether to log it (at most once per
    /// [`LOG_EVERY`] per address). The answer is scheduled unless the
    /// address was answered within [`ANSWER_EVERY`].
    pub(crate) fn seen(&mut self, c: Conflict, now: Instant) -> bool {
        let recent = self
            .answered
            .get(&c.addr)
            .is_some_and(|t| now.duration_since(*t) < ANSWER_EVERY);
        if !recent && !self.waiting.contains(&c.addr) {
            self.waiting.push(c.addr);
            self.pending.get_or_insert(now + ANSWER_DELAY);
        }
        self.log.allow(&c.addr)
    }

    /// When the scheduled answer is due.
    pub(crate) fn due(&self) -> Option<Instant> {
        self.pending
    }

    /// The answer is going out at `now`: the addresses it covers.
    pub(crate) fn take(&mut self, now: Instant) -> Vec<IpAddr> {
        self.pending = None;
        // keyed by this VHID's own addresses only: bounded
        let addrs = std::mem::take(&mut self.waiting);
        for a in &addrs {
            self.answered.insert(*a, now);
        }
        addrs
    }

    /// Not MASTER any more: nothing to answer.
    pub(crate) fn clear(&mut self) {
        self.pending = None;
        self.waiting.clear();
    }
}

/// Format a MAC as `aa:bb:cc:dd:ee:ff`.
pub(crate) fn mac_text(mac: [u8; 6]) -> String {
    let [a, b, c, d, e, f] = mac;
    format!("{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{f:02x}")
}

/// The two listening sockets.
#[derive(Debug)]
pub(crate) struct Watch {
    arp: AsyncFd<Socket>,
    na: AsyncFd<Socket>,
}

impl Watch {
    /// Open both in the calling thread's namespace (needs CAP_NET_RAW).
    pub(crate) fn open() -> Result<Watch, Error> {
        let arp = Socket::new(
            Domain::PACKET,
            Type::DGRAM,
            Some(Protocol::from(i32::from(ETH_P_ARP.to_be()))),
        )
        .map_err(|e| io_error("opening the ARP watch socket", e))?;
        arp.set_nonblocking(true)
            .map_err(|e| io_error("setting the ARP watch socket non-blocking", e))?;
        let na = Socket::new(Domain::IPV6, Type::RAW, Some(Protocol::ICMPV6))
            .map_err(|e| io_error("opening the neighbour advertisement watch socket", e))?;
        only_neighbour_adverts(&na)
            .map_err(|e| io_error("filtering the neighbour advertisement watch socket", e))?;
        na.set_nonblocking(true)
            .map_err(|e| io_error("setting the NA watch socket non-blocking", e))?;
        Ok(Watch {
            arp: register(arp).map_err(|e| io_error("registering the ARP watch socket", e))?,
            na: register(na).map_err(|e| io_error("registering the NA watch socket", e))?,
        })
    }
}

/// Read both sockets until cancelled, reporting claims of MASTER addresses.
pub(crate) async fn run(watch: Watch, claims: Arc<Claims>, cancel: CancellationToken) {
    let mut arp_buf = [0u8; 64];
    let mut na_buf = [0u8; 1500];
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            r = read(&watch.arp, &mut arp_buf) => {
                if let Some((addr, mac)) = r.and_then(|n| arp_claim(&arp_buf[..n])) {
                    claims.report(IpAddr::V4(addr), mac);
                }
            }
            r = read(&watch.na, &mut na_buf) => {
                if let Some((addr, mac)) = r.and_then(|n| na_claim(&na_buf[..n])) {
                    claims.report(IpAddr::V6(addr), mac);
                }
            }
        }
    }
}

/// One datagram (truncated to `buf`); `None` on an error, after a pause
/// so that a broken socket cannot spin.
async fn read(fd: &AsyncFd<Socket>, buf: &mut [u8]) -> Option<usize> {
    match fd
        .async_io(Interest::READABLE, |s| {
            let mut s: &Socket = s;
            s.read(buf)
        })
        .await
    {
        Ok(n) => Some(n),
        Err(e) => {
            tracing::debug!(error = %e, "conflict watch: read failed");
            tokio::time::sleep(Duration::from_millis(100)).await;
            None
        }
    }
}

/// An Ethernet/IPv4 ARP packet (request or reply) whose sender claims an
/// address: (sender address, sender MAC). Probes (sender 0.0.0.0) claim
/// nothing.
fn arp_claim(p: &[u8]) -> Option<(Ipv4Addr, [u8; 6])> {
    if p.len() < 28
        || p[0..2] != ARPHRD_ETHER.to_be_bytes()
        || p[2..4] != ETH_P_IP.to_be_bytes()
        || p[4] != 6
        || p[5] != 4
    {
        return None;
    }
    let mac: [u8; 6] = p[8..14].try_into().ok()?;
    let octets: [u8; 4] = p[14..18].try_into().ok()?;
    let addr = Ipv4Addr::from(octets);
    (!addr.is_unspecified()).then_some((addr, mac))
}

/// An ICMPv6 neighbour advertisement with a target link-layer address
/// option: (target, that MAC).
fn na_claim(p: &[u8]) -> Option<(Ipv6Addr, [u8; 6])> {
    if p.len() < 24 || p[0] != ND_NEIGHBOR_ADVERT || p[1] != 0 {
        return None;
    }
    let target: [u8; 16] = p[8..24].try_into().ok()?;
    let mut opts = &p[24..];
    while opts.len() >= 8 {
        let len = usize::from(opts[1]) * 8;
        if len == 0 || len > opts.len() {
            return None;
        }
        if opts[0] == ND_OPT_TARGET_LINKADDR {
            let mac: [u8; 6] = opts[2..8].try_into().ok()?;
            return Some((Ipv6Addr::from(target), mac));
        }
        opts = &opts[len..];
    }
    None
}

/// Let only neighbour advertisements into a raw ICMPv6 socket.
fn only_neighbour_adverts(s: &Socket) -> io::Result<()> {
    // struct icmp6_filter: one bit per type, set = blocked (Linux).
    let mut filter = [u32::MAX; 8];
    let t = usize::from(ND_NEIGHBOR_ADVERT);
    filter[t >> 5] &= !(1u32 << (t & 31));
    // SAFETY: the option value is a valid, initialised icmp6_filter (eight
    // u32) whose size is passed along; the descriptor is owned by `s`.
    let rc = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::IPPROTO_ICMPV6,
            ICMP6_FILTER,
            filter.as_ptr().cast(),
            std::mem::size_of_val(&filter) as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn io_error(context: &str, source: io::Error) -> Error {
    Error::Io {
        context: context.to_owned(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x09];

    #[test]
    fn arp_claims_the_sender_address_and_probes_claim_nothing() {
        let mut p = [0u8; 28];
        p[0..8].copy_from_slice(&[0, 1, 8, 0, 6, 4, 0, 2]);
        p[8..14].copy_from_slice(&MAC);
        p[14..18].copy_from_slice(&[192, 0, 2, 10]);
        assert_eq!(arp_claim(&p), Some((Ipv4Addr::new(192, 0, 2, 10), MAC)));
        p[14..18].copy_from_slice(&[0, 0, 0, 0]);
        assert_eq!(arp_claim(&p), None);
        assert_eq!(arp_claim(&p[..20]), None);
    }

    #[test]
    fn na_claims_its_target_with_the_link_layer_option() {
        let target: Ipv6Addr = "2001:db8::10".parse().unwrap_or(Ipv6Addr::UNSPECIFIED);
        let mut p = vec![136, 0, 0, 0, 0x20, 0, 0, 0];
        p.extend_from_slice(&target.octets());
        assert_eq!(na_claim(&p), None);
        // a nonce option first, then the target link-layer address
        p.extend_from_slice(&[14, 1, 0, 0, 0, 0, 0, 0]);
        p.extend_from_slice(&[2, 1]);
        p.extend_from_slice(&MAC);
        assert_eq!(na_claim(&p), Some((target, MAC)));
        p[25] = 0;
        assert_eq!(na_claim(&p), None);
    }

    #[tokio::test]
    async fn answers_are_delayed_and_limited_per_address() {
        let a: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 10));
        let c = Conflict { addr: a, mac: MAC };
        let mut ans = ConflictAnswers::default();
        let t = Instant::now();
        assert!(ans.seen(c, t));
        assert!(!ans.seen(c, t));
        assert_eq!(ans.due(), Some(t + ANSWER_DELAY));
        assert_eq!(ans.take(t + ANSWER_DELAY), vec![a]);
        assert_eq!(ans.due(), None);
        // within a second of the answer: none scheduled
        ans.seen(c, t + Duration::from_millis(500));
        assert_eq!(ans.due(), None);
        ans.seen(c, t + Duration::from_millis(1100));
        assert!(ans.due().is_some());
    }

    #[test]
    fn claims_report_foreign_macs_to_the_owner_only() {
        let (tx, mut rx) = mpsc::channel(4);
        let claims = Claims::default();
        let a: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 10));
        claims.claim(&[a], vec![MAC], &tx);
        claims.report(a, MAC);
        assert!(rx.try_recv().is_err());
        let other = [2, 0, 0, 0, 0, 0x42];
        claims.report(a, other);
        assert!(matches!(
            rx.try_recv(),
            Ok(Command::Conflict(c)) if c.mac == other
        ));
        claims.release(&[a], &tx);
        claims.report(a, other);
        assert!(rx.try_recv().is_err());
    }
}
