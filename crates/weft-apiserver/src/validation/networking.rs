//! NetworkPolicy, Ingress, EndpointSlice and ClusterNetworkPolicy.

use super::names::*;
use super::*;
use crate::error::Cause;

fn policy_port(v: &mut Causes, p: &Value, path: &str) {
    protocol(v, &p["protocol"], &format!("{path}.protocol"));
    let port = &p["port"];
    if !port.is_null() {
        int_or_name_port(v, port, &format!("{path}.port"));
    }
    if let Some(end) = p["endPort"].as_i64() {
        match port {
            Value::Null => v.push(Cause {
                reason: "FieldValueRequired",
                field: format!("{path}.endPort"),
                message: "Required value: may not be specified when `port` is not specified".into(),
            }),
            Value::String(_) => v.invalid(
                format!("{path}.endPort"),
                end,
                "may not be specified when `port` is non-numeric",
            ),
            _ => {
                let start = port.as_i64().unwrap_or(0);
                if end < start {
                    v.invalid(
                        format!("{path}.endPort"),
                        end,
                        "must be greater than or equal to `port`",
                    );
                } else if end > 65535 {
                    v.invalid(
                        format!("{path}.endPort"),
                        end,
                        "must be between 1 and 65535, inclusive",
                    );
                }
            }
        }
    }
}

fn ip_block(v: &mut Causes, b: &Value, path: &str) {
    let c = b["cidr"].as_str().unwrap_or("");
    if c.is_empty() {
        v.required(format!("{path}.cidr"));
        return;
    }
    let Some(net) = cidr(v, c, &format!("{path}.cidr")) else {
        return;
    };
    if let Some(ex) = b["except"].as_array() {
        for (i, e) in ex.iter().enumerate() {
            let es = e.as_str().unwrap_or("");
            let ep = format!("{path}.except[{i}]");
            let Some(en) = cidr(v, es, &ep) else { continue };
            let inside = net.contains(&en.network()) && en.prefix_len() > net.prefix_len();
            if !inside {
                v.invalid(ep, es, "must be a strict subset of `cidr`");
            }
        }
    }
}

fn peers(v: &mut Causes, list: &Value, path: &str) {
    let Some(ps) = list.as_array() else { return };
    for (i, p) in ps.iter().enumerate() {
        let pp = format!("{path}[{i}]");
        let kinds = ["podSelector", "namespaceSelector", "ipBlock"]
            .iter()
            .filter(|k| !p[**k].is_null())
            .count();
        if kinds == 0 {
            v.required(pp.clone());
            if let Some(c) = v.0.last_mut() {
                c.message = "Required value: must specify a peer".into();
            }
        }
        if !p["ipBlock"].is_null() && kinds > 1 {
            v.push(Cause::forbidden(
                pp.clone(),
                "may not specify more than 1 peer type",
            ));
        }
        label_selector(v, &p["podSelector"], &format!("{pp}.podSelector"));
        label_selector(
            v,
            &p["namespaceSelector"],
            &format!("{pp}.namespaceSelector"),
        );
        if !p["ipBlock"].is_null() {
            ip_block(v, &p["ipBlock"], &format!("{pp}.ipBlock"));
        }
    }
}

pub fn network_policy(v: &mut Causes, obj: &Value) {
    let spec = &obj["spec"];
    label_selector(v, &spec["podSelector"], "spec.podSelector");
    for (dir, peer_field) in [("ingress", "from"), ("egress", "to")] {
        let Some(rules) = spec[dir].as_array() else {
            continue;
        };
        for (i, r) in rules.iter().enumerate() {
            let rp = format!("spec.{dir}[{i}]");
            if let Some(ports) = r["ports"].as_array() {
                for (j, p) in ports.iter().enumerate() {
                    policy_port(v, p, &format!("{rp}.ports[{j}]"));
                }
            }
            peers(v, &r[peer_field], &format!("{rp}.{peer_field}"));
        }
    }
    if let Some(types) = spec["policyTypes"].as_array() {
        if types.len() > 2 {
            v.invalid(
                "spec.policyTypes",
                format!("{types:?}"),
                "may not specify more than two policyTypes",
            );
        }
        for (i, t) in types.iter().enumerate() {
            let s = t.as_str().unwrap_or("");
            if s != "Ingress" && s != "Egress" {
                v.push(Cause::not_supported(
                    format!("spec.policyTypes[{i}]"),
                    s,
                    &["Ingress", "Egress"],
                ));
            }
        }
    }
}

fn ingress_backend(v: &mut Causes, b: &Value, path: &str) {
    let svc = &b["service"];
    let res = &b["resource"];
    if svc.is_null() && res.is_null() {
        v.push(Cause::invalid(
            path,
            "",
            "one backend (`service` or `resource`) must be specified",
        ));
        return;
    }
    if !svc.is_null() {
        let name = svc["name"].as_str().unwrap_or("");
        if name.is_empty() {
            v.required(format!("{path}.service.name"));
        } else if !is_dns1035_label(name) {
            v.invalid(format!("{path}.service.name"), name, DNS1035_LABEL_MSG);
        }
        let port = &svc["port"];
        let has_num = port["number"].as_i64().is_some_and(|n| n != 0);
        let has_name = port["name"].as_str().is_some_and(|n| !n.is_empty());
        match (has_num, has_name) {
            (true, true) => v.push(Cause::invalid(
                format!("{path}.service.port"),
                "",
                "cannot set both port name & port number",
            )),
            (false, false) => v.required(format!("{path}.service.port.name")),
            (true, false) => port_number(
                v,
                &port["number"],
                &format!("{path}.service.port.number"),
                false,
            ),
            (false, true) => {
                let n = port["name"].as_str().unwrap_or("");
                if let Some(msg) = iana_svc_name_error(n) {
                    v.invalid(format!("{path}.service.port.name"), n, msg);
                }
            }
        }
    }
}

pub fn ingress(v: &mut Causes, obj: &Value) {
    let spec = &obj["spec"];
    if !spec["defaultBackend"].is_null() {
        ingress_backend(v, &spec["defaultBackend"], "spec.defaultBackend");
    }
    if let Some(rules) = spec["rules"].as_array() {
        for (i, r) in rules.iter().enumerate() {
            let rp = format!("spec.rules[{i}]");
            if let Some(h) = r["host"].as_str().filter(|h| !h.is_empty()) {
                if h.parse::<std::net::IpAddr>().is_ok() {
                    v.invalid(
                        format!("{rp}.host"),
                        h,
                        "must be a DNS name, not an IP address",
                    );
                } else if !is_wildcard_host(h) {
                    v.invalid(format!("{rp}.host"), h, DNS1123_SUBDOMAIN_MSG);
                }
            }
            let Some(paths) = r["http"]["paths"].as_array() else {
                if !r["http"].is_null() {
                    v.required(format!("{rp}.http.paths"));
                }
                continue;
            };
            if paths.is_empty() {
                v.required(format!("{rp}.http.paths"));
            }
            for (j, p) in paths.iter().enumerate() {
                let pp = format!("{rp}.http.paths[{j}]");
                let path = p["path"].as_str().unwrap_or("");
                match p["pathType"].as_str() {
                    None | Some("") => v.required(format!("{pp}.pathType")),
                    Some(t @ ("Exact" | "Prefix")) => {
                        if !path.starts_with('/') {
                            v.invalid(format!("{pp}.path"), path, "must be an absolute path");
                        }
                        if t == "Prefix" || t == "Exact" {
                            for bad in ["//", "/./", "/../", "%2f", "%2F"] {
                                if path.contains(bad) {
                                    v.invalid(
                                        format!("{pp}.path"),
                                        path,
                                        &format!("must not contain '{bad}'"),
                                    );
                                }
                            }
                        }
                    }
                    Some("ImplementationSpecific") => {
                        if !path.is_empty() && !path.starts_with('/') {
                            v.invalid(format!("{pp}.path"), path, "must be an absolute path");
                        }
                    }
                    Some(o) => v.push(Cause::not_supported(
                        format!("{pp}.pathType"),
                        o,
                        &["Exact", "ImplementationSpecific", "Prefix"],
                    )),
                }
                ingress_backend(v, &p["backend"], &format!("{pp}.backend"));
            }
        }
    }
    if let Some(tls) = spec["tls"].as_array() {
        for (i, t) in tls.iter().enumerate() {
            if let Some(hosts) = t["hosts"].as_array() {
                for (j, h) in hosts.iter().enumerate() {
                    let h = h.as_str().unwrap_or("");
                    if !is_wildcard_host(h) {
                        v.invalid(
                            format!("spec.tls[{i}].hosts[{j}]"),
                            h,
                            DNS1123_SUBDOMAIN_MSG,
                        );
                    }
                }
            }
        }
    }
}

pub fn endpoint_slice(v: &mut Causes, obj: &Value) {
    let at = obj["addressType"].as_str().unwrap_or("");
    let types = ["IPv4", "IPv6", "FQDN"];
    if at.is_empty() {
        v.required("addressType");
    } else if !types.contains(&at) {
        v.push(Cause::not_supported("addressType", at, &types));
    }
    if let Some(eps) = obj["endpoints"].as_array() {
        for (i, e) in eps.iter().enumerate() {
            let addrs = e["addresses"].as_array().cloned().unwrap_or_default();
            if addrs.is_empty() {
                v.required(format!("endpoints[{i}].addresses"));
            }
            for (j, a) in addrs.iter().enumerate() {
                let s = a.as_str().unwrap_or("");
                let p = format!("endpoints[{i}].addresses[{j}]");
                let ok = match at {
                    "IPv4" => s.parse::<std::net::Ipv4Addr>().is_ok(),
                    "IPv6" => s.parse::<std::net::Ipv6Addr>().is_ok(),
                    _ => is_dns1123_subdomain(s),
                };
                if !ok {
                    v.invalid(p, s, &format!("must be a valid {at} address"));
                }
            }
        }
    }
    if let Some(ports) = obj["ports"].as_array() {
        for (i, p) in ports.iter().enumerate() {
            if !p["port"].is_null() {
                port_number(v, &p["port"], &format!("ports[{i}].port"), false);
            }
            protocol(v, &p["protocol"], &format!("ports[{i}].protocol"));
        }
    }
}

/// policy.networking.k8s.io/v1alpha2: no k8s-openapi type, so only the shape that the
/// policy engine relies on is checked.
pub fn cluster_network_policy(v: &mut Causes, obj: &Value) {
    let spec = &obj["spec"];
    if !spec.is_object() {
        v.required("spec");
        return;
    }
    match spec["tier"].as_str() {
        Some("Admin" | "Baseline") => {}
        None => v.required("spec.tier"),
        Some(o) => v.push(Cause::not_supported("spec.tier", o, &["Admin", "Baseline"])),
    }
    match spec["priority"].as_i64() {
        Some(p) if (0..=1000).contains(&p) => {}
        Some(p) => v.invalid("spec.priority", p, "must be between 0 and 1000"),
        None => v.required("spec.priority"),
    }
    if spec["subject"].is_null() {
        v.required("spec.subject");
    }
    for dir in ["ingress", "egress"] {
        let Some(rules) = spec[dir].as_array() else {
            continue;
        };
        for (i, r) in rules.iter().enumerate() {
            let action = r["action"].as_str().unwrap_or("");
            let ok = ["Accept", "Deny", "Pass"];
            if !ok.contains(&action) {
                v.push(Cause::not_supported(
                    format!("spec.{dir}[{i}].action"),
                    action,
                    &ok,
                ));
            }
        }
    }
}
