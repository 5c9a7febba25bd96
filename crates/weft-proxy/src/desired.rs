//! The pure half of the proxy: Service ports and their endpoints in, the desired
//! `ip weft-proxy` table out.
//!
//! ```text
//! filter-prerouting / filter-output (before DNAT):
//!     daddr.proto.dport @firewall, daddr.proto.dport.saddr not @firewall-allow  drop
//!     daddr.proto.dport @no-endpoints reject         (none at all: connection refused)
//!     daddr.proto.dport @no-local-endpoints drop     (Local policy, none on this node)
//!     daddr @cluster-ip-addrs, daddr.proto.dport not @cluster-ips  reject  (no such port)
//!     (all for new connections only)
//!     same for node ports, keyed proto.dport, on local addresses
//! nat-prerouting / nat-output: jump services
//! services:
//!     daddr.proto.dport @cluster-ips, saddr outside the cluster CIDR -> mark for masquerade
//!     daddr.proto.dport @masq -> mark               (external traffic, Cluster policy)
//!     remembered clients (sessionAffinity, see affinity.rs)
//!     daddr.proto.dport @endpoints-tcp-nK  dnat to daddr.proto.dport.(numgen mod K) map @backends
//!     fib daddr local, not 127/8 -> jump nodeports (the same, keyed proto.dport)
//! nat-postrouting: marked -> masquerade; saddr.daddr @hairpin -> masquerade
//! ```
//! One `endpoints-<proto>-nK` set and rule per protocol and endpoint count K in use:
//! `numgen mod K` then picks each endpoint with exactly 1/K, with no chain per service or
//! endpoint. Which of those sets exist is the table's only moving structure; everything a
//! Service adds is elements ([`crate::contribution`]).

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use weft_nft::{
    BaseChain, Chain, ChainType, CmpOp, CtStates, DataType, Family, Hook, Key, KeyType, Policy,
    Reject, Rhs, Rule, Ruleset, Selector, Set, SetRef, Stmt, Table, Value, Verdict,
};

use crate::affinity;
use crate::contribution::contributions;
use crate::endpoint::Endpoints;
use crate::service::{Protocol, ServicePort};

pub const TABLE: &str = "weft-proxy";
/// The packet mark asking nat-postrouting to masquerade (kube-proxy uses the same bit).
pub const MASQ_MARK: u32 = 0x4000;

/// What the rules depend on besides Services and endpoints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeContext {
    /// This node's name, for the Local traffic policies.
    pub node_name: String,
    /// Pod addresses: cluster-IP traffic from anywhere else is masqueraded so replies
    /// come back through this node.
    pub cluster_cidr: Option<Ipv4Net>,
}

/// Every map of service keys to endpoints: where an endpoint change shows.
pub const BACKEND_MAPS: [&str; 4] = [
    "backends",
    "nodeport-backends",
    "from-pods-backends",
    "nodeport-from-pods-backends",
];

pub const ADDR_KEY: [Selector; 3] = [Selector::IpDaddr, Selector::MetaL4proto, Selector::ThDport];
pub const PORT_KEY: [Selector; 2] = [Selector::MetaL4proto, Selector::ThDport];

/// A set that exists while it has elements, each read by a rule of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Dynamic {
    /// Service keys of one protocol with `count` endpoints. `from_pods`: the cluster-wide
    /// endpoints of an external address (or node port) with Local policy, which pods of the
    /// cluster and the node itself reach as if it were a cluster IP (kube-proxy's
    /// short-circuit: the policy is about clients from outside).
    Endpoints {
        nodeport: bool,
        from_pods: bool,
        proto: Protocol,
        count: u32,
    },
    /// Service keys of one protocol whose affinity lasts `secs`.
    Affinity {
        nodeport: bool,
        proto: Protocol,
        secs: u64,
    },
}

impl Dynamic {
    pub fn nodeport(&self) -> bool {
        match self {
            Dynamic::Endpoints { nodeport, .. } | Dynamic::Affinity { nodeport, .. } => *nodeport,
        }
    }

    pub fn name(&self) -> String {
        let prefix = if self.nodeport() { "nodeport-" } else { "" };
        match self {
            Dynamic::Endpoints {
                proto,
                count,
                from_pods,
                ..
            } => {
                let pods = if *from_pods { "from-pods-" } else { "" };
                format!("{prefix}{pods}endpoints-{}-n{count}", proto.name())
            }
            Dynamic::Affinity { proto, secs, .. } => {
                format!("{prefix}affinity-{}-t{secs}", proto.name())
            }
        }
    }

    pub fn from_pods(&self) -> bool {
        matches!(
            self,
            Dynamic::Endpoints {
                from_pods: true,
                ..
            }
        )
    }

    pub fn key(&self) -> &'static [Selector] {
        if self.nodeport() {
            &PORT_KEY
        } else {
            &ADDR_KEY
        }
    }
}

/// Which set an element belongs to.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SetId {
    /// A set every table has (see [`fixed_sets`]).
    Fixed(&'static str),
    Dynamic(Dynamic),
}

impl SetId {
    /// A fixed set of the address family of traffic, or of the node port one.
    pub fn fixed(nodeport: bool, name: &'static str) -> SetId {
        if !nodeport {
            return SetId::Fixed(name);
        }
        SetId::Fixed(match name {
            "no-endpoints" => "nodeport-no-endpoints",
            "no-local-endpoints" => "nodeport-no-local-endpoints",
            "backends" => "nodeport-backends",
            "from-pods-backends" => "nodeport-from-pods-backends",
            "masq" => "nodeport-masq",
            "affinity-services" => "nodeport-affinity-services",
            other => other,
        })
    }

    pub fn name(&self) -> String {
        match self {
            SetId::Fixed(n) => (*n).to_string(),
            SetId::Dynamic(d) => d.name(),
        }
    }
}

fn key_types(sel: &[Selector]) -> Vec<KeyType> {
    sel.iter().map(|s| s.key_type()).collect()
}

fn backends_map(name: &str, sel: &[Selector]) -> Set {
    let mut key = sel.to_vec();
    key.push(Selector::NumgenRandom(1));
    let mut m = Set::map(
        name,
        key_types(&key),
        DataType::Value(vec![KeyType::Ipv4Addr, KeyType::InetService]),
    );
    // numgen's integer has no fixed-size nft type: nft needs the key spelled as typeof.
    m.typeof_key = Some(key);
    m
}

/// The sets every table has, empty.
pub fn fixed_sets() -> Vec<Set> {
    let mut out = Vec::new();
    for (prefix, sel) in [("", &ADDR_KEY[..]), ("nodeport-", &PORT_KEY[..])] {
        for name in [
            "masq",
            "no-endpoints",
            "no-local-endpoints",
            "affinity-services",
        ] {
            out.push(Set::new(format!("{prefix}{name}"), key_types(sel)));
        }
        out.push(backends_map(&format!("{prefix}backends"), sel));
        out.push(backends_map(&format!("{prefix}from-pods-backends"), sel));
    }
    for name in ["cluster-ips", "firewall"] {
        out.push(Set::new(name, key_types(&ADDR_KEY)));
    }
    out.push(Set::new("cluster-ip-addrs", vec![KeyType::Ipv4Addr]));
    let mut allow = Set::new(
        "firewall-allow",
        vec![
            KeyType::Ipv4Addr,
            KeyType::InetProto,
            KeyType::InetService,
            KeyType::Ipv4Addr,
        ],
    );
    allow.flags.interval = true;
    out.push(allow);
    out.push(Set::new(
        "hairpin",
        vec![KeyType::Ipv4Addr, KeyType::Ipv4Addr],
    ));
    out.push(affinity::map());
    out
}

fn lookup(sel: &[Selector], set: &str) -> Stmt {
    Stmt::Lookup {
        key: sel.to_vec(),
        set: SetRef::Named(set.into()),
        negate: false,
    }
}

fn mark_masq() -> Stmt {
    Stmt::MarkOr {
        ct: false,
        bits: MASQ_MARK,
    }
}

fn local_not_loopback() -> [Stmt; 2] {
    [
        Stmt::FibDaddrLocal,
        Stmt::Match {
            key: Selector::IpDaddr,
            op: CmpOp::Ne,
            rhs: Rhs::Prefix(Value::Ipv4(Ipv4Addr::new(127, 0, 0, 0)), 8),
        },
    ]
}

fn base(name: &str, kind: ChainType, hook: Hook, priority: i32) -> Chain {
    Chain::base(
        name,
        BaseChain {
            kind,
            hook,
            priority,
            policy: Policy::Accept,
        },
    )
}

/// A DNAT rule per `endpoints-*` set: the protocol, so the port may come from a map.
/// `from_pods` picks the short-circuit sets (and their map), matched for pod sources only.
fn dispatch_rules<'a>(
    dynamic: impl Iterator<Item = &'a Dynamic>,
    map: &str,
    short_circuit: Option<(&[Stmt], &[Stmt])>,
) -> Vec<Rule> {
    let (matches, actions) = short_circuit.unwrap_or_default();
    dynamic
        .filter(|d| d.from_pods() == short_circuit.is_some())
        .filter_map(|d| match d {
            Dynamic::Endpoints { proto, count, .. } => {
                let mut key = d.key().to_vec();
                key.push(Selector::NumgenRandom(*count));
                let mut stmts = vec![Stmt::eq(
                    Selector::MetaL4proto,
                    Value::Proto(proto.number()),
                )];
                stmts.extend(matches.iter().cloned());
                stmts.push(lookup(d.key(), &d.name()));
                stmts.extend(actions.iter().cloned());
                stmts.push(Stmt::DnatMap {
                    key,
                    map: SetRef::Named(map.into()),
                });
                Some(Rule::new(stmts))
            }
            Dynamic::Affinity { .. } => None,
        })
        .collect()
}

fn from_pods(cidr: Ipv4Net, op: CmpOp) -> Stmt {
    Stmt::Match {
        key: Selector::IpSaddr,
        op,
        rhs: Rhs::Prefix(Value::Ipv4(cidr.network()), cidr.prefix_len()),
    }
}

/// Checked for new connections only: an established flow outlives its Service losing
/// endpoints for a moment (a failed readiness probe), as with kube-proxy.
fn filter_rules(node: &NodeContext) -> Vec<Rule> {
    let new = || Stmt::CtState(CtStates::NEW);
    // Local policy with no local endpoint drops clients from outside; pods are sent to
    // the cluster-wide endpoints instead (the services chain's from-pods rules).
    // The node itself is no outside client either (kube-proxy sends it cluster-wide too).
    let not_pods: Vec<Stmt> = node
        .cluster_cidr
        .map(|c| from_pods(c, CmpOp::Ne))
        .into_iter()
        .chain([Stmt::FibSaddrLocal(CmpOp::Ne)])
        .collect();
    let np = |set: &str, verdict: Stmt, extra: &[Stmt]| {
        let mut s = vec![new()];
        s.extend(local_not_loopback());
        s.extend(extra.iter().cloned());
        s.push(lookup(&PORT_KEY, set));
        s.push(verdict);
        Rule::new(s)
    };
    vec![
        // loadBalancerSourceRanges: other clients never reach the load balancer IP.
        Rule::new(vec![
            new(),
            lookup(&ADDR_KEY, "firewall"),
            Stmt::Lookup {
                key: vec![
                    Selector::IpDaddr,
                    Selector::MetaL4proto,
                    Selector::ThDport,
                    Selector::IpSaddr,
                ],
                set: SetRef::Named("firewall-allow".into()),
                negate: true,
            },
            Stmt::Verdict(Verdict::Drop),
        ]),
        Rule::new(vec![
            new(),
            lookup(&ADDR_KEY, "no-endpoints"),
            Stmt::Reject(Reject::PortUnreachable),
        ]),
        Rule::new(
            [new()]
                .into_iter()
                .chain(not_pods.iter().cloned())
                .chain([
                    lookup(&ADDR_KEY, "no-local-endpoints"),
                    Stmt::Verdict(Verdict::Drop),
                ])
                .collect(),
        ),
        // A cluster IP on a port no Service has: refused, not sent down the default route.
        Rule::new(vec![
            new(),
            lookup(&[Selector::IpDaddr], "cluster-ip-addrs"),
            Stmt::Lookup {
                key: ADDR_KEY.to_vec(),
                set: SetRef::Named("cluster-ips".into()),
                negate: true,
            },
            Stmt::Reject(Reject::PortUnreachable),
        ]),
        np(
            "nodeport-no-endpoints",
            Stmt::Reject(Reject::PortUnreachable),
            &[],
        ),
        np(
            "nodeport-no-local-endpoints",
            Stmt::Verdict(Verdict::Drop),
            &not_pods,
        ),
    ]
}

/// The table's chains and its sets, all empty, for the dynamic sets in use.
pub fn skeleton(dynamic: &BTreeSet<Dynamic>, node: &NodeContext) -> Table {
    let mut t = Table::new(Family::Ip, TABLE);
    for s in fixed_sets() {
        t.add_set(s);
    }
    for d in dynamic {
        t.add_set(Set::new(d.name(), key_types(d.key())));
    }
    // Refused or dropped before DNAT, so a Service without endpoints never times out.
    for (name, hook) in [
        ("filter-prerouting", Hook::Prerouting),
        ("filter-output", Hook::Output),
    ] {
        let mut c = base(name, ChainType::Filter, hook, -110);
        c.rules = filter_rules(node);
        t.add_chain(c);
    }
    for (name, hook) in [
        ("nat-prerouting", Hook::Prerouting),
        ("nat-output", Hook::Output),
    ] {
        t.add_chain(
            base(name, ChainType::Nat, hook, -100)
                .with_rule(Rule::new(vec![Stmt::jump("services")])),
        );
    }
    let (by_addr, by_port): (Vec<&Dynamic>, Vec<&Dynamic>) =
        dynamic.iter().partition(|d| !d.nodeport());

    let mut services = Chain::regular("services");
    if let Some(cidr) = node.cluster_cidr {
        services.rules.push(Rule::new(vec![
            lookup(&ADDR_KEY, "cluster-ips"),
            Stmt::Match {
                key: Selector::IpSaddr,
                op: CmpOp::Ne,
                rhs: Rhs::Prefix(Value::Ipv4(cidr.network()), cidr.prefix_len()),
            },
            mark_masq(),
        ]));
    }
    services
        .rules
        .push(Rule::new(vec![lookup(&ADDR_KEY, "masq"), mark_masq()]));
    // The short-circuit of Local external policy: pods go cluster-wide as they are; the
    // node itself too, masqueraded (its source may be the very address it targets).
    let mut inside: Vec<(Vec<Stmt>, Vec<Stmt>)> =
        vec![(vec![Stmt::FibSaddrLocal(CmpOp::Eq)], vec![mark_masq()])];
    if let Some(c) = node.cluster_cidr {
        inside.insert(0, (vec![from_pods(c, CmpOp::Eq)], vec![]));
    }
    for (m, a) in &inside {
        services.rules.extend(dispatch_rules(
            by_addr.iter().copied(),
            "from-pods-backends",
            Some((m, a)),
        ));
    }
    services
        .rules
        .extend(affinity::lookup_rules(by_addr.iter().copied()));
    services
        .rules
        .extend(dispatch_rules(by_addr.iter().copied(), "backends", None));
    let mut to_nodeports = local_not_loopback().to_vec();
    to_nodeports.push(Stmt::jump("nodeports"));
    services.rules.push(Rule::new(to_nodeports));
    t.add_chain(services);

    let mut nodeports = Chain::regular("nodeports");
    nodeports.rules.push(Rule::new(vec![
        lookup(&PORT_KEY, "nodeport-masq"),
        mark_masq(),
    ]));
    nodeports
        .rules
        .extend(affinity::lookup_rules(by_port.iter().copied()));
    for (m, a) in &inside {
        nodeports.rules.extend(dispatch_rules(
            by_port.iter().copied(),
            "nodeport-from-pods-backends",
            Some((m, a)),
        ));
    }
    nodeports.rules.extend(dispatch_rules(
        by_port.iter().copied(),
        "nodeport-backends",
        None,
    ));
    t.add_chain(nodeports);
    affinity::add_recording(&mut t, dynamic);

    t.add_chain(
        base("nat-postrouting", ChainType::Nat, Hook::Postrouting, 100)
            .with_rule(Rule::new(vec![
                Stmt::MarkMatch {
                    ct: false,
                    mask: MASQ_MARK,
                    value: MASQ_MARK,
                    op: CmpOp::Eq,
                },
                // Cleared once used, as kube-proxy does: a packet this one is encapsulated
                // in (VXLAN) must not inherit it and be masqueraded again.
                Stmt::MarkXor {
                    ct: false,
                    bits: MASQ_MARK,
                },
                Stmt::Masquerade { fully_random: true },
            ]))
            // A pod reaching itself through its Service: without the masquerade its reply
            // would go straight back to itself, from the wrong address.
            .with_rule(Rule::new(vec![
                Stmt::Lookup {
                    key: vec![Selector::IpSaddr, Selector::IpDaddr],
                    set: SetRef::Named("hairpin".into()),
                    negate: false,
                },
                Stmt::Masquerade { fully_random: true },
            ])),
    );
    t
}

/// The `ip weft-proxy` table for these Service ports and endpoints, seen from `node`.
pub fn desired(ports: &[ServicePort], eps: &Endpoints, node: &NodeContext) -> Ruleset {
    let elements: Vec<_> = ports
        .iter()
        .flat_map(|sp| contributions(sp, eps, node))
        .collect();
    let dynamic: BTreeSet<Dynamic> = elements
        .iter()
        .filter_map(|e| match e.set {
            SetId::Dynamic(d) => Some(d),
            SetId::Fixed(_) => None,
        })
        .collect();
    let mut t = skeleton(&dynamic, node);
    for e in elements {
        if let Some(set) = t.set_mut(&e.set.name()) {
            // Two Services claiming one key: the first keeps it (as the model does).
            set.elements.entry(Key(e.key)).or_insert(e.elem);
        }
    }
    let mut rs = Ruleset::default();
    rs.add_table(t);
    rs
}

#[cfg(test)]
#[path = "desired_tests.rs"]
mod tests;
