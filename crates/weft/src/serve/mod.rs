//! `weft serve`: the servers a lab pod runs when its container has no command, and what
//! tests talk to. TCP and SCTP echo (a greeting line naming the host and the client address
//! the server saw, then the echo), UDP echo (the same line before the echoed datagram), and
//! HTTP echo (JSON). A TCP port also answers HTTP when the client opens with a request
//! line. Every port is served on 0.0.0.0 and [::]. Runs until SIGTERM or SIGINT, then
//! exits 0.

/// Writes a line to stderr. Unlike `eprintln!` it does not panic when stderr is closed,
/// which would take a server thread down with it.
macro_rules! note {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

pub mod greeting;
mod http;
mod listen;
mod slots;
mod stream;
mod udp;
mod upgrade;

use crate::cli::ServeArgs;
use anyhow::{bail, Context, Result};
use greeting::Identity;
use listen::{Bound, Kind, SctpUnavailable};
use nix::sys::signal::{SigSet, Signal};
use std::io::Write;
use std::sync::Arc;

/// Concurrent connections over all stream ports; more wait in the listen backlog.
const MAX_CONNECTIONS: usize = 512;

pub fn run(args: ServeArgs) -> Result<()> {
    let wanted: Vec<(Kind, u16)> = [
        (Kind::Tcp, &args.tcp),
        (Kind::Udp, &args.udp),
        (Kind::Sctp, &args.sctp),
        (Kind::Http, &args.http),
    ]
    .into_iter()
    .flat_map(|(kind, ports)| ports.iter().map(move |p| (kind, *p)))
    .collect::<Vec<_>>();
    if wanted.is_empty() {
        bail!("nothing to serve: give at least one of --tcp, --udp, --sctp, --http with a port");
    }
    let wanted = distinct(wanted);

    // Blocked before any thread starts so every thread inherits the mask and the signals
    // wait for `sigwait` below instead of killing the process mid-reply.
    let mut stop = SigSet::empty();
    stop.add(Signal::SIGTERM);
    stop.add(Signal::SIGINT);
    stop.thread_block().context("blocking SIGTERM/SIGINT")?;

    let mut sockets = Vec::new();
    for (kind, port) in wanted.iter().copied() {
        match listen::bind_port(kind, port) {
            Ok(bound) => sockets.extend(bound.into_iter().map(|b| (kind, b))),
            // A pod that declares an SCTP port must still serve its other ports on a kernel
            // without SCTP; probes of the SCTP port report the missing module themselves.
            Err(e) if e.is::<SctpUnavailable>() && wanted.iter().any(|(k, _)| *k != Kind::Sctp) => {
                note!("weft serve: {e:#}; serving the other ports")
            }
            Err(e) => return Err(e),
        }
    }

    let identity = Arc::new(Identity::from_env());
    let slots = slots::Slots::new(MAX_CONNECTIONS);
    // Nobody has to read stdout: a closed or full pipe must not stop the servers, so write
    // errors on these lines are ignored.
    let mut out = std::io::stdout().lock();
    for (kind, bound) in sockets {
        let addr = bound.local_addr().context("reading back a bound address")?;
        let _ = writeln!(out, "weft serve: {} on {addr}", kind.name());
        let identity = Arc::clone(&identity);
        let slots = Arc::clone(&slots);
        let body = move || match bound {
            Bound::Stream(l) => {
                let handler: stream::Handler = match kind {
                    Kind::Sctp => stream::sctp,
                    Kind::Http => http::serve,
                    // UDP ports are datagram sockets and never get here.
                    Kind::Tcp | Kind::Udp => stream::tcp,
                };
                stream::accept_loop(l, slots, identity, handler)
            }
            Bound::Datagram(s) => udp::serve(s, &identity),
        };
        std::thread::Builder::new()
            .name(format!("weft-serve-{}", kind.name()))
            .spawn(body)
            .context("starting a server thread")?;
    }
    // Scripts and tests wait for this line: every socket is bound and listening.
    let _ = writeln!(out, "weft serve: ready").and_then(|()| out.flush());
    drop(out);

    let sig = stop.wait().context("waiting for SIGTERM")?;
    note!("weft serve: {sig}, exiting");
    Ok(())
}

/// Drops repeated ports (a pod may declare one twice). A port given as both `--tcp` and
/// `--http` is served once as `--tcp`, which answers HTTP requests too.
fn distinct(wanted: Vec<(Kind, u16)>) -> Vec<(Kind, u16)> {
    let tcp_like = |k: Kind| matches!(k, Kind::Tcp | Kind::Http);
    let mut out: Vec<(Kind, u16)> = Vec::new();
    for (kind, port) in wanted {
        // Port 0 asks for a fresh free port each time, so zeros never repeat.
        let same = |(k, p): &(Kind, u16)| {
            port != 0 && *p == port && (*k == kind || (tcp_like(*k) && tcp_like(kind)))
        };
        match out.iter_mut().find(|w| same(w)) {
            Some(w) if w.0 != kind => {
                note!("weft serve: TCP port {port} given as --tcp and --http: serving it once, answering both line echo and HTTP");
                w.0 = Kind::Tcp;
            }
            Some(_) => {}
            None => out.push((kind, port)),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_ports_are_served_once() {
        let got = distinct(vec![(Kind::Tcp, 80), (Kind::Udp, 80), (Kind::Tcp, 80)]);
        assert_eq!(got, vec![(Kind::Tcp, 80), (Kind::Udp, 80)]);
        let got = distinct(vec![(Kind::Http, 80), (Kind::Tcp, 80), (Kind::Http, 81)]);
        assert_eq!(got, vec![(Kind::Tcp, 80), (Kind::Http, 81)]);
        assert_eq!(distinct(vec![(Kind::Tcp, 0), (Kind::Http, 0)]).len(), 2);
    }
}
