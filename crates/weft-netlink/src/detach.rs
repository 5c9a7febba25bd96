//! Deleting a link without waiting for the kernel to finish with it.
//!
//! Unregistering a net device ends in `rcu_barrier()` (`netdev_run_todo`), which waits for
//! a full RCU grace period: 13–25 ms on a 2-vCPU VM, nearly all of what a CNI DEL costs.
//! rtnetlink handles a request inside the sender's `sendmsg()`, so the only way for a caller
//! not to wait is to have another process send it. The kernel releases the RTNL lock before
//! that barrier, so the background delete holds up nobody else's netlink requests.
//!
//! Callers first make the link inert (down, renamed out of the way), so nothing they can
//! observe afterwards depends on when the kernel finishes.

use std::fs::File;
use std::os::fd::AsRawFd;

use netlink_packet_route::RouteNetlinkMessage;
use nix::libc;

use crate::error::{Error, Result};
use crate::link::link_message;
use crate::socket::Handle;

impl Handle {
    /// Delete link `index` from a detached grandchild process and return at once. The
    /// grandchild keeps this handle's socket (and through it the namespace) alive until the
    /// kernel has finished; it holds no other file descriptor of the caller's, so no lock or
    /// pipe of the caller's outlives the caller. If the process cannot be made, the link is
    /// deleted here instead.
    pub fn delete_link_detached(&mut self, index: u32) -> Result<()> {
        // Everything the processes touch is prepared here: after the clone they make raw
        // system calls only (no allocation, no locks, no Rust runtime).
        let (request, _) = self.encode(RouteNetlinkMessage::DelLink(link_message(index)), 0);
        let devnull = File::options()
            .read(true)
            .write(true)
            .open("/dev/null")
            .map_err(|e| Error::io("open /dev/null for a background delete", e))?;
        let job = Job {
            sock: self.sock.as_raw_fd(),
            null: devnull.as_raw_fd(),
            request: request.as_ptr(),
            len: request.len(),
        };
        let mut stack = vec![0u8; MIDDLE_STACK];
        // SAFETY: the stack grows down from its (16-byte aligned) top; `middle` runs on it
        // while this thread is suspended (CLONE_VFORK), reads `job` and `request`, which
        // outlive it, and leaves with `_exit`.
        let pid = unsafe {
            let top = stack.as_mut_ptr().add(MIDDLE_STACK) as usize & !15;
            libc::clone(
                middle,
                top as *mut libc::c_void,
                libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
                &job as *const Job as *mut libc::c_void,
            )
        };
        if pid < 0 {
            return self.delete_link(index);
        }
        let mut status = 0;
        // The middle process has exited by now (CLONE_VFORK); reaping it leaves no zombie
        // behind in a long-lived caller. ECHILD (SIGCHLD ignored) is fine.
        // SAFETY: waitpid writes one int.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        if libc::WIFEXITED(status) && libc::WEXITSTATUS(status) != 0 {
            // The grandchild could not be made.
            return self.delete_link(index);
        }
        Ok(())
    }
}

const MIDDLE_STACK: usize = 64 * 1024;

/// What the grandchild needs, prepared before any process is made.
struct Job {
    sock: i32,
    null: i32,
    request: *const u8,
    len: usize,
}

/// The middle process: it shares the caller's memory (which waits for it) and only makes a
/// new session (so a runtime signalling the caller's process group spares the delete) and
/// forks the grandchild. The fork is the raw system call: glibc's `fork` would run its
/// at-fork bookkeeping in memory the caller owns.
extern "C" fn middle(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` is the `Job` the caller keeps alive until this process exits.
    unsafe {
        let job = &*(arg as *const Job);
        libc::setsid();
        let pid = libc::syscall(libc::SYS_clone, libc::SIGCHLD as libc::c_ulong, 0, 0, 0, 0);
        if pid == 0 {
            grandchild(job);
        }
        libc::_exit(if pid < 0 { 1 } else { 0 })
    }
}

/// Sends the request on the caller's socket and exits. Its memory is a copy, so the caller
/// may free and reuse everything meanwhile.
unsafe fn grandchild(job: &Job) -> ! {
    let (sock, null) = (job.sock, job.null);
    // The runtime waits for EOF on the pipes it gave the plugin: give them back.
    libc::dup2(null, 0);
    libc::dup2(null, 1);
    libc::dup2(null, 2);
    // Every other descriptor goes: an inherited IPAM lock or pipe would otherwise stay held
    // until the kernel finishes.
    let (lo, hi) = (sock.min(null), sock.max(null));
    close_range(3, lo - 1);
    if lo != sock {
        libc::close(lo);
    }
    close_range(lo + 1, hi - 1);
    if hi != sock {
        libc::close(hi);
    }
    close_range(hi + 1, i32::MAX);
    libc::send(sock, job.request.cast(), job.len, 0);
    libc::_exit(0)
}

unsafe fn close_range(first: i32, last: i32) {
    if first <= last {
        libc::syscall(libc::SYS_close_range, first as u32, last as u32, 0u32);
    }
}
