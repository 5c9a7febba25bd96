//! delete and deletecollection: finalizers, pod grace periods, namespace termination.

use super::crud::{dry_run, not_found};
use super::selector::Filter;
use super::{json_response, Query, Target};
use crate::error::ApiError;
use crate::meta;
use crate::resources::{Resource, PODS};
use crate::server::AppState;
use crate::store::{self, Tx};
use axum::body::Bytes;
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{json, Value};
use std::sync::Arc;

fn target_key(t: &Target) -> String {
    store::key(
        t.res,
        t.namespace.as_deref().unwrap_or(""),
        t.name.as_deref().unwrap_or(""),
    )
}

#[derive(Default)]
struct DeleteOptions {
    grace: Option<i64>,
    uid: Option<String>,
    rv: Option<String>,
}

fn delete_options(q: &Query, body: &Bytes) -> Result<DeleteOptions, ApiError> {
    let mut o = DeleteOptions::default();
    if !body.iter().all(u8::is_ascii_whitespace) {
        let v: Value = serde_json::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("error decoding DeleteOptions: {e}")))?;
        o.grace = v["gracePeriodSeconds"].as_i64();
        o.uid = v["preconditions"]["uid"].as_str().map(String::from);
        o.rv = v["preconditions"]["resourceVersion"]
            .as_str()
            .map(String::from);
    }
    if let Some(g) = q.get("gracePeriodSeconds").and_then(|g| g.parse().ok()) {
        o.grace = Some(g);
    }
    Ok(o)
}

pub fn delete(
    state: &Arc<AppState>,
    t: &Target,
    q: &Query,
    body: &Bytes,
) -> Result<Response, ApiError> {
    if t.sub.is_some() {
        return Err(ApiError::method_not_allowed());
    }
    let opts = delete_options(q, body)?;
    let key = target_key(t);
    let dry = dry_run(q);
    let (out, written) = state.store.write(|tx| {
        let old = tx.get(t.res, &key).ok_or_else(|| not_found(t))?;
        if opts
            .uid
            .as_deref()
            .is_some_and(|u| Some(u) != old["metadata"]["uid"].as_str())
            || opts
                .rv
                .as_deref()
                .is_some_and(|r| Some(r) != old["metadata"]["resourceVersion"].as_str())
        {
            return Err(ApiError::conflict(
                t.res.plural,
                t.res.group,
                meta::name(&old),
            ));
        }
        delete_in(tx, t.res, &key, &old, opts.grace, dry)
    })?;
    Ok(json_response(
        StatusCode::OK,
        written.first().map(|o| &**o).unwrap_or(&out),
    ))
}

/// Deletes now, or marks for deletion when finalizers or a pod's grace period say wait.
pub fn delete_in(
    tx: &mut Tx,
    res: &'static Resource,
    key: &str,
    old: &Value,
    grace: Option<i64>,
    dry: bool,
) -> Result<Value, ApiError> {
    let mut obj = old.clone();
    let has_finalizers = old["metadata"]["finalizers"]
        .as_array()
        .is_some_and(|f| !f.is_empty());
    let ns_finalizers = res.plural == "namespaces"
        && old["spec"]["finalizers"]
            .as_array()
            .is_some_and(|f| !f.is_empty());
    let pod_grace = if std::ptr::eq(res, PODS)
        && old["spec"]["nodeName"]
            .as_str()
            .is_some_and(|n| !n.is_empty())
        && !matches!(
            old["status"]["phase"].as_str(),
            Some("Succeeded" | "Failed")
        ) {
        let g = grace
            .or_else(|| old["spec"]["terminationGracePeriodSeconds"].as_i64())
            .unwrap_or(30)
            .max(0);
        let current = old["metadata"]["deletionGracePeriodSeconds"].as_i64();
        Some(current.map_or(g, |c| c.min(g)))
    } else {
        None
    };
    let wait = has_finalizers || ns_finalizers || pod_grace.is_some_and(|g| g > 0);
    if !wait {
        if !dry {
            tx.delete(res, key.to_string());
        }
        return Ok(obj);
    }
    let now = meta::now_secs();
    let g = pod_grace.unwrap_or(0);
    if obj["metadata"]["deletionTimestamp"].is_null() || pod_grace.is_some() {
        obj["metadata"]["deletionTimestamp"] = json!(meta::format_rfc3339(now + g as u64));
        obj["metadata"]["deletionGracePeriodSeconds"] = json!(g);
    }
    if res.plural == "namespaces" {
        obj["status"]["phase"] = json!("Terminating");
    }
    if pod_grace == Some(0) && !has_finalizers {
        if !dry {
            tx.delete(res, key.to_string());
        }
        return Ok(obj);
    }
    if !dry && obj != *old {
        tx.put(res, key.to_string(), obj.clone());
    }
    Ok(obj)
}

pub fn delete_collection(
    state: &Arc<AppState>,
    t: &Target,
    q: &Query,
) -> Result<Response, ApiError> {
    let filter = Filter::from_query(q)?;
    let grace = q.get("gracePeriodSeconds").and_then(|g| g.parse().ok());
    let dry = dry_run(q);
    let (items, _) = state.store.write(|tx| {
        let mut out = Vec::new();
        for old in tx.list(t.res, t.namespace.as_deref()) {
            if filter.matches(&old) {
                let key = store::object_key(t.res, &old);
                out.push(delete_in(tx, t.res, &key, &old, grace, dry)?);
            }
        }
        Ok(out)
    })?;
    let list = json!({
        "kind": format!("{}List", t.res.kind),
        "apiVersion": t.res.api_version(),
        "metadata": {},
        "items": items,
    });
    Ok(json_response(StatusCode::OK, &list))
}
