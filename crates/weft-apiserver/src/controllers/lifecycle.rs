//! Finishing deletions: pods whose grace period has run out, and namespaces being deleted
//! (their contents are deleted, then the namespace's own finalizer is dropped).

use super::Reconcile;
use crate::api::crud;
use crate::resources::{NAMESPACES, PODS, RESOURCES};
use crate::server::AppState;
use crate::store::{self, Event};
use serde_json::{json, Value};
use std::sync::Arc;

fn grace_expired(pod: &Value, now: u64) -> bool {
    pod["metadata"]["deletionTimestamp"]
        .as_str()
        .and_then(crate::meta::parse_rfc3339)
        .is_some_and(|t| t <= now)
        && pod["metadata"]["finalizers"]
            .as_array()
            .is_none_or(|f| f.is_empty())
}

pub struct Controller;

impl Reconcile for Controller {
    fn reconcile(&mut self, state: &AppState, events: Option<&[Arc<Event>]>) {
        if let Some(evs) = events {
            let ns_deleting = evs.iter().any(|e| {
                std::ptr::eq(e.res, NAMESPACES)
                    && e.object["metadata"]["deletionTimestamp"].is_string()
            });
            if !ns_deleting {
                return;
            }
        }
        let now = crate::meta::now_secs();
        let r = state.store.write(|tx| {
            for pod in tx.list(PODS, None) {
                if grace_expired(&pod, now) {
                    tx.delete(PODS, store::object_key(PODS, &pod));
                }
            }
            for ns in tx.list(NAMESPACES, None) {
                if ns["metadata"]["deletionTimestamp"].is_null() {
                    continue;
                }
                let name = crate::meta::name(&ns).to_string();
                let mut remaining = 0usize;
                for res in RESOURCES.iter().filter(|r| r.namespaced) {
                    for obj in tx.list(res, Some(&name)) {
                        remaining += 1;
                        if obj["metadata"]["deletionTimestamp"].is_null() {
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
        if let Err(e) = r {
            tracing::warn!("lifecycle controller: {}", e.message);
        }
    }
}
