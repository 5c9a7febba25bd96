//! What a Service's EndpointSlices and v1 Endpoints should be: pure functions from the
//! typed Service and its namespace's pods to the typed objects the controller writes.

use k8s_openapi::api::core::v1::{
    EndpointAddress, EndpointPort as CorePort, EndpointSubset, Endpoints, ObjectReference, Pod,
    Service, ServicePort,
};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use std::borrow::Borrow;
use std::collections::BTreeMap;

pub const MANAGED_BY: &str = "endpointslice-controller.k8s.io";
pub(super) const MANAGED_BY_LABEL: &str = "endpointslice.kubernetes.io/managed-by";
pub(super) const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
pub(super) const SKIP_MIRROR_LABEL: &str = "endpointslice.kubernetes.io/skip-mirror";
const HEADLESS_LABEL: &str = "service.kubernetes.io/headless";

fn label<'a>(meta: &'a ObjectMeta, key: &str) -> Option<&'a str> {
    meta.labels.as_ref()?.get(key).map(String::as_str)
}

/// The Service a slice this controller manages belongs to; None for anyone else's slice.
pub(super) fn managed_slice_owner(meta: &ObjectMeta) -> Option<Option<&str>> {
    (label(meta, MANAGED_BY_LABEL) == Some(MANAGED_BY)).then(|| label(meta, SERVICE_NAME_LABEL))
}

/// Endpoints this controller mirrored (upstream marks them the same way).
pub(super) fn endpoints_managed(meta: &ObjectMeta) -> bool {
    label(meta, SKIP_MIRROR_LABEL) == Some("true")
}

fn pod_ip(pod: &Pod) -> Option<&str> {
    let status = pod.status.as_ref()?;
    status
        .pod_ip
        .as_deref()
        .filter(|s| !s.is_empty())
        .or_else(|| Some(status.pod_ips.as_ref()?.first()?.ip.as_str()))
}

fn pod_ready(pod: &Pod) -> bool {
    let conditions = pod.status.as_ref().and_then(|s| s.conditions.as_ref());
    conditions.is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn selects(selector: &BTreeMap<String, String>, pod: &Pod) -> bool {
    let labels = pod.metadata.labels.as_ref();
    selector
        .iter()
        .all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v))
}

/// Resolves a Service port against one pod: numeric targetPorts as they are, named ones
/// through the pod's container ports with that name and protocol.
fn resolve_port(svc_port: &ServicePort, pod: &Pod) -> Option<EndpointPort> {
    let protocol = svc_port.protocol.as_deref().unwrap_or("TCP");
    let target = match &svc_port.target_port {
        Some(IntOrString::Int(n)) => *n,
        Some(IntOrString::String(name)) => {
            let containers = &pod.spec.as_ref()?.containers;
            containers
                .iter()
                .flat_map(|c| c.ports.as_deref().unwrap_or_default())
                .find(|p| {
                    p.name.as_deref() == Some(name.as_str())
                        && p.protocol.as_deref().unwrap_or("TCP") == protocol
                })?
                .container_port
        }
        None => svc_port.port,
    };
    Some(EndpointPort {
        // Always present, "" for an unnamed port, as the real controller writes it.
        name: Some(svc_port.name.clone().unwrap_or_default()),
        port: Some(target),
        protocol: Some(protocol.to_string()),
        app_protocol: svc_port.app_protocol.clone(),
    })
}

pub(crate) fn short_hash(s: &str) -> String {
    // FNV-1a: stable across runs and builds, unlike DefaultHasher.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    const ALPHA: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    (0..5)
        .map(|i| ALPHA[((h >> (i * 8)) % ALPHA.len() as u64) as usize] as char)
        .collect()
}

/// The selector a Service's slices and Endpoints follow: None without one (its slices are
/// someone else's) and for ExternalName Services.
pub fn selector(svc: &Service) -> Option<&BTreeMap<String, String>> {
    let spec = svc.spec.as_ref()?;
    if spec.type_.as_deref() == Some("ExternalName") {
        return None;
    }
    spec.selector.as_ref().filter(|s| !s.is_empty())
}

/// One pod's endpoint in a slice of Service `svc_name` in namespace `ns`.
fn endpoint(pod: &Pod, ip: &str, ns: &str, svc_name: &str, publish_not_ready: bool) -> Endpoint {
    let terminating = pod.metadata.deletion_timestamp.is_some();
    let serving = pod_ready(pod) || publish_not_ready;
    let pod_spec = pod.spec.as_ref();
    let non_empty = |s: Option<&String>| s.filter(|s| !s.is_empty()).cloned();
    // A hostname is published only for pods that name this Service as their subdomain.
    let hostname = pod_spec
        .filter(|s| s.subdomain.as_deref() == Some(svc_name))
        .and_then(|s| non_empty(s.hostname.as_ref()));
    Endpoint {
        addresses: vec![ip.to_string()],
        conditions: Some(EndpointConditions {
            ready: Some(serving && !terminating),
            serving: Some(serving),
            terminating: Some(terminating),
        }),
        target_ref: Some(ObjectReference {
            kind: Some("Pod".into()),
            namespace: Some(ns.to_string()),
            name: Some(pod.metadata.name.clone().unwrap_or_default()),
            uid: pod.metadata.uid.clone(),
            ..ObjectReference::default()
        }),
        node_name: non_empty(pod_spec.and_then(|s| s.node_name.as_ref())),
        hostname,
        ..Endpoint::default()
    }
}

/// The slices a Service should have, given the pods of its namespace. Empty for Services
/// without a selector (their slices are someone else's) and ExternalName Services.
pub fn desired_slices<P: Borrow<Pod>>(svc: &Service, pods: &[P]) -> Vec<EndpointSlice> {
    let (Some(selector), Some(spec)) = (selector(svc), svc.spec.as_ref()) else {
        return Vec::new();
    };
    let svc_name = svc.metadata.name.as_deref().unwrap_or("");
    let ns = svc.metadata.namespace.as_deref().unwrap_or("");
    let svc_ports = spec.ports.as_deref().unwrap_or_default();
    let publish_not_ready = spec.publish_not_ready_addresses == Some(true);
    // Pods grouped by their resolved port list: one slice per distinct list. The key is
    // the list's JSON, which also names the slice, so names stay what they were when the
    // list was built as JSON.
    let mut groups: BTreeMap<String, (Vec<EndpointPort>, Vec<Endpoint>)> = BTreeMap::new();
    let mut sorted: Vec<&Pod> = pods.iter().map(Borrow::borrow).collect();
    sorted.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    for pod in sorted {
        if pod.metadata.namespace.as_deref().unwrap_or("") != ns || !selects(selector, pod) {
            continue;
        }
        let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
        if matches!(phase, Some("Succeeded" | "Failed")) {
            continue;
        }
        let Some(ip) = pod_ip(pod) else { continue };
        if !ip.contains('.') {
            continue;
        }
        let ports: Vec<EndpointPort> = svc_ports
            .iter()
            .filter_map(|p| resolve_port(p, pod))
            .collect();
        let key = serde_json::to_string(&ports).unwrap_or_default();
        groups
            .entry(key)
            .or_insert_with(|| (ports, Vec::new()))
            .1
            .push(endpoint(pod, ip, ns, svc_name, publish_not_ready));
    }
    if groups.is_empty() {
        // Like the real controller: a placeholder slice says "no endpoints" explicitly.
        groups.insert("[]".into(), (Vec::new(), Vec::new()));
    }
    let prefix: String = svc_name.chars().take(56).collect();
    let labels = BTreeMap::from([
        (SERVICE_NAME_LABEL.to_string(), svc_name.to_string()),
        (MANAGED_BY_LABEL.to_string(), MANAGED_BY.to_string()),
    ]);
    let owner = OwnerReference {
        api_version: "v1".into(),
        kind: "Service".into(),
        name: svc_name.to_string(),
        uid: svc.metadata.uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    };
    groups
        .into_iter()
        .map(|(key, (ports, endpoints))| EndpointSlice {
            metadata: ObjectMeta {
                name: Some(format!("{prefix}-{}", short_hash(&key))),
                namespace: Some(ns.to_string()),
                labels: Some(labels.clone()),
                owner_references: Some(vec![owner.clone()]),
                ..ObjectMeta::default()
            },
            address_type: "IPv4".into(),
            // Written even when empty (`"endpoints": []`), as the real controller does.
            endpoints: Some(endpoints),
            ports: Some(ports),
        })
        .collect()
}

/// A slice's endpoint as an Endpoints address, with whether it is ready.
fn address(ep: &Endpoint, publish_not_ready: bool) -> Option<(EndpointAddress, bool)> {
    let c = ep.conditions.as_ref();
    let ready = publish_not_ready || c.and_then(|c| c.ready) == Some(true);
    // Terminating endpoints are left out of Endpoints altogether.
    if !ready && c.and_then(|c| c.terminating) == Some(true) {
        return None;
    }
    let a = EndpointAddress {
        ip: ep.addresses.first()?.clone(),
        hostname: ep.hostname.clone(),
        node_name: ep.node_name.clone(),
        target_ref: ep.target_ref.clone(),
    };
    Some((a, ready))
}

/// The v1 Endpoints mirroring a Service's desired slices.
pub fn desired_endpoints(svc: &Service, slices: &[EndpointSlice]) -> Endpoints {
    let spec = svc.spec.as_ref();
    let publish_not_ready = spec.and_then(|s| s.publish_not_ready_addresses) == Some(true);
    let mut subsets = Vec::new();
    for slice in slices {
        let (mut ready, mut not_ready) = (Vec::new(), Vec::new());
        for (a, is_ready) in slice
            .endpoints
            .iter()
            .flatten()
            .filter_map(|ep| address(ep, publish_not_ready))
        {
            if is_ready {
                ready.push(a);
            } else {
                not_ready.push(a);
            }
        }
        if ready.is_empty() && not_ready.is_empty() {
            continue;
        }
        ready.sort_by(|a, b| a.ip.cmp(&b.ip));
        not_ready.sort_by(|a, b| a.ip.cmp(&b.ip));
        let ports: Vec<CorePort> = slice
            .ports
            .iter()
            .flatten()
            .map(|p| CorePort {
                // Endpoints leave an unnamed port's name out; slices write "".
                name: p.name.clone().filter(|n| !n.is_empty()),
                port: p.port.unwrap_or_default(),
                protocol: p.protocol.clone(),
                app_protocol: p.app_protocol.clone(),
            })
            .collect();
        let some = |v: Vec<_>| (!v.is_empty()).then_some(v);
        subsets.push(EndpointSubset {
            addresses: some(ready),
            not_ready_addresses: some(not_ready),
            ports: (!ports.is_empty()).then_some(ports),
        });
    }
    let mut labels = svc.metadata.labels.clone().unwrap_or_default();
    labels.insert(SKIP_MIRROR_LABEL.into(), "true".into());
    if spec.and_then(|s| s.cluster_ip.as_deref()) == Some("None") {
        labels.insert(HEADLESS_LABEL.into(), String::new());
    }
    Endpoints {
        metadata: ObjectMeta {
            name: Some(svc.metadata.name.clone().unwrap_or_default()),
            namespace: Some(svc.metadata.namespace.clone().unwrap_or_default()),
            labels: Some(labels),
            ..ObjectMeta::default()
        },
        subsets: (!subsets.is_empty()).then_some(subsets),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(name: &str, ip: &str, ready: bool, port_name: &str, port: i64) -> Pod {
        crate::typed::view(&json!({
            "metadata": {"name": name, "namespace": "ns", "labels": {"app": "web"}, "uid": name},
            "spec": {"nodeName": "node-1", "containers": [{"name": "c", "ports": [
                {"name": port_name, "containerPort": port, "protocol": "TCP"}]}]},
            "status": {"podIP": ip, "conditions": [{"type": "Ready", "status": if ready {"True"} else {"False"}}]}
        }))
        .unwrap_or_default()
    }

    fn web() -> Service {
        let svc = json!({"metadata": {"name": "web", "namespace": "ns", "uid": "u"},
            "spec": {"selector": {"app": "web"}, "ports": [
                {"name": "http", "port": 80, "protocol": "TCP", "targetPort": "http"}]}});
        crate::typed::view(&svc).unwrap_or_default()
    }

    #[test]
    fn named_ports_resolve_per_pod_and_readiness_follows_condition() {
        let pods = vec![
            pod("a", "10.244.1.2", true, "http", 8080),
            pod("b", "10.244.2.2", false, "http", 9090),
        ];
        let slices = desired_slices(&web(), &pods);
        assert_eq!(slices.len(), 2);
        let port = |s: &EndpointSlice| s.ports.as_ref().and_then(|p| p.first()?.port);
        let a = slices.iter().find(|s| port(s) == Some(8080));
        let a = a
            .and_then(|s| s.endpoints.as_ref()?.first().cloned())
            .unwrap_or_default();
        assert_eq!(a.addresses, ["10.244.1.2"]);
        assert_eq!(a.conditions.and_then(|c| c.ready), Some(true));
        assert_eq!(a.node_name.as_deref(), Some("node-1"));
        let b = slices.iter().find(|s| port(s) == Some(9090));
        let b = b
            .and_then(|s| s.endpoints.as_ref()?.first().cloned())
            .unwrap_or_default();
        assert_eq!(b.conditions.and_then(|c| c.ready), Some(false));
    }

    /// Slice names hash the port list's JSON: the typed list must print as the JSON one
    /// did, or every existing slice would be replaced by a differently named one.
    #[test]
    fn slice_names_hash_the_port_list_as_json_did() {
        let slices = desired_slices(&web(), &[pod("a", "10.244.1.2", true, "http", 8080)]);
        let old_key = r#"[{"name":"http","port":8080,"protocol":"TCP"}]"#;
        let name = slices.first().and_then(|s| s.metadata.name.clone());
        assert_eq!(name, Some(format!("web-{}", short_hash(old_key))));
        let written = crate::typed::encode(&slices[0]).unwrap_or_default();
        assert_eq!(
            written["ports"],
            json!([{"name": "http", "port": 8080, "protocol": "TCP"}])
        );
        assert_eq!(written["endpoints"][0]["targetRef"]["kind"], "Pod");
        assert_eq!(written["apiVersion"], "discovery.k8s.io/v1");
    }

    #[test]
    fn endpoints_split_ready_and_not_ready_and_drop_terminating() {
        let mut gone = pod("c", "10.244.3.2", true, "http", 8080);
        gone.metadata.deletion_timestamp =
            serde_json::from_value(json!("2026-01-01T00:00:00Z")).ok();
        let pods = vec![
            pod("a", "10.244.1.2", true, "http", 8080),
            pod("b", "10.244.2.2", false, "http", 8080),
            gone,
        ];
        let svc = web();
        let ep = desired_endpoints(&svc, &desired_slices(&svc, &pods));
        let subsets = ep.subsets.unwrap_or_default();
        assert_eq!(subsets.len(), 1);
        let ips = |a: &Option<Vec<EndpointAddress>>| -> Vec<String> {
            a.iter().flatten().map(|a| a.ip.clone()).collect()
        };
        assert_eq!(ips(&subsets[0].addresses), ["10.244.1.2"]);
        assert_eq!(ips(&subsets[0].not_ready_addresses), ["10.244.2.2"]);
        let port = subsets[0].ports.as_ref().and_then(|p| p.first().cloned());
        assert_eq!(
            port.map(|p| (p.name, p.port)),
            Some((Some("http".into()), 8080))
        );
        let labels = ep.metadata.labels.unwrap_or_default();
        assert_eq!(
            labels.get(SKIP_MIRROR_LABEL).map(String::as_str),
            Some("true")
        );
    }
}
