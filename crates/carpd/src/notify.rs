//! systemd integration (`Type=notify`): readiness, reloads, stopping and
//! watchdog pings. Without `$NOTIFY_SOCKET` every call does nothing.

use std::time::Duration;

use sd_notify::NotifyState;
use tokio::task::JoinHandle;
use tracing::debug;

fn send(states: &[NotifyState]) {
    // The service manager is an observer: failing to tell it must not stop
    // the daemon (systemd itself times out on a missing READY).
    if let Err(e) = sd_notify::notify(states) {
        debug!(error = %e, "sd_notify");
    }
}

/// The engine runs and the control socket answers.
pub fn ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// A reload begins; [`ready`] ends it.
pub fn reloading() {
    // systemd 253+ requires the monotonic time with RELOADING=1.
    match NotifyState::monotonic_usec_now() {
        Ok(now) => send(&[NotifyState::Reloading, now]),
        Err(_) => send(&[NotifyState::Reloading]),
    }
}

pub fn stopping() {
    send(&[NotifyState::Stopping]);
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
            send(&[NotifyState::Watchdog]);
        }
    }))
}
