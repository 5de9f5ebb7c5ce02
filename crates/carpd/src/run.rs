//! Start-up, the signal loop, reloads and shutdown.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use carp_engine::engine::InterfaceDrops;
use carp_engine::{Engine, EngineSpec, Event, VhidFilter, VhidKey, VhidStatus};
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::sync::{Mutex, RwLock};
use tracing::{error, info, warn};

use crate::cli::{ConfigArgs, Mode, UCARP_NAME};
use crate::config::{Config, DEFAULT_CONTROL_SOCKET, RealtimePriority};
use crate::control::{self, ReloadInfo, key_name};
use crate::error::{Error, chain};
use crate::logging::{self, Facility, LogSettings};
use crate::metrics::{self, Snapshot};
use crate::realtime;
use crate::ucarp::UcarpArgs;
use crate::{client, notify};

/// What to run and what to serve around it.
struct Setup {
    spec: EngineSpec,
    /// The file to reload from (none in UCARP-compatible mode).
    reload: Option<ReloadSource>,
    control: Option<Control>,
    metrics_listen: Option<SocketAddr>,
    /// `realtime = true`: the runtime thread's SCHED_RR priority.
    realtime: Option<RealtimePriority>,
}

/// The claimed control socket; the file goes when this is dropped.
struct Control {
    file: SocketFile,
    listener: std::os::unix::net::UnixListener,
    access: control::Access,
}

#[derive(Debug)]
struct ReloadSource {
    path: PathBuf,
    /// The control socket was given on the command line, which wins over
    /// the file, so the file's `control_socket` does not matter.
    socket_from_cli: bool,
}

/// Run the daemon described by the command line until a signal stops it,
/// or carry out one client command.
pub fn main(mode: Mode) -> Result<(), Error> {
    match mode {
        Mode::Config(args) => start_from_file(args),
        Mode::Ucarp(args) => start_ucarp(&args),
    }
}

/// carpd configured by its TOML file (or a client command to a running one).
fn start_from_file(args: ConfigArgs) -> Result<(), Error> {
    if let Some(command) = args.command {
        return client::run(command);
    }
    let config = Config::load(&args.config)?;
    if args.check_config {
        println!("{}: ok: {}", args.config.display(), config.summary());
        return Ok(());
    }
    let path = args
        .control_socket
        .clone()
        .or(config.control_socket.clone())
        .unwrap_or_else(|| DEFAULT_CONTROL_SOCKET.into());
    // Before anything else: a second carpd on this socket stops
    // here with one line, having touched nothing.
    let (listener, stale) = control::claim(&path, config.control_group.as_ref())?;
    let control = Control {
        file: SocketFile(path),
        listener,
        access: control::Access::new(config.control_group.clone()),
    };
    logging::init(&LogSettings {
        args: args.log,
        debug: args.debug,
        stderr: true,
        syslog: Facility::NONE,
        ident: "carpd".into(),
    })?;
    info!(config = %args.config.display(), "starting with {}", config.summary());
    if stale {
        info!(path = %control.file.0.display(), "replaced a stale control socket");
    }
    serve(
        Setup {
            spec: config.spec,
            reload: Some(ReloadSource {
                path: args.config,
                socket_from_cli: args.control_socket.is_some(),
            }),
            control: Some(control),
            metrics_listen: config.metrics_listen,
            realtime: config.realtime,
        },
        false,
    )
}

/// carpd in UCARP-compatible mode: one VHID from ucarp's command line.
fn start_ucarp(args: &UcarpArgs) -> Result<(), Error> {
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
    if let Some(w) = args.password_file_warning() {
        warn!("{w}");
    }
    // ucarp's own start-up warnings: without scripts (and without
    // --manage-addresses) nothing moves the address.
    if args.upscript.is_none() {
        warn!("no script called when going up");
    }
    if args.downscript.is_none() {
        warn!("no script called when going down");
    }
    // Like ucarp, no control socket: one process per VHID is the
    // ucarp way, and they would all want the same default path.
    serve(
        Setup {
            spec,
            reload: None,
            control: None,
            metrics_listen: None,
            realtime: None,
        },
        args.daemonize,
    )
}

fn serve(setup: Setup, detached: bool) -> Result<(), Error> {
    // One thread: the work per VHID is tiny (a timer, a signature, a send)
    // and every wait (netlink, hooks, sockets) is async, while a second
    // worker only adds cross-thread wake-ups and work stealing. Blocking
    // work (configuration and password files at reload, group lookups,
    // starting hook processes, /proc/sys) goes to `spawn_blocking`'s threads.
    // With `realtime`, this thread, which runs the runtime, runs real-time
    // (see `realtime` for which threads do not).
    if let Some(priority) = setup.realtime {
        realtime::enter(priority)?;
        info!(
            priority = priority.get(),
            "running real-time: SCHED_RR, memory locked"
        );
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .thread_name("carpd")
        .enable_all()
        .build()
        .map_err(Error::Runtime)?;
    let result = runtime.block_on(daemon(setup));
    // A blocking thread may be stuck on something outside carpd (a user
    // database lookup, a hook's program on a hung mount): exit without it.
    runtime.shutdown_timeout(Duration::from_secs(1));
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

/// Removes the control socket file when the daemon ends, however it ends.
struct SocketFile(PathBuf);

impl Drop for SocketFile {
    fn drop(&mut self) {
        control::remove(&self.0);
    }
}

/// What the control socket, the metrics listener and the signal loop share.
#[derive(Debug)]
pub struct Shared {
    /// `None` once shutdown has begun.
    engine: RwLock<Option<Engine>>,
    /// Who may use the control socket (none in UCARP-compatible mode).
    access: Option<Arc<control::Access>>,
    /// Held for a whole reload, so two never interleave.
    reload: Mutex<ReloadState>,
    /// `realtime` as in effect since start-up (a reload cannot change it).
    realtime: Option<RealtimePriority>,
}

#[derive(Debug)]
struct ReloadState {
    source: Option<ReloadSource>,
    /// The socket being served, if any.
    control_socket: Option<PathBuf>,
    metrics: Option<metrics::Server>,
}

const SHUTTING_DOWN: &str = "carpd is shutting down";

impl Shared {
    /// Every event from now on.
    pub async fn events(&self) -> Result<tokio::sync::broadcast::Receiver<Event>, String> {
        let g = self.engine.read().await;
        let engine = g.as_ref().ok_or(SHUTTING_DOWN)?;
        Ok(engine.events().subscribe())
    }

    pub async fn status(&self) -> Result<(Vec<VhidStatus>, InterfaceDrops), String> {
        let g = self.engine.read().await;
        let engine = g.as_ref().ok_or(SHUTTING_DOWN)?;
        Ok((engine.status().await, engine.interface_drops().await))
    }

    /// Add `by` to the demotion of the matching VHIDs; their status after.
    pub async fn demote(&self, filter: &VhidFilter, by: i32) -> Result<Vec<VhidStatus>, String> {
        let g = self.engine.read().await;
        let engine = g.as_ref().ok_or(SHUTTING_DOWN)?;
        let done = engine.demote(filter, by).await;
        Ok(engine
            .status()
            .await
            .into_iter()
            .filter(|s| done.contains(&s.key))
            .collect())
    }

    /// Masters among the matching VHIDs step down: (how many matched, which
    /// stepped down).
    pub async fn step_down(&self, filter: &VhidFilter) -> Result<(usize, Vec<VhidKey>), String> {
        let g = self.engine.read().await;
        let engine = g.as_ref().ok_or(SHUTTING_DOWN)?;
        let matched = engine.step_down(filter).await;
        let n = matched.len();
        let stepped = matched
            .into_iter()
            .filter_map(|(key, was_master)| was_master.then_some(key))
            .collect();
        Ok((n, stepped))
    }

    pub async fn snapshot(&self) -> Option<Snapshot> {
        let g = self.engine.read().await;
        let engine = g.as_ref()?;
        Some(Snapshot {
            vhids: engine.status().await,
            interface_drops: engine.interface_drops().await,
            lateness: engine.timer_lateness(),
            control_refused: self.access.as_ref().map_or(0, |a| a.refused()),
            realtime: self.realtime.map(RealtimePriority::get),
            advert_grid_origin: carp_engine::advert_grid_origin()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64()),
            kernel_events_dropped: engine.kernel_events_dropped(),
        })
    }

    /// SIGHUP and `carpd reload`: validate the file, then apply it; on any
    /// error the running configuration stays as it is and the error is
    /// logged and returned.
    pub async fn reload(self: &Arc<Self>, origin: &str) -> Result<ReloadInfo, String> {
        let result = self.try_reload().await;
        match &result {
            Ok(info) => info!(origin, "{}", info.summary()),
            Err(e) => error!(
                origin,
                "reload refused: {e}; the running configuration stays"
            ),
        }
        result
    }

    /// `carpd reload --dry-run`: what a reload of the file would do,
    /// changing nothing; an invalid file is an error, as for a reload.
    pub async fn preview_reload(&self) -> Result<ReloadInfo, String> {
        let st = self.reload.lock().await;
        let config = Self::load_for_reload(&st, self.access.as_deref(), self.realtime).await?;
        let g = self.engine.read().await;
        let engine = g.as_ref().ok_or(SHUTTING_DOWN)?;
        let report = engine.preview(&config.spec).await.map_err(|e| chain(&e))?;
        let mut info = ReloadInfo::new(&report);
        if config.metrics_listen != st.metrics.as_ref().map(|m| m.addr) {
            info.metrics = Some(metrics::describe(config.metrics_listen));
        }
        Ok(info)
    }

    /// The file to reload, loaded and checked against what a reload cannot
    /// change.
    async fn load_for_reload(
        st: &ReloadState,
        access: Option<&control::Access>,
        realtime: Option<RealtimePriority>,
    ) -> Result<Config, String> {
        let Some(source) = &st.source else {
            return Err("nothing to reload: the UCARP-compatible command line has no file".into());
        };
        let path = source.path.clone();
        // Reading the file and its password files blocks (a password file
        // may even be a FIFO): off the runtime thread, which runs
        // every VHID's timers.
        let config = {
            let path = path.clone();
            tokio::task::spawn_blocking(move || Config::load(&path))
                .await
                .map_err(|e| format!("loading the configuration: {e}"))?
                .map_err(|e| chain(&e))?
        };
        if !source.socket_from_cli {
            let want = config
                .control_socket
                .clone()
                .unwrap_or_else(|| DEFAULT_CONTROL_SOCKET.into());
            if let Some(running) = &st.control_socket
                && *running != want
            {
                return Err(format!(
                    "{}: control_socket cannot change on reload ({} -> {}); restart carpd to move it",
                    path.display(),
                    running.display(),
                    want.display()
                ));
            }
        }
        if config.realtime != realtime {
            fn describe(r: Option<RealtimePriority>) -> String {
                r.map_or_else(|| "off".into(), |p| format!("priority {}", p.get()))
            }
            return Err(format!(
                "{}: realtime cannot change on reload ({} -> {}); restart carpd to change it",
                path.display(),
                describe(realtime),
                describe(config.realtime)
            ));
        }
        fn name(g: Option<&crate::config::ControlGroup>) -> &str {
            g.map_or("none", |g| g.name.as_str())
        }
        if let Some(access) = access
            && access.group() != config.control_group.as_ref()
        {
            return Err(format!(
                "{}: control_group cannot change on reload ({} -> {}); restart carpd to change it",
                path.display(),
                name(access.group()),
                name(config.control_group.as_ref())
            ));
        }
        Ok(config)
    }

    async fn try_reload(self: &Arc<Self>) -> Result<ReloadInfo, String> {
        let mut st = self.reload.lock().await;
        let config = Self::load_for_reload(&st, self.access.as_deref(), self.realtime).await?;
        let running_metrics = st.metrics.as_ref().map(|m| m.addr);
        // Bound before anything changes, so a taken port refuses the reload.
        let new_metrics = if config.metrics_listen == running_metrics {
            None
        } else {
            match config.metrics_listen {
                Some(addr) => Some(Some((
                    addr,
                    metrics::bind(addr).await.map_err(|e| chain(&e))?,
                ))),
                None => Some(None),
            }
        };

        notify::reloading();
        let outcome = {
            let g = self.engine.read().await;
            match g.as_ref() {
                Some(engine) => engine.reload(config.spec).await.map_err(|e| chain(&e)),
                None => Err(SHUTTING_DOWN.to_string()),
            }
        };
        let result = outcome.map(|report| {
            let mut info = ReloadInfo::new(&report);
            if let Some(m) = new_metrics {
                // The old listener stops as it is dropped.
                st.metrics = m.map(|(addr, l)| metrics::spawn(l, addr, Arc::clone(self)));
                info.metrics = Some(metrics::describe(st.metrics.as_ref().map(|m| m.addr)));
            }
            info
        });
        notify::ready("running");
        result
    }
}

async fn daemon(setup: Setup) -> Result<(), Error> {
    // Handlers first: a TERM during start-up must not kill the process with
    // addresses half installed.
    let mut term = listen(SignalKind::terminate(), "SIGTERM")?;
    let mut int = listen(SignalKind::interrupt(), "SIGINT")?;
    let mut hup = listen(SignalKind::hangup(), "SIGHUP")?;
    let mut usr1 = listen(SignalKind::user_defined1(), "SIGUSR1")?;
    let mut usr2 = listen(SignalKind::user_defined2(), "SIGUSR2")?;

    let control_socket = setup.control.as_ref().map(|c| c.file.0.clone());
    let (_socket_file, control_listener) = match setup.control {
        Some(Control {
            file,
            listener,
            access,
        }) => {
            let listener = tokio::net::UnixListener::from_std(listener).map_err(|source| {
                Error::ControlSocket {
                    path: file.0.clone(),
                    source,
                }
            })?;
            (Some(file), Some((listener, Arc::new(access))))
        }
        None => (None, None),
    };
    let metrics_listener = match setup.metrics_listen {
        Some(addr) => Some((addr, metrics::bind(addr).await?)),
        None => None,
    };

    let n = setup
        .spec
        .interfaces
        .iter()
        .map(|i| i.vhids.len())
        .sum::<usize>();
    let engine = Engine::start(setup.spec).await?;
    let shared = Arc::new(Shared {
        engine: RwLock::new(Some(engine)),
        access: control_listener.as_ref().map(|(_, a)| Arc::clone(a)),
        reload: Mutex::new(ReloadState {
            source: setup.reload,
            control_socket: control_socket.clone(),
            metrics: None,
        }),
        realtime: setup.realtime,
    });
    if let Some((addr, listener)) = metrics_listener {
        shared.reload.lock().await.metrics =
            Some(metrics::spawn(listener, addr, Arc::clone(&shared)));
    }
    let control_task = control_listener
        .map(|(l, access)| tokio::spawn(control::serve(l, Arc::clone(&shared), access)));
    let watchdog = notify::watchdog();
    notify::ready(&format!("running {n} VHID(s)"));
    info!(
        control_socket = %control_socket.as_ref().map_or("none".into(), |p| p.display().to_string()),
        metrics = %metrics::describe(setup.metrics_listen),
        "running"
    );

    let why = loop {
        tokio::select! {
            _ = term.recv() => break "SIGTERM",
            _ = int.recv() => break "SIGINT",
            _ = hup.recv() => {
                // logged inside, whatever the outcome
                let _ = shared.reload("SIGHUP").await;
            }
            _ = usr1.recv() => {
                if let Ok((all, _)) = shared.status().await {
                    log_status(all);
                }
            }
            _ = usr2.recv() => {
                if let Ok((_, stepped)) = shared.step_down(&VhidFilter::default()).await {
                    info!("SIGUSR2: {} master(s) stepped down: {}", stepped.len(), keys(&stepped));
                }
            }
        }
    };

    info!("{why}: shutting down (masters bow out and remove their addresses)");
    notify::stopping();
    if let Some(t) = control_task {
        t.abort();
    }
    if let Some(w) = watchdog {
        w.abort();
    }
    shared.reload.lock().await.metrics = None;
    // Waits for requests in flight; later ones hear "shutting down".
    let Some(engine) = shared.engine.write().await.take() else {
        return Ok(());
    };
    tokio::select! {
        () = engine.shutdown() => {
            info!("stopped");
            Ok(())
        }
        _ = term.recv() => Err(Error::ShutdownInterrupted),
        _ = int.recv() => Err(Error::ShutdownInterrupted),
    }
}

fn log_status(all: Vec<VhidStatus>) {
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
    list.iter().map(key_name).collect::<Vec<_>>().join(" ")
}
