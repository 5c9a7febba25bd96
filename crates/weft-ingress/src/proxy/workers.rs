//! The proxy on a node: one worker thread per core, each running an event loop of its own
//! (tokio's current-thread runtime) with its own listening sockets (SO_REUSEPORT: the
//! kernel spreads new connections over them) and its own endpoint pool, as nginx runs one
//! worker process per core. A request is then handled start to end on one thread: no
//! work-stealing queue, no wake-up sent to another thread, no lock another core holds.
//! Against one multi-thread runtime with as many threads, one worker measured about 7 %
//! less CPU per kept-alive request and no difference with a connection per request
//! (BENCHMARKS.md, Ingress).
//!
//! What the workers share is only what must be one: the routing table (swapped whole), the
//! certificates, the endpoints' health, and the access log.

use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::thread::JoinHandle;

use tokio::net::{TcpListener, TcpSocket};
use tokio::runtime::Runtime;
use tokio::sync::watch;

use super::Proxy;
use crate::error::{Error, Result};

/// Pending connections a listening socket queues (each worker's), as tokio's own `bind`.
const BACKLOG: u32 = 1024;

/// Running workers: stop them with the `stop` channel given to `Proxy::start_workers`,
/// then `join`.
pub struct Workers {
    threads: Vec<JoinHandle<()>>,
    http: SocketAddr,
    https: Option<SocketAddr>,
}

/// One worker before its thread starts: its runtime, with its listeners registered there.
/// (Fields drop in order: the sockets before their runtime.)
struct Ready {
    http: TcpListener,
    https: Option<TcpListener>,
    rt: Background,
}

/// A runtime that, dropped, shuts down without waiting: dropping a plain `Runtime` blocks,
/// which panics when the caller of `start_workers` is async (the agent) and a later
/// worker's port turns out to be taken.
struct Background(Option<Runtime>);

impl Drop for Background {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

/// A listening socket that other workers' sockets may share (SO_REUSEPORT), registered
/// with the runtime entered.
fn listen(addr: SocketAddr) -> Result<TcpListener> {
    let fail = |source| Error::Listen { addr, source };
    let sock = match addr {
        SocketAddr::V4(_) => TcpSocket::new_v4(),
        SocketAddr::V6(_) => TcpSocket::new_v6(),
    }
    .map_err(fail)?;
    sock.set_reuseaddr(true).map_err(fail)?;
    sock.set_reuseport(true).map_err(fail)?;
    sock.bind(addr).map_err(fail)?;
    sock.listen(BACKLOG).map_err(fail)
}

impl Proxy {
    /// Starts `n` workers serving plain HTTP on `http` and TLS on `https`, every one of
    /// them listening on both. A port of 0 is chosen once, by the first worker, and shared
    /// by the others. Every socket is bound before any thread starts, so a taken port is
    /// an error here. When `stop` turns true each worker drains as `serve` does, and its
    /// thread ends.
    pub fn start_workers(
        &self,
        n: NonZeroUsize,
        mut http: SocketAddr,
        mut https: Option<SocketAddr>,
        stop: watch::Receiver<bool>,
    ) -> Result<Workers> {
        let mut ready: Vec<Ready> = Vec::with_capacity(n.get());
        for index in 0..n.get() {
            let r = Ready::new(index, http, https)?;
            if index == 0 {
                // The ports chosen for 0 are the ones the other workers share.
                http = local(&r.http, http)?;
                if let (Some(s), Some(addr)) = (&r.https, https) {
                    https = Some(local(s, addr)?);
                }
            }
            ready.push(r);
        }
        let mut threads = Vec::with_capacity(ready.len());
        for (index, r) in ready.into_iter().enumerate() {
            let proxy = self.clone();
            let stop = stop.clone();
            let t = std::thread::Builder::new()
                .name(format!("ingress-{index}"))
                .spawn(move || run(proxy, r, stop))
                .map_err(|source| Error::Worker { index, source })?;
            threads.push(t);
        }
        Ok(Workers {
            threads,
            http,
            https,
        })
    }
}

impl Ready {
    fn new(index: usize, http: SocketAddr, https: Option<SocketAddr>) -> Result<Ready> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|source| Error::Worker { index, source })?;
        let rt = Background(Some(rt));
        let _in = rt.0.as_ref().map(Runtime::enter);
        let h = listen(http)?;
        let s = https.map(listen).transpose()?;
        drop(_in);
        Ok(Ready {
            http: h,
            https: s,
            rt,
        })
    }
}

fn local(l: &TcpListener, addr: SocketAddr) -> Result<SocketAddr> {
    l.local_addr()
        .map_err(|source| Error::Listen { addr, source })
}

/// A worker's thread: both listeners on its own runtime, one pool for both, until both
/// have drained.
fn run(proxy: Proxy, r: Ready, stop: watch::Receiver<bool>) {
    let Ready { http, https, rt } = r;
    let Some(runtime) = &rt.0 else { return };
    runtime.block_on(async move {
        let pools = proxy.shared.new_pools();
        let tls = https.map(|l| {
            let p = proxy.clone();
            tokio::spawn(p.serve_with(l, true, stop.clone(), pools.clone()))
        });
        proxy.serve_with(http, false, stop, pools).await;
        if let Some(t) = tls {
            let _ = t.await;
        }
    });
}

impl Workers {
    /// Where plain HTTP is taken (the port chosen, when 0 was asked for).
    pub fn http_addr(&self) -> SocketAddr {
        self.http
    }

    /// Where TLS is taken, when it is.
    pub fn https_addr(&self) -> Option<SocketAddr> {
        self.https
    }

    pub fn count(&self) -> usize {
        self.threads.len()
    }

    /// Waits for every worker to have drained (after `stop`); blocks the calling thread.
    pub fn join(self) {
        for t in self.threads {
            let _ = t.join();
        }
    }
}

/// One worker per CPU this process may run on, as nginx's `worker_processes auto`.
pub fn default_count() -> NonZeroUsize {
    std::thread::available_parallelism().unwrap_or(NonZeroUsize::MIN)
}
