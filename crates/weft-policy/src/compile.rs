//! From the cluster view to classes and rows ([`Compiled`]), with the [`Cache`] that lets
//! [`crate::incremental::Incremental`] redo only what a change touches.

use crate::cache::{dir_index, Cache, PeerKeys, SubjectKey};

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use crate::cells::{AddrFamily, AddrRange, Cells};
use crate::classes::{self, Columns, PeerSig, Peers};
use crate::desired::NodeContext;
use crate::matcher::{peers_hold, Applicable};
use crate::model::{Action, Direction, PolicyId, Tier};
use crate::rows::{denials, Denial, Row};
use crate::view::{Cluster, ContainerPort, Pod};

/// One direction, compiled.
pub(crate) struct Direction2<'a> {
    /// Local pods some policy applies to, with their subject class.
    pub subjects: Vec<(&'a Pod, u32)>,
    /// Peer address regions with their class, per family.
    pub peers: Arc<Peers>,
    /// Per subject class: its rows (shared with the cache while they stay the same).
    pub classes: BTreeMap<u32, Arc<SubjectClass>>,
    /// The rows the classes use, by id.
    pub rows: BTreeMap<u32, Row>,
    /// Per subject class that NetworkPolicies isolate: those policies (what a denial
    /// counted against the class in the isolated set is counted against).
    pub isolating: BTreeMap<u32, Vec<PolicyId>>,
}

/// The rows of one subject class: a default, and the peer classes that differ from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SubjectClass {
    /// The row of most peer classes, when it denies anything.
    pub default: Option<u32>,
    /// (peer class, row) for the peer classes whose row is not the default.
    pub pairs: Vec<(u32, u32)>,
}

pub(crate) struct Compiled<'a> {
    pub local: Vec<&'a Pod>,
    egress: Direction2<'a>,
    ingress: Direction2<'a>,
    /// Subject classes whose rows were computed rather than found in the cache.
    pub computed: usize,
}

/// A subject class's rows before row ids are given: the default and the other pairs.
#[derive(Debug)]
pub(crate) struct SubjectRows {
    default: Row,
    others: Vec<(u32, Row)>,
    /// The distinct rows of `others` (shared copies), so row ids are found without
    /// walking every pair.
    distinct: Vec<Row>,
}

impl<'a> Compiled<'a> {
    pub fn new(
        cluster: &'a Cluster,
        ctx: &NodeContext,
        mut cache: Option<&mut Cache>,
    ) -> Compiled<'a> {
        let cells = Cells::new(cluster);
        let local: Vec<&'a Pod> = cluster
            .pods
            .values()
            .filter(|p| !p.host_network && p.node.as_deref() == Some(ctx.node_name.as_str()))
            .collect();
        if let Some(c) = cache.as_deref_mut().filter(|c| !c.same_owners(&cells)) {
            c.carry_columns(cluster, &cells);
        }
        let mut computed = 0;
        let mut one = |dir| {
            let (d, n) = direction(cluster, &cells, ctx, &local, dir, cache.as_deref_mut());
            computed += n;
            d
        };
        let egress = one(Direction::Egress);
        let ingress = one(Direction::Ingress);
        if let Some(c) = cache {
            c.regions_changed = false;
        }
        Compiled {
            local,
            egress,
            ingress,
            computed,
        }
    }

    pub fn dir(&self, dir: Direction) -> &Direction2<'a> {
        match dir {
            Direction::Egress => &self.egress,
            Direction::Ingress => &self.ingress,
        }
    }
}

/// The peer classes of `dir`, from the cache while the rule peer lists are the same.
fn peer_classes(
    cluster: &Cluster,
    cells: &Cells,
    cols: &Columns,
    ctx: &NodeContext,
    dir: Direction,
    mut cache: Option<&mut Cache>,
) -> Arc<Peers> {
    if let Some((k, peers)) = cache
        .as_deref()
        .filter(|c| !c.regions_changed)
        .and_then(|c| c.peers.get(&dir))
    {
        let same = k.len() == cols.peers.len()
            && k.iter()
                .zip(&cols.peers)
                .all(|((p, a), (q, b))| a == b && p.as_slice() == *q);
        if same {
            return peers.clone();
        }
    }
    let keys: PeerKeys = cols.peers.iter().map(|(p, a)| (p.to_vec(), *a)).collect();
    let values: Vec<Arc<Vec<bool>>> = keys
        .iter()
        .map(|key| {
            let compute = || {
                let action = if key.1 { Action::Accept } else { Action::Deny };
                let v: Vec<bool> = cells
                    .peers
                    .values()
                    .flatten()
                    .map(|(_, remote)| peers_hold(cluster, *remote, &key.0, action))
                    .collect();
                Arc::new(v)
            };
            match cache.as_deref_mut() {
                Some(c) => c.columns.entry(key.clone()).or_insert_with(compute).clone(),
                None => compute(),
            }
        })
        .collect();
    let peers = Arc::new(classes::peers(cells, cols, &values, dir, &ctx.node_name));
    if let Some(c) = cache {
        // Rows were computed against the old classes: they hold while the classes (ids
        // and what defines them) are the same, whatever their members.
        let same_classes = c.peers.get(&dir).is_some_and(|(_, old)| {
            old.classes.len() == peers.classes.len()
                && old.classes.iter().zip(&peers.classes).all(|(a, b)| {
                    // A one-member class's member matters too (see SubjectKey).
                    a.0 == b.0 && a.1 == b.1 && (a.2 == b.2 || a.2.len().min(b.2.len()) > 1)
                })
        });
        if !same_classes {
            c.subjects.retain(|k, _| k.0 != dir);
        }
        c.peers.insert(dir, (keys, peers.clone()));
    }
    peers
}

fn direction<'a>(
    cluster: &'a Cluster,
    cells: &Cells<'a>,
    ctx: &NodeContext,
    local: &[&'a Pod],
    dir: Direction,
    mut cache: Option<&mut Cache>,
) -> (Direction2<'a>, usize) {
    let cols = Columns::new(cluster, dir);
    let peers = peer_classes(cluster, cells, &cols, ctx, dir, cache.as_deref_mut());
    let d = dir_index(dir);
    let subjects = classes::subjects(&cols, dir, local.iter().copied(), |pod| {
        let cached = cache
            .as_deref()
            .and_then(|c| c.applicable.get(pod.namespace.as_str()))
            .and_then(|m| m.get(pod.name.as_str()))
            .and_then(|v| v[d].as_deref());
        if let Some(ids) = cached {
            return applicable_from(cluster, dir, pod, ids);
        }
        let a = Applicable::new(cluster, dir, pod);
        if let Some(c) = cache.as_deref_mut() {
            c.applicable
                .entry(pod.namespace.clone())
                .or_default()
                .entry(pod.name.clone())
                .or_default()[d] = Some(a.all().map(|p| p.id.clone()).collect());
        }
        a
    });
    let mut computed = 0;
    let isolating = subjects
        .classes
        .iter()
        .filter(|(_, a, _)| !a.netpol.is_empty())
        .map(|(sid, a, _)| (*sid, a.netpol.iter().map(|p| p.id.clone()).collect()))
        .collect();
    let mut per_subject: Vec<(u32, Arc<SubjectRows>)> = Vec::new();
    for (sid, a, members) in &subjects.classes {
        let key: SubjectKey = (
            dir,
            a.all().map(|p| p.id.clone()).collect(),
            match dir {
                Direction::Ingress => a
                    .pod
                    .ports
                    .iter()
                    .filter(|cp| cols.names.contains(cp.name.as_str()))
                    .cloned()
                    .collect(),
                Direction::Egress => Vec::new(),
            },
            match members.as_slice() {
                [only] => Some((only.namespace.clone(), only.name.clone())),
                _ => None,
            },
        );
        let rows = match cache.as_deref().and_then(|c| c.subjects.get(&key)) {
            Some(r) => r.clone(),
            None => {
                computed += 1;
                let r = Arc::new(subject_rows(cluster, cells, &cols, &peers, a, members));
                if let Some(c) = cache.as_deref_mut() {
                    c.subjects.insert(key, r.clone());
                }
                r
            }
        };
        per_subject.push((*sid, rows));
    }
    let (classes_out, used) = row_ids(dir, &per_subject, cache);
    let d = Direction2 {
        subjects: subjects.members,
        peers,
        classes: classes_out,
        rows: used,
        isolating,
    };
    (d, computed)
}

/// Row ids (hashes of the rows' contents, so a row keeps its id while it exists), and
/// each subject class's default and pairs by id; a class whose rows and their ids are as
/// last time is taken from the cache. A policy change touches a few classes' rows, so
/// the work here is kept to what changed: rows seen last time keep their hash (no
/// formatting), contents are told apart by hash first, and only the classes with a new
/// row or a row whose id moved are built again.
fn row_ids(
    dir: Direction,
    per_subject: &[(u32, Arc<SubjectRows>)],
    cache: Option<&mut Cache>,
) -> (BTreeMap<u32, Arc<SubjectClass>>, BTreeMap<u32, Row>) {
    let addr = |r: &Row| Arc::as_ptr(r) as usize;
    // Rows are shared within a subject class; each shared copy is looked at once. In
    // address order, so the copy that stands for its contents (the one the table's row
    // map holds) is the same one while it lives, and the next table's rows compare by
    // pointer.
    let mut by_addr: BTreeMap<usize, (&Row, bool)> = BTreeMap::new();
    for (_, r) in per_subject {
        by_addr
            .entry(addr(&r.default))
            .or_insert((&r.default, false));
        for row in &r.distinct {
            by_addr.entry(addr(row)).or_insert((row, true)).1 = true;
        }
    }
    let last = cache.map(|c| c.classes.entry(dir).or_default());
    // Distinct contents: (row, named by some pair, hash, its id last time if it had one);
    // equal contents share an index.
    let mut distinct: Vec<(&Row, bool, u64, Option<u32>)> = Vec::new();
    let mut by_hash: HashMap<u64, Vec<usize>> = HashMap::new();
    let mut index_of: HashMap<usize, usize> = HashMap::with_capacity(by_addr.len());
    for (a, (row, in_pairs)) in &by_addr {
        let seen = last.as_ref().and_then(|l| l.0.get(a)).copied();
        let h = match seen {
            Some((h, _)) => h,
            None => classes::fnv(format!("{row:?}").as_bytes()),
        };
        let same = by_hash.entry(h).or_default();
        // Two rows seen last time are equal exactly when their ids were (an id stood for
        // one content), so only a new row's contents are compared.
        let equal = |i: &usize| match (seen, distinct[*i].3) {
            (Some((_, x)), Some(y)) => x == y,
            _ => distinct[*i].0 == *row,
        };
        let i = match same.iter().find(|i| equal(i)) {
            Some(i) => *i,
            None => {
                distinct.push((row, false, h, seen.map(|x| x.1)));
                same.push(distinct.len() - 1);
                distinct.len() - 1
            }
        };
        distinct[i].1 |= *in_pairs;
        index_of.insert(*a, i);
    }
    let ids = classes::assign_ids(
        distinct.iter().map(|d| d.2).collect(),
        |a, b| distinct[a].0.cmp(distinct[b].0),
        u32::MAX,
    );
    // Rows the table holds: those some default or pair names (an empty default is none).
    let used: BTreeMap<u32, Row> = distinct
        .iter()
        .zip(&ids)
        .filter(|((r, in_pairs, _, _), _)| *in_pairs || !r.is_empty())
        .map(|((r, ..), id)| (*id, (*r).clone()))
        .collect();
    let row_id: HashMap<usize, (u64, u32)> = index_of
        .iter()
        .map(|(a, i)| (*a, (distinct[*i].2, ids[*i])))
        .collect();
    let id_of = |r: &Row| row_id[&addr(r)].1;
    let mut out = BTreeMap::new();
    let mut kept = HashMap::new();
    for (sid, rows) in per_subject {
        // The same rows with the same ids make the same class.
        let reuse = last
            .as_ref()
            .and_then(|l| l.1.get(sid).map(|c| (l, c)))
            .filter(|(_, (r, _))| Arc::ptr_eq(r, rows))
            .filter(|(l, _)| {
                std::iter::once(&rows.default)
                    .chain(&rows.distinct)
                    .all(|r| l.0.get(&addr(r)).map(|x| x.1) == Some(id_of(r)))
            })
            .map(|(_, (_, c))| c.clone());
        let class = reuse.unwrap_or_else(|| {
            Arc::new(SubjectClass {
                default: (!rows.default.is_empty()).then(|| id_of(&rows.default)),
                pairs: rows
                    .others
                    .iter()
                    .map(|(pid, r)| (*pid, id_of(r)))
                    .collect(),
            })
        });
        kept.insert(*sid, (rows.clone(), class.clone()));
        out.insert(*sid, class);
    }
    if let Some(l) = last {
        *l = (row_id, kept);
    }
    (out, used)
}

/// One subject class's row for every peer class: the matcher asked once per kind of peer
/// (what the class's own rules see of it), the most common row kept as the default.
fn subject_rows(
    cluster: &Cluster,
    cells: &Cells,
    cols: &Columns,
    peers: &Peers,
    a: &Applicable,
    members: &[&Pod],
) -> SubjectRows {
    let dir = a.direction;
    let mut idx: Vec<usize> = a
        .all()
        .flat_map(|p| p.rules(dir).unwrap_or_default())
        .map(|r| cols.of(r))
        .collect();
    idx.sort_unstable();
    idx.dedup();
    let mut memo: HashMap<(bool, Vec<bool>, &[ContainerPort]), Row> = HashMap::new();
    let mut all: Vec<(u32, Row)> = Vec::with_capacity(peers.classes.len());
    for (pid, sig, reps) in &peers.classes {
        let key = projection(sig, &idx);
        let row = match memo.get(&key) {
            Some(r) => r.clone(),
            None => {
                let r = Arc::new(row(cluster, cells, a, members, reps));
                memo.insert(key, r.clone());
                r
            }
        };
        all.push((*pid, row));
    }
    let mut count: HashMap<&Row, usize> = HashMap::new();
    for (_, r) in &all {
        *count.entry(r).or_default() += 1;
    }
    // Ties go to the smaller row, so the default is a function of the rows.
    let default = count
        .into_iter()
        .max_by(|x, y| x.1.cmp(&y.1).then(y.0.cmp(x.0)))
        .map(|(r, _)| r.clone())
        .unwrap_or_default();
    let mut others: Vec<(u32, Row)> = all.into_iter().filter(|(_, r)| *r != default).collect();
    others.sort_unstable_by_key(|(pid, _)| *pid);
    // Every row here is one of the memo's shared copies.
    let distinct = memo
        .into_values()
        .filter(|r| others.iter().any(|(_, o)| Arc::ptr_eq(o, r)))
        .collect();
    SubjectRows {
        default,
        others,
        distinct,
    }
}

fn projection<'s>(sig: &'s PeerSig, idx: &[usize]) -> (bool, Vec<bool>, &'s [ContainerPort]) {
    (
        sig.own_node,
        idx.iter().map(|i| sig.columns[*i]).collect(),
        sig.ports.as_slice(),
    )
}

/// The denials for a class pair, asked of a subject member and a peer member that are not
/// the same pod (a pod to itself is the loopback set's). A one-pod class against the class
/// of only that pod has nothing to deny.
fn row(
    cluster: &Cluster,
    cells: &Cells,
    a: &Applicable,
    members: &[&Pod],
    reps: &[std::net::IpAddr],
) -> Vec<(crate::rows::Service, Denial)> {
    for (i, s) in members.iter().enumerate() {
        for ip in reps {
            let r = cluster.resolve_ip(*ip);
            if r.pod.is_some_and(|p| std::ptr::eq(p, *s)) {
                continue;
            }
            return if i == 0 {
                denials(cluster, cells, a, r)
            } else {
                denials(cluster, cells, &Applicable::new(cluster, a.direction, s), r)
            };
        }
    }
    Vec::new()
}

/// [`Applicable`] from the ids of its policies, in evaluation order.
fn applicable_from<'a>(
    cluster: &'a Cluster,
    dir: Direction,
    pod: &'a Pod,
    ids: &[PolicyId],
) -> Applicable<'a> {
    let mut a = Applicable {
        direction: dir,
        pod,
        admin: Vec::new(),
        netpol: Vec::new(),
        baseline: Vec::new(),
    };
    for p in ids.iter().filter_map(|id| cluster.policies.get(id)) {
        match p.tier {
            Tier::Admin => a.admin.push(p),
            Tier::NetworkPolicy => a.netpol.push(p),
            Tier::Baseline => a.baseline.push(p),
        }
    }
    a
}

/// The peer regions of one family.
pub(crate) fn regions(peers: &Peers, fam: AddrFamily) -> &[(AddrRange, u32)] {
    peers.regions.get(&fam).map_or(&[], |v| v.as_slice())
}
