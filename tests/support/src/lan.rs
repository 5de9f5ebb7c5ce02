//! A LAN: a "switch" namespace holding one bridge per link plus one
//! namespace per host, each host wired to every bridge by a veth pair whose
//! host end is called `eth<k>`.

use std::time::Duration;

use crate::Error;
use crate::command::wait_until;
use crate::netns::{Netns, owners};

/// A segment: a switch namespace with one bridge per link, and hosts wired
/// to every bridge. Host `i` has `eth<k>` with `10.99.<k>.<i+1>/24` (and an
/// IPv6 link-local address); its switch port is `h<i>l<k>`.
#[derive(Debug)]
pub struct Lan {
    pub hosts: Vec<Netns>,
    pub switch: Netns,
}

impl Lan {
    /// Builds the LAN and waits until every host link is up with a usable
    /// IPv6 link-local address.
    pub fn try_new(hosts: usize, links: usize) -> Result<Lan, Error> {
        let switch = Netns::try_new("sw")?;
        let hosts = (0..hosts)
            .map(|i| Netns::try_new(&format!("h{i}")))
            .collect::<Result<Vec<_>, _>>()?;
        let lan = Lan { hosts, switch };
        for k in 0..links {
            let br = format!("br{k}");
            // No snooping: every CARP group packet reaches every port.
            lan.switch.try_ip(&[
                "link",
                "add",
                &br,
                "type",
                "bridge",
                "mcast_snooping",
                "0",
                "stp_state",
                "0",
            ])?;
            lan.switch.try_ip(&["link", "set", &br, "up"])?;
        }
        for i in 0..lan.hosts.len() {
            for k in 0..links {
                lan.try_wire(i, k)?;
            }
        }
        for host in &lan.hosts {
            for k in 0..links {
                let dev = format!("eth{k}");
                let up = wait_until(Duration::from_secs(10), Duration::from_millis(20), || {
                    let link = host.try_ip(&["-o", "link", "show", "dev", &dev]);
                    let ll =
                        host.try_ip(&["-o", "-6", "addr", "show", "dev", &dev, "scope", "link"]);
                    match (link, ll) {
                        (Ok(link), Ok(ll)) => {
                            link.contains("state UP") && !ll.is_empty() && !ll.contains("tentative")
                        }
                        _ => false,
                    }
                });
                if up.is_none() {
                    return Err(Error::Setup(format!(
                        "{} {dev} did not come up",
                        host.name()
                    )));
                }
            }
        }
        Ok(lan)
    }

    /// [`Lan::try_new`], failing the test on error.
    pub fn new(hosts: usize, links: usize) -> Lan {
        Lan::try_new(hosts, links).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Wires host `host` to bridge `br<link>`: a veth pair from switch port
    /// `h<host>l<link>` to the host's `eth<link>`, which gets its address
    /// and is set up (it may still be coming up on return).
    pub fn try_wire(&self, host: usize, link: usize) -> Result<(), Error> {
        let port = Lan::port_name(host, link);
        let dev = format!("eth{link}");
        let ns = &self.hosts[host];
        self.switch.try_ip(&[
            "link",
            "add",
            &port,
            "type",
            "veth",
            "peer",
            "name",
            &dev,
            "netns",
            ns.name(),
        ])?;
        self.switch
            .try_ip(&["link", "set", &port, "master", &format!("br{link}"), "up"])?;
        ns.try_ip(&[
            "addr",
            "add",
            &format!("{}/24", Lan::host_addr(host, link)),
            "dev",
            &dev,
        ])?;
        ns.try_ip(&["link", "set", &dev, "up"])?;
        Ok(())
    }

    /// [`Lan::try_wire`], failing the test on error: rewires a host whose
    /// `eth<link>` was deleted as the LAN first built it.
    pub fn wire(&self, host: usize, link: usize) {
        self.try_wire(host, link).unwrap_or_else(|e| panic!("{e}"));
    }

    /// Sets `promote_secondaries` on every host, as systemd does on a
    /// real one: without it, removing the first address of a subnet
    /// removes every other address of that subnet with it.
    pub fn promote_secondaries(&self) -> Result<(), Error> {
        for host in &self.hosts {
            host.try_exec(&[
                "sysctl",
                "-q",
                "-w",
                "net.ipv4.conf.all.promote_secondaries=1",
                "net.ipv4.conf.default.promote_secondaries=1",
            ])?;
        }
        Ok(())
    }

    pub fn host_addr(host: usize, link: usize) -> String {
        format!("10.99.{link}.{}", host + 1)
    }

    pub fn port_name(host: usize, link: usize) -> String {
        format!("h{host}l{link}")
    }

    /// Cuts (or restores) host `host`'s cable on link `link`: its switch port
    /// goes down, so the host sees carrier loss on `eth<link>`.
    pub fn set_port(&self, host: usize, link: usize, up: bool) {
        let state = if up { "up" } else { "down" };
        self.switch
            .ip(&["link", "set", &Lan::port_name(host, link), state]);
    }

    pub fn refs(&self) -> Vec<&Netns> {
        self.hosts.iter().collect()
    }

    /// Hosts that hold `addr` right now.
    pub fn owners(&self, addr: &str) -> Vec<usize> {
        owners(&self.refs(), addr)
    }
}
