//! Kept-alive connections to endpoints for the HTTP/1.1 path: plain sockets, one idle
//! list per endpoint, used by the connection that checks one out and put back when its
//! response has been read to the end. A checkout is one lock and a `Vec::pop`; no task
//! drives an idle connection.

use std::collections::HashSet;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::TcpStream;

use crate::proxy::idle::{IdleConns, Reusable};

pub struct Upstreams {
    idle: Arc<IdleConns<TcpStream>>,
    connect_timeout: Duration,
}

/// Whether an idle socket is still worth sending on: nothing to read and not closed. The
/// kernel is asked only when the event loop has seen the socket readable since (the
/// endpoint closed it, or sent bytes it should not have).
impl Reusable for TcpStream {
    fn still_open(&self) -> bool {
        let mut probe = [0u8; 1];
        matches!(self.try_read(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
    }
}

impl Upstreams {
    pub fn new(max_idle: usize, idle_for: Duration, connect_timeout: Duration) -> Upstreams {
        Upstreams {
            idle: Arc::new(IdleConns::new(max_idle, idle_for)),
            connect_timeout,
        }
    }

    /// The most recently used idle connection to `ep` that is still open, idle times
    /// judged at `now`.
    pub fn checkout(&self, ep: SocketAddr, now: Instant) -> Option<TcpStream> {
        self.idle.checkout_at(ep, now)
    }

    /// Keeps `s` for the next request to `ep`, idle since `now`.
    pub fn put(&self, ep: SocketAddr, s: TcpStream, now: Instant) {
        self.idle.put_at(ep, s, now)
    }

    pub async fn connect(self: &Arc<Self>, ep: SocketAddr) -> io::Result<TcpStream> {
        self.idle.start_sweeper();
        let s = tokio::time::timeout(self.connect_timeout, TcpStream::connect(ep))
            .await
            .map_err(|_| {
                io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("timed out after {:?}", self.connect_timeout),
                )
            })??;
        s.set_nodelay(true)?;
        Ok(s)
    }

    /// Forgets the connections of endpoints that are no longer anyone's (a table swap
    /// calls this).
    pub fn retain(&self, live: &HashSet<SocketAddr>) {
        self.idle.retain(live)
    }
}
