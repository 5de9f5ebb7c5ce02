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
    #[arg(long, default_value_t = 3)]
    nodes: usize,
    /// VHIDs per node (ids 1..=N, 1..=250)
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u8).range(1..=250))]
    vhids: u8,
    /// Length of the fault phase, e.g. 120s or 10m
    #[arg(long, default_value = "120s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Fault kinds, comma separated: kill,term,pause,link,recreate,addr,
    /// partition,oneway,loss,reload,slowhook,failhook or all
    #[arg(long, default_value = "all")]
    faults: String,
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
    /// Largest RSS growth allowed after warm-up, in KiB
    #[arg(long, default_value_t = 2048)]
    rss_growth_kib: u64,
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

    let kinds = match FaultKind::parse_list(&args.faults) {
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
        nodes: args.nodes.max(2),
        vhids: args.vhids,
        duration: args.duration,
        kinds,
        advbase: args.advbase,
        out: args
            .out
            .unwrap_or_else(|| PathBuf::from(format!("/tmp/carpd-chaos-{seed}"))),
        carpd,
        warmup: args.warmup,
        rss_growth_kib: args.rss_growth_kib,
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
