//! The desired table kept up to date one Service at a time.
//!
//! Recompiling every Service on every change costs time in proportion to the cluster; at
//! 10k Services that alone is slower than kube-proxy's whole partial sync. The model keeps
//! each Service's elements ([`crate::contribution`]) and a reference count per element, so
//! replacing one Service's elements costs in proportion to that Service. It records what
//! it changed since the last [`Model::take_delta`], which the proxier sends as one
//! transaction. [`crate::desired`] computes the same table from scratch: the tests hold
//! the two equal.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use weft_nft::{Elem, Family, Key, Ruleset, Table, Value};

use crate::contribution::Element;
use crate::desired::{skeleton, Dynamic, NodeContext, SetId};

/// A Service: (namespace, name).
pub type ServiceId = (String, String);

type ElemKey = (SetId, Vec<Value>);

pub struct Model {
    node: NodeContext,
    table: Table,
    /// Elements per dynamic set: a set exists while it has any.
    dynamic: BTreeMap<Dynamic, usize>,
    /// The claims on each element more than one Service holds (two Services may share an
    /// endpoint's hairpin element): each value Services want it to have with how many
    /// want it. Two Services may claim one key with different values (the same external
    /// IP and port): the oldest claim wins, and the next takes over when it goes. An
    /// element in the table without an entry here has exactly one claim, its value: most
    /// elements, so most are not held a third time.
    shared: HashMap<ElemKey, Vec<(Elem, u32)>>,
    services: HashMap<ServiceId, Vec<Element>>,
    /// Since the last delta: each touched element's value before the first touch.
    before: HashMap<ElemKey, Option<Elem>>,
    /// Since the last delta: the dynamic sets before the first structural change.
    dynamic_before: Option<BTreeSet<Dynamic>>,
}

/// What changed since the last delta, in the order a transaction must apply it.
#[derive(Debug, Default)]
pub struct Delta {
    /// The table's structure (chains, set definitions) before and after, when it changed.
    pub structure: Option<(Table, Table)>,
    /// Elements to delete, with what they were (an interval's end, a map's data).
    pub removed: Vec<(SetId, Key, Elem)>,
    pub added: Vec<(SetId, Key, Elem)>,
}

impl Delta {
    pub fn is_empty(&self) -> bool {
        self.structure.is_none() && self.removed.is_empty() && self.added.is_empty()
    }
}

impl Model {
    pub fn new(node: NodeContext) -> Model {
        let table = skeleton(&BTreeSet::new(), &node);
        Model {
            node,
            table,
            dynamic: BTreeMap::new(),
            shared: HashMap::new(),
            services: HashMap::new(),
            before: HashMap::new(),
            dynamic_before: None,
        }
    }

    pub fn node(&self) -> &NodeContext {
        &self.node
    }

    /// The whole desired table, as a ruleset (cheap: sets and chains are shared).
    pub fn ruleset(&self) -> Ruleset {
        let mut rs = Ruleset::default();
        rs.add_table(self.table.clone());
        rs
    }

    pub fn contains(&self, id: &ServiceId) -> bool {
        self.services.contains_key(id)
    }

    pub fn service_ids(&self) -> impl Iterator<Item = &ServiceId> {
        self.services.keys()
    }

    /// Replaces what `id` contributes (empty `elements` is the same as removing it).
    pub fn set_service(&mut self, id: ServiceId, elements: Vec<Element>) {
        let old = self.services.remove(&id).unwrap_or_default();
        if old == elements {
            if !elements.is_empty() {
                self.services.insert(id, elements);
            }
            return;
        }
        // Add first, so an element both keep never drops to zero references.
        for e in &elements {
            self.acquire(e);
        }
        for e in &old {
            self.release(e);
        }
        if !elements.is_empty() {
            self.services.insert(id, elements);
        }
    }

    pub fn remove_service(&mut self, id: &ServiceId) {
        if let Some(old) = self.services.remove(id) {
            for e in &old {
                self.release(e);
            }
        }
    }

    fn dynamic_sets(&self) -> BTreeSet<Dynamic> {
        self.dynamic.keys().copied().collect()
    }

    fn remember(&mut self, key: &ElemKey) {
        if self.before.contains_key(key) {
            return;
        }
        let now = self
            .table
            .sets
            .get(&key.0.name())
            .and_then(|s| s.elements.get(&Key(key.1.clone())).cloned());
        self.before.insert(key.clone(), now);
    }

    /// The value the table holds for an element, if any.
    fn current(&self, e: &Element) -> Option<&Elem> {
        self.table
            .sets
            .get(&e.set.name())
            .and_then(|s| s.elements.get(&Key(e.key.clone())))
    }

    fn acquire(&mut self, e: &Element) {
        let key = (e.set.clone(), e.key.clone());
        let claims = match self.shared.get_mut(&key) {
            Some(claims) => claims,
            None => match self.current(e) {
                // One claim so far: it becomes the oldest of several.
                Some(held) => {
                    let held = held.clone();
                    self.shared.entry(key).or_insert_with(|| vec![(held, 1)])
                }
                None => {
                    self.first_claim(e, key);
                    return;
                }
            },
        };
        // The winning value stays the oldest claim's.
        match claims.iter_mut().find(|(v, _)| *v == e.elem) {
            Some((_, n)) => *n += 1,
            None => claims.push((e.elem.clone(), 1)),
        }
    }

    fn first_claim(&mut self, e: &Element, key: ElemKey) {
        if let SetId::Dynamic(d) = &e.set {
            let d = *d;
            if !self.dynamic.contains_key(&d) {
                self.structure_changes();
                self.dynamic.insert(d, 0);
                self.table.add_set(weft_nft::Set::new(
                    d.name(),
                    d.key().iter().map(|s| s.key_type()).collect(),
                ));
                self.rebuild_chains();
            }
            if let Some(c) = self.dynamic.get_mut(&d) {
                *c += 1;
            }
        }
        self.remember(&key);
        if let Some(set) = self.table.set_mut(&e.set.name()) {
            set.elements.insert(Key(e.key.clone()), e.elem.clone());
        }
    }

    fn release(&mut self, e: &Element) {
        let key = (e.set.clone(), e.key.clone());
        if let Some(claims) = self.shared.get_mut(&key) {
            let Some(at) = claims.iter().position(|(v, _)| *v == e.elem) else {
                return;
            };
            claims[at].1 -= 1;
            if claims[at].1 == 0 {
                claims.remove(at);
            }
            // Another Service still claims the element: it keeps, or takes over, the value.
            let winner = claims.first().map(|(v, _)| v.clone());
            if claims.iter().map(|(_, n)| *n).sum::<u32>() <= 1 {
                self.shared.remove(&key);
            }
            if let Some(winner) = winner {
                self.remember(&key);
                if let Some(set) = self.table.set_mut(&e.set.name()) {
                    set.elements.insert(Key(e.key.clone()), winner);
                }
            }
            return;
        }
        // The only claim, if the table holds this value.
        if self.current(e) != Some(&e.elem) {
            return;
        }
        self.remember(&key);
        if let Some(set) = self.table.set_mut(&e.set.name()) {
            set.elements.remove(&Key(e.key.clone()));
        }
        if let SetId::Dynamic(d) = e.set {
            let left = self.dynamic.get_mut(&d).map(|c| {
                *c -= 1;
                *c
            });
            if left == Some(0) {
                self.structure_changes();
                self.dynamic.remove(&d);
                self.table.sets.remove(&d.name());
                self.rebuild_chains();
            }
        }
    }

    /// Notes the structure before its first change since the last delta.
    fn structure_changes(&mut self) {
        if self.dynamic_before.is_none() {
            self.dynamic_before = Some(self.dynamic_sets());
        }
    }

    /// The chains follow from the dynamic sets: rebuilt when one appears or goes.
    fn rebuild_chains(&mut self) {
        self.table.chains = skeleton(&self.dynamic_sets(), &self.node).chains;
    }

    /// What changed since the last call; the caller sends it, or on failure falls back
    /// to a full sync of [`Model::ruleset`].
    pub fn take_delta(&mut self) -> Delta {
        let mut d = Delta::default();
        if let Some(before) = self.dynamic_before.take() {
            let now = self.dynamic_sets();
            if before != now {
                d.structure = Some((skeleton(&before, &self.node), skeleton(&now, &self.node)));
            }
        }
        for (key, was) in std::mem::take(&mut self.before) {
            let now = self
                .table
                .sets
                .get(&key.0.name())
                .and_then(|s| s.elements.get(&Key(key.1.clone())).cloned());
            match (was, now) {
                (Some(a), Some(b)) if a == b => {}
                (Some(a), Some(b)) => {
                    d.removed.push((key.0.clone(), Key(key.1.clone()), a));
                    d.added.push((key.0, Key(key.1), b));
                }
                (Some(a), None) => d.removed.push((key.0, Key(key.1), a)),
                (None, Some(b)) => d.added.push((key.0, Key(key.1), b)),
                (None, None) => {}
            }
        }
        d
    }

    /// Forgets pending changes: the caller is about to sync the whole table.
    pub fn discard_delta(&mut self) {
        self.before.clear();
        self.dynamic_before = None;
    }

    pub fn family(&self) -> Family {
        self.table.family
    }
}

#[cfg(test)]
#[path = "model_tests.rs"]
mod tests;
