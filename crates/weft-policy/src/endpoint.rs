//! The ends of a connection: as a question names them ([`Endpoint`], with the CLI's
//! spellings) and as resolved against the cluster ([`Remote`]).

use std::fmt;
use std::net::IpAddr;

use crate::error::{Error, Result};
use crate::model::Protocol;
use crate::view::{Cluster, Node, Owner, Pod};

/// An end of a connection, as a question names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    Pod {
        namespace: String,
        name: String,
    },
    /// Any address: a pod's or node's is treated as that pod or node.
    Ip(IpAddr),
    Node(String),
}

impl Endpoint {
    pub fn pod(namespace: &str, name: &str) -> Endpoint {
        Endpoint::Pod {
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

/// `ns/name` for a pod, an address, or `node/NAME` (the CLI's spelling).
impl std::str::FromStr for Endpoint {
    type Err = Error;

    fn from_str(s: &str) -> Result<Endpoint> {
        if let Ok(ip) = s.parse::<IpAddr>() {
            return Ok(Endpoint::Ip(ip));
        }
        match s.split_once('/') {
            Some(("node", n)) if !n.is_empty() => Ok(Endpoint::Node(n.to_owned())),
            Some((ns, n)) if !ns.is_empty() && !n.is_empty() && !n.contains('/') => {
                Ok(Endpoint::pod(ns, n))
            }
            _ => Err(Error::Invalid {
                object: "endpoint".into(),
                field: String::new(),
                value: s.to_owned(),
                problem: "write NAMESPACE/POD, an address, or node/NAME".into(),
            }),
        }
    }
}

/// `PORT/PROTO` (`80/tcp`, `53/udp`) or a protocol without ports (`icmp`), the CLI's
/// spelling of what a connection is to.
pub fn parse_port(s: &str) -> Result<(u16, Protocol)> {
    let bad = || Error::Invalid {
        object: "port".into(),
        field: String::new(),
        value: s.to_owned(),
        problem: "write PORT/PROTO such as 80/tcp, 53/udp, 9/sctp, or icmp".into(),
    };
    if s.eq_ignore_ascii_case("icmp") {
        return Ok((0, Protocol::Other(1)));
    }
    let (port, proto) = s.split_once('/').ok_or_else(bad)?;
    let port: u16 = port.parse().map_err(|_| bad())?;
    Ok((port, Protocol::parse(proto).ok_or_else(bad)?))
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Pod { namespace, name } => write!(f, "{namespace}/{name}"),
            Endpoint::Ip(ip) => write!(f, "{ip}"),
            Endpoint::Node(n) => write!(f, "node/{n}"),
        }
    }
}

/// An end of a connection resolved against the cluster.
#[derive(Debug, Clone, Copy, Default)]
pub struct Remote<'a> {
    pub ip: Option<IpAddr>,
    /// Set for pods that are not host-network.
    pub pod: Option<&'a Pod>,
    /// Set for node addresses and host-network pods.
    pub node: Option<&'a Node>,
    /// The DNS name the subject pod was answered this address for, which `domainNames`
    /// peers match ([`crate::fqdn`]); `None` everywhere else (the compiled table).
    pub name: Option<&'a str>,
}

impl Cluster {
    pub fn resolve(&self, e: &Endpoint) -> Result<Remote<'_>> {
        match e {
            Endpoint::Pod { namespace, name } => {
                let p = self.pod(namespace, name).ok_or_else(|| Error::Unknown {
                    what: "pod",
                    name: format!("{namespace}/{name}"),
                })?;
                let ip = p
                    .ips
                    .iter()
                    .find(|a| a.is_ipv4())
                    .or(p.ips.first())
                    .copied();
                if p.host_network {
                    let node = p.node.as_ref().and_then(|n| self.nodes.get(n));
                    return Ok(Remote {
                        ip,
                        pod: None,
                        node,
                        name: None,
                    });
                }
                Ok(Remote {
                    ip,
                    pod: Some(p),
                    node: None,
                    name: None,
                })
            }
            Endpoint::Node(n) => {
                let node = self.nodes.get(n).ok_or_else(|| Error::Unknown {
                    what: "node",
                    name: n.clone(),
                })?;
                Ok(Remote {
                    ip: node.ips.first().copied(),
                    pod: None,
                    node: Some(node),
                    name: None,
                })
            }
            Endpoint::Ip(ip) => Ok(self.resolve_ip(*ip)),
        }
    }

    pub fn resolve_ip(&self, ip: IpAddr) -> Remote<'_> {
        let mut r = Remote {
            ip: Some(ip),
            ..Remote::default()
        };
        match self.owner(ip) {
            Some(Owner::Pod(ns, name)) => r.pod = self.pod(&ns, &name),
            Some(Owner::Node(n)) => r.node = self.nodes.get(&n),
            None => {}
        }
        r
    }
}
