//! N machines on a virtual wire, driven by a virtual clock.
//!
//! Every `Send` reaches every other node `delay` later unless the sender is
//! muted, its sends fail, a partition separates the two nodes, or the loss
//! function drops that copy. Events at the same instant run in a fixed order
//! (deliveries in send order, then timers by node index), so every run is
//! reproducible to the nanosecond. After every input the harness checks that
//! a node holds the addresses exactly while it is MASTER.

// Shared by `sim.rs` and `vrrp_sim.rs`, each of which uses a part.
#![allow(dead_code)]

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use carp_proto::machine::{
    Action, CarpRules, DemoteStyle, MachineConfig, Rules, SendAdvert, SendCarp, VrrpRules,
};
use carp_proto::vrrp::{self, Addresses};
use carp_proto::{Advert, Machine, Reason, State, Timing};

pub const VHID: u8 = 7;

pub fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

pub fn ms(m: u64) -> Duration {
    Duration::from_millis(m)
}

pub fn ns(n: u64) -> Duration {
    Duration::from_nanos(n)
}

/// `n` advskew units (1/256 s each).
pub fn skew(n: u64) -> Duration {
    Duration::from_nanos(n * 3_906_250)
}

pub fn v4(a: [u8; 4]) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(a))
}

/// CARP. Defaults: dead ratio 3, no preemption, demotion in byte 4.
pub fn config(addr: IpAddr, advbase: u8, advskew: u8) -> MachineConfig {
    MachineConfig {
        vhid: VHID,
        rules: Rules::Carp(CarpRules {
            timing: Timing::new(advbase, advskew),
            dead_ratio: 3,
            demote_style: DemoteStyle::Byte,
        }),
        preempt: false,
        preempt_delay: Duration::ZERO,
        local_addr: addr,
        initial_counter: 1000,
        advert_grid: None,
    }
}

/// The CARP parameters of a [`config`].
pub fn carp(config: &mut MachineConfig) -> &mut CarpRules {
    match &mut config.rules {
        Rules::Carp(c) => c,
        Rules::Vrrp(_) => panic!("not a CARP configuration"),
    }
}

/// VRRP with `priority` and an interval of `interval_cs` centiseconds;
/// preemption on (the RFC default).
pub fn vrrp_config(
    addr: IpAddr,
    version: vrrp::Version,
    priority: u8,
    interval_cs: u16,
) -> MachineConfig {
    MachineConfig {
        vhid: VHID,
        rules: Rules::Vrrp(VrrpRules {
            version,
            priority,
            interval_cs,
        }),
        preempt: true,
        preempt_delay: Duration::ZERO,
        local_addr: addr,
        initial_counter: 0,
        advert_grid: None,
    }
}

/// xorshift64*: tiny, seeded, good enough to pick lost packets.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.max(1))
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        // 53 random bits as a float in [0, 1).
        ((self.next_u64() >> 11) as f64 / (1u64 << 53) as f64) < p
    }
}

/// One copy of an advertisement on its way from one node to another.
#[derive(Debug, Clone, Copy)]
pub struct Packet {
    pub from: usize,
    pub to: usize,
    pub sent_at: Duration,
    pub advert: SendAdvert,
}

impl Packet {
    /// The CARP advertisement (panics on VRRP).
    pub fn carp(&self) -> Advert {
        carp_advert(&self.advert)
    }
}

/// The CARP advertisement a CARP send puts on the wire (panics on VRRP).
fn carp_advert(s: &SendAdvert) -> Advert {
    let SendAdvert::Carp(s) = s else {
        panic!("not a CARP advertisement: {s:?}")
    };
    Advert {
        vhid: VHID,
        advbase: s.timing.advbase,
        advskew: s.timing.advskew,
        demote: s.demote,
        counter: s.counter,
        hmac: [0; 20],
    }
}

/// The virtual address every simulated VRRP router advertises.
fn vrrp_addresses() -> Addresses {
    Addresses::V4(vec![Ipv4Addr::new(10, 0, 0, 100)])
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition {
    pub at: Duration,
    pub node: usize,
    pub from: State,
    pub to: State,
    pub reason: Reason,
}

#[derive(Debug, Clone, Copy)]
pub struct Sent {
    pub at: Duration,
    pub node: usize,
    pub advert: SendAdvert,
}

impl Sent {
    /// The CARP send (panics on VRRP).
    pub fn carp(&self) -> SendCarp {
        match &self.advert {
            SendAdvert::Carp(s) => *s,
            SendAdvert::Vrrp(s) => panic!("not a CARP advertisement: {s:?}"),
        }
    }

    /// The VRRP advertisement's priority (panics on CARP).
    pub fn priority(&self) -> u8 {
        match &self.advert {
            SendAdvert::Vrrp(s) => s.priority,
            SendAdvert::Carp(s) => panic!("not a VRRP advertisement: {s:?}"),
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub struct Delivery {
    pub at: Duration,
    pub from: usize,
    pub to: usize,
}

#[derive(Debug)]
pub struct Node {
    pub machine: Machine,
    pub addr: IpAddr,
    pub holds: bool,
    /// Its packets no longer reach anyone (the node "died" on the wire).
    pub muted: bool,
    /// Nothing reaches it.
    pub deaf: bool,
    /// Its sends fail locally (reported to the machine as errors).
    pub send_fails: bool,
}

/// Ordered by arrival, then by sending order.
#[derive(Debug)]
struct InFlight {
    at: Duration,
    seq: u64,
    from: usize,
    to: usize,
    advert: SendAdvert,
}

impl PartialEq for InFlight {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}

impl Eq for InFlight {}

impl PartialOrd for InFlight {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for InFlight {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

type LossFn = Box<dyn FnMut(&Packet, &mut Rng) -> bool>;

pub struct Sim {
    origin: Instant,
    now: Duration,
    pub delay: Duration,
    pub nodes: Vec<Node>,
    wire: BinaryHeap<Reverse<InFlight>>,
    seq: u64,
    pub rng: Rng,
    loss: Option<LossFn>,
    /// Partition group of each node; nodes talk only within a group.
    groups: Option<Vec<usize>>,
    pub transitions: Vec<Transition>,
    pub sent: Vec<Sent>,
    pub delivered: Vec<Delivery>,
    pub lost: Vec<Packet>,
    pub announces: Vec<(Duration, usize)>,
    /// Every change of the set of nodes holding the addresses.
    pub holders: Vec<(Duration, Vec<usize>)>,
}

impl Sim {
    pub fn new(delay: Duration) -> Self {
        Sim {
            origin: Instant::now(),
            now: Duration::ZERO,
            delay,
            nodes: Vec::new(),
            wire: BinaryHeap::new(),
            seq: 0,
            rng: Rng::new(0x5eed),
            loss: None,
            groups: None,
            transitions: Vec::new(),
            sent: Vec::new(),
            delivered: Vec::new(),
            lost: Vec::new(),
            announces: Vec::new(),
            holders: Vec::new(),
        }
    }

    pub fn add(&mut self, config: MachineConfig) -> usize {
        let addr = config.local_addr;
        self.nodes.push(Node {
            machine: Machine::new(config),
            addr,
            holds: false,
            muted: false,
            deaf: false,
            send_fails: false,
        });
        if let Some(g) = &mut self.groups {
            g.push(0);
        }
        self.nodes.len() - 1
    }

    pub fn now(&self) -> Duration {
        self.now
    }

    pub fn instant(&self, at: Duration) -> Instant {
        self.origin + at
    }

    /// Drop each copy for which `f` says so (called once per receiver).
    pub fn set_loss(&mut self, f: impl FnMut(&Packet, &mut Rng) -> bool + 'static) {
        self.loss = Some(Box::new(f));
    }

    pub fn partition(&mut self, groups: &[&[usize]]) {
        let mut g = vec![usize::MAX; self.nodes.len()];
        for (i, members) in groups.iter().enumerate() {
            for &n in *members {
                g[n] = i;
            }
        }
        self.groups = Some(g);
    }

    /// The node vanishes from the wire (crash, power loss): it neither sends
    /// nor hears anything any more.
    pub fn kill(&mut self, node: usize) {
        self.nodes[node].muted = true;
        self.nodes[node].deaf = true;
    }

    pub fn heal(&mut self) {
        self.groups = None;
    }

    pub fn state(&self, node: usize) -> State {
        self.nodes[node].machine.state()
    }

    pub fn masters(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|&i| self.state(i) == State::Master)
            .collect()
    }

    pub fn holding(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|&i| self.nodes[i].holds)
            .collect()
    }

    pub fn transitions_of(&self, node: usize) -> Vec<Transition> {
        self.transitions
            .iter()
            .filter(|t| t.node == node)
            .copied()
            .collect()
    }

    /// (time, to, reason) of a node's transitions, for compact assertions.
    pub fn history(&self, node: usize) -> Vec<(Duration, State, Reason)> {
        self.transitions_of(node)
            .iter()
            .map(|t| (t.at, t.to, t.reason))
            .collect()
    }

    pub fn sends_of(&self, node: usize) -> Vec<Sent> {
        self.sent
            .iter()
            .filter(|s| s.node == node)
            .copied()
            .collect()
    }

    pub fn announces_of(&self, node: usize) -> Vec<Duration> {
        self.announces
            .iter()
            .filter(|(_, n)| *n == node)
            .map(|(t, _)| *t)
            .collect()
    }

    /// When `to` last received an advertisement from `from`.
    pub fn last_delivery(&self, from: usize, to: usize) -> Option<Duration> {
        self.delivered
            .iter()
            .rev()
            .find(|d| d.from == from && d.to == to)
            .map(|d| d.at)
    }

    /// Apply an input to one node at the current time.
    pub fn with(&mut self, node: usize, f: impl FnOnce(&mut Machine, Instant)) {
        let now = self.instant(self.now);
        f(&mut self.nodes[node].machine, now);
        self.drain(node);
    }

    pub fn link(&mut self, node: usize, up: bool) {
        self.with(node, |m, now| m.handle_link(now, up));
    }

    /// Run every event up to and including `until`, then stand at `until`.
    pub fn run_until(&mut self, until: Duration) {
        let mut same_instant = 0u32;
        loop {
            let wire = self.wire.peek().map(|Reverse(p)| p.at);
            let timer = (0..self.nodes.len())
                .filter_map(|i| {
                    self.nodes[i]
                        .machine
                        .poll_timeout()
                        .map(|t| (t.saturating_duration_since(self.origin), i))
                })
                .min();
            let next = match (wire, timer) {
                (Some(w), Some((t, _))) if w <= t => Err(w),
                (Some(w), None) => Err(w),
                (_, Some((t, i))) => Ok((t, i)),
                (None, None) => break,
            };
            let at = match next {
                Err(w) | Ok((w, _)) => w,
            };
            if at > until {
                break;
            }
            same_instant = if at == self.now { same_instant + 1 } else { 0 };
            assert!(same_instant < 10_000, "no progress at {at:?}");
            assert!(
                at >= self.now,
                "time went backwards: {at:?} < {:?}",
                self.now
            );
            self.now = at;
            match next {
                Err(_) => {
                    let Some(Reverse(p)) = self.wire.pop() else {
                        unreachable!()
                    };
                    self.deliver(p);
                }
                Ok((_, i)) => {
                    let now = self.instant(at);
                    self.nodes[i].machine.handle_timeout(now);
                    self.drain(i);
                }
            }
        }
        self.now = until;
    }

    fn deliver(&mut self, p: InFlight) {
        self.delivered.push(Delivery {
            at: self.now,
            from: p.from,
            to: p.to,
        });
        let src = self.nodes[p.from].addr;
        let now = self.instant(self.now);
        let machine = &mut self.nodes[p.to].machine;
        match &p.advert {
            SendAdvert::Carp(_) => machine.handle_advert(now, src, &carp_advert(&p.advert)),
            SendAdvert::Vrrp(s) => {
                let advert = s.advert(VHID, vrrp::Auth::None, vrrp_addresses());
                machine.handle_vrrp_advert(now, src, &advert);
            }
        }
        self.drain(p.to);
    }

    fn connected(&self, a: usize, b: usize) -> bool {
        self.groups.as_ref().is_none_or(|g| g[a] == g[b])
    }

    /// Carry out a node's actions; check the address invariant.
    fn drain(&mut self, i: usize) {
        let now = self.instant(self.now);
        while let Some(action) = self.nodes[i].machine.poll_action() {
            match action {
                Action::Send(s) => {
                    self.sent.push(Sent {
                        at: self.now,
                        node: i,
                        advert: s,
                    });
                    let ok = !self.nodes[i].send_fails;
                    if ok && !self.nodes[i].muted {
                        self.transmit(i, s);
                    }
                    self.nodes[i].machine.handle_send_result(now, ok);
                }
                Action::InstallAddresses => {
                    assert!(
                        !self.nodes[i].holds,
                        "node {i} installs twice at {:?}",
                        self.now
                    );
                    self.nodes[i].holds = true;
                    self.holders.push((self.now, self.holding()));
                }
                Action::RemoveAddresses => {
                    assert!(
                        self.nodes[i].holds,
                        "node {i} removes what it lacks at {:?}",
                        self.now
                    );
                    self.nodes[i].holds = false;
                    self.holders.push((self.now, self.holding()));
                }
                Action::Announce => {
                    assert!(self.nodes[i].holds, "node {i} announces without addresses");
                    self.announces.push((self.now, i));
                }
                Action::StateChanged { from, to, reason } => {
                    assert_ne!(from, to);
                    self.transitions.push(Transition {
                        at: self.now,
                        node: i,
                        from,
                        to,
                        reason,
                    });
                }
            }
        }
        let n = &self.nodes[i];
        assert_eq!(
            n.holds,
            n.machine.state() == State::Master,
            "node {i} in {:?} with holds={} at {:?}",
            n.machine.state(),
            n.holds,
            self.now
        );
        if n.machine.state() == State::Init {
            assert_eq!(n.machine.poll_timeout(), None);
        }
    }

    fn transmit(&mut self, from: usize, s: SendAdvert) {
        for to in 0..self.nodes.len() {
            if to == from || self.nodes[to].deaf || !self.connected(from, to) {
                continue;
            }
            let packet = Packet {
                from,
                to,
                sent_at: self.now,
                advert: s,
            };
            if let Some(loss) = &mut self.loss {
                if loss(&packet, &mut self.rng) {
                    self.lost.push(packet);
                    continue;
                }
            }
            self.seq += 1;
            self.wire.push(Reverse(InFlight {
                at: self.now + self.delay,
                seq: self.seq,
                from,
                to,
                advert: s,
            }));
        }
    }
}
