//! tracing output: human text or JSON lines on stderr, and syslog in
//! UCARP-compatible mode (ucarp logs to syslog unless `--facility=none`).

use std::io::{self, IsTerminal, Write};
use std::os::unix::net::UnixDatagram;
use std::str::FromStr;
use std::sync::Arc;

use clap::{Args, ValueEnum};
use tracing::{Level, Metadata};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, Registry};

use crate::error::Error;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines
    #[default]
    Text,
    /// One JSON object per line
    Json,
}

/// Logging options shared by both command lines.
#[derive(Debug, Clone, Args)]
pub struct LogArgs {
    /// Format of the log lines on stderr
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
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

/// Install the global subscriber. A filter from `--log-level` wins over
/// `-D`, which wins over `RUST_LOG`; the default is `info`.
pub fn init(s: &LogSettings) -> Result<(), Error> {
    let filter = match (&s.args.log_level, s.debug) {
        (Some(f), _) => EnvFilter::try_new(f).map_err(|e| Error::Logging(e.to_string()))?,
        (None, true) => EnvFilter::new("debug"),
        (None, false) => {
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"))
        }
    };

    let mut layers: Vec<BoxedLayer> = Vec::new();
    if s.stderr {
        // Colours only for a person at a terminal, not in files or journals.
        let layer = tracing_subscriber::fmt::layer()
            .with_writer(io::stderr)
            .with_ansi(io::stderr().is_terminal());
        layers.push(match s.args.log_format {
            LogFormat::Text => layer.boxed(),
            LogFormat::Json => layer.json().boxed(),
        });
    }
    let mut syslog_error = None;
    if let Facility(Some(facility)) = s.syslog {
        match Syslog::connect(facility, &s.ident) {
            Ok(w) => layers.push(
                tracing_subscriber::fmt::layer()
                    .with_writer(w)
                    .with_ansi(false)
                    .without_time()
                    .with_level(false)
                    .with_target(false)
                    .boxed(),
            ),
            // Not fatal: ucarp also runs where there is no syslog daemon.
            Err(e) => syslog_error = Some(e),
        }
    }

    tracing_subscriber::registry()
        .with(layers)
        .with(filter)
        .try_init()
        .map_err(|e| Error::Logging(e.to_string()))?;
    if let Some(e) = syslog_error {
        tracing::debug!("no syslog: /dev/log: {e}");
    }
    Ok(())
}

/// Sends each formatted event as one datagram to the local syslog socket.
struct Syslog {
    sock: Arc<UnixDatagram>,
    facility: u8,
    /// `ident[pid]: `
    tag: Arc<str>,
}

impl Syslog {
    fn connect(facility: u8, ident: &str) -> io::Result<Syslog> {
        let sock = UnixDatagram::unbound()?;
        sock.connect("/dev/log")?;
        Ok(Syslog {
            sock: Arc::new(sock),
            facility,
            tag: format!("{ident}[{}]: ", std::process::id()).into(),
        })
    }

    fn line(&self, severity: u8) -> SyslogLine {
        let mut buf =
            format!("<{}>", u16::from(self.facility) * 8 + u16::from(severity)).into_bytes();
        buf.extend_from_slice(self.tag.as_bytes());
        SyslogLine {
            sock: self.sock.clone(),
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

/// One syslog message, sent when the formatter drops the writer.
struct SyslogLine {
    sock: Arc<UnixDatagram>,
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
        // Nowhere to report a failure to log; a stopped syslog daemon must
        // not stop the daemon.
        let _ = self.sock.send(&self.buf);
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
        let s = Syslog {
            sock: Arc::new(a),
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
    }
}
