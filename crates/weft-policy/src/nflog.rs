//! Reading the packets the policy table logs: an nfnetlink_log (nflog) subscriber for one
//! group, over a NETLINK_NETFILTER socket, no C library. The deny chains say
//! `log prefix "weft-policy <direction> <tier>: " group N`; each message carries the
//! prefix and the packet's first bytes, which [`Logged::parse`] turns into the addresses,
//! protocol and port the matcher needs ([`crate::denials`]).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;
use std::time::{Duration, Instant};

use netlink_sys::{protocols::NETLINK_NETFILTER, Socket};
use weft_nft::netlink::attr::{Attrs, Msgs, Writer, NLMSG_ERROR, NLM_F_ACK, NLM_F_REQUEST};

use crate::error::{Error, Result};
use crate::model::{Direction, Protocol, Tier};

const NFNL_SUBSYS_ULOG: u16 = 4;
const NFULNL_MSG_PACKET: u16 = 0;
const NFULNL_MSG_CONFIG: u16 = 1;
const NFULA_CFG_CMD: u16 = 1;
const NFULA_CFG_MODE: u16 = 2;
const NFULA_CFG_QTHRESH: u16 = 5;
const NFULNL_CFG_CMD_BIND: u8 = 1;
const NFULNL_COPY_PACKET: u8 = 2;
const NFULA_MARK: u16 = 2;
const NFULA_PAYLOAD: u16 = 9;
const NFULA_PREFIX: u16 = 10;
/// Enough of a packet for an IPv6 header and the transport ports.
const COPY_RANGE: u32 = 128;

/// A subscriber to one nflog group in one network namespace.
pub struct Nflog {
    sock: Socket,
    group: u16,
    buf: Vec<u8>,
}

/// One logged packet, as the table's log statement and the packet describe it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Logged {
    /// From the prefix: which chain dropped it.
    pub direction: Direction,
    pub tier: Tier,
    pub src: IpAddr,
    pub dst: IpAddr,
    pub proto: Protocol,
    /// 0 for protocols without ports.
    pub dport: u16,
    /// The packet mark (the subject class bits are the table's).
    pub mark: u32,
}

fn io(group: u16, what: &str, e: std::io::Error) -> Error {
    Error::Nflog {
        group,
        problem: format!("{what}: {e}"),
    }
}

impl Nflog {
    /// Binds group `group` in the calling thread's namespace.
    pub fn open(group: u16) -> Result<Nflog> {
        let mut sock = Socket::new(NETLINK_NETFILTER).map_err(|e| io(group, "socket", e))?;
        sock.bind_auto().map_err(|e| io(group, "bind", e))?;
        // Bursts of denials should not overflow the socket before the reader wakes.
        let _ = sock.set_rx_buf_sz(4 * 1024 * 1024);
        let mut n = Nflog {
            sock,
            group,
            buf: Vec::with_capacity(256 * 1024),
        };
        n.config(|w| w.put(NFULA_CFG_CMD, &[NFULNL_CFG_CMD_BIND]))?;
        n.config(|w| {
            let mut mode = COPY_RANGE.to_be_bytes().to_vec();
            mode.extend_from_slice(&[NFULNL_COPY_PACKET, 0]);
            w.put(NFULA_CFG_MODE, &mode);
        })?;
        // Each packet is sent as soon as it is logged rather than batched.
        n.config(|w| w.put_be32(NFULA_CFG_QTHRESH, 1))?;
        Ok(n)
    }

    /// Binds group `group` in the namespace at `netns` (e.g. `/run/netns/NAME`).
    pub fn open_in(netns: &Path, group: u16) -> Result<Nflog> {
        let file = std::fs::File::open(netns).map_err(|e| io(group, "opening the netns", e))?;
        std::thread::spawn(move || {
            nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
                .map_err(|e| io(group, "setns", e.into()))?;
            Nflog::open(group)
        })
        .join()
        .map_err(|_| Error::Nflog {
            group,
            problem: "the namespace thread panicked".into(),
        })?
    }

    fn config(&mut self, attrs: impl FnOnce(&mut Writer)) -> Result<()> {
        let mut w = Writer::default();
        let ty = (NFNL_SUBSYS_ULOG << 8) | NFULNL_MSG_CONFIG;
        let m = w.begin_msg(ty, NLM_F_REQUEST | NLM_F_ACK, 1, 0, self.group);
        attrs(&mut w);
        w.end_msg(m);
        self.sock
            .send(&w.buf, 0)
            .map_err(|e| io(self.group, "sending the config", e))?;
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            for m in self.recv_until(deadline)? {
                if m.0 == NLMSG_ERROR {
                    let code =
                        m.1.get(..4)
                            .map(|b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
                            .unwrap_or(0);
                    if code == 0 {
                        return Ok(());
                    }
                    return Err(Error::Nflog {
                        group: self.group,
                        problem: format!(
                            "the kernel refused the config: {} (another listener on the group?)",
                            std::io::Error::from_raw_os_error(-code)
                        ),
                    });
                }
            }
        }
    }

    /// The next datagram's messages as (type, payload), waiting until `deadline`.
    fn recv_until(&mut self, deadline: Instant) -> Result<Vec<(u16, Vec<u8>)>> {
        self.sock
            .set_non_blocking(true)
            .map_err(|e| io(self.group, "non-blocking", e))?;
        loop {
            self.buf.clear();
            match self.sock.recv(&mut self.buf, 0) {
                Ok(_) => {
                    return Ok(Msgs(&self.buf)
                        .map(|m| (m.ty, m.payload.to_vec()))
                        .collect())
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    if Instant::now() >= deadline {
                        return Err(Error::Nflog {
                            group: self.group,
                            problem: "no answer from the kernel".into(),
                        });
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(e) => return Err(io(self.group, "receiving", e)),
            }
        }
    }

    /// The packets logged within `wait` (at least one unless the time runs out), blocking
    /// when `wait` is `None`. Messages that are not weft-policy's are skipped.
    pub fn next(&mut self, wait: Option<Duration>) -> Result<Vec<Logged>> {
        self.sock
            .set_non_blocking(wait.is_some())
            .map_err(|e| io(self.group, "non-blocking", e))?;
        let deadline = wait.map(|w| Instant::now() + w);
        loop {
            self.buf.clear();
            match self.sock.recv(&mut self.buf, 0) {
                Ok(_) => {
                    let ty = (NFNL_SUBSYS_ULOG << 8) | NFULNL_MSG_PACKET;
                    let got: Vec<Logged> = Msgs(&self.buf)
                        .filter(|m| m.ty == ty)
                        .filter_map(|m| m.nfgen())
                        .filter_map(|(_, a)| Logged::parse(a))
                        .collect();
                    if !got.is_empty() {
                        return Ok(got);
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    if deadline.is_some_and(|d| Instant::now() >= d) {
                        return Ok(Vec::new());
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
                // ENOBUFS: the socket overflowed and packets were lost; go on reading.
                Err(e) if e.raw_os_error() == Some(105) => {
                    tracing::warn!(group = self.group, "nflog: denials lost (socket full)");
                }
                Err(e) => return Err(io(self.group, "receiving", e)),
            }
        }
    }
}

impl Logged {
    /// A packet message's prefix and payload; `None` for what weft-policy did not log.
    pub fn parse(a: Attrs) -> Option<Logged> {
        let prefix = a.get(NFULA_PREFIX)?;
        let prefix = std::str::from_utf8(prefix).ok()?.trim_end_matches('\0');
        let (direction, tier) = parse_prefix(prefix)?;
        let (src, dst, proto, dport) = parse_packet(a.get(NFULA_PAYLOAD)?)?;
        let mark = a
            .get(NFULA_MARK)
            .and_then(weft_nft::netlink::attr::be32)
            .unwrap_or(0);
        Some(Logged {
            direction,
            tier,
            src,
            dst,
            proto,
            dport,
            mark,
        })
    }
}

/// The prefix the table's deny chains give their log statement.
pub fn prefix(dir: Direction, tier: Tier) -> String {
    format!("weft-policy {} {}: ", dir.as_str(), tier.as_str())
}

fn parse_prefix(p: &str) -> Option<(Direction, Tier)> {
    let rest = p
        .strip_prefix("weft-policy ")?
        .trim_end()
        .strip_suffix(':')?;
    let (d, t) = rest.split_once(' ')?;
    let dir = [Direction::Egress, Direction::Ingress]
        .into_iter()
        .find(|x| x.as_str() == d)?;
    let tier = [Tier::Admin, Tier::NetworkPolicy, Tier::Baseline]
        .into_iter()
        .find(|x| x.as_str() == t)?;
    Some((dir, tier))
}

/// Addresses, protocol and destination port from the network header on.
fn parse_packet(p: &[u8]) -> Option<(IpAddr, IpAddr, Protocol, u16)> {
    let (src, dst, proto, l4): (IpAddr, IpAddr, u8, &[u8]) = match p.first()? >> 4 {
        4 => {
            let ihl = usize::from(p[0] & 0x0f) * 4;
            let a: [u8; 4] = p.get(12..16)?.try_into().ok()?;
            let b: [u8; 4] = p.get(16..20)?.try_into().ok()?;
            (
                Ipv4Addr::from(a).into(),
                Ipv4Addr::from(b).into(),
                *p.get(9)?,
                p.get(ihl..).unwrap_or_default(),
            )
        }
        6 => {
            let a: [u8; 16] = p.get(8..24)?.try_into().ok()?;
            let b: [u8; 16] = p.get(24..40)?.try_into().ok()?;
            // Extension headers are not followed: such a packet reads as portless.
            (
                Ipv6Addr::from(a).into(),
                Ipv6Addr::from(b).into(),
                *p.get(6)?,
                p.get(40..).unwrap_or_default(),
            )
        }
        _ => return None,
    };
    let proto = Protocol::from_number(proto);
    let dport = match (proto.has_ports(), l4.get(2..4)) {
        (true, Some(d)) => u16::from_be_bytes([d[0], d[1]]),
        _ => 0,
    };
    Some((src, dst, proto, dport))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_read_back() {
        for dir in [Direction::Egress, Direction::Ingress] {
            for tier in [Tier::Admin, Tier::NetworkPolicy, Tier::Baseline] {
                assert_eq!(parse_prefix(&prefix(dir, tier)), Some((dir, tier)));
            }
        }
        assert_eq!(parse_prefix("other: "), None);
    }

    #[test]
    fn an_ipv4_tcp_header_gives_addresses_and_port() {
        let mut p = vec![
            0x45, 0, 0, 40, 0, 0, 0, 0, 64, 6, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2,
        ];
        p.extend_from_slice(&[0x9c, 0x40, 0x00, 0x50]);
        let (s, d, proto, port) = parse_packet(&p).unwrap();
        assert_eq!(
            (s, d),
            ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap())
        );
        assert_eq!((proto, port), (Protocol::Tcp, 80));
    }
}
