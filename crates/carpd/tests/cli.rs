//! The carpd binary as a process: exit codes and messages of the command
//! line and of `--check-config`. Nothing here starts the engine.

// Test helpers outside #[test] functions: a failure is a test failure.
#![allow(clippy::unwrap_used)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const CARPD: &str = env!("CARGO_BIN_EXE_carpd");

/// A scratch directory removed on drop, unique per test.
struct Scratch(PathBuf);

impl Scratch {
    fn new(tag: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("carpd-cli-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    fn file(&self, name: &str, contents: &str) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, contents).unwrap();
        path
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn carpd(args: &[&str]) -> Output {
    Command::new(CARPD)
        .args(args)
        .env_remove("RUST_LOG")
        .env_remove("CARPD_PASSWORD")
        .output()
        .unwrap()
}

fn check(path: &Path) -> Output {
    carpd(&["--check-config", "--config", path.to_str().unwrap()])
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Exit status 2 and exactly one line on stderr, `carpd: <want>...`.
fn assert_config_error(o: &Output, want: &str) {
    let err = stderr(o);
    assert_eq!(o.status.code(), Some(2), "stderr: {err}");
    assert_eq!(err.lines().count(), 1, "not one line: {err}");
    assert!(
        err.starts_with(&format!("carpd: {want}")),
        "got: {err}want: carpd: {want}"
    );
    assert!(stdout(o).is_empty(), "stdout: {}", stdout(o));
}

const GOOD: &str = r#"password = "pw"
[[interface]]
name = "eth0"
  [[interface.vhid]]
  id = 1
  addresses = ["192.0.2.1/24", "2001:db8::1/64"]
  [[interface.vhid]]
  id = 2
  addresses = ["192.0.2.2/24"]
"#;

/// GOOD with its password read from `file` instead.
fn with_password_file(file: &str) -> String {
    GOOD.replace("password = \"pw\"", &format!("password_file = \"{file}\""))
}

#[test]
fn check_config_accepts_good_files() {
    let dir = Scratch::new("good");
    let path = dir.file("carpd.toml", GOOD);
    let o = check(&path);
    assert_eq!(o.status.code(), Some(0), "stderr: {}", stderr(&o));
    assert_eq!(
        stdout(&o),
        format!("{}: ok: 1 interface, 2 VHIDs\n", path.display())
    );

    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/carpd.toml");
    let o = check(&example);
    assert_eq!(o.status.code(), Some(0), "stderr: {}", stderr(&o));
    assert!(
        stdout(&o).ends_with(": ok: 2 interfaces, 4 VHIDs\n"),
        "{}",
        stdout(&o)
    );
}

#[test]
fn check_config_rejects_bad_files() {
    let dir = Scratch::new("bad");
    let d = dir.0.display().to_string();

    std::fs::create_dir(dir.0.join("adir")).unwrap();
    // (file name, contents, the message after `<dir>/<file name>`)
    let cases = [
        (
            "malformed.toml",
            "password = \"pw\"\n[[interface]\n".to_string(),
            ":2:".to_string(),
        ),
        (
            "type.toml",
            "password = \"pw\"\nadvskew = \"ten\"\n".to_string(),
            ":2:11: advskew: invalid type: string \"ten\", expected an integer".to_string(),
        ),
        (
            "unknown.toml",
            "password = \"pw\"\nadvskw = 10\n".to_string(),
            ":2:1: unknown field `advskw`".to_string(),
        ),
        (
            "range.toml",
            GOOD.replace("id = 2", "id = 2\n  advbase = 256"),
            ":9: interface \"eth0\" vhid 2: advbase: 256 is not in 0..=255".to_string(),
        ),
        (
            "prefix.toml",
            GOOD.replace("192.0.2.2/24", "192.0.2.2/33"),
            ":9: interface \"eth0\" vhid 2: addresses: 192.0.2.2/33: prefix length 33 > 32"
                .to_string(),
        ),
        // A password file that cannot be read (missing; a directory).
        (
            "pwfile.toml",
            with_password_file("missing"),
            format!(":1: password_file: {d}/missing: "),
        ),
        (
            "pwdir.toml",
            with_password_file("adir"),
            format!(":1: password_file: {d}/adir: "),
        ),
    ];
    for (name, contents, want) in cases {
        let p = dir.file(name, &contents);
        assert_config_error(&check(&p), &format!("{d}/{name}{want}"));
    }

    // And a readable one next to the file.
    let secret = dir.file("secret", "s3cret\n");
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    let p = dir.file("pwok.toml", &with_password_file("secret"));
    assert_eq!(check(&p).status.code(), Some(0));

    assert_config_error(
        &check(&dir.0.join("absent.toml")),
        &format!("cannot read {d}/absent.toml: "),
    );
}

#[test]
fn password_files_other_users_can_read_are_refused() {
    let dir = Scratch::new("pwmode");
    let d = dir.0.display().to_string();
    // As Kubernetes mounts a Secret without defaultMode.
    let secret = dir.file("secret", "s3cret-918273\n");
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o644)).unwrap();
    let src = with_password_file("secret");
    let p = dir.file("open.toml", &src);
    let o = check(&p);
    assert_config_error(
        &o,
        &format!(
            "{d}/open.toml:1: password_file: {d}/secret is mode 0644: its group and every user \
             can access it; run chmod 600 on it (in Kubernetes, give the Secret volume \
             defaultMode: 0400) or set allow_readable_password_file = true"
        ),
    );
    assert!(!stderr(&o).contains("s3cret"));

    // The explicit opt-out.
    let p = dir.file(
        "allowed.toml",
        &format!("allow_readable_password_file = true\n{src}"),
    );
    assert_eq!(check(&p).status.code(), Some(0), "{}", stderr(&check(&p)));

    // Owner only: fine.
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o400)).unwrap();
    let p = dir.file("private.toml", &src);
    assert_eq!(check(&p).status.code(), Some(0), "{}", stderr(&check(&p)));
}

#[test]
fn config_errors_do_not_echo_the_password() {
    let dir = Scratch::new("pwecho");
    for (name, line) in [
        ("type.toml", "password = 918273645"),
        ("bare.toml", "password = s3cret918273645"),
        ("open.toml", "password = \"s3cret918273645"),
        ("junk.toml", "password = \"s3cret918273645\" x"),
    ] {
        let p = dir.file(name, &GOOD.replace("password = \"pw\"", line));
        let o = check(&p);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{err}");
        assert!(
            err.starts_with(&format!("carpd: {}:1:", p.display())),
            "{err}"
        );
        assert!(
            !err.contains("918273645"),
            "{name}: the password leaked: {err}"
        );
    }
}

#[test]
fn a_bad_config_stops_the_daemon_before_it_starts() {
    let dir = Scratch::new("start");
    let p = dir.file("carpd.toml", &GOOD.replace("id = 2", "id = 1"));
    let o = carpd(&["--config", p.to_str().unwrap()]);
    assert_config_error(
        &o,
        &format!(
            "{}:8: interface \"eth0\": vhid id: vhid 1 is already configured at line 5",
            p.display()
        ),
    );
}

#[test]
fn help_and_version() {
    let o = carpd(&["--help"]);
    assert_eq!(o.status.code(), Some(0));
    let out = stdout(&o);
    for word in ["--config", "--check-config", "--log-format", "UCARP"] {
        assert!(out.contains(word), "{word} missing from:\n{out}");
    }

    let o = carpd(&["--ucarp", "--help"]);
    assert_eq!(o.status.code(), Some(0));
    let out = stdout(&o);
    for word in [
        "--interface",
        "--srcip",
        "--mcast",
        "--vhid",
        "--pass",
        "--passfile",
        "--preempt",
        "--neutral",
        "--addr",
        "--advbase",
        "--advskew",
        "--upscript",
        "--downscript",
        "--deadratio",
        "--debug",
        "--shutdown",
        "--daemonize",
        "--ignoreifstate",
        "--nomcast",
        "--facility",
        "--xparam",
        "--manage-addresses",
    ] {
        assert!(out.contains(word), "{word} missing from:\n{out}");
    }

    let o = carpd(&["--version"]);
    assert_eq!(o.status.code(), Some(0));
    assert!(stdout(&o).starts_with("carpd "), "{}", stdout(&o));
}

#[test]
fn ucarp_command_line_errors() {
    // Complete but for the address: refused before anything starts.
    let o = carpd(&["-i", "eth0", "-v", "1", "-p", "pw"]);
    assert_config_error(&o, "you must supply a virtual host address (--addr)");

    let o = carpd(&[
        "-i",
        "eth0",
        "-v",
        "1",
        "-o",
        "/nonexistent/pw",
        "-a",
        "10.0.0.1",
    ]);
    assert_config_error(&o, "cannot read password file /nonexistent/pw: ");

    // The password from the environment instead of the process list: with
    // it, the next thing missing is the address.
    let no_addr = ["-i", "eth0", "-v", "1"];
    let o = carpd(&no_addr);
    assert_config_error(
        &o,
        "you must supply a password (--pass, --passfile or $CARPD_PASSWORD)",
    );
    let o = Command::new(CARPD)
        .args(no_addr)
        .env("CARPD_PASSWORD", "s3cret918273645")
        .output()
        .unwrap();
    assert_config_error(&o, "you must supply a virtual host address (--addr)");
    assert!(!stderr(&o).contains("918273645"));

    // Values clap refuses: usage error, status 2.
    let o = carpd(&["-i", "eth0", "--vhid=300"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("300"), "{}", stderr(&o));

    // An unknown option in carpd mode.
    let o = carpd(&["--frobnicate"]);
    assert_eq!(o.status.code(), Some(2));
}
