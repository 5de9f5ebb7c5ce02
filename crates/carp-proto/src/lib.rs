//! CARP, the Common Address Redundancy Protocol, and VRRP beside it,
//! without I/O.
//!
//! * [`packet`]: the 36-byte advertisement header, its checksum and the
//!   receive-side checks that decide whether bytes are a CARP advertisement.
//! * [`auth`]: the HMAC-SHA1 variants spoken by UCARP and the BSD kernels.
//! * [`machine`]: the INIT/BACKUP/MASTER state machine of one VHID, driven
//!   by the caller's clock, with CARP's or VRRP's rules.
//! * [`vrrp`]: the VRRPv3 (RFC 9568) and VRRPv2 (RFC 3768) advertisement,
//!   its checksums and receive-side checks.
//! * [`replay`]: opt-in replay protection for peers whose counters increase.
//!
//! Nothing here reads a clock, touches a socket or spawns a task, so every
//! rule can be tested byte for byte and microsecond for microsecond.

pub mod auth;
pub mod machine;
pub mod packet;
pub mod replay;
pub mod timing;
pub mod vrrp;

pub use auth::{AuthError, Authenticator, HmacMode};
pub use machine::{
    Action, AdvertGrid, CarpRules, Explanation, Machine, MachineConfig, Reason, Rules, SendAdvert,
    State, SteadyAdverts, SteadySchedule, VrrpRules,
};
pub use packet::{Advert, DropReason};
pub use timing::Timing;
