//! The README's first command: `examples/demo.sh` runs the two-node failover
//! demo end to end (election, crash and takeover, preemption, bow-out) with
//! this build of carpd, and leaves no namespace behind.

#![allow(clippy::unwrap_used)]

use std::process::Command;

#[test]
fn demo_script_runs_a_visible_failover() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
    let out = Command::new("bash")
        .arg(format!("{root}/examples/demo.sh"))
        .env("CARPD", carpd_testbed::carpd_exe())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "demo failed:\n{stdout}\n{stderr}");
    for step in [
        "10.99.0.100 is on host a",
        "BACKUP -> MASTER (master_down)",
        "10.99.0.100 is on host b",
        "BACKUP -> MASTER (preempt)",
        "MASTER -> BACKUP (peer_preferred)",
        "BACKUP -> MASTER (peer_bowed_out)",
        "carpd on a exited cleanly",
        "cleaned up: namespaces and files removed",
    ] {
        assert!(
            stdout.contains(step),
            "demo output lacks {step:?}:\n{stdout}"
        );
    }
    let left = Command::new("ip").args(["netns", "list"]).output().unwrap();
    let left = String::from_utf8_lossy(&left.stdout);
    assert!(!left.contains("carpd-demo-"), "namespaces left: {left}");
}
