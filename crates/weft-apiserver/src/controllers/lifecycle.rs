//! Finishing deletions: pods whose grace period has run out, namespaces being deleted
//! (their contents are deleted, then the namespace's own finalizer is dropped), and pods
//! bound to a Node that no longer exists (what Kubernetes' pod GC does: no kubelet is left
//! to stop them, so they are deleted at once and their controllers replace them). Deleting
//! a Node removes its pods right away; a pod bound to a node that never existed (a manifest
//! naming a node that has not registered yet) gets `ORPHAN_GRACE` to see it appear.

use super::Reconcile;
use crate::api::crud;
use crate::resources::{NAMESPACES, NODES, PODS, RESOURCES};
use crate::server::AppState;
use crate::store::{self, Event, EventType};
use crate::typed;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde_json::{json, Value};
use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Whether a terminating object's grace period is over and nothing holds it back.
fn grace_expired(meta: &ObjectMeta, now: u64) -> bool {
    meta.deletion_timestamp
        .as_ref()
        .and_then(|t| u64::try_from(t.0.as_second()).ok())
        .is_some_and(|t| t <= now)
        && meta.finalizers.as_ref().is_none_or(|f| f.is_empty())
}

/// An object's metadata, typed; None when it has none to read.
fn meta_of(obj: &Value) -> Option<ObjectMeta> {
    typed::view(&obj["metadata"])
}

fn being_deleted(obj: &Value) -> bool {
    meta_of(obj).is_some_and(|m| m.deletion_timestamp.is_some())
}

/// How long a pod may stay bound to a node that is not registered (Kubernetes waits 40 s).
const ORPHAN_GRACE: Duration = Duration::from_secs(40);

#[derive(Default)]
pub struct Controller {
    /// Pods first seen bound to an absent node, by storage key.
    orphans: HashMap<String, Instant>,
}

impl Reconcile for Controller {
    fn reconcile(&mut self, state: &AppState, events: Option<&[Arc<Event>]>) {
        let deleted_nodes: HashSet<String> = events
            .unwrap_or_default()
            .iter()
            .filter(|e| std::ptr::eq(e.res, NODES) && e.ty == EventType::Deleted)
            .map(|e| crate::meta::name(&e.object).to_string())
            .collect();
        if let Some(evs) = events {
            let ns_deleting = evs
                .iter()
                .any(|e| std::ptr::eq(e.res, NAMESPACES) && being_deleted(&e.object));
            if !ns_deleting && deleted_nodes.is_empty() {
                return;
            }
        }
        let orphans = &mut self.orphans;
        let mut still_orphaned = HashSet::new();
        let now = crate::meta::now_secs();
        let r = state.store.write(|tx| {
            // The store indexes pods by node and by deletionTimestamp: a tick costs the
            // nodes, the orphans and the terminating pods, not every pod.
            let nodes: BTreeSet<String> = tx
                .list(NODES, None)
                .iter()
                .map(|n| crate::meta::name(n).to_string())
                .collect();
            let mut doomed = BTreeSet::new();
            for (node, pods) in tx.pods_on_other_nodes(&nodes) {
                for pod in pods {
                    let key = store::object_key(PODS, &pod);
                    still_orphaned.insert(key.clone());
                    let since = *orphans.entry(key.clone()).or_insert_with(Instant::now);
                    if deleted_nodes.contains(&node) || since.elapsed() >= ORPHAN_GRACE {
                        doomed.insert(key);
                    }
                }
            }
            for pod in tx.terminating_pods() {
                if meta_of(&pod).is_some_and(|m| grace_expired(&m, now)) {
                    doomed.insert(store::object_key(PODS, &pod));
                }
            }
            for key in doomed {
                tx.delete(PODS, key);
            }
            for ns in tx.list(NAMESPACES, None) {
                if !being_deleted(&ns) {
                    continue;
                }
                let name = crate::meta::name(&ns).to_string();
                let mut remaining = 0usize;
                for res in RESOURCES.iter().filter(|r| r.namespaced) {
                    for obj in tx.list(res, Some(&name)) {
                        remaining += 1;
                        if !being_deleted(&obj) {
                            let key = store::object_key(res, &obj);
                            crate::api::delete::delete_in(tx, res, &key, &obj, None, false)?;
                        }
                    }
                }
                if remaining == 0 {
                    let mut new = (*ns).clone();
                    new["spec"]["finalizers"] = json!([]);
                    let key = store::key(NAMESPACES, "", &name);
                    crud::update_in(
                        tx,
                        state,
                        NAMESPACES,
                        &key,
                        &ns,
                        new,
                        Some("finalize"),
                        false,
                    )?;
                }
            }
            Ok(())
        });
        self.orphans.retain(|k, _| still_orphaned.contains(k));
        if let Err(e) = r {
            tracing::warn!("lifecycle controller: {}", e.message);
        }
    }
}
