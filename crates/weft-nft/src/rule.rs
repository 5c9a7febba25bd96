//! Rules as statements: the level at which weft writes rules and nft prints them.
//! `expr.rs` lowers them to kernel expressions; `render.rs` prints them.

use std::net::IpAddr;
use std::time::Duration;

use crate::model::{KeyType, Set, Value, Verdict};

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Rule {
    pub stmts: Vec<Stmt>,
}

impl Rule {
    pub fn new(stmts: Vec<Stmt>) -> Self {
        Rule { stmts }
    }
}

/// Something a rule can load from the packet or its metadata.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Selector {
    IpSaddr,
    IpDaddr,
    IpProtocol,
    Ip6Saddr,
    Ip6Daddr,
    TcpSport,
    TcpDport,
    UdpSport,
    UdpDport,
    /// Transport-header port of any protocol (`th dport`), no protocol check.
    ThSport,
    ThDport,
    MetaL4proto,
    MetaMark,
    MetaIifname,
    MetaOifname,
    CtMark,
    /// `ct original ip daddr`: the address the connection was opened to, before DNAT.
    CtOriginalIpDaddr,
    /// `ct original proto-dst`: the port the connection was opened to, before DNAT.
    CtOriginalProtoDst,
    /// `numgen random mod N`: a random integer in 0..N.
    NumgenRandom(u32),
}

impl Selector {
    pub fn key_type(self) -> KeyType {
        use Selector::*;
        match self {
            IpSaddr | IpDaddr | CtOriginalIpDaddr => KeyType::Ipv4Addr,
            Ip6Saddr | Ip6Daddr => KeyType::Ipv6Addr,
            IpProtocol | MetaL4proto => KeyType::InetProto,
            TcpSport | TcpDport | UdpSport | UdpDport | ThSport | ThDport | CtOriginalProtoDst => {
                KeyType::InetService
            }
            MetaMark | CtMark => KeyType::Mark,
            MetaIifname | MetaOifname => KeyType::Ifname,
            NumgenRandom(_) => KeyType::Integer,
        }
    }

    pub fn nft_syntax(self) -> String {
        use Selector::*;
        match self {
            IpSaddr => "ip saddr".into(),
            IpDaddr => "ip daddr".into(),
            IpProtocol => "ip protocol".into(),
            Ip6Saddr => "ip6 saddr".into(),
            Ip6Daddr => "ip6 daddr".into(),
            TcpSport => "tcp sport".into(),
            TcpDport => "tcp dport".into(),
            UdpSport => "udp sport".into(),
            UdpDport => "udp dport".into(),
            ThSport => "th sport".into(),
            ThDport => "th dport".into(),
            MetaL4proto => "meta l4proto".into(),
            MetaMark => "meta mark".into(),
            MetaIifname => "iifname".into(),
            MetaOifname => "oifname".into(),
            CtMark => "ct mark".into(),
            CtOriginalIpDaddr => "ct original ip daddr".into(),
            CtOriginalProtoDst => "ct original proto-dst".into(),
            NumgenRandom(n) => format!("numgen random mod {n}"),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Rhs {
    Value(Value),
    /// An address prefix such as 10.0.0.0/8.
    Prefix(Value, u8),
    /// An inclusive range such as ports 30000-32767.
    Range(Value, Value),
}

/// A set a rule refers to: a named one in the table, or an anonymous one written inline.
#[derive(Debug, Clone, PartialEq)]
pub enum SetRef {
    Named(String),
    Anonymous(Box<Set>),
}

/// Connection-tracking states, as the bits the kernel uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CtStates(pub u32);

impl CtStates {
    pub const INVALID: CtStates = CtStates(1);
    pub const ESTABLISHED: CtStates = CtStates(2);
    pub const RELATED: CtStates = CtStates(4);
    pub const NEW: CtStates = CtStates(8);
    pub const UNTRACKED: CtStates = CtStates(64);

    pub fn union(self, other: CtStates) -> CtStates {
        CtStates(self.0 | other.0)
    }

    pub fn names(self) -> Vec<&'static str> {
        [
            (Self::INVALID, "invalid"),
            (Self::ESTABLISHED, "established"),
            (Self::RELATED, "related"),
            (Self::NEW, "new"),
            (Self::UNTRACKED, "untracked"),
        ]
        .into_iter()
        .filter(|(s, _)| self.0 & s.0 != 0)
        .map(|(_, n)| n)
        .collect()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reject {
    /// ICMP (or ICMPv6 / ICMPx in inet tables) port unreachable.
    PortUnreachable,
    TcpReset,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DynsetOp {
    Add,
    Update,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmpOp {
    Eq,
    Ne,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Stmt {
    /// `ip saddr 10.0.0.0/8`, `tcp dport != 22`, `meta l4proto udp`.
    Match {
        key: Selector,
        op: CmpOp,
        rhs: Rhs,
    },
    /// `ip saddr . tcp dport @allowed`, `ip daddr != { 10.0.0.1, 10.0.0.2 }`.
    Lookup {
        key: Vec<Selector>,
        set: SetRef,
        negate: bool,
    },
    /// `ct state established,related`.
    CtState(CtStates),
    /// `meta mark and MASK == VALUE` (or `ct mark ...` with `ct`).
    MarkMatch {
        ct: bool,
        mask: u32,
        value: u32,
        op: CmpOp,
    },
    /// `meta mark set meta mark or BITS` (or `ct mark ...` with `ct`).
    /// `meta mark set meta mark xor BITS`: flips them (clears a bit known to be set).
    MarkXor {
        ct: bool,
        bits: u32,
    },
    MarkOr {
        ct: bool,
        bits: u32,
    },
    /// `fib daddr type local`.
    FibDaddrLocal,
    /// `fib saddr type local` (or `!= local`): the packet comes from this host itself.
    FibSaddrLocal(CmpOp),
    Counter,
    Verdict(Verdict),
    /// `KEY vmap @map` or `KEY vmap { ... }`.
    Vmap {
        key: Vec<Selector>,
        map: SetRef,
    },
    Dnat {
        addr: IpAddr,
        port: Option<u16>,
    },
    /// `dnat ip to KEY map @map`, the map's data being `ipv4_addr . inet_service`.
    DnatMap {
        key: Vec<Selector>,
        map: SetRef,
    },
    Snat {
        addr: IpAddr,
        port: Option<u16>,
    },
    Masquerade {
        fully_random: bool,
    },
    /// `notrack`: conntrack skips the packet (in a raw-priority chain), so no NAT or
    /// state applies to it, and no conntrack insert can race.
    Notrack,
    Reject(Reject),
    /// `update @set { KEY timeout T }`, or for a map `update @map { KEY timeout T : DATA }`:
    /// session affinity and rate tracking.
    Dynset {
        op: DynsetOp,
        key: Vec<Selector>,
        set: String,
        timeout: Option<Duration>,
        /// The element's data, loaded from the packet (maps only; empty for sets).
        data: Vec<Selector>,
    },
    /// `log prefix "..."` to the kernel log, or `log group N` to nflog.
    Log {
        prefix: Option<String>,
        group: Option<u16>,
    },
    /// `meta mark set KEY map @m` (or `ct mark set ...` with `ct`): the mark becomes the
    /// map's data for the key; a key the map lacks ends the rule, mark untouched.
    MarkSetMap {
        ct: bool,
        key: Vec<KeyField>,
        map: String,
    },
    /// `meta mark and 0xffff0000 . ct mark . th dport vmap @v`: a verdict map looked up
    /// with a key whose fields may be masked (only the bits of the mask count).
    VmapMasked {
        key: Vec<KeyField>,
        map: String,
    },
    /// `meta mark and 0xff00ffff @s`: a named set looked up with a key whose fields may
    /// be masked; a miss ends the rule. With a counting set
    /// ([`crate::SetFlags::counter`]) the element found counts the packet.
    LookupMasked {
        key: Vec<KeyField>,
        set: String,
    },
}

/// One field of a [`Stmt::VmapMasked`] or [`Stmt::MarkSetMap`] key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyField {
    pub sel: Selector,
    /// For `mark` fields: `sel and MASK`.
    pub mask: Option<u32>,
}

impl KeyField {
    pub fn load(sel: Selector) -> KeyField {
        KeyField { sel, mask: None }
    }

    pub fn masked(sel: Selector, mask: u32) -> KeyField {
        KeyField {
            sel,
            mask: Some(mask),
        }
    }
}

impl Stmt {
    pub fn eq(key: Selector, v: Value) -> Stmt {
        Stmt::Match {
            key,
            op: CmpOp::Eq,
            rhs: Rhs::Value(v),
        }
    }

    pub fn jump(chain: impl Into<String>) -> Stmt {
        Stmt::Verdict(Verdict::Jump(chain.into()))
    }

    pub fn goto(chain: impl Into<String>) -> Stmt {
        Stmt::Verdict(Verdict::Goto(chain.into()))
    }

    /// Named sets and maps this statement reads or writes.
    pub fn set_refs(&self) -> Vec<&str> {
        match self {
            Stmt::Lookup {
                set: SetRef::Named(n),
                ..
            }
            | Stmt::Vmap {
                map: SetRef::Named(n),
                ..
            }
            | Stmt::DnatMap {
                map: SetRef::Named(n),
                ..
            } => vec![n.as_str()],
            Stmt::Dynset { set, .. } => vec![set.as_str()],
            Stmt::MarkSetMap { map, .. }
            | Stmt::VmapMasked { map, .. }
            | Stmt::LookupMasked { set: map, .. } => vec![map.as_str()],
            _ => Vec::new(),
        }
    }

    /// Chains this statement can transfer control to, for ordering and validation.
    pub fn chain_refs(&self) -> Vec<&str> {
        let mut out = Vec::new();
        match self {
            Stmt::Verdict(v) => out.extend(v.chain()),
            Stmt::Vmap {
                map: SetRef::Anonymous(s),
                ..
            } => {
                for e in s.elements.values() {
                    if let Some(crate::model::ElemData::Verdict(v)) = &e.data {
                        out.extend(v.chain());
                    }
                }
            }
            _ => {}
        }
        out
    }
}
