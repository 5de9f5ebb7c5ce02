//! carpd end to end: the tests are in `tests/*.rs`, one file per area, each
//! running real carpd processes in network namespaces built by
//! `carpd-testbed`. They need root and the `carpd` binary of the same
//! profile (`cargo build -p carpd`; `cargo test --workspace` builds it).
