//! What the proxy's table does with one packet, read from the table itself (as the
//! kernel holds it, or as `desired` computes it): the answer `weft lab trace` prints. It
//! follows the chains in order: the filter checks before DNAT, then the services and
//! nodeports dispatch, then masquerade.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use weft_nft::{ElemData, Key, Set, Value};

/// The first packet of a connection, as it reaches the node's prerouting (or output) hook.
#[derive(Debug, Clone, Copy)]
pub struct Packet {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub proto: u8,
    pub dport: u16,
    /// `dst` is one of the node's own addresses (node ports apply).
    pub dst_local: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// No Service has this address and port: the packet is routed as it is.
    NotAService,
    Rejected(String),
    Dropped(String),
    /// DNAT to one of `endpoints`, each equally likely.
    Balanced {
        /// What matched: "a cluster IP", "an external address", "a node port", and
        /// whether the pods' short-circuit applied.
        matched: String,
        endpoints: Vec<(Ipv4Addr, u16)>,
        /// A client the table remembers goes back to the endpoint it had.
        affinity: bool,
        /// Why the source is rewritten to the node's address, if it is.
        masquerade: Option<String>,
    },
}

fn has(sets: &BTreeMap<String, Set>, set: &str, key: &[Value]) -> bool {
    sets.get(set)
        .is_some_and(|s| s.elements.contains_key(&Key(key.to_vec())))
}

fn in_interval(sets: &BTreeMap<String, Set>, set: &str, key: &[Value]) -> bool {
    sets.get(set).is_some_and(|s| {
        s.elements.iter().any(|(Key(from), e)| match &e.end {
            Some(Key(to)) => from.as_slice() <= key && key <= to.as_slice(),
            None => from.as_slice() == key,
        })
    })
}

/// The endpoints a backends map holds for `service` (its key without the slot).
fn endpoints(sets: &BTreeMap<String, Set>, map: &str, service: &[Value]) -> Vec<(Ipv4Addr, u16)> {
    let Some(m) = sets.get(map) else {
        return Vec::new();
    };
    m.elements
        .iter()
        .filter(|(Key(k), _)| k.len() == service.len() + 1 && k[..service.len()] == *service)
        .filter_map(|(_, e)| match &e.data {
            Some(ElemData::Value(d)) => match d.as_slice() {
                [Value::Ipv4(ip), Value::Port(p)] => Some((*ip, *p)),
                _ => None,
            },
            _ => None,
        })
        .collect()
}

/// The table's decision for `p`. `sets` are the `ip weft-proxy` table's sets.
pub fn decide(sets: &BTreeMap<String, Set>, cluster_cidr: Option<Ipv4Net>, p: &Packet) -> Decision {
    let addr = [
        Value::Ipv4(p.dst),
        Value::Proto(p.proto),
        Value::Port(p.dport),
    ];
    let port = [Value::Proto(p.proto), Value::Port(p.dport)];
    let from_pod = cluster_cidr.is_some_and(|c| c.contains(&p.src));
    let nodeport = p.dst_local && !p.dst.is_loopback();

    // filter-prerouting, before DNAT.
    if has(sets, "firewall", &addr) {
        let mut k = addr.to_vec();
        k.push(Value::Ipv4(p.src));
        if !in_interval(sets, "firewall-allow", &k) {
            return Decision::Dropped(format!(
                "{} is outside the Service's loadBalancerSourceRanges",
                p.src
            ));
        }
    }
    if has(sets, "no-endpoints", &addr) {
        return Decision::Rejected("the Service has no ready endpoint".into());
    }
    if has(sets, "no-local-endpoints", &addr) && !from_pod {
        return Decision::Dropped(
            "externalTrafficPolicy Local and no endpoint on this node".into(),
        );
    }
    if has(sets, "cluster-ip-addrs", &[Value::Ipv4(p.dst)]) && !has(sets, "cluster-ips", &addr) {
        return Decision::Rejected("a cluster IP, but no Service port matches".into());
    }
    if nodeport {
        if has(sets, "nodeport-no-endpoints", &port) {
            return Decision::Rejected("the node port's Service has no ready endpoint".into());
        }
        if has(sets, "nodeport-no-local-endpoints", &port) && !from_pod {
            return Decision::Dropped(
                "node port with externalTrafficPolicy Local and no endpoint on this node".into(),
            );
        }
    }

    // services, then nodeports.
    let mut masquerade = None;
    if has(sets, "cluster-ips", &addr) && !from_pod && cluster_cidr.is_some() {
        masquerade = Some("the client is outside the cluster CIDR".to_string());
    }
    let addr_kind = if has(sets, "cluster-ips", &addr) {
        "a cluster IP"
    } else {
        "an external address (LoadBalancer or externalIP)"
    };
    for (prefix, key, what) in [
        ("", &addr[..], addr_kind),
        ("nodeport-", &port[..], "a node port"),
    ] {
        if prefix == "nodeport-" && !nodeport {
            break;
        }
        if has(sets, &format!("{prefix}masq"), key) {
            masquerade = Some("externalTrafficPolicy Cluster".into());
        }
        if from_pod {
            let eps = endpoints(sets, &format!("{prefix}from-pods-backends"), key);
            if !eps.is_empty() {
                return balanced(
                    format!("{what}, from a pod (Local policy does not apply)"),
                    eps,
                    false,
                    masquerade,
                    p,
                );
            }
        }
        let eps = endpoints(sets, &format!("{prefix}backends"), key);
        if !eps.is_empty() {
            let affinity = has(sets, &format!("{prefix}affinity-services"), key);
            return balanced(what.to_string(), eps, affinity, masquerade, p);
        }
    }
    Decision::NotAService
}

fn balanced(
    matched: String,
    endpoints: Vec<(Ipv4Addr, u16)>,
    affinity: bool,
    mut masquerade: Option<String>,
    p: &Packet,
) -> Decision {
    if masquerade.is_none() && endpoints.iter().any(|(ip, _)| *ip == p.src) {
        masquerade = Some("hairpin, if the client is sent to itself".into());
    }
    Decision::Balanced {
        matched,
        endpoints,
        affinity,
        masquerade,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::endpoint::Endpoints;
    use crate::{desired, service, NodeContext, TABLE};
    use k8s_openapi::api::core::v1::Service;
    use k8s_openapi::api::discovery::v1::EndpointSlice;
    use serde_json::json;
    use weft_nft::Family;

    fn sets(svc: serde_json::Value, eps: &[&str]) -> BTreeMap<String, Set> {
        let svc: Service = serde_json::from_value(svc).unwrap();
        let endpoints: Vec<_> = eps
            .iter()
            .map(|ip| json!({"addresses": [ip], "nodeName": "node-2"}))
            .collect();
        let slice: EndpointSlice = serde_json::from_value(json!({
            "metadata": {"name": "s-1", "namespace": "a", "labels": {"kubernetes.io/service-name": "s"}},
            "addressType": "IPv4", "ports": [{"name": "", "port": 8080}], "endpoints": endpoints
        }))
        .unwrap();
        let node = NodeContext {
            node_name: "node-1".into(),
            cluster_cidr: Some("10.244.0.0/16".parse().unwrap()),
        };
        let rs = desired(
            &service::ports(&svc).unwrap(),
            &Endpoints::from_slices([&slice]),
            &node,
        );
        rs.table(Family::Ip, TABLE)
            .unwrap()
            .sets
            .iter()
            .map(|(n, s)| (n.clone(), (**s).clone()))
            .collect()
    }

    fn packet(src: [u8; 4], dst: [u8; 4], dport: u16, dst_local: bool) -> Packet {
        Packet {
            src: src.into(),
            dst: dst.into(),
            proto: 6,
            dport,
            dst_local,
        }
    }

    #[test]
    fn the_table_decides_like_the_kernel_rules() {
        let cidr = Some("10.244.0.0/16".parse().unwrap());
        let s = sets(
            json!({"metadata": {"name": "s", "namespace": "a"},
                   "spec": {"type": "NodePort", "clusterIP": "10.96.0.7", "externalTrafficPolicy": "Local",
                            "ports": [{"port": 80, "targetPort": 8080, "nodePort": 30007}]}}),
            &["10.244.2.5"],
        );
        let pod = packet([10, 244, 1, 2], [10, 96, 0, 7], 80, false);
        match decide(&s, cidr, &pod) {
            Decision::Balanced {
                matched,
                endpoints,
                masquerade,
                ..
            } => {
                assert_eq!(matched, "a cluster IP");
                assert_eq!(endpoints, vec![(Ipv4Addr::new(10, 244, 2, 5), 8080)]);
                assert_eq!(masquerade, None);
            }
            other => panic!("{other:?}"),
        }
        let wrong_port = packet([10, 244, 1, 2], [10, 96, 0, 7], 81, false);
        assert!(matches!(
            decide(&s, cidr, &wrong_port),
            Decision::Rejected(_)
        ));
        let outside = packet([192, 168, 1, 254], [192, 168, 1, 2], 30007, true);
        assert!(matches!(decide(&s, cidr, &outside), Decision::Dropped(_)));
        let from_pod = packet([10, 244, 1, 2], [192, 168, 1, 2], 30007, true);
        assert!(matches!(
            decide(&s, cidr, &from_pod),
            Decision::Balanced { .. }
        ));
        let elsewhere = packet([10, 244, 1, 2], [10, 244, 2, 5], 8080, false);
        assert_eq!(decide(&s, cidr, &elsewhere), Decision::NotAService);
        let none = sets(
            json!({"metadata": {"name": "s", "namespace": "a"},
                   "spec": {"clusterIP": "10.96.0.8", "ports": [{"port": 80}]}}),
            &[],
        );
        let p = packet([10, 244, 1, 2], [10, 96, 0, 8], 80, false);
        assert!(matches!(decide(&none, cidr, &p), Decision::Rejected(_)));
    }
}
