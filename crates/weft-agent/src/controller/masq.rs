//! Pod traffic leaving the cluster CIDR leaves with the node's address; pod-to-pod traffic,
//! across nodes too, never is NATed (the documents' first rule). One table, one rule.

use ipnet::IpNet;
use weft_nft::{
    Backend, BaseChain, Chain, ChainType, CmpOp, Family, Hook, Policy, Rhs, Rule, Ruleset,
    Selector, Stmt, Table, Value,
};

pub const TABLE: &str = "weft-agent-masq";

pub fn ruleset(cluster_cidr: IpNet) -> Ruleset {
    let (s, d, v) = match cluster_cidr {
        IpNet::V4(n) => (
            Selector::IpSaddr,
            Selector::IpDaddr,
            Value::Ipv4(n.network()),
        ),
        IpNet::V6(n) => (
            Selector::Ip6Saddr,
            Selector::Ip6Daddr,
            Value::Ipv6(n.network()),
        ),
    };
    let len = cluster_cidr.prefix_len();
    let chain = Chain::base(
        "postrouting",
        BaseChain {
            kind: ChainType::Nat,
            hook: Hook::Postrouting,
            priority: 100,
            policy: Policy::Accept,
        },
    )
    .with_rule(Rule::new(vec![
        Stmt::Match {
            key: s,
            op: CmpOp::Eq,
            rhs: Rhs::Prefix(v.clone(), len),
        },
        Stmt::Match {
            key: d,
            op: CmpOp::Ne,
            rhs: Rhs::Prefix(v, len),
        },
        Stmt::Masquerade { fully_random: true },
    ]));
    let mut table = Table::new(Family::Inet, TABLE);
    table.add_chain(chain);
    let mut rs = Ruleset::default();
    rs.add_table(table);
    rs
}

pub fn ensure(cluster_cidr: IpNet) -> Result<(), weft_nft::Error> {
    Backend::open()?
        .apply_full(&ruleset(cluster_cidr))
        .map(|_| ())
}
