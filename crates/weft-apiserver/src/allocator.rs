//! ClusterIP, NodePort and LoadBalancer address allocators: bitmaps over each range, as
//! kube-apiserver's are, so that finding a free value costs the same at 30 Services and
//! at 30k.
//!
//! They are an index of the store, not a second record: the store applies every
//! committed write of a Service to them under its lock ([`Allocators::apply`]), and
//! rebuilds them from the stored Services when it opens. A value is therefore taken
//! exactly when a stored Service holds it: a create that fails, aborts or is a dry run
//! never reaches them, a delete or an update that drops a value frees it, and a crash
//! between picking a value and the log write loses nothing. A transaction sees the
//! Services it has written but not committed through a [`Delta`].

use crate::server::NetConfig;
use crate::typed;
use ipnet::IpNet;
use k8s_openapi::api::core::v1::Service;
use serde_json::Value;
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// IPv6 service ranges can be huge: like kube-apiserver, only their first 2^16 addresses
/// are handed out. IPv4 ranges stop at 2^20 (a /12, the widest kube-apiserver accepts).
const MAX_V6: u64 = 1 << 16;
const MAX_V4: u64 = 1 << 20;

/// The ranges values are taken from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Pool {
    ClusterV4,
    ClusterV6,
    NodePort,
    LoadBalancer,
}

const POOLS: usize = 4;

/// Offsets `0..size` and how many holders each has. Almost always 0 or 1; two Services
/// can hold one value only if they were written before these allocators existed, and
/// then the value must stay taken until both are gone.
#[derive(Debug, Clone)]
pub struct Bitmap {
    words: Vec<u64>,
    size: u64,
    extra: HashMap<u64, u32>,
}

impl Bitmap {
    pub fn new(size: u64) -> Bitmap {
        Bitmap {
            words: vec![0; size.div_ceil(64) as usize],
            size,
            extra: HashMap::new(),
        }
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    fn bit(&self, off: u64) -> bool {
        off < self.size && self.words[(off / 64) as usize] & (1 << (off % 64)) != 0
    }

    pub fn holders(&self, off: u64) -> u32 {
        if !self.bit(off) {
            return 0;
        }
        1 + self.extra.get(&off).copied().unwrap_or(0)
    }

    pub fn take(&mut self, off: u64) {
        if off >= self.size {
            return;
        }
        if self.bit(off) {
            *self.extra.entry(off).or_insert(0) += 1;
        } else {
            self.words[(off / 64) as usize] |= 1 << (off % 64);
        }
    }

    pub fn release(&mut self, off: u64) {
        if let Some(n) = self.extra.get_mut(&off) {
            *n -= 1;
            if *n == 0 {
                self.extra.remove(&off);
            }
        } else if self.bit(off) {
            self.words[(off / 64) as usize] &= !(1 << (off % 64));
        }
    }

    /// The lowest clear offset in `from..to`, a word at a time.
    fn next_clear_in(&self, from: u64, to: u64) -> Option<u64> {
        let mut off = from;
        while off < to {
            let w = (off / 64) as usize;
            let free = !self.words[w] & (!0u64 << (off % 64));
            if free != 0 {
                let c = w as u64 * 64 + u64::from(free.trailing_zeros());
                return (c < to).then_some(c);
            }
            off = (w as u64 + 1) * 64;
        }
        None
    }

    /// The first clear offset at or after `start` (wrapping around once) that `ok`
    /// accepts. `ok` refuses few offsets (reserved ones, ones a transaction took), so this
    /// is a scan of the set words near `start`, not of the range.
    pub fn find(&self, start: u64, ok: impl Fn(u64) -> bool) -> Option<u64> {
        if self.size == 0 {
            return None;
        }
        let start = start % self.size;
        let (mut pos, mut end, mut wrapped) = (start, self.size, false);
        loop {
            match self.next_clear_in(pos, end) {
                Some(c) if ok(c) => return Some(c),
                Some(c) => pos = c + 1,
                None if wrapped => return None,
                None => (pos, end, wrapped) = (0, start, true),
            }
        }
    }
}

/// A range of addresses or ports and its bitmap; offset 0 is the range's first value.
#[derive(Debug, Clone)]
pub struct Range {
    /// The configured range, for messages.
    pub name: String,
    base: u128,
    /// IPv4 ranges whose bitmap covers the whole CIDR lose their broadcast address.
    broadcast: Option<u64>,
    bits: Bitmap,
}

impl Range {
    pub fn cidr(cidr: IpNet) -> Range {
        let host_bits = u32::from(cidr.max_prefix_len() - cidr.prefix_len());
        let full = 1u128.checked_shl(host_bits).unwrap_or(u128::MAX);
        let (base, cap) = match cidr.network() {
            IpAddr::V4(a) => (u128::from(u32::from(a)), MAX_V4),
            IpAddr::V6(a) => (u128::from(a), MAX_V6),
        };
        let size = full.min(u128::from(cap)) as u64;
        let broadcast =
            (cidr.network().is_ipv4() && full == u128::from(size) && size > 2).then_some(size - 1);
        Range {
            name: cidr.to_string(),
            base,
            broadcast,
            bits: Bitmap::new(size),
        }
    }

    pub fn ports(lo: u16, hi: u16) -> Range {
        Range {
            name: format!("{lo}-{hi}"),
            base: u128::from(lo),
            broadcast: None,
            bits: Bitmap::new(u64::from(hi - lo) + 1),
        }
    }

    fn offset_of(&self, v: u128) -> Option<u64> {
        let off = v.checked_sub(self.base)?;
        (off < u128::from(self.bits.size())).then_some(off as u64)
    }

    pub fn ip_offset(&self, ip: IpAddr) -> Option<u64> {
        match ip {
            IpAddr::V4(a) => self.offset_of(u128::from(u32::from(a))),
            IpAddr::V6(a) => self.offset_of(u128::from(a)),
        }
    }

    pub fn port_offset(&self, port: u64) -> Option<u64> {
        self.offset_of(u128::from(port))
    }

    pub fn value(&self, off: u64) -> u128 {
        self.base + u128::from(off)
    }

    /// Neither the network address nor an IPv4 broadcast address is handed out, except
    /// in a /31 or /32, where every address is a host (as `ipnet`'s `hosts()` has it).
    pub fn is_host(&self, off: u64) -> bool {
        (off != 0 || self.bits.size() <= 2) && Some(off) != self.broadcast
    }
}

/// Every pool's range and bitmap.
#[derive(Debug, Clone)]
pub struct Allocators {
    ranges: [Option<Range>; POOLS],
}

impl Allocators {
    pub fn new(net: &NetConfig) -> Allocators {
        Allocators {
            ranges: [
                Some(Range::cidr(IpNet::V4(net.service_cidr))),
                net.service_cidr_v6.map(|c| Range::cidr(IpNet::V6(c))),
                Some(Range::ports(net.node_port_range.0, net.node_port_range.1)),
                net.load_balancer_cidr.map(|c| Range::cidr(IpNet::V4(c))),
            ],
        }
    }

    pub fn range(&self, pool: Pool) -> Option<&Range> {
        self.ranges[pool as usize].as_ref()
    }

    /// The pool and offset of a ClusterIP; None outside every service range.
    pub fn cluster_ip(&self, ip: IpAddr) -> Option<(Pool, u64)> {
        let pool = if ip.is_ipv4() {
            Pool::ClusterV4
        } else {
            Pool::ClusterV6
        };
        Some((pool, self.range(pool)?.ip_offset(ip)?))
    }

    /// What a Service holds: its ClusterIPs, NodePorts (the health check port too) and
    /// LoadBalancer addresses that fall in a pool, each once.
    pub fn held(&self, svc: &Service) -> Vec<(Pool, u64)> {
        let mut out = Vec::new();
        if let Some(spec) = svc.spec.as_ref() {
            let ips = match spec.cluster_ips.as_deref().filter(|a| !a.is_empty()) {
                Some(a) => a.iter().map(String::as_str).collect(),
                None => spec.cluster_ip.as_deref().into_iter().collect::<Vec<_>>(),
            };
            for ip in ips.into_iter().filter_map(|s| s.parse::<IpAddr>().ok()) {
                out.extend(self.cluster_ip(ip));
            }
            if let Some(r) = self.range(Pool::NodePort) {
                let ports = spec.ports.iter().flatten();
                let node_ports = ports.filter_map(|p| p.node_port);
                for n in node_ports.chain(spec.health_check_node_port) {
                    let n = u64::try_from(n).ok();
                    out.extend(
                        n.and_then(|n| r.port_offset(n))
                            .map(|o| (Pool::NodePort, o)),
                    );
                }
            }
        }
        if let Some(r) = self.range(Pool::LoadBalancer) {
            let lb = svc.status.as_ref().and_then(|s| s.load_balancer.as_ref());
            for i in lb.and_then(|l| l.ingress.as_ref()).into_iter().flatten() {
                if let Some(ip) = i.ip.as_deref().and_then(|s| s.parse().ok()) {
                    out.extend(r.ip_offset(ip).map(|o| (Pool::LoadBalancer, o)));
                }
            }
        }
        out.sort_unstable();
        out.dedup();
        out
    }

    /// What a stored Service holds ([`Allocators::held`]): stored Services were decoded on
    /// their way in, so one that no longer decodes holds nothing.
    fn held_stored(&self, svc: Option<&Value>) -> Vec<(Pool, u64)> {
        let svc = svc.and_then(typed::view::<Service>);
        svc.map(|s| self.held(&s)).unwrap_or_default()
    }

    /// A committed write of a Service: what `prev` held is released, what `new` holds taken.
    pub fn apply(&mut self, prev: Option<&Value>, new: Option<&Value>) {
        for (pool, off) in self.held_stored(prev) {
            if let Some(r) = self.ranges[pool as usize].as_mut() {
                r.bits.release(off);
            }
        }
        for (pool, off) in self.held_stored(new) {
            if let Some(r) = self.ranges[pool as usize].as_mut() {
                r.bits.take(off);
            }
        }
    }
}

/// Holder counts a transaction's uncommitted Service writes add (or remove).
#[derive(Debug, Default)]
pub struct Delta(HashMap<(Pool, u64), i64>);

impl Delta {
    pub fn apply(&mut self, alloc: &Allocators, prev: Option<&Value>, new: Option<&Value>) {
        for h in alloc.held_stored(prev) {
            *self.0.entry(h).or_insert(0) -= 1;
        }
        for h in alloc.held_stored(new) {
            *self.0.entry(h).or_insert(0) += 1;
        }
    }
}

/// The allocators as one transaction sees them.
pub struct View<'a> {
    pub alloc: &'a Allocators,
    pub delta: &'a Delta,
}

impl View<'_> {
    pub fn range(&self, pool: Pool) -> Option<&Range> {
        self.alloc.range(pool)
    }

    /// Whether a Service other than one holding `own` holds the value.
    pub fn taken_by_other(&self, pool: Pool, off: u64, own: &[(Pool, u64)]) -> bool {
        let committed = self.range(pool).map_or(0, |r| r.bits.holders(off));
        let pending = self.delta.0.get(&(pool, off)).copied().unwrap_or(0);
        let mine = i64::from(own.contains(&(pool, off)));
        i64::from(committed) + pending - mine > 0
    }

    /// A free offset at or after `start` (wrapping) that `ok` accepts. Values freed by
    /// this transaction are not reused by it: they are still set in the committed bitmap.
    pub fn find_free(&self, pool: Pool, start: u64, ok: impl Fn(u64) -> bool) -> Option<u64> {
        let r = self.range(pool)?;
        r.bits.find(start, |off| {
            self.delta.0.get(&(pool, off)).is_none_or(|d| *d <= 0) && ok(off)
        })
    }
}

pub fn ip_of(pool: Pool, v: u128) -> IpAddr {
    match pool {
        Pool::ClusterV6 => IpAddr::V6(Ipv6Addr::from(v)),
        _ => IpAddr::V4(Ipv4Addr::from(v as u32)),
    }
}

/// A random start for a scan, so a just-released value is unlikely to be handed out again
/// at once (kube-apiserver's allocator also starts at a random offset).
pub fn random_start() -> u64 {
    u64::from_le_bytes(crate::meta::random_bytes::<8>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn find_wraps_and_skips_taken() {
        let mut b = Bitmap::new(130);
        for off in 0..130 {
            if off != 3 && off != 129 {
                b.take(off);
            }
        }
        assert_eq!(b.find(100, |_| true), Some(129));
        assert_eq!(b.find(0, |_| true), Some(3));
        assert_eq!(b.find(0, |o| o != 3), Some(129));
        assert_eq!(b.find(5, |o| o != 3 && o != 129), None);
        b.release(64);
        assert_eq!(b.find(4, |o| o != 129), Some(64));
    }

    #[test]
    fn two_holders_keep_a_value_taken() {
        let mut b = Bitmap::new(8);
        b.take(2);
        b.take(2);
        b.release(2);
        assert_eq!(b.holders(2), 1);
        b.release(2);
        assert_eq!(b.holders(2), 0);
        b.release(2);
        assert_eq!(b.holders(2), 0);
    }

    #[test]
    fn ranges_cap_ipv6_and_drop_ipv4_broadcast() {
        let v6 = Range::cidr("fd00::/64".parse().unwrap_or_default());
        assert_eq!(v6.bits.size(), MAX_V6);
        assert!(v6.is_host(MAX_V6 - 1));
        let v4 = Range::cidr("10.96.0.0/28".parse().unwrap_or_default());
        assert_eq!(v4.bits.size(), 16);
        assert!(!v4.is_host(0) && !v4.is_host(15) && v4.is_host(14));
        let ip: IpAddr = "10.96.0.5"
            .parse()
            .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        assert_eq!(v4.ip_offset(ip), Some(5));
        assert_eq!(v4.ip_offset("10.96.0.16".parse().unwrap_or(ip)), None);
    }

    #[test]
    fn held_counts_each_value_once() {
        let net = NetConfig {
            service_cidr: "10.96.0.0/12".parse().unwrap_or_default(),
            service_cidr_v6: "fd00::/108".parse().ok(),
            cluster_cidr: "10.244.0.0/16".parse().unwrap_or_default(),
            node_cidr_size: 24,
            node_port_range: (30000, 32767),
            load_balancer_cidr: None,
            api_endpoint: "127.0.0.1:6443"
                .parse()
                .unwrap_or(([127, 0, 0, 1], 1).into()),
        };
        let a = Allocators::new(&net);
        let svc = serde_json::json!({"spec": {"clusterIP": "10.96.0.7",
            "clusterIPs": ["10.96.0.7", "fd00::7"], "healthCheckNodePort": 30001,
            "ports": [{"nodePort": 30001, "protocol": "TCP"}, {"nodePort": 30001, "protocol": "UDP"},
                {"nodePort": 40000}]}});
        let svc: Service = typed::view(&svc).unwrap_or_default();
        assert_eq!(
            a.held(&svc),
            [
                (Pool::ClusterV4, 7),
                (Pool::ClusterV6, 7),
                (Pool::NodePort, 1)
            ]
        );
    }
}
