//! The pure half of enforcement: the cluster view in, the node's `inet weft-policy` table
//! out. Policy is data: the chains are the same whatever the number of pods and policies,
//! and what policies, pods and labels decide lives in maps keyed by *classes*
//! ([`crate::classes`]): local pods that the same policies select share a subject class,
//! peer addresses that every rule treats alike share a peer class, and the distinct
//! answers (rows: denials over protocols and ports) are few.
//!
//! ```text
//! table inet weft-policy
//!   map egress-subject4 { ipv4_addr : mark }             local pod -> subject class
//!   map egress-peer4    { ipv4_addr : mark; interval }   any address -> peer class
//!   map egress-pairs    { mark . mark : mark }           subject . peer class -> row,
//!                                                          where it is not the default
//!   map egress-default  { mark : mark }                  subject class -> its usual row
//!   map egress          { mark . inet_proto . inet_service : verdict; interval }
//!                         row . protocols . ports : goto egress-<tier> | return
//!   ingress-*: the same, with ip daddr the subject; *6: IPv6 addresses
//!                         (counter: each element counts its rule's denials)
//!   set egress-isolated { mark; counter }                subject class isolated by
//!                                                          NetworkPolicies: its denials
//!   set loopback4 { ipv4_addr . ipv4_addr }              a local pod to itself
//!   chain forward { type filter hook forward priority filter; policy accept
//!     ct state established,related accept
//!     ip saddr . ip daddr @loopback4 accept;  ip6 ... @loopback6 accept
//!     jump egress;  jump ingress
//!   }
//!   set egress-fqdn4 { ipv4_addr . ipv4_addr . inet_proto . inet_service; interval,
//!                      timeout }             pod . address . ports granted by DNS answers
//!   chain egress {
//!     ip saddr . ip daddr . meta l4proto . th dport @egress-fqdn4 return  (and IPv6)
//!     meta mark & 0x4000 == 0x4000 meta mark set ip saddr map @egress-subject4
//!       meta mark set meta mark | 0x4000 ct mark set ip daddr map @egress-peer4
//!       ct mark set meta mark & SUBJECT . ct mark map @egress-pairs
//!       ct mark . meta l4proto . th dport vmap @egress
//!     meta mark & 0x4000 == 0 ...the same, without restoring the bit...
//!     meta mark & 0x4000 == 0x4000 meta mark set ip saddr map @egress-subject4
//!       meta mark set meta mark | 0x4000 ct mark set meta mark & SUBJECT map @egress-default
//!       ct mark . meta l4proto . th dport vmap @egress
//!     ...and without the bit; then IPv6
//!   }
//!   chain ingress { the same for the server }
//!   chain egress-netpol { meta mark & SUBJECT @egress-isolated; counter [log ...] drop }
//!   chain egress-admin / egress-baseline / ... { counter [log ...] drop }
//! ```
//!
//! A row's elements cover every protocol and port (`return` where it allows), so a pair
//! found in `pairs` is decided there and never reaches the default. The maps keyed by
//! classes are exact (hash) maps, which the kernel fills and changes in constant time per
//! element; only the row map is an interval map, and it holds a few elements per distinct
//! row (tens, whatever the number of pods). Elements grow with pods + classes + the pairs
//! that differ from their subject's default.
//!
//! **Why the packet mark and the conntrack mark.** A lookup needs two class ids at once.
//! nf_tables could hold them in registers (a map lookup into a register, then a
//! concatenation), but nft 1.0.6 (Debian 12) aborts listing such a rule
//! (`netlink_parse_concat_expr: Assertion consumed > 0`: a map result in a concatenation
//! has no length when nft reads it back), and the table must stay readable with `nft list`.
//! So the subject class goes into the packet mark and the peer class, then the row, into
//! the conntrack mark, both read by ordinary concatenations. weft-proxy's masquerade bit
//! (0x4000, set in prerouting, read in postrouting) survives: each rule is written twice,
//! and the copy for marked packets sets the bit again; keys mask the mark to the class
//! bits. Other bits of the packet mark, and the conntrack mark, of a new forwarded
//! connection of a local pod that policies select are overwritten; nothing in weft reads
//! them. A subject lookup that misses (no policy selects the pod) ends the rule before
//! anything is written.
//!
//! The rows are the answers of [`crate::matcher::decide`] for one member of each class
//! pair over the port regions of [`crate::cells::Cells`]: the compiler does not restate a
//! single policy rule. Subjects are only this node's pods, so each node checks the egress
//! of its clients and the ingress of its servers.
//!
//! Why the forward hook alone: pod traffic crosses it both when routed and when bridged
//! on `cbr0` (the agent sets `bridge-nf-call-iptables`), after prerouting's Service DNAT,
//! so addresses are real pod addresses. Traffic between a pod and its own node (input and
//! output hooks) is always allowed by the API; a node's traffic to a pod elsewhere is
//! checked by that pod's node, in its forward hook.

use weft_nft::{
    BaseChain, Chain, ChainType, CmpOp, CtStates, DataType, Elem, ElemData, Family, Hook, Key,
    KeyField, KeyType, Policy, Rule, Ruleset, Selector, Set, SetRef, Stmt, Table, Value, Verdict,
};

use crate::cells::AddrFamily;
use crate::cells::PortRange;
use crate::compile::{regions, Compiled, Direction2, SubjectClass};
use crate::model::{Direction, Tier};
use crate::rows::{Denial, Service};
use crate::view::{Cluster, Pod};

pub use crate::delta::{Delta, SetChange, Update};
pub use crate::incremental::Incremental;

pub const TABLE: &str = "weft-policy";
pub const FAMILY: Family = Family::Inet;
pub const FORWARD: &str = "forward";
/// weft-proxy's masquerade bit in the packet mark, which policy must leave as it was.
pub const MASQ_BIT: u32 = 0x4000;

/// What the table depends on besides the cluster view.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeContext {
    /// Pods of this node are subjects.
    pub node_name: String,
    /// Log denied packets to this nflog group, prefixed with direction and tier.
    pub log_group: Option<u16>,
}

pub const DIRECTIONS: [Direction; 2] = [Direction::Egress, Direction::Ingress];
pub const TIERS: [Tier; 3] = [Tier::Admin, Tier::NetworkPolicy, Tier::Baseline];

/// The verdict map of a direction.
pub fn verdict_map(dir: Direction) -> String {
    dir.as_str().to_owned()
}

fn fam_suffix(fam: AddrFamily) -> &'static str {
    match fam {
        AddrFamily::V4 => "4",
        AddrFamily::V6 => "6",
    }
}

/// Local pod address -> subject class mark.
pub fn subject_map(dir: Direction, fam: AddrFamily) -> String {
    format!("{}-subject{}", dir.as_str(), fam_suffix(fam))
}

/// Whether `table` (a node's compiled policy table) selects none of the node's pods: every
/// subject map is empty, so each direction's first lookup misses and the table drops
/// nothing. The agent skips the conntrack walk for flows to cut in that case (a burst of pod
/// start-ups with no policy would otherwise walk the whole conntrack table each batch).
pub fn selects_no_pod(table: &Table) -> bool {
    DIRECTIONS
        .into_iter()
        .flat_map(|dir| AddrFamily::ALL.map(|fam| subject_map(dir, fam)))
        .all(|name| table.sets.get(&name).is_none_or(|s| s.elements.is_empty()))
}

/// Any address -> peer class (conntrack mark).
pub fn peer_map(dir: Direction, fam: AddrFamily) -> String {
    format!("{}-peer{}", dir.as_str(), fam_suffix(fam))
}

/// Subject class . peer class -> row, for pairs whose row is not the subject's default.
pub fn pairs_map(dir: Direction) -> String {
    format!("{}-pairs", dir.as_str())
}

/// Subject class -> the row most of its peers get.
pub fn default_map(dir: Direction) -> String {
    format!("{}-default", dir.as_str())
}

/// Subject class -> nothing, counting: the NetworkPolicy deny chain looks the subject
/// class up here, so each element's counter holds the denials of one subject class by
/// the NetworkPolicies that isolate it ([`crate::counters`]).
pub fn isolated_set_name(dir: Direction) -> String {
    format!("{}-isolated", dir.as_str())
}

pub fn loopback_set(fam: AddrFamily) -> String {
    format!("loopback{}", fam_suffix(fam))
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

/// The bits of the packet mark that hold the subject class: three bytes, leaving out the
/// byte that holds [`MASQ_BIT`] (the mark is host order: the value's bytes as the kernel
/// stores them).
pub fn subject_mask() -> u32 {
    u32::from_ne_bytes([0xff, 0x00, 0xff, 0xff])
}

/// The packet mark for subject class `id` (up to 2^24 classes; a node has far fewer pods).
pub fn subject_mark(id: u32) -> u32 {
    let b = id.to_be_bytes();
    u32::from_ne_bytes([b[1], 0, b[2], b[3]])
}

/// The selectors of a direction: (subject address, peer address).
pub fn addrs(dir: Direction, fam: AddrFamily) -> (Selector, Selector) {
    let (saddr, daddr) = match fam {
        AddrFamily::V4 => (Selector::IpSaddr, Selector::IpDaddr),
        AddrFamily::V6 => (Selector::Ip6Saddr, Selector::Ip6Daddr),
    };
    match dir {
        Direction::Egress => (saddr, daddr),
        Direction::Ingress => (daddr, saddr),
    }
}

fn addr_type(fam: AddrFamily) -> KeyType {
    match fam {
        AddrFamily::V4 => KeyType::Ipv4Addr,
        AddrFamily::V6 => KeyType::Ipv6Addr,
    }
}

pub fn addr_value(fam: AddrFamily, n: u128) -> Value {
    match fam.ip(n) {
        std::net::IpAddr::V4(a) => Value::Ipv4(a),
        std::net::IpAddr::V6(a) => Value::Ipv6(a),
    }
}

/// The node's policy table.
pub fn desired(cluster: &Cluster, ctx: &NodeContext) -> Ruleset {
    table(&Compiled::new(cluster, ctx, None), ctx)
}

/// The rules of one direction and family for packets with or without the masquerade bit:
/// classify both ends, then decide by the pair's row or, for a pair not in `pairs`, by the
/// subject's default row.
fn decide_rules(dir: Direction, fam: AddrFamily, masq: bool) -> [Rule; 2] {
    let (subject, peer) = addrs(dir, fam);
    let classify = || {
        let mut stmts = vec![
            Stmt::MarkMatch {
                ct: false,
                mask: MASQ_BIT,
                value: if masq { MASQ_BIT } else { 0 },
                op: CmpOp::Eq,
            },
            Stmt::MarkSetMap {
                ct: false,
                key: vec![KeyField::load(subject)],
                map: subject_map(dir, fam),
            },
        ];
        if masq {
            stmts.push(Stmt::MarkOr {
                ct: false,
                bits: MASQ_BIT,
            });
        }
        stmts
    };
    let subject_class = KeyField::masked(Selector::MetaMark, subject_mask());
    let by_row = Stmt::VmapMasked {
        key: vec![
            KeyField::load(Selector::CtMark),
            KeyField::load(Selector::MetaL4proto),
            KeyField::load(Selector::ThDport),
        ],
        map: verdict_map(dir),
    };
    let mut pair = classify();
    pair.push(Stmt::MarkSetMap {
        ct: true,
        key: vec![KeyField::load(peer)],
        map: peer_map(dir, fam),
    });
    pair.push(Stmt::MarkSetMap {
        ct: true,
        key: vec![subject_class, KeyField::load(Selector::CtMark)],
        map: pairs_map(dir),
    });
    pair.push(by_row.clone());
    let mut default = classify();
    default.push(Stmt::MarkSetMap {
        ct: true,
        key: vec![subject_class],
        map: default_map(dir),
    });
    default.push(by_row);
    [Rule::new(pair), Rule::new(default)]
}

/// Assembles the table from compiled classes.
pub(crate) fn table(c: &Compiled, ctx: &NodeContext) -> Ruleset {
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
    for fam in AddrFamily::ALL {
        let (s, d) = addrs(Direction::Egress, fam);
        forward.rules.push(Rule::new(vec![
            Stmt::Lookup {
                key: vec![s, d],
                set: SetRef::Named(loopback_set(fam)),
                negate: false,
            },
            Stmt::Verdict(Verdict::Accept),
        ]));
        let mut lo = Set::new(loopback_set(fam), vec![addr_type(fam); 2]);
        for pod in &c.local {
            for a in pod_addrs(pod, fam) {
                lo.insert(vec![a.clone(), a], Elem::default());
            }
        }
        t.add_set(lo);
    }
    for dir in DIRECTIONS {
        forward
            .rules
            .push(Rule::new(vec![Stmt::jump(dir.as_str())]));
        let mut chain = Chain::regular(dir.as_str());
        if dir == Direction::Egress {
            // Grants from DNS answers (`domainNames` peers) first: the Enforcer adds their
            // elements, the compiled table has none.
            for fam in AddrFamily::ALL {
                chain.rules.push(crate::fqdn::rule(fam));
                t.add_set(crate::fqdn::set(fam));
            }
        }
        for fam in AddrFamily::ALL {
            for masq in [true, false] {
                let [pair, default] = decide_rules(dir, fam, masq);
                chain.rules.push(pair);
                chain.rules.push(default);
            }
        }
        t.add_chain(chain);
        for set in direction_sets(c.dir(dir), dir) {
            t.add_set(set);
        }
    }
    for dir in DIRECTIONS {
        for tier in TIERS {
            let mut chain = Chain::regular(deny_chain(dir, tier));
            if tier == Tier::NetworkPolicy {
                // Counts the packet against its subject class; the element is always
                // there (a class NetworkPolicies isolate), the rule has no verdict anyway.
                chain.rules.push(Rule::new(vec![Stmt::LookupMasked {
                    key: vec![KeyField::masked(Selector::MetaMark, subject_mask())],
                    set: isolated_set_name(dir),
                }]));
            }
            let mut stmts = vec![Stmt::Counter];
            if let Some(g) = ctx.log_group {
                stmts.push(Stmt::Log {
                    prefix: Some(crate::nflog::prefix(dir, tier)),
                    group: Some(g),
                });
            }
            stmts.push(Stmt::Verdict(Verdict::Drop));
            t.add_chain(chain.with_rule(Rule::new(stmts)));
        }
    }
    t.add_chain(forward);
    let mut rs = Ruleset::default();
    rs.add_table(t);
    rs
}

fn mark_map(name: String, key: usize) -> Set {
    Set::map(
        name,
        vec![KeyType::Mark; key],
        DataType::Value(vec![KeyType::Mark]),
    )
}

/// The maps of one direction.
fn direction_sets(d: &Direction2, dir: Direction) -> Vec<Set> {
    let mut out = Vec::new();
    for fam in AddrFamily::ALL {
        out.push(subject_set(d, dir, fam));
        out.push(peer_set(d, dir, fam));
    }
    let (pairs, defaults) = pair_sets(d, dir);
    out.push(pairs);
    out.push(defaults);
    out.push(row_set(d, dir));
    out.push(isolated_set(d, dir));
    out
}

pub(crate) fn isolated_set(d: &Direction2, dir: Direction) -> Set {
    let mut s = Set::new(isolated_set_name(dir), vec![KeyType::Mark]);
    s.flags.counter = true;
    for sid in d.isolating.keys() {
        s.insert(vec![Value::Mark(subject_mark(*sid))], Elem::default());
    }
    s
}

pub(crate) fn subject_set(d: &Direction2, dir: Direction, fam: AddrFamily) -> Set {
    let mut subjects = Set::map(
        subject_map(dir, fam),
        vec![addr_type(fam)],
        DataType::Value(vec![KeyType::Mark]),
    );
    for (pod, id) in &d.subjects {
        for a in pod_addrs(pod, fam) {
            subjects.insert(vec![a], Elem::value(vec![Value::Mark(subject_mark(*id))]));
        }
    }
    subjects
}

pub(crate) fn peer_set(d: &Direction2, dir: Direction, fam: AddrFamily) -> Set {
    let mut peers = Set::map(
        peer_map(dir, fam),
        vec![addr_type(fam)],
        DataType::Value(vec![KeyType::Mark]),
    );
    peers.flags.interval = true;
    for ((lo, hi), id) in regions(&d.peers, fam) {
        // A one-address range is a plain element, as the kernel reports it back.
        let end = (lo != hi).then(|| Key(vec![addr_value(fam, *hi)]));
        peers.insert(
            vec![addr_value(fam, *lo)],
            Elem {
                end,
                data: Some(ElemData::Value(vec![Value::Mark(*id)])),
                timeout: None,
            },
        );
    }
    peers
}

/// The `pairs` and `default` elements of one subject class.
pub(crate) fn class_elements(sid: u32, class: &SubjectClass) -> [Vec<(Key, Elem)>; 2] {
    let s = Value::Mark(subject_mark(sid));
    let pairs = class
        .pairs
        .iter()
        .map(|(pid, r)| {
            (
                Key(vec![s.clone(), Value::Mark(*pid)]),
                Elem::value(vec![Value::Mark(*r)]),
            )
        })
        .collect();
    let default = class
        .default
        .iter()
        .map(|r| (Key(vec![s.clone()]), Elem::value(vec![Value::Mark(*r)])))
        .collect();
    [pairs, default]
}

pub(crate) fn pair_sets(d: &Direction2, dir: Direction) -> (Set, Set) {
    let mut pairs = mark_map(pairs_map(dir), 2);
    let mut defaults = mark_map(default_map(dir), 1);
    for (sid, class) in &d.classes {
        let [p, def] = class_elements(*sid, class);
        pairs.elements.extend(p);
        defaults.elements.extend(def);
    }
    (pairs, defaults)
}

pub(crate) fn row_set(d: &Direction2, dir: Direction) -> Set {
    let mut rows = Set::map(
        verdict_map(dir),
        vec![KeyType::Mark, KeyType::InetProto, KeyType::InetService],
        DataType::Verdict,
    );
    rows.flags.interval = true;
    // Each element denies for one rule (or isolation) or allows: its counter is that
    // rule's denials by this row ([`crate::counters`]).
    rows.flags.counter = true;
    for (id, row) in &d.rows {
        rows.elements.extend(row_elements(dir, *id, row));
    }
    rows
}

/// A row's elements: its denials, and `return` for the rest, so every protocol and port
/// of the row is decided (a pair's row must not fall through to the subject's default).
pub(crate) fn row_elements(dir: Direction, id: u32, row: &[(Service, Denial)]) -> Vec<(Key, Elem)> {
    // Per protocol number: its port ranges with their denials, covering every port.
    // Protocols join only where the denials agree (not just the chains), so each element
    // counts for one rule.
    let mut per_proto: Vec<Vec<(PortRange, Option<&Denial>)>> = Vec::with_capacity(256);
    for proto in 0..=255u8 {
        let mut denied: Vec<(PortRange, &Denial)> = row
            .iter()
            .filter(|(((lo, hi), _), _)| *lo <= proto && proto <= *hi)
            .map(|((_, ports), denial)| (*ports, denial))
            .collect();
        denied.sort();
        let mut out = Vec::new();
        let mut next: u32 = 0;
        for ((lo, hi), denial) in denied {
            if u32::from(lo) > next {
                out.push(((next as u16, lo - 1), None));
            }
            out.push(((lo, hi), Some(denial)));
            next = u32::from(hi) + 1;
        }
        if next <= u32::from(u16::MAX) {
            out.push(((next as u16, u16::MAX), None));
        }
        per_proto.push(out);
    }
    let r = Value::Mark(id);
    let mut out = Vec::new();
    let mut start = 0usize;
    while start < per_proto.len() {
        let mut end = start;
        while end + 1 < per_proto.len() && per_proto[end + 1] == per_proto[start] {
            end += 1;
        }
        for ((lo, hi), denial) in &per_proto[start] {
            let v = match denial {
                Some(d) => Verdict::Goto(deny_chain(dir, d.tier)),
                None => Verdict::Return,
            };
            out.push((
                Key(vec![r.clone(), Value::Proto(start as u8), Value::Port(*lo)]),
                Elem {
                    end: Some(Key(vec![
                        r.clone(),
                        Value::Proto(end as u8),
                        Value::Port(*hi),
                    ])),
                    data: Some(ElemData::Verdict(v)),
                    timeout: None,
                },
            ));
        }
        start = end + 1;
    }
    out
}

fn pod_addrs(pod: &Pod, fam: AddrFamily) -> Vec<Value> {
    pod.ips
        .iter()
        .map(AddrFamily::of)
        .filter(|(f, _)| *f == fam)
        .map(|(f, a)| addr_value(f, a))
        .collect()
}

/// This node's pods with their own network namespace.
pub fn local_pods<'a>(cluster: &'a Cluster, node: &'a str) -> impl Iterator<Item = &'a Pod> {
    cluster
        .pods
        .values()
        .filter(move |p| !p.host_network && p.node.as_deref() == Some(node))
}
