//! Kept-alive HTTP/1.1 connections to endpoints, reused across requests.
//!
//! hyper-util's legacy client did this before, at a cost the profile showed on every
//! request: a checkout future raced against a lazy connect, a pool key built from the
//! URI, and a task spawned per response just to put the connection back once its body was
//! read. Here a connection goes back to its endpoint's idle list the moment the response
//! body ends (the body carries it), and a checkout is one lock and a `Vec::pop`.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body as _, Frame, Incoming, SizeHint};
use hyper::client::conn::http1::{self, SendRequest};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;

use super::idle::{IdleConns, Reusable};
use super::{Body, BoxError};

pub struct Pool {
    idle: Arc<IdleConns<SendRequest<Body>>>,
    connect_timeout: Duration,
}

impl Reusable for SendRequest<Body> {
    fn still_open(&self) -> bool {
        !self.is_closed()
    }
}

/// Why a request got no response.
pub enum Failure {
    /// No connection: nothing was sent.
    Connect(BoxError),
    /// The request was (possibly) sent and the exchange broke.
    Exchange(hyper::Error),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Connect(e) => write!(f, "connect: {e}"),
            Failure::Exchange(e) => write!(f, "{e}"),
        }
    }
}

/// A connection lent to one exchange; it returns to the pool when the response body ends.
pub struct Lease {
    pool: Arc<Pool>,
    ep: SocketAddr,
    tx: SendRequest<Body>,
}

impl Pool {
    pub fn new(max_idle: usize, idle_for: Duration, connect_timeout: Duration) -> Pool {
        Pool {
            idle: Arc::new(IdleConns::new(max_idle, idle_for)),
            connect_timeout,
        }
    }

    /// Sends `req` (origin-form URI, `Host` set) to `ep` on an idle connection, or a new
    /// one. A request an idle connection turned away unsent (the endpoint had closed it)
    /// goes on the next one, as it was never on the wire.
    pub async fn send(
        self: &Arc<Self>,
        ep: SocketAddr,
        mut req: Request<Body>,
    ) -> Result<(Response<Incoming>, Lease), Failure> {
        while let Some(mut tx) = self.checkout(ep) {
            if !tx.is_ready() && tx.ready().await.is_err() {
                continue;
            }
            match tx.try_send_request(req).await {
                Ok(resp) => return Ok((resp, self.lease(ep, tx))),
                Err(mut e) => match e.take_message() {
                    Some(back) => req = back,
                    None => return Err(Failure::Exchange(e.into_error())),
                },
            }
        }
        let mut tx = self.connect(ep).await.map_err(Failure::Connect)?;
        match tx.send_request(req).await {
            Ok(resp) => Ok((resp, self.lease(ep, tx))),
            Err(e) => Err(Failure::Exchange(e)),
        }
    }

    fn lease(self: &Arc<Self>, ep: SocketAddr, tx: SendRequest<Body>) -> Lease {
        Lease {
            pool: self.clone(),
            ep,
            tx,
        }
    }

    fn checkout(&self, ep: SocketAddr) -> Option<SendRequest<Body>> {
        self.idle.checkout(ep)
    }

    fn put(&self, ep: SocketAddr, tx: SendRequest<Body>) {
        if !tx.is_closed() {
            self.idle.put(ep, tx);
        }
    }

    async fn connect(self: &Arc<Self>, ep: SocketAddr) -> Result<SendRequest<Body>, BoxError> {
        self.idle.start_sweeper();
        let tcp = tokio::time::timeout(self.connect_timeout, tokio::net::TcpStream::connect(ep))
            .await
            .map_err(|_| format!("timed out after {:?}", self.connect_timeout))??;
        tcp.set_nodelay(true)?;
        let (tx, conn) = http1::handshake(TokioIo::new(tcp)).await?;
        tokio::spawn(async move {
            // Upgrades enabled: a 101 hands the socket to the WebSocket splice.
            if let Err(e) = conn.with_upgrades().await {
                tracing::debug!("ingress: connection to {ep}: {e}");
            }
        });
        Ok(tx)
    }

    /// Forgets the connections of endpoints that are no longer anyone's (a table swap
    /// calls this).
    pub fn retain(&self, live: &HashSet<SocketAddr>) {
        self.idle.retain(live)
    }
}

impl Lease {
    /// The response body, which gives the connection back when it ends. A body dropped
    /// before its end takes the connection with it (hyper closes it: the rest of the
    /// response would be read as the next one).
    pub fn attach(self, resp: Response<Incoming>) -> Response<PooledBody> {
        resp.map(|inner| {
            let mut b = PooledBody {
                inner,
                lease: Some(self),
            };
            if b.inner.is_end_stream() {
                b.release();
            }
            b
        })
    }
}

pub struct PooledBody {
    inner: Incoming,
    lease: Option<Lease>,
}

impl PooledBody {
    fn release(&mut self) {
        if let Some(l) = self.lease.take() {
            l.pool.put(l.ep, l.tx);
        }
    }
}

impl hyper::body::Body for PooledBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        let r = std::task::ready!(Pin::new(&mut this.inner).poll_frame(cx));
        match &r {
            None => this.release(),
            Some(Ok(_)) if this.inner.is_end_stream() => this.release(),
            Some(Ok(_)) => {}
            Some(Err(_)) => this.lease = None,
        }
        Poll::Ready(r)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
