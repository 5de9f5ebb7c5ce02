//! tracing output: human text or JSON lines on stderr, native journald
//! records (`--log-format journald`, or when systemd connected stderr to
//! the journal; see `journald.rs`), and syslog in UCARP-compatible mode
//! (ucarp logs to syslog unless `--facility=none`).
//!
//! Every output is written by its own thread behind a bounded queue
//! (`tracing-appender`'s non-blocking writer in lossy mode): the runtime
//! only queues a line, so a log reader that stops reading (a hung journald,
//! a wedged log shipper) cannot stop the advertisements. Lines that do not
//! fit in the queue are dropped and counted ([`lines_dropped`]); a watcher
//! thread logs how many once the output moves again.

use std::io::{self, IsTerminal, Write};
use std::os::unix::net::UnixDatagram;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use clap::{Args, ValueEnum};
use tracing::{Level, Metadata, warn};
use tracing_appender::non_blocking::{ErrorCounter, NonBlocking, NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, Registry};

use crate::error::Error;
use crate::journald;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines
    #[default]
    Text,
    /// One JSON object per line
    Json,
    /// Native journald records with structured fields (the default when
    /// systemd connected stderr to the journal)
    Journald,
}

/// Logging options shared by both command lines.
#[derive(Debug, Clone, Args)]
pub struct LogArgs {
    /// Format of the log output [default: journald when systemd connected
    /// stderr to the journal, else text]
    #[arg(long, value_enum)]
    pub log_format: Option<LogFormat>,
    /// Log filter, e.g. `debug` or `info,carp_engine=debug` [default: $RUST_LOG, else info]
    #[arg(long, value_name = "FILTER", value_parser = parse_filter)]
    pub log_level: Option<String>,
}

fn parse_filter(s: &str) -> Result<String, String> {
    EnvFilter::try_new(s)
        .map(|_| s.to_string())
        .map_err(|e| e.to_string())
}

/// A syslog facility by its ucarp/syslog.conf name, or none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Facility(Option<u8>);

impl Facility {
    pub const NONE: Facility = Facility(None);
}

impl FromStr for Facility {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let code = match s.to_ascii_lowercase().as_str() {
            "none" => return Ok(Facility::NONE),
            "kern" => 0,
            "user" => 1,
            "mail" => 2,
            "daemon" => 3,
            "auth" | "security" => 4,
            "syslog" => 5,
            "lpr" => 6,
            "news" => 7,
            "uucp" => 8,
            "cron" => 9,
            "authpriv" => 10,
            "ftp" => 11,
            "local0" => 16,
            "local1" => 17,
            "local2" => 18,
            "local3" => 19,
            "local4" => 20,
            "local5" => 21,
            "local6" => 22,
            "local7" => 23,
            _ => return Err(format!("unknown syslog facility {s:?}")),
        };
        Ok(Facility(Some(code)))
    }
}

/// Where and how to log.
#[derive(Debug, Clone)]
pub struct LogSettings {
    pub args: LogArgs,
    /// `-D/--debug`: debug level unless a filter is given.
    pub debug: bool,
    pub stderr: bool,
    pub syslog: Facility,
    /// Program name in syslog lines.
    pub ident: String,
}

type BoxedLayer = Box<dyn Layer<Registry> + Send + Sync>;

/// Lines an output may have queued while its reader is slow; beyond this
/// new lines are dropped (and counted) instead of waiting.
const QUEUED_LINES: usize = 16 * 1024;
/// How often the watcher looks at the outputs.
const WATCH_EVERY: Duration = Duration::from_secs(1);
/// An output whose write has not returned for this long is stalled: the
/// final flush at exit does not wait for it.
const STALLED_AFTER: Duration = Duration::from_secs(1);

/// The outputs of this process, set once by [`init`].
static OUTPUTS: OnceLock<Vec<Arc<Output>>> = OnceLock::new();

/// Install the global subscriber. A filter from `--log-level` wins over
/// `-D`, which wins over `RUST_LOG`; the default is `info`.
///
/// The writer threads live until [`finish`], which the process calls on
/// its way out.
pub fn init(s: &LogSettings) -> Result<(), Error> {
    let filter = match (&s.args.log_level, s.debug) {
        (Some(f), _) => EnvFilter::try_new(f).map_err(|e| Error::Logging(e.to_string()))?,
        (None, true) => EnvFilter::new("debug"),
        (None, false) => {
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"))
        }
    };

    let mut layers: Vec<BoxedLayer> = Vec::new();
    let mut outputs = Vec::new();
    let mut journald_error = None;
    let format = s.args.log_format.unwrap_or_else(|| {
        if journald::stderr_is_journal() {
            LogFormat::Journald
        } else {
            LogFormat::Text
        }
    });
    let journald = s.stderr && format == LogFormat::Journald;
    let progress = Arc::new(Progress::new());
    let journal = journald
        .then(|| journald::start(QUEUED_LINES, &s.ident, Arc::clone(&progress)))
        .and_then(|r| r.map_err(|e| journald_error = Some(e)).ok());
    if let Some((relay, counts)) = journal {
        outputs.push(Arc::new(Output {
            name: "journald",
            dropped: Dropped::Relayed(counts),
            progress,
            guard: Mutex::new(None),
        }));
        layers.push(relay.boxed());
    } else if s.stderr {
        let (writer, output) = Output::start("stderr", io::stderr());
        outputs.push(output);
        // Colours only for a person at a terminal, not in files or journals.
        let layer = tracing_subscriber::fmt::layer()
            .with_writer(writer)
            .with_ansi(io::stderr().is_terminal());
        layers.push(match format {
            LogFormat::Text | LogFormat::Journald => layer.boxed(),
            LogFormat::Json => layer.json().boxed(),
        });
    }
    let mut syslog_error = None;
    if let Facility(Some(facility)) = s.syslog {
        match Syslog::connect(facility, &s.ident) {
            Ok((w, output)) => {
                outputs.push(output);
                layers.push(
                    tracing_subscriber::fmt::layer()
                        .with_writer(w)
                        .with_ansi(false)
                        .without_time()
                        .with_level(false)
                        .with_target(false)
                        .boxed(),
                );
            }
            // Not fatal: ucarp also runs where there is no syslog daemon.
            Err(e) => syslog_error = Some(e),
        }
    }

    tracing_subscriber::registry()
        .with(layers)
        .with(filter)
        .try_init()
        .map_err(|e| Error::Logging(e.to_string()))?;
    if OUTPUTS.set(outputs).is_ok() {
        start_watcher();
    }
    if let Some(e) = journald_error {
        warn!("cannot log to journald ({e}); logging to stderr");
    }
    if let Some(e) = syslog_error {
        tracing::debug!("no syslog: /dev/log: {e}");
    }
    Ok(())
}

/// Log lines dropped so far because an output's queue was full.
pub fn lines_dropped() -> u64 {
    OUTPUTS
        .get()
        .map_or(0, |all| all.iter().map(|o| o.dropped()).sum())
}

/// Write out what is queued and stop the writer threads: called once, as
/// the process ends. An output stalled in a write is not waited for (its
/// reader is stuck; waiting would only delay the exit).
pub fn finish() {
    for output in OUTPUTS.get().into_iter().flatten() {
        if let Dropped::Relayed(counts) = &output.dropped {
            // the journald writer has no guard: wait until it has sent
            // what was queued, unless it is stuck
            let queued = counts.queued.load(Ordering::Acquire);
            let deadline = Instant::now() + STALLED_AFTER;
            while output.progress.writes() < queued
                && !output.progress.stalled(STALLED_AFTER)
                && Instant::now() < deadline
            {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        let guard = output.guard.lock().map(|mut g| g.take()).unwrap_or(None);
        if let Some(guard) = guard {
            if output.progress.stalled(STALLED_AFTER) {
                // Dropping the guard would wait for the stuck worker, then
                // print about it to stdout, which may be the same stuck pipe.
                std::mem::forget(guard);
            } else {
                drop(guard);
            }
        }
    }
}

/// One log output: its writer thread, its drop count and its progress.
struct Output {
    name: &'static str,
    dropped: Dropped,
    progress: Arc<Progress>,
    /// Taken by [`finish`].
    guard: Mutex<Option<WorkerGuard>>,
}

impl Output {
    /// Start the writer thread for `sink`; log lines go to the returned
    /// writer.
    fn start<W: Write + Send + 'static>(name: &'static str, sink: W) -> (NonBlocking, Arc<Output>) {
        let progress = Arc::new(Progress::new());
        let (writer, guard) = NonBlockingBuilder::default()
            .lossy(true)
            .buffered_lines_limit(QUEUED_LINES)
            .thread_name(&format!("carpd-log-{name}"))
            .finish(Tracked {
                inner: sink,
                progress: Arc::clone(&progress),
            });
        let output = Output {
            name,
            dropped: Dropped::Appender(writer.error_counter()),
            progress,
            guard: Mutex::new(Some(guard)),
        };
        (writer, Arc::new(output))
    }

    fn dropped(&self) -> u64 {
        match &self.dropped {
            Dropped::Appender(c) => u64::try_from(c.dropped_lines()).unwrap_or(u64::MAX),
            Dropped::Relayed(c) => c.dropped.load(Ordering::Relaxed),
        }
    }
}

/// Where an output counts the lines its full queue dropped.
enum Dropped {
    /// `tracing-appender`'s non-blocking writer.
    Appender(ErrorCounter),
    /// The journald relay.
    Relayed(Arc<journald::Counts>),
}

/// What the writer thread of an output has done, for the watcher and the
/// final flush.
#[derive(Debug)]
pub(crate) struct Progress {
    epoch: Instant,
    /// Writes completed (successful or not).
    writes: AtomicU64,
    /// When the write in progress began, in milliseconds after `epoch`,
    /// plus one; 0 when no write is in progress.
    busy_since: AtomicU64,
}

impl Progress {
    fn new() -> Progress {
        Progress {
            epoch: Instant::now(),
            writes: AtomicU64::new(0),
            busy_since: AtomicU64::new(0),
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    pub(crate) fn begin(&self) {
        self.busy_since
            .store(self.now_ms().saturating_add(1), Ordering::Release);
    }

    pub(crate) fn end(&self) {
        self.busy_since.store(0, Ordering::Release);
        self.writes.fetch_add(1, Ordering::AcqRel);
    }

    fn writes(&self) -> u64 {
        self.writes.load(Ordering::Acquire)
    }

    /// A write has been in progress for at least `after`.
    fn stalled(&self, after: Duration) -> bool {
        match self.busy_since.load(Ordering::Acquire) {
            0 => false,
            since => {
                let after = u64::try_from(after.as_millis()).unwrap_or(u64::MAX);
                self.now_ms().saturating_add(1).saturating_sub(since) >= after
            }
        }
    }
}

/// The sink of an output as its writer thread sees it: every write is
/// recorded in [`Progress`].
struct Tracked<W> {
    inner: W,
    progress: Arc<Progress>,
}

impl<W: Write> Write for Tracked<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.progress.begin();
        let result = self.inner.write(buf);
        self.progress.end();
        result
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Decides when to report dropped lines: once some were dropped and the
/// output has written since the last look, i.e. it moves again.
#[derive(Debug, Default)]
struct DropReport {
    reported: u64,
    writes: u64,
}

impl DropReport {
    /// Given the counts now, the number of newly dropped lines to report.
    fn check(&mut self, dropped: u64, writes: u64) -> Option<u64> {
        let moved = writes != self.writes;
        self.writes = writes;
        if moved && dropped > self.reported {
            let n = dropped - self.reported;
            self.reported = dropped;
            Some(n)
        } else {
            None
        }
    }
}

/// A thread that reports dropped lines once an output moves again. A
/// thread rather than a task: logging starts before the runtime and must
/// not depend on it.
fn start_watcher() {
    let spawned = std::thread::Builder::new()
        .name("carpd-log-watch".into())
        .spawn(|| {
            let outputs = OUTPUTS.get().map_or(&[][..], Vec::as_slice);
            let mut reports: Vec<DropReport> =
                outputs.iter().map(|_| DropReport::default()).collect();
            loop {
                std::thread::sleep(WATCH_EVERY);
                for (output, report) in outputs.iter().zip(&mut reports) {
                    if let Some(n) = report.check(output.dropped(), output.progress.writes()) {
                        warn!(
                            output = output.name,
                            dropped = n,
                            "{n} log lines dropped while the log output was blocked"
                        );
                    }
                }
            }
        });
    if let Err(e) = spawned {
        // Only the report is lost; the count is still exported.
        warn!(error = %e, "cannot start the log watcher thread");
    }
}

/// Formats each event as one syslog message and queues it for the syslog
/// output, which sends it as one datagram to the local syslog socket.
struct Syslog {
    out: NonBlocking,
    facility: u8,
    /// `ident[pid]: `
    tag: Arc<str>,
}

impl Syslog {
    fn connect(facility: u8, ident: &str) -> io::Result<(Syslog, Arc<Output>)> {
        let sock = UnixDatagram::unbound()?;
        sock.connect("/dev/log")?;
        let (out, output) = Output::start("syslog", Datagrams(sock));
        let syslog = Syslog {
            out,
            facility,
            tag: format!("{ident}[{}]: ", std::process::id()).into(),
        };
        Ok((syslog, output))
    }

    fn line(&self, severity: u8) -> SyslogLine {
        let mut buf =
            format!("<{}>", u16::from(self.facility) * 8 + u16::from(severity)).into_bytes();
        buf.extend_from_slice(self.tag.as_bytes());
        SyslogLine {
            out: self.out.clone(),
            buf,
        }
    }
}

impl<'a> MakeWriter<'a> for Syslog {
    type Writer = SyslogLine;

    fn make_writer(&'a self) -> SyslogLine {
        self.line(6)
    }

    fn make_writer_for(&'a self, meta: &Metadata<'_>) -> SyslogLine {
        let severity = match *meta.level() {
            Level::ERROR => 3,
            Level::WARN => 4,
            Level::INFO => 6,
            _ => 7,
        };
        self.line(severity)
    }
}

/// One syslog message, queued when the formatter drops the writer.
struct SyslogLine {
    out: NonBlocking,
    buf: Vec<u8>,
}

impl Write for SyslogLine {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for SyslogLine {
    fn drop(&mut self) {
        while self.buf.last() == Some(&b'\n') {
            self.buf.pop();
        }
        // Queued whole, so the writer thread sends it as one datagram; a
        // full queue counts the line as dropped.
        let _ = self.out.write_all(&self.buf);
    }
}

/// A connected datagram socket where each write is one message.
struct Datagrams(UnixDatagram);

impl Write for Datagrams {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        // Nowhere to report a failure to log, and a message that could not
        // be sent must not be retried forever: it counts as written.
        let _ = self.0.send(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn facilities() {
        assert_eq!("daemon".parse::<Facility>(), Ok(Facility(Some(3))));
        assert_eq!("LOCAL7".parse::<Facility>(), Ok(Facility(Some(23))));
        assert_eq!("none".parse::<Facility>(), Ok(Facility::NONE));
        assert!("bogus".parse::<Facility>().is_err());
    }

    #[test]
    fn syslog_lines_carry_priority_and_tag() {
        let (a, b) = UnixDatagram::pair().unwrap();
        b.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let (out, output) = Output::start("syslog-test", Datagrams(a));
        let s = Syslog {
            out,
            facility: 3,
            tag: "carpd[1]: ".into(),
        };
        {
            let mut w = s.line(4);
            w.write_all(b"hello\n").unwrap();
        }
        let mut buf = [0u8; 64];
        let n = b.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"<28>carpd[1]: hello");
        assert_eq!(output.dropped(), 0);
    }

    /// A sink whose writes wait until the test lets them through, like a
    /// pipe whose reader has stopped.
    struct Gate(std::sync::mpsc::Receiver<()>);

    impl Write for Gate {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let _ = self.0.recv();
            Ok(buf.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_stuck_output_drops_and_counts_instead_of_waiting() {
        let (open, gate) = std::sync::mpsc::channel();
        let (mut w, output) = Output::start("gate-test", Gate(gate));
        let lines = QUEUED_LINES + 100;
        let started = Instant::now();
        for _ in 0..lines {
            w.write_all(b"line\n").unwrap();
        }
        // Queuing never waits on the sink (a generous bound for a busy
        // machine; a waiting write would never return here).
        assert!(started.elapsed() < Duration::from_secs(10));
        // The queue holds QUEUED_LINES; the writer thread may already hold
        // the first line.
        let dropped = output.dropped();
        assert!((99..=100).contains(&dropped), "{dropped}");
        // The writer thread is stuck in its first write.
        std::thread::sleep(Duration::from_millis(50));
        assert!(output.progress.stalled(Duration::from_millis(10)));
        assert_eq!(output.progress.writes(), 0);
        drop(open);
        let moved = (0..1000).any(|_| {
            std::thread::sleep(Duration::from_millis(10));
            output.progress.writes() > 0
        });
        assert!(moved);
        assert!(!output.progress.stalled(Duration::from_secs(3600)));
    }

    #[test]
    fn drops_are_reported_once_the_output_moves_again() {
        let mut r = DropReport::default();
        assert_eq!(r.check(0, 5), None, "nothing dropped");
        assert_eq!(r.check(7, 5), None, "dropped, output still stuck");
        assert_eq!(r.check(9, 5), None, "dropped, output still stuck");
        assert_eq!(r.check(9, 6), Some(9), "moves again: all so far");
        assert_eq!(r.check(9, 8), None, "nothing new");
        assert_eq!(r.check(12, 8), None);
        assert_eq!(r.check(12, 9), Some(3), "only the new ones");
    }
}
