//! Binds pods without `spec.nodeName` to Ready, schedulable nodes with room, spreading
//! them (the node with the fewest pods wins, ties by name). A node's room is its pod
//! capacity ([`crate::admission::pod_capacity`]: allocatable pods, from its pod CIDR), as
//! kubelet's max-pods bounds a real node. Pods that have finished (Succeeded or Failed) but
//! are not deleted take no room, as kube-scheduler leaves terminal pods out. A pod no node takes stays unbound with
//! `PodScheduled=False` (reason `Unschedulable`, message as kube-scheduler's
//! "0/3 nodes are available: 3 Too many pods."); the Events controller records a
//! `FailedScheduling` Event for it.
//!
//! Work follows the change: a batch of events looks at the unscheduled pods it names;
//! a pod leaving a node (or finishing on it) retries the pods that waited for room; only a change to what
//! placement reads of a node (readiness, labels, taints, capacity; not its heartbeat), or
//! a resync, retries every unbound pod. Pods come from the store's indexes, as do the
//! per-node pod counts: no pass lists every pod.

use super::Reconcile;
use crate::admission::pod_capacity;
use crate::resources::{NODES, PODS};
use crate::server::AppState;
use crate::store::{self, Event, EventType};
use crate::typed;
use k8s_openapi::api::core::v1::{Node, Pod, PodCondition, PodStatus, Taint};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

pub const UNSCHEDULABLE: &str = "Unschedulable";
const TOO_MANY_PODS: &str = "Too many pods";

fn node_ready(node: &Node) -> bool {
    let conditions = node.status.as_ref().and_then(|s| s.conditions.as_ref());
    conditions.is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn cordoned(node: &Node) -> bool {
    node.spec.as_ref().and_then(|s| s.unschedulable) == Some(true)
        || node.metadata.deletion_timestamp.is_some()
}

fn tolerates(pod: &Pod, taint: &Taint) -> bool {
    let tolerations = pod.spec.as_ref().and_then(|s| s.tolerations.as_ref());
    tolerations.is_some_and(|ts| {
        ts.iter().any(|t| {
            let key = t.key.as_deref().unwrap_or("");
            let key_ok = if t.operator.as_deref() == Some("Exists") {
                key.is_empty() || key == taint.key
            } else {
                key == taint.key
                    && t.value.as_deref().unwrap_or("") == taint.value.as_deref().unwrap_or("")
            };
            let effect = t.effect.as_deref().unwrap_or("");
            key_ok && (effect.is_empty() || effect == taint.effect)
        })
    })
}

/// Why a node does not take a pod; the text is kube-scheduler's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Misfit {
    Full,
    NotReady,
    Cordoned,
    Taint,
    Selector,
}

impl Misfit {
    fn text(self) -> &'static str {
        match self {
            Misfit::Full => TOO_MANY_PODS,
            Misfit::NotReady => "node(s) were not ready",
            Misfit::Cordoned => "node(s) were unschedulable",
            Misfit::Taint => "node(s) had untolerated taint(s)",
            Misfit::Selector => "node(s) didn't match Pod's node affinity/selector",
        }
    }
}

/// Whether `node` takes `pod` apart from room, and why not.
fn misfit(pod: &Pod, node: &Node) -> Option<Misfit> {
    if !node_ready(node) {
        return Some(Misfit::NotReady);
    }
    if cordoned(node) {
        return Some(Misfit::Cordoned);
    }
    let taints = node.spec.as_ref().and_then(|s| s.taints.as_deref());
    let blocking = taints
        .unwrap_or_default()
        .iter()
        .filter(|t| (t.effect == "NoSchedule" || t.effect == "NoExecute") && !tolerates(pod, t));
    if blocking.count() > 0 {
        return Some(Misfit::Taint);
    }
    let selector = pod.spec.as_ref().and_then(|s| s.node_selector.as_ref());
    let labels = node.metadata.labels.as_ref();
    let matches = selector.is_none_or(|sel| {
        sel.iter()
            .all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v))
    });
    (!matches).then_some(Misfit::Selector)
}

fn unscheduled(pod: &Pod) -> bool {
    let spec = pod.spec.as_ref();
    spec.and_then(|s| s.node_name.as_deref())
        .is_none_or(str::is_empty)
        && pod.metadata.deletion_timestamp.is_none()
        && spec
            .and_then(|s| s.scheduler_name.as_deref())
            .is_none_or(|s| s == "default-scheduler")
}

/// What placement decided for one pending pod.
#[derive(Debug, PartialEq)]
pub enum Outcome {
    Bind(String),
    /// No node takes it: the message, and whether some node lacked only room (then the
    /// pod is retried when a pod leaves a node).
    Unschedulable {
        message: String,
        waits_for_room: bool,
    },
}

/// Pure placement: where each pending pod (by store key) goes, given how many pods each
/// node has (`pods_on`).
pub fn place(
    pending: &[(String, Pod)],
    nodes: &[Node],
    pods_on: impl Fn(&str) -> usize,
) -> Vec<(String, Outcome)> {
    let name = |n: &Node| n.metadata.name.clone().unwrap_or_default();
    let mut load: BTreeMap<String, usize> =
        nodes.iter().map(|n| (name(n), pods_on(&name(n)))).collect();
    let mut out = Vec::new();
    for (key, pod) in pending {
        let mut misfits: BTreeMap<Misfit, usize> = BTreeMap::new();
        let mut best: Option<(usize, String)> = None;
        for n in nodes {
            let node = name(n);
            let have = load.get(&node).copied().unwrap_or(0);
            let why = misfit(pod, n).or_else(|| {
                let cap = pod_capacity(n).map(|c| usize::try_from(c).unwrap_or(0));
                cap.is_some_and(|c| have >= c).then_some(Misfit::Full)
            });
            match why {
                Some(m) => *misfits.entry(m).or_default() += 1,
                None if best.as_ref().is_none_or(|b| (have, &node) < (b.0, &b.1)) => {
                    best = Some((have, node))
                }
                None => {}
            }
        }
        let outcome = match best {
            Some((_, node)) => {
                *load.entry(node.clone()).or_default() += 1;
                Outcome::Bind(node)
            }
            None => Outcome::Unschedulable {
                message: unschedulable_message(nodes.len(), &misfits),
                waits_for_room: misfits.contains_key(&Misfit::Full),
            },
        };
        out.push((key.clone(), outcome));
    }
    out
}

/// "0/3 nodes are available: 1 node(s) were not ready, 2 Too many pods." (reasons sorted
/// as strings, count first, as kube-scheduler sorts them).
fn unschedulable_message(nodes: usize, misfits: &BTreeMap<Misfit, usize>) -> String {
    if nodes == 0 {
        return "no nodes available to schedule pods".into();
    }
    let mut reasons: Vec<String> = misfits
        .iter()
        .map(|(m, n)| format!("{n} {}", m.text()))
        .collect();
    reasons.sort();
    format!("0/{nodes} nodes are available: {}.", reasons.join(", "))
}

/// What placement reads of a node: a change to it may let pending pods in.
fn placement_view(node: &Node) -> (bool, bool, Value, Value, Option<i64>) {
    let spec = node.spec.as_ref();
    (
        node_ready(node),
        cordoned(node),
        serde_json::to_value(spec.and_then(|s| s.taints.as_ref())).unwrap_or_default(),
        serde_json::to_value(&node.metadata.labels).unwrap_or_default(),
        pod_capacity(node),
    )
}

fn node_changed(e: &Event) -> bool {
    let view = |v: &Value| typed::view::<Node>(v).map(|n| placement_view(&n));
    e.ty != EventType::Modified || e.prev.as_deref().and_then(view) != view(&e.object)
}

/// A pod gave up its room: deleted, unbound, or finished (Succeeded/Failed) on its node.
fn left_a_node(e: &Event) -> bool {
    let before = e.prev.as_deref().and_then(store::occupied_node);
    let now = (e.ty != EventType::Deleted)
        .then(|| store::occupied_node(&e.object))
        .flatten();
    before.is_some() && now.is_none()
}

/// The pod with `spec.nodeName` set and `PodScheduled=True`, or with `PodScheduled=False`
/// naming why; None when the stored pod already says so.
fn decided(pod: &Pod, outcome: &Outcome) -> Option<Pod> {
    let (status, reason, message) = match outcome {
        Outcome::Bind(_) => ("True", None, None),
        Outcome::Unschedulable { message, .. } => (
            "False",
            Some(UNSCHEDULABLE.to_string()),
            Some(message.clone()),
        ),
    };
    let conditions = pod.status.as_ref().and_then(|s| s.conditions.as_deref());
    let current = conditions
        .unwrap_or_default()
        .iter()
        .find(|c| c.type_ == "PodScheduled");
    let same = current.is_some_and(|c| c.status == status && c.message == message);
    if same && !matches!(outcome, Outcome::Bind(_)) {
        return None;
    }
    let mut pod = pod.clone();
    if let Outcome::Bind(node) = outcome {
        pod.spec.get_or_insert_with(Default::default).node_name = Some(node.clone());
    }
    let status_ = pod.status.get_or_insert_with(PodStatus::default);
    let cs = status_.conditions.get_or_insert_with(Vec::new);
    cs.retain(|c| c.type_ != "PodScheduled");
    cs.push(PodCondition {
        type_: "PodScheduled".into(),
        status: status.into(),
        reason,
        message,
        last_transition_time: typed::view(&Value::String(crate::meta::now_rfc3339())),
        ..Default::default()
    });
    pod.metadata.resource_version = None;
    Some(pod)
}

#[derive(Default)]
pub struct Controller {
    /// Pods some node refused only for lack of room: retried when a pod leaves a node.
    waiting: BTreeSet<String>,
}

impl Reconcile for Controller {
    fn reconcile(&mut self, state: &AppState, events: Option<&[Arc<Event>]>) {
        let evs = events.unwrap_or_default();
        let full = events.is_none()
            || evs
                .iter()
                .any(|e| std::ptr::eq(e.res, NODES) && node_changed(e));
        let mut named: BTreeSet<String> = evs
            .iter()
            .filter(|e| std::ptr::eq(e.res, PODS) && e.ty != EventType::Deleted)
            .filter(|e| typed::view::<Pod>(&e.object).is_some_and(|p| unscheduled(&p)))
            .map(|e| store::object_key(PODS, &e.object))
            .collect();
        if evs
            .iter()
            .any(|e| std::ptr::eq(e.res, PODS) && left_a_node(e))
        {
            named.extend(std::mem::take(&mut self.waiting));
        }
        if !full && named.is_empty() {
            return;
        }
        let mut waiting = BTreeSet::new();
        let r = state.store.write(|tx| {
            let candidates: Vec<Arc<Value>> = if full {
                tx.unbound_pods()
            } else {
                named.iter().filter_map(|k| tx.get(PODS, k)).collect()
            };
            let pending: Vec<(String, Pod)> = candidates
                .iter()
                .filter_map(|v| Some((store::object_key(PODS, v), typed::view::<Pod>(v)?)))
                .filter(|(_, p)| unscheduled(p))
                .collect();
            if pending.is_empty() {
                return Ok(());
            }
            let nodes: Vec<Node> = tx
                .list(NODES, None)
                .iter()
                .filter_map(|n| typed::view(n))
                .collect();
            let pods: BTreeMap<&String, &Pod> = pending.iter().map(|(k, p)| (k, p)).collect();
            for (key, outcome) in place(&pending, &nodes, |n| tx.pods_on_node(n)) {
                if let Outcome::Unschedulable {
                    waits_for_room: true,
                    ..
                } = outcome
                {
                    waiting.insert(key.clone());
                }
                let Some(new) = pods.get(&key).and_then(|p| decided(p, &outcome)) else {
                    continue;
                };
                tx.put(PODS, key, typed::encode(&new)?);
            }
            Ok(())
        });
        if let Err(e) = r {
            tracing::warn!("scheduler: {}", e.message);
        }
        if full {
            self.waiting = waiting;
        } else {
            self.waiting.extend(waiting);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn node(name: &str, ready: bool, cidr: &str) -> Node {
        let v = json!({"metadata": {"name": name}, "spec": {"podCIDR": cidr},
            "status": {"conditions": [
            {"type": "Ready", "status": if ready {"True"} else {"False"}}]}});
        typed::view(&v).unwrap_or_default()
    }

    fn pods(n: usize) -> Vec<(String, Pod)> {
        (0..n)
            .map(|i| (format!("d/p{i}"), Pod::default()))
            .collect()
    }

    fn on<'a>(placed: &'a [(String, Outcome)], n: &str) -> usize {
        let bound = |o: &'a Outcome| matches!(o, Outcome::Bind(x) if x == n);
        placed.iter().filter(|(_, o)| bound(o)).count()
    }

    #[test]
    fn spreads_over_ready_nodes() {
        let cidr = "10.244.1.0/24";
        let nodes = vec![
            node("node-1", true, cidr),
            node("node-2", true, cidr),
            node("node-3", false, cidr),
        ];
        let placed = place(&pods(4), &nodes, |_| 0);
        let counts = (
            on(&placed, "node-1"),
            on(&placed, "node-2"),
            on(&placed, "node-3"),
        );
        assert_eq!(counts, (2, 2, 0));
    }

    #[test]
    fn a_full_node_takes_no_more_and_says_so() {
        // A /29 holds 5 pods; node-1 has 4 already, node-2 is not ready.
        let nodes = vec![
            node("node-1", true, "10.244.1.0/29"),
            node("node-2", false, "10.244.2.0/29"),
        ];
        let placed = place(&pods(3), &nodes, |n| if n == "node-1" { 4 } else { 0 });
        assert_eq!(on(&placed, "node-1"), 1);
        let want = Outcome::Unschedulable {
            message: "0/2 nodes are available: 1 Too many pods, 1 node(s) were not ready.".into(),
            waits_for_room: true,
        };
        assert_eq!(placed[1].1, want);
        assert_eq!(placed[2].1, want);
    }
}
