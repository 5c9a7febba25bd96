//! A set's NFTA_SET_USERDATA, as nft writes it.
//!
//! The kernel stores this blob without reading it; nft reads it to print a set. It is
//! libnftnl's userdata format: entries of `type (u8) . length (u8) . value`, integers in
//! host byte order, nests being entries whose value is more entries. nft 1.0.6 (Debian 12)
//! needs it to list some sets at all: the type number of a concatenation only names each
//! field's datatype, and `integer` (what `numgen` yields) has no size, so a key such as
//! `ip daddr . meta l4proto . th dport . numgen random mod 1` comes back with a
//! zero-length field and nft aborts in `concat_expr_msort_value` unless the key's `typeof`
//! expressions are here. What is written mirrors nft's `mnl_nft_set_add` for the same
//! declaration (tests/nft_lists.rs compares the bytes with what `nft -f` writes).

use crate::expr::{
    CT_DST_IP, CT_MARK, CT_PROTO_DST, META_IIFNAME, META_L4PROTO, META_MARK, META_OIFNAME,
};
use crate::model::{DataType, KeyType, Set};
use crate::rule::Selector;

// NFTNL_UDATA_SET_*: the entries of a set's userdata.
const SET_KEYBYTEORDER: u8 = 0;
const SET_DATABYTEORDER: u8 = 1;
const SET_KEY_TYPEOF: u8 = 3;
const SET_DATA_TYPEOF: u8 = 4;
const SET_DATA_INTERVAL: u8 = 6;

// NFTNL_UDATA_SET_TYPEOF_*: inside a typeof entry.
const TYPEOF_EXPR: u8 = 0;
const TYPEOF_DATA: u8 = 1;

// NFTNL_UDATA_SET_KEY_CONCAT_SUB_*: inside the n-th field (entry type n) of a concatenation.
const CONCAT_SUB_TYPE: u8 = 0;
const CONCAT_SUB_DATA: u8 = 1;

// nft's expression kinds (`enum expr_types`).
const EXPR_VERDICT: u32 = 1;
const EXPR_PAYLOAD: u32 = 7;
const EXPR_META: u32 = 9;
const EXPR_CT: u32 = 12;
const EXPR_CONCAT: u32 = 13;
const EXPR_NUMGEN: u32 = 23;

// nft's `enum byteorder`.
const BYTEORDER_INVALID: u32 = 0;
const BYTEORDER_HOST: u32 = 1;
const BYTEORDER_BIG: u32 = 2;

// nft's protocol descriptions (`enum proto_desc_id`) and their header field numbers.
const DESC_UDP: u32 = 6;
const DESC_TCP: u32 = 8;
const DESC_TH: u32 = 11;
const DESC_IP: u32 = 12;
const DESC_IP6: u32 = 13;
const IP_PROTOCOL: u32 = 9;
const IP_SADDR: u32 = 11;
const IP_DADDR: u32 = 12;
const IP6_SADDR: u32 = 8;
const IP6_DADDR: u32 = 9;
const L4_SPORT: u32 = 1;
const L4_DPORT: u32 = 2;

const NFT_NG_RANDOM: u32 = 1;
/// nft's `ct` direction when none is given (`-1`).
const CT_DIR_NONE: u32 = u32::MAX;

/// nf_tables' limit on userdata (NFT_USERDATA_MAXLEN).
const MAX_LEN: usize = 256;

/// Entries being written; nests are closed by patching their length byte.
#[derive(Default)]
struct Buf(Vec<u8>);

impl Buf {
    fn u32(&mut self, ty: u8, v: u32) {
        self.0.extend_from_slice(&[ty, 4]);
        self.0.extend_from_slice(&v.to_ne_bytes());
    }

    fn nest(&mut self, ty: u8) -> usize {
        self.0.extend_from_slice(&[ty, 0]);
        self.0.len()
    }

    /// `None` when the nest outgrew its one-byte length.
    fn end_nest(&mut self, start: usize) -> Option<()> {
        self.0[start - 1] = u8::try_from(self.0.len() - start).ok()?;
        Some(())
    }
}

/// The byte order nft records for a field declared by type.
fn type_order(t: KeyType) -> u32 {
    match t {
        KeyType::Ipv4Addr | KeyType::Ipv6Addr | KeyType::InetService => BYTEORDER_BIG,
        // One byte: nft's inet_proto has no byte order.
        KeyType::InetProto => BYTEORDER_INVALID,
        KeyType::Mark | KeyType::Ifname | KeyType::Integer => BYTEORDER_HOST,
    }
}

/// The byte order of what an expression loads, as nft records it for a `typeof` field.
fn selector_order(s: Selector) -> u32 {
    use Selector::*;
    match s {
        MetaL4proto | MetaMark | MetaIifname | MetaOifname | CtMark | NumgenRandom(_) => {
            BYTEORDER_HOST
        }
        IpSaddr | IpDaddr | IpProtocol | Ip6Saddr | Ip6Daddr | TcpSport | TcpDport | UdpSport
        | UdpDport | ThSport | ThDport | CtOriginalIpDaddr | CtOriginalProtoDst => BYTEORDER_BIG,
    }
}

/// An expression of each type, for the data of a map whose key is declared with `typeof`
/// (nft takes `typeof` on both sides or on neither); `None` for a type no expression has
/// a fixed size of. The rendering prints the same expressions.
pub(crate) fn typeof_for_type(t: KeyType) -> Option<Selector> {
    Some(match t {
        KeyType::Ipv4Addr => Selector::IpDaddr,
        KeyType::Ipv6Addr => Selector::Ip6Daddr,
        KeyType::InetProto => Selector::MetaL4proto,
        KeyType::InetService => Selector::TcpDport,
        KeyType::Mark => Selector::MetaMark,
        KeyType::Ifname => Selector::MetaIifname,
        KeyType::Integer => return None,
    })
}

/// One expression: its kind, then what nft's `build_udata` of that kind writes.
fn put_selector(b: &mut Buf, kind_ty: u8, data_ty: u8, s: Selector) -> Option<()> {
    use Selector::*;
    let payload = |desc, field| (EXPR_PAYLOAD, vec![desc, field]);
    let (kind, fields) = match s {
        IpSaddr => payload(DESC_IP, IP_SADDR),
        IpDaddr => payload(DESC_IP, IP_DADDR),
        IpProtocol => payload(DESC_IP, IP_PROTOCOL),
        Ip6Saddr => payload(DESC_IP6, IP6_SADDR),
        Ip6Daddr => payload(DESC_IP6, IP6_DADDR),
        TcpSport => payload(DESC_TCP, L4_SPORT),
        TcpDport => payload(DESC_TCP, L4_DPORT),
        UdpSport => payload(DESC_UDP, L4_SPORT),
        UdpDport => payload(DESC_UDP, L4_DPORT),
        ThSport => payload(DESC_TH, L4_SPORT),
        ThDport => payload(DESC_TH, L4_DPORT),
        MetaL4proto => (EXPR_META, vec![META_L4PROTO]),
        MetaMark => (EXPR_META, vec![META_MARK]),
        MetaIifname => (EXPR_META, vec![META_IIFNAME]),
        MetaOifname => (EXPR_META, vec![META_OIFNAME]),
        CtMark => (EXPR_CT, vec![CT_MARK, CT_DIR_NONE]),
        CtOriginalIpDaddr => (EXPR_CT, vec![CT_DST_IP, 0]),
        CtOriginalProtoDst => (EXPR_CT, vec![CT_PROTO_DST, 0]),
        NumgenRandom(modulus) => (EXPR_NUMGEN, vec![NFT_NG_RANDOM, modulus, 0]),
    };
    b.u32(kind_ty, kind);
    let n = b.nest(data_ty);
    for (i, v) in fields.into_iter().enumerate() {
        b.u32(i as u8, v);
    }
    b.end_nest(n)
}

/// A typeof entry: one expression, or a concatenation of them.
fn put_typeof(b: &mut Buf, ty: u8, exprs: &[Selector]) -> Option<()> {
    let outer = b.nest(ty);
    match exprs {
        [one] => put_selector(b, TYPEOF_EXPR, TYPEOF_DATA, *one)?,
        _ => {
            b.u32(TYPEOF_EXPR, EXPR_CONCAT);
            let data = b.nest(TYPEOF_DATA);
            for (i, s) in exprs.iter().enumerate() {
                let field = b.nest(u8::try_from(i).ok()?);
                put_selector(b, CONCAT_SUB_TYPE, CONCAT_SUB_DATA, *s)?;
                b.end_nest(field)?;
            }
            b.end_nest(data)?;
        }
    }
    b.end_nest(outer)
}

/// A typeof entry without expressions: what nft writes for a value it has no expression
/// for (a concatenation declared by type, a verdict).
fn put_bare_typeof(b: &mut Buf, ty: u8, kind: u32) -> Option<()> {
    let outer = b.nest(ty);
    b.u32(TYPEOF_EXPR, kind);
    let data = b.nest(TYPEOF_DATA);
    b.end_nest(data)?;
    b.end_nest(outer)
}

/// The userdata nft would write for `set`'s declaration: `typeof` when the set has
/// `typeof_key` (its data then as [`typeof_for_type`] expressions), `type` otherwise.
pub fn set_udata(set: &Set) -> Vec<u8> {
    let mut b = Buf::default();
    if let Some(()) = build(&mut b, set, set.typeof_key.as_deref()) {
        if b.0.len() <= MAX_LEN {
            return b.0;
        }
    }
    // Too long for the kernel (a very long concatenation): as if declared by type, which
    // nft lists as long as every field's type has a size.
    let mut b = Buf::default();
    build(&mut b, set, None);
    b.0
}

fn build(b: &mut Buf, set: &Set, typeof_key: Option<&[Selector]>) -> Option<()> {
    let typeof_key = typeof_key.filter(|k| {
        k.len() == set.key.len() && k.iter().zip(&set.key).all(|(s, t)| s.key_type() == *t)
    });
    let typeof_data: Option<Vec<Selector>> = match (&set.data, typeof_key) {
        (Some(DataType::Value(d)), Some(_)) => d.iter().map(|t| typeof_for_type(*t)).collect(),
        _ => None,
    };
    let order = |fields: &[KeyType], exprs: Option<&[Selector]>| match (fields, exprs) {
        ([_], Some([s])) => selector_order(*s),
        ([t], _) => type_order(*t),
        _ => BYTEORDER_INVALID,
    };
    b.u32(SET_KEYBYTEORDER, order(&set.key, typeof_key));
    if let Some(data) = &set.data {
        let o = match data {
            DataType::Verdict => BYTEORDER_INVALID,
            DataType::Value(d) => order(d, typeof_data.as_deref()),
        };
        b.u32(SET_DATABYTEORDER, o);
    }
    match typeof_key {
        Some(k) => put_typeof(b, SET_KEY_TYPEOF, k)?,
        None if set.key.len() > 1 => put_bare_typeof(b, SET_KEY_TYPEOF, EXPR_CONCAT)?,
        None => {}
    }
    if let Some(data) = &set.data {
        match (data, &typeof_data) {
            (_, Some(d)) => put_typeof(b, SET_DATA_TYPEOF, d)?,
            (DataType::Verdict, None) if typeof_key.is_some() => {
                put_bare_typeof(b, SET_DATA_TYPEOF, EXPR_VERDICT)?
            }
            (DataType::Value(d), None) if d.len() > 1 => {
                put_bare_typeof(b, SET_DATA_TYPEOF, EXPR_CONCAT)?
            }
            _ => {}
        }
        b.u32(SET_DATA_INTERVAL, 0);
    }
    Some(())
}

#[cfg(all(test, target_endian = "little"))]
mod tests {
    use super::*;
    use crate::model::Set;

    /// `type len value` entries, values in hex.
    fn entries(e: &[(u8, &str)]) -> Vec<u8> {
        let mut out = Vec::new();
        for (t, hex) in e {
            let v: Vec<u8> = (0..hex.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
                .collect();
            out.extend_from_slice(&[*t, v.len() as u8]);
            out.extend_from_slice(&v);
        }
        out
    }

    /// What nft 1.0.6 writes for `typeof ip daddr . meta l4proto . th dport . numgen
    /// random mod 1 : ip daddr . tcp dport` (read back from the kernel).
    #[test]
    fn backends_map_as_nft_writes_it() {
        let key = vec![
            Selector::IpDaddr,
            Selector::MetaL4proto,
            Selector::ThDport,
            Selector::NumgenRandom(1),
        ];
        let mut m = Set::map(
            "backends",
            key.iter().map(|s| s.key_type()).collect(),
            DataType::Value(vec![KeyType::Ipv4Addr, KeyType::InetService]),
        );
        m.typeof_key = Some(key);
        let want = entries(&[
            (0, "00000000"),
            (1, "00000000"),
            (
                3,
                "00040d00000001580014000407000000010c00040c00000001040c000000010e0004090000000106\
                 0004100000000214000407000000010c00040b000000010402000000031a00041700000001120004\
                 01000000010401000000020400000000",
            ),
            (
                4,
                "00040d000000012c0014000407000000010c00040c00000001040c0000000114000407000000010c\
                 000408000000010402000000",
            ),
            (6, "00000000"),
        ]);
        assert_eq!(set_udata(&m), want);
    }

    #[test]
    fn sets_declared_by_type() {
        let one = Set::new("a", vec![KeyType::Ipv4Addr]);
        assert_eq!(set_udata(&one), entries(&[(0, "02000000")]));
        let mut concat = Set::map(
            "b",
            vec![KeyType::Ipv4Addr, KeyType::InetService],
            DataType::Verdict,
        );
        concat.flags.interval = true;
        assert_eq!(
            set_udata(&concat),
            entries(&[
                (0, "00000000"),
                (1, "00000000"),
                (3, "00040d0000000100"),
                (6, "00000000"),
            ])
        );
    }
}
