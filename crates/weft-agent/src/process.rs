//! Pod processes: started inside the pod's network namespace and a private mount and UTS
//! namespace (the pod's own /etc/resolv.conf, /etc/hosts and host name), detached from the
//! agent so that they outlive it; and the checks that tell whether a recorded PID is still
//! the process we started.

use std::ffi::CString;
use std::fs::{self, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitid, waitpid, Id, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use weft_netlink::Netns;

use crate::error::{Error, Result};

/// What a pod's processes are placed in. Moved into the `pre_exec` closure, so the
/// namespace handle lives as long as the `Command`.
pub struct Isolation {
    pub netns: Netns,
    /// (pod's file, host path it covers): bind mounts made in the private mount namespace.
    pub binds: Vec<(PathBuf, PathBuf)>,
    pub hostname: String,
    /// A new session: no signal sent to the agent's process group or terminal reaches the
    /// pod, and the pod's processes form one group that `stop` signals together.
    pub new_session: bool,
}

struct Prepared {
    netns: Netns,
    binds: Vec<(CString, CString)>,
    hostname: CString,
    new_session: bool,
}

fn cstring(p: &Path) -> Result<CString> {
    CString::new(p.as_os_str().as_bytes())
        .map_err(|_| Error::Config(format!("path {} contains a NUL byte", p.display())))
}

impl Isolation {
    /// Arrange for `cmd`'s child to enter the pod before it execs.
    pub fn apply(self, cmd: &mut Command) -> Result<()> {
        let mut binds = Vec::new();
        for (src, dst) in &self.binds {
            binds.push((cstring(src)?, cstring(dst)?));
        }
        let p = Prepared {
            netns: self.netns,
            binds,
            hostname: CString::new(self.hostname.as_bytes())
                .map_err(|_| Error::Config("host name contains a NUL byte".into()))?,
            new_session: self.new_session,
        };
        // SAFETY: the closure runs between fork and exec; it only makes system calls
        // (setsid, setns, unshare, mount, sethostname) on data prepared before the fork,
        // and allocates nothing.
        unsafe {
            cmd.pre_exec(move || p.enter());
        }
        Ok(())
    }
}

impl Prepared {
    fn enter(&self) -> io::Result<()> {
        let check = |r: libc::c_int| {
            if r < 0 {
                Err(io::Error::last_os_error())
            } else {
                Ok(())
            }
        };
        // SAFETY (all calls): plain system calls on valid, NUL-terminated buffers and an
        // open descriptor owned by `self`.
        unsafe {
            // Nothing the agent has open (netlink sockets in the node's namespace, state
            // files, descriptors the agent itself inherited) may reach the pod: every
            // descriptor above stderr closes at exec. std's own exec-error pipe is
            // close-on-exec already, so it keeps working.
            if libc::syscall(
                libc::SYS_close_range,
                3 as libc::c_uint,
                libc::c_uint::MAX,
                libc::CLOSE_RANGE_CLOEXEC,
            ) != 0
            {
                // Kernels before 5.11: mark them one by one, up to a sane bound.
                for fd in 3..4096 {
                    let flags = libc::fcntl(fd, libc::F_GETFD);
                    if flags >= 0 {
                        libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC);
                    }
                }
            }
            // An ignored signal stays ignored across exec: a pod must not inherit the
            // agent's choices (std already unblocks the mask and restores SIGPIPE).
            for sig in [
                libc::SIGTERM,
                libc::SIGINT,
                libc::SIGHUP,
                libc::SIGQUIT,
                libc::SIGCHLD,
            ] {
                libc::signal(sig, libc::SIG_DFL);
            }
            // The agent writes its state private (umask 077); a container starts with the
            // usual 022, as runtimes give it.
            libc::umask(0o022);
            if self.new_session {
                check(libc::setsid())?;
            }
            check(libc::setns(self.netns.fd().as_raw_fd(), libc::CLONE_NEWNET))?;
            check(libc::unshare(libc::CLONE_NEWNS | libc::CLONE_NEWUTS))?;
            // Slave rather than private: our mounts never propagate back to the host, but
            // the host's unmounts still reach us. A private copy of /run/netns would pin
            // every other pod's namespace for as long as this process lives.
            check(libc::mount(
                std::ptr::null(),
                c"/".as_ptr(),
                std::ptr::null(),
                libc::MS_REC | libc::MS_SLAVE,
                std::ptr::null(),
            ))?;
            for (src, dst) in &self.binds {
                check(libc::mount(
                    src.as_ptr(),
                    dst.as_ptr(),
                    std::ptr::null(),
                    libc::MS_BIND,
                    std::ptr::null(),
                ))?;
            }
            let h = self.hostname.as_bytes();
            check(libc::sethostname(h.as_ptr().cast(), h.len()))?;
        }
        Ok(())
    }
}

/// Open `path` for appending a container's output (created if absent).
pub fn log_file(path: &Path) -> Result<(Stdio, Stdio)> {
    let op = || format!("open log {}", path.display());
    let f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| Error::io(op(), e))?;
    let g = f.try_clone().map_err(|e| Error::io(op(), e))?;
    Ok((Stdio::from(f), Stdio::from(g)))
}

/// Start `weft log-writer PATH` (see [`crate::logwriter`]) in a session of its own and
/// return the container's stdout and stderr: the write ends of the pipes it reads. It ends
/// by itself once every writer is gone; a thread of ours collects it.
pub fn log_writer(weft_bin: &Path, path: &Path) -> Result<(Stdio, Stdio)> {
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    let op = || format!("start the log writer for {}", path.display());
    let pipe = || nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| Error::nix(op(), e));
    let (out_r, out_w) = pipe()?;
    let (err_r, err_w) = pipe()?;
    // Above 4, so that moving them to 3 and 4 in the child cannot overwrite one another.
    let high = |fd: &std::os::fd::OwnedFd| -> Result<std::os::fd::OwnedFd> {
        let n = fcntl(fd, FcntlArg::F_DUPFD_CLOEXEC(10)).map_err(|e| Error::nix(op(), e))?;
        // SAFETY: a new descriptor that nothing else owns.
        Ok(unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(n) })
    };
    let (o, e) = (high(&out_r)?, high(&err_r)?);
    drop((out_r, err_r));
    let (o_raw, e_raw) = (o.as_raw_fd(), e.as_raw_fd());
    let mut cmd = Command::new(weft_bin);
    cmd.arg("log-writer")
        .arg(path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // SAFETY: between fork and exec: setsid and dup2 on descriptors owned by this call.
    unsafe {
        cmd.pre_exec(move || {
            libc::setsid();
            if libc::dup2(o_raw, 3) < 0 || libc::dup2(e_raw, 4) < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().map_err(|e| Error::io(op(), e))?;
    drop((o, e));
    std::thread::spawn(move || {
        let _ = child.wait();
    });
    Ok((Stdio::from(out_w), Stdio::from(err_w)))
}

/// Find `program` the way a shell does: a path is taken as is, a bare name is searched in
/// the `PATH` the process will get.
pub fn resolve_program(program: &str, path_var: &str) -> Option<PathBuf> {
    if program.contains('/') {
        return Some(PathBuf::from(program));
    }
    path_var
        .split(':')
        .filter(|d| !d.is_empty())
        .map(|d| Path::new(d).join(program))
        .find(|p| {
            fs::metadata(p)
                .map(|m| m.is_file() && m.mode() & 0o111 != 0)
                .unwrap_or(false)
        })
}

/// State (third field) and start time (22nd) from /proc/PID/stat; None if no such process.
pub fn proc_stat(pid: u32) -> Option<(char, u64)> {
    let s = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces and parentheses: fields after the last
    // ')' are fixed.
    let rest = &s[s.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let start = fields.nth(18)?.parse().ok()?;
    Some((state, start))
}

/// Inode of a process's network namespace.
pub fn netns_inode_of(pid: u32) -> Option<u64> {
    fs::metadata(format!("/proc/{pid}/ns/net"))
        .ok()
        .map(|m| m.ino())
}

/// How a recorded process is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Liveness {
    Running,
    /// Ended; the exit code is known only when it was our child (or is a zombie we can
    /// read). Signals are reported as 128+signal, as Kubernetes does.
    Exited(Option<i32>),
}

fn code_of(ws: WaitStatus) -> Option<Option<i32>> {
    match ws {
        WaitStatus::Exited(_, code) => Some(Some(code)),
        WaitStatus::Signaled(_, sig, _) => Some(Some(128 + sig as i32)),
        _ => None,
    }
}

/// Whether `pid` (started at `start_time`, in the namespace `netns_inode`) is still ours
/// and running. With `reap`, a child of ours that ended is collected (its exit code is then
/// reported here once and never again); without, it is only looked at.
pub fn liveness(pid: u32, start_time: u64, netns_inode: u64, reap: bool) -> Liveness {
    let p = Pid::from_raw(pid as i32);
    // Not our child (adopted after an agent restart: ECHILD): /proc is all we have.
    if let Ok(ws) = wait_once(p, reap) {
        if let Some(code) = code_of(ws) {
            return Liveness::Exited(code);
        }
    }
    match proc_stat(pid) {
        Some((state, start)) if start == start_time && state != 'Z' && state != 'X' => {
            if netns_inode_of(pid) == Some(netns_inode) {
                return Liveness::Running;
            }
        }
        Some((_, start)) if start == start_time => {}
        _ => return Liveness::Exited(None),
    }
    // Ours, but dying (namespaces already released) or dead: a child of ours tells its
    // code as soon as it is a zombie, which takes moments.
    let deadline = std::time::Instant::now() + std::time::Duration::from_millis(500);
    loop {
        match wait_once(p, reap) {
            Ok(ws) => {
                if let Some(code) = code_of(ws) {
                    return Liveness::Exited(code);
                }
            }
            Err(_) => return Liveness::Exited(None),
        }
        if std::time::Instant::now() >= deadline {
            return Liveness::Exited(None);
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
}

fn wait_once(p: Pid, reap: bool) -> nix::Result<WaitStatus> {
    if reap {
        waitpid(p, Some(WaitPidFlag::WNOHANG))
    } else {
        waitid(
            Id::Pid(p),
            WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT,
        )
    }
}

/// Signal the process group `pid` leads (a container started in its own session), or the
/// process alone if the group is gone.
pub fn signal_group(pid: u32, sig: Signal) {
    let p = Pid::from_raw(pid as i32);
    if kill(Pid::from_raw(-(pid as i32)), sig).is_err() {
        let _ = kill(p, sig);
    }
}

/// Every process whose network namespace is one of `inodes`, except this one, as
/// (namespace inode, pid): what must die before a pod's namespace can go (daemons a
/// container forked into other sessions, `exec` sessions, ...). One pass over /proc
/// however many namespaces are asked about.
pub fn pids_in_netns(inodes: &std::collections::HashSet<u64>) -> Vec<(u64, u32)> {
    let me = std::process::id();
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| *pid != me)
        .filter_map(|pid| {
            let inode = netns_inode_of(pid)?;
            inodes.contains(&inode).then_some((inode, pid))
        })
        .collect()
}

/// Collect `pid`, just sent SIGKILL, if it is a child of ours (no zombie left behind),
/// waiting for it to die until `deadline`; no effect on processes that are not our children.
pub fn reap_killed(pid: u32, deadline: std::time::Instant) {
    let p = Pid::from_raw(pid as i32);
    while let Ok(WaitStatus::StillAlive) = waitpid(p, Some(WaitPidFlag::WNOHANG)) {
        if std::time::Instant::now() >= deadline {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_our_own_stat() {
        let (state, start) = proc_stat(std::process::id()).unwrap();
        assert!(state == 'R' || state == 'S', "{state}");
        assert!(start > 0);
        assert_eq!(proc_stat(u32::MAX), None);
    }

    #[test]
    fn resolves_programs_on_path() {
        assert_eq!(
            resolve_program("sh", "/nonexistent:/bin:/usr/bin").map(|p| p.is_file()),
            Some(true)
        );
        assert_eq!(
            resolve_program("no-such-program-weft", "/bin:/usr/bin"),
            None
        );
        assert_eq!(resolve_program("./x", ""), Some(PathBuf::from("./x")));
    }
}
