//! Endpoints from EndpointSlices, and which of them a Service port's traffic may use.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use k8s_openapi::api::discovery::v1::EndpointSlice;

use crate::service::{Protocol, ServicePort};

/// The label that ties an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Endpoint {
    pub ip: Ipv4Addr,
    pub port: u16,
    pub node: Option<String>,
    pub ready: bool,
    pub serving: bool,
    pub terminating: bool,
}

/// One slice port's endpoints, as the Service port with that name and protocol sees them.
#[derive(Debug, Clone, Default)]
pub struct Endpoints {
    by_port: BTreeMap<(String, String, String, Protocol), Vec<Endpoint>>,
}

impl Endpoints {
    /// Indexes every IPv4 slice by service, port name and protocol. Slices without the
    /// service-name label belong to no Service and are ignored, as kube-proxy does.
    pub fn from_slices<'a>(slices: impl IntoIterator<Item = &'a EndpointSlice>) -> Endpoints {
        let each: Vec<Endpoints> = slices.into_iter().map(Endpoints::of_slice).collect();
        Endpoints::merge(&each)
    }

    /// One slice's endpoints, as [`Endpoints::merge`] takes them: what a controller keeps
    /// of a slice instead of the whole object (a tenth of its size).
    pub fn of_slice(slice: &EndpointSlice) -> Endpoints {
        let mut by_port: BTreeMap<_, Vec<Endpoint>> = BTreeMap::new();
        if slice.address_type != "IPv4" {
            return Endpoints { by_port };
        }
        let Some(service) = slice
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(SERVICE_NAME_LABEL))
        else {
            return Endpoints { by_port };
        };
        let ns = slice.metadata.namespace.clone().unwrap_or_default();
        for p in slice.ports.iter().flatten() {
            let (Some(proto), Some(port)) = (
                Protocol::parse(p.protocol.as_deref()),
                p.port
                    .and_then(|n| u16::try_from(n).ok())
                    .filter(|n| *n != 0),
            ) else {
                continue;
            };
            let key = (
                ns.clone(),
                service.clone(),
                p.name.clone().unwrap_or_default(),
                proto,
            );
            let list = by_port.entry(key).or_default();
            for ep in slice.endpoints.iter().flatten() {
                let c = ep.conditions.as_ref();
                // Unset conditions mean ready and serving (discovery.k8s.io/v1).
                let ready = c.and_then(|c| c.ready).unwrap_or(true);
                let serving = c.and_then(|c| c.serving).unwrap_or(ready);
                let terminating = c.and_then(|c| c.terminating).unwrap_or(false);
                for ip in ep.addresses.iter().filter_map(|a| a.parse().ok()) {
                    list.push(Endpoint {
                        ip,
                        port,
                        node: ep.node_name.clone(),
                        ready,
                        serving,
                        terminating,
                    });
                }
            }
        }
        for list in by_port.values_mut() {
            list.shrink_to_fit();
        }
        Endpoints { by_port }
    }

    /// The endpoints of several slices together: the same address in two of them (a pod
    /// moving between slices) counts once, its readiest copy.
    pub fn merge<'a>(slices: impl IntoIterator<Item = &'a Endpoints>) -> Endpoints {
        let mut by_port: BTreeMap<_, Vec<Endpoint>> = BTreeMap::new();
        for s in slices {
            for (k, list) in &s.by_port {
                by_port
                    .entry(k.clone())
                    .or_default()
                    .extend_from_slice(list);
            }
        }
        for list in by_port.values_mut() {
            // Ready (then serving) copies first, so dedup keeps the best of duplicates.
            list.sort_by(|a, b| {
                (a.ip, a.port, !a.ready, !a.serving).cmp(&(b.ip, b.port, !b.ready, !b.serving))
            });
            // Two slices may list one address while a pod moves between them.
            list.dedup_by(|a, b| a.ip == b.ip && a.port == b.port);
        }
        Endpoints { by_port }
    }

    pub fn of(&self, sp: &ServicePort) -> &[Endpoint] {
        self.by_port
            .get(&(
                sp.namespace.clone(),
                sp.service.clone(),
                sp.port_name.clone(),
                sp.protocol,
            ))
            .map_or(&[], Vec::as_slice)
    }
}

/// The endpoints traffic may go to: the ready ones, or when none is ready, those still
/// serving while they terminate (so a rolling update never leaves a gap).
pub fn usable<'a>(eps: impl Iterator<Item = &'a Endpoint> + Clone) -> Vec<&'a Endpoint> {
    let ready: Vec<_> = eps.clone().filter(|e| e.ready).collect();
    if !ready.is_empty() {
        return ready;
    }
    eps.filter(|e| e.serving && e.terminating).collect()
}

/// What one kind of traffic to a Service port may reach on this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Targets<'a> {
    /// Load-balance across these.
    Some(Vec<&'a Endpoint>),
    /// The Service has no usable endpoint anywhere: the client is refused at once.
    None,
    /// Endpoints exist, but the traffic policy is Local and none is on this node: drop,
    /// as kube-proxy does, so the client's load balancer moves to another node.
    NoneLocal,
}

pub fn targets<'a>(all: &'a [Endpoint], local_only: bool, node: &str) -> Targets<'a> {
    let cluster = usable(all.iter());
    if cluster.is_empty() {
        return Targets::None;
    }
    if !local_only {
        return Targets::Some(cluster);
    }
    let local = usable(all.iter().filter(|e| e.node.as_deref() == Some(node)));
    if local.is_empty() {
        Targets::NoneLocal
    } else {
        Targets::Some(local)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn slice(v: serde_json::Value) -> EndpointSlice {
        serde_json::from_value(v).expect("slice")
    }

    fn sp() -> ServicePort {
        ServicePort {
            namespace: "a".into(),
            service: "web".into(),
            port_name: "http".into(),
            protocol: Protocol::Tcp,
            port: 80,
            cluster_ip: Some([10, 96, 0, 5].into()),
            node_port: None,
            external_ips: vec![],
            external_local: false,
            internal_local: false,
            affinity: None,
            load_balancer_ips: vec![],
            source_ranges: vec![],
        }
    }

    fn web_slice(endpoints: serde_json::Value) -> EndpointSlice {
        slice(json!({
            "metadata": {"name": "web-x", "namespace": "a", "labels": {SERVICE_NAME_LABEL: "web"}},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}, {"name": "metrics", "port": 9090}],
            "endpoints": endpoints
        }))
    }

    #[test]
    fn ready_endpoints_first_then_serving_terminating_ones() {
        let s = web_slice(json!([
            {"addresses": ["10.244.1.2"], "nodeName": "node-1"},
            {"addresses": ["10.244.2.2"], "nodeName": "node-2", "conditions": {"ready": false, "serving": true, "terminating": true}},
        ]));
        let eps = Endpoints::from_slices([&s]);
        let all = eps.of(&sp());
        assert_eq!(all.len(), 2);
        assert_eq!(all[0].port, 8080);
        let Targets::Some(t) = targets(all, false, "node-1") else {
            panic!("targets")
        };
        assert_eq!(t.len(), 1);
        assert_eq!(t[0].ip, Ipv4Addr::new(10, 244, 1, 2));
        // Only the terminating one left: it still serves.
        let s = web_slice(json!([
            {"addresses": ["10.244.2.2"], "nodeName": "node-2", "conditions": {"ready": false, "serving": true, "terminating": true}},
            {"addresses": ["10.244.2.3"], "nodeName": "node-2", "conditions": {"ready": false}},
        ]));
        let eps = Endpoints::from_slices([&s]);
        let Targets::Some(t) = targets(eps.of(&sp()), false, "node-1") else {
            panic!("targets")
        };
        assert_eq!(t.len(), 1);
        assert_eq!(t[0].ip, Ipv4Addr::new(10, 244, 2, 2));
    }

    #[test]
    fn local_policy_keeps_this_nodes_endpoints_or_drops() {
        let s = web_slice(json!([
            {"addresses": ["10.244.1.2"], "nodeName": "node-1"},
            {"addresses": ["10.244.2.2"], "nodeName": "node-2"},
        ]));
        let eps = Endpoints::from_slices([&s]);
        let all = eps.of(&sp());
        let Targets::Some(t) = targets(all, true, "node-2") else {
            panic!("targets")
        };
        assert_eq!(t.len(), 1);
        assert_eq!(t[0].node.as_deref(), Some("node-2"));
        assert_eq!(targets(all, true, "node-3"), Targets::NoneLocal);
        assert_eq!(targets(&[], true, "node-3"), Targets::None);
    }

    #[test]
    fn slices_of_other_services_ports_and_families_do_not_mix() {
        let unlabelled = slice(
            json!({"metadata": {"name": "x", "namespace": "a"}, "addressType": "IPv4",
            "ports": [{"name": "http", "port": 1}], "endpoints": [{"addresses": ["10.0.0.1"]}]}),
        );
        let v6 = slice(
            json!({"metadata": {"name": "y", "namespace": "a", "labels": {SERVICE_NAME_LABEL: "web"}},
            "addressType": "IPv6", "ports": [{"name": "http", "port": 1}], "endpoints": [{"addresses": ["fd00::1"]}]}),
        );
        let other_ns = slice(
            json!({"metadata": {"name": "z", "namespace": "b", "labels": {SERVICE_NAME_LABEL: "web"}},
            "addressType": "IPv4", "ports": [{"name": "http", "port": 1}], "endpoints": [{"addresses": ["10.0.0.2"]}]}),
        );
        let eps = Endpoints::from_slices([&unlabelled, &v6, &other_ns]);
        assert!(eps.of(&sp()).is_empty());
        // The same address in two slices counts once.
        let a = web_slice(json!([{"addresses": ["10.244.1.2"]}]));
        let eps = Endpoints::from_slices([&a, &a]);
        assert_eq!(eps.of(&sp()).len(), 1);
    }
}
