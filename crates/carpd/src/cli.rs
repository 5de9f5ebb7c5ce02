//! Command-line dispatch: carpd's own options (a TOML file) or ucarp's.

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};

use clap::Parser;

use crate::config::DEFAULT_PATH;
use crate::logging::LogArgs;
use crate::ucarp::{self, UcarpArgs};

#[derive(Debug, Parser)]
#[command(
    name = "carpd",
    version,
    about = "CARP failover daemon: many VHIDs in one process, UCARP-compatible",
    after_help = "UCARP-compatible mode: given any ucarp option (e.g. --vhid, -a), or when run \
                  as `ucarp`, carpd takes ucarp 1.5.2's command line instead \
                  (see `carpd --ucarp --help`).\n\
                  Signals: TERM/INT shut down gracefully, HUP reloads the file, \
                  USR1 logs the status of every VHID, USR2 makes every master step down."
)]
pub struct ConfigArgs {
    /// Configuration file
    #[arg(short = 'c', long, value_name = "FILE", default_value = DEFAULT_PATH)]
    pub config: PathBuf,
    /// Validate the configuration file and exit (0 if valid)
    #[arg(long)]
    pub check_config: bool,
    /// Log at debug level
    #[arg(short = 'D', long)]
    pub debug: bool,
    #[command(flatten)]
    pub log: LogArgs,
}

#[derive(Debug)]
pub enum Mode {
    Config(ConfigArgs),
    Ucarp(Box<UcarpArgs>),
}

/// The program name carpd answers to in UCARP-compatible mode.
pub const UCARP_NAME: &str = "ucarp";

/// Parse the whole command line (`args[0]` included).
pub fn parse(args: Vec<OsString>) -> Result<Mode, clap::Error> {
    if is_ucarp(&args) {
        UcarpArgs::try_parse_from(args).map(|a| Mode::Ucarp(Box::new(a)))
    } else {
        ConfigArgs::try_parse_from(args).map(Mode::Config)
    }
}

/// Invoked as `ucarp`, or given any option only ucarp has.
fn is_ucarp(args: &[OsString]) -> bool {
    if args.first().and_then(|a| Path::new(a).file_name()) == Some(OsStr::new(UCARP_NAME)) {
        return true;
    }
    for arg in args.iter().skip(1) {
        let Some(arg) = arg.to_str() else { continue };
        if arg == "--" {
            break;
        }
        if let Some(long) = arg.strip_prefix("--") {
            let name = long.split_once('=').map_or(long, |(n, _)| n);
            if ucarp::LONG_FLAGS.contains(&name) {
                return true;
            }
        } else if let Some(short) = arg.strip_prefix('-') {
            // Only the first letter: the rest may be a value (`-ieth0`).
            if short
                .chars()
                .next()
                .is_some_and(|c| ucarp::SHORT_FLAGS.contains(c))
            {
                return true;
            }
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<OsString> {
        a.iter().map(OsString::from).collect()
    }

    #[test]
    fn dispatch() {
        assert!(!is_ucarp(&args(&["carpd"])));
        assert!(!is_ucarp(&args(&[
            "carpd",
            "--config",
            "/x.toml",
            "-D",
            "--check-config"
        ])));
        assert!(!is_ucarp(&args(&[
            "carpd",
            "-c",
            "/x.toml",
            "--log-format=json"
        ])));
        assert!(is_ucarp(&args(&["/usr/sbin/ucarp"])));
        assert!(is_ucarp(&args(&["carpd", "-ieth0"])));
        assert!(is_ucarp(&args(&["carpd", "-D", "--vhid=3"])));
        assert!(is_ucarp(&args(&["carpd", "--mcast=239.1.1.1"])));
        assert!(is_ucarp(&args(&["carpd", "--ucarp", "--help"])));
        assert!(!is_ucarp(&args(&["carpd", "--", "-i"])));
    }

    #[test]
    fn config_mode_defaults() {
        let Mode::Config(c) = parse(args(&["carpd"])).unwrap() else {
            panic!("not config mode")
        };
        assert_eq!(c.config, PathBuf::from(DEFAULT_PATH));
        assert!(!c.check_config && !c.debug);
        let Mode::Config(c) = parse(args(&["carpd", "--check-config", "-c", "/a.toml"])).unwrap()
        else {
            panic!("not config mode")
        };
        assert_eq!(c.config, PathBuf::from("/a.toml"));
        assert!(c.check_config);
    }
}
