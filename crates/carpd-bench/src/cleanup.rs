//! The benchmark always removes what it creates: namespaces (guards from
//! `carpd-testbed`) and scratch directories on drop, and both from a signal
//! thread on SIGINT/SIGTERM/SIGHUP (see [`install_cleanup`]).

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::thread;

use carpd_testbed::netns::{delete_namespace, live_namespaces, unique};
use nix::sys::signal::{SigSet, Signal};

use crate::error::{Error, Result};

/// Scratch directories alive right now, for the signal thread.
static LIVE_DIRS: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

/// Blocks the termination signals in this thread (and so in every thread
/// started after it) and starts a thread that, on any of them, kills the
/// processes in our namespaces, deletes the namespaces and directories,
/// and exits. Call first thing in `main`.
pub fn install_cleanup() -> Result<()> {
    let mut set = SigSet::empty();
    for s in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        set.add(s);
    }
    set.thread_block()
        .map_err(|e| Error::Setup(format!("block signals: {e}")))?;
    thread::spawn(move || {
        let Ok(sig) = set.wait() else { return };
        eprintln!("carpd-bench: {sig}, removing namespaces");
        for name in live_namespaces().iter().rev() {
            let _ = delete_namespace(name);
        }
        let dirs = LIVE_DIRS.lock().map(|l| l.clone()).unwrap_or_default();
        for dir in dirs.iter().rev() {
            let _ = fs::remove_dir_all(dir);
        }
        std::process::exit(130);
    });
    Ok(())
}

/// A directory for configurations, scripts and logs, removed on drop (kept
/// if `CARPD_BENCH_KEEP` is set).
#[derive(Debug)]
pub struct Scratch {
    path: PathBuf,
}

impl Scratch {
    pub fn new() -> Result<Scratch> {
        let path = std::env::temp_dir().join(unique("files"));
        fs::create_dir_all(&path)?;
        if let Ok(mut live) = LIVE_DIRS.lock() {
            live.push(path.clone());
        }
        Ok(Scratch { path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn write(&self, name: &str, contents: &str) -> Result<PathBuf> {
        let p = self.path.join(name);
        fs::write(&p, contents)?;
        Ok(p)
    }

    /// Writes an executable shell script.
    pub fn script(&self, name: &str, body: &str) -> Result<PathBuf> {
        use std::os::unix::fs::PermissionsExt;
        let p = self.write(name, &format!("#!/bin/sh\n{body}\n"))?;
        fs::set_permissions(&p, fs::Permissions::from_mode(0o755))?;
        Ok(p)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if std::env::var_os("CARPD_BENCH_KEEP").is_some() {
            eprintln!("kept {}", self.path.display());
        } else {
            let _ = fs::remove_dir_all(&self.path);
        }
        if let Ok(mut live) = LIVE_DIRS.lock() {
            live.retain(|p| p != &self.path);
        }
    }
}
