//! The server over real sockets, each test in a network namespace of its own.

mod common;

use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

use common::{blocking, in_netns, Upstream};
use hickory_proto::op::{Edns, Message, Query, ResponseCode};
use hickory_proto::rr::{Name, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use weft_dns::fixtures::*;
use weft_dns::{query, Model, Server, ServerConfig, Upstreams, ZoneConfig};

const T: Duration = Duration::from_secs(3);

fn model() -> Model {
    let md = Model::new(ZoneConfig::default()).unwrap();
    md.upsert_service(&service(
        "default",
        "web",
        &["10.96.0.20"],
        &[("http", 80, "TCP")],
    ));
    md.upsert_service(&headless("default", "big", &[], false));
    let eps: Vec<String> = (0..100).map(|i| format!("10.244.0.{i}")).collect();
    let eps: Vec<Ep> = eps.iter().map(|a| (a.as_str(), None, None)).collect();
    md.upsert_slice(&slice("default", "big-1", "big", "IPv4", &eps, &[]));
    md.upsert_service(&external_name("default", "ext", "www.example.net"));
    md
}

async fn start(
    md: Model,
    upstreams: Vec<SocketAddr>,
) -> (SocketAddr, weft_dns::server::StatsHandle) {
    let cfg = ServerConfig {
        listen: vec!["127.0.0.1:0".parse().unwrap()],
        allowed: vec!["10.244.0.0/16".parse().unwrap()],
        upstreams: Upstreams::List(upstreams),
        upstream_timeout: Duration::from_millis(500),
        tcp_idle_timeout: Duration::from_millis(500),
        ..ServerConfig::default()
    };
    let server = Server::bind(cfg, md).await.unwrap();
    let addr = server.local_addrs()[0];
    let stats = server.stats();
    tokio::spawn(server.run());
    (addr, stats)
}

fn raw_query(name: &str, t: &str, edns: Option<u16>) -> Vec<u8> {
    let mut m = Message::query();
    m.add_query(Query::query(
        Name::from_ascii(name).unwrap(),
        RecordType::from_str(t).unwrap(),
    ));
    m.metadata.recursion_desired = true;
    if let Some(size) = edns {
        let mut e = Edns::new();
        e.set_max_payload(size);
        m.set_edns(e);
    }
    m.to_vec().unwrap()
}

async fn udp_ask(server: SocketAddr, msg: &[u8]) -> Option<Vec<u8>> {
    let s = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    udp_ask_from(&s, server, msg).await
}

async fn udp_ask_from(s: &UdpSocket, server: SocketAddr, msg: &[u8]) -> Option<Vec<u8>> {
    udp_ask_within(s, server, msg, Duration::from_millis(300)).await
}

async fn udp_ask_within(
    s: &UdpSocket,
    server: SocketAddr,
    msg: &[u8],
    wait: Duration,
) -> Option<Vec<u8>> {
    s.send_to(msg, server).await.unwrap();
    let mut buf = vec![0u8; 65535];
    match tokio::time::timeout(wait, s.recv_from(&mut buf)).await {
        Ok(Ok((n, _))) => Some(buf[..n].to_vec()),
        _ => None,
    }
}

async fn tcp_send(s: &mut TcpStream, msg: &[u8]) {
    let mut frame = (msg.len() as u16).to_be_bytes().to_vec();
    frame.extend(msg);
    s.write_all(&frame).await.unwrap();
}

async fn tcp_read(s: &mut TcpStream) -> Option<Message> {
    let len = tokio::time::timeout(T, s.read_u16()).await.ok()?.ok()?;
    let mut buf = vec![0u8; len as usize];
    s.read_exact(&mut buf).await.ok()?;
    Message::from_vec(&buf).ok()
}

#[test]
fn udp_tcp_truncation_and_edns() {
    in_netns(&[], || async {
        let (addr, _) = start(model(), vec![]).await;
        let r = blocking(move || query(addr, "web.default.svc.cluster.local", "A", false, T))
            .await
            .unwrap();
        assert_eq!(r.rcode, "NOERROR");
        assert!(r.authoritative);
        assert_eq!(
            r.answers,
            vec!["web.default.svc.cluster.local. 30 IN A 10.96.0.20"]
        );
        let r = blocking(move || query(addr, "web.default.svc.cluster.local", "A", true, T))
            .await
            .unwrap();
        assert_eq!(r.answers.len(), 1);

        // 100 A records: too big for any UDP reply; the client's TCP retry gets them all.
        let r = blocking(move || query(addr, "big.default.svc.cluster.local", "A", false, T))
            .await
            .unwrap();
        assert!(r.truncated);
        assert_eq!(r.answers.len(), 100);

        // EDNS sizes: without OPT 512, with OPT what the client says up to 1232.
        let m = Message::from_vec(
            &udp_ask(
                addr,
                &raw_query("big.default.svc.cluster.local.", "A", None),
            )
            .await
            .unwrap(),
        )
        .unwrap();
        assert!(m.metadata.truncation && m.answers.is_empty() && m.edns.is_none());
        let m = Message::from_vec(
            &udp_ask(
                addr,
                &raw_query("big.default.svc.cluster.local.", "A", Some(4096)),
            )
            .await
            .unwrap(),
        )
        .unwrap();
        assert!(m.metadata.truncation);
        assert_eq!(m.edns.as_ref().map(|e| e.max_payload()), Some(1232));
        let m = Message::from_vec(
            &udp_ask(
                addr,
                &raw_query(
                    "_http._tcp.web.default.svc.cluster.local.",
                    "SRV",
                    Some(512),
                ),
            )
            .await
            .unwrap(),
        )
        .unwrap();
        assert!(!m.metadata.truncation);
        assert_eq!(m.answers.len(), 1);
    });
}

#[test]
fn malformed_datagrams_and_streams_then_answers() {
    in_netns(&[], || async {
        let (addr, _) = start(model(), vec![]).await;
        let good = raw_query("web.default.svc.cluster.local.", "A", None);
        // Too short for a header: nothing comes back.
        assert!(udp_ask(addr, &good[..5]).await.is_none());
        // Header readable, question cut: FORMERR.
        let r = Message::from_vec(&udp_ask(addr, &good[..20]).await.unwrap()).unwrap();
        assert_eq!(r.metadata.response_code, ResponseCode::FormErr);
        // Opcode STATUS: NOTIMP.
        let mut st = good.clone();
        st[2] = (st[2] & 0x87) | (2 << 3);
        let r = Message::from_vec(&udp_ask(addr, &st).await.unwrap()).unwrap();
        assert_eq!(r.metadata.response_code, ResponseCode::NotImp);
        let r = Message::from_vec(&udp_ask(addr, &good).await.unwrap()).unwrap();
        assert_eq!(r.answers.len(), 1);
        // Over 4 KiB: dropped.
        let mut huge = good.clone();
        huge.resize(5000, 0);
        assert!(udp_ask(addr, &huge).await.is_none());

        // A burst larger than one batch, good and bad mixed: every good one is answered.
        let s = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        for i in 0..70u16 {
            let mut q = good.clone();
            q[..2].copy_from_slice(&i.to_be_bytes());
            let q = if i % 7 == 3 { q[..6].to_vec() } else { q };
            s.send_to(&q, addr).await.unwrap();
        }
        let mut ids = Vec::new();
        let mut buf = vec![0u8; 1500];
        while let Ok(Ok((n, _))) =
            tokio::time::timeout(Duration::from_millis(300), s.recv_from(&mut buf)).await
        {
            let m = Message::from_vec(&buf[..n]).unwrap();
            assert_eq!(m.answers.len(), 1);
            ids.push(m.metadata.id);
        }
        ids.sort();
        let want: Vec<u16> = (0..70).filter(|i| i % 7 != 3).collect();
        assert_eq!(ids, want);

        // TCP: a FORMERR, then two queries in one write, answered in order on the same
        // connection.
        let mut s = TcpStream::connect(addr).await.unwrap();
        tcp_send(&mut s, &good[..20]).await;
        assert_eq!(
            tcp_read(&mut s).await.unwrap().metadata.response_code,
            ResponseCode::FormErr
        );
        let q2 = raw_query("dns-version.cluster.local.", "TXT", None);
        let mut both = (good.len() as u16).to_be_bytes().to_vec();
        both.extend(&good);
        both.extend((q2.len() as u16).to_be_bytes());
        both.extend(&q2);
        s.write_all(&both).await.unwrap();
        assert_eq!(tcp_read(&mut s).await.unwrap().answers.len(), 1);
        assert_eq!(
            tcp_read(&mut s).await.unwrap().queries[0].query_type(),
            RecordType::TXT
        );
        // Garbage too short for a header closes the connection.
        tcp_send(&mut s, &[1, 2, 3]).await;
        assert!(tcp_read(&mut s).await.is_none());
        // A frame announcing more than arrives, then silence: closed at the idle timeout.
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(&[0, 40, 1, 2]).await.unwrap();
        let mut b = [0u8; 1];
        let closed = tokio::time::timeout(T, s.read(&mut b)).await.unwrap();
        assert!(matches!(closed, Ok(0) | Err(_)));
        // And the server still answers.
        let r = blocking(move || query(addr, "web.default.svc.cluster.local", "A", true, T))
            .await
            .unwrap();
        assert_eq!(r.answers.len(), 1);
    });
}

#[test]
fn refused_outside_the_allow_list() {
    in_netns(&["10.99.0.1/32"], || async {
        let md = model();
        let (addr, stats) = start(md.clone(), vec![]).await;
        let stranger = UdpSocket::bind("10.99.0.1:0").await.unwrap();
        for name in ["web.default.svc.cluster.local.", "www.example.com."] {
            let r = udp_ask_from(&stranger, addr, &raw_query(name, "A", None))
                .await
                .unwrap();
            let r = Message::from_vec(&r).unwrap();
            assert_eq!(r.metadata.response_code, ResponseCode::Refused, "{name}");
            assert!(r.answers.is_empty());
        }
        let s = tokio::net::TcpSocket::new_v4().unwrap();
        s.bind("10.99.0.1:0".parse().unwrap()).unwrap();
        let mut c = s.connect(addr).await.unwrap();
        tcp_send(
            &mut c,
            &raw_query("web.default.svc.cluster.local.", "A", None),
        )
        .await;
        assert_eq!(
            tcp_read(&mut c).await.unwrap().metadata.response_code,
            ResponseCode::Refused
        );
        // Garbage from a stranger gets nothing at all.
        assert!(udp_ask_from(&stranger, addr, &[0u8; 20]).await.is_none());
        // Once 10.99.0.1 is a Node's InternalIP it is answered.
        md.upsert_node(&node("node-1", &["10.99.0.1"]));
        let r = udp_ask_from(
            &stranger,
            addr,
            &raw_query("web.default.svc.cluster.local.", "A", None),
        )
        .await
        .unwrap();
        assert_eq!(Message::from_vec(&r).unwrap().answers.len(), 1);
        assert_eq!(
            stats.upstream_queries(),
            0,
            "refused names never go upstream"
        );
    });
}

#[test]
fn forwarding_with_cache_negative_cache_failover_and_coalescing() {
    in_netns(&[], || async {
        let (up, up_addr) = Upstream::start("127.0.0.2:0".parse().unwrap()).await;
        // The first upstream has nobody listening: each question fails over to the second.
        let dead: SocketAddr = "127.0.0.3:53".parse().unwrap();
        let (addr, stats) = start(model(), vec![dead, up_addr]).await;

        let ask = |name: &'static str| blocking(move || query(addr, name, "A", false, T));
        let r = ask("www.example.com").await.unwrap();
        assert_eq!(r.rcode, "NOERROR");
        assert!(!r.authoritative);
        assert_eq!(r.answers, vec!["www.example.com. 300 IN A 192.0.2.1"]);
        let r = ask("WWW.Example.COM").await.unwrap();
        assert_eq!(r.answers.len(), 1);
        assert!(
            r.answers[0].starts_with("WWW.Example.COM. "),
            "{:?}",
            r.answers
        );
        assert_eq!(
            up.count("www.example.com.", "udp"),
            1,
            "the second came from the cache"
        );

        // Negative caching.
        for _ in 0..2 {
            let r = ask("nx.example.com").await.unwrap();
            assert_eq!(r.rcode, "NXDOMAIN");
            assert_eq!(r.authority.len(), 1);
        }
        assert_eq!(up.count("nx.example.com.", "udp"), 1);

        // Truncated upstream: retried over TCP; our UDP client then gets TC and retries too.
        let r = ask("big.example.com").await.unwrap();
        assert_eq!(r.answers.len(), 100);
        assert!(r.truncated);
        assert_eq!(up.count("big.example.com.", "tcp"), 1);

        // Upstream failure is SERVFAIL, and not cached.
        let r = ask("fail.example.com").await.unwrap();
        assert_eq!(r.rcode, "SERVFAIL");
        let _ = ask("fail.example.com").await.unwrap();
        assert_eq!(up.count("fail.example.com.", "udp"), 2);

        // An ExternalName Service's target is resolved upstream, once.
        for _ in 0..2 {
            let r = ask("ext.default.svc.cluster.local").await.unwrap();
            assert_eq!(r.rcode, "NOERROR");
            assert_eq!(
                r.answers,
                vec![
                    "ext.default.svc.cluster.local. 30 IN CNAME www.example.net.",
                    "www.example.net. 300 IN A 192.0.2.1"
                ]
            );
        }
        assert_eq!(up.count("www.example.net.", "udp"), 1);
        let r = blocking(move || query(addr, "ext.default.svc.cluster.local", "A", true, T))
            .await
            .unwrap();
        assert_eq!(r.answers.len(), 2);

        // Names in the zone never go upstream, the search-list expansions included.
        let before = up.total();
        let r = ask("www.example.com.default.svc.cluster.local")
            .await
            .unwrap();
        assert_eq!(r.rcode, "NXDOMAIN");
        assert!(r.authoritative);
        assert_eq!(up.total(), before);

        // 20 identical questions at once: one upstream query.
        let mut tasks = Vec::new();
        for _ in 0..20 {
            tasks.push(tokio::spawn(async move {
                let s = UdpSocket::bind("127.0.0.1:0").await.unwrap();
                let q = raw_query("slow.example.com.", "A", None);
                udp_ask_within(&s, addr, &q, T).await
            }));
        }
        for t in tasks {
            let r = t.await.unwrap().expect("a reply");
            assert_eq!(Message::from_vec(&r).unwrap().answers.len(), 1);
        }
        assert_eq!(up.count("slow.example.com.", "udp"), 1);

        // Cached TTLs count down.
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let r = ask("www.example.com").await.unwrap();
        let ttl: u32 = r.answers[0].split(' ').nth(1).unwrap().parse().unwrap();
        assert!((280..300).contains(&ttl), "{ttl}");
        assert!(stats.cached_entries() >= 3);
    });
}

#[test]
fn changes_are_served_at_once() {
    in_netns(&[], || async {
        let md = model();
        let (addr, _) = start(md.clone(), vec![]).await;
        let ask = || blocking(move || query(addr, "new.default.svc.cluster.local", "A", false, T));
        assert_eq!(ask().await.unwrap().rcode, "NXDOMAIN");
        md.upsert_service(&service("default", "new", &["10.96.0.77"], &[]));
        assert_eq!(
            ask().await.unwrap().answers,
            vec!["new.default.svc.cluster.local. 30 IN A 10.96.0.77"]
        );
        md.delete_service("default", "new");
        assert_eq!(ask().await.unwrap().rcode, "NXDOMAIN");
    });
}

#[test]
fn failover_when_an_upstream_is_silent() {
    in_netns(&[], || async {
        let (up, up_addr) = Upstream::start("127.0.0.2:0".parse().unwrap()).await;
        // Bound but never read: questions to it time out (500 ms here).
        let silent = UdpSocket::bind("127.0.0.4:0").await.unwrap();
        let (addr, stats) = start(model(), vec![silent.local_addr().unwrap(), up_addr]).await;
        let started = std::time::Instant::now();
        let r = blocking(move || query(addr, "www.example.org", "A", false, T))
            .await
            .unwrap();
        assert_eq!(r.answers, vec!["www.example.org. 300 IN A 192.0.2.1"]);
        assert!(started.elapsed() >= Duration::from_millis(500));
        assert_eq!(up.count("www.example.org.", "udp"), 1);
        assert_eq!(stats.upstream_queries(), 2);
        // The next question goes straight to the upstream that answered.
        let started = std::time::Instant::now();
        let r = blocking(move || query(addr, "mail.example.org", "A", false, T))
            .await
            .unwrap();
        assert_eq!(r.answers.len(), 1);
        assert!(started.elapsed() < Duration::from_millis(400));
        assert_eq!(stats.upstream_queries(), 3);
        drop(silent);
    });
}

#[test]
fn tcp_connections_are_bounded() {
    in_netns(&[], || async {
        let cfg = ServerConfig {
            listen: vec!["127.0.0.1:0".parse().unwrap()],
            upstreams: Upstreams::List(vec![]),
            max_tcp_connections: 1,
            tcp_idle_timeout: Duration::from_millis(400),
            ..ServerConfig::default()
        };
        let server = Server::bind(cfg, model()).await.unwrap();
        let addr = server.local_addrs()[0];
        tokio::spawn(server.run());
        let q = raw_query("web.default.svc.cluster.local.", "A", None);
        let mut first = TcpStream::connect(addr).await.unwrap();
        tcp_send(&mut first, &q).await;
        assert_eq!(tcp_read(&mut first).await.unwrap().answers.len(), 1);
        // The second waits in the backlog until the first is closed (here: idle).
        let started = std::time::Instant::now();
        let mut second = TcpStream::connect(addr).await.unwrap();
        tcp_send(&mut second, &q).await;
        assert_eq!(tcp_read(&mut second).await.unwrap().answers.len(), 1);
        assert!(
            started.elapsed() >= Duration::from_millis(300),
            "{:?}",
            started.elapsed()
        );
        drop(first);
    });
}

#[test]
fn ipv6_and_several_listen_addresses() {
    in_netns(&[], || async {
        let cfg = ServerConfig {
            listen: vec!["127.0.0.1:0".parse().unwrap(), "[::1]:0".parse().unwrap()],
            upstreams: Upstreams::List(vec![]),
            ..ServerConfig::default()
        };
        let server = Server::bind(cfg, model()).await.unwrap();
        let addrs = server.local_addrs();
        tokio::spawn(server.run());
        for addr in addrs {
            for tcp in [false, true] {
                let r = blocking(move || query(addr, "web.default.svc.cluster.local", "A", tcp, T))
                    .await
                    .unwrap();
                assert_eq!(r.answers.len(), 1, "{addr} tcp={tcp}");
            }
        }
    });
}

#[test]
fn a_stopped_server_lets_go_of_its_port() {
    in_netns(&[], || async {
        let cfg = ServerConfig {
            listen: vec!["127.0.0.1:0".parse().unwrap()],
            upstreams: Upstreams::List(vec![]),
            ..ServerConfig::default()
        };
        let server = Server::bind(cfg.clone(), model()).await.unwrap();
        let addr = server.local_addrs()[0];
        let run = tokio::spawn(server.run());
        let msg = raw_query("web.default.svc.cluster.local", "A", None);
        assert!(
            udp_ask(addr, &msg).await.is_some(),
            "served before the stop"
        );
        run.abort();
        assert!(run.await.unwrap_err().is_cancelled());
        // The UDP thread has ended with the future: nothing answers, and the same
        // address can be bound again at once (UDP and TCP).
        assert!(
            udp_ask(addr, &msg).await.is_none(),
            "answered after the stop"
        );
        let again = ServerConfig {
            listen: vec![addr],
            ..cfg
        };
        let server = Server::bind(again, model()).await.unwrap();
        tokio::spawn(server.run());
        assert!(
            udp_ask(addr, &msg).await.is_some(),
            "served again on {addr}"
        );
    });
}
