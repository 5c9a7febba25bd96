//! EndpointSlices for Services with selectors: a pure function from a Service and its
//! namespace's pods to the desired slices, and an applier that writes the difference.
//!
//! A batch of store events touches only the Services it names, the Services whose
//! selector picks a changed pod (before or after the change, found through the store's
//! selector index), and the owners of managed slices someone deleted; each is
//! recomputed from the pods its selector picks (the store's label index). A full resync
//! (start-up, falling out of the event ring) does the same for every Service, one at a
//! time.
//!
//! The same pass keeps each selector Service's v1 Endpoints, mirrored from its desired
//! slices as kube-controller-manager's endpoints controller would write them: ready
//! endpoints in `addresses`, not-ready ones in `notReadyAddresses`, terminating ones left
//! out (all in `addresses` with publishNotReadyAddresses), one subset per port list.
//! Endpoints carry `endpointslice.kubernetes.io/skip-mirror` as upstream's do; only those
//! are deleted with their Service, so hand-written Endpoints of selector-less Services
//! stay the user's.

use super::decoded::Decoded;
use super::Reconcile;
use crate::api::crud;
use crate::resources::{ENDPOINTS, ENDPOINTSLICES, PODS, SERVICES};
use crate::server::AppState;
use crate::store::{self, Event, Tx};
use crate::typed;
use k8s_openapi::api::core::v1::{Pod, Service, ServicePort};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::{json, Map, Value};
use std::borrow::Borrow;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

pub const MANAGED_BY: &str = "endpointslice-controller.k8s.io";
const MANAGED_BY_LABEL: &str = "endpointslice.kubernetes.io/managed-by";
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
const SKIP_MIRROR_LABEL: &str = "endpointslice.kubernetes.io/skip-mirror";
const HEADLESS_LABEL: &str = "service.kubernetes.io/headless";

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
fn resolve_port(svc_port: &ServicePort, pod: &Pod) -> Option<Value> {
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
    let name = svc_port.name.as_deref().unwrap_or("");
    let mut p = json!({"name": name, "port": target, "protocol": protocol});
    if let Some(ap) = &svc_port.app_protocol {
        p["appProtocol"] = json!(ap);
    }
    Some(p)
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
fn selector(svc: &Service) -> Option<&BTreeMap<String, String>> {
    let spec = svc.spec.as_ref()?;
    if spec.type_.as_deref() == Some("ExternalName") {
        return None;
    }
    spec.selector.as_ref().filter(|s| !s.is_empty())
}

/// The slices a Service should have, given the pods of its namespace. Empty for Services
/// without a selector (their slices are someone else's) and ExternalName Services.
pub fn desired_slices<P: Borrow<Pod>>(svc: &Service, pods: &[P]) -> Vec<Value> {
    let (Some(selector), Some(spec)) = (selector(svc), svc.spec.as_ref()) else {
        return Vec::new();
    };
    let svc_name = svc.metadata.name.as_deref().unwrap_or("");
    let ns = svc.metadata.namespace.as_deref().unwrap_or("");
    let svc_ports = spec.ports.as_deref().unwrap_or_default();
    let publish_not_ready = spec.publish_not_ready_addresses == Some(true);
    let name_of = |p: &Pod| p.metadata.name.clone().unwrap_or_default();
    // Pods grouped by their resolved port list: one slice per distinct list.
    let mut groups: BTreeMap<String, (Vec<Value>, Vec<Value>)> = BTreeMap::new();
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
        let ports: Vec<Value> = svc_ports
            .iter()
            .filter_map(|p| resolve_port(p, pod))
            .collect();
        let terminating = pod.metadata.deletion_timestamp.is_some();
        let serving = pod_ready(pod) || publish_not_ready;
        let mut ep = json!({
            "addresses": [ip],
            "conditions": {"ready": serving && !terminating, "serving": serving, "terminating": terminating},
            "targetRef": {"kind": "Pod", "namespace": ns, "name": name_of(pod),
                "uid": pod.metadata.uid},
        });
        let pod_spec = pod.spec.as_ref();
        if let Some(node) = pod_spec.and_then(|s| s.node_name.as_deref()) {
            if !node.is_empty() {
                ep["nodeName"] = json!(node);
            }
        }
        if pod_spec.and_then(|s| s.subdomain.as_deref()) == Some(svc_name) {
            if let Some(h) = pod_spec.and_then(|s| s.hostname.as_deref()) {
                if !h.is_empty() {
                    ep["hostname"] = json!(h);
                }
            }
        }
        let key = Value::Array(ports.clone()).to_string();
        groups
            .entry(key)
            .or_insert_with(|| (ports, Vec::new()))
            .1
            .push(ep);
    }
    if groups.is_empty() {
        // Like the real controller: a placeholder slice says "no endpoints" explicitly.
        groups.insert("[]".into(), (Vec::new(), Vec::new()));
    }
    let prefix: String = svc_name.chars().take(56).collect();
    groups
        .into_iter()
        .map(|(key, (ports, endpoints))| {
            json!({
                "apiVersion": "discovery.k8s.io/v1",
                "kind": "EndpointSlice",
                "metadata": {
                    "name": format!("{prefix}-{}", short_hash(&key)),
                    "namespace": ns,
                    "labels": {SERVICE_NAME_LABEL: svc_name, MANAGED_BY_LABEL: MANAGED_BY},
                    "ownerReferences": [{"apiVersion": "v1", "kind": "Service", "name": svc_name,
                        "uid": svc.metadata.uid, "controller": true, "blockOwnerDeletion": true}],
                },
                "addressType": "IPv4",
                "endpoints": endpoints,
                "ports": ports,
            })
        })
        .collect()
}

/// The v1 Endpoints mirroring a Service's desired slices.
pub fn desired_endpoints(svc: &Service, slices: &[Value]) -> Value {
    let spec = svc.spec.as_ref();
    let publish_not_ready = spec.and_then(|s| s.publish_not_ready_addresses) == Some(true);
    let mut subsets = Vec::new();
    for slice in slices {
        let (mut ready, mut not_ready) = (Vec::new(), Vec::new());
        for ep in slice["endpoints"].as_array().into_iter().flatten() {
            let Some(ip) = ep["addresses"][0].as_str() else {
                continue;
            };
            let mut a = json!({"ip": ip});
            for k in ["hostname", "nodeName", "targetRef"] {
                if !ep[k].is_null() {
                    a[k] = ep[k].clone();
                }
            }
            let c = &ep["conditions"];
            if publish_not_ready || c["ready"] == json!(true) {
                ready.push(a);
            } else if c["terminating"] != json!(true) {
                not_ready.push(a);
            }
        }
        if ready.is_empty() && not_ready.is_empty() {
            continue;
        }
        let by_ip = |a: &Value, b: &Value| a["ip"].as_str().cmp(&b["ip"].as_str());
        ready.sort_by(by_ip);
        not_ready.sort_by(by_ip);
        let mut subset = Map::new();
        if !ready.is_empty() {
            subset.insert("addresses".into(), Value::Array(ready));
        }
        if !not_ready.is_empty() {
            subset.insert("notReadyAddresses".into(), Value::Array(not_ready));
        }
        let ports = slice["ports"].as_array().cloned().unwrap_or_default();
        if !ports.is_empty() {
            let ports: Vec<Value> = ports
                .into_iter()
                .map(|mut p| {
                    if p["name"] == "" {
                        if let Some(m) = p.as_object_mut() {
                            m.remove("name");
                        }
                    }
                    p
                })
                .collect();
            subset.insert("ports".into(), Value::Array(ports));
        }
        subsets.push(Value::Object(subset));
    }
    let mut labels: Map<String, Value> = svc
        .metadata
        .labels
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), json!(v)))
        .collect();
    labels.insert(SKIP_MIRROR_LABEL.into(), json!("true"));
    if spec.and_then(|s| s.cluster_ip.as_deref()) == Some("None") {
        labels.insert(HEADLESS_LABEL.into(), json!(""));
    }
    let mut ep = json!({
        "apiVersion": "v1",
        "kind": "Endpoints",
        "metadata": {
            "name": svc.metadata.name.as_deref().unwrap_or(""),
            "namespace": svc.metadata.namespace.as_deref().unwrap_or(""),
            "labels": labels,
        },
    });
    if !subsets.is_empty() {
        ep["subsets"] = Value::Array(subsets);
    }
    ep
}

fn endpoints_managed(ep: &Value) -> bool {
    ep["metadata"]["labels"][SKIP_MIRROR_LABEL] == "true"
}

/// Brings a Service's Endpoints to `want`; None deletes them if this controller made
/// them. A Service without a selector is not passed here: its Endpoints are the user's.
fn apply_endpoints(
    tx: &mut Tx,
    state: &AppState,
    ns: &str,
    name: &str,
    want: Option<Value>,
) -> Result<(), crate::error::ApiError> {
    let key = store::key(ENDPOINTS, ns, name);
    match (tx.get(ENDPOINTS, &key), want) {
        (None, Some(want)) => {
            crud::create_in(tx, state, ENDPOINTS, want, false)?;
        }
        (Some(old), Some(want))
            if old.get("subsets") != want.get("subsets")
                || old["metadata"]["labels"] != want["metadata"]["labels"] =>
        {
            let mut new = (*old).clone();
            match want.get("subsets") {
                Some(s) => new["subsets"] = s.clone(),
                None => {
                    if let Some(m) = new.as_object_mut() {
                        m.remove("subsets");
                    }
                }
            }
            new["metadata"]["labels"] = want["metadata"]["labels"].clone();
            crud::update_in(tx, state, ENDPOINTS, &key, &old, new, None, false)?;
        }
        (Some(old), None) if endpoints_managed(&old) => {
            crate::api::delete::delete_in(tx, ENDPOINTS, &key, &old, None, false)?;
        }
        _ => {}
    }
    Ok(())
}

fn managed_by_us(slice: &Value) -> bool {
    slice["metadata"]["labels"][MANAGED_BY_LABEL] == MANAGED_BY
}

/// Writes the difference between a set of managed slices and the desired ones.
fn apply_diff(
    tx: &mut Tx,
    state: &AppState,
    ns: &str,
    existing: &[Arc<Value>],
    mut desired: BTreeMap<String, Value>,
) -> Result<(), crate::error::ApiError> {
    for old in existing {
        let name = crate::meta::name(old).to_string();
        let key = store::key(ENDPOINTSLICES, ns, &name);
        match desired.remove(&name) {
            None => {
                crate::api::delete::delete_in(tx, ENDPOINTSLICES, &key, old, None, false)?;
            }
            Some(want) => {
                let same = old["endpoints"] == want["endpoints"]
                    && old["ports"] == want["ports"]
                    && old["metadata"]["labels"] == want["metadata"]["labels"]
                    && old["metadata"]["ownerReferences"] == want["metadata"]["ownerReferences"];
                if !same {
                    let mut new = (**old).clone();
                    new["endpoints"] = want["endpoints"].clone();
                    new["ports"] = want["ports"].clone();
                    new["metadata"]["labels"] = want["metadata"]["labels"].clone();
                    new["metadata"]["ownerReferences"] =
                        want["metadata"]["ownerReferences"].clone();
                    crud::update_in(tx, state, ENDPOINTSLICES, &key, old, new, None, false)?;
                }
            }
        }
    }
    for (_, s) in desired {
        crud::create_in(tx, state, ENDPOINTSLICES, s, false)?;
    }
    Ok(())
}

fn by_name(slices: Vec<Value>) -> BTreeMap<String, Value> {
    slices
        .into_iter()
        .map(|s| (crate::meta::name(&s).to_string(), s))
        .collect()
}

/// Brings one Service's managed slices to the desired state; a Service that is gone
/// (or has no selector) keeps none.
fn reconcile_service(
    tx: &mut Tx,
    state: &AppState,
    pods_decoded: &mut Decoded<Pod>,
    ns: &str,
    name: &str,
) -> Result<(), crate::error::ApiError> {
    let (desired, endpoints) = match tx.get(SERVICES, &store::key(SERVICES, ns, name)) {
        Some(stored) => {
            let svc: Service = typed::view(&stored).unwrap_or_default();
            let pods: Vec<Arc<Pod>> = match svc.spec.as_ref().and_then(|s| s.selector.as_ref()) {
                Some(sel) if !sel.is_empty() => {
                    let sel: Map<String, Value> =
                        sel.iter().map(|(k, v)| (k.clone(), json!(v))).collect();
                    let found = tx.select(PODS, ns, &sel);
                    found.iter().filter_map(|p| pods_decoded.get(p)).collect()
                }
                _ => Vec::new(),
            };
            let slices = desired_slices(&svc, &pods);
            // Some(None): a selector-less Service, whose Endpoints are left alone.
            let ep = selector(&svc).map(|_| desired_endpoints(&svc, &slices));
            (by_name(slices), Some(ep))
        }
        None => (BTreeMap::new(), Some(None)),
    };
    let mut mine = Map::new();
    mine.insert(SERVICE_NAME_LABEL.into(), json!(name));
    mine.insert(MANAGED_BY_LABEL.into(), json!(MANAGED_BY));
    let existing = tx.select(ENDPOINTSLICES, ns, &mine);
    apply_diff(tx, state, ns, &existing, desired)?;
    match endpoints {
        Some(Some(want)) => apply_endpoints(tx, state, ns, name, Some(want)),
        Some(None) if tx.get(SERVICES, &store::key(SERVICES, ns, name)).is_none() => {
            apply_endpoints(tx, state, ns, name, None)
        }
        _ => Ok(()),
    }
}

/// The Services (namespace, name) a batch of events may change the slices of.
fn affected(tx: &Tx, events: &[Arc<Event>]) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    for e in events {
        let ns = crate::meta::namespace(&e.object);
        if std::ptr::eq(e.res, SERVICES) {
            out.insert((ns.to_string(), crate::meta::name(&e.object).to_string()));
        } else if std::ptr::eq(e.res, PODS) {
            // The Services that picked the pod before the change and those that pick it now.
            for pod in std::iter::once(&e.object).chain(e.prev.as_ref()) {
                for svc in tx.services_selecting(ns, &pod["metadata"]["labels"]) {
                    out.insert((ns.to_string(), crate::meta::name(&svc).to_string()));
                }
            }
        } else if std::ptr::eq(e.res, ENDPOINTSLICES)
            && e.ty == crate::store::EventType::Deleted
            && managed_by_us(&e.object)
        {
            if let Some(svc) = e.object["metadata"]["labels"][SERVICE_NAME_LABEL].as_str() {
                out.insert((ns.to_string(), svc.to_string()));
            }
        } else if std::ptr::eq(e.res, ENDPOINTS)
            && e.ty == crate::store::EventType::Deleted
            && endpoints_managed(&e.object)
        {
            out.insert((ns.to_string(), crate::meta::name(&e.object).to_string()));
        }
    }
    out
}

/// Every Service, and every owner named by a managed slice or Endpoints (their Service
/// may be gone), recomputed one by one through the indexes as the event path does: the
/// cost follows the Services' own pods, not every pod of the namespace per Service, and
/// each write lock is held for one Service, so clients are served meanwhile (a restart
/// with 30k Services and 10k pods held the lock for minutes when a namespace was one
/// transaction over all its pods).
fn full_resync(state: &AppState, pods_decoded: &mut Decoded<Pod>) {
    let (owners, orphans) = {
        let st = state.store.read();
        let name = |o: &Value| crate::meta::name(o).to_string();
        let ns = |o: &Value| crate::meta::namespace(o).to_string();
        let mut owners: BTreeSet<(String, String)> = st
            .list(SERVICES, None)
            .iter()
            .map(|s| (ns(s), name(s)))
            .collect();
        let mut orphans = Vec::new();
        for slice in st.list(ENDPOINTSLICES, None) {
            if !managed_by_us(&slice) {
                continue;
            }
            match slice["metadata"]["labels"][SERVICE_NAME_LABEL].as_str() {
                Some(svc) => {
                    owners.insert((ns(&slice), svc.to_string()));
                }
                None => orphans.push(slice),
            }
        }
        for ep in st.list(ENDPOINTS, None) {
            if endpoints_managed(&ep) {
                owners.insert((ns(&ep), name(&ep)));
            }
        }
        (owners, orphans)
    };
    // A managed slice that names no Service belongs to none.
    for slice in orphans {
        let key = store::object_key(ENDPOINTSLICES, &slice);
        let r = state.store.write(|tx| match tx.get(ENDPOINTSLICES, &key) {
            Some(cur) => crate::api::delete::delete_in(tx, ENDPOINTSLICES, &key, &cur, None, false)
                .map(|_| ()),
            None => Ok(()),
        });
        if let Err(e) = r {
            tracing::warn!("endpointslice controller, slice {key}: {}", e.message);
        }
    }
    reconcile_each(state, pods_decoded, owners);
}

/// Each Service in a transaction of its own, so the store lock is never held across many.
fn reconcile_each(
    state: &AppState,
    pods_decoded: &mut Decoded<Pod>,
    services: BTreeSet<(String, String)>,
) {
    for (ns, name) in services {
        let r = state
            .store
            .write(|tx| reconcile_service(tx, state, pods_decoded, &ns, &name));
        if let Err(e) = r {
            tracing::warn!(
                "endpointslice controller, service {ns}/{name}: {}",
                e.message
            );
        }
    }
}

#[derive(Default)]
pub struct Controller {
    /// Pods as k8s-openapi types, decoded once per stored version.
    pods: Decoded<Pod>,
}

impl Reconcile for Controller {
    fn reconcile(&mut self, state: &AppState, events: Option<&[Arc<Event>]>) {
        let Some(events) = events else {
            full_resync(state, &mut self.pods);
            return;
        };
        // A transaction that writes nothing: a consistent read of the indexes.
        let services = match state.store.write(|tx| Ok(affected(tx, events))) {
            Ok((s, _)) => s,
            Err(e) => {
                tracing::warn!("endpointslice controller: {}", e.message);
                return;
            }
        };
        reconcile_each(state, &mut self.pods, services);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, ip: &str, ready: bool, port_name: &str, port: i64) -> Pod {
        typed::view(&json!({
            "metadata": {"name": name, "namespace": "ns", "labels": {"app": "web"}, "uid": name},
            "spec": {"nodeName": "node-1", "containers": [{"name": "c", "ports": [
                {"name": port_name, "containerPort": port, "protocol": "TCP"}]}]},
            "status": {"podIP": ip, "conditions": [{"type": "Ready", "status": if ready {"True"} else {"False"}}]}
        }))
        .unwrap_or_default()
    }

    #[test]
    fn named_ports_resolve_per_pod_and_readiness_follows_condition() {
        let svc = json!({"metadata": {"name": "web", "namespace": "ns", "uid": "u"},
            "spec": {"selector": {"app": "web"}, "ports": [
                {"name": "http", "port": 80, "protocol": "TCP", "targetPort": "http"}]}});
        let svc: Service = typed::view(&svc).unwrap_or_default();
        let pods = vec![
            pod("a", "10.244.1.2", true, "http", 8080),
            pod("b", "10.244.2.2", false, "http", 9090),
        ];
        let slices = desired_slices(&svc, &pods);
        assert_eq!(slices.len(), 2);
        let a = slices
            .iter()
            .find(|s| s["ports"][0]["port"] == 8080)
            .cloned()
            .unwrap_or_default();
        assert_eq!(a["endpoints"][0]["addresses"][0], "10.244.1.2");
        assert_eq!(a["endpoints"][0]["conditions"]["ready"], true);
        assert_eq!(a["endpoints"][0]["nodeName"], "node-1");
        let b = slices
            .iter()
            .find(|s| s["ports"][0]["port"] == 9090)
            .cloned()
            .unwrap_or_default();
        assert_eq!(b["endpoints"][0]["conditions"]["ready"], false);
    }
}
