//! The pure half of enforcement: the cluster view in, the node's `inet weft-policy` table
//! out. Policy is data: the chains are the same whatever the number of pods and policies,
//! and everything policies, pods and labels decide lives in two interval maps.
//!
//! ```text
//! table inet weft-policy
//!   map egress  { ipv4_addr . ipv4_addr . inet_proto . inet_service : verdict; interval }
//!                 local pod . peer address range . protocol range . port range : goto egress-<tier>
//!   map ingress { same, keyed local pod . peer ... }
//!   map egress6, ingress6 { the same for IPv6: ipv6_addr . ipv6_addr . inet_proto . inet_service }
//!   chain forward { type filter hook forward priority filter; policy accept
//!     ct state established,related accept     replies, and what was allowed when it began
//!     ip saddr . ip daddr . meta l4proto . th dport vmap @egress    at the client's node
//!     ip daddr . ip saddr . meta l4proto . th dport vmap @ingress   at the server's node
//!     ip6 ... vmap @egress6, ip6 ... vmap @ingress6
//!   }
//!   chain egress-admin / egress-netpol / egress-baseline / ingress-... {
//!     counter [log prefix "weft-policy ingress NetworkPolicy " group N] drop
//!   }
//! ```
//!
//! Only denials are elements; a lookup that misses lets the packet on (to the other
//! direction's check, then the rest of the node's rules). The elements are the answers of
//! [`crate::matcher::decide`] over [`crate::cells::Cells`], merged where neighbours agree:
//! the compiler does not restate a single policy rule, so it cannot disagree with the
//! matcher. Keys hold only this node's pods, so each node checks the egress of its
//! clients and the ingress of its servers, and a pod pair on one node is checked once
//! each way in one pass.
//!
//! Why the forward hook alone: pod traffic crosses it both when routed and when bridged
//! on `cbr0` (the agent sets `bridge-nf-call-iptables`), after prerouting's Service DNAT,
//! so the keys hold real pod addresses. Traffic between a pod and its own node (input and
//! output hooks) is always allowed by the API, so those hooks have nothing to check; a
//! node's traffic to a pod elsewhere is checked by that pod's node, in its forward hook.
//!
//! Both families live in the one `inet` table: IPv4 and IPv6 addresses are separate maps
//! (a key's fields have fixed types), read by rules that load only their family.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use weft_nft::{
    BaseChain, Chain, ChainType, CtStates, DataType, Elem, Family, Hook, Key, KeyType, Policy,
    Rule, Ruleset, Selector, Set, SetRef, Stmt, Table, Value, Verdict,
};

use crate::cells::{AddrFamily, AddrRange, Cells, PortRange, OTHER_PROTOCOLS, PORT_PROTOCOLS};
use crate::matcher::{decide, rule_peers_match, selects, Applicable, Remote};
use crate::model::{Direction, Policy as NetPolicy, PolicyId, Protocol, Tier};
use crate::view::{Cluster, ContainerPort, Namespace, Node, Pod};

pub const TABLE: &str = "weft-policy";
pub const FAMILY: Family = Family::Inet;
pub const FORWARD: &str = "forward";

/// What the table depends on besides the cluster view.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeContext {
    /// Pods of this node get elements.
    pub node_name: String,
    /// Log denied packets to this nflog group, prefixed with direction and tier.
    pub log_group: Option<u16>,
}

pub fn map_name(dir: Direction, fam: AddrFamily) -> String {
    match fam {
        AddrFamily::V4 => dir.as_str().to_owned(),
        AddrFamily::V6 => format!("{}6", dir.as_str()),
    }
}

/// The chain a denial in `dir` by `tier` jumps to: a counter per direction and tier.
pub fn deny_chain(dir: Direction, tier: Tier) -> String {
    let t = match tier {
        Tier::Admin => "admin",
        Tier::NetworkPolicy => "netpol",
        Tier::Baseline => "baseline",
    };
    format!("{}-{t}", dir.as_str())
}

pub const DIRECTIONS: [Direction; 2] = [Direction::Egress, Direction::Ingress];
pub const TIERS: [Tier; 3] = [Tier::Admin, Tier::NetworkPolicy, Tier::Baseline];

/// The key each direction's map is looked up with: the local pod first.
pub fn key(dir: Direction, fam: AddrFamily) -> [Selector; 4] {
    let (saddr, daddr) = match fam {
        AddrFamily::V4 => (Selector::IpSaddr, Selector::IpDaddr),
        AddrFamily::V6 => (Selector::Ip6Saddr, Selector::Ip6Daddr),
    };
    let (pod, peer) = match dir {
        Direction::Egress => (saddr, daddr),
        Direction::Ingress => (daddr, saddr),
    };
    [pod, peer, Selector::MetaL4proto, Selector::ThDport]
}

fn key_types(fam: AddrFamily) -> Vec<KeyType> {
    let addr = match fam {
        AddrFamily::V4 => KeyType::Ipv4Addr,
        AddrFamily::V6 => KeyType::Ipv6Addr,
    };
    vec![addr, addr, KeyType::InetProto, KeyType::InetService]
}

fn addr_value(fam: AddrFamily, n: u128) -> Value {
    match fam.ip(n) {
        std::net::IpAddr::V4(a) => Value::Ipv4(a),
        std::net::IpAddr::V6(a) => Value::Ipv6(a),
    }
}

/// The node's policy table.
pub fn desired(cluster: &Cluster, ctx: &NodeContext) -> Ruleset {
    let mut t = Table::new(FAMILY, TABLE);
    let mut forward = Chain::base(
        FORWARD,
        BaseChain {
            kind: ChainType::Filter,
            hook: Hook::Forward,
            priority: 0,
            policy: Policy::Accept,
        },
    )
    .with_rule(Rule::new(vec![
        Stmt::CtState(CtStates::ESTABLISHED.union(CtStates::RELATED)),
        Stmt::Verdict(Verdict::Accept),
    ]));
    let cells = Cells::new(cluster);
    let mut maps: BTreeMap<String, Set> = BTreeMap::new();
    for fam in AddrFamily::ALL {
        for dir in DIRECTIONS {
            forward.rules.push(Rule::new(vec![Stmt::Vmap {
                key: key(dir, fam).to_vec(),
                map: SetRef::Named(map_name(dir, fam)),
            }]));
            let mut map = Set::map(map_name(dir, fam), key_types(fam), DataType::Verdict);
            map.flags.interval = true;
            maps.insert(map_name(dir, fam), map);
        }
    }
    for pod in local_pods(cluster, &ctx.node_name) {
        for (name, elems) in pod_elements(cluster, &cells, pod) {
            let map = maps.get_mut(&name).expect("every map is declared");
            map.elements.extend(elems);
        }
    }
    for map in maps.into_values() {
        t.add_set(map);
    }
    for dir in DIRECTIONS {
        for tier in TIERS {
            let mut stmts = vec![Stmt::Counter];
            if let Some(g) = ctx.log_group {
                stmts.push(Stmt::Log {
                    prefix: Some(format!("weft-policy {} {}: ", dir.as_str(), tier.as_str())),
                    group: Some(g),
                });
            }
            stmts.push(Stmt::Verdict(Verdict::Drop));
            t.add_chain(Chain::regular(deny_chain(dir, tier)).with_rule(Rule::new(stmts)));
        }
    }
    t.add_chain(forward);
    let mut rs = Ruleset::default();
    rs.add_table(t);
    rs
}

/// [`desired`] for a caller that compiles again after every batch of changes (the agent):
/// it keeps each local pod's elements and, when only policies changed since the last
/// call, recomputes only the pods a changed policy selects (before or after the change),
/// editing the previous table in place. Any change to pods, namespaces, nodes or the
/// context recomputes everything. The result always equals [`desired`]'s (tests compare
/// them after every step of the truth-table cases).
#[derive(Debug, Default)]
pub struct Incremental {
    last: Option<Last>,
    /// Local pods compiled by the last call (for figures and tests).
    pub recompiled: usize,
}

#[derive(Debug)]
struct Last {
    ctx: NodeContext,
    namespaces: BTreeMap<String, Namespace>,
    pods: BTreeMap<(String, String), Pod>,
    nodes: BTreeMap<String, Node>,
    policies: BTreeMap<PolicyId, NetPolicy>,
    /// Per local pod, the elements it put in each map.
    elements: BTreeMap<(String, String), PodElements>,
    ruleset: Ruleset,
}

impl Incremental {
    pub fn desired(&mut self, cluster: &Cluster, ctx: &NodeContext) -> Ruleset {
        let reuse = self.last.as_ref().is_some_and(|l| {
            l.ctx == *ctx
                && l.pods == cluster.pods
                && l.namespaces == cluster.namespaces
                && l.nodes == cluster.nodes
        });
        if !reuse {
            return self.full(cluster, ctx);
        }
        let last = self.last.as_mut().expect("checked");
        // The policies that differ, in their old and new versions.
        let mut changed: Vec<PolicyId> = Vec::new();
        let ids: BTreeSet<&PolicyId> = last
            .policies
            .keys()
            .chain(cluster.policies.keys())
            .collect();
        for id in ids {
            if last.policies.get(id) != cluster.policies.get(id) {
                changed.push(id.clone());
            }
        }
        self.recompiled = 0;
        if changed.is_empty() {
            return last.ruleset.clone();
        }
        let versions: Vec<&NetPolicy> = changed
            .iter()
            .flat_map(|id| [last.policies.get(id), cluster.policies.get(id)])
            .flatten()
            .collect();
        let touched: Vec<&Pod> = local_pods(cluster, &ctx.node_name)
            .filter(|pod| {
                versions.iter().any(|p| {
                    (p.ingress.is_some() || p.egress.is_some()) && selects(cluster, &p.subject, pod)
                })
            })
            .collect();
        if !touched.is_empty() {
            let cells = Cells::new(cluster);
            let table = last
                .ruleset
                .tables
                .get_mut(&(FAMILY, TABLE.to_owned()))
                .expect("the table");
            for pod in touched {
                let k = (pod.namespace.clone(), pod.name.clone());
                for (name, elems) in last.elements.remove(&k).unwrap_or_default() {
                    if let Some(set) = table.sets.get_mut(&name) {
                        let set = Arc::make_mut(set);
                        for (key, _) in elems {
                            set.elements.remove(&key);
                        }
                    }
                }
                let new = pod_elements(cluster, &cells, pod);
                for (name, elems) in &new {
                    if let Some(set) = table.sets.get_mut(name) {
                        Arc::make_mut(set).elements.extend(elems.iter().cloned());
                    }
                }
                last.elements.insert(k, new);
                self.recompiled += 1;
            }
        }
        for id in changed {
            match cluster.policies.get(&id) {
                Some(p) => last.policies.insert(id, p.clone()),
                None => last.policies.remove(&id),
            };
        }
        last.ruleset.clone()
    }

    fn full(&mut self, cluster: &Cluster, ctx: &NodeContext) -> Ruleset {
        self.last = None;
        let ruleset = desired(cluster, ctx);
        self.recompiled = local_pods(cluster, &ctx.node_name).count();
        // Per-pod elements can be taken back out of the maps only when no two local pods
        // share an address (their keys would collide); otherwise every call is a full one.
        let mut seen = BTreeSet::new();
        if !local_pods(cluster, &ctx.node_name)
            .flat_map(|p| p.ips.iter())
            .all(|ip| seen.insert(*ip))
        {
            return ruleset;
        }
        let cells = Cells::new(cluster);
        let elements = local_pods(cluster, &ctx.node_name)
            .map(|p| {
                (
                    (p.namespace.clone(), p.name.clone()),
                    pod_elements(cluster, &cells, p),
                )
            })
            .collect();
        self.last = Some(Last {
            ctx: ctx.clone(),
            namespaces: cluster.namespaces.clone(),
            pods: cluster.pods.clone(),
            nodes: cluster.nodes.clone(),
            policies: cluster.policies.clone(),
            elements,
            ruleset: ruleset.clone(),
        });
        ruleset
    }
}

/// This node's pods with their own network namespace.
pub fn local_pods<'a>(cluster: &'a Cluster, node: &'a str) -> impl Iterator<Item = &'a Pod> {
    cluster
        .pods
        .values()
        .filter(move |p| !p.host_network && p.node.as_deref() == Some(node))
}

/// One region of protocols and ports: `(protocols, ports)`, both inclusive.
type Service = ((u8, u8), PortRange);

/// A pod's elements per map name.
type PodElements = Vec<(String, Vec<(Key, Elem)>)>;

/// One pod's elements: per map name, the denied regions of each direction and family.
fn pod_elements(cluster: &Cluster, cells: &Cells, pod: &Pod) -> PodElements {
    let mut out = Vec::new();
    for fam in AddrFamily::ALL {
        for dir in DIRECTIONS {
            let elems = pod_map_elements(cluster, cells, dir, fam, pod);
            if !elems.is_empty() {
                out.push((map_name(dir, fam), elems));
            }
        }
    }
    out
}

/// Everything [`decide`] reads of the other end, for one pod and direction: whether it is
/// the pod itself or the pod's node, whether each applicable rule's peers hold it, and
/// (egress) its named ports. Peers of one kind get the same answers on every port, so
/// the matcher is asked once per kind rather than once per peer region.
#[derive(PartialEq, Eq, Hash)]
struct PeerKind<'a> {
    loopback: bool,
    own_node: bool,
    rules: Vec<bool>,
    ports: Option<&'a [ContainerPort]>,
}

/// The denied regions for one pod and direction, merged.
fn pod_map_elements(
    cluster: &Cluster,
    cells: &Cells,
    dir: Direction,
    fam: AddrFamily,
    pod: &Pod,
) -> Vec<(Key, Elem)> {
    let mut out = Vec::new();
    let addrs: Vec<u128> = pod
        .ips
        .iter()
        .map(AddrFamily::of)
        .filter(|(f, _)| *f == fam)
        .map(|(_, a)| a)
        .collect();
    if addrs.is_empty() {
        return out;
    }
    let a = Applicable::new(cluster, dir, pod);
    if a.is_empty() {
        return out;
    }
    let rules: Vec<&crate::model::Rule> = a
        .all()
        .flat_map(|p| p.rules(dir).unwrap_or_default())
        .collect();
    let mut memo: HashMap<PeerKind, Vec<(Service, Tier)>> = HashMap::new();
    // Per peer region: the denied (service region, tier) list, merged along ports.
    let mut rows: Vec<(AddrRange, Vec<(Service, Tier)>)> = Vec::new();
    for (range, remote) in &cells.peers[&fam] {
        let kind = PeerKind {
            loopback: remote.pod.is_some_and(|r| std::ptr::eq(r, pod)),
            own_node: remote
                .node
                .is_some_and(|n| pod.node.as_deref() == Some(n.name.as_str())),
            rules: rules
                .iter()
                .map(|r| rule_peers_match(cluster, dir, pod, *remote, r))
                .collect(),
            ports: match dir {
                Direction::Egress => remote.pod.map(|p| p.ports.as_slice()),
                Direction::Ingress => None,
            },
        };
        let row = memo
            .entry(kind)
            .or_insert_with(|| peer_row(cluster, cells, &a, *remote));
        match rows.last_mut() {
            Some(((_, end), prev)) if prev == row && end.checked_add(1) == Some(range.0) => {
                *end = range.1
            }
            _ => rows.push((*range, row.clone())),
        }
    }
    for addr in addrs {
        for ((plo, phi), row) in &rows {
            for (((qlo, qhi), (lo, hi)), tier) in row {
                let start = vec![
                    addr_value(fam, addr),
                    addr_value(fam, *plo),
                    Value::Proto(*qlo),
                    Value::Port(*lo),
                ];
                let end = vec![
                    addr_value(fam, addr),
                    addr_value(fam, *phi),
                    Value::Proto(*qhi),
                    Value::Port(*hi),
                ];
                let goto = Verdict::Goto(deny_chain(dir, *tier));
                out.push((
                    Key(start),
                    Elem {
                        end: Some(Key(end)),
                        data: Some(weft_nft::ElemData::Verdict(goto)),
                        timeout: None,
                    },
                ));
            }
        }
    }
    out
}

/// The denied (service region, tier) list for one peer, merged along ports.
fn peer_row(
    cluster: &Cluster,
    cells: &Cells,
    a: &Applicable,
    remote: Remote,
) -> Vec<(Service, Tier)> {
    let mut row: Vec<(Service, Tier)> = Vec::new();
    for proto in PORT_PROTOCOLS {
        let n = proto.number();
        for &(lo, hi) in &cells.ports[&proto] {
            let v = decide(cluster, a, remote, lo, proto);
            if let Some(tier) = v.denying_tier() {
                match row.last_mut() {
                    Some((((p, _), (_, end)), t))
                        if *p == n && *t == tier && end.checked_add(1) == Some(lo) =>
                    {
                        *end = hi
                    }
                    _ => row.push((((n, n), (lo, hi)), tier)),
                }
            }
        }
    }
    if let Some(tier) = decide(cluster, a, remote, 0, Protocol::Other(1)).denying_tier() {
        for p in OTHER_PROTOCOLS {
            row.push(((p, (0, u16::MAX)), tier));
        }
    }
    merge_protocols(row)
}

/// Joins neighbouring protocols denied on every port by the same tier, so a peer denied
/// everything is one element rather than seven.
fn merge_protocols(mut row: Vec<(Service, Tier)>) -> Vec<(Service, Tier)> {
    const ALL_PORTS: PortRange = (0, u16::MAX);
    row.sort();
    let mut out: Vec<(Service, Tier)> = Vec::with_capacity(row.len());
    for (((lo, hi), ports), tier) in row {
        match out.last_mut() {
            Some((((_, phi), pports), ptier))
                if ports == ALL_PORTS
                    && *pports == ALL_PORTS
                    && *ptier == tier
                    && phi.checked_add(1) == Some(lo) =>
            {
                *phi = hi
            }
            _ => out.push((((lo, hi), ports), tier)),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocols_denied_on_every_port_join() {
        let all = (0, u16::MAX);
        let row = vec![
            (((6, 6), all), Tier::NetworkPolicy),
            (((17, 17), (0, 79)), Tier::NetworkPolicy),
            (((0, 5), all), Tier::NetworkPolicy),
            (((7, 16), all), Tier::NetworkPolicy),
        ];
        assert_eq!(
            merge_protocols(row),
            vec![
                (((0, 16), all), Tier::NetworkPolicy),
                (((17, 17), (0, 79)), Tier::NetworkPolicy),
            ]
        );
    }
}
