//! Starting programs inside a network namespace, as a runtime does for a pod's processes.

use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::Command;
use weft_netlink::Netns;

/// A `Command` whose child joins `ns` before it execs. The namespace handle must outlive
/// the spawn (its fd is what the child joins).
pub fn command_in(ns: &Netns, program: impl AsRef<std::ffi::OsStr>) -> Command {
    let fd: RawFd = ns.fd().as_raw_fd();
    let mut c = Command::new(program);
    // SAFETY: setns(2) is async-signal-safe; the closure touches nothing but the fd.
    unsafe {
        c.pre_exec(move || {
            if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    c
}
