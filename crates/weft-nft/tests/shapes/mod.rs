//! The tables whose listing `nft_lists` checks: every shape of set, map and rule weft-proxy
//! and weft-policy write, and the other shapes weft-nft supports.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::time::Duration;

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

pub fn ruleset() -> Ruleset {
    let mut rs = Ruleset::default();
    rs.add_table(proxy_table());
    rs.add_table(policy_table());
    rs.add_table(misc_table());
    rs
}
