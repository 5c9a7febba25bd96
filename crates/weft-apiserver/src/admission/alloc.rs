//! Pure allocators: ClusterIPs, NodePorts, and node pod CIDRs. What is in use is always
//! derived from the stored objects, so a delete releases and a restart remembers.

use ipnet::Ipv4Net;
use std::net::Ipv4Addr;

/// A free ClusterIP: `.1` only for the `kubernetes` Service, `.10` kept for DNS (only
/// given when asked for explicitly). Starts at a random offset, as the real allocator
/// does, so a just-released address is unlikely to be handed out again at once.
pub fn cluster_ip(cidr: Ipv4Net, used: &[Ipv4Addr], is_kubernetes: bool) -> Option<Ipv4Addr> {
    let base = u32::from(cidr.network());
    let size = 1u64 << (32 - cidr.prefix_len());
    if is_kubernetes {
        let ip = Ipv4Addr::from(base + 1);
        if !used.contains(&ip) {
            return Some(ip);
        }
    }
    // Usable offsets: 2..size-1, minus 10.
    let span = size.saturating_sub(3);
    if span == 0 {
        return None;
    }
    let start = u64::from(u32::from_le_bytes(crate::meta::random_bytes::<4>())) % span;
    (0..span)
        .map(|i| 2 + (start + i) % span)
        .filter(|off| *off != 10)
        .map(|off| Ipv4Addr::from(base + off as u32))
        .find(|ip| !used.contains(ip))
}

pub fn node_port(range: (u16, u16), used: &[u16]) -> Option<u16> {
    let span = u32::from(range.1 - range.0) + 1;
    let start = u32::from_le_bytes(crate::meta::random_bytes::<4>()) % span;
    (0..span)
        .map(|i| range.0 + ((start + i) % span) as u16)
        .find(|p| !used.contains(p))
}

/// `K` for a node named `node-K`: the lab's nodes get matching subnets.
pub fn node_index_hint(name: &str) -> Option<u64> {
    name.strip_prefix("node-")?.parse().ok()
}

/// The pod CIDR for a node: index K for `node-K` when free, else the lowest free index
/// from 1 (index 0, the cluster network's first subnet, is not used).
pub fn node_cidr(cluster: Ipv4Net, size: u8, name: &str, used: &[String]) -> Option<Ipv4Net> {
    let count = 1u64 << (size - cluster.prefix_len());
    let nth = |i: u64| -> Option<Ipv4Net> {
        let step = 1u64 << (32 - size);
        let addr = u64::from(u32::from(cluster.network())) + i * step;
        Ipv4Net::new(Ipv4Addr::from(u32::try_from(addr).ok()?), size).ok()
    };
    let used: Vec<Ipv4Net> = used.iter().filter_map(|s| s.parse().ok()).collect();
    let free = |i: u64| nth(i).filter(|n| !used.contains(n));
    if let Some(k) = node_index_hint(name).filter(|k| *k >= 1 && *k < count) {
        if let Some(n) = free(k) {
            return Some(n);
        }
    }
    (1..count).find_map(free)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_k_gets_subnet_k() {
        let c: Ipv4Net = "10.244.0.0/16".parse().unwrap_or_default();
        assert_eq!(
            node_cidr(c, 24, "node-2", &[]).map(|n| n.to_string()),
            Some("10.244.2.0/24".into())
        );
        let used = vec!["10.244.2.0/24".to_string(), "10.244.1.0/24".to_string()];
        assert_eq!(
            node_cidr(c, 24, "node-2", &used).map(|n| n.to_string()),
            Some("10.244.3.0/24".into())
        );
        assert_eq!(
            node_cidr(c, 24, "worker", &[]).map(|n| n.to_string()),
            Some("10.244.1.0/24".into())
        );
    }

    #[test]
    fn cluster_ip_skips_reserved() {
        let c: Ipv4Net = "10.96.0.0/28".parse().unwrap_or_default();
        let mut used = vec![];
        for _ in 0..12 {
            match cluster_ip(c, &used, false) {
                Some(ip) => used.push(ip),
                None => break,
            }
        }
        // 16 addresses: network, .1, .10 and broadcast are never handed out.
        assert_eq!(used.len(), 12);
        assert!(!used.contains(&Ipv4Addr::new(10, 96, 0, 1)));
        assert!(!used.contains(&Ipv4Addr::new(10, 96, 0, 10)));
        let mut sorted = used.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), 12);
    }
}
