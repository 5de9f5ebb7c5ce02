//! The daemon's error type and how it is printed.

use std::fmt;
use std::path::PathBuf;

/// Where in a configuration file a problem is: `file`, `file:line` or
/// `file:line:col` (lines and columns count from 1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    pub path: PathBuf,
    pub line: Option<usize>,
    pub col: Option<usize>,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.path.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
            if let Some(col) = self.col {
                write!(f, ":{col}")?;
            }
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration file could not be read.
    #[error("cannot read {}", path.display())]
    ReadConfig {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The configuration file is malformed or invalid.
    #[error("{location}: {message}")]
    Config { location: Location, message: String },
    /// The UCARP-compatible command line is incomplete or inconsistent.
    #[error("{0}")]
    Usage(String),
    #[error("cannot read password file {}", path.display())]
    PasswordFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot start the async runtime")]
    Runtime(#[source] std::io::Error),
    #[error("cannot install the {name} handler")]
    Signal {
        name: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot daemonize")]
    Daemonize(#[source] nix::Error),
    /// `realtime = true` could not be put in effect.
    #[error("realtime: {message}")]
    Realtime {
        message: String,
        #[source]
        source: nix::Error,
    },
    #[error("cannot set up logging: {0}")]
    Logging(String),
    #[error(transparent)]
    Engine(#[from] carp_engine::Error),
    #[error("shutdown interrupted by a second signal; addresses may remain")]
    ShutdownInterrupted,
    #[error(
        "another carpd is already running on the control socket {} (or set a different control_socket)",
        .0.display()
    )]
    AlreadyRunning(PathBuf),
    #[error("{} exists and is not a socket; not replacing it", .0.display())]
    NotASocket(PathBuf),
    #[error("control socket {}", path.display())]
    ControlSocket {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot listen for metrics on {addr}")]
    Metrics {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    /// A control request the daemon refused or could not carry out.
    #[error("{0}")]
    Refused(String),
    #[error("{context}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    /// 2 for problems in what the operator wrote (file or command line), 1
    /// for failures at run time.
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::ReadConfig { .. }
            | Error::Config { .. }
            | Error::Usage(_)
            | Error::PasswordFile { .. } => 2,
            _ => 1,
        }
    }
}

/// `error: cause: cause...` on one line. A cause already printed by the
/// error above it (errors that embed their source in their message) is not
/// repeated.
pub fn chain(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut cause = err.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !out.ends_with(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cause = c.source();
    }
    // One line, whatever the causes contain.
    out.replace('\n', " ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_is_one_line_without_repeats() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "gone");
        let e = Error::ReadConfig {
            path: "/x.toml".into(),
            source: io,
        };
        assert_eq!(chain(&e), "cannot read /x.toml: gone");

        let inner = std::io::Error::other("boom");
        let e = Error::Engine(carp_engine::Error::Io {
            context: "bind".into(),
            source: inner,
        });
        assert_eq!(chain(&e), "bind: boom");
    }

    #[test]
    fn location_forms() {
        let mut l = Location {
            path: "/a.toml".into(),
            line: None,
            col: None,
        };
        assert_eq!(l.to_string(), "/a.toml");
        l.line = Some(3);
        assert_eq!(l.to_string(), "/a.toml:3");
        l.col = Some(7);
        assert_eq!(l.to_string(), "/a.toml:3:7");
    }
}
