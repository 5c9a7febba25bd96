//! `healthCheckNodePort`: for a LoadBalancer Service with `externalTrafficPolicy: Local`,
//! each node answers HTTP on that port, 200 while it has a local endpoint and 503 while
//! it has none, so the load balancer only sends to nodes that will not drop the traffic.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Service;

use crate::endpoint::Endpoints;
use crate::service::{self, ServicePort};

/// What one health check port reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Health {
    pub namespace: String,
    pub name: String,
    pub local_endpoints: usize,
}

impl Health {
    pub fn status(&self) -> u16 {
        if self.local_endpoints > 0 {
            200
        } else {
            503
        }
    }

    /// The body kube-proxy answers with, so load balancers' checks read it alike.
    pub fn body(&self) -> String {
        format!(
            "{{\"service\":{{\"namespace\":\"{}\",\"name\":\"{}\"}},\"localEndpoints\":{},\"serviceProxyHealthy\":true}}",
            self.namespace, self.name, self.local_endpoints
        )
    }
}

/// The health check port `svc` needs on this node, with what it reports; `None` for
/// Services without one. `eps` must hold the Service's endpoints.
pub fn check(svc: &Service, eps: &Endpoints, node: &str) -> Option<(u16, Health)> {
    let port = port(svc)?;
    let ports = service::ports(svc).ok()?;
    Some(report(
        port,
        svc.metadata.namespace.as_deref().unwrap_or_default(),
        svc.metadata.name.as_deref().unwrap_or_default(),
        &ports,
        eps,
        node,
    ))
}

/// The first half of [`check`]: the health check port of a LoadBalancer Service with
/// `externalTrafficPolicy: Local` that weft proxies, which a controller keeps instead of
/// the Service.
pub fn port(svc: &Service) -> Option<u16> {
    let spec = svc.spec.as_ref()?;
    let port = spec
        .health_check_node_port
        .and_then(|p| u16::try_from(p).ok())
        .filter(|p| *p != 0)?;
    if spec.type_.as_deref() != Some("LoadBalancer")
        || spec.external_traffic_policy.as_deref() != Some("Local")
    {
        return None;
    }
    service::ports(svc).ok()?;
    Some(port)
}

/// The second half of [`check`]: what `port` reports for the Service of `ports`.
pub fn report(
    port: u16,
    namespace: &str,
    name: &str,
    ports: &[ServicePort],
    eps: &Endpoints,
    node: &str,
) -> (u16, Health) {
    // Endpoints are per port; a node counts an endpoint address once.
    let mut local = std::collections::BTreeSet::new();
    for sp in ports {
        let all = eps.of(sp);
        // Ready ones only: a node whose pods are all terminating answers 503, so the
        // load balancer drains it.
        for e in all
            .iter()
            .filter(|e| e.ready && e.node.as_deref() == Some(node))
        {
            local.insert(e.ip);
        }
    }
    (
        port,
        Health {
            namespace: namespace.to_string(),
            name: name.to_string(),
            local_endpoints: local.len(),
        },
    )
}

/// [`check`] for every Service.
pub fn checks(services: &[&Service], eps: &Endpoints, node: &str) -> BTreeMap<u16, Health> {
    services
        .iter()
        .filter_map(|svc| check(svc, eps, node))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::discovery::v1::EndpointSlice;
    use serde_json::json;

    #[test]
    fn local_endpoints_decide_200_or_503() {
        let svc: Service = serde_json::from_value(json!({
            "metadata": {"name": "lb", "namespace": "a"},
            "spec": {"type": "LoadBalancer", "clusterIP": "10.96.0.9", "externalTrafficPolicy": "Local",
                     "healthCheckNodePort": 32000, "ports": [{"name": "http", "port": 80, "nodePort": 30080}]}
        }))
        .unwrap();
        let slice: EndpointSlice = serde_json::from_value(json!({
            "metadata": {"name": "lb-1", "namespace": "a", "labels": {"kubernetes.io/service-name": "lb"}},
            "addressType": "IPv4", "ports": [{"name": "http", "port": 8080}],
            "endpoints": [{"addresses": ["10.244.1.2"], "nodeName": "node-1"},
                          {"addresses": ["10.244.2.2"], "nodeName": "node-2",
                           "conditions": {"ready": false, "serving": true, "terminating": true}}]
        }))
        .unwrap();
        let eps = Endpoints::from_slices([&slice]);
        let on1 = checks(&[&svc], &eps, "node-1");
        assert_eq!(on1[&32000].status(), 200);
        assert!(on1[&32000].body().contains("\"localEndpoints\":1"));
        // node-2's only pod is terminating: it drains.
        assert_eq!(checks(&[&svc], &eps, "node-2")[&32000].status(), 503);
    }
}
