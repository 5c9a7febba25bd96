//! get, list, create, update, patch and delete.

use super::selector::Filter;
use super::{decode_body, json_response, patch, table, Query, Target};
use crate::admission;
use crate::error::{ApiError, Cause};
use crate::meta;
use crate::resources::{Resource, NAMESPACES, PODS};
use crate::server::AppState;
use crate::store::{self, Tx};
use axum::body::Bytes;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use serde_json::{json, Value};
use std::sync::Arc;

fn target_key(t: &Target) -> String {
    store::key(
        t.res,
        t.namespace.as_deref().unwrap_or(""),
        t.name.as_deref().unwrap_or(""),
    )
}

pub(crate) fn not_found(t: &Target) -> ApiError {
    ApiError::not_found(t.res.plural, t.res.group, t.name.as_deref().unwrap_or(""))
}

fn accept(headers: &HeaderMap) -> &str {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

pub fn get(
    state: &Arc<AppState>,
    t: &Target,
    q: &Query,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    let obj = state
        .store
        .read()
        .get(t.res, &target_key(t))
        .ok_or_else(|| not_found(t))?;
    if table::wants_table(accept(headers)) {
        let include = q.get("includeObject").map(String::as_str).unwrap_or("");
        let md = json!({"resourceVersion": obj["metadata"]["resourceVersion"]});
        return Ok(json_response(
            StatusCode::OK,
            &table::table(t.res, &[&*obj], md, include),
        ));
    }
    Ok(json_response(StatusCode::OK, &obj))
}

fn encode_continue(rv: u64, key: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(json!({"rv": rv, "start": key}).to_string())
}

fn decode_continue(token: &str) -> Result<(u64, String), ApiError> {
    let bad = || ApiError::bad_request("continue key is not valid: ask for a new list");
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .map_err(|_| bad())?;
    let v: Value = serde_json::from_slice(&raw).map_err(|_| bad())?;
    let rv = v["rv"].as_u64().ok_or_else(bad)?;
    let start = v["start"].as_str().ok_or_else(bad)?.to_string();
    Ok((rv, start))
}

pub fn list(
    state: &Arc<AppState>,
    t: &Target,
    q: &Query,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    let filter = Filter::from_query(q)?;
    let limit: usize = q.get("limit").and_then(|s| s.parse().ok()).unwrap_or(0);
    let cont = match q.get("continue").filter(|s| !s.is_empty()) {
        Some(c) => Some(decode_continue(c)?),
        None => None,
    };
    let (rv, entries) = {
        let st = state.store.read();
        let rv = cont.as_ref().map(|c| c.0).unwrap_or_else(|| st.rv());
        let after = cont.as_ref().map(|c| c.1.as_str());
        (rv, st.list_from(t.res, t.namespace.as_deref(), after))
    };
    let mut matched: Vec<&Value> = Vec::new();
    let mut next: Option<String> = None;
    let mut remaining = 0usize;
    for (k, v) in &entries {
        if !filter.matches(v) {
            continue;
        }
        if limit > 0 && matched.len() == limit {
            remaining += 1;
            continue;
        }
        matched.push(v);
        if limit > 0 && matched.len() == limit {
            next = Some(k.clone());
        }
    }
    let mut md = json!({"resourceVersion": rv.to_string()});
    if remaining > 0 {
        if let Some(k) = next {
            md["continue"] = json!(encode_continue(rv, &k));
            md["remainingItemCount"] = json!(remaining);
        }
    }
    if table::wants_table(accept(headers)) {
        let include = q.get("includeObject").map(String::as_str).unwrap_or("");
        return Ok(json_response(
            StatusCode::OK,
            &table::table(t.res, &matched, md, include),
        ));
    }
    let mut out = Vec::with_capacity(matched.len() * 1024 + 256);
    out.extend_from_slice(
        format!(
            "{{\"kind\":\"{}List\",\"apiVersion\":\"{}\",\"metadata\":{},\"items\":[",
            t.res.kind,
            t.res.api_version(),
            md
        )
        .as_bytes(),
    );
    for (i, v) in matched.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        serde_json::to_writer(&mut out, v).map_err(|e| ApiError::internal(e.to_string()))?;
    }
    out.extend_from_slice(b"]}");
    Ok((
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        out,
    )
        .into_response())
}
/// Checks apiVersion/kind of a body against the URL's resource, filling them if absent.
pub fn check_kind(res: &Resource, obj: &mut Value) -> Result<(), ApiError> {
    let want_av = res.api_version();
    match obj["apiVersion"].as_str() {
        None | Some("") => obj["apiVersion"] = json!(want_av),
        Some(av) if av == want_av => {}
        Some(av) => {
            return Err(ApiError::bad_request(format!(
                "the API version in the data ({av}) does not match the expected API version ({want_av})"
            )))
        }
    }
    match obj["kind"].as_str() {
        None | Some("") => obj["kind"] = json!(res.kind),
        Some(k) if k == res.kind => {}
        Some(k) => {
            return Err(ApiError::bad_request(format!(
                "the kind in the data ({k}) does not match the expected kind ({})",
                res.kind
            )))
        }
    }
    if !obj["metadata"].is_object() {
        if obj["metadata"].is_null() {
            obj["metadata"] = json!({});
        } else {
            return Err(ApiError::bad_request("metadata must be an object"));
        }
    }
    Ok(())
}

/// Reconciles the body's namespace with the URL's.
fn check_namespace(t: &Target, obj: &mut Value) -> Result<(), ApiError> {
    if !t.res.namespaced {
        if let Some(m) = obj["metadata"].as_object_mut() {
            m.remove("namespace");
        }
        return Ok(());
    }
    let Some(ns) = t.namespace.as_deref() else {
        return Err(ApiError::method_not_allowed());
    };
    match obj["metadata"]["namespace"].as_str() {
        None | Some("") => obj["metadata"]["namespace"] = json!(ns),
        Some(b) if b == ns => {}
        Some(_) => return Err(ApiError::bad_request(
            "the namespace of the provided object does not match the namespace sent on the request",
        )),
    }
    Ok(())
}

/// `fieldValidation` on a write: `Strict` refuses a body with fields its kind does not
/// have (400, as kube-apiserver's strict decoder words it), `Warn` (the default) names
/// them in `Warning` headers, `Ignore` drops them silently. Returns the warnings.
pub(crate) fn field_validation(
    q: &Query,
    res: &Resource,
    obj: &Value,
) -> Result<Vec<String>, ApiError> {
    let directive = q.get("fieldValidation").map(String::as_str).unwrap_or("");
    if !matches!(directive, "" | "Strict" | "Warn" | "Ignore") {
        return Err(ApiError::bad_request(format!(
            "fieldValidation parameter unsupported: {directive} (Ignore, Warn or Strict)"
        )));
    }
    if directive == "Ignore" {
        return Ok(Vec::new());
    }
    let unknown: Vec<String> = admission::unknown_fields(res, obj)
        .into_iter()
        .map(|f| format!("unknown field \"{f}\""))
        .collect();
    if directive == "Strict" && !unknown.is_empty() {
        return Err(ApiError::bad_request(format!(
            "{kind} in version \"{ver}\" cannot be handled as a {kind}: strict decoding error: {}",
            unknown.join(", "),
            kind = res.kind,
            ver = res.version
        )));
    }
    Ok(unknown)
}

/// A JSON response carrying `Warning: 299 - "..."` headers.
fn warned(code: StatusCode, v: &Value, warnings: &[String]) -> Response {
    let mut r = json_response(code, v);
    for w in warnings {
        let text = format!("299 - {}", Value::String(w.clone()));
        if let Ok(h) = axum::http::HeaderValue::from_str(&text) {
            r.headers_mut().append(header::WARNING, h);
        }
    }
    r
}

pub(crate) fn dry_run(q: &Query) -> bool {
    q.get("dryRun").is_some_and(|v| v == "All")
}

pub fn create(
    state: &Arc<AppState>,
    t: &Target,
    q: &Query,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<Response, ApiError> {
    if t.name.is_some() || t.sub.is_some() {
        return Err(ApiError::method_not_allowed());
    }
    let mut obj = decode_body(headers, body)?;
    check_kind(t.res, &mut obj)?;
    check_namespace(t, &mut obj)?;
    let warnings = field_validation(q, t.res, &obj)?;
    let obj = create_object(state, t.res, obj, dry_run(q))?;
    Ok(warned(StatusCode::CREATED, &obj, &warnings))
}

/// Creates a decoded object (shared by POST and server-side apply of a new object).
pub fn create_object(
    state: &Arc<AppState>,
    res: &'static Resource,
    mut obj: Value,
    dry: bool,
) -> Result<Value, ApiError> {
    if meta::name(&obj).is_empty() {
        if let Some(g) = obj["metadata"]["generateName"]
            .as_str()
            .filter(|g| !g.is_empty())
        {
            obj["metadata"]["name"] = json!(format!("{g}{}", meta::random_suffix()));
        }
    }
    let (out, written) = state
        .store
        .write(|tx| create_in(tx, state, res, obj, dry))?;
    Ok(written.first().map(|o| (**o).clone()).unwrap_or(out))
}

pub fn create_in(
    tx: &mut Tx,
    state: &AppState,
    res: &'static Resource,
    mut obj: Value,
    dry: bool,
) -> Result<Value, ApiError> {
    let name = meta::name(&obj).to_string();
    if name.is_empty() {
        return Err(ApiError::invalid(
            res.kind,
            "",
            vec![Cause::required("metadata.name")],
        ));
    }
    let ns = meta::namespace(&obj).to_string();
    let key = store::key(res, &ns, &name);
    if tx.get(res, &key).is_some() {
        return Err(ApiError::already_exists(res.plural, res.group, &name));
    }
    if res.namespaced {
        match tx.get(NAMESPACES, &ns) {
            None => return Err(ApiError::not_found("namespaces", "", &ns)),
            Some(n) if n["metadata"]["deletionTimestamp"].is_string() => {
                return Err(ApiError::new(
                    StatusCode::FORBIDDEN,
                    "Forbidden",
                    format!("{} \"{name}\" is forbidden: unable to create new content in namespace {ns} because it is being terminated", res.plural),
                ))
            }
            Some(_) => {}
        }
    }
    let m = &mut obj["metadata"];
    m["uid"] = json!(meta::new_uid());
    m["creationTimestamp"] = json!(meta::now_rfc3339());
    m["generation"] = json!(1);
    if let Some(mm) = m.as_object_mut() {
        mm.remove("resourceVersion");
        mm.remove("deletionTimestamp");
        mm.remove("deletionGracePeriodSeconds");
        mm.remove("selfLink");
    }
    let obj = admission::admit_create(tx, &state.net, res, obj)?;
    let causes = crate::validation::validate(res, &obj, None);
    if !causes.is_empty() {
        return Err(ApiError::invalid(res.kind, &name, causes));
    }
    if !dry {
        tx.put(res, key, obj.clone());
    }
    Ok(obj)
}

pub fn update(
    state: &Arc<AppState>,
    t: &Target,
    q: &Query,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<Response, ApiError> {
    let mut obj = decode_body(headers, body)?;
    check_kind(t.res, &mut obj)?;
    check_namespace(t, &mut obj)?;
    let name = t.name.clone().unwrap_or_default();
    match obj["metadata"]["name"].as_str() {
        None | Some("") => obj["metadata"]["name"] = json!(name),
        Some(n) if n == name => {}
        Some(n) => {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({n}) does not match the name on the URL ({name})"
            )))
        }
    }
    let warnings = field_validation(q, t.res, &obj)?;
    let key = target_key(t);
    let dry = dry_run(q);
    let (out, written) = state.store.write(|tx| {
        let old = tx.get(t.res, &key).ok_or_else(|| not_found(t))?;
        update_in(tx, state, t.res, &key, &old, obj, t.sub.as_deref(), dry)
    })?;
    Ok(warned(
        StatusCode::OK,
        written.first().map(|o| &**o).unwrap_or(&out),
        &warnings,
    ))
}

/// The common tail of PUT and PATCH: preconditions, immutable fields, admission,
/// validation, and finalizer-driven completion of a pending deletion.
#[allow(clippy::too_many_arguments)]
pub fn update_in(
    tx: &mut Tx,
    state: &AppState,
    res: &'static Resource,
    key: &str,
    old: &Value,
    new: Value,
    sub: Option<&str>,
    dry: bool,
) -> Result<Value, ApiError> {
    let name = meta::name(old).to_string();
    if let Some(rv) = new["metadata"]["resourceVersion"]
        .as_str()
        .filter(|s| !s.is_empty())
    {
        if Some(rv) != old["metadata"]["resourceVersion"].as_str() {
            return Err(ApiError::conflict(res.plural, res.group, &name));
        }
    }
    let mut obj = match sub {
        Some("status") => {
            let mut o = old.clone();
            o["status"] = new["status"].clone();
            o
        }
        Some("finalize") => {
            let mut o = old.clone();
            o["spec"]["finalizers"] = new["spec"]["finalizers"].clone();
            o
        }
        _ => {
            let mut o = new;
            if res.has_status {
                o["status"] = old["status"].clone();
            }
            for f in [
                "uid",
                "creationTimestamp",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
                "namespace",
                "name",
            ] {
                match old["metadata"].get(f) {
                    Some(v) => o["metadata"][f] = v.clone(),
                    None => {
                        if let Some(m) = o["metadata"].as_object_mut() {
                            m.remove(f);
                        }
                    }
                }
            }
            o
        }
    };
    if let Some(m) = obj["metadata"].as_object_mut() {
        m.remove("resourceVersion");
    }
    let mut obj = admission::admit_update(tx, &state.net, res, old, obj)?;
    // generation counts spec changes, judged after defaulting so that re-sending the
    // same manifest is not a change.
    let gen = old["metadata"]["generation"].as_i64().unwrap_or(1);
    let changed = obj.get("spec") != old.get("spec");
    obj["metadata"]["generation"] = json!(if changed { gen + 1 } else { gen });
    let causes = crate::validation::validate(res, &obj, Some(old));
    if !causes.is_empty() {
        return Err(ApiError::invalid(res.kind, &name, causes));
    }
    let finished = obj["metadata"]["deletionTimestamp"].is_string()
        && obj["metadata"]["finalizers"]
            .as_array()
            .is_none_or(|f| f.is_empty())
        && !(res.plural == "namespaces"
            && obj["spec"]["finalizers"]
                .as_array()
                .is_some_and(|f| !f.is_empty()))
        && !pod_awaiting_grace(res, &obj);
    if !dry {
        if finished {
            tx.delete(res, key.to_string());
        } else if obj != *old {
            tx.put(res, key.to_string(), obj.clone());
        }
    }
    Ok(obj)
}

/// A pod in graceful termination stays until its grace period ends or the node agent
/// deletes it with gracePeriodSeconds=0.
fn pod_awaiting_grace(res: &Resource, obj: &Value) -> bool {
    std::ptr::eq(res, PODS)
        && obj["metadata"]["deletionGracePeriodSeconds"]
            .as_i64()
            .is_some_and(|g| g > 0)
}

pub fn patch(
    state: &Arc<AppState>,
    t: &Target,
    q: &Query,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<Response, ApiError> {
    let ct = super::content_type(headers);
    let key = target_key(t);
    let dry = dry_run(q);
    if ct == "application/apply-patch+yaml" {
        let manager = q
            .get("fieldManager")
            .filter(|m| !m.is_empty())
            .cloned()
            .ok_or_else(|| {
                ApiError::bad_request("PATCH with apply requires a fieldManager query parameter")
            })?;
        let force = super::is_true(q, "force");
        let mut applied = super::decode_body(headers, body)?;
        check_kind(t.res, &mut applied)?;
        check_namespace(t, &mut applied)?;
        let warnings = field_validation(q, t.res, &applied)?;
        let name = t.name.clone().unwrap_or_default();
        if meta::name(&applied) != name {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({}) does not match the name on the URL ({name})",
                meta::name(&applied)
            )));
        }
        let ((created, out), written) = state.store.write(|tx| match tx.get(t.res, &key) {
            None => {
                let mut obj = applied.clone();
                patch::record_apply(&mut obj, &applied, &manager);
                Ok((true, create_in(tx, state, t.res, obj, dry)?))
            }
            Some(old) => {
                let new = patch::apply(&old, &applied, &manager, force, t.sub.as_deref())?;
                Ok((
                    false,
                    update_in(tx, state, t.res, &key, &old, new, t.sub.as_deref(), dry)?,
                ))
            }
        })?;
        let code = if created {
            StatusCode::CREATED
        } else {
            StatusCode::OK
        };
        return Ok(warned(
            code,
            written.first().map(|o| &**o).unwrap_or(&out),
            &warnings,
        ));
    }
    let patch_doc: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))?;
    let ((warnings, out), written) = state.store.write(|tx| {
        let old = tx.get(t.res, &key).ok_or_else(|| not_found(t))?;
        let mut new = match ct.as_str() {
            "application/merge-patch+json" => patch::merge(&old, &patch_doc),
            "application/json-patch+json" => patch::json_patch(&old, &patch_doc)?,
            "application/strategic-merge-patch+json" => patch::strategic(&old, &patch_doc),
            other => return Err(ApiError::unsupported_media(other)),
        };
        if !new.is_object() {
            return Err(ApiError::bad_request("the patch did not produce an object"));
        }
        check_kind(t.res, &mut new)?;
        if meta::name(&new) != meta::name(&old) || meta::namespace(&new) != meta::namespace(&old) {
            return Err(ApiError::bad_request(
                "a patch may not change metadata.name or metadata.namespace",
            ));
        }
        let warnings = field_validation(q, t.res, &new)?;
        let out = update_in(tx, state, t.res, &key, &old, new, t.sub.as_deref(), dry)?;
        Ok((warnings, out))
    })?;
    Ok(warned(
        StatusCode::OK,
        written.first().map(|o| &**o).unwrap_or(&out),
        &warnings,
    ))
}
