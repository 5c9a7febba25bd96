//! Patch flavours: JSON merge patch (RFC 7386), JSON patch (RFC 6902), strategic merge
//! patch (lists merged by their Kubernetes merge keys), and server-side apply with a
//! per-manager field set kept in `metadata.managedFields`.

use crate::error::ApiError;
use serde_json::{json, Map, Value};

pub fn merge(old: &Value, patch: &Value) -> Value {
    let mut out = old.clone();
    json_patch::merge(&mut out, patch);
    out
}

pub fn json_patch(old: &Value, patch: &Value) -> Result<Value, ApiError> {
    let p: json_patch::Patch = serde_json::from_value(patch.clone())
        .map_err(|e| ApiError::bad_request(format!("error decoding JSON patch: {e}")))?;
    let mut out = old.clone();
    json_patch::patch(&mut out, &p).map_err(|e| {
        ApiError::new(
            axum::http::StatusCode::UNPROCESSABLE_ENTITY,
            "Invalid",
            format!("the JSON patch could not be applied: {e}"),
        )
    })?;
    Ok(out)
}

/// The merge key Kubernetes declares for a list field (`patchMergeKey`), judged by the
/// field's name and, for `ports`, by what its elements carry.
fn merge_key(field: &str, items: &[Value]) -> Option<&'static str> {
    let has = |k: &str| items.iter().all(|i| i.get(k).is_some()) && !items.is_empty();
    match field {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "volumes"
        | "env"
        | "imagePullSecrets"
        | "resourceClaims" => Some("name"),
        "ports" if has("containerPort") => Some("containerPort"),
        "ports" if has("port") => Some("port"),
        "volumeMounts" => Some("mountPath"),
        "volumeDevices" => Some("devicePath"),
        "conditions" | "addresses" => Some("type"),
        "ownerReferences" => Some("uid"),
        "hostAliases" => Some("ip"),
        "taints" => Some("key"),
        _ => None,
    }
}

/// Primitive lists that strategic merge treats as sets.
fn is_set_list(field: &str) -> bool {
    matches!(field, "finalizers")
}

pub fn strategic(old: &Value, patch: &Value) -> Value {
    let mut out = old.clone();
    smp_object(&mut out, patch);
    out
}

fn smp_object(target: &mut Value, patch: &Value) {
    let Some(pm) = patch.as_object() else {
        *target = patch.clone();
        return;
    };
    if pm.get("$patch").and_then(Value::as_str) == Some("replace") {
        let mut p = pm.clone();
        p.remove("$patch");
        *target = Value::Object(p);
        return;
    }
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let deletes: Vec<(String, Vec<Value>)> = pm
        .iter()
        .filter_map(|(k, v)| {
            k.strip_prefix("$deleteFromPrimitiveList/")
                .map(|f| (f.to_string(), v.as_array().cloned().unwrap_or_default()))
        })
        .collect();
    let Some(tm) = target.as_object_mut() else {
        return;
    };
    for (k, v) in pm {
        if k.starts_with('$') {
            continue;
        }
        if v.is_null() {
            tm.remove(k);
            continue;
        }
        match (tm.get_mut(k), v) {
            (Some(t @ Value::Object(_)), Value::Object(_)) => smp_object(t, v),
            (Some(Value::Array(t)), Value::Array(p)) => smp_list(k, t, p),
            _ => {
                let mut fresh = Value::Null;
                if v.is_object() {
                    smp_object(&mut fresh, v);
                } else if let Value::Array(p) = v {
                    let mut t = Vec::new();
                    smp_list(k, &mut t, p);
                    fresh = Value::Array(t);
                } else {
                    fresh = v.clone();
                }
                tm.insert(k.clone(), fresh);
            }
        }
    }
    for (field, values) in deletes {
        if let Some(Value::Array(list)) = tm.get_mut(&field) {
            list.retain(|x| !values.contains(x));
        }
    }
}

fn smp_list(field: &str, target: &mut Vec<Value>, patch: &[Value]) {
    if is_set_list(field) {
        for v in patch {
            if !target.contains(v) {
                target.push(v.clone());
            }
        }
        return;
    }
    let Some(key) = merge_key(field, patch) else {
        *target = patch.to_vec();
        return;
    };
    for p in patch {
        let id = &p[key];
        let directive = p.get("$patch").and_then(Value::as_str);
        let pos = target.iter().position(|t| &t[key] == id);
        match (directive, pos) {
            (Some("delete"), Some(i)) => {
                target.remove(i);
            }
            (Some("delete"), None) => {}
            (_, Some(i)) => smp_object(&mut target[i], p),
            (_, None) => {
                let mut fresh = Value::Null;
                smp_object(&mut fresh, p);
                target.push(fresh);
            }
        }
    }
}

/// The set of fields a configuration sets, in `FieldsV1` form.
pub fn field_set(v: &Value) -> Value {
    let mut out = Map::new();
    if let Some(m) = v.as_object() {
        for (k, child) in m {
            out.insert(format!("f:{k}"), field_set_child(k, child));
        }
    }
    Value::Object(out)
}

fn field_set_child(field: &str, v: &Value) -> Value {
    match v {
        Value::Object(_) => field_set(v),
        Value::Array(items) => match merge_key(field, items) {
            Some(key) if items.iter().all(Value::is_object) => {
                let mut out = Map::new();
                for it in items {
                    let id = json!({ key: it[key] }).to_string();
                    out.insert(format!("k:{id}"), field_set(it));
                }
                Value::Object(out)
            }
            _ => json!({}),
        },
        _ => json!({}),
    }
}

/// Removes from `obj` the fields in `prev` that are no longer in `cur` (fields a manager
/// stopped applying).
fn prune(obj: &mut Value, prev: &Value, cur: &Value) {
    let Some(pm) = prev.as_object() else { return };
    for (pk, pchild) in pm {
        let cchild = cur.get(pk);
        if let Some(field) = pk.strip_prefix("f:") {
            match cchild {
                None => {
                    if let Some(m) = obj.as_object_mut() {
                        m.remove(field);
                    }
                }
                Some(c) => {
                    if let Some(sub) = obj.get_mut(field) {
                        prune(sub, pchild, c);
                    }
                }
            }
        } else if let Some(id) = pk.strip_prefix("k:") {
            let Ok(Value::Object(idm)) = serde_json::from_str::<Value>(id) else {
                continue;
            };
            let Some(list) = obj.as_array_mut() else {
                continue;
            };
            let pos = list
                .iter()
                .position(|it| idm.iter().all(|(k, v)| it.get(k) == Some(v)));
            match (cchild, pos) {
                (None, Some(i)) => {
                    list.remove(i);
                }
                (Some(c), Some(i)) => prune(&mut list[i], pchild, c),
                _ => {}
            }
        }
    }
}

fn strip_managed(v: &Value) -> Value {
    let mut a = v.clone();
    if let Some(m) = a["metadata"].as_object_mut() {
        m.remove("managedFields");
        m.remove("resourceVersion");
    }
    a
}

/// Records `manager`'s applied field set in `obj.metadata.managedFields`.
pub fn record_apply(obj: &mut Value, applied: &Value, manager: &str) {
    let applied = strip_managed(applied);
    let mut fs = field_set(&applied);
    if let Some(m) = fs.as_object_mut() {
        m.remove("f:apiVersion");
        m.remove("f:kind");
    }
    let entry = json!({
        "manager": manager,
        "operation": "Apply",
        "apiVersion": applied["apiVersion"],
        "time": crate::meta::now_rfc3339(),
        "fieldsType": "FieldsV1",
        "fieldsV1": fs,
    });
    let mut entries: Vec<Value> = obj["metadata"]["managedFields"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    entries.retain(|e| !(e["manager"] == json!(manager) && e["operation"] == json!("Apply")));
    entries.push(entry);
    obj["metadata"]["managedFields"] = Value::Array(entries);
}

/// Server-side apply onto an existing object. Conflicts with other managers are not
/// tracked, so every apply behaves as with `force=true`.
pub fn apply(
    old: &Value,
    applied: &Value,
    manager: &str,
    _force: bool,
    sub: Option<&str>,
) -> Result<Value, ApiError> {
    let applied = strip_managed(applied);
    let prev_set = old["metadata"]["managedFields"]
        .as_array()
        .and_then(|es| {
            es.iter()
                .find(|e| e["manager"] == json!(manager) && e["operation"] == json!("Apply"))
        })
        .map(|e| e["fieldsV1"].clone());
    let mut new = strategic(old, &applied);
    if let Some(prev) = prev_set {
        let mut cur = field_set(&applied);
        if sub == Some("status") {
            // A status apply only owns status; leave the rest of its old set alone.
            if let (Some(c), Some(p)) = (cur.as_object_mut(), prev.as_object()) {
                for (k, v) in p {
                    if k != "f:status" {
                        c.entry(k.clone()).or_insert(v.clone());
                    }
                }
            }
        }
        prune(&mut new, &prev, &cur);
    }
    record_apply(&mut new, &applied, manager);
    if let Some(rv) = old["metadata"]["resourceVersion"].as_str() {
        new["metadata"]["resourceVersion"] = json!(rv);
    }
    Ok(new)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strategic_merges_containers_by_name() {
        let old = json!({"spec": {"containers": [
            {"name": "a", "image": "x", "ports": [{"containerPort": 80}]},
            {"name": "b", "image": "y"}]}});
        let p = json!({"spec": {"containers": [{"name": "a", "image": "z"}],
            "$setElementOrder/containers": [{"name": "a"}, {"name": "b"}]}});
        let out = strategic(&old, &p);
        assert_eq!(out["spec"]["containers"][0]["image"], "z");
        assert_eq!(
            out["spec"]["containers"][0]["ports"][0]["containerPort"],
            80
        );
        assert_eq!(out["spec"]["containers"][1]["name"], "b");
    }

    #[test]
    fn apply_removes_fields_the_manager_dropped() {
        let first = json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "c", "labels": {"a": "1", "b": "2"}}, "data": {"x": "1"}});
        let mut obj = first.clone();
        record_apply(&mut obj, &first, "m");
        let second = json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "c", "labels": {"a": "1"}}, "data": {"x": "2"}});
        let out = apply(&obj, &second, "m", true, None).ok();
        let out = out.unwrap_or_default();
        assert_eq!(out["metadata"]["labels"], json!({"a": "1"}));
        assert_eq!(out["data"]["x"], "2");
    }
}
