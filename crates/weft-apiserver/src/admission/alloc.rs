//! Node pod CIDRs (ClusterIPs and NodePorts are in [`crate::allocator`]). What is in use
//! is derived from the stored Nodes, so a delete releases and a restart remembers.

use ipnet::Ipv4Net;
use std::net::Ipv4Addr;

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
}
