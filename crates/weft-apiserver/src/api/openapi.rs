//! A minimal OpenAPI v3 index. kubectl reads it only to learn that PATCH accepts
//! `fieldValidation` for each kind; when it does, kubectl leaves schema validation to
//! the server instead of downloading full schemas.
//!
//! `kind: List` (what `kubectl get -o yaml` writes) is the one document kubectl never
//! asks the v3 index about: it validates a List client-side against `/openapi/v2`, item
//! by item, and skips an item whose kind has no definition there. So `/openapi/v2` is an
//! empty Swagger 2.0 document (no definitions): the List passes, and each item then goes
//! to the server with `fieldValidation=Strict`, where unknown fields are refused
//! (`crate::admission::unknown_fields`) exactly as for a single object.

use super::json_response;
use crate::resources::{self, Resource, RESOURCES};
use axum::extract::Path;
use axum::http::{header, HeaderMap, StatusCode};
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

/// gnostic's `openapi_v2.Document` media type as kube-openapi answers it (client-go asks
/// for the older `...spec.v2@v1.0+protobuf`, whose `@` Go's mime parser refuses in a reply).
const V2_PROTOBUF: &str = "application/com.github.proto-openapi.spec.v2.v1.0+protobuf";

/// Appends one length-delimited protobuf field.
fn pb_bytes(out: &mut Vec<u8>, field: u8, bytes: &[u8]) {
    out.push((field << 3) | 2);
    let mut n = bytes.len();
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
    out.extend_from_slice(bytes);
}

/// The Swagger 2.0 document in gnostic's protobuf form: `swagger` (1), `info` (2, with
/// `title` 1 and `version` 2) and an empty `paths` (8).
fn v2_protobuf() -> Vec<u8> {
    let mut info = Vec::new();
    pb_bytes(&mut info, 1, b"Kubernetes");
    pb_bytes(&mut info, 2, b"v1.32.0");
    let mut doc = Vec::new();
    pb_bytes(&mut doc, 1, b"2.0");
    pb_bytes(&mut doc, 2, &info);
    pb_bytes(&mut doc, 8, &[]);
    doc
}

/// `GET /openapi/v2`: protobuf when asked for (client-go), JSON otherwise.
pub async fn v2(headers: HeaderMap) -> Response {
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if accept.contains("protobuf") {
        return (
            StatusCode::OK,
            [(header::CONTENT_TYPE, V2_PROTOBUF)],
            v2_protobuf(),
        )
            .into_response();
    }
    json_response(
        StatusCode::OK,
        &json!({
            "swagger": "2.0",
            "info": {"title": "Kubernetes", "version": "v1.32.0"},
            "paths": {},
            "definitions": {},
        }),
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn v2_protobuf_is_the_expected_bytes() {
        let b = super::v2_protobuf();
        assert_eq!(&b[..5], b"\x0a\x032.0");
        assert_eq!(&b[b.len() - 2..], b"\x42\x00");
    }
}
