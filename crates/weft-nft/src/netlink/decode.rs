//! Read-back: tables, chains, sets, elements and rules as the kernel holds them.

use std::collections::BTreeMap;
use std::time::Duration;

use super::attr::{be32, be64, string, Attrs};
use super::batch::{MSG_GETCHAIN, MSG_GETRULE, MSG_GETSET, MSG_GETSETELEM, MSG_GETTABLE};
use super::expr::{decode_exprs, decode_value, decode_verdict};
use super::msg::DATA_VERDICT_TYPE;
use super::socket::NftSocket;
use crate::error::{Error, Result};
use crate::expr::{lower, Expr, Lowered, SetName};
use crate::model::{
    split_concat_type, BaseChain, ChainType, DataType, Elem, ElemData, Family, Hook, Key, KeyType,
    Policy, Set, SetFlags, Table, Value,
};

const SET_ANONYMOUS: u32 = 0x1;
const SET_CONSTANT: u32 = 0x2;
const SET_INTERVAL: u32 = 0x4;
const SET_TIMEOUT: u32 = 0x10;
const SET_EVAL: u32 = 0x20;
const ELEM_INTERVAL_END: u32 = 0x1;

/// A table as the kernel reports it, with rules as kernel expressions.
#[derive(Debug, Clone, PartialEq)]
pub struct KernelTable {
    pub family: Family,
    pub name: String,
    pub chains: BTreeMap<String, KernelChain>,
    /// Named sets and maps, with their elements.
    pub sets: BTreeMap<String, Set>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct KernelChain {
    pub base: Option<BaseChain>,
    pub rules: Vec<Lowered>,
}

/// What the kernel should hold for a model table: the same shape with rules lowered.
pub fn kernel_view(t: &Table) -> Result<KernelTable> {
    let mut chains = BTreeMap::new();
    for (name, c) in &t.chains {
        let rules = c
            .rules
            .iter()
            .map(|r| lower(r, t.family))
            .collect::<Result<Vec<_>>>()?;
        chains.insert(
            name.clone(),
            KernelChain {
                base: c.base,
                rules,
            },
        );
    }
    let sets = t
        .sets
        .iter()
        .map(|(k, s)| (k.clone(), (**s).clone()))
        .collect();
    Ok(KernelTable {
        family: t.family,
        name: t.name.clone(),
        chains,
        sets,
    })
}

/// Names of the tables of a family (or all families) in the socket's namespace.
pub fn list_tables(sock: &mut NftSocket, family: Option<Family>) -> Result<Vec<(Family, String)>> {
    let mut out = Vec::new();
    let fam = family.map(Family::nfproto).unwrap_or(0);
    sock.dump(
        MSG_GETTABLE,
        fam,
        |_| {},
        |f, a| {
            if let (Some(f), Some(name)) = (Family::from_nfproto(f), a.get(1).and_then(string)) {
                out.push((f, name));
            }
            Ok(())
        },
    )?;
    Ok(out)
}

/// Reads one named set (definition and elements) back, without the rest of its table:
/// what a controller needs to see what the packet path added to a dynamic set.
pub fn read_set(
    sock: &mut NftSocket,
    family: Family,
    table: &str,
    set: &str,
) -> Result<Option<Set>> {
    let Some(mut found) = find_set(sock, family, table, set)? else {
        return Ok(None);
    };
    read_elements(sock, family, table, &mut found)?;
    Ok(Some(found))
}

/// The packets counted by each element of a set declared with a counter
/// ([`crate::SetFlags::counter`]), by key (an interval's start); `None` when the set does
/// not exist.
pub fn read_counters(
    sock: &mut NftSocket,
    family: Family,
    table: &str,
    set: &str,
) -> Result<Option<BTreeMap<Key, u64>>> {
    match find_set(sock, family, table, set)? {
        Some(mut s) => Ok(Some(read_elements(sock, family, table, &mut s)?)),
        None => Ok(None),
    }
}

/// A set's declaration, without its elements; `None` when the table or the set is absent.
fn find_set(sock: &mut NftSocket, family: Family, table: &str, set: &str) -> Result<Option<Set>> {
    if !list_tables(sock, Some(family))?
        .iter()
        .any(|(_, n)| n == table)
    {
        return Ok(None);
    }
    let mut found = None;
    sock.dump(
        MSG_GETSET,
        family.nfproto(),
        |w| w.put_str(1, table),
        |_, a| {
            if a.get(1).and_then(string).as_deref() == Some(table)
                && a.get(2).and_then(string).as_deref() == Some(set)
            {
                found = Some(decode_set(a)?.0);
            }
            Ok(())
        },
    )?;
    Ok(found)
}

/// Reads one table back; `None` when it does not exist.
pub fn read_table(sock: &mut NftSocket, family: Family, name: &str) -> Result<Option<KernelTable>> {
    if !list_tables(sock, Some(family))?
        .iter()
        .any(|(_, n)| n == name)
    {
        return Ok(None);
    }
    let fam = family.nfproto();
    let mut chains = BTreeMap::new();
    sock.dump(
        MSG_GETCHAIN,
        fam,
        |w| w.put_str(1, name),
        |_, a| {
            if a.get(1).and_then(string).as_deref() != Some(name) {
                return Ok(());
            }
            let cname = a
                .get(3)
                .and_then(string)
                .ok_or_else(|| Error::Decode("chain without name".into()))?;
            chains.insert(
                cname,
                KernelChain {
                    base: decode_base(a)?,
                    rules: Vec::new(),
                },
            );
            Ok(())
        },
    )?;

    let mut raw_sets: Vec<(Set, bool)> = Vec::new();
    sock.dump(
        MSG_GETSET,
        fam,
        |w| w.put_str(1, name),
        |_, a| {
            if a.get(1).and_then(string).as_deref() != Some(name) {
                return Ok(());
            }
            raw_sets.push(decode_set(a)?);
            Ok(())
        },
    )?;
    let mut named = BTreeMap::new();
    let mut anon = BTreeMap::new();
    for (mut set, anonymous) in raw_sets {
        read_elements(sock, family, name, &mut set)?;
        if anonymous {
            let kernel_name = std::mem::replace(&mut set.name, "__set%d".into());
            anon.insert(kernel_name, set);
        } else {
            named.insert(set.name.clone(), set);
        }
    }

    let mut rules: Vec<(String, Vec<Expr>)> = Vec::new();
    sock.dump(
        MSG_GETRULE,
        fam,
        |w| w.put_str(1, name),
        |_, a| {
            if a.get(1).and_then(string).as_deref() != Some(name) {
                return Ok(());
            }
            let chain = a
                .get(2)
                .and_then(string)
                .ok_or_else(|| Error::Decode("rule without chain".into()))?;
            rules.push((chain, decode_exprs(a.get(4).unwrap_or(&[]))?));
            Ok(())
        },
    )?;
    for (chain, exprs) in rules {
        let lowered = resolve_anon(exprs, &anon);
        if let Some(c) = chains.get_mut(&chain) {
            c.rules.push(lowered);
        }
    }
    Ok(Some(KernelTable {
        family,
        name: name.to_owned(),
        chains,
        sets: named,
    }))
}

/// Replaces the kernel's names of anonymous sets (`__set7`) with their contents.
fn resolve_anon(mut exprs: Vec<Expr>, anon: &BTreeMap<String, Set>) -> Lowered {
    let mut sets = Vec::new();
    for e in &mut exprs {
        let set = match e {
            Expr::Lookup { set, .. } | Expr::Dynset { set, .. } => set,
            _ => continue,
        };
        if let SetName::Named(n) = set {
            if let Some(s) = anon.get(n.as_str()) {
                sets.push(s.clone());
                *set = SetName::Anon(sets.len() - 1);
            }
        }
    }
    Lowered { exprs, anon: sets }
}

fn decode_base(a: Attrs) -> Result<Option<BaseChain>> {
    let Some(hook) = a.get(4) else {
        return Ok(None);
    };
    let h = Attrs(hook);
    let num = h
        .get(1)
        .and_then(be32)
        .ok_or_else(|| Error::Decode("hook without number".into()))?;
    let prio = h.get(2).and_then(be32).unwrap_or(0) as i32;
    let kind = a
        .get(7)
        .and_then(string)
        .and_then(|s| ChainType::parse(&s))
        .ok_or_else(|| Error::Decode("base chain of unknown type".into()))?;
    let policy = match a.get(5).and_then(be32) {
        Some(0) => Policy::Drop,
        _ => Policy::Accept,
    };
    Ok(Some(BaseChain {
        kind,
        hook: Hook::from_number(num).ok_or_else(|| Error::Decode(format!("unknown hook {num}")))?,
        priority: prio,
        policy,
    }))
}

fn field_lens(desc: &[u8]) -> Vec<u32> {
    let Some(concat) = Attrs(desc).get(2) else {
        return Vec::new();
    };
    Attrs(concat)
        .filter_map(|(_, f)| Attrs(f).get(1).and_then(be32))
        .collect()
}

/// Splits a data type number into fields whose padded lengths add up to `len`.
fn data_fields(t: u32, len: u32) -> Option<Vec<KeyType>> {
    (1..=4).find_map(|n| {
        let f = split_concat_type(t, n)?;
        let total = crate::netlink::msg::key_len(&f);
        (total == len as usize).then_some(f)
    })
}

fn decode_set(a: Attrs) -> Result<(Set, bool)> {
    let name = a
        .get(2)
        .and_then(string)
        .ok_or_else(|| Error::Decode("set without name".into()))?;
    let bad = |what: &str| Error::Decode(format!("set {name}: {what}"));
    let flags = a.get(3).and_then(be32).unwrap_or(0);
    let key_type = a.get(4).and_then(be32).ok_or_else(|| bad("no key type"))?;
    let nfields = a.get(9).map(field_lens).map(|f| f.len()).unwrap_or(0);
    let key = if nfields > 0 {
        split_concat_type(key_type, nfields)
    } else {
        data_fields(key_type, a.get(5).and_then(be32).unwrap_or(0))
    }
    .ok_or_else(|| bad("key type weft does not know"))?;
    let data = match a.get(6).and_then(be32) {
        None => None,
        Some(DATA_VERDICT_TYPE) => Some(DataType::Verdict),
        Some(t) => {
            let len = a.get(7).and_then(be32).unwrap_or(0);
            Some(DataType::Value(
                data_fields(t, len).ok_or_else(|| bad("data type weft does not know"))?,
            ))
        }
    };
    let set = Set {
        name: name.clone(),
        typeof_key: None,
        key,
        data,
        flags: SetFlags {
            interval: flags & SET_INTERVAL != 0,
            timeout: flags & SET_TIMEOUT != 0,
            dynamic: flags & SET_EVAL != 0,
            constant: flags & SET_CONSTANT != 0,
            counter: set_counts(&a),
        },
        timeout: a
            .get(11)
            .and_then(be64)
            .filter(|t| *t != 0)
            .map(Duration::from_millis),
        elements: BTreeMap::new(),
    };
    Ok((set, flags & SET_ANONYMOUS != 0))
}

/// Whether the set's element template (NFTA_SET_EXPR, or the NFTA_SET_EXPRESSIONS list)
/// holds a counter.
fn set_counts(a: &Attrs) -> bool {
    let is_counter = |e: &[u8]| Attrs(e).get(1).and_then(string).as_deref() == Some("counter");
    a.get(17).is_some_and(is_counter)
        || a.get(18)
            .is_some_and(|l| Attrs(l).into_iter().any(|(_, e)| is_counter(e)))
}

/// The packets an element's counter holds (NFTA_SET_ELEM_EXPR, or in the
/// NFTA_SET_ELEM_EXPRESSIONS list), if it has one.
fn elem_packets(e: &Attrs) -> Option<u64> {
    let packets = |x: &[u8]| {
        let x = Attrs(x);
        (x.get(1).and_then(string).as_deref() == Some("counter"))
            .then(|| x.get(2).and_then(|d| Attrs(d).get(2).and_then(be64)))
            .flatten()
    };
    e.get(7).and_then(packets).or_else(|| {
        e.get(11)
            .and_then(|l| Attrs(l).into_iter().find_map(|(_, x)| packets(x)))
    })
}

fn split_key(types: &[KeyType], bytes: &[u8]) -> Option<Key> {
    if types.len() == 1 {
        return Some(Key(vec![Value::from_bytes(types[0], bytes)?]));
    }
    let mut off = 0;
    let mut out = Vec::with_capacity(types.len());
    for t in types {
        out.push(Value::from_bytes(*t, bytes.get(off..)?)?);
        off += (t.size() + 3) & !3;
    }
    Some(Key(out))
}

/// Reads a set's elements into `set`; returns the packets each element's counter holds
/// (empty for a set without counters).
fn read_elements(
    sock: &mut NftSocket,
    family: Family,
    table: &str,
    set: &mut Set,
) -> Result<BTreeMap<Key, u64>> {
    let mut counts: Vec<(Vec<u8>, u64)> = Vec::new();
    let mut starts: Vec<(Vec<u8>, Elem)> = Vec::new();
    let mut ends: Vec<Vec<u8>> = Vec::new();
    let setname = set.name.clone();
    let key_types = set.key.clone();
    let data_type = set.data.clone();
    let bad = |what: &str| Error::Decode(format!("element of set {setname}: {what}"));
    let mut elems: BTreeMap<Key, Elem> = BTreeMap::new();
    let single_interval = set.flags.interval && set.key.len() == 1;
    sock.dump(
        MSG_GETSETELEM,
        family.nfproto(),
        |w| {
            w.put_str(1, table);
            w.put_str(2, &set.name);
        },
        |_, a| {
            let Some(list) = a.get(3) else { return Ok(()) };
            for (_, el) in Attrs(list) {
                let e = Attrs(el);
                let kb = e
                    .get(1)
                    .and_then(decode_value)
                    .ok_or_else(|| bad("no key"))?;
                let flags = e.get(3).and_then(be32).unwrap_or(0);
                if single_interval && flags & ELEM_INTERVAL_END != 0 {
                    ends.push(kb);
                    continue;
                }
                if let Some(n) = elem_packets(&e) {
                    counts.push((kb.clone(), n));
                }
                let data = match (&data_type, e.get(2)) {
                    (Some(DataType::Verdict), Some(d)) => {
                        Some(ElemData::Verdict(decode_verdict(d)?))
                    }
                    (Some(DataType::Value(f)), Some(d)) => {
                        let v = decode_value(d).ok_or_else(|| bad("no data value"))?;
                        Some(ElemData::Value(
                            split_key(f, &v).ok_or_else(|| bad("bad data"))?.0,
                        ))
                    }
                    _ => None,
                };
                let end = match e.get(10).and_then(decode_value) {
                    Some(b) => Some(split_key(&key_types, &b).ok_or_else(|| bad("bad end key"))?),
                    None => None,
                };
                let elem = Elem {
                    end,
                    data,
                    timeout: e.get(4).and_then(be64).map(Duration::from_millis),
                };
                if single_interval {
                    starts.push((kb, elem));
                } else {
                    let key = split_key(&key_types, &kb).ok_or_else(|| bad("bad key"))?;
                    elems.insert(key, elem);
                }
            }
            Ok(())
        },
    )?;
    if single_interval {
        // Pair each start with the first interval end above it; the inclusive end is one less.
        ends.sort();
        for (kb, mut elem) in starts {
            let end = ends.iter().find(|e| **e > kb).and_then(|e| decrement(e));
            let end = end.unwrap_or_else(|| vec![0xff; kb.len()]);
            if end != kb {
                elem.end = Some(split_key(&key_types, &end).ok_or_else(|| bad("bad end"))?);
            }
            let key = split_key(&key_types, &kb).ok_or_else(|| bad("bad key"))?;
            elems.insert(key, elem);
        }
    }
    set.elements = elems;
    counts
        .into_iter()
        .map(|(kb, n)| {
            split_key(&key_types, &kb)
                .map(|k| (k, n))
                .ok_or_else(|| bad("bad key"))
        })
        .collect()
}

fn decrement(b: &[u8]) -> Option<Vec<u8>> {
    let mut out = b.to_vec();
    for byte in out.iter_mut().rev() {
        if *byte == 0 {
            *byte = 0xff;
        } else {
            *byte -= 1;
            return Some(out);
        }
    }
    None
}
