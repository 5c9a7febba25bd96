//! Datagrams in batches: `recvmmsg` and `sendmmsg` move up to [`BATCH`] queries and
//! replies per system call. At a hundred thousand queries a second the two system calls
//! per query of `recv_from` + `send_to` cost more than answering; batching is what lets
//! one core keep up with authoritative servers built for this (Knot, NSD).
//!
//! Only the kernel's view of memory is handled here: fixed slots of [`SLOT`] bytes, the
//! peer address of each, and a flag for datagrams that did not fit (a query never needs
//! 4 KiB; such a datagram is dropped).

use std::io;
use std::mem::{size_of, zeroed};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::RawFd;
use std::ptr::null_mut;

pub const BATCH: usize = 32;
pub const SLOT: usize = 4096;
/// Room for one `SCM_TIMESTAMPNS` message (a cmsghdr and a timespec, aligned) and spare.
const CONTROL: usize = 64;

pub struct Batch {
    bufs: Box<[[u8; SLOT]; BATCH]>,
    addrs: Box<[libc::sockaddr_storage; BATCH]>,
    addr_lens: [libc::socklen_t; BATCH],
    lens: [usize; BATCH],
    truncated: [bool; BATCH],
    control: Box<[[u64; CONTROL / 8]; BATCH]>,
    /// Receive time of each datagram (ns since the epoch), 0 when the kernel gave none.
    arrived: [u64; BATCH],
}

impl Default for Batch {
    fn default() -> Batch {
        Batch {
            bufs: Box::new([[0; SLOT]; BATCH]),
            // SAFETY: sockaddr_storage is plain old data; all zeroes is a valid value.
            addrs: Box::new(unsafe { zeroed() }),
            addr_lens: [0; BATCH],
            lens: [0; BATCH],
            truncated: [false; BATCH],
            control: Box::new([[0; CONTROL / 8]; BATCH]),
            arrived: [0; BATCH],
        }
    }
}

fn header(
    name: *mut libc::sockaddr_storage,
    name_len: libc::socklen_t,
    iov: *mut libc::iovec,
) -> libc::mmsghdr {
    // SAFETY: msghdr/mmsghdr are plain old data; zero is "no control data, no flags".
    let mut h: libc::mmsghdr = unsafe { zeroed() };
    h.msg_hdr.msg_name = name.cast();
    h.msg_hdr.msg_namelen = name_len;
    h.msg_hdr.msg_iov = iov;
    h.msg_hdr.msg_iovlen = 1;
    h
}

impl Batch {
    /// Receive up to [`BATCH`] datagrams: with `wait`, block until one arrives and take
    /// what is queued behind it; without, `WouldBlock` when nothing is queued.
    pub fn recv(&mut self, fd: RawFd, wait: bool) -> io::Result<usize> {
        let flags = if wait {
            libc::MSG_WAITFORONE
        } else {
            libc::MSG_DONTWAIT
        };
        let mut iov: [libc::iovec; BATCH] = std::array::from_fn(|i| libc::iovec {
            iov_base: self.bufs[i].as_mut_ptr().cast(),
            iov_len: SLOT,
        });
        let control = &mut self.control;
        let mut hdrs: [libc::mmsghdr; BATCH] = std::array::from_fn(|i| {
            let len = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            let mut h = header(&mut self.addrs[i], len, &mut iov[i]);
            h.msg_hdr.msg_control = control[i].as_mut_ptr().cast();
            h.msg_hdr.msg_controllen = CONTROL as _;
            h
        });
        // SAFETY: every header points into buffers owned by self (or the local iov array)
        // that outlive the call, with their true lengths.
        let n = unsafe { libc::recvmmsg(fd, hdrs.as_mut_ptr(), BATCH as u32, flags, null_mut()) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let n = n as usize;
        for (i, h) in hdrs.iter().enumerate().take(n) {
            self.lens[i] = (h.msg_len as usize).min(SLOT);
            self.truncated[i] = h.msg_hdr.msg_flags & libc::MSG_TRUNC != 0;
            self.addr_lens[i] = h.msg_hdr.msg_namelen;
            self.arrived[i] = timestamp(&h.msg_hdr);
        }
        Ok(n)
    }

    /// When datagram `i` of the last [`Batch::recv`] reached the socket (ns since the
    /// epoch, `CLOCK_REALTIME`), if the socket asked for timestamps ([`stamp_arrivals`]).
    pub fn arrived(&self, i: usize) -> Option<u64> {
        Some(self.arrived[i]).filter(|&t| t != 0)
    }

    /// Datagram `i` of the last [`Batch::recv`]: its bytes and sender, `None` when it was
    /// cut or its sender is not an IP address.
    pub fn get(&self, i: usize) -> Option<(&[u8], SocketAddr)> {
        if self.truncated[i] {
            return None;
        }
        Some((
            &self.bufs[i][..self.lens[i]],
            to_socket_addr(&self.addrs[i])?,
        ))
    }

    /// Send `replies[k]` for each datagram index in `to` back to its sender: how many of
    /// `to`, in order, went out. With `wait` a full send buffer blocks; without, it is
    /// `WouldBlock` when none could go.
    pub fn send(
        &mut self,
        fd: RawFd,
        to: &[usize],
        replies: &mut [Vec<u8>],
        wait: bool,
    ) -> io::Result<usize> {
        let flags = if wait { 0 } else { libc::MSG_DONTWAIT };
        let mut iov: [libc::iovec; BATCH] = std::array::from_fn(|k| match to.get(k) {
            Some(&i) => libc::iovec {
                iov_base: replies[i].as_mut_ptr().cast(),
                iov_len: replies[i].len(),
            },
            None => libc::iovec {
                iov_base: null_mut(),
                iov_len: 0,
            },
        });
        let mut hdrs: [libc::mmsghdr; BATCH] = std::array::from_fn(|k| {
            let i = to.get(k).copied().unwrap_or(0);
            header(&mut self.addrs[i], self.addr_lens[i], &mut iov[k])
        });
        let count = to.len().min(BATCH) as u32;
        // SAFETY: the first `count` headers point at live reply buffers and addresses.
        let n = unsafe { libc::sendmmsg(fd, hdrs.as_mut_ptr(), count, flags) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(n as usize)
    }
}

/// Ask the kernel to stamp each datagram with its arrival time (`SO_TIMESTAMPNS`).
pub fn stamp_arrivals(fd: RawFd) -> io::Result<()> {
    let on: libc::c_int = 1;
    // SAFETY: the option value is a live c_int of the size given.
    let r = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_TIMESTAMPNS,
            (&on as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The `SCM_TIMESTAMPNS` of a received message in ns, 0 without one.
fn timestamp(m: &libc::msghdr) -> u64 {
    // SAFETY: the kernel filled msg_control up to msg_controllen; the CMSG macros stay
    // within it, and a timestamp message's data is a timespec (read unaligned).
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(m);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_TIMESTAMPNS {
                let ts = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast::<libc::timespec>());
                return (ts.tv_sec as u64) * 1_000_000_000 + ts.tv_nsec as u64;
            }
            c = libc::CMSG_NXTHDR(m, c);
        }
    }
    0
}

/// Now on the clock of [`Batch::arrived`].
pub fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// Send one datagram to `to` without blocking: a reply that finds the send buffer full is
/// dropped (`WouldBlock`), as any UDP reply may be; the client asks again.
pub fn send_one(fd: RawFd, buf: &[u8], to: SocketAddr) -> io::Result<()> {
    // SAFETY: sockaddr_storage is plain old data; all zeroes is a valid value.
    let mut ss: libc::sockaddr_storage = unsafe { zeroed() };
    let len = match to {
        SocketAddr::V4(a) => {
            // SAFETY: sockaddr_storage is large and aligned enough for a sockaddr_in.
            let sin = unsafe {
                &mut *(&mut ss as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in>()
            };
            sin.sin_family = libc::AF_INET as libc::sa_family_t;
            sin.sin_port = a.port().to_be();
            sin.sin_addr.s_addr = u32::from(*a.ip()).to_be();
            size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(a) => {
            // SAFETY: sockaddr_storage is large and aligned enough for a sockaddr_in6.
            let sin6 = unsafe {
                &mut *(&mut ss as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in6>()
            };
            sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            sin6.sin6_port = a.port().to_be();
            sin6.sin6_addr.s6_addr = a.ip().octets();
            sin6.sin6_flowinfo = a.flowinfo();
            sin6.sin6_scope_id = a.scope_id();
            size_of::<libc::sockaddr_in6>()
        }
    };
    // SAFETY: buf and ss are live for the call and their lengths are theirs.
    let n = unsafe {
        libc::sendto(
            fd,
            buf.as_ptr().cast(),
            buf.len(),
            libc::MSG_DONTWAIT,
            (&ss as *const libc::sockaddr_storage).cast(),
            len as libc::socklen_t,
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn to_socket_addr(s: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match s.ss_family as libc::c_int {
        libc::AF_INET => {
            // SAFETY: the family says the storage holds a sockaddr_in.
            let a = unsafe { &*(s as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            let ip = Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr));
            Some(SocketAddrV4::new(ip, u16::from_be(a.sin_port)).into())
        }
        libc::AF_INET6 => {
            // SAFETY: the family says the storage holds a sockaddr_in6.
            let a = unsafe { &*(s as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            let ip = Ipv6Addr::from(a.sin6_addr.s6_addr);
            let port = u16::from_be(a.sin6_port);
            Some(SocketAddrV6::new(ip, port, a.sin6_flowinfo, a.sin6_scope_id).into())
        }
        _ => None,
    }
}
