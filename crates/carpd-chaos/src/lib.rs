//! carpd under random faults: N nodes × M VHIDs in network namespaces, a
//! fault schedule drawn from a seed, and a checker of the invariants over
//! the recorded address timeline.

pub mod check;
pub mod config;
pub mod fault;
pub mod resources;
pub mod rng;
pub mod schedule;
pub mod timeline;
