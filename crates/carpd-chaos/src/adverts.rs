//! Advertisement accounting of the soak: what one node sent against what
//! the other received or dropped, read from `carpd status --json`.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::check::{Invariant, Violation};
use crate::error::{Error, Result};

/// Totals over every VHID of one carpd.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// Advertisement packets: carpd counts one advertisement per interval,
    /// sent once per address family of the VHID, so a dual-stack VHID's
    /// count is taken twice here.
    pub sent: u64,
    pub received: u64,
    /// Advertisements the carpd read and dropped, whatever the reason.
    pub dropped: u64,
}

impl Counters {
    /// Sums the VHIDs of a `carpd status --json` answer.
    pub fn parse(json: &str) -> Result<Counters> {
        let v: serde_json::Value =
            serde_json::from_str(json).map_err(|e| Error::Command(format!("carpd status: {e}")))?;
        let vhids = v["vhids"]
            .as_array()
            .ok_or_else(|| Error::Command("carpd status: no \"vhids\" list".to_string()))?;
        let mut c = Counters::default();
        for vhid in vhids {
            let families = families(&vhid["addresses"]);
            c.sent += vhid["adverts_sent"].as_u64().unwrap_or(0) * families;
            c.received += vhid["adverts_received"].as_u64().unwrap_or(0);
            if let Some(drops) = vhid["drops"].as_object() {
                c.dropped += drops
                    .values()
                    .filter_map(serde_json::Value::as_u64)
                    .sum::<u64>();
            }
        }
        Ok(c)
    }

    pub fn read(carpd: &str, socket: &Path) -> Result<Counters> {
        let socket = socket
            .to_str()
            .ok_or_else(|| Error::Setup(format!("path is not UTF-8: {}", socket.display())))?;
        let out = carpd_testbed::try_run(&[carpd, "status", "--json", "--socket", socket])?;
        Counters::parse(&out)
    }

    pub fn since(&self, earlier: &Counters) -> Counters {
        Counters {
            sent: self.sent.saturating_sub(earlier.sent),
            received: self.received.saturating_sub(earlier.received),
            dropped: self.dropped.saturating_sub(earlier.dropped),
        }
    }
}

/// How many address families (1 or 2) a VHID's `addresses` list spans.
fn families(addresses: &serde_json::Value) -> u64 {
    let list: Vec<&str> = addresses
        .as_array()
        .map(|a| a.iter().filter_map(serde_json::Value::as_str).collect())
        .unwrap_or_default();
    let v6 = list.iter().any(|a| a.contains(':'));
    let v4 = list.iter().any(|a| !a.contains(':'));
    u64::from(v4) + u64::from(v6)
}

/// Whether what `from` sent and `to` did not count (received or dropped)
/// stays within the loss: at most twice the configured share, plus what
/// may be in flight when the counters were read (one per VHID).
pub fn unaccounted(from: &Counters, to: &Counters, loss_percent: u8, vhids: u64) -> Option<String> {
    let counted = to.received + to.dropped;
    let missing = from.sent.saturating_sub(counted);
    let extra = counted.saturating_sub(from.sent);
    let allowed = from.sent * 2 * u64::from(loss_percent) / 100 + vhids;
    if missing > allowed || extra > vhids {
        Some(format!(
            "sent {} vs received {} + dropped {} by the peer: {missing} missing, {extra} extra (allowed {allowed} missing at {loss_percent} % loss)",
            from.sent, to.received, to.dropped
        ))
    } else {
        None
    }
}

/// Each node's advertisements over the run (`deltas`, one per node) against
/// what the other counted. Only for two nodes: with more, every node hears
/// every master and the totals do not pair up.
pub fn check(deltas: &[Counters], loss_percent: u8, vhids: u64) -> Vec<Violation> {
    let mut out = Vec::new();
    if deltas.len() != 2 {
        return out;
    }
    for (from, to) in [(0, 1), (1, 0)] {
        if let Some(detail) = unaccounted(&deltas[from], &deltas[to], loss_percent, vhids) {
            out.push(Violation {
                invariant: Invariant::Accounting,
                at: Instant::now(),
                length: Duration::ZERO,
                addr: None,
                node: Some(from),
                detail: format!("node {from} -> node {to}: {detail}"),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_status() {
        let json = r#"{"ok":true,"vhids":[
            {"adverts_sent":10,"adverts_received":0,"drops":{},
             "addresses":["10.0.0.1/24","fd00::1/64"]},
            {"adverts_sent":5,"adverts_received":7,"drops":{"bad_hmac":2,"ttl":1},
             "addresses":["fd00::2/64"]}]}"#;
        assert_eq!(
            Counters::parse(json).ok(),
            Some(Counters {
                sent: 25,
                received: 7,
                dropped: 3
            })
        );
        assert!(Counters::parse("{}").is_err());
        assert!(Counters::parse("nope").is_err());
    }

    #[test]
    fn accounting_within_the_loss() {
        let from = Counters {
            sent: 100_000,
            ..Counters::default()
        };
        let to = |received| Counters {
            received,
            dropped: 0,
            sent: 0,
        };
        assert_eq!(unaccounted(&from, &to(99_000), 1, 1000), None);
        assert!(unaccounted(&from, &to(96_000), 1, 1000).is_some());
        assert!(unaccounted(&from, &to(102_000), 1, 1000).is_some());
        let pair = [from, to(99_500)];
        let v = check(&pair, 1, 1000);
        // Node 1 sent nothing and node 0 counted nothing: fine; node 0's
        // advertisements are accounted for.
        assert!(v.is_empty(), "{v:?}");
        assert_eq!(check(&[from, to(90_000)], 1, 1000).len(), 1);
        assert!(check(&[from], 1, 1000).is_empty());
    }
}
