//! The loader's tests: each error names the file, the line and the key.

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use carp_engine::spec::DEFAULT_GROUP;
use carp_engine::{
    HookSpec, TrackScope, TrackerKind, TrackerSpec, VhidKey, VhidSpec, VirtualAddr, share,
};
use carp_proto::HmacMode;
use carp_proto::machine::DemoteStyle;

use super::diag::{key_at, line_col, line_starts, without_value};
use super::resolve::MAX_PASSWORD_LINE;
use super::*;

const FILE: &str = "/etc/test.toml";

fn load(src: &str) -> Result<Config, Error> {
    Config::from_toml(src, Path::new(FILE))
}

fn err(src: &str) -> String {
    match load(src) {
        Ok(c) => panic!("accepted: {c:?}"),
        Err(e) => e.to_string(),
    }
}

/// Each `source(body)` is refused with an error that starts with
/// `FILE:` and the expected line, key and message.
fn assert_refused(cases: &[(&str, &str)], source: impl Fn(&str) -> String) {
    for (body, want) in cases {
        let got = err(&source(body));
        let want = format!("{FILE}:{want}");
        assert!(
            got.starts_with(&want),
            "for {body:?}\n got: {got}\nwant: {want}"
        );
    }
}

/// Found by the config fuzz target: a multi-byte character before a key
/// with a type error must not split a character when naming the key.
#[test]
fn key_after_multibyte_character() {
    let e = err("password = \"pw\"\néadvbase = \"x\"\n");
    assert!(e.starts_with("/etc/test.toml:2:"), "{e}");
    assert_eq!(key_at("é=1", 2), None);
    assert_eq!(key_at("xé advbase = 1", 14), Some("advbase"));
}

fn one_vhid(src: &str) -> VhidSpec {
    let c = load(src).unwrap();
    assert_eq!(c.vhid_count(), 1);
    c.spec.interfaces[0].vhids[0].clone()
}

/// A unique scratch directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("carpd-config-{tag}-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

const MINIMAL: &str = r#"
password = "pw"
[[interface]]
name = "eth0"
  [[interface.vhid]]
  id = 7
  addresses = ["192.0.2.1"]
"#;

#[test]
fn every_shipped_config_is_valid() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            let c = Config::load(&path).unwrap_or_else(|e| panic!("{e}"));
            assert!(c.vhid_count() > 0, "{} has no VHID", path.display());
            n += 1;
        }
    }
    assert!(n >= 2, "expected the example files in {}", dir.display());
}

#[test]
fn unicast_peers_and_virtual_mac() {
    let src = r#"
password = "pw"
peers = ["10.0.0.2", "fe80::2"]
[[interface]]
name = "eth0"
  [[interface.vhid]]
  id = 1
  addresses = ["10.0.0.100/24"]
  [[interface.vhid]]
  id = 2
  addresses = ["2001:db8::100/64"]
  unicast_ttl_check = true
  virtual_mac = true
  [[interface.vhid]]
  id = 3
  addresses = ["10.0.0.101/24"]
  peers = []
"#;
    let c = load(src);
    // an explicitly empty list is refused
    assert!(
        c.unwrap_err()
            .to_string()
            .contains("vhid 3: peers: no peer of an address family")
    );
    let c =
        load(&src.replace("  peers = []\n", "  peers = [\"10.0.0.3\", \"10.0.0.4\"]\n")).unwrap();
    let v = &c.spec.interfaces[0].vhids;
    // inherited peers of a family the VHID does not use are left out
    assert_eq!(
        v[0].transport.peers,
        ["10.0.0.2".parse::<IpAddr>().unwrap()]
    );
    assert!(!v[0].transport.unicast_ttl_check && !v[0].transport.virtual_mac);
    assert_eq!(v[1].transport.peers, ["fe80::2".parse::<IpAddr>().unwrap()]);
    assert!(v[1].transport.unicast_ttl_check && v[1].transport.virtual_mac);
    assert_eq!(v[2].transport.peers.len(), 2);
    // multicast by default
    assert!(!one_vhid(MINIMAL).transport.unicast());

    let vhid = |body: &str| {
        format!(
            "password = \"pw\"\n[[interface]]\nname = \"eth0\"\n  [[interface.vhid]]\n  id = 1\n  addresses = [\"10.0.0.1\"]\n{body}"
        )
    };
    let cases: &[(&str, &str)] = &[
        (
            "  peers = [\"10.0.0.2\", \"10.0.0.2\"]\n",
            "7: interface \"eth0\" vhid 1: peers: 10.0.0.2 is listed twice (first at line 7)",
        ),
        (
            "  peers = [\"10.0.0.1\"]\n",
            "7: interface \"eth0\" vhid 1: peers: 10.0.0.1 is one of the VHID's own addresses",
        ),
        (
            "  peers = [\"fe80::1\"]\n",
            "7: interface \"eth0\" vhid 1: peers: fe80::1 is IPv6 and the VHID has no IPv6 address",
        ),
        (
            "  peers = [\"224.0.0.18\"]\n",
            "7: interface \"eth0\" vhid 1: peers: 224.0.0.18 is not a unicast address",
        ),
        (
            "  peers = [\"peer\"]\n",
            "7: interface \"eth0\" vhid 1: peers: \"peer\" is not an IP address",
        ),
        (
            "  peers = [\"10.0.0.2\"]\n  broadcast = true\n",
            "7: interface \"eth0\" vhid 1: peers: broadcast applies to group",
        ),
        (
            "  virtual_mac = true\n  manage_addresses = false\n",
            "7: interface \"eth0\" vhid 1: virtual_mac: the virtual MAC interface holds",
        ),
        (
            "  virtual_mac = true\n  label = \"eth0:v\"\n",
            "7: interface \"eth0\" vhid 1: virtual_mac: address labels",
        ),
    ];
    assert_refused(cases, vhid);
    // two long interface names whose children would share a name
    let e = err(
        "password = \"pw\"\nvirtual_mac = true\n[[interface]]\nname = \"verylongname012\"\n  [[interface.vhid]]\n  id = 1\n  addresses = [\"10.0.0.1\"]\n[[interface]]\nname = \"verylongname013\"\n  [[interface.vhid]]\n  id = 1\n  addresses = [\"10.0.0.2\"]\n",
    );
    assert!(
            e.contains("vhid 1: virtual_mac: its interface name verylongname.c1 is also the one of interface \"verylongname012\" vhid 1 (line 2)"),
            "{e}"
        );
}

#[test]
fn replay_protection_cascades() {
    let c = load(
        r#"
password = "pw"
replay_protection = true
[[interface]]
name = "eth0"
  [[interface.vhid]]
  id = 7
  addresses = ["192.0.2.1"]
  [[interface.vhid]]
  id = 8
  addresses = ["192.0.2.2"]
  replay_protection = false
"#,
    )
    .unwrap();
    let v = &c.spec.interfaces[0].vhids;
    assert!(v[0].replay_protection);
    assert!(!v[1].replay_protection);
    assert!(err("replay_protection = 1\n").contains("replay_protection"));
}

#[test]
fn defaults() {
    let v = one_vhid(MINIMAL);
    assert_eq!(v.vhid, 7);
    assert_eq!(
        v.addresses,
        vec![VirtualAddr {
            addr: "192.0.2.1".parse().unwrap(),
            prefix_len: 32
        }]
    );
    assert_eq!(v.key, b"pw");
    assert_eq!(v.auth, HmacMode::Bsd);
    assert_eq!(v.demote_style, DemoteStyle::Byte);
    assert_eq!((v.advbase, v.advskew, v.dead_ratio), (1, 0, 3));
    assert!(!v.preempt && !v.broadcast && v.manage_addresses);
    assert!(!v.replay_protection);
    assert_eq!(v.source, None);
    assert_eq!(v.label, None);
    assert_eq!(v.group_v4, DEFAULT_GROUP);
    assert_eq!(
        v.hooks,
        HookSpec {
            up: None,
            down: None,
            xparam: None,
            timeout: Duration::from_secs(10),
            down_at_start: true,
            down_on_exit: true,
        }
    );
    let c = load(MINIMAL).unwrap();
    assert!(!c.spec.interfaces[0].ignore_link_state);
    assert_eq!(c.summary(), "1 interface, 1 VHID");
    // The password never shows in debug output.
    assert!(!format!("{c:?}").contains("\"pw\""));
}

#[test]
fn settings_cascade() {
    let c = load(
        r#"
advbase = 2
advskew = 5
dead_ratio = 4
preempt = true
password = "top"
hook_timeout = "1500ms"
up = "/bin/up"
xparam = "x"
group = "239.1.2.3"
ignore_link_state = true

[[interface]]
name = "eth0"
advskew = 20
source = "192.0.2.9"
broadcast = true
  [[interface.vhid]]
  id = 1
  addresses = ["192.0.2.1/24", "2001:db8::1"]
  [[interface.vhid]]
  id = 2
  addresses = ["192.0.2.2/24"]
  advskew = 30
  preempt = false
  password = "vhid"
  source = "192.0.2.10"
  down = "down.sh"
  manage_addresses = false
  down_at_start = false
  down_on_exit = false

[[interface]]
name = "eth1"
ignore_link_state = false
  [[interface.vhid]]
  id = 1
  addresses = ["198.51.100.1/24"]
  auth = "ucarp"
"#,
    )
    .unwrap();
    assert_eq!(c.summary(), "2 interfaces, 3 VHIDs");
    let eth0 = &c.spec.interfaces[0];
    assert!(eth0.ignore_link_state);
    let (a, b) = (&eth0.vhids[0], &eth0.vhids[1]);

    assert_eq!(
        (a.advbase, a.advskew, a.dead_ratio, a.preempt),
        (2, 20, 4, true)
    );
    assert_eq!(a.key, b"top");
    assert_eq!(a.source, Some("192.0.2.9".parse().unwrap()));
    assert_eq!(a.group_v4, Ipv4Addr::new(239, 1, 2, 3));
    assert!(a.broadcast && a.manage_addresses);
    assert_eq!(a.hooks.timeout, Duration::from_millis(1500));
    assert_eq!(a.hooks.up, Some(PathBuf::from("/bin/up")));
    assert_eq!(a.hooks.xparam.as_deref(), Some("x"));
    assert_eq!(
        a.addresses[1],
        VirtualAddr {
            addr: "2001:db8::1".parse().unwrap(),
            prefix_len: 128
        }
    );

    assert_eq!((b.advbase, b.advskew, b.preempt), (2, 30, false));
    assert_eq!(b.key, b"vhid");
    assert_eq!(b.source, Some("192.0.2.10".parse().unwrap()));
    // Relative to the file's directory.
    assert_eq!(b.hooks.down, Some(PathBuf::from("/etc/down.sh")));
    assert!(!b.manage_addresses && !b.hooks.down_at_start && !b.hooks.down_on_exit);

    let eth1 = &c.spec.interfaces[1];
    assert!(!eth1.ignore_link_state);
    let u = &eth1.vhids[0];
    assert_eq!(
        (u.auth, u.demote_style),
        (HmacMode::Ucarp, DemoteStyle::Skew)
    );
    assert_eq!((u.advskew, u.source, u.broadcast), (5, None, false));
}

#[test]
fn password_files() {
    let dir = TempDir::new("pw");
    std::fs::write(dir.0.join("secret"), "s3cret\r\nsecond line\n").unwrap();
    std::fs::write(dir.0.join("vhid"), "other").unwrap();
    for f in ["secret", "vhid"] {
        use std::os::unix::fs::PermissionsExt;
        let private = std::fs::Permissions::from_mode(0o600);
        std::fs::set_permissions(dir.0.join(f), private).unwrap();
    }
    let src = r#"
password_file = "secret"
[[interface]]
name = "eth0"
  [[interface.vhid]]
  id = 1
  addresses = ["192.0.2.1"]
  [[interface.vhid]]
  id = 2
  addresses = ["192.0.2.2"]
  password_file = "vhid"
  [[interface.vhid]]
  id = 3
  addresses = ["192.0.2.3"]
  password = "inline"
"#;
    let c = Config::from_toml(src, &dir.0.join("carpd.toml")).unwrap();
    let keys: Vec<&[u8]> = c.spec.interfaces[0]
        .vhids
        .iter()
        .map(|v| v.key.as_slice())
        .collect();
    assert_eq!(keys, [&b"s3cret"[..], b"other", b"inline"]);

    // A file that cannot be read: the error names the config line, the
    // key and the password file.
    let e = Config::from_toml(
        "\n\npassword_file = \"missing\"\n",
        &dir.0.join("carpd.toml"),
    )
    .unwrap_err();
    let missing = dir.0.join("missing");
    let want = format!(
        "{}:3: password_file: {}: ",
        dir.0.join("carpd.toml").display(),
        missing.display()
    );
    assert!(e.to_string().starts_with(&want), "{e}");
    // A directory is not a password file, even for root.
    let e = Config::from_toml("password_file = \".\"\n", &dir.0.join("carpd.toml")).unwrap_err();
    assert!(e.to_string().contains(":1: password_file: "), "{e}");
}

#[test]
fn password_files_open_to_others_are_refused_unless_allowed() {
    use std::os::unix::fs::PermissionsExt;
    let dir = TempDir::new("pwmode");
    let secret = dir.0.join("secret");
    std::fs::write(&secret, "s3cret-value\n").unwrap();
    let path = dir.0.join("carpd.toml");
    let src = MINIMAL.replace("password = \"pw\"", "password_file = \"secret\"");
    let chmod =
        |mode| std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(mode)).unwrap();
    for (mode, who) in [
        (0o644, "its group and every user can access it"),
        (0o640, "its group can access it"),
        (0o620, "its group can access it"),
        (0o604, "every user can access it"),
        (0o602, "every user can access it"),
    ] {
        chmod(mode);
        let e = Config::from_toml(&src, &path).unwrap_err().to_string();
        assert_eq!(
            e,
            format!(
                "{}:2: password_file: {} is mode {mode:04o}: {who}; run chmod 600 on it (in \
                     Kubernetes, give the Secret volume defaultMode: 0400) or set \
                     allow_readable_password_file = true",
                path.display(),
                secret.display()
            )
        );
        assert!(!e.contains("s3cret-value"));
        let allowed = format!("allow_readable_password_file = true\n{src}");
        assert_eq!(
            Config::from_toml(&allowed, &path).unwrap().spec.interfaces[0].vhids[0].key,
            b"s3cret-value"
        );
    }
    for mode in [0o600, 0o400, 0o700] {
        chmod(mode);
        Config::from_toml(&src, &path).unwrap();
    }
    assert_eq!(exposure(0o4700), None);
}

#[test]
fn a_bounded_first_line() {
    let dir = TempDir::new("pwlong");
    let f = dir.0.join("long");
    let line = vec![b'x'; usize::try_from(MAX_PASSWORD_LINE).unwrap()];
    std::fs::write(&f, [&line[..], b"\nrest"].concat()).unwrap();
    assert_eq!(read_password_file(&f).unwrap().key, line);
    std::fs::write(&f, [&line[..], b"y"].concat()).unwrap();
    let e = read_password_file(&f).unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::InvalidData);
    // A device that never ends is cut, not read forever.
    assert!(read_password_file(Path::new("/dev/zero")).is_err());
}

#[test]
fn errors_never_quote_the_password() {
    for (src, want) in [
        (
            "password = 918273645\n",
            "/etc/test.toml:1:12: password: invalid type: integer, expected a string",
        ),
        (
            "password = true\n",
            "/etc/test.toml:1:12: password: invalid type: boolean, expected a string",
        ),
        (
            "password = 91827.3645\n",
            "/etc/test.toml:1:12: password: invalid type: floating point, expected a string",
        ),
        (
            "[[interface]]\nname = \"eth0\"\n  [[interface.vhid]]\n  id = 1\n  password = 918273645\n",
            "/etc/test.toml:5:14: password: invalid type: integer, expected a string",
        ),
        (
            "x.password = 918273645\n",
            "/etc/test.toml:1:1: unknown field `x`, expected one of",
        ),
    ] {
        let e = err(src);
        assert!(e.starts_with(want), "{e}");
        assert!(!e.contains("918273645") && !e.contains("91827.3645"), "{e}");
    }
    // Syntax errors on the password line: the position, not the text.
    for src in [
        "password = s3cr3tvalue\n",
        "password = \"s3cr3tvalue\n",
        "password = 's3cr3tvalue\n",
        "password = \"s3cr3tvalue\" junk\n",
        "password = \"s3cr3tvalue\\q\"\n",
        "password = \"\"\"s3cr3tvalue\n",
        "password = [\"s3cr3tvalue\"]\n",
        "password = { v = \"s3cr3tvalue\" }\n",
        "password = \"s3cr3tvalue\"\npassword = \"s3cr3tvalue\"\n",
    ] {
        let e = err(src);
        assert!(e.starts_with("/etc/test.toml:"), "{e}");
        assert!(!e.contains("s3cr3tvalue"), "{e}");
    }
    // The value of other keys is still quoted.
    assert!(err("advbase = true\n").contains("boolean `true`"));
    assert_eq!(
        without_value("invalid type: string \"x\", expected a u8"),
        "invalid type: string, expected a u8"
    );
    assert_eq!(without_value("duplicate key"), "duplicate key");
}

#[test]
fn control_group() {
    // Group 0 exists everywhere; its name varies.
    let root = nix::unistd::Group::from_gid(nix::unistd::Gid::from_raw(0))
        .unwrap()
        .unwrap()
        .name;
    let c = load(&format!("control_group = {root:?}\n{MINIMAL}")).unwrap();
    assert_eq!(
        c.control_group,
        Some(ControlGroup {
            name: root.clone(),
            gid: 0
        })
    );
    assert_eq!(load(MINIMAL).unwrap().control_group, None);
    assert_eq!(
        err(&format!(
            "control_group = \"carpd-no-such-group\"\n{MINIMAL}"
        )),
        "/etc/test.toml:1: control_group: no group named \"carpd-no-such-group\" on this system"
    );
    assert_eq!(
        err(&format!("control_group = \"\"\n{MINIMAL}")),
        "/etc/test.toml:1: control_group: \"\" is not a group name"
    );
}

#[test]
fn realtime() {
    let rt = |head: &str| load(&format!("{head}\n{MINIMAL}")).unwrap().realtime;
    assert_eq!(load(MINIMAL).unwrap().realtime, None);
    assert_eq!(rt("realtime = false"), None);
    assert_eq!(rt("realtime = true"), Some(RealtimePriority::DEFAULT));
    assert_eq!(RealtimePriority::DEFAULT.get(), 50);
    assert_eq!(
        rt("realtime = true\nrealtime_priority = 99"),
        RealtimePriority::new(99)
    );
    assert_eq!(
        rt("realtime = true\nrealtime_priority = 1").map(RealtimePriority::get),
        Some(1)
    );
    assert_refused(
        &[
            (
                "realtime = true\nrealtime_priority = 0",
                "2: realtime_priority: 0 is out of range 1..=99",
            ),
            (
                "realtime = true\nrealtime_priority = 100",
                "2: realtime_priority: 100 is out of range 1..=99",
            ),
            (
                "realtime = true\nrealtime_priority = -1",
                "2: realtime_priority: -1 is out of range 1..=99",
            ),
            (
                "realtime_priority = 10",
                "1: realtime_priority: needs realtime = true",
            ),
            (
                "realtime = false\nrealtime_priority = 10",
                "2: realtime_priority: needs realtime = true",
            ),
        ],
        |head| format!("{head}\n{MINIMAL}"),
    );
    // top level only
    assert!(err(&MINIMAL.replace("id = 7", "id = 7\n  realtime = true")).contains("realtime"));
}

#[test]
fn labels() {
    let with =
        |label: &str| load(&MINIMAL.replace("id = 7", &format!("id = 7\n  label = {label:?}")));
    assert_eq!(
        with("eth0").unwrap().spec.interfaces[0].vhids[0]
            .label
            .as_deref(),
        Some("eth0")
    );
    assert_eq!(
        with("eth0:vip1").unwrap().spec.interfaces[0].vhids[0]
            .label
            .as_deref(),
        Some("eth0:vip1")
    );
    for bad in ["eth1:x", "eth0x", "eth0:0123456789a", ""] {
        let e = with(bad).unwrap_err().to_string();
        assert!(
            e.starts_with("/etc/test.toml:7: interface \"eth0\" vhid 7: label: "),
            "{bad}: {e}"
        );
    }
}

#[test]
fn durations() {
    let with = |t: &str| load(&format!("hook_timeout = {t:?}\n{MINIMAL}"));
    assert_eq!(
        with("2m").unwrap().spec.interfaces[0].vhids[0]
            .hooks
            .timeout,
        Duration::from_secs(120)
    );
    assert_eq!(
        with("250ms").unwrap().spec.interfaces[0].vhids[0]
            .hooks
            .timeout,
        Duration::from_millis(250)
    );
    assert!(
        with("0s")
            .unwrap_err()
            .to_string()
            .starts_with("/etc/test.toml:1: hook_timeout: must be")
    );
    assert!(
        with("soon")
            .unwrap_err()
            .to_string()
            .starts_with("/etc/test.toml:1: hook_timeout: \"soon\"")
    );
}

#[test]
fn preempt_delay_and_announce_interval_cascade() {
    let v = one_vhid(MINIMAL);
    assert_eq!(v.preempt_delay, Duration::ZERO);
    assert_eq!(v.announce_interval, None);
    let v = one_vhid(&format!(
        "preempt_delay = \"30s\"\nannounce_interval = \"1m\"\n{MINIMAL}"
    ));
    assert_eq!(v.preempt_delay, Duration::from_secs(30));
    assert_eq!(v.announce_interval, Some(Duration::from_secs(60)));
    // the VHID's own value wins; "0s" turns the delay off there
    let v = one_vhid(&format!(
        "preempt_delay = \"30s\"\n{MINIMAL}  preempt_delay = \"0s\"\n  announce_interval = \"5s\"\n"
    ));
    assert_eq!(v.preempt_delay, Duration::ZERO);
    assert_eq!(v.announce_interval, Some(Duration::from_secs(5)));
    let e = err(&format!("announce_interval = \"500ms\"\n{MINIMAL}"));
    assert!(
        e.starts_with("/etc/test.toml:1: announce_interval: must be at least 1s"),
        "{e}"
    );
    let e = err(&format!("announce_interval = \"0s\"\n{MINIMAL}"));
    assert!(
        e.starts_with("/etc/test.toml:1: announce_interval: must be"),
        "{e}"
    );
    let e = err(&format!("preempt_delay = \"later\"\n{MINIMAL}"));
    assert!(
        e.starts_with("/etc/test.toml:1: preempt_delay: \"later\""),
        "{e}"
    );
}

/// Every invalid value is reported with the file, its line and its key.
#[test]
fn errors_name_file_line_and_key() {
    let cases: &[(&str, &str)] = &[
        // Syntax and types, from the TOML parser: file:line:col.
        ("password = \"x\" junk\n", "/etc/test.toml:1:16: "),
        (
            "password = \"x\"\nadvbase = \"1\"\n",
            "/etc/test.toml:2:11: advbase: invalid type: string \"1\", expected an integer",
        ),
        (
            "password = \"x\"\n\nbogus = 1\n",
            "/etc/test.toml:3:1: unknown field `bogus`",
        ),
        (
            "[[interface]]\nname = \"eth0\"\n  [[interface.vhid]]\n  id = 1\n  adresses = []\n",
            "/etc/test.toml:5:3: unknown field `adresses`",
        ),
        (
            "[[interface]]\nname = 5\n",
            "/etc/test.toml:2:8: name: invalid type: integer `5`, expected a string",
        ),
        (
            "auth = \"md5\"\n",
            "/etc/test.toml:1:8: auth: unknown variant `md5`, expected `bsd` or `ucarp`",
        ),
        (
            "[[interface]]\n[[interface.vhid]]\nid = 1\n",
            "/etc/test.toml:1:1: missing field `name`",
        ),
        (
            "preempt = 1\n",
            "/etc/test.toml:1:11: preempt: invalid type: integer `1`, expected a boolean",
        ),
        // Values, from validation: file:line: [where:] key: problem.
        (
            "advbase = 256\n",
            "/etc/test.toml:1: advbase: 256 is not in 0..=255",
        ),
        (
            "\nadvskew = -1\n",
            "/etc/test.toml:2: advskew: -1 is not in 0..=255",
        ),
        (
            "dead_ratio = 0\n",
            "/etc/test.toml:1: dead_ratio: 0 is not in 1..=255",
        ),
        (
            "password = \"a\"\npassword_file = \"b\"\n",
            "/etc/test.toml:1: password: set only one of password, password_file and password_env, not password and password_file",
        ),
        (
            "group = \"10.0.0.1\"\n",
            "/etc/test.toml:1: group: 10.0.0.1 is not an IPv4 multicast address",
        ),
        (
            "group = \"nope\"\n",
            "/etc/test.toml:1: group: \"nope\" is not an IPv4 address",
        ),
        ("up = \"\"\n", "/etc/test.toml:1: up: empty command path"),
        (
            "[[interface]]\nname = \"eth0/x\"\n",
            "/etc/test.toml:2: interface name: \"eth0/x\" is not a valid interface name",
        ),
        (
            "[[interface]]\nname = \"a-very-long-name0\"\n",
            "/etc/test.toml:2: interface name: \"a-very-long-name0\" is longer than 15 bytes",
        ),
        (
            "[[interface]]\nname = \"eth0\"\n[[interface]]\nname = \"eth0\"\n",
            "/etc/test.toml:4: interface name: \"eth0\" is already configured at line 1",
        ),
        (
            "[[interface]]\nname = \"eth0\"\nsource = \"2001:db8::1\"\n",
            "/etc/test.toml:3: interface \"eth0\": source: \"2001:db8::1\" is not an IPv4 address",
        ),
        (
            "[[interface]]\nname = \"eth0\"\nadvskew = 999\n",
            "/etc/test.toml:3: interface \"eth0\": advskew: 999 is not in 0..=255",
        ),
    ];
    for (src, want) in cases {
        let got = err(src);
        assert!(
            got.starts_with(want),
            "for {src:?}\n got: {got}\nwant: {want}"
        );
        assert!(!got.contains('\n'), "multi-line: {got}");
    }
}

#[test]
fn vhid_errors() {
    let vhid = |body: &str| {
        format!(
            "password = \"pw\"\n[[interface]]\nname = \"eth0\"\n  [[interface.vhid]]\n  id = 1\n{body}"
        )
    };
    let cases: &[(&str, &str)] = &[
        (
            "  addresses = [\"10.0.0.1/33\"]\n",
            "6: interface \"eth0\" vhid 1: addresses: 10.0.0.1/33: prefix length 33 > 32",
        ),
        (
            "  addresses = [\"2001:db8::1/129\"]\n",
            "6: interface \"eth0\" vhid 1: addresses: 2001:db8::1/129: prefix length 129 > 128",
        ),
        (
            "  addresses = [\"10.0.0.1/x\"]\n",
            "6: interface \"eth0\" vhid 1: addresses: 10.0.0.1/x: prefix length \"x\" is not a number",
        ),
        (
            "  addresses = [\"10.0.0.300\"]\n",
            "6: interface \"eth0\" vhid 1: addresses: 10.0.0.300: not an IP address",
        ),
        (
            "  addresses = [\"224.0.0.1\"]\n",
            "6: interface \"eth0\" vhid 1: addresses: 224.0.0.1: not usable",
        ),
        (
            "  addresses = [\"127.0.0.1\"]\n",
            "6: interface \"eth0\" vhid 1: addresses: 127.0.0.1: not usable",
        ),
        (
            "  addresses = [\"0.0.0.0\"]\n",
            "6: interface \"eth0\" vhid 1: addresses: 0.0.0.0: not usable",
        ),
        (
            "  addresses = []\n",
            "6: interface \"eth0\" vhid 1: addresses: empty",
        ),
        ("", "4: interface \"eth0\" vhid 1: addresses: missing"),
        (
            "  addresses = [\"10.0.0.1\",\n    \"10.0.0.1/24\"]\n",
            "7: interface \"eth0\" vhid 1: addresses: 10.0.0.1 is already used by interface \"eth0\" vhid 1 at line 6",
        ),
        (
            "  addresses = [\"10.0.0.1\"]\n  [[interface.vhid]]\n  id = 1\n  addresses = [\"10.0.0.2\"]\n",
            "8: interface \"eth0\": vhid id: vhid 1 is already configured at line 5",
        ),
        (
            "  addresses = [\"10.0.0.1\"]\n[[interface]]\nname = \"eth1\"\n  [[interface.vhid]]\n  id = 1\n  addresses = [\"10.0.0.1\"]\n",
            "11: interface \"eth1\" vhid 1: addresses: 10.0.0.1 is already used by interface \"eth0\" vhid 1 at line 6",
        ),
        (
            "  addresses = [\"10.0.0.1\"]\n  label = \"eth0:v\"\n  id2 = 3\n",
            "8:3: unknown field `id2`",
        ),
        (
            "  addresses = [\"2001:db8::1\"]\n  label = \"eth0:v\"\n",
            "7: interface \"eth0\" vhid 1: label: labels apply to IPv4",
        ),
        (
            "  addresses = [\"10.0.0.1\"]\n  advbase = 255\n  advskew = 255\n",
            "8: interface \"eth0\" vhid 1: advbase, advskew: 255/255 is the bow-out",
        ),
        (
            "  addresses = [\"10.0.0.1\", \"10.0.0.2\"]\n  auth = \"ucarp\"\n",
            "6: interface \"eth0\" vhid 1: addresses: auth = \"ucarp\" needs exactly one IPv4 address, got 2 IPv4 and 0 IPv6",
        ),
        (
            "  addresses = [\"10.0.0.1\"]\n  auth = \"ucarp\"\n  password = \"01234567890123456789\"\n",
            "8: interface \"eth0\" vhid 1: password: the password is 20 bytes; auth = \"ucarp\" allows at most 19",
        ),
        (
            "  addresses = [\"10.0.0.1\"]\n  auth = \"ucarp\"\n  password = \"\"\n",
            "8: interface \"eth0\" vhid 1: password: the password is empty",
        ),
        (
            "  addresses = [\"10.0.0.1\"]\n  auth = \"ucarp\"\n  advbase = 0\n",
            "8: interface \"eth0\" vhid 1: advbase, advskew: UCARP peers need advbase > 0 or advskew > 0",
        ),
        ("  id = 2\n", "6:3: duplicate key"),
    ];
    assert_refused(cases, vhid);
    // vhid id range.
    let e =
        err("password = \"pw\"\n[[interface]]\nname = \"eth0\"\n  [[interface.vhid]]\n  id = 0\n");
    assert_eq!(
        e,
        "/etc/test.toml:5: interface \"eth0\": vhid id: 0 is not in 1..=255"
    );
    let e = err(
        "password = \"pw\"\n[[interface]]\nname = \"eth0\"\n  [[interface.vhid]]\n  id = 256\n",
    );
    assert_eq!(
        e,
        "/etc/test.toml:5: interface \"eth0\": vhid id: 256 is not in 1..=255"
    );
    // No password anywhere.
    let e = err(
        "[[interface]]\nname = \"eth0\"\n  [[interface.vhid]]\n  id = 1\n  addresses = [\"10.0.0.1\"]\n",
    );
    assert!(
        e.starts_with("/etc/test.toml:3: interface \"eth0\" vhid 1: password: no password"),
        "{e}"
    );
}

const SHARED: &str = r#"
password = "pw"
[[load_sharing]]
name = "web"
interface = "eth0"
nodes = ["10.0.0.1", "10.0.0.2", "10.0.0.3"]
self = "10.0.0.2"
groups = ["front"]
vhid = [
  { id = 1, addresses = ["10.0.0.101/24"] },
  { id = 2, addresses = ["10.0.0.102/24"], groups = ["extra"] },
  { id = 3, addresses = ["10.0.0.103/24"] },
]
"#;

#[test]
fn load_sharing_groups() {
    let c = load(SHARED).unwrap();
    assert_eq!(c.summary(), "1 interface, 3 VHIDs");
    let iface = &c.spec.interfaces[0];
    assert_eq!(iface.name, "eth0");
    let nodes: Vec<IpAddr> = ["10.0.0.1", "10.0.0.2", "10.0.0.3"]
        .iter()
        .map(|n| n.parse().unwrap())
        .collect();
    let orders = share::assignment("web", &nodes, &[1, 2, 3]);
    for v in &iface.vhids {
        assert!(v.preempt);
        assert_eq!(v.advskew, 0);
        let s = v.share.as_ref().unwrap();
        assert_eq!(s.group, "web");
        assert_eq!(s.this_node, Some(nodes[1]));
        assert_eq!(s.order, orders[&v.vhid]);
    }
    assert_eq!(iface.vhids[0].groups, ["web", "front"]);
    assert_eq!(iface.vhids[1].groups, ["web", "front", "extra"]);

    // Joins an [[interface]] of the same name; `self` is optional.
    let c = load(&format!(
            "{}\n[[interface]]\nname = \"eth0\"\n[[interface.vhid]]\nid = 9\naddresses = [\"10.0.0.9\"]\n",
            SHARED.replace("self = \"10.0.0.2\"\n", "")
        ))
        .unwrap();
    assert_eq!(c.summary(), "1 interface, 4 VHIDs");
    let v = &c.spec.interfaces[0].vhids;
    assert!(v[0].share.is_none() && v[1].share.as_ref().unwrap().this_node.is_none());

    let cases: &[(&str, &str, &str)] = &[
        (
            "self = \"10.0.0.2\"",
            "self = \"10.0.0.9\"",
            "7: load_sharing \"web\": self: \"10.0.0.9\" is not one of the nodes",
        ),
        (
            "\"10.0.0.3\"]",
            "\"10.0.0.1\"]",
            "6: load_sharing \"web\": nodes: 10.0.0.1 is listed twice",
        ),
        (
            "nodes = [\"10.0.0.1\", \"10.0.0.2\", \"10.0.0.3\"]",
            "nodes = [\"10.0.0.2\"]",
            "6: load_sharing \"web\": nodes: 1 nodes; a group has 2 to 64",
        ),
        (
            "groups = [\"front\"]",
            "advskew = 10",
            "8: load_sharing \"web\": advskew: set by each node's rank",
        ),
        (
            "{ id = 3,",
            "{ id = 3, advskew = 5,",
            "12: load_sharing \"web\" vhid 3: advskew: set by each node's rank",
        ),
        (
            "groups = [\"front\"]",
            "preempt = false",
            "load_sharing \"web\": preempt: a load-sharing group needs preemption",
        ),
        (
            "{ id = 3,",
            "{ id = 1,",
            "12: load_sharing \"web\": vhid id: vhid 1 is already configured at line 10",
        ),
        (
            "groups = [\"front\"]",
            "groups = [\"a b\"]",
            "8: load_sharing \"web\" vhid 1: groups: \"a b\" is not a group name",
        ),
    ];
    for (from, to, want) in cases {
        let src = SHARED.replace(from, to);
        assert_ne!(src, SHARED, "{from}");
        let got = err(&src);
        assert!(got.contains(want), "for {to}\n got: {got}\nwant: {want}");
    }
    let dup = format!(
        "{SHARED}\n[[interface]]\nname = \"eth0\"\n[[interface.vhid]]\nid = 2\naddresses = [\"10.0.0.9\"]\n"
    );
    assert!(
        err(&dup).contains("vhid 2 is already configured on interface \"eth0\""),
        "{}",
        err(&dup)
    );
    let twice = format!(
        "{SHARED}{}",
        SHARED
            .replace("password = \"pw\"", "")
            .replace("10.0.0.10", "10.0.0.20")
    );
    assert!(
        err(&twice).contains("load_sharing name: \"web\" is already used at line 3"),
        "{}",
        err(&twice)
    );
}

#[test]
fn trackers_and_groups() {
    let c = load(
        r#"
password = "pw"
[[track]]
file = "demote"
[[track]]
command = "test -e /run/ok"
interval = "500ms"
rise = 3
fall = 1
weight = 20
groups = ["fw"]

[[interface]]
name = "eth0"
groups = ["fw"]
  [[interface.track]]
  link = "eth1"
  [[interface.vhid]]
  id = 1
  addresses = ["192.0.2.1"]
  [[interface.vhid]]
  id = 2
  addresses = ["192.0.2.2"]
  groups = ["db", "fw"]
    [[interface.vhid.track]]
    link = "eth2"
    weight = 255
"#,
    )
    .unwrap();
    let v = &c.spec.interfaces[0].vhids;
    assert_eq!(v[0].groups, ["fw"]);
    assert_eq!(v[1].groups, ["fw", "db"]);
    let key = VhidKey {
        interface: "eth0".into(),
        vhid: 2,
    };
    assert_eq!(
        c.spec.trackers,
        vec![
            TrackerSpec {
                kind: TrackerKind::File {
                    path: PathBuf::from("/etc/demote"),
                    interval: Duration::from_secs(1),
                },
                weight: 1,
                scope: TrackScope::All,
            },
            TrackerSpec {
                kind: TrackerKind::Command {
                    command: "test -e /run/ok".into(),
                    interval: Duration::from_millis(500),
                    timeout: Duration::from_millis(500),
                    rise: 3,
                    fall: 1,
                },
                weight: 20,
                scope: TrackScope::Groups(vec!["fw".into()]),
            },
            TrackerSpec {
                kind: TrackerKind::Link {
                    interface: "eth1".into(),
                },
                weight: 50,
                scope: TrackScope::Groups(vec!["eth0".into()]),
            },
            TrackerSpec {
                kind: TrackerKind::Link {
                    interface: "eth2".into(),
                },
                weight: 255,
                scope: TrackScope::Vhid(key),
            },
        ]
    );

    let cases: &[(&str, &str)] = &[
        (
            "[[track]]\nlink = \"eth1\"\ncommand = \"true\"\n",
            "/etc/test.toml:2: track: set exactly one of link, command and file",
        ),
        ("[[track]]\n", "/etc/test.toml:2: track: set exactly one"),
        (
            "[[track]]\nlink = \"eth1\"\ngroups = [\"nope\"]\n",
            "/etc/test.toml:4: track: groups: no VHID is in group \"nope\"",
        ),
        (
            "[[track]]\nlink = \"eth1\"\nrise = 2\n",
            "/etc/test.toml:4: track: rise: only for command trackers, not link",
        ),
        (
            "[[track]]\nlink = \"eth1\"\ninterval = \"1s\"\n",
            "/etc/test.toml:4: track: interval: a link tracker follows link events",
        ),
        (
            "[[track]]\ncommand = \"true\"\nweight = 0\n",
            "/etc/test.toml:4: track: weight: 0 is not in 1..=255",
        ),
        (
            "[[track]]\ncommand = \"true\"\ninterval = \"0s\"\n",
            "/etc/test.toml:4: track: interval: must be greater than zero",
        ),
        (
            "[[track]]\ncommand = \"true\"\nfall = 101\n",
            "/etc/test.toml:4: track: fall: 101 is not in 1..=100",
        ),
        (
            "[[track]]\nfile = \"x\"\ntimeout = \"1s\"\n",
            "/etc/test.toml:4: track: timeout: only for command trackers, not file",
        ),
        (
            "[[track]]\nlink = \"eth1\"\nbogus = 1\n",
            "/etc/test.toml:4:1: unknown field `bogus`",
        ),
    ];
    for (track, want) in cases {
        let got = err(&format!(
            "password = \"pw\"\n{track}{}",
            MINIMAL.replace("password = \"pw\"", "")
        ));
        assert!(
            got.starts_with(want),
            "for {track:?}\n got: {got}\nwant: {want}"
        );
    }
    let got = err(&MINIMAL.replace(
        "name = \"eth0\"\n",
        "name = \"eth0\"\n[[interface.track]]\nlink = \"eth1\"\ngroups = [\"eth0\"]\n",
    ));
    assert!(
        got.contains("interface \"eth0\": track: groups: only a top-level [[track]] names groups"),
        "{got}"
    );
    // Every VHID is in the group named after its interface.
    let c = load(&format!(
        "{MINIMAL}[[track]]\nlink = \"eth1\"\ngroups = [\"eth0\"]\n"
    ))
    .unwrap();
    assert_eq!(
        c.spec.trackers[0].scope,
        TrackScope::Groups(vec!["eth0".into()])
    );
}

#[test]
fn bsd_allows_what_ucarp_cannot() {
    // Empty password, long password, sub-second 0/0 timing and several
    // addresses are all legal between BSD peers.
    let v = one_vhid(
        "password = \"\"\nadvbase = 0\n[[interface]]\nname = \"eth0\"\n[[interface.vhid]]\nid = 1\naddresses = [\"10.0.0.1\", \"10.0.0.2\", \"fe80::1/64\"]\n",
    );
    assert_eq!(
        (v.advbase, v.advskew, v.key.len(), v.addresses.len()),
        (0, 0, 0, 3)
    );
    let v = one_vhid(&MINIMAL.replace("\"pw\"", "\"0123456789012345678901234\""));
    assert_eq!(v.key.len(), 25);
}

#[test]
fn line_and_key_helpers() {
    let src = "a = 1\nbb = 2\n  [t]\n  c.d = { e = 3 }\n";
    assert_eq!(line_col(src, 0), (1, 1));
    assert_eq!(line_col(src, 6), (2, 1));
    assert_eq!(line_col(src, 11), (2, 6));
    assert_eq!(line_col(src, 10_000), (5, 1));
    let starts = line_starts(src);
    for offset in [0, 5, 6, 11, 10_000] {
        let line = starts.partition_point(|s| *s <= offset.min(src.len()));
        assert_eq!(line, line_col(src, offset).0, "offset {offset}");
    }
    assert_eq!(key_at(src, 4), Some("a"));
    assert_eq!(key_at(src, 11), Some("bb"));
    assert_eq!(key_at(src, 14), None);
    let e3 = src.find('3').unwrap();
    assert_eq!(key_at(src, e3), Some("e"));
}

#[test]
fn control_socket_and_metrics() {
    let c = load(MINIMAL).unwrap();
    assert_eq!((c.control_socket, c.metrics_listen), (None, None));
    let c = load(&format!(
            "control_socket = \"/run/x/carpd.sock\"\n{MINIMAL}\n[metrics]\nlisten = \"127.0.0.1:9750\"\n"
        ))
        .unwrap();
    assert_eq!(c.control_socket, Some(PathBuf::from("/run/x/carpd.sock")));
    assert_eq!(c.metrics_listen, Some("127.0.0.1:9750".parse().unwrap()));
    assert_eq!(
        err(&format!("control_socket = \"x.sock\"\n{MINIMAL}")),
        "/etc/test.toml:1: control_socket: \"x.sock\" is not an absolute path"
    );
    assert_eq!(
        err(&format!("{MINIMAL}\n[metrics]\nlisten = \"localhost\"\n")),
        "/etc/test.toml:10: metrics: listen: \"localhost\" is not an address:port (e.g. \"127.0.0.1:9750\")"
    );
    assert!(err(&format!("{MINIMAL}\n[metrics]\nport = 1\n")).contains("unknown field `port`"));
}

#[test]
fn password_from_the_environment() {
    // PATH is set wherever tests run; any variable shows the mechanism.
    let path = std::env::var_os("PATH").unwrap();
    let v = one_vhid(&MINIMAL.replace("password = \"pw\"", "password_env = \"PATH\""));
    assert_eq!(
        v.key,
        std::os::unix::ffi::OsStrExt::as_bytes(path.as_os_str())
    );
    assert_eq!(
        err(&MINIMAL.replace(
            "password = \"pw\"",
            "password_env = \"CARPD_TEST_NEVER_SET_3141\""
        )),
        "/etc/test.toml:2: password_env: the environment variable CARPD_TEST_NEVER_SET_3141 is not set"
    );
    assert_eq!(
        err(&MINIMAL.replace("password = \"pw\"", "password_env = \"\"")),
        "/etc/test.toml:2: password_env: \"\" is not an environment variable name"
    );
    assert_eq!(
        err(&MINIMAL.replace(
            "password = \"pw\"",
            "password_file = \"x\"\npassword_env = \"PATH\""
        )),
        "/etc/test.toml:2: password_file: set only one of password, password_file and password_env, not password_file and password_env"
    );
}

/// Validation reads nothing outside the text: a file naming a password
/// file that does not exist, an unset variable and an unknown group
/// validates, and only the resolve pass refuses it.
#[test]
fn validation_reads_nothing_outside_the_text() {
    let src = r#"
control_group = "carpd-test-no-such-group"
password_file = "/nonexistent/carpd-test/pw"
[[interface]]
name = "eth0"
  [[interface.vhid]]
  id = 1
  addresses = ["10.0.0.1"]
  [[interface.vhid]]
  id = 2
  addresses = ["10.0.0.2"]
  password_env = "CARPD_TEST_UNSET_VARIABLE"
"#;
    let path = Path::new(FILE);
    let raw: schema::RawFile = toml::from_str(src).unwrap();
    let diag = diag::Diagnostics::new(src, path);
    let draft = validate::validate(&diag, raw).unwrap();
    assert_eq!(draft.secrets.len(), 2);
    assert_eq!(draft.keys.len(), 2);
    assert!(
        draft.spec.interfaces[0]
            .vhids
            .iter()
            .all(|v| v.key.is_empty())
    );
    assert_eq!(
        draft.control_group.as_ref().map(|g| g.value.as_str()),
        Some("carpd-test-no-such-group")
    );
    let e = resolve::resolve(&diag, draft).unwrap_err().to_string();
    assert!(
        e.starts_with("/etc/test.toml:3: password_file: /nonexistent/carpd-test/pw:"),
        "{e}"
    );
}

/// Each VHID gets the key of the table nearest to it, read once per
/// password setting.
#[test]
fn resolved_keys_follow_the_cascade() {
    let src = r#"
password = "top"
[[interface]]
name = "eth0"
password = "iface"
  [[interface.vhid]]
  id = 1
  addresses = ["10.0.0.1"]
  [[interface.vhid]]
  id = 2
  addresses = ["10.0.0.2"]
  password = "own"
[[interface]]
name = "eth1"
  [[interface.vhid]]
  id = 1
  addresses = ["10.0.1.1"]
"#;
    let c = load(src).unwrap();
    let keys: Vec<(&str, u8, &[u8])> = c
        .spec
        .interfaces
        .iter()
        .flat_map(|i| {
            i.vhids
                .iter()
                .map(|v| (i.name.as_str(), v.vhid, &v.key[..]))
        })
        .collect();
    assert_eq!(
        keys,
        [
            ("eth0", 1, &b"iface"[..]),
            ("eth0", 2, b"own"),
            ("eth1", 1, b"top")
        ]
    );
}

// ---------------------------------------------------------------------------
// VRRP

fn vrrp_vhid(body: &str) -> String {
    format!(
        "advbase = 2\n[[interface]]\nname = \"eth0\"\n  [[interface.vhid]]\n  id = 5\n  addresses = [\"10.0.0.100\"]\n{body}"
    )
}

#[test]
fn vrrp_defaults_and_settings() {
    use carp_engine::spec::{Protocol, VrrpSpec};
    use carp_proto::vrrp::Version;
    // no password needed, CARP's advbase at the top does not reach it
    let v = one_vhid(&vrrp_vhid("  protocol = \"vrrp3\"\n"));
    assert_eq!(
        v.protocol,
        Protocol::Vrrp(VrrpSpec {
            version: Version::V3,
            priority: 100,
            interval_cs: 100,
            simple_auth: false,
            accept_mode: true,
        })
    );
    assert!(v.preempt && v.transport.virtual_mac);
    // the owner: its addresses are its own
    let v = one_vhid(&vrrp_vhid(
        "  protocol = \"vrrp3\"\n  priority = 255\n  manage_addresses = false\n",
    ));
    assert!(!v.transport.virtual_mac);
    assert!(matches!(&v.protocol, Protocol::Vrrp(s) if s.priority == 255));
    let v = one_vhid(&vrrp_vhid(
        "  protocol = \"vrrp3\"\n  priority = 200\n  advert_interval = \"100ms\"\n  preempt = false\n  accept_mode = false\n  virtual_mac = false\n",
    ));
    let Protocol::Vrrp(spec) = &v.protocol else {
        panic!("{v:?}")
    };
    assert_eq!(
        (spec.priority, spec.interval_cs, spec.accept_mode),
        (200, 10, false)
    );
    assert!(!v.preempt && !v.transport.virtual_mac);
    let v = one_vhid(&vrrp_vhid(
        "  protocol = \"vrrp2\"\n  auth_type = \"simple\"\n  password = \"secret\"\n  advert_interval = \"3s\"\n",
    ));
    let Protocol::Vrrp(spec) = &v.protocol else {
        panic!("{v:?}")
    };
    assert_eq!(
        (spec.version, spec.interval_cs, spec.simple_auth),
        (Version::V2, 300, true)
    );
    assert_eq!(v.key, b"secret");
}

#[test]
fn keys_of_the_other_protocol_are_refused_with_line_and_key() {
    let cases: &[(&str, &str)] = &[
        (
            "  protocol = \"vrrp3\"\n  advskew = 10\n",
            "8: interface \"eth0\" vhid 5: advskew: does not apply to protocol = \"vrrp3\"",
        ),
        (
            "  protocol = \"vrrp3\"\n  password = \"pw\"\n",
            "8: interface \"eth0\" vhid 5: password: does not apply to protocol = \"vrrp3\"",
        ),
        (
            "  protocol = \"vrrp3\"\n  auth_type = \"simple\"\n",
            "8: interface \"eth0\" vhid 5: auth_type: does not apply to protocol = \"vrrp3\"",
        ),
        (
            "  protocol = \"vrrp2\"\n  accept_mode = true\n",
            "8: interface \"eth0\" vhid 5: accept_mode: does not apply to protocol = \"vrrp2\"",
        ),
        (
            "  password = \"pw\"\n  priority = 150\n",
            "8: interface \"eth0\" vhid 5: priority: does not apply to protocol = \"carp\"",
        ),
        (
            "  protocol = \"vrrp2\"\n  replay_protection = true\n",
            "8: interface \"eth0\" vhid 5: replay_protection: does not apply to protocol = \"vrrp2\"",
        ),
        (
            "  protocol = \"vrrp3\"\n  advert_interval = \"15ms\"\n",
            "8: interface \"eth0\" vhid 5: advert_interval: VRRPv3 intervals are 10 ms steps",
        ),
        (
            "  protocol = \"vrrp3\"\n  advert_interval = \"41s\"\n",
            "8: interface \"eth0\" vhid 5: advert_interval: VRRPv3 intervals are 10 ms steps",
        ),
        (
            "  protocol = \"vrrp2\"\n  advert_interval = \"1500ms\"\n",
            "8: interface \"eth0\" vhid 5: advert_interval: VRRPv2 intervals are whole seconds",
        ),
        (
            "  protocol = \"vrrp3\"\n  priority = 0\n",
            "8: interface \"eth0\" vhid 5: priority: 0 is not in 1..=255",
        ),
        (
            "  protocol = \"vrrp2\"\n  auth_type = \"simple\"\n",
            "4: interface \"eth0\" vhid 5: password: no password",
        ),
        (
            "  protocol = \"vrrp3\"\n  priority = 255\n",
            "8: interface \"eth0\" vhid 5: priority: 255 is the address owner's",
        ),
    ];
    assert_refused(cases, vrrp_vhid);
    // the protocol in effect where a key is written decides
    let e = err("protocol = \"vrrp3\"\nadvbase = 1\n[[interface]]\nname = \"eth0\"\n");
    assert!(
        e.starts_with("/etc/test.toml:2: advbase: does not apply to protocol = \"vrrp3\""),
        "{e}"
    );
}

#[test]
fn vrrp_address_rules() {
    let with = |addresses: &str, protocol: &str| {
        format!(
            "[[interface]]\nname = \"eth0\"\n  [[interface.vhid]]\n  id = 5\n  protocol = \"{protocol}\"\n  addresses = [{addresses}]\n"
        )
    };
    for (addresses, protocol, want) in [
        (
            "\"10.0.0.1\", \"fe80::1\"",
            "vrrp3",
            "carries one address family",
        ),
        ("\"fe80::1\"", "vrrp2", "VRRPv2 carries IPv4 addresses only"),
        (
            "\"2001:db8::1\", \"fe80::1\"",
            "vrrp3",
            "must be link-local",
        ),
    ] {
        let e = err(&with(addresses, protocol));
        assert!(
            e.starts_with("/etc/test.toml:3: interface \"eth0\" vhid 5: addresses:")
                && e.contains(want),
            "{e}"
        );
    }
    one_vhid(&with("\"fe80::1\", \"2001:db8::1\"", "vrrp3"));
    // a CARP VHID and a VRRP VRID with one number on one interface: one
    // protocol, one group and one virtual MAC for both, refused
    let e = err(
        "password = \"pw\"\n[[interface]]\nname = \"eth0\"\n  [[interface.vhid]]\n  id = 5\n  addresses = [\"10.0.0.1\"]\n  [[interface.vhid]]\n  id = 5\n  protocol = \"vrrp3\"\n  addresses = [\"10.0.0.2\"]\n",
    );
    assert!(e.contains("vhid 5 is already configured at line 5"), "{e}");
}
