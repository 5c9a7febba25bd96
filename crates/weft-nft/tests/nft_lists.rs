//! `nft list ruleset` and `nft -j list ruleset` (the nftables 1.0.6 of Debian 12 and
//! later) read every set and map weft writes, with their elements: the shapes weft-proxy
//! and weft-policy declare (concatenations, intervals, maps with concatenated data,
//! verdict maps, a key ending in `numgen`, marks set from maps and a masked mark in a
//! concatenated key). The metadata nft keeps in a set's userdata
//! (key and data byte order, `typeof` expressions) is byte for byte what nft writes itself
//! for the same declaration, loaded with `nft -f` from weft's rendering.

mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use common::Netns;
use weft_nft::netlink::attr::{be32, string};
use weft_nft::netlink::batch::MSG_GETSET;
use weft_nft::netlink::NftSocket;
use weft_nft::*;

fn v4(a: [u8; 4]) -> Value {
    Value::Ipv4(Ipv4Addr::from(a))
}

fn v6(s: &str) -> Value {
    Value::Ipv6(s.parse::<Ipv6Addr>().expect("ipv6 literal"))
}

const ADDR_KEY: [Selector; 3] = [Selector::IpDaddr, Selector::MetaL4proto, Selector::ThDport];
const PORT_KEY: [Selector; 2] = [Selector::MetaL4proto, Selector::ThDport];

fn types(sel: &[Selector]) -> Vec<KeyType> {
    sel.iter().map(|s| s.key_type()).collect()
}

/// weft-proxy's `backends` maps: service key . numgen slot -> endpoint address . port.
fn backends(name: &str, sel: &[Selector]) -> Set {
    let mut key = sel.to_vec();
    key.push(Selector::NumgenRandom(1));
    let mut m = Set::map(
        name,
        types(&key),
        DataType::Value(vec![KeyType::Ipv4Addr, KeyType::InetService]),
    );
    m.typeof_key = Some(key);
    m
}

fn nat_chain(name: &str, hook: Hook, priority: i32) -> Chain {
    Chain::base(
        name,
        BaseChain {
            kind: ChainType::Nat,
            hook,
            priority,
            policy: Policy::Accept,
        },
    )
}

/// The shapes of weft-proxy's table.
fn proxy_table() -> Table {
    let mut t = Table::new(Family::Ip, "weft-proxy");
    let mut b = backends("backends", &ADDR_KEY);
    b.insert(
        vec![
            v4([10, 96, 0, 1]),
            Value::Proto(6),
            Value::Port(80),
            Value::Integer(0),
        ],
        Elem::value(vec![v4([10, 244, 1, 5]), Value::Port(8080)]),
    );
    b.insert(
        vec![
            v4([10, 96, 0, 1]),
            Value::Proto(6),
            Value::Port(80),
            Value::Integer(1),
        ],
        Elem::value(vec![v4([10, 244, 2, 7]), Value::Port(8080)]),
    );
    b.insert(
        vec![
            v4([10, 96, 0, 10]),
            Value::Proto(17),
            Value::Port(53),
            Value::Integer(0),
        ],
        Elem::value(vec![v4([10, 244, 1, 9]), Value::Port(53)]),
    );
    t.add_set(b);
    let mut nb = backends("nodeport-backends", &PORT_KEY);
    nb.insert(
        vec![Value::Proto(6), Value::Port(30080), Value::Integer(0)],
        Elem::value(vec![v4([10, 244, 1, 5]), Value::Port(8080)]),
    );
    t.add_set(nb);
    t.add_set(backends("from-pods-backends", &ADDR_KEY));
    let mut eps = Set::new("endpoints-tcp-n2", types(&ADDR_KEY));
    eps.insert(
        vec![v4([10, 96, 0, 1]), Value::Proto(6), Value::Port(80)],
        Elem::default(),
    );
    t.add_set(eps);
    let mut masq = Set::new("nodeport-masq", types(&PORT_KEY));
    masq.insert(vec![Value::Proto(6), Value::Port(30080)], Elem::default());
    t.add_set(masq);
    let mut addrs = Set::new("cluster-ip-addrs", vec![KeyType::Ipv4Addr]);
    addrs.insert(vec![v4([10, 96, 0, 1])], Elem::default());
    addrs.insert(vec![v4([10, 96, 0, 10])], Elem::default());
    t.add_set(addrs);
    let mut allow = Set::new(
        "firewall-allow",
        vec![
            KeyType::Ipv4Addr,
            KeyType::InetProto,
            KeyType::InetService,
            KeyType::Ipv4Addr,
        ],
    );
    allow.flags.interval = true;
    allow.insert(
        vec![
            v4([10, 96, 0, 1]),
            Value::Proto(6),
            Value::Port(80),
            v4([192, 168, 0, 0]),
        ],
        Elem::interval(vec![
            v4([10, 96, 0, 1]),
            Value::Proto(6),
            Value::Port(80),
            v4([192, 168, 255, 255]),
        ]),
    );
    t.add_set(allow);
    let mut hairpin = Set::new("hairpin", vec![KeyType::Ipv4Addr, KeyType::Ipv4Addr]);
    hairpin.insert(
        vec![v4([10, 244, 1, 5]), v4([10, 244, 1, 5])],
        Elem::default(),
    );
    t.add_set(hairpin);
    let mut aff = Set::map(
        "affinity",
        vec![
            KeyType::Ipv4Addr,
            KeyType::Ipv4Addr,
            KeyType::InetProto,
            KeyType::InetService,
        ],
        DataType::Value(vec![KeyType::Ipv4Addr, KeyType::InetService]),
    );
    aff.flags.dynamic = true;
    aff.flags.timeout = true;
    aff.insert(
        vec![
            v4([10, 244, 3, 3]),
            v4([10, 96, 0, 1]),
            Value::Proto(6),
            Value::Port(80),
        ],
        Elem {
            data: Some(ElemData::Value(vec![
                v4([10, 244, 1, 5]),
                Value::Port(8080),
            ])),
            timeout: Some(Duration::from_secs(600)),
            end: None,
        },
    );
    t.add_set(aff);

    let mut key = ADDR_KEY.to_vec();
    key.push(Selector::NumgenRandom(2));
    t.add_chain(
        nat_chain("services", Hook::Prerouting, -100).with_rule(Rule::new(vec![
            Stmt::eq(Selector::MetaL4proto, Value::Proto(6)),
            Stmt::Lookup {
                key: ADDR_KEY.to_vec(),
                set: SetRef::Named("endpoints-tcp-n2".into()),
                negate: false,
            },
            Stmt::DnatMap {
                key,
                map: SetRef::Named("backends".into()),
            },
        ])),
    );
    t
}

/// The shapes of weft-policy's table: per family, a map from a local pod to its subject
/// class (the packet mark) and an interval map from any address to a peer class (the
/// conntrack mark); one interval verdict map per direction keyed `mark & CLASS_BITS . ct
/// mark . proto . port`; the rule that sets both marks and looks the verdict up, written
/// twice so that weft-proxy's masquerade bit 0x4000 survives it.
fn policy_table() -> Table {
    let mut t = Table::new(Family::Inet, "weft-policy");
    let mut forward = Chain::base(
        "forward",
        BaseChain {
            kind: ChainType::Filter,
            hook: Hook::Forward,
            priority: 0,
            policy: Policy::Accept,
        },
    );
    let mut verdicts = Set::map(
        "ingress",
        vec![
            KeyType::Mark,
            KeyType::Mark,
            KeyType::InetProto,
            KeyType::InetService,
        ],
        DataType::Verdict,
    );
    verdicts.flags.interval = true;
    verdicts.flags.counter = true;
    verdicts.insert(
        vec![
            Value::Mark(1 << 16),
            Value::Mark(2),
            Value::Proto(6),
            Value::Port(0),
        ],
        Elem {
            end: Some(Key(vec![
                Value::Mark(1 << 16),
                Value::Mark(2),
                Value::Proto(6),
                Value::Port(79),
            ])),
            data: Some(ElemData::Verdict(Verdict::Goto("ingress-netpol".into()))),
            timeout: None,
        },
    );
    t.add_set(verdicts);
    for (fam, addr, sel) in [
        (
            "4",
            KeyType::Ipv4Addr,
            [Selector::IpDaddr, Selector::IpSaddr],
        ),
        (
            "6",
            KeyType::Ipv6Addr,
            [Selector::Ip6Daddr, Selector::Ip6Saddr],
        ),
    ] {
        let (pod, lo, hi) = if addr == KeyType::Ipv4Addr {
            (
                v4([10, 244, 1, 5]),
                v4([10, 0, 0, 0]),
                v4([10, 255, 255, 255]),
            )
        } else {
            (v6("fd00:10:244:1::5"), v6("fd00::"), v6("fd00::ffff"))
        };
        let mut subjects = Set::map(
            format!("ingress-subject{fam}"),
            vec![addr],
            DataType::Value(vec![KeyType::Mark]),
        );
        subjects.insert(vec![pod], Elem::value(vec![Value::Mark(1 << 16)]));
        t.add_set(subjects);
        let mut peers = Set::map(
            format!("ingress-peer{fam}"),
            vec![addr],
            DataType::Value(vec![KeyType::Mark]),
        );
        peers.flags.interval = true;
        peers.insert(
            vec![lo],
            Elem {
                end: Some(Key(vec![hi])),
                data: Some(ElemData::Value(vec![Value::Mark(2)])),
                timeout: None,
            },
        );
        t.add_set(peers);
        for masq in [true, false] {
            let mut stmts = vec![
                Stmt::MarkMatch {
                    ct: false,
                    mask: 0x4000,
                    value: if masq { 0x4000 } else { 0 },
                    op: CmpOp::Eq,
                },
                Stmt::MarkSetMap {
                    ct: false,
                    key: vec![KeyField::load(sel[0])],
                    map: format!("ingress-subject{fam}"),
                },
            ];
            if masq {
                stmts.push(Stmt::MarkOr {
                    ct: false,
                    bits: 0x4000,
                });
            }
            stmts.push(Stmt::MarkSetMap {
                ct: true,
                key: vec![KeyField::load(sel[1])],
                map: format!("ingress-peer{fam}"),
            });
            stmts.push(Stmt::VmapMasked {
                key: vec![
                    KeyField::masked(Selector::MetaMark, 0xffff_0000),
                    KeyField::load(Selector::CtMark),
                    KeyField::load(Selector::MetaL4proto),
                    KeyField::load(Selector::ThDport),
                ],
                map: "ingress".into(),
            });
            forward.rules.push(Rule::new(stmts));
        }
    }
    t.add_chain(forward);
    // Denials counted per subject class: a counting set looked up by the masked mark.
    let mut isolated = Set::new("ingress-isolated", vec![KeyType::Mark]);
    isolated.flags.counter = true;
    isolated.insert(vec![Value::Mark(1 << 16)], Elem::default());
    t.add_set(isolated);
    t.add_chain(
        Chain::regular("ingress-netpol")
            .with_rule(Rule::new(vec![Stmt::LookupMasked {
                key: vec![KeyField::masked(Selector::MetaMark, 0xffff_0000)],
                set: "ingress-isolated".into(),
            }]))
            .with_rule(Rule::new(vec![Stmt::Counter, Stmt::Verdict(Verdict::Drop)])),
    );
    t
}

/// Other shapes weft-nft supports: single-field keys of every type, single-field data,
/// a verdict map on a `numgen` slot, timeouts, constants, single-field intervals.
fn misc_table() -> Table {
    let mut t = Table::new(Family::Ip, "weft-misc");
    let mut slots = Set::map("slots", vec![KeyType::Integer], DataType::Verdict);
    slots.typeof_key = Some(vec![Selector::NumgenRandom(2)]);
    slots.insert(vec![Value::Integer(0)], Elem::verdict(Verdict::Accept));
    slots.insert(vec![Value::Integer(1)], Elem::verdict(Verdict::Drop));
    t.add_set(slots);
    let mut targets = Set::map(
        "targets",
        vec![KeyType::InetService],
        DataType::Value(vec![KeyType::Ipv4Addr, KeyType::InetService]),
    );
    targets.insert(
        vec![Value::Port(30080)],
        Elem::value(vec![v4([10, 244, 1, 5]), Value::Port(8080)]),
    );
    t.add_set(targets);
    let mut nat = Set::map(
        "nat",
        vec![KeyType::Ipv4Addr],
        DataType::Value(vec![KeyType::Ipv4Addr]),
    );
    nat.insert(
        vec![v4([10, 96, 0, 1])],
        Elem::value(vec![v4([10, 244, 1, 5])]),
    );
    t.add_set(nat);
    let mut svc = Set::map(
        "svc",
        vec![KeyType::Ipv4Addr, KeyType::InetProto, KeyType::InetService],
        DataType::Verdict,
    );
    svc.insert(
        vec![v4([10, 96, 0, 1]), Value::Proto(6), Value::Port(80)],
        Elem::verdict(Verdict::Accept),
    );
    t.add_set(svc);
    let mut ports = Set::new("ports", vec![KeyType::InetService]);
    ports.insert(vec![Value::Port(443)], Elem::default());
    t.add_set(ports);
    let mut protos = Set::new("protos", vec![KeyType::InetProto]);
    protos.insert(vec![Value::Proto(132)], Elem::default());
    t.add_set(protos);
    let mut marks = Set::new("marks", vec![KeyType::Mark]);
    marks.insert(vec![Value::Mark(0x4000)], Elem::default());
    t.add_set(marks);
    let mut ifs = Set::new("ifs", vec![KeyType::Ifname]);
    ifs.insert(vec![Value::Ifname("eth0".into())], Elem::default());
    t.add_set(ifs);
    let mut six = Set::new("six", vec![KeyType::Ipv6Addr]);
    six.insert(vec![v6("fd00::1")], Elem::default());
    t.add_set(six);
    let mut nets = Set::new("nets", vec![KeyType::Ipv4Addr]);
    nets.flags.interval = true;
    nets.insert(
        vec![v4([10, 0, 0, 0])],
        Elem::interval(vec![v4([10, 255, 255, 255])]),
    );
    t.add_set(nets);
    let mut recent = Set::new("recent", vec![KeyType::Ipv4Addr]);
    recent.flags.timeout = true;
    recent.flags.dynamic = true;
    recent.timeout = Some(Duration::from_secs(180));
    recent.insert(vec![v4([1, 2, 3, 4])], Elem::default());
    t.add_set(recent);
    let mut fixed = Set::new("fixed", vec![KeyType::Ipv4Addr, KeyType::InetService]);
    fixed.flags.constant = true;
    fixed.insert(vec![v4([1, 1, 1, 1]), Value::Port(53)], Elem::default());
    t.add_set(fixed);

    // Anonymous sets and maps, written inline in rules.
    let anon = |key: Vec<KeyType>, data: Option<DataType>, elems: Vec<(Vec<Value>, Elem)>| {
        let mut s = Set::new("", key);
        s.data = data;
        for (k, e) in elems {
            s.insert(k, e);
        }
        SetRef::Anonymous(Box::new(s))
    };
    t.add_chain(
        Chain::regular("inline")
            .with_rule(Rule::new(vec![Stmt::Vmap {
                key: vec![Selector::IpDaddr, Selector::NumgenRandom(2)],
                map: anon(
                    vec![KeyType::Ipv4Addr, KeyType::Integer],
                    Some(DataType::Verdict),
                    vec![
                        (
                            vec![v4([10, 96, 0, 1]), Value::Integer(0)],
                            Elem::verdict(Verdict::Accept),
                        ),
                        (
                            vec![v4([10, 96, 0, 1]), Value::Integer(1)],
                            Elem::verdict(Verdict::Drop),
                        ),
                    ],
                ),
            }]))
            .with_rule(Rule::new(vec![
                Stmt::Lookup {
                    key: vec![Selector::IpSaddr, Selector::TcpDport],
                    set: anon(
                        vec![KeyType::Ipv4Addr, KeyType::InetService],
                        None,
                        vec![(vec![v4([10, 0, 0, 1]), Value::Port(22)], Elem::default())],
                    ),
                    negate: false,
                },
                Stmt::Verdict(Verdict::Accept),
            ])),
    );
    t
}

fn ruleset() -> Ruleset {
    let mut rs = Ruleset::default();
    rs.add_table(proxy_table());
    rs.add_table(policy_table());
    rs.add_table(misc_table());
    rs
}

fn nft(ns: &Netns, args: &[&str]) -> String {
    let mut a = vec!["nft"];
    a.extend_from_slice(args);
    let out = ns.exec_status(&a);
    assert!(
        out.status.success(),
        "`nft {}` failed ({}): {}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn nft_lists_every_set_weft_writes_with_its_elements() {
    let ns = Netns::new("ls");
    let rs = ruleset();
    ns.backend().apply_full(&rs).expect("apply");

    let text = nft(&ns, &["list", "ruleset"]);
    for needle in [
        "typeof ip daddr . meta l4proto . th dport . numgen random mod 1 : ip daddr . tcp dport",
        "10.96.0.1 . tcp . 80 . 0 : 10.244.1.5 . 8080",
        "10.96.0.1 . tcp . 80 . 1 : 10.244.2.7 . 8080",
        "10.96.0.10 . udp . 53 . 0 : 10.244.1.9 . 53",
        "tcp . 30080 . 0 : 10.244.1.5 . 8080",
        "dnat ip to ip daddr . meta l4proto . tcp dport . numgen random mod 2 map @backends",
        "10.96.0.1 . tcp . 80 . 192.168.0.0/16",
        "10.244.1.5 . 10.244.1.5",
        "10.244.3.3 . 10.96.0.1 . tcp . 80",
        "10.244.1.5 : 0x00010000",
        "10.0.0.0/8 : 0x00000002",
        "fd00:10:244:1::5 : 0x00010000",
        "fd00::/112 : 0x00000002",
        ". tcp . 0-79 counter packets 0 bytes 0 : goto ingress-netpol",
        "meta mark & 0xffff0000 == @ingress-isolated",
        "0x00010000 counter packets 0 bytes 0",
        "meta mark & 0x00004000 == 0x00004000 meta mark set ip daddr map @ingress-subject4 \
         meta mark set meta mark | 0x00004000 ct mark set ip saddr map @ingress-peer4 \
         meta mark & 0xffff0000 . ct mark . meta l4proto . th dport vmap @ingress",
        "meta mark & 0x00004000 == 0x00000000 meta mark set ip6 daddr map @ingress-subject6 \
         ct mark set ip6 saddr map @ingress-peer6 \
         meta mark & 0xffff0000 . ct mark . meta l4proto . th dport vmap @ingress",
        "0 : accept, 1 : drop",
        "30080 : 10.244.1.5 . 8080",
        "10.96.0.1 : 10.244.1.5",
        "\"eth0\"",
        "0x00004000",
        "sctp",
        "10.0.0.0/8",
        "1.1.1.1 . 53",
        "ip daddr . numgen random mod 2 vmap { 10.96.0.1 . 0 : accept, 10.96.0.1 . 1 : drop }",
        "ip saddr . tcp dport { 10.0.0.1 . 22 } accept",
    ] {
        assert!(text.contains(needle), "nft list lacks `{needle}`:\n{text}");
    }

    // Table by table too, as the README tells users to look.
    for (fam, name) in [
        ("ip", "weft-proxy"),
        ("inet", "weft-policy"),
        ("ip", "weft-misc"),
    ] {
        nft(&ns, &["list", "table", fam, name]);
        nft(&ns, &["-j", "list", "table", fam, name]);
    }

    let json = nft(&ns, &["-j", "list", "ruleset"]);
    let j: serde_json::Value = serde_json::from_str(&json).expect("nft -j prints JSON");
    let objects = j["nftables"].as_array().expect("nftables array");
    for t in rs.tables.values() {
        for s in t.sets.values() {
            let kind = if s.is_map() { "map" } else { "set" };
            let js = objects
                .iter()
                .filter_map(|o| o.get(kind))
                .find(|js| js["table"] == t.name.as_str() && js["name"] == s.name.as_str())
                .unwrap_or_else(|| panic!("nft -j lacks {kind} {} of {}", s.name, t.name));
            let n = js
                .get("elem")
                .and_then(|e| e.as_array())
                .map_or(0, |a| a.len());
            assert_eq!(n, s.elements.len(), "elements of {}: {js}", s.name);
            if s.flags.counter {
                let counts = ns
                    .backend()
                    .read_counters(t.family, &t.name, &s.name)
                    .expect("read counters")
                    .expect("the set exists");
                let keys: Vec<&Key> = counts.keys().collect();
                assert_eq!(keys, s.elements.keys().collect::<Vec<_>>(), "{}", s.name);
                assert!(counts.values().all(|n| *n == 0), "{counts:?}");
            }
        }
    }
    // The adopted table is the one written: the counter flag is read back.
    let back = ns
        .backend()
        .read_table(Family::Inet, "weft-policy")
        .expect("read")
        .expect("the table exists");
    assert!(back.sets["ingress-isolated"].flags.counter);
    assert!(back.sets["ingress"].flags.counter);
    assert!(!back.sets["ingress-peer4"].flags.counter);
}

/// Each named set's NFTA_SET_USERDATA, keyed by family, table and set.
fn set_userdata(ns: &Netns) -> BTreeMap<(u8, String, String), Vec<u8>> {
    let mut sock = NftSocket::open_in(&ns.path()).expect("netlink socket");
    let mut out = BTreeMap::new();
    sock.dump(
        MSG_GETSET,
        libc::NFPROTO_UNSPEC as u8,
        |_| {},
        |fam, a| {
            let flags = a.get(3).and_then(be32).unwrap_or(0);
            if flags & 1 != 0 {
                return Ok(()); // anonymous: nft numbers them its own way
            }
            let table = a.get(1).and_then(string).unwrap_or_default();
            let name = a.get(2).and_then(string).unwrap_or_default();
            out.insert((fam, table, name), a.get(13).unwrap_or_default().to_vec());
            Ok(())
        },
    )
    .expect("dumping sets");
    out
}

/// libnftnl's userdata TLVs (`type len value`), for readable failures.
fn tlvs(b: &[u8]) -> String {
    let mut out = Vec::new();
    let mut i = 0;
    while i + 2 <= b.len() {
        let (t, l) = (b[i], b[i + 1] as usize);
        let v = &b[i + 2..(i + 2 + l).min(b.len())];
        out.push(format!(
            "{t}:{}",
            v.iter().map(|x| format!("{x:02x}")).collect::<String>()
        ));
        i += 2 + l;
    }
    out.join(" ")
}

#[test]
fn set_metadata_is_what_nft_writes_for_the_same_declaration() {
    let rs = ruleset();
    let by_weft = Netns::new("udw");
    by_weft.backend().apply_full(&rs).expect("apply");
    let by_nft = Netns::new("udn");
    let text = render::ruleset(&rs);
    let mut f = tempfile::NamedTempFile::new().expect("temp file");
    f.write_all(text.as_bytes()).expect("write");
    let out = by_nft.exec_status(&["nft", "-f", &f.path().display().to_string()]);
    assert!(
        out.status.success(),
        "nft -f refused weft's rendering:\n{}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );

    let weft = set_userdata(&by_weft);
    let nft = set_userdata(&by_nft);
    assert_eq!(
        weft.keys().collect::<Vec<_>>(),
        nft.keys().collect::<Vec<_>>()
    );
    let diffs: Vec<String> = weft
        .iter()
        .filter(|(k, v)| nft.get(*k) != Some(*v))
        .map(|(k, v)| {
            format!(
                "{} {}:\n  weft {}\n  nft  {}",
                k.1,
                k.2,
                tlvs(v),
                tlvs(&nft[k])
            )
        })
        .collect();
    assert!(diffs.is_empty(), "{}", diffs.join("\n"));
}
