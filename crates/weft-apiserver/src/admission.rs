//! What the real API server does to an object before validation: typed normalisation,
//! defaults, status resets, and allocation of ClusterIPs, NodePorts and node pod CIDRs.

mod alloc;

use crate::error::{ApiError, Cause};
use crate::resources::{Resource, NODES, SERVICES};
use crate::server::NetConfig;
use crate::store::Tx;
use k8s_openapi::api::{
    apps::v1 as apps, coordination::v1 as coord, core::v1 as core, discovery::v1 as disc,
    events::v1 as events, networking::v1 as net,
};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{json, Value};
use std::net::Ipv4Addr;

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
            allocate_service(tx, net, obj, None)?;
            allocate_load_balancer(tx, net, obj);
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
            allocate_service(tx, net, obj, Some(old))?;
            allocate_load_balancer(tx, net, obj);
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
/// node ports and the external traffic policy the user did not change are dropped.
fn drop_type_dependent_fields(old: &Value, obj: &mut Value) {
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

/// LoadBalancer Services get an ingress IP from `--load-balancer-cidr` (honouring
/// `spec.loadBalancerIP` when it is in the pool and free), in `status.loadBalancer`;
/// a Service that stops being a LoadBalancer gives its address back.
fn allocate_load_balancer(tx: &Tx, net: &NetConfig, obj: &mut Value) {
    let Some(pool) = net.load_balancer_cidr else {
        return;
    };
    let is_lb = obj["spec"]["type"] == "LoadBalancer";
    let current: Option<Ipv4Addr> = obj["status"]["loadBalancer"]["ingress"][0]["ip"]
        .as_str()
        .and_then(|s| s.parse().ok());
    if !is_lb {
        if current.is_some_and(|ip| pool.contains(&ip)) {
            obj["status"]["loadBalancer"] = json!({});
        }
        return;
    }
    if current.is_some() {
        return;
    }
    let name = crate::meta::name(obj).to_string();
    let ns = crate::meta::namespace(obj).to_string();
    let used: Vec<Ipv4Addr> = tx
        .list(SERVICES, None)
        .iter()
        .filter(|s| !(crate::meta::name(s) == name && crate::meta::namespace(s) == ns))
        .filter_map(|s| {
            s["status"]["loadBalancer"]["ingress"][0]["ip"]
                .as_str()?
                .parse()
                .ok()
        })
        .collect();
    let asked: Option<Ipv4Addr> = obj["spec"]["loadBalancerIP"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .filter(|ip| pool.contains(ip) && !used.contains(ip));
    let ip = asked.or_else(|| pool.hosts().find(|ip| !used.contains(ip)));
    match ip {
        Some(ip) => {
            obj["status"]["loadBalancer"] =
                json!({"ingress": [{"ip": ip.to_string(), "ipMode": "VIP"}]})
        }
        None => tracing::warn!("no LoadBalancer address left in {pool} for {ns}/{name}"),
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

fn allocate_service(
    tx: &Tx,
    net: &NetConfig,
    obj: &mut Value,
    old: Option<&Value>,
) -> Result<(), ApiError> {
    let name = crate::meta::name(obj).to_string();
    let ns = crate::meta::namespace(obj).to_string();
    let invalid = |c: Cause| ApiError::invalid("Service", &name, vec![c]);
    let others: Vec<_> = tx
        .list(SERVICES, None)
        .into_iter()
        .filter(|s| !(crate::meta::name(s) == name && crate::meta::namespace(s) == ns))
        .collect();
    let spec = &mut obj["spec"];
    let ty = spec["type"].as_str().unwrap_or("ClusterIP").to_string();
    if ty == "ExternalName" {
        return Ok(());
    }
    // ClusterIP: immutable once set; "None" means headless.
    let old_ip = old
        .and_then(|o| o["spec"]["clusterIP"].as_str())
        .filter(|s| !s.is_empty())
        .map(String::from);
    let asked = spec["clusterIP"]
        .as_str()
        .filter(|s| !s.is_empty())
        .map(String::from);
    let ip = match (&old_ip, asked) {
        (Some(o), None) => o.clone(),
        (Some(o), Some(a)) if *o == a => a,
        (Some(o), Some(a)) => {
            return Err(invalid(Cause::invalid(
                "spec.clusterIPs[0]",
                a,
                &format!("may not change once set (was {o})"),
            )))
        }
        (None, Some(a)) if a == "None" => a,
        (None, Some(a)) => {
            let parsed: Ipv4Addr = a.parse().map_err(|_| {
                invalid(Cause::invalid(
                    "spec.clusterIPs[0]",
                    &a,
                    "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)",
                ))
            })?;
            if !net.service_cidr.contains(&parsed) {
                return Err(invalid(Cause::invalid(
                    "spec.clusterIPs",
                    &a,
                    &format!("failed to allocate IP {a}: provided IP is not in the valid range. The range of valid IPs is {}", net.service_cidr),
                )));
            }
            if others
                .iter()
                .any(|s| s["spec"]["clusterIP"].as_str() == Some(a.as_str()))
            {
                return Err(invalid(Cause::invalid(
                    "spec.clusterIPs",
                    &a,
                    &format!("failed to allocate IP {a}: provided IP is already allocated"),
                )));
            }
            a
        }
        (None, None) => {
            let used: Vec<Ipv4Addr> = others
                .iter()
                .filter_map(|s| s["spec"]["clusterIP"].as_str()?.parse().ok())
                .collect();
            let is_kubernetes = ns == "default" && name == "kubernetes";
            alloc::cluster_ip(net.service_cidr, &used, is_kubernetes)
                .ok_or_else(|| {
                    ApiError::new(
                        axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                        "InternalError",
                        format!(
                            "failed to allocate a serviceIP: range {} is full",
                            net.service_cidr
                        ),
                    )
                })?
                .to_string()
        }
    };
    spec["clusterIP"] = json!(ip);
    spec["clusterIPs"] = json!([ip]);
    if ip != "None" {
        spec["ipFamilies"] = json!(["IPv4"]);
        default_str(spec, "ipFamilyPolicy", "SingleStack");
    }
    // NodePorts.
    let wants_node_ports = ty == "NodePort" || ty == "LoadBalancer";
    let used: Vec<u16> = others
        .iter()
        .flat_map(|s| s["spec"]["ports"].as_array().cloned().unwrap_or_default())
        .filter_map(|p| p["nodePort"].as_u64().map(|n| n as u16))
        .collect();
    let old_ports: Vec<Value> = old
        .and_then(|o| o["spec"]["ports"].as_array().cloned())
        .unwrap_or_default();
    let Some(ports) = spec["ports"].as_array_mut() else {
        return Ok(());
    };
    // NodePorts of this Service so far, with protocols: one number may serve TCP and UDP.
    let mut mine: Vec<(u16, String)> = Vec::new();
    for (i, p) in ports.iter_mut().enumerate() {
        let asked = p["nodePort"].as_u64().filter(|n| *n > 0);
        let proto = p["protocol"].as_str().unwrap_or("TCP").to_string();
        if !wants_node_ports {
            continue;
        }
        let port = match asked {
            Some(n) => {
                let n = n as u16;
                let (lo, hi) = net.node_port_range;
                if n < lo || n > hi {
                    return Err(invalid(Cause::invalid(
                        format!("spec.ports[{i}].nodePort"),
                        n,
                        &format!("provided port is not in the valid range. The range of valid ports is {lo}-{hi}"),
                    )));
                }
                if used.contains(&n) {
                    return Err(invalid(Cause::invalid(
                        format!("spec.ports[{i}].nodePort"),
                        n,
                        "provided port is already allocated",
                    )));
                }
                if mine.iter().any(|(m, pr)| *m == n && *pr == proto) {
                    return Err(invalid(Cause::duplicate(
                        format!("spec.ports[{i}].nodePort"),
                        n,
                    )));
                }
                n
            }
            None => {
                let kept = old_ports
                    .iter()
                    .find(|o| o["port"] == p["port"] && o["protocol"] == p["protocol"])
                    .and_then(|o| o["nodePort"].as_u64())
                    .map(|n| n as u16)
                    .filter(|n| !used.contains(n) && !mine.iter().any(|(m, _)| m == n));
                match kept.or_else(|| {
                    let mut all = used.clone();
                    all.extend(mine.iter().map(|(m, _)| *m));
                    alloc::node_port(net.node_port_range, &all)
                }) {
                    Some(n) => n,
                    None => {
                        return Err(ApiError::internal(
                            "failed to allocate a nodePort: range is full",
                        ))
                    }
                }
            }
        };
        p["nodePort"] = json!(port);
        mine.push((port, proto));
    }
    let health_used: Vec<u16> = others
        .iter()
        .filter_map(|s| s["spec"]["healthCheckNodePort"].as_u64().map(|n| n as u16))
        .chain(used.iter().copied())
        .chain(mine.iter().map(|(m, _)| *m))
        .collect();
    let old_health = old.and_then(|o| o["spec"]["healthCheckNodePort"].as_u64());
    allocate_health_check_port(net, spec, ty == "LoadBalancer", old_health, &health_used)
        .map_err(invalid)
}

/// A LoadBalancer Service with `externalTrafficPolicy: Local` gets `healthCheckNodePort`:
/// where each node tells the load balancer whether it has local endpoints.
fn allocate_health_check_port(
    net: &NetConfig,
    spec: &mut Value,
    load_balancer: bool,
    old: Option<u64>,
    used: &[u16],
) -> Result<(), Cause> {
    let wanted = load_balancer && spec["externalTrafficPolicy"] == "Local";
    let Some(m) = spec.as_object_mut() else {
        return Ok(());
    };
    if !wanted {
        m.remove("healthCheckNodePort");
        return Ok(());
    }
    let (lo, hi) = net.node_port_range;
    let port = match m
        .get("healthCheckNodePort")
        .and_then(Value::as_u64)
        .filter(|n| *n > 0)
    {
        Some(n) => {
            if n < lo as u64 || n > hi as u64 || used.contains(&(n as u16)) {
                return Err(Cause::invalid(
                    "spec.healthCheckNodePort",
                    n,
                    &format!("must be a free port in {lo}-{hi}"),
                ));
            }
            n as u16
        }
        None => match old
            .map(|n| n as u16)
            .filter(|n| !used.contains(n))
            .or_else(|| alloc::node_port(net.node_port_range, used))
        {
            Some(n) => n,
            None => {
                return Err(Cause::invalid(
                    "spec.healthCheckNodePort",
                    0,
                    "no free port left in the NodePort range",
                ))
            }
        },
    };
    m.insert("healthCheckNodePort".into(), json!(port));
    Ok(())
}
