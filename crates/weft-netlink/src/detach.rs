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
use std::io;
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
        // Everything the grandchild touches is prepared before the fork: after it, only raw
        // system calls (a forked child of a threaded process must not allocate or lock).
        let (request, _) = self.encode(RouteNetlinkMessage::DelLink(link_message(index)), 0);
        let devnull = File::options()
            .read(true)
            .write(true)
            .open("/dev/null")
            .map_err(|e| Error::io("open /dev/null for a background delete", e))?;
        let (sock, null) = (self.sock.as_raw_fd(), devnull.as_raw_fd());
        // SAFETY: the child runs `detached_child` only, which makes async-signal-safe system
        // calls on memory prepared above and leaves with `_exit`.
        match unsafe { libc::fork() } {
            -1 => {
                let e = io::Error::last_os_error();
                return self.delete_link(index).map_err(|d| match d.is_not_found() {
                    true => Error::io(format!("fork to delete link {index}"), e),
                    false => d,
                });
            }
            0 => unsafe { detached_child(sock, null, &request) },
            pid => {
                let mut status = 0;
                // The middle process exits as soon as it has forked; reaping it leaves no
                // zombie behind in a long-lived caller. ECHILD (SIGCHLD ignored) is fine.
                unsafe { libc::waitpid(pid, &mut status, 0) };
                if libc::WIFEXITED(status) && libc::WEXITSTATUS(status) != 0 {
                    return self.delete_link(index);
                }
            }
        }
        Ok(())
    }
}

/// The middle process: a new session (so a runtime signalling the caller's process group
/// spares the delete), then the grandchild that sends the request. Never returns.
unsafe fn detached_child(sock: i32, null: i32, request: &[u8]) -> ! {
    libc::setsid();
    match libc::fork() {
        0 => {
            // The runtime waits for EOF on the pipes it gave the plugin: give them back.
            libc::dup2(null, 0);
            libc::dup2(null, 1);
            libc::dup2(null, 2);
            // Every other descriptor goes: an inherited IPAM lock or pipe would otherwise
            // stay held until the kernel finishes.
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
            libc::send(sock, request.as_ptr().cast(), request.len(), 0);
            libc::_exit(0)
        }
        -1 => libc::_exit(1),
        _ => libc::_exit(0),
    }
}

unsafe fn close_range(first: i32, last: i32) {
    if first <= last {
        libc::syscall(libc::SYS_close_range, first as u32, last as u32, 0u32);
    }
}
