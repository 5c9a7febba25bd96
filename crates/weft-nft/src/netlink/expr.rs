//! Wire format of kernel expressions (NFTA_EXPR_*), both directions.

use super::attr::{be16, be32, be64, string, Attrs, Writer};
use crate::error::{Error, Result};
use crate::expr::{Expr, SetName};
use crate::model::Verdict;

const LIST_ELEM: u16 = 1;
const EXPR_NAME: u16 = 1;
const EXPR_DATA: u16 = 2;
pub const DATA_VALUE: u16 = 1;
pub const DATA_VERDICT: u16 = 2;
const VERDICT_CODE: u16 = 1;
const VERDICT_CHAIN: u16 = 2;

const NF_DROP: i32 = 0;
const NF_ACCEPT: i32 = 1;
const NFT_CONTINUE: i32 = -1;
const NFT_JUMP: i32 = -3;
const NFT_GOTO: i32 = -4;
const NFT_RETURN: i32 = -5;

const NUMGEN_RANDOM: u32 = 1;
const FIB_RESULT_ADDRTYPE: u32 = 3;
const FIB_F_SADDR: u32 = 1;
const FIB_F_DADDR: u32 = 2;
const LOOKUP_F_INV: u32 = 1;

/// Writes an NFTA_DATA_VALUE nest.
pub fn put_value(w: &mut Writer, ty: u16, data: &[u8]) {
    let n = w.nest(ty);
    w.put(DATA_VALUE, data);
    w.end_nest(n);
}

/// Writes an NFTA_DATA_VERDICT nest inside an attribute of type `ty`.
pub fn put_verdict(w: &mut Writer, ty: u16, v: &Verdict) {
    let n = w.nest(ty);
    let vn = w.nest(DATA_VERDICT);
    let code = match v {
        Verdict::Accept => NF_ACCEPT,
        Verdict::Drop => NF_DROP,
        Verdict::Continue => NFT_CONTINUE,
        Verdict::Return => NFT_RETURN,
        Verdict::Jump(_) => NFT_JUMP,
        Verdict::Goto(_) => NFT_GOTO,
    };
    w.put_be32(VERDICT_CODE, code as u32);
    if let Some(c) = v.chain() {
        w.put_str(VERDICT_CHAIN, c);
    }
    w.end_nest(vn);
    w.end_nest(n);
}

pub fn decode_verdict(d: &[u8]) -> Result<Verdict> {
    let inner = Attrs(d)
        .get(DATA_VERDICT)
        .ok_or_else(|| Error::Decode("data without a verdict".into()))?;
    let a = Attrs(inner);
    let code = a.get(VERDICT_CODE).and_then(be32).map(|c| c as i32);
    let chain = || {
        a.get(VERDICT_CHAIN)
            .and_then(string)
            .ok_or_else(|| Error::Decode("jump without a chain".into()))
    };
    Ok(match code {
        Some(NF_ACCEPT) => Verdict::Accept,
        Some(NF_DROP) => Verdict::Drop,
        Some(NFT_CONTINUE) => Verdict::Continue,
        Some(NFT_RETURN) => Verdict::Return,
        Some(NFT_JUMP) => Verdict::Jump(chain()?),
        Some(NFT_GOTO) => Verdict::Goto(chain()?),
        other => return Err(Error::Decode(format!("unknown verdict code {other:?}"))),
    })
}

pub fn decode_value(d: &[u8]) -> Option<Vec<u8>> {
    Attrs(d).get(DATA_VALUE).map(<[u8]>::to_vec)
}

/// Writes NFTA_RULE_EXPRESSIONS' list elements; `anon` gives the batch id and name of
/// each anonymous set the rule created.
pub fn put_exprs(w: &mut Writer, ty: u16, exprs: &[Expr], anon: &[(u32, String)]) {
    let list = w.nest(ty);
    for e in exprs {
        let el = w.nest(LIST_ELEM);
        w.put_str(EXPR_NAME, e.kind());
        let data = w.nest(EXPR_DATA);
        put_expr(w, e, anon);
        w.end_nest(data);
        w.end_nest(el);
    }
    w.end_nest(list);
}

fn put_set_name(w: &mut Writer, name_ty: u16, id_ty: u16, set: &SetName, anon: &[(u32, String)]) {
    match set {
        SetName::Named(n) => w.put_str(name_ty, n),
        SetName::Anon(i) => {
            let (id, name) = anon
                .get(*i)
                .map(|(id, n)| (*id, n.as_str()))
                .unwrap_or((0, "__set%d"));
            w.put_str(name_ty, name);
            w.put_be32(id_ty, id);
        }
    }
}

fn put_expr(w: &mut Writer, e: &Expr, anon: &[(u32, String)]) {
    match e {
        Expr::Payload {
            dreg,
            base,
            offset,
            len,
        } => {
            w.put_be32(1, *dreg);
            w.put_be32(2, *base);
            w.put_be32(3, *offset);
            w.put_be32(4, *len);
        }
        Expr::Meta { dreg, key } => {
            w.put_be32(1, *dreg);
            w.put_be32(2, *key);
        }
        Expr::MetaSet { sreg, key } => {
            w.put_be32(2, *key);
            w.put_be32(3, *sreg);
        }
        Expr::Ct { dreg, key, dir } => {
            w.put_be32(1, *dreg);
            w.put_be32(2, *key);
            if let Some(d) = dir {
                w.put_u8(3, *d);
            }
        }
        Expr::CtSet { sreg, key } => {
            w.put_be32(2, *key);
            w.put_be32(4, *sreg);
        }
        Expr::Cmp { sreg, op, data } => {
            w.put_be32(1, *sreg);
            w.put_be32(2, *op);
            put_value(w, 3, data);
        }
        Expr::Range { sreg, op, from, to } => {
            w.put_be32(1, *sreg);
            w.put_be32(2, *op);
            put_value(w, 3, from);
            put_value(w, 4, to);
        }
        Expr::Bitwise {
            sreg,
            dreg,
            mask,
            xor,
        } => {
            w.put_be32(1, *sreg);
            w.put_be32(2, *dreg);
            w.put_be32(3, mask.len() as u32);
            put_value(w, 4, mask);
            put_value(w, 5, xor);
        }
        Expr::Lookup {
            set,
            sreg,
            dreg,
            invert,
        } => {
            put_set_name(w, 1, 4, set, anon);
            w.put_be32(2, *sreg);
            if let Some(d) = dreg {
                w.put_be32(3, *d);
            }
            if *invert {
                w.put_be32(5, LOOKUP_F_INV);
            }
        }
        Expr::ImmValue { dreg, data } => {
            w.put_be32(1, *dreg);
            put_value(w, 2, data);
        }
        Expr::ImmVerdict(v) => {
            w.put_be32(1, 0);
            put_verdict(w, 2, v);
        }
        Expr::Counter => {
            w.put_be64(1, 0);
            w.put_be64(2, 0);
        }
        Expr::Numgen { dreg, modulus } => {
            w.put_be32(1, *dreg);
            w.put_be32(2, *modulus);
            w.put_be32(3, NUMGEN_RANDOM);
            w.put_be32(4, 0);
        }
        Expr::FibAddrType { dreg, saddr } => {
            w.put_be32(1, *dreg);
            w.put_be32(2, FIB_RESULT_ADDRTYPE);
            w.put_be32(3, if *saddr { FIB_F_SADDR } else { FIB_F_DADDR });
        }
        Expr::Nat {
            dnat,
            family,
            addr_reg,
            proto_reg,
            flags,
        } => {
            w.put_be32(1, Expr::nat_type(*dnat));
            w.put_be32(2, *family as u32);
            if let Some(r) = addr_reg {
                w.put_be32(3, *r);
            }
            if let Some(r) = proto_reg {
                w.put_be32(5, *r);
            }
            if *flags != 0 {
                w.put_be32(7, *flags);
            }
        }
        Expr::Masq { flags } => {
            if *flags != 0 {
                w.put_be32(1, *flags);
            }
        }
        Expr::Notrack => {}
        Expr::Reject { kind, code } => {
            w.put_be32(1, *kind);
            if let Some(c) = code {
                w.put_u8(2, *c);
            }
        }
        Expr::Dynset {
            set,
            update,
            sreg_key,
            sreg_data,
            timeout_ms,
        } => {
            put_set_name(w, 1, 2, set, anon);
            w.put_be32(3, u32::from(*update));
            w.put_be32(4, *sreg_key);
            if let Some(r) = sreg_data {
                w.put_be32(5, *r);
            }
            if *timeout_ms != 0 {
                w.put_be64(6, *timeout_ms);
            }
        }
        Expr::Log { group, prefix } => {
            if let Some(g) = group {
                w.put_be16(1, *g);
            }
            if let Some(p) = prefix {
                w.put_str(2, p);
            }
        }
    }
}

fn need<T>(v: Option<T>, kind: &str, what: &str) -> Result<T> {
    v.ok_or_else(|| Error::Decode(format!("{kind} expression without {what}")))
}

/// Reads NFTA_RULE_EXPRESSIONS. Lookups name sets as the kernel does (`__set3`); the caller
/// maps anonymous names to [`SetName::Anon`].
pub fn decode_exprs(d: &[u8]) -> Result<Vec<Expr>> {
    let mut out = Vec::new();
    for (ty, el) in Attrs(d) {
        if ty != LIST_ELEM {
            continue;
        }
        let a = Attrs(el);
        let name = need(a.get(EXPR_NAME).and_then(string), "an", "a name")?;
        let data = Attrs(a.get(EXPR_DATA).unwrap_or(&[]));
        out.push(decode_expr(&name, data)?);
    }
    Ok(out)
}

fn decode_expr(name: &str, a: Attrs) -> Result<Expr> {
    let u = |t: u16| a.get(t).and_then(be32);
    let v = |t: u16| a.get(t).and_then(decode_value);
    let k = name;
    Ok(match name {
        "payload" => Expr::Payload {
            dreg: need(u(1), k, "dreg")?,
            base: need(u(2), k, "base")?,
            offset: need(u(3), k, "offset")?,
            len: need(u(4), k, "len")?,
        },
        "meta" => match (u(1), u(3)) {
            (Some(dreg), _) => Expr::Meta {
                dreg,
                key: need(u(2), k, "key")?,
            },
            (None, Some(sreg)) => Expr::MetaSet {
                sreg,
                key: need(u(2), k, "key")?,
            },
            _ => return Err(Error::Decode("meta expression without register".into())),
        },
        "ct" => match (u(1), u(4)) {
            (Some(dreg), _) => Expr::Ct {
                dreg,
                key: need(u(2), k, "key")?,
                dir: a.get(3).and_then(|b| b.first().copied()),
            },
            (None, Some(sreg)) => Expr::CtSet {
                sreg,
                key: need(u(2), k, "key")?,
            },
            _ => return Err(Error::Decode("ct expression without register".into())),
        },
        "cmp" => Expr::Cmp {
            sreg: need(u(1), k, "sreg")?,
            op: need(u(2), k, "op")?,
            data: need(v(3), k, "data")?,
        },
        "range" => Expr::Range {
            sreg: need(u(1), k, "sreg")?,
            op: need(u(2), k, "op")?,
            from: need(v(3), k, "from")?,
            to: need(v(4), k, "to")?,
        },
        "bitwise" => Expr::Bitwise {
            sreg: need(u(1), k, "sreg")?,
            dreg: need(u(2), k, "dreg")?,
            mask: need(v(4), k, "mask")?,
            xor: need(v(5), k, "xor")?,
        },
        "lookup" => Expr::Lookup {
            set: SetName::Named(need(a.get(1).and_then(string), k, "set")?),
            sreg: need(u(2), k, "sreg")?,
            dreg: u(3),
            invert: u(5).unwrap_or(0) & LOOKUP_F_INV != 0,
        },
        "immediate" => {
            let dreg = need(u(1), k, "dreg")?;
            let data = need(a.get(2), k, "data")?;
            if dreg == 0 {
                Expr::ImmVerdict(decode_verdict(data)?)
            } else {
                Expr::ImmValue {
                    dreg,
                    data: need(decode_value(data), k, "value")?,
                }
            }
        }
        "counter" => Expr::Counter,
        "notrack" => Expr::Notrack,
        "numgen" => Expr::Numgen {
            dreg: need(u(1), k, "dreg")?,
            modulus: need(u(2), k, "modulus")?,
        },
        "fib" => Expr::FibAddrType {
            dreg: need(u(1), k, "dreg")?,
            saddr: u(3).is_some_and(|f| f & FIB_F_SADDR != 0),
        },
        "nat" => Expr::Nat {
            dnat: need(u(1), k, "type")? == Expr::nat_type(true),
            family: need(u(2), k, "family")? as u8,
            addr_reg: u(3),
            proto_reg: u(5),
            flags: u(7).unwrap_or(0),
        },
        "masq" => Expr::Masq {
            flags: u(1).unwrap_or(0),
        },
        "reject" => Expr::Reject {
            kind: need(u(1), k, "type")?,
            code: a.get(2).and_then(|d| d.first().copied()),
        },
        "dynset" => Expr::Dynset {
            set: SetName::Named(need(a.get(1).and_then(string), k, "set")?),
            update: need(u(3), k, "op")? == 1,
            sreg_key: need(u(4), k, "sreg")?,
            sreg_data: u(5),
            timeout_ms: a.get(6).and_then(be64).unwrap_or(0),
        },
        "log" => Expr::Log {
            group: a.get(1).and_then(be16),
            prefix: a.get(2).and_then(string),
        },
        other => return Err(Error::Decode(format!("unsupported expression `{other}`"))),
    })
}
