//! `weft probe dns NAME`: one question to a DNS server (the first `nameserver` of
//! /etc/resolv.conf unless `--server` names one), asked as given, without the search list.
//! NOERROR is `answered` (an empty answer too: the name exists); NXDOMAIN, SERVFAIL and
//! REFUSED are `unresolved` with the code; no reply is `timeout`.

use super::report::{Report, Verdict};
use super::Usage;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

/// `IP`, `IP:PORT` or `[v6]:PORT`; port 53 when none is given.
fn server_addr(s: &str) -> Result<SocketAddr, Usage> {
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok(a);
    }
    s.trim_matches(['[', ']'])
        .parse::<IpAddr>()
        .map(|ip| SocketAddr::new(ip, 53))
        .map_err(|_| Usage(format!("--server {s:?}: not IP or IP:PORT")))
}

/// The first nameserver of a resolv.conf, as the system resolver would ask it.
fn first_nameserver(path: &str) -> Result<SocketAddr, Usage> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Usage(format!("no --server given and {path} unreadable: {e}")))?;
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("nameserver"))
        .find_map(|rest| rest.trim().parse::<IpAddr>().ok())
        .map(|ip| SocketAddr::new(ip, 53))
        .ok_or_else(|| Usage(format!("no --server given and no nameserver in {path}")))
}

pub fn probe(
    name: &str,
    qtype: &str,
    server: Option<&str>,
    tcp: bool,
    timeout: Duration,
) -> Result<Report, Usage> {
    let server = match server {
        Some(s) => server_addr(s)?,
        None => first_nameserver("/etc/resolv.conf")?,
    };
    let proto = if tcp { "dns-tcp" } else { "dns" };
    let started = Instant::now();
    let report = match weft_dns::client::query(server, name, qtype, tcp, timeout) {
        Ok(r) => {
            let verdict = if r.rcode.replace(' ', "") == "NOERROR" {
                Verdict::Answered
            } else {
                Verdict::Unresolved
            };
            let mut rep = Report::new(proto, name, verdict)
                .with("server", server.to_string())
                .with("type", qtype.to_ascii_uppercase())
                .with("rcode", r.rcode.clone())
                .with("answers", r.answers.len().to_string());
            if r.truncated {
                rep = rep.with("truncated", "retried-over-tcp".to_string());
            }
            if !r.answers.is_empty() {
                rep = rep.with("answer", r.answers.join("; "));
            }
            rep.with_time(started.elapsed())
        }
        Err(weft_dns::Error::BadQuery { why, .. }) => {
            return Err(Usage(format!("{name:?} --type {qtype}: {why}")))
        }
        Err(e @ weft_dns::Error::Timeout { .. }) => Report::new(proto, name, Verdict::Timeout)
            .with("server", server.to_string())
            .with("error", e.to_string()),
        Err(e) => Report::new(proto, name, Verdict::Failed)
            .with("server", server.to_string())
            .with("error", e.to_string()),
    };
    Ok(report)
}
