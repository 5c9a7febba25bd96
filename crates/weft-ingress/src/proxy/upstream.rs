//! Endpoints: which one takes the next request (round robin over the healthy ones), and
//! passive ejection of those that fail (a refused connect, a broken response), so a dead
//! pod stops costing requests before the EndpointSlice says it is gone.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long an endpoint sits out after failing.
pub const EJECT_FOR: Duration = Duration::from_secs(5);
/// Failed responses (not connects) in a row before an endpoint is ejected: one broken
/// response can be the request's fault, a refused connect never is.
pub const RESPONSE_FAILURES: u32 = 3;

#[derive(Debug, Default)]
struct Health {
    failures: u32,
    ejected_until: Option<Instant>,
}

/// The endpoints to try for one request, as indexes into the route's endpoints: while no
/// endpoint is in trouble (the usual case) a rotation, which costs no allocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Order {
    Rotation { start: usize, n: usize },
    Listed(Vec<usize>),
}

impl Order {
    pub fn len(&self) -> usize {
        match self {
            Order::Rotation { n, .. } => *n,
            Order::Listed(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn iter(&self) -> OrderIter<'_> {
        OrderIter { order: self, i: 0 }
    }
}

#[derive(Clone)]
pub struct OrderIter<'a> {
    order: &'a Order,
    i: usize,
}

impl Iterator for OrderIter<'_> {
    type Item = usize;
    fn next(&mut self) -> Option<usize> {
        let i = self.i;
        self.i += 1;
        match self.order {
            Order::Rotation { start, n } => (i < *n).then(|| (start + i) % n),
            Order::Listed(v) => v.get(i).copied(),
        }
    }
}

#[derive(Debug, Default)]
pub struct Balancer {
    next: AtomicUsize,
    health: Mutex<HashMap<SocketAddr, Health>>,
    /// How many endpoints `health` holds, readable without the lock: while it is 0 (all
    /// is well, the usual case) a request takes no lock at all.
    troubled: AtomicUsize,
}

impl Balancer {
    /// The endpoints to try for one request, as indexes into `endpoints`, in order:
    /// healthy ones from the round-robin position on, then the ejected ones (better a
    /// likely failure than none at all).
    pub fn order(&self, endpoints: &[SocketAddr]) -> Order {
        let n = endpoints.len();
        if n == 0 {
            return Order::Listed(Vec::new());
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed) % n;
        let rotation = Order::Rotation { start, n };
        if self.troubled.load(Ordering::Acquire) == 0 {
            return rotation;
        }
        let health = self.health.lock().unwrap_or_else(|p| p.into_inner());
        // Nobody ejected: no clock read, no second pass.
        if health.is_empty() {
            return rotation;
        }
        let rotated = rotation.iter();
        let now = Instant::now();
        let ejected = |i: usize| {
            health
                .get(&endpoints[i])
                .and_then(|h| h.ejected_until)
                .is_some_and(|t| t > now)
        };
        let mut out: Vec<usize> = rotated.clone().filter(|i| !ejected(*i)).collect();
        out.extend(rotated.filter(|i| ejected(*i)));
        Order::Listed(out)
    }

    pub fn succeeded(&self, ep: SocketAddr) {
        if self.troubled.load(Ordering::Acquire) == 0 {
            return;
        }
        let mut health = self.health.lock().unwrap_or_else(|p| p.into_inner());
        // A healthy endpoint has no entry: the map stays empty while all is well.
        health.remove(&ep);
        self.troubled.store(health.len(), Ordering::Release);
    }

    /// Records a failure; returns true when the endpoint was ejected by it.
    pub fn failed(&self, ep: SocketAddr, connect: bool) -> bool {
        let mut health = self.health.lock().unwrap_or_else(|p| p.into_inner());
        let h = health.entry(ep).or_default();
        h.failures += 1;
        let ejected = connect || h.failures >= RESPONSE_FAILURES;
        if ejected {
            h.ejected_until = Some(Instant::now() + EJECT_FOR);
        }
        self.troubled.store(health.len(), Ordering::Release);
        ejected
    }

    /// Forgets endpoints that are no longer anyone's (a table swap calls this).
    pub fn retain(&self, live: &std::collections::HashSet<SocketAddr>) {
        let mut health = self.health.lock().unwrap_or_else(|p| p.into_inner());
        health.retain(|a, _| live.contains(a));
        self.troubled.store(health.len(), Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn first(o: Order) -> usize {
        o.iter().next().expect("an endpoint")
    }

    fn eps(n: u8) -> Vec<SocketAddr> {
        (1..=n)
            .map(|i| SocketAddr::from(([10, 0, 0, i], 80)))
            .collect()
    }

    #[test]
    fn round_robin_covers_everyone() {
        let b = Balancer::default();
        let e = eps(3);
        let firsts: std::collections::HashSet<_> = (0..3).map(|_| first(b.order(&e))).collect();
        assert_eq!(firsts.len(), 3);
        assert_eq!(b.order(&e).len(), 3);
        let all: std::collections::HashSet<_> = b.order(&e).iter().collect();
        assert_eq!(all.len(), 3, "a rotation names every endpoint once");
    }

    #[test]
    fn ejected_go_last_and_come_back_on_success() {
        let b = Balancer::default();
        let e = eps(2);
        assert!(b.failed(e[0], true));
        for _ in 0..4 {
            assert_eq!(b.order(&e).iter().collect::<Vec<_>>(), vec![1, 0]);
        }
        b.succeeded(e[0]);
        let firsts: std::collections::HashSet<_> = (0..2).map(|_| first(b.order(&e))).collect();
        assert_eq!(firsts.len(), 2);
        assert!(!b.failed(e[1], false));
        assert!(!b.failed(e[1], false));
        assert!(b.failed(e[1], false));
    }
}
