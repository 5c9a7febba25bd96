//! The lab's shape, computed from its spec: which namespaces, links and addresses exist.
//! Pure: `plan` decides, `world` builds; tests check the plan without root.

use crate::error::{Error, Result};
use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};
use std::net::Ipv4Addr;

pub const MAX_NODES: u32 = 200;
/// The underlay bridge in the lab's root namespace: the "LAN" the nodes sit on.
pub const UNDERLAY_BRIDGE: &str = "lan0";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LabSpec {
    pub name: String,
    pub nodes: u32,
    /// "vxlan" or "host-gw".
    pub backend: String,
    pub underlay: Ipv4Net,
    pub cluster_cidr: Ipv4Net,
    pub service_cidr: Ipv4Net,
    pub cluster_dns: Ipv4Addr,
    pub domain: String,
    /// Addresses for LoadBalancer Services. The external host routes them to every node
    /// at once (ECMP), as a router fed by BGP from the nodes would.
    #[serde(default = "default_load_balancer_cidr")]
    pub load_balancer_cidr: Ipv4Net,
    /// Where the nodes' DNS servers send names outside the cluster zone; empty: the
    /// machine's /etc/resolv.conf (whose servers a lab usually cannot reach).
    #[serde(default)]
    pub dns_upstreams: Vec<std::net::SocketAddr>,
}

fn default_load_balancer_cidr() -> Ipv4Net {
    Ipv4Net::new(Ipv4Addr::new(192, 168, 2, 0), 24).unwrap_or_default()
}

impl LabSpec {
    pub fn new(name: &str, nodes: u32, backend: &str) -> LabSpec {
        LabSpec {
            name: name.to_string(),
            nodes,
            backend: backend.to_string(),
            underlay: Ipv4Net::new(Ipv4Addr::new(192, 168, 1, 0), 24).unwrap_or_default(),
            cluster_cidr: Ipv4Net::new(Ipv4Addr::new(10, 244, 0, 0), 16).unwrap_or_default(),
            service_cidr: Ipv4Net::new(Ipv4Addr::new(10, 96, 0, 0), 12).unwrap_or_default(),
            cluster_dns: Ipv4Addr::new(10, 96, 0, 10),
            domain: "cluster.local".to_string(),
            load_balancer_cidr: default_load_balancer_cidr(),
            dns_upstreams: Vec::new(),
        }
    }
}

/// One host on the underlay: a node or the external client.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Host {
    /// `node-K` or `external`.
    pub name: String,
    pub netns: String,
    /// Its `eth0` address on the underlay.
    pub addr: Ipv4Net,
    /// The veth end in the lab's root namespace, attached to the underlay bridge.
    pub uplink: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Topology {
    pub root_netns: String,
    /// The underlay bridge's own address: the hosts' default gateway, and where the lab's
    /// control plane listens.
    pub gateway: Ipv4Net,
    pub nodes: Vec<Host>,
    pub external: Host,
    /// Routed from the external host to every node (see [`LabSpec::load_balancer_cidr`]).
    #[serde(default)]
    pub load_balancer_cidr: Option<Ipv4Net>,
}

impl Topology {
    pub fn hosts(&self) -> impl Iterator<Item = &Host> {
        self.nodes.iter().chain(std::iter::once(&self.external))
    }

    /// Pod namespaces of node `n` start with `<node netns>.` (the agent names them
    /// `<node netns>.<pod namespace>-<pod name>`): a dot cannot occur in a lab name, so no
    /// other lab's namespace ever matches this prefix.
    pub fn pod_netns_prefix(node: &Host) -> String {
        format!("{}.", node.netns)
    }
}

/// Lab names become namespace and link names: a DNS-1123 label short enough for both.
pub fn validate_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 20
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(
            "name",
            format!("{name:?} must be 1-20 lowercase letters, digits or '-', not starting or ending with '-'"),
        ))
    }
}

pub fn plan(spec: &LabSpec) -> Result<Topology> {
    validate_name(&spec.name)?;
    if spec.nodes == 0 || spec.nodes > MAX_NODES {
        return Err(Error::invalid(
            "nodes",
            format!("{} is outside 1..={MAX_NODES}", spec.nodes),
        ));
    }
    if spec.backend != "vxlan" && spec.backend != "host-gw" {
        return Err(Error::invalid(
            "backend",
            format!("{:?}: expected vxlan or host-gw", spec.backend),
        ));
    }
    let size = spec.underlay.hosts().count() as u32;
    // .1 is the gateway, nodes from .2, the external host on the last address.
    if spec.nodes + 2 > size {
        return Err(Error::invalid(
            "underlay",
            format!(
                "{} has room for {} nodes, not {}",
                spec.underlay,
                size.saturating_sub(2),
                spec.nodes
            ),
        ));
    }
    if spec.underlay.contains(&spec.cluster_cidr.network())
        || spec.cluster_cidr.contains(&spec.underlay.network())
    {
        return Err(Error::invalid(
            "underlay",
            format!(
                "{} overlaps the cluster CIDR {}",
                spec.underlay, spec.cluster_cidr
            ),
        ));
    }
    let lb = spec.load_balancer_cidr;
    for (what, other) in [
        ("the underlay", spec.underlay),
        ("the cluster CIDR", spec.cluster_cidr),
        ("the service CIDR", spec.service_cidr),
    ] {
        if lb.contains(&other.network()) || other.contains(&lb.network()) {
            return Err(Error::invalid(
                "loadBalancerCIDR",
                format!("{lb} overlaps {what} {other}"),
            ));
        }
    }
    let base = u32::from(spec.underlay.network());
    let at = |i: u32| {
        Ipv4Net::new(Ipv4Addr::from(base + i), spec.underlay.prefix_len()).unwrap_or(spec.underlay)
    };
    let root = format!("weft-{}", spec.name);
    let nodes = (1..=spec.nodes)
        .map(|k| Host {
            name: format!("node-{k}"),
            netns: format!("{root}-node-{k}"),
            addr: at(k + 1),
            uplink: format!("lan-node-{k}"),
        })
        .collect();
    let external = Host {
        name: "external".to_string(),
        netns: format!("{root}-external"),
        addr: at(size),
        uplink: "lan-external".to_string(),
    };
    Ok(Topology {
        root_netns: root,
        gateway: at(1),
        nodes,
        external,
        load_balancer_cidr: Some(lb),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn follows_the_documents_addressing() {
        let t = plan(&LabSpec::new("weft", 2, "vxlan")).unwrap();
        assert_eq!(t.root_netns, "weft-weft");
        assert_eq!(t.gateway.to_string(), "192.168.1.1/24");
        assert_eq!(t.nodes[0].netns, "weft-weft-node-1");
        assert_eq!(t.nodes[0].addr.to_string(), "192.168.1.2/24");
        assert_eq!(t.nodes[1].addr.to_string(), "192.168.1.3/24");
        assert_eq!(t.external.addr.to_string(), "192.168.1.254/24");
        assert_eq!(Topology::pod_netns_prefix(&t.nodes[0]), "weft-weft-node-1.");
        assert_eq!(t.load_balancer_cidr.unwrap().to_string(), "192.168.2.0/24");
        let mut bad = LabSpec::new("weft", 2, "vxlan");
        bad.load_balancer_cidr = "192.168.1.128/25".parse().unwrap();
        let err = plan(&bad).unwrap_err().to_string();
        assert!(
            err.contains("loadBalancerCIDR") && err.contains("underlay"),
            "{err}"
        );
    }

    #[test]
    fn rejects_bad_specs_naming_the_field() {
        let e = plan(&LabSpec::new("Bad_Name", 2, "vxlan"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("name"), "{e}");
        let e = plan(&LabSpec::new("a", 0, "vxlan"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("nodes"), "{e}");
        let e = plan(&LabSpec::new("a", 2, "flannel"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("backend"), "{e}");
        let mut s = LabSpec::new("a", 2, "vxlan");
        s.underlay = "10.244.5.0/24".parse().unwrap();
        assert!(plan(&s).unwrap_err().to_string().contains("overlaps"));
    }
}
