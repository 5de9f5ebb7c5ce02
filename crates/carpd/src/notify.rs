//! systemd integration (`Type=notify`): readiness, reloads, stopping and
//! watchdog pings. Without `$NOTIFY_SOCKET` every call does nothing.
//!
//! Messages go out from a thread of their own behind a small bounded
//! queue: sending on the notification socket waits while the service
//! manager is not reading it, and the runtime must never wait on that.

use std::sync::OnceLock;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::time::Duration;

use sd_notify::NotifyState;
use tokio::task::JoinHandle;
use tracing::debug;

/// Messages that may wait for the service manager; beyond this they are
/// dropped (only watchdog pings come often enough to fill it).
const QUEUED: usize = 64;

/// One notification, owned so it can wait in the queue.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Message {
    Ready(String),
    /// With `CLOCK_MONOTONIC` in microseconds at the start of the reload.
    Reloading(Option<i128>),
    Stopping,
    Watchdog,
}

/// The queue to the sender thread, started on first use when
/// `$NOTIFY_SOCKET` is set; `None` otherwise.
static QUEUE: OnceLock<Option<Queue>> = OnceLock::new();

#[derive(Debug)]
struct Queue(SyncSender<Message>);

impl Queue {
    /// Start a thread that hands each queued message to `deliver`.
    fn start(deliver: impl FnMut(Message) + Send + 'static) -> Option<Queue> {
        let (tx, rx) = sync_channel(QUEUED);
        let spawned = std::thread::Builder::new()
            .name("carpd-notify".into())
            .spawn(move || drain(rx, deliver));
        match spawned {
            Ok(_) => Some(Queue(tx)),
            Err(e) => {
                debug!(error = %e, "sd_notify: cannot start the sender thread");
                None
            }
        }
    }

    /// Queue without waiting; a full queue drops the message.
    fn push(&self, m: Message) {
        match self.0.try_send(m) {
            Ok(()) => {}
            Err(TrySendError::Full(m)) => {
                debug!(message = ?m, "sd_notify: the service manager is not reading; message dropped");
            }
            Err(TrySendError::Disconnected(_)) => {}
        }
    }
}

fn drain(rx: Receiver<Message>, mut deliver: impl FnMut(Message)) {
    for m in rx {
        deliver(m);
    }
}

fn send(m: Message) {
    let queue = QUEUE.get_or_init(|| {
        std::env::var_os("NOTIFY_SOCKET")?;
        Queue::start(deliver)
    });
    if let Some(q) = queue {
        q.push(m);
    }
}

/// On the sender thread: one message to the service manager.
fn deliver(m: Message) {
    let result = match &m {
        Message::Ready(status) => {
            sd_notify::notify(&[NotifyState::Ready, NotifyState::Status(status)])
        }
        // systemd 253+ requires the monotonic time with RELOADING=1.
        Message::Reloading(Some(t)) => {
            sd_notify::notify(&[NotifyState::Reloading, NotifyState::MonotonicUsec(*t)])
        }
        Message::Reloading(None) => sd_notify::notify(&[NotifyState::Reloading]),
        Message::Stopping => sd_notify::notify(&[NotifyState::Stopping]),
        Message::Watchdog => sd_notify::notify(&[NotifyState::Watchdog]),
    };
    // The service manager is an observer: failing to tell it must not stop
    // the daemon (systemd itself times out on a missing READY).
    if let Err(e) = result {
        debug!(error = %e, "sd_notify");
    }
}

/// The engine runs and the control socket answers.
pub fn ready(status: &str) {
    send(Message::Ready(status.to_string()));
}

/// A reload begins; [`ready`] ends it.
pub fn reloading() {
    // Taken now, not when the sender thread gets to it.
    let now = match NotifyState::monotonic_usec_now() {
        Ok(NotifyState::MonotonicUsec(t)) => Some(t),
        _ => None,
    };
    send(Message::Reloading(now));
}

pub fn stopping() {
    send(Message::Stopping);
}

/// Ping the watchdog at half the interval systemd asks for (`WatchdogSec=`),
/// from the runtime that also drives the VHIDs: a stalled runtime misses
/// its pings and systemd restarts the service.
pub fn watchdog() -> Option<JoinHandle<()>> {
    let period = sd_notify::watchdog_enabled()?;
    let every = (period / 2).max(Duration::from_millis(10));
    debug!(?period, "systemd watchdog enabled");
    Some(tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            send(Message::Watchdog);
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::time::Instant;

    #[test]
    fn a_stuck_service_manager_never_blocks_the_caller() {
        let (delivered_tx, delivered) = mpsc::channel();
        let (release, gate) = mpsc::channel::<()>();
        let q = Queue::start(move |m| {
            // The first delivery waits like a send to a socket nobody reads.
            let _ = gate.recv();
            let _ = delivered_tx.send(m);
        })
        .unwrap();
        let started = Instant::now();
        q.push(Message::Ready("running".into()));
        for _ in 0..10 * QUEUED {
            q.push(Message::Watchdog);
        }
        // Generous for a busy machine; a waiting push would never return.
        assert!(started.elapsed() < Duration::from_secs(10));
        drop(release);
        // Closing the queue lets the thread deliver what is left and end.
        drop(q);
        let all: Vec<Message> = delivered.iter().collect();
        assert_eq!(all[0], Message::Ready("running".into()));
        // What fitted in the queue followed, in order; the rest was
        // dropped. The thread may have taken the first message off the
        // queue before the pushes.
        assert!(all[1..].iter().all(|m| *m == Message::Watchdog));
        assert!((QUEUED..=QUEUED + 1).contains(&all.len()), "{}", all.len());
    }
}
