//! Carrying out a fault on the bed, and undoing it.

use std::fs;
use std::time::Instant;

use carpd_testbed::Lan;
use nix::sys::signal::Signal;

use crate::bed::Bed;
use crate::config::IFACE;
use crate::error::{Error, Result};
use crate::fault::{Direction, Fault};
use crate::timeline::Journal;

/// The nftables table partition and loss faults put in a node's namespace.
const TABLE: &str = "chaos";

/// What `inject` did.
#[derive(Debug)]
pub enum Injected {
    /// The fault is on until healed.
    On(Instant),
    /// It was a one-off (a deleted address): healed as it happened.
    Done(Instant),
    /// Nothing to do (e.g. the node did not hold the address).
    Skipped(String),
}

/// Carries out `fault` on node `node`.
pub fn inject(
    bed: &mut Bed,
    node: usize,
    fault: &Fault,
    journal: &mut Journal,
) -> Result<Injected> {
    let now = Instant::now();
    match fault {
        Fault::Kill => bed.nodes[node].kill(journal),
        Fault::Term => {
            if let Err(e) = bed.nodes[node].terminate(journal) {
                return Err(Error::Command(format!("node {node}: {e}")));
            }
        }
        Fault::Pause => bed.nodes[node].signal(Signal::SIGSTOP),
        Fault::Link => set_port(bed, node, false)?,
        Fault::Recreate => {
            bed.lan
                .switch
                .try_ip(&["link", "del", &Lan::port_name(node, 0)])?;
        }
        Fault::AddrDelete(n) => {
            let held = bed.host(node).try_addr_entries()?;
            let vips = bed.nodes[node].current.cidrs();
            let targets: Vec<&(String, String)> = held
                .iter()
                .filter(|(_, cidr)| vips.contains(cidr))
                .collect();
            if targets.is_empty() {
                return Ok(Injected::Skipped("holds no virtual address".to_string()));
            }
            let (dev, cidr) = targets[usize::from(*n) % targets.len()];
            let at = Instant::now();
            bed.host(node).try_ip(&["addr", "del", cidr, "dev", dev])?;
            return Ok(Injected::Done(at));
        }
        Fault::Partition => filter(bed, node, Direction::Both, None)?,
        Fault::OneWay(d) => filter(bed, node, *d, None)?,
        Fault::Loss { percent, direction } => filter(bed, node, *direction, Some(*percent))?,
        Fault::Reload(change) => {
            let config = bed.nodes[node].base.with(change);
            bed.nodes[node].reload(config, journal)?;
        }
        Fault::SlowHooks(delay) => bed.nodes[node].set_hook_mode(&format!(
            "slow {}.{:03}",
            delay.as_secs(),
            delay.subsec_millis()
        ))?,
        Fault::FailHooks => bed.nodes[node].set_hook_mode("fail")?,
    }
    Ok(Injected::On(now))
}

/// Undoes `fault` on node `node`; returns when it was healed (for kill and
/// term: when the new carpd is ready).
pub fn heal(bed: &mut Bed, node: usize, fault: &Fault, journal: &mut Journal) -> Result<Instant> {
    match fault {
        Fault::Kill | Fault::Term => {
            bed.spawn(node, journal)?;
            return bed.nodes[node].wait_ready(journal);
        }
        Fault::Pause => bed.nodes[node].signal(Signal::SIGCONT),
        Fault::Link => set_port(bed, node, true)?,
        Fault::Recreate => recreate(bed, node)?,
        Fault::AddrDelete(_) => {}
        Fault::Partition | Fault::OneWay(_) | Fault::Loss { .. } => {
            bed.host(node)
                .try_exec(&["nft", "delete", "table", "inet", TABLE])?;
        }
        Fault::Reload(_) => {
            let base = bed.nodes[node].base.clone();
            bed.nodes[node].reload(base, journal)?;
        }
        Fault::SlowHooks(_) | Fault::FailHooks => bed.nodes[node].set_hook_mode("")?,
    }
    Ok(Instant::now())
}

fn set_port(bed: &Bed, node: usize, up: bool) -> Result<()> {
    let state = if up { "up" } else { "down" };
    bed.lan
        .switch
        .try_ip(&["link", "set", &Lan::port_name(node, 0), state])?;
    Ok(())
}

/// The node's cable again: a new veth pair under the same names, its end
/// in the node named eth0 with the node's address.
fn recreate(bed: &Bed, node: usize) -> Result<()> {
    let port = Lan::port_name(node, 0);
    let host = bed.host(node);
    let sw = &bed.lan.switch;
    sw.try_ip(&[
        "link",
        "add",
        &port,
        "type",
        "veth",
        "peer",
        "name",
        IFACE,
        "netns",
        host.name(),
    ])?;
    sw.try_ip(&["link", "set", &port, "master", "br0", "up"])?;
    host.try_ip(&[
        "addr",
        "add",
        &format!("{}/24", Lan::host_addr(node, 0)),
        "dev",
        IFACE,
    ])?;
    host.try_ip(&["link", "set", IFACE, "up"])?;
    Ok(())
}

/// Drops the node's CARP packets in `direction`: all of them, or
/// `percent` % at random.
fn filter(bed: &Bed, node: usize, direction: Direction, percent: Option<u8>) -> Result<()> {
    let file = &bed.nodes[node].nft_file;
    fs::write(file, nft_rules(direction, percent))?;
    let path = file
        .to_str()
        .ok_or_else(|| Error::Setup(format!("path is not UTF-8: {}", file.display())))?;
    bed.host(node).try_exec(&["nft", "-f", path])?;
    Ok(())
}

/// The ruleset of a partition (`percent` None) or a loss fault.
pub fn nft_rules(direction: Direction, percent: Option<u8>) -> String {
    let hooks: &[&str] = match direction {
        Direction::In => &["input"],
        Direction::Out => &["output"],
        Direction::Both => &["input", "output"],
    };
    let sample = percent.map_or(String::new(), |p| format!("numgen random mod 100 < {p} "));
    let mut s = format!("table inet {TABLE} {{\n");
    for hook in hooks {
        s.push_str(&format!(
            "  chain {hook} {{\n    type filter hook {hook} priority 0; policy accept;\n    meta l4proto 112 {sample}drop\n  }}\n"
        ));
    }
    s.push_str("}\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rulesets() {
        let p = nft_rules(Direction::Both, None);
        assert!(p.contains("hook input") && p.contains("hook output"));
        assert!(p.contains("meta l4proto 112 drop"));
        let l = nft_rules(Direction::Out, Some(17));
        assert!(!l.contains("hook input"));
        assert!(l.contains("meta l4proto 112 numgen random mod 100 < 17 drop"));
    }
}
