//! UDP probe: a datagram to the peer, answered when any datagram comes back from it.
//! The socket is connected so the kernel hands us ICMP port unreachable as ECONNREFUSED
//! (`refused`) and only accepts replies from the peer itself.

use super::connect::report_icmp_errors;
use super::report::{summary, Report, Verdict};
use super::stream::with_greeting;
use crate::serve::greeting;
use std::io::ErrorKind;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

/// UDP may lose a datagram; resend this many times within the timeout before giving up.
const SENDS: u32 = 3;

pub fn probe(target: &str, addr: SocketAddr, timeout: Duration) -> Report {
    let start = Instant::now();
    let deadline = start + timeout;
    let bind: SocketAddr = if addr.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let sock = match UdpSocket::bind(bind).and_then(|s| {
        report_icmp_errors(&s, addr.is_ipv6())?;
        s.connect(addr)?;
        Ok(s)
    }) {
        Ok(s) => s,
        Err(e) => return Report::from_error("udp", target, &e),
    };
    let payload = format!("weft-probe {}\n", super::nonce());
    let interval = timeout / SENDS;
    let mut buf = vec![0u8; 65_536];
    let mut sends = 0;
    let mut next_send = start;
    loop {
        let now = Instant::now();
        if now >= deadline {
            return Report::new("udp", target, Verdict::Timeout);
        }
        if now >= next_send && sends < SENDS {
            if let Err(e) = sock.send(payload.as_bytes()) {
                return Report::from_error("udp", target, &e);
            }
            sends += 1;
            next_send = now + interval;
        }
        let wake = if sends < SENDS {
            next_send.min(deadline)
        } else {
            deadline
        };
        let wait = wake.saturating_duration_since(Instant::now());
        if wait.is_zero() || sock.set_read_timeout(Some(wait)).is_err() {
            continue;
        }
        match sock.recv(&mut buf) {
            Ok(n) => {
                let report = answered(target, &buf[..n], &payload, sock.local_addr().ok());
                return report.with_time(start.elapsed());
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Report::from_error("udp", target, &e),
        }
    }
}

fn answered(target: &str, reply: &[u8], sent: &str, local: Option<SocketAddr>) -> Report {
    let mut report = Report::new("udp", target, Verdict::Answered);
    if let Some(l) = local {
        report = report.with("local", l.to_string());
    }
    let text = String::from_utf8_lossy(reply);
    match text.split_once('\n') {
        Some((first, rest)) => match greeting::parse(first) {
            Some(g) => {
                report = with_greeting(report, &g);
                if rest != sent {
                    report = report.with("echo", "mismatch");
                }
                report
            }
            None if text == sent => report.with("reply", "echo"),
            None => report.with("reply", summary(reply, 60)),
        },
        None => report.with("reply", summary(reply, 60)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_read_as_the_server_saw_us() {
        let r = answered(
            "10.0.0.1:53",
            b"weft-serve proto=udp host=n2 client=10.244.1.2:999\nweft-probe 7\n",
            "weft-probe 7\n",
            None,
        );
        assert_eq!(
            r.to_string(),
            "udp 10.0.0.1:53 answered client=10.244.1.2 server=n2"
        );
        let plain = answered("x:1", b"weft-probe 7\n", "weft-probe 7\n", None);
        assert!(plain.to_string().ends_with("reply=echo"));
        let other = answered("x:1", b"\x00\x01", "weft-probe 7\n", None);
        assert!(other.verdict.ok());
    }
}
