//! Address changes in a set of namespaces, recorded from the kernel's own
//! notifications, and queries over the recorded history.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crate::command::wait_until;
use crate::netns::{Netns, strip_prefix_len};

/// One address appearing in or leaving a namespace.
#[derive(Debug, Clone)]
pub struct AddrEvent {
    pub at: Instant,
    pub node: usize,
    pub added: bool,
    pub addr: String,
}

/// Records every address change in a set of namespaces from the kernel's
/// own notifications (`ip monitor address`), so that no change is missed,
/// however short, and none costs a poll.
#[derive(Debug)]
pub struct Watcher {
    initial: Vec<BTreeSet<String>>,
    events: Arc<Mutex<Vec<AddrEvent>>>,
    monitors: Vec<Child>,
    readers: Vec<JoinHandle<()>>,
}

/// An address added and removed on `lo` to learn that a monitor is listening.
const PROBE: &str = "192.0.2.254";

impl Watcher {
    pub fn start(nss: &[&Netns]) -> Watcher {
        let events = Arc::new(Mutex::new(Vec::new()));
        let mut monitors = Vec::new();
        let mut readers = Vec::new();
        for (node, ns) in nss.iter().enumerate() {
            let mut child = Command::new("ip")
                .args(["-n", ns.name(), "-o", "monitor", "address"])
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn ip monitor");
            let stdout = child.stdout.take().expect("piped stdout");
            let events = Arc::clone(&events);
            readers.push(thread::spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    if let Some((added, addr)) = parse_monitor_line(&line) {
                        let mut ev = events.lock().expect("events lock");
                        ev.push(AddrEvent {
                            at: Instant::now(),
                            node,
                            added,
                            addr,
                        });
                    }
                }
            }));
            monitors.push(child);
        }
        let mut w = Watcher {
            initial: Vec::new(),
            events,
            monitors,
            readers,
        };
        // Only once a monitor reports the probe is it surely subscribed (it
        // may subscribe after a first probe, so probe until one is seen); the
        // state it then tracks starts from a dump taken after that.
        let probe = format!("{PROBE}/32");
        for (node, ns) in nss.iter().enumerate() {
            let seen = || {
                w.events
                    .lock()
                    .expect("events lock")
                    .iter()
                    .any(|e| e.node == node && e.addr == PROBE)
            };
            let started = Instant::now();
            loop {
                for op in ["add", "del"] {
                    ns.ip(&["addr", op, &probe, "dev", "lo"]);
                    wait_until(Duration::from_millis(300), Duration::from_millis(5), seen);
                }
                if seen() {
                    break;
                }
                assert!(
                    started.elapsed() < Duration::from_secs(20),
                    "ip monitor in {} never started",
                    ns.name()
                );
            }
        }
        // Changes from the dump on are kept: replaying one the dump already
        // shows is harmless, losing one is not.
        let dumped = Instant::now();
        w.initial = nss.iter().map(|ns| ns.addrs()).collect();
        w.events
            .lock()
            .expect("events lock")
            .retain(|e| e.at >= dumped);
        w
    }

    /// Everything recorded so far.
    pub fn history(&self) -> History {
        History {
            initial: self.initial.clone(),
            events: self.events.lock().expect("events lock").clone(),
        }
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        for m in &mut self.monitors {
            let _ = m.kill();
            let _ = m.wait();
        }
        for r in self.readers.drain(..) {
            let _ = r.join();
        }
    }
}

/// `[Deleted ]<idx>: <dev> inet[6] <addr>/<len> ...` -> (added, addr).
fn parse_monitor_line(line: &str) -> Option<(bool, String)> {
    let (added, rest) = match line.strip_prefix("Deleted ") {
        Some(rest) => (false, rest),
        None => (true, line),
    };
    let t: Vec<&str> = rest.split_whitespace().collect();
    if t.len() < 4 || !t[2].starts_with("inet") {
        return None;
    }
    Some((added, strip_prefix_len(t[3]).to_string()))
}

/// A recorded address history of a set of namespaces.
#[derive(Debug, Clone)]
pub struct History {
    initial: Vec<BTreeSet<String>>,
    events: Vec<AddrEvent>,
}

impl History {
    /// The owners of `addr` from the start of the recording, then after
    /// every change of them, with the time of the change (`None`: start).
    pub fn timeline(&self, addr: &str) -> Vec<(Option<Instant>, BTreeSet<usize>)> {
        let mut owners: BTreeSet<usize> = self
            .initial
            .iter()
            .enumerate()
            .filter(|(_, a)| a.contains(addr))
            .map(|(i, _)| i)
            .collect();
        let mut out = vec![(None, owners.clone())];
        for e in self.events.iter().filter(|e| e.addr == addr) {
            let changed = if e.added {
                owners.insert(e.node)
            } else {
                owners.remove(&e.node)
            };
            if changed {
                out.push((Some(e.at), owners.clone()));
            }
        }
        out
    }

    /// Every owner set of `addr` that held at some moment at or after
    /// `since` (the one current at `since` first).
    pub fn owner_sets_since(&self, addr: &str, since: Instant) -> Vec<BTreeSet<usize>> {
        let tl = self.timeline(addr);
        let first_after = tl
            .iter()
            .position(|(at, _)| at.is_some_and(|t| t >= since))
            .unwrap_or(tl.len());
        tl[first_after.saturating_sub(1)..]
            .iter()
            .map(|(_, o)| o.clone())
            .collect()
    }

    /// The most owners `addr` had at once at or after `since`.
    pub fn max_owners_since(&self, addr: &str, since: Instant) -> usize {
        self.owner_sets_since(addr, since)
            .iter()
            .map(BTreeSet::len)
            .max()
            .unwrap_or(0)
    }

    /// Whether `node` held `addr` at any moment at or after `since`.
    pub fn ever_owned_since(&self, node: usize, addr: &str, since: Instant) -> bool {
        self.owner_sets_since(addr, since)
            .iter()
            .any(|o| o.contains(&node))
    }

    /// How long after `since` `node` got `addr` (zero if it already held
    /// it); fails the test if it never did.
    pub fn time_to_own(&self, node: usize, addr: &str, since: Instant) -> Duration {
        self.first_owned_since(node, addr, since)
            .unwrap_or_else(|| panic!("node {node} never took {addr}: {:?}", self.timeline(addr)))
            - since
    }

    /// When `node` got `addr` first at or after `since` (already holding it
    /// at `since` counts as `since`).
    pub fn first_owned_since(&self, node: usize, addr: &str, since: Instant) -> Option<Instant> {
        let mut current = false;
        for (at, owners) in self.timeline(addr) {
            match at {
                Some(t) if t >= since => {
                    if current {
                        return Some(since);
                    }
                    if owners.contains(&node) {
                        return Some(t);
                    }
                }
                _ => current = owners.contains(&node),
            }
        }
        current.then_some(since)
    }

    /// Address changes at or after `since` whose address satisfies `pred`.
    pub fn changes_since(&self, since: Instant, pred: impl Fn(&str) -> bool) -> Vec<&AddrEvent> {
        self.events
            .iter()
            .filter(|e| e.at >= since && pred(&e.addr))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn monitor_lines() {
        assert_eq!(
            parse_monitor_line(
                "3: eth0    inet 10.99.0.100/24 scope global secondary eth0\\       valid_lft forever preferred_lft forever"
            ),
            Some((true, "10.99.0.100".to_string()))
        );
        assert_eq!(
            parse_monitor_line("Deleted 1: lo    inet6 fd00::5/64 scope global \\       valid_lft"),
            Some((false, "fd00::5".to_string()))
        );
        assert_eq!(parse_monitor_line("garbage"), None);
    }
}
