//! Ingress proxy benchmark: weft's `Proxy` (the code the agent runs on a node's :80/:443)
//! against Debian's nginx, configured here for the same routes and the same backends, both
//! loaded by Debian's `wrk` in the same run; then the time for one change to take effect
//! with 5000 Ingresses (weft: compile + `Proxy::update`; nginx: rewrite + `nginx -s reload`)
//! while clients keep sending requests, counting the requests that fail.
//!
//! Run as root: `cargo bench -p weft-ingress --bench ingress` (or `scripts/bench-ingress.sh`,
//! which installs nginx and wrk first). Everything runs inside one network namespace made
//! here (`weft-bench-<pid>-ingress`) and deleted on exit, on a panic and on Ctrl-C; only its
//! loopback is used.
//!
//! Processes: the bench binary re-executes itself to become each backend
//! (`WEFT_INGRESS_BENCH_ROLE=backend`) and weft's proxy (`...=weft`: a fixed number of the
//! proxy's workers, `Proxy::start_workers`, each listening on a plain and a TLS port),
//! so the proxy's RSS and CPU time are its own, as nginx's are.
//!
//! Knobs (environment): WEFT_INGRESS_BENCH_ROUNDS (5), _SECONDS (10, per wrk run), _CONNS
//! (64, wrk -c), _THREADS (1: weft's workers = nginx's worker_processes), _PROXY_CPUS
//! ("1"), _CLIENT_CPUS ("0": wrk, the backends and this driver), _INGRESSES (5000), _RELOADS
//! (5), _ACCESS_LOG (1: weft logs at info as the agent does, nginx writes its access log),
//! _NGINX_LOG_BUFFER (1: nginx's access log with `buffer=64k flush=100ms`, as weft buffers
//! its own; 0: a write per request),
//! _MODES (http-ka,http-close,https-ka,https-close,https-close-paced; the last is
//! https-close with a think time per connection, _THINK_MS (25), so both proxies get the
//! same offered load and wrk's core is not the limit), _KEEP=1 keeps the work directory,
//! _FULL (1: in the new-connection modes at full load, after each wrk run, the same proxy
//! loaded by our own client timing connect + handshake + request + response, `fullcost`,
//! over TLS once resuming sessions as wrk does and once with full handshakes; 0: wrk only),
//! _NO_HALT (1: a SCHED_IDLE spinner on each CPU the bench uses, so no CPU halts and waits
//! for the hypervisor to wake it, the same for both proxies, `nohalt`; 0: none),
//! _WIRE (1: after the rounds, each new-connection mode timed from a tcpdump capture of
//! the loopback, the proxy's latency without the client's loop, `wire`; 0: skipped),
//! _HTTP1 (native: weft's own HTTP/1.1 path, the default; hyper: hyper's server and client,
//! to compare the two), _FLAVOUR=multi serves weft as the agent did before its workers: `Proxy::serve` on one
//! multi-thread runtime with _THREADS worker threads.
//!
//! Modules: `settings` (the knobs), `cluster` (the Kubernetes objects weft serves),
//! `nginx` (nginx's configuration for the same routes, its process), `weft_child` (weft's
//! proxy as a re-executed child, both sides), `backend` (the backends' role), `cleanup`
//! (stopping everything, on exit, a panic or a signal), `procs` (/proc: process trees, CPU
//! time, memory), `netns` (the namespace and spawning inside it), `http_client` (a small
//! HTTP/1.1 client for checks and probes), `wrk` (running and parsing wrk), `fullcost`
//! (a request's full cost on a new connection, by our own client), `throughput`
//! (the wrk rounds), `reconfig` (a change with many Ingresses under load), `report` (the
//! summary tables), `driver` (the whole run).

mod backend;
mod cleanup;
mod cluster;
mod driver;
mod fullcost;
mod http_client;
mod netns;
mod nginx;
mod nohalt;
mod procs;
mod reconfig;
mod report;
mod settings;
mod throughput;
mod weft_child;
mod wire;
mod wrk;

const ROLE: &str = "WEFT_INGRESS_BENCH_ROLE";
/// Where the proxies listen (inside the namespace): one address, a port pair each, so one
/// host name (and SNI) reaches either.
const PROXY_IP: &str = "127.0.0.1";
const WEFT_HTTP: u16 = 10080;
const WEFT_HTTPS: u16 = 10443;
const NGINX_HTTP: u16 = 20080;
const NGINX_HTTPS: u16 = 20443;
/// The 5000-Ingress instances of the reconfiguration test.
const WEFT_MANY: u16 = 11080;
const NGINX_MANY: u16 = 21080;
/// Two backend processes; each serves Service a on 8081 and Service b on 8082.
const BACKENDS: [&str; 2] = ["127.0.1.1", "127.0.1.2"];
const PORT_A: u16 = 8081;
const PORT_B: u16 = 8082;
/// The throughput runs' target: shop.bench's `/api` prefix, Service b.
const TARGET_PATH: &str = "/api/items";

/// Which proxy goes first in round (or change) `i`: weft in odd ones, nginx in even ones.
/// `true` is weft.
fn alternate(i: usize) -> [bool; 2] {
    if i.is_multiple_of(2) {
        [false, true]
    } else {
        [true, false]
    }
}

fn main() {
    // `cargo bench` passes --bench; nothing else is taken.
    match std::env::var(ROLE).as_deref() {
        Ok("backend") => backend::serve(),
        Ok("weft") => weft_child::serve(),
        _ => driver::run(),
    }
}
