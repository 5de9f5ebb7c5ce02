//! Why a machine is in its state, as data: the rule the decision code
//! applies to a peer's advertisement ([`Rule`], returned by the same
//! functions that decide), the two priorities compared, and a rendering in
//! words for operators.

use std::cmp::Ordering;
use std::fmt;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use super::{Machine, Phase, Reason, State};
use crate::packet::Advert;
use crate::timing::Timing;

/// The rule that applies to an advertisement, by the state it reaches
/// (the numbered rules in the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// BACKUP, rules 1 to 4: take over, for this reason.
    TakeOver(Reason),
    /// BACKUP, rule 5: stay, and restart the master-down timer. `held`: a
    /// step-down suspends rules 2 and 3 for now.
    Wait { held: bool },
    /// MASTER: the peer is preferred; yield, for this reason.
    Yield(Reason),
    /// MASTER: the peer's priority is worse, or it lost the tie, or it
    /// bowed out; stay.
    Stay,
}

/// One side's priority as the rules compare it: the demotion (0 in skew
/// style, which folds it into advskew) and the advertised timing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Priority {
    pub demote: u8,
    pub timing: Timing,
}

impl Priority {
    /// Lower is better: demotion, then interval.
    fn rank(self) -> (u8, Duration) {
        (self.demote, self.timing.interval())
    }
}

/// A peer's advertisement, as the rules saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Heard {
    pub src: IpAddr,
    pub theirs: Priority,
    pub rule: Rule,
}

/// Why the machine is in its state (see [`Machine::explain`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Explanation {
    pub state: State,
    /// What we advertise (MASTER) or would advertise.
    pub ours: Priority,
    pub preempt: bool,
    pub master_down: Duration,
    /// The peer the decision is about, and the rule that applies to it.
    pub peer: Option<Heard>,
}

impl Machine {
    /// Why this machine is in its state at `now`, given the latest
    /// advertisement of the peer that matters (a BACKUP's master; for a
    /// MASTER, the best peer heard lately): the rule the decision code
    /// applies to it.
    pub fn explain(&self, now: Instant, peer: Option<(IpAddr, &Advert)>) -> Explanation {
        let (demote, _) = self.our_priority();
        let heard = peer.and_then(|(src, advert)| {
            let rule = match &self.phase {
                Phase::Backup(b) => self.backup_rule(advert, b.holds_preemption(now)),
                Phase::Master(_) => self.master_rule(src, advert),
                Phase::Init(_) | Phase::ShutDown => return None,
            };
            let (demote, _) = self.their_priority(advert);
            Some(Heard {
                src,
                theirs: Priority {
                    demote,
                    timing: advert.timing(),
                },
                rule,
            })
        });
        Explanation {
            state: self.state(),
            ours: Priority {
                demote,
                timing: self.effective_timing(),
            },
            preempt: self.config.preempt,
            master_down: self.master_down_time(),
            peer: heard,
        }
    }
}

/// `1 s + 100/256`.
struct ShowTiming(Timing);

impl fmt::Display for ShowTiming {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} s + {}/256", self.0.advbase, self.0.advskew)
    }
}

impl fmt::Display for Priority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} with demotion {}",
            ShowTiming(self.timing),
            self.demote
        )
    }
}

impl fmt::Display for Explanation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.state.as_str();
        let ours = self.ours;
        let down = self.master_down.as_secs_f64();
        let preempt = if self.preempt { "on" } else { "off" };
        let Some(peer) = self.peer else {
            return match self.state {
                State::Init => write!(
                    f,
                    "INIT: the link is down or the VHID has stopped; nothing is advertised. \
                     Changes when the link comes up."
                ),
                State::Backup => write!(
                    f,
                    "BACKUP: no master heard lately; we would advertise {ours}. \
                     Changes when {down:.2} s (the master-down time) pass without an advertisement."
                ),
                State::Master => write!(
                    f,
                    "MASTER: no other node heard lately; we advertise {ours}. \
                     Changes when a peer advertises a lower demotion or a shorter interval \
                     (equal ones: the lower address in UCARP's order wins)."
                ),
            };
        };
        let theirs = peer.theirs;
        let src = peer.src;
        let head = format!(
            "{state}: {src} advertises {theirs}; we {} {ours}; preempt is {preempt}",
            if self.state == State::Master {
                "advertise"
            } else {
                "would advertise"
            }
        );
        match peer.rule {
            Rule::Wait { held } => {
                let why = if held {
                    "a recent step-down holds preemption off".to_string()
                } else {
                    match ours.rank().cmp(&theirs.rank()) {
                        _ if theirs.demote < ours.demote => "its demotion is lower".into(),
                        Ordering::Less => "our interval is shorter, but preempt is off".into(),
                        Ordering::Equal => "the priorities are equal".into(),
                        Ordering::Greater => "its interval is shorter".into(),
                    }
                };
                let mut changes = vec![
                    format!("it falls silent for {down:.2} s (the master-down time)"),
                    "its demotion rises above ours".to_string(),
                ];
                if self.preempt {
                    changes.push("our interval becomes shorter than its".into());
                } else if ours.rank() < theirs.rank() {
                    changes.push("preempt is turned on".into());
                }
                write!(
                    f,
                    "{head}. We stay BACKUP: {why}. Changes if {}.",
                    changes.join(", or ")
                )
            }
            Rule::Stay => {
                let why = match ours.rank().cmp(&theirs.rank()) {
                    _ if theirs.timing.is_bow_out() => "it is bowing out".to_string(),
                    Ordering::Less => "our priority is better".into(),
                    _ => "the priorities are equal and our address wins the tie".into(),
                };
                write!(
                    f,
                    "{head}. We stay MASTER: {why}. Changes if our demotion rises above its, \
                     or its interval becomes shorter than ours."
                )
            }
            Rule::TakeOver(reason) => {
                write!(f, "{head}. Taking over as MASTER ({}).", reason.as_str())
            }
            Rule::Yield(reason) => write!(
                f,
                "{head}. Yielding to it, becoming BACKUP ({}).",
                reason.as_str()
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;
    use crate::machine::{CarpRules, DemoteStyle, MachineConfig, Rules};

    fn machine(advskew: u8, preempt: bool, local: [u8; 4]) -> Machine {
        Machine::new(MachineConfig {
            vhid: 1,
            rules: Rules::Carp(CarpRules {
                timing: Timing::new(1, advskew),
                dead_ratio: 3,
                demote_style: DemoteStyle::Byte,
            }),
            preempt,
            local_addr: IpAddr::V4(Ipv4Addr::from(local)),
            initial_counter: 0,
            advert_grid: None,
            preempt_delay: std::time::Duration::ZERO,
        })
    }

    fn advert(advskew: u8, demote: u8) -> Advert {
        Advert {
            vhid: 1,
            advskew,
            advbase: 1,
            demote,
            counter: 1,
            hmac: [0; 20],
        }
    }

    const PEER: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2));

    #[test]
    fn backup_waiting_for_a_better_master() {
        let now = Instant::now();
        let mut m = machine(100, false, [10, 0, 0, 1]);
        m.handle_link(now, true);
        let a = advert(0, 0);
        m.handle_advert(now, PEER, &a);
        let e = m.explain(now, Some((PEER, &a)));
        assert_eq!(e.peer.map(|p| p.rule), Some(Rule::Wait { held: false }));
        assert_eq!(
            e.to_string(),
            "BACKUP: 10.0.0.2 advertises 1 s + 0/256 with demotion 0; we would advertise \
             1 s + 100/256 with demotion 0; preempt is off. We stay BACKUP: its interval is \
             shorter. Changes if it falls silent for 3.39 s (the master-down time), or its \
             demotion rises above ours."
        );
    }

    #[test]
    fn backup_with_a_shorter_interval_but_no_preemption() {
        let now = Instant::now();
        let mut m = machine(0, false, [10, 0, 0, 1]);
        m.handle_link(now, true);
        let a = advert(100, 0);
        m.handle_advert(now, PEER, &a);
        let text = m.explain(now, Some((PEER, &a))).to_string();
        assert!(
            text.contains("our interval is shorter, but preempt is off"),
            "{text}"
        );
        assert!(text.ends_with("or preempt is turned on."), "{text}");
    }

    #[test]
    fn master_staying_and_the_rule_the_decision_uses() {
        let now = Instant::now();
        let mut m = machine(0, false, [10, 0, 0, 1]);
        m.handle_link(now, true);
        m.handle_timeout(now + Duration::from_secs(10));
        assert_eq!(m.state(), State::Master);
        let worse = advert(50, 0);
        let e = m.explain(now, Some((PEER, &worse)));
        assert_eq!(e.peer.map(|p| p.rule), Some(Rule::Stay));
        let text = e.to_string();
        assert!(
            text.starts_with("MASTER: 10.0.0.2 advertises 1 s + 50/256 with demotion 0; we advertise 1 s + 0/256 with demotion 0"),
            "{text}"
        );
        assert!(
            text.contains("We stay MASTER: our priority is better."),
            "{text}"
        );
        // the explanation's rule is the one the machine then follows
        let better = advert(0, 0);
        let lower = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 0));
        let e = m.explain(now, Some((lower, &better)));
        assert_eq!(
            e.peer.map(|p| p.rule),
            Some(Rule::Yield(Reason::PeerWinsTie))
        );
        m.handle_advert(now, lower, &better);
        assert_eq!(m.state(), State::Backup);
    }

    #[test]
    fn without_a_peer() {
        let now = Instant::now();
        let mut m = machine(0, true, [10, 0, 0, 1]);
        assert!(m.explain(now, None).to_string().starts_with("INIT: "));
        m.handle_link(now, true);
        let text = m.explain(now, None).to_string();
        assert!(text.starts_with("BACKUP: no master heard lately"), "{text}");
        m.handle_timeout(now + Duration::from_secs(10));
        let text = m.explain(now, None).to_string();
        assert!(
            text.starts_with(
                "MASTER: no other node heard lately; we advertise 1 s + 0/256 with demotion 0."
            ),
            "{text}"
        );
    }
}
