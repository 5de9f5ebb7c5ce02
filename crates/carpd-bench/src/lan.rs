//! The benchmark's LAN: `carpd-testbed`'s [`Lan`], tuned so that each
//! process pays only for its own work and addresses behave as on a server.

use carpd_testbed::{Lan, Netns};

use crate::error::{Error, Result};

/// A LAN of `hosts` hosts on `links` links whose veth ends all receive
/// through a threaded NAPI ([`napi_threaded`]), whose bridges skip
/// netfilter, and whose hosts promote secondary addresses (so removing one
/// virtual address never takes others in its subnet along).
pub fn tuned_lan(hosts: usize, links: usize) -> Result<Lan> {
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
    for (i, host) in lan.hosts.iter().enumerate() {
        for k in 0..links {
            napi_threaded(&lan.switch, &Lan::port_name(i, k))?;
            napi_threaded(host, &format!("eth{k}"))?;
        }
    }
    Ok(lan)
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
fn napi_threaded(ns: &Netns, dev: &str) -> Result<()> {
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
    Ok(())
}
