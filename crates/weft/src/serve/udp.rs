//! UDP echo: each datagram comes back with the greeting line in front of it.
//!
//! The reply leaves from the address the request was sent to (IP_PKTINFO). A socket on
//! 0.0.0.0 would otherwise let routing pick the source, and a client whose socket is
//! connected to, say, a secondary address would drop the reply as coming from a stranger.

use super::greeting::{canonical, Identity};
use nix::errno::Errno;
use nix::sys::socket::{
    recvmsg, sendmsg, ControlMessage, ControlMessageOwned, MsgFlags, SockaddrStorage,
};
use std::io::{IoSlice, IoSliceMut};
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;

/// The largest UDP payload over IPv4; longer replies are cut to fit.
const MAX_PAYLOAD: usize = 65_507;

/// The local address a datagram arrived on, to send the reply from.
enum Dest {
    V4(libc::in_pktinfo),
    V6(libc::in6_pktinfo),
}

pub fn serve(sock: UdpSocket, identity: &Identity) {
    let fd = sock.as_raw_fd();
    let mut buf = vec![0u8; 65_536];
    let mut cmsg = nix::cmsg_space!(libc::in6_pktinfo, libc::in_pktinfo);
    loop {
        let (len, from, dest) = {
            let mut iov = [IoSliceMut::new(&mut buf)];
            let msg = match recvmsg::<SockaddrStorage>(
                fd,
                &mut iov,
                Some(&mut cmsg),
                MsgFlags::empty(),
            ) {
                Ok(m) => m,
                Err(Errno::EINTR) => continue,
                Err(e) => {
                    note!("weft serve: udp receive: {}", e.desc());
                    continue;
                }
            };
            let dest = msg.cmsgs().ok().and_then(|mut it| {
                it.find_map(|c| match c {
                    ControlMessageOwned::Ipv4PacketInfo(i) => Some(Dest::V4(i)),
                    ControlMessageOwned::Ipv6PacketInfo(i) => Some(Dest::V6(i)),
                    _ => None,
                })
            });
            (msg.bytes, msg.address, dest)
        };
        let Some(from) = from else { continue };
        let Some(client) = socket_addr(&from) else {
            continue;
        };
        let greeting = identity.greeting("udp", canonical(client));
        let room = MAX_PAYLOAD.saturating_sub(greeting.len());
        let payload = &buf[..len.min(room)];
        let iov = [IoSlice::new(greeting.as_bytes()), IoSlice::new(payload)];
        let sent = match reply_source(dest) {
            Some(Dest::V4(info)) => sendmsg(
                fd,
                &iov,
                &[ControlMessage::Ipv4PacketInfo(&info)],
                MsgFlags::empty(),
                Some(&from),
            ),
            Some(Dest::V6(info)) => sendmsg(
                fd,
                &iov,
                &[ControlMessage::Ipv6PacketInfo(&info)],
                MsgFlags::empty(),
                Some(&from),
            ),
            None => sendmsg(fd, &iov, &[], MsgFlags::empty(), Some(&from)),
        };
        if let Err(e) = sent {
            note!("weft serve: udp reply to {client}: {}", e.desc());
        }
    }
}

fn socket_addr(a: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = a.as_sockaddr_in() {
        return Some(SocketAddr::from((v4.ip(), v4.port())));
    }
    a.as_sockaddr_in6()
        .map(|v6| SocketAddr::from((v6.ip(), v6.port())))
}

/// The pktinfo to send with: source = the address the request was sent to. A request to a
/// broadcast or multicast address is answered from whatever routing picks, as that address
/// cannot be a source.
fn reply_source(dest: Option<Dest>) -> Option<Dest> {
    match dest? {
        Dest::V4(got) => {
            let to = std::net::Ipv4Addr::from(u32::from_be(got.ipi_addr.s_addr));
            if to.is_multicast() || to.is_broadcast() || to.is_unspecified() {
                return None;
            }
            // ifindex 0: let routing pick the way back, only the source is pinned.
            let mut out: libc::in_pktinfo = got;
            out.ipi_ifindex = 0;
            out.ipi_spec_dst = got.ipi_addr;
            out.ipi_addr = libc::in_addr { s_addr: 0 };
            Some(Dest::V4(out))
        }
        Dest::V6(got) => {
            let to = std::net::Ipv6Addr::from(got.ipi6_addr.s6_addr);
            if to.is_multicast() || to.is_unspecified() {
                return None;
            }
            let mut out = got;
            // A link-local source is only meaningful on the interface it came in on.
            if !to.is_unicast_link_local() {
                out.ipi6_ifindex = 0;
            }
            Some(Dest::V6(out))
        }
    }
}
