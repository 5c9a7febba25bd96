//! The serving loops: per listen address one UDP socket, served by a thread of its own
//! (`udp.rs`: batches of `recvmmsg`/`sendmmsg`), and one TCP listener on tokio.
//! TCP connections carry any number of length-framed queries, answered in order, and are
//! closed after `tcp_idle_timeout` without a complete query; at most
//! `max_tcp_connections` are open, further ones wait in the listen backlog.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;

use crate::acl::Acl;
use crate::answer::{error_reply, respond, truncate_to, Decision};
use crate::cache;
use crate::chase;
use crate::config::{ServerConfig, Upstreams};
use crate::error::{Error, Result};
use crate::forward::{read_resolv_conf, without_self, Forwarder};
use crate::model::Model;
use crate::udp::UdpThread;
use crate::wire::{parse, Parsed, Query, RCODE_SERVFAIL};

/// Counters since the server started.
#[derive(Debug, Default)]
pub struct Stats {
    pub queries: AtomicU64,
    pub forwarded: AtomicU64,
    pub cache_hits: AtomicU64,
    pub servfail: AtomicU64,
    pub dropped: AtomicU64,
    /// UDP replies answered on the serving thread (zone and cache), by time from the
    /// query's arrival to its reply's send ([`crate::delay`]).
    pub reply_delay: crate::delay::ReplyDelays,
}

pub(crate) struct Shared {
    pub(crate) model: Model,
    pub(crate) acl: Acl,
    pub(crate) fwd: Forwarder,
    pub(crate) idle: Duration,
    pub(crate) conns: Arc<Semaphore>,
    pub(crate) forwards: Arc<Semaphore>,
    pub(crate) stats: Stats,
    /// Called with each forwarded answer before it is sent ([`crate::hook`]).
    pub(crate) hook: Option<Arc<dyn crate::hook::AnswerHook>>,
}

pub struct Server {
    udp: Vec<Arc<std::net::UdpSocket>>,
    tcp: Vec<TcpListener>,
    shared: Arc<Shared>,
}

/// Bind every listen address and serve until an error stops a loop.
pub async fn serve(cfg: ServerConfig, model: Model) -> Result<()> {
    Server::bind(cfg, model).await?.run().await
}

impl Server {
    /// Bind UDP and TCP on each listen address (port 0: one free port for both) and read
    /// the upstreams.
    pub async fn bind(cfg: ServerConfig, model: Model) -> Result<Server> {
        if cfg.listen.is_empty() {
            return Err(Error::Config("no listen address".into()));
        }
        let mut udp = Vec::new();
        let mut tcp = Vec::new();
        let mut bound = Vec::new();
        for &addr in &cfg.listen {
            let u = std::net::UdpSocket::bind(addr).map_err(|source| Error::Bind {
                proto: "udp",
                addr,
                source,
            })?;
            let at = u.local_addr().map_err(|source| Error::Bind {
                proto: "udp",
                addr,
                source,
            })?;
            let t = TcpListener::bind(at).await.map_err(|source| Error::Bind {
                proto: "tcp",
                addr: at,
                source,
            })?;
            udp.push(Arc::new(u));
            tcp.push(t);
            bound.push(at);
        }
        let upstreams = match &cfg.upstreams {
            Upstreams::List(l) => l.clone(),
            Upstreams::ResolvConf(path) => read_resolv_conf(path).unwrap_or_else(|e| {
                tracing::warn!("{e}: names outside the cluster zone will get SERVFAIL");
                Vec::new()
            }),
        };
        let upstreams = without_self(upstreams, &bound);
        if upstreams.is_empty() {
            tracing::warn!(
                "no upstream resolver: names outside the cluster zone will get SERVFAIL"
            );
        }
        let shared = Shared {
            acl: Acl::new(&cfg.allowed, &bound),
            fwd: Forwarder::new(
                upstreams,
                cfg.upstream_timeout,
                cfg.cache_size,
                cfg.max_cache_ttl,
            ),
            model,
            idle: cfg.tcp_idle_timeout,
            conns: Arc::new(Semaphore::new(cfg.max_tcp_connections.max(1))),
            forwards: Arc::new(Semaphore::new(cfg.max_forwards.max(1))),
            stats: Stats::default(),
            hook: None,
        };
        Ok(Server {
            udp,
            tcp,
            shared: Arc::new(shared),
        })
    }

    /// Installs a hook every forwarded answer with addresses goes through before it is
    /// sent ([`crate::hook`]); call before [`Server::run`]. `false` once serving.
    pub fn set_answer_hook(&mut self, hook: Arc<dyn crate::hook::AnswerHook>) -> bool {
        match Arc::get_mut(&mut self.shared) {
            Some(sh) => {
                sh.hook = Some(hook);
                true
            }
            None => false,
        }
    }

    /// The bound addresses (UDP and TCP share each), in `listen` order.
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.udp
            .iter()
            .filter_map(|u| u.local_addr().ok())
            .collect()
    }

    pub fn upstreams(&self) -> &[SocketAddr] {
        self.shared.fwd.upstreams()
    }

    /// A handle on the counters, valid while the server runs.
    pub fn stats(&self) -> StatsHandle {
        StatsHandle(self.shared.clone())
    }

    /// Serve until a loop ends; dropping the future stops the UDP threads too.
    pub async fn run(self) -> Result<()> {
        let rt = tokio::runtime::Handle::current();
        let mut threads = Vec::new();
        for u in self.udp {
            let addr = u.local_addr().map_err(|source| Error::Io {
                what: "read the bound address of",
                server: SocketAddr::from(([0, 0, 0, 0], 0)),
                source,
            })?;
            let t = UdpThread::start(u, self.shared.clone(), rt.clone()).map_err(|source| {
                Error::Io {
                    what: "start the UDP thread for",
                    server: addr,
                    source,
                }
            })?;
            threads.push(t);
        }
        let mut set = JoinSet::new();
        for t in self.tcp {
            set.spawn(tcp_loop(t, self.shared.clone()));
        }
        while let Some(r) = set.join_next().await {
            if let Err(e) = r {
                tracing::error!("DNS serving loop ended: {e}");
            }
        }
        drop(threads);
        Ok(())
    }
}

/// Read access to a running server's counters.
#[derive(Clone)]
pub struct StatsHandle(Arc<Shared>);

impl StatsHandle {
    pub fn get(&self) -> &Stats {
        &self.0.stats
    }

    /// Queries sent to upstreams (each try counts).
    pub fn upstream_queries(&self) -> u64 {
        self.0.fwd.upstream_queries()
    }

    pub fn cached_entries(&self) -> usize {
        self.0.fwd.cache().len()
    }
}

pub(crate) fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

pub(crate) fn too_busy(sh: &Shared, q: &Query, out: &mut Vec<u8>) {
    bump(&sh.stats.servfail);
    error_reply(
        out,
        q.id,
        q.flags,
        RCODE_SERVFAIL as u16,
        Some(q.question),
        q.edns,
    );
}

/// The reply to a question that needs an upstream: for its own name, or (`alias`) for the
/// target of the ExternalName it names. SERVFAIL when no upstream answered.
pub(crate) async fn forwarded(
    sh: &Shared,
    msg: &[u8],
    alias: Option<(Vec<u8>, u32)>,
    udp: bool,
    out: &mut Vec<u8>,
) {
    let mut lower = [0u8; 255];
    let Parsed::Query(q) = parse(msg, &mut lower) else {
        return;
    };
    bump(&sh.stats.forwarded);
    let name = alias
        .as_ref()
        .map_or(&lower[..q.qname_len], |(t, _)| t.as_slice());
    let key = cache::key(name, q.qtype, q.qclass);
    let entry = sh.fwd.resolve(&key).await;
    if entry.is_none() {
        bump(&sh.stats.servfail);
    }
    match (&alias, entry) {
        (Some((target, ttl)), e) => {
            chase::reply(out, &q, *ttl, target, e.as_deref(), Instant::now())
        }
        (None, Some(e)) => e.write_reply(out, &q, Instant::now()),
        (None, None) => error_reply(
            out,
            q.id,
            q.flags,
            RCODE_SERVFAIL as u16,
            Some(q.question),
            q.edns,
        ),
    }
    let limit = if udp {
        q.udp_limit()
    } else {
        u16::MAX as usize
    };
    truncate_to(out, q.question.len(), q.edns, limit);
}

async fn tcp_loop(listener: TcpListener, sh: Arc<Shared>) {
    loop {
        let Ok(permit) = sh.conns.clone().acquire_owned().await else {
            return;
        };
        match listener.accept().await {
            Ok((stream, peer)) => {
                tokio::spawn(tcp_conn(stream, peer, sh.clone(), permit));
            }
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!("tcp accept: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn tcp_conn(
    mut s: TcpStream,
    peer: SocketAddr,
    sh: Arc<Shared>,
    _permit: OwnedSemaphorePermit,
) {
    let _ = s.set_nodelay(true);
    let mut msg = Vec::with_capacity(512);
    let mut out = Vec::with_capacity(4096);
    let mut lower = [0u8; 255];
    loop {
        let read = async {
            let len = s.read_u16().await?;
            msg.resize(len as usize, 0);
            s.read_exact(&mut msg).await?;
            std::io::Result::Ok(())
        };
        match tokio::time::timeout(sh.idle, read).await {
            Ok(Ok(())) => {}
            _ => return,
        }
        bump(&sh.stats.queries);
        match respond(
            &sh.model,
            &sh.acl,
            peer.ip(),
            &msg,
            false,
            &mut out,
            &mut lower,
        ) {
            Decision::Reply if out.len() > u16::MAX as usize => {
                truncate_to(&mut out, question_len(&msg), None, u16::MAX as usize)
            }
            Decision::Reply => {}
            Decision::Drop => {
                bump(&sh.stats.dropped);
                return;
            }
            Decision::Forward(_) => {
                forwarded(&sh, &msg, None, false, &mut out).await;
                crate::hook::before_send(&sh.hook, peer.ip(), &out).await
            }
            Decision::Chase(_, target, ttl) => {
                forwarded(&sh, &msg, Some((target, ttl)), false, &mut out).await;
                crate::hook::before_send(&sh.hook, peer.ip(), &out).await
            }
        }
        if out.is_empty() {
            return;
        }
        let mut frame = Vec::with_capacity(out.len() + 2);
        frame.extend((out.len() as u16).to_be_bytes());
        frame.extend(&out);
        // A client that stops reading must not keep its connection slot for ever.
        match tokio::time::timeout(sh.idle, s.write_all(&frame)).await {
            Ok(Ok(())) => {}
            _ => return,
        }
    }
}

/// The question section's length of a request that parsed (for cutting a reply too big
/// for TCP's 64 KiB frame).
fn question_len(msg: &[u8]) -> usize {
    let mut lower = [0u8; 255];
    match parse(msg, &mut lower) {
        Parsed::Query(q) => q.question.len(),
        Parsed::Error { question, .. } => question.map_or(0, <[u8]>::len),
        Parsed::Drop => 0,
    }
}
