//! Runs one new connection's first packet through a weft-policy table as the kernel
//! would, for the statements this crate writes. Tests use it to hold the compiled data
//! against the matcher; `weft lab` can use it to say which element dropped a packet.

use std::net::IpAddr;

use weft_nft::{CmpOp, ElemData, KeyField, Selector, Set, SetRef, Stmt, Table, Value, Verdict};

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

/// The element holding `key`, comparing each field's bytes as the kernel does (marks are
/// host order, so their numeric order is not the kernel's).
fn lookup<'a>(set: &'a Set, key: &[Value]) -> Option<&'a Option<ElemData>> {
    let key: Vec<Vec<u8>> = key.iter().map(Value::bytes).collect();
    set.elements.iter().find_map(|(start, e)| {
        let end = e.end.as_ref().unwrap_or(start);
        let inside = start.0.len() == key.len()
            && start
                .0
                .iter()
                .zip(&end.0)
                .zip(&key)
                .all(|((lo, hi), v)| lo.bytes() <= *v && *v <= hi.bytes());
        inside.then_some(&e.data)
    })
}

/// The marks a packet carries through the chain.
#[derive(Debug, Clone, Copy, Default)]
struct Marks {
    meta: u32,
    ct: u32,
}

/// The forward chain's verdict for `p`, whose packet mark is 0. Panics on statements
/// weft-policy never writes.
pub fn forward(table: &Table, p: &Packet) -> Outcome {
    forward_marked(table, p, 0)
}

/// [`forward`] for a packet that arrives with packet mark `mark` (weft-proxy sets 0x4000
/// on traffic it masquerades).
pub fn forward_marked(table: &Table, p: &Packet, mark: u32) -> Outcome {
    let mut m = Marks { meta: mark, ct: 0 };
    match run(table, FORWARD, p, &mut m, 0) {
        Flow::Drop(chain) => Outcome::Dropped { chain },
        Flow::Accept | Flow::Return => Outcome::Accepted,
    }
}

/// Where a chain leaves the packet.
enum Flow {
    Accept,
    /// Dropped, by this chain.
    Drop(String),
    /// Back to the chain that jumped here (from a base chain: its policy, accept here).
    Return,
}

fn load_all(p: &Packet, m: &Marks, key: &[Selector]) -> Option<Vec<Value>> {
    key.iter()
        .map(|k| match k {
            Selector::MetaMark => Some(Value::Mark(m.meta)),
            Selector::CtMark => Some(Value::Mark(m.ct)),
            k => p.load(*k),
        })
        .collect()
}

fn load_masked(p: &Packet, m: &Marks, key: &[KeyField]) -> Option<Vec<Value>> {
    let sels: Vec<Selector> = key.iter().map(|f| f.sel).collect();
    let mut k = load_all(p, m, &sels)?;
    for (v, f) in k.iter_mut().zip(key) {
        if let (Value::Mark(x), Some(mask)) = (&mut *v, f.mask) {
            *x &= mask;
        }
    }
    Some(k)
}

fn run(table: &Table, chain: &str, p: &Packet, m: &mut Marks, depth: usize) -> Flow {
    assert!(depth < 16, "chain loop at {chain}");
    let Some(c) = table.chains.get(chain) else {
        panic!("no chain {chain}");
    };
    'rules: for r in &c.rules {
        for s in &r.stmts {
            let v = match s {
                // A first packet is never established or related.
                Stmt::CtState(_) => continue 'rules,
                Stmt::Counter | Stmt::Log { .. } => continue,
                Stmt::Verdict(v) => v,
                Stmt::Lookup {
                    key,
                    set: SetRef::Named(name),
                    negate: false,
                } => {
                    let hit = load_all(p, m, key)
                        .and_then(|k| table.sets.get(name).and_then(|set| lookup(set, &k)));
                    if hit.is_none() {
                        continue 'rules;
                    }
                    continue;
                }
                Stmt::MarkMatch {
                    ct: false,
                    mask,
                    value,
                    op: CmpOp::Eq,
                } => {
                    if m.meta & mask != *value {
                        continue 'rules;
                    }
                    continue;
                }
                Stmt::MarkOr { ct: false, bits } => {
                    m.meta |= bits;
                    continue;
                }
                Stmt::MarkSetMap { ct, key, map } => {
                    let data = load_masked(p, m, key)
                        .and_then(|k| table.sets.get(map).and_then(|set| lookup(set, &k)));
                    match data {
                        Some(Some(ElemData::Value(v))) => match v.as_slice() {
                            [Value::Mark(x)] if *ct => m.ct = *x,
                            [Value::Mark(x)] => m.meta = *x,
                            other => panic!("mark map {map} holds {other:?}"),
                        },
                        _ => continue 'rules,
                    }
                    continue;
                }
                Stmt::LookupMasked { key, set } => {
                    let hit = load_masked(p, m, key)
                        .and_then(|k| table.sets.get(set).and_then(|s| lookup(s, &k)));
                    if hit.is_none() {
                        continue 'rules;
                    }
                    continue;
                }
                Stmt::VmapMasked { key, map } => {
                    let Some(k) = load_masked(p, m, key) else {
                        continue 'rules;
                    };
                    match table.sets.get(map).and_then(|set| lookup(set, &k)) {
                        Some(Some(ElemData::Verdict(v))) => v,
                        _ => continue 'rules,
                    }
                }
                other => panic!("statement weft-policy does not write: {other:?}"),
            };
            match v {
                Verdict::Accept => return Flow::Accept,
                Verdict::Drop => return Flow::Drop(chain.to_owned()),
                Verdict::Return => return Flow::Return,
                Verdict::Continue => continue 'rules,
                Verdict::Goto(c) => return run(table, c, p, m, depth + 1),
                Verdict::Jump(c) => match run(table, c, p, m, depth + 1) {
                    Flow::Return => continue 'rules,
                    f => return f,
                },
            }
        }
    }
    match c.base.map(|b| b.policy) {
        Some(weft_nft::Policy::Drop) => Flow::Drop(chain.to_owned()),
        Some(weft_nft::Policy::Accept) => Flow::Accept,
        None => Flow::Return,
    }
}
