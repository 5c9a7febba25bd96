//! core/v1 kinds: Node, Pod, Service, ConfigMap/Secret keys.

use super::names::*;
use super::*;
use crate::error::Cause;

pub fn node(v: &mut Causes, obj: &Value) {
    if let Some(c) = obj["spec"]["podCIDR"].as_str().filter(|s| !s.is_empty()) {
        cidr(v, c, "spec.podCIDR");
    }
    if let Some(cs) = obj["spec"]["podCIDRs"].as_array() {
        for (i, c) in cs.iter().enumerate() {
            cidr(v, c.as_str().unwrap_or(""), &format!("spec.podCIDRs[{i}]"));
        }
    }
}

fn container_ports(v: &mut Causes, ports: &Value, path: &str, seen_names: &mut Vec<String>) {
    let Some(ps) = ports.as_array() else { return };
    for (i, p) in ps.iter().enumerate() {
        let pp = format!("{path}[{i}]");
        port_number(
            v,
            &p["containerPort"],
            &format!("{pp}.containerPort"),
            false,
        );
        if !p["hostPort"].is_null() {
            port_number(v, &p["hostPort"], &format!("{pp}.hostPort"), true);
        }
        protocol(v, &p["protocol"], &format!("{pp}.protocol"));
        if let Some(n) = p["name"].as_str().filter(|n| !n.is_empty()) {
            if let Some(msg) = iana_svc_name_error(n) {
                v.invalid(format!("{pp}.name"), n, msg);
            } else if seen_names.iter().any(|s| s == n) {
                v.push(Cause::duplicate(format!("{pp}.name"), format!("\"{n}\"")));
            } else {
                seen_names.push(n.to_string());
            }
        }
    }
}

pub fn pod(v: &mut Causes, obj: &Value, old: Option<&Value>) {
    let spec = &obj["spec"];
    let containers = spec["containers"].as_array();
    if containers.is_none_or(|c| c.is_empty()) {
        v.required("spec.containers");
    }
    let mut names: Vec<String> = Vec::new();
    for list in ["initContainers", "containers"] {
        let Some(cs) = spec[list].as_array() else {
            continue;
        };
        let mut port_names = Vec::new();
        for (i, c) in cs.iter().enumerate() {
            let path = format!("spec.{list}[{i}]");
            let name = c["name"].as_str().unwrap_or("");
            if name.is_empty() {
                v.required(format!("{path}.name"));
            } else if !is_dns1123_label(name) {
                v.invalid(format!("{path}.name"), name, DNS1123_LABEL_MSG);
            } else if names.iter().any(|n| n == name) {
                v.push(Cause::duplicate(
                    format!("{path}.name"),
                    format!("\"{name}\""),
                ));
            } else {
                names.push(name.to_string());
            }
            if c["image"].as_str().is_none_or(str::is_empty) {
                v.required(format!("{path}.image"));
            }
            container_ports(v, &c["ports"], &format!("{path}.ports"), &mut port_names);
        }
    }
    match spec["restartPolicy"].as_str() {
        Some("Always" | "OnFailure" | "Never") | None => {}
        Some(o) => v.push(Cause::not_supported(
            "spec.restartPolicy",
            o,
            &["Always", "OnFailure", "Never"],
        )),
    }
    if let Some(n) = spec["nodeName"].as_str().filter(|n| !n.is_empty()) {
        if !is_dns1123_subdomain(n) {
            v.invalid("spec.nodeName", n, DNS1123_SUBDOMAIN_MSG);
        }
        if let Some(prev) = old
            .and_then(|o| o["spec"]["nodeName"].as_str())
            .filter(|p| !p.is_empty())
        {
            if prev != n {
                v.push(Cause::forbidden(
                    "spec.nodeName",
                    "pod updates may not change the node a pod is bound to",
                ));
            }
        }
    }
    if let Some(ip) = obj["status"]["podIP"].as_str().filter(|s| !s.is_empty()) {
        super::ip(v, ip, "status.podIP");
    }
    if let Some(ips) = obj["status"]["podIPs"].as_array() {
        for (i, x) in ips.iter().enumerate() {
            super::ip(
                v,
                x["ip"].as_str().unwrap_or(""),
                &format!("status.podIPs[{i}].ip"),
            );
        }
    }
}

pub fn service(v: &mut Causes, obj: &Value) {
    let spec = &obj["spec"];
    let ty = spec["type"].as_str().unwrap_or("ClusterIP");
    let types = ["ClusterIP", "NodePort", "LoadBalancer", "ExternalName"];
    if !types.contains(&ty) {
        v.push(Cause::not_supported("spec.type", ty, &types));
    }
    if ty == "ExternalName" {
        let n = spec["externalName"].as_str().unwrap_or("");
        if n.is_empty() {
            v.required("spec.externalName");
        } else if !is_dns1123_subdomain(n.trim_end_matches('.')) {
            v.invalid("spec.externalName", n, DNS1123_SUBDOMAIN_MSG);
        }
        return;
    }
    let headless = spec["clusterIP"].as_str() == Some("None");
    let ports = spec["ports"].as_array().cloned().unwrap_or_default();
    if ports.is_empty() && !headless {
        v.required("spec.ports");
    }
    let mut seen: Vec<(i64, String)> = Vec::new();
    let mut names: Vec<String> = Vec::new();
    for (i, p) in ports.iter().enumerate() {
        let path = format!("spec.ports[{i}]");
        let name = p["name"].as_str().unwrap_or("");
        if ports.len() > 1 && name.is_empty() {
            v.required(format!("{path}.name"));
        } else if !name.is_empty() {
            if !is_dns1123_label(name) {
                v.invalid(format!("{path}.name"), name, DNS1123_LABEL_MSG);
            } else if names.iter().any(|n| n == name) {
                v.push(Cause::duplicate(
                    format!("{path}.name"),
                    format!("\"{name}\""),
                ));
            } else {
                names.push(name.to_string());
            }
        }
        port_number(v, &p["port"], &format!("{path}.port"), false);
        protocol(v, &p["protocol"], &format!("{path}.protocol"));
        int_or_name_port(v, &p["targetPort"], &format!("{path}.targetPort"));
        if let Some(np) = p["nodePort"].as_i64().filter(|n| *n != 0) {
            if ty == "ClusterIP" {
                v.push(Cause::forbidden(
                    format!("{path}.nodePort"),
                    "may not be used when `type` is 'ClusterIP'",
                ));
            } else if !(1..=65535).contains(&np) {
                v.invalid(
                    format!("{path}.nodePort"),
                    np,
                    "must be between 1 and 65535, inclusive",
                );
            }
        }
        let key = (
            p["port"].as_i64().unwrap_or(0),
            p["protocol"].as_str().unwrap_or("TCP").to_string(),
        );
        if seen.contains(&key) {
            v.push(Cause::duplicate(
                path.clone(),
                format!("{{{} {}}}", key.0, key.1),
            ));
        } else {
            seen.push(key);
        }
    }
    if let Some(sel) = spec["selector"].as_object() {
        labels(v, &Value::Object(sel.clone()), "spec.selector");
    }
    match spec["sessionAffinity"].as_str() {
        Some("None" | "ClientIP") | None => {}
        Some(o) => v.push(Cause::not_supported(
            "spec.sessionAffinity",
            o,
            &["ClientIP", "None"],
        )),
    }
    if let Some(t) = spec["sessionAffinityConfig"]["clientIP"]["timeoutSeconds"].as_i64() {
        if !(1..=86400).contains(&t) {
            v.invalid(
                "spec.sessionAffinityConfig.clientIP.timeoutSeconds",
                t,
                "must be greater than 0 and less than 86400",
            );
        }
    }
    for (field, allowed) in [
        ("externalTrafficPolicy", ["Cluster", "Local"]),
        ("internalTrafficPolicy", ["Cluster", "Local"]),
    ] {
        if let Some(s) = spec[field].as_str() {
            if !allowed.contains(&s) {
                v.push(Cause::not_supported(format!("spec.{field}"), s, &allowed));
            }
        }
    }
    if ty == "ClusterIP" && spec["externalTrafficPolicy"].is_string() {
        v.push(Cause::invalid(
            "spec.externalTrafficPolicy",
            spec["externalTrafficPolicy"].as_str().unwrap_or(""),
            "may only be set for externally-accessible services",
        ));
    }
    if let Some(ips) = spec["externalIPs"].as_array() {
        for (i, x) in ips.iter().enumerate() {
            ip(
                v,
                x.as_str().unwrap_or(""),
                &format!("spec.externalIPs[{i}]"),
            );
        }
    }
    if let Some(ranges) = spec["loadBalancerSourceRanges"].as_array() {
        for (i, x) in ranges.iter().enumerate() {
            cidr(
                v,
                x.as_str().unwrap_or(""),
                &format!("spec.loadBalancerSourceRanges[{i}]"),
            );
        }
    }
    if let Some(ip_s) = spec["loadBalancerIP"].as_str().filter(|s| !s.is_empty()) {
        ip(v, ip_s, "spec.loadBalancerIP");
    }
}

pub fn data_keys(v: &mut Causes, obj: &Value) {
    for field in ["data", "binaryData", "stringData"] {
        if let Some(m) = obj[field].as_object() {
            for k in m.keys() {
                if !is_config_key(k) {
                    v.invalid(format!("{field}[{k}]"), k, "a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')");
                }
            }
        }
    }
}

/// Does a metav1.LabelSelector select these labels?
fn selector_matches(sel: &Value, labels: &Value) -> bool {
    let get = |k: &str| labels.get(k).and_then(Value::as_str);
    let ml = sel["matchLabels"]
        .as_object()
        .is_none_or(|m| m.iter().all(|(k, v)| get(k) == v.as_str()));
    let me = sel["matchExpressions"].as_array().is_none_or(|es| {
        es.iter().all(|e| {
            let key = e["key"].as_str().unwrap_or("");
            let vals: Vec<&str> = e["values"]
                .as_array()
                .map(|a| a.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            match e["operator"].as_str() {
                Some("In") => get(key).is_some_and(|x| vals.contains(&x)),
                Some("NotIn") => get(key).is_none_or(|x| !vals.contains(&x)),
                Some("Exists") => get(key).is_some(),
                Some("DoesNotExist") => get(key).is_none(),
                _ => false,
            }
        })
    });
    ml && me
}

pub fn deployment(v: &mut Causes, obj: &Value) {
    let spec = &obj["spec"];
    if let Some(r) = spec["replicas"].as_i64() {
        if r < 0 {
            v.invalid("spec.replicas", r, "must be greater than or equal to 0");
        }
    }
    let sel = &spec["selector"];
    let empty = sel["matchLabels"].as_object().is_none_or(|m| m.is_empty())
        && sel["matchExpressions"]
            .as_array()
            .is_none_or(|e| e.is_empty());
    if sel.is_null() || empty {
        v.required("spec.selector");
    } else {
        label_selector(v, sel, "spec.selector");
        let labels = &spec["template"]["metadata"]["labels"];
        if !selector_matches(sel, labels) {
            v.invalid(
                "spec.template.metadata.labels",
                labels,
                "`selector` does not match template `labels`",
            );
        }
    }
    labels(
        v,
        &spec["template"]["metadata"]["labels"],
        "spec.template.metadata.labels",
    );
    // The pod template is checked with the Pod rules, fields renamed under the template.
    let pod = serde_json::json!({"metadata": spec["template"]["metadata"], "spec": spec["template"]["spec"]});
    let mut inner = Causes::default();
    super::core::pod(&mut inner, &pod, None);
    for mut c in inner.0 {
        c.field = format!("spec.template.{}", c.field);
        v.push(c);
    }
    match spec["strategy"]["type"].as_str() {
        Some("RollingUpdate" | "Recreate") | None => {}
        Some(o) => v.push(Cause::not_supported(
            "spec.strategy.type",
            o,
            &["Recreate", "RollingUpdate"],
        )),
    }
}
