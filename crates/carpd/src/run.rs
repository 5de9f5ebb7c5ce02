//! Start-up, the signal loop and shutdown.

use std::path::{Path, PathBuf};

use carp_engine::{Engine, EngineSpec, VhidKey};
use tokio::signal::unix::{Signal, SignalKind, signal};
use tracing::{error, info, warn};

use crate::cli::{Mode, UCARP_NAME};
use crate::config::Config;
use crate::error::{Error, chain};
use crate::logging::{self, Facility, LogSettings};

/// Run the daemon described by the command line until a signal stops it.
pub fn main(mode: Mode) -> Result<(), Error> {
    match mode {
        Mode::Config(args) => {
            let config = Config::load(&args.config)?;
            if args.check_config {
                println!("{}: ok: {}", args.config.display(), config.summary());
                return Ok(());
            }
            logging::init(&LogSettings {
                args: args.log,
                debug: args.debug,
                stderr: true,
                syslog: Facility::NONE,
                ident: "carpd".into(),
            })?;
            info!(config = %args.config.display(), "starting with {}", config.summary());
            serve(config.spec, Some(args.config), false)
        }
        Mode::Ucarp(args) => {
            // Everything ucarp checks is checked before going to the
            // background, so a bad command line still fails visibly.
            let spec = args.to_spec()?;
            if args.daemonize {
                // Keep the working directory: relative script paths must
                // keep working as they do with ucarp. No threads exist yet,
                // so forking here is safe.
                nix::unistd::daemon(true, false).map_err(Error::Daemonize)?;
            }
            logging::init(&LogSettings {
                args: args.log.clone(),
                debug: args.debug,
                stderr: !args.daemonize,
                syslog: args.facility,
                ident: UCARP_NAME.into(),
            })?;
            info!("starting in UCARP-compatible mode");
            // ucarp's own start-up warnings: without scripts (and without
            // --manage-addresses) nothing moves the address.
            if args.upscript.is_none() {
                warn!("no script called when going up");
            }
            if args.downscript.is_none() {
                warn!("no script called when going down");
            }
            serve(spec, None, args.daemonize)
        }
    }
}

fn serve(spec: EngineSpec, reload_from: Option<PathBuf>, detached: bool) -> Result<(), Error> {
    // Multi-threaded so a VHID task busy in a netlink round trip or a hook
    // spawn never holds back the timers of the others; two workers match
    // the small machines this runs on, and the work per VHID is tiny.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("carpd")
        .enable_all()
        .build()
        .map_err(Error::Runtime)?;
    let result = runtime.block_on(daemon(spec, reload_from));
    if detached {
        // stderr is gone: the log is the only place the reason can go.
        if let Err(e) = &result {
            error!("exiting: {}", chain(e));
        }
    }
    result
}

fn listen(kind: SignalKind, name: &'static str) -> Result<Signal, Error> {
    signal(kind).map_err(|source| Error::Signal { name, source })
}

async fn daemon(spec: EngineSpec, reload_from: Option<PathBuf>) -> Result<(), Error> {
    // Handlers first: a TERM during start-up must not kill the process with
    // addresses half installed.
    let mut term = listen(SignalKind::terminate(), "SIGTERM")?;
    let mut int = listen(SignalKind::interrupt(), "SIGINT")?;
    let mut hup = listen(SignalKind::hangup(), "SIGHUP")?;
    let mut usr1 = listen(SignalKind::user_defined1(), "SIGUSR1")?;
    let mut usr2 = listen(SignalKind::user_defined2(), "SIGUSR2")?;

    let engine = Engine::start(spec).await?;
    info!("running");

    let why = loop {
        tokio::select! {
            _ = term.recv() => break "SIGTERM",
            _ = int.recv() => break "SIGINT",
            _ = hup.recv() => match &reload_from {
                Some(path) => reload(&engine, path).await,
                None => info!("SIGHUP ignored: the UCARP-compatible command line has no file to reload"),
            },
            _ = usr1.recv() => log_status(&engine).await,
            _ = usr2.recv() => {
                let stepped = engine.step_down(None).await;
                info!("SIGUSR2: {} master(s) stepped down: {}", stepped.len(), keys(&stepped));
            }
        }
    };

    info!("{why}: shutting down (masters bow out and remove their addresses)");
    tokio::select! {
        () = engine.shutdown() => {
            info!("stopped");
            Ok(())
        }
        _ = term.recv() => Err(Error::ShutdownInterrupted),
        _ = int.recv() => Err(Error::ShutdownInterrupted),
    }
}

/// Re-read and validate the file; keep the running configuration if it is
/// not valid.
async fn reload(engine: &Engine, path: &Path) {
    // A small file read; not worth a blocking-pool round trip.
    let config = match Config::load(path) {
        Ok(c) => c,
        Err(e) => {
            error!("SIGHUP: {}; keeping the running configuration", chain(&e));
            return;
        }
    };
    match engine.reload(config.spec).await {
        Ok(r) => {
            info!(
                added = %keys(&r.added),
                removed = %keys(&r.removed),
                changed = %keys(&r.changed),
                unchanged = r.unchanged,
                "SIGHUP: reloaded {}: {} added, {} removed, {} changed, {} unchanged",
                path.display(),
                r.added.len(),
                r.removed.len(),
                r.changed.len(),
                r.unchanged
            );
        }
        Err(e) => error!("SIGHUP: reload of {} failed: {}", path.display(), chain(&e)),
    }
}

async fn log_status(engine: &Engine) {
    let all = engine.status().await;
    if all.is_empty() {
        info!("status: no VHIDs configured");
    }
    for s in all {
        let master = s.master.map_or_else(|| "-".to_string(), |m| m.to_string());
        let drops: u64 = s.drops.values().sum();
        if drops > 0 {
            // Only the reasons that happened, to keep the line short.
            warn!(
                interface = %s.key.interface,
                vhid = s.key.vhid,
                drops = ?s.drops,
                "status: dropped advertisements"
            );
        }
        info!(
            interface = %s.key.interface,
            vhid = s.key.vhid,
            state = s.state.as_str(),
            master = %master,
            advbase = s.advbase,
            advskew = s.advskew,
            demote = s.demote,
            in_state_for = ?s.in_state_for,
            transitions = s.transitions,
            last_transition = s.last_transition.as_deref().unwrap_or("-"),
            adverts_sent = s.adverts_sent,
            adverts_received = s.adverts_received,
            drops,
            "status"
        );
    }
}

/// `eth0/1 eth0/2`, or `-` for none.
fn keys(list: &[VhidKey]) -> String {
    if list.is_empty() {
        return "-".into();
    }
    list.iter()
        .map(|k| format!("{}/{}", k.interface, k.vhid))
        .collect::<Vec<_>>()
        .join(" ")
}
