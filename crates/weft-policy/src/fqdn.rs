//! ClusterNetworkPolicy `domainNames` egress peers: which names a pattern matches, and
//! what a DNS answer to a pod grants it.
//!
//! The upstream API (policy.networking.k8s.io, experimental): a pattern is a name of at
//! least two labels, or `*.` and such a name; `*` stands for one or more whole labels, so
//! `*.example.org` matches `www.example.org` and `a.b.example.org` but not
//! `example.org`; names compare without case and without a final dot. `domainNames` is
//! only allowed in `Accept` rules (a Deny on names could never be complete).
//!
//! Enforcement: weft serves the cluster's DNS. When it answers a pod for a name, the
//! answer's addresses become, before the answer leaves, elements of the node's
//! `egress-fqdn4`/`egress-fqdn6` sets (pod address . address . protocols . ports, with the
//! record's TTL as the timeout), which the egress chain checks first and which end the
//! egress decision as allowed. Which elements: the matcher decides the connection with
//! the address known by that name ([`crate::endpoint::Remote::name`]), and the regions
//! where that allows what the same question without the name denies are granted
//! ([`grants`]): one decision, so a higher-precedence Deny still wins and the ports are
//! the rule's.

use std::collections::BTreeSet;
use std::net::IpAddr;

use weft_nft::{Key, KeyType, Rule, Selector, Set, SetRef, Stmt, Value, Verdict};

use crate::cells::{AddrFamily, OTHER_PROTOCOLS, PORT_PROTOCOLS};
use crate::desired::{addr_value, local_pods};
use crate::matcher::{decide, Applicable};
use crate::model::{Direction, PeerMatch, PortMatch, Protocol};
use crate::view::Cluster;

fn label_ok(l: &str) -> bool {
    let b = l.as_bytes();
    let edge = |c: &u8| c.is_ascii_alphanumeric() || *c == b'_';
    !b.is_empty()
        && b.len() <= 63
        && b.first().is_some_and(edge)
        && b.last().is_some_and(edge)
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || *c == b'-' || *c == b'_')
}

/// Whether `pattern` is a domain name the API accepts (at least two labels, an optional
/// leading `*.` and final dot).
pub fn valid(pattern: &str) -> bool {
    let p = pattern.strip_prefix("*.").unwrap_or(pattern);
    let p = p.strip_suffix('.').unwrap_or(p);
    let labels: Vec<&str> = p.split('.').collect();
    p.len() <= 253 && labels.len() >= 2 && labels.iter().all(|l| label_ok(l))
}

fn norm(n: &str) -> String {
    n.trim_end_matches('.').to_ascii_lowercase()
}

/// Whether the name `name` is one of `pattern`'s.
pub fn matches(pattern: &str, name: &str) -> bool {
    let name = norm(name);
    match pattern.strip_prefix("*.") {
        Some(suffix) => name
            .strip_suffix(&norm(suffix))
            .is_some_and(|head| head.len() > 1 && head.ends_with('.')),
        None => name == norm(pattern),
    }
}

/// The set of one family's grants: `pod . address . protocol . port`, ranges, timeouts.
pub fn set_name(fam: AddrFamily) -> String {
    match fam {
        AddrFamily::V4 => "egress-fqdn4".into(),
        AddrFamily::V6 => "egress-fqdn6".into(),
    }
}

pub(crate) fn set(fam: AddrFamily) -> Set {
    let addr = match fam {
        AddrFamily::V4 => KeyType::Ipv4Addr,
        AddrFamily::V6 => KeyType::Ipv6Addr,
    };
    let mut s = Set::new(
        set_name(fam),
        vec![addr, addr, KeyType::InetProto, KeyType::InetService],
    );
    s.flags.interval = true;
    s.flags.timeout = true;
    s
}

/// The egress chain's first rule for a family: a granted connection's egress is allowed
/// (`return`: the server's ingress is still checked).
pub(crate) fn rule(fam: AddrFamily) -> Rule {
    let (s, d) = crate::desired::addrs(Direction::Egress, fam);
    Rule::new(vec![
        Stmt::Lookup {
            key: vec![s, d, Selector::MetaL4proto, Selector::ThDport],
            set: SetRef::Named(set_name(fam)),
            negate: false,
        },
        Stmt::Verdict(Verdict::Return),
    ])
}

/// One element a DNS answer grants: the set (by family), its start key and its end
/// (`pod . address . protocol . port`, the protocols and ports ranges inclusive).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Grant {
    pub family: AddrFamily,
    pub start: Key,
    pub end: Key,
}

/// What this node grants pod `client` (one of the node's pods, by address) after an
/// answer that `name` is at `addr`: the protocol and port regions where its egress to
/// `addr` is allowed with the address known by that name and denied without. Empty when
/// the client is not a local pod, no `domainNames` peer of its egress rules matches the
/// name, or the families differ.
pub fn grants(
    cluster: &Cluster,
    node: &str,
    client: IpAddr,
    name: &str,
    addr: IpAddr,
) -> Vec<Grant> {
    let Some(pod) = local_pods(cluster, node).find(|p| p.ips.contains(&client)) else {
        return Vec::new();
    };
    let (fam, c) = AddrFamily::of(&client);
    let (afam, a) = AddrFamily::of(&addr);
    if fam != afam {
        return Vec::new();
    }
    let app = Applicable::new(cluster, Direction::Egress, pod);
    let rules: Vec<_> = app
        .all()
        .flat_map(|p| p.rules(Direction::Egress).unwrap_or_default())
        .collect();
    let named = rules.iter().any(|r| {
        r.peers.iter().any(|p| match p {
            PeerMatch::DomainNames(ps) => ps.iter().any(|p| matches(p, name)),
            _ => false,
        })
    });
    if !named {
        return Vec::new();
    }
    let without = cluster.resolve_ip(addr);
    let with = crate::endpoint::Remote {
        name: Some(name),
        ..without
    };
    let granted = |port: u16, proto: Protocol| {
        decide(cluster, &app, with, port, proto).allowed
            && !decide(cluster, &app, without, port, proto).allowed
    };
    let key = |p: u8, port: u16| {
        Key(vec![
            addr_value(fam, c),
            addr_value(fam, a),
            Value::Proto(p),
            Value::Port(port),
        ])
    };
    let mut out = Vec::new();
    for proto in PORT_PROTOCOLS {
        // The answer is constant between the ports any of the pod's egress rules names.
        let mut cuts: BTreeSet<u32> = [0u32, 65536].into();
        for r in &rules {
            for pr in &r.ports {
                match &pr.port {
                    PortMatch::Range(lo, hi) => {
                        cuts.insert(u32::from(*lo));
                        cuts.insert(u32::from(*hi) + 1);
                    }
                    PortMatch::Named(n) => {
                        for cp in without.pod.iter().flat_map(|p| &p.ports) {
                            if &cp.name == n {
                                cuts.insert(u32::from(cp.port));
                                cuts.insert(u32::from(cp.port) + 1);
                            }
                        }
                    }
                    PortMatch::Any => {}
                }
            }
        }
        let cuts: Vec<u32> = cuts.into_iter().collect();
        let mut open: Option<(u16, u16)> = None;
        for w in cuts.windows(2) {
            let (lo, hi) = (w[0] as u16, (w[1] - 1) as u16);
            if granted(lo, proto) {
                open = Some(open.map_or((lo, hi), |(s, _)| (s, hi)));
            } else if let Some((s, e)) = open.take() {
                out.push((proto.number(), proto.number(), s, e));
            }
        }
        if let Some((s, e)) = open {
            out.push((proto.number(), proto.number(), s, e));
        }
    }
    if granted(0, Protocol::Other(1)) {
        for (lo, hi) in OTHER_PROTOCOLS {
            out.push((lo, hi, 0, u16::MAX));
        }
    }
    out.into_iter()
        .map(|(plo, phi, lo, hi)| Grant {
            family: fam,
            start: key(plo, lo),
            end: key(phi, hi),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_and_the_upstream_examples() {
        for p in [
            "kubernetes.io",
            "*.kubernetes.io",
            "a-b.c_d.example.",
            "x1.io",
        ] {
            assert!(valid(p), "{p}");
        }
        for p in [
            "io",
            "*.io",
            "*kubernetes.io",
            "a.*.io",
            "-a.io",
            "a..io",
            "",
            "*.",
        ] {
            assert!(!valid(p), "{p}");
        }
        // The API's examples.
        assert!(matches("kubernetes.io", "kubernetes.io"));
        for n in [
            "www.kubernetes.io",
            "blog.kubernetes.io",
            "my-kubernetes.io",
            "wikipedia.org",
        ] {
            assert!(!matches("kubernetes.io", n), "{n}");
        }
        assert!(matches("blog.kubernetes.io", "blog.kubernetes.io"));
        assert!(!matches("blog.kubernetes.io", "www.kubernetes.io"));
        assert!(!matches("blog.kubernetes.io", "kubernetes.io"));
        for n in [
            "www.kubernetes.io",
            "blog.kubernetes.io",
            "latest.blog.kubernetes.io",
        ] {
            assert!(matches("*.kubernetes.io", n), "{n}");
        }
        for n in [
            "kubernetes.io",
            "wikipedia.org",
            "my-kubernetes.io",
            ".kubernetes.io",
        ] {
            assert!(!matches("*.kubernetes.io", n), "{n}");
        }
        // Case and a final dot do not matter.
        assert!(matches("*.Example.ORG.", "WWW.example.org."));
        assert!(matches("example.org", "EXAMPLE.org."));
    }
}
