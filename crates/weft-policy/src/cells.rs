//! The regions in which policy answers are constant, so the nft compiler can ask the
//! matcher once per region instead of once per address and port.
//!
//! Peer addresses (per family) are cut at every pod and node address (each its own one-address
//! region, since labels make each one different) and at every CIDR boundary a policy
//! names; between cuts only CIDRs matter and none starts or ends inside. Ports are cut per
//! protocol at every port, range end and named container port in the cluster. Protocols
//! without ports form one region.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

use crate::matcher::Remote;
use crate::model::{PeerMatch, PortMatch, Protocol};
use crate::view::Cluster;

/// An inclusive range of addresses of one family, as integers.
pub type AddrRange = (u128, u128);

/// An address family of the table's maps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AddrFamily {
    V4,
    V6,
}

impl AddrFamily {
    pub const ALL: [AddrFamily; 2] = [AddrFamily::V4, AddrFamily::V6];

    pub fn max(self) -> u128 {
        match self {
            AddrFamily::V4 => u128::from(u32::MAX),
            AddrFamily::V6 => u128::MAX,
        }
    }

    pub fn of(ip: &IpAddr) -> (AddrFamily, u128) {
        match ip {
            IpAddr::V4(a) => (AddrFamily::V4, u128::from(u32::from(*a))),
            IpAddr::V6(a) => (AddrFamily::V6, u128::from(*a)),
        }
    }

    pub fn ip(self, n: u128) -> IpAddr {
        match self {
            AddrFamily::V4 => IpAddr::V4(Ipv4Addr::from(n as u32)),
            AddrFamily::V6 => IpAddr::V6(Ipv6Addr::from(n)),
        }
    }
}
/// An inclusive range of ports.
pub type PortRange = (u16, u16);

/// The protocols with ports, each its own dimension of port regions.
pub const PORT_PROTOCOLS: [Protocol; 3] = [Protocol::Tcp, Protocol::Udp, Protocol::Sctp];

/// Protocol numbers without ports, as inclusive ranges (everything but 6, 17, 132); the
/// matcher answers all of them alike, asked as ICMP.
pub const OTHER_PROTOCOLS: [(u8, u8); 4] = [(0, 5), (7, 16), (18, 131), (133, 255)];

pub struct Cells<'a> {
    /// Address regions per family with what holds the region's addresses (a pod or node
    /// holds a one-address region).
    pub peers: BTreeMap<AddrFamily, Vec<(AddrRange, Remote<'a>)>>,
    /// Port regions per protocol with ports.
    pub ports: BTreeMap<Protocol, Vec<PortRange>>,
}

fn net_range(n: &IpNet) -> (AddrFamily, AddrRange) {
    let (f, lo) = AddrFamily::of(&n.network());
    let (_, hi) = AddrFamily::of(&n.broadcast());
    (f, (lo, hi))
}

/// Closes sorted cut points into inclusive ranges covering `0..=max`.
fn ranges(cuts: &BTreeSet<u128>, max: u128) -> Vec<(u128, u128)> {
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
        let mut owners: BTreeMap<(AddrFamily, u128), Remote<'a>> = BTreeMap::new();
        for n in cluster.nodes.values() {
            for ip in &n.ips {
                let remote = Remote {
                    ip: Some(*ip),
                    pod: None,
                    node: Some(n),
                    name: None,
                };
                owners.insert(AddrFamily::of(ip), remote);
            }
        }
        // Pods after nodes: an address both hold is the pod's, as `Cluster::owner` says.
        for p in cluster.pods.values().filter(|p| !p.host_network) {
            for ip in &p.ips {
                let remote = Remote {
                    ip: Some(*ip),
                    pod: Some(p),
                    node: None,
                    name: None,
                };
                owners.insert(AddrFamily::of(ip), remote);
            }
        }
        let mut cuts: BTreeMap<AddrFamily, BTreeSet<u128>> = AddrFamily::ALL
            .iter()
            .map(|f| (*f, [0u128].into()))
            .collect();
        let mut cut = |f: AddrFamily, (lo, hi): AddrRange| {
            let c = cuts.entry(f).or_default();
            c.insert(lo);
            c.extend(hi.checked_add(1));
        };
        for (f, a) in owners.keys() {
            cut(*f, (*a, *a));
        }
        let mut port_cuts: BTreeMap<Protocol, BTreeSet<u128>> = PORT_PROTOCOLS
            .iter()
            .map(|p| (*p, [0u128].into()))
            .collect();
        let mut port_cut = |proto: Protocol, lo: u16, hi: u16| {
            if let Some(c) = port_cuts.get_mut(&proto) {
                c.insert(u128::from(lo));
                c.insert(u128::from(hi) + 1);
            }
        };
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
                    for n in nets {
                        let (f, range) = net_range(n);
                        cut(f, range);
                    }
                }
                for pr in &r.ports {
                    if let (Some(proto), PortMatch::Range(a, b)) = (pr.protocol, &pr.port) {
                        port_cut(proto, *a, *b);
                    }
                }
            }
        }
        // Named ports can resolve to any container port.
        for p in cluster.pods.values() {
            for cp in &p.ports {
                port_cut(cp.protocol, cp.port, cp.port);
            }
        }
        let peers = cuts
            .into_iter()
            .map(|(f, c)| {
                let regions = ranges(&c, f.max())
                    .into_iter()
                    .map(|(s, e)| {
                        let remote = match owners.get(&(f, s)) {
                            Some(r) if s == e => *r,
                            _ => Remote {
                                ip: Some(f.ip(s)),
                                pod: None,
                                node: None,
                                name: None,
                            },
                        };
                        ((s, e), remote)
                    })
                    .collect();
                (f, regions)
            })
            .collect();
        let ports = port_cuts
            .into_iter()
            .map(|(p, c)| {
                let r = ranges(&c, u128::from(u16::MAX))
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
        let cuts: BTreeSet<u128> = [0, 5, 6, 10].into();
        assert_eq!(ranges(&cuts, 20), vec![(0, 4), (5, 5), (6, 9), (10, 20)]);
        let cuts: BTreeSet<u128> = [0, 21].into();
        assert_eq!(ranges(&cuts, 20), vec![(0, 20)]);
        let cuts: BTreeSet<u128> = [0, u128::MAX].into();
        assert_eq!(
            ranges(&cuts, u128::MAX),
            vec![(0, u128::MAX - 1), (u128::MAX, u128::MAX)]
        );
    }
}
