//! What the real API server does to an object before validation: typed normalisation,
//! defaults, status resets, and allocation of ClusterIPs, NodePorts and node pod CIDRs.

mod alloc;
mod defaults;
mod service;

use crate::error::ApiError;
use crate::resources::Resource;
use crate::server::NetConfig;
use crate::store::Tx;
use crate::typed;
use k8s_openapi::api::{
    apps::v1 as apps, coordination::v1 as coord, core::v1 as core, discovery::v1 as disc,
    events::v1 as events, networking::v1 as net,
};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{json, Value};

pub use alloc::{node_cidr, node_index_hint, pod_capacity, pods_in_cidr};

fn round_trip<T: DeserializeOwned + Serialize>(
    res: &Resource,
    v: Value,
) -> Result<Value, ApiError> {
    typed::encode(&typed::decode::<T>(res, v)?)
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

fn default_protocols(ports: &mut Value) {
    if let Some(ps) = ports.as_array_mut() {
        for p in ps {
            if p.is_object() && p["protocol"].as_str().is_none_or(str::is_empty) {
                p["protocol"] = json!("TCP");
            }
        }
    }
}

/// Admission of a create: the body is decoded into its kind's type (the real server's
/// decoder: ill-typed fields are refused, unknown ones dropped), given its defaults and
/// allocations, and encoded back.
pub fn admit_create(
    tx: &Tx,
    net: &NetConfig,
    res: &Resource,
    obj: Value,
) -> Result<Value, ApiError> {
    let mut obj = match res.kind {
        "Namespace" => {
            let mut ns: core::Namespace = typed::decode(res, obj)?;
            defaults::namespace(&mut ns, true);
            typed::encode(&ns)?
        }
        "Pod" => {
            let mut pod: core::Pod = typed::decode(res, obj)?;
            pod.status = Some(core::PodStatus {
                phase: Some("Pending".into()),
                ..Default::default()
            });
            defaults::pod_spec(pod.spec.as_mut());
            typed::encode(&pod)?
        }
        "Deployment" => {
            let mut d: apps::Deployment = typed::decode(res, obj)?;
            d.status = Some(Default::default());
            defaults::deployment(&mut d);
            typed::encode(&d)?
        }
        "Service" => {
            let mut svc: core::Service = typed::decode(res, obj)?;
            svc.status = Some(core::ServiceStatus {
                load_balancer: Some(Default::default()),
                ..Default::default()
            });
            defaults::service(&mut svc);
            service::allocate_service(tx, net, &mut svc, None)?;
            service::allocate_load_balancer(tx, &mut svc, None);
            typed::encode(&svc)?
        }
        "Node" => {
            let mut node: core::Node = typed::decode(res, obj)?;
            alloc::allocate_node(tx, net, &mut node, None)?;
            typed::encode(&node)?
        }
        "Ingress" => {
            let mut ing: net::Ingress = typed::decode(res, obj)?;
            ing.status = Some(net::IngressStatus {
                load_balancer: Some(Default::default()),
            });
            typed::encode(&ing)?
        }
        _ => normalize(res, obj)?,
    };
    common_defaults(res, &mut obj);
    Ok(obj)
}

/// Admission of an update of `old` (stored, so already of its kind's shape) to `obj`.
pub fn admit_update(
    tx: &Tx,
    net: &NetConfig,
    res: &Resource,
    old: &Value,
    obj: Value,
) -> Result<Value, ApiError> {
    let mut obj = match res.kind {
        "Namespace" => {
            let mut ns: core::Namespace = typed::decode(res, obj)?;
            defaults::namespace(&mut ns, false);
            typed::encode(&ns)?
        }
        "Pod" => {
            let mut pod: core::Pod = typed::decode(res, obj)?;
            defaults::pod_spec(pod.spec.as_mut());
            typed::encode(&pod)?
        }
        "Deployment" => {
            let mut d: apps::Deployment = typed::decode(res, obj)?;
            defaults::deployment(&mut d);
            typed::encode(&d)?
        }
        "Service" => {
            let mut svc: core::Service = typed::decode(res, obj)?;
            let old_svc: core::Service = typed::view(old).unwrap_or_default();
            if let (Some(spec), Some(old_spec)) = (svc.spec.as_mut(), old_svc.spec.as_ref()) {
                defaults::drop_type_dependent_fields(old_spec, spec);
            }
            defaults::service(&mut svc);
            service::allocate_service(tx, net, &mut svc, Some(&old_svc))?;
            service::allocate_load_balancer(tx, &mut svc, Some(&old_svc));
            typed::encode(&svc)?
        }
        "Node" => {
            let mut node: core::Node = typed::decode(res, obj)?;
            let old: Option<core::Node> = typed::view(old);
            alloc::allocate_node(tx, net, &mut node, old.as_ref())?;
            typed::encode(&node)?
        }
        _ => normalize(res, obj)?,
    };
    common_defaults(res, &mut obj);
    Ok(obj)
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
