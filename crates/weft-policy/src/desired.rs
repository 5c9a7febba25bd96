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

use weft_nft::{
    BaseChain, Chain, ChainType, CtStates, DataType, Elem, Family, Hook, Key, KeyType, Policy,
    Rule, Ruleset, Selector, Set, SetRef, Stmt, Table, Value, Verdict,
};

use crate::cells::{AddrFamily, AddrRange, Cells, PortRange, OTHER_PROTOCOLS, PORT_PROTOCOLS};
use crate::matcher::{decide, Applicable};
use crate::model::{Direction, Protocol, Tier};
use crate::view::{Cluster, Pod};

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
    for fam in AddrFamily::ALL {
        for dir in DIRECTIONS {
            forward.rules.push(Rule::new(vec![Stmt::Vmap {
                key: key(dir, fam).to_vec(),
                map: SetRef::Named(map_name(dir, fam)),
            }]));
            let mut map = Set::map(map_name(dir, fam), key_types(fam), DataType::Verdict);
            map.flags.interval = true;
            for pod in local_pods(cluster, &ctx.node_name) {
                add_pod(&mut map, cluster, &cells, dir, fam, pod);
            }
            t.add_set(map);
        }
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

/// This node's pods with their own network namespace.
pub fn local_pods<'a>(cluster: &'a Cluster, node: &'a str) -> impl Iterator<Item = &'a Pod> {
    cluster
        .pods
        .values()
        .filter(move |p| !p.host_network && p.node.as_deref() == Some(node))
}

/// One region of protocols and ports: `(protocols, ports)`, both inclusive.
type Service = ((u8, u8), PortRange);

/// The denied regions for one pod and direction, merged.
fn add_pod(
    map: &mut Set,
    cluster: &Cluster,
    cells: &Cells,
    dir: Direction,
    fam: AddrFamily,
    pod: &Pod,
) {
    let addrs: Vec<u128> = pod
        .ips
        .iter()
        .map(AddrFamily::of)
        .filter(|(f, _)| *f == fam)
        .map(|(_, a)| a)
        .collect();
    if addrs.is_empty() {
        return;
    }
    let a = Applicable::new(cluster, dir, pod);
    if a.is_empty() {
        return;
    }
    // Per peer region: the denied (service region, tier) list, merged along ports.
    let mut rows: Vec<(AddrRange, Vec<(Service, Tier)>)> = Vec::new();
    for (range, remote) in &cells.peers[&fam] {
        let mut row: Vec<(Service, Tier)> = Vec::new();
        for proto in PORT_PROTOCOLS {
            let n = proto.number();
            for &(lo, hi) in &cells.ports[&proto] {
                let v = decide(cluster, &a, *remote, lo, proto);
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
        if let Some(tier) = decide(cluster, &a, *remote, 0, Protocol::Other(1)).denying_tier() {
            for p in OTHER_PROTOCOLS {
                row.push(((p, (0, u16::MAX)), tier));
            }
        }
        let row = merge_protocols(row);
        match rows.last_mut() {
            Some(((_, end), prev)) if *prev == row && end.checked_add(1) == Some(range.0) => {
                *end = range.1
            }
            _ => rows.push((*range, row)),
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
                map.elements.insert(
                    Key(start),
                    Elem {
                        end: Some(Key(end)),
                        data: Some(weft_nft::ElemData::Verdict(goto)),
                        timeout: None,
                    },
                );
            }
        }
    }
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
