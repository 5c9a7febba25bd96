//! Indexes the store keeps in step with its objects, so that admission and controllers
//! find what a change touches without listing a whole kind: the allocators, pods and
//! EndpointSlices by label, Services by selector, pods by owner, by node, unbound and
//! terminating.
//!
//! Like the allocators they are derived state: updated under the store lock as each
//! committed write is applied, rebuilt from the objects when the store opens. Queries
//! through a [`Tx`] also see that transaction's pending writes: candidates come from the
//! committed index plus the pending keys, and each is re-read and re-checked through the
//! transaction.

use super::{res_index, Tx};
use crate::allocator::{Allocators, View};
use crate::resources::{Resource, ENDPOINTSLICES, PODS, SERVICES};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

/// (kind's storage slot, namespace, label key, label value).
type LabelKey = (usize, String, String, String);

pub struct Indexes {
    pub(super) alloc: Allocators,
    labels: HashMap<LabelKey, BTreeSet<String>>,
    /// Services under one pair of their `spec.selector` (the first): (namespace, key, value).
    selectors: HashMap<(String, String, String), BTreeSet<String>>,
    /// Pods by the uid of each of their owners.
    owners: HashMap<String, BTreeSet<String>>,
    /// Pods bound to each node.
    on_node: HashMap<String, BTreeSet<String>>,
    /// Of those, the ones that have finished (Succeeded or Failed): they take no room.
    finished_on_node: HashMap<String, BTreeSet<String>>,
    /// Pods without `spec.nodeName`.
    unbound: BTreeSet<String>,
    /// Pods with a `deletionTimestamp`.
    terminating: BTreeSet<String>,
}

fn is(res: &Resource, kind: &Resource) -> bool {
    res_index(res) == res_index(kind)
}

fn labelled(res: &Resource) -> bool {
    is(res, PODS) || is(res, ENDPOINTSLICES)
}

fn string_pairs(m: &Value) -> impl Iterator<Item = (&str, &str)> {
    m.as_object()
        .into_iter()
        .flatten()
        .filter_map(|(k, v)| Some((k.as_str(), v.as_str()?)))
}

fn selector_pair(svc: &Value) -> Option<(String, String, String)> {
    let (k, v) = string_pairs(&svc["spec"]["selector"]).next()?;
    let ns = crate::meta::namespace(svc).to_string();
    Some((ns, k.to_string(), v.to_string()))
}

fn owner_uids(obj: &Value) -> impl Iterator<Item = &str> {
    obj["metadata"]["ownerReferences"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|o| o["uid"].as_str())
}

fn node_of(pod: &Value) -> Option<&str> {
    pod["spec"]["nodeName"].as_str().filter(|n| !n.is_empty())
}

/// A pod that has run to completion (Succeeded or Failed) and is not deleted yet.
fn finished(pod: &Value) -> bool {
    matches!(
        pod["status"]["phase"].as_str(),
        Some("Succeeded" | "Failed")
    )
}

/// The node whose room a pod takes: the node it is bound to, unless it has finished
/// (kube-scheduler's pod informer leaves terminal pods out, so they take no room).
pub fn occupied_node(pod: &Value) -> Option<&str> {
    node_of(pod).filter(|_| !finished(pod))
}

/// Whether a stored object's `labels` have every pair of `selector`.
fn selects(selector: &BTreeMap<String, String>, labels: &Value) -> bool {
    selector
        .iter()
        .all(|(k, v)| labels.get(k).and_then(Value::as_str) == Some(v.as_str()))
}

/// Whether a stored Service's non-empty `selector` picks an object with `labels`.
fn picks(selector: &Value, labels: &BTreeMap<String, String>) -> bool {
    let Some(sel) = selector.as_object().filter(|s| !s.is_empty()) else {
        return false;
    };
    sel.iter()
        .all(|(k, v)| v.as_str().is_some() && labels.get(k).map(String::as_str) == v.as_str())
}

impl Indexes {
    pub fn new(alloc: Allocators) -> Indexes {
        Indexes {
            alloc,
            labels: HashMap::new(),
            selectors: HashMap::new(),
            owners: HashMap::new(),
            on_node: HashMap::new(),
            finished_on_node: HashMap::new(),
            unbound: BTreeSet::new(),
            terminating: BTreeSet::new(),
        }
    }

    /// A committed write: `prev` is what the key held before, `new` what it holds now.
    pub fn apply(&mut self, res: &Resource, key: &str, prev: Option<&Value>, new: Option<&Value>) {
        if is(res, SERVICES) {
            self.alloc.apply(prev, new);
            let (before, after) = (prev.and_then(selector_pair), new.and_then(selector_pair));
            if before != after {
                if let Some(p) = before {
                    remove(&mut self.selectors, p, key);
                }
                if let Some(p) = after {
                    self.selectors.entry(p).or_default().insert(key.to_string());
                }
            }
        }
        if labelled(res) {
            let before = prev.map(|o| &o["metadata"]["labels"]);
            if before != new.map(|o| &o["metadata"]["labels"]) {
                let slot = res_index(res);
                let pairs = |o: &Value| -> Vec<LabelKey> {
                    let ns = crate::meta::namespace(o).to_string();
                    string_pairs(&o["metadata"]["labels"])
                        .map(|(k, v)| (slot, ns.clone(), k.to_string(), v.to_string()))
                        .collect()
                };
                for p in prev.map(pairs).unwrap_or_default() {
                    remove(&mut self.labels, p, key);
                }
                for p in new.map(pairs).unwrap_or_default() {
                    self.labels.entry(p).or_default().insert(key.to_string());
                }
            }
        }
        if is(res, PODS) {
            if let Some(p) = prev {
                for uid in owner_uids(p) {
                    remove(&mut self.owners, uid.to_string(), key);
                }
                match node_of(p) {
                    Some(n) => {
                        remove(&mut self.on_node, n.to_string(), key);
                        remove(&mut self.finished_on_node, n.to_string(), key);
                    }
                    None => {
                        self.unbound.remove(key);
                    }
                }
                self.terminating.remove(key);
            }
            if let Some(p) = new {
                for uid in owner_uids(p) {
                    let e = self.owners.entry(uid.to_string()).or_default();
                    e.insert(key.to_string());
                }
                let set = match node_of(p) {
                    Some(n) => self.on_node.entry(n.to_string()).or_default(),
                    None => &mut self.unbound,
                };
                set.insert(key.to_string());
                if let Some(n) = node_of(p).filter(|_| finished(p)) {
                    let e = self.finished_on_node.entry(n.to_string()).or_default();
                    e.insert(key.to_string());
                }
                if p["metadata"]["deletionTimestamp"].is_string() {
                    self.terminating.insert(key.to_string());
                }
            }
        }
    }
}

fn remove<K: std::hash::Hash + Eq>(m: &mut HashMap<K, BTreeSet<String>>, k: K, key: &str) {
    if let Some(set) = m.get_mut(&k) {
        set.remove(key);
        if set.is_empty() {
            m.remove(&k);
        }
    }
}

impl Tx<'_> {
    /// The allocators with this transaction's pending Service writes applied.
    pub fn allocations(&self) -> View<'_> {
        View {
            alloc: &self.state.indexes.alloc,
            delta: &self.alloc_delta,
        }
    }

    pub(super) fn track(&mut self, res: &'static Resource, key: &str, new: Option<&Value>) {
        if is(res, SERVICES) {
            let prev = self.get(res, key);
            let alloc = &self.state.indexes.alloc;
            self.alloc_delta.apply(alloc, prev.as_deref(), new);
        }
    }

    /// The current objects at `candidates` and at this transaction's pending keys of the
    /// kind, that `keep` accepts.
    fn resolve<'k>(
        &'k self,
        res: &'static Resource,
        candidates: impl Iterator<Item = &'k String>,
        keep: impl Fn(&Value) -> bool,
    ) -> Vec<Arc<Value>> {
        let pending = self
            .pending
            .iter()
            .filter(|(r, _, _)| is(r, res))
            .map(|(_, k, _)| k);
        let keys: BTreeSet<&String> = candidates.chain(pending).collect();
        keys.into_iter()
            .filter_map(|k| self.get(res, k))
            .filter(|o| keep(o))
            .collect()
    }

    /// Pods or EndpointSlices of a namespace whose labels have every pair of `selector`,
    /// found through the pair with the fewest objects.
    pub fn select(
        &self,
        res: &'static Resource,
        ns: &str,
        selector: &BTreeMap<String, String>,
    ) -> Vec<Arc<Value>> {
        let slot = res_index(res);
        let keep = |o: &Value| {
            crate::meta::namespace(o) == ns && selects(selector, &o["metadata"]["labels"])
        };
        let empty = BTreeSet::new();
        let smallest = selector
            .iter()
            .map(|(k, v)| {
                let lk = (slot, ns.to_string(), k.to_string(), v.to_string());
                self.state.indexes.labels.get(&lk).unwrap_or(&empty)
            })
            .min_by_key(|s| s.len());
        match smallest {
            Some(keys) if labelled(res) => self.resolve(res, keys.iter(), keep),
            _ => self
                .list(res, Some(ns))
                .into_iter()
                .filter(|o| keep(o))
                .collect(),
        }
    }

    /// Services of a namespace whose selector picks an object with these labels.
    pub fn services_selecting(
        &self,
        ns: &str,
        labels: &BTreeMap<String, String>,
    ) -> Vec<Arc<Value>> {
        let idx = &self.state.indexes.selectors;
        let candidates = labels
            .iter()
            .filter_map(|(k, v)| idx.get(&(ns.to_string(), k.clone(), v.clone())))
            .flatten();
        self.resolve(SERVICES, candidates, |s| {
            crate::meta::namespace(s) == ns && picks(&s["spec"]["selector"], labels)
        })
    }

    /// Pods with an owner reference to `uid`.
    pub fn pods_owned_by(&self, uid: &str) -> Vec<Arc<Value>> {
        let candidates = self.state.indexes.owners.get(uid).into_iter().flatten();
        self.resolve(PODS, candidates, |p| owner_uids(p).any(|u| u == uid))
    }

    /// The uids that own pods (committed; a resync runs without pending writes).
    pub fn owner_uids(&self) -> Vec<String> {
        self.state.indexes.owners.keys().cloned().collect()
    }

    /// Pods without `spec.nodeName`.
    pub fn unbound_pods(&self) -> Vec<Arc<Value>> {
        let candidates = self.state.indexes.unbound.iter();
        self.resolve(PODS, candidates, |p| node_of(p).is_none())
    }

    /// Pods with a `deletionTimestamp`.
    pub fn terminating_pods(&self) -> Vec<Arc<Value>> {
        let candidates = self.state.indexes.terminating.iter();
        self.resolve(PODS, candidates, |p| {
            p["metadata"]["deletionTimestamp"].is_string()
        })
    }

    /// Pods bound to a node not in `nodes`, by node.
    pub fn pods_on_other_nodes(
        &self,
        nodes: &BTreeSet<String>,
    ) -> BTreeMap<String, Vec<Arc<Value>>> {
        let idx = &self.state.indexes.on_node;
        let candidates = idx
            .iter()
            .filter(|(n, _)| !nodes.contains(*n))
            .flat_map(|(_, keys)| keys);
        let mut out: BTreeMap<String, Vec<Arc<Value>>> = BTreeMap::new();
        for p in self.resolve(PODS, candidates, |p| {
            node_of(p).is_some_and(|n| !nodes.contains(n))
        }) {
            let node = node_of(&p).unwrap_or_default().to_string();
            out.entry(node).or_default().push(p);
        }
        out
    }

    /// How many pods take room on `node` ([`occupied_node`]).
    pub fn pods_on_node(&self, node: &str) -> usize {
        let count = |m: &HashMap<String, BTreeSet<String>>| m.get(node).map_or(0, BTreeSet::len);
        let idx = &self.state.indexes;
        let committed = count(&idx.on_node).saturating_sub(count(&idx.finished_on_node));
        let pending: BTreeSet<&String> = self
            .pending
            .iter()
            .filter(|(r, _, _)| is(r, PODS))
            .map(|(_, k, _)| k)
            .collect();
        let on = |p: Option<Arc<Value>>| p.is_some_and(|p| occupied_node(&p) == Some(node));
        let mut n = committed as i64;
        for k in pending {
            n += i64::from(on(self.get(PODS, k))) - i64::from(on(self.state.get(PODS, k)));
        }
        n.max(0) as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::allocator::Pool;
    use crate::server::NetConfig;
    use serde_json::json;

    fn net() -> NetConfig {
        NetConfig {
            service_cidr: "10.96.0.0/28".parse().unwrap_or_default(),
            service_cidr_v6: None,
            cluster_cidr: "10.244.0.0/16".parse().unwrap_or_default(),
            node_cidr_size: 24,
            node_port_range: (30000, 30001),
            load_balancer_cidr: None,
            api_endpoint: ([127, 0, 0, 1], 6443).into(),
        }
    }

    fn svc(name: &str, ip: &str) -> Value {
        json!({"metadata": {"name": name, "namespace": "ns"},
            "spec": {"clusterIP": ip, "selector": {"app": name}, "ports": [{"nodePort": 30000}]}})
    }

    #[test]
    fn a_transaction_sees_its_own_writes_and_commits_them_to_the_indexes() {
        let Ok(dir) = tempfile::tempdir() else { return };
        let alloc = Allocators::new(&net());
        let store = super::super::Store::open(dir.path(), 100, alloc).expect("store opens");
        let r = store.write(|tx| {
            // Offsets 1..=14 are hosts; take all but 7 in this transaction.
            for off in (1..=14).filter(|o| *o != 7) {
                let ip = format!("10.96.0.{off}");
                tx.put(SERVICES, format!("ns/s{off}"), svc(&format!("s{off}"), &ip));
            }
            let v = tx.allocations();
            assert!(v.taken_by_other(Pool::ClusterV4, 3, &[]));
            assert!(!v.taken_by_other(Pool::ClusterV4, 7, &[]));
            assert_eq!(v.find_free(Pool::ClusterV4, 0, |o| o != 0), Some(7));
            let pod =
                json!({"metadata": {"name": "p", "namespace": "ns", "labels": {"app": "s3"}}});
            tx.put(PODS, "ns/p".into(), pod);
            let app_s3 = BTreeMap::from([("app".to_string(), "s3".to_string())]);
            let picked = tx.services_selecting("ns", &app_s3);
            assert_eq!(picked.len(), 1);
            assert_eq!(crate::meta::name(&picked[0]), "s3");
            assert_eq!(tx.select(PODS, "ns", &app_s3).len(), 1);
            Ok(())
        });
        assert!(r.is_ok());
        // Committed: the next transaction sees them without pending writes; a delete
        // frees its address for others at once.
        let r = store.write(|tx| {
            assert!(tx.allocations().taken_by_other(Pool::ClusterV4, 3, &[]));
            tx.delete(SERVICES, "ns/s3".into());
            assert!(!tx.allocations().taken_by_other(Pool::ClusterV4, 3, &[]));
            let app_s3 = BTreeMap::from([("app".to_string(), "s3".to_string())]);
            assert_eq!(tx.services_selecting("ns", &app_s3).len(), 0);
            assert_eq!(tx.select(PODS, "ns", &app_s3).len(), 1);
            // All these Services hold node port 30000 (written directly, as a log from
            // before the allocators might have them): it stays taken until the last goes.
            assert!(tx.allocations().taken_by_other(Pool::NodePort, 0, &[]));
            // Per-node counts and the owner index, pending and committed alike.
            let bound = json!({"metadata": {"name": "q", "namespace": "ns",
                "ownerReferences": [{"uid": "d1"}]}, "spec": {"nodeName": "n1"}});
            tx.put(PODS, "ns/q".into(), bound);
            assert_eq!(tx.pods_on_node("n1"), 1);
            assert_eq!(tx.pods_owned_by("d1").len(), 1);
            Ok(())
        });
        assert!(r.is_ok());
        let r = store.write(|tx| {
            assert_eq!(tx.pods_on_node("n1"), 1);
            assert_eq!(tx.unbound_pods().len(), 1);
            let mut nodes = BTreeSet::new();
            assert_eq!(
                tx.pods_on_other_nodes(&nodes).get("n1").map(Vec::len),
                Some(1)
            );
            nodes.insert("n1".to_string());
            assert!(tx.pods_on_other_nodes(&nodes).is_empty());
            assert!(tx.terminating_pods().is_empty());
            tx.delete(PODS, "ns/q".into());
            assert_eq!(
                (tx.pods_on_node("n1"), tx.pods_owned_by("d1").len()),
                (0, 0)
            );
            Ok(())
        });
        assert!(r.is_ok());
        let st = store.read();
        assert_eq!((st.indexes.on_node.len(), st.indexes.owners.len()), (0, 0));
        assert_eq!(st.indexes.unbound.len(), 1);
    }
}
