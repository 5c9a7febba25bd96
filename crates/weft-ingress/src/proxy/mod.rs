//! The node's L7 proxy: HTTP/1.1 and HTTP/2 on a plain and a TLS listener, serving the
//! current routing table. A new table is swapped in whole between requests, so a
//! reconfiguration never touches a request in flight or an open WebSocket; a shutdown
//! stops accepting and lets open requests finish.
//!
//! On a node the proxy runs as `workers`: one thread per core, each with its own event loop,
//! listening sockets and endpoint pool, as nginx runs worker processes. `serve` is one such
//! accept loop on whatever runtime calls it.

mod access_log;
mod forward;
mod headers;
mod pool;
mod tls;
mod upstream;
mod workers;

use std::collections::HashSet;
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::cert::{Certificate, SniResolver};
use crate::compile::Compiled;
use crate::error::Result;
use crate::table::RouteTable;
use pool::Pool;
use upstream::Balancer;

pub use forward::Conn;
pub use workers::{default_count as default_workers, Workers};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub type Body = UnsyncBoxBody<Bytes, BoxError>;

/// What a client may cost the proxy.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Larger request bodies get 413.
    pub max_body: u64,
    /// Request line and headers; more gets 431.
    pub max_header_bytes: usize,
    /// A client must send its headers (and a TLS client its handshake) within this.
    pub header_timeout: Duration,
    pub connect_timeout: Duration,
    /// An endpoint must start its answer within this, else 504.
    pub upstream_timeout: Duration,
    /// How long a shutdown waits for open requests.
    pub drain: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body: 8 << 20,
            max_header_bytes: 32 << 10,
            header_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(2),
            upstream_timeout: Duration::from_secs(60),
            drain: Duration::from_secs(10),
        }
    }
}

pub struct Shared {
    table: RwLock<Arc<RouteTable>>,
    balancer: Balancer,
    /// Every accept loop's endpoint pool, so a table swap can close the connections of
    /// endpoints that are gone. A pool belongs to one event loop: a connection is used on
    /// the thread whose runtime drives it, never woken across threads.
    pools: Mutex<Vec<Weak<Pool>>>,
    limits: Limits,
}

impl Shared {
    fn table(&self) -> Arc<RouteTable> {
        // Only a whole Arc is ever stored, so a poisoned lock still holds a valid table.
        self.table.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// A new endpoint pool for one event loop.
    fn new_pool(&self) -> Arc<Pool> {
        let pool = Arc::new(Pool::new(
            256,
            Duration::from_secs(60),
            self.limits.connect_timeout,
        ));
        let mut pools = self.pools.lock().unwrap_or_else(|p| p.into_inner());
        pools.retain(|p| p.strong_count() > 0);
        pools.push(Arc::downgrade(&pool));
        pool
    }

    fn retain_endpoints(&self, live: &HashSet<std::net::SocketAddr>) {
        self.balancer.retain(live);
        let pools: Vec<Arc<Pool>> = {
            let pools = self.pools.lock().unwrap_or_else(|p| p.into_inner());
            pools.iter().filter_map(Weak::upgrade).collect()
        };
        for p in pools {
            p.retain(live);
        }
    }
}

/// The proxy; cheap to clone into listeners.
#[derive(Clone)]
pub struct Proxy {
    shared: Arc<Shared>,
    certs: Arc<SniResolver>,
    tls: tokio_rustls::TlsAcceptor,
    current: Arc<RwLock<Compiled>>,
}

impl Proxy {
    /// A proxy with no routes (every request 404) and a self-signed default certificate
    /// for `default_names`.
    pub fn new(limits: Limits, default_names: &[&str]) -> Result<Proxy> {
        let certs = Arc::new(SniResolver::new(Certificate::self_signed(default_names)?));
        let tls = tokio_rustls::TlsAcceptor::from(Arc::new(tls::server_config(certs.clone())?));
        Ok(Proxy {
            shared: Arc::new(Shared {
                table: RwLock::default(),
                balancer: Balancer::default(),
                pools: Mutex::default(),
                limits,
            }),
            certs,
            tls,
            current: Arc::default(),
        })
    }

    /// Serves `next` from the next request on; returns false when nothing changed.
    pub fn update(&self, next: Compiled) -> bool {
        let mut cur = self.current.write().unwrap_or_else(|p| p.into_inner());
        if *cur == next {
            return false;
        }
        if cur.table != next.table {
            let live: HashSet<_> = next
                .table
                .backends()
                .iter()
                .flat_map(|b| b.endpoints.iter().copied())
                .collect();
            self.shared.retain_endpoints(&live);
            *self.shared.table.write().unwrap_or_else(|p| p.into_inner()) =
                Arc::new(next.table.clone());
        }
        if cur.certs != next.certs {
            self.certs.swap(Arc::new(next.certs.clone()));
        }
        *cur = next;
        true
    }

    pub fn table(&self) -> Arc<RouteTable> {
        self.shared.table()
    }

    fn builder(&self) -> auto::Builder<TokioExecutor> {
        let l = &self.shared.limits;
        let mut b = auto::Builder::new(TokioExecutor::new());
        b.http1()
            .timer(TokioTimer::new())
            .header_read_timeout(l.header_timeout)
            .max_buf_size(l.max_header_bytes.max(8192));
        b.http2()
            .timer(TokioTimer::new())
            .max_header_list_size(u32::try_from(l.max_header_bytes).unwrap_or(u32::MAX))
            .max_concurrent_streams(256);
        b
    }

    /// The TLS settings (`tls.rs`): certificates by SNI, HTTP/2 or HTTP/1.1 by ALPN, the
    /// server's cipher suite preference.
    pub fn tls_acceptor(&self) -> tokio_rustls::TlsAcceptor {
        self.tls.clone()
    }

    /// Accepts on `listener` until `stop` turns true, then drains: no new connections,
    /// open requests get `limits.drain` to finish.
    pub async fn serve(self, listener: TcpListener, tls: bool, stop: watch::Receiver<bool>) {
        let pool = self.shared.new_pool();
        self.serve_with(listener, tls, stop, pool).await;
    }

    /// `serve`, sending to endpoints through `pool` (one per event loop).
    async fn serve_with(
        self,
        listener: TcpListener,
        tls: bool,
        mut stop: watch::Receiver<bool>,
        pool: Arc<Pool>,
    ) {
        let graceful = GracefulShutdown::new();
        let acceptor = tls.then(|| self.tls_acceptor());
        let scheme = if tls { "https" } else { "http" };
        let stopped = async move {
            // Err: the sender is gone, which also means stop.
            let _ = stop.wait_for(|s| *s).await.map(|_| ());
        };
        tokio::pin!(stopped);
        loop {
            let (stream, client) = tokio::select! {
                r = listener.accept() => match r {
                    Ok(pair) => pair,
                    Err(e) => {
                        // Out of descriptors or similar: wait rather than spin.
                        tracing::warn!("ingress: accept: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                _ = &mut stopped => break,
            };
            let _ = stream.set_nodelay(true);
            let conn = Conn { client, scheme };
            let shared = self.shared.clone();
            let pool = pool.clone();
            let builder = self.builder();
            let watcher = graceful.watcher();
            let acceptor = acceptor.clone();
            let handshake = self.shared.limits.header_timeout;
            tokio::spawn(async move {
                let svc =
                    service_fn(move |req| forward::handle(shared.clone(), pool.clone(), req, conn));
                let result = match acceptor {
                    None => {
                        let c = builder.serve_connection_with_upgrades(TokioIo::new(stream), svc);
                        watcher.watch(c.into_owned()).await
                    }
                    Some(acc) => {
                        let tls = match tokio::time::timeout(handshake, acc.accept(stream)).await {
                            Ok(Ok(s)) => s,
                            Ok(Err(e)) => {
                                tracing::debug!("ingress: TLS handshake from {client}: {e}");
                                return;
                            }
                            Err(_) => return,
                        };
                        let c = builder.serve_connection_with_upgrades(TokioIo::new(tls), svc);
                        watcher.watch(c.into_owned()).await
                    }
                };
                if let Err(e) = result {
                    tracing::debug!("ingress: connection from {client}: {e}");
                }
            });
        }
        drop(listener);
        let drain = self.shared.limits.drain;
        if tokio::time::timeout(drain, graceful.shutdown())
            .await
            .is_err()
        {
            tracing::warn!("ingress: requests still open after {drain:?}; closing them");
        }
        access_log::flush();
    }
}
