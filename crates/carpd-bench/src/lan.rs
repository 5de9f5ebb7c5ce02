//! The benchmark's LAN: `carpd-testbed`'s [`Lan`], tuned so that each
//! process pays only for its own work and addresses behave as on a server.

use carpd_testbed::{Lan, Netns};

use crate::error::{Error, Result};

/// The NAPI kernel threads of a [`tuned_lan`]'s veth ends: the bed's
/// links (the switch side stands for the switch and the cables, the host
/// side for each host's NIC).
#[derive(Debug, Default)]
pub struct LinkThreads(Vec<i32>);

impl LinkThreads {
    /// Runs them at `SCHED_FIFO` `priority`, as a real-time kernel runs
    /// interrupt threads: a busy core then delays the processes on it, not
    /// the wire between them, as with hardware.
    pub fn realtime(&self, priority: i32) -> Result<()> {
        if self.0.is_empty() {
            return Err(Error::Setup("no NAPI threads found for the links".into()));
        }
        let param = libc::sched_param {
            sched_priority: priority,
        };
        for &pid in &self.0 {
            // SAFETY: `param` is a valid sched_param for the call.
            if unsafe { libc::sched_setscheduler(pid, libc::SCHED_FIFO, &param) } != 0 {
                return Err(Error::Setup(format!(
                    "SCHED_FIFO {priority} for NAPI thread {pid}: {}",
                    std::io::Error::last_os_error()
                )));
            }
        }
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }
}

/// A LAN of `hosts` hosts on `links` links whose veth ends all receive
/// through a threaded NAPI ([`napi_threaded`]), whose bridges skip
/// netfilter, and whose hosts promote secondary addresses (so removing one
/// virtual address never takes others in its subnet along); with the
/// NAPI threads it made.
pub fn tuned_lan(hosts: usize, links: usize) -> Result<(Lan, LinkThreads)> {
    let lan = Lan::try_new(hosts, links)?;
    // bridged frames skip netfilter: a real switch does not run it
    let _ = lan.switch.try_exec(&[
        "sysctl",
        "-q",
        "-w",
        "net.bridge.bridge-nf-call-iptables=0",
        "net.bridge.bridge-nf-call-ip6tables=0",
        "net.bridge.bridge-nf-call-arptables=0",
    ]);
    lan.promote_secondaries()?;
    let mut threads = Vec::new();
    for (i, host) in lan.hosts.iter().enumerate() {
        for k in 0..links {
            threads.extend(napi_threaded(&lan.switch, &Lan::port_name(i, k))?);
            threads.extend(napi_threaded(host, &format!("eth{k}"))?);
        }
    }
    Ok((lan, LinkThreads(threads)))
}

/// A LAN of `hosts` hosts on `links` links as the tests build it: veth
/// ends as created (no receive tuning); hosts promote secondary addresses.
pub fn plain_lan(hosts: usize, links: usize) -> Result<Lan> {
    let lan = Lan::try_new(hosts, links)?;
    lan.promote_secondaries()?;
    Ok(lan)
}

/// Makes `dev` (a veth end in `ns`) receive through a NAPI kernel thread,
/// as a NIC's interrupt and softirq would. Without it a veth hands each
/// frame to the peer's receive path in the sender's own context, so the
/// bridge, the other hosts' IP input and the wake-up of their readers are
/// all charged to the process that sent. veth takes the NAPI path with GRO
/// on and only for frames that need no segmentation (TSO and GSO off).
/// Returns the threads it started (named after `dev`, which other
/// namespaces may reuse: those that were not there before).
fn napi_threaded(ns: &Netns, dev: &str) -> Result<Vec<i32>> {
    let before = napi_threads(dev);
    carpd_testbed::check_tool("ethtool")?;
    ns.try_exec(&[
        "ethtool", "-K", dev, "gro", "on", "tso", "off", "gso", "off",
    ])
    .map_err(|e| Error::Setup(format!("ethtool on {dev}: {e}")))?;
    ns.try_exec(&[
        "sh",
        "-c",
        &format!("echo 1 > /sys/class/net/{dev}/threaded"),
    ])
    .map_err(|e| Error::Setup(format!("threaded NAPI on {dev}: {e}")))?;
    Ok(napi_threads(dev)
        .into_iter()
        .filter(|p| !before.contains(p))
        .collect())
}

/// The kernel's NAPI threads named after `dev` (`napi/<dev>-<id>`, cut to
/// 15 bytes), in any namespace.
fn napi_threads(dev: &str) -> Vec<i32> {
    let mut prefix = format!("napi/{dev}-");
    prefix.truncate(15);
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|c| c.trim_end().starts_with(&prefix))
        })
        .collect()
}
