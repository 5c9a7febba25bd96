//! The typed ruleset: tables, chains, sets and maps, elements.
//!
//! Chains and sets sit behind `Arc` so a controller can keep the last committed model, clone
//! it cheaply, change a few objects and hand both to the incremental applier, which skips
//! untouched objects by pointer before comparing contents.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::Arc;
use std::time::Duration;

use crate::rule::Rule;

/// The address family of a table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Family {
    Ip,
    Ip6,
    Inet,
}

impl Family {
    pub fn nfproto(self) -> u8 {
        match self {
            Family::Ip => libc::NFPROTO_IPV4 as u8,
            Family::Ip6 => libc::NFPROTO_IPV6 as u8,
            Family::Inet => libc::NFPROTO_INET as u8,
        }
    }

    pub fn from_nfproto(p: u8) -> Option<Family> {
        match p as i32 {
            libc::NFPROTO_IPV4 => Some(Family::Ip),
            libc::NFPROTO_IPV6 => Some(Family::Ip6),
            libc::NFPROTO_INET => Some(Family::Inet),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Family::Ip => "ip",
            Family::Ip6 => "ip6",
            Family::Inet => "inet",
        }
    }
}

/// Every table weft manages, keyed by family and name.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Ruleset {
    pub tables: BTreeMap<(Family, String), Table>,
}

impl Ruleset {
    pub fn add_table(&mut self, table: Table) {
        self.tables
            .insert((table.family, table.name.clone()), table);
    }

    pub fn table(&self, family: Family, name: &str) -> Option<&Table> {
        self.tables.get(&(family, name.to_owned()))
    }

    pub fn table_mut(&mut self, family: Family, name: &str) -> Option<&mut Table> {
        self.tables.get_mut(&(family, name.to_owned()))
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Table {
    pub family: Family,
    pub name: String,
    pub chains: BTreeMap<String, Arc<Chain>>,
    pub sets: BTreeMap<String, Arc<Set>>,
}

impl Table {
    pub fn new(family: Family, name: impl Into<String>) -> Self {
        Table {
            family,
            name: name.into(),
            chains: BTreeMap::new(),
            sets: BTreeMap::new(),
        }
    }

    pub fn add_chain(&mut self, chain: Chain) {
        self.chains.insert(chain.name.clone(), Arc::new(chain));
    }

    pub fn add_set(&mut self, set: Set) {
        self.sets.insert(set.name.clone(), Arc::new(set));
    }

    /// A chain to change in place (copied first if a previous model shares it).
    pub fn chain_mut(&mut self, name: &str) -> Option<&mut Chain> {
        self.chains.get_mut(name).map(Arc::make_mut)
    }

    /// A set to change in place (copied first if a previous model shares it).
    pub fn set_mut(&mut self, name: &str) -> Option<&mut Set> {
        self.sets.get_mut(name).map(Arc::make_mut)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Chain {
    pub name: String,
    /// Present for base chains, which the kernel attaches to a netfilter hook.
    pub base: Option<BaseChain>,
    pub rules: Vec<Rule>,
}

impl Chain {
    pub fn regular(name: impl Into<String>) -> Self {
        Chain {
            name: name.into(),
            base: None,
            rules: Vec::new(),
        }
    }

    pub fn base(name: impl Into<String>, base: BaseChain) -> Self {
        Chain {
            name: name.into(),
            base: Some(base),
            rules: Vec::new(),
        }
    }

    pub fn with_rule(mut self, rule: Rule) -> Self {
        self.rules.push(rule);
        self
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BaseChain {
    pub kind: ChainType,
    pub hook: Hook,
    pub priority: i32,
    pub policy: Policy,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChainType {
    Filter,
    Nat,
    Route,
}

impl ChainType {
    pub fn as_str(self) -> &'static str {
        match self {
            ChainType::Filter => "filter",
            ChainType::Nat => "nat",
            ChainType::Route => "route",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "filter" => Some(ChainType::Filter),
            "nat" => Some(ChainType::Nat),
            "route" => Some(ChainType::Route),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hook {
    Prerouting,
    Input,
    Forward,
    Output,
    Postrouting,
}

impl Hook {
    pub fn number(self) -> u32 {
        match self {
            Hook::Prerouting => 0,
            Hook::Input => 1,
            Hook::Forward => 2,
            Hook::Output => 3,
            Hook::Postrouting => 4,
        }
    }

    pub fn from_number(n: u32) -> Option<Self> {
        [
            Hook::Prerouting,
            Hook::Input,
            Hook::Forward,
            Hook::Output,
            Hook::Postrouting,
        ]
        .get(n as usize)
        .copied()
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Hook::Prerouting => "prerouting",
            Hook::Input => "input",
            Hook::Forward => "forward",
            Hook::Output => "output",
            Hook::Postrouting => "postrouting",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    Accept,
    Drop,
}

/// The type of one field of a set key or of map data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum KeyType {
    Ipv4Addr,
    Ipv6Addr,
    InetProto,
    InetService,
    Mark,
    Ifname,
    /// A host-order 32-bit integer, as `numgen` produces.
    Integer,
}

impl KeyType {
    /// nft's datatype number, which the kernel stores for userspace.
    pub fn nft_type(self) -> u32 {
        match self {
            KeyType::Integer => 4,
            KeyType::Ipv4Addr => 7,
            KeyType::Ipv6Addr => 8,
            KeyType::InetProto => 12,
            KeyType::InetService => 13,
            KeyType::Mark => 19,
            KeyType::Ifname => 41,
        }
    }

    pub fn from_nft_type(t: u32) -> Option<Self> {
        [
            KeyType::Integer,
            KeyType::Ipv4Addr,
            KeyType::Ipv6Addr,
            KeyType::InetProto,
            KeyType::InetService,
            KeyType::Mark,
            KeyType::Ifname,
        ]
        .into_iter()
        .find(|k| k.nft_type() == t)
    }

    /// Bytes the value occupies, before padding to a register boundary.
    pub fn size(self) -> usize {
        match self {
            KeyType::Ipv4Addr | KeyType::Mark | KeyType::Integer => 4,
            KeyType::Ipv6Addr | KeyType::Ifname => 16,
            KeyType::InetProto => 1,
            KeyType::InetService => 2,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            KeyType::Ipv4Addr => "ipv4_addr",
            KeyType::Ipv6Addr => "ipv6_addr",
            KeyType::InetProto => "inet_proto",
            KeyType::InetService => "inet_service",
            KeyType::Mark => "mark",
            KeyType::Ifname => "ifname",
            KeyType::Integer => "integer",
        }
    }

    /// Whether nft treats values of this type as host byte order.
    pub fn host_order(self) -> bool {
        matches!(self, KeyType::Mark | KeyType::Ifname | KeyType::Integer)
    }
}

/// nft's number for a concatenation: each field's type shifted in, first field highest.
pub fn concat_type(fields: &[KeyType]) -> u32 {
    fields.iter().fold(0u32, |acc, f| (acc << 6) | f.nft_type())
}

/// Splits a concatenation type number back into `n` fields.
pub fn split_concat_type(mut t: u32, n: usize) -> Option<Vec<KeyType>> {
    let mut out = vec![KeyType::Integer; n];
    for slot in out.iter_mut().rev() {
        *slot = KeyType::from_nft_type(t & 0x3f)?;
        t >>= 6;
    }
    (t == 0).then_some(out)
}

/// What a map's elements point to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DataType {
    Verdict,
    /// A value or a concatenation such as `ipv4_addr . inet_service` for DNAT targets.
    Value(Vec<KeyType>),
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SetFlags {
    pub interval: bool,
    pub timeout: bool,
    /// Updated from the packet path (`update @set { ... }`).
    pub dynamic: bool,
    pub constant: bool,
    /// Every element keeps a counter of the packets and bytes that matched it (`counter`
    /// in the declaration): counting per element is data, with no rule per element.
    /// [`crate::Backend::read_counters`] reads them; they take no part in equality.
    pub counter: bool,
}

#[derive(Debug, Clone)]
pub struct Set {
    pub name: String,
    /// How nft should declare the key (`typeof ...`), needed when a field has no
    /// fixed-size nft type, like the integer `numgen` produces. Rendered, and written into
    /// the set's userdata for nft to list it; weft does not read it back, so it takes no
    /// part in equality.
    pub typeof_key: Option<Vec<crate::rule::Selector>>,
    pub key: Vec<KeyType>,
    pub data: Option<DataType>,
    pub flags: SetFlags,
    /// Default timeout for elements added without one.
    pub timeout: Option<Duration>,
    pub elements: BTreeMap<Key, Elem>,
}

impl Set {
    pub fn new(name: impl Into<String>, key: Vec<KeyType>) -> Self {
        Set {
            name: name.into(),
            typeof_key: None,
            key,
            data: None,
            flags: SetFlags::default(),
            timeout: None,
            elements: BTreeMap::new(),
        }
    }

    pub fn map(name: impl Into<String>, key: Vec<KeyType>, data: DataType) -> Self {
        Set {
            data: Some(data),
            ..Set::new(name, key)
        }
    }

    pub fn is_map(&self) -> bool {
        self.data.is_some()
    }

    pub fn insert(&mut self, key: Vec<Value>, elem: Elem) {
        self.elements.insert(Key(key), elem);
    }

    /// Same definition, ignoring elements: decides whether elements can be patched in place.
    pub fn same_definition(&self, other: &Set) -> bool {
        self.name == other.name
            && self.key == other.key
            && self.data == other.data
            && self.flags == other.flags
            && self.timeout == other.timeout
    }
}

impl PartialEq for Set {
    fn eq(&self, other: &Set) -> bool {
        self.same_definition(other) && self.elements == other.elements
    }
}

/// A value of one key field.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Value {
    Ipv4(Ipv4Addr),
    Ipv6(Ipv6Addr),
    Proto(u8),
    Port(u16),
    Mark(u32),
    Ifname(String),
    Integer(u32),
}

impl Value {
    pub fn key_type(&self) -> KeyType {
        match self {
            Value::Ipv4(_) => KeyType::Ipv4Addr,
            Value::Ipv6(_) => KeyType::Ipv6Addr,
            Value::Proto(_) => KeyType::InetProto,
            Value::Port(_) => KeyType::InetService,
            Value::Mark(_) => KeyType::Mark,
            Value::Ifname(_) => KeyType::Ifname,
            Value::Integer(_) => KeyType::Integer,
        }
    }

    /// The bytes the kernel compares, in the byte order nft uses for the type.
    pub fn bytes(&self) -> Vec<u8> {
        match self {
            Value::Ipv4(a) => a.octets().to_vec(),
            Value::Ipv6(a) => a.octets().to_vec(),
            Value::Proto(p) => vec![*p],
            Value::Port(p) => p.to_be_bytes().to_vec(),
            Value::Mark(m) | Value::Integer(m) => m.to_ne_bytes().to_vec(),
            Value::Ifname(n) => {
                let mut b = n.as_bytes().to_vec();
                b.resize(16, 0);
                b
            }
        }
    }

    pub fn from_bytes(t: KeyType, b: &[u8]) -> Option<Value> {
        Some(match t {
            KeyType::Ipv4Addr => {
                Value::Ipv4(Ipv4Addr::from(<[u8; 4]>::try_from(b.get(..4)?).ok()?))
            }
            KeyType::Ipv6Addr => {
                Value::Ipv6(Ipv6Addr::from(<[u8; 16]>::try_from(b.get(..16)?).ok()?))
            }
            KeyType::InetProto => Value::Proto(*b.first()?),
            KeyType::InetService => Value::Port(u16::from_be_bytes(b.get(..2)?.try_into().ok()?)),
            KeyType::Mark => Value::Mark(u32::from_ne_bytes(b.get(..4)?.try_into().ok()?)),
            KeyType::Integer => Value::Integer(u32::from_ne_bytes(b.get(..4)?.try_into().ok()?)),
            KeyType::Ifname => {
                let raw = b.get(..16.min(b.len()))?;
                let end = raw.iter().position(|c| *c == 0).unwrap_or(raw.len());
                Value::Ifname(std::str::from_utf8(&raw[..end]).ok()?.to_owned())
            }
        })
    }
}

/// The key of a set element: one value per key field.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Key(pub Vec<Value>);

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Elem {
    /// Inclusive end of an interval element.
    pub end: Option<Key>,
    pub data: Option<ElemData>,
    pub timeout: Option<Duration>,
}

impl Elem {
    pub fn verdict(v: Verdict) -> Self {
        Elem {
            data: Some(ElemData::Verdict(v)),
            ..Elem::default()
        }
    }

    pub fn value(v: Vec<Value>) -> Self {
        Elem {
            data: Some(ElemData::Value(v)),
            ..Elem::default()
        }
    }

    pub fn interval(end: Vec<Value>) -> Self {
        Elem {
            end: Some(Key(end)),
            ..Elem::default()
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ElemData {
    Verdict(Verdict),
    Value(Vec<Value>),
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Verdict {
    Accept,
    Drop,
    Continue,
    Return,
    Jump(String),
    Goto(String),
}

impl Verdict {
    pub fn chain(&self) -> Option<&str> {
        match self {
            Verdict::Jump(c) | Verdict::Goto(c) => Some(c),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concat_type_numbers_split_back() {
        let f = vec![KeyType::Ipv4Addr, KeyType::InetProto, KeyType::InetService];
        assert_eq!(concat_type(&f), (7 << 12) | (12 << 6) | 13);
        assert_eq!(split_concat_type(concat_type(&f), 3), Some(f));
    }

    #[test]
    fn values_round_trip_through_bytes() {
        for v in [
            Value::Ipv4(Ipv4Addr::new(10, 0, 0, 1)),
            Value::Port(8080),
            Value::Proto(6),
            Value::Mark(0x4000),
            Value::Ifname("eth0".into()),
            Value::Integer(7),
        ] {
            assert_eq!(Value::from_bytes(v.key_type(), &v.bytes()), Some(v));
        }
    }
}
