//! What the real API server does to an object before validation: typed normalisation,
//! defaults, status resets, and allocation of ClusterIPs, NodePorts and node pod CIDRs.

mod alloc;
mod service;

use crate::error::{ApiError, Cause};
use crate::resources::{Resource, NODES};
use crate::server::NetConfig;
use crate::store::Tx;
use k8s_openapi::api::{
    apps::v1 as apps, coordination::v1 as coord, core::v1 as core, discovery::v1 as disc,
    events::v1 as events, networking::v1 as net,
};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{json, Value};

pub use alloc::{node_cidr, node_index_hint};

fn round_trip<T: DeserializeOwned + Serialize>(
    res: &Resource,
    v: Value,
) -> Result<Value, ApiError> {
    let typed: T = serde_json::from_value(v).map_err(|e| {
        ApiError::bad_request(format!(
            "{kind} in version \"{ver}\" cannot be handled as a {kind}: {e}",
            kind = res.kind,
            ver = res.version
        ))
    })?;
    serde_json::to_value(typed).map_err(|e| ApiError::internal(e.to_string()))
}

/// Decodes into the k8s-openapi type and back: rejects ill-typed fields and drops
/// unknown ones, as the real server's decoder does. ClusterNetworkPolicy has no
/// k8s-openapi type and stays dynamic JSON.
pub fn normalize(res: &Resource, v: Value) -> Result<Value, ApiError> {
    match res.kind {
        "Namespace" => round_trip::<core::Namespace>(res, v),
        "Node" => round_trip::<core::Node>(res, v),
        "Pod" => round_trip::<core::Pod>(res, v),
        "Service" => round_trip::<core::Service>(res, v),
        "Secret" => round_trip::<core::Secret>(res, v),
        "ConfigMap" => round_trip::<core::ConfigMap>(res, v),
        "Endpoints" => round_trip::<core::Endpoints>(res, v),
        "Event" if res.group == "events.k8s.io" => round_trip::<events::Event>(res, v),
        "Event" => round_trip::<core::Event>(res, v),
        "Lease" => round_trip::<coord::Lease>(res, v),
        "Deployment" => round_trip::<apps::Deployment>(res, v),
        "EndpointSlice" => round_trip::<disc::EndpointSlice>(res, v),
        "NetworkPolicy" => round_trip::<net::NetworkPolicy>(res, v),
        "Ingress" => round_trip::<net::Ingress>(res, v),
        "IngressClass" => round_trip::<net::IngressClass>(res, v),
        _ => Ok(v),
    }
}

fn typed_copy<T: DeserializeOwned + Serialize>(v: &Value) -> Option<Value> {
    let typed: T = serde_json::from_value(v.clone()).ok()?;
    serde_json::to_value(typed).ok()
}

/// The fields of a request body that the kind does not have, as kube-apiserver's strict
/// decoder names them (`spec.containers[0].bogus`). Found by comparing the body with its
/// typed round trip: a key the round trip dropped is unknown. Null values and empty
/// lists or maps are not reported (the typed form may omit them). A body that does not
/// decode yields none: `normalize` reports it. ClusterNetworkPolicy has no typed form.
pub fn unknown_fields(res: &Resource, v: &Value) -> Vec<String> {
    let typed = match res.kind {
        "Namespace" => typed_copy::<core::Namespace>(v),
        "Node" => typed_copy::<core::Node>(v),
        "Pod" => typed_copy::<core::Pod>(v),
        "Service" => typed_copy::<core::Service>(v),
        "Secret" => typed_copy::<core::Secret>(v),
        "ConfigMap" => typed_copy::<core::ConfigMap>(v),
        "Endpoints" => typed_copy::<core::Endpoints>(v),
        "Event" if res.group == "events.k8s.io" => typed_copy::<events::Event>(v),
        "Event" => typed_copy::<core::Event>(v),
        "Lease" => typed_copy::<coord::Lease>(v),
        "Deployment" => typed_copy::<apps::Deployment>(v),
        "EndpointSlice" => typed_copy::<disc::EndpointSlice>(v),
        "NetworkPolicy" => typed_copy::<net::NetworkPolicy>(v),
        "Ingress" => typed_copy::<net::Ingress>(v),
        "IngressClass" => typed_copy::<net::IngressClass>(v),
        _ => None,
    };
    let mut out = Vec::new();
    if let Some(t) = typed {
        dropped(v, &t, "", &mut out);
    }
    out
}

fn dropped(orig: &Value, kept: &Value, path: &str, out: &mut Vec<String>) {
    match (orig, kept) {
        (Value::Object(o), Value::Object(k)) => {
            for (key, val) in o {
                let p = if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                };
                match k.get(key) {
                    Some(kv) => dropped(val, kv, &p, out),
                    None => {
                        let empty = match val {
                            Value::Null => true,
                            Value::Array(a) => a.is_empty(),
                            Value::Object(m) => m.is_empty(),
                            _ => false,
                        };
                        if !empty {
                            out.push(p);
                        }
                    }
                }
            }
        }
        (Value::Array(o), Value::Array(k)) => {
            for (i, (ov, kv)) in o.iter().zip(k).enumerate() {
                dropped(ov, kv, &format!("{path}[{i}]"), out);
            }
        }
        _ => {}
    }
}

fn default_str(v: &mut Value, key: &str, val: &str) {
    if v[key].as_str().is_none_or(str::is_empty) {
        v[key] = json!(val);
    }
}

fn default_protocols(ports: &mut Value) {
    if let Some(ps) = ports.as_array_mut() {
        for p in ps {
            if p.is_object() {
                default_str(p, "protocol", "TCP");
            }
        }
    }
}

pub fn on_create(
    tx: &Tx,
    net: &NetConfig,
    res: &Resource,
    obj: &mut Value,
) -> Result<(), ApiError> {
    match res.kind {
        "Namespace" => {
            let name = crate::meta::name(obj).to_string();
            obj["metadata"]["labels"]["kubernetes.io/metadata.name"] = json!(name);
            if obj["spec"]["finalizers"].is_null() {
                obj["spec"]["finalizers"] = json!(["kubernetes"]);
            }
            obj["status"] = json!({"phase": "Active"});
        }
        "Pod" => {
            obj["status"] = json!({"phase": "Pending"});
            pod_defaults(obj);
        }
        "Deployment" => {
            obj["status"] = json!({});
            deployment_defaults(obj);
        }
        "Service" => {
            obj["status"] = json!({"loadBalancer": {}});
            service_defaults(obj);
            service::allocate_service(tx, net, obj, None)?;
            service::allocate_load_balancer(tx, obj, None);
        }
        "Node" => allocate_node(tx, net, obj, None)?,
        "Ingress" => obj["status"] = json!({"loadBalancer": {}}),
        _ => {}
    }
    common_defaults(res, obj);
    Ok(())
}

pub fn on_update(
    tx: &Tx,
    net: &NetConfig,
    res: &Resource,
    old: &Value,
    obj: &mut Value,
) -> Result<(), ApiError> {
    match res.kind {
        "Namespace" => {
            let name = crate::meta::name(obj).to_string();
            obj["metadata"]["labels"]["kubernetes.io/metadata.name"] = json!(name);
        }
        "Pod" => pod_defaults(obj),
        "Deployment" => deployment_defaults(obj),
        "Service" => {
            drop_type_dependent_fields(old, obj);
            service_defaults(obj);
            service::allocate_service(tx, net, obj, Some(old))?;
            service::allocate_load_balancer(tx, obj, Some(old));
        }
        "Node" => allocate_node(tx, net, obj, Some(old))?,
        _ => {}
    }
    common_defaults(res, obj);
    Ok(())
}

fn common_defaults(res: &Resource, obj: &mut Value) {
    match res.kind {
        "NetworkPolicy" => {
            let spec = &mut obj["spec"];
            if spec.is_object() && spec["policyTypes"].as_array().is_none_or(|a| a.is_empty()) {
                let mut types = vec!["Ingress"];
                if spec["egress"].as_array().is_some_and(|e| !e.is_empty()) {
                    types.push("Egress");
                }
                spec["policyTypes"] = json!(types);
            }
            for dir in ["ingress", "egress"] {
                if let Some(rules) = spec[dir].as_array_mut() {
                    for r in rules {
                        default_protocols(&mut r["ports"]);
                    }
                }
            }
        }
        "EndpointSlice" => default_protocols(&mut obj["ports"]),
        _ => {}
    }
}

fn deployment_defaults(obj: &mut Value) {
    let spec = &mut obj["spec"];
    if !spec.is_object() {
        return;
    }
    if spec["replicas"].is_null() {
        spec["replicas"] = json!(1);
    }
    if spec["strategy"]["type"].as_str().is_none_or(str::is_empty) {
        spec["strategy"]["type"] = json!("RollingUpdate");
    }
    if spec["strategy"]["type"] == "RollingUpdate" {
        let ru = &mut spec["strategy"]["rollingUpdate"];
        if ru["maxSurge"].is_null() {
            ru["maxSurge"] = json!("25%");
        }
        if ru["maxUnavailable"].is_null() {
            ru["maxUnavailable"] = json!("25%");
        }
    }
    if spec["revisionHistoryLimit"].is_null() {
        spec["revisionHistoryLimit"] = json!(10);
    }
    if spec["progressDeadlineSeconds"].is_null() {
        spec["progressDeadlineSeconds"] = json!(600);
    }
    pod_defaults(&mut spec["template"]);
}

fn pod_defaults(obj: &mut Value) {
    let spec = &mut obj["spec"];
    if !spec.is_object() {
        return;
    }
    default_str(spec, "restartPolicy", "Always");
    default_str(spec, "dnsPolicy", "ClusterFirst");
    default_str(spec, "schedulerName", "default-scheduler");
    if spec["terminationGracePeriodSeconds"].is_null() {
        spec["terminationGracePeriodSeconds"] = json!(30);
    }
    for list in ["containers", "initContainers"] {
        if let Some(cs) = spec[list].as_array_mut() {
            for c in cs {
                default_protocols(&mut c["ports"]);
            }
        }
    }
}

/// As the real API server does when a Service stops being a NodePort/LoadBalancer:
/// node ports and the external traffic policy the user did not change are dropped; when
/// it becomes an ExternalName, so are the ClusterIPs and IP families it had (which
/// releases them).
fn drop_type_dependent_fields(old: &Value, obj: &mut Value) {
    if obj["spec"]["type"] == "ExternalName" && old["spec"]["type"] != "ExternalName" {
        for f in ["clusterIP", "clusterIPs", "ipFamilies", "ipFamilyPolicy"] {
            if obj["spec"][f] == old["spec"][f] {
                if let Some(m) = obj["spec"].as_object_mut() {
                    m.remove(f);
                }
            }
        }
    }
    let external = |v: &Value| {
        matches!(
            v["spec"]["type"].as_str(),
            Some("NodePort" | "LoadBalancer")
        )
    };
    if !external(old) || external(obj) {
        return;
    }
    let old_ports = old["spec"]["ports"].as_array().cloned().unwrap_or_default();
    if let Some(ports) = obj["spec"]["ports"].as_array_mut() {
        for p in ports.iter_mut() {
            let unchanged = old_ports
                .iter()
                .any(|o| o["nodePort"] == p["nodePort"] && o["port"] == p["port"]);
            if unchanged {
                if let Some(m) = p.as_object_mut() {
                    m.remove("nodePort");
                }
            }
        }
    }
    if obj["spec"]["externalTrafficPolicy"] == old["spec"]["externalTrafficPolicy"] {
        if let Some(m) = obj["spec"].as_object_mut() {
            m.remove("externalTrafficPolicy");
        }
    }
}

fn service_defaults(obj: &mut Value) {
    let spec = &mut obj["spec"];
    if !spec.is_object() {
        return;
    }
    default_str(spec, "type", "ClusterIP");
    let ty = spec["type"].as_str().unwrap_or("ClusterIP").to_string();
    if ty == "ExternalName" {
        return;
    }
    default_str(spec, "sessionAffinity", "None");
    if spec["sessionAffinity"] == json!("ClientIP")
        && spec["sessionAffinityConfig"]["clientIP"]["timeoutSeconds"].is_null()
    {
        spec["sessionAffinityConfig"]["clientIP"]["timeoutSeconds"] = json!(10800);
    }
    default_str(spec, "internalTrafficPolicy", "Cluster");
    if ty == "NodePort" || ty == "LoadBalancer" {
        default_str(spec, "externalTrafficPolicy", "Cluster");
    }
    if let Some(ports) = spec["ports"].as_array_mut() {
        for p in ports {
            if !p.is_object() {
                continue;
            }
            default_str(p, "protocol", "TCP");
            if p["targetPort"].is_null()
                || p["targetPort"] == json!(0)
                || p["targetPort"] == json!("")
            {
                p["targetPort"] = p["port"].clone();
            }
        }
    }
}

fn allocate_node(
    tx: &Tx,
    net: &NetConfig,
    obj: &mut Value,
    old: Option<&Value>,
) -> Result<(), ApiError> {
    let old_cidr = old
        .and_then(|o| o["spec"]["podCIDR"].as_str())
        .filter(|s| !s.is_empty());
    let new_cidr = obj["spec"]["podCIDR"].as_str().filter(|s| !s.is_empty());
    let cidr = match (old_cidr, new_cidr) {
        (Some(o), None) => o.to_string(),
        (Some(o), Some(n)) if o == n => o.to_string(),
        (Some(_), Some(_)) => {
            return Err(ApiError::invalid(
                "Node",
                crate::meta::name(obj),
                vec![Cause::forbidden(
                    "spec.podCIDR",
                    "node updates may not change podCIDR except from \"\" to valid",
                )],
            ))
        }
        (None, Some(n)) => n.to_string(),
        (None, None) => {
            let name = crate::meta::name(obj).to_string();
            let used: Vec<String> = tx
                .list(NODES, None)
                .iter()
                .filter(|n| crate::meta::name(n) != name)
                .filter_map(|n| n["spec"]["podCIDR"].as_str().map(String::from))
                .collect();
            match node_cidr(net.cluster_cidr, net.node_cidr_size, &name, &used) {
                Some(c) => c.to_string(),
                None => {
                    tracing::warn!("no pod CIDR left in {} for node {name}", net.cluster_cidr);
                    return Ok(());
                }
            }
        }
    };
    obj["spec"]["podCIDR"] = json!(cidr);
    obj["spec"]["podCIDRs"] = json!([cidr]);
    Ok(())
}
