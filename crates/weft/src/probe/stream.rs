//! TCP and SCTP probes: connect, send one line, read the server's greeting and the echo.
//! Connecting is what counts (exit 0); the exchange only adds what the server saw.

use super::connect::{self, ConnectError};
use super::report::{summary, Report, Verdict};
use super::{nonce, Usage};
use crate::serve::greeting;
use nix::sys::socket::SockProtocol;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Instant;

pub fn probe(
    proto: &'static str,
    target: &str,
    addr: SocketAddr,
    deadline: Instant,
) -> Result<Report, Usage> {
    let sock_proto = if proto == "sctp" {
        SockProtocol::Sctp
    } else {
        SockProtocol::Tcp
    };
    let start = Instant::now();
    let stream = match connect::stream(addr, sock_proto, deadline) {
        Ok(s) => s,
        Err(ConnectError::NoProtocol(e)) => {
            return Err(Usage(format!(
                "{proto} is not available in this kernel ({}); load its module (modprobe {proto})",
                e.desc()
            )))
        }
        Err(ConnectError::Io(e)) => return Ok(Report::from_error(proto, target, &e)),
    };
    let mut report = Report::new(proto, target, Verdict::Connected);
    if let Ok(local) = stream.local_addr() {
        report = report.with("local", local.to_string());
    }
    Ok(exchange(stream, report, deadline).with_time(start.elapsed()))
}

/// Sends `weft-probe NONCE` and reads until the echo is back, the peer closes, time is up,
/// or the first bytes show it is not a weft server (then there is nothing more to wait for).
fn exchange(mut stream: TcpStream, report: Report, deadline: Instant) -> Report {
    let line = format!("weft-probe {}\n", nonce());
    if let Err(e) = stream.write_all(line.as_bytes()) {
        return report.with("exchange", Verdict::of(&e).word().to_string());
    }
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let ended = loop {
        match interpret(&got, &line) {
            Reply::Echoed(_) | Reply::Foreign => break None,
            Reply::Greeted(_) | Reply::Pending => {}
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || stream.set_read_timeout(Some(left)).is_err() {
            break Some("timeout".to_string());
        }
        match stream.read(&mut buf) {
            Ok(0) => break Some("closed".to_string()),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => break Some(Verdict::of(&e).word().to_string()),
        }
    };
    describe(report, &got, &line, ended)
}

/// What has come back so far.
enum Reply {
    /// Nothing yet, or the start of what may be a greeting.
    Pending,
    /// A weft greeting, our line not (yet) echoed after it.
    Greeted(greeting::Greeting),
    /// A weft greeting and our line back.
    Echoed(greeting::Greeting),
    /// Bytes from some other kind of server.
    Foreign,
}

fn interpret(got: &[u8], sent: &str) -> Reply {
    let prefix = greeting::PREFIX.as_bytes();
    let n = got.len().min(prefix.len());
    if got[..n] != prefix[..n] {
        return Reply::Foreign;
    }
    let Some(end) = got.iter().position(|b| *b == b'\n') else {
        return Reply::Pending;
    };
    let first = String::from_utf8_lossy(&got[..end]);
    match greeting::parse(&first) {
        Some(g) if got[end + 1..].starts_with(sent.as_bytes()) => Reply::Echoed(g),
        Some(g) => Reply::Greeted(g),
        None => Reply::Foreign,
    }
}

fn describe(report: Report, got: &[u8], sent: &str, ended: Option<String>) -> Report {
    match interpret(got, sent) {
        Reply::Echoed(g) => with_greeting(report, &g),
        Reply::Greeted(g) => {
            with_greeting(report, &g).with("echo", ended.unwrap_or_else(|| "missing".into()))
        }
        Reply::Pending if got.is_empty() => report.with("reply", "none"),
        Reply::Pending | Reply::Foreign => report.with("reply", summary(got, 60)),
    }
}

/// The server's view: the client address it saw, and who it is.
pub fn with_greeting(mut report: Report, g: &greeting::Greeting) -> Report {
    if let Some(c) = g.client {
        report = report.with("client", c.ip().to_string());
    }
    if let Some(h) = &g.host {
        report = report.with("server", h.clone());
    }
    if let Some(p) = &g.pod {
        report = report.with("pod", p.clone());
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> Report {
        Report::new("tcp", "10.0.0.1:80", Verdict::Connected)
    }

    #[test]
    fn a_weft_server_reply_shows_the_client_it_saw() {
        let sent = "weft-probe 1\n";
        let got =
            b"weft-serve proto=tcp host=n1 pod=default/web client=10.244.1.2:4000\nweft-probe 1\n";
        let line = describe(base(), got, sent, None).to_string();
        assert_eq!(
            line,
            "tcp 10.0.0.1:80 connected client=10.244.1.2 server=n1 pod=default/web"
        );
    }

    #[test]
    fn a_missing_echo_is_reported() {
        let got = b"weft-serve proto=tcp host=n1 client=10.244.1.2:4000\n";
        let line = describe(base(), got, "weft-probe 1\n", Some("closed".into())).to_string();
        assert!(line.ends_with("echo=closed"), "{line}");
    }

    #[test]
    fn other_servers_are_summarised() {
        let line = describe(base(), b"SSH-2.0-x\r\n", "weft-probe 1\n", None).to_string();
        assert!(line.ends_with("reply=\"SSH-2.0-x\\r\\n\""), "{line}");
        let line = describe(base(), b"", "weft-probe 1\n", None).to_string();
        assert!(line.ends_with("reply=none"), "{line}");
    }
}
