//! `sessionAffinity: ClientIP`, as data too. The packet path remembers, per client and
//! service address, the endpoint the first connection got:
//!
//! ```text
//! services (before dispatch):
//!     daddr.proto.dport @affinity-services
//!         dnat to saddr.daddr.proto.dport map @affinity      (a remembered client)
//! affinity-prerouting / affinity-output (filter, just after DNAT), new connections:
//!     ct original daddr.proto.dport @affinity-tT
//!         update @affinity { saddr.(ct original daddr).proto.(ct original dport)
//!                            timeout T : daddr.dport }
//! ```
//! One `affinity-tT` set and rule per timeout in use. A remembered endpoint that leaves
//! its Service is forgotten by [`stale`], which the proxier runs after each sync.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::time::Duration;

use weft_nft::{
    BaseChain, Chain, ChainType, CtStates, DataType, DynsetOp, ElemData, Hook, Key, KeyType,
    Policy, Rule, Selector, Set, SetRef, Stmt, Table, Value,
};

pub const MAP: &str = "affinity";

/// Service keys (addr.proto.port or proto.port) with affinity, by timeout in seconds.
#[derive(Default)]
pub struct Affinity {
    pub by_timeout: BTreeMap<u64, BTreeSet<Vec<Value>>>,
}

impl Affinity {
    pub fn add(&mut self, key: Vec<Value>, timeout: Duration) {
        self.by_timeout
            .entry(timeout.as_secs().max(1))
            .or_default()
            .insert(key);
    }

    fn all(&self) -> BTreeSet<Vec<Value>> {
        self.by_timeout.values().flatten().cloned().collect()
    }

    fn protos(&self, at: usize) -> BTreeSet<Value> {
        self.by_timeout
            .values()
            .flatten()
            .map(|k| k[at].clone())
            .collect()
    }
}

const REMEMBER_KEY: [Selector; 4] = [
    Selector::IpSaddr,
    Selector::CtOriginalIpDaddr,
    Selector::MetaL4proto,
    Selector::CtOriginalProtoDst,
];

fn set_of(name: &str, key: &[KeyType], keys: &BTreeSet<Vec<Value>>) -> Set {
    let mut s = Set::new(name, key.to_vec());
    for k in keys {
        s.insert(k.clone(), weft_nft::Elem::default());
    }
    s
}

/// Adds the affinity map, the guard sets and the recording chains for `by_addr`
/// (addr.proto.port keys) and `by_port` (node ports, proto.port keys) to `t`, and returns
/// the lookup rules for the `services` and `nodeports` chains.
pub fn install(t: &mut Table, by_addr: &Affinity, by_port: &Affinity) -> (Vec<Rule>, Vec<Rule>) {
    let addr_types = vec![KeyType::Ipv4Addr, KeyType::InetProto, KeyType::InetService];
    let port_types = vec![KeyType::InetProto, KeyType::InetService];
    let mut map = Set::map(
        MAP,
        vec![
            KeyType::Ipv4Addr,
            KeyType::Ipv4Addr,
            KeyType::InetProto,
            KeyType::InetService,
        ],
        DataType::Value(vec![KeyType::Ipv4Addr, KeyType::InetService]),
    );
    map.flags.dynamic = true;
    map.flags.timeout = true;
    t.add_set(map);
    t.add_set(set_of("affinity-services", &addr_types, &by_addr.all()));
    t.add_set(set_of(
        "nodeport-affinity-services",
        &port_types,
        &by_port.all(),
    ));

    let mut record = Chain::regular("affinity-record");
    for (prefix, aff, types, guard) in [
        (
            "",
            by_addr,
            &addr_types,
            vec![
                Selector::CtOriginalIpDaddr,
                Selector::MetaL4proto,
                Selector::CtOriginalProtoDst,
            ],
        ),
        (
            "nodeport-",
            by_port,
            &port_types,
            vec![Selector::MetaL4proto, Selector::CtOriginalProtoDst],
        ),
    ] {
        for (secs, keys) in &aff.by_timeout {
            let set = format!("{prefix}affinity-t{secs}");
            t.add_set(set_of(&set, types, keys));
            for proto in aff.protos(types.len() - 2) {
                record.rules.push(Rule::new(vec![
                    Stmt::eq(Selector::MetaL4proto, proto),
                    Stmt::Lookup {
                        key: guard.clone(),
                        set: SetRef::Named(set.clone()),
                        negate: false,
                    },
                    Stmt::Dynset {
                        op: DynsetOp::Update,
                        key: REMEMBER_KEY.to_vec(),
                        set: MAP.into(),
                        timeout: Some(Duration::from_secs(*secs)),
                        data: vec![Selector::IpDaddr, Selector::ThDport],
                    },
                ]));
            }
        }
    }
    t.add_chain(record);
    for (name, hook) in [
        ("affinity-prerouting", Hook::Prerouting),
        ("affinity-output", Hook::Output),
    ] {
        // Just after DNAT (-100): the packet already carries the endpoint's address.
        let base = BaseChain {
            kind: ChainType::Filter,
            hook,
            priority: -99,
            policy: Policy::Accept,
        };
        t.add_chain(Chain::base(name, base).with_rule(Rule::new(vec![
            Stmt::CtState(CtStates::NEW),
            Stmt::jump("affinity-record"),
        ])));
    }

    let lookup_rules = |aff: &Affinity, guard: &[Selector], set: &str, at: usize| {
        aff.protos(at)
            .into_iter()
            .map(|proto| {
                Rule::new(vec![
                    Stmt::eq(Selector::MetaL4proto, proto),
                    Stmt::Lookup {
                        key: guard.to_vec(),
                        set: SetRef::Named(set.into()),
                        negate: false,
                    },
                    Stmt::DnatMap {
                        key: vec![
                            Selector::IpSaddr,
                            Selector::IpDaddr,
                            Selector::MetaL4proto,
                            Selector::ThDport,
                        ],
                        map: SetRef::Named(MAP.into()),
                    },
                ])
            })
            .collect::<Vec<_>>()
    };
    (
        lookup_rules(
            by_addr,
            &[Selector::IpDaddr, Selector::MetaL4proto, Selector::ThDport],
            "affinity-services",
            1,
        ),
        lookup_rules(
            by_port,
            &[Selector::MetaL4proto, Selector::ThDport],
            "nodeport-affinity-services",
            0,
        ),
    )
}

/// Remembered elements whose endpoint no longer serves their service (per `backends` and
/// `nodeport-backends` of the desired table): to delete, so the client is balanced anew.
pub fn stale(remembered: &Set, backends: &Set, nodeport_backends: &Set) -> Vec<Key> {
    // (service key, endpoint) pairs that still hold: a map's key minus its slot.
    let mut valid: HashSet<(&[Value], &[Value])> = HashSet::new();
    for m in [backends, nodeport_backends] {
        for (Key(k), e) in &m.elements {
            if let (Some((_, service)), Some(ElemData::Value(d))) = (k.split_last(), &e.data) {
                valid.insert((service, d));
            }
        }
    }
    remembered
        .elements
        .iter()
        .filter(|(Key(k), e)| {
            let Some(ElemData::Value(data)) = &e.data else {
                return true;
            };
            // client . daddr . proto . port: a cluster or external address, or a node port.
            k.len() != 4
                || !(valid.contains(&(&k[1..], data.as_slice()))
                    || valid.contains(&(&k[2..], data.as_slice())))
        })
        .map(|(k, _)| k.clone())
        .collect()
}
