//! The pure half: from the node list to the routes, neighbours and FDB entries this node
//! should have. No kernel here; `Router` resolves devices to indices and applies the diff.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;

use ipnet::IpNet;
use weft_netlink::mac_to_string;

use crate::backend::Backend;
use crate::error::Refusal;
use crate::node::NodeInfo;

/// Where a route leaves this node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RouteDev {
    /// Through the underlay interface, to a gateway on the same L2 segment.
    Underlay,
    /// Into the VXLAN device, to a gateway that is only "on link" there (`onlink`).
    Vxlan,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DesiredRoute {
    pub node: String,
    pub dst: IpNet,
    pub via: IpAddr,
    pub dev: RouteDev,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DesiredNeighbour {
    pub node: String,
    pub ip: IpAddr,
    pub mac: [u8; 6],
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DesiredFdb {
    pub node: String,
    pub mac: [u8; 6],
    pub dst: IpAddr,
}

/// A node that is fine but not routable yet (no lease, no published VTEP MAC).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Waiting {
    pub node: String,
    pub reason: &'static str,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Desired {
    pub routes: Vec<DesiredRoute>,
    pub neighbours: Vec<DesiredNeighbour>,
    pub fdb: Vec<DesiredFdb>,
    pub refused: Vec<Refusal>,
    pub waiting: Vec<Waiting>,
}

impl DesiredRoute {
    /// "route 10.244.2.0/24 via 192.168.1.3" or "... via 10.244.2.0 dev weft.1 onlink".
    pub fn describe(&self, backend: &Backend) -> String {
        match (self.dev, backend.device_name()) {
            (RouteDev::Vxlan, Some(dev)) => {
                format!("route {} via {} dev {dev} onlink", self.dst, self.via)
            }
            _ => format!("route {} via {}", self.dst, self.via),
        }
    }
}

impl DesiredNeighbour {
    pub fn describe(&self) -> String {
        format!("neighbour {} lladdr {}", self.ip, mac_to_string(&self.mac))
    }
}

impl DesiredFdb {
    pub fn describe(&self) -> String {
        format!("fdb entry {} dst {}", mac_to_string(&self.mac), self.dst)
    }
}

/// The routing state this node (`me`) should have for the cluster `nodes`.
///
/// Skips `me`, nodes without a podCIDR and, for vxlan, nodes that have not published their
/// VTEP MAC yet (listed in `waiting`). When two nodes conflict (overlapping podCIDRs, one
/// underlay IP, one VTEP MAC, the same name twice), the one listed first wins and the later
/// one is refused, never installed next to it; callers should list nodes oldest first so
/// that a newcomer cannot take a running node's traffic.
pub fn desired(backend: Backend, me: &NodeInfo, nodes: &[NodeInfo]) -> Desired {
    let mut out = Desired::default();
    let mut claims = Claims::default();
    claims.take(me);
    for node in nodes {
        if node.name == me.name {
            continue;
        }
        if claims.names.contains(node.name.as_str()) {
            out.refused.push(refusal(
                node,
                &object_for(backend, node),
                "the node is listed twice; using the first entry",
            ));
            continue;
        }
        claims.names.insert(&node.name);
        let Some(cidr) = node.pod_cidr.map(|c| c.trunc()) else {
            out.waiting.push(Waiting {
                node: node.name.clone(),
                reason: "no podCIDR yet",
            });
            continue;
        };
        if let Some(reason) = claims.conflict(backend, me, node, cidr) {
            out.refused
                .push(refusal(node, &object_for(backend, node), &reason));
            continue;
        }
        // Waiting nodes hold their claims too, so a later node cannot take them meanwhile.
        claims.take(node);
        match backend {
            Backend::HostGw => out.routes.push(DesiredRoute {
                node: node.name.clone(),
                dst: cidr,
                via: node.underlay_ip,
                dev: RouteDev::Underlay,
            }),
            Backend::Vxlan { .. } => {
                let Some(mac) = node.vtep_mac else {
                    out.waiting.push(Waiting {
                        node: node.name.clone(),
                        reason: "no VTEP MAC published yet (annotation weft.dev/vtep-mac)",
                    });
                    continue;
                };
                // The remote's VXLAN device holds its subnet's network address; that is the
                // next hop, and the neighbour entry resolves it without ARP.
                let gateway = cidr.network();
                out.routes.push(DesiredRoute {
                    node: node.name.clone(),
                    dst: cidr,
                    via: gateway,
                    dev: RouteDev::Vxlan,
                });
                out.neighbours.push(DesiredNeighbour {
                    node: node.name.clone(),
                    ip: gateway,
                    mac,
                });
                out.fdb.push(DesiredFdb {
                    node: node.name.clone(),
                    mac,
                    dst: node.underlay_ip,
                });
            }
        }
    }
    out
}

/// What this node and the nodes accepted so far hold. Lookups are by key (subnets by
/// network address, kept disjoint), so thousands of nodes stay cheap.
#[derive(Default)]
struct Claims<'a> {
    names: HashSet<&'a str>,
    subnets: BTreeMap<IpAddr, (IpNet, &'a str)>,
    ips: HashMap<IpAddr, &'a str>,
    macs: HashMap<[u8; 6], &'a str>,
}

impl<'a> Claims<'a> {
    fn take(&mut self, node: &'a NodeInfo) {
        self.names.insert(&node.name);
        if let Some(cidr) = node.pod_cidr.map(|c| c.trunc()) {
            self.subnets.insert(cidr.network(), (cidr, &node.name));
        }
        self.ips.insert(node.underlay_ip, &node.name);
        if let Some(mac) = node.vtep_mac {
            self.macs.insert(mac, &node.name);
        }
    }

    /// The claimed subnet overlapping `cidr`, if any: the claimed subnets are disjoint, so
    /// it is either the last one starting at or before `cidr`, or one starting inside it.
    fn overlapping(&self, cidr: IpNet) -> Option<(IpNet, &'a str)> {
        let before = self.subnets.range(..=cidr.network()).next_back();
        if let Some((_, (net, owner))) = before {
            if net.contains(&cidr.network()) {
                return Some((*net, owner));
            }
        }
        self.subnets
            .range(cidr.network()..=cidr.broadcast())
            .next()
            .map(|(_, (net, owner))| (*net, *owner))
    }

    /// Why `node` may not be routed next to what is claimed, if it may not.
    fn conflict(
        &self,
        backend: Backend,
        me: &NodeInfo,
        node: &NodeInfo,
        cidr: IpNet,
    ) -> Option<String> {
        let first = |owner: &str| {
            if owner == me.name {
                "this node's own".to_string()
            } else {
                format!("also node {owner}'s, which was listed first")
            }
        };
        if let Some((theirs, owner)) = self.overlapping(cidr) {
            return Some(if owner == me.name {
                format!("podCIDR {cidr} overlaps this node's own podCIDR {theirs}")
            } else {
                format!(
                    "podCIDR {cidr} overlaps {theirs} of node {owner}, which was listed first; \
                     fix the podCIDR of one of them"
                )
            });
        }
        if let Some(owner) = self.ips.get(&node.underlay_ip) {
            return Some(format!(
                "underlay IP {} is {}",
                node.underlay_ip,
                first(owner)
            ));
        }
        match backend {
            Backend::HostGw => {
                if cidr.addr().is_ipv4() != node.underlay_ip.is_ipv4() {
                    return Some(format!(
                        "host-gw cannot route podCIDR {cidr} via the underlay IP {} of the \
                         other address family; use the vxlan backend",
                        node.underlay_ip
                    ));
                }
            }
            Backend::Vxlan { .. } => {
                // One VXLAN device has one local address, so it talks to one family of VTEPs.
                if node.underlay_ip.is_ipv4() != me.underlay_ip.is_ipv4() {
                    return Some(format!(
                        "VTEP {} is not of the address family of this node's VTEP {}",
                        node.underlay_ip, me.underlay_ip
                    ));
                }
                let owner = node
                    .vtep_mac
                    .and_then(|m| self.macs.get(&m).map(|o| (m, o)));
                if let Some((mac, owner)) = owner {
                    return Some(format!(
                        "VTEP MAC {} is {}",
                        mac_to_string(&mac),
                        first(owner)
                    ));
                }
            }
        }
        None
    }
}

fn refusal(node: &NodeInfo, object: &str, reason: &str) -> Refusal {
    Refusal {
        node: node.name.clone(),
        object: object.to_string(),
        reason: reason.to_string(),
    }
}

/// How a refusal names the entry that was not made.
fn object_for(backend: Backend, node: &NodeInfo) -> String {
    let cidr = match node.pod_cidr {
        Some(c) => c.trunc().to_string(),
        None => "(no podCIDR)".to_string(),
    };
    match backend {
        Backend::HostGw => format!("route {cidr} via {}", node.underlay_ip),
        Backend::Vxlan { .. } => format!("vxlan route {cidr} to VTEP {}", node.underlay_ip),
    }
}

impl Desired {
    /// host-gw needs every gateway on one L2 segment with this node: refuse the routes whose
    /// gateway is in none of the underlay interface's subnets (`underlay_nets`, the
    /// interface's addresses with their prefixes). The kernel would refuse them too, with a
    /// far less helpful message.
    pub fn refuse_off_segment(&mut self, underlay_nets: &[IpNet], underlay_ifname: &str) {
        let subnets: Vec<String> = underlay_nets
            .iter()
            .map(|n| n.trunc().to_string())
            .collect();
        let (keep, off): (Vec<_>, Vec<_>) =
            std::mem::take(&mut self.routes).into_iter().partition(|r| {
                r.dev != RouteDev::Underlay || underlay_nets.iter().any(|n| n.contains(&r.via))
            });
        self.routes = keep;
        for r in off {
            self.refused.push(Refusal {
                node: r.node.clone(),
                object: r.describe(&Backend::HostGw),
                reason: format!(
                    "gateway {} is not on this node's L2 segment ({underlay_ifname}: {}); \
                     host-gw needs all nodes on one L2 segment, use the vxlan backend",
                    r.via,
                    if subnets.is_empty() {
                        "no addresses".to_string()
                    } else {
                        subnets.join(", ")
                    }
                ),
            });
        }
    }
}

#[cfg(test)]
#[path = "desired_tests.rs"]
mod tests;
