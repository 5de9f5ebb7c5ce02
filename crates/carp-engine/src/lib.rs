//! The async CARP engine: the only place with sockets and time.
//!
//! `spec` (what to run) and `Engine` (the handle the daemon drives) are the
//! interface to the daemon.
//!
//! ```text
//!  IPv4 raw socket ──┐                       ┌─> VHID task (eth0, 1) ─┐
//!  (recvmmsg)        ├─> rx: check, demux, ──┼─> VHID task (eth0, 2) ─┼─> sockets, rtnetlink,
//!  IPv6 raw socket ──┤   HMAC, try_send      └─> VHID task (eth1, 1) ─┘   ARP/NA, hooks
//!                    │   (a BACKUP's keepalives:        │
//!                    │    noted, no wake-up)            └─> advertiser: the steady
//!  link, address ────┴──> follow: (commands)                advertisements of MASTERs,
//!                                                           one sendmmsg per grid instant
//! ```

pub mod accept_mode;
mod addresses;
mod advertiser;
pub mod announce;
#[cfg(feature = "bench")]
pub mod bench;
mod clock;
mod conflict;
pub mod engine;
pub mod error;
pub mod events;
mod follow;
mod history;
pub mod hooks;
mod keepalive;
mod log_limit;
pub mod netlink;
mod offload;
mod operator;
mod peers;
mod rx;
pub mod share;
mod socket;
pub mod spec;
mod stats;
mod track;
mod vhid;
pub mod vmac;

pub use clock::{GRID_SLOTS as ADVERT_GRID_SLOTS, advert_grid_origin};
pub use engine::{Engine, PeerStatus, ReloadReport, VhidStatus};
pub use error::Error;
pub use events::{Event, EventBus, EventKind};
pub use spec::{
    EngineSpec, HookSpec, InterfaceSpec, ShareSpec, TrackScope, TrackerKind, TrackerSpec,
    TransportSpec, VhidFilter, VhidKey, VhidSpec, VirtualAddr,
};
pub use stats::{LATENESS_BUCKETS_US, LatenessSummary, OffsetSummary};
pub use track::TrackerStatus;
