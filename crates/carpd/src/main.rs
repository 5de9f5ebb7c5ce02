//! carpd: the daemon binary.

fn main() {}
