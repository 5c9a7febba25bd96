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
            ("Nominated Node", "string", 1),
            ("Readiness Gates", "string", 1),
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
            ("Internal-IP", "string", 1),
            ("External-IP", "string", 1),
            ("OS-Image", "string", 1),
            ("Kernel-Version", "string", 1),
            ("Container-Runtime", "string", 1),
        ],
        "Endpoints" => vec![("Endpoints", "string", 0), ("Age", "string", 0)],
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

fn has_condition(o: &Value, ty: &str) -> bool {
    o["status"]["conditions"]
        .as_array()
        .is_some_and(|cs| cs.iter().any(|c| c["type"] == ty && c["status"] == "True"))
}

/// kube-apiserver's printPod: READY counts running ready containers; STATUS is the
/// phase, overridden by the pod's reason, a container's waiting or terminated reason,
/// and Terminating while a deletion is pending.
fn pod_cells(o: &Value, now: u64) -> Vec<Value> {
    let total = o["spec"]["containers"].as_array().map_or(0, Vec::len);
    let st = &o["status"];
    let mut reason = s(&st["phase"]);
    if let Some(r) = st["reason"].as_str().filter(|r| !r.is_empty()) {
        reason = r.to_string();
    }
    if st["conditions"].as_array().is_some_and(|cs| {
        cs.iter()
            .any(|c| c["type"] == "PodScheduled" && c["reason"] == "SchedulingGated")
    }) {
        reason = "SchedulingGated".into();
    }
    let statuses = st["containerStatuses"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let (mut ready, mut restarts, mut has_running) = (0, 0i64, false);
    let mut last_restart: Option<u64> = None;
    for c in statuses.iter().rev() {
        restarts += c["restartCount"].as_i64().unwrap_or(0);
        if let Some(t) = c["lastState"]["terminated"]["finishedAt"]
            .as_str()
            .and_then(crate::meta::parse_rfc3339)
        {
            last_restart = Some(last_restart.map_or(t, |l| l.max(t)));
        }
        let state = &c["state"];
        let text = |v: &Value| v.as_str().filter(|r| !r.is_empty()).map(String::from);
        if let Some(r) = text(&state["waiting"]["reason"]) {
            reason = r;
        } else if let Some(r) = text(&state["terminated"]["reason"]) {
            reason = r;
        } else if state["terminated"].is_object() {
            let t = &state["terminated"];
            reason = match t["signal"].as_i64().filter(|&n| n != 0) {
                Some(sig) => format!("Signal:{sig}"),
                None => format!("ExitCode:{}", t["exitCode"].as_i64().unwrap_or(0)),
            };
        } else if c["ready"] == json!(true) && state["running"].is_object() {
            has_running = true;
            ready += 1;
        }
    }
    if reason == "Completed" && has_running {
        reason = if has_condition(o, "Ready") {
            "Running".into()
        } else {
            "NotReady".into()
        };
    }
    if o["metadata"]["deletionTimestamp"].is_string() {
        if st["reason"] == "NodeLost" {
            reason = "Unknown".into();
        } else if !matches!(st["phase"].as_str(), Some("Succeeded" | "Failed")) {
            reason = "Terminating".into();
        }
    }
    let restarts = match last_restart {
        Some(t) if restarts != 0 => {
            format!("{restarts} ({} ago)", human_age(now.saturating_sub(t)))
        }
        _ => restarts.to_string(),
    };
    let gates = o["spec"]["readinessGates"]
        .as_array()
        .filter(|g| !g.is_empty())
        .map(|g| {
            let met = g
                .iter()
                .filter(|x| {
                    x["conditionType"]
                        .as_str()
                        .is_some_and(|t| has_condition(o, t))
                })
                .count();
            format!("{met}/{}", g.len())
        })
        .unwrap_or_default();
    vec![
        json!(format!("{ready}/{total}")),
        json!(reason),
        json!(restarts),
        json!(age(o, now)),
        json!(or_none(s(&st["podIP"]))),
        json!(or_none(s(&o["spec"]["nodeName"]))),
        json!(or_none(s(&st["nominatedNodeName"]))),
        json!(or_none(gates)),
    ]
}

/// Load-balancer ingress points, IP or else hostname, comma-separated.
fn lb_string(lb: &Value) -> String {
    lb["ingress"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|i| {
                    let ip = s(&i["ip"]);
                    if ip.is_empty() {
                        s(&i["hostname"])
                    } else {
                        ip
                    }
                })
                .filter(|x| !x.is_empty())
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default()
}

/// kube-apiserver's printService (wide: SELECTOR).
fn service_cells(o: &Value, now: u64) -> Vec<Value> {
    let spec = &o["spec"];
    let ports: Vec<String> = spec["ports"]
        .as_array()
        .map(|ps| {
            ps.iter()
                .map(|p| match p["nodePort"].as_i64().filter(|&n| n > 0) {
                    Some(np) => format!("{}:{np}/{}", s(&p["port"]), s(&p["protocol"])),
                    None => format!("{}/{}", s(&p["port"]), s(&p["protocol"])),
                })
                .collect()
        })
        .unwrap_or_default();
    let external_ips: Vec<String> = spec["externalIPs"]
        .as_array()
        .map(|a| a.iter().map(s).collect())
        .unwrap_or_default();
    let ext = match spec["type"].as_str().unwrap_or("ClusterIP") {
        "ClusterIP" | "NodePort" if !external_ips.is_empty() => external_ips.join(","),
        "ClusterIP" | "NodePort" => "<none>".into(),
        "LoadBalancer" => {
            let mut all: Vec<String> = Vec::new();
            let lb = lb_string(&o["status"]["loadBalancer"]);
            if !lb.is_empty() {
                all.extend(lb.split(',').map(String::from));
            }
            all.extend(external_ips);
            if all.is_empty() {
                "<pending>".into()
            } else {
                all.join(",")
            }
        }
        "ExternalName" => s(&spec["externalName"]),
        _ => "<unknown>".into(),
    };
    let cluster_ip = spec["clusterIPs"][0]
        .as_str()
        .map(String::from)
        .unwrap_or_else(|| or_none(s(&spec["clusterIP"])));
    vec![
        json!(s(&spec["type"])),
        json!(cluster_ip),
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
    // kube-apiserver's printNode: roles from node-role.kubernetes.io/ROLE labels and the
    // legacy kubernetes.io/role label, sorted; wide columns from status.nodeInfo, with
    // <unknown> for what the node agent did not report.
    if o["spec"]["unschedulable"] == json!(true) {
        status.push_str(",SchedulingDisabled");
    }
    let mut roles: Vec<String> = o["metadata"]["labels"]
        .as_object()
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| match k.strip_prefix("node-role.kubernetes.io/") {
                    Some(r) => Some(r.to_string()),
                    None if k == "kubernetes.io/role" => Some(s(v)),
                    None => None,
                })
                .filter(|r| !r.is_empty())
                .collect()
        })
        .unwrap_or_default();
    roles.sort();
    roles.dedup();
    let address = |ty: &str| {
        o["status"]["addresses"]
            .as_array()
            .and_then(|a| a.iter().find(|x| x["type"] == ty))
            .map(|x| s(&x["address"]))
            .unwrap_or_default()
    };
    let info = &o["status"]["nodeInfo"];
    let unknown = |v: &Value| {
        let x = s(v);
        if x.is_empty() {
            "<unknown>".to_string()
        } else {
            x
        }
    };
    vec![
        json!(status),
        json!(or_none(roles.join(","))),
        json!(age(o, now)),
        json!(s(&info["kubeletVersion"])),
        json!(or_none(address("InternalIP"))),
        json!(or_none(address("ExternalIP"))),
        json!(unknown(&info["osImage"])),
        json!(unknown(&info["kernelVersion"])),
        json!(unknown(&info["containerRuntimeVersion"])),
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

/// kube-apiserver's formatEndpoints: up to three IP:PORT (IP alone for a subset without
/// ports), then "+ N more...", `<none>` without subsets.
fn endpoints_string(o: &Value) -> String {
    let Some(subsets) = o["subsets"].as_array().filter(|s| !s.is_empty()) else {
        return "<none>".into();
    };
    const MAX: usize = 3;
    let (mut list, mut count) = (Vec::new(), 0usize);
    for ss in subsets {
        let addrs: Vec<String> = ss["addresses"]
            .as_array()
            .map(|a| a.iter().map(|x| s(&x["ip"])).collect())
            .unwrap_or_default();
        let ports = ss["ports"].as_array().cloned().unwrap_or_default();
        if ports.is_empty() {
            count += addrs.len();
            for ip in &addrs {
                if list.len() < MAX {
                    list.push(ip.clone());
                }
            }
            continue;
        }
        for p in &ports {
            count += addrs.len();
            for ip in &addrs {
                if list.len() < MAX {
                    let port = s(&p["port"]);
                    list.push(if ip.contains(':') {
                        format!("[{ip}]:{port}")
                    } else {
                        format!("{ip}:{port}")
                    });
                }
            }
        }
    }
    let ret = list.join(",");
    if count > MAX {
        format!("{ret} + {} more...", count - MAX)
    } else {
        ret
    }
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
        "Endpoints" => vec![json!(endpoints_string(o)), json!(age(o, now))],
        "Ingress" => {
            // kube-apiserver's formatHosts: at most three, then "+ N more...".
            let rules = o["spec"]["rules"].as_array().cloned().unwrap_or_default();
            let hosts: Vec<String> = rules
                .iter()
                .take(3)
                .map(|x| s(&x["host"]))
                .filter(|h| !h.is_empty())
                .collect();
            let mut hosts = hosts.join(",");
            if hosts.is_empty() {
                hosts = "*".into();
            } else if rules.len() > 3 {
                hosts = format!("{hosts} + {} more...", rules.len() - 3);
            }
            let ports = if o["spec"]["tls"].is_array() {
                "80, 443"
            } else {
                "80"
            };
            vec![
                json!(or_none(s(&o["spec"]["ingressClassName"]))),
                json!(hosts),
                json!(lb_string(&o["status"]["loadBalancer"])),
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
