//! Node pod CIDRs (ClusterIPs and NodePorts are in [`crate::allocator`]) and the pod
//! capacity they give a node. What is in use is derived from the stored Nodes, so a
//! delete releases and a restart remembers.

use crate::error::{ApiError, Cause};
use crate::resources::NODES;
use crate::server::NetConfig;
use crate::store::Tx;
use ipnet::{IpNet, Ipv4Net};
use k8s_openapi::api::core::v1::{Node, NodeSpec, NodeStatus};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use std::net::Ipv4Addr;

/// How many pods a node's pod CIDR holds: its addresses but the network, the bridge's
/// gateway and (IPv4) the broadcast address, as the CNI's host-local ranges hand them
/// out (a /24 holds 253). IPv6 ranges are capped at kubelet's usual order of magnitude
/// so the figure stays a count, not a range size.
pub fn pods_in_cidr(cidr: &str) -> Option<i64> {
    let net: IpNet = cidr.parse().ok()?;
    let host_bits = u32::from(net.max_prefix_len() - net.prefix_len()).min(20);
    let reserved = if net.addr().is_ipv4() { 3 } else { 2 };
    Some(((1i64 << host_bits) - reserved).max(0))
}

/// The most pods the scheduler binds to `node`: `status.allocatable.pods` (the kubelet's
/// max-pods; here admission sets it from the pod CIDR), else what the pod CIDR holds, else
/// no bound.
pub fn pod_capacity(node: &Node) -> Option<i64> {
    let allocatable = node.status.as_ref().and_then(|s| s.allocatable.as_ref());
    let quantity = allocatable.and_then(|a| a.get("pods"));
    if let Some(n) = quantity.and_then(|q| q.0.parse::<i64>().ok()) {
        return Some(n.max(0));
    }
    let cidr = node.spec.as_ref().and_then(|s| s.pod_cidr.as_deref())?;
    pods_in_cidr(cidr)
}

/// Gives a node its pod CIDR (kept once set) and, unless it reports its own, the pod
/// capacity and allocatable pods that CIDR holds.
pub fn allocate_node(
    tx: &Tx,
    net: &NetConfig,
    node: &mut Node,
    old: Option<&Node>,
) -> Result<(), ApiError> {
    let name = node.metadata.name.clone().unwrap_or_default();
    let cidr_of = |n: &Node| {
        n.spec
            .as_ref()
            .and_then(|s| s.pod_cidr.clone())
            .filter(|s| !s.is_empty())
    };
    let cidr = match (old.and_then(cidr_of), cidr_of(node)) {
        (Some(o), None) => o,
        (Some(o), Some(n)) if o == n => o,
        (Some(_), Some(_)) => {
            return Err(ApiError::invalid(
                "Node",
                &name,
                vec![Cause::forbidden(
                    "spec.podCIDR",
                    "node updates may not change podCIDR except from \"\" to valid",
                )],
            ))
        }
        (None, Some(n)) => n,
        (None, None) => {
            let used: Vec<String> = tx
                .list(NODES, None)
                .iter()
                .filter_map(|n| crate::typed::view::<Node>(n))
                .filter(|n| n.metadata.name.as_deref() != Some(name.as_str()))
                .filter_map(|n| cidr_of(&n))
                .collect();
            match node_cidr(net.cluster_cidr, net.node_cidr_size, &name, &used) {
                Some(c) => c.to_string(),
                None => {
                    tracing::warn!("no pod CIDR left in {} for node {name}", net.cluster_cidr);
                    return Ok(());
                }
            }
        }
    };
    let spec = node.spec.get_or_insert_with(NodeSpec::default);
    spec.pod_cidr = Some(cidr.clone());
    spec.pod_cidrs = Some(vec![cidr.clone()]);
    if let Some(pods) = pods_in_cidr(&cidr) {
        let status = node.status.get_or_insert_with(NodeStatus::default);
        for list in [&mut status.capacity, &mut status.allocatable] {
            let list = list.get_or_insert_with(Default::default);
            list.entry("pods".into())
                .or_insert_with(|| Quantity(pods.to_string()));
        }
    }
    Ok(())
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
    fn a_pod_cidr_holds_its_addresses_but_network_gateway_and_broadcast() {
        assert_eq!(pods_in_cidr("10.244.1.0/24"), Some(253));
        assert_eq!(pods_in_cidr("10.244.1.0/29"), Some(5));
        assert_eq!(pods_in_cidr("10.244.1.0/31"), Some(0));
        assert_eq!(pods_in_cidr("fd00:10:244:1::/64"), Some((1 << 20) - 2));
        assert_eq!(pods_in_cidr("bogus"), None);
    }
}
