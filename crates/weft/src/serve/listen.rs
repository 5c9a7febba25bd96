//! Sockets for the servers: each port on 0.0.0.0 and on [::] (v6-only, so the two do not
//! collide and v4 clients show up with their v4 address).

use anyhow::{bail, Context, Result};
use nix::errno::Errno;
use nix::sys::socket::{
    bind, listen, setsockopt, socket, sockopt, AddressFamily, Backlog, SockFlag, SockProtocol,
    SockType, SockaddrStorage,
};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, UdpSocket};
use std::os::fd::{AsRawFd, OwnedFd};

/// What a port speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Tcp,
    Udp,
    Sctp,
    Http,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Tcp => "tcp",
            Kind::Udp => "udp",
            Kind::Sctp => "sctp",
            Kind::Http => "http",
        }
    }

    fn socket(self) -> (SockType, SockProtocol) {
        match self {
            Kind::Tcp | Kind::Http => (SockType::Stream, SockProtocol::Tcp),
            Kind::Udp => (SockType::Datagram, SockProtocol::Udp),
            // One-to-one style: accept() yields one socket per association, so SCTP is
            // served like TCP.
            Kind::Sctp => (SockType::Stream, SockProtocol::Sctp),
        }
    }
}

/// A bound socket. SCTP one-to-one sockets are held as `TcpListener`: std only issues
/// accept/read/write/getpeername/setsockopt(SO_*TIMEO) on them, all protocol-neutral.
pub enum Bound {
    Stream(TcpListener),
    Datagram(UdpSocket),
}

impl Bound {
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        match self {
            Bound::Stream(l) => l.local_addr(),
            Bound::Datagram(s) => s.local_addr(),
        }
    }
}

/// The kernel has no SCTP (module missing or not loadable).
#[derive(Debug)]
pub struct SctpUnavailable(pub Errno);

impl std::fmt::Display for SctpUnavailable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "SCTP is not available in this kernel ({}); load the sctp module (modprobe sctp) to serve SCTP",
            self.0.desc()
        )
    }
}

impl std::error::Error for SctpUnavailable {}

/// Binds `port` on 0.0.0.0, then the same port on [::]. Port 0 takes a free port on v4 and
/// uses it for v6 too. IPv6 is skipped (with a note) when the namespace has none.
pub fn bind_port(kind: Kind, port: u16) -> Result<Vec<Bound>> {
    let v4 = SocketAddr::from((Ipv4Addr::UNSPECIFIED, port));
    let first = match open(kind, v4) {
        Ok(b) => b,
        Err(e) if kind == Kind::Sctp && sctp_missing(e) => return Err(SctpUnavailable(e).into()),
        Err(e) => bail!(
            "cannot serve {} on {v4}: {}{}",
            kind.name(),
            e.desc(),
            if e == Errno::EADDRINUSE {
                " (another process listens there; pick another port)"
            } else {
                ""
            }
        ),
    };
    let port = first
        .local_addr()
        .with_context(|| format!("reading back the {} port", kind.name()))?
        .port();
    let mut bound = vec![first];
    let v6 = SocketAddr::from((Ipv6Addr::UNSPECIFIED, port));
    match open(kind, v6) {
        Ok(b) => bound.push(b),
        Err(Errno::EAFNOSUPPORT | Errno::EADDRNOTAVAIL) => {
            note!(
                "weft serve: no IPv6 here, {} port {port} serves IPv4 only",
                kind.name()
            )
        }
        Err(e) => bail!("cannot serve {} on {v6}: {}", kind.name(), e.desc()),
    }
    Ok(bound)
}

fn sctp_missing(e: Errno) -> bool {
    matches!(
        e,
        Errno::EPROTONOSUPPORT | Errno::ESOCKTNOSUPPORT | Errno::EAFNOSUPPORT
    )
}

fn open(kind: Kind, addr: SocketAddr) -> nix::Result<Bound> {
    let (ty, proto) = kind.socket();
    let family = match addr {
        SocketAddr::V4(_) => AddressFamily::Inet,
        SocketAddr::V6(_) => AddressFamily::Inet6,
    };
    let fd: OwnedFd = socket(family, ty, SockFlag::SOCK_CLOEXEC, proto)?;
    if addr.is_ipv6() {
        setsockopt(&fd, sockopt::Ipv6V6Only, &true)?;
    }
    if ty == SockType::Stream {
        // Restarting a server must not wait out TIME_WAIT of its old connections.
        setsockopt(&fd, sockopt::ReuseAddr, &true)?;
    }
    bind(fd.as_raw_fd(), &SockaddrStorage::from(addr))?;
    Ok(match ty {
        SockType::Datagram => {
            // Replies must leave from the address the request came to (see udp.rs).
            if addr.is_ipv6() {
                setsockopt(&fd, sockopt::Ipv6RecvPacketInfo, &true)?;
            } else {
                setsockopt(&fd, sockopt::Ipv4PacketInfo, &true)?;
            }
            Bound::Datagram(UdpSocket::from(fd))
        }
        _ => {
            listen(&fd, Backlog::new(1024).unwrap_or(Backlog::MAXCONN))?;
            Bound::Stream(TcpListener::from(fd))
        }
    })
}
