//! `weft probe`: one result line, exit 0 when the peer connected or answered, 1 when not,
//! 2 when the probe cannot be made as asked (bad target, protocol missing from the kernel).
//! Tests and the lab use it instead of ping and nc, which a machine may not have.
//!
//! The line is `PROTO TARGET VERDICT key=value...`. Verdicts: `connected` (TCP, SCTP) and
//! `answered` (UDP, ICMP, HTTP) exit 0; `refused`, `timeout`, `unreachable`, `reset`,
//! `unresolved`, `unexpected`, `failed` exit 1. Values are single words, or quoted with
//! escapes when they hold spaces. Against `weft serve` the line also shows the client
//! address the server saw (`client=IP`), next to the probe's own (`local=IP:PORT`): equal
//! means no NAT on the way; `server=` and `pod=` name who answered. For example:
//!
//! ```text
//! tcp 10.244.1.3:80 connected local=10.244.1.2:41234 client=10.244.1.2 server=node-1 pod=default/web time=0.31ms
//! udp 10.96.0.10:53 refused
//! http http://10.96.0.5/x answered status=200 local=10.244.1.2:50110 client=10.244.1.2 server=node-2 path=/x time=1.20ms
//! ```

mod connect;
mod dns;
mod http;
mod icmp;
mod report;
mod stream;
mod target;
mod tls;
mod udp;

use crate::cli::{ProbeCommand, ProbeOpts, ProbeTarget};
use report::{Report, Verdict};
use std::io::Write;
use std::time::{Duration, Instant};

/// The probe cannot be made as asked; exit 2.
#[derive(Debug)]
pub struct Usage(pub String);

pub fn run(cmd: ProbeCommand) -> u8 {
    match probe(cmd) {
        Ok(report) => {
            // A closed stdout must not turn a result into a panic; the exit code still tells.
            let _ = writeln!(std::io::stdout(), "{report}");
            report.exit_code()
        }
        Err(Usage(msg)) => {
            eprintln!("weft probe: {msg}");
            2
        }
    }
}

fn probe(cmd: ProbeCommand) -> Result<Report, Usage> {
    match cmd {
        ProbeCommand::Tcp(t) => stream_probe("tcp", t),
        ProbeCommand::Sctp(t) => stream_probe("sctp", t),
        ProbeCommand::Udp(t) => {
            let timeout = timeout(&t.opts)?;
            let hp = target::host_port(&t.target).map_err(Usage)?;
            Ok(match target::resolve(&hp.host, hp.port) {
                Ok(addr) => udp::probe(&t.target, addr, timeout),
                Err(e) => unresolved("udp", &t.target, &e),
            })
        }
        ProbeCommand::Icmp { host, opts } => {
            let timeout = timeout(&opts)?;
            let h = target::host(&host).map_err(Usage)?;
            Ok(match target::resolve(&h, 0) {
                Ok(addr) => icmp::probe(&host, addr.ip(), timeout),
                Err(e) => unresolved("icmp", &host, &e),
            })
        }
        ProbeCommand::Http {
            url,
            expect_status,
            method,
            host,
            resolve,
            cacert,
            insecure,
            opts,
        } => {
            let deadline = Instant::now() + timeout(&opts)?;
            let u = target::http_url(&url).map_err(Usage)?;
            let trust = match (cacert, insecure) {
                (Some(f), _) => tls::Trust::CaFile(f),
                (None, true) => tls::Trust::Insecure,
                (None, false) => tls::Trust::System,
            };
            let ask = http::Ask {
                method,
                host,
                trust,
                expect_status,
            };
            let pinned = resolve
                .iter()
                .map(|r| target::resolve_rule(r).map_err(Usage))
                .collect::<Result<Vec<_>, _>>()?
                .into_iter()
                .find(|(h, p, _)| h.eq_ignore_ascii_case(&u.host) && *p == u.port)
                .map(|(_, _, addr)| addr);
            let addr = match pinned {
                Some(a) => Ok(a),
                None => target::resolve(&u.host, u.port),
            };
            Ok(match addr {
                Ok(addr) => http::probe(&url, &u, addr, deadline, &ask),
                Err(e) => unresolved("http", &url, &e),
            })
        }
        ProbeCommand::Dns {
            name,
            qtype,
            server,
            tcp,
            opts,
        } => dns::probe(&name, &qtype, server.as_deref(), tcp, timeout(&opts)?),
    }
}

fn stream_probe(proto: &'static str, t: ProbeTarget) -> Result<Report, Usage> {
    let deadline = Instant::now() + timeout(&t.opts)?;
    let hp = target::host_port(&t.target).map_err(Usage)?;
    match target::resolve(&hp.host, hp.port) {
        Ok(addr) => stream::probe(proto, &t.target, addr, deadline),
        Err(e) => Ok(unresolved(proto, &t.target, &e)),
    }
}

fn timeout(opts: &ProbeOpts) -> Result<Duration, Usage> {
    // The upper bound keeps deadline arithmetic far from overflowing.
    if !(1..=86_400_000).contains(&opts.timeout_ms) {
        return Err(Usage(
            "--timeout-ms must be from 1 to 86400000 (a day)".into(),
        ));
    }
    Ok(Duration::from_millis(opts.timeout_ms))
}

fn unresolved(proto: &'static str, target: &str, e: &std::io::Error) -> Report {
    Report::new(proto, target, Verdict::Unresolved).with("error", e.to_string())
}

/// A per-run number so an echo is recognised as the answer to this probe.
fn nonce() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    // RandomState is seeded from the OS per process; enough to tell probes apart.
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    h.finish()
}
