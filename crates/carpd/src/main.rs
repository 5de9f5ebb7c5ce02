//! carpd: the CARP failover daemon, configured by a TOML file or by ucarp's
//! command line.

mod accept;
mod blocking;
mod cli;
mod client;
mod control;
mod events;
mod journald;
mod logging;
mod memory;
mod metrics;
mod notify;
mod realtime;
mod run;
mod ucarp;

use std::process::ExitCode;

use carpd::{config, error};

fn main() -> ExitCode {
    let mode = match cli::parse(std::env::args_os().collect()) {
        Ok(mode) => mode,
        Err(e) => {
            // Help and version go to stdout with status 0, usage errors to
            // stderr with status 2.
            let _ = e.print();
            return ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(2));
        }
    };
    let result = run::main(mode);
    // The last lines of a clean shutdown are still queued for the log
    // writer threads.
    logging::finish();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("carpd: {}", error::chain(&e));
            ExitCode::from(e.exit_code())
        }
    }
}
