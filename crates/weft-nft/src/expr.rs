//! Kernel expressions: what a rule is once lowered (see `lower.rs`), and what the kernel
//! reports when rules are read back.

use crate::model::{Set, Verdict};

pub use crate::lower::lower;

pub const REG_VERDICT: u32 = 0;
pub const REG_1: u32 = 1;
pub const REG_2: u32 = 2;

pub(crate) const PAYLOAD_NETWORK: u32 = 1;
pub(crate) const PAYLOAD_TRANSPORT: u32 = 2;

pub const META_MARK: u32 = 3;
pub const META_IIFNAME: u32 = 6;
pub const META_OIFNAME: u32 = 7;
pub const META_NFPROTO: u32 = 15;
pub const META_L4PROTO: u32 = 16;
pub const CT_STATE: u32 = 0;
pub const CT_MARK: u32 = 3;
pub const CT_PROTO_DST: u32 = 12;
pub const CT_DST_IP: u32 = 20;
pub const CT_DIR_ORIGINAL: u8 = 0;

pub(crate) const NAT_SNAT: u32 = 0;
pub(crate) const NAT_DNAT: u32 = 1;
pub(crate) const NAT_RANGE_MAP_IPS: u32 = 1;
pub(crate) const NAT_RANGE_PROTO_SPECIFIED: u32 = 2;
pub(crate) const NAT_RANGE_PROTO_RANDOM_FULLY: u32 = 16;

pub(crate) const REJECT_ICMP_UNREACH: u32 = 0;
pub(crate) const REJECT_TCP_RST: u32 = 1;
pub(crate) const REJECT_ICMPX_UNREACH: u32 = 2;

/// Which set a lookup or dynset names: a table's set, or the n-th anonymous set of the rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SetName {
    Named(String),
    Anon(usize),
}

/// One kernel expression, with the attributes weft sets and reads back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expr {
    Payload {
        dreg: u32,
        base: u32,
        offset: u32,
        len: u32,
    },
    Meta {
        dreg: u32,
        key: u32,
    },
    MetaSet {
        sreg: u32,
        key: u32,
    },
    Ct {
        dreg: u32,
        key: u32,
        /// Which tuple a per-direction key reads: 0 original, 1 reply.
        dir: Option<u8>,
    },
    CtSet {
        sreg: u32,
        key: u32,
    },
    Cmp {
        sreg: u32,
        op: u32,
        data: Vec<u8>,
    },
    Range {
        sreg: u32,
        op: u32,
        from: Vec<u8>,
        to: Vec<u8>,
    },
    Bitwise {
        sreg: u32,
        dreg: u32,
        mask: Vec<u8>,
        xor: Vec<u8>,
    },
    Lookup {
        set: SetName,
        sreg: u32,
        dreg: Option<u32>,
        invert: bool,
    },
    ImmValue {
        dreg: u32,
        data: Vec<u8>,
    },
    ImmVerdict(Verdict),
    Counter,
    Numgen {
        dreg: u32,
        modulus: u32,
    },
    /// The route type of the packet's destination, or with `saddr` of its source.
    FibAddrType {
        dreg: u32,
        saddr: bool,
    },
    Nat {
        dnat: bool,
        family: u8,
        addr_reg: Option<u32>,
        proto_reg: Option<u32>,
        flags: u32,
    },
    Masq {
        flags: u32,
    },
    Notrack,
    Reject {
        kind: u32,
        code: Option<u8>,
    },
    Dynset {
        set: SetName,
        update: bool,
        sreg_key: u32,
        /// Where the element's data comes from, for maps.
        sreg_data: Option<u32>,
        timeout_ms: u64,
    },
    Log {
        group: Option<u16>,
        prefix: Option<String>,
    },
}

/// A rule lowered for the kernel, with the anonymous sets it creates alongside.
#[derive(Debug, Clone, PartialEq)]
pub struct Lowered {
    pub exprs: Vec<Expr>,
    pub anon: Vec<Set>,
}

/// The register the kernel reports for the 32-bit register slot `idx` (0 = NFT_REG32_00):
/// slots on a 128-bit boundary read back as the legacy 128-bit register numbers.
pub fn reg32(idx: u32) -> u32 {
    if idx.is_multiple_of(4) {
        1 + idx / 4
    } else {
        8 + idx
    }
}

impl Expr {
    /// The kernel's name for the expression type.
    pub fn kind(&self) -> &'static str {
        match self {
            Expr::Payload { .. } => "payload",
            Expr::Meta { .. } | Expr::MetaSet { .. } => "meta",
            Expr::Ct { .. } | Expr::CtSet { .. } => "ct",
            Expr::Cmp { .. } => "cmp",
            Expr::Range { .. } => "range",
            Expr::Bitwise { .. } => "bitwise",
            Expr::Lookup { .. } => "lookup",
            Expr::ImmValue { .. } | Expr::ImmVerdict(_) => "immediate",
            Expr::Counter => "counter",
            Expr::Numgen { .. } => "numgen",
            Expr::FibAddrType { .. } => "fib",
            Expr::Nat { .. } => "nat",
            Expr::Masq { .. } => "masq",
            Expr::Notrack => "notrack",
            Expr::Reject { .. } => "reject",
            Expr::Dynset { .. } => "dynset",
            Expr::Log { .. } => "log",
        }
    }

    pub fn nat_type(dnat: bool) -> u32 {
        if dnat {
            NAT_DNAT
        } else {
            NAT_SNAT
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registers_match_kernel_read_back_numbering() {
        assert_eq!(reg32(0), REG_1);
        assert_eq!(reg32(1), 9);
        assert_eq!(reg32(4), REG_2);
    }
}
