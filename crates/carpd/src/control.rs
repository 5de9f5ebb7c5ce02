//! The control socket: a Unix stream socket (mode 0600, or 0660 with the
//! `control_group`) carrying one JSON request per line and answering each
//! with one JSON response per line.
//!
//! Every connection's peer credentials are checked as well: only root,
//! carpd's own user and members of the `control_group` are served, whatever
//! the socket's mode (a chmod, or a directory others can reach, is no way
//! in). Others get one error line and are counted.
//!
//! ```text
//! -> {"command":"status"}
//! <- {"ok":true,"vhids":[{"interface":"eth0","vhid":1,"state":"MASTER",...}]}
//! -> {"command":"demote","by":10,"interface":"eth0","vhid":1}
//! -> {"command":"demote","by":-10}                      (promote)
//! -> {"command":"stepdown","vhid":1}
//! -> {"command":"reload"}
//! <- {"ok":false,"error":"/etc/carpd.toml:3: advbase: 300 is not in 0..=255"}
//! -> {"command":"reload","dry_run":true}                (changes nothing)
//! -> {"command":"events","vhid":1}
//! <- {"ok":true,"message":"streaming events"}
//! <- {"event":"transition","at":"...","interface":"eth0","vhid":1,"from":"BACKUP",...}
//! ```
//!
//! After `events` the connection carries one JSON event per line until the
//! client closes it. A client that falls behind is sent one
//! `{"event":"disconnected",...}` line (if it fits) and cut off: the
//! daemon never waits for it.

use std::collections::BTreeMap;
use std::io::ErrorKind;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use carp_engine::engine::DropCounts;
use carp_engine::{PeerStatus, ReloadReport, VhidFilter, VhidKey, VhidStatus};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::Semaphore;
use tracing::{info, warn};

use crate::accept;
use crate::blocking::off_runtime;
use crate::config::{ControlGroup, DEFAULT_CONTROL_SOCKET};
use crate::error::Error;
use crate::run::Shared;

/// Longest request line accepted; a request is a few dozen bytes.
pub const MAX_REQUEST: usize = 64 * 1024;
/// A client has this long to send each request and to take each response,
/// so a stuck one costs the daemon nothing but an idle task.
const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections served at once; more are closed at once.
const MAX_CLIENTS: usize = 16;
/// At most one log line about refused connections per this long.
const REFUSED_LOG_INTERVAL: Duration = Duration::from_secs(10);
/// How long the user database (NSS: maybe LDAP) may take to say whether a
/// client's user is in the control group; past it, the client is refused.
const GROUP_LOOKUP_TIMEOUT: Duration = Duration::from_secs(2);
/// Group lookups running at once on the blocking pool. A lookup that never
/// returns keeps its slot, so a hung user database ties up at most this
/// many threads; while all are taken, clients that need one are refused.
const GROUP_LOOKUPS: usize = 4;

/// Why a client was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    /// Neither root, carpd's user, nor in the control group.
    NotAllowed,
    /// The user database did not answer in [`GROUP_LOOKUP_TIMEOUT`].
    LookupTimedOut,
    /// [`GROUP_LOOKUPS`] lookups are still waiting for the user database.
    LookupsBusy,
}

impl Refusal {
    fn as_str(self) -> &'static str {
        match self {
            Refusal::NotAllowed => "not allowed",
            Refusal::LookupTimedOut => "the group lookup timed out",
            Refusal::LookupsBusy => "too many group lookups still running",
        }
    }
}

/// Who may use the control socket.
#[derive(Debug)]
pub struct Access {
    /// carpd's effective uid (root, or e.g. a dedicated `carpd` user).
    own_uid: u32,
    group: Option<ControlGroup>,
    /// Connections refused so far.
    refused: AtomicU64,
    /// When a refusal was last logged, and how many went unlogged since.
    log: Mutex<(Option<Instant>, u64)>,
    /// Slots for group lookups (see [`GROUP_LOOKUPS`]).
    lookups: Arc<Semaphore>,
    /// Whether a user is in a group (primary or supplementary), by the user
    /// database; blocks.
    member: fn(u32, u32) -> bool,
    lookup_timeout: Duration,
}

impl Access {
    pub fn new(group: Option<ControlGroup>) -> Access {
        Access {
            own_uid: nix::unistd::geteuid().as_raw(),
            group,
            refused: AtomicU64::new(0),
            log: Mutex::new((None, 0)),
            lookups: Arc::new(Semaphore::new(GROUP_LOOKUPS)),
            member,
            lookup_timeout: GROUP_LOOKUP_TIMEOUT,
        }
    }

    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    pub fn group(&self) -> Option<&ControlGroup> {
        self.group.as_ref()
    }

    /// Whether a peer running as `uid`/`gid` may use the socket.
    async fn allows(&self, uid: u32, gid: u32) -> Result<(), Refusal> {
        if uid == 0 || uid == self.own_uid {
            return Ok(());
        }
        let Some(group) = &self.group else {
            return Err(Refusal::NotAllowed);
        };
        if gid == group.gid {
            return Ok(());
        }
        // Supplementary groups are not in SO_PEERCRED: ask the user
        // database, which may be slow or hang (e.g. over LDAP), hence on the
        // blocking pool and bounded in time and number.
        let Ok(slot) = Arc::clone(&self.lookups).try_acquire_owned() else {
            return Err(Refusal::LookupsBusy);
        };
        let (want, member) = (group.gid, self.member);
        let lookup = tokio::task::spawn_blocking(move || {
            let _slot = slot;
            member(uid, want)
        });
        match tokio::time::timeout(self.lookup_timeout, lookup).await {
            Ok(Ok(true)) => Ok(()),
            Ok(_) => Err(Refusal::NotAllowed),
            Err(_) => Err(Refusal::LookupTimedOut),
        }
    }

    /// Count a refusal and log it, at most once per
    /// [`REFUSED_LOG_INTERVAL`].
    fn note_refusal(&self, uid: u32, gid: u32, pid: Option<i32>, why: Refusal) {
        self.refused.fetch_add(1, Ordering::Relaxed);
        let Ok(mut log) = self.log.lock() else {
            return;
        };
        let (last, unlogged) = &mut *log;
        if last.is_some_and(|t| t.elapsed() < REFUSED_LOG_INTERVAL) {
            *unlogged += 1;
            return;
        }
        warn!(
            uid,
            gid,
            pid = pid.map_or_else(|| "-".to_string(), |p| p.to_string()),
            "control socket: refused a connection ({}: {}); {} more refused since the last such line",
            why.as_str(),
            self.who_may(),
            *unlogged
        );
        *last = Some(Instant::now());
        *unlogged = 0;
    }

    /// `root, uid 998 and group carpd-admin may use it`.
    fn who_may(&self) -> String {
        let mut who = vec!["root".to_string()];
        if self.own_uid != 0 {
            who.push(format!("uid {}", self.own_uid));
        }
        if let Some(g) = &self.group {
            who.push(format!("group {}", g.name));
        }
        let last = who.pop().unwrap_or_default();
        if who.is_empty() {
            format!("only {last} may use it")
        } else {
            format!("only {} and {last} may use it", who.join(", "))
        }
    }
}

/// Whether the user `uid` belongs to group `gid` (primary or supplementary)
/// in the user database.
fn member(uid: u32, gid: u32) -> bool {
    let Ok(Some(user)) = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid)) else {
        return false;
    };
    if user.gid.as_raw() == gid {
        return true;
    }
    let Ok(name) = std::ffi::CString::new(user.name) else {
        return false;
    };
    nix::unistd::getgrouplist(&name, user.gid)
        .is_ok_and(|groups| groups.iter().any(|g| g.as_raw() == gid))
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "lowercase", deny_unknown_fields)]
pub enum Request {
    Status,
    /// Add `by` (negative: promote) to the operator demotion of the
    /// matching VHIDs (all when no filter is given).
    Demote {
        by: i32,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        interface: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        vhid: Option<u8>,
        /// Interface group (OpenBSD's `carpdemote` on a group).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        group: Option<String>,
    },
    Stepdown {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        interface: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        vhid: Option<u8>,
    },
    Reload {
        /// Only say what would change.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        dry_run: bool,
    },
    /// Stream events (transitions, demotion, hooks, reloads, address
    /// conflicts and restores) of the matching VHIDs, and the engine-wide
    /// ones.
    Events {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        interface: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        vhid: Option<u8>,
    },
}

/// Drops that belong to no VHID as the control protocol carries them:
/// counts by interface, then by reason.
pub type InterfaceDropCounts = BTreeMap<String, BTreeMap<String, u64>>;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Response {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// What the request did, in words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Status: every VHID; demote and stepdown: the VHIDs acted on.
    #[serde(default)]
    pub vhids: Vec<VhidInfo>,
    /// Status: drops that belong to no VHID, by interface and reason
    /// (`*`: interfaces without VHIDs).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub interface_drops: InterfaceDropCounts,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reload: Option<ReloadInfo>,
    /// Status: log lines dropped because the log output was not read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_lines_dropped: Option<u64>,
}

impl Response {
    pub fn error(text: impl Into<String>) -> Response {
        Response {
            ok: false,
            error: Some(text.into()),
            ..Response::default()
        }
    }

    fn done(message: String, vhids: Vec<VhidInfo>) -> Response {
        Response {
            ok: true,
            message: Some(message),
            vhids,
            ..Response::default()
        }
    }
}

/// One VHID as the control socket reports it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VhidInfo {
    pub interface: String,
    pub vhid: u8,
    /// `INIT`, `BACKUP` or `MASTER`.
    pub state: String,
    /// `addr/prefix`.
    pub addresses: Vec<String>,
    /// `carp`, `vrrp3` or `vrrp2`.
    #[serde(default = "carp_name")]
    pub protocol: String,
    /// VRRP: the priority advertised (after demotion).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<u8>,
    /// CARP timers and demotion in effect (advskew after demotion in skew
    /// style; VRRP: the interval in these units, and the demotion).
    pub advbase: u8,
    pub advskew: u8,
    pub demote: u8,
    /// Source of the current master's advertisements while this node is
    /// BACKUP (`null` when it is master itself, in INIT, or heard none).
    pub master: Option<String>,
    pub in_state_secs: f64,
    /// e.g. `BACKUP -> MASTER (master_down)`.
    pub last_transition: Option<String>,
    pub last_reason: Option<String>,
    pub transitions: u64,
    pub transitions_by_reason: BTreeMap<String, u64>,
    pub adverts_sent: u64,
    pub adverts_received: u64,
    /// Dropped advertisements by reason (only reasons that happened).
    pub drops: BTreeMap<String, u64>,
    pub hook_runs: u64,
    pub hook_failures: u64,
    /// Addresses removed by something else while MASTER and added back.
    #[serde(default)]
    pub address_restored: u64,
    /// Addresses added by something else while not MASTER and removed.
    #[serde(default)]
    pub address_removed_foreign: u64,
    /// Our addresses claimed on the wire by other MACs while MASTER.
    #[serde(default)]
    pub address_conflicts: u64,
    /// What a VHID in INIT waits for before it runs, e.g. its interface.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting_for: Option<String>,
    /// Peers heard within the last three master-down times, most recent
    /// first.
    #[serde(default)]
    pub peers: Vec<PeerInfo>,
    /// Why the VHID is in its state, and what would change it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub explanation: Option<String>,
}

/// A peer as the control socket reports it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PeerInfo {
    pub address: String,
    /// `aa:bb:cc:dd:ee:ff`, from the neighbour table (`null`: no entry).
    pub mac: Option<String>,
    pub advbase: u8,
    pub advskew: u8,
    pub demote: u8,
    pub last_heard_secs: f64,
    /// Largest |interval - advertised interval| among its recent
    /// advertisements.
    pub jitter_ms: f64,
    pub adverts: u64,
    /// The master this BACKUP follows.
    pub master: bool,
}

impl From<&PeerStatus> for PeerInfo {
    fn from(p: &PeerStatus) -> PeerInfo {
        PeerInfo {
            address: p.address.to_string(),
            mac: p.mac.map(|m| {
                let hex: Vec<String> = m.iter().map(|b| format!("{b:02x}")).collect();
                hex.join(":")
            }),
            advbase: p.advbase,
            advskew: p.advskew,
            demote: p.demote,
            last_heard_secs: p.last_heard.as_secs_f64(),
            jitter_ms: p.jitter.as_secs_f64() * 1000.0,
            adverts: p.adverts,
            master: p.master,
        }
    }
}

fn carp_name() -> String {
    "carp".to_string()
}

impl From<&VhidStatus> for VhidInfo {
    fn from(s: &VhidStatus) -> VhidInfo {
        let names = |m: &DropCounts| m.iter().map(|(k, v)| (k.to_string(), *v)).collect();
        VhidInfo {
            interface: s.key.interface.clone(),
            vhid: s.key.vhid,
            state: s.state.as_str().to_string(),
            addresses: s
                .addresses
                .iter()
                .map(|a| format!("{}/{}", a.addr, a.prefix_len))
                .collect(),
            protocol: s.protocol.to_string(),
            priority: s.priority,
            advbase: s.advbase,
            advskew: s.advskew,
            demote: s.demote,
            // The machine remembers the last master it heard; that is the
            // current one only while this node is BACKUP.
            master: s
                .master
                .filter(|_| s.state == carp_proto::State::Backup)
                .map(|m| m.to_string()),
            in_state_secs: s.in_state_for.as_secs_f64(),
            last_transition: s.last_transition.clone(),
            last_reason: s.last_reason.map(str::to_string),
            transitions: s.transitions,
            transitions_by_reason: names(&s.transitions_by_reason),
            adverts_sent: s.adverts_sent,
            adverts_received: s.adverts_received,
            drops: names(&s.drops),
            hook_runs: s.hook_runs,
            hook_failures: s.hook_failures,
            address_restored: s.address_restored,
            address_removed_foreign: s.address_removed_foreign,
            address_conflicts: s.address_conflicts,
            waiting_for: s.waiting_for.clone(),
            peers: s.peers.iter().map(PeerInfo::from).collect(),
            explanation: s.explanation.map(|e| e.to_string()).or_else(|| {
                s.waiting_for
                    .as_ref()
                    .map(|w| format!("INIT: waiting: {w}."))
            }),
        }
    }
}

/// What a reload did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReloadInfo {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    pub changed: Vec<String>,
    /// For each changed VHID, the settings that changed.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub changed_keys: BTreeMap<String, Vec<String>>,
    pub unchanged: usize,
    /// The metrics listener after the reload, if it changed (`"off"` when
    /// turned off).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<String>,
}

impl ReloadInfo {
    pub fn new(r: &ReloadReport) -> ReloadInfo {
        let names = |l: &[VhidKey]| l.iter().map(key_name).collect();
        ReloadInfo {
            added: names(&r.added),
            removed: names(&r.removed),
            changed: names(&r.changed),
            changed_keys: (r.changed_keys.iter())
                .map(|(k, v)| (key_name(k), v.iter().map(|s| s.to_string()).collect()))
                .collect(),
            unchanged: r.unchanged,
            metrics: None,
        }
    }

    pub fn summary(&self) -> String {
        self.summary_as("reloaded")
    }

    /// A dry run's report: what a reload would do, with the settings that
    /// changed.
    pub fn preview(&self) -> String {
        let mut s = self.summary_as("a reload would do");
        for (vhid, keys) in &self.changed_keys {
            s.push_str(&format!("\n  {vhid} restarts: {} changed", keys.join(", ")));
        }
        s
    }

    fn summary_as(&self, what: &str) -> String {
        let list = |l: &[String]| {
            if l.is_empty() {
                String::new()
            } else {
                format!(" ({})", l.join(" "))
            }
        };
        let mut s = format!(
            "{what}: {} added{}, {} removed{}, {} changed{}, {} unchanged",
            self.added.len(),
            list(&self.added),
            self.removed.len(),
            list(&self.removed),
            self.changed.len(),
            list(&self.changed),
            self.unchanged
        );
        if let Some(m) = &self.metrics {
            s.push_str(&format!("; metrics: {m}"));
        }
        s
    }
}

/// `eth0/1`.
pub fn key_name(k: &VhidKey) -> String {
    format!("{}/{}", k.interface, k.vhid)
}

/// Take over `path` for this daemon: refuse if a carpd answers there,
/// replace a stale socket nobody answers on, never remove anything that is
/// not a socket. Returns the bound listener (mode 0600; 0660 and owned by
/// `group` if one is given) and whether a stale socket was replaced.
/// Touches nothing else, so it runs before the engine starts.
pub fn claim(
    path: &Path,
    group: Option<&ControlGroup>,
) -> Result<(std::os::unix::net::UnixListener, bool), Error> {
    let io = |source| Error::ControlSocket {
        path: path.to_path_buf(),
        source,
    };
    if path == Path::new(DEFAULT_CONTROL_SOCKET) {
        create_runtime_dir(path).map_err(io)?;
    }
    let mut stale = false;
    match std::fs::symlink_metadata(path) {
        Ok(m) if !m.file_type().is_socket() => return Err(Error::NotASocket(path.to_path_buf())),
        Ok(_) => match std::os::unix::net::UnixStream::connect(path) {
            Ok(_) => return Err(Error::AlreadyRunning(path.to_path_buf())),
            Err(e) if e.kind() == ErrorKind::ConnectionRefused => {
                match std::fs::remove_file(path) {
                    Ok(()) => stale = true,
                    Err(e) if e.kind() == ErrorKind::NotFound => {}
                    Err(e) => return Err(io(e)),
                }
            }
            Err(e) => return Err(io(e)),
        },
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(e) => return Err(io(e)),
    }
    // Created without group or other access from the start (the umask is
    // process wide, but nothing else creates files at this point), and
    // chmod-ed in case the umask did not apply.
    let old = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o177));
    let bound = std::os::unix::net::UnixListener::bind(path);
    nix::sys::stat::umask(old);
    let listener = bound.map_err(io)?;
    let mode = match group {
        Some(g) => {
            nix::unistd::chown(path, None, Some(nix::unistd::Gid::from_raw(g.gid)))
                .map_err(|e| io(e.into()))?;
            0o660
        }
        None => 0o600,
    };
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(io)?;
    listener.set_nonblocking(true).map_err(io)?;
    Ok((listener, stale))
}

/// The default socket's directory (`/run/carpd`), created (mode 0750) if
/// missing: under systemd `RuntimeDirectory=` makes it, run by hand carpd
/// does.
fn create_runtime_dir(path: &Path) -> std::io::Result<()> {
    let Some(dir) = path.parent() else {
        return Ok(());
    };
    match std::fs::DirBuilder::new().mode(0o750).create(dir) {
        // chmod-ed as well: the umask applies to the mode asked for
        Ok(()) => std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o750)),
        Err(e) if e.kind() == ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

/// Serve clients until the task is aborted (aborting also ends every
/// connection).
pub async fn serve(listener: UnixListener, shared: Arc<Shared>, access: Arc<Access>) {
    accept::serve("control socket", listener, MAX_CLIENTS, |stream: UnixStream| {
        let shared = Arc::clone(&shared);
        let access = Arc::clone(&access);
        async move {
            // The credentials of the process that connected, from the
            // kernel: a client cannot claim to be someone else.
            match stream.peer_cred() {
                Ok(c) => match access.allows(c.uid(), c.gid()).await {
                    Ok(()) => connection(stream, &shared).await,
                    Err(why) => {
                        access.note_refusal(c.uid(), c.gid(), c.pid(), why);
                        refuse(stream, &access).await;
                    }
                },
                Err(e) => {
                    warn!(error = %e, "control socket: cannot read the peer's credentials; connection closed");
                }
            }
        }
    })
    .await
}

/// Write one JSON line, within `timeout`; whether it was written.
pub(crate) async fn write_line(
    write: &mut tokio::net::unix::OwnedWriteHalf,
    value: &impl Serialize,
    timeout: Duration,
) -> bool {
    let Ok(mut out) = serde_json::to_vec(value) else {
        return false;
    };
    out.push(b'\n');
    matches!(
        tokio::time::timeout(timeout, write.write_all(&out)).await,
        Ok(Ok(()))
    )
}

async fn connection(stream: UnixStream, shared: &Arc<Shared>) {
    let (read, mut write) = stream.into_split();
    let mut read = BufReader::new(read);
    loop {
        let mut line = Vec::new();
        let limit = u64::try_from(MAX_REQUEST + 1).unwrap_or(u64::MAX);
        let got = tokio::time::timeout(
            IO_TIMEOUT,
            (&mut read).take(limit).read_until(b'\n', &mut line),
        )
        .await;
        // A timed-out or oversized request leaves the stream mid-line:
        // answer, then close.
        let (response, close) = match got {
            // EOF, or a client gone
            Ok(Ok(0) | Err(_)) => return,
            Err(_) => (Response::error("timed out waiting for a request"), true),
            Ok(Ok(_)) if line.len() > MAX_REQUEST => (
                Response::error(format!("request longer than {MAX_REQUEST} bytes")),
                true,
            ),
            Ok(Ok(_)) => match serde_json::from_slice::<Request>(&line) {
                Ok(Request::Events { interface, vhid }) => {
                    let filter = VhidFilter {
                        interface,
                        vhid,
                        group: None,
                    };
                    crate::events::stream(read, write, shared, filter).await;
                    return;
                }
                Ok(request) => (handle(shared, request).await, false),
                Err(e) => (Response::error(format!("bad request: {e}")), false),
            },
        };
        let Some(out) = encode_line(response).await else {
            return;
        };
        let large = out.len() > crate::memory::LARGE;
        let written = tokio::time::timeout(IO_TIMEOUT, write.write_all(&out)).await;
        drop(out);
        if large {
            crate::memory::release_freed();
        }
        if !matches!(written, Ok(Ok(()))) {
            return;
        }
        if close {
            return;
        }
    }
}

/// Responses listing more VHIDs than this are encoded on the blocking pool;
/// smaller ones (a reload's, an error) are quicker to encode than to hand
/// over.
const ENCODE_INLINE_VHIDS: usize = 16;

/// A response as one JSON line; one listing many VHIDs is encoded on the
/// blocking pool (see `blocking`): a status of thousands of VHIDs is
/// megabytes of JSON.
async fn encode_line(response: Response) -> Option<Vec<u8>> {
    let encoded = if response.vhids.len() <= ENCODE_INLINE_VHIDS {
        Some(serde_json::to_vec(&response))
    } else {
        off_runtime(move || serde_json::to_vec(&response)).await
    };
    match encoded {
        Some(Ok(mut out)) => {
            out.push(b'\n');
            Some(out)
        }
        Some(Err(e)) => {
            warn!(error = %e, "control socket: cannot encode a response");
            None
        }
        None => {
            warn!("control socket: encoding a response failed");
            None
        }
    }
}

/// Answer a refused peer's first request with one error line, then close.
/// Its request is read first: closing a Unix socket with unread data makes
/// the peer's read fail with a reset instead of showing the answer.
async fn refuse(stream: UnixStream, access: &Access) {
    let (read, mut write) = stream.into_split();
    let limit = u64::try_from(MAX_REQUEST).unwrap_or(u64::MAX);
    let mut line = Vec::new();
    let _ = tokio::time::timeout(
        IO_TIMEOUT,
        BufReader::new(read)
            .take(limit)
            .read_until(b'\n', &mut line),
    )
    .await;
    let response = Response::error(format!(
        "permission denied: {}",
        access
            .who_may()
            .replace(" use it", " use the control socket")
    ));
    if let Ok(mut out) = serde_json::to_vec(&response) {
        out.push(b'\n');
        let _ = tokio::time::timeout(IO_TIMEOUT, write.write_all(&out)).await;
    }
}

async fn handle(shared: &Arc<Shared>, request: Request) -> Response {
    match request {
        Request::Status => match shared.status().await {
            Ok((vhids, interface_drops)) => {
                let log_lines_dropped = crate::logging::lines_dropped();
                // thousands of VHIDs' strings and maps: off the runtime too
                off_runtime(move || Response {
                    ok: true,
                    vhids: vhids.iter().map(VhidInfo::from).collect(),
                    interface_drops: interface_drops
                        .into_iter()
                        .filter(|(_, d)| !d.is_empty())
                        .map(|(i, d)| (i, d.into_iter().map(|(r, n)| (r.to_string(), n)).collect()))
                        .collect(),
                    log_lines_dropped: Some(log_lines_dropped),
                    ..Response::default()
                })
                .await
                .unwrap_or_else(|| Response::error("building the status failed"))
            }
            Err(e) => Response::error(e),
        },
        Request::Demote {
            by,
            interface,
            vhid,
            group,
        } => {
            let filter = VhidFilter {
                interface,
                vhid,
                group,
            };
            let done = shared.demote(&filter, by).await;
            match done {
                Ok(list) if list.is_empty() => Response::error(no_match(&filter)),
                Ok(list) => {
                    let verb = if by >= 0 { "demoted" } else { "promoted" };
                    info!(
                        by,
                        vhids = %list.iter().map(|s| key_name(&s.key)).collect::<Vec<_>>().join(" "),
                        "control: {verb} {} VHID(s)",
                        list.len()
                    );
                    let what = list
                        .iter()
                        .map(|s| format!("{} demote {}", key_name(&s.key), s.demote))
                        .collect::<Vec<_>>()
                        .join(", ");
                    Response::done(
                        format!(
                            "{verb} {} VHID(s) by {}: {what}",
                            list.len(),
                            by.unsigned_abs()
                        ),
                        list.iter().map(VhidInfo::from).collect(),
                    )
                }
                Err(e) => Response::error(e),
            }
        }
        Request::Stepdown { interface, vhid } => {
            let filter = VhidFilter {
                interface,
                vhid,
                group: None,
            };
            match shared.step_down(&filter).await {
                Ok((0, _)) => Response::error(no_match(&filter)),
                Ok((matched, stepped)) => {
                    let names: Vec<String> = stepped.iter().map(key_name).collect();
                    info!(vhids = %names.join(" "), "control: {} master(s) stepped down", names.len());
                    let message = if names.is_empty() {
                        format!("none of the {matched} matching VHID(s) is master; nothing to do")
                    } else {
                        format!("stepped down: {}", names.join(" "))
                    };
                    Response::done(message, Vec::new())
                }
                Err(e) => Response::error(e),
            }
        }
        Request::Reload { dry_run: true } => match shared.preview_reload().await {
            Ok(info) => Response {
                ok: true,
                message: Some(info.preview()),
                reload: Some(info),
                ..Response::default()
            },
            Err(e) => Response::error(e),
        },
        // answered in `connection`, which streams them
        Request::Events { .. } => Response::error("events are streamed"),
        Request::Reload { dry_run: false } => match shared.reload("control socket").await {
            Ok(info) => Response {
                ok: true,
                message: Some(info.summary()),
                reload: Some(info),
                ..Response::default()
            },
            Err(e) => Response::error(e),
        },
    }
}

fn no_match(filter: &VhidFilter) -> String {
    let group = filter
        .group
        .as_ref()
        .map(|g| format!(" in group {g}"))
        .unwrap_or_default();
    match (&filter.interface, filter.vhid) {
        (None, None) if filter.group.is_none() => "no VHIDs are configured".into(),
        (None, None) => format!("no VHID{group}"),
        (Some(i), None) => format!("no VHID on interface {i}{group}"),
        (None, Some(v)) => format!("no VHID {v} on any interface{group}"),
        (Some(i), Some(v)) => format!("no VHID {v} on interface {i}{group}"),
    }
}

/// Remove the socket file on the way out.
pub fn remove(path: &PathBuf) {
    if let Err(e) = std::fs::remove_file(path)
        && e.kind() != ErrorKind::NotFound
    {
        warn!(path = %path.display(), error = %e, "cannot remove the control socket");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The runtime thread runs other tasks (VHID timers) while a status of
    /// thousands of VHIDs is encoded; encoded inline, it would be done
    /// within one poll, before the other task ran once.
    #[tokio::test(flavor = "current_thread")]
    async fn a_large_status_is_encoded_off_the_runtime_thread() {
        let one = VhidInfo::from(&crate::metrics::tests::status(carp_proto::State::Master));
        let response = Response {
            ok: true,
            vhids: vec![one; 4000],
            ..Response::default()
        };
        let (line, ran_meanwhile) =
            crate::blocking::turns_of_others_during(encode_line(response)).await;
        let line = line.unwrap();
        assert_eq!(line.last(), Some(&b'\n'));
        let back: Response = serde_json::from_slice(&line).unwrap();
        assert_eq!(back.vhids.len(), 4000);
        assert!(
            ran_meanwhile > 0,
            "nothing else ran while the status was encoded"
        );
    }

    #[test]
    fn the_sockets_directory_is_created_private_once() {
        let base = std::env::temp_dir().join(format!("carpd-rundir-{}", std::process::id()));
        std::fs::create_dir_all(&base).unwrap();
        let sock = base.join("carpd").join("carpd.sock");
        create_runtime_dir(&sock).unwrap();
        let mode = std::fs::metadata(base.join("carpd"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o750);
        create_runtime_dir(&sock).unwrap();
        std::fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn request_wire_format() {
        let r: Request = serde_json::from_str(r#"{"command":"status"}"#).unwrap();
        assert_eq!(r, Request::Status);
        let r: Request = serde_json::from_str(r#"{"command":"demote","by":-3,"vhid":7}"#).unwrap();
        assert_eq!(
            r,
            Request::Demote {
                by: -3,
                interface: None,
                vhid: Some(7),
                group: None,
            }
        );
        let r: Request =
            serde_json::from_str(r#"{"command":"demote","by":5,"group":"fw"}"#).unwrap();
        assert_eq!(
            r,
            Request::Demote {
                by: 5,
                interface: None,
                vhid: None,
                group: Some("fw".into()),
            }
        );
        assert_eq!(
            serde_json::to_string(&Request::Stepdown {
                interface: Some("eth0".into()),
                vhid: None
            })
            .unwrap(),
            r#"{"command":"stepdown","interface":"eth0"}"#
        );
        for bad in [
            r#"{"command":"format-disk"}"#,
            r#"{"command":"demote","by":1,"x":1}"#,
            r#"{"command":"demote","by":1,"vhid":300}"#,
            "not json",
        ] {
            assert!(serde_json::from_str::<Request>(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn reload_requests_and_a_preview() {
        let r: Request = serde_json::from_str(r#"{"command":"reload"}"#).unwrap();
        assert_eq!(r, Request::Reload { dry_run: false });
        let r: Request = serde_json::from_str(r#"{"command":"reload","dry_run":true}"#).unwrap();
        assert_eq!(r, Request::Reload { dry_run: true });
        let key = |vhid| VhidKey {
            interface: "eth0".into(),
            vhid,
        };
        let report = ReloadReport {
            added: vec![key(3)],
            removed: vec![key(2)],
            changed: vec![key(1)],
            changed_keys: [(key(1), vec!["advskew", "preempt"])].into(),
            unchanged: 4,
        };
        assert_eq!(
            ReloadInfo::new(&report).preview(),
            "a reload would do: 1 added (eth0/3), 1 removed (eth0/2), 1 changed (eth0/1), \
             4 unchanged\n  eth0/1 restarts: advskew, preempt changed"
        );
        let r: Request = serde_json::from_str(r#"{"command":"events","vhid":1}"#).unwrap();
        assert_eq!(
            r,
            Request::Events {
                interface: None,
                vhid: Some(1)
            }
        );
    }

    #[test]
    fn responses_round_trip() {
        let r = Response::error("broken");
        let text = serde_json::to_string(&r).unwrap();
        assert_eq!(text, r#"{"ok":false,"error":"broken","vhids":[]}"#);
        assert_eq!(serde_json::from_str::<Response>(&text).unwrap(), r);
    }

    #[test]
    fn stale_socket_is_replaced_and_a_live_one_refused() {
        let dir = std::env::temp_dir().join(format!("carpd-control-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("c.sock");
        let (first, stale) = claim(&path, None).unwrap();
        assert!(!stale);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(matches!(claim(&path, None), Err(Error::AlreadyRunning(_))));
        drop(first);
        // the file stays behind, as after a crash
        let (_second, stale) = claim(&path, None).unwrap();
        assert!(stale);
        let file = dir.join("plain");
        std::fs::write(&file, "x").unwrap();
        assert!(matches!(claim(&file, None), Err(Error::NotASocket(_))));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_control_group_opens_the_socket_to_the_group() {
        use std::os::unix::fs::MetadataExt;
        let dir = std::env::temp_dir().join(format!("carpd-control-g-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("c.sock");
        let group = ControlGroup {
            name: "nogroup".into(),
            gid: 65534,
        };
        let (_l, _) = claim(&path, Some(&group)).unwrap();
        let m = std::fs::metadata(&path).unwrap();
        assert_eq!((m.mode() & 0o777, m.gid()), (0o660, 65534));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn who_is_allowed() {
        let none = Access {
            own_uid: 998,
            ..Access::new(None)
        };
        assert_eq!(none.allows(0, 0).await, Ok(()));
        assert_eq!(none.allows(998, 998).await, Ok(()));
        assert_eq!(none.allows(65534, 65534).await, Err(Refusal::NotAllowed));
        assert_eq!(none.who_may(), "only root and uid 998 may use it");
        let grouped = Access::new(Some(ControlGroup {
            name: "carpd-admin".into(),
            gid: 4242,
        }));
        // by the primary group the kernel reports
        assert_eq!(grouped.allows(65534, 4242).await, Ok(()));
        // uid 65534 (nobody) is in no such group in the user database
        assert_eq!(grouped.allows(65534, 65534).await, Err(Refusal::NotAllowed));
        grouped.note_refusal(65534, 65534, Some(1), Refusal::NotAllowed);
        grouped.note_refusal(65534, 65534, None, Refusal::LookupTimedOut);
        assert_eq!(grouped.refused(), 2);
        assert_eq!(grouped.log.lock().unwrap().1, 1);
    }

    /// A user database that never answers: each lookup is refused after
    /// the timeout, and once the lookup slots are all held by hung lookups,
    /// at once; the runtime goes on meanwhile.
    #[tokio::test]
    async fn a_hung_group_lookup_refuses_instead_of_waiting() {
        use std::sync::atomic::AtomicBool;
        // released at the end, since the runtime waits for its blocking
        // threads when dropped
        static RELEASE: AtomicBool = AtomicBool::new(false);
        fn hangs(_uid: u32, _gid: u32) -> bool {
            while !RELEASE.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(10));
            }
            true
        }
        let access = Access {
            member: hangs,
            lookup_timeout: Duration::from_millis(200),
            ..Access::new(Some(ControlGroup {
                name: "carpd-admin".into(),
                gid: 4242,
            }))
        };
        let started = Instant::now();
        for _ in 0..GROUP_LOOKUPS {
            assert_eq!(
                access.allows(65534, 65534).await,
                Err(Refusal::LookupTimedOut)
            );
        }
        assert_eq!(access.allows(65534, 65534).await, Err(Refusal::LookupsBusy));
        // by the kernel-reported group: no lookup needed
        assert_eq!(access.allows(65534, 4242).await, Ok(()));
        assert!(started.elapsed() < Duration::from_secs(30));
        RELEASE.store(true, Ordering::Relaxed);
    }
}
