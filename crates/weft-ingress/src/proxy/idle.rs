//! Idle kept-alive connections to endpoints, one list per endpoint, shared by both
//! HTTP/1.1 paths (weft's own sockets and hyper's senders): a checkout is one lock and a
//! `Vec::pop`, and no task drives an idle connection.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

/// How often idle connections past their time are closed while nobody checks out.
const SWEEP_EVERY: Duration = Duration::from_secs(10);

/// A connection that can tell whether it is still worth sending on.
pub trait Reusable: Send + 'static {
    fn still_open(&self) -> bool;
}

pub struct IdleConns<C> {
    lists: Mutex<HashMap<SocketAddr, Vec<(C, Instant)>>>,
    max_idle: usize,
    idle_for: Duration,
    sweeping: AtomicBool,
}

impl<C: Reusable> IdleConns<C> {
    pub fn new(max_idle: usize, idle_for: Duration) -> IdleConns<C> {
        IdleConns {
            lists: Mutex::default(),
            max_idle,
            idle_for,
            sweeping: AtomicBool::new(false),
        }
    }

    /// The most recently used idle connection to `ep` that is still open (the freshest is
    /// the least likely to have been closed by the endpoint).
    pub fn checkout(&self, ep: SocketAddr) -> Option<C> {
        self.checkout_at(ep, Instant::now())
    }

    /// `checkout`, judging idle times at `now` (a time the caller has already read: the
    /// idle limit is a minute, so a request's start is near enough).
    pub fn checkout_at(&self, ep: SocketAddr, now: Instant) -> Option<C> {
        let mut lists = self.lists.lock().unwrap_or_else(|p| p.into_inner());
        let list = lists.get_mut(&ep)?;
        while let Some((c, since)) = list.pop() {
            if now.saturating_duration_since(since) < self.idle_for && c.still_open() {
                return Some(c);
            }
        }
        None
    }

    /// Keeps `c` for the next request to `ep`, unless `ep` already has `max_idle` waiting.
    pub fn put(&self, ep: SocketAddr, c: C) {
        self.put_at(ep, c, Instant::now())
    }

    /// `put`, idle since `now`.
    pub fn put_at(&self, ep: SocketAddr, c: C, now: Instant) {
        let mut lists = self.lists.lock().unwrap_or_else(|p| p.into_inner());
        let list = lists.entry(ep).or_default();
        if list.len() < self.max_idle {
            list.push((c, now));
        }
    }

    /// Forgets the connections of endpoints that are no longer anyone's (a table swap
    /// calls this); dropping them, outside the lock, closes them.
    pub fn retain(&self, live: &HashSet<SocketAddr>) {
        let gone: Vec<_> = {
            let mut lists = self.lists.lock().unwrap_or_else(|p| p.into_inner());
            let dead: Vec<SocketAddr> = lists
                .keys()
                .filter(|a| !live.contains(a))
                .copied()
                .collect();
            dead.iter().filter_map(|a| lists.remove(a)).collect()
        };
        drop(gone);
    }

    fn sweep(&self) {
        let mut lists = self.lists.lock().unwrap_or_else(|p| p.into_inner());
        for list in lists.values_mut() {
            list.retain(|(c, since)| since.elapsed() < self.idle_for && c.still_open());
        }
        lists.retain(|_, l| !l.is_empty());
    }

    /// Closes connections idle past their time (or closed by their endpoint) even when no
    /// request comes to check them out; the task ends with the pool. Called on each new
    /// connection, so a pool that never connects runs no task.
    pub fn start_sweeper(self: &Arc<Self>) {
        if self.sweeping.swap(true, Ordering::Relaxed) {
            return;
        }
        let weak: Weak<IdleConns<C>> = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(SWEEP_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                match weak.upgrade() {
                    Some(conns) => conns.sweep(),
                    None => return,
                }
            }
        });
    }
}
