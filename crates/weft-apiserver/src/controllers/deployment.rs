//! apps/v1 Deployments, so ordinary manifests run: pods are created from the template
//! (owned by the Deployment directly; there are no ReplicaSets here), rolled by template
//! hash with maxSurge/maxUnavailable, and status is kept as `kubectl rollout status`
//! reads it.

use super::endpointslice::short_hash;
use super::Reconcile;
use crate::api::{crud, delete};
use crate::error::ApiError;
use crate::resources::{DEPLOYMENTS, PODS};
use crate::server::AppState;
use crate::store::{self, Event, Tx};
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::sync::Arc;

const HASH_LABEL: &str = "pod-template-hash";

/// The name and uid of a pod's owning Deployment.
fn owner(pod: &Value) -> Option<(&str, &str)> {
    pod["metadata"]["ownerReferences"]
        .as_array()?
        .iter()
        .find(|o| o["kind"] == "Deployment" && o["apiVersion"] == "apps/v1")
        .and_then(|o| Some((o["name"].as_str().unwrap_or(""), o["uid"].as_str()?)))
}

fn owner_uid(pod: &Value) -> Option<&str> {
    owner(pod).map(|(_, uid)| uid)
}

fn ready(pod: &Value) -> bool {
    pod["status"]["conditions"].as_array().is_some_and(|cs| {
        cs.iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True")
    })
}

pub fn template_hash(d: &Value) -> String {
    short_hash(&d["spec"]["template"].to_string())
}

/// An IntOrString like "25%" or 1, resolved against `replicas`.
fn resolve(v: &Value, replicas: i64, round_up: bool) -> i64 {
    match v {
        Value::Number(n) => n.as_i64().unwrap_or(0),
        Value::String(s) => {
            let pct: i64 = s.trim_end_matches('%').parse().unwrap_or(25);
            let x = replicas * pct;
            if round_up {
                (x + 99) / 100
            } else {
                x / 100
            }
        }
        _ => 0,
    }
}

/// What a Deployment needs now.
#[derive(Debug, Default, PartialEq)]
pub struct Plan {
    pub create: usize,
    /// Names of pods to delete.
    pub delete: Vec<String>,
    pub status: Value,
}

pub fn plan(d: &Value, owned: &[Arc<Value>]) -> Plan {
    let spec = &d["spec"];
    let replicas = spec["replicas"].as_i64().unwrap_or(1).max(0);
    let hash = template_hash(d);
    let live: Vec<&Arc<Value>> = owned
        .iter()
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
        .filter(|p| !matches!(p["status"]["phase"].as_str(), Some("Succeeded" | "Failed")))
        .collect();
    let terminating = owned.len() - live.len();
    let is_current = |p: &Value| p["metadata"]["labels"][HASH_LABEL] == json!(hash);
    let mut current: Vec<&Arc<Value>> = live.iter().copied().filter(|p| is_current(p)).collect();
    let old: Vec<&Arc<Value>> = live.iter().copied().filter(|p| !is_current(p)).collect();
    let available = live.iter().filter(|p| ready(p)).count() as i64;
    let mut out = Plan::default();
    let name = |p: &Value| crate::meta::name(p).to_string();
    let recreate = spec["strategy"]["type"] == "Recreate";
    let (max_surge, max_unavailable) = if recreate {
        (0, replicas)
    } else {
        let ru = &spec["strategy"]["rollingUpdate"];
        let surge = resolve(&ru["maxSurge"], replicas, true);
        let unavail = resolve(&ru["maxUnavailable"], replicas, false);
        // Both zero would deadlock a rollout; the real API server rejects it.
        (if surge == 0 && unavail == 0 { 1 } else { surge }, unavail)
    };
    if recreate {
        out.delete.extend(old.iter().map(|p| name(p)));
        if old.is_empty() && terminating == 0 {
            out.create = (replicas - current.len() as i64).max(0) as usize;
        }
    } else {
        let room = replicas + max_surge - live.len() as i64;
        let want = replicas - current.len() as i64;
        out.create = want.min(room).max(0) as usize;
        // Old pods go: the unready ones at once, ready ones while enough stay available.
        let mut can_remove = available - (replicas - max_unavailable);
        for p in old.iter().filter(|p| !ready(p)) {
            out.delete.push(name(p));
        }
        for p in old.iter().filter(|p| ready(p)) {
            if can_remove <= 0 {
                break;
            }
            out.delete.push(name(p));
            can_remove -= 1;
        }
    }
    // Scale down: unready first, then the newest.
    if current.len() as i64 > replicas {
        current.sort_by_key(|p| {
            (
                ready(p),
                std::cmp::Reverse(
                    p["metadata"]["creationTimestamp"]
                        .as_str()
                        .unwrap_or("")
                        .to_string(),
                ),
            )
        });
        let extra = current.len() - replicas as usize;
        out.delete
            .extend(current.iter().take(extra).map(|p| name(p)));
    }
    let updated = live.iter().filter(|p| is_current(p)).count() as i64;
    let ready_count = available;
    let progressing_done = updated == replicas && old.is_empty() && ready_count >= replicas;
    out.status = json!({
        "observedGeneration": d["metadata"]["generation"],
        "replicas": live.len(),
        "updatedReplicas": updated,
        "readyReplicas": ready_count,
        "availableReplicas": ready_count,
        "unavailableReplicas": (replicas - ready_count).max(0),
        "conditions": [
            {"type": "Available",
             "status": if ready_count >= replicas - max_unavailable { "True" } else { "False" },
             "reason": if ready_count >= replicas - max_unavailable { "MinimumReplicasAvailable" } else { "MinimumReplicasUnavailable" }},
            {"type": "Progressing", "status": "True",
             "reason": if progressing_done { "NewReplicaSetAvailable" } else { "ReplicaSetUpdated" }},
        ],
    });
    out
}

fn pod_from_template(d: &Value, hash: &str) -> Value {
    let t = &d["spec"]["template"];
    let dname = crate::meta::name(d);
    let mut labels = t["metadata"]["labels"].clone();
    labels[HASH_LABEL] = json!(hash);
    let mut meta = json!({
        "name": format!("{dname}-{hash}-{}", crate::meta::random_suffix()),
        "namespace": crate::meta::namespace(d),
        "labels": labels,
        "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": dname,
            "uid": d["metadata"]["uid"], "controller": true, "blockOwnerDeletion": true}],
    });
    if t["metadata"]["annotations"].is_object() {
        meta["annotations"] = t["metadata"]["annotations"].clone();
    }
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": t["spec"]})
}

/// Keeps condition timestamps when nothing about a condition changed.
fn merge_status(old: &Value, mut new: Value) -> Value {
    let now = crate::meta::now_rfc3339();
    if let Some(conds) = new["conditions"].as_array_mut() {
        for c in conds {
            let prev = old["conditions"]
                .as_array()
                .and_then(|cs| cs.iter().find(|p| p["type"] == c["type"]));
            match prev {
                Some(p) if p["status"] == c["status"] && p["reason"] == c["reason"] => {
                    c["lastTransitionTime"] = p["lastTransitionTime"].clone();
                    c["lastUpdateTime"] = p["lastUpdateTime"].clone();
                }
                _ => {
                    c["lastTransitionTime"] = json!(now);
                    c["lastUpdateTime"] = json!(now);
                }
            }
        }
    }
    new
}

/// Creates and deletes one live Deployment's pods as its plan says, and updates its status.
fn sync_deployment(
    tx: &mut Tx,
    state: &AppState,
    d: &Arc<Value>,
    owned: &[Arc<Value>],
) -> Result<(), ApiError> {
    let ns = crate::meta::namespace(d).to_string();
    let p = plan(d, owned);
    let hash = template_hash(d);
    for _ in 0..p.create {
        crud::create_in(tx, state, PODS, pod_from_template(d, &hash), false)?;
    }
    for name in &p.delete {
        let key = store::key(PODS, &ns, name);
        if let Some(old) = tx.get(PODS, &key) {
            delete::delete_in(tx, PODS, &key, &old, None, false)?;
        }
    }
    let status = merge_status(&d["status"], p.status);
    if status != d["status"] {
        let key = store::object_key(DEPLOYMENTS, d);
        let mut new = (**d).clone();
        new["status"] = status;
        crud::update_in(tx, state, DEPLOYMENTS, &key, d, new, Some("status"), false)?;
    }
    Ok(())
}

/// Garbage collection: deletes pods whose Deployment is gone.
fn collect(tx: &mut Tx, pods: &[Arc<Value>]) -> Result<(), ApiError> {
    for p in pods {
        if p["metadata"]["deletionTimestamp"].is_null() {
            let key = store::object_key(PODS, p);
            delete::delete_in(tx, PODS, &key, p, None, false)?;
        }
    }
    Ok(())
}

/// Full resyncs: every Deployment of a namespace, and pods whose Deployment is gone.
fn reconcile_namespace(tx: &mut Tx, state: &AppState, ns: &str) -> Result<(), ApiError> {
    let deployments = tx.list(DEPLOYMENTS, Some(ns));
    let pods = tx.list(PODS, Some(ns));
    let uids: BTreeSet<&str> = deployments
        .iter()
        .filter(|d| d["metadata"]["deletionTimestamp"].is_null())
        .filter_map(|d| d["metadata"]["uid"].as_str())
        .collect();
    let orphans: Vec<Arc<Value>> = pods
        .iter()
        .filter(|p| owner_uid(p).is_some_and(|uid| !uids.contains(uid)))
        .cloned()
        .collect();
    collect(tx, &orphans)?;
    for d in &deployments {
        if d["metadata"]["deletionTimestamp"].is_string() {
            continue;
        }
        let uid = d["metadata"]["uid"].as_str().unwrap_or("");
        let owned: Vec<Arc<Value>> = pods
            .iter()
            .filter(|p| owner_uid(p) == Some(uid))
            .cloned()
            .collect();
        sync_deployment(tx, state, d, &owned)?;
    }
    Ok(())
}

/// One Deployment named by an event (`ns/name` with the uid the event saw): synced if it
/// is live with that uid; otherwise the pods that uid owns are collected.
fn reconcile_one(
    tx: &mut Tx,
    state: &AppState,
    ns: &str,
    name: &str,
    uid: &str,
) -> Result<(), ApiError> {
    // Found through the store's owner index, not by listing the namespace's pods.
    let owned: Vec<Arc<Value>> = tx
        .pods_owned_by(uid)
        .into_iter()
        .filter(|p| owner_uid(p) == Some(uid))
        .collect();
    match tx.get(DEPLOYMENTS, &store::key(DEPLOYMENTS, ns, name)) {
        Some(d)
            if d["metadata"]["uid"].as_str() == Some(uid)
                && d["metadata"]["deletionTimestamp"].is_null() =>
        {
            sync_deployment(tx, state, &d, &owned)
        }
        _ => collect(tx, &owned),
    }
}

/// The Deployments (namespace, name, uid) a batch of events concerns: those it names,
/// and the owners of the pods it names.
fn affected(events: &[Arc<Event>]) -> BTreeSet<(String, String, String)> {
    let mut out = BTreeSet::new();
    for e in events {
        let o = &e.object;
        let ns = crate::meta::namespace(o).to_string();
        if std::ptr::eq(e.res, DEPLOYMENTS) {
            if let Some(uid) = o["metadata"]["uid"].as_str() {
                out.insert((ns, crate::meta::name(o).to_string(), uid.to_string()));
            }
        } else if std::ptr::eq(e.res, PODS) {
            if let Some((name, uid)) = owner(o) {
                out.insert((ns, name.to_string(), uid.to_string()));
            }
        }
    }
    out
}

pub struct Controller;

impl Reconcile for Controller {
    fn reconcile(&mut self, state: &AppState, events: Option<&[Arc<Event>]>) {
        let Some(events) = events else {
            let namespaces = super::namespaces_to_sync(
                state,
                None,
                |_| true,
                DEPLOYMENTS,
                PODS,
                |p| owner_uid(p).is_some(),
            );
            for ns in namespaces {
                if let Err(e) = state.store.write(|tx| reconcile_namespace(tx, state, &ns)) {
                    tracing::warn!("deployment controller, namespace {ns}: {}", e.message);
                }
            }
            return;
        };
        for (ns, name, uid) in affected(events) {
            if let Err(e) = state
                .store
                .write(|tx| reconcile_one(tx, state, &ns, &name, &uid))
            {
                tracing::warn!("deployment controller, {ns}/{name}: {}", e.message);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deploy(replicas: i64, image: &str) -> Value {
        json!({"metadata": {"name": "web", "namespace": "d", "uid": "u", "generation": 1},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "web"}},
                "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}},
                "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": image}]}}}})
    }

    fn pod_of(d: &Value, name: &str, is_ready: bool) -> Arc<Value> {
        let mut p = pod_from_template(d, &template_hash(d));
        p["metadata"]["name"] = json!(name);
        p["status"] = json!({"conditions": [{"type": "Ready", "status": if is_ready {"True"} else {"False"}}]});
        Arc::new(p)
    }

    #[test]
    fn scales_up_then_rolls_within_surge_and_availability() {
        let v1 = deploy(4, "one");
        assert_eq!(plan(&v1, &[]).create, 4);
        let owned: Vec<Arc<Value>> = (0..4)
            .map(|i| pod_of(&v1, &format!("a{i}"), true))
            .collect();
        let v2 = deploy(4, "two");
        let p = plan(&v2, &owned);
        // maxSurge 25% of 4 = 1 new pod; maxUnavailable 25% = 1 old pod may go.
        assert_eq!(p.create, 1);
        assert_eq!(p.delete.len(), 1);
        assert_eq!(p.status["updatedReplicas"], 0);
    }

    #[test]
    fn scales_down_unready_first() {
        let d = deploy(1, "one");
        let owned = vec![pod_of(&d, "ready", true), pod_of(&d, "unready", false)];
        assert_eq!(plan(&d, &owned).delete, ["unready"]);
    }
}
