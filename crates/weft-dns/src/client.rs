//! A blocking one-shot query, for `weft probe dns` and for tests: what `dig` would print.

use std::fmt;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream, UdpSocket};
use std::str::FromStr;
use std::time::Duration;

use hickory_proto::op::{Edns, Message, Query};
use hickory_proto::rr::{Name, Record, RecordType};

use crate::error::{Error, Result};

/// A reply, formatted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    /// `NOERROR`, `NXDOMAIN`, `SERVFAIL`, `REFUSED`, ...
    pub rcode: String,
    pub authoritative: bool,
    /// The UDP reply had TC set (the records then come from the TCP retry).
    pub truncated: bool,
    /// One line per record: `name TTL IN TYPE data`.
    pub answers: Vec<String>,
    pub authority: Vec<String>,
    pub additional: Vec<String>,
}

impl fmt::Display for Response {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let aa = if self.authoritative { " aa" } else { "" };
        let tc = if self.truncated {
            " (truncated over UDP, retried over TCP)"
        } else {
            ""
        };
        writeln!(f, ";; status: {}{aa}{tc}", self.rcode)?;
        for l in &self.answers {
            writeln!(f, "{l}")?;
        }
        for l in &self.authority {
            writeln!(f, ";; AUTHORITY {l}")?;
        }
        Ok(())
    }
}

pub fn format_record(r: &Record) -> String {
    format!(
        "{} {} {} {} {}",
        r.name,
        r.ttl,
        r.dns_class,
        r.record_type(),
        r.data
    )
}

/// Ask `server` for `name` (type `qtype`, e.g. `A`, `SRV`, `PTR`) over UDP, or TCP when
/// `tcp`; a truncated UDP reply is asked again over TCP, as dig does.
pub fn query(
    server: SocketAddr,
    name: &str,
    qtype: &str,
    tcp: bool,
    timeout: Duration,
) -> Result<Response> {
    let bad = |why: String| Error::BadQuery {
        name: name.to_string(),
        why,
    };
    let rtype = RecordType::from_str(&qtype.to_ascii_uppercase())
        .map_err(|e| bad(format!("type {qtype:?}: {e}")))?;
    let mut qname = Name::from_ascii(name).map_err(|e| bad(e.to_string()))?;
    qname.set_fqdn(true);
    let mut msg = Message::query();
    msg.add_query(Query::query(qname, rtype));
    msg.metadata.recursion_desired = true;
    let mut edns = Edns::new();
    edns.set_max_payload(crate::wire::MAX_UDP);
    msg.set_edns(edns);
    let id = msg.metadata.id;
    let bytes = msg.to_vec().map_err(|e| bad(e.to_string()))?;

    let mut truncated = false;
    let reply = if tcp {
        tcp_exchange(server, &bytes, timeout)?
    } else {
        let r = udp_exchange(server, &bytes, id, timeout)?;
        if r.metadata.truncation {
            truncated = true;
            tcp_exchange(server, &bytes, timeout)?
        } else {
            r
        }
    };
    if reply.metadata.id != id {
        return Err(Error::BadReply {
            server,
            why: "reply has another ID".into(),
        });
    }
    Ok(Response {
        rcode: rcode_name(u16::from(reply.metadata.response_code)),
        authoritative: reply.metadata.authoritative,
        truncated,
        answers: reply.answers.iter().map(format_record).collect(),
        authority: reply.authorities.iter().map(format_record).collect(),
        additional: reply.additionals.iter().map(format_record).collect(),
    })
}

/// dig's names for response codes.
pub fn rcode_name(code: u16) -> String {
    match code {
        0 => "NOERROR".into(),
        1 => "FORMERR".into(),
        2 => "SERVFAIL".into(),
        3 => "NXDOMAIN".into(),
        4 => "NOTIMP".into(),
        5 => "REFUSED".into(),
        16 => "BADVERS".into(),
        n => format!("RCODE{n}"),
    }
}

fn io(what: &'static str, server: SocketAddr) -> impl Fn(std::io::Error) -> Error {
    move |source| {
        if matches!(
            source.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ) {
            Error::Timeout {
                server,
                timeout_ms: 0,
            }
        } else {
            Error::Io {
                what,
                server,
                source,
            }
        }
    }
}

fn decode(server: SocketAddr, b: &[u8]) -> Result<Message> {
    Message::from_vec(b).map_err(|e| Error::BadReply {
        server,
        why: e.to_string(),
    })
}

fn udp_exchange(server: SocketAddr, bytes: &[u8], id: u16, timeout: Duration) -> Result<Message> {
    let local: IpAddr = match server {
        SocketAddr::V4(_) => Ipv4Addr::UNSPECIFIED.into(),
        SocketAddr::V6(_) => Ipv6Addr::UNSPECIFIED.into(),
    };
    let s = UdpSocket::bind((local, 0)).map_err(io("bind", server))?;
    s.connect(server).map_err(io("connect", server))?;
    s.set_read_timeout(Some(timeout))
        .map_err(io("set timeout", server))?;
    s.send(bytes).map_err(io("send to", server))?;
    let mut buf = vec![0u8; 65535];
    loop {
        let n = s
            .recv(&mut buf)
            .map_err(with_timeout(server, timeout, "receive from"))?;
        if n >= 2 && u16::from_be_bytes([buf[0], buf[1]]) == id {
            return decode(server, &buf[..n]);
        }
    }
}

fn with_timeout(
    server: SocketAddr,
    timeout: Duration,
    what: &'static str,
) -> impl Fn(std::io::Error) -> Error {
    move |source| match source.kind() {
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => Error::Timeout {
            server,
            timeout_ms: timeout.as_millis(),
        },
        _ => Error::Io {
            what,
            server,
            source,
        },
    }
}

fn tcp_exchange(server: SocketAddr, bytes: &[u8], timeout: Duration) -> Result<Message> {
    let mut s = TcpStream::connect_timeout(&server, timeout).map_err(with_timeout(
        server,
        timeout,
        "connect to",
    ))?;
    s.set_read_timeout(Some(timeout))
        .map_err(io("set timeout", server))?;
    let mut frame = Vec::with_capacity(bytes.len() + 2);
    frame.extend((bytes.len() as u16).to_be_bytes());
    frame.extend(bytes);
    s.write_all(&frame).map_err(io("send to", server))?;
    let mut len = [0u8; 2];
    s.read_exact(&mut len)
        .map_err(with_timeout(server, timeout, "receive from"))?;
    let mut buf = vec![0u8; u16::from_be_bytes(len) as usize];
    s.read_exact(&mut buf)
        .map_err(with_timeout(server, timeout, "receive from"))?;
    decode(server, &buf)
}
