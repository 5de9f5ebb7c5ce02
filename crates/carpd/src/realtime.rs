//! `realtime = true`: the runtime thread at a SCHED_RR priority, and all of
//! the process's memory locked, so that a busy machine or memory pressure
//! delays neither advertisements nor the reaction to a silent master.
//!
//! Which threads run real-time: only the thread that runs the async
//! runtime, which handles every timer, receive and send. It is switched
//! with `SCHED_RESET_ON_FORK`, so every thread and process it creates
//! starts at SCHED_OTHER: the blocking pool (file reads at reload, hook
//! start-up) and, through it, hook and tracker commands. The log writer
//! threads exist before the switch and keep SCHED_OTHER. Hooks are also
//! started from a thread reset to SCHED_OTHER (`carp_engine`'s hooks), so
//! a hook never runs real-time however the daemon was started.
//!
//! A missing capability or limit is an error, not a warning: an operator
//! who asked for real-time must not run without it unknowingly.

use nix::sys::mman::{MlockAllFlags, mlockall};
use nix::sys::resource::{Resource, getrlimit};

use crate::config::RealtimePriority;
use crate::error::Error;

/// Put the calling thread (the one about to run the runtime) at SCHED_RR
/// `priority`, then lock all current and future memory.
pub(crate) fn enter(priority: RealtimePriority) -> Result<(), Error> {
    set_round_robin(priority.get()).map_err(|source| Error::Realtime {
        message: format!(
            "cannot run at SCHED_RR priority {}: needs CAP_SYS_NICE or \
             RLIMIT_RTPRIO (LimitRTPRIO=) of at least {} (it is {})",
            priority.get(),
            priority.get(),
            limit(Resource::RLIMIT_RTPRIO, ""),
        ),
        source,
    })?;
    mlockall(MlockAllFlags::MCL_CURRENT | MlockAllFlags::MCL_FUTURE).map_err(|source| {
        Error::Realtime {
            message: format!(
                "cannot lock memory (mlockall): needs CAP_IPC_LOCK or an \
                 RLIMIT_MEMLOCK (LimitMEMLOCK=) that holds the whole process \
                 (it is {})",
                limit(Resource::RLIMIT_MEMLOCK, " bytes"),
            ),
            source,
        }
    })
}

/// SCHED_RR at `priority` for the calling thread only, not inherited by
/// the threads and processes it creates.
fn set_round_robin(priority: u8) -> nix::Result<()> {
    let param = libc::sched_param {
        sched_priority: libc::c_int::from(priority),
    };
    // SAFETY: `param` is a valid sched_param for the duration of the call,
    // which only reads it; pid 0 is the calling thread. nix has no wrapper.
    let r =
        unsafe { libc::sched_setscheduler(0, libc::SCHED_RR | libc::SCHED_RESET_ON_FORK, &param) };
    nix::errno::Errno::result(r).map(drop)
}

/// The soft limit of `resource`, in `unit`, for the error message.
fn limit(resource: Resource, unit: &str) -> String {
    match getrlimit(resource) {
        Ok((soft, _)) if soft == libc::RLIM_INFINITY => "unlimited".into(),
        Ok((soft, _)) => format!("{soft}{unit}"),
        Err(e) => format!("unknown: {e}"),
    }
}
