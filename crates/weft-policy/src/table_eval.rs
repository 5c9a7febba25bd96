//! Runs one new connection's first packet through a weft-policy table as the kernel
//! would, for the statements this crate writes. Tests use it to hold the compiled data
//! against the matcher; `weft lab` can use it to say which element dropped a packet.

use std::net::IpAddr;

use weft_nft::{ElemData, Selector, Set, SetRef, Stmt, Table, Value, Verdict};

use crate::desired::FORWARD;
use crate::model::Protocol;

/// The packet: a connection's first packet (conntrack state new).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packet {
    pub saddr: IpAddr,
    pub daddr: IpAddr,
    pub proto: Protocol,
    pub dport: u16,
}

/// What the table did, and the chain that dropped it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Accepted,
    Dropped { chain: String },
}

impl Packet {
    fn load(&self, s: Selector) -> Option<Value> {
        // An address selector loads only from its family's packets (nft's implicit
        // `meta nfproto` check).
        let addr = |a: IpAddr, v6: bool| match (a, v6) {
            (IpAddr::V4(a), false) => Some(Value::Ipv4(a)),
            (IpAddr::V6(a), true) => Some(Value::Ipv6(a)),
            _ => None,
        };
        Some(match s {
            Selector::IpSaddr => addr(self.saddr, false)?,
            Selector::IpDaddr => addr(self.daddr, false)?,
            Selector::Ip6Saddr => addr(self.saddr, true)?,
            Selector::Ip6Daddr => addr(self.daddr, true)?,
            Selector::MetaL4proto => Value::Proto(self.proto.number()),
            // What a port-less protocol holds there does not matter: its elements
            // cover every value.
            Selector::ThDport => Value::Port(self.dport),
            _ => return None,
        })
    }
}

fn lookup<'a>(set: &'a Set, key: &[Value]) -> Option<&'a Option<ElemData>> {
    set.elements.iter().find_map(|(start, e)| {
        let end = e.end.as_ref().unwrap_or(start);
        let inside = start.0.len() == key.len()
            && start
                .0
                .iter()
                .zip(&end.0)
                .zip(key)
                .all(|((lo, hi), v)| lo <= v && v <= hi);
        inside.then_some(&e.data)
    })
}

/// The forward chain's verdict for `p`. Panics on statements weft-policy never writes.
pub fn forward(table: &Table, p: &Packet) -> Outcome {
    run(table, FORWARD, p, 0)
}

fn run(table: &Table, chain: &str, p: &Packet, depth: usize) -> Outcome {
    assert!(depth < 16, "chain loop at {chain}");
    let Some(c) = table.chains.get(chain) else {
        panic!("no chain {chain}");
    };
    'rules: for r in &c.rules {
        for s in &r.stmts {
            match s {
                // A first packet is never established or related.
                Stmt::CtState(_) => continue 'rules,
                Stmt::Counter | Stmt::Log { .. } => {}
                Stmt::Verdict(v) => return verdict(table, v, p, depth),
                Stmt::Vmap {
                    key,
                    map: SetRef::Named(m),
                } => {
                    let Some(key) = key.iter().map(|k| p.load(*k)).collect::<Option<Vec<_>>>()
                    else {
                        continue 'rules;
                    };
                    match table.sets.get(m).and_then(|set| lookup(set, &key)) {
                        Some(Some(ElemData::Verdict(v))) => return verdict(table, v, p, depth),
                        _ => continue 'rules,
                    }
                }
                other => panic!("statement weft-policy does not write: {other:?}"),
            }
        }
    }
    match c.base.map(|b| b.policy) {
        Some(weft_nft::Policy::Drop) => Outcome::Dropped {
            chain: chain.to_owned(),
        },
        _ => Outcome::Accepted,
    }
}

fn verdict(table: &Table, v: &Verdict, p: &Packet, depth: usize) -> Outcome {
    match v {
        Verdict::Accept => Outcome::Accepted,
        Verdict::Drop => Outcome::Dropped {
            chain: String::new(),
        },
        Verdict::Goto(c) | Verdict::Jump(c) => match run(table, c, p, depth + 1) {
            Outcome::Dropped { chain } if chain.is_empty() => Outcome::Dropped { chain: c.clone() },
            o => o,
        },
        Verdict::Continue | Verdict::Return => Outcome::Accepted,
    }
}
