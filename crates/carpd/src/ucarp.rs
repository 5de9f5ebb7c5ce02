//! UCARP 1.5.2's command line: one VHID, one IPv4 address, up/down scripts.
//!
//! Every ucarp option is accepted in its short and long form with ucarp's
//! meaning and defaults, so a ucarp command line runs unchanged. As with
//! ucarp, the scripts own the address unless `--manage-addresses` asks carpd
//! to install it.

use std::ffi::OsString;
use std::net::{IpAddr, Ipv4Addr};
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use carp_engine::spec::{DEFAULT_ADVBASE, DEFAULT_ADVSKEW, DEFAULT_DEAD_RATIO, DEFAULT_GROUP};
use carp_engine::{EngineSpec, HookSpec, InterfaceSpec, VhidSpec};
use carp_proto::HmacMode;
use clap::{ArgMatches, CommandFactory, FromArgMatches, Parser};

use crate::config::{self, UCARP_MAX_KEY};
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

/// The environment variable holding the password when neither `--pass` nor
/// `--passfile` is given (unlike `-p`, not visible in the process list).
pub const PASSWORD_ENV: &str = "CARPD_PASSWORD";

/// ucarp's short options that carpd's own command line does not have.
pub const SHORT_FLAGS: &str = "ismvpoPnabkudrzBSMfx";

#[derive(Debug, Parser)]
#[command(
    name = "ucarp",
    about = "carpd in UCARP-compatible mode: one VHID, configured like ucarp 1.5.2",
    after_help = "The up/down scripts are run as `<script> <interface> <address> [xparam]`. \
                  As with ucarp they own the address, unless --manage-addresses is given. \
                  Without --pass and --passfile, the password is read from $CARPD_PASSWORD.",
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
    /// Password (visible to every user in the process list: prefer --passfile or $CARPD_PASSWORD)
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
    #[arg(short = 'b', long, value_name = "SECONDS", default_value_t = DEFAULT_ADVBASE)]
    pub advbase: u8,
    /// Advertisement skew (0-255)
    #[arg(short = 'k', long, value_name = "SKEW", default_value_t = DEFAULT_ADVSKEW)]
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
        default_value_t = DEFAULT_DEAD_RATIO,
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
    /// The password file the key comes from, if it comes from one.
    fn passfile_in_use(&self) -> Option<&Path> {
        match (&self.pass, &self.passfile) {
            (Some(_), Some(_)) if self.pass_last => None,
            (_, Some(f)) => Some(f),
            _ => None,
        }
    }

    /// The key: the last of `--pass`/`--passfile`, else the environment
    /// variable's value `env`.
    fn key(&self, env: Option<OsString>) -> Result<Vec<u8>, Error> {
        if let Some(f) = self.passfile_in_use() {
            return config::read_password_file(f)
                .map(|file| file.key)
                .map_err(|source| Error::PasswordFile {
                    path: f.to_path_buf(),
                    source,
                });
        }
        Ok(match (&self.pass, env) {
            (Some(p), _) => p.as_bytes().to_vec(),
            (None, Some(v)) => v.into_vec(),
            (None, None) => Vec::new(),
        })
    }

    /// A warning about a password file other users can read. ucarp accepts
    /// any file, and a ucarp command line must keep working unchanged, so
    /// this mode warns where the TOML configuration refuses.
    pub fn password_file_warning(&self) -> Option<String> {
        let f = self.passfile_in_use()?;
        let mode = config::read_password_file(f).ok()?.mode;
        let exposed = config::exposure(mode)?;
        Some(format!(
            "password file {} is mode {mode:04o}: {exposed}; run chmod 600 on it",
            f.display()
        ))
    }

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
        let key = self.key(std::env::var_os(PASSWORD_ENV))?;
        if key.is_empty() {
            return Err(usage(
                "you must supply a password (--pass, --passfile or $CARPD_PASSWORD)",
            ));
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
        self.check_advertising()?;

        let spec = VhidSpec {
            advbase: self.advbase,
            advskew: self.advskew,
            dead_ratio: self.deadratio,
            preempt: self.preempt,
            source: self.srcip.map(IpAddr::V4),
            group_v4: self.mcast,
            broadcast: self.nomcast,
            // ucarp's scripts own the address unless asked otherwise
            manage_addresses: self.manage_addresses,
            hooks: HookSpec {
                up: self.upscript.clone(),
                down: self.downscript.clone(),
                xparam: self.xparam.clone(),
                timeout: self.hook_timeout,
                down_at_start: !self.neutral,
                down_on_exit: self.shutdown,
            },
            ..VhidSpec::new(vhid, vec![vaddr], key, HmacMode::Ucarp)
        };
        Ok(EngineSpec {
            interfaces: vec![InterfaceSpec {
                name: interface,
                ignore_link_state: self.ignoreifstate,
                vhids: vec![spec],
            }],
            trackers: Vec::new(),
        })
    }

    /// What ucarp checks of the timing, the group and the source address.
    fn check_advertising(&self) -> Result<(), Error> {
        let usage = |m: &str| Error::Usage(m.to_string());
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
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use carp_engine::VirtualAddr;
    use carp_proto::machine::DemoteStyle;

    fn parse(args: &[&str]) -> UcarpArgs {
        UcarpArgs::try_parse_from(std::iter::once("ucarp").chain(args.iter().copied())).unwrap()
    }

    fn spec(args: &[&str]) -> EngineSpec {
        parse(args).to_spec().unwrap()
    }

    fn usage(args: &[&str]) -> String {
        match parse(args).to_spec() {
            Err(Error::Usage(m)) => m,
            other => panic!("expected a usage error, got {other:?}"),
        }
    }

    fn vhid(spec: &EngineSpec) -> &VhidSpec {
        &spec.interfaces[0].vhids[0]
    }

    const BASIC: &[&str] = &["-i", "eth0", "-v", "1", "-p", "pw", "-a", "10.0.0.100"];

    #[test]
    fn long_form_builds_the_expected_spec() {
        let got = spec(&[
            "--interface=eth0",
            "--srcip=10.0.0.1",
            "--vhid=42",
            "--pass=secret",
            "--addr=10.0.0.100",
            "--preempt",
            "--neutral",
            "--advbase=2",
            "--advskew=10",
            "--upscript=/etc/vip-up.sh",
            "--downscript=/etc/vip-down.sh",
            "--deadratio=4",
            "--shutdown",
            "--ignoreifstate",
            "--nomcast",
            "--mcast=239.1.1.1",
            "--xparam=extra",
            "--facility=local3",
            "--debug",
        ]);
        let want = EngineSpec {
            interfaces: vec![InterfaceSpec {
                name: "eth0".into(),
                ignore_link_state: true,
                vhids: vec![VhidSpec {
                    vhid: 42,
                    addresses: vec![VirtualAddr {
                        addr: "10.0.0.100".parse().unwrap(),
                        prefix_len: 32,
                    }],
                    label: None,
                    key: b"secret".to_vec(),
                    auth: HmacMode::Ucarp,
                    demote_style: DemoteStyle::Skew,
                    advbase: 2,
                    advskew: 10,
                    dead_ratio: 4,
                    preempt: true,
                    preempt_delay: Duration::ZERO,
                    announce_interval: None,
                    source: Some("10.0.0.1".parse().unwrap()),
                    group_v4: Ipv4Addr::new(239, 1, 1, 1),
                    broadcast: true,
                    manage_addresses: false,
                    replay_protection: false,
                    hooks: HookSpec {
                        up: Some("/etc/vip-up.sh".into()),
                        down: Some("/etc/vip-down.sh".into()),
                        xparam: Some("extra".into()),
                        timeout: Duration::from_secs(30),
                        down_at_start: false,
                        down_on_exit: true,
                    },
                    groups: Vec::new(),
                    share: None,
                    transport: Default::default(),
                    protocol: Default::default(),
                }],
            }],
            trackers: Vec::new(),
        };
        assert_eq!(got, want);
    }

    #[test]
    fn short_form_matches_long_form() {
        let short = spec(&[
            "-i",
            "eth0",
            "-s",
            "10.0.0.1",
            "-v",
            "42",
            "-p",
            "secret",
            "-a",
            "10.0.0.100",
            "-P",
            "-n",
            "-b",
            "2",
            "-k",
            "10",
            "-u",
            "/etc/vip-up.sh",
            "-d",
            "/etc/vip-down.sh",
            "-r",
            "4",
            "-z",
            "-S",
            "-M",
            "-m",
            "239.1.1.1",
            "-x",
            "extra",
            "-f",
            "local3",
            "-D",
        ]);
        let long = spec(&[
            "--interface",
            "eth0",
            "--srcip",
            "10.0.0.1",
            "--vhid",
            "42",
            "--pass",
            "secret",
            "--addr",
            "10.0.0.100",
            "--preempt",
            "--neutral",
            "--advbase",
            "2",
            "--advskew",
            "10",
            "--upscript",
            "/etc/vip-up.sh",
            "--downscript",
            "/etc/vip-down.sh",
            "--deadratio",
            "4",
            "--shutdown",
            "--ignoreifstate",
            "--nomcast",
            "--mcast=239.1.1.1",
            "--xparam",
            "extra",
            "--facility",
            "local3",
            "--debug",
        ]);
        assert_eq!(short, long);
        // getopt style: attached values and bundled flags.
        let bundled = spec(&[
            "-ieth0",
            "-s10.0.0.1",
            "-v42",
            "-psecret",
            "-a10.0.0.100",
            "-PnzSM",
            "-b2",
            "-k10",
            "-u/etc/vip-up.sh",
            "-d/etc/vip-down.sh",
            "-r4",
            "-m239.1.1.1",
            "-xextra",
            "-flocal3",
            "-D",
        ]);
        assert_eq!(bundled, long);
    }

    #[test]
    fn ucarp_defaults() {
        let args = parse(BASIC);
        assert!(!args.daemonize && !args.debug);
        assert_eq!(args.facility, "daemon".parse().unwrap());
        let s = spec(BASIC);
        let v = vhid(&s);
        assert_eq!((v.advbase, v.advskew, v.dead_ratio), (1, 0, 3));
        assert_eq!(v.group_v4, DEFAULT_GROUP);
        assert_eq!(v.source, None);
        assert!(!v.preempt && !v.broadcast && !v.manage_addresses);
        assert!(!s.interfaces[0].ignore_link_state);
        assert!(v.hooks.down_at_start && !v.hooks.down_on_exit);
        assert_eq!((v.hooks.up.as_ref(), v.hooks.down.as_ref()), (None, None));
    }

    #[test]
    fn carpd_extras() {
        let mut args = BASIC.to_vec();
        args.extend([
            "--manage-addresses",
            "--hook-timeout=5s",
            "--log-format=json",
            "--log-level=debug",
        ]);
        let parsed = parse(&args);
        assert_eq!(parsed.log.log_format, Some(crate::logging::LogFormat::Json));
        let s = parsed.to_spec().unwrap();
        assert!(vhid(&s).manage_addresses);
        assert_eq!(vhid(&s).hooks.timeout, Duration::from_secs(5));
        args.push("--hook-timeout=0s");
        assert!(
            UcarpArgs::try_parse_from(std::iter::once("ucarp").chain(args.iter().copied()))
                .is_err()
        );
    }

    #[test]
    fn passfile_and_last_password_wins() {
        let path = std::env::temp_dir().join(format!("carpd-ucarp-pass-{}", std::process::id()));
        std::fs::write(&path, "fromfile\nignored\n").unwrap();
        let p = path.to_str().unwrap();
        let key = |args: &[&str]| {
            let mut all = vec!["-i", "eth0", "-v", "1", "-a", "10.0.0.100"];
            all.extend(args);
            vhid(&spec(&all)).key.clone()
        };
        assert_eq!(key(&["-o", p]), b"fromfile");
        assert_eq!(key(&[&format!("--passfile={p}")]), b"fromfile");
        assert_eq!(key(&["-p", "inline", "-o", p]), b"fromfile");
        assert_eq!(key(&["-o", p, "-p", "inline"]), b"inline");
        // Repeated options: the last one counts, as with getopt.
        assert_eq!(key(&["-p", "one", "-p", "two"]), b"two");
        std::fs::remove_file(&path).unwrap();

        let err = parse(&[
            "-i",
            "eth0",
            "-v",
            "1",
            "-a",
            "10.0.0.100",
            "-o",
            "/nonexistent/pw",
        ])
        .to_spec()
        .unwrap_err();
        assert!(matches!(err, Error::PasswordFile { .. }), "{err:?}");
        assert_eq!(err.exit_code(), 2);
    }

    #[test]
    fn password_from_the_environment_and_open_files() {
        use std::os::unix::fs::PermissionsExt;
        let base = ["-i", "eth0", "-v", "1", "-a", "10.0.0.100"];
        let args = |more: &[&str]| parse(&[&base[..], more].concat());
        let env = || Some(OsString::from("fromenv"));
        // Used only when the command line gives no password.
        assert_eq!(args(&[]).key(env()).unwrap(), b"fromenv");
        assert_eq!(args(&["-p", "inline"]).key(env()).unwrap(), b"inline");
        assert_eq!(args(&[]).key(None).unwrap(), b"");

        let path = std::env::temp_dir().join(format!("carpd-ucarp-mode-{}", std::process::id()));
        std::fs::write(&path, "pw\n").unwrap();
        let p = path.to_str().unwrap();
        assert_eq!(args(&["-o", p]).key(env()).unwrap(), b"pw");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(args(&["-o", p]).password_file_warning(), None);
        // Open to others: accepted (as by ucarp) with a warning.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(vhid(&spec(&[&base[..], &["-o", p]].concat())).key, b"pw");
        let w = args(&["-o", p]).password_file_warning().unwrap();
        assert_eq!(
            w,
            format!(
                "password file {p} is mode 0644: its group and every user can access it; run chmod 600 on it"
            )
        );
        // No warning about a file that is not the one in use.
        assert_eq!(args(&["-o", p, "-p", "x"]).password_file_warning(), None);
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn what_ucarp_refuses() {
        assert!(usage(&["-v", "1", "-p", "pw", "-a", "10.0.0.100"]).contains("--interface"));
        assert!(usage(&["-i", "eth0", "-p", "pw", "-a", "10.0.0.100"]).contains("--vhid"));
        assert!(usage(&["-i", "eth0", "-v", "1", "-a", "10.0.0.100"]).contains("password"));
        assert!(
            usage(&["-i", "eth0", "-v", "1", "-p", "", "-a", "10.0.0.100"]).contains("password")
        );
        assert!(usage(&["-i", "eth0", "-v", "1", "-p", "pw"]).contains("--addr"));
        let mut args = BASIC.to_vec();
        args.extend(["-b", "0"]);
        assert!(usage(&args).contains("advertisement time base"));
        let mut args = BASIC.to_vec();
        args.extend(["-b", "255", "-k", "255"]);
        assert!(usage(&args).contains("bow-out"));
        let mut args = BASIC.to_vec();
        args.extend(["--mcast=10.0.0.1"]);
        assert!(usage(&args).contains("multicast"));
        assert!(
            usage(&[
                "-i",
                "eth0",
                "-v",
                "1",
                "-p",
                "01234567890123456789",
                "-a",
                "10.0.0.100"
            ])
            .contains("19")
        );
        assert!(
            usage(&["-i", "eth0", "-v", "1", "-p", "pw", "-a", "127.0.0.1"]).contains("--addr")
        );

        // Sub-second with a skew is fine, as in ucarp.
        let mut args = BASIC.to_vec();
        args.extend(["-b", "0", "-k", "20"]);
        assert_eq!(vhid(&spec(&args)).advbase, 0);
    }

    #[test]
    fn bad_values_are_clap_errors() {
        for bad in [
            &["-v", "0"][..],
            &["-v", "256"],
            &["-k", "256"],
            &["-b", "-1"],
            &["-r", "0"],
            &["-a", "10.0.0"],
            &["-a", "2001:db8::1"],
            &["-s", "host"],
            &["-f", "bogus"],
            &["--frobnicate"],
        ] {
            let r = UcarpArgs::try_parse_from(std::iter::once("ucarp").chain(bad.iter().copied()));
            let e = r.expect_err(&format!("{bad:?} accepted"));
            assert_eq!(e.exit_code(), 2, "{bad:?}");
        }
    }

    #[test]
    fn invoked_as_ucarp() {
        let args = [
            "/usr/sbin/ucarp",
            "-i",
            "eth0",
            "-v",
            "3",
            "-p",
            "pw",
            "-a",
            "10.0.0.3",
        ];
        let crate::cli::Mode::Ucarp(a) =
            crate::cli::parse(args.iter().map(Into::into).collect()).unwrap()
        else {
            panic!("not UCARP mode")
        };
        assert_eq!(vhid(&a.to_spec().unwrap()).vhid, 3);
    }
}
