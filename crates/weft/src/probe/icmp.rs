//! ICMP echo (v4 and v6). First an unprivileged ping socket (SOCK_DGRAM): the kernel picks
//! the echo id, fills the checksum and hands us only our own replies. It needs the caller's
//! gid inside `net.ipv4.ping_group_range`, which is "1 0" (nobody) in a fresh namespace, so
//! as root we fall back to a raw socket and do that work ourselves.

use super::connect::{report_icmp_errors, wait};
use super::report::{Report, Verdict};
use nix::errno::Errno;
use nix::sys::socket::{
    connect, getsockopt, recv, send, socket, sockopt, AddressFamily, MsgFlags, SockFlag,
    SockProtocol, SockType, SockaddrStorage,
};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

const ECHO_REQUEST_V4: u8 = 8;
const ECHO_REPLY_V4: u8 = 0;
const ECHO_REQUEST_V6: u8 = 128;
const ECHO_REPLY_V6: u8 = 129;
const SEQ: u16 = 1;

struct Pinger {
    fd: OwnedFd,
    kind: Kind,
}

/// What the socket is, which decides who builds and filters the packets.
#[derive(Debug, Clone, Copy)]
struct Kind {
    raw: bool,
    v6: bool,
}

pub fn probe(target: &str, ip: IpAddr, timeout: Duration) -> Report {
    let start = Instant::now();
    let deadline = start + timeout;
    let pinger = match open(ip) {
        Ok(p) => p,
        Err(e) => return Report::from_error("icmp", target, &e),
    };
    let id = (std::process::id() as u16) ^ (super::nonce() as u16);
    let payload = format!("weft-probe {:016x}", super::nonce());
    let request = pinger.kind.request(id, payload.as_bytes());
    if let Err(e) = send(pinger.fd.as_raw_fd(), &request, MsgFlags::empty()) {
        return Report::from_error("icmp", target, &e.into());
    }
    let mut buf = vec![0u8; 65_536];
    loop {
        if let Err(e) = wait(&pinger.fd, libc::POLLIN, deadline) {
            return Report::from_error("icmp", target, &e);
        }
        // An ICMP error wakes poll, but a non-blocking recv only reports EAGAIN for it:
        // the socket's pending error has to be fetched.
        match getsockopt(&pinger.fd, sockopt::SocketError) {
            Ok(0) => {}
            Ok(errno) => {
                let e = io::Error::from_raw_os_error(errno);
                return Report::from_error("icmp", target, &e);
            }
            Err(e) => return Report::from_error("icmp", target, &e.into()),
        }
        match recv(pinger.fd.as_raw_fd(), &mut buf, MsgFlags::MSG_DONTWAIT) {
            Ok(n) => {
                if pinger.kind.is_our_reply(&buf[..n], id, payload.as_bytes()) {
                    return Report::new("icmp", target, Verdict::Answered)
                        .with("from", ip.to_string())
                        .with_time(start.elapsed());
                }
            }
            Err(Errno::EAGAIN | Errno::EINTR) => {}
            Err(e) => return Report::from_error("icmp", target, &e.into()),
        }
    }
}

fn open(ip: IpAddr) -> io::Result<Pinger> {
    let v6 = ip.is_ipv6();
    let (family, proto) = if v6 {
        (AddressFamily::Inet6, SockProtocol::IcmpV6)
    } else {
        (AddressFamily::Inet, SockProtocol::Icmp)
    };
    let flags = SockFlag::SOCK_CLOEXEC;
    let (fd, raw) = match socket(family, SockType::Datagram, flags, proto) {
        Ok(fd) => (fd, false),
        Err(Errno::EACCES | Errno::EPERM) => match socket(family, SockType::Raw, flags, proto) {
            Ok(fd) => (fd, true),
            Err(Errno::EPERM) => {
                return Err(io::Error::new(
                    io::ErrorKind::PermissionDenied,
                    "ICMP needs root, or this group in net.ipv4.ping_group_range",
                ))
            }
            Err(e) => return Err(e.into()),
        },
        Err(e) => return Err(e.into()),
    };
    // Connected: the kernel then passes only the target's packets and reports ICMP errors
    // about our echo (host unreachable) as errors on recv.
    report_icmp_errors(&fd, v6)?;
    connect(
        fd.as_raw_fd(),
        &SockaddrStorage::from(SocketAddr::new(ip, 0)),
    )?;
    Ok(Pinger {
        fd,
        kind: Kind { raw, v6 },
    })
}

impl Kind {
    fn request(&self, id: u16, payload: &[u8]) -> Vec<u8> {
        let kind = if self.v6 {
            ECHO_REQUEST_V6
        } else {
            ECHO_REQUEST_V4
        };
        let mut p = vec![kind, 0, 0, 0];
        p.extend_from_slice(&id.to_be_bytes());
        p.extend_from_slice(&SEQ.to_be_bytes());
        p.extend_from_slice(payload);
        // Ping sockets and ICMPv6 raw sockets get their checksum from the kernel.
        if self.raw && !self.v6 {
            let sum = checksum(&p);
            p[2..4].copy_from_slice(&sum.to_be_bytes());
        }
        p
    }

    fn is_our_reply(&self, packet: &[u8], id: u16, payload: &[u8]) -> bool {
        // Raw IPv4 sockets see the IP header too; the others start at the ICMP header.
        let icmp = if self.raw && !self.v6 {
            let ihl = usize::from(packet.first().map_or(0, |b| b & 0x0f)) * 4;
            match packet.get(ihl..) {
                Some(rest) if ihl >= 20 => rest,
                _ => return false,
            }
        } else {
            packet
        };
        let want = if self.v6 {
            ECHO_REPLY_V6
        } else {
            ECHO_REPLY_V4
        };
        if icmp.len() < 8 || icmp[0] != want || icmp[1] != 0 {
            return false;
        }
        // A ping socket's id is the kernel's (it already matched it); a raw socket sees
        // every echo reply from the target, so ours is told apart by id.
        let id_ok = !self.raw || icmp[4..6] == id.to_be_bytes();
        id_ok && icmp[6..8] == SEQ.to_be_bytes() && &icmp[8..] == payload
    }
}

/// The Internet checksum (RFC 1071).
fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = data
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksum_matches_rfc1071_example() {
        // RFC 1071 section 3: 0001 f203 f4f5 f6f7 sums to ddf2, checksum 220d.
        assert_eq!(
            checksum(&[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]),
            0x220d
        );
        // A packet carrying its checksum sums to zero.
        let mut p = vec![8, 0, 0, 0, 0x12, 0x34, 0, 1, b'a', b'b', b'c'];
        let c = checksum(&p);
        p[2..4].copy_from_slice(&c.to_be_bytes());
        assert_eq!(checksum(&p), 0);
    }

    #[test]
    fn raw_v4_replies_are_found_behind_the_ip_header() {
        let p = Kind {
            raw: true,
            v6: false,
        };
        let mut ip = vec![0x45u8];
        ip.resize(20, 0);
        let mut reply = ip.clone();
        reply.extend_from_slice(&[ECHO_REPLY_V4, 0, 0, 0, 0x12, 0x34, 0, 1]);
        reply.extend_from_slice(b"hi");
        assert!(p.is_our_reply(&reply, 0x1234, b"hi"));
        assert!(!p.is_our_reply(&reply, 0x1235, b"hi"));
        assert!(!p.is_our_reply(&reply, 0x1234, b"ho"));
        let mut request = ip;
        request.extend_from_slice(&[ECHO_REQUEST_V4, 0, 0, 0, 0x12, 0x34, 0, 1]);
        request.extend_from_slice(b"hi");
        assert!(!p.is_our_reply(&request, 0x1234, b"hi"));
    }
}
