//! Classes: what lets the table size with pods + classes instead of pods x peers.
//!
//! For one direction, [`crate::matcher::decide`] reads of the other end only whether it
//! is the subject itself, whether it is the subject's node, whether each rule's peers hold
//! it (`matcher::peers_hold`, which does not depend on the subject) and, for egress, the
//! named container ports it has. Peer address regions ([`Cells`]) that agree on all of
//! these form one *peer class*. Of the subject (a local pod) it reads the policies that
//! apply to it and, for ingress, its own named ports: local pods that agree on these form
//! one *subject class*. The verdict is then a function of (subject class, peer class,
//! protocol, port), so the table needs one row per pair that occurs, not per pod and peer.
//!
//! A class id is a hash of what defines the class (a peer class: the rule peer lists that
//! hold it, not their positions), so a change leaves the ids of the classes it does not
//! touch alone and the kernel sees only the elements whose answers changed. Two classes
//! whose hashes collide are told apart by taking the next free id, in an order that
//! depends only on the classes, so the ids are still a function of the cluster.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::Arc;

use crate::cells::{AddrFamily, AddrRange, Cells};
use crate::matcher::{Applicable, Remote};
use crate::model::{Action, Direction, PeerMatch, PortMatch, Rule};
use crate::view::{Cluster, ContainerPort, Pod};

/// The distinct rule peer lists of one direction, over every policy: two rules with the
/// same peers (and the same say on fail-closed peers) share one column of the peer
/// signatures.
pub struct Columns<'a> {
    pub peers: Vec<(&'a [PeerMatch], bool)>,
    index: FastMap<(&'a [PeerMatch], bool), usize>,
    /// Named ports any rule of the direction refers to.
    pub names: BTreeSet<&'a str>,
}

impl<'a> Columns<'a> {
    pub fn new(cluster: &'a Cluster, dir: Direction) -> Columns<'a> {
        let mut c = Columns {
            peers: Vec::new(),
            index: FastMap::default(),
            names: BTreeSet::new(),
        };
        for p in cluster.policies.values() {
            for r in p.rules(dir).unwrap_or_default() {
                let key = (r.peers.as_slice(), r.action == Action::Accept);
                let next = c.peers.len();
                if *c.index.entry(key).or_insert(next) == next {
                    c.peers.push(key);
                }
                for pr in &r.ports {
                    if let PortMatch::Named(n) = &pr.port {
                        c.names.insert(n.as_str());
                    }
                }
            }
        }
        c
    }

    /// The column of a rule of the direction.
    pub fn of(&self, r: &Rule) -> usize {
        self.index[&(r.peers.as_slice(), r.action == Action::Accept)]
    }
}

/// What the matcher reads of a peer (everything but "is it the subject itself").
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PeerSig {
    /// A node address: the own node of every local pod, or another node.
    pub own_node: bool,
    /// Per column: whether the column's peers hold the address.
    pub columns: Vec<bool>,
    /// Egress: the peer pod's container ports named by some rule.
    pub ports: Vec<ContainerPort>,
}

/// Peer classes of one direction over both families. Owned (members are kept as
/// addresses), so a compiler can keep them while the peers do not change.
#[derive(Debug, PartialEq)]
pub struct Peers {
    /// Per family: address regions with their class id, neighbours of one class merged.
    pub regions: BTreeMap<AddrFamily, Vec<(AddrRange, u32)>>,
    /// Per class: its id, its signature and up to two members of different pods (so a
    /// subject can always be asked about a member that is not itself).
    pub classes: Vec<(u32, PeerSig, Vec<IpAddr>)>,
}

/// The peer classes of one direction for the node `node`, given each column's answers
/// for every region of `cells` (families in order, regions in address order).
pub fn peers(
    cells: &Cells,
    cols: &Columns,
    column_values: &[Arc<Vec<bool>>],
    dir: Direction,
    node: &str,
) -> Peers {
    let mut ids: FastMap<PeerSig, u32> = FastMap::default();
    let mut classes: Vec<(PeerSig, Vec<Remote>)> = Vec::new();
    let mut regions = BTreeMap::new();
    let mut i = 0;
    for (fam, cells) in &cells.peers {
        let mut out: Vec<(AddrRange, u32)> = Vec::new();
        for (range, remote) in cells {
            let sig = PeerSig {
                own_node: remote.node.is_some_and(|n| n.name == node),
                columns: column_values.iter().map(|c| c[i]).collect(),
                ports: match (dir, remote.pod) {
                    (Direction::Egress, Some(p)) => p
                        .ports
                        .iter()
                        .filter(|cp| cols.names.contains(cp.name.as_str()))
                        .cloned()
                        .collect(),
                    _ => Vec::new(),
                },
            };
            i += 1;
            let next = classes.len() as u32;
            let id = *ids.entry(sig.clone()).or_insert(next);
            if id == next {
                classes.push((sig, vec![*remote]));
            } else {
                let members = &mut classes[id as usize].1;
                let other = |m: &Remote| match (m.pod, remote.pod) {
                    (Some(a), Some(b)) => !std::ptr::eq(a, b),
                    _ => true,
                };
                if members.len() < 2 && members.iter().all(other) {
                    members.push(*remote);
                }
            }
            match out.last_mut() {
                Some(((_, end), last)) if *last == id && end.checked_add(1) == Some(range.0) => {
                    *end = range.1
                }
                _ => out.push((*range, id)),
            }
        }
        regions.insert(*fam, out);
    }
    // Per column: a hash of its peers, which peer class ids are made of.
    let col_hashes: Vec<u64> = cols
        .peers
        .iter()
        .map(|key| fnv(format!("{key:?}").as_bytes()))
        .collect();
    let hashes = classes.iter().map(|(sig, _)| {
        let cols = sig
            .columns
            .iter()
            .zip(&col_hashes)
            .filter(|(held, _)| **held)
            .fold(0u64, |acc, (_, h)| acc.wrapping_add(*h));
        cols ^ fnv(format!("{}{:?}", sig.own_node, sig.ports).as_bytes())
    });
    let ids = assign_ids(
        hashes.collect(),
        |a, b| classes[a].0.cmp(&classes[b].0),
        u32::MAX,
    );
    for v in regions.values_mut() {
        for (_, id) in v.iter_mut() {
            *id = ids[*id as usize];
        }
    }
    let classes = classes
        .into_iter()
        .zip(ids)
        .map(|((sig, reps), id)| (id, sig, reps.iter().filter_map(|r| r.ip).collect()))
        .collect();
    Peers { regions, classes }
}

/// What the matcher reads of a subject, for one direction.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SubjectSig<'a> {
    /// The applicable policies, in evaluation order.
    pub policies: Vec<&'a crate::model::PolicyId>,
    /// Ingress: the pod's container ports named by some rule.
    pub ports: Vec<&'a ContainerPort>,
}

/// Subject classes of one direction: local pods that some policy applies to.
pub struct Subjects<'a> {
    /// Per local pod (in namespace/name order): its class id.
    pub members: Vec<(&'a Pod, u32)>,
    /// Per class: its id, the applicable policies (of its first member) and up to two
    /// members.
    pub classes: Vec<(u32, Applicable<'a>, Vec<&'a Pod>)>,
}

pub fn subjects<'a>(
    cols: &Columns<'a>,
    dir: Direction,
    local: impl Iterator<Item = &'a Pod>,
    mut applicable: impl FnMut(&'a Pod) -> Applicable<'a>,
) -> Subjects<'a> {
    let mut ids: FastMap<SubjectSig<'a>, u32> = FastMap::default();
    let mut sigs: Vec<SubjectSig<'a>> = Vec::new();
    let mut classes: Vec<(Applicable<'a>, Vec<&'a Pod>)> = Vec::new();
    let mut members = Vec::new();
    for pod in local {
        let a = applicable(pod);
        if a.is_empty() {
            continue;
        }
        let sig = SubjectSig {
            policies: a.all().map(|p| &p.id).collect(),
            ports: match dir {
                Direction::Ingress => pod
                    .ports
                    .iter()
                    .filter(|cp| cols.names.contains(cp.name.as_str()))
                    .collect(),
                Direction::Egress => Vec::new(),
            },
        };
        let next = classes.len() as u32;
        let id = *ids.entry(sig.clone()).or_insert(next);
        if id == next {
            sigs.push(sig);
            classes.push((a, vec![pod]));
        } else if classes[id as usize].1.len() < 2 {
            classes[id as usize].1.push(pod);
        }
        members.push((pod, id));
    }
    let hashes = sigs
        .iter()
        .map(|sig| fnv(format!("{sig:?}").as_bytes()))
        .collect();
    let ids = assign_ids(hashes, |a, b| sigs[a].cmp(&sigs[b]), SUBJECT_IDS - 1);
    Subjects {
        members: members
            .into_iter()
            .map(|(pod, i)| (pod, ids[i as usize]))
            .collect(),
        classes: classes
            .into_iter()
            .zip(&ids)
            .map(|((a, m), id)| (*id, a, m))
            .collect(),
    }
}

/// A hash map with [`FastHasher`]: the compiler hashes every rule's peer list and every
/// local pod's signature on each compilation, where SipHash cost more than the lookups.
pub type FastMap<K, V> = HashMap<K, V, std::hash::BuildHasherDefault<FastHasher>>;

/// A multiply-rotate hasher (rustc's FxHash), a word at a time. Not keyed: what it hashes
/// is the policies' and pods' own content, written by those allowed to write policies,
/// and a crafted collision costs compile time, not a wrong table.
#[derive(Default, Clone, Copy)]
pub struct FastHasher(u64);

impl FastHasher {
    const K: u64 = 0x51_7c_c1_b7_27_22_0a_95;

    fn add(&mut self, w: u64) {
        self.0 = (self.0.rotate_left(5) ^ w).wrapping_mul(Self::K);
    }
}

impl std::hash::Hasher for FastHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            self.add(u64::from_le_bytes(w));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut w = [0u8; 8];
            w[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(w) ^ ((rest.len() as u64) << 56));
        }
    }

    fn write_u8(&mut self, i: u8) {
        self.add(u64::from(i));
    }

    fn write_u32(&mut self, i: u32) {
        self.add(u64::from(i));
    }

    fn write_u64(&mut self, i: u64) {
        self.add(i);
    }

    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// Subject class ids fit the 24 bits of the packet mark the table gives them.
pub const SUBJECT_IDS: u32 = 1 << 24;

/// FNV-1a: a hash that is the same in every process, so ids do not change on restart.
pub fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Ids from hashes (folded to `0..=max`): each its hash, or on a collision the next free
/// one, taken in the order of (hash, `order`) so the result depends only on the classes.
pub fn assign_ids(
    hashes: Vec<u64>,
    order: impl Fn(usize, usize) -> std::cmp::Ordering,
    max: u32,
) -> Vec<u32> {
    let fold = |h: u64| {
        let x = ((h >> 32) ^ h) as u32;
        if max == u32::MAX {
            x
        } else {
            x % (max + 1)
        }
    };
    // More classes than ids would never find a free one; a node's pods and a table's
    // regions are far fewer than 2^24.
    assert!(
        hashes.len() as u64 <= u64::from(max) + 1,
        "{} classes for {} ids",
        hashes.len(),
        u64::from(max) + 1
    );
    let mut idx: Vec<usize> = (0..hashes.len()).collect();
    idx.sort_by(|a, b| fold(hashes[*a]).cmp(&fold(hashes[*b])).then(order(*a, *b)));
    let mut used = std::collections::HashSet::new();
    let mut ids = vec![0u32; hashes.len()];
    for i in idx {
        let mut id = fold(hashes[i]);
        while !used.insert(id) {
            id = if id >= max { 0 } else { id + 1 };
        }
        ids[i] = id;
    }
    ids
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colliding_hashes_get_distinct_ids_in_a_fixed_order() {
        let ids = assign_ids(vec![5, 5, 7, 6], |a, b| b.cmp(&a), 9);
        // 5 twice: the later index sorts first here and keeps 5; the other takes 6, so
        // 6 moves on to 7 and 7 to 8.
        assert_eq!(ids, vec![6, 5, 8, 7]);
        let wrapped = assign_ids(vec![9, 9], |a, b| a.cmp(&b), 9);
        assert_eq!(wrapped, vec![9, 0]);
    }
}
