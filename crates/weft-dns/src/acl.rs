//! Who may ask. A cluster DNS server reachable from outside must not become an open
//! resolver (a reflector for amplification, a window into the cluster's names), so a
//! client outside the list is REFUSED for every name, forwarded ones included.

use std::net::{IpAddr, SocketAddr};

use ipnet::IpNet;

use crate::model::Model;

/// Allowed sources: the configured CIDRs (the cluster's pod networks), loopback, the
/// addresses the server listens on, and (from the model) every Node's InternalIP.
#[derive(Clone, Debug, Default)]
pub struct Acl {
    nets: Vec<IpNet>,
}

impl Acl {
    pub fn new(allowed: &[IpNet], listen: &[SocketAddr]) -> Acl {
        let mut nets: Vec<IpNet> = allowed.iter().map(IpNet::trunc).collect();
        for a in listen {
            if !a.ip().is_unspecified() {
                nets.push(IpNet::from(a.ip()));
            }
        }
        nets.sort();
        nets.dedup();
        Acl { nets }
    }

    pub fn allows(&self, src: IpAddr, model: &Model) -> bool {
        // A v4 client of a dual-stack socket shows up as ::ffff:a.b.c.d.
        let src = match src {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(src),
            v4 => v4,
        };
        src.is_loopback() || self.nets.iter().any(|n| n.contains(&src)) || model.is_node_ip(src)
    }
}
