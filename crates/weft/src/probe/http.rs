//! HTTP probe: one request over a plain TCP or a TLS connection. Any HTTP response counts
//! as answered (the line shows its status) unless a specific status is expected.

use super::connect::{self, ConnectError};
use super::report::{summary, Report, Verdict};
use super::target::HttpUrl;
use super::tls::{self, Conn, Trust};
use nix::sys::socket::SockProtocol;
use std::io::{ErrorKind, Read, Write};
use std::net::SocketAddr;
use std::time::Instant;

/// The most of a response kept; enough for any echo answer and a summary of the rest.
const MAX_RESPONSE: usize = 256 * 1024;

/// How to ask: the method, the Host (and SNI) to present, whom to trust over TLS.
#[derive(Debug, Clone)]
pub struct Ask {
    pub method: String,
    /// Overrides the URL's host in `Host` and in the TLS SNI.
    pub host: Option<String>,
    pub trust: Trust,
    pub expect_status: Option<u16>,
}

pub fn probe(
    target: &str,
    url: &HttpUrl,
    addr: SocketAddr,
    deadline: Instant,
    ask: &Ask,
) -> Report {
    let expect_status = ask.expect_status;
    let start = Instant::now();
    let tcp = match connect::stream(addr, SockProtocol::Tcp, deadline) {
        Ok(s) => s,
        Err(ConnectError::Io(e)) => return Report::from_error("http", target, &e),
        Err(ConnectError::NoProtocol(e)) => {
            return Report::from_error("http", target, &std::io::Error::from(e))
        }
    };
    let local = tcp.local_addr().ok();
    let authority = ask.host.clone().unwrap_or_else(|| url.authority.clone());
    let mut stream = if url.tls {
        let sni = ask.host.as_deref().map_or(url.host.as_str(), |h| {
            h.rsplit_once(':').map_or(h, |(name, _)| name)
        });
        let cfg = match tls::config(&ask.trust) {
            Ok(c) => c,
            Err(e) => {
                return Report::new("http", target, Verdict::Failed).with("error", e);
            }
        };
        let left = deadline.saturating_duration_since(Instant::now());
        let _ = tcp.set_read_timeout(Some(left.max(std::time::Duration::from_millis(1))));
        match tls::connect(cfg, sni, tcp) {
            Ok(c) => c,
            Err(e) => return Report::from_error("http", target, &e),
        }
    } else {
        Conn::Plain(tcp)
    };
    let request = format!(
        "{} {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: weft-probe\r\nAccept: */*\r\nConnection: close\r\n\r\n",
        ask.method, url.path, authority
    );
    if let Err(e) = stream.write_all(request.as_bytes()) {
        return Report::from_error("http", target, &e);
    }
    let mut got = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    let mut failure = None;
    while !complete(&got) && got.len() < MAX_RESPONSE {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || stream.tcp().set_read_timeout(Some(left)).is_err() {
            failure = Some(std::io::Error::from(ErrorKind::TimedOut));
            break;
        }
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => {
                failure = Some(e);
                break;
            }
        }
    }
    let tls_version = stream.describe();
    match parse(&got) {
        Some(resp) => {
            let r = describe(target, &resp, expect_status, local);
            let r = match tls_version {
                Some(v) => r.with("tls", v),
                None => r,
            };
            r.with_time(start.elapsed())
        }
        None => match failure {
            Some(e) => Report::from_error("http", target, &e),
            None if got.is_empty() => Report::new("http", target, Verdict::Failed)
                .with("error", "closed without a response"),
            None => Report::new("http", target, Verdict::Failed)
                .with("error", "not an HTTP response")
                .with("reply", summary(&got, 60)),
        },
    }
}

#[derive(Debug, PartialEq, Eq)]
struct Response {
    status: u16,
    body: Vec<u8>,
}

fn split_head(got: &[u8]) -> Option<(&[u8], &[u8])> {
    let end = got.windows(4).position(|w| w == b"\r\n\r\n")?;
    Some((&got[..end], &got[end + 4..]))
}

fn content_length(head: &[u8]) -> Option<usize> {
    String::from_utf8_lossy(head).lines().skip(1).find_map(|l| {
        let (name, value) = l.split_once(':')?;
        if name.trim().eq_ignore_ascii_case("content-length") {
            value.trim().parse().ok()
        } else {
            None
        }
    })
}

/// Whether the whole response is in: by Content-Length; otherwise we read to EOF since the
/// request asked for `Connection: close`.
fn complete(got: &[u8]) -> bool {
    match split_head(got) {
        Some((head, body)) => content_length(head).is_some_and(|n| body.len() >= n),
        None => false,
    }
}

fn parse(got: &[u8]) -> Option<Response> {
    let head_end = split_head(got);
    let status_line_end = got.iter().position(|b| *b == b'\n')?;
    let status_line = std::str::from_utf8(&got[..status_line_end]).ok()?;
    let mut parts = status_line.split_whitespace();
    if !parts.next()?.starts_with("HTTP/1.") {
        return None;
    }
    let status = parts
        .next()?
        .parse()
        .ok()
        .filter(|s| (100..1000).contains(s))?;
    let body = match head_end {
        Some((head, body)) => match content_length(head) {
            Some(n) => body[..n.min(body.len())].to_vec(),
            None => body.to_vec(),
        },
        None => Vec::new(),
    };
    Some(Response { status, body })
}

fn describe(
    target: &str,
    resp: &Response,
    expect_status: Option<u16>,
    local: Option<SocketAddr>,
) -> Report {
    let verdict = match expect_status {
        Some(want) if want != resp.status => Verdict::Unexpected,
        _ => Verdict::Answered,
    };
    let mut r = Report::new("http", target, verdict).with("status", resp.status.to_string());
    if let Some(want) = expect_status.filter(|w| *w != resp.status) {
        r = r.with("expected", want.to_string());
    }
    if let Some(l) = local {
        r = r.with("local", l.to_string());
    }
    // A weft echo names the server's view; anything else gets a glimpse of its body.
    match serde_json::from_slice::<serde_json::Value>(&resp.body) {
        Ok(v) if v.get("client").is_some() && v.get("path").is_some() => {
            let s = |k: &str| v.get(k).and_then(|x| x.as_str()).map(str::to_string);
            if let Some(c) = s("client") {
                let ip = c
                    .parse::<SocketAddr>()
                    .map(|a| a.ip().to_string())
                    .unwrap_or(c);
                r = r.with("client", ip);
            }
            if let Some(h) = s("host") {
                r = r.with("server", h);
            }
            match (s("namespace"), s("pod")) {
                (Some(ns), Some(p)) => r = r.with("pod", format!("{ns}/{p}")),
                (None, Some(p)) => r = r.with("pod", p),
                _ => {}
            }
            if let Some(p) = s("path") {
                r = r.with("path", p);
            }
            r
        }
        _ => r
            .with("bytes", resp.body.len().to_string())
            .with("body", summary(&resp.body, 60)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ECHO: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 85\r\n\r\n{\"client\":\"10.244.1.2:4000\",\"host\":\"n1\",\"namespace\":\"x\",\"pod\":\"a\",\"path\":\"/p\",\"q\":0}\n";

    #[test]
    fn an_echo_response_shows_the_servers_view() {
        assert!(complete(ECHO));
        let resp = parse(ECHO).unwrap();
        let line = describe("http://a/p", &resp, None, None).to_string();
        assert_eq!(
            line,
            "http http://a/p answered status=200 client=10.244.1.2 server=n1 pod=x/a path=/p"
        );
    }

    #[test]
    fn other_responses_and_expectations() {
        let got = b"HTTP/1.0 503 Service Unavailable\r\n\r\nno endpoints";
        assert!(!complete(got));
        let resp = parse(got).unwrap();
        assert_eq!(resp.status, 503);
        let r = describe("u", &resp, None, None);
        assert!(r.verdict.ok());
        assert!(
            r.to_string()
                .ends_with("status=503 bytes=12 body=\"no endpoints\""),
            "{r}"
        );
        let r = describe("u", &resp, Some(200), None);
        assert_eq!(r.exit_code(), 1);
        assert!(
            r.to_string().contains("unexpected status=503 expected=200"),
            "{r}"
        );
    }

    #[test]
    fn non_http_is_not_a_response() {
        assert_eq!(parse(b"SSH-2.0-OpenSSH\r\n"), None);
        assert_eq!(parse(b"HTTP/1.1 abc\r\n"), None);
        assert_eq!(parse(b""), None);
    }
}
