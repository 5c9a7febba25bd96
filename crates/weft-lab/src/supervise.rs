//! The lab's supervisor: one detached process per lab that keeps the control plane (in the
//! lab's root namespace) and one agent per node (in the node's namespace) running, restarts
//! whichever dies, and reports each one's health in `status.json`.

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};
use weft_netlink::Netns;

/// One supervised program.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProcSpec {
    pub name: String,
    /// The named network namespace it runs in.
    pub netns: String,
    pub argv: Vec<String>,
    /// Descriptors of the supervisor the program inherits under the same numbers (every
    /// other one is closed on exec), e.g. the API's listener on the machine's loopback.
    #[serde(default)]
    pub inherit_fds: Vec<i32>,
    /// Its nice value (and that of everything it starts); 0 leaves the supervisor's.
    #[serde(default)]
    pub nice: i32,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ProcStatus {
    pub name: String,
    pub pid: Option<u32>,
    pub running: bool,
    pub restarts: u32,
    pub last_exit: Option<String>,
    /// Seconds since the Unix epoch of the last (re)start.
    pub started_at: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SupervisorStatus {
    pub pid: u32,
    pub procs: Vec<ProcStatus>,
}

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_term(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

struct Running {
    spec: ProcSpec,
    child: Option<Child>,
    status: ProcStatus,
    /// Not before this instant: restarts back off so a crash loop doesn't spin.
    next_start: Instant,
    backoff: Duration,
}

fn spawn(spec: &ProcSpec, logs: &Path) -> Result<Child> {
    let ns = Netns::from_name(&spec.netns)
        .map_err(Error::kernel(format!("open namespace {}", spec.netns)))?;
    let log_path = logs.join(format!("{}.log", spec.name));
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(&log_path)
        .map_err(Error::io(format!("open {}", log_path.display())))?;
    let err = log.try_clone().map_err(Error::io("dup log"))?;
    let fd = ns.fd().as_raw_fd();
    let (prog, args) = spec
        .argv
        .split_first()
        .ok_or_else(|| Error::invalid("process", format!("{} has an empty command", spec.name)))?;
    let mut c = Command::new(prog);
    c.args(args).stdin(Stdio::null()).stdout(log).stderr(err);
    let inherit = spec.inherit_fds.clone();
    let nice = spec.nice;
    // SAFETY: only setns(2), setpriority(2) and fcntl(2), which are async-signal-safe, run
    // between fork and exec; `inherit` was allocated before the fork.
    unsafe {
        c.pre_exec(move || {
            if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            if nice != 0 && libc::setpriority(libc::PRIO_PROCESS, 0, nice) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The child's copy only: the supervisor keeps its close-on-exec flag.
            for &keep in &inherit {
                if libc::fcntl(keep, libc::F_SETFD, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let child = c
        .spawn()
        .map_err(Error::io(format!("start {}", spec.name)))?;
    drop(ns);
    Ok(child)
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn write_status(path: &Path, procs: &[Running]) {
    let status = SupervisorStatus {
        pid: std::process::id(),
        procs: procs.iter().map(|r| r.status.clone()).collect(),
    };
    if let Ok(bytes) = serde_json::to_vec_pretty(&status) {
        let _ = crate::access::write_private(path, &bytes, None);
    }
}

/// Runs until SIGTERM/SIGINT: starts every program, restarts those that exit, then stops them
/// all (SIGTERM, SIGKILL after 3 s).
pub fn run(specs: Vec<ProcSpec>, lab_dir: &Path) -> Result<()> {
    // SAFETY: the handler only stores to an atomic.
    unsafe {
        libc::signal(libc::SIGTERM, on_term as *const () as libc::sighandler_t);
        libc::signal(libc::SIGINT, on_term as *const () as libc::sighandler_t);
    }
    let logs = lab_dir.join("logs");
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&logs)
        .map_err(Error::io(format!("create {}", logs.display())))?;
    let status_path = lab_dir.join("status.json");
    let mut procs: Vec<Running> = specs
        .into_iter()
        .map(|spec| Running {
            status: ProcStatus {
                name: spec.name.clone(),
                ..Default::default()
            },
            spec,
            child: None,
            next_start: Instant::now(),
            backoff: Duration::from_millis(200),
        })
        .collect();
    while !STOP.load(Ordering::SeqCst) {
        for r in &mut procs {
            if let Some(c) = &mut r.child {
                if let Ok(Some(exit)) = c.try_wait() {
                    r.status.running = false;
                    r.status.last_exit = Some(exit.to_string());
                    r.child = None;
                    r.next_start = Instant::now() + r.backoff;
                    r.backoff = (r.backoff * 2).min(Duration::from_secs(5));
                }
            }
            if r.child.is_none() && Instant::now() >= r.next_start {
                match spawn(&r.spec, &logs) {
                    Ok(c) => {
                        if r.status.started_at != 0 {
                            r.status.restarts += 1;
                        }
                        r.status.pid = Some(c.id());
                        r.status.running = true;
                        r.status.started_at = now_secs();
                        r.child = Some(c);
                    }
                    Err(e) => {
                        r.status.last_exit = Some(format!("cannot start: {e}"));
                        r.next_start = Instant::now() + Duration::from_secs(1);
                    }
                }
            }
            // A program that stayed up for a while earns a fast restart again.
            if r.status.running && now_secs().saturating_sub(r.status.started_at) > 30 {
                r.backoff = Duration::from_millis(200);
            }
        }
        write_status(&status_path, &procs);
        std::thread::sleep(Duration::from_millis(100));
    }
    stop_all(&mut procs);
    write_status(&status_path, &procs);
    Ok(())
}

fn stop_all(procs: &mut [Running]) {
    for r in procs.iter_mut() {
        if let Some(c) = &r.child {
            // SAFETY: signalling our own child.
            unsafe {
                libc::kill(c.id() as i32, libc::SIGTERM);
            }
        }
    }
    let deadline = Instant::now() + Duration::from_secs(3);
    for r in procs.iter_mut() {
        if let Some(mut c) = r.child.take() {
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
        r.status.running = false;
    }
}

pub fn read_status(lab_dir: &Path) -> Option<SupervisorStatus> {
    serde_json::from_slice(&std::fs::read(lab_dir.join("status.json")).ok()?).ok()
}

pub fn pid_file(lab_dir: &Path) -> PathBuf {
    lab_dir.join("supervisor.pid")
}
