//! The kinds of fault the tool injects and the parameters of one planned
//! fault (what, where, for how long), as drawn by the schedule.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// A kind of fault, selectable on the command line by its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FaultKind {
    /// SIGKILL, then a restart.
    Kill,
    /// SIGTERM (clean exit), then a restart.
    Term,
    /// SIGSTOP, then SIGCONT.
    Pause,
    /// The node's switch port goes down (carrier loss), then up.
    Link,
    /// The node's interface is deleted, then created again under its name.
    Recreate,
    /// A third party deletes one virtual address the node holds.
    AddrDelete,
    /// Every CARP packet to and from the node is dropped.
    Partition,
    /// CARP packets in one direction only are dropped.
    OneWay,
    /// A share of the node's CARP packets is dropped.
    Loss,
    /// The configuration is rewritten and reloaded (SIGHUP), then restored.
    Reload,
    /// The node's hooks take a while before they act.
    SlowHooks,
    /// The node's hooks act, then exit with a failure status.
    FailHooks,
}

impl FaultKind {
    pub const ALL: [FaultKind; 12] = [
        FaultKind::Kill,
        FaultKind::Term,
        FaultKind::Pause,
        FaultKind::Link,
        FaultKind::Recreate,
        FaultKind::AddrDelete,
        FaultKind::Partition,
        FaultKind::OneWay,
        FaultKind::Loss,
        FaultKind::Reload,
        FaultKind::SlowHooks,
        FaultKind::FailHooks,
    ];

    pub fn name(self) -> &'static str {
        match self {
            FaultKind::Kill => "kill",
            FaultKind::Term => "term",
            FaultKind::Pause => "pause",
            FaultKind::Link => "link",
            FaultKind::Recreate => "recreate",
            FaultKind::AddrDelete => "addr",
            FaultKind::Partition => "partition",
            FaultKind::OneWay => "oneway",
            FaultKind::Loss => "loss",
            FaultKind::Reload => "reload",
            FaultKind::SlowHooks => "slowhook",
            FaultKind::FailHooks => "failhook",
        }
    }

    /// Parses a comma-separated list of names (`all` for every kind, `none`
    /// for no fault at all).
    pub fn parse_list(s: &str) -> Result<Vec<FaultKind>, String> {
        if s.trim() == "none" {
            return Ok(Vec::new());
        }
        let mut kinds = Vec::new();
        for name in s.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            if name == "all" {
                kinds.extend(FaultKind::ALL);
            } else {
                kinds.push(name.parse()?);
            }
        }
        kinds.sort();
        kinds.dedup();
        if kinds.is_empty() {
            return Err("no fault kinds given".to_string());
        }
        Ok(kinds)
    }
}

impl FromStr for FaultKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        FaultKind::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = FaultKind::ALL.iter().map(|k| k.name()).collect();
                format!("unknown fault kind {s:?} (known: {}, all)", names.join(","))
            })
    }
}

impl fmt::Display for FaultKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Which of a node's packets a filter drops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    In,
    Out,
    Both,
}

impl Direction {
    pub fn name(self) -> &'static str {
        match self {
            Direction::In => "in",
            Direction::Out => "out",
            Direction::Both => "in+out",
        }
    }
}

/// What a reload changes in the node's configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReloadChange {
    /// VHIDs only this node has (ids above the base set).
    Add(Vec<u8>),
    /// Base VHIDs this node stops running.
    Remove(Vec<u8>),
    /// Base VHIDs whose advskew changes to the given value.
    Skew(Vec<u8>, u8),
}

/// One fault with its parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    Kill,
    Term,
    Pause,
    Link,
    Recreate,
    /// Which of the virtual addresses the node holds is deleted: the n-th
    /// (modulo their number) in address order.
    AddrDelete(u8),
    Partition,
    OneWay(Direction),
    Loss {
        percent: u8,
        direction: Direction,
    },
    Reload(ReloadChange),
    SlowHooks(Duration),
    FailHooks,
}

impl Fault {
    pub fn kind(&self) -> FaultKind {
        match self {
            Fault::Kill => FaultKind::Kill,
            Fault::Term => FaultKind::Term,
            Fault::Pause => FaultKind::Pause,
            Fault::Link => FaultKind::Link,
            Fault::Recreate => FaultKind::Recreate,
            Fault::AddrDelete(_) => FaultKind::AddrDelete,
            Fault::Partition => FaultKind::Partition,
            Fault::OneWay(_) => FaultKind::OneWay,
            Fault::Loss { .. } => FaultKind::Loss,
            Fault::Reload(_) => FaultKind::Reload,
            Fault::SlowHooks(_) => FaultKind::SlowHooks,
            Fault::FailHooks => FaultKind::FailHooks,
        }
    }

    /// Whether the node cannot hold addresses while it lasts (its carpd is
    /// stopped, or its interface is down or gone). Under the other faults a
    /// node can still take over: a partitioned one does so on its own.
    pub fn disables_node(&self) -> bool {
        matches!(
            self,
            Fault::Kill | Fault::Term | Fault::Pause | Fault::Link | Fault::Recreate
        )
    }

    /// How much later than usual the node's hooks act while it lasts.
    pub fn hook_delay(&self) -> Duration {
        match self {
            Fault::SlowHooks(d) => *d,
            _ => Duration::ZERO,
        }
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fault::AddrDelete(n) => write!(f, "addr (#{n} of those held)"),
            Fault::OneWay(d) => write!(f, "oneway ({})", d.name()),
            Fault::Loss { percent, direction } => {
                write!(f, "loss ({percent} %, {})", direction.name())
            }
            Fault::Reload(ReloadChange::Add(v)) => write!(f, "reload (add vhids {v:?})"),
            Fault::Reload(ReloadChange::Remove(v)) => write!(f, "reload (remove vhids {v:?})"),
            Fault::Reload(ReloadChange::Skew(v, s)) => {
                write!(f, "reload (advskew {s} on vhids {v:?})")
            }
            Fault::SlowHooks(d) => write!(f, "slowhook ({} ms)", d.as_millis()),
            other => f.write_str(other.kind().name()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for k in FaultKind::ALL {
            assert_eq!(k.name().parse::<FaultKind>(), Ok(k));
        }
    }

    #[test]
    fn lists() {
        assert_eq!(
            FaultKind::parse_list("pause, kill,kill"),
            Ok(vec![FaultKind::Kill, FaultKind::Pause])
        );
        assert_eq!(FaultKind::parse_list("all").map(|v| v.len()), Ok(12));
        assert!(FaultKind::parse_list("kill,nope").is_err());
        assert!(FaultKind::parse_list("").is_err());
        assert_eq!(FaultKind::parse_list("none"), Ok(vec![]));
    }
}
