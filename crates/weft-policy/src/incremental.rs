//! [`Incremental`]: the table again after a batch of changes, with work that follows the
//! change rather than the cluster.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use weft_nft::{Ruleset, Set};

use crate::cache::Cache;
use crate::cells::AddrFamily;
use crate::classes::Peers;
use crate::compile::{Compiled, Direction2, SubjectClass};
use crate::delta::{Delta, SetChange, Update};
use crate::desired::{
    class_elements, default_map, isolated_set, local_pods, pairs_map, peer_set, row_set,
    subject_set, table, NodeContext, DIRECTIONS,
};
use crate::model::{Direction, Policy, PolicyId};
use crate::rows::Row;
use crate::view::{Cluster, Namespace, Node, Pod};

/// [`crate::desired::desired`] for a caller that compiles again after every batch of
/// changes (the agent). While pods, namespaces, nodes and the context stay the same it
/// keeps which address regions each rule's peers hold, the peer classes (while the rules'
/// peer lists stay the same), the policies that apply to each local pod and each subject
/// class's rows; a policy change recomputes the rows of the subject classes whose
/// policies changed and [`Incremental::update`] returns only the elements of the classes
/// whose rows changed (a [`Delta`]), so nothing copies or compares the large maps. A
/// change of pods, namespaces or nodes returns the whole table ([`Update::Full`]) but
/// computes only what it touches: the column answers of the regions whose owner changed,
/// the peer classes, and the rows of subject classes whose policies, members or peer
/// classes changed. A change of the node context starts from nothing. The previous table with the
/// delta applied always equals [`crate::desired::desired`]'s (tests compare them after
/// every step of the truth-table cases).
#[derive(Default)]
pub struct Incremental {
    last: Option<Last>,
    cache: Cache,
    /// The table as [`Incremental::desired`] returns it; [`Incremental::update`] alone
    /// keeps none (the Enforcer holds the one copy).
    held: Option<Ruleset>,
    /// Subject classes whose rows the last call computed (for figures and tests).
    pub recompiled: usize,
}

impl std::fmt::Debug for Incremental {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Incremental")
            .field("recompiled", &self.recompiled)
            .finish_non_exhaustive()
    }
}

struct Last {
    ctx: NodeContext,
    namespaces: BTreeMap<String, Namespace>,
    pods: BTreeMap<(String, String), Pod>,
    nodes: BTreeMap<String, Node>,
    policies: BTreeMap<PolicyId, Policy>,
    dirs: BTreeMap<Direction, DirState>,
}

/// What the last table holds for one direction.
struct DirState {
    subjects: Vec<((String, String), u32)>,
    peers: Arc<Peers>,
    classes: BTreeMap<u32, Arc<SubjectClass>>,
    rows: BTreeMap<u32, Row>,
    isolating: BTreeMap<u32, Vec<PolicyId>>,
}

impl DirState {
    fn of(d: &Direction2) -> DirState {
        DirState {
            subjects: subjects(d),
            peers: d.peers.clone(),
            classes: d.classes.clone(),
            rows: d.rows.clone(),
            isolating: d.isolating.clone(),
        }
    }
}

fn subjects(d: &Direction2) -> Vec<((String, String), u32)> {
    d.subjects
        .iter()
        .map(|(p, id)| ((p.namespace.clone(), p.name.clone()), *id))
        .collect()
}

impl Incremental {
    /// What the counting elements of the last table stand for ([`crate::counters`]);
    /// empty before the first update.
    pub fn attribution(&self) -> crate::counters::Attribution {
        let mut a = crate::counters::Attribution::default();
        if let Some(last) = &self.last {
            for (dir, d) in &last.dirs {
                a.set_parts(*dir, &d.rows, &d.isolating);
            }
        }
        a
    }

    /// The whole table after this batch of changes (the previous one edited), equal to
    /// [`crate::desired::desired`]'s. Keeps a copy to edit; a caller that hands the
    /// changes on (the agent, to [`crate::enforcer::Enforcer::apply`]) uses
    /// [`Incremental::update`] instead.
    pub fn desired(&mut self, cluster: &Cluster, ctx: &NodeContext) -> Ruleset {
        if self.held.is_none() {
            self.last = None;
        }
        match self.update(cluster, ctx) {
            Update::Unchanged => {}
            Update::Full(rs) => self.held = Some(rs),
            Update::Delta(d) => {
                let held = self.held.as_mut().expect("a delta follows a held table");
                d.apply_to(held)
                    .expect("a delta follows the table it was made from");
            }
        }
        self.held.clone().expect("the table is held")
    }

    /// What changed in the table since the last call: the whole table the first time
    /// and after a change to pods, namespaces, nodes or the context; after policy changes
    /// only the elements of the subject classes they touch.
    pub fn update(&mut self, cluster: &Cluster, ctx: &NodeContext) -> Update {
        let same_world = self.last.as_ref().is_some_and(|l| {
            l.ctx == *ctx
                && l.pods == cluster.pods
                && l.namespaces == cluster.namespaces
                && l.nodes == cluster.nodes
        });
        let Some(last) = self.last.as_mut().filter(|_| same_world) else {
            match self.last.as_ref().filter(|l| l.ctx == *ctx) {
                // Pods, namespaces or nodes changed: the cache carries what they leave
                // alone (columns of unchanged regions, the rows while the peer classes
                // stay) after forgetting the policies that apply to relabelled pods.
                Some(l) => {
                    let (pods, namespaces) = relabelled(l, cluster);
                    self.cache.pods_changed(&pods, &namespaces);
                    let changed: Vec<&Policy> = l
                        .policies
                        .iter()
                        .filter(|(id, p)| cluster.policies.get(*id) != Some(*p))
                        .map(|(_, p)| p)
                        .chain(
                            cluster
                                .policies
                                .iter()
                                .filter(|(id, p)| l.policies.get(*id) != Some(*p))
                                .map(|(_, p)| p),
                        )
                        .collect();
                    if !changed.is_empty() {
                        let local: Vec<&Pod> = local_pods(cluster, &ctx.node_name).collect();
                        self.cache.policies_changed(cluster, &changed, &local);
                    }
                }
                None => self.cache = Cache::default(),
            }
            self.cache.world_unchanged = false;
            let compiled = Compiled::new(cluster, ctx, Some(&mut self.cache));
            self.recompiled = compiled.computed;
            let ruleset = table(&compiled, ctx);
            self.last = Some(Last {
                ctx: ctx.clone(),
                namespaces: cluster.namespaces.clone(),
                pods: cluster.pods.clone(),
                nodes: cluster.nodes.clone(),
                policies: cluster.policies.clone(),
                dirs: DIRECTIONS
                    .iter()
                    .map(|d| (*d, DirState::of(compiled.dir(*d))))
                    .collect(),
            });
            return Update::Full(ruleset);
        };
        let ids: BTreeSet<&PolicyId> = last
            .policies
            .keys()
            .chain(cluster.policies.keys())
            .collect();
        let changed_ids: Vec<PolicyId> = ids
            .into_iter()
            .filter(|id| last.policies.get(*id) != cluster.policies.get(*id))
            .cloned()
            .collect();
        self.recompiled = 0;
        if changed_ids.is_empty() {
            return Update::Unchanged;
        }
        let changed: Vec<&Policy> = changed_ids
            .iter()
            .flat_map(|id| [last.policies.get(id), cluster.policies.get(id)])
            .flatten()
            .collect();
        let local: Vec<&Pod> = local_pods(cluster, &ctx.node_name).collect();
        self.cache.policies_changed(cluster, &changed, &local);
        self.cache.world_unchanged = true;
        let compiled = Compiled::new(cluster, ctx, Some(&mut self.cache));
        self.recompiled = compiled.computed;
        let mut delta = Delta::default();
        for dir in DIRECTIONS {
            let new = compiled.dir(dir);
            let old = last.dirs.get_mut(&dir).expect("both directions are kept");
            patch(&mut delta, dir, old, new);
        }
        drop(compiled);
        for id in changed_ids {
            match cluster.policies.get(&id) {
                Some(p) => last.policies.insert(id, p.clone()),
                None => last.policies.remove(&id),
            };
        }
        if delta.is_empty() {
            Update::Unchanged
        } else {
            Update::Delta(delta)
        }
    }
}

/// Pods whose labels, namespace or addresses changed (added and removed ones included),
/// and namespaces whose labels changed, between the last view and `cluster`.
fn relabelled(last: &Last, cluster: &Cluster) -> (BTreeSet<(String, String)>, BTreeSet<String>) {
    let pods = last
        .pods
        .keys()
        .chain(cluster.pods.keys())
        .filter(|k| last.pods.get(*k) != cluster.pods.get(*k))
        .cloned()
        .collect();
    let namespaces = last
        .namespaces
        .keys()
        .chain(cluster.namespaces.keys())
        .filter(|k| last.namespaces.get(*k) != cluster.namespaces.get(*k))
        .cloned()
        .collect();
    (pods, namespaces)
}

/// One direction's changes from `old` to `new`, into `delta`; `old` becomes `new`.
fn patch(delta: &mut Delta, dir: Direction, old: &mut DirState, new: &Direction2) {
    let mut put = |set: Set| {
        delta
            .sets
            .insert(set.name.clone(), SetChange::Replace(Arc::new(set)));
    };
    let new_subjects = subjects(new);
    if old.subjects != new_subjects {
        for fam in AddrFamily::ALL {
            put(subject_set(new, dir, fam));
        }
        old.subjects = new_subjects;
    }
    if !Arc::ptr_eq(&old.peers, &new.peers) && *old.peers != *new.peers {
        for fam in AddrFamily::ALL {
            put(peer_set(new, dir, fam));
        }
    }
    old.peers = new.peers.clone();
    if old.rows != new.rows {
        put(row_set(new, dir));
        old.rows = new.rows.clone();
    }
    if old.isolating != new.isolating {
        put(isolated_set(new, dir));
        old.isolating = new.isolating.clone();
    }
    let sids: BTreeSet<u32> = old
        .classes
        .keys()
        .chain(new.classes.keys())
        .copied()
        .collect();
    let touched: Vec<u32> = sids
        .into_iter()
        .filter(|s| match (old.classes.get(s), new.classes.get(s)) {
            (Some(a), Some(b)) => !Arc::ptr_eq(a, b) && a != b,
            (a, b) => a.is_some() || b.is_some(),
        })
        .collect();
    let names = [pairs_map(dir), default_map(dir)];
    for (i, name) in names.into_iter().enumerate() {
        let mut remove = BTreeSet::new();
        let mut add = BTreeMap::new();
        for sid in &touched {
            if let Some(c) = old.classes.get(sid) {
                remove.extend(class_elements(*sid, c)[i].iter().map(|(k, _)| k.clone()));
            }
            if let Some(c) = new.classes.get(sid) {
                add.extend(class_elements(*sid, c)[i].iter().cloned());
            }
        }
        // A key both removed and put is replaced: `put` alone says so.
        remove.retain(|k| !add.contains_key(k));
        if !remove.is_empty() || !add.is_empty() {
            delta
                .sets
                .insert(name, SetChange::Elements { remove, put: add });
        }
    }
    for sid in touched {
        match new.classes.get(&sid) {
            Some(c) => old.classes.insert(sid, c.clone()),
            None => old.classes.remove(&sid),
        };
    }
}
