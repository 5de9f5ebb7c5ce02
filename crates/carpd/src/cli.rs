//! Command-line dispatch: carpd's own options (a TOML file) or ucarp's.

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};

use clap::{Args, Parser, Subcommand};
use clap_complete::Shell;

use crate::config::{DEFAULT_CONTROL_SOCKET, DEFAULT_PATH};
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
                  USR1 logs the status of every VHID, USR2 makes every master step down.",
    subcommand_value_name = "COMMAND",
    subcommand_help_heading = "Commands (talk to a running carpd over its control socket)"
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
    /// Control socket to serve [default: control_socket in the file, else /run/carpd/carpd.sock]
    #[arg(long, value_name = "PATH")]
    pub control_socket: Option<PathBuf>,
    #[command(flatten)]
    pub log: LogArgs,
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Client commands, and the generators of the manual and completions.
#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// Show every VHID: state, timers, master, last transition, counters
    Status {
        /// One JSON document instead of a table
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        socket: SocketArg,
    },
    /// Demote VHIDs (all unless filtered): a demoted master hands over to a
    /// preempting backup
    Demote(AdjustArgs),
    /// Undo a demotion (demote by a negative amount)
    Promote(AdjustArgs),
    /// Make masters step down once (all unless filtered)
    Stepdown {
        #[command(flatten)]
        filter: Filter,
        #[command(flatten)]
        socket: SocketArg,
    },
    /// Re-read the configuration file (as SIGHUP); a broken file is refused
    Reload {
        /// Only say which VHIDs would be added, removed, restarted (and
        /// why) or left alone; exit non-zero if the file is invalid
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        socket: SocketArg,
    },
    /// Say why each VHID is master or backup, and what would change it
    Explain {
        #[command(flatten)]
        filter: Filter,
        #[command(flatten)]
        socket: SocketArg,
    },
    /// Follow events as they happen: transitions, demotion changes, hooks,
    /// reloads, address conflicts and restores
    Events {
        /// One JSON object per line instead of text
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        filter: Filter,
        #[command(flatten)]
        socket: SocketArg,
    },
    /// Print the manual page (roff) to stdout
    #[command(hide = true)]
    Man,
    /// Print shell completions to stdout
    #[command(hide = true)]
    Completions {
        #[arg(value_enum)]
        shell: Shell,
    },
}

#[derive(Debug, Clone, Args)]
pub struct SocketArg {
    /// The daemon's control socket
    #[arg(long, value_name = "PATH", default_value = DEFAULT_CONTROL_SOCKET)]
    pub socket: PathBuf,
}

/// Which VHIDs a command applies to.
#[derive(Debug, Clone, Args)]
pub struct Filter {
    /// Only VHIDs on this interface
    #[arg(long, value_name = "IF")]
    pub interface: Option<String>,
    /// Only this VHID (on every interface unless --interface is given)
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u8).range(1..=255))]
    pub vhid: Option<u8>,
}

#[derive(Debug, Clone, Args)]
pub struct AdjustArgs {
    /// By how much (the demotion stays within 0..=255)
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..))]
    pub by: u8,
    #[command(flatten)]
    pub filter: Filter,
    /// Only VHIDs in this interface group (every VHID is in the group named
    /// after its interface, plus those listed in its `groups`)
    #[arg(long, value_name = "GROUP")]
    pub group: Option<String>,
    #[command(flatten)]
    pub socket: SocketArg,
}

/// The names of [`Command`]'s subcommands (and clap's `help`).
const COMMANDS: &[&str] = &[
    "status",
    "demote",
    "promote",
    "stepdown",
    "reload",
    "explain",
    "events",
    "man",
    "completions",
    "help",
];

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

/// Invoked as `ucarp`, or given any option only ucarp has (and no carpd
/// command, whose options may share names with ucarp's).
fn is_ucarp(args: &[OsString]) -> bool {
    if args.first().and_then(|a| Path::new(a).file_name()) == Some(OsStr::new(UCARP_NAME)) {
        return true;
    }
    if args
        .get(1)
        .and_then(|a| a.to_str())
        .is_some_and(|a| COMMANDS.contains(&a))
    {
        return false;
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
        assert!(!is_ucarp(&args(&["carpd", "demote", "--vhid", "3"])));
        assert!(!is_ucarp(&args(&["carpd", "stepdown", "--interface=eth0"])));
    }

    #[test]
    fn commands() {
        let Mode::Config(c) =
            parse(args(&["carpd", "demote", "--by", "5", "--vhid", "3"])).unwrap()
        else {
            panic!("not config mode")
        };
        let Some(Command::Demote(a)) = c.command else {
            panic!("not demote: {:?}", c.command)
        };
        assert_eq!(
            (a.by, a.filter.vhid, a.filter.interface),
            (5, Some(3), None)
        );
        assert_eq!(a.socket.socket, PathBuf::from(DEFAULT_CONTROL_SOCKET));

        let Mode::Config(c) =
            parse(args(&["carpd", "status", "--json", "--socket", "/s"])).unwrap()
        else {
            panic!("not config mode")
        };
        assert!(
            matches!(c.command, Some(Command::Status { json: true, socket }) if socket.socket == Path::new("/s"))
        );
        assert!(parse(args(&["carpd", "promote", "--by", "0"])).is_err());
        assert!(parse(args(&["carpd", "completions", "tcsh"])).is_err());
        // Every name the dispatch knows is a real command.
        for name in COMMANDS.iter().filter(|n| **n != "help") {
            assert!(
                <ConfigArgs as clap::CommandFactory>::command()
                    .find_subcommand(name)
                    .is_some(),
                "{name}"
            );
        }
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
