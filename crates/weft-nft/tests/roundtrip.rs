//! What the netlink backend writes reads back equal: through weft's own read-back and
//! through `nft -j list ruleset`.

mod common;

use common::Netns;
use std::net::Ipv4Addr;
use weft_nft::netlink::decode::kernel_view;
use weft_nft::*;

fn ip(a: [u8; 4]) -> Value {
    Value::Ipv4(Ipv4Addr::from(a))
}

#[test]
fn table_chain_rule_round_trip() {
    let ns = Netns::new("rt");
    let mut be = ns.backend();
    let mut t = Table::new(Family::Ip, "weft");
    t.add_chain(Chain::regular("svc").with_rule(Rule::new(vec![
        Stmt::Counter,
        Stmt::Verdict(Verdict::Accept),
    ])));
    t.add_chain(
        Chain::base(
            "prerouting",
            BaseChain {
                kind: ChainType::Filter,
                hook: Hook::Prerouting,
                priority: -100,
                policy: Policy::Accept,
            },
        )
        .with_rule(Rule::new(vec![
            Stmt::eq(Selector::IpDaddr, ip([10, 96, 0, 1])),
            Stmt::eq(Selector::TcpDport, Value::Port(80)),
            Stmt::jump("svc"),
        ])),
    );
    let mut rs = Ruleset::default();
    rs.add_table(t);
    be.apply_full(&rs).expect("apply");
    let back = be
        .read_table(Family::Ip, "weft")
        .expect("read")
        .expect("table exists");
    let want = kernel_view(rs.table(Family::Ip, "weft").unwrap()).unwrap();
    assert_eq!(back, want);
    let j = ns.nft_json();
    let text = j.to_string();
    assert!(text.contains("\"prerouting\""), "{text}");
    eprintln!("{}", ns.nft_text());
}
