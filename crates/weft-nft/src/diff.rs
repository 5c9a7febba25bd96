//! Pure functions from models to transactions: the full load of a ruleset, and the
//! difference between the previously committed model and the desired one.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use crate::error::Result;
use crate::expr::lower;
use crate::model::{Chain, Elem, Family, Key, Ruleset, Set, Table, Value};
use crate::netlink::Batch;

/// What a transaction does, for logs and benchmarks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Summary {
    pub chains_added: usize,
    pub chains_replaced: usize,
    pub chains_deleted: usize,
    pub sets_added: usize,
    pub sets_deleted: usize,
    pub elements_added: usize,
    pub elements_deleted: usize,
    pub rules_added: usize,
    pub messages: usize,
}

impl Summary {
    pub fn is_empty(&self) -> bool {
        self.messages == 0
    }
}

/// Replaces each table of `rs` wholesale: objects in those tables that the model lacks
/// are removed in the same transaction. Other tables are untouched.
pub fn full(rs: &Ruleset, batch: &mut Batch) -> Result<Summary> {
    let mut sum = Summary::default();
    for t in rs.tables.values() {
        // add-then-delete empties an existing table and is harmless for a new one.
        batch.add_table(t.family, &t.name);
        batch.del_table(t.family, &t.name);
        batch.add_table(t.family, &t.name);
        let chains: Vec<&Chain> = t.chains.values().map(|c| &**c).collect();
        let sets: Vec<&Set> = t.sets.values().map(|s| &**s).collect();
        add_objects(t, &sets, &chains, batch, &mut sum)?;
    }
    sum.messages = batch.len();
    Ok(sum)
}

/// Adds sets, then chains each followed by its rules, then set elements: the order in
/// which the kernel resolves references. Chains come callees first, so a rule is sent as
/// soon as the chains it jumps to exist; this keeps the kernel's transaction list short
/// when it binds each rule's anonymous sets (a walk over the whole list per set).
fn add_objects(
    t: &Table,
    sets: &[&Set],
    chains: &[&Chain],
    batch: &mut Batch,
    sum: &mut Summary,
) -> Result<()> {
    for s in sets {
        batch.add_set(t.family, &t.name, s)?;
        sum.sets_added += 1;
    }
    for c in dependency_order(chains) {
        batch.add_chain(t.family, &t.name, c);
        sum.chains_added += 1;
        add_rules(t.family, &t.name, c, batch, sum)?;
    }
    for s in sets {
        batch.add_elements(t.family, &t.name, s, s.elements.iter())?;
        sum.elements_added += s.elements.len();
    }
    Ok(())
}

/// Chains ordered so that each comes after the chains of this list it jumps to. A cycle
/// (which the kernel refuses anyway) is broken arbitrarily.
fn dependency_order<'a>(chains: &[&'a Chain]) -> Vec<&'a Chain> {
    let index: HashMap<&str, usize> = chains
        .iter()
        .enumerate()
        .map(|(i, c)| (c.name.as_str(), i))
        .collect();
    let refs = |c: &Chain| -> Vec<usize> {
        c.rules
            .iter()
            .flat_map(|r| r.stmts.iter())
            .flat_map(|s| s.chain_refs())
            .filter_map(|n| index.get(n).copied())
            .collect()
    };
    // Start from chains no other listed chain jumps to, so each caller pulls its callees
    // in right before itself (a service chain right after its endpoint chains).
    let mut referenced = vec![false; chains.len()];
    for c in chains {
        for i in refs(c) {
            referenced[i] = true;
        }
    }
    let roots = (0..chains.len())
        .filter(|i| !referenced[*i])
        .chain((0..chains.len()).filter(|i| referenced[*i]));
    let mut state = vec![0u8; chains.len()]; // 0 new, 1 on the stack, 2 emitted
    let mut out = Vec::with_capacity(chains.len());
    for root in roots {
        if state[root] != 0 {
            continue;
        }
        let mut stack: Vec<(usize, Vec<usize>)> = vec![(root, refs(chains[root]))];
        state[root] = 1;
        while let Some((node, pending)) = stack.last_mut() {
            let node = *node;
            match pending.pop() {
                Some(next) if state[next] == 0 => {
                    state[next] = 1;
                    let r = refs(chains[next]);
                    stack.push((next, r));
                }
                Some(_) => {}
                None => {
                    state[node] = 2;
                    out.push(chains[node]);
                    stack.pop();
                }
            }
        }
    }
    out
}

fn add_rules(
    family: Family,
    table: &str,
    c: &Chain,
    batch: &mut Batch,
    sum: &mut Summary,
) -> Result<()> {
    for (i, r) in c.rules.iter().enumerate() {
        let l = lower(r, family)?;
        batch.add_rule(family, table, &c.name, &l, i as u32)?;
        sum.rules_added += 1;
    }
    Ok(())
}

fn same<T: PartialEq>(a: &Arc<T>, b: &Arc<T>) -> bool {
    Arc::ptr_eq(a, b) || a == b
}

/// Named sets a chain's rules refer to.
fn set_refs(c: &Chain) -> impl Iterator<Item = &str> {
    c.rules
        .iter()
        .flat_map(|r| r.stmts.iter())
        .flat_map(|s| s.set_refs())
}

/// Walks two sorted maps together, calling `f(key, old, new)` for keys in either.
fn merge<'a, K: Ord, V>(
    old: &'a BTreeMap<K, V>,
    new: &'a BTreeMap<K, V>,
    f: impl FnMut(&'a K, Option<&'a V>, Option<&'a V>) -> Result<()>,
) -> Result<()> {
    merge_skipping(old, new, |_, _, _, _| false, f)
}

/// [`merge`] for maps of shared objects: entries that `unchanged` recognises (the same
/// `Arc` under keys of the same length, in step) are skipped without comparing keys,
/// which is most of the walk when a model was cloned from the previous one.
fn merge_shared<'a, T>(
    old: &'a BTreeMap<String, Arc<T>>,
    new: &'a BTreeMap<String, Arc<T>>,
    f: impl FnMut(&'a String, Option<&'a Arc<T>>, Option<&'a Arc<T>>) -> Result<()>,
) -> Result<()> {
    merge_skipping(
        old,
        new,
        |ka, va, kb, vb| Arc::ptr_eq(va, vb) && ka.len() == kb.len(),
        f,
    )
}

fn merge_skipping<'a, K: Ord, V>(
    old: &'a BTreeMap<K, V>,
    new: &'a BTreeMap<K, V>,
    unchanged: impl Fn(&K, &V, &K, &V) -> bool,
    mut f: impl FnMut(&'a K, Option<&'a V>, Option<&'a V>) -> Result<()>,
) -> Result<()> {
    let mut a = old.iter().peekable();
    let mut b = new.iter().peekable();
    loop {
        if let (Some((ka, va)), Some((kb, vb))) = (a.peek(), b.peek()) {
            if unchanged(ka, va, kb, vb) {
                a.next();
                b.next();
                continue;
            }
        }
        match (a.peek(), b.peek()) {
            (None, None) => return Ok(()),
            (Some((ka, va)), None) => {
                f(ka, Some(va), None)?;
                a.next();
            }
            (None, Some((kb, vb))) => {
                f(kb, None, Some(vb))?;
                b.next();
            }
            (Some((ka, va)), Some((kb, vb))) => match ka.cmp(kb) {
                std::cmp::Ordering::Less => {
                    f(ka, Some(va), None)?;
                    a.next();
                }
                std::cmp::Ordering::Greater => {
                    f(kb, None, Some(vb))?;
                    b.next();
                }
                std::cmp::Ordering::Equal => {
                    f(ka, Some(va), Some(vb))?;
                    a.next();
                    b.next();
                }
            },
        }
    }
}

/// The transaction turning `prev` (what the kernel holds) into `desired`: element
/// additions and removals, chains replaced by flush-and-refill, objects added and deleted.
pub fn incremental(prev: &Ruleset, desired: &Ruleset, batch: &mut Batch) -> Result<Summary> {
    let mut sum = Summary::default();
    merge(&prev.tables, &desired.tables, |_, old, new| {
        match (old, new) {
            (Some(t), None) => batch.del_table(t.family, &t.name),
            (None, Some(t)) => {
                batch.add_table(t.family, &t.name);
                let chains: Vec<&Chain> = t.chains.values().map(|c| &**c).collect();
                let sets: Vec<&Set> = t.sets.values().map(|s| &**s).collect();
                add_objects(t, &sets, &chains, batch, &mut sum)?;
            }
            (Some(o), Some(n)) => table_diff(o, n, None, batch, &mut sum)?,
            (None, None) => {}
        }
        Ok(())
    })?;
    sum.messages = batch.len();
    Ok(sum)
}

/// Names of the objects a controller changed since `prev`, per table. Lets the diff
/// look only at those instead of walking every chain and set: the cost of an update then
/// follows the size of the change, not of the ruleset.
#[derive(Debug, Clone, Default)]
pub struct Touched {
    pub tables: BTreeMap<(Family, String), TouchedTable>,
}

#[derive(Debug, Clone, Default)]
pub struct TouchedTable {
    pub chains: BTreeSet<String>,
    pub sets: BTreeSet<String>,
    /// Sets of which only these elements may differ: the diff looks up each key instead
    /// of comparing the whole set (a Services map holds an element per endpoint).
    pub elements: BTreeMap<String, BTreeSet<Key>>,
}

impl Touched {
    pub fn chain(&mut self, family: Family, table: &str, chain: impl Into<String>) -> &mut Self {
        self.table(family, table).chains.insert(chain.into());
        self
    }

    pub fn set(&mut self, family: Family, table: &str, set: impl Into<String>) -> &mut Self {
        self.table(family, table).sets.insert(set.into());
        self
    }

    /// Only the element `key` of `set` may differ (a set also named with [`Touched::set`]
    /// is compared whole).
    pub fn element(
        &mut self,
        family: Family,
        table: &str,
        set: impl Into<String>,
        key: Vec<Value>,
    ) -> &mut Self {
        self.table(family, table)
            .elements
            .entry(set.into())
            .or_default()
            .insert(Key(key));
        self
    }

    fn table(&mut self, family: Family, table: &str) -> &mut TouchedTable {
        self.tables.entry((family, table.to_owned())).or_default()
    }
}

/// Like [`incremental`], trusting `touched` to name every chain and set that differs
/// between `prev` and `desired` in tables present in both; tables added or removed are
/// found on their own. Objects not named are not compared.
pub fn incremental_touched(
    prev: &Ruleset,
    desired: &Ruleset,
    touched: &Touched,
    batch: &mut Batch,
) -> Result<Summary> {
    let mut sum = Summary::default();
    merge(&prev.tables, &desired.tables, |k, old, new| {
        match (old, new) {
            (Some(o), Some(n)) => {
                if let Some(tt) = touched.tables.get(k) {
                    table_diff(o, n, Some(tt), batch, &mut sum)?;
                }
            }
            (Some(t), None) => batch.del_table(t.family, &t.name),
            (None, Some(t)) => {
                batch.add_table(t.family, &t.name);
                let chains: Vec<&Chain> = t.chains.values().map(|c| &**c).collect();
                let sets: Vec<&Set> = t.sets.values().map(|s| &**s).collect();
                add_objects(t, &sets, &chains, batch, &mut sum)?;
            }
            (None, None) => {}
        }
        Ok(())
    })?;
    sum.messages = batch.len();
    Ok(sum)
}

/// Visits the keys of both maps, or only the keys in `only`; `skip_shared` passes over
/// objects both models share.
fn walk<'a, T>(
    old: &'a BTreeMap<String, Arc<T>>,
    new: &'a BTreeMap<String, Arc<T>>,
    only: Option<&'a BTreeSet<String>>,
    skip_shared: bool,
    mut f: impl FnMut(&'a String, Option<&'a Arc<T>>, Option<&'a Arc<T>>) -> Result<()>,
) -> Result<()> {
    match only {
        None if skip_shared => merge_shared(old, new, f),
        None => merge(old, new, f),
        Some(names) => {
            for k in names {
                let (a, b) = (old.get(k), new.get(k));
                if a.is_some() || b.is_some() {
                    f(k, a, b)?;
                }
            }
            Ok(())
        }
    }
}

fn table_diff(
    o: &Table,
    n: &Table,
    only: Option<&TouchedTable>,
    batch: &mut Batch,
    sum: &mut Summary,
) -> Result<()> {
    let (fam, name) = (n.family, n.name.as_str());
    // Sets whose definition changed are deleted and recreated; the kernel refuses to
    // delete a set a rule still uses, so chains using them are replaced as well.
    let mut redefined: BTreeSet<&str> = BTreeSet::new();
    let mut new_sets: Vec<&Set> = Vec::new();
    let mut gone_sets: Vec<&str> = Vec::new();
    // (old, new, the only keys that may differ: None compares every element).
    let mut elem_changes: Vec<(&Set, &Set, Option<&BTreeSet<Key>>)> = Vec::new();
    let mut set_scope = only.map(|t| std::borrow::Cow::Borrowed(&t.sets));
    for (set, keys) in only.map(|t| &t.elements).into_iter().flatten() {
        if only.is_some_and(|t| t.sets.contains(set)) {
            continue;
        }
        match (o.sets.get(set), n.sets.get(set)) {
            (Some(a), Some(b)) if a.same_definition(b) => elem_changes.push((a, b, Some(keys))),
            // Created, deleted or redefined: the whole set is compared.
            _ => {
                if let Some(scope) = set_scope.as_mut() {
                    scope.to_mut().insert(set.clone());
                }
            }
        }
    }
    walk(&o.sets, &n.sets, set_scope.as_deref(), true, |k, a, b| {
        match (a, b) {
            (Some(a), Some(b)) if same(a, b) => {}
            (Some(a), Some(b)) if a.same_definition(b) => elem_changes.push((a, b, None)),
            (Some(_), Some(b)) => {
                redefined.insert(k);
                gone_sets.push(k);
                new_sets.push(b);
            }
            (Some(_), None) => gone_sets.push(k),
            (None, Some(b)) => new_sets.push(b),
            (None, None) => {}
        }
        Ok(())
    })?;

    let mut flush: Vec<&str> = Vec::new();
    let mut delete: Vec<&str> = Vec::new();
    let mut create: Vec<&Chain> = Vec::new();
    let mut refill: Vec<&Chain> = Vec::new();
    let mut update_policy: Vec<&Chain> = Vec::new();
    // A redefined set drags in every chain using it, so those need the full walk.
    let chain_scope = if redefined.is_empty() {
        only.map(|t| &t.chains)
    } else {
        None
    };
    // Shared chains using a redefined set must still be replaced: no skipping then.
    walk(
        &o.chains,
        &n.chains,
        chain_scope,
        redefined.is_empty(),
        |k, a, b| {
            match (a, b) {
                (Some(a), Some(b)) => {
                    let uses_redefined =
                        !redefined.is_empty() && set_refs(b).any(|s| redefined.contains(s));
                    if same(a, b) && !uses_redefined {
                        return Ok(());
                    }
                    let hook_changed = match (&a.base, &b.base) {
                        (Some(x), Some(y)) => {
                            (x.kind, x.hook, x.priority) != (y.kind, y.hook, y.priority)
                        }
                        (None, None) => false,
                        _ => true,
                    };
                    if hook_changed {
                        if !a.rules.is_empty() {
                            flush.push(k);
                        }
                        delete.push(k);
                        create.push(b);
                        sum.chains_replaced += 1;
                    } else {
                        if a.rules != b.rules || uses_redefined {
                            flush.push(k);
                            refill.push(b);
                        }
                        if a.base != b.base {
                            update_policy.push(b);
                        }
                    }
                }
                (Some(a), None) => {
                    if !a.rules.is_empty() {
                        flush.push(k);
                    }
                    delete.push(k);
                }
                (None, Some(b)) => create.push(b),
                (None, None) => {}
            }
            Ok(())
        },
    )?;

    // Removals first, so nothing still refers to what is deleted. An element whose
    // data changed is deleted and added again.
    let mut elem_plans = Vec::with_capacity(elem_changes.len());
    for (a, b, keys) in &elem_changes {
        let mut removed = Vec::new();
        let mut added = Vec::new();
        match keys {
            Some(keys) => {
                for k in keys.iter() {
                    let (x, y) = (a.elements.get(k), b.elements.get(k));
                    plan_element(k, x, y, &mut removed, &mut added);
                }
            }
            None => merge(&a.elements, &b.elements, |k, x, y| {
                plan_element(k, x, y, &mut removed, &mut added);
                Ok(())
            })?,
        }
        sum.elements_deleted += removed.len();
        batch.del_elements(fam, name, a, removed.into_iter())?;
        elem_plans.push((*b, added));
    }
    for c in &flush {
        batch.flush_chain(fam, name, c);
    }
    // Sets go before chains: a map's verdict elements hold references to chains.
    for s in &gone_sets {
        batch.del_set(fam, name, s);
        sum.sets_deleted += 1;
    }
    for c in &delete {
        batch.del_chain(fam, name, c);
        sum.chains_deleted += 1;
    }
    // Then additions, in reference order.
    for c in &update_policy {
        batch.add_chain(fam, name, c);
    }
    sum.chains_replaced += refill.len() + update_policy.len();
    add_objects(n, &new_sets, &create, batch, sum)?;
    for (b, added) in elem_plans {
        sum.elements_added += added.len();
        batch.add_elements(fam, name, b, added.into_iter())?;
    }
    for c in &refill {
        add_rules(fam, name, c, batch, sum)?;
    }
    Ok(())
}

/// An element whose data changed is deleted and added again.
fn plan_element<'a>(
    k: &'a Key,
    old: Option<&'a Elem>,
    new: Option<&'a Elem>,
    removed: &mut Vec<(&'a Key, &'a Elem)>,
    added: &mut Vec<(&'a Key, &'a Elem)>,
) {
    if old == new {
        return;
    }
    if let Some(x) = old {
        removed.push((k, x));
    }
    if let Some(y) = new {
        added.push((k, y));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rule::{Rule, Stmt};

    #[test]
    fn callers_come_right_after_their_callees() {
        let mk = |n: &str, to: &[&str]| Chain {
            name: n.into(),
            base: None,
            rules: to.iter().map(|t| Rule::new(vec![Stmt::jump(*t)])).collect(),
        };
        let chains = [
            mk("common", &[]),
            mk("sep-a", &["common"]),
            mk("sep-b", &["common"]),
            mk("svc-a", &["sep-a"]),
            mk("svc-b", &["sep-b"]),
        ];
        let refs: Vec<&Chain> = chains.iter().collect();
        let order: Vec<&str> = dependency_order(&refs)
            .iter()
            .map(|c| c.name.as_str())
            .collect();
        assert_eq!(order, ["common", "sep-a", "svc-a", "sep-b", "svc-b"]);
    }
}
