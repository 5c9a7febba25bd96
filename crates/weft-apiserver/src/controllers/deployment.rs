//! apps/v1 Deployments, so ordinary manifests run: pods are created from the template
//! (owned by the Deployment directly; there are no ReplicaSets here), rolled by template
//! hash with maxSurge/maxUnavailable, and status is kept as `kubectl rollout status`
//! reads it.
//!
//! A Deployment's pods are found through the store's owner index, by its uid, both for
//! the Deployments a batch of events names and on a resync, which walks the
//! Deployments and the owners in that index: no pass lists every pod.

use super::endpointslice::short_hash;
use super::Reconcile;
use crate::api::{crud, delete};
use crate::error::ApiError;
use crate::resources::{DEPLOYMENTS, PODS};
use crate::server::AppState;
use crate::store::{self, Event, Tx};
use crate::typed;
use k8s_openapi::api::apps::v1::{Deployment, DeploymentCondition, DeploymentStatus};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference, Time};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::Value;
use std::collections::BTreeSet;
use std::sync::Arc;

const HASH_LABEL: &str = "pod-template-hash";

/// The name and uid of a pod's owning Deployment.
fn owner(pod: &Pod) -> Option<(&str, &str)> {
    pod.metadata
        .owner_references
        .as_ref()?
        .iter()
        .find(|o| o.kind == "Deployment" && o.api_version == "apps/v1")
        .map(|o| (o.name.as_str(), o.uid.as_str()))
}

fn owner_uid(pod: &Pod) -> Option<&str> {
    owner(pod).map(|(_, uid)| uid)
}

fn ready(pod: &Pod) -> bool {
    let conditions = pod.status.as_ref().and_then(|s| s.conditions.as_ref());
    conditions.is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn name(o: &ObjectMeta) -> String {
    o.name.clone().unwrap_or_default()
}

/// A hash of the template as stored (JSON), so hashes are those of earlier versions.
pub fn template_hash(d: &Deployment) -> String {
    let json = serde_json::to_value(&d.spec.template).unwrap_or_default();
    short_hash(&json.to_string())
}

/// An IntOrString like "25%" or 1, resolved against `replicas`.
fn resolve(v: Option<&IntOrString>, replicas: i64, round_up: bool) -> i64 {
    match v {
        Some(IntOrString::Int(n)) => i64::from(*n),
        Some(IntOrString::String(s)) => {
            let pct: i64 = s.trim_end_matches('%').parse().unwrap_or(25);
            let x = replicas * pct;
            if round_up {
                (x + 99) / 100
            } else {
                x / 100
            }
        }
        None => 0,
    }
}

/// What a Deployment needs now.
#[derive(Debug, Default, PartialEq)]
pub struct Plan {
    pub create: usize,
    /// Names of pods to delete.
    pub delete: Vec<String>,
    pub status: DeploymentStatus,
}

fn count(n: usize) -> Option<i32> {
    Some(i32::try_from(n).unwrap_or(i32::MAX))
}

fn condition(type_: &str, ok: bool, reason: &str) -> DeploymentCondition {
    DeploymentCondition {
        type_: Some(type_.into()),
        status: Some(if ok { "True" } else { "False" }.into()),
        reason: Some(reason.into()),
        ..Default::default()
    }
}

pub fn plan(d: &Deployment, owned: &[Pod]) -> Plan {
    let spec = &d.spec;
    let replicas = i64::from(spec.replicas.unwrap_or(1)).max(0);
    let hash = template_hash(d);
    let live: Vec<&Pod> = owned
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter(|p| {
            let phase = p.status.as_ref().and_then(|s| s.phase.as_deref());
            !matches!(phase, Some("Succeeded" | "Failed"))
        })
        .collect();
    let terminating = owned.len() - live.len();
    let is_current = |p: &Pod| {
        let labels = p.metadata.labels.as_ref();
        labels.and_then(|l| l.get(HASH_LABEL)) == Some(&hash)
    };
    let mut current: Vec<&Pod> = live.iter().copied().filter(|p| is_current(p)).collect();
    let old: Vec<&Pod> = live.iter().copied().filter(|p| !is_current(p)).collect();
    let available = live.iter().filter(|p| ready(p)).count() as i64;
    let mut out = Plan::default();
    let strategy = spec.strategy.as_ref();
    let recreate = strategy.and_then(|s| s.type_.as_deref()) == Some("Recreate");
    let (max_surge, max_unavailable) = if recreate {
        (0, replicas)
    } else {
        let ru = strategy.and_then(|s| s.rolling_update.as_ref());
        let surge = resolve(ru.and_then(|r| r.max_surge.as_ref()), replicas, true);
        let unavail = resolve(ru.and_then(|r| r.max_unavailable.as_ref()), replicas, false);
        // Both zero would deadlock a rollout; the real API server rejects it.
        (if surge == 0 && unavail == 0 { 1 } else { surge }, unavail)
    };
    if recreate {
        out.delete.extend(old.iter().map(|p| name(&p.metadata)));
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
            out.delete.push(name(&p.metadata));
        }
        for p in old.iter().filter(|p| ready(p)) {
            if can_remove <= 0 {
                break;
            }
            out.delete.push(name(&p.metadata));
            can_remove -= 1;
        }
    }
    // Scale down: unready first, then the newest.
    if current.len() as i64 > replicas {
        current.sort_by_key(|p| {
            let created = p.metadata.creation_timestamp.as_ref().map(|t| t.0);
            (ready(p), std::cmp::Reverse(created))
        });
        let extra = current.len() - replicas as usize;
        out.delete
            .extend(current.iter().take(extra).map(|p| name(&p.metadata)));
    }
    let updated = live.iter().filter(|p| is_current(p)).count() as i64;
    let ready_count = available;
    let progressing_done = updated == replicas && old.is_empty() && ready_count >= replicas;
    let enough = ready_count >= replicas - max_unavailable;
    out.status = DeploymentStatus {
        observed_generation: d.metadata.generation,
        replicas: count(live.len()),
        updated_replicas: count(updated as usize),
        ready_replicas: count(ready_count as usize),
        available_replicas: count(ready_count as usize),
        unavailable_replicas: count((replicas - ready_count).max(0) as usize),
        conditions: Some(vec![
            condition(
                "Available",
                enough,
                if enough {
                    "MinimumReplicasAvailable"
                } else {
                    "MinimumReplicasUnavailable"
                },
            ),
            condition(
                "Progressing",
                true,
                if progressing_done {
                    "NewReplicaSetAvailable"
                } else {
                    "ReplicaSetUpdated"
                },
            ),
        ]),
        ..Default::default()
    };
    out
}

fn pod_from_template(d: &Deployment, hash: &str) -> Pod {
    let t = &d.spec.template;
    let dname = name(&d.metadata);
    let mut labels = t.metadata.as_ref().and_then(|m| m.labels.clone());
    let l = labels.get_or_insert_with(Default::default);
    l.insert(HASH_LABEL.into(), hash.into());
    Pod {
        metadata: ObjectMeta {
            name: Some(format!("{dname}-{hash}-{}", crate::meta::random_suffix())),
            namespace: d.metadata.namespace.clone(),
            labels,
            annotations: t.metadata.as_ref().and_then(|m| m.annotations.clone()),
            owner_references: Some(vec![OwnerReference {
                api_version: "apps/v1".into(),
                kind: "Deployment".into(),
                name: dname,
                uid: d.metadata.uid.clone().unwrap_or_default(),
                controller: Some(true),
                block_owner_deletion: Some(true),
            }]),
            ..Default::default()
        },
        spec: t.spec.clone(),
        status: None,
    }
}

/// Keeps condition timestamps when nothing about a condition changed.
fn merge_status(old: Option<&DeploymentStatus>, mut new: DeploymentStatus) -> DeploymentStatus {
    let now: Option<Time> = typed::view(&Value::String(crate::meta::now_rfc3339()));
    let old_conditions = old
        .and_then(|o| o.conditions.as_deref())
        .unwrap_or_default();
    for c in new.conditions.iter_mut().flatten() {
        let prev = old_conditions.iter().find(|p| p.type_ == c.type_);
        match prev {
            Some(p) if p.status == c.status && p.reason == c.reason => {
                c.last_transition_time = p.last_transition_time.clone();
                c.last_update_time = p.last_update_time.clone();
            }
            _ => {
                c.last_transition_time = now.clone();
                c.last_update_time = now.clone();
            }
        }
    }
    new
}

/// Creates and deletes one live Deployment's pods as its plan says, and updates its status.
fn sync_deployment(
    tx: &mut Tx,
    state: &AppState,
    stored: &Value,
    d: &Deployment,
    owned: &[Pod],
) -> Result<(), ApiError> {
    let ns = d.metadata.namespace.clone().unwrap_or_default();
    let p = plan(d, owned);
    let hash = template_hash(d);
    for _ in 0..p.create {
        let pod = typed::encode(&pod_from_template(d, &hash))?;
        crud::create_in(tx, state, PODS, pod, false)?;
    }
    for name in &p.delete {
        let key = store::key(PODS, &ns, name);
        if let Some(old) = tx.get(PODS, &key) {
            delete::delete_in(tx, PODS, &key, &old, None, false)?;
        }
    }
    let status = merge_status(d.status.as_ref(), p.status);
    if Some(&status) != d.status.as_ref() {
        let key = store::object_key(DEPLOYMENTS, stored);
        let mut new = d.clone();
        new.status = Some(status);
        let new = typed::encode(&new)?;
        crud::update_in(
            tx,
            state,
            DEPLOYMENTS,
            &key,
            stored,
            new,
            Some("status"),
            false,
        )?;
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

/// The pods (stored and typed) a Deployment `uid` owns, from the owner index.
fn owned_by(tx: &Tx, uid: &str) -> Vec<(Arc<Value>, Pod)> {
    tx.pods_owned_by(uid)
        .into_iter()
        .filter_map(|v| Some((v.clone(), typed::view::<Pod>(&v)?)))
        .filter(|(_, p)| owner_uid(p) == Some(uid))
        .collect()
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
    let owned = owned_by(tx, uid);
    let stored = tx.get(DEPLOYMENTS, &store::key(DEPLOYMENTS, ns, name));
    let live = stored
        .as_ref()
        .and_then(|v| Some((v, typed::view::<Deployment>(v)?)));
    match live {
        Some((v, d))
            if d.metadata.uid.as_deref() == Some(uid)
                && d.metadata.deletion_timestamp.is_none() =>
        {
            let pods: Vec<Pod> = owned.into_iter().map(|(_, p)| p).collect();
            sync_deployment(tx, state, v, &d, &pods)
        }
        _ => {
            let pods: Vec<Arc<Value>> = owned.into_iter().map(|(v, _)| v).collect();
            collect(tx, &pods)
        }
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
            if let Some(d) = typed::view::<Deployment>(o) {
                if let Some(uid) = d.metadata.uid.clone() {
                    out.insert((ns, name(&d.metadata), uid));
                }
            }
        } else if std::ptr::eq(e.res, PODS) {
            if let Some(p) = typed::view::<Pod>(o) {
                if let Some((name, uid)) = owner(&p) {
                    out.insert((ns, name.to_string(), uid.to_string()));
                }
            }
        }
    }
    out
}

/// A resync: every Deployment, and every owner uid in the owner index that names no live
/// Deployment (its pods, if owned by a Deployment, are collected). Proportional to the
/// Deployments and owners, not to the pods.
fn resync_targets(tx: &Tx) -> BTreeSet<(String, String, String)> {
    let mut out = BTreeSet::new();
    let mut live = BTreeSet::new();
    for v in tx.list(DEPLOYMENTS, None) {
        let Some(d) = typed::view::<Deployment>(&v) else {
            continue;
        };
        if let Some(uid) = d.metadata.uid.clone() {
            live.insert(uid.clone());
            let ns = d.metadata.namespace.clone().unwrap_or_default();
            out.insert((ns, name(&d.metadata), uid));
        }
    }
    for uid in tx.owner_uids() {
        if live.contains(&uid) {
            continue;
        }
        // The owner's name and namespace come from one of its pods; a uid that names
        // no Deployment (a pod owned by something else) yields nothing.
        let Some((v, p)) = owned_by(tx, &uid).into_iter().next() else {
            continue;
        };
        if let Some((name, _)) = owner(&p) {
            let ns = crate::meta::namespace(&v).to_string();
            out.insert((ns, name.to_string(), uid));
        }
    }
    out
}

pub struct Controller;

impl Reconcile for Controller {
    fn reconcile(&mut self, state: &AppState, events: Option<&[Arc<Event>]>) {
        let targets = match events {
            Some(events) => affected(events),
            None => match state.store.write(|tx| Ok(resync_targets(tx))) {
                Ok((t, _)) => t,
                Err(e) => {
                    tracing::warn!("deployment controller resync: {}", e.message);
                    return;
                }
            },
        };
        for (ns, name, uid) in targets {
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
    use serde_json::json;

    fn deploy(replicas: i64, image: &str) -> Deployment {
        let v = json!({"metadata": {"name": "web", "namespace": "d", "uid": "u", "generation": 1},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "web"}},
                "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}},
                "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": image}]}}}});
        typed::view(&v).expect("a Deployment")
    }

    fn pod_of(d: &Deployment, name: &str, is_ready: bool) -> Pod {
        let mut p = pod_from_template(d, &template_hash(d));
        p.metadata.name = Some(name.into());
        let status = json!({"conditions": [{"type": "Ready", "status": if is_ready {"True"} else {"False"}}]});
        p.status = typed::view(&status);
        p
    }

    #[test]
    fn scales_up_then_rolls_within_surge_and_availability() {
        let v1 = deploy(4, "one");
        assert_eq!(plan(&v1, &[]).create, 4);
        let owned: Vec<Pod> = (0..4)
            .map(|i| pod_of(&v1, &format!("a{i}"), true))
            .collect();
        let v2 = deploy(4, "two");
        let p = plan(&v2, &owned);
        // maxSurge 25% of 4 = 1 new pod; maxUnavailable 25% = 1 old pod may go.
        assert_eq!(p.create, 1);
        assert_eq!(p.delete.len(), 1);
        assert_eq!(p.status.updated_replicas, Some(0));
    }

    #[test]
    fn scales_down_unready_first() {
        let d = deploy(1, "one");
        let owned = vec![pod_of(&d, "ready", true), pod_of(&d, "unready", false)];
        assert_eq!(plan(&d, &owned).delete, ["unready"]);
    }

    #[test]
    fn the_template_hash_is_that_of_the_stored_json() {
        // Pods created before the controller read typed objects keep their hash.
        let d = deploy(1, "one");
        let stored = typed::encode(&d).expect("encodes");
        assert_eq!(
            template_hash(&d),
            short_hash(&stored["spec"]["template"].to_string())
        );
    }
}
