//! The `/scale` subresource of Deployments (autoscaling/v1 Scale), for `kubectl scale`.

use super::{crud, decode_body, json_response, patch, Query, Target};
use crate::error::ApiError;
use crate::server::AppState;
use crate::store;
use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::Response;
use serde_json::{json, Value};
use std::sync::Arc;

fn selector_string(sel: &Value) -> String {
    let mut parts: Vec<String> = sel["matchLabels"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                .collect()
        })
        .unwrap_or_default();
    parts.sort();
    parts.join(",")
}

fn scale_of(d: &Value) -> Value {
    let m = &d["metadata"];
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {"name": m["name"], "namespace": m["namespace"], "uid": m["uid"],
            "resourceVersion": m["resourceVersion"], "creationTimestamp": m["creationTimestamp"]},
        "spec": {"replicas": d["spec"]["replicas"]},
        "status": {"replicas": d["status"]["replicas"].as_i64().unwrap_or(0),
            "selector": selector_string(&d["spec"]["selector"])},
    })
}

pub fn handle(
    state: &Arc<AppState>,
    method: &Method,
    t: &Target,
    q: &Query,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<Response, ApiError> {
    let key = store::key(
        t.res,
        t.namespace.as_deref().unwrap_or(""),
        t.name.as_deref().unwrap_or(""),
    );
    if method == Method::GET {
        let d = state
            .store
            .read()
            .get(t.res, &key)
            .ok_or_else(|| crud::not_found(t))?;
        return Ok(json_response(StatusCode::OK, &scale_of(&d)));
    }
    let ct = super::content_type(headers);
    let input: Value = if *method == Method::PUT {
        decode_body(headers, body)?
    } else {
        serde_json::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))?
    };
    let dry = crud::dry_run(q);
    let (_, written) = state.store.write(|tx| {
        let old = tx.get(t.res, &key).ok_or_else(|| crud::not_found(t))?;
        let current = scale_of(&old);
        let wanted = match (method.clone(), ct.as_str()) {
            (Method::PUT, _) => input.clone(),
            (_, "application/json-patch+json") => patch::json_patch(&current, &input)?,
            (_, "application/merge-patch+json" | "application/strategic-merge-patch+json") => {
                patch::merge(&current, &input)
            }
            (_, other) => return Err(ApiError::unsupported_media(other)),
        };
        let replicas = wanted["spec"]["replicas"]
            .as_i64()
            .ok_or_else(|| ApiError::bad_request("spec.replicas must be an integer"))?;
        let mut new = (*old).clone();
        new["spec"]["replicas"] = json!(replicas);
        if let Some(rv) = wanted["metadata"]["resourceVersion"].as_str() {
            new["metadata"]["resourceVersion"] = json!(rv);
        }
        crud::update_in(tx, state, t.res, &key, &old, new, None, dry)
    })?;
    let d = written
        .first()
        .map(|o| (**o).clone())
        .or_else(|| state.store.read().get(t.res, &key).map(|o| (*o).clone()))
        .ok_or_else(|| crud::not_found(t))?;
    Ok(json_response(StatusCode::OK, &scale_of(&d)))
}
