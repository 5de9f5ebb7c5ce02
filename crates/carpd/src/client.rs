//! The client side of the control socket (`carpd status`, `demote`,
//! `promote`, `stepdown`, `reload`), and the manual page and completions
//! generated from the command-line definition.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use clap::CommandFactory;

use crate::cli::{AdjustArgs, Command, ConfigArgs};
use crate::control::{MAX_REQUEST, Request, Response, VhidInfo};
use crate::error::Error;

/// A reload waits for removed VHIDs to bow out and for their exit hooks.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(120);

pub fn run(command: Command) -> Result<(), Error> {
    match command {
        Command::Status { json, socket } => {
            let r = ask(&socket.socket, &Request::Status)?;
            if json {
                let doc = serde_json::json!({
                    "vhids": r.vhids,
                    "interface_drops": r.interface_drops,
                    "log_lines_dropped": r.log_lines_dropped.unwrap_or(0),
                });
                println!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default());
            } else {
                print!("{}", table(&r));
            }
            Ok(())
        }
        Command::Demote(a) => adjust(i32::from(a.by), a),
        Command::Promote(a) => adjust(-i32::from(a.by), a),
        Command::Stepdown { filter, socket } => {
            let r = ask(
                &socket.socket,
                &Request::Stepdown {
                    interface: filter.interface,
                    vhid: filter.vhid,
                },
            )?;
            say(&r);
            Ok(())
        }
        Command::Reload { dry_run, socket } => {
            let r = ask(&socket.socket, &Request::Reload { dry_run })?;
            say(&r);
            Ok(())
        }
        Command::Explain { filter, socket } => {
            let r = ask(&socket.socket, &Request::Status)?;
            let chosen: Vec<&VhidInfo> = (r.vhids.iter())
                .filter(|v| filter.interface.as_ref().is_none_or(|i| *i == v.interface))
                .filter(|v| filter.vhid.is_none_or(|n| n == v.vhid))
                .collect();
            if chosen.is_empty() {
                return Err(Error::Refused("no matching VHID".into()));
            }
            for v in chosen {
                let why = v.explanation.as_deref().unwrap_or("no explanation");
                println!("{}/{}: {why}", v.interface, v.vhid);
            }
            Ok(())
        }
        Command::Events {
            json,
            filter,
            socket,
        } => follow_events(
            &socket.socket,
            &Request::Events {
                interface: filter.interface,
                vhid: filter.vhid,
            },
            json,
        ),
        Command::Man => {
            let mut out = Vec::new();
            // A daemon's page: section 8, as carpd.service refers to it.
            clap_mangen::Man::new(ConfigArgs::command())
                .section("8")
                .render(&mut out)
                .map_err(|source| Error::Io {
                    context: "rendering the manual page".into(),
                    source,
                })?;
            write_stdout(&out)
        }
        Command::Completions { shell } => {
            let mut out = Vec::new();
            clap_complete::generate(shell, &mut ConfigArgs::command(), "carpd", &mut out);
            write_stdout(&out)
        }
    }
}

fn write_stdout(bytes: &[u8]) -> Result<(), Error> {
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(bytes)
        .and_then(|()| stdout.flush())
        .map_err(|source| Error::Io {
            context: "writing to stdout".into(),
            source,
        })
}

fn adjust(by: i32, args: AdjustArgs) -> Result<(), Error> {
    let r = ask(
        &args.socket.socket,
        &Request::Demote {
            by,
            interface: args.filter.interface,
            vhid: args.filter.vhid,
            group: args.group,
        },
    )?;
    say(&r);
    Ok(())
}

fn say(r: &Response) {
    if let Some(m) = &r.message {
        println!("{m}");
    }
}

/// Send one request and read its response; a refusal becomes an error.
pub fn ask(socket: &Path, request: &Request) -> Result<Response, Error> {
    let io = |source| Error::ControlSocket {
        path: socket.to_path_buf(),
        source,
    };
    let mut stream = UnixStream::connect(socket).map_err(io)?;
    stream
        .set_read_timeout(Some(RESPONSE_TIMEOUT))
        .and_then(|()| stream.set_write_timeout(Some(RESPONSE_TIMEOUT)))
        .map_err(io)?;
    let mut line = serde_json::to_vec(request).map_err(|e| Error::Refused(e.to_string()))?;
    line.push(b'\n');
    stream.write_all(&line).map_err(io)?;
    let mut reply = Vec::new();
    // A status of thousands of VHIDs is large, but not unbounded.
    let limit = u64::try_from(MAX_REQUEST * 1024).unwrap_or(u64::MAX);
    BufReader::new(std::io::Read::take(&stream, limit))
        .read_until(b'\n', &mut reply)
        .map_err(io)?;
    if reply.is_empty() {
        return Err(Error::Refused(format!(
            "{}: the daemon closed the connection without an answer",
            socket.display()
        )));
    }
    let response: Response = serde_json::from_slice(&reply)
        .map_err(|e| Error::Refused(format!("unreadable answer from the daemon: {e}")))?;
    if response.ok {
        Ok(response)
    } else {
        Err(Error::Refused(
            response
                .error
                .unwrap_or_else(|| "refused without a reason".into()),
        ))
    }
}

/// Stream events to stdout until the daemon closes the connection.
fn follow_events(socket: &Path, request: &Request, json: bool) -> Result<(), Error> {
    let io = |source| Error::ControlSocket {
        path: socket.to_path_buf(),
        source,
    };
    let mut stream = UnixStream::connect(socket).map_err(io)?;
    let mut line = serde_json::to_vec(request).map_err(|e| Error::Refused(e.to_string()))?;
    line.push(b'\n');
    stream.write_all(&line).map_err(io)?;
    let reader = BufReader::new(&stream);
    let mut lines = reader.lines();
    let first = lines.next().transpose().map_err(io)?.unwrap_or_default();
    let response: Response = serde_json::from_str(&first)
        .map_err(|e| Error::Refused(format!("unreadable answer from the daemon: {e}")))?;
    if !response.ok {
        return Err(Error::Refused(response.error.unwrap_or_default()));
    }
    // on stderr, so that stdout carries only events
    eprintln!(
        "{}",
        response.message.as_deref().unwrap_or("streaming events")
    );
    let mut stdout = std::io::stdout().lock();
    for l in lines {
        let l = l.map_err(io)?;
        let text = if json {
            l
        } else {
            match serde_json::from_str(&l) {
                Ok(v) => crate::events::to_text(&v),
                Err(_) => l,
            }
        };
        // a closed stdout (e.g. `| head`) ends the stream quietly
        if writeln!(stdout, "{text}")
            .and_then(|()| stdout.flush())
            .is_err()
        {
            return Ok(());
        }
    }
    Ok(())
}

/// `1h 2m 3s`, whole seconds.
fn ago(secs: f64) -> String {
    // Saturating float-to-int conversion; a negative or NaN age reads 0s.
    let whole = Duration::from_secs(secs as u64);
    humantime::format_duration(whole).to_string()
}

fn table(r: &Response) -> String {
    if r.vhids.is_empty() {
        return "no VHIDs configured\n".into();
    }
    let header = [
        "INTERFACE",
        "VHID",
        "STATE",
        "ADDRESSES",
        "ADVBASE",
        "ADVSKEW",
        "DEMOTE",
        "MASTER",
        "IN STATE",
        "LAST TRANSITION",
        "SENT",
        "RECEIVED",
        "DROPS",
        "TRANSITIONS",
    ];
    let row = |v: &VhidInfo| -> Vec<String> {
        let master = match (&v.master, v.state.as_str()) {
            (_, "MASTER") => "this node".to_string(),
            (Some(m), _) => m.clone(),
            (None, _) => "-".to_string(),
        };
        vec![
            v.interface.clone(),
            v.vhid.to_string(),
            v.state.clone(),
            v.addresses.join(","),
            v.advbase.to_string(),
            v.advskew.to_string(),
            v.demote.to_string(),
            master,
            ago(v.in_state_secs),
            v.last_transition.clone().unwrap_or_else(|| "-".into()),
            v.adverts_sent.to_string(),
            v.adverts_received.to_string(),
            v.drops.values().sum::<u64>().to_string(),
            v.transitions.to_string(),
        ]
    };
    let rows: Vec<Vec<String>> = std::iter::once(header.iter().map(|h| h.to_string()).collect())
        .chain(r.vhids.iter().map(row))
        .collect();
    let widths: Vec<usize> = (0..header.len())
        .map(|c| rows.iter().map(|r| r[c].len()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for cells in &rows {
        let line: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    let drops: Vec<String> = r
        .vhids
        .iter()
        .filter(|v| !v.drops.is_empty())
        .map(|v| {
            let reasons: Vec<String> = v.drops.iter().map(|(k, n)| format!("{k}={n}")).collect();
            format!("{}/{}: {}", v.interface, v.vhid, reasons.join(" "))
        })
        .chain(r.interface_drops.iter().map(|(i, d)| {
            let reasons: Vec<String> = d.iter().map(|(k, n)| format!("{k}={n}")).collect();
            format!("{i} (no VHID): {}", reasons.join(" "))
        }))
        .collect();
    if !drops.is_empty() {
        out.push_str("\ndropped advertisements:\n");
        for d in drops {
            out.push_str("  ");
            out.push_str(&d);
            out.push('\n');
        }
    }
    let peers: Vec<String> = (r.vhids.iter())
        .flat_map(|v| v.peers.iter().map(move |p| (v, p)))
        .map(|(v, p)| {
            format!(
                "{}/{}: {}{} {} advbase {} advskew {} demote {} heard {:.1}s ago, jitter {:.0} ms",
                v.interface,
                v.vhid,
                p.address,
                if p.master { " (master)" } else { "" },
                p.mac.as_deref().unwrap_or("mac unknown"),
                p.advbase,
                p.advskew,
                p.demote,
                p.last_heard_secs,
                p.jitter_ms
            )
        })
        .collect();
    if !peers.is_empty() {
        out.push_str("\npeers:\n");
        for p in peers {
            out.push_str("  ");
            out.push_str(&p);
            out.push('\n');
        }
    }
    let conflicts: Vec<String> = r
        .vhids
        .iter()
        .filter(|v| v.address_conflicts > 0)
        .map(|v| format!("  {}/{}: {}\n", v.interface, v.vhid, v.address_conflicts))
        .collect();
    if !conflicts.is_empty() {
        out.push_str(
            "
address conflicts (our addresses claimed by other MACs while MASTER):
",
        );
        out.push_str(&conflicts.concat());
    }
    if let Some(n) = r.log_lines_dropped.filter(|n| *n > 0) {
        out.push_str(&format!(
            "\nlog lines dropped (the log output was not read): {n}\n"
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn man_page_and_completions_are_generated() {
        let mut man = Vec::new();
        clap_mangen::Man::new(ConfigArgs::command())
            .render(&mut man)
            .unwrap();
        let man = String::from_utf8(man).unwrap();
        assert!(man.contains(".TH carpd"), "{man}");
        assert!(man.contains("control\\-socket"), "{man}");
        for shell in [
            clap_complete::Shell::Bash,
            clap_complete::Shell::Zsh,
            clap_complete::Shell::Fish,
        ] {
            let mut out = Vec::new();
            clap_complete::generate(shell, &mut ConfigArgs::command(), "carpd", &mut out);
            let text = String::from_utf8(out).unwrap();
            assert!(text.contains("stepdown"), "{shell}: {text}");
        }
    }

    #[test]
    fn status_table() {
        let v = VhidInfo {
            interface: "eth0".into(),
            vhid: 1,
            state: "BACKUP".into(),
            addresses: vec!["10.0.0.1/24".into()],
            protocol: "carp".into(),
            priority: None,
            advbase: 1,
            advskew: 100,
            demote: 0,
            master: Some("10.0.0.2".into()),
            in_state_secs: 65.4,
            last_transition: Some("INIT -> BACKUP (startup)".into()),
            last_reason: Some("startup".into()),
            transitions: 1,
            transitions_by_reason: [("startup".to_string(), 1)].into(),
            adverts_sent: 0,
            adverts_received: 60,
            drops: [("bad_hmac".to_string(), 3)].into(),
            hook_runs: 0,
            hook_failures: 0,
            address_restored: 0,
            address_removed_foreign: 0,
            address_conflicts: 0,
            waiting_for: None,
            peers: vec![crate::control::PeerInfo {
                address: "10.0.0.2".into(),
                mac: Some("02:00:00:00:00:02".into()),
                advbase: 1,
                advskew: 0,
                demote: 0,
                last_heard_secs: 0.25,
                jitter_ms: 3.0,
                adverts: 60,
                master: true,
            }],
            explanation: None,
        };
        let mut r = Response {
            ok: true,
            vhids: vec![v],
            log_lines_dropped: Some(0),
            ..Response::default()
        };
        let t = table(&r);
        assert!(!t.contains("log lines dropped"), "{t}");
        assert!(!t.contains("address conflicts"), "{t}");
        r.vhids[0].address_conflicts = 3;
        let t = table(&r);
        assert!(
            t.contains("\naddress conflicts (our addresses claimed by other MACs while MASTER):\n  eth0/1: 3\n"),
            "{t}"
        );
        r.log_lines_dropped = Some(42);
        let t = table(&r);
        assert!(
            t.ends_with("\nlog lines dropped (the log output was not read): 42\n"),
            "{t}"
        );
        let lines: Vec<&str> = t.lines().collect();
        assert!(lines[0].starts_with("INTERFACE  VHID  STATE"), "{t}");
        assert!(lines[1].contains("10.0.0.2"), "{t}");
        assert!(lines[1].contains("1m 5s"), "{t}");
        assert!(lines[1].contains("INIT -> BACKUP (startup)"), "{t}");
        assert!(t.contains("eth0/1: bad_hmac=3"), "{t}");
        assert!(
            t.contains("eth0/1: 10.0.0.2 (master) 02:00:00:00:00:02 advbase 1 advskew 0 demote 0 heard 0.2s ago, jitter 3 ms"),
            "{t}"
        );
    }
}
