//! Connecting a stream socket (TCP or one-to-one SCTP) within a deadline.

use nix::errno::Errno;
use nix::sys::socket::{
    connect, getsockopt, setsockopt, socket, sockopt, AddressFamily, SockFlag, SockProtocol,
    SockType, SockaddrStorage,
};
use std::io;
use std::net::{SocketAddr, TcpStream};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::time::Instant;

/// Why a connection was not made.
#[derive(Debug)]
pub enum ConnectError {
    /// The kernel cannot make this kind of socket at all (SCTP module missing).
    NoProtocol(Errno),
    Io(io::Error),
}

/// Connects and hands back a blocking socket. SCTP one-to-one sockets come back as a
/// `TcpStream` too: std only uses read/write/shutdown/getsockname/SO_*TIMEO on it, which
/// SCTP supports the same way.
pub fn stream(
    addr: SocketAddr,
    proto: SockProtocol,
    deadline: Instant,
) -> Result<TcpStream, ConnectError> {
    let family = match addr {
        SocketAddr::V4(_) => AddressFamily::Inet,
        SocketAddr::V6(_) => AddressFamily::Inet6,
    };
    let fd: OwnedFd = socket(
        family,
        SockType::Stream,
        SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
        proto,
    )
    .map_err(|e| match e {
        Errno::EPROTONOSUPPORT | Errno::ESOCKTNOSUPPORT => ConnectError::NoProtocol(e),
        e => ConnectError::Io(e.into()),
    })?;
    report_icmp_errors(&fd, addr.is_ipv6()).map_err(ConnectError::Io)?;
    match connect(fd.as_raw_fd(), &SockaddrStorage::from(addr)) {
        Ok(()) => {}
        Err(Errno::EINPROGRESS) => {
            wait(&fd, libc::POLLOUT, deadline).map_err(ConnectError::Io)?;
            let err =
                getsockopt(&fd, sockopt::SocketError).map_err(|e| ConnectError::Io(e.into()))?;
            if err != 0 {
                return Err(ConnectError::Io(io::Error::from_raw_os_error(err)));
            }
        }
        Err(e) => return Err(ConnectError::Io(e.into())),
    }
    let stream = TcpStream::from(fd);
    stream.set_nonblocking(false).map_err(ConnectError::Io)?;
    Ok(stream)
}

/// Makes every ICMP error about our packets fail the socket at once. By default the kernel
/// only acts on "hard" ones (port unreachable, prohibited) and quietly retries through
/// net/host unreachable until its own timeout, so a probe would say `timeout` where a
/// router has plainly said `unreachable`. ping(8) sets the same option for the same reason.
pub fn report_icmp_errors(fd: &impl AsFd, v6: bool) -> io::Result<()> {
    if v6 {
        setsockopt(fd, sockopt::Ipv6RecvErr, &true)?;
    } else {
        setsockopt(fd, sockopt::Ipv4RecvErr, &true)?;
    }
    Ok(())
}

/// Polls until the socket has one of `events` (for a connecting socket, POLLOUT: connect
/// finished, either way), or the deadline passes (`TimedOut`).
pub fn wait(fd: &impl AsRawFd, events: libc::c_short, deadline: Instant) -> io::Result<()> {
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::ErrorKind::TimedOut.into());
        }
        let mut pfd = libc::pollfd {
            fd: fd.as_raw_fd(),
            events,
            revents: 0,
        };
        // Round up so a sub-millisecond remainder waits instead of spinning.
        let ms = left.as_millis().saturating_add(1).min(i32::MAX as u128) as i32;
        // SAFETY: one valid pollfd, and the fd outlives the call.
        let n = unsafe { libc::poll(&mut pfd, 1, ms) };
        match n {
            n if n > 0 => return Ok(()),
            0 => continue,
            _ => {
                let e = io::Error::last_os_error();
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
        }
    }
}
