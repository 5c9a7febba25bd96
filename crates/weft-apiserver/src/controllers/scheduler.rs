//! Binds pods without `spec.nodeName` to Ready, schedulable nodes, spreading them (the
//! node with the fewest pods wins, ties by name).
//!
//! A batch of events looks only at the unscheduled pods it names; a node change (or a
//! resync) retries every unbound pod. Both come from the store's indexes, as do the
//! per-node pod counts: no pass lists every pod.

use super::Reconcile;
use crate::resources::{NODES, PODS};
use crate::server::AppState;
use crate::store::{self, Event};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

fn node_ready(node: &Value) -> bool {
    node["spec"]["unschedulable"] != json!(true)
        && node["metadata"]["deletionTimestamp"].is_null()
        && node["status"]["conditions"].as_array().is_some_and(|cs| {
            cs.iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        })
}

fn tolerates(pod: &Value, taint: &Value) -> bool {
    pod["spec"]["tolerations"].as_array().is_some_and(|ts| {
        ts.iter().any(|t| {
            let key_ok = t["operator"] == "Exists"
                && t["key"]
                    .as_str()
                    .is_none_or(|k| k.is_empty() || Some(k) == taint["key"].as_str())
                || (t["key"] == taint["key"]
                    && t["value"].as_str().unwrap_or("") == taint["value"].as_str().unwrap_or(""));
            let effect_ok = t["effect"]
                .as_str()
                .is_none_or(|e| e.is_empty() || Some(e) == taint["effect"].as_str());
            key_ok && effect_ok
        })
    })
}

fn fits(pod: &Value, node: &Value) -> bool {
    let taints_ok = node["spec"]["taints"].as_array().is_none_or(|ts| {
        ts.iter()
            .filter(|t| t["effect"] == "NoSchedule" || t["effect"] == "NoExecute")
            .all(|t| tolerates(pod, t))
    });
    let selector_ok = pod["spec"]["nodeSelector"].as_object().is_none_or(|sel| {
        sel.iter()
            .all(|(k, v)| node["metadata"]["labels"].get(k) == Some(v))
    });
    taints_ok && selector_ok
}

fn unscheduled(pod: &Value) -> bool {
    pod["spec"]["nodeName"].as_str().is_none_or(str::is_empty)
        && pod["metadata"]["deletionTimestamp"].is_null()
        && pod["spec"]["schedulerName"]
            .as_str()
            .is_none_or(|s| s == "default-scheduler")
}

/// Pure placement: which node each pending pod goes to, given how many pods each node
/// has (`pods_on`).
pub fn place(
    pending: &[Arc<Value>],
    nodes: &[Arc<Value>],
    pods_on: impl Fn(&str) -> usize,
) -> Vec<(String, String)> {
    let mut load: BTreeMap<String, usize> = nodes
        .iter()
        .filter(|n| node_ready(n))
        .map(|n| {
            let name = crate::meta::name(n);
            (name.to_string(), pods_on(name))
        })
        .collect();
    let mut out = Vec::new();
    for pod in pending {
        let best = nodes
            .iter()
            .filter(|n| load.contains_key(crate::meta::name(n)) && fits(pod, n))
            .map(|n| crate::meta::name(n).to_string())
            .min_by_key(|n| (load.get(n).copied().unwrap_or(0), n.clone()));
        if let Some(node) = best {
            if let Some(c) = load.get_mut(&node) {
                *c += 1;
            }
            out.push((store::object_key(PODS, pod), node));
        }
    }
    out
}

#[derive(Default)]
pub struct Controller;

impl Reconcile for Controller {
    fn reconcile(&mut self, state: &AppState, events: Option<&[Arc<Event>]>) {
        let full = events.is_none_or(|evs| evs.iter().any(|e| std::ptr::eq(e.res, NODES)));
        let named: BTreeSet<String> = events
            .unwrap_or_default()
            .iter()
            .filter(|e| std::ptr::eq(e.res, PODS) && unscheduled(&e.object))
            .map(|e| store::object_key(PODS, &e.object))
            .collect();
        if !full && named.is_empty() {
            return;
        }
        let r = state.store.write(|tx| {
            let pending: Vec<Arc<Value>> = if full {
                tx.unbound_pods()
            } else {
                named.iter().filter_map(|k| tx.get(PODS, k)).collect()
            };
            let pending: Vec<Arc<Value>> = pending.into_iter().filter(|p| unscheduled(p)).collect();
            if pending.is_empty() {
                return Ok(());
            }
            let nodes = tx.list(NODES, None);
            for (key, node) in place(&pending, &nodes, |n| tx.pods_on_node(n)) {
                let Some(old) = tx.get(PODS, &key) else {
                    continue;
                };
                let mut pod = (*old).clone();
                pod["spec"]["nodeName"] = json!(node);
                let cond = json!({"type": "PodScheduled", "status": "True",
                    "lastTransitionTime": crate::meta::now_rfc3339()});
                match pod["status"]["conditions"].as_array_mut() {
                    Some(cs) => {
                        cs.retain(|c| c["type"] != "PodScheduled");
                        cs.push(cond);
                    }
                    None => pod["status"]["conditions"] = json!([cond]),
                }
                if let Some(m) = pod["metadata"].as_object_mut() {
                    m.remove("resourceVersion");
                }
                tx.put(PODS, key, pod);
            }
            Ok(())
        });
        if let Err(e) = r {
            tracing::warn!("scheduler: {}", e.message);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, ready: bool) -> Arc<Value> {
        Arc::new(
            json!({"metadata": {"name": name}, "status": {"conditions": [
            {"type": "Ready", "status": if ready {"True"} else {"False"}}]}}),
        )
    }

    #[test]
    fn spreads_over_ready_nodes() {
        let nodes = vec![
            node("node-1", true),
            node("node-2", true),
            node("node-3", false),
        ];
        let pending: Vec<Arc<Value>> = (0..4)
            .map(|i| {
                Arc::new(
                    json!({"metadata": {"name": format!("p{i}"), "namespace": "d"}, "spec": {}}),
                )
            })
            .collect();
        let placed = place(&pending, &nodes, |_| 0);
        let on = |n: &str| placed.iter().filter(|(_, x)| x == n).count();
        assert_eq!((on("node-1"), on("node-2"), on("node-3")), (2, 2, 0));
    }
}
