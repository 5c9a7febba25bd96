//! [`Cache`]: what one compilation leaves for the next, so
//! [`crate::incremental::Incremental`] redoes only what a change touches.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use crate::cells::{AddrFamily, AddrRange, Cells};
use crate::classes::{FastMap, Peers};
use crate::compile::{SubjectClass, SubjectRows};
use crate::matcher::{peers_hold, selects};
use crate::model::{Action, Direction, PeerMatch, Policy, PolicyId};
use crate::view::{Cluster, ContainerPort, Pod};

/// What a subject class's rows depend on besides the peer classes: its policies, its named
/// ports (ingress) and, when it has one member, which pod (a pod is not asked about itself,
/// so a one-member class against a one-member peer class of the same pod has no row).
pub(crate) type SubjectKey = (
    Direction,
    Vec<PolicyId>,
    Vec<ContainerPort>,
    Option<(String, String)>,
);

/// A direction's rule peer lists, owned: the peer classes hold while these do.
pub(crate) type PeerKeys = Vec<(Vec<PeerMatch>, bool)>;

/// What survives between compilations while pods, namespaces, nodes and the node stay
/// the same: per rule peer list, which address regions it holds; the peer classes while
/// the rule peer lists stay the same; per local pod and direction, the policies that
/// apply; per subject class, its rows while its policies and the peer classes stay.
#[derive(Default)]
pub(crate) struct Cache {
    /// Per address region, in the columns' order: what its column values depend on.
    owners: Vec<OwnerKey>,
    /// The regions changed since the peer classes were made: make them again.
    pub(crate) regions_changed: bool,
    pub(crate) columns: HashMap<(Vec<PeerMatch>, bool), Arc<Vec<bool>>>,
    pub(crate) peers: HashMap<Direction, (PeerKeys, Arc<Peers>)>,
    /// Per namespace and pod name, per direction (egress, ingress): the policies that
    /// apply. Nested so a pod is looked up by its own strings, without building a key.
    pub(crate) applicable: FastMap<String, FastMap<String, PerDirection>>,
    pub(crate) subjects: FastMap<SubjectKey, Arc<SubjectRows>>,
    /// Per direction: the last row ids and each subject class's rows and ids.
    pub(crate) classes: HashMap<Direction, ClassIds>,
    /// Set by the caller when pods, namespaces, nodes and the node are those of the last
    /// compilation with this cache: the regions' owners are then the same too while the
    /// regions are (policies' CIDRs cut them), and are not made again.
    pub world_unchanged: bool,
}

/// The policies that apply to one pod, egress then ingress, once known.
pub(crate) type PerDirection = [Option<Vec<PolicyId>>; 2];

pub(crate) fn dir_index(dir: Direction) -> usize {
    match dir {
        Direction::Egress => 0,
        Direction::Ingress => 1,
    }
}

/// Each row's content hash and id by the row's address (an address names one row while
/// the subject rows beside it hold that row), and each subject class's rows and ids.
pub(crate) type ClassIds = (
    HashMap<usize, (u64, u32)>,
    HashMap<u32, (Arc<SubjectRows>, Arc<SubjectClass>)>,
);

/// What a region's column values depend on ([`peers_hold`] of its remote): the range (an
/// ipBlock or network matches its first address) and what holds it, a pod's namespace,
/// labels and namespace labels, or a node's labels.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct OwnerKey {
    family: AddrFamily,
    range: AddrRange,
    pod: Option<(String, crate::selector::Labels, crate::selector::Labels)>,
    node: Option<crate::selector::Labels>,
}

fn owner_keys(cluster: &Cluster, cells: &Cells) -> Vec<OwnerKey> {
    cells
        .peers
        .iter()
        .flat_map(|(f, v)| v.iter().map(move |(r, remote)| (*f, *r, remote)))
        .map(|(family, range, r)| OwnerKey {
            family,
            range,
            pod: r.pod.map(|p| {
                (
                    p.namespace.clone(),
                    p.labels.clone(),
                    cluster.namespace_labels(&p.namespace),
                )
            }),
            node: r.node.map(|n| n.labels.clone()),
        })
        .collect()
}

impl Cache {
    /// After a change of pods, namespaces or nodes: each cached column keeps its value for
    /// the regions whose owner key is unchanged and asks the matcher for the others, and
    /// the peer classes are made again ([`peer_classes`] keeps the rows if they are the
    /// same classes).
    pub(crate) fn carry_columns(&mut self, cluster: &Cluster, cells: &Cells) {
        let owners = owner_keys(cluster, cells);
        if owners == self.owners {
            return;
        }
        let old: HashMap<&OwnerKey, usize> = self
            .owners
            .iter()
            .enumerate()
            .map(|(i, k)| (k, i))
            .collect();
        let from: Vec<Option<usize>> = owners.iter().map(|k| old.get(k).copied()).collect();
        let remotes: Vec<_> = cells.peers.values().flatten().map(|(_, r)| *r).collect();
        for ((peers, accept), col) in self.columns.iter_mut() {
            let action = if *accept {
                Action::Accept
            } else {
                Action::Deny
            };
            let v: Vec<bool> = from
                .iter()
                .zip(&remotes)
                .map(|(j, r)| match j {
                    Some(j) => col[*j],
                    None => peers_hold(cluster, *r, peers, action),
                })
                .collect();
            *col = Arc::new(v);
        }
        self.owners = owners;
        self.regions_changed = true;
    }

    /// Whether the regions' owner keys are those of the last compilation, known without
    /// making them: the world is unchanged and a policy's CIDRs cut the regions as before.
    pub(crate) fn same_owners(&self, cells: &Cells) -> bool {
        let mut ranges = cells
            .peers
            .iter()
            .flat_map(|(f, v)| v.iter().map(move |(r, _)| (*f, *r)));
        self.world_unchanged
            && self.owners.len() == cells.peers.values().map(Vec::len).sum::<usize>()
            && self
                .owners
                .iter()
                .all(|k| ranges.next() == Some((k.family, k.range)))
    }

    /// Forgets which policies apply to the pods in `pods` (namespace, name) and to every
    /// pod of the namespaces in `namespaces`: their labels changed.
    pub fn pods_changed(
        &mut self,
        pods: &BTreeSet<(String, String)>,
        namespaces: &BTreeSet<String>,
    ) {
        self.applicable.retain(|ns, _| !namespaces.contains(ns));
        for (ns, name) in pods {
            if let Some(m) = self.applicable.get_mut(ns) {
                m.remove(name);
            }
        }
    }

    /// Forgets what depends on the policies in `changed` (old and new versions).
    pub fn policies_changed(&mut self, cluster: &Cluster, changed: &[&Policy], local: &[&Pod]) {
        let ids: BTreeSet<&PolicyId> = changed.iter().map(|p| &p.id).collect();
        self.subjects
            .retain(|k, _| !k.1.iter().any(|id| ids.contains(id)));
        for pod in local {
            if changed.iter().any(|p| selects(cluster, &p.subject, pod)) {
                if let Some(m) = self.applicable.get_mut(&pod.namespace) {
                    m.remove(&pod.name);
                }
            }
        }
    }
}
