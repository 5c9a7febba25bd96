//! Validation with the real API server's rules and messages, per kind. Each function
//! returns every problem it finds as a `Cause` naming the field, so one 422 lists them all.

mod core;
pub mod names;
mod networking;

use crate::error::Cause;
use crate::resources::Resource;
use names::*;
use serde_json::Value;

/// Collects causes while walking an object.
#[derive(Default)]
pub struct Causes(pub Vec<Cause>);

impl Causes {
    pub fn push(&mut self, c: Cause) {
        self.0.push(c);
    }
    pub fn invalid(
        &mut self,
        field: impl Into<String>,
        value: impl std::fmt::Display,
        detail: &str,
    ) {
        self.0.push(Cause::invalid(field, value, detail));
    }
    pub fn required(&mut self, field: impl Into<String>) {
        self.0.push(Cause::required(field));
    }
}

/// How a kind's `metadata.name` is checked.
#[derive(Clone, Copy)]
pub enum NameRule {
    Label,
    Subdomain,
    Dns1035,
    Any,
}

fn name_rule(res: &Resource) -> NameRule {
    match res.kind {
        "Namespace" => NameRule::Label,
        "Service" => NameRule::Dns1035,
        "Event" => NameRule::Any,
        _ => NameRule::Subdomain,
    }
}

pub fn validate(res: &Resource, obj: &Value, old: Option<&Value>) -> Vec<Cause> {
    let mut v = Causes::default();
    validate_meta(&mut v, res, &obj["metadata"]);
    match res.kind {
        "Namespace" => {}
        "Node" => core::node(&mut v, obj),
        "Pod" => core::pod(&mut v, obj, old),
        "Service" => core::service(&mut v, obj),
        "Secret" | "ConfigMap" => core::data_keys(&mut v, obj),
        "EndpointSlice" => networking::endpoint_slice(&mut v, obj),
        "NetworkPolicy" => networking::network_policy(&mut v, obj),
        "Ingress" => networking::ingress(&mut v, obj),
        "IngressClass" if obj["spec"]["controller"].as_str().is_none_or(str::is_empty) => {
            v.required("spec.controller")
        }
        "ClusterNetworkPolicy" => networking::cluster_network_policy(&mut v, obj),
        "Deployment" => core::deployment(&mut v, obj),
        _ => {}
    }
    v.0
}

fn validate_meta(v: &mut Causes, res: &Resource, m: &Value) {
    let name = m["name"].as_str().unwrap_or("");
    if name.is_empty() {
        v.required("metadata.name");
    } else {
        let (ok, msg) = match name_rule(res) {
            NameRule::Label => (is_dns1123_label(name), DNS1123_LABEL_MSG),
            NameRule::Subdomain => (is_dns1123_subdomain(name), DNS1123_SUBDOMAIN_MSG),
            NameRule::Dns1035 => (is_dns1035_label(name), DNS1035_LABEL_MSG),
            NameRule::Any => (
                !name.contains('/') && name != "." && name != "..",
                "may not contain '/'",
            ),
        };
        if !ok {
            v.invalid("metadata.name", name, msg);
        }
    }
    if res.namespaced {
        let ns = m["namespace"].as_str().unwrap_or("");
        if ns.is_empty() {
            v.required("metadata.namespace");
        } else if !is_dns1123_label(ns) {
            v.invalid("metadata.namespace", ns, DNS1123_LABEL_MSG);
        }
    }
    labels(v, &m["labels"], "metadata.labels");
    if let Some(a) = m["annotations"].as_object() {
        for k in a.keys() {
            if !is_qualified_name(&k.to_ascii_lowercase()) {
                v.invalid("metadata.annotations", k, "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character");
            }
        }
    }
}

pub fn labels(v: &mut Causes, labels: &Value, path: &str) {
    let Some(map) = labels.as_object() else {
        return;
    };
    for (k, val) in map {
        if !is_qualified_name(k) {
            v.invalid(path, k, "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]') with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')");
        }
        let s = val.as_str().unwrap_or("");
        if !is_label_value(s) {
            v.invalid(format!("{path}[{k}]"), s, "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')");
        }
    }
}

/// A metav1.LabelSelector (matchLabels + matchExpressions).
pub fn label_selector(v: &mut Causes, sel: &Value, path: &str) {
    if sel.is_null() {
        return;
    }
    labels(v, &sel["matchLabels"], &format!("{path}.matchLabels"));
    if let Some(exprs) = sel["matchExpressions"].as_array() {
        for (i, e) in exprs.iter().enumerate() {
            let p = format!("{path}.matchExpressions[{i}]");
            let key = e["key"].as_str().unwrap_or("");
            if !is_qualified_name(key) {
                v.invalid(format!("{p}.key"), key, "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character");
            }
            let op = e["operator"].as_str().unwrap_or("");
            let nvals = e["values"].as_array().map_or(0, Vec::len);
            match op {
                "In" | "NotIn" if nvals == 0 => {
                    v.required(format!("{p}.values"));
                    if let Some(c) = v.0.last_mut() {
                        c.message =
                            "Required value: must be specified when `operator` is 'In' or 'NotIn'"
                                .into();
                    }
                }
                "Exists" | "DoesNotExist" if nvals > 0 => v.push(Cause::forbidden(
                    format!("{p}.values"),
                    "may not be specified when `operator` is 'Exists' or 'DoesNotExist'",
                )),
                "In" | "NotIn" | "Exists" | "DoesNotExist" => {}
                other => v.push(Cause::not_supported(
                    format!("{p}.operator"),
                    other,
                    &["In", "NotIn", "Exists", "DoesNotExist"],
                )),
            }
        }
    }
}

pub fn port_number(v: &mut Causes, port: &Value, path: &str, allow_zero: bool) {
    match port.as_i64() {
        Some(0) if allow_zero => {}
        Some(p) if (1..=65535).contains(&p) => {}
        Some(p) => v.invalid(path, p, "must be between 1 and 65535, inclusive"),
        None => v.required(path),
    }
}

pub fn protocol(v: &mut Causes, p: &Value, path: &str) {
    match p.as_str() {
        Some("TCP" | "UDP" | "SCTP") | None => {}
        Some(other) => v.push(Cause::not_supported(path, other, &["SCTP", "TCP", "UDP"])),
    }
}

/// An IntOrString port: a number in range or an IANA service name.
pub fn int_or_name_port(v: &mut Causes, p: &Value, path: &str) {
    match p {
        Value::Number(_) => port_number(v, p, path, false),
        Value::String(s) => {
            if let Some(msg) = iana_svc_name_error(s) {
                v.invalid(path, s, msg);
            }
        }
        _ => v.required(path),
    }
}

pub fn cidr(v: &mut Causes, s: &str, path: &str) -> Option<ipnet::IpNet> {
    match s.parse::<ipnet::IpNet>() {
        Ok(n) => Some(n),
        Err(_) => {
            v.invalid(
                path,
                s,
                "must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)",
            );
            None
        }
    }
}

pub fn ip(v: &mut Causes, s: &str, path: &str) {
    if s.parse::<std::net::IpAddr>().is_err() {
        v.invalid(
            path,
            s,
            "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)",
        );
    }
}
