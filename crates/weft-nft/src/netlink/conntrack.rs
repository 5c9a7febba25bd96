//! Connection tracking entries over the same nfnetlink socket (the ctnetlink subsystem):
//! listed and deleted one by one. The proxy uses it to drop UDP flows that conntrack
//! would otherwise keep sending to an endpoint that is gone, or past a Service that
//! had no endpoints when the flow began.

use std::net::Ipv4Addr;

use super::attr::{be16, Attrs, Writer};
use super::socket::NftSocket;
use crate::error::Result;

const SUBSYS_CTNETLINK: u16 = 1;
const MSG_CT_GET: u16 = 1;
const MSG_CT_DELETE: u16 = 2;

const CTA_TUPLE_ORIG: u16 = 1;
const CTA_TUPLE_REPLY: u16 = 2;
const CTA_TUPLE_IP: u16 = 1;
const CTA_TUPLE_PROTO: u16 = 2;
const CTA_IP_V4_SRC: u16 = 1;
const CTA_IP_V4_DST: u16 = 2;
const CTA_PROTO_NUM: u16 = 1;
const CTA_PROTO_SRC_PORT: u16 = 2;
const CTA_PROTO_DST_PORT: u16 = 3;

/// One direction of a flow: addresses and, for TCP, UDP and SCTP, ports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Tuple {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub proto: u8,
    pub sport: u16,
    pub dport: u16,
}

/// An IPv4 conntrack entry: the tuple as the client sent it, and as the reply comes
/// (after NAT, the reply's source is the endpoint that really answers).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Flow {
    pub original: Tuple,
    pub reply: Tuple,
}

fn decode_tuple(a: Attrs) -> Option<Tuple> {
    let ip = Attrs(a.get(CTA_TUPLE_IP)?);
    let proto = Attrs(a.get(CTA_TUPLE_PROTO)?);
    let v4 = |d: &[u8]| -> Option<Ipv4Addr> { Some(<[u8; 4]>::try_from(d.get(..4)?).ok()?.into()) };
    Some(Tuple {
        src: v4(ip.get(CTA_IP_V4_SRC)?)?,
        dst: v4(ip.get(CTA_IP_V4_DST)?)?,
        proto: *proto.get(CTA_PROTO_NUM)?.first()?,
        sport: proto.get(CTA_PROTO_SRC_PORT).and_then(be16).unwrap_or(0),
        dport: proto.get(CTA_PROTO_DST_PORT).and_then(be16).unwrap_or(0),
    })
}

fn put_tuple(w: &mut Writer, ty: u16, t: &Tuple) {
    let outer = w.nest(ty);
    let ip = w.nest(CTA_TUPLE_IP);
    w.put(CTA_IP_V4_SRC, &t.src.octets());
    w.put(CTA_IP_V4_DST, &t.dst.octets());
    w.end_nest(ip);
    let proto = w.nest(CTA_TUPLE_PROTO);
    w.put_u8(CTA_PROTO_NUM, t.proto);
    w.put_be16(CTA_PROTO_SRC_PORT, t.sport);
    w.put_be16(CTA_PROTO_DST_PORT, t.dport);
    w.end_nest(proto);
    w.end_nest(outer);
}

/// Every IPv4 flow of the socket's namespace.
pub fn list_v4(sock: &mut NftSocket) -> Result<Vec<Flow>> {
    let mut out = Vec::new();
    sock.dump_typed(
        (SUBSYS_CTNETLINK << 8) | MSG_CT_GET,
        libc::AF_INET as u8,
        |_| {},
        |_, a| {
            let tuple = |ty| a.get(ty).map(Attrs).and_then(decode_tuple);
            if let (Some(original), Some(reply)) = (tuple(CTA_TUPLE_ORIG), tuple(CTA_TUPLE_REPLY)) {
                out.push(Flow { original, reply });
            }
            Ok(())
        },
    )?;
    Ok(out)
}

/// Deletes the flow whose original tuple is `t`. A flow that already ended is an error
/// (ENOENT) the caller may ignore.
pub fn delete(sock: &mut NftSocket, t: &Tuple) -> Result<()> {
    sock.request(
        (SUBSYS_CTNETLINK << 8) | MSG_CT_DELETE,
        libc::AF_INET as u8,
        |w| put_tuple(w, CTA_TUPLE_ORIG, t),
    )
}
