//! carpd-chaos: N carpd nodes × M VHIDs in network namespaces under random
//! faults drawn from a seed, with the invariants checked over the recorded
//! address timeline. Needs root, nft and tcpdump; build carpd first
//! (`cargo build -p carpd -p carpd-chaos`), it is found next to this
//! program unless `--carpd` names it.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use carpd_chaos::fault::FaultKind;
use carpd_chaos::report;
use carpd_chaos::run::{self, RunSpec};
use clap::Parser;
use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};

/// Set by SIGINT or SIGTERM; the run stops at its next step.
static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn set_stop(_: nix::libc::c_int) {
    // An atomic store is async-signal-safe.
    STOP.store(true, Ordering::Relaxed);
}

fn on_interrupt() -> nix::Result<()> {
    let action = SigAction::new(
        SigHandler::Handler(set_stop),
        SaFlags::SA_RESTART,
        SigSet::empty(),
    );
    for sig in [Signal::SIGINT, Signal::SIGTERM] {
        // SAFETY: the handler only stores to an atomic, which is
        // async-signal-safe; no other handler for these signals is replaced.
        unsafe { sigaction(sig, &action) }?;
    }
    Ok(())
}

#[derive(Debug, Parser)]
#[command(about = "carpd under random faults, with an invariant checker (needs root)")]
struct Args {
    /// Seed of the fault schedule [default: from the clock]; the same seed
    /// replays the same schedule
    #[arg(long)]
    seed: Option<u64>,
    /// [default: 3; soak: 2]
    #[arg(long)]
    nodes: Option<usize>,
    /// Links per node (eth0, eth1, ...; the link, recreate and reload
    /// faults act on eth0) [default: 1; soak: 4]
    #[arg(long)]
    links: Option<usize>,
    /// VHIDs per link (ids 1..=N, 1..=250) [default: 50; soak: 250]
    #[arg(long, value_parser = clap::value_parser!(u8).range(1..=250))]
    vhids: Option<u8>,
    /// Length of the fault phase, e.g. 120s or 10m [default: 120s; soak: 1h]
    #[arg(long, value_parser = humantime::parse_duration)]
    duration: Option<Duration>,
    /// Fault kinds, comma separated: kill,term,pause,link,recreate,addr,
    /// partition,oneway,loss,reload,slowhook,failhook, all or none
    /// [default: all; soak: none]
    #[arg(long)]
    faults: Option<String>,
    /// The soak: 2 nodes, 4 links x 250 VHIDs, 1 % loss on every node's
    /// input for an hour, no other fault; RSS growth under 1 MiB, constant
    /// descriptors, and each node's advertisements received or dropped by
    /// the other within the loss
    #[arg(long)]
    soak: bool,
    #[arg(long, default_value_t = 1)]
    advbase: u8,
    /// Directory for configurations, logs, the capture and the report
    /// [default: /tmp/carpd-chaos-<seed>]
    #[arg(long)]
    out: Option<PathBuf>,
    /// The carpd binary [default: `carpd` next to this program]
    #[arg(long)]
    carpd: Option<PathBuf>,
    /// Resource samples of a carpd younger than this are not compared
    #[arg(long, default_value = "20s", value_parser = humantime::parse_duration)]
    warmup: Duration,
    /// Largest RSS growth allowed after warm-up, in KiB [default: 2048;
    /// soak: 1024]
    #[arg(long)]
    rss_growth_kib: Option<u64>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    // SIGINT and SIGTERM end the run through its normal clean-up (healing,
    // stopping the nodes, deleting the namespaces). A handler, not a blocked
    // mask: children inherit a mask, and carpd would then ignore SIGTERM.
    if let Err(e) = on_interrupt() {
        eprintln!("carpd-chaos: installing the signal handler: {e}");
        return ExitCode::from(2);
    }

    let soak = args.soak;
    let default_faults = if soak { "none" } else { "all" };
    let kinds = match FaultKind::parse_list(args.faults.as_deref().unwrap_or(default_faults)) {
        Ok(k) => k,
        Err(e) => {
            eprintln!("carpd-chaos: --faults: {e}");
            return ExitCode::from(2);
        }
    };
    let seed = args.seed.unwrap_or_else(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(1, |d| d.as_secs())
    });
    let carpd = match args.carpd {
        Some(p) => p.display().to_string(),
        None => carpd_testbed::carpd_exe().to_string(),
    };
    let spec = RunSpec {
        seed,
        nodes: args.nodes.unwrap_or(if soak { 2 } else { 3 }).max(2),
        links: args.links.unwrap_or(if soak { 4 } else { 1 }).clamp(1, 16),
        vhids: args.vhids.unwrap_or(if soak { 250 } else { 50 }),
        duration: args
            .duration
            .unwrap_or(Duration::from_secs(if soak { 3600 } else { 120 })),
        kinds,
        advbase: args.advbase,
        out: args
            .out
            .unwrap_or_else(|| PathBuf::from(format!("/tmp/carpd-chaos-{seed}"))),
        carpd,
        warmup: args.warmup,
        rss_growth_kib: args
            .rss_growth_kib
            .unwrap_or(if soak { 1024 } else { 2048 }),
        steady_loss: soak.then_some(1),
    };
    match run::run(&spec, &STOP) {
        Ok(outcome) => {
            let text = report::render(&outcome);
            print!("{text}");
            let file = spec.out.join("report.txt");
            if let Err(e) = std::fs::write(&file, &text) {
                eprintln!("carpd-chaos: writing {}: {e}", file.display());
            }
            if STOP.load(Ordering::Relaxed) {
                eprintln!("carpd-chaos: interrupted, cleaned up");
            }
            if outcome.violations.is_empty() && !outcome.interrupted {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("carpd-chaos: seed {seed}: {e}");
            ExitCode::from(2)
        }
    }
}
