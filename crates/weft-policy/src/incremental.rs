//! [`Incremental`]: the table again after a batch of changes, with work that follows the
//! change rather than the cluster.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use weft_nft::{Ruleset, Set};

use crate::cells::AddrFamily;
use crate::classes::Peers;
use crate::compile::{Cache, Compiled, Direction2, SubjectClass};
use crate::desired::{
    class_elements, default_map, local_pods, pair_sets, pairs_map, peer_set, row_set, subject_set,
    table, NodeContext, DIRECTIONS, FAMILY, TABLE,
};
use crate::model::{Direction, Policy, PolicyId};
use crate::rows::Row;
use crate::view::{Cluster, Namespace, Node, Pod};

/// [`crate::desired::desired`] for a caller that compiles again after every batch of
/// changes (the agent). While pods, namespaces, nodes and the context stay the same it
/// keeps which address regions each rule's peers hold, the peer classes (while the rules'
/// peer lists stay the same), the policies that apply to each local pod and each subject
/// class's rows; a policy change recomputes the rows of the subject classes whose
/// policies changed, and edits the previous table: only the elements of those classes
/// are touched, and maps that did not change keep their shared copy, so the diff skips
/// them. Any other change starts again from nothing. The result always equals
/// [`crate::desired::desired`]'s (tests compare them after every step of the truth-table
/// cases).
#[derive(Default)]
pub struct Incremental {
    last: Option<Last>,
    cache: Cache,
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
    ruleset: Ruleset,
    dirs: BTreeMap<Direction, DirState>,
}

/// What the last table holds for one direction.
struct DirState {
    subjects: Vec<((String, String), u32)>,
    peers: Arc<Peers>,
    classes: BTreeMap<u32, SubjectClass>,
    rows: BTreeMap<u32, Row>,
}

impl DirState {
    fn of(d: &Direction2) -> DirState {
        DirState {
            subjects: subjects(d),
            peers: d.peers.clone(),
            classes: d.classes.clone(),
            rows: d.rows.clone(),
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
    pub fn desired(&mut self, cluster: &Cluster, ctx: &NodeContext) -> Ruleset {
        let same_world = self.last.as_ref().is_some_and(|l| {
            l.ctx == *ctx
                && l.pods == cluster.pods
                && l.namespaces == cluster.namespaces
                && l.nodes == cluster.nodes
        });
        let Some(last) = self.last.as_mut().filter(|_| same_world) else {
            self.cache = Cache::default();
            let compiled = Compiled::new(cluster, ctx, Some(&mut self.cache));
            self.recompiled = compiled.computed;
            let ruleset = table(&compiled, ctx);
            self.last = Some(Last {
                ctx: ctx.clone(),
                namespaces: cluster.namespaces.clone(),
                pods: cluster.pods.clone(),
                nodes: cluster.nodes.clone(),
                policies: cluster.policies.clone(),
                ruleset: ruleset.clone(),
                dirs: DIRECTIONS
                    .iter()
                    .map(|d| (*d, DirState::of(compiled.dir(*d))))
                    .collect(),
            });
            return ruleset;
        };
        let ids: BTreeSet<&PolicyId> = last
            .policies
            .keys()
            .chain(cluster.policies.keys())
            .collect();
        let changed: Vec<&Policy> = ids
            .into_iter()
            .filter(|id| last.policies.get(*id) != cluster.policies.get(*id))
            .flat_map(|id| [last.policies.get(id), cluster.policies.get(id)])
            .flatten()
            .collect();
        self.recompiled = 0;
        if changed.is_empty() {
            return last.ruleset.clone();
        }
        let local: Vec<&Pod> = local_pods(cluster, &ctx.node_name).collect();
        self.cache.policies_changed(cluster, &changed, &local);
        let compiled = Compiled::new(cluster, ctx, Some(&mut self.cache));
        self.recompiled = compiled.computed;
        let table = last
            .ruleset
            .table_mut(FAMILY, TABLE)
            .expect("the last ruleset holds the table");
        for dir in DIRECTIONS {
            let new = compiled.dir(dir);
            let old = last.dirs.get_mut(&dir).expect("both directions are kept");
            patch(table, dir, old, new);
        }
        last.policies = cluster.policies.clone();
        last.ruleset.clone()
    }
}

/// Moves one direction's maps from `old` to `new`, touching only what differs.
fn patch(table: &mut weft_nft::Table, dir: Direction, old: &mut DirState, new: &Direction2) {
    let mut put = |set: Set| {
        table.sets.insert(set.name.clone(), Arc::new(set));
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
    let sids: BTreeSet<u32> = old
        .classes
        .keys()
        .chain(new.classes.keys())
        .copied()
        .collect();
    let touched: Vec<u32> = sids
        .into_iter()
        .filter(|s| old.classes.get(s) != new.classes.get(s))
        .collect();
    if touched.len() * 2 > new.classes.len().max(1) {
        // Most classes changed: building the maps afresh is cheaper than editing them.
        let (pairs, defaults) = pair_sets(new, dir);
        put(pairs);
        put(defaults);
    } else if !touched.is_empty() {
        let names = [pairs_map(dir), default_map(dir)];
        for sid in touched {
            for (i, name) in names.iter().enumerate() {
                let Some(set) = table.set_mut(name) else {
                    continue;
                };
                if let Some(c) = old.classes.get(&sid) {
                    for (k, _) in &class_elements(sid, c)[i] {
                        set.elements.remove(k);
                    }
                }
                if let Some(c) = new.classes.get(&sid) {
                    set.elements
                        .extend(class_elements(sid, c)[i].iter().cloned());
                }
            }
        }
    }
    old.classes = new.classes.clone();
}
