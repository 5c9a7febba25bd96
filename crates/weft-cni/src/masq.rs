//! `ipMasq`: traffic from the network's pods to anywhere outside its subnet leaves with the
//! host's address. One nf_tables table per network holds one rule for the whole subnet,
//! so every ADD writes the same table (an idempotent, atomic replace) and parallel ADDs
//! cannot disagree; the reference plugin's per-container chains buy nothing more.

use crate::error::{code, Error, Result};
use ipnet::IpNet;
use weft_nft::{
    Backend, BaseChain, Chain, ChainType, CmpOp, Family, Hook, Policy, Rhs, Rule, Ruleset,
    Selector, Stmt, Table, Value,
};

pub fn table_name(network: &str) -> String {
    format!("weft-cni-{network}")
}

/// The ruleset for `subnets` (both families go in one `inet` table).
pub fn ruleset(network: &str, subnets: &[IpNet]) -> Ruleset {
    let mut chain = Chain::base(
        "postrouting",
        BaseChain {
            kind: ChainType::Nat,
            hook: Hook::Postrouting,
            priority: 100,
            policy: Policy::Accept,
        },
    );
    for net in subnets {
        let (saddr, daddr, v, multicast) = match net {
            IpNet::V4(n) => (
                Selector::IpSaddr,
                Selector::IpDaddr,
                Value::Ipv4(n.network()),
                (Value::Ipv4([224, 0, 0, 0].into()), 4),
            ),
            IpNet::V6(n) => (
                Selector::Ip6Saddr,
                Selector::Ip6Daddr,
                Value::Ipv6(n.network()),
                (Value::Ipv6([0xff00, 0, 0, 0, 0, 0, 0, 0].into()), 8),
            ),
        };
        let m = |key, op, rhs| Stmt::Match { key, op, rhs };
        chain = chain.with_rule(Rule::new(vec![
            m(saddr, CmpOp::Eq, Rhs::Prefix(v.clone(), net.prefix_len())),
            m(daddr, CmpOp::Ne, Rhs::Prefix(v, net.prefix_len())),
            m(daddr, CmpOp::Ne, Rhs::Prefix(multicast.0, multicast.1)),
            Stmt::Masquerade {
                fully_random: false,
            },
        ]));
    }
    let mut table = Table::new(Family::Inet, table_name(network));
    table.add_chain(chain);
    let mut rs = Ruleset::default();
    rs.add_table(table);
    rs
}

/// Installs (or re-installs, identically) the network's masquerade rule.
pub fn ensure(network: &str, subnets: &[IpNet]) -> Result<()> {
    let mut nft =
        Backend::open().map_err(|e| Error::new(code::KERNEL, format!("open nf_tables: {e}")))?;
    nft.apply_full(&ruleset(network, subnets))
        .map(|_| ())
        .map_err(|e| {
            Error::new(
                code::KERNEL,
                format!("install the ipMasq rule for {network}: {e}"),
            )
        })
}
