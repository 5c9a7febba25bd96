//! Rulesets built from the model change what real packets do: two namespaces joined by a
//! veth pair, TCP servers in one, std::net clients in the other.

mod common;

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{Netns, Pair};
use weft_nft::*;

const SERVER: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 2);
const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);

/// TCP servers that answer each connection with "<port> <peer ip>"; stopped on drop.
struct Servers {
    stop: Arc<AtomicBool>,
}

impl Servers {
    fn start(ns: &Netns, ports: &[u16]) -> Servers {
        let stop = Arc::new(AtomicBool::new(false));
        for &port in ports {
            let listener = ns.run_in(move || {
                TcpListener::bind((SERVER, port)).expect("bind in server namespace")
            });
            listener.set_nonblocking(true).expect("nonblocking");
            let stop = stop.clone();
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((mut s, peer)) => {
                            let _ = s.write_all(format!("{port} {}", peer.ip()).as_bytes());
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(5)),
                    }
                }
            });
        }
        Servers { stop }
    }
}

impl Drop for Servers {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Connects from the client namespace and returns (answering port, peer the server saw).
fn fetch(ns: &Netns, to: SocketAddr) -> std::io::Result<(u16, IpAddr)> {
    ns.run_in(move || {
        let mut s = TcpStream::connect_timeout(&to, Duration::from_secs(2))?;
        s.set_read_timeout(Some(Duration::from_secs(2)))?;
        let mut buf = String::new();
        s.read_to_string(&mut buf)?;
        parse_answer(&buf)
    })
}

fn parse_answer(buf: &str) -> std::io::Result<(u16, IpAddr)> {
    let mut it = buf.split(' ');
    let port = it.next().and_then(|p| p.parse().ok());
    let ip = it.next().and_then(|p| p.parse().ok());
    match (port, ip) {
        (Some(p), Some(i)) => Ok((p, i)),
        _ => Err(std::io::Error::other(format!("bad answer {buf:?}"))),
    }
}

fn sa(ip: [u8; 4], port: u16) -> SocketAddr {
    SocketAddr::from((ip, port))
}

fn nat_prerouting() -> Chain {
    Chain::base(
        "prerouting",
        BaseChain {
            kind: ChainType::Nat,
            hook: Hook::Prerouting,
            priority: -100,
            policy: Policy::Accept,
        },
    )
}

fn endpoint_chain(name: &str, port: u16, affinity: Option<&str>) -> Chain {
    let mut c = Chain::regular(name);
    if let Some(set) = affinity {
        c.rules.push(Rule::new(vec![Stmt::Dynset {
            op: DynsetOp::Update,
            key: vec![Selector::IpSaddr],
            set: set.into(),
            timeout: Some(Duration::from_secs(1)),
            data: vec![],
        }]));
    }
    c.with_rule(Rule::new(vec![
        Stmt::eq(Selector::MetaL4proto, Value::Proto(6)),
        Stmt::Dnat {
            addr: IpAddr::V4(SERVER),
            port: Some(port),
        },
    ]))
}

fn one_table(t: Table) -> Ruleset {
    let mut rs = Ruleset::default();
    rs.add_table(t);
    rs
}

fn pair_with_service_route(tag: &str) -> Pair {
    let p = Pair::new(tag);
    p.client
        .ip(&["route", "add", "10.96.0.0/12", "via", "10.77.0.2"]);
    p
}

#[test]
fn dnat_redirects_a_tcp_connection() {
    let p = pair_with_service_route("dn");
    let _s = Servers::start(&p.server, &[8080]);
    let mut t = Table::new(Family::Ip, "weft");
    t.add_chain(nat_prerouting().with_rule(Rule::new(vec![
        Stmt::eq(Selector::IpDaddr, fixture_v4([10, 96, 0, 1])),
        Stmt::eq(Selector::TcpDport, Value::Port(80)),
        Stmt::Dnat {
            addr: IpAddr::V4(SERVER),
            port: Some(8080),
        },
    ])));
    p.server.backend().apply_full(&one_table(t)).expect("apply");
    let (port, peer) = fetch(&p.client, sa([10, 96, 0, 1], 80)).expect("connection through DNAT");
    assert_eq!(port, 8080);
    assert_eq!(peer, IpAddr::V4(CLIENT));
}

fn fixture_v4(a: [u8; 4]) -> Value {
    Value::Ipv4(Ipv4Addr::from(a))
}

#[test]
fn drop_rule_drops_and_only_its_port() {
    let p = Pair::new("dr");
    let _s = Servers::start(&p.server, &[9000, 9001]);
    assert_eq!(
        fetch(&p.client, sa([10, 77, 0, 2], 9000))
            .expect("open before the rule")
            .0,
        9000
    );
    let mut t = Table::new(Family::Inet, "weft");
    t.add_chain(
        Chain::base(
            "input",
            BaseChain {
                kind: ChainType::Filter,
                hook: Hook::Input,
                priority: 0,
                policy: Policy::Accept,
            },
        )
        .with_rule(Rule::new(vec![
            Stmt::eq(Selector::TcpDport, Value::Port(9000)),
            Stmt::Counter,
            Stmt::Verdict(Verdict::Drop),
        ])),
    );
    p.server.backend().apply_full(&one_table(t)).expect("apply");
    let err = fetch(&p.client, sa([10, 77, 0, 2], 9000)).expect_err("dropped");
    // A drop shows as silence (timeout), not as a refusal.
    assert_eq!(err.kind(), std::io::ErrorKind::TimedOut, "{err}");
    assert_eq!(
        fetch(&p.client, sa([10, 77, 0, 2], 9001))
            .expect("other port still open")
            .0,
        9001
    );
}

#[test]
fn verdict_map_dispatches_by_address_protocol_and_port() {
    let p = pair_with_service_route("vm");
    let _s = Servers::start(&p.server, &[8001, 8002, 8003]);
    let mut t = Table::new(Family::Ip, "weft");
    let mut m = Set::map(
        "services",
        vec![KeyType::Ipv4Addr, KeyType::InetProto, KeyType::InetService],
        DataType::Verdict,
    );
    for (i, (ip, port)) in [
        ([10, 96, 0, 1], 80),
        ([10, 96, 0, 2], 80),
        ([10, 96, 0, 1], 443),
    ]
    .into_iter()
    .enumerate()
    {
        let chain = format!("svc-{i}");
        m.insert(
            vec![fixture_v4(ip), Value::Proto(6), Value::Port(port)],
            Elem::verdict(Verdict::Goto(chain.clone())),
        );
        t.add_chain(endpoint_chain(&chain, 8001 + i as u16, None));
    }
    t.add_set(m);
    t.add_chain(nat_prerouting().with_rule(Rule::new(vec![Stmt::Vmap {
        key: vec![Selector::IpDaddr, Selector::MetaL4proto, Selector::ThDport],
        map: SetRef::Named("services".into()),
    }])));
    p.server.backend().apply_full(&one_table(t)).expect("apply");
    assert_eq!(
        fetch(&p.client, sa([10, 96, 0, 1], 80)).expect("svc 0").0,
        8001
    );
    assert_eq!(
        fetch(&p.client, sa([10, 96, 0, 2], 80)).expect("svc 1").0,
        8002
    );
    assert_eq!(
        fetch(&p.client, sa([10, 96, 0, 1], 443)).expect("svc 2").0,
        8003
    );
}

/// A service at 10.96.0.1:80 spreading over ports 8001..=8003 with numgen, optionally
/// with a ClientIP-affinity set per endpoint.
fn numgen_service(affinity: bool) -> Table {
    let mut t = Table::new(Family::Ip, "weft");
    let mut svc = Chain::regular("svc");
    let mut vmap = Set::map("", vec![KeyType::Integer], DataType::Verdict);
    for i in 0..3u16 {
        let ep = format!("ep-{i}");
        let aff = format!("aff-{i}");
        if affinity {
            let mut s = Set::new(&aff, vec![KeyType::Ipv4Addr]);
            s.flags.dynamic = true;
            s.flags.timeout = true;
            s.timeout = Some(Duration::from_secs(1));
            t.add_set(s);
            svc.rules.push(Rule::new(vec![
                Stmt::Lookup {
                    key: vec![Selector::IpSaddr],
                    set: SetRef::Named(aff.clone()),
                    negate: false,
                },
                Stmt::goto(&ep),
            ]));
        }
        vmap.insert(
            vec![Value::Integer(i as u32)],
            Elem::verdict(Verdict::Goto(ep.clone())),
        );
        t.add_chain(endpoint_chain(
            &ep,
            8001 + i,
            affinity.then_some(aff.as_str()),
        ));
    }
    svc.rules.push(Rule::new(vec![Stmt::Vmap {
        key: vec![Selector::NumgenRandom(3)],
        map: SetRef::Anonymous(Box::new(vmap)),
    }]));
    t.add_chain(svc);
    t.add_chain(nat_prerouting().with_rule(Rule::new(vec![
        Stmt::eq(Selector::IpDaddr, fixture_v4([10, 96, 0, 1])),
        Stmt::eq(Selector::TcpDport, Value::Port(80)),
        Stmt::jump("svc"),
    ])));
    t
}

#[test]
fn numgen_spreads_connections_over_all_endpoints() {
    let p = pair_with_service_route("ng");
    let _s = Servers::start(&p.server, &[8001, 8002, 8003]);
    p.server
        .backend()
        .apply_full(&one_table(numgen_service(false)))
        .expect("apply");
    let mut hits = [0u32; 3];
    for _ in 0..60 {
        let (port, _) = fetch(&p.client, sa([10, 96, 0, 1], 80)).expect("connection");
        hits[(port - 8001) as usize] += 1;
    }
    // Each endpoint is missed by 60 uniform picks with probability (2/3)^60 < 1e-10.
    assert!(hits.iter().all(|h| *h > 0), "{hits:?}");
}

#[test]
fn affinity_set_keeps_a_client_on_one_endpoint_until_it_times_out() {
    let p = pair_with_service_route("af");
    let _s = Servers::start(&p.server, &[8001, 8002, 8003]);
    let mut be = p.server.backend();
    be.apply_full(&one_table(numgen_service(true)))
        .expect("apply");
    let (first, _) = fetch(&p.client, sa([10, 96, 0, 1], 80)).expect("connection");
    for _ in 0..20 {
        let (port, _) = fetch(&p.client, sa([10, 96, 0, 1], 80)).expect("connection");
        assert_eq!(port, first, "affinity broke");
    }
    let aff = format!("aff-{}", first - 8001);
    let table = be
        .read_table(Family::Ip, "weft")
        .expect("read")
        .expect("table");
    let key = Key(vec![Value::Ipv4(CLIENT)]);
    assert!(
        table.sets[&aff].elements.contains_key(&key),
        "client not remembered in {aff}"
    );
    // After the timeout the kernel forgets the client: the next pick is random again.
    std::thread::sleep(Duration::from_millis(1600));
    let table = be
        .read_table(Family::Ip, "weft")
        .expect("read")
        .expect("table");
    for i in 0..3 {
        assert!(
            table.sets[&format!("aff-{i}")].elements.is_empty(),
            "aff-{i} still holds the client"
        );
    }
}

#[test]
fn masquerade_rewrites_the_source() {
    let p = Pair::new("mq");
    // The client sends from an address the server has no route back to.
    p.client.ip(&["addr", "add", "10.88.0.1/32", "dev", "lo"]);
    let _s = Servers::start(&p.server, &[7000]);
    let mut t = Table::new(Family::Ip, "weft");
    t.add_chain(
        Chain::base(
            "postrouting",
            BaseChain {
                kind: ChainType::Nat,
                hook: Hook::Postrouting,
                priority: 100,
                policy: Policy::Accept,
            },
        )
        .with_rule(Rule::new(vec![
            Stmt::eq(Selector::MetaOifname, Value::Ifname("veth0".into())),
            Stmt::Masquerade { fully_random: true },
        ])),
    );
    p.client.backend().apply_full(&one_table(t)).expect("apply");
    let (local, answer) = p.client.run_in(|| {
        connect_from(
            Ipv4Addr::new(10, 88, 0, 1),
            SocketAddr::from((SERVER, 7000)),
        )
    });
    assert_eq!(
        local,
        IpAddr::V4(Ipv4Addr::new(10, 88, 0, 1)),
        "the socket itself keeps its source"
    );
    let (port, peer) = answer.expect("connection through masquerade");
    assert_eq!(port, 7000);
    assert_eq!(
        peer,
        IpAddr::V4(CLIENT),
        "the server must see the masqueraded source"
    );
}

/// Connects from a chosen source address; returns the socket's own address and the answer.
fn connect_from(src: Ipv4Addr, to: SocketAddr) -> (IpAddr, std::io::Result<(u16, IpAddr)>) {
    use nix::sys::socket::{bind, connect, socket, AddressFamily, SockFlag, SockType, SockaddrIn};
    let fd = socket(
        AddressFamily::Inet,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .expect("socket");
    bind(
        fd.as_raw_fd(),
        &SockaddrIn::from(std::net::SocketAddrV4::new(src, 0)),
    )
    .expect("bind source");
    let to4 = match to {
        SocketAddr::V4(a) => a,
        SocketAddr::V6(_) => unreachable!("test uses IPv4"),
    };
    let raw = fd.into_raw_fd();
    // SAFETY: `raw` is a connected-to-be TCP socket we own.
    let mut stream = unsafe { TcpStream::from_raw_fd(raw) };
    stream
        .set_write_timeout(Some(Duration::from_secs(2)))
        .expect("timeout");
    stream
        .set_read_timeout(Some(Duration::from_secs(2)))
        .expect("timeout");
    let local = stream
        .local_addr()
        .map(|a| a.ip())
        .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
    let answer = connect(raw, &SockaddrIn::from(to4))
        .map_err(std::io::Error::from)
        .and_then(|_| {
            let mut buf = String::new();
            stream.read_to_string(&mut buf)?;
            parse_answer(&buf)
        });
    (local, answer)
}

#[test]
fn dnat_over_ipv6_in_an_inet_table() {
    let p = Pair::new("d6");
    p.client
        .ip(&["-6", "addr", "add", "fd77::1/64", "dev", "veth0", "nodad"]);
    p.server
        .ip(&["-6", "addr", "add", "fd77::2/64", "dev", "veth1", "nodad"]);
    p.client
        .ip(&["-6", "route", "add", "fd96::/64", "via", "fd77::2"]);
    let listener = p
        .server
        .run_in(|| TcpListener::bind("[fd77::2]:8080").expect("bind v6"));
    let server = std::thread::spawn(move || {
        let (mut s, peer) = listener.accept().expect("accept");
        let _ = s.write_all(format!("8080 {}", peer.ip()).as_bytes());
    });
    let mut t = Table::new(Family::Inet, "weft");
    t.add_chain(nat_prerouting().with_rule(Rule::new(vec![
        Stmt::eq(
            Selector::Ip6Daddr,
            Value::Ipv6("fd96::1".parse().expect("v6")),
        ),
        Stmt::eq(Selector::TcpDport, Value::Port(80)),
        Stmt::Dnat {
            addr: "fd77::2".parse().expect("v6"),
            port: Some(8080),
        },
    ])));
    p.server.backend().apply_full(&one_table(t)).expect("apply");
    let to: SocketAddr = "[fd96::1]:80".parse().expect("addr");
    let (port, peer) = fetch(&p.client, to).expect("connection through DNAT over IPv6");
    assert_eq!(port, 8080);
    assert_eq!(peer, "fd77::1".parse::<IpAddr>().expect("v6"));
    server.join().expect("server thread");
}
