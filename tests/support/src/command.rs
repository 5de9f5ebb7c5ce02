//! Running the external commands the test bed is built from (`ip`, `nft`,
//! `tcpdump`, ...), waiting for conditions, and failing with one clear line
//! when a tool is not installed.

use std::path::Path;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crate::Error;

/// Runs a command to completion; the error carries its stderr.
pub fn try_run(args: &[&str]) -> Result<String, Error> {
    let Some((program, rest)) = args.split_first() else {
        return Err(Error::Command("empty command".into()));
    };
    let out = Command::new(program)
        .args(rest)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| match check_tool(program) {
            Err(missing) if e.kind() == std::io::ErrorKind::NotFound => missing,
            _ => Error::Command(format!("{}: {e}", args.join(" "))),
        })?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(Error::Command(format!(
            "`{}` failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

/// Runs a command to completion and panics if it fails.
pub fn run(args: &[&str]) -> String {
    try_run(args).unwrap_or_else(|e| panic!("{e}"))
}

/// Polls `cond` every `poll` until it holds (returns the time it took) or
/// `timeout` passes (returns `None`).
pub fn wait_until(
    timeout: Duration,
    poll: Duration,
    mut cond: impl FnMut() -> bool,
) -> Option<Duration> {
    let start = Instant::now();
    loop {
        if cond() {
            return Some(start.elapsed());
        }
        if start.elapsed() >= timeout {
            return None;
        }
        thread::sleep(poll);
    }
}

/// The Debian package that ships each external tool the tests run.
const TOOL_PACKAGES: &[(&str, &str)] = &[
    ("ip", "iproute2"),
    ("nft", "nftables"),
    ("sysctl", "procps"),
    ("ucarp", "ucarp"),
    ("tcpdump", "tcpdump"),
    ("tshark", "tshark"),
    ("python3", "python3"),
    ("ethtool", "ethtool"),
];

/// Whether `tool` is an executable file in a `PATH` directory.
fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| is_executable(&dir.join(tool))))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    p.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// `Err` naming `tool` and the Debian package to install when `tool` is not
/// on `PATH`.
pub fn check_tool(tool: &str) -> Result<(), Error> {
    if on_path(tool) {
        return Ok(());
    }
    let package = TOOL_PACKAGES
        .iter()
        .find(|(t, _)| *t == tool)
        .map_or(tool, |(_, p)| p);
    Err(Error::MissingTool(format!(
        "`{tool}` is not installed (Debian: apt-get install {package})"
    )))
}

/// Fails the calling test with one line naming `tool` and its Debian
/// package when `tool` is not on `PATH`.
pub fn require_tool(tool: &str) {
    if let Err(e) = check_tool(tool) {
        panic!("{e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_tool_is_named_with_its_package() {
        assert!(check_tool("sh").is_ok());
        let e = check_tool("carpd-no-such-tool").expect_err("not installed");
        assert_eq!(
            e.to_string(),
            "`carpd-no-such-tool` is not installed (Debian: apt-get install carpd-no-such-tool)"
        );
    }
}
