//! `carpd events` on the daemon's side: the engine's events, one JSON line
//! each, to a control socket client, which is cut off when it falls
//! behind so that it never slows the daemon.

use std::sync::Arc;
use std::time::Duration;

use carp_engine::hooks::HookOutcome;
use carp_engine::{Event, EventKind, VhidFilter};
use serde_json::{Value, json};
use tokio::io::AsyncReadExt;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::broadcast::{self, error::RecvError};
use tracing::info;

use crate::control::{Response, write_line};
use crate::run::Shared;

/// How long one event line may take to reach the client's socket buffer;
/// a client that leaves it full this long is not reading.
const WRITE_TIMEOUT: Duration = Duration::from_secs(1);

/// Stream events matching `filter` (and the engine-wide ones) until the
/// client closes the connection, falls behind or stops reading.
pub async fn stream(
    read: tokio::io::BufReader<OwnedReadHalf>,
    mut write: OwnedWriteHalf,
    shared: &Arc<Shared>,
    filter: VhidFilter,
) {
    let events = match shared.events().await {
        Ok(rx) => rx,
        Err(e) => {
            write_line(&mut write, &Response::error(e), WRITE_TIMEOUT).await;
            return;
        }
    };
    let started = Response {
        ok: true,
        message: Some("streaming events".into()),
        ..Response::default()
    };
    if write_line(&mut write, &started, WRITE_TIMEOUT).await {
        forward(read, write, events, &filter).await;
    }
}

/// Write each event of `events` matching `filter` to `write`, until the
/// reading side ends, the client falls behind or a write times out.
async fn forward(
    mut read: tokio::io::BufReader<OwnedReadHalf>,
    mut write: OwnedWriteHalf,
    mut events: broadcast::Receiver<Event>,
    filter: &VhidFilter,
) {
    let mut scratch = [0u8; 64];
    loop {
        let event = tokio::select! {
            // anything but more input (EOF, an error) ends the stream
            n = read.read(&mut scratch) => match n {
                Ok(n) if n > 0 => continue,
                _ => return,
            },
            e = events.recv() => e,
        };
        match event {
            Ok(e) if wanted(filter, &e) => {
                if !write_line(&mut write, &to_json(&e), WRITE_TIMEOUT).await {
                    info!("control socket: an events client stopped reading; disconnected");
                    return;
                }
            }
            Ok(_) => {}
            Err(RecvError::Lagged(missed)) => {
                info!(
                    missed,
                    "control socket: an events client was too slow; disconnected"
                );
                let line = json!({
                    "event": "disconnected",
                    "message": format!("too slow, disconnected ({missed} events missed)"),
                });
                write_line(&mut write, &line, WRITE_TIMEOUT).await;
                return;
            }
            Err(RecvError::Closed) => return,
        }
    }
}

fn wanted(filter: &VhidFilter, e: &Event) -> bool {
    e.key.as_ref().is_none_or(|k| {
        filter.interface.as_ref().is_none_or(|i| *i == k.interface)
            && filter.vhid.is_none_or(|v| v == k.vhid)
    })
}

/// `{"event":"transition","at":"2026-…Z","interface":"eth0","vhid":1,…}`.
pub fn to_json(e: &Event) -> Value {
    let mut v = json!({
        "event": e.kind.name(),
        "at": humantime::format_rfc3339_millis(e.at).to_string(),
    });
    if let Some(k) = &e.key {
        v["interface"] = json!(k.interface);
        v["vhid"] = json!(k.vhid);
    }
    let details = match &e.kind {
        EventKind::Transition { from, to, reason } => json!({
            "from": from.as_str(), "to": to.as_str(), "reason": reason.as_str(),
        }),
        EventKind::Demotion { from, to } => json!({ "from": from, "to": to }),
        EventKind::HookStarted { hook } => json!({ "hook": hook.as_str() }),
        EventKind::HookFinished { hook, outcome } => {
            json!({ "hook": hook.as_str(), "outcome": outcome_text(outcome) })
        }
        EventKind::Reload {
            added,
            removed,
            changed,
        } => json!({ "added": added, "removed": removed, "changed": changed }),
        EventKind::AddressConflict { address, detail } => {
            json!({ "address": address.to_string(), "detail": detail })
        }
        EventKind::AddressRestored { count } => json!({ "count": count }),
    };
    if let (Value::Object(out), Value::Object(more)) = (&mut v, details) {
        out.extend(more);
    }
    v
}

/// `success`, `exit 1`, `killed by a signal`, `timed out`, `not runnable: …`.
fn outcome_text(o: &HookOutcome) -> String {
    match o {
        HookOutcome::Success => "success".into(),
        HookOutcome::Failed(Some(code)) => format!("exit {code}"),
        HookOutcome::Failed(None) => "killed by a signal".into(),
        HookOutcome::TimedOut => "timed out".into(),
        HookOutcome::SpawnError(e) => format!("not runnable: {e}"),
    }
}

/// One event as a line of text, for `carpd events` without `--json`.
pub fn to_text(v: &Value) -> String {
    let s = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or("");
    let who = match (v.get("interface"), v.get("vhid")) {
        (Some(i), Some(n)) => format!("{}/{} ", i.as_str().unwrap_or(""), n),
        _ => String::new(),
    };
    let what = match s("event") {
        "transition" => format!("{} -> {} ({})", s("from"), s("to"), s("reason")),
        "demotion" => format!("demotion {} -> {}", v["from"], v["to"]),
        "hook_started" => format!("{} hook started", s("hook")),
        "hook_finished" => format!("{} hook finished: {}", s("hook"), s("outcome")),
        "reload" => format!(
            "reload: added {} removed {} changed {}",
            v["added"], v["removed"], v["changed"]
        ),
        "address_conflict" => format!("address conflict on {}: {}", s("address"), s("detail")),
        "address_restored" => format!("{} address(es) restored", v["count"]),
        "disconnected" => s("message").to_string(),
        other => format!("{other} {v}"),
    };
    format!("{} {who}{what}", s("at"))
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use carp_engine::VhidKey;
    use carp_proto::{Reason, State};

    use super::*;

    #[test]
    fn events_as_json_and_text() {
        let e = Event {
            at: SystemTime::UNIX_EPOCH,
            key: Some(VhidKey {
                interface: "eth0".into(),
                vhid: 3,
            }),
            kind: EventKind::Transition {
                from: State::Backup,
                to: State::Master,
                reason: Reason::MasterDown,
            },
        };
        let v = to_json(&e);
        assert_eq!(
            v,
            json!({"event":"transition","at":"1970-01-01T00:00:00.000Z","interface":"eth0",
                   "vhid":3,"from":"BACKUP","to":"MASTER","reason":"master_down"})
        );
        assert_eq!(
            to_text(&v),
            "1970-01-01T00:00:00.000Z eth0/3 BACKUP -> MASTER (master_down)"
        );
        let only_1 = VhidFilter {
            interface: None,
            vhid: Some(1),
            group: None,
        };
        assert!(!wanted(&only_1, &e));
        let reload = Event {
            at: SystemTime::UNIX_EPOCH,
            key: None,
            kind: EventKind::Reload {
                added: vec![],
                removed: vec![],
                changed: vec!["eth0/1".into()],
            },
        };
        assert!(wanted(&only_1, &reload));
    }

    #[tokio::test]
    async fn a_client_that_fell_behind_is_told_and_cut_off() {
        let bus = carp_engine::EventBus::default();
        let events = bus.subscribe();
        for to in 0..=u8::MAX {
            for _ in 0..5 {
                bus.publish(None, EventKind::Demotion { from: 0, to });
            }
        }
        let (daemon_side, client_side) = tokio::net::UnixStream::pair().unwrap();
        let (read, write) = daemon_side.into_split();
        let all = VhidFilter {
            interface: None,
            vhid: None,
            group: None,
        };
        // the client's end stays open: only falling behind ends the stream
        forward(tokio::io::BufReader::new(read), write, events, &all).await;
        let mut got = String::new();
        let mut client_side = client_side;
        client_side.read_to_string(&mut got).await.unwrap();
        let lines: Vec<Value> = got
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 1, "{got}");
        assert_eq!(lines[0]["event"], "disconnected");
        let message = lines[0]["message"].as_str().unwrap();
        assert!(message.starts_with("too slow, disconnected ("), "{message}");
    }
}
