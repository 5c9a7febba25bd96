//! Network namespaces for tests: created with `ip netns`, removed on drop, even on panic.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};

use weft_nft::Backend;

static COUNTER: AtomicUsize = AtomicUsize::new(0);

pub struct Netns {
    pub name: String,
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().expect("spawning a command");
    assert!(
        out.status.success(),
        "{:?} failed: {}",
        cmd,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

impl Netns {
    pub fn new(tag: &str) -> Netns {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let name = format!("weft-t-nft-{tag}{n}-{}", std::process::id());
        run(Command::new("ip").args(["netns", "add", &name]));
        let ns = Netns { name };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    pub fn path(&self) -> PathBuf {
        PathBuf::from(format!("/run/netns/{}", self.name))
    }

    pub fn backend(&self) -> Backend {
        Backend::open_in(&self.path()).expect("opening nf_tables in the test namespace")
    }

    pub fn exec(&self, args: &[&str]) -> Output {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name]).args(args);
        run(&mut c)
    }

    pub fn exec_status(&self, args: &[&str]) -> Output {
        Command::new("ip")
            .args(["netns", "exec", &self.name])
            .args(args)
            .output()
            .expect("spawning a command")
    }

    pub fn ip(&self, args: &[&str]) {
        let mut a = vec!["ip"];
        a.extend_from_slice(args);
        self.exec(&a);
    }

    /// `nft -j list ruleset` inside the namespace, parsed.
    pub fn nft_json(&self) -> serde_json::Value {
        let out = self.exec(&["nft", "-j", "list", "ruleset"]);
        serde_json::from_slice(&out.stdout).expect("nft -j output is JSON")
    }

    pub fn nft_text(&self) -> String {
        String::from_utf8_lossy(&self.exec(&["nft", "list", "ruleset"]).stdout).into_owned()
    }

    /// Runs `f` on a thread inside the namespace (sockets it opens stay there).
    pub fn run_in<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let file = std::fs::File::open(self.path()).expect("opening netns");
        std::thread::spawn(move || {
            nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
            f()
        })
        .join()
        .expect("thread in namespace")
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

/// Two namespaces joined by a veth pair: `client` 10.77.0.1/24, `server` 10.77.0.2/24.
pub struct Pair {
    pub client: Netns,
    pub server: Netns,
}

impl Pair {
    pub fn new(tag: &str) -> Pair {
        let client = Netns::new(&format!("{tag}c"));
        let server = Netns::new(&format!("{tag}s"));
        client.ip(&[
            "link",
            "add",
            "veth0",
            "type",
            "veth",
            "peer",
            "name",
            "veth1",
            "netns",
            &server.name,
        ]);
        client.ip(&["addr", "add", "10.77.0.1/24", "dev", "veth0"]);
        client.ip(&["link", "set", "veth0", "up"]);
        server.ip(&["addr", "add", "10.77.0.2/24", "dev", "veth1"]);
        server.ip(&["link", "set", "veth1", "up"]);
        Pair { client, server }
    }
}

pub mod fixture {
    //! A ruleset using every feature of the model.
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
    use std::time::Duration;
    use weft_nft::*;

    pub fn v4(a: [u8; 4]) -> Value {
        Value::Ipv4(Ipv4Addr::from(a))
    }

    fn base(kind: ChainType, hook: Hook, priority: i32, policy: Policy) -> BaseChain {
        BaseChain {
            kind,
            hook,
            priority,
            policy,
        }
    }

    fn anon(key: Vec<KeyType>, data: Option<DataType>, elems: Vec<(Vec<Value>, Elem)>) -> SetRef {
        let mut s = Set::new("", key);
        s.data = data;
        for (k, e) in elems {
            s.insert(k, e);
        }
        SetRef::Anonymous(Box::new(s))
    }

    pub fn ip_table() -> Table {
        let mut t = Table::new(Family::Ip, "weft4");
        let mut svc = Set::map(
            "svc-ips",
            vec![KeyType::Ipv4Addr, KeyType::InetProto, KeyType::InetService],
            DataType::Verdict,
        );
        svc.insert(
            vec![v4([10, 96, 0, 1]), Value::Proto(6), Value::Port(80)],
            Elem::verdict(Verdict::Goto("svc-a".into())),
        );
        svc.insert(
            vec![v4([10, 96, 0, 2]), Value::Proto(17), Value::Port(53)],
            Elem::verdict(Verdict::Jump("svc-b".into())),
        );
        t.add_set(svc);
        let mut allowed = Set::new("allowed", vec![KeyType::Ipv4Addr]);
        allowed.flags.interval = true;
        allowed.insert(
            vec![v4([10, 0, 0, 0])],
            Elem::interval(vec![v4([10, 255, 255, 255])]),
        );
        allowed.insert(vec![v4([192, 168, 1, 5])], Elem::default());
        t.add_set(allowed);
        let mut aff = Set::new("aff-a", vec![KeyType::Ipv4Addr]);
        aff.flags.dynamic = true;
        aff.flags.timeout = true;
        aff.timeout = Some(Duration::from_secs(3));
        t.add_set(aff);
        // Affinity as data: client . service address . proto . port -> the endpoint chosen.
        let mut sticky = Set::map(
            "sticky",
            vec![
                KeyType::Ipv4Addr,
                KeyType::Ipv4Addr,
                KeyType::InetProto,
                KeyType::InetService,
            ],
            DataType::Value(vec![KeyType::Ipv4Addr, KeyType::InetService]),
        );
        sticky.flags.dynamic = true;
        sticky.flags.timeout = true;
        t.add_set(sticky);
        let mut ports = Set::new("ports", vec![KeyType::InetService]);
        ports.insert(vec![Value::Port(80)], Elem::default());
        ports.insert(vec![Value::Port(443)], Elem::default());
        t.add_set(ports);
        let mut marks = Set::new("marks", vec![KeyType::Mark]);
        marks.insert(vec![Value::Mark(0x4000)], Elem::default());
        t.add_set(marks);
        let mut ifs = Set::new("ifs", vec![KeyType::Ifname]);
        ifs.insert(vec![Value::Ifname("eth0".into())], Elem::default());
        t.add_set(ifs);
        let mut pairs = Set::new("pairs", vec![KeyType::Ipv4Addr, KeyType::InetService]);
        pairs.flags.interval = true;
        pairs.insert(
            vec![v4([10, 0, 0, 0]), Value::Port(80)],
            Elem::interval(vec![v4([10, 0, 0, 255]), Value::Port(90)]),
        );
        t.add_set(pairs);
        let mut recent = Set::new("recent", vec![KeyType::Ipv4Addr]);
        recent.flags.timeout = true;
        recent.insert(
            vec![v4([1, 2, 3, 4])],
            Elem {
                timeout: Some(Duration::from_secs(60)),
                ..Elem::default()
            },
        );
        t.add_set(recent);
        let mut targets = Set::map(
            "dnat-targets",
            vec![KeyType::InetService],
            DataType::Value(vec![KeyType::Ipv4Addr, KeyType::InetService]),
        );
        targets.insert(
            vec![Value::Port(30080)],
            Elem::value(vec![v4([10, 244, 1, 5]), Value::Port(8080)]),
        );
        t.add_set(targets);

        let dport = |p| Stmt::eq(Selector::TcpDport, Value::Port(p));
        t.add_chain(
            Chain::base(
                "prerouting",
                base(ChainType::Nat, Hook::Prerouting, -100, Policy::Accept),
            )
            .with_rule(Rule::new(vec![Stmt::Vmap {
                key: vec![Selector::IpDaddr, Selector::MetaL4proto, Selector::ThDport],
                map: SetRef::Named("svc-ips".into()),
            }]))
            .with_rule(Rule::new(vec![
                Stmt::FibDaddrLocal,
                Stmt::Match {
                    key: Selector::TcpDport,
                    op: CmpOp::Eq,
                    rhs: Rhs::Range(Value::Port(30000), Value::Port(32767)),
                },
                Stmt::Counter,
                Stmt::jump("nodeports"),
            ])),
        );
        t.add_chain(
            Chain::regular("svc-a")
                .with_rule(Rule::new(vec![
                    Stmt::Lookup {
                        key: vec![Selector::IpSaddr],
                        set: SetRef::Named("aff-a".into()),
                        negate: false,
                    },
                    Stmt::goto("sep-a-0"),
                ]))
                .with_rule(Rule::new(vec![Stmt::Vmap {
                    key: vec![Selector::NumgenRandom(2)],
                    map: anon(
                        vec![KeyType::Integer],
                        Some(DataType::Verdict),
                        vec![
                            (
                                vec![Value::Integer(0)],
                                Elem::verdict(Verdict::Goto("sep-a-0".into())),
                            ),
                            (
                                vec![Value::Integer(1)],
                                Elem::verdict(Verdict::Goto("sep-a-1".into())),
                            ),
                        ],
                    ),
                }])),
        );
        t.add_chain(
            Chain::regular("sep-a-0")
                .with_rule(Rule::new(vec![
                    Stmt::eq(Selector::IpSaddr, v4([10, 244, 1, 5])),
                    Stmt::jump("mark-masq"),
                ]))
                .with_rule(Rule::new(vec![Stmt::Dynset {
                    op: DynsetOp::Update,
                    key: vec![Selector::IpSaddr],
                    set: "aff-a".into(),
                    timeout: Some(Duration::from_secs(3)),
                    data: vec![],
                }]))
                .with_rule(Rule::new(vec![
                    Stmt::eq(Selector::MetaL4proto, Value::Proto(6)),
                    Stmt::Dnat {
                        addr: IpAddr::V4(Ipv4Addr::new(10, 244, 1, 5)),
                        port: Some(8080),
                    },
                ])),
        );
        t.add_chain(Chain::regular("from-self").with_rule(Rule::new(vec![
            Stmt::FibSaddrLocal(CmpOp::Ne),
            Stmt::FibSaddrLocal(CmpOp::Eq),
            Stmt::MarkXor {
                ct: false,
                bits: 0x4000,
            },
            Stmt::Counter,
        ])));
        t.add_chain(Chain::regular("remember").with_rule(Rule::new(vec![
            Stmt::eq(Selector::MetaL4proto, Value::Proto(6)),
            Stmt::Dynset {
                op: DynsetOp::Update,
                key: vec![
                    Selector::IpSaddr,
                    Selector::CtOriginalIpDaddr,
                    Selector::MetaL4proto,
                    Selector::CtOriginalProtoDst,
                ],
                set: "sticky".into(),
                timeout: Some(Duration::from_secs(30)),
                data: vec![Selector::IpDaddr, Selector::ThDport],
            },
        ])));
        t.add_chain(Chain::regular("sep-a-1").with_rule(Rule::new(vec![
            Stmt::eq(Selector::MetaL4proto, Value::Proto(6)),
            Stmt::Dnat {
                addr: IpAddr::V4(Ipv4Addr::new(10, 244, 1, 6)),
                port: Some(8080),
            },
        ])));
        t.add_chain(Chain::regular("svc-b").with_rule(Rule::new(vec![
            Stmt::eq(Selector::MetaL4proto, Value::Proto(17)),
            Stmt::DnatMap {
                key: vec![Selector::NumgenRandom(2)],
                map: anon(
                    vec![KeyType::Integer],
                    Some(DataType::Value(vec![
                        KeyType::Ipv4Addr,
                        KeyType::InetService,
                    ])),
                    vec![
                        (
                            vec![Value::Integer(0)],
                            Elem::value(vec![v4([10, 244, 1, 7]), Value::Port(53)]),
                        ),
                        (
                            vec![Value::Integer(1)],
                            Elem::value(vec![v4([10, 244, 1, 8]), Value::Port(53)]),
                        ),
                    ],
                ),
            },
        ])));
        t.add_chain(
            Chain::regular("nodeports").with_rule(Rule::new(vec![Stmt::DnatMap {
                key: vec![Selector::TcpDport],
                map: SetRef::Named("dnat-targets".into()),
            }])),
        );
        t.add_chain(
            Chain::regular("mark-masq").with_rule(Rule::new(vec![Stmt::MarkOr {
                ct: false,
                bits: 0x4000,
            }])),
        );
        t.add_chain(
            Chain::base(
                "postrouting",
                base(ChainType::Nat, Hook::Postrouting, 100, Policy::Accept),
            )
            .with_rule(Rule::new(vec![
                Stmt::MarkMatch {
                    ct: false,
                    mask: 0x4000,
                    value: 0,
                    op: CmpOp::Ne,
                },
                Stmt::Masquerade { fully_random: true },
            ])),
        );
        t.add_chain(
            Chain::base(
                "input",
                base(ChainType::Filter, Hook::Input, 0, Policy::Accept),
            )
            .with_rule(Rule::new(vec![
                Stmt::CtState(CtStates::ESTABLISHED.union(CtStates::RELATED)),
                Stmt::Verdict(Verdict::Accept),
            ]))
            .with_rule(Rule::new(vec![
                Stmt::Lookup {
                    key: vec![Selector::IpSaddr],
                    set: SetRef::Named("allowed".into()),
                    negate: true,
                },
                Stmt::Lookup {
                    key: vec![Selector::TcpDport],
                    set: SetRef::Named("ports".into()),
                    negate: false,
                },
                Stmt::Reject(Reject::TcpReset),
            ]))
            .with_rule(Rule::new(vec![
                Stmt::Lookup {
                    key: vec![Selector::MetaIifname],
                    set: SetRef::Named("ifs".into()),
                    negate: false,
                },
                Stmt::Counter,
            ]))
            .with_rule(Rule::new(vec![
                Stmt::Lookup {
                    key: vec![Selector::MetaMark],
                    set: SetRef::Named("marks".into()),
                    negate: false,
                },
                Stmt::Verdict(Verdict::Drop),
            ]))
            .with_rule(Rule::new(vec![
                Stmt::CtState(CtStates::INVALID),
                Stmt::Verdict(Verdict::Drop),
            ]))
            .with_rule(Rule::new(vec![
                Stmt::Lookup {
                    key: vec![Selector::IpSaddr, Selector::TcpDport],
                    set: SetRef::Named("pairs".into()),
                    negate: false,
                },
                Stmt::Verdict(Verdict::Accept),
            ]))
            .with_rule(Rule::new(vec![
                Stmt::eq(Selector::MetaIifname, Value::Ifname("lo".into())),
                Stmt::Verdict(Verdict::Accept),
            ]))
            .with_rule(Rule::new(vec![
                Stmt::Lookup {
                    key: vec![Selector::IpSaddr],
                    set: anon(
                        vec![KeyType::Ipv4Addr],
                        None,
                        vec![
                            (vec![v4([1, 1, 1, 1])], Elem::default()),
                            (vec![v4([8, 8, 8, 8])], Elem::default()),
                        ],
                    ),
                    negate: false,
                },
                Stmt::Log {
                    prefix: Some("weft drop ".into()),
                    group: Some(2),
                },
                dport(9),
                Stmt::Reject(Reject::PortUnreachable),
            ]))
            .with_rule(Rule::new(vec![Stmt::Log {
                prefix: Some("weft ".into()),
                group: None,
            }])),
        );
        t.add_chain(
            Chain::base(
                "forward",
                base(ChainType::Filter, Hook::Forward, 0, Policy::Drop),
            )
            .with_rule(Rule::new(vec![
                Stmt::MarkMatch {
                    ct: true,
                    mask: 1,
                    value: 1,
                    op: CmpOp::Eq,
                },
                Stmt::Verdict(Verdict::Accept),
            ]))
            .with_rule(Rule::new(vec![
                Stmt::Match {
                    key: Selector::IpDaddr,
                    op: CmpOp::Ne,
                    rhs: Rhs::Prefix(v4([10, 96, 0, 0]), 12),
                },
                Stmt::Verdict(Verdict::Return),
            ]))
            .with_rule(Rule::new(vec![
                Stmt::MarkOr { ct: true, bits: 2 },
                Stmt::Verdict(Verdict::Continue),
            ])),
        );
        t
    }

    pub fn inet_table() -> Table {
        let mut t = Table::new(Family::Inet, "weft");
        let v6 = |s: &str| {
            s.parse::<Ipv6Addr>()
                .map(Value::Ipv6)
                .expect("ipv6 literal")
        };
        t.add_chain(
            Chain::base(
                "input",
                base(ChainType::Filter, Hook::Input, 10, Policy::Accept),
            )
            .with_rule(Rule::new(vec![
                Stmt::eq(Selector::IpSaddr, v4([1, 2, 3, 4])),
                Stmt::Verdict(Verdict::Drop),
            ]))
            .with_rule(Rule::new(vec![
                Stmt::eq(Selector::Ip6Saddr, v6("::1")),
                Stmt::Verdict(Verdict::Accept),
            ]))
            .with_rule(Rule::new(vec![
                Stmt::eq(Selector::UdpDport, Value::Port(9)),
                Stmt::Reject(Reject::PortUnreachable),
            ])),
        );
        t.add_chain(
            Chain::base(
                "prerouting",
                base(ChainType::Nat, Hook::Prerouting, -100, Policy::Accept),
            )
            .with_rule(Rule::new(vec![
                Stmt::eq(Selector::IpDaddr, v4([10, 96, 0, 9])),
                Stmt::eq(Selector::MetaL4proto, Value::Proto(6)),
                Stmt::Dnat {
                    addr: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)),
                    port: Some(80),
                },
            ]))
            .with_rule(Rule::new(vec![
                Stmt::eq(Selector::Ip6Daddr, v6("fd00::1")),
                Stmt::eq(Selector::TcpDport, Value::Port(80)),
                Stmt::Dnat {
                    addr: "fd00::2".parse().expect("v6"),
                    port: Some(8080),
                },
            ])),
        );
        t.add_chain(
            Chain::base(
                "postrouting",
                base(ChainType::Nat, Hook::Postrouting, 100, Policy::Accept),
            )
            .with_rule(Rule::new(vec![
                Stmt::eq(Selector::MetaOifname, Value::Ifname("eth0".into())),
                Stmt::Snat {
                    addr: IpAddr::V4(Ipv4Addr::new(192, 168, 1, 1)),
                    port: None,
                },
            ])),
        );
        t.add_chain(
            Chain::base(
                "mangle",
                base(ChainType::Route, Hook::Output, -150, Policy::Accept),
            )
            .with_rule(Rule::new(vec![
                Stmt::eq(Selector::CtMark, Value::Mark(7)),
                Stmt::MarkOr { ct: false, bits: 7 },
            ])),
        );
        t
    }

    pub fn ruleset() -> Ruleset {
        let mut rs = Ruleset::default();
        rs.add_table(ip_table());
        rs.add_table(inet_table());
        rs
    }
}
