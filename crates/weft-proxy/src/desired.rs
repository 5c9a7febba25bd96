//! The pure half of the proxy: Service ports and their endpoints in, the desired
//! `ip weft-proxy` table out.
//!
//! ```text
//! filter-prerouting / filter-output (before DNAT):
//!     daddr.proto.dport @firewall, daddr.proto.dport.saddr not @firewall-allow  drop
//!     daddr.proto.dport @no-endpoints reject         (none at all: connection refused)
//!     daddr.proto.dport @no-local-endpoints drop     (Local policy, none on this node)
//!     same for node ports, keyed proto.dport, on local addresses
//! nat-prerouting / nat-output: jump services
//! services:
//!     daddr.proto.dport @cluster-ips, saddr outside the cluster CIDR -> mark for masquerade
//!     daddr.proto.dport @masq -> mark               (external traffic, Cluster policy)
//!     daddr.proto.dport @endpoints-nK  dnat to daddr.proto.dport.(numgen mod K) map @backends
//!     fib daddr local, not 127/8 -> jump nodeports (the same, keyed proto.dport)
//! nat-postrouting: marked -> masquerade; saddr.daddr @hairpin -> masquerade
//! ```
//! One `endpoints-nK` set (and a rule per protocol) per endpoint count K in use: `numgen
//! mod K` then picks each endpoint with exactly 1/K, with no chain per service or endpoint.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::time::Duration;

use ipnet::Ipv4Net;
use weft_nft::{
    BaseChain, Chain, ChainType, CmpOp, DataType, Elem, Family, Hook, KeyType, Policy, Reject, Rhs,
    Rule, Ruleset, Selector, Set, SetRef, Stmt, Table, Value,
};

use crate::affinity::{self, Affinity};
use crate::endpoint::{targets, Endpoint, Endpoints, Targets};
use crate::service::ServicePort;

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

const ADDR_KEY: [Selector; 3] = [Selector::IpDaddr, Selector::MetaL4proto, Selector::ThDport];
const PORT_KEY: [Selector; 2] = [Selector::MetaL4proto, Selector::ThDport];

/// Where one kind of traffic to one address (or node port) goes.
#[derive(Default)]
struct Dispatch {
    /// Endpoint count -> keys with that many endpoints.
    by_count: BTreeMap<usize, BTreeSet<Vec<Value>>>,
    backends: BTreeMap<Vec<Value>, Elem>,
    masq: BTreeSet<Vec<Value>>,
    reject: BTreeSet<Vec<Value>>,
    drop: BTreeSet<Vec<Value>>,
    affinity: Affinity,
}

impl Dispatch {
    fn add(&mut self, key: Vec<Value>, to: &Targets, masquerade: bool, affinity: Option<Duration>) {
        match to {
            Targets::None => {
                self.reject.insert(key);
            }
            Targets::NoneLocal => {
                self.drop.insert(key);
            }
            Targets::Some(eps) => {
                for (slot, ep) in eps.iter().enumerate() {
                    let mut k = key.clone();
                    k.push(Value::Integer(slot as u32));
                    self.backends.insert(
                        k,
                        Elem::value(vec![Value::Ipv4(ep.ip), Value::Port(ep.port)]),
                    );
                }
                if masquerade {
                    self.masq.insert(key.clone());
                }
                if let Some(timeout) = affinity {
                    self.affinity.add(key.clone(), timeout);
                }
                self.by_count.entry(eps.len()).or_default().insert(key);
            }
        }
    }
}

fn key_types(sel: &[Selector]) -> Vec<KeyType> {
    sel.iter().map(|s| s.key_type()).collect()
}

fn set_of(name: &str, sel: &[Selector], keys: &BTreeSet<Vec<Value>>) -> Set {
    let mut s = Set::new(name, key_types(sel));
    for k in keys {
        s.insert(k.clone(), Elem::default());
    }
    s
}

fn backends_map(name: &str, sel: &[Selector], elems: BTreeMap<Vec<Value>, Elem>) -> Set {
    let mut key = sel.to_vec();
    key.push(Selector::NumgenRandom(1));
    let mut m = Set::map(
        name,
        key_types(&key),
        DataType::Value(vec![KeyType::Ipv4Addr, KeyType::InetService]),
    );
    // numgen's integer has no fixed-size nft type: nft needs the key spelled as typeof.
    m.typeof_key = Some(key);
    for (k, e) in elems {
        m.insert(k, e);
    }
    m
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

/// The dispatch rules of one traffic class: a DNAT rule per endpoint count and protocol in
/// use (a port taken from a map needs the protocol known, for nft's sake).
fn dispatch_rules(d: &Dispatch, sel: &[Selector], prefix: &str, map: &str) -> Vec<Rule> {
    let proto_at = sel
        .iter()
        .position(|s| *s == Selector::MetaL4proto)
        .expect("dispatch keys carry the protocol");
    let mut out = Vec::new();
    for (k, keys) in &d.by_count {
        let protos: BTreeSet<&Value> = keys.iter().map(|key| &key[proto_at]).collect();
        for proto in protos {
            let mut key = sel.to_vec();
            key.push(Selector::NumgenRandom(*k as u32));
            out.push(Rule::new(vec![
                Stmt::eq(Selector::MetaL4proto, proto.clone()),
                lookup(sel, &format!("{prefix}endpoints-n{k}")),
                Stmt::DnatMap {
                    key,
                    map: SetRef::Named(map.into()),
                },
            ]));
        }
    }
    out
}

/// The `ip weft-proxy` table for these Service ports and endpoints, seen from `node`.
pub fn desired(ports: &[ServicePort], eps: &Endpoints, node: &NodeContext) -> Ruleset {
    let mut by_addr = Dispatch::default();
    let mut by_port = Dispatch::default();
    let mut cluster_ips = BTreeSet::new();
    let mut hairpin: BTreeSet<Ipv4Addr> = BTreeSet::new();
    let mut firewall = BTreeSet::new();
    let mut firewall_allow = Set::new(
        "firewall-allow",
        vec![
            KeyType::Ipv4Addr,
            KeyType::InetProto,
            KeyType::InetService,
            KeyType::Ipv4Addr,
        ],
    );
    firewall_allow.flags.interval = true;
    for sp in ports {
        let all: &[Endpoint] = eps.of(sp);
        hairpin.extend(all.iter().map(|e| e.ip));
        let proto = Value::Proto(sp.protocol.number());
        let port = Value::Port(sp.port);
        let internal = targets(all, sp.internal_local, &node.node_name);
        let external = targets(all, sp.external_local, &node.node_name);
        // Local external policy keeps the client's address: no masquerade.
        let masq_external = !sp.external_local;
        if let Some(ip) = sp.cluster_ip {
            let key = vec![Value::Ipv4(ip), proto.clone(), port.clone()];
            cluster_ips.insert(key.clone());
            by_addr.add(key, &internal, false, sp.affinity);
        }
        for ip in &sp.external_ips {
            let key = vec![Value::Ipv4(*ip), proto.clone(), port.clone()];
            by_addr.add(key, &external, masq_external, sp.affinity);
        }
        if !sp.source_ranges.is_empty() {
            for ip in &sp.load_balancer_ips {
                let key = vec![Value::Ipv4(*ip), proto.clone(), port.clone()];
                for r in &sp.source_ranges {
                    let mut from = key.clone();
                    from.push(Value::Ipv4(r.network()));
                    let mut to = key.clone();
                    to.push(Value::Ipv4(r.broadcast()));
                    firewall_allow.insert(from, Elem::interval(to));
                }
                firewall.insert(key);
            }
        }
        if let Some(np) = sp.node_port {
            by_port.add(
                vec![proto.clone(), Value::Port(np)],
                &external,
                masq_external,
                sp.affinity,
            );
        }
    }

    let mut t = Table::new(Family::Ip, TABLE);
    for (prefix, sel, d) in [
        ("", &ADDR_KEY[..], &mut by_addr),
        ("nodeport-", &PORT_KEY[..], &mut by_port),
    ] {
        for (k, keys) in &d.by_count {
            t.add_set(set_of(&format!("{prefix}endpoints-n{k}"), sel, keys));
        }
        t.add_set(set_of(&format!("{prefix}masq"), sel, &d.masq));
        t.add_set(set_of(&format!("{prefix}no-endpoints"), sel, &d.reject));
        t.add_set(set_of(&format!("{prefix}no-local-endpoints"), sel, &d.drop));
        t.add_set(backends_map(
            &format!("{prefix}backends"),
            sel,
            std::mem::take(&mut d.backends),
        ));
    }
    t.add_set(set_of("cluster-ips", &ADDR_KEY, &cluster_ips));
    t.add_set(set_of("firewall", &ADDR_KEY, &firewall));
    t.add_set(firewall_allow);
    let mut hp = Set::new("hairpin", vec![KeyType::Ipv4Addr, KeyType::Ipv4Addr]);
    for ip in hairpin {
        hp.insert(vec![Value::Ipv4(ip), Value::Ipv4(ip)], Elem::default());
    }
    t.add_set(hp);

    // Refused or dropped before DNAT, so a Service without endpoints never times out.
    let filter_rules = || {
        let np = |set: &str, verdict: Stmt| {
            let mut s = local_not_loopback().to_vec();
            s.push(lookup(&PORT_KEY, set));
            s.push(verdict);
            Rule::new(s)
        };
        vec![
            // loadBalancerSourceRanges: other clients never reach the load balancer IP.
            Rule::new(vec![
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
                Stmt::Verdict(weft_nft::Verdict::Drop),
            ]),
            Rule::new(vec![
                lookup(&ADDR_KEY, "no-endpoints"),
                Stmt::Reject(Reject::PortUnreachable),
            ]),
            Rule::new(vec![
                lookup(&ADDR_KEY, "no-local-endpoints"),
                Stmt::Verdict(weft_nft::Verdict::Drop),
            ]),
            np(
                "nodeport-no-endpoints",
                Stmt::Reject(Reject::PortUnreachable),
            ),
            np(
                "nodeport-no-local-endpoints",
                Stmt::Verdict(weft_nft::Verdict::Drop),
            ),
        ]
    };
    for (name, hook) in [
        ("filter-prerouting", Hook::Prerouting),
        ("filter-output", Hook::Output),
    ] {
        let mut c = base(name, ChainType::Filter, hook, -110);
        c.rules = filter_rules();
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
    let (sticky, nodeport_sticky) = affinity::install(&mut t, &by_addr.affinity, &by_port.affinity);
    services.rules.extend(sticky);
    services
        .rules
        .extend(dispatch_rules(&by_addr, &ADDR_KEY, "", "backends"));
    let mut to_nodeports = local_not_loopback().to_vec();
    to_nodeports.push(Stmt::jump("nodeports"));
    services.rules.push(Rule::new(to_nodeports));
    t.add_chain(services);

    let mut nodeports = Chain::regular("nodeports");
    nodeports.rules.push(Rule::new(vec![
        lookup(&PORT_KEY, "nodeport-masq"),
        mark_masq(),
    ]));
    nodeports.rules.extend(nodeport_sticky);
    nodeports.rules.extend(dispatch_rules(
        &by_port,
        &PORT_KEY,
        "nodeport-",
        "nodeport-backends",
    ));
    t.add_chain(nodeports);

    t.add_chain(
        base("nat-postrouting", ChainType::Nat, Hook::Postrouting, 100)
            .with_rule(Rule::new(vec![
                Stmt::MarkMatch {
                    ct: false,
                    mask: MASQ_MARK,
                    value: MASQ_MARK,
                    op: CmpOp::Eq,
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

    let mut rs = Ruleset::default();
    rs.add_table(t);
    rs
}

#[cfg(test)]
#[path = "desired_tests.rs"]
mod tests;
