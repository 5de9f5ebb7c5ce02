//! The engine against real kernels: two engines in two network namespaces
//! joined by a veth pair elect a master, move the address on shutdown, put
//! correct advertisements on the wire, reload without disturbing unchanged
//! VHIDs and refuse impossible specs before touching anything.
//!
//! Needs root: every test creates its own namespaces (removed on drop, also
//! when the test fails) and runs each engine on a thread that entered one.

// Setup helpers outside #[test] functions fail the test by panicking too.
#![allow(clippy::unwrap_used)]

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use carp_engine::{EngineSpec, Error, InterfaceSpec, VhidKey, VhidSpec, VhidStatus, VirtualAddr};
use carp_proto::{Advert, Authenticator, HmacMode, State};

mod common;
use common::{Netns, Pair};

/// Generous bound for elections and kernel work on a loaded 2-core machine.
const PATIENCE: Duration = Duration::from_secs(20);
const KEY: &[u8] = b"secret";

/// A [`Pair`] with `va` 10.77.0.1/24 in `a` and `vb` 10.77.0.2/24 in `b`
/// (the test fails without root).
fn addressed_pair() -> Pair {
    let pair = Pair::new();
    pair.a.ip(&["addr", "add", "10.77.0.1/24", "dev", "va"]);
    pair.b.ip(&["addr", "add", "10.77.0.2/24", "dev", "vb"]);
    pair
}

enum Request {
    Status(std::sync::mpsc::Sender<Vec<VhidStatus>>),
    Reload(
        EngineSpec,
        std::sync::mpsc::Sender<Result<carp_engine::ReloadReport, String>>,
    ),
    Lateness(std::sync::mpsc::Sender<carp_engine::LatenessSummary>),
    Shutdown,
}

/// An engine running on its own thread inside a namespace.
struct Node {
    tx: Option<tokio::sync::mpsc::UnboundedSender<Request>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Node {
    fn start(ns: &Netns, spec: EngineSpec) -> Result<Node, String> {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let (started_tx, started_rx) = std::sync::mpsc::channel();
        let thread = ns.spawn(move || async move {
            let engine = match carp_engine::Engine::start(spec).await {
                Ok(e) => e,
                Err(e) => {
                    let _ = started_tx.send(Err(e));
                    return;
                }
            };
            let _ = started_tx.send(Ok(()));
            while let Some(req) = rx.recv().await {
                match req {
                    Request::Status(reply) => {
                        let _ = reply.send(engine.status().await);
                    }
                    Request::Reload(spec, reply) => {
                        let _ = reply.send(engine.reload(spec).await.map_err(|e| e.to_string()));
                    }
                    Request::Lateness(reply) => {
                        let _ = reply.send(engine.timer_lateness());
                    }
                    Request::Shutdown => break,
                }
            }
            engine.shutdown().await;
        });
        match started_rx.recv().unwrap() {
            Ok(()) => Ok(Node {
                tx: Some(tx),
                thread: Some(thread),
            }),
            Err(e) => {
                thread.join().unwrap();
                Err(match e {
                    Error::NoSuchInterface(_) => format!("NoSuchInterface: {e}"),
                    Error::NoSourceAddress(_) => format!("NoSourceAddress: {e}"),
                    other => format!("other: {other}"),
                })
            }
        }
    }

    fn status(&self) -> Vec<VhidStatus> {
        let (tx, rx) = std::sync::mpsc::channel();
        self.tx.as_ref().unwrap().send(Request::Status(tx)).unwrap();
        rx.recv().unwrap()
    }

    fn state(&self, vhid: u8) -> Option<State> {
        self.status()
            .into_iter()
            .find(|s| s.key.vhid == vhid)
            .map(|s| s.state)
    }

    fn reload(&self, spec: EngineSpec) -> carp_engine::ReloadReport {
        let (tx, rx) = std::sync::mpsc::channel();
        self.tx
            .as_ref()
            .unwrap()
            .send(Request::Reload(spec, tx))
            .unwrap();
        rx.recv().unwrap().unwrap()
    }

    fn lateness(&self) -> carp_engine::LatenessSummary {
        let (tx, rx) = std::sync::mpsc::channel();
        self.tx
            .as_ref()
            .unwrap()
            .send(Request::Lateness(tx))
            .unwrap();
        rx.recv().unwrap()
    }

    /// Graceful shutdown; returns when the engine has stopped.
    fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        if let Some(tx) = self.tx.take() {
            let _ = tx.send(Request::Shutdown);
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.stop();
    }
}

fn v4(s: &str) -> VirtualAddr {
    VirtualAddr {
        addr: s.parse().unwrap(),
        prefix_len: 24,
    }
}

fn vhid_spec(vhid: u8, advskew: u8, addresses: Vec<VirtualAddr>) -> VhidSpec {
    VhidSpec {
        advskew,
        ..VhidSpec::new(vhid, addresses, KEY.to_vec(), HmacMode::Bsd)
    }
}

fn spec(interface: &str, vhids: Vec<VhidSpec>) -> EngineSpec {
    EngineSpec {
        interfaces: vec![InterfaceSpec {
            name: interface.into(),
            ignore_link_state: false,
            vhids,
        }],
        trackers: Vec::new(),
    }
}

fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < PATIENCE, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn one_master_and_bow_out_hands_over() {
    let pair = addressed_pair();
    let vip = "10.77.0.100";
    let a = Node::start(&pair.a, spec("va", vec![vhid_spec(1, 0, vec![v4(vip)])])).unwrap();
    // B's master-down time (10 s) is far longer than the hand-over we accept,
    // so only the bow-out can explain a quick takeover.
    let mut slow = vhid_spec(1, 100, vec![v4(vip)]);
    slow.dead_ratio = 10;
    let b = Node::start(&pair.b, spec("vb", vec![slow])).unwrap();

    wait_for("A to become MASTER", || a.state(1) == Some(State::Master));
    wait_for("B to hear A", || b.status()[0].adverts_received >= 2);
    assert_eq!(b.state(1), Some(State::Backup));
    assert!(pair.a.has_addr("va", vip));
    assert!(!pair.b.has_addr("vb", vip));
    let sa = &a.status()[0];
    assert!(sa.adverts_sent >= 2);
    assert_eq!(
        sa.last_transition.as_deref(),
        Some("BACKUP -> MASTER (master_down)")
    );
    let sb = &b.status()[0];
    assert!(sb.drops.is_empty(), "unexpected drops: {:?}", sb.drops);
    assert_eq!(sb.master, Some(IpAddr::V4(Ipv4Addr::new(10, 77, 0, 1))));

    let t0 = Instant::now();
    a.shutdown();
    assert!(
        !pair.a.has_addr("va", vip),
        "shutdown left the address behind"
    );
    wait_for("B to take over", || b.state(1) == Some(State::Master));
    let took = t0.elapsed();
    assert!(took < Duration::from_secs(6), "hand-over took {took:?}");
    wait_for("B to hold the address", || pair.b.has_addr("vb", vip));
    assert_eq!(
        b.status()[0].last_transition.as_deref(),
        Some("BACKUP -> MASTER (peer_bowed_out)")
    );
    b.shutdown();
    assert!(!pair.b.has_addr("vb", vip));
}

/// A frame captured on `vb`, from the Ethernet header on.
fn capture_carp(ns: &Netns, timeout: Duration) -> Vec<u8> {
    let frames = capture_carp_frames(ns, timeout, |_| true).join().unwrap();
    let (_, frame) = frames
        .into_iter()
        .next()
        .expect("no CARP advertisement captured");
    frame
}

/// Capture CARP frames on `ns` (from the Ethernet header on, with when they
/// arrived) until `last` says a frame was the last one, or `timeout`.
fn capture_carp_frames(
    ns: &Netns,
    timeout: Duration,
    last: impl Fn(&[u8]) -> bool + Send + 'static,
) -> std::thread::JoinHandle<Vec<(Instant, Vec<u8>)>> {
    ns.spawn(move || async move {
        use socket2::{Domain, Protocol, Socket, Type};
        let proto = i32::from((libc::ETH_P_ALL as u16).to_be());
        let s = Socket::new(Domain::PACKET, Type::RAW, Some(Protocol::from(proto))).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let start = Instant::now();
        let mut frames = Vec::new();
        let mut buf = [std::mem::MaybeUninit::<u8>::uninit(); 2048];
        while start.elapsed() < timeout {
            let Ok(n) = s.recv(&mut buf) else { continue };
            // SAFETY: recv initialised the first n bytes.
            let frame: Vec<u8> = buf[..n]
                .iter()
                .map(|b| unsafe { b.assume_init() })
                .collect();
            let is_carp_v4 = n >= 34 && frame[12..14] == [0x08, 0x00] && frame[23] == 112;
            let is_carp_v6 = n >= 54 && frame[12..14] == [0x86, 0xdd] && frame[20] == 112;
            if is_carp_v4 || is_carp_v6 {
                let done = last(&frame);
                frames.push((Instant::now(), frame));
                if done {
                    break;
                }
            }
        }
        frames
    })
}

fn check_v4_frame(frame: &[u8], dst_mac: [u8; 6], vhid: u8, addrs: &[IpAddr]) {
    assert_eq!(frame[..6], dst_mac, "Ethernet destination");
    let ip = &frame[14..];
    assert_eq!(ip[0], 0x45);
    assert_eq!(ip[1], 0x10, "TOS");
    assert_eq!(u16::from_be_bytes([ip[2], ip[3]]), 56, "total length");
    assert_eq!(ip[6] & 0x40, 0x40, "DF");
    assert_eq!(ip[8], 255, "TTL");
    assert_eq!(ip[9], 112);
    assert_eq!(
        carp_proto::packet::checksum(&ip[..20]),
        0,
        "IP header checksum"
    );
    assert_eq!(ip[12..16], [10, 77, 0, 1], "source");
    assert_eq!(ip[16..20], [224, 0, 0, 18], "destination");
    let advert = Advert::parse(&ip[20..56]).unwrap();
    assert_eq!(advert.vhid, vhid);
    assert_eq!((advert.advbase, advert.advskew), (1, 0));
    let auth = Authenticator::new(HmacMode::Bsd, KEY, vhid, addrs).unwrap();
    assert!(auth.verify(advert.counter, &advert.hmac), "HMAC");
}

/// Start `vhid` on `pair.a` and check the first advertisement `vb` sees:
/// sent to `dst_mac`, signed over the VHID's addresses.
fn start_and_check_advert(pair: &Pair, vhid: VhidSpec, dst_mac: [u8; 6]) -> Node {
    let ips: Vec<IpAddr> = vhid.addresses.iter().map(|a| a.addr).collect();
    let number = vhid.vhid;
    let a = Node::start(&pair.a, spec("va", vec![vhid])).unwrap();
    let frame = capture_carp(&pair.b, PATIENCE);
    check_v4_frame(&frame, dst_mac, number, &ips);
    a
}

#[test]
fn advertisement_on_the_wire() {
    let pair = addressed_pair();
    let addrs = vec![v4("10.77.0.101"), v4("10.77.0.100")];
    let a = start_and_check_advert(
        &pair,
        vhid_spec(9, 0, addrs),
        [0x01, 0x00, 0x5e, 0x00, 0x00, 0x12],
    );
    a.shutdown();
}

#[test]
fn broadcast_advertisement_on_the_wire() {
    let pair = addressed_pair();
    let mut v = vhid_spec(4, 0, vec![v4("10.77.0.100")]);
    v.broadcast = true;
    let a = start_and_check_advert(&pair, v, [0xff; 6]);
    // a receiver that joined the group accepts it
    let mut v = vhid_spec(4, 50, vec![v4("10.77.0.100")]);
    v.broadcast = true;
    let b = Node::start(&pair.b, spec("vb", vec![v])).unwrap();
    wait_for("B to hear A", || b.status()[0].adverts_received >= 1);
    assert_eq!(b.state(4), Some(State::Backup));
    b.shutdown();
    a.shutdown();
}

/// 10.77.0.100 and fd00:77::100.
fn dual_stack_addrs() -> Vec<VirtualAddr> {
    vec![
        v4("10.77.0.100"),
        VirtualAddr {
            addr: "fd00:77::100".parse().unwrap(),
            prefix_len: 64,
        },
    ]
}

/// `vhid` with [`dual_stack_addrs`]: A (advskew 0) MASTER, B (advskew
/// 100) started as its backup. IPv6 advertisements leave from the
/// link-local address, so both wait for it first.
fn dual_stack_master_and_backup(pair: &Pair, vhid: u8) -> (Node, Node) {
    wait_for("link-local addresses", || {
        [(&pair.a, "va"), (&pair.b, "vb")].iter().all(|(ns, dev)| {
            ns.ip(&["-o", "-6", "addr", "show", "dev", dev])
                .contains("fe80")
        })
    });
    let addrs = dual_stack_addrs();
    let a = Node::start(&pair.a, spec("va", vec![vhid_spec(vhid, 0, addrs.clone())])).unwrap();
    let b = Node::start(&pair.b, spec("vb", vec![vhid_spec(vhid, 100, addrs)])).unwrap();
    wait_for("A to become MASTER", || {
        a.state(vhid) == Some(State::Master)
    });
    (a, b)
}

#[test]
fn dual_stack_vhid_advertises_on_both_families() {
    let pair = addressed_pair();
    let (a, b) = dual_stack_master_and_backup(&pair, 3);
    // both families arrive and pass the HMAC check
    wait_for("B to hear A on both families", || {
        b.status()[0].adverts_received >= 4
    });
    let sb = &b.status()[0];
    assert_eq!(sb.state, State::Backup);
    assert!(sb.drops.is_empty(), "unexpected drops: {:?}", sb.drops);
    wait_for("A to hold both addresses", || {
        pair.a.has_addr("va", "fd00:77::100") && pair.a.has_addr("va", "10.77.0.100")
    });
    a.shutdown();
    wait_for("B to take over", || b.state(3) == Some(State::Master));
    wait_for("B to hold the IPv6 address", || {
        pair.b.has_addr("vb", "fd00:77::100")
    });
    b.shutdown();
}

/// The advertisement in a captured frame (IPv4 or IPv6).
fn frame_advert(frame: &[u8]) -> Advert {
    let payload = if frame[12..14] == [0x08, 0x00] {
        &frame[34..70]
    } else {
        &frame[54..90]
    };
    Advert::parse(payload).unwrap()
}

/// Past the takeover, a MASTER's periodic advertisements leave in batches
/// from the engine's advertiser and a BACKUP's receiver notes them without
/// waking the VHID's task: on the wire that must look exactly as before
/// (one per interval, consecutive counters, the same counter on both
/// families, valid HMACs), the backup must keep counting them and stay
/// BACKUP, and the bow-out must continue the counter.
#[test]
fn steady_advertisements_keep_interval_and_counter() {
    let pair = addressed_pair();
    let ips: Vec<IpAddr> = dual_stack_addrs().iter().map(|a| a.addr).collect();
    let (a, b) = dual_stack_master_and_backup(&pair, 5);
    // the first advertisements after a takeover are the machine's own
    wait_for("A to be past its takeover", || {
        a.status()[0].adverts_sent >= 4
    });
    let received_before = b.status()[0].adverts_received;
    let capture = capture_carp_frames(&pair.b, Duration::from_secs(30), |f| {
        f[12..14] == [0x08, 0x00] && frame_advert(f).advbase == 255
    });
    std::thread::sleep(Duration::from_secs(6));
    let sb = &b.status()[0];
    assert_eq!(sb.state, State::Backup);
    assert!(sb.drops.is_empty(), "unexpected drops: {:?}", sb.drops);
    let heard = sb.adverts_received - received_before;
    assert!(heard >= 8, "B heard {heard} advertisements in 6 s");
    a.shutdown();
    let frames = capture.join().unwrap();

    let auth = Authenticator::new(HmacMode::Bsd, KEY, 5, &ips).unwrap();
    let (v4s, v6s): (Vec<_>, Vec<_>) = frames
        .iter()
        .map(|(at, f)| (*at, f[12..14] == [0x08, 0x00], frame_advert(f)))
        .partition(|(_, is_v4, _)| *is_v4);
    for (_, _, ad) in v4s.iter().chain(&v6s) {
        assert!(auth.verify(ad.counter, &ad.hmac), "HMAC of {ad:?}");
    }
    let (bow_out, periodic) = v4s.split_last().expect("no IPv4 advertisement");
    assert_eq!((bow_out.2.advbase, bow_out.2.advskew), (255, 255));
    assert!(
        periodic.len() >= 5,
        "{} IPv4 advertisements",
        periodic.len()
    );
    for pair in periodic.windows(2) {
        let ((t0, _, a0), (t1, _, a1)) = (&pair[0], &pair[1]);
        assert_eq!(a1.counter, a0.counter.wrapping_add(1), "counters");
        let gap = t1.duration_since(*t0);
        assert!(
            gap > Duration::from_millis(500) && gap < Duration::from_millis(1500),
            "interval {gap:?}"
        );
        assert_eq!((a1.advbase, a1.advskew, a1.demote), (1, 0, 0));
    }
    let last = periodic.last().unwrap().2.counter;
    assert_eq!(bow_out.2.counter, last.wrapping_add(1), "bow-out counter");
    let v6_counters: Vec<u64> = v6s.iter().map(|(_, _, ad)| ad.counter).collect();
    for (_, _, ad) in periodic {
        assert!(
            v6_counters.contains(&ad.counter),
            "no IPv6 copy of counter {}",
            ad.counter
        );
    }
    wait_for("B to take over", || b.state(5) == Some(State::Master));
    b.shutdown();
}

#[test]
fn reload_keeps_unchanged_vhids() {
    let pair = addressed_pair();
    let first = spec(
        "va",
        vec![
            vhid_spec(1, 0, vec![v4("10.77.0.101")]),
            vhid_spec(2, 0, vec![v4("10.77.0.102")]),
        ],
    );
    let a = Node::start(&pair.a, first).unwrap();
    wait_for("both MASTER", || {
        a.status().iter().all(|s| s.state == State::Master)
    });
    let before = a.status();
    let second = spec(
        "va",
        vec![
            vhid_spec(1, 0, vec![v4("10.77.0.101")]),
            vhid_spec(3, 0, vec![v4("10.77.0.103")]),
        ],
    );
    let report = a.reload(second);
    let key = |vhid| VhidKey {
        interface: "va".into(),
        vhid,
    };
    assert_eq!(report.added, vec![key(3)]);
    assert_eq!(report.removed, vec![key(2)]);
    assert!(report.changed.is_empty());
    assert_eq!(report.unchanged, 1);
    assert!(
        !pair.a.has_addr("va", "10.77.0.102"),
        "removed VHID left its address"
    );
    let after = a.status();
    assert_eq!(after.len(), 2);
    let one = after.iter().find(|s| s.key.vhid == 1).unwrap();
    assert_eq!(one.state, State::Master);
    assert_eq!(
        one.transitions,
        before.iter().find(|s| s.key.vhid == 1).unwrap().transitions
    );

    // a changed VHID restarts
    let mut changed = vhid_spec(1, 10, vec![v4("10.77.0.101")]);
    changed.preempt = true;
    let report = a.reload(spec(
        "va",
        vec![changed, vhid_spec(3, 0, vec![v4("10.77.0.103")])],
    ));
    assert_eq!(report.changed, vec![key(1)]);
    assert_eq!(report.unchanged, 1);
    wait_for("VHID 1 MASTER again", || a.state(1) == Some(State::Master));
    a.shutdown();
}

#[test]
fn start_fails_cleanly() {
    let pair = addressed_pair();
    let err = Node::start(
        &pair.a,
        spec("nosuch0", vec![vhid_spec(1, 0, vec![v4("10.77.0.100")])]),
    )
    .err()
    .unwrap();
    assert!(err.starts_with("NoSuchInterface"), "{err}");
    // an interface without an IPv4 address: the VHID waits in INIT for one
    pair.a
        .ip(&["link", "add", "vx", "type", "veth", "peer", "name", "vy"]);
    pair.a.ip(&["link", "set", "vx", "up"]);
    let node = Node::start(
        &pair.a,
        spec("vx", vec![vhid_spec(1, 0, vec![v4("10.77.0.100")])]),
    )
    .unwrap();
    let status = node.status();
    assert_eq!(status.len(), 1);
    assert_eq!(status[0].state, State::Init);
    let waiting = status[0].waiting_for.clone().unwrap_or_default();
    assert!(waiting.contains("no IPv4 address"), "{waiting}");
    assert!(!pair.a.has_addr("vx", "10.77.0.100"));
    pair.a.ip(&["addr", "add", "10.77.9.1/24", "dev", "vx"]);
    wait_for("the VHID to run", || node.status()[0].waiting_for.is_none());
    node.shutdown();
}

#[test]
fn link_down_leaves_and_link_up_returns() {
    let pair = addressed_pair();
    let vip = "10.77.0.100";
    let a = Node::start(&pair.a, spec("va", vec![vhid_spec(1, 0, vec![v4(vip)])])).unwrap();
    wait_for("MASTER", || a.state(1) == Some(State::Master));
    wait_for("a few advertisements", || a.status()[0].adverts_sent >= 3);
    let sends = a.lateness();
    assert!(sends.early.count + sends.late.count >= 2, "{sends:?}");
    for side in [sends.early, sends.late] {
        assert!(side.p50_us <= side.p99_us && side.p99_us <= side.max_us);
    }

    pair.a.ip(&["link", "set", "va", "down"]);
    wait_for("INIT", || a.state(1) == Some(State::Init));
    wait_for("the address removed", || !pair.a.has_addr("va", vip));
    assert_eq!(
        a.status()[0].last_transition.as_deref(),
        Some("MASTER -> INIT (link_down)")
    );
    pair.a.ip(&["link", "set", "va", "up"]);
    wait_for("BACKUP again", || a.state(1) != Some(State::Init));
    wait_for("MASTER again", || a.state(1) == Some(State::Master));
    wait_for("the address back", || pair.a.has_addr("va", vip));

    // with ignore_link_state the VHID stays where it is
    let mut s = spec("va", vec![vhid_spec(1, 0, vec![v4(vip)])]);
    s.interfaces[0].ignore_link_state = true;
    let report = a.reload(s);
    assert_eq!(report.changed.len(), 1);
    wait_for("MASTER after restart", || a.state(1) == Some(State::Master));
    pair.a.ip(&["link", "set", "va", "down"]);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(a.state(1), Some(State::Master));
    a.shutdown();
}
