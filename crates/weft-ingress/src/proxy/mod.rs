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
mod h1;
mod headers;
mod idle;
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
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};

use crate::cert::{Certificate, SniResolver};
use crate::compile::Compiled;
use crate::error::Result;
use crate::table::RouteTable;
use h1::Upstreams;
use pool::Pool;
use upstream::Balancer;

pub use forward::Conn;
pub use upstream::{EJECT_FOR, RESPONSE_FAILURES};
pub use workers::{default_count as default_workers, Workers};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub type Body = UnsyncBoxBody<Bytes, BoxError>;

/// Which code serves HTTP/1.1 clients (HTTP/2 is hyper's either way).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Http1 {
    /// weft's own path (`h1`): heads parsed with httparse, the endpoint exchange on the
    /// client connection's task, buffers kept per connection.
    #[default]
    Native,
    /// hyper's server and client, as before `h1`.
    Hyper,
}

impl std::str::FromStr for Http1 {
    type Err = crate::Error;
    fn from_str(s: &str) -> Result<Http1> {
        match s {
            "native" => Ok(Http1::Native),
            "hyper" => Ok(Http1::Hyper),
            other => Err(crate::Error::invalid(
                "HTTP/1.1 engine",
                format!("{other:?}: expected \"native\" or \"hyper\""),
            )),
        }
    }
}

/// What a client may cost the proxy.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Larger request bodies get 413.
    pub max_body: u64,
    /// Request line and headers; more gets 431.
    pub max_header_bytes: usize,
    /// A client must send its headers (and a TLS client its handshake) within this.
    pub header_timeout: Duration,
    /// A client sending a request body must send more of it within this, else 408: a
    /// trickled body holds no connection for ever (weft's HTTP/1.1 path).
    pub body_timeout: Duration,
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
            body_timeout: Duration::from_secs(60),
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
    /// The same for the HTTP/1.1 path's endpoint connections.
    upstreams: Mutex<Vec<Weak<Upstreams>>>,
    limits: Limits,
}

/// One event loop's connections to endpoints, for each path.
#[derive(Clone)]
struct Pools {
    hyper: Arc<Pool>,
    h1: Arc<h1::Ctx>,
}

impl Shared {
    fn table(&self) -> Arc<RouteTable> {
        // Only a whole Arc is ever stored, so a poisoned lock still holds a valid table.
        self.table.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// New endpoint pools for one event loop.
    fn new_pools(self: &Arc<Self>) -> Pools {
        let (max_idle, idle_for) = (256, Duration::from_secs(60));
        let pool = Arc::new(Pool::new(max_idle, idle_for, self.limits.connect_timeout));
        let mut pools = self.pools.lock().unwrap_or_else(|p| p.into_inner());
        pools.retain(|p| p.strong_count() > 0);
        pools.push(Arc::downgrade(&pool));
        drop(pools);
        let up = Arc::new(Upstreams::new(
            max_idle,
            idle_for,
            self.limits.connect_timeout,
        ));
        let mut ups = self.upstreams.lock().unwrap_or_else(|p| p.into_inner());
        ups.retain(|p| p.strong_count() > 0);
        ups.push(Arc::downgrade(&up));
        Pools {
            hyper: pool,
            h1: Arc::new(h1::Ctx {
                shared: self.clone(),
                upstreams: up,
            }),
        }
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
        let ups: Vec<Arc<Upstreams>> = {
            let ups = self.upstreams.lock().unwrap_or_else(|p| p.into_inner());
            ups.iter().filter_map(Weak::upgrade).collect()
        };
        for u in ups {
            u.retain(live);
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
    http1: Http1,
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
                upstreams: Mutex::default(),
                limits,
            }),
            certs,
            tls,
            current: Arc::default(),
            http1: Http1::default(),
        })
    }

    /// The same proxy serving HTTP/1.1 with `engine` (from the next connection on).
    pub fn with_http1(mut self, engine: Http1) -> Proxy {
        self.http1 = engine;
        self
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

    /// The TLS settings (`tls.rs`): certificates by SNI, HTTP/2 or HTTP/1.1 by ALPN, the
    /// server's cipher suite preference.
    pub fn tls_acceptor(&self) -> tokio_rustls::TlsAcceptor {
        self.tls.clone()
    }

    /// Accepts on `listener` until `stop` turns true, then drains: no new connections,
    /// open requests get `limits.drain` to finish.
    pub async fn serve(self, listener: TcpListener, tls: bool, stop: watch::Receiver<bool>) {
        let pools = self.shared.new_pools();
        self.serve_with(listener, tls, stop, pools).await;
    }

    /// `serve`, sending to endpoints through `pool` (one per event loop).
    async fn serve_with(
        self,
        listener: TcpListener,
        tls: bool,
        mut stop: watch::Receiver<bool>,
        pools: Pools,
    ) {
        let graceful = GracefulShutdown::new();
        // Each HTTP/1.1 connection holds a sender while it serves requests; the drain
        // waits until none is left.
        let (open_tx, mut open_rx) = mpsc::channel::<()>(1);
        let conn_stop = stop.clone();
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
            // weft's HTTP/1.1 path sets it on a plain connection only once it is kept
            // alive (`h1::Socket`).
            if tls || self.http1 == Http1::Hyper {
                let _ = stream.set_nodelay(true);
            }
            let conn = Conn { client, scheme };
            let watcher = graceful.watcher();
            let acceptor = acceptor.clone();
            let handshake = self.shared.limits.header_timeout;
            let pools = pools.clone();
            match self.http1 {
                Http1::Hyper => {
                    tokio::spawn(async move {
                        match acceptor {
                            None => hyper_conn(stream, conn, pools, watcher).await,
                            Some(acc) => {
                                let Some(tls) =
                                    handshake_within(handshake, acc, stream, client).await
                                else {
                                    return;
                                };
                                hyper_conn(tls, conn, pools, watcher).await
                            }
                        }
                    });
                }
                Http1::Native => {
                    let (stop, open) = (conn_stop.clone(), open_tx.clone());
                    let Some(acc) = acceptor else {
                        // Spawned as it is: a small future, moved once.
                        tokio::spawn(native_conn(stream, conn, pools, stop, open, watcher));
                        continue;
                    };
                    tokio::spawn(async move {
                        let Some(tls) = handshake_within(handshake, acc, stream, client).await
                        else {
                            return;
                        };
                        if tls.get_ref().1.alpn_protocol() == Some(b"h2") {
                            drop(open);
                            Box::pin(hyper_conn(tls, conn, pools, watcher)).await
                        } else {
                            native_conn(tls, conn, pools, stop, open, watcher).await
                        }
                    });
                    // One TLS accept per turn of the event loop, as nginx does: a
                    // handshake's first flight costs ~0.2 ms of CPU, so draining the
                    // accept queue at once put up to every waiting client's handshake
                    // ahead of the requests already handshaken connections had sent.
                    tokio::task::yield_now().await;
                }
            }
        }
        drop(listener);
        drop(open_tx);
        let drain = self.shared.limits.drain;
        let drained = async {
            tokio::join!(graceful.shutdown(), open_rx.recv());
        };
        if tokio::time::timeout(drain, drained).await.is_err() {
            tracing::warn!("ingress: requests still open after {drain:?}; closing them");
        }
        access_log::flush();
    }
}

/// hyper's server settings for a connection it serves.
fn builder(l: &Limits) -> auto::Builder<TokioExecutor> {
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

/// A TLS handshake that must finish within `limit`.
async fn handshake_within(
    limit: Duration,
    acc: tokio_rustls::TlsAcceptor,
    stream: tokio::net::TcpStream,
    client: std::net::SocketAddr,
) -> Option<tokio_rustls::server::TlsStream<tokio::net::TcpStream>> {
    match tokio::time::timeout(limit, acc.accept(stream)).await {
        Ok(Ok(s)) => Some(s),
        Ok(Err(e)) => {
            tracing::debug!("ingress: TLS handshake from {client}: {e}");
            None
        }
        Err(_) => None,
    }
}

/// A connection served by hyper (HTTP/2; HTTP/1.1 too with `Http1::Hyper`).
async fn hyper_conn<S>(
    io: S,
    conn: Conn,
    pools: Pools,
    watcher: hyper_util::server::graceful::Watcher,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let builder = builder(&pools.h1.shared.limits);
    let (shared, pool) = (pools.h1.shared.clone(), pools.hyper);
    let svc = service_fn(move |req| forward::handle(shared.clone(), pool.clone(), req, conn));
    let c = builder.serve_connection_with_upgrades(TokioIo::new(io), svc);
    if let Err(e) = watcher.watch(c.into_owned()).await {
        tracing::debug!("ingress: connection from {}: {e}", conn.client);
    }
}

/// A connection on weft's HTTP/1.1 path, handed to hyper if it turns out to speak HTTP/2.
async fn native_conn<S>(
    mut io: S,
    conn: Conn,
    pools: Pools,
    mut stop: watch::Receiver<bool>,
    open: mpsc::Sender<()>,
    watcher: hyper_util::server::graceful::Watcher,
) where
    S: h1::Socket + Send + 'static,
{
    match h1::serve(&pools.h1, &mut io, conn, &mut stop, open).await {
        h1::End::Http2(seen) => {
            io.no_delay();
            let io = h1::Rewind::new(seen, io);
            // Boxed: hyper's connection state would otherwise make every connection's
            // future (moved into its task at spawn) several times larger.
            Box::pin(hyper_conn(io, conn, pools, watcher)).await;
        }
        // A TLS client is told the connection ends (close_notify) before the FIN, as
        // RFC 8446 6.1 asks: without it a client cannot tell the end from a truncation,
        // and rustls clients report an error. A plain connection's FIN says it all.
        h1::End::Closed if conn.scheme == "https" => {
            let _ = tokio::time::timeout(CLOSE_NOTIFY_WAIT, io.shutdown()).await;
        }
        h1::End::Closed => {}
    }
}

/// How long a closing TLS connection may wait to send its close_notify (a client that
/// reads nothing can leave no room for it).
const CLOSE_NOTIFY_WAIT: Duration = Duration::from_secs(1);
