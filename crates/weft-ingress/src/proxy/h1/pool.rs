//! Kept-alive connections to endpoints for the HTTP/1.1 path: plain sockets, one idle
//! list per endpoint, used by the connection that checks one out and put back when its
//! response has been read to the end. A checkout is one lock and a `Vec::pop`; no task
//! drives an idle connection.

use std::collections::{HashMap, HashSet};
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use tokio::net::TcpStream;

/// How often idle connections past their time are closed while nobody checks out.
const SWEEP_EVERY: Duration = Duration::from_secs(10);

pub struct Upstreams {
    idle: Mutex<HashMap<SocketAddr, Vec<(TcpStream, Instant)>>>,
    max_idle: usize,
    idle_for: Duration,
    connect_timeout: Duration,
    sweeping: AtomicBool,
}

/// Whether an idle socket is still worth sending on: nothing to read and not closed. The
/// kernel is asked only when the event loop has seen the socket readable since (the
/// endpoint closed it, or sent bytes it should not have).
fn still_open(s: &TcpStream) -> bool {
    let mut probe = [0u8; 1];
    matches!(s.try_read(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
}

impl Upstreams {
    pub fn new(max_idle: usize, idle_for: Duration, connect_timeout: Duration) -> Upstreams {
        Upstreams {
            idle: Mutex::default(),
            max_idle,
            idle_for,
            connect_timeout,
            sweeping: AtomicBool::new(false),
        }
    }

    /// The most recently used idle connection to `ep` that is still open.
    pub fn checkout(&self, ep: SocketAddr) -> Option<TcpStream> {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        let list = idle.get_mut(&ep)?;
        while let Some((s, since)) = list.pop() {
            if since.elapsed() < self.idle_for && still_open(&s) {
                return Some(s);
            }
        }
        None
    }

    pub fn put(&self, ep: SocketAddr, s: TcpStream) {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        let list = idle.entry(ep).or_default();
        if list.len() < self.max_idle {
            list.push((s, Instant::now()));
        }
    }

    pub async fn connect(self: &Arc<Self>, ep: SocketAddr) -> io::Result<TcpStream> {
        self.start_sweeper();
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
    /// calls this); dropping them closes them.
    pub fn retain(&self, live: &HashSet<SocketAddr>) {
        let gone: Vec<_> = {
            let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
            let dead: Vec<SocketAddr> =
                idle.keys().filter(|a| !live.contains(a)).copied().collect();
            dead.iter().filter_map(|a| idle.remove(a)).collect()
        };
        drop(gone);
    }

    fn sweep(&self) {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        for list in idle.values_mut() {
            list.retain(|(s, since)| since.elapsed() < self.idle_for && still_open(s));
        }
        idle.retain(|_, l| !l.is_empty());
    }

    /// Closes connections idle past `idle_for` (or closed by their endpoint) even when no
    /// request comes to check them out; the task ends with the pool.
    fn start_sweeper(self: &Arc<Self>) {
        if self.sweeping.swap(true, Ordering::Relaxed) {
            return;
        }
        let weak: Weak<Upstreams> = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(SWEEP_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                match weak.upgrade() {
                    Some(pool) => pool.sweep(),
                    None => return,
                }
            }
        });
    }
}
