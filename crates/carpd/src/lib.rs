//! The configuration file loader and the error type it returns, as a
//! library so that the fuzz target in `fuzz/` can drive the loader; the
//! daemon itself is the `carpd` binary.

pub mod config;
pub mod error;
