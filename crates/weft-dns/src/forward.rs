//! Names outside the zone go to the upstream resolvers: over UDP, again over TCP when the
//! reply is truncated, to the next upstream on timeout or failure, SERVFAIL when all fail.
//! The upstream that answered last is asked first.
//! Replies are cached ([`crate::cache`]), and identical questions asked while one is on
//! its way share it: the first asker queries, the others wait for its reply.

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::oneshot;

use crate::cache::{Cache, Entry};
use crate::error::{Error, Result};
use crate::wire::{put_header, put_opt, read_qname, FLAG_RD, FLAG_TC};

/// The `nameserver` addresses of a resolv.conf, port 53, in file order.
pub fn read_resolv_conf(path: &Path) -> Result<Vec<SocketAddr>> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::ResolvConf {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(parse_resolv_conf(&text))
}

pub fn parse_resolv_conf(text: &str) -> Vec<SocketAddr> {
    text.lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            (w.next()? == "nameserver").then_some(())?;
            // A scoped IPv6 address (fe80::1%eth0) cannot be named without its interface.
            let ip: IpAddr = w.next()?.parse().ok()?;
            Some(SocketAddr::new(ip, 53))
        })
        .collect()
}

/// Drop upstreams that are this server: a loop, not a resolver. An upstream is us when it
/// is a listen address, or loopback on a port we listen on with an unspecified address.
pub fn without_self(upstreams: Vec<SocketAddr>, listen: &[SocketAddr]) -> Vec<SocketAddr> {
    upstreams
        .into_iter()
        .filter(|u| {
            !listen.iter().any(|l| {
                *l == *u
                    || (l.ip().is_unspecified() && l.port() == u.port() && u.ip().is_loopback())
            })
        })
        .collect()
}

type Waiters = Vec<oneshot::Sender<Option<Arc<Entry>>>>;

pub struct Forwarder {
    upstreams: Vec<SocketAddr>,
    timeout: Duration,
    max_ttl: Duration,
    cache: Cache,
    inflight: Mutex<HashMap<Vec<u8>, Waiters>>,
    ids: (RandomState, AtomicU64),
    upstream_queries: AtomicU64,
    preferred: AtomicUsize,
}

/// Removes the in-flight slot even when the asking task is dropped mid-query, so that
/// waiters get `None` (SERVFAIL) instead of waiting for ever.
struct Slot<'a> {
    fwd: &'a Forwarder,
    key: &'a [u8],
    done: bool,
}

impl Slot<'_> {
    fn finish(mut self, result: &Option<Arc<Entry>>) {
        self.done = true;
        let waiters = self.fwd.take_waiters(self.key);
        for w in waiters {
            let _ = w.send(result.clone());
        }
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.fwd.take_waiters(self.key);
        }
    }
}

impl Forwarder {
    pub fn new(
        upstreams: Vec<SocketAddr>,
        timeout: Duration,
        cache_size: usize,
        max_ttl: Duration,
    ) -> Forwarder {
        Forwarder {
            upstreams,
            timeout,
            max_ttl,
            cache: Cache::new(cache_size),
            inflight: Mutex::new(HashMap::new()),
            ids: (RandomState::new(), AtomicU64::new(0)),
            upstream_queries: AtomicU64::new(0),
            preferred: AtomicUsize::new(0),
        }
    }

    pub fn upstreams(&self) -> &[SocketAddr] {
        &self.upstreams
    }

    /// Queries sent upstream so far (each try counts).
    pub fn upstream_queries(&self) -> u64 {
        self.upstream_queries.load(Ordering::Relaxed)
    }

    pub fn cache(&self) -> &Cache {
        &self.cache
    }

    pub fn cached(&self, key: &[u8]) -> Option<Arc<Entry>> {
        self.cache.get(key, Instant::now())
    }

    fn take_waiters(&self, key: &[u8]) -> Waiters {
        let mut m = self.inflight.lock().unwrap_or_else(|e| e.into_inner());
        m.remove(key).unwrap_or_default()
    }

    /// The reply for a question (`key` from [`crate::cache::key`]): cached, shared with an
    /// identical question in flight, or fetched. `None`: every upstream failed.
    pub async fn resolve(&self, key: &[u8]) -> Option<Arc<Entry>> {
        if let Some(e) = self.cached(key) {
            return Some(e);
        }
        let wait = {
            let mut m = self.inflight.lock().unwrap_or_else(|e| e.into_inner());
            match m.get_mut(key) {
                Some(waiters) => {
                    let (tx, rx) = oneshot::channel();
                    waiters.push(tx);
                    Some(rx)
                }
                None => {
                    m.insert(key.to_vec(), Vec::new());
                    None
                }
            }
        };
        if let Some(rx) = wait {
            return rx.await.ok().flatten();
        }
        let slot = Slot {
            fwd: self,
            key,
            done: false,
        };
        let result = self.fetch(key).await.map(Arc::new);
        if let Some(e) = &result {
            self.cache.insert(key.to_vec(), e.clone());
        }
        slot.finish(&result);
        result
    }

    fn next_id(&self) -> u16 {
        let n = self.ids.1.fetch_add(1, Ordering::Relaxed);
        self.ids.0.hash_one(n) as u16
    }

    async fn fetch(&self, key: &[u8]) -> Option<Entry> {
        let qlen = key.len().checked_sub(4)?;
        // Start at the upstream that answered last: one that is down costs a timeout once,
        // not on every question.
        let n = self.upstreams.len();
        let first = self.preferred.load(Ordering::Relaxed) % n.max(1);
        for i in (first..n).chain(0..first) {
            let up = self.upstreams[i];
            let id = self.next_id();
            let query = build_query(id, key);
            self.upstream_queries.fetch_add(1, Ordering::Relaxed);
            let reply = match self.exchange(up, &query, id, key).await {
                Ok(r) => r,
                Err(e) => {
                    tracing::debug!("upstream {up}: {e}");
                    continue;
                }
            };
            // SERVFAIL, NOTIMP, REFUSED: this upstream cannot help; another may.
            let rcode = reply.get(3).map(|f| f & 0xF).unwrap_or(2);
            if !matches!(rcode, 0 | 3) {
                tracing::debug!(
                    "upstream {up}: rcode {rcode} for {}",
                    crate::name::to_dotted(&key[..qlen])
                );
                continue;
            }
            match Entry::from_reply(&reply, self.max_ttl) {
                Some(e) => {
                    self.preferred.store(i, Ordering::Relaxed);
                    return Some(e);
                }
                None => tracing::debug!("upstream {up}: reply does not parse"),
            }
        }
        None
    }

    async fn exchange(&self, up: SocketAddr, query: &[u8], id: u16, key: &[u8]) -> Result<Vec<u8>> {
        let reply = tokio::time::timeout(self.timeout, udp_exchange(up, query, id, key))
            .await
            .map_err(|_| Error::Timeout {
                server: up,
                timeout_ms: self.timeout.as_millis(),
            })??;
        let flags = u16::from_be_bytes([reply[2], reply[3]]);
        if flags & FLAG_TC == 0 {
            return Ok(reply);
        }
        tokio::time::timeout(self.timeout, tcp_exchange(up, query, id, key))
            .await
            .map_err(|_| Error::Timeout {
                server: up,
                timeout_ms: self.timeout.as_millis(),
            })?
    }
}

fn build_query(id: u16, key: &[u8]) -> Vec<u8> {
    let mut q = Vec::with_capacity(12 + key.len() + 11);
    put_header(&mut q, id, FLAG_RD, [1, 0, 0, 1]);
    q.extend(key);
    put_opt(&mut q, 0, false);
    q
}

/// Whether `reply` answers query `id` for `key` (name compared without case).
fn matches(reply: &[u8], id: u16, key: &[u8]) -> bool {
    if reply.len() < 12 || u16::from_be_bytes([reply[0], reply[1]]) != id || reply[2] & 0x80 == 0 {
        return false;
    }
    if u16::from_be_bytes([reply[4], reply[5]]) != 1 {
        return false;
    }
    let mut lower = [0u8; 255];
    let Some(n) = read_qname(reply, 12, &mut lower) else {
        return false;
    };
    reply.get(12 + n..12 + n + 4) == key.get(n..) && lower.get(..n) == key.get(..n)
}

async fn udp_exchange(up: SocketAddr, query: &[u8], id: u16, key: &[u8]) -> Result<Vec<u8>> {
    let io = |what| {
        move |source| Error::Io {
            what,
            server: up,
            source,
        }
    };
    let local: IpAddr = match up {
        SocketAddr::V4(_) => Ipv4Addr::UNSPECIFIED.into(),
        SocketAddr::V6(_) => Ipv6Addr::UNSPECIFIED.into(),
    };
    // A fresh socket per query: a random source port, and connect() filters strangers.
    let sock = UdpSocket::bind((local, 0))
        .await
        .map_err(io("bind for upstream"))?;
    sock.connect(up).await.map_err(io("connect upstream"))?;
    sock.send(query).await.map_err(io("send to upstream"))?;
    let mut buf = vec![0u8; 65535];
    loop {
        let n = sock
            .recv(&mut buf)
            .await
            .map_err(io("receive from upstream"))?;
        if matches(&buf[..n], id, key) {
            buf.truncate(n);
            return Ok(buf);
        }
    }
}

async fn tcp_exchange(up: SocketAddr, query: &[u8], id: u16, key: &[u8]) -> Result<Vec<u8>> {
    let io = |what| {
        move |source| Error::Io {
            what,
            server: up,
            source,
        }
    };
    let mut s = TcpStream::connect(up)
        .await
        .map_err(io("connect upstream over TCP"))?;
    let mut framed = Vec::with_capacity(query.len() + 2);
    framed.extend((query.len() as u16).to_be_bytes());
    framed.extend(query);
    s.write_all(&framed)
        .await
        .map_err(io("send to upstream over TCP"))?;
    let len = s
        .read_u16()
        .await
        .map_err(io("read from upstream over TCP"))?;
    let mut buf = vec![0u8; len as usize];
    s.read_exact(&mut buf)
        .await
        .map_err(io("read from upstream over TCP"))?;
    if !matches(&buf, id, key) {
        return Err(Error::BadReply {
            server: up,
            why: "reply does not match the query".into(),
        });
    }
    Ok(buf)
}
