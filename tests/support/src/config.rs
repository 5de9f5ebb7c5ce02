//! carpd's TOML configuration, built in code.

use std::fmt::Write as _;

/// carpd's TOML configuration, built in code.
#[derive(Debug, Clone)]
pub struct Config {
    pub advbase: u8,
    pub advskew: u8,
    pub dead_ratio: u8,
    pub preempt: bool,
    pub password: String,
    pub interfaces: Vec<InterfaceConfig>,
}

#[derive(Debug, Clone)]
pub struct InterfaceConfig {
    pub name: String,
    pub advskew: Option<u8>,
    pub vhids: Vec<VhidConfig>,
}

#[derive(Debug, Clone)]
pub struct VhidConfig {
    pub id: u8,
    pub addresses: Vec<String>,
    pub advskew: Option<u8>,
    pub preempt: Option<bool>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            advbase: 1,
            advskew: 0,
            dead_ratio: 3,
            preempt: false,
            password: "secret".to_string(),
            interfaces: Vec::new(),
        }
    }
}

impl Config {
    pub fn advskew(mut self, advskew: u8) -> Self {
        self.advskew = advskew;
        self
    }

    pub fn preempt(mut self, preempt: bool) -> Self {
        self.preempt = preempt;
        self
    }

    pub fn dead_ratio(mut self, dead_ratio: u8) -> Self {
        self.dead_ratio = dead_ratio;
        self
    }

    /// Adds VHID `id` with `addresses` ("addr/prefix") on `iface`.
    pub fn vhid(mut self, iface: &str, id: u8, addresses: &[String]) -> Self {
        let vhid = VhidConfig {
            id,
            addresses: addresses.to_vec(),
            advskew: None,
            preempt: None,
        };
        match self.interfaces.iter_mut().find(|i| i.name == iface) {
            Some(i) => i.vhids.push(vhid),
            None => self.interfaces.push(InterfaceConfig {
                name: iface.to_string(),
                advskew: None,
                vhids: vec![vhid],
            }),
        }
        self
    }

    pub fn vhid_mut(&mut self, iface: &str, id: u8) -> &mut VhidConfig {
        self.interfaces
            .iter_mut()
            .filter(|i| i.name == iface)
            .flat_map(|i| i.vhids.iter_mut())
            .find(|v| v.id == id)
            .expect("vhid configured")
    }

    pub fn remove_vhid(&mut self, iface: &str, id: u8) {
        for i in self.interfaces.iter_mut().filter(|i| i.name == iface) {
            i.vhids.retain(|v| v.id != id);
        }
    }

    pub fn to_toml(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "advbase = {}", self.advbase);
        let _ = writeln!(s, "advskew = {}", self.advskew);
        let _ = writeln!(s, "dead_ratio = {}", self.dead_ratio);
        let _ = writeln!(s, "preempt = {}", self.preempt);
        let _ = writeln!(s, "password = {:?}", self.password);
        for iface in &self.interfaces {
            let _ = writeln!(s, "\n[[interface]]\nname = {:?}", iface.name);
            if let Some(skew) = iface.advskew {
                let _ = writeln!(s, "advskew = {skew}");
            }
            for v in &iface.vhids {
                let _ = writeln!(s, "\n[[interface.vhid]]\nid = {}", v.id);
                let addrs: Vec<String> = v.addresses.iter().map(|a| format!("{a:?}")).collect();
                let _ = writeln!(s, "addresses = [{}]", addrs.join(", "));
                if let Some(skew) = v.advskew {
                    let _ = writeln!(s, "advskew = {skew}");
                }
                if let Some(preempt) = v.preempt {
                    let _ = writeln!(s, "preempt = {preempt}");
                }
            }
        }
        s
    }
}
