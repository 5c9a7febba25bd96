//! Server-side printing: `meta.k8s.io/v1 Table` responses, which `kubectl get` asks for,
//! with the columns the real API server prints for these kinds.

use crate::resources::Resource;
use serde_json::{json, Value};

pub fn wants_table(accept: &str) -> bool {
    accept.contains("as=Table")
}

/// Kubernetes' short human durations ("45s", "3m12s", "5h", "12d").
pub fn human_age(secs: u64) -> String {
    let (m, h, d) = (secs / 60, secs / 3600, secs / 86_400);
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 600 => format!("{m}m{}s", s % 60),
        s if s < 3 * 3600 => format!("{m}m"),
        s if s < 8 * 3600 => format!("{h}h{}m", m % 60),
        s if s < 48 * 3600 => format!("{h}h"),
        s if s < 8 * 86_400 => format!("{d}d{}h", h % 24),
        s if s < 2 * 365 * 86_400 => format!("{d}d"),
        _ => format!("{}y", d / 365),
    }
}

fn age(obj: &Value, now: u64) -> String {
    obj["metadata"]["creationTimestamp"]
        .as_str()
        .and_then(crate::meta::parse_rfc3339)
        .map(|t| human_age(now.saturating_sub(t)))
        .unwrap_or_else(|| "<unknown>".into())
}

fn s(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn or_none(x: String) -> String {
    if x.is_empty() {
        "<none>".into()
    } else {
        x
    }
}

fn selector_string(sel: &Value) -> String {
    let mut parts: Vec<String> = sel
        .as_object()
        .map(|m| m.iter().map(|(k, v)| format!("{k}={}", s(v))).collect())
        .unwrap_or_default();
    parts.sort();
    parts.join(",")
}

/// (name, type, priority) of each column after NAME.
fn columns(res: &Resource) -> Vec<(&'static str, &'static str, u8)> {
    match res.kind {
        "Pod" => vec![
            ("Ready", "string", 0),
            ("Status", "string", 0),
            ("Restarts", "string", 0),
            ("Age", "string", 0),
            ("IP", "string", 1),
            ("Node", "string", 1),
        ],
        "Service" => vec![
            ("Type", "string", 0),
            ("Cluster-IP", "string", 0),
            ("External-IP", "string", 0),
            ("Port(s)", "string", 0),
            ("Age", "string", 0),
            ("Selector", "string", 1),
        ],
        "Node" => vec![
            ("Status", "string", 0),
            ("Roles", "string", 0),
            ("Age", "string", 0),
            ("Version", "string", 0),
            ("Pod-CIDR", "string", 1),
            ("Internal-IP", "string", 1),
        ],
        "Namespace" => vec![("Status", "string", 0), ("Age", "string", 0)],
        "EndpointSlice" => vec![
            ("AddressType", "string", 0),
            ("Ports", "string", 0),
            ("Endpoints", "string", 0),
            ("Age", "string", 0),
        ],
        "NetworkPolicy" => vec![("Pod-Selector", "string", 0), ("Age", "string", 0)],
        "Ingress" => vec![
            ("Class", "string", 0),
            ("Hosts", "string", 0),
            ("Address", "string", 0),
            ("Ports", "string", 0),
            ("Age", "string", 0),
        ],
        "ConfigMap" => vec![("Data", "integer", 0), ("Age", "string", 0)],
        "Secret" => vec![
            ("Type", "string", 0),
            ("Data", "integer", 0),
            ("Age", "string", 0),
        ],
        "IngressClass" => vec![("Controller", "string", 0), ("Age", "string", 0)],
        "Deployment" => vec![
            ("Ready", "string", 0),
            ("Up-to-date", "integer", 0),
            ("Available", "integer", 0),
            ("Age", "string", 0),
        ],
        "Event" => vec![
            ("Last Seen", "string", 0),
            ("Type", "string", 0),
            ("Reason", "string", 0),
            ("Object", "string", 0),
            ("Message", "string", 0),
            ("Source", "string", 1),
            ("Count", "integer", 1),
        ],
        _ => vec![("Age", "string", 0)],
    }
}

fn event_cells(o: &Value, now: u64) -> Vec<Value> {
    let last = ["lastTimestamp", "eventTime"]
        .iter()
        .find_map(|k| o[*k].as_str().and_then(crate::meta::parse_rfc3339))
        .map(|t| human_age(now.saturating_sub(t)))
        .unwrap_or_else(|| age(o, now));
    let inv = &o["involvedObject"];
    let object = format!(
        "{}/{}",
        s(&inv["kind"]).to_ascii_lowercase(),
        s(&inv["name"])
    );
    let source = match (s(&o["source"]["component"]), s(&o["source"]["host"])) {
        (c, h) if h.is_empty() => c,
        (c, h) => format!("{c}, {h}"),
    };
    vec![
        json!(last),
        json!(s(&o["type"])),
        json!(s(&o["reason"])),
        json!(object),
        json!(s(&o["message"])),
        json!(source),
        json!(o["count"].as_i64().unwrap_or(1)),
    ]
}

fn pod_cells(o: &Value, now: u64) -> Vec<Value> {
    let total = o["spec"]["containers"].as_array().map_or(0, Vec::len);
    let statuses = o["status"]["containerStatuses"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let ready = statuses
        .iter()
        .filter(|c| c["ready"] == json!(true))
        .count();
    let restarts: i64 = statuses
        .iter()
        .filter_map(|c| c["restartCount"].as_i64())
        .sum();
    let status = if o["metadata"]["deletionTimestamp"].is_string() {
        "Terminating".to_string()
    } else {
        s(&o["status"]["phase"])
    };
    vec![
        json!(format!("{ready}/{total}")),
        json!(status),
        json!(restarts.to_string()),
        json!(age(o, now)),
        json!(or_none(s(&o["status"]["podIP"]))),
        json!(or_none(s(&o["spec"]["nodeName"]))),
    ]
}

fn service_cells(o: &Value, now: u64) -> Vec<Value> {
    let spec = &o["spec"];
    let ports: Vec<String> = spec["ports"]
        .as_array()
        .map(|ps| {
            ps.iter()
                .map(|p| {
                    let np = p["nodePort"]
                        .as_i64()
                        .map(|n| format!(":{n}"))
                        .unwrap_or_default();
                    format!("{}{np}/{}", s(&p["port"]), s(&p["protocol"]))
                })
                .collect()
        })
        .unwrap_or_default();
    let mut external: Vec<String> = spec["externalIPs"]
        .as_array()
        .map(|a| a.iter().map(s).collect())
        .unwrap_or_default();
    if let Some(ing) = o["status"]["loadBalancer"]["ingress"].as_array() {
        external.extend(ing.iter().map(|i| s(&i["ip"])));
    }
    let ext = match (spec["type"].as_str(), external.is_empty()) {
        (Some("ExternalName"), _) => s(&spec["externalName"]),
        (Some("LoadBalancer"), true) => "<pending>".into(),
        (_, true) => "<none>".into(),
        _ => external.join(","),
    };
    vec![
        json!(s(&spec["type"])),
        json!(or_none(s(&spec["clusterIP"]))),
        json!(ext),
        json!(or_none(ports.join(","))),
        json!(age(o, now)),
        json!(or_none(selector_string(&spec["selector"]))),
    ]
}

fn node_cells(o: &Value, now: u64) -> Vec<Value> {
    let ready = o["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready"))
        .map(|c| {
            if c["status"] == "True" {
                "Ready"
            } else {
                "NotReady"
            }
        })
        .unwrap_or("Unknown");
    let mut status = ready.to_string();
    if o["spec"]["unschedulable"] == json!(true) {
        status.push_str(",SchedulingDisabled");
    }
    let roles: Vec<String> = o["metadata"]["labels"]
        .as_object()
        .map(|m| {
            m.keys()
                .filter_map(|k| k.strip_prefix("node-role.kubernetes.io/").map(String::from))
                .collect()
        })
        .unwrap_or_default();
    let internal = o["status"]["addresses"]
        .as_array()
        .and_then(|a| a.iter().find(|x| x["type"] == "InternalIP"))
        .map(|x| s(&x["address"]))
        .unwrap_or_default();
    vec![
        json!(status),
        json!(or_none(roles.join(","))),
        json!(age(o, now)),
        json!(s(&o["status"]["nodeInfo"]["kubeletVersion"])),
        json!(or_none(s(&o["spec"]["podCIDR"]))),
        json!(or_none(internal)),
    ]
}

fn slice_cells(o: &Value, now: u64) -> Vec<Value> {
    let ports: Vec<String> = o["ports"]
        .as_array()
        .map(|ps| ps.iter().map(|p| s(&p["port"])).collect())
        .unwrap_or_default();
    let addrs: Vec<String> = o["endpoints"]
        .as_array()
        .map(|es| {
            es.iter()
                .filter_map(|e| e["addresses"][0].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    let shown = if addrs.len() > 3 {
        format!("{} + {} more...", addrs[..3].join(","), addrs.len() - 3)
    } else {
        addrs.join(",")
    };
    vec![
        json!(s(&o["addressType"])),
        json!(or_none(ports.join(","))),
        json!(or_none(shown)),
        json!(age(o, now)),
    ]
}

fn cells(res: &Resource, o: &Value, now: u64) -> Vec<Value> {
    let mut c = vec![json!(crate::meta::name(o))];
    let data_count = |o: &Value| {
        o["data"].as_object().map_or(0, |m| m.len())
            + o["binaryData"].as_object().map_or(0, |m| m.len())
    };
    c.extend(match res.kind {
        "Pod" => pod_cells(o, now),
        "Event" => event_cells(o, now),
        "Service" => service_cells(o, now),
        "Node" => node_cells(o, now),
        "EndpointSlice" => slice_cells(o, now),
        "Namespace" => vec![json!(s(&o["status"]["phase"])), json!(age(o, now))],
        "NetworkPolicy" => {
            let sel = selector_string(&o["spec"]["podSelector"]["matchLabels"]);
            vec![
                json!(if sel.is_empty() { "<none>".into() } else { sel }),
                json!(age(o, now)),
            ]
        }
        "Ingress" => {
            let hosts: Vec<String> = o["spec"]["rules"]
                .as_array()
                .map(|r| {
                    r.iter()
                        .map(|x| s(&x["host"]))
                        .filter(|h| !h.is_empty())
                        .collect()
                })
                .unwrap_or_default();
            let ports = if o["spec"]["tls"].is_array() {
                "80, 443"
            } else {
                "80"
            };
            vec![
                json!(or_none(s(&o["spec"]["ingressClassName"]))),
                json!(if hosts.is_empty() {
                    "*".into()
                } else {
                    hosts.join(",")
                }),
                json!(s(&o["status"]["loadBalancer"]["ingress"][0]["ip"])),
                json!(ports),
                json!(age(o, now)),
            ]
        }
        "ConfigMap" => vec![json!(data_count(o)), json!(age(o, now))],
        "Secret" => vec![
            json!(s(&o["type"])),
            json!(data_count(o)),
            json!(age(o, now)),
        ],
        "IngressClass" => vec![json!(s(&o["spec"]["controller"])), json!(age(o, now))],
        "Deployment" => {
            let st = &o["status"];
            let n = |v: &Value| v.as_i64().unwrap_or(0);
            vec![
                json!(format!(
                    "{}/{}",
                    n(&st["readyReplicas"]),
                    n(&o["spec"]["replicas"])
                )),
                json!(n(&st["updatedReplicas"])),
                json!(n(&st["availableReplicas"])),
                json!(age(o, now)),
            ]
        }
        _ => vec![json!(age(o, now))],
    });
    c
}

/// A Table of `items`; `include` is the includeObject parameter (None|Metadata|Object).
pub fn table(res: &Resource, items: &[&Value], list_meta: Value, include: &str) -> Value {
    let now = crate::meta::now_secs();
    let mut defs = vec![json!({"name": "Name", "type": "string", "format": "name",
        "description": "Name must be unique within a namespace.", "priority": 0})];
    defs.extend(columns(res).into_iter().map(
        |(n, t, p)| json!({"name": n, "type": t, "format": "", "description": "", "priority": p}),
    ));
    let rows: Vec<Value> = items
        .iter()
        .map(|o| {
            let mut row = json!({"cells": cells(res, o, now)});
            match include {
                "None" => {}
                "Object" => row["object"] = (*o).clone(),
                _ => {
                    row["object"] = json!({"kind": "PartialObjectMetadata",
                        "apiVersion": "meta.k8s.io/v1", "metadata": o["metadata"]})
                }
            }
            row
        })
        .collect();
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": list_meta,
        "columnDefinitions": defs,
        "rows": rows,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn ages_read_like_kubectl() {
        assert_eq!(human_age(5), "5s");
        assert_eq!(human_age(200), "3m20s");
        assert_eq!(human_age(4000), "66m");
        assert_eq!(human_age(5 * 3600 + 120), "5h2m");
        assert_eq!(human_age(3 * 86_400), "3d0h");
    }
}
