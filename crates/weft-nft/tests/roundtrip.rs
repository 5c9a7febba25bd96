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
}

fn json_objects<'a>(j: &'a serde_json::Value, kind: &str) -> Vec<&'a serde_json::Value> {
    j["nftables"]
        .as_array()
        .map(|a| a.iter().filter_map(|o| o.get(kind)).collect())
        .unwrap_or_default()
}

#[test]
fn every_feature_reads_back_equal_through_weft_and_nft() {
    let ns = Netns::new("all");
    let mut be = ns.backend();
    let rs = common::fixture::ruleset();
    let sum = be.apply_full(&rs).expect("apply");
    assert!(sum.rules_added > 20, "{sum:?}");

    // weft's own read-back, rule by rule at the level of kernel expressions.
    for t in rs.tables.values() {
        let back = be
            .read_table(t.family, &t.name)
            .expect("read")
            .expect("table exists");
        let want = kernel_view(t).expect("lowering");
        assert_eq!(back.sets, want.sets, "sets of {}", t.name);
        for (name, c) in &want.chains {
            assert_eq!(back.chains.get(name), Some(c), "chain {name} of {}", t.name);
        }
        assert_eq!(back, want);
    }

    // nft's view: same tables, chains with the same hooks, sets with the same elements.
    let j = ns.nft_json();
    let tables: Vec<(String, String)> = json_objects(&j, "table")
        .iter()
        .map(|t| {
            (
                t["family"].as_str().unwrap_or("").into(),
                t["name"].as_str().unwrap_or("").into(),
            )
        })
        .collect();
    assert_eq!(tables.len(), 2, "{tables:?}");
    for t in rs.tables.values() {
        assert!(
            tables.contains(&(t.family.as_str().into(), t.name.clone())),
            "{tables:?}"
        );
        for c in t.chains.values() {
            let jc = json_objects(&j, "chain")
                .into_iter()
                .find(|jc| jc["table"] == t.name.as_str() && jc["name"] == c.name.as_str())
                .unwrap_or_else(|| panic!("nft lacks chain {}", c.name));
            if let Some(b) = &c.base {
                assert_eq!(jc["hook"], b.hook.as_str(), "{jc}");
                assert_eq!(jc["type"], b.kind.as_str(), "{jc}");
                assert_eq!(jc["prio"], b.priority, "{jc}");
                assert_eq!(
                    jc["policy"],
                    if b.policy == Policy::Accept {
                        "accept"
                    } else {
                        "drop"
                    }
                );
            } else {
                assert!(jc.get("hook").is_none(), "{jc}");
            }
            let rules = json_objects(&j, "rule")
                .into_iter()
                .filter(|r| r["table"] == t.name.as_str() && r["chain"] == c.name.as_str())
                .count();
            assert_eq!(rules, c.rules.len(), "rules of chain {}", c.name);
        }
        for s in t.sets.values() {
            let kind = if s.is_map() { "map" } else { "set" };
            let js = json_objects(&j, kind)
                .into_iter()
                .find(|js| js["table"] == t.name.as_str() && js["name"] == s.name.as_str())
                .unwrap_or_else(|| panic!("nft lacks {kind} {}", s.name));
            let ty: Vec<String> = match &js["type"] {
                serde_json::Value::String(x) => vec![x.clone()],
                serde_json::Value::Array(a) => a
                    .iter()
                    .map(|x| x.as_str().unwrap_or("").to_owned())
                    .collect(),
                other => panic!("type {other}"),
            };
            let want: Vec<String> = s.key.iter().map(|k| k.as_str().to_owned()).collect();
            assert_eq!(ty, want, "key of {}", s.name);
            let n = js
                .get("elem")
                .and_then(|e| e.as_array())
                .map(|a| a.len())
                .unwrap_or(0);
            assert_eq!(n, s.elements.len(), "elements of {}: {js}", s.name);
        }
    }
    // Spot checks of how nft reads individual rules and elements.
    let text = ns.nft_text();
    for needle in [
        "ip daddr . meta l4proto . th dport vmap @svc-ips",
        "10.96.0.1 . tcp . 80 : goto svc-a",
        "numgen random mod 2 vmap { 0 : goto sep-a-0, 1 : goto sep-a-1 }",
        "update @aff-a { ip saddr timeout 3s }",
        "masquerade fully-random",
        "ct state established,related accept",
        "reject with tcp reset",
        "10.0.0.0/8",
        "10.0.0.0/24 . 80-90",
        "fib daddr type local",
        "log prefix \"weft drop \" group 2",
        "dnat to 10.244.1.5:8080",
        "meta mark set meta mark | 0x00004000",
        "iifname \"lo\" accept",
        "dnat ip to 10.0.0.1:80",
        "dnat ip6 to [fd00::2]:8080",
        "ip saddr { 1.1.1.1, 8.8.8.8 }",
        "0x00004000",
        "\"eth0\"",
    ] {
        assert!(text.contains(needle), "nft list lacks `{needle}`:\n{text}");
    }
}

#[test]
fn notrack_in_a_raw_chain_round_trips_and_nft_reads_it() {
    let ns = Netns::new("nt");
    let mut be = ns.backend();
    let mut t = Table::new(Family::Ip, "weft-raw");
    t.add_chain(
        Chain::base(
            "prerouting",
            BaseChain {
                kind: ChainType::Filter,
                hook: Hook::Prerouting,
                priority: -300,
                policy: Policy::Accept,
            },
        )
        .with_rule(Rule::new(vec![
            Stmt::eq(Selector::IpDaddr, ip([10, 96, 0, 10])),
            Stmt::eq(Selector::UdpDport, Value::Port(53)),
            Stmt::Notrack,
        ])),
    );
    let mut rs = Ruleset::default();
    rs.add_table(t);
    be.apply_full(&rs).expect("apply");
    let back = be
        .read_table(Family::Ip, "weft-raw")
        .expect("read")
        .expect("table exists");
    let want = kernel_view(rs.table(Family::Ip, "weft-raw").unwrap()).unwrap();
    assert_eq!(back, want);
    let text = ns.nft_json().to_string();
    assert!(text.contains("\"notrack\""), "{text}");
}
