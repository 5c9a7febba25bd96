//! The proxies' latency on the wire: a capture (`tcpdump`) on the bench's loopback while
//! wrk loads a proxy in a new-connection mode, timed from the segments themselves, so
//! the figure is the proxy's and not the client's loop.
//!
//! Why: wrk's latency clock starts after the TLS handshake and stops when its event loop
//! gets to the answer; in the handshake mode its loop spins over every handshaking
//! connection, and its p99 follows its own work per turn (BENCHMARKS.md). On the wire,
//! per connection: from the client's first bytes (its ClientHello, or its request on plain
//! HTTP) to the proxy's first answer, and from the client's request to the proxy's
//! response. Both proxies are captured alike, in one extra run each after the rounds.

use std::fs;
use std::path::Path;
use std::time::Duration;

use crate::netns::Ctx;
use crate::settings::Mode;
use crate::wrk::run_wrk;

/// One connection's segment as the capture saw it.
struct Seg {
    at_us: f64,
    from_client: bool,
    payload: usize,
    syn: bool,
    fin: bool,
}

/// A proxy's figures on the wire, in microseconds, one value per whole connection.
#[derive(Debug, Default, Clone)]
pub struct WireOut {
    /// The client's first bytes to the proxy's first bytes back (TLS: ClientHello to the
    /// server's first flight; plain HTTP: the request to the response, as below).
    pub first: Vec<f64>,
    /// The request to the response: the client's last segment with data before the
    /// proxy's response, to that response (a TLS close_notify is not a response).
    pub request: Vec<f64>,
}

/// One new-connection mode's captures: `[weft, nginx]`.
pub struct WireRun {
    pub mode: Mode,
    pub sides: [WireOut; 2],
}

/// Loads `url` with wrk for `secs` seconds and captures `capture_secs` of its middle on
/// `port`; returns the figures of the connections seen whole.
#[allow(clippy::too_many_arguments)]
pub fn measure(
    ctx: &Ctx,
    url: &str,
    port: u16,
    tls: bool,
    secs: u64,
    capture_secs: u64,
    proxy_pids: &[u32],
    backend_pids: &[u32],
    name: &str,
) -> WireOut {
    let pcap = ctx.dir.join(format!("wire-{name}-{port}.pcap"));
    let delay = Duration::from_secs(secs.saturating_sub(capture_secs) / 2);
    // SIGINT makes tcpdump write out what it buffered (`command` unblocks the signals
    // the bench blocks in its own threads).
    let mut tcpdump = ctx.command(&ctx.cfg.client_cpus, Path::new("timeout"));
    tcpdump
        .args(["-k", "2", "--signal=INT", &capture_secs.to_string()])
        .args(["tcpdump", "-i", "lo", "-nn", "-s", "128", "-w"])
        .arg(&pcap)
        .arg(format!("tcp port {port}"))
        .stderr(std::process::Stdio::null());
    let capture = std::thread::spawn(move || {
        std::thread::sleep(delay);
        if let Err(e) = tcpdump.status() {
            eprintln!("tcpdump: {e}");
        }
    });
    run_wrk(ctx, url, true, None, secs, proxy_pids, backend_pids);
    let _ = capture.join();
    let out = analyse(&pcap, port, tls);
    let _ = fs::remove_file(&pcap);
    out
}

/// Reads a pcap (Ethernet frames, as tcpdump writes for `lo`) into each connection's
/// segments, keyed by the client's port.
fn segments(path: &Path, port: u16) -> Vec<Vec<Seg>> {
    let data = fs::read(path).unwrap_or_default();
    if data.len() < 24 {
        return Vec::new();
    }
    let magic = u32::from_le_bytes([data[0], data[1], data[2], data[3]]);
    let frac = if magic == 0xa1b2_3c4d { 1e-3 } else { 1.0 };
    let mut conns: std::collections::HashMap<u16, Vec<Seg>> = Default::default();
    let mut at = 24;
    let u32_at = |i: usize| u32::from_le_bytes([data[i], data[i + 1], data[i + 2], data[i + 3]]);
    while at + 16 <= data.len() {
        let (secs, sub, incl) = (u32_at(at), u32_at(at + 4), u32_at(at + 8) as usize);
        let frame = &data[(at + 16).min(data.len())..(at + 16 + incl).min(data.len())];
        at += 16 + incl;
        let at_us = f64::from(secs) * 1e6 + f64::from(sub) * frac;
        let Some(ip) = frame.get(14..) else { continue };
        if ip.len() < 20 || ip[0] >> 4 != 4 {
            continue;
        }
        let ihl = usize::from(ip[0] & 15) * 4;
        let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
        let Some(tcp) = ip.get(ihl..) else { continue };
        if tcp.len() < 20 {
            continue;
        }
        let (sport, dport) = (
            u16::from_be_bytes([tcp[0], tcp[1]]),
            u16::from_be_bytes([tcp[2], tcp[3]]),
        );
        let doff = usize::from(tcp[12] >> 4) * 4;
        let (syn, ack, fin) = (
            tcp[13] & 0x02 != 0,
            tcp[13] & 0x10 != 0,
            tcp[13] & 0x01 != 0,
        );
        let payload = total.saturating_sub(ihl + doff);
        let (client, from_client) = match (sport == port, dport == port) {
            (false, true) => (sport, true),
            (true, false) => (dport, false),
            _ => continue,
        };
        let list = conns.entry(client).or_default();
        // A connection seen whole starts with its SYN; a reused port starts a new one.
        if syn && !ack {
            list.clear();
        }
        list.push(Seg {
            at_us,
            from_client,
            payload,
            syn: syn && !ack,
            fin,
        });
    }
    conns.into_values().collect()
}

/// A TLS close_notify record (5 + 2 + 1 + 16 bytes): an end, not a response.
const CLOSE_NOTIFY: usize = 24;

fn analyse(path: &Path, port: u16, tls: bool) -> WireOut {
    let mut out = WireOut::default();
    for conn in segments(path, port) {
        // Whole connections only: from the client's SYN to the proxy's FIN.
        let whole = conn.first().is_some_and(|s| s.syn && s.from_client)
            && conn.iter().any(|s| s.fin && !s.from_client);
        if !whole {
            continue;
        }
        let data = |client: bool| {
            conn.iter()
                .filter(move |s| s.from_client == client && s.payload > 0)
                .filter(move |s| !tls || s.payload != CLOSE_NOTIFY)
        };
        let Some(first_in) = data(true).next() else {
            continue;
        };
        let Some(first_out) = data(false).find(|s| s.at_us >= first_in.at_us) else {
            continue;
        };
        let Some(response) = data(false).next_back() else {
            continue;
        };
        let Some(request) = data(true).rfind(|s| s.at_us <= response.at_us) else {
            continue;
        };
        out.first.push(first_out.at_us - first_in.at_us);
        out.request.push(response.at_us - request.at_us);
    }
    out
}
