//! The suite's chaos run: 3 nodes × 50 VHIDs for two minutes of faults with
//! a fixed seed, failing on any violation of the invariants. Needs root,
//! nft, tcpdump and the carpd binary of the same profile next to
//! carpd-chaos (`cargo build -p carpd`; `cargo test --workspace` builds it).

use std::fs;
use std::process::Command;

/// Every fault kind the tool has.
const KINDS: &str = "all";

const SEED: &str = "20261129";

#[test]
fn two_minutes_of_faults_break_no_invariant() {
    let out = std::env::temp_dir().join(format!("carpd-chaos-suite-{}", std::process::id()));
    let out_str = out.to_str().expect("utf-8 temporary directory");
    let run = Command::new(env!("CARGO_BIN_EXE_carpd-chaos"))
        .args(["--seed", SEED, "--duration", "120s", "--faults", KINDS])
        .args(["--out", out_str])
        .output()
        .expect("start carpd-chaos");
    let stdout = String::from_utf8_lossy(&run.stdout);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(
        run.status.success(),
        "carpd-chaos failed ({}); files kept in {out_str}\n{stderr}\n{stdout}",
        run.status
    );
    assert!(stdout.contains("violations by invariant:"), "{stdout}");
    // A run that injected nothing would prove nothing.
    let total = stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix("total"))
        .and_then(|n| n.split_whitespace().next())
        .and_then(|n| n.parse::<u32>().ok())
        .unwrap_or(0);
    assert!(total >= 10, "only {total} faults injected:\n{stdout}");
    let _ = fs::remove_dir_all(&out);
}
