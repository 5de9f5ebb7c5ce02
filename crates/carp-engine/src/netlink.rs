//! rtnetlink: interface lookup, virtual address install/remove, link events.
//!
//! CONTRACT (filled in by the effects work): keep these names and
//! signatures; add freely.

use std::net::{Ipv4Addr, Ipv6Addr};

use tokio::sync::mpsc;

use crate::error::Error;
use crate::spec::VirtualAddr;

/// What the engine needs to know about a parent interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkInfo {
    pub index: u32,
    pub name: String,
    pub mac: [u8; 6],
    /// Administratively up and carrier present (IFF_UP and IFF_RUNNING /
    /// operstate up).
    pub up: bool,
    /// First (primary) IPv4 address, if any.
    pub primary_v4: Option<Ipv4Addr>,
    /// Link-local IPv6 address, if any (IPv6 advertisements come from it).
    pub link_local_v6: Option<Ipv6Addr>,
}

/// A link went up or down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkEvent {
    pub index: u32,
    pub up: bool,
}

/// A cloneable handle on one rtnetlink connection (its driver runs as a
/// tokio task).
#[derive(Debug, Clone)]
pub struct Netlink {}

impl Netlink {
    pub async fn connect() -> Result<Netlink, Error> {
        todo!()
    }

    /// `None` if there is no such interface.
    pub async fn link(&self, _name: &str) -> Result<Option<LinkInfo>, Error> {
        todo!()
    }

    /// Add an address (IPv6 with IFA_F_NODAD so it is usable at once; IPv4
    /// with `label` if given). Already present -> Ok(false), added -> Ok(true).
    pub async fn add_address(&self, _index: u32, _addr: VirtualAddr, _label: Option<&str>) -> Result<bool, Error> {
        todo!()
    }

    /// Remove an address. Not present -> Ok(false), removed -> Ok(true).
    pub async fn del_address(&self, _index: u32, _addr: VirtualAddr) -> Result<bool, Error> {
        todo!()
    }

    /// Whether `addr` is configured on `index`.
    pub async fn has_address(&self, _index: u32, _addr: VirtualAddr) -> Result<bool, Error> {
        todo!()
    }
}

/// Subscribe to link up/down events (RTNLGRP_LINK) on a separate netlink
/// socket; events arrive on the returned channel until it is dropped.
pub async fn watch_links() -> Result<mpsc::Receiver<LinkEvent>, Error> {
    todo!()
}
