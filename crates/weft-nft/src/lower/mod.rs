//! Lowering statements to kernel expressions, as nft does it: loads into registers,
//! comparisons, lookups, and the implicit protocol dependencies.

use std::net::IpAddr;

use crate::error::{Error, Result};
use crate::expr::*;
use crate::model::{DataType, Family, KeyType, Set, Value};
use crate::rule::{CmpOp, DynsetOp, KeyField, Reject, Rhs, Rule, Selector, SetRef, Stmt};

mod load;

fn pad4(n: usize) -> usize {
    (n + 3) & !3
}

struct Lowerer {
    family: Family,
    out: Vec<Expr>,
    anon: Vec<Set>,
    have_nfproto: Option<u8>,
    have_l4proto: Option<u8>,
}

pub fn lower(rule: &Rule, family: Family) -> Result<Lowered> {
    let mut l = Lowerer {
        family,
        out: Vec::new(),
        anon: Vec::new(),
        have_nfproto: None,
        have_l4proto: None,
    };
    for s in &rule.stmts {
        l.stmt(s)?;
    }
    Ok(Lowered {
        exprs: l.out,
        anon: l.anon,
    })
}

fn invalid(what: String) -> Error {
    Error::Invalid(what)
}

impl Lowerer {
    fn set_ref(&mut self, key: &[Selector], set: &SetRef) -> Result<SetName> {
        match set {
            SetRef::Named(n) => Ok(SetName::Named(n.clone())),
            SetRef::Anonymous(s) => {
                let types: Vec<KeyType> = key.iter().map(|k| k.key_type()).collect();
                if s.key != types {
                    return Err(invalid(format!(
                        "anonymous set has key {:?} but the rule's key is {:?}",
                        s.key, types
                    )));
                }
                let mut s = (**s).clone();
                s.name = "__set%d".into();
                s.flags.constant = true;
                // As nft does, the rule's key goes into the set's userdata as `typeof`:
                // nft needs it to list a concatenation with a `numgen` field.
                if s.typeof_key.is_none() {
                    s.typeof_key = Some(key.to_vec());
                }
                self.anon.push(s);
                Ok(SetName::Anon(self.anon.len() - 1))
            }
        }
    }

    fn stmt(&mut self, s: &Stmt) -> Result<()> {
        match s {
            Stmt::Match { key, op, rhs } => self.matcher(*key, *op, rhs)?,
            Stmt::Lookup { key, set, negate } => {
                let sreg = self.load_key(key)?;
                let set = self.set_ref(key, set)?;
                self.out.push(Expr::Lookup {
                    set,
                    sreg,
                    dreg: None,
                    invert: *negate,
                });
            }
            Stmt::CtState(states) => {
                self.out.push(Expr::Ct {
                    dreg: REG_1,
                    key: CT_STATE,
                    dir: None,
                });
                self.masked_cmp(states.0, 0, CmpOp::Ne);
            }
            Stmt::MarkMatch {
                ct,
                mask,
                value,
                op,
            } => {
                self.load(
                    if *ct {
                        Selector::CtMark
                    } else {
                        Selector::MetaMark
                    },
                    REG_1,
                );
                self.masked_cmp(*mask, *value, *op);
            }
            Stmt::MarkOr { ct, bits } | Stmt::MarkXor { ct, bits } => {
                // or: keep the other bits, then set these; xor: keep all, then flip these.
                let mask = if matches!(s, Stmt::MarkOr { .. }) {
                    !bits
                } else {
                    u32::MAX
                };
                self.load(
                    if *ct {
                        Selector::CtMark
                    } else {
                        Selector::MetaMark
                    },
                    REG_1,
                );
                self.out.push(Expr::Bitwise {
                    sreg: REG_1,
                    dreg: REG_1,
                    mask: mask.to_ne_bytes().to_vec(),
                    xor: bits.to_ne_bytes().to_vec(),
                });
                self.out.push(mark_from_reg1(*ct));
            }
            Stmt::FibDaddrLocal => {
                self.out.push(Expr::FibAddrType {
                    dreg: REG_1,
                    saddr: false,
                });
                // RTN_LOCAL, in host order like the rest of the route type.
                self.out.push(Expr::Cmp {
                    sreg: REG_1,
                    op: 0,
                    data: 2u32.to_ne_bytes().to_vec(),
                });
            }
            Stmt::FibSaddrLocal(op) => {
                self.out.push(Expr::FibAddrType {
                    dreg: REG_1,
                    saddr: true,
                });
                self.out.push(Expr::Cmp {
                    sreg: REG_1,
                    op: cmp_op(*op),
                    data: 2u32.to_ne_bytes().to_vec(),
                });
            }
            Stmt::Counter => self.out.push(Expr::Counter),
            Stmt::Verdict(v) => self.out.push(Expr::ImmVerdict(v.clone())),
            Stmt::Vmap { key, map } => {
                if let SetRef::Anonymous(s) = map {
                    if s.data != Some(DataType::Verdict) {
                        return Err(invalid("a vmap needs a map with verdict data".into()));
                    }
                }
                let sreg = self.load_key(key)?;
                let set = self.set_ref(key, map)?;
                self.out.push(Expr::Lookup {
                    set,
                    sreg,
                    dreg: Some(REG_VERDICT),
                    invert: false,
                });
            }
            Stmt::Dnat { addr, port } => {
                self.need_l4(port.is_some(), "dnat to a port")?;
                self.nat_to(true, *addr, *port)
            }
            Stmt::Snat { addr, port } => {
                self.need_l4(port.is_some(), "snat to a port")?;
                self.nat_to(false, *addr, *port)
            }
            Stmt::DnatMap { key, map } => self.dnat_map(key, map)?,
            Stmt::Notrack => self.out.push(Expr::Notrack),
            Stmt::Masquerade { fully_random } => self.out.push(Expr::Masq {
                flags: if *fully_random {
                    NAT_RANGE_PROTO_RANDOM_FULLY
                } else {
                    0
                },
            }),
            Stmt::Reject(r) => {
                let e = match (r, self.family) {
                    (Reject::TcpReset, _) => Expr::Reject {
                        kind: REJECT_TCP_RST,
                        code: None,
                    },
                    (Reject::PortUnreachable, Family::Ip) => Expr::Reject {
                        kind: REJECT_ICMP_UNREACH,
                        code: Some(3),
                    },
                    (Reject::PortUnreachable, Family::Ip6) => Expr::Reject {
                        kind: REJECT_ICMP_UNREACH,
                        code: Some(4),
                    },
                    (Reject::PortUnreachable, Family::Inet) => Expr::Reject {
                        kind: REJECT_ICMPX_UNREACH,
                        code: Some(1),
                    },
                };
                self.out.push(e);
            }
            Stmt::Dynset {
                op,
                key,
                set,
                timeout,
                data,
            } => {
                let sreg_key = self.load_key(key)?;
                let sreg_data = self.load_after(key, data)?;
                self.out.push(Expr::Dynset {
                    set: SetName::Named(set.clone()),
                    update: *op == DynsetOp::Update,
                    sreg_key,
                    sreg_data,
                    timeout_ms: timeout.map(|t| t.as_millis() as u64).unwrap_or(0),
                });
            }
            Stmt::Log { prefix, group } => self.out.push(Expr::Log {
                group: *group,
                prefix: prefix.clone(),
            }),
            Stmt::MarkSetMap { ct, key, map } => {
                let sreg = self.load_masked_key(key)?;
                self.out.push(Expr::Lookup {
                    set: SetName::Named(map.clone()),
                    sreg,
                    dreg: Some(REG_1),
                    invert: false,
                });
                self.out.push(mark_from_reg1(*ct));
            }
            Stmt::VmapMasked { key, map } => {
                let sreg = self.load_masked_key(key)?;
                self.out.push(Expr::Lookup {
                    set: SetName::Named(map.clone()),
                    sreg,
                    dreg: Some(REG_VERDICT),
                    invert: false,
                });
            }
            Stmt::LookupMasked { key, set } => {
                let sreg = self.load_masked_key(key)?;
                self.out.push(Expr::Lookup {
                    set: SetName::Named(set.clone()),
                    sreg,
                    dreg: None,
                    invert: false,
                });
            }
        }
        Ok(())
    }

    /// Port mappings only make sense for a known transport protocol; nft insists too.
    fn need_l4(&self, port: bool, what: &str) -> Result<()> {
        if port && self.have_l4proto.is_none() {
            return Err(invalid(format!(
                "{what} needs a transport protocol match earlier in the rule (e.g. `meta l4proto tcp`)"
            )));
        }
        Ok(())
    }

    fn masked_cmp(&mut self, mask: u32, value: u32, op: CmpOp) {
        self.out.push(Expr::Bitwise {
            sreg: REG_1,
            dreg: REG_1,
            mask: mask.to_ne_bytes().to_vec(),
            xor: vec![0; 4],
        });
        self.out.push(Expr::Cmp {
            sreg: REG_1,
            op: cmp_op(op),
            data: value.to_ne_bytes().to_vec(),
        });
    }

    fn matcher(&mut self, key: Selector, op: CmpOp, rhs: &Rhs) -> Result<()> {
        let want = key.key_type();
        let check = |v: &Value| {
            if v.key_type() == want {
                Ok(())
            } else {
                Err(invalid(format!(
                    "{} compared with a {} value",
                    key.nft_syntax(),
                    v.key_type().as_str()
                )))
            }
        };
        self.deps(key)?;
        match rhs {
            Rhs::Value(v) => {
                check(v)?;
                self.load(key, REG_1);
                self.out.push(Expr::Cmp {
                    sreg: REG_1,
                    op: cmp_op(op),
                    data: v.bytes(),
                });
                if key == Selector::MetaL4proto && op == CmpOp::Eq {
                    if let Value::Proto(p) = v {
                        self.have_l4proto = Some(*p);
                    }
                }
            }
            Rhs::Prefix(v, bits) => {
                check(v)?;
                let bytes = v.bytes();
                let total = bytes.len() * 8;
                if *bits as usize > total {
                    return Err(invalid(format!("prefix /{bits} longer than {total} bits")));
                }
                let mask = prefix_mask(bytes.len(), *bits as usize);
                let net: Vec<u8> = bytes.iter().zip(&mask).map(|(a, m)| a & m).collect();
                self.load(key, REG_1);
                if (*bits as usize) < total {
                    self.out.push(Expr::Bitwise {
                        sreg: REG_1,
                        dreg: REG_1,
                        mask,
                        xor: vec![0; bytes.len()],
                    });
                }
                self.out.push(Expr::Cmp {
                    sreg: REG_1,
                    op: cmp_op(op),
                    data: net,
                });
            }
            Rhs::Range(a, b) => {
                check(a)?;
                check(b)?;
                if want.host_order() {
                    // The kernel orders bytes as big-endian numbers; nft would insert a
                    // byte-order conversion, which weft has no use for yet.
                    return Err(invalid(format!(
                        "{} cannot be matched against a range",
                        key.nft_syntax()
                    )));
                }
                self.load(key, REG_1);
                // As nft does: an inclusive range is two comparisons, its negation a
                // `range` expression. Both compare bytes big-endian, as ports are.
                if op == CmpOp::Eq {
                    self.out.push(Expr::Cmp {
                        sreg: REG_1,
                        op: CMP_GTE,
                        data: a.bytes(),
                    });
                    self.out.push(Expr::Cmp {
                        sreg: REG_1,
                        op: CMP_LTE,
                        data: b.bytes(),
                    });
                } else {
                    self.out.push(Expr::Range {
                        sreg: REG_1,
                        op: 1,
                        from: a.bytes(),
                        to: b.bytes(),
                    });
                }
            }
        }
        Ok(())
    }

    fn nat_to(&mut self, dnat: bool, addr: IpAddr, port: Option<u16>) {
        let (family, bytes) = match addr {
            IpAddr::V4(a) => (libc::NFPROTO_IPV4 as u8, a.octets().to_vec()),
            IpAddr::V6(a) => (libc::NFPROTO_IPV6 as u8, a.octets().to_vec()),
        };
        self.out.push(Expr::ImmValue {
            dreg: REG_1,
            data: bytes,
        });
        let mut flags = NAT_RANGE_MAP_IPS;
        if let Some(p) = port {
            self.out.push(Expr::ImmValue {
                dreg: REG_2,
                data: p.to_be_bytes().to_vec(),
            });
            flags |= NAT_RANGE_PROTO_SPECIFIED;
        }
        self.out.push(Expr::Nat {
            dnat,
            family,
            addr_reg: Some(REG_1),
            proto_reg: port.map(|_| REG_2),
            flags,
        });
    }

    fn dnat_map(&mut self, key: &[Selector], map: &SetRef) -> Result<()> {
        let data = match map {
            SetRef::Anonymous(s) => match &s.data {
                Some(DataType::Value(d)) => Some(d.clone()),
                _ => return Err(invalid("dnat map needs address (. port) data".into())),
            },
            SetRef::Named(_) => None,
        };
        let sreg = self.load_key(key)?;
        let set = self.set_ref(key, map)?;
        // A named map's data type is not visible here; assume the documented
        // `ipv4_addr . inet_service` unless an anonymous map says otherwise.
        let data = data.unwrap_or_else(|| vec![KeyType::Ipv4Addr, KeyType::InetService]);
        let (family, addr_len) = match data.first() {
            Some(KeyType::Ipv4Addr) => (libc::NFPROTO_IPV4 as u8, 4),
            Some(KeyType::Ipv6Addr) => (libc::NFPROTO_IPV6 as u8, 16),
            _ => return Err(invalid("dnat map data must start with an address".into())),
        };
        let with_port = data.get(1) == Some(&KeyType::InetService);
        self.need_l4(with_port, "dnat to a port from a map")?;
        self.out.push(Expr::Lookup {
            set,
            sreg,
            dreg: Some(REG_1),
            invert: false,
        });
        let mut flags = NAT_RANGE_MAP_IPS;
        if with_port {
            flags |= NAT_RANGE_PROTO_SPECIFIED;
        }
        self.out.push(Expr::Nat {
            dnat: true,
            family,
            addr_reg: Some(REG_1),
            proto_reg: with_port.then(|| reg32(addr_len / 4)),
            flags,
        });
        Ok(())
    }
}

const CMP_LTE: u32 = 3;
const CMP_GTE: u32 = 5;

fn cmp_op(op: CmpOp) -> u32 {
    match op {
        CmpOp::Eq => 0,
        CmpOp::Ne => 1,
    }
}

fn prefix_mask(len: usize, bits: usize) -> Vec<u8> {
    (0..len)
        .map(|i| {
            let b = bits.saturating_sub(i * 8).min(8);
            if b == 0 {
                0
            } else {
                0xffu8 << (8 - b)
            }
        })
        .collect()
}

/// Writes register 1 to the conntrack mark (`ct`) or the packet mark: the last step of
/// every mark statement.
fn mark_from_reg1(ct: bool) -> Expr {
    if ct {
        Expr::CtSet {
            sreg: REG_1,
            key: CT_MARK,
        }
    } else {
        Expr::MetaSet {
            sreg: REG_1,
            key: META_MARK,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    #[test]
    fn tcp_dport_in_inet_gets_both_dependencies_once() {
        let r = Rule::new(vec![
            Stmt::eq(Selector::IpDaddr, Value::Ipv4(Ipv4Addr::new(10, 96, 0, 1))),
            Stmt::eq(Selector::TcpDport, Value::Port(80)),
            Stmt::eq(Selector::TcpSport, Value::Port(1)),
        ]);
        let l = lower(&r, Family::Inet).unwrap();
        let metas = l
            .exprs
            .iter()
            .filter(|e| matches!(e, Expr::Meta { .. }))
            .count();
        assert_eq!(metas, 2, "{:?}", l.exprs);
    }

    #[test]
    fn ip6_match_in_ip_table_is_refused() {
        let r = Rule::new(vec![Stmt::eq(
            Selector::Ip6Saddr,
            Value::Ipv6(std::net::Ipv6Addr::LOCALHOST),
        )]);
        assert!(lower(&r, Family::Ip).is_err());
    }

    #[test]
    fn prefix_masks() {
        assert_eq!(prefix_mask(4, 12), vec![0xff, 0xf0, 0, 0]);
        assert_eq!(prefix_mask(4, 0), vec![0, 0, 0, 0]);
    }
}
