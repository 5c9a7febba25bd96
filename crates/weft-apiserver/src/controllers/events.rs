//! The control plane's Events, and their bounds. From the store's changes it records what
//! kube-scheduler and the controllers would: `Scheduled` when a pod is bound to a node,
//! `FailedScheduling` when the scheduler finds no node for it (once per reason),
//! `IPAllocated` when a LoadBalancer Service gets its address, `RegisteredNode` for a new
//! Node. Events expire after [`TTL`] (kube-apiserver's `--event-ttl` default) and at most
//! [`MAX_EVENTS`] are kept (the oldest go first), so a flood cannot grow the store. Past
//! the bound they are pruned down to [`LOW_WATER`], not to the bound itself: a prune lists
//! and sorts every Event, and pruning to the bound ran one after every batch of new Events
//! (a burst of 1000 pod creates took twice the control plane's CPU once the bound was
//! reached); with the gap it runs once per `MAX_EVENTS - LOW_WATER` new Events.

use super::Reconcile;
use crate::resources::{self, Resource, NODES, PODS, SERVICES};
use crate::server::AppState;
use crate::store::{self, Event, EventType};
use k8s_openapi::api::core::v1::Pod;
use serde_json::{json, Value};
use std::sync::Arc;

pub const TTL_SECS: u64 = 3600;
pub const MAX_EVENTS: usize = 2000;
/// What a prune past [`MAX_EVENTS`] leaves.
pub const LOW_WATER: usize = MAX_EVENTS * 9 / 10;
pub const TTL: std::time::Duration = std::time::Duration::from_secs(TTL_SECS);

fn event_kinds() -> Vec<&'static Resource> {
    let mut v = Vec::new();
    for (g, p) in [("", "events"), ("events.k8s.io", "events")] {
        if let Some(r) = resources::find(g, "v1", p) {
            v.push(r);
        }
    }
    v
}

#[derive(Default)]
pub struct Controller;

fn lb_ip(svc: &Value) -> Option<&str> {
    svc["status"]["loadBalancer"]["ingress"][0]["ip"].as_str()
}

fn node_of(pod: &Value) -> &str {
    pod["spec"]["nodeName"].as_str().unwrap_or("")
}

/// A core/v1 Event about `obj` (of `kind`).
pub fn event(
    obj: &Value,
    kind: &str,
    type_: &str,
    reason: &str,
    message: String,
    component: &str,
) -> Value {
    let now = crate::meta::now_rfc3339();
    let name = crate::meta::name(obj);
    let ns = match crate::meta::namespace(obj) {
        "" => "default",
        ns => ns,
    };
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    json!({
        "apiVersion": "v1", "kind": "Event",
        "metadata": {"name": format!("{name}.{nanos:x}"), "namespace": ns,
            "uid": crate::meta::new_uid(), "creationTimestamp": now},
        "involvedObject": {"apiVersion": obj["apiVersion"].as_str().unwrap_or("v1"),
            "kind": kind, "name": name, "namespace": crate::meta::namespace(obj),
            "uid": obj["metadata"]["uid"], "resourceVersion": obj["metadata"]["resourceVersion"]},
        "reason": reason, "message": message, "type": type_,
        "source": {"component": component},
        "firstTimestamp": now, "lastTimestamp": now, "count": 1,
        "reportingComponent": component, "reportingInstance": "",
    })
}

/// The message of a pod's `PodScheduled=False` condition that the scheduler set.
fn unschedulable(pod: &Value) -> Option<String> {
    let pod: Pod = crate::typed::view(pod)?;
    let c = pod
        .status?
        .conditions?
        .into_iter()
        .find(|c| c.type_ == "PodScheduled")?;
    let mine = c.status == "False" && c.reason.as_deref() == Some(super::scheduler::UNSCHEDULABLE);
    mine.then(|| c.message.unwrap_or_default())
}

fn derive(e: &Event) -> Option<Value> {
    let o = &e.object;
    if std::ptr::eq(e.res, PODS) && e.ty != EventType::Deleted {
        let before = e.prev.as_deref().and_then(unschedulable);
        if let Some(why) = unschedulable(o).filter(|m| Some(m) != before.as_ref()) {
            return Some(event(
                o,
                "Pod",
                "Warning",
                "FailedScheduling",
                why,
                "default-scheduler",
            ));
        }
    }
    if std::ptr::eq(e.res, PODS) && e.ty == EventType::Modified {
        let before = e.prev.as_deref().map(node_of).unwrap_or("");
        let now = node_of(o);
        if before.is_empty() && !now.is_empty() {
            let who = format!("{}/{}", crate::meta::namespace(o), crate::meta::name(o));
            return Some(event(
                o,
                "Pod",
                "Normal",
                "Scheduled",
                format!("Successfully assigned {who} to {now}"),
                "default-scheduler",
            ));
        }
    }
    if std::ptr::eq(e.res, SERVICES) && e.ty != EventType::Deleted {
        let before = e.prev.as_deref().and_then(lb_ip);
        if let Some(ip) = lb_ip(o).filter(|ip| Some(*ip) != before) {
            return Some(event(
                o,
                "Service",
                "Normal",
                "IPAllocated",
                format!("Assigned IP [\"{ip}\"]"),
                "weft-lb-controller",
            ));
        }
    }
    if std::ptr::eq(e.res, NODES) && e.ty == EventType::Added {
        let name = crate::meta::name(o);
        return Some(event(
            o,
            "Node",
            "Normal",
            "RegisteredNode",
            format!("Node {name} event: Registered Node {name} in Controller"),
            "node-controller",
        ));
    }
    None
}

fn stamp(ev: &Value) -> u64 {
    ["lastTimestamp", "eventTime", "deprecatedLastTimestamp"]
        .iter()
        .find_map(|k| ev[*k].as_str().and_then(crate::meta::parse_rfc3339))
        .or_else(|| {
            ev["metadata"]["creationTimestamp"]
                .as_str()
                .and_then(crate::meta::parse_rfc3339)
        })
        .unwrap_or(0)
}

/// Deletes expired Events, then the oldest beyond `keep`.
pub fn prune(state: &AppState, keep: usize) {
    let now = crate::meta::now_secs();
    let r = state.store.write(|tx| {
        for res in event_kinds() {
            let mut all: Vec<(u64, String)> = tx
                .list(res, None)
                .iter()
                .map(|e| (stamp(e), store::object_key(res, e)))
                .collect();
            all.sort();
            let excess = all.len().saturating_sub(keep);
            for (i, (t, key)) in all.into_iter().enumerate() {
                if i < excess || t + TTL_SECS < now {
                    tx.delete(res, key);
                }
            }
        }
        Ok(())
    });
    if let Err(e) = r {
        tracing::warn!("pruning events: {}", e.message);
    }
}

impl Reconcile for Controller {
    fn reconcile(&mut self, state: &AppState, events: Option<&[Arc<Event>]>) {
        let Some(evs) = events else {
            prune(state, MAX_EVENTS);
            return;
        };
        let new: Vec<Value> = evs.iter().filter_map(|e| derive(e)).collect();
        let core = event_kinds()[0];
        if !new.is_empty() {
            let r = state.store.write(|tx| {
                for ev in new {
                    let key = store::object_key(core, &ev);
                    tx.put(core, key, ev);
                }
                Ok(())
            });
            if let Err(e) = r {
                tracing::warn!("recording events: {}", e.message);
            }
        }
        // Also after Events that clients (the agents) created.
        if state.store.read().count(core) > MAX_EVENTS {
            prune(state, LOW_WATER);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_name_their_object() {
        let pod = json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p", "namespace": "ns1", "uid": "u1", "resourceVersion": "7"}});
        let e = event(
            &pod,
            "Pod",
            "Normal",
            "Scheduled",
            "m".into(),
            "default-scheduler",
        );
        assert_eq!(e["involvedObject"]["uid"], "u1");
        assert_eq!(e["metadata"]["namespace"], "ns1");
        assert!(e["metadata"]["name"].as_str().unwrap().starts_with("p."));
        assert!(stamp(&e) > 0);
    }
}
