//! Legacy (non-aggregated) discovery documents, which kubectl and kube-rs both read.

use super::json_response;
use crate::resources::{self, Resource, RESOURCES};
use axum::extract::Path;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

pub async fn version() -> Response {
    json_response(
        StatusCode::OK,
        &json!({
            "major": "1",
            "minor": "32",
            "gitVersion": "v1.32.0-weft",
            "gitCommit": "weft",
            "gitTreeState": "clean",
            "buildDate": "2026-01-01T00:00:00Z",
            "goVersion": "rust",
            "compiler": "rustc",
            "platform": "linux/amd64"
        }),
    )
}

pub async fn core_versions() -> Response {
    json_response(
        StatusCode::OK,
        &json!({
            "kind": "APIVersions",
            "versions": ["v1"],
            "serverAddressByClientCIDRs": [],
        }),
    )
}

fn verbs() -> Value {
    json!([
        "create",
        "delete",
        "deletecollection",
        "get",
        "list",
        "patch",
        "update",
        "watch"
    ])
}

fn resource_list(group: &str, version: &str) -> Value {
    let mut out = Vec::new();
    for r in RESOURCES
        .iter()
        .filter(|r| r.group == group && r.version == version)
    {
        out.push(entry(r));
        if r.plural == "deployments" {
            out.push(json!({
                "name": "deployments/scale",
                "singularName": "",
                "namespaced": true,
                "group": "autoscaling",
                "version": "v1",
                "kind": "Scale",
                "verbs": ["get", "patch", "update"],
            }));
        }
        if r.has_status {
            out.push(json!({
                "name": format!("{}/status", r.plural),
                "singularName": "",
                "namespaced": r.namespaced,
                "kind": r.kind,
                "verbs": ["get", "patch", "update"],
            }));
        }
    }
    let gv = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": gv,
        "resources": out,
    })
}

fn entry(r: &Resource) -> Value {
    let mut e = json!({
        "name": r.plural,
        "singularName": r.singular,
        "namespaced": r.namespaced,
        "kind": r.kind,
        "verbs": verbs(),
    });
    if !r.short_names.is_empty() {
        e["shortNames"] = json!(r.short_names);
    }
    if matches!(r.plural, "pods" | "services") && r.group.is_empty() {
        // `kubectl get all`
        e["categories"] = json!(["all"]);
    }
    e
}

pub async fn core_resources() -> Response {
    json_response(StatusCode::OK, &resource_list("", "v1"))
}

fn group_doc(group: &str) -> Option<Value> {
    let versions: Vec<Value> = resources::api_groups()
        .into_iter()
        .filter(|(g, _)| *g == group)
        .map(|(g, v)| json!({"groupVersion": format!("{g}/{v}"), "version": v}))
        .collect();
    let first = versions.first()?.clone();
    Some(json!({
        "kind": "APIGroup",
        "apiVersion": "v1",
        "name": group,
        "versions": versions,
        "preferredVersion": first,
    }))
}

pub async fn groups() -> Response {
    let mut names: Vec<&str> = Vec::new();
    for (g, _) in resources::api_groups() {
        if !names.contains(&g) {
            names.push(g);
        }
    }
    let groups: Vec<Value> = names.iter().filter_map(|g| group_doc(g)).collect();
    json_response(
        StatusCode::OK,
        &json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}),
    )
}

pub async fn group(Path(group): Path<String>) -> Response {
    match group_doc(&group) {
        Some(doc) => json_response(StatusCode::OK, &doc),
        None => crate::error::ApiError::no_route(&format!("/apis/{group}")).into_response(),
    }
}

pub async fn group_resources(Path((group, version)): Path<(String, String)>) -> Response {
    if !resources::api_groups().contains(&(group.as_str(), version.as_str())) {
        return crate::error::ApiError::no_route(&format!("/apis/{group}/{version}"))
            .into_response();
    }
    json_response(StatusCode::OK, &resource_list(&group, &version))
}
