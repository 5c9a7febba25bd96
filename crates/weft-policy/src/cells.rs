//! The regions in which policy answers are constant, so the nft compiler can ask the
//! matcher once per region instead of once per address and port.
//!
//! Peer addresses (IPv4) are cut at every pod and node address (each its own one-address
//! region, since labels make each one different) and at every CIDR boundary a policy
//! names; between cuts only CIDRs matter and none starts or ends inside. Ports are cut per
//! protocol at every port, range end and named container port in the cluster. Protocols
//! without ports form one region.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};

use ipnet::IpNet;

use crate::matcher::Remote;
use crate::model::{PeerMatch, PortMatch, Protocol};
use crate::view::Cluster;

/// An inclusive range of IPv4 addresses, as integers.
pub type AddrRange = (u32, u32);
/// An inclusive range of ports.
pub type PortRange = (u16, u16);

/// The protocols with ports, each its own dimension of port regions.
pub const PORT_PROTOCOLS: [Protocol; 3] = [Protocol::Tcp, Protocol::Udp, Protocol::Sctp];

/// Protocol numbers without ports, as inclusive ranges (everything but 6, 17, 132); the
/// matcher answers all of them alike, asked as ICMP.
pub const OTHER_PROTOCOLS: [(u8, u8); 4] = [(0, 5), (7, 16), (18, 131), (133, 255)];

pub struct Cells<'a> {
    /// Address regions with what holds the region's addresses (a pod or node holds a
    /// one-address region).
    pub peers: Vec<(AddrRange, Remote<'a>)>,
    /// Port regions per protocol with ports.
    pub ports: BTreeMap<Protocol, Vec<PortRange>>,
}

fn v4(ip: &IpAddr) -> Option<u32> {
    match ip {
        IpAddr::V4(a) => Some(u32::from(*a)),
        IpAddr::V6(_) => None,
    }
}

fn net_range(n: &IpNet) -> Option<AddrRange> {
    match n {
        IpNet::V4(n) => Some((u32::from(n.network()), u32::from(n.broadcast()))),
        IpNet::V6(_) => None,
    }
}

/// Closes sorted cut points into inclusive ranges covering `0..=max`.
fn ranges(cuts: &BTreeSet<u64>, max: u64) -> Vec<(u64, u64)> {
    let mut out = Vec::with_capacity(cuts.len());
    let mut it = cuts.iter().copied().filter(|c| *c <= max).peekable();
    while let Some(start) = it.next() {
        let end = it.peek().map(|n| n - 1).unwrap_or(max);
        out.push((start, end));
    }
    out
}

impl<'a> Cells<'a> {
    pub fn new(cluster: &'a Cluster) -> Cells<'a> {
        let mut owners: BTreeMap<u32, Remote<'a>> = BTreeMap::new();
        for n in cluster.nodes.values() {
            for ip in &n.ips {
                if let Some(a) = v4(ip) {
                    owners.insert(
                        a,
                        Remote {
                            ip: Some(*ip),
                            pod: None,
                            node: Some(n),
                        },
                    );
                }
            }
        }
        // Pods after nodes: an address both hold is the pod's, as `Cluster::owner` says.
        for p in cluster.pods.values().filter(|p| !p.host_network) {
            for ip in &p.ips {
                if let Some(a) = v4(ip) {
                    owners.insert(
                        a,
                        Remote {
                            ip: Some(*ip),
                            pod: Some(p),
                            node: None,
                        },
                    );
                }
            }
        }
        let mut cuts: BTreeSet<u64> = [0].into();
        for a in owners.keys() {
            cuts.insert(u64::from(*a));
            cuts.insert(u64::from(*a) + 1);
        }
        let mut port_cuts: BTreeMap<Protocol, BTreeSet<u64>> =
            PORT_PROTOCOLS.iter().map(|p| (*p, [0u64].into())).collect();
        for pol in cluster.policies.values() {
            for r in pol.ingress.iter().chain(pol.egress.iter()).flatten() {
                for peer in &r.peers {
                    let nets: Vec<&IpNet> = match peer {
                        PeerMatch::IpBlock { cidr, except } => {
                            std::iter::once(cidr).chain(except).collect()
                        }
                        PeerMatch::Networks(n) => n.iter().collect(),
                        _ => Vec::new(),
                    };
                    for (s, e) in nets.into_iter().filter_map(net_range) {
                        cuts.insert(u64::from(s));
                        cuts.insert(u64::from(e) + 1);
                    }
                }
                for pr in &r.ports {
                    if let (Some(proto), PortMatch::Range(a, b)) = (pr.protocol, &pr.port) {
                        if let Some(c) = port_cuts.get_mut(&proto) {
                            c.insert(u64::from(*a));
                            c.insert(u64::from(*b) + 1);
                        }
                    }
                }
            }
        }
        // Named ports can resolve to any container port.
        for p in cluster.pods.values() {
            for cp in &p.ports {
                if let Some(c) = port_cuts.get_mut(&cp.protocol) {
                    c.insert(u64::from(cp.port));
                    c.insert(u64::from(cp.port) + 1);
                }
            }
        }
        let peers = ranges(&cuts, u64::from(u32::MAX))
            .into_iter()
            .map(|(s, e)| {
                let (s, e) = (s as u32, e as u32);
                let remote = match owners.get(&s) {
                    Some(r) if s == e => *r,
                    _ => Remote {
                        ip: Some(IpAddr::V4(Ipv4Addr::from(s))),
                        pod: None,
                        node: None,
                    },
                };
                ((s, e), remote)
            })
            .collect();
        let ports = port_cuts
            .into_iter()
            .map(|(p, c)| {
                let r = ranges(&c, u64::from(u16::MAX))
                    .into_iter()
                    .map(|(s, e)| (s as u16, e as u16))
                    .collect();
                (p, r)
            })
            .collect();
        Cells { peers, ports }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_cover_everything_once() {
        let cuts: BTreeSet<u64> = [0, 5, 6, 10].into();
        assert_eq!(ranges(&cuts, 20), vec![(0, 4), (5, 5), (6, 9), (10, 20)]);
        let cuts: BTreeSet<u64> = [0, 21].into();
        assert_eq!(ranges(&cuts, 20), vec![(0, 20)]);
    }
}
