//! A minimal OpenAPI v3 index. kubectl reads it only to learn that PATCH accepts
//! `fieldValidation` for each kind; when it does, kubectl leaves schema validation to
//! the server instead of downloading full schemas.

use super::json_response;
use crate::resources::{self, Resource, RESOURCES};
use axum::extract::Path;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{json, Map, Value};

fn gv_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

pub async fn root() -> Response {
    let mut paths = Map::new();
    let mut gvs = vec![("", "v1")];
    gvs.extend(resources::api_groups());
    for (g, v) in gvs {
        let p = gv_path(g, v);
        paths.insert(
            p.clone(),
            json!({"serverRelativeURL": format!("/openapi/v3/{p}?hash=weft1")}),
        );
    }
    json_response(StatusCode::OK, &json!({"paths": paths}))
}

fn operation(r: &Resource, action: &str) -> Value {
    let params: Vec<Value> = ["dryRun", "fieldManager", "fieldValidation", "force"]
        .iter()
        .map(|n| json!({"name": n, "in": "query", "schema": {"type": "string", "uniqueItems": true}}))
        .collect();
    json!({
        "operationId": format!("{action}{}", r.kind),
        "x-kubernetes-action": action,
        "x-kubernetes-group-version-kind": {"group": r.group, "version": r.version, "kind": r.kind},
        "parameters": params,
        "responses": {"200": {"description": "OK"}},
    })
}

fn doc(group: &str, version: &str) -> Value {
    let mut paths = Map::new();
    for r in RESOURCES
        .iter()
        .filter(|r| r.group == group && r.version == version)
    {
        let base = format!("/{}", gv_path(group, version));
        let item = if r.namespaced {
            format!("{base}/namespaces/{{namespace}}/{}/{{name}}", r.plural)
        } else {
            format!("{base}/{}/{{name}}", r.plural)
        };
        paths.insert(
            item,
            json!({"patch": operation(r, "patch"), "put": operation(r, "put")}),
        );
    }
    json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": "v1.32.0"},
        "paths": paths,
        "components": {"schemas": {}},
    })
}

pub async fn core(Path(version): Path<String>) -> Response {
    if version != "v1" {
        return crate::error::ApiError::no_route("/openapi/v3/api").into_response();
    }
    json_response(StatusCode::OK, &doc("", "v1"))
}

pub async fn group(Path((group, version)): Path<(String, String)>) -> Response {
    if !resources::api_groups().contains(&(group.as_str(), version.as_str())) {
        return crate::error::ApiError::no_route("/openapi/v3/apis").into_response();
    }
    json_response(StatusCode::OK, &doc(&group, &version))
}
