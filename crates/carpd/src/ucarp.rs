//! UCARP 1.5.2's command line: one VHID, one IPv4 address, up/down scripts.
//!
//! Every ucarp option is accepted in its short and long form with ucarp's
//! meaning and defaults, so a ucarp command line runs unchanged. As with
//! ucarp, the scripts own the address unless `--manage-addresses` asks carpd
//! to install it.

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::time::Duration;

use carp_engine::{EngineSpec, HookSpec, InterfaceSpec, VhidSpec};
use carp_proto::HmacMode;
use carp_proto::machine::DemoteStyle;
use clap::{ArgMatches, CommandFactory, FromArgMatches, Parser};

use crate::config::{self, DEFAULT_GROUP, UCARP_MAX_KEY};
use crate::error::Error;
use crate::logging::{Facility, LogArgs};

/// ucarp's long options, for telling a ucarp command line from a carpd one.
pub const LONG_FLAGS: &[&str] = &[
    "interface",
    "srcip",
    "mcast",
    "vhid",
    "pass",
    "passfile",
    "preempt",
    "neutral",
    "addr",
    "advbase",
    "advskew",
    "upscript",
    "downscript",
    "deadratio",
    "shutdown",
    "daemonize",
    "ignoreifstate",
    "nomcast",
    "facility",
    "xparam",
    "manage-addresses",
    "hook-timeout",
    "ucarp",
];

/// ucarp's short options that carpd's own command line does not have.
pub const SHORT_FLAGS: &str = "ismvpoPnabkudrzBSMfx";

#[derive(Debug, Parser)]
#[command(
    name = "ucarp",
    about = "carpd in UCARP-compatible mode: one VHID, configured like ucarp 1.5.2",
    after_help = "The up/down scripts are run as `<script> <interface> <address> [xparam]`. \
                  As with ucarp they own the address, unless --manage-addresses is given.",
    args_override_self = true,
    disable_version_flag = true
)]
pub struct UcarpArgs {
    /// Bind interface <IF>
    #[arg(short = 'i', long, value_name = "IF")]
    pub interface: Option<String>,
    /// Source (real) IP address of this host [default: the interface's primary IPv4 address]
    #[arg(short = 's', long, value_name = "IP")]
    pub srcip: Option<Ipv4Addr>,
    /// Multicast group IP address
    #[arg(short = 'm', long, value_name = "IP", default_value_t = DEFAULT_GROUP)]
    pub mcast: Ipv4Addr,
    /// Virtual IP identifier (1-255)
    #[arg(short = 'v', long, value_name = "ID", value_parser = clap::value_parser!(u8).range(1..=255))]
    pub vhid: Option<u8>,
    /// Password
    #[arg(short = 'p', long, value_name = "PASS")]
    pub pass: Option<String>,
    /// Read the password from the first line of <FILE>
    #[arg(short = 'o', long, value_name = "FILE")]
    pub passfile: Option<PathBuf>,
    /// Become master as soon as possible
    #[arg(short = 'P', long)]
    pub preempt: bool,
    /// Don't run the down script at start if backup
    #[arg(short = 'n', long)]
    pub neutral: bool,
    /// Virtual shared IP address
    #[arg(short = 'a', long, value_name = "IP")]
    pub addr: Option<Ipv4Addr>,
    /// Advertisement frequency (seconds)
    #[arg(short = 'b', long, value_name = "SECONDS", default_value_t = config::DEFAULT_ADVBASE)]
    pub advbase: u8,
    /// Advertisement skew (0-255)
    #[arg(short = 'k', long, value_name = "SKEW", default_value_t = config::DEFAULT_ADVSKEW)]
    pub advskew: u8,
    /// Run <FILE> to become a master
    #[arg(short = 'u', long, value_name = "FILE")]
    pub upscript: Option<PathBuf>,
    /// Run <FILE> to become a backup
    #[arg(short = 'd', long, value_name = "FILE")]
    pub downscript: Option<PathBuf>,
    /// Ratio to consider a host as dead
    #[arg(
        short = 'r', long, value_name = "RATIO",
        default_value_t = config::DEFAULT_DEAD_RATIO,
        value_parser = clap::value_parser!(u8).range(1..=255)
    )]
    pub deadratio: u8,
    /// Enable debug output
    #[arg(short = 'D', long)]
    pub debug: bool,
    /// Call the down script at exit (if master)
    #[arg(short = 'z', long)]
    pub shutdown: bool,
    /// Run in the background
    #[arg(short = 'B', long)]
    pub daemonize: bool,
    /// Ignore interface state (down, no carrier)
    #[arg(short = 'S', long)]
    pub ignoreifstate: bool,
    /// Use broadcast (instead of multicast) advertisements
    #[arg(short = 'M', long)]
    pub nomcast: bool,
    /// Syslog facility, or `none` for no syslog
    #[arg(short = 'f', long, value_name = "FACILITY", default_value = "daemon")]
    pub facility: Facility,
    /// Extra parameter to send to the up/down scripts
    #[arg(short = 'x', long, value_name = "VALUE")]
    pub xparam: Option<String>,

    /// carpd: install and remove the address itself (the scripts still run)
    #[arg(long)]
    pub manage_addresses: bool,
    /// carpd: kill a script still running after this long
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_timeout)]
    pub hook_timeout: Duration,
    /// carpd: force UCARP-compatible mode (implied by any ucarp option)
    #[arg(long)]
    pub ucarp: bool,
    #[command(flatten)]
    pub log: LogArgs,

    /// Which of --pass/--passfile came last (ucarp keeps the last one).
    #[arg(skip)]
    pass_last: bool,
}

fn parse_timeout(s: &str) -> Result<Duration, String> {
    match humantime::parse_duration(s) {
        Ok(d) if !d.is_zero() => Ok(d),
        Ok(_) => Err("must be greater than zero".into()),
        Err(e) => Err(e.to_string()),
    }
}

impl UcarpArgs {
    pub fn try_parse_from<I, T>(args: I) -> Result<UcarpArgs, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        let matches: ArgMatches = UcarpArgs::command().try_get_matches_from(args)?;
        let mut parsed = UcarpArgs::from_arg_matches(&matches)?;
        parsed.pass_last = match (matches.index_of("pass"), matches.index_of("passfile")) {
            (Some(p), Some(f)) => p > f,
            (p, _) => p.is_some(),
        };
        Ok(parsed)
    }

    /// The VHID this command line describes; checks what ucarp checks at
    /// start-up (and reads the password file).
    pub fn to_spec(&self) -> Result<EngineSpec, Error> {
        let usage = |m: &str| Error::Usage(m.to_string());
        let interface = self
            .interface
            .clone()
            .filter(|i| !i.is_empty())
            .ok_or_else(|| usage("you must supply a network interface (--interface)"))?;
        let vhid = self
            .vhid
            .ok_or_else(|| usage("you must supply a valid virtual host id (--vhid)"))?;
        let key = match (&self.pass, &self.passfile) {
            (Some(p), Some(_)) if self.pass_last => p.as_bytes().to_vec(),
            (Some(p), None) => p.as_bytes().to_vec(),
            (_, Some(f)) => {
                config::read_password_file(f).map_err(|source| Error::PasswordFile {
                    path: f.clone(),
                    source,
                })?
            }
            (None, None) => Vec::new(),
        };
        if key.is_empty() {
            return Err(usage("you must supply a password (--pass or --passfile)"));
        }
        if key.len() > UCARP_MAX_KEY {
            return Err(Error::Usage(format!(
                "the password is {} bytes; ucarp allows at most {UCARP_MAX_KEY}",
                key.len()
            )));
        }
        let addr = self
            .addr
            .ok_or_else(|| usage("you must supply a virtual host address (--addr)"))?;
        let vaddr = config::parse_vaddr(&format!("{addr}/32"))
            .map_err(|m| Error::Usage(format!("--addr {addr}: {m}")))?;
        if self.advbase == 0 && self.advskew == 0 {
            return Err(usage(
                "you must supply an advertisement time base (--advbase > 0 or --advskew > 0)",
            ));
        }
        if self.advbase == 255 && self.advskew == 255 {
            return Err(usage(
                "--advbase 255 with --advskew 255 is the bow-out advertisement",
            ));
        }
        if !self.mcast.is_multicast() {
            return Err(Error::Usage(format!(
                "--mcast {}: not an IPv4 multicast address",
                self.mcast
            )));
        }
        if let Some(src) = self.srcip {
            if src.is_unspecified() || src.is_multicast() || src.is_broadcast() {
                return Err(Error::Usage(format!(
                    "--srcip {src}: cannot be a source address"
                )));
            }
        }

        let spec = VhidSpec {
            vhid,
            addresses: vec![vaddr],
            label: None,
            key,
            auth: HmacMode::Ucarp,
            demote_style: DemoteStyle::Skew,
            advbase: self.advbase,
            advskew: self.advskew,
            dead_ratio: self.deadratio,
            preempt: self.preempt,
            source: self.srcip.map(IpAddr::V4),
            group_v4: self.mcast,
            broadcast: self.nomcast,
            manage_addresses: self.manage_addresses,
            hooks: HookSpec {
                up: self.upscript.clone(),
                down: self.downscript.clone(),
                xparam: self.xparam.clone(),
                timeout: self.hook_timeout,
                down_at_start: !self.neutral,
                down_on_exit: self.shutdown,
            },
        };
        Ok(EngineSpec {
            interfaces: vec![InterfaceSpec {
                name: interface,
                ignore_link_state: self.ignoreifstate,
                vhids: vec![spec],
            }],
        })
    }
}
