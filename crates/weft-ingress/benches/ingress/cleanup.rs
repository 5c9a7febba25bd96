//! Cleanup: the namespace, its hosts file, the processes, the work directory; on success,
//! on a panic (`Guard`'s Drop) and on SIGINT/SIGTERM/SIGHUP (a thread waiting for them).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::{Mutex, MutexGuard};

use crate::procs::{alive, signal, stop_tree, wait_gone};

#[derive(Default)]
pub struct Cleanup {
    pub netns: Option<String>,
    pub dir: Option<PathBuf>,
    pub keep_dir: bool,
    /// Processes to stop, newest last. nginx masters get their workers stopped too.
    pub pids: Vec<u32>,
}

static CLEANUP: Mutex<Option<Cleanup>> = Mutex::new(None);

/// What is left to clean up; `None` once the cleanup ran (or before it was armed).
fn state() -> MutexGuard<'static, Option<Cleanup>> {
    CLEANUP.lock().unwrap_or_else(|p| p.into_inner())
}

/// Records what to clean up; the returned guard cleans up when dropped (on success and
/// on a panic).
pub fn arm(c: Cleanup) -> Guard {
    *state() = Some(c);
    Guard
}

/// Records a child to stop at the end; one started after the cleanup ran (a signal came
/// while it was being spawned) is stopped at once.
pub fn register_pid(pid: u32) {
    let mut state = state();
    match state.as_mut() {
        Some(c) => c.pids.push(pid),
        None => {
            drop(state);
            stop_tree(pid);
        }
    }
}

/// Forgets a child that was waited for: its pid may be reused by someone else's process.
pub fn unregister_pid(pid: u32) {
    if let Some(c) = state().as_mut() {
        c.pids.retain(|p| *p != pid);
    }
}

/// Stops a child of ours and its children, reaps it, forgets it.
pub fn finish(child: &mut Child) {
    stop_tree(child.id());
    let _ = child.wait();
    unregister_pid(child.id());
}

/// Idempotent; the lock is held throughout, so a second caller (the main thread
/// unwinding while the signal thread cleans up) waits until everything is gone.
fn cleanup() {
    let mut state = state();
    let Some(c) = state.take() else {
        return;
    };
    for pid in c.pids.iter().rev() {
        if alive(*pid) {
            stop_tree(*pid);
        }
    }
    if let Some(ns) = &c.netns {
        // Whatever still runs in the namespace was started by this bench (an nginx worker
        // whose master died, say): stop it, or the namespace outlives its name.
        let in_ns = || -> Vec<u32> {
            Command::new("ip")
                .args(["netns", "pids", ns])
                .output()
                .map(|o| {
                    String::from_utf8_lossy(&o.stdout)
                        .split_whitespace()
                        .filter_map(|p| p.parse().ok())
                        .filter(|p| *p != std::process::id())
                        .collect()
                })
                .unwrap_or_default()
        };
        for sig in [
            nix::sys::signal::Signal::SIGTERM,
            nix::sys::signal::Signal::SIGKILL,
        ] {
            let left = in_ns();
            for p in &left {
                signal(*p, sig);
            }
            wait_gone(&left);
        }
        let ok = Command::new("ip")
            .args(["netns", "del", ns])
            .status()
            .is_ok_and(|s| s.success());
        let _ = fs::remove_dir_all(Path::new("/etc/netns").join(ns));
        if !ok {
            eprintln!("bench: could not delete netns {ns}");
        }
    }
    if let Some(d) = &c.dir {
        if c.keep_dir {
            eprintln!("bench: kept {}", d.display());
        } else {
            let _ = fs::remove_dir_all(d);
        }
    }
}

pub struct Guard;
impl Drop for Guard {
    fn drop(&mut self) {
        cleanup();
    }
}

/// A command whose process starts with no signal blocked: this process blocks SIGINT,
/// SIGTERM and SIGHUP in every thread (see `install_signal_thread`), and a child inherits
/// the mask across exec.
pub fn unblocked(prog: &str) -> Command {
    use std::os::unix::process::CommandExt;
    let mut c = Command::new(prog);
    // SAFETY: pthread_sigmask is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        c.pre_exec(|| {
            nix::sys::signal::pthread_sigmask(
                nix::sys::signal::SigmaskHow::SIG_SETMASK,
                Some(&nix::sys::signal::SigSet::empty()),
                None,
            )
            .map_err(std::io::Error::from)
        });
    }
    c
}

pub fn install_signal_thread() {
    use nix::sys::signal::{SigSet, Signal};
    let mut set = SigSet::empty();
    for s in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        set.add(s);
    }
    // Blocked here, before any other thread exists, so every thread inherits it and only
    // the waiting thread takes them. Children are started unblocked (`unblocked`).
    set.thread_block().expect("block signals");
    std::thread::spawn(move || {
        if let Ok(sig) = set.wait() {
            eprintln!("\nbench: {sig:?}: cleaning up");
            cleanup();
            std::process::exit(130);
        }
    });
}
