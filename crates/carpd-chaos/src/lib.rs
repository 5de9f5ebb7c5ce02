//! carpd under random faults: N nodes × M VHIDs in network namespaces, a
//! fault schedule drawn from a seed, and a checker of the invariants over
//! the recorded address timeline.

pub mod adverts;
pub mod bed;
pub mod check;
pub mod config;
pub mod error;
pub mod fault;
pub mod inject;
pub mod report;
pub mod resources;
pub mod rng;
pub mod run;
pub mod schedule;
pub mod timeline;
