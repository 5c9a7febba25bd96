//! `sessionAffinity: ClientIP`, as data too. The packet path remembers, per client and
//! service address, the endpoint the first connection got:
//!
//! ```text
//! services (before dispatch):
//!     daddr.proto.dport @affinity-services
//!         dnat to saddr.daddr.proto.dport map @affinity      (a remembered client)
//! affinity-prerouting / affinity-output (filter, just after DNAT), new connections:
//!     ct original daddr.proto.dport @affinity-<proto>-tT
//!         update @affinity { saddr.(ct original daddr).proto.(ct original dport)
//!                            timeout T : daddr.dport }
//! ```
//! One `affinity-<proto>-tT` set and rule per protocol and timeout in use. A remembered
//! endpoint that leaves its Service is forgotten by [`stale`], which the proxier runs after
//! each sync.

use std::collections::{BTreeSet, HashSet};
use std::time::Duration;

use weft_nft::{
    BaseChain, Chain, ChainType, CtStates, DataType, DynsetOp, ElemData, Hook, Key, KeyType,
    Policy, Rule, Selector, Set, SetRef, Stmt, Table, Value,
};

use crate::desired::{Dynamic, ADDR_KEY, PORT_KEY};
use crate::service::Protocol;

pub const MAP: &str = "affinity";

/// client . service address . proto . port -> the endpoint's address . port.
pub fn map() -> Set {
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
    map
}

const REMEMBER_KEY: [Selector; 4] = [
    Selector::IpSaddr,
    Selector::CtOriginalIpDaddr,
    Selector::MetaL4proto,
    Selector::CtOriginalProtoDst,
];

/// For the `services` (or `nodeports`) chain: remembered clients of each protocol with
/// affinity in use go to the endpoint they had.
pub fn lookup_rules<'a>(dynamic: impl Iterator<Item = &'a Dynamic>) -> Vec<Rule> {
    let protos: BTreeSet<(bool, Protocol)> = dynamic
        .filter_map(|d| match d {
            Dynamic::Affinity {
                nodeport, proto, ..
            } => Some((*nodeport, *proto)),
            Dynamic::Endpoints { .. } => None,
        })
        .collect();
    protos
        .into_iter()
        .map(|(nodeport, proto)| {
            let (guard, set) = if nodeport {
                (&PORT_KEY[..], "nodeport-affinity-services")
            } else {
                (&ADDR_KEY[..], "affinity-services")
            };
            Rule::new(vec![
                Stmt::eq(Selector::MetaL4proto, Value::Proto(proto.number())),
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
        .collect()
}

/// The chains that remember each new connection's endpoint, while any Service has
/// affinity: a recording rule per `affinity-<proto>-t<secs>` set.
pub fn add_recording(t: &mut Table, dynamic: &BTreeSet<Dynamic>) {
    let mut record = Chain::regular("affinity-record");
    for d in dynamic {
        let Dynamic::Affinity {
            nodeport,
            proto,
            secs,
        } = d
        else {
            continue;
        };
        let guard = if *nodeport {
            vec![Selector::MetaL4proto, Selector::CtOriginalProtoDst]
        } else {
            vec![
                Selector::CtOriginalIpDaddr,
                Selector::MetaL4proto,
                Selector::CtOriginalProtoDst,
            ]
        };
        record.rules.push(Rule::new(vec![
            Stmt::eq(Selector::MetaL4proto, Value::Proto(proto.number())),
            Stmt::Lookup {
                key: guard,
                set: SetRef::Named(d.name()),
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
    if record.rules.is_empty() {
        return;
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
