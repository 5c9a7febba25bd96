//! The NETLINK_ROUTE socket: one per namespace, synchronous request/ack and dumps matched by
//! sequence number, kernel errors turned into `Error::Kernel` with the extended-ack text.

use std::io;
use std::time::{Duration, Instant};

use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NlasIterator, NLM_F_ACK, NLM_F_ACK_TLVS,
    NLM_F_CAPPED, NLM_F_DUMP, NLM_F_DUMP_INTR, NLM_F_REQUEST,
};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};
use nix::libc;
use nix::sys::socket::{setsockopt, sockopt::ReceiveTimeout};
use nix::sys::time::TimeVal;

use crate::error::{Error, Result};
use crate::netns::Netns;

/// netlink(7) header length; the error payload starts with a copy of the request's header.
const NLMSG_HDRLEN: usize = 16;
/// Extended-ack attribute carrying the kernel's human-readable reason.
const NLMSGERR_ATTR_MSG: u16 = 1;
/// A dump that keeps being interrupted by concurrent changes is retried this many times.
const DUMP_ATTEMPTS: usize = 5;

/// One NETLINK_ROUTE socket bound to one network namespace.
pub struct Handle {
    pub(crate) sock: Socket,
    seq: u32,
    ns: Netns,
}

impl Handle {
    /// A socket in the calling thread's namespace.
    pub fn new() -> Result<Handle> {
        let ns = Netns::current()?;
        Ok(Handle {
            sock: open_socket()?,
            seq: 0,
            ns,
        })
    }

    /// A socket opened inside `ns`. The socket stays bound to `ns` whatever thread uses it.
    pub fn in_netns(ns: &Netns) -> Result<Handle> {
        let sock = ns.run_in(open_socket)??;
        Ok(Handle {
            sock,
            seq: 0,
            ns: ns.try_clone()?,
        })
    }

    /// The namespace this handle talks to.
    pub fn netns(&self) -> &Netns {
        &self.ns
    }

    fn next_seq(&mut self) -> u32 {
        // 0 is what the kernel uses for notifications; never use it for a request.
        self.seq = self.seq.wrapping_add(1).max(1);
        self.seq
    }

    /// The request's bytes and its sequence number.
    pub(crate) fn encode(&mut self, msg: RouteNetlinkMessage, flags: u16) -> (Vec<u8>, u32) {
        let seq = self.next_seq();
        let mut packet = NetlinkMessage::new(NetlinkHeader::default(), NetlinkPayload::from(msg));
        packet.header.flags = NLM_F_REQUEST | flags;
        packet.header.sequence_number = seq;
        packet.finalize();
        let mut buf = vec![0; packet.buffer_len()];
        packet.serialize(&mut buf);
        (buf, seq)
    }

    fn send(&mut self, msg: RouteNetlinkMessage, flags: u16, op: &str) -> Result<u32> {
        let (buf, seq) = self.encode(msg, flags);
        self.sock
            .send(&buf, 0)
            .map_err(|e| Error::io(format!("{op}: send netlink request"), e))?;
        Ok(seq)
    }

    /// Send a request with NLM_F_ACK and wait for the kernel's answer.
    pub(crate) fn request(&mut self, msg: RouteNetlinkMessage, flags: u16, op: &str) -> Result<()> {
        self.request_collect(msg, flags, op).map(drop)
    }

    /// Send a request with NLM_F_ACK; return the messages the kernel answered with before
    /// its ack (a GET by name or index answers with one message).
    pub(crate) fn request_collect(
        &mut self,
        msg: RouteNetlinkMessage,
        flags: u16,
        op: &str,
    ) -> Result<Vec<RouteNetlinkMessage>> {
        let seq = self.send(msg, flags | NLM_F_ACK, op)?;
        let mut out = Vec::new();
        loop {
            for (header, payload) in recv_batch(&self.sock, Some(seq), op)? {
                match payload {
                    NetlinkPayload::InnerMessage(m) => out.push(m),
                    NetlinkPayload::Error(e) => {
                        return match e.code {
                            None => Ok(out),
                            Some(_) => Err(Error::Kernel {
                                op: op.to_string(),
                                source: e.to_io(),
                                detail: ext_ack_message(header.flags, &e.header),
                            }),
                        };
                    }
                    _ => {}
                }
            }
        }
    }

    /// Dump (NLM_F_DUMP) and collect every answer of the multipart reply. A dump that the
    /// kernel marks as interrupted (the table changed meanwhile) is started again.
    pub(crate) fn dump(
        &mut self,
        msg: RouteNetlinkMessage,
        op: &str,
    ) -> Result<Vec<RouteNetlinkMessage>> {
        for _ in 0..DUMP_ATTEMPTS {
            let seq = self.send(msg.clone(), NLM_F_DUMP, op)?;
            let mut out = Vec::new();
            let mut interrupted = false;
            'recv: loop {
                for (header, payload) in recv_batch(&self.sock, Some(seq), op)? {
                    interrupted |= header.flags & NLM_F_DUMP_INTR != 0;
                    match payload {
                        NetlinkPayload::InnerMessage(m) => out.push(m),
                        NetlinkPayload::Done(done) if done.code < 0 => {
                            return Err(Error::Kernel {
                                op: op.to_string(),
                                source: io::Error::from_raw_os_error(-done.code),
                                detail: None,
                            })
                        }
                        NetlinkPayload::Done(_) => break 'recv,
                        NetlinkPayload::Error(e) => match e.code {
                            None => break 'recv,
                            Some(_) => {
                                return Err(Error::Kernel {
                                    op: op.to_string(),
                                    source: e.to_io(),
                                    detail: ext_ack_message(header.flags, &e.header),
                                })
                            }
                        },
                        _ => {}
                    }
                }
            }
            if !interrupted {
                return Ok(out);
            }
        }
        Err(Error::Io {
            op: format!("{op}: dump interrupted {DUMP_ATTEMPTS} times by concurrent changes"),
            source: io::Error::from_raw_os_error(libc::EINTR),
        })
    }
}

pub(crate) fn open_socket() -> Result<Socket> {
    let op = "open NETLINK_ROUTE socket";
    let mut sock = Socket::new(NETLINK_ROUTE).map_err(|e| Error::io(op, e))?;
    sock.bind_auto().map_err(|e| Error::io(op, e))?;
    sock.connect(&SocketAddr::new(0, 0))
        .map_err(|e| Error::io(op, e))?;
    // Extended acks give errors a reason; capped acks keep error replies small. Both are
    // optional comforts, so an old kernel refusing them is not an error.
    let _ = sock.set_ext_ack(true);
    let _ = sock.set_cap_ack(true);
    Ok(sock)
}

/// Receive one datagram and decode the netlink messages in it whose sequence number is
/// `seq` (all of them when `seq` is None). Messages for other sequence numbers are leftovers
/// of an earlier request that failed midway, or notifications, and are skipped undecoded.
pub(crate) fn recv_batch(
    sock: &Socket,
    seq: Option<u32>,
    op: &str,
) -> Result<Vec<(NetlinkHeader, NetlinkPayload<RouteNetlinkMessage>)>> {
    let data = recv_datagram(sock).map_err(|e| Error::io(format!("{op}: receive"), e))?;
    let mut out = Vec::new();
    let mut off = 0;
    while data.len() - off >= NLMSG_HDRLEN {
        let bytes = &data[off..];
        let len = u32::from_ne_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as usize;
        if len < NLMSG_HDRLEN || len > bytes.len() {
            return Err(Error::Decode {
                op: op.to_string(),
                reason: format!("netlink message length {len} out of bounds"),
            });
        }
        let msg_seq = u32::from_ne_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
        if seq.is_none_or(|s| s == msg_seq) {
            let msg =
                NetlinkMessage::<RouteNetlinkMessage>::deserialize(&bytes[..len]).map_err(|e| {
                    Error::Decode {
                        op: op.to_string(),
                        reason: e.to_string(),
                    }
                })?;
            out.push(msg.into_parts());
        }
        off += (len + 3) & !3;
    }
    Ok(out)
}

fn recv_datagram(sock: &Socket) -> io::Result<Vec<u8>> {
    // Peek with MSG_TRUNC for the real size first: a dump datagram can exceed any fixed
    // buffer we would guess, and a truncated netlink datagram is lost for good.
    loop {
        let mut probe: Vec<u8> = Vec::with_capacity(64);
        let size = match sock.recv(&mut probe, libc::MSG_PEEK | libc::MSG_TRUNC) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => other?,
        };
        let mut buf: Vec<u8> = Vec::with_capacity(size.max(64));
        match sock.recv(&mut buf, 0) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => other?,
        };
        return Ok(buf);
    }
}

/// Limit how long `recv_batch` blocks on `sock`; returns false once `deadline` has passed.
pub(crate) fn set_recv_deadline(sock: &Socket, deadline: Instant) -> io::Result<bool> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Ok(false);
    }
    // A zero timeout would mean "block forever"; never pass less than a microsecond.
    let left = left.max(Duration::from_micros(1));
    setsockopt(
        sock,
        ReceiveTimeout,
        &TimeVal::from(libc::timeval {
            tv_sec: left.as_secs() as libc::time_t,
            tv_usec: left.subsec_micros() as libc::suseconds_t,
        }),
    )
    .map_err(io::Error::from)?;
    Ok(true)
}

/// The kernel's extended-ack reason, if the error message carries one.
fn ext_ack_message(flags: u16, payload: &[u8]) -> Option<String> {
    if flags & NLM_F_ACK_TLVS == 0 || payload.len() < NLMSG_HDRLEN {
        return None;
    }
    // The payload echoes the request: only its header when capped, the whole of it otherwise.
    let echoed = if flags & NLM_F_CAPPED != 0 {
        NLMSG_HDRLEN
    } else {
        let len = u32::from_ne_bytes([payload[0], payload[1], payload[2], payload[3]]) as usize;
        (len + 3) & !3
    };
    let tlvs = payload.get(echoed..)?;
    NlasIterator::new(tlvs)
        .filter_map(|nla| nla.ok())
        .find(|nla| nla.kind() == NLMSGERR_ATTR_MSG)
        .map(|nla| {
            String::from_utf8_lossy(nla.value())
                .trim_end_matches('\0')
                .to_string()
        })
        .filter(|s| !s.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ext_ack_reason_is_read_after_capped_header() {
        let mut payload = vec![0u8; NLMSG_HDRLEN];
        let msg = b"Nexthop device is not up\0";
        let nla_len = (4 + msg.len()) as u16;
        payload.extend_from_slice(&nla_len.to_ne_bytes());
        payload.extend_from_slice(&NLMSGERR_ATTR_MSG.to_ne_bytes());
        payload.extend_from_slice(msg);
        while !payload.len().is_multiple_of(4) {
            payload.push(0);
        }
        assert_eq!(
            ext_ack_message(NLM_F_ACK_TLVS | NLM_F_CAPPED, &payload).as_deref(),
            Some("Nexthop device is not up")
        );
        assert_eq!(ext_ack_message(NLM_F_CAPPED, &payload), None);
    }
}
