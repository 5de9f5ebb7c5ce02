//! Up/down hook commands, run asynchronously with a timeout so a slow or
//! hanging script never delays advertisements.
//!
//! The hooks of one VHID run one after the other, in transition order, as
//! ucarp runs its scripts: a down hook that ran while the up hook was still
//! running would be undone by it (the up script adds the address after the
//! down script removed it, and a BACKUP keeps it). A transition while a hook
//! runs queues its hook; after the running one, only what the VHID's latest
//! state needs runs ([`HookQueue`]). The queue runs in its own task
//! ([`HookRunner`]), so the VHID's task never waits for a hook.
//!
//! Nothing about a hook can stall the runtime: the process is started on
//! the blocking pool (starting waits for `exec`, i.e. for the file system
//! the program is on), and its output is read by carpd and logged, so it
//! never writes to carpd's own stderr, whose reader may stall.

use std::net::IpAddr;
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use carp_proto::State;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::Command;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::Instrument;

use crate::events::{EventBus, EventKind};
use crate::spec::{HookSpec, VhidKey};
use crate::stats::VhidStats;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HookKind {
    Up,
    Down,
}

impl HookKind {
    pub fn as_str(self) -> &'static str {
        match self {
            HookKind::Up => "up",
            HookKind::Down => "down",
        }
    }
}

/// A hook a transition asks for: its kind, and the state entered (for
/// `CARP_STATE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct HookRequest {
    pub(crate) kind: HookKind,
    pub(crate) state: State,
}

/// The order of one VHID's hooks: at most one runs at a time, and what a
/// transition asks for while one runs waits. Of what waits, only the latest
/// request counts, since it is the one the VHID's latest state needs; and
/// it runs only if the last hook started is of the other kind. So the hook
/// of the state the VHID ends in is the last to run (e.g. up running, then
/// down and up asked for: the running up is all the MASTER needs).
#[derive(Debug, Default)]
pub(crate) struct HookQueue {
    running: bool,
    /// The kind of the hook started last (running or done).
    last_started: Option<HookKind>,
    waiting: Option<HookRequest>,
}

impl HookQueue {
    /// A transition asks for `request`: the hook to start now, if none is
    /// running (otherwise it waits).
    pub(crate) fn push(&mut self, request: HookRequest) -> Option<HookRequest> {
        if self.running {
            self.waiting = Some(request);
            return None;
        }
        Some(self.start(request))
    }

    /// The running hook ended: the hook to start next, if the latest state
    /// needs one.
    pub(crate) fn finished(&mut self) -> Option<HookRequest> {
        self.running = false;
        let next = self.waiting.take()?;
        if self.last_started == Some(next.kind) {
            return None;
        }
        Some(self.start(next))
    }

    fn start(&mut self, request: HookRequest) -> HookRequest {
        self.running = true;
        self.last_started = Some(request.kind);
        request
    }
}

/// Runs the hooks of one VHID in its own task, in the order of
/// [`HookQueue`]. Each run is bounded by the hook timeout; one that times
/// out is killed, then the queue goes on.
#[derive(Debug)]
pub(crate) struct HookRunner {
    /// The runner task and its queue; `None` when the VHID has no hook
    /// script, so that VHIDs without hooks cost no task.
    runner: Option<(mpsc::UnboundedSender<HookRequest>, JoinHandle<()>)>,
    /// How many requests were made.
    requested: u64,
}

/// What a VHID's hooks are run with.
#[derive(Debug)]
pub(crate) struct HookContext {
    pub(crate) spec: HookSpec,
    pub(crate) interface: String,
    pub(crate) vhid: u8,
    pub(crate) addresses: Vec<IpAddr>,
    /// Hook runs and failures are counted here.
    pub(crate) stats: Arc<VhidStats>,
    /// Hook starts and outcomes are published here.
    pub(crate) events: EventBus,
    pub(crate) key: VhidKey,
}

impl HookContext {
    /// Start the hook `request` names, if one is configured.
    fn spawn(&self, request: HookRequest) -> Option<JoinHandle<()>> {
        let stats = Arc::clone(&self.stats);
        let (events, key) = (self.events.clone(), self.key.clone());
        let hook = request.kind;
        let handle = spawn_hook(
            &self.spec,
            request.kind,
            &self.interface,
            self.vhid,
            request.state,
            &self.addresses,
            move |outcome| {
                if outcome != HookOutcome::Success {
                    stats.hook_failures.fetch_add(1, Ordering::Relaxed);
                }
                events.publish(Some(key), EventKind::HookFinished { hook, outcome });
            },
        )?;
        self.stats.hook_runs.fetch_add(1, Ordering::Relaxed);
        (self.events).publish(Some(self.key.clone()), EventKind::HookStarted { hook });
        Some(handle)
    }
}

impl HookRunner {
    /// Start the runner task. Must be called inside a tokio runtime.
    pub(crate) fn spawn(context: HookContext) -> HookRunner {
        let scripts = context.spec.up.is_some() || context.spec.down.is_some();
        let runner = scripts.then(|| {
            let (requests, received) = mpsc::unbounded_channel();
            let task = tokio::spawn(run_queue(received, move |r| context.spawn(r)));
            (requests, task)
        });
        HookRunner {
            runner,
            requested: 0,
        }
    }

    /// Queue the hook of a transition; returns at once.
    pub(crate) fn request(&mut self, request: HookRequest) {
        self.requested += 1;
        if let Some((requests, _)) = &self.runner {
            // the runner only ends once this sender is dropped
            let _ = requests.send(request);
        }
    }

    /// How many hooks were asked for so far.
    pub(crate) fn requested(&self) -> u64 {
        self.requested
    }

    /// No more requests: waits until the runner has finished the running
    /// hook and what waits, each bounded by the hook timeout. Dropping the
    /// runner instead lets them finish on their own.
    pub(crate) async fn close(self) {
        if let Some((requests, task)) = self.runner {
            drop(requests);
            let _ = task.await;
        }
    }
}

/// Run the requests in the order of [`HookQueue`] until the sender is gone
/// and nothing runs or waits. `spawn` starts a hook (`None`: none of that
/// kind is configured, which counts as run at once).
async fn run_queue(
    mut requests: mpsc::UnboundedReceiver<HookRequest>,
    spawn: impl Fn(HookRequest) -> Option<JoinHandle<()>>,
) {
    let mut queue = HookQueue::default();
    let mut running: Option<JoinHandle<()>> = None;
    let mut open = true;
    loop {
        let next = tokio::select! {
            r = requests.recv(), if open => match r {
                Some(request) => queue.push(request),
                None => {
                    open = false;
                    None
                }
            },
            () = until_done(&mut running), if running.is_some() => {
                running = None;
                queue.finished()
            }
            else => break,
        };
        let mut next = next;
        while let Some(request) = next {
            running = spawn(request);
            if running.is_some() {
                break;
            }
            next = queue.finished();
        }
    }
}

/// Until the running hook's task ends (never without one).
async fn until_done(running: &mut Option<JoinHandle<()>>) {
    match running {
        // a hook task that panicked has ended too
        Some(h) => {
            let _ = h.await;
        }
        None => std::future::pending().await,
    }
}

/// How a hook run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HookOutcome {
    Success,
    /// Non-zero exit code, or `None` if a signal ended it.
    Failed(Option<i32>),
    TimedOut,
    SpawnError(String),
}

/// Run the up or down command of `spec` (if configured) as
/// `<cmd> <interface> <first vip> [xparam]`, with `CARP_INTERFACE`,
/// `CARP_VHID`, `CARP_STATE`, `CARP_ADDRESSES` (space separated) in the
/// environment. Returns at once; the command runs in its own task, is killed
/// after `spec.timeout`, and its outcome is logged and passed to `done`.
///
/// Returns `None` (and does not call `done`) when no command of that kind is
/// configured. A zero `spec.timeout` means no time limit. The command runs
/// in its own process group, and on timeout the whole group is killed, so a
/// script's children do not outlive it. Its stdout and stderr go to the log,
/// bounded ([`forward_output`]). Aborting the returned task kills the
/// command without calling `done`. Must be called inside a tokio runtime.
pub fn spawn_hook(
    spec: &HookSpec,
    kind: HookKind,
    interface: &str,
    vhid: u8,
    state: State,
    addresses: &[IpAddr],
    done: impl FnOnce(HookOutcome) + Send + 'static,
) -> Option<tokio::task::JoinHandle<()>> {
    let program = match kind {
        HookKind::Up => spec.up.as_ref(),
        HookKind::Down => spec.down.as_ref(),
    }?;
    let vip = addresses.first().map(IpAddr::to_string).unwrap_or_default();
    let all = addresses
        .iter()
        .map(IpAddr::to_string)
        .collect::<Vec<_>>()
        .join(" ");

    let mut command = Command::new(program);
    command.arg(interface).arg(&vip);
    if let Some(xparam) = &spec.xparam {
        command.arg(xparam);
    }
    command
        .env("CARP_INTERFACE", interface)
        .env("CARP_VHID", vhid.to_string())
        .env("CARP_STATE", state.as_str())
        .env("CARP_ADDRESSES", &all)
        .stdin(Stdio::null())
        // piped and forwarded to the log by `run`, so that the hook never
        // writes to carpd's own stderr, whose reader may stall
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);

    let timeout = spec.timeout;
    let span = tracing::info_span!("hook", interface, vhid, hook = kind.as_str(),
        program = %program.display());
    Some(tokio::spawn(
        async move {
            let outcome = run(command, timeout).await;
            log_outcome(&outcome, timeout);
            done(outcome);
        }
        .instrument(span),
    ))
}

/// Put the calling thread at SCHED_OTHER, so that the process it starts
/// inherits that: a hook or check never runs at real-time priority, even
/// when the daemon does (carpd's `realtime`), whichever thread starts it.
fn normal_scheduling() {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: `param` is a valid sched_param for the duration of the call,
    // which only reads it; pid 0 is the calling thread. nix has no wrapper.
    let r = unsafe { libc::sched_setscheduler(0, libc::SCHED_OTHER, &param) };
    if r != 0 {
        // lowering the policy needs no privilege; nothing else can fail
        tracing::debug!(
            error = %std::io::Error::last_os_error(),
            "resetting the scheduling policy before starting a command"
        );
    }
}

/// Run `command` until it ends or `timeout` passes (zero: no limit); on
/// timeout its whole process group is killed. The process is started on
/// the blocking pool, since starting it waits until `exec` is done, which
/// can take as long as the file system holding the program (a hung
/// network mount: forever). Its stdout and stderr, if piped, are forwarded
/// to the log ([`forward_output`]).
pub(crate) async fn run(mut command: Command, timeout: Duration) -> HookOutcome {
    let spawned = tokio::task::spawn_blocking(move || {
        normal_scheduling();
        command.spawn()
    })
    .await;
    let mut child = match spawned {
        Ok(Ok(child)) => child,
        Ok(Err(e)) => return HookOutcome::SpawnError(e.to_string()),
        Err(e) => return HookOutcome::SpawnError(format!("starting the command: {e}")),
    };
    if let Some(stdout) = child.stdout.take() {
        tokio::spawn(forward_output(stdout, OutputStream::Stdout).in_current_span());
    }
    if let Some(stderr) = child.stderr.take() {
        tokio::spawn(forward_output(stderr, OutputStream::Stderr).in_current_span());
    }
    let waited = if timeout.is_zero() {
        Ok(child.wait().await)
    } else {
        tokio::time::timeout(timeout, child.wait()).await
    };
    match waited {
        Ok(Ok(status)) => outcome_of(status),
        Ok(Err(e)) => HookOutcome::SpawnError(format!("waiting for the command: {e}")),
        Err(_elapsed) => {
            // The child is not reaped yet, so its pid (= its process group id)
            // cannot have been reused.
            if let Some(pid) = child.id().and_then(|id| i32::try_from(id).ok())
                && let Err(e) = killpg(Pid::from_raw(pid), Signal::SIGKILL)
            {
                tracing::debug!(error = %e, "killing hook process group");
            }
            // Also covers a child that left its process group.
            let _ = child.start_kill();
            if let Err(e) = child.wait().await {
                tracing::warn!(error = %e, "reaping killed hook");
            }
            HookOutcome::TimedOut
        }
    }
}

/// Lines of one output stream of one run that are logged; later ones are
/// read and dropped, and counted in one line at the end.
const OUTPUT_LINES: u32 = 50;

/// Bytes of one output line that are logged; the rest of it is dropped.
const OUTPUT_LINE_LEN: usize = 512;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OutputStream {
    Stdout,
    Stderr,
}

/// Read a command's output stream to its end and log it line by line
/// (stdout at info, stderr at warn level), at most [`OUTPUT_LINES`] lines
/// of at most [`OUTPUT_LINE_LEN`] bytes. The pipe is always drained, so the
/// command never blocks writing to it, and its output never waits on
/// carpd's own log output (whose writer drops lines rather than wait).
async fn forward_output(mut pipe: impl AsyncRead + Unpin, stream: OutputStream) {
    let mut forward = OutputLines::new(stream);
    let mut buf = [0u8; 4096];
    loop {
        match pipe.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) => forward.push(&buf[..n]),
            Err(e) => {
                tracing::debug!(error = %e, "reading hook output");
                break;
            }
        }
    }
    forward.finish();
}

/// Splits a stream's bytes into lines and logs them, within the bounds.
#[derive(Debug)]
struct OutputLines {
    stream: OutputStream,
    line: Vec<u8>,
    logged: u32,
    dropped: u64,
}

impl OutputLines {
    fn new(stream: OutputStream) -> OutputLines {
        OutputLines {
            stream,
            line: Vec::new(),
            logged: 0,
            dropped: 0,
        }
    }

    fn push(&mut self, bytes: &[u8]) {
        for &b in bytes {
            if b == b'\n' {
                self.end_line();
            } else if self.line.len() < OUTPUT_LINE_LEN {
                self.line.push(b);
            }
        }
    }

    fn end_line(&mut self) {
        if self.logged >= OUTPUT_LINES {
            self.dropped += 1;
        } else {
            self.logged += 1;
            let line = String::from_utf8_lossy(&self.line);
            match self.stream {
                OutputStream::Stdout => tracing::info!(stream = "stdout", "hook: {line}"),
                OutputStream::Stderr => tracing::warn!(stream = "stderr", "hook: {line}"),
            }
        }
        self.line.clear();
    }

    /// The stream ended: log its last, unterminated line and how many were
    /// dropped.
    fn finish(mut self) {
        if !self.line.is_empty() {
            self.end_line();
        }
        if self.dropped > 0 {
            tracing::warn!(
                stream = self.stream.as_str(),
                dropped = self.dropped,
                "hook: {} more lines of output not logged (at most {OUTPUT_LINES} are)",
                self.dropped
            );
        }
    }
}

impl OutputStream {
    fn as_str(self) -> &'static str {
        match self {
            OutputStream::Stdout => "stdout",
            OutputStream::Stderr => "stderr",
        }
    }
}

fn outcome_of(status: ExitStatus) -> HookOutcome {
    if status.success() {
        HookOutcome::Success
    } else {
        HookOutcome::Failed(status.code())
    }
}

/// Log how a hook ended (in its span, which names the VHID, the kind and
/// the program).
fn log_outcome(outcome: &HookOutcome, timeout: Duration) {
    match outcome {
        HookOutcome::Success => tracing::debug!("hook succeeded"),
        HookOutcome::Failed(Some(code)) => tracing::warn!(exit_code = code, "hook failed"),
        HookOutcome::Failed(None) => tracing::warn!("hook killed by a signal"),
        HookOutcome::TimedOut => tracing::warn!(?timeout, "hook timed out and was killed"),
        HookOutcome::SpawnError(e) => tracing::warn!(error = %e, "hook could not be run"),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    const UP: HookRequest = HookRequest {
        kind: HookKind::Up,
        state: State::Master,
    };
    const DOWN: HookRequest = HookRequest {
        kind: HookKind::Down,
        state: State::Backup,
    };
    const DOWN_INIT: HookRequest = HookRequest {
        kind: HookKind::Down,
        state: State::Init,
    };

    #[test]
    fn idle_queue_starts_at_once() {
        let mut q = HookQueue::default();
        assert_eq!(q.push(UP), Some(UP));
        assert_eq!(q.finished(), None);
        assert_eq!(q.push(DOWN), Some(DOWN));
        assert_eq!(q.finished(), None);
    }

    #[test]
    fn a_hook_waits_for_the_running_one() {
        let mut q = HookQueue::default();
        assert_eq!(q.push(UP), Some(UP));
        assert_eq!(q.push(DOWN), None);
        assert_eq!(q.finished(), Some(DOWN));
        assert_eq!(q.finished(), None);
    }

    #[test]
    fn back_to_the_running_hooks_state_needs_nothing_more() {
        let mut q = HookQueue::default();
        assert_eq!(q.push(UP), Some(UP));
        assert_eq!(q.push(DOWN), None);
        assert_eq!(q.push(UP), None);
        assert_eq!(q.finished(), None);
        // idle again: the next transition's hook starts at once
        assert_eq!(q.push(DOWN), Some(DOWN));
    }

    #[test]
    fn only_the_latest_waiting_request_runs() {
        let mut q = HookQueue::default();
        assert_eq!(q.push(UP), Some(UP));
        for r in [DOWN, UP, DOWN, UP, DOWN_INIT] {
            assert_eq!(q.push(r), None);
        }
        assert_eq!(q.finished(), Some(DOWN_INIT));
        assert_eq!(q.push(UP), None);
        assert_eq!(q.push(DOWN), None);
        // down is what ran last: the BACKUP needs nothing more
        assert_eq!(q.finished(), None);
    }

    #[test]
    fn down_at_start_then_up() {
        let mut q = HookQueue::default();
        assert_eq!(q.push(DOWN), Some(DOWN));
        assert_eq!(q.push(UP), None);
        assert_eq!(q.finished(), Some(UP));
        assert_eq!(q.push(DOWN), None);
        assert_eq!(q.finished(), Some(DOWN));
        assert_eq!(q.finished(), None);
    }

    /// Hooks that take `run_for` each, recording when each starts and how
    /// many run at once.
    #[derive(Default)]
    struct Fake {
        started: Mutex<Vec<HookKind>>,
        running: Mutex<(u32, u32)>,
    }

    impl Fake {
        fn spawn(self: &Arc<Self>, r: HookRequest, run_for: Duration) -> JoinHandle<()> {
            self.started.lock().unwrap().push(r.kind);
            {
                let mut running = self.running.lock().unwrap();
                running.0 += 1;
                running.1 = running.1.max(running.0);
            }
            let fake = Arc::clone(self);
            tokio::spawn(async move {
                tokio::time::sleep(run_for).await;
                fake.running.lock().unwrap().0 -= 1;
            })
        }
    }

    async fn run(requests: &[HookRequest], up_configured: bool) -> (Vec<HookKind>, u32) {
        let fake = Arc::new(Fake::default());
        let (tx, rx) = mpsc::unbounded_channel();
        let f = Arc::clone(&fake);
        let runner = tokio::spawn(run_queue(rx, move |r| {
            (up_configured || r.kind != HookKind::Up)
                .then(|| f.spawn(r, Duration::from_millis(200)))
        }));
        for r in requests {
            tx.send(*r).unwrap();
        }
        drop(tx);
        tokio::time::timeout(Duration::from_secs(10), runner)
            .await
            .expect("the queue ends once closed and done")
            .unwrap();
        let started = fake.started.lock().unwrap().clone();
        let most = fake.running.lock().unwrap().1;
        (started, most)
    }

    #[tokio::test]
    async fn runner_runs_one_at_a_time_in_order() {
        assert_eq!(
            run(&[UP, DOWN], true).await,
            (vec![HookKind::Up, HookKind::Down], 1)
        );
        assert_eq!(run(&[UP, DOWN, UP], true).await, (vec![HookKind::Up], 1));
        assert_eq!(
            run(&[DOWN, UP, DOWN, UP], true).await,
            (vec![HookKind::Down, HookKind::Up], 1)
        );
    }

    #[tokio::test]
    async fn an_unconfigured_hook_counts_as_run() {
        // no up hook: the queue goes on to the down hook at once
        assert_eq!(
            run(&[UP, DOWN, UP, DOWN], false).await,
            (vec![HookKind::Down], 1)
        );
    }

    #[test]
    fn output_is_logged_within_bounds() {
        let mut lines = OutputLines::new(OutputStream::Stdout);
        let long = vec![b'x'; 3 * OUTPUT_LINE_LEN];
        lines.push(&long);
        assert_eq!(lines.line.len(), OUTPUT_LINE_LEN, "a long line is cut");
        lines.push(b"\n");
        assert_eq!((lines.logged, lines.dropped), (1, 0));
        for _ in 0..OUTPUT_LINES + 9 {
            lines.push(b"a line\n");
        }
        lines.push(b"unterminated");
        assert_eq!((lines.logged, lines.dropped), (OUTPUT_LINES, 10));
        lines.end_line();
        assert_eq!(lines.dropped, 11);
    }

    /// A hook that writes far more than a pipe holds, on both streams, still
    /// ends at once: its output is read while it runs.
    #[tokio::test]
    async fn a_chatty_hook_is_never_blocked_by_its_output() {
        let dir = std::env::temp_dir().join(format!("carp-hook-output-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let script = dir.join("up");
        std::fs::write(
            &script,
            "#!/bin/sh\nyes out | head -n 300000\nyes err | head -n 300000 >&2\n",
        )
        .unwrap();
        std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let spec = HookSpec {
            up: Some(script),
            down: None,
            xparam: None,
            timeout: Duration::from_secs(20),
            down_at_start: false,
            down_on_exit: false,
        };
        let (tx, rx) = tokio::sync::oneshot::channel();
        let task = spawn_hook(
            &spec,
            HookKind::Up,
            "eth0",
            1,
            State::Master,
            &[],
            move |outcome| {
                let _ = tx.send(outcome);
            },
        )
        .unwrap();
        task.await.unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(rx.await.unwrap(), HookOutcome::Success);
    }
}
