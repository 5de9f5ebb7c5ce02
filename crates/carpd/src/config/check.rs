//! Checks of single values, each given the place the value was written so
//! that its error names the line and key. None reads anything outside the
//! text.

use std::net::IpAddr;
use std::time::Duration;

use carp_engine::VirtualAddr;

use super::diag::Where;
use crate::error::Error;

/// Linux interface names and address labels fit in IFNAMSIZ (16) with the
/// terminating NUL.
const IFNAMSIZ_MAX: usize = 15;

/// A VHID number: 1 to 255.
pub(super) fn vhid_id(at: &Where<'_>, id: i64) -> Result<u8, Error> {
    match u8::try_from(id) {
        Ok(id @ 1..=255) => Ok(id),
        _ => Err(at.err(format!("{id} is not in 1..=255"))),
    }
}

/// An integer in `lo..=hi`.
pub(super) fn int_in(at: &Where<'_>, v: i64, lo: u32, hi: u32) -> Result<u32, Error> {
    match u32::try_from(v) {
        Ok(n) if (lo..=hi).contains(&n) => Ok(n),
        _ => Err(at.err(format!("{v} is not in {lo}..={hi}"))),
    }
}

/// An integer in `lo..=255`.
pub(super) fn byte_from(at: &Where<'_>, v: i64, lo: u8) -> Result<u8, Error> {
    let n = int_in(at, v, u32::from(lo), 255)?;
    Ok(u8::try_from(n).unwrap_or(u8::MAX))
}

/// A duration greater than zero in humantime's notation; `example` shows
/// one in the error.
pub(super) fn duration(at: &Where<'_>, text: &str, example: &str) -> Result<Duration, Error> {
    match humantime::parse_duration(text) {
        Ok(d) if !d.is_zero() => Ok(d),
        Ok(_) => Err(at.err("must be greater than zero")),
        Err(e) => Err(at.err(format!("{text:?}: {e} (write e.g. \"{example}\")"))),
    }
}

/// A duration that may be zero (`"0s"`: off).
pub(super) fn duration_or_zero(
    at: &Where<'_>,
    text: &str,
    example: &str,
) -> Result<Duration, Error> {
    humantime::parse_duration(text)
        .map_err(|e| at.err(format!("{text:?}: {e} (write e.g. \"{example}\")")))
}

/// `addr[/prefix]`; the prefix defaults to a host route (/32, /128).
pub fn parse_vaddr(s: &str) -> Result<VirtualAddr, String> {
    let (addr, prefix) = match s.split_once('/') {
        Some((a, p)) => (a, Some(p)),
        None => (s, None),
    };
    let addr: IpAddr = addr
        .trim()
        .parse()
        .map_err(|_| "not an IP address".to_string())?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let prefix_len = match prefix {
        None => max,
        Some(p) => {
            let n: u32 = p
                .trim()
                .parse()
                .map_err(|_| format!("prefix length {p:?} is not a number"))?;
            if n > u32::from(max) {
                return Err(format!("prefix length {n} > {max}"));
            }
            n as u8
        }
    };
    if addr.is_unspecified() || addr.is_multicast() || addr.is_loopback() {
        return Err("not usable as a virtual address (unspecified, multicast or loopback)".into());
    }
    if let IpAddr::V4(v4) = addr {
        if v4.is_broadcast() {
            return Err("not usable as a virtual address (broadcast)".into());
        }
    }
    Ok(VirtualAddr { addr, prefix_len })
}

/// A name the kernel accepts for an interface.
pub(super) fn ifname(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("empty".into());
    }
    if name.len() > IFNAMSIZ_MAX {
        return Err(format!("{name:?} is longer than {IFNAMSIZ_MAX} bytes"));
    }
    // What the kernel's dev_valid_name refuses.
    if name == "."
        || name == ".."
        || name.contains(|c: char| c == '/' || c == ':' || c.is_whitespace())
    {
        return Err(format!("{name:?} is not a valid interface name"));
    }
    Ok(())
}

/// iproute2's rule: the label is the interface name or starts with
/// `<interface>:`.
pub(super) fn label(label: &str, ifname: &str) -> Result<(), String> {
    if label.len() > IFNAMSIZ_MAX {
        return Err(format!("{label:?} is longer than {IFNAMSIZ_MAX} bytes"));
    }
    if label != ifname
        && !label
            .strip_prefix(ifname)
            .is_some_and(|rest| rest.starts_with(':'))
    {
        return Err(format!(
            "{label:?} must be \"{ifname}\" or start with \"{ifname}:\""
        ));
    }
    Ok(())
}
