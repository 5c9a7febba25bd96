//! The embedded store: every object in memory, every write in an fsynced append-only log,
//! one global resourceVersion counter and a ring of recent watch events for resumes.

mod index;
mod log;
mod sync;

pub use index::occupied_node;

use crate::allocator::{Allocators, Delta};
use crate::error::{ApiError, Error};
use crate::resources::{Resource, RESOURCES};
use index::Indexes;
use log::{Log, Op, Record};
use serde_json::Value;
use std::collections::{BTreeMap, VecDeque};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::watch;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    Added,
    Modified,
    Deleted,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

#[derive(Debug)]
pub struct Event {
    pub rv: u64,
    pub ty: EventType,
    pub res: &'static Resource,
    pub object: Arc<Value>,
    /// The object before this change (for selector transitions in watches).
    pub prev: Option<Arc<Value>>,
}

/// Storage key of an object: `namespace/name`, or `name` for cluster-scoped kinds.
pub fn key(res: &Resource, namespace: &str, name: &str) -> String {
    if res.namespaced {
        format!("{namespace}/{name}")
    } else {
        name.to_string()
    }
}

/// The storage slot of a resource: every served version of one kind (same group and
/// plural) shares the first one's, so an object written through one version is read and
/// watched through the others.
fn res_index(res: &Resource) -> usize {
    RESOURCES
        .iter()
        .position(|r| r.group == res.group && r.plural == res.plural)
        .unwrap_or(0)
}

pub struct State {
    rv: u64,
    objects: Vec<BTreeMap<String, Arc<Value>>>,
    history: VecDeque<Arc<Event>>,
    history_cap: usize,
    /// Events with rv <= floor are no longer in `history`.
    floor: u64,
    log: Log,
    indexes: Indexes,
}

impl State {
    pub fn rv(&self) -> u64 {
        self.rv
    }
    pub fn get(&self, res: &Resource, key: &str) -> Option<Arc<Value>> {
        self.objects[res_index(res)].get(key).cloned()
    }
    /// How many objects of a kind there are.
    pub fn count(&self, res: &Resource) -> usize {
        self.objects[res_index(res)].len()
    }
    /// Objects of a kind, optionally in one namespace, in key order.
    pub fn list(&self, res: &Resource, namespace: Option<&str>) -> Vec<Arc<Value>> {
        let map = &self.objects[res_index(res)];
        match namespace {
            Some(ns) if res.namespaced => {
                let start = format!("{ns}/");
                map.range(start.clone()..)
                    .take_while(|(k, _)| k.starts_with(&start))
                    .map(|(_, v)| v.clone())
                    .collect()
            }
            _ => map.values().cloned().collect(),
        }
    }
    /// Entries after `after_key` (exclusive), for paginated lists.
    pub fn list_from(
        &self,
        res: &Resource,
        namespace: Option<&str>,
        after_key: Option<&str>,
    ) -> Vec<(String, Arc<Value>)> {
        let map = &self.objects[res_index(res)];
        let prefix = match namespace {
            Some(ns) if res.namespaced => format!("{ns}/"),
            _ => String::new(),
        };
        let lower = match after_key {
            Some(k) => std::ops::Bound::Excluded(k.to_string()),
            None => std::ops::Bound::Included(prefix.clone()),
        };
        map.range((lower, std::ops::Bound::Unbounded))
            .take_while(|(k, _)| k.starts_with(&prefix))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// Events with `since` < rv <= `until`, or 410 Gone if some have left the ring.
    pub fn events_since(&self, since: u64, until: u64) -> Result<Vec<Arc<Event>>, ApiError> {
        if since < self.floor {
            return Err(ApiError::gone(format!(
                "too old resource version: {since} ({})",
                self.floor + 1
            )));
        }
        let skip = self.history.partition_point(|e| e.rv <= since);
        Ok(self
            .history
            .iter()
            .skip(skip)
            .take_while(|e| e.rv <= until)
            .cloned()
            .collect())
    }

    fn push_event(&mut self, ev: Event) {
        if self.history.len() >= self.history_cap {
            if let Some(old) = self.history.pop_front() {
                self.floor = old.rv;
            }
        }
        self.history.push_back(Arc::new(ev));
    }
}

/// A write transaction: reads see its own pending writes; nothing is visible to others or
/// acknowledged until `Store::write` has fsynced the whole batch.
pub struct Tx<'a> {
    state: &'a State,
    pending: Vec<(&'static Resource, String, Option<Value>)>,
    /// What the pending Service writes take from and give back to the allocators.
    alloc_delta: Delta,
}

impl Tx<'_> {
    pub fn get(&self, res: &'static Resource, key: &str) -> Option<Arc<Value>> {
        for (r, k, v) in self.pending.iter().rev() {
            if std::ptr::eq(*r, res) && k == key {
                return v.clone().map(Arc::new);
            }
        }
        self.state.get(res, key)
    }
    /// Current objects of a kind with this transaction's writes applied.
    pub fn list(&self, res: &'static Resource, namespace: Option<&str>) -> Vec<Arc<Value>> {
        let mut items = self.state.list(res, namespace);
        if self.pending.iter().any(|(r, _, _)| std::ptr::eq(*r, res)) {
            let mut map: BTreeMap<String, Arc<Value>> = BTreeMap::new();
            for v in items {
                map.insert(object_key(res, &v), v);
            }
            for (r, k, v) in &self.pending {
                if std::ptr::eq(*r, res) {
                    match v {
                        Some(v) => {
                            let ns_ok = namespace
                                .is_none_or(|ns| v["metadata"]["namespace"].as_str() == Some(ns));
                            if ns_ok {
                                map.insert(k.clone(), Arc::new(v.clone()));
                            }
                        }
                        None => {
                            map.remove(k);
                        }
                    }
                }
            }
            items = map.into_values().collect();
        }
        items
    }
    pub fn put(&mut self, res: &'static Resource, key: String, obj: Value) {
        self.track(res, &key, Some(&obj));
        self.pending.push((res, key, Some(obj)));
    }
    pub fn delete(&mut self, res: &'static Resource, key: String) {
        self.track(res, &key, None);
        self.pending.push((res, key, None));
    }
    pub fn current_rv(&self) -> u64 {
        self.state.rv
    }
}

pub fn object_key(res: &Resource, obj: &Value) -> String {
    let ns = obj["metadata"]["namespace"].as_str().unwrap_or("");
    let name = obj["metadata"]["name"].as_str().unwrap_or("");
    key(res, ns, name)
}

pub struct Store {
    state: Mutex<State>,
    /// Publishes the durable resourceVersion: everything up to it is fsynced.
    syncer: sync::Syncer,
}

impl Drop for Store {
    fn drop(&mut self) {
        self.syncer.stop();
    }
}

impl Store {
    /// Opens the log at `dir/store.log`; `alloc` (empty) is filled from the stored Services.
    pub fn open(dir: &Path, history_cap: usize, alloc: Allocators) -> Result<Arc<Store>, Error> {
        let path = dir.join("store.log");
        let (mut log, records) = Log::open(&path)?;
        let mut state_objects: Vec<BTreeMap<String, Arc<Value>>> =
            RESOURCES.iter().map(|_| BTreeMap::new()).collect();
        let mut history = VecDeque::new();
        let mut floor = 0u64;
        let mut rv = 0u64;
        let total = records.len();
        for rec in records {
            rv = rv.max(rec.rv);
            let Some(res) = crate::resources::by_id(&rec.res) else {
                if rec.op == Op::Meta {
                    floor = rec.rv;
                    history.clear();
                }
                continue;
            };
            let idx = res_index(res);
            let (ty, object, prev) = match (rec.op, rec.obj) {
                (Op::Put, Some(obj)) => {
                    let obj = Arc::new(obj);
                    let prev = state_objects[idx].insert(rec.key, obj.clone());
                    let ty = if prev.is_some() {
                        EventType::Modified
                    } else {
                        EventType::Added
                    };
                    (ty, obj, prev)
                }
                (Op::Del, obj) => {
                    let prev = state_objects[idx].remove(&rec.key);
                    let obj = obj.map(Arc::new).or(prev.clone());
                    let Some(obj) = obj else { continue };
                    (EventType::Deleted, obj, prev)
                }
                _ => continue,
            };
            history.push_back(Arc::new(Event {
                rv: rec.rv,
                ty,
                res,
                object,
                prev,
            }));
            if history.len() > history_cap {
                if let Some(old) = history.pop_front() {
                    floor = old.rv;
                }
            }
        }
        let live: usize = state_objects.iter().map(|m| m.len()).sum();
        if total > 2 * live + 10_000 {
            // Compact: keep live objects with their resourceVersions, drop the history.
            let mut recs = vec![Record {
                rv,
                op: Op::Meta,
                res: String::new(),
                key: String::new(),
                obj: None,
            }];
            for (i, map) in state_objects.iter().enumerate() {
                for (k, v) in map {
                    recs.push(Record {
                        rv: obj_rv(v),
                        op: Op::Put,
                        res: RESOURCES[i].id(),
                        key: k.clone(),
                        obj: Some((**v).clone()),
                    });
                }
            }
            log.rewrite(&recs)?;
            history.clear();
            floor = rv;
        }
        let mut indexes = Indexes::new(alloc);
        for (i, map) in state_objects.iter().enumerate() {
            for (k, v) in map {
                indexes.apply(&RESOURCES[i], k, None, Some(v));
            }
        }
        let syncer = sync::Syncer::start(log.sync_handle()?, rv, path.clone());
        Ok(Arc::new(Store {
            syncer,
            state: Mutex::new(State {
                rv,
                objects: state_objects,
                history,
                history_cap,
                floor,
                log,
                indexes,
            }),
        }))
    }

    pub fn read(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave State half-written: writes are
        // applied only after the log append succeeded, so recovering the guard is safe.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Watches the durable resourceVersion. Events above it must not be shown yet.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.syncer.subscribe()
    }

    pub fn durable_rv(&self) -> u64 {
        self.syncer.durable()
    }

    /// Waits until every write appended so far is on disk. Responses wait for this, so
    /// nothing is acknowledged (or shown) before it is durable.
    pub async fn wait_durable(&self) {
        let target = self.syncer.appended();
        let mut rx = self.syncer.subscribe();
        let _ = rx.wait_for(|d| *d >= target).await;
    }

    /// Runs `f` as one atomic, durable transaction. Returns the objects written, in
    /// order, with their new resourceVersions.
    pub fn write<T>(
        &self,
        f: impl FnOnce(&mut Tx) -> Result<T, ApiError>,
    ) -> Result<(T, Vec<Arc<Value>>), ApiError> {
        let mut guard = self.read();
        let (out, pending) = {
            let mut tx = Tx {
                state: &guard,
                pending: Vec::new(),
                alloc_delta: Delta::default(),
            };
            let out = f(&mut tx)?;
            (out, tx.pending)
        };
        if pending.is_empty() {
            return Ok((out, Vec::new()));
        }
        let state = &mut *guard;
        let mut rv = state.rv;
        let mut records = Vec::with_capacity(pending.len());
        let mut staged = Vec::with_capacity(pending.len());
        for (res, key, obj) in pending {
            rv += 1;
            let rv_s = rv.to_string();
            let (op, obj) = match obj {
                Some(mut o) => {
                    o["metadata"]["resourceVersion"] = Value::String(rv_s);
                    (Op::Put, o)
                }
                None => {
                    let Some(prev) = state.get(res, &key) else {
                        rv -= 1;
                        continue;
                    };
                    let mut o = (*prev).clone();
                    o["metadata"]["resourceVersion"] = Value::String(rv_s);
                    (Op::Del, o)
                }
            };
            records.push(Record {
                rv,
                op,
                res: res.id(),
                key: key.clone(),
                obj: Some(obj.clone()),
            });
            staged.push((res, key, op, obj, rv));
        }
        state.log.append(&records)?;
        let mut written = Vec::with_capacity(staged.len());
        for (res, key, op, obj, rv) in staged {
            let idx = res_index(res);
            let obj = Arc::new(obj);
            let (ty, prev) = match op {
                Op::Put => {
                    let prev = state.objects[idx].insert(key.clone(), obj.clone());
                    let ty = if prev.is_some() {
                        EventType::Modified
                    } else {
                        EventType::Added
                    };
                    (ty, prev)
                }
                _ => (EventType::Deleted, state.objects[idx].remove(&key)),
            };
            // The indexes (allocators among them) change with the objects, under the
            // same lock and only after the log append succeeded.
            let new = (op == Op::Put).then_some(&*obj);
            state.indexes.apply(res, &key, prev.as_deref(), new);
            state.push_event(Event {
                rv,
                ty,
                res,
                object: obj.clone(),
                prev,
            });
            written.push(obj);
        }
        state.rv = rv;
        self.syncer.appended_up_to(rv);
        drop(guard);
        Ok((out, written))
    }
}

pub fn obj_rv(v: &Value) -> u64 {
    v["metadata"]["resourceVersion"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}
