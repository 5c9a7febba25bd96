//! `weft serve` and `weft probe` against each other, inside network namespaces this file
//! creates (`weft-t-probe-*`, deleted by guards on success and failure). Needs root and `ip`.

#[path = "probe_serve/world.rs"]
mod world;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::Stdio;
use std::sync::{Arc, Barrier};
use std::time::Duration;
use world::{two_hosts, weft, Netns, Server};

/// A bound on waits that should never come near it, so a broken server fails a test
/// instead of hanging it.
const HANG: Duration = Duration::from_secs(60);

#[test]
fn probes_show_the_client_address_the_server_saw() {
    let (client, server) = two_hosts("addr");
    let _serve = server.serve(&["--tcp", "8080", "--udp", "8080", "--http", "8081"]);

    for (proto, target, verdict, client_ip) in [
        ("tcp", "10.20.0.2:8080", "connected", "10.20.0.1"),
        ("udp", "10.20.0.2:8080", "answered", "10.20.0.1"),
        ("tcp", "[fd00:20::2]:8080", "connected", "fd00:20::1"),
    ] {
        let p = client.probe(&[proto, target]);
        p.expect(0, verdict);
        assert_eq!(p.field("client"), Some(client_ip), "{}", p.line);
        assert!(p.field("server").is_some(), "{}", p.line);
    }
    let p = client.probe(&["http", "http://10.20.0.2:8081/some/path?x=1"]);
    p.expect(0, "answered");
    assert_eq!(p.field("status"), Some("200"), "{}", p.line);
    assert_eq!(p.field("path"), Some("/some/path"), "{}", p.line);
    assert_eq!(p.field("client"), Some("10.20.0.1"), "{}", p.line);

    // A TCP port answers HTTP too (one containerPort serves both kinds of client); an HTTP
    // port turns a non-HTTP client away at once with a 400.
    let p = client.probe(&["http", "http://10.20.0.2:8080/via-tcp-port"]);
    p.expect(0, "answered");
    assert_eq!(p.field("path"), Some("/via-tcp-port"), "{}", p.line);
    let p = client.probe(&["tcp", "10.20.0.2:8081"]);
    p.expect(0, "connected");
    assert!(p.line.contains(" reply=\"HTTP/1.1 400 "), "{}", p.line);

    // Loopback and IPv6 in the server's own namespace.
    for target in ["127.0.0.1:8080", "[::1]:8080"] {
        let want = if target.starts_with('[') {
            "::1"
        } else {
            "127.0.0.1"
        };
        for proto in ["tcp", "udp"] {
            let p = server.probe(&[proto, target]);
            assert_eq!((p.code, p.field("client")), (0, Some(want)), "{}", p.line);
        }
    }
    let p = server.probe(&["http", "http://[::1]:8081/v6"]);
    assert_eq!((p.code, p.field("path")), (0, Some("/v6")), "{}", p.line);
}

#[test]
fn udp_replies_come_from_the_address_that_was_asked() {
    // 10.20.0.3 is the server's second address; without IP_PKTINFO its reply would leave
    // from 10.20.0.2 and the probe's connected socket would never see it.
    let (client, server) = two_hosts("pktinfo");
    let _serve = server.serve(&["--udp", "5353"]);
    let p = client.probe(&["udp", "10.20.0.3:5353"]);
    p.expect(0, "answered");
    assert_eq!(p.field("client"), Some("10.20.0.1"));
    // Over IPv6 whichever address routing would not pick is the one that needs it.
    for target in ["[fd00:20::2]:5353", "[fd00:20::3]:5353"] {
        let p = client.probe(&["udp", target]);
        p.expect(0, "answered");
        assert_eq!(p.field("client"), Some("fd00:20::1"), "{}", p.line);
    }
}

#[test]
fn closed_ports_are_refused() {
    let (client, server) = two_hosts("refused");
    let _serve = server.serve(&["--tcp", "8080"]);
    for (ns, target) in [(&client, "10.20.0.2:9"), (&server, "127.0.0.1:9")] {
        ns.probe(&["tcp", target]).expect(1, "refused");
        ns.probe(&["udp", target]).expect(1, "refused");
    }
}

#[test]
fn icmp_echo_is_answered_with_and_without_ping_sockets() {
    let (client, server) = two_hosts("icmp");
    let probes = [
        (&client, "10.20.0.2"),
        (&client, "fd00:20::2"),
        (&server, "127.0.0.1"),
        (&server, "::1"),
    ];
    // A fresh namespace allows unprivileged ping sockets to nobody: the raw-socket path.
    // Then our gid may use ping sockets: the unprivileged path.
    for range in [None, Some("0 2147483647")] {
        if let Some(r) = range {
            client.sysctl("net.ipv4.ping_group_range", r);
            server.sysctl("net.ipv4.ping_group_range", r);
        }
        for (ns, target) in probes {
            let p = ns.probe(&["icmp", target]);
            p.expect(0, "answered");
            assert_eq!(p.field("from"), Some(target), "{}", p.line);
        }
    }
}

#[test]
fn an_address_that_swallows_packets_times_out() {
    let ns = Netns::new("blackhole");
    // 10.99.0.2 has a neighbour entry, so packets leave, but nobody owns that MAC.
    ns.ip(&["link", "add", "v0", "type", "veth", "peer", "name", "v1"]);
    ns.ip(&["addr", "add", "10.99.0.1/24", "dev", "v0"]);
    ns.ip(&["link", "set", "v0", "up"]);
    ns.ip(&["link", "set", "v1", "up"]);
    ns.ip(&[
        "neigh",
        "add",
        "10.99.0.2",
        "lladdr",
        "02:00:00:00:00:02",
        "dev",
        "v0",
        "nud",
        "permanent",
    ]);
    for args in [
        ["tcp", "10.99.0.2:80"],
        ["udp", "10.99.0.2:53"],
        ["icmp", "10.99.0.2"],
        ["http", "http://10.99.0.2/"],
    ] {
        let mut a = args.to_vec();
        a.extend(["--timeout-ms", "300"]);
        ns.probe(&a).expect(1, "timeout");
    }
    // No route at all is told apart from silence.
    ns.probe(&["tcp", "10.200.0.1:80"]).expect(1, "unreachable");
    ns.probe(&["icmp", "10.200.0.1"]).expect(1, "unreachable");
}

#[test]
fn a_router_saying_unreachable_is_not_a_timeout() {
    // The client's default route leads to the server namespace, which forwards but has no
    // route to 10.30.0.0/16: it answers with ICMP net unreachable.
    let (client, router) = two_hosts("router");
    router.sysctl("net.ipv4.ip_forward", "1");
    // The kernel sends only a couple of ICMP errors per second to one host; this test
    // needs one per probe.
    router.sysctl("net.ipv4.icmp_ratelimit", "0");
    client.ip(&["route", "add", "default", "via", "10.20.0.2"]);
    for args in [
        ["tcp", "10.30.0.1:80"],
        ["udp", "10.30.0.1:53"],
        ["icmp", "10.30.0.1"],
    ] {
        client.probe(&args).expect(1, "unreachable");
    }
    // The same through an unprivileged ping socket.
    client.sysctl("net.ipv4.ping_group_range", "0 2147483647");
    client
        .probe(&["icmp", "10.30.0.1"])
        .expect(1, "unreachable");
}

fn http_exchange(request: &[u8]) -> String {
    let mut s = TcpStream::connect("127.0.0.1:8081").expect("connect to the HTTP echo");
    s.set_read_timeout(Some(HANG)).expect("set timeout");
    s.write_all(request).expect("send request");
    let mut got = Vec::new();
    s.read_to_end(&mut got).expect("read response");
    String::from_utf8_lossy(&got).into_owned()
}

/// A client sending `Expect: 100-continue` holds its body until the server says so.
fn expect_continue() -> String {
    let mut s = TcpStream::connect("127.0.0.1:8081").expect("connect to the HTTP echo");
    s.set_read_timeout(Some(HANG)).expect("set timeout");
    s.write_all(b"PUT /up HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 5\r\nConnection: close\r\n\r\n")
        .expect("send head");
    let mut interim = [0u8; 25];
    s.read_exact(&mut interim)
        .expect("read the interim response");
    assert_eq!(&interim, b"HTTP/1.1 100 Continue\r\n\r\n");
    s.write_all(b"hello").expect("send body");
    let mut rest = String::new();
    s.read_to_string(&mut rest).expect("read response");
    rest
}

#[test]
fn http_echo_keeps_alive_and_answers_malformed_requests_with_400() {
    let ns = Netns::new("http");
    let serve = ns.serve(&["--http", "8081"]);
    let (bad, binary, two, big, continued) = ns.run_in(|| {
        (
            http_exchange(b"GARBAGE\r\n\r\n"),
            http_exchange(b"\xff\xfe / HTTP/1.1\r\n\r\n"),
            http_exchange(
                b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nPOST /b HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc",
            ),
            http_exchange(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999\r\n\r\n"),
            expect_continue(),
        )
    });
    assert!(continued.contains("\"body_bytes\":5"), "{continued}");
    assert!(bad.starts_with("HTTP/1.1 400 "), "{bad}");
    assert!(binary.starts_with("HTTP/1.1 400 "), "{binary}");
    assert!(big.starts_with("HTTP/1.1 413 "), "{big}");
    // Two requests on one connection, two JSON answers in order.
    let bodies: Vec<serde_json::Value> = two
        .split("\r\n\r\n")
        .skip(1)
        .filter_map(|chunk| serde_json::from_str(chunk.lines().next()?).ok())
        .collect();
    assert_eq!(bodies.len(), 2, "{two}");
    assert_eq!(
        (bodies[0]["method"].as_str(), bodies[0]["path"].as_str()),
        (Some("GET"), Some("/a"))
    );
    assert_eq!(
        (
            bodies[1]["method"].as_str(),
            bodies[1]["body_bytes"].as_u64()
        ),
        (Some("POST"), Some(3))
    );
    assert_eq!(bodies[1]["headers"]["host"], "x");
    assert_eq!(
        bodies[1]["client"]
            .as_str()
            .map(|c| c.starts_with("127.0.0.1:")),
        Some(true)
    );
    // Still serving after all that, and it stops cleanly.
    ns.probe(&["http", "http://127.0.0.1:8081/after"])
        .expect(0, "answered");
    assert!(serve.stop().success());
}

#[test]
fn http_echo_names_the_pod_from_its_environment() {
    let ns = Netns::new("pod");
    let mut child = ns
        .exec(weft())
        .args(["serve", "--http", "8081"])
        .env("POD_NAME", "web-1")
        .env("POD_NAMESPACE", "shop")
        .stdout(Stdio::piped())
        .spawn()
        .expect("start weft serve");
    let stdout = child.stdout.take().expect("piped stdout");
    let _server = Server { child: Some(child) };
    let ready = BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .any(|l| l == "weft serve: ready");
    assert!(ready, "weft serve did not get ready");
    let p = ns.probe(&["http", "http://127.0.0.1:8081/"]);
    assert_eq!(
        (p.code, p.field("pod")),
        (0, Some("shop/web-1")),
        "{}",
        p.line
    );
}

#[test]
fn many_clients_are_served_at_once() {
    const CLIENTS: usize = 64;
    let ns = Netns::new("many");
    let _serve = ns.serve(&["--tcp", "8080"]);
    let ok = ns.run_in(|| {
        // Every client holds its connection until all are connected: concurrent, not serial.
        let barrier = Arc::new(Barrier::new(CLIENTS));
        let threads: Vec<_> = (0..CLIENTS)
            .map(|i| {
                let barrier = Arc::clone(&barrier);
                std::thread::spawn(move || -> Result<(), String> {
                    let s = TcpStream::connect("127.0.0.1:8080").map_err(|e| e.to_string())?;
                    s.set_read_timeout(Some(HANG)).map_err(|e| e.to_string())?;
                    let mut r = BufReader::new(s.try_clone().map_err(|e| e.to_string())?);
                    let mut greeting = String::new();
                    r.read_line(&mut greeting).map_err(|e| e.to_string())?;
                    barrier.wait();
                    (&s).write_all(format!("client {i}\n").as_bytes())
                        .map_err(|e| e.to_string())?;
                    let mut echo = String::new();
                    r.read_line(&mut echo).map_err(|e| e.to_string())?;
                    if greeting.contains(" client=127.0.0.1:") && echo == format!("client {i}\n") {
                        Ok(())
                    } else {
                        Err(format!("greeting {greeting:?}, echo {echo:?}"))
                    }
                })
            })
            .collect();
        threads
            .into_iter()
            .map(|t| t.join().unwrap_or_else(|_| Err("client panicked".into())))
            .collect::<Vec<_>>()
    });
    let failed: Vec<_> = ok.iter().filter_map(|r| r.as_ref().err()).collect();
    assert!(failed.is_empty(), "{failed:?}");
}

fn kernel_has_sctp(ns: &Netns) -> bool {
    ns.run_in(|| {
        // SAFETY: plain socket(2); the fd is closed right away.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM, libc::IPPROTO_SCTP) };
        if fd >= 0 {
            unsafe { libc::close(fd) };
        }
        fd >= 0
    })
}

#[test]
fn sctp_is_served_or_reported_missing() {
    let ns = Netns::new("sctp");
    if kernel_has_sctp(&ns) {
        let _serve = ns.serve(&["--sctp", "8082"]);
        let p = ns.probe(&["sctp", "127.0.0.1:8082"]);
        p.expect(0, "connected");
        assert_eq!(p.field("client"), Some("127.0.0.1"));
        ns.probe(&["sctp", "127.0.0.1:9"]).expect(1, "refused");
    } else {
        let p = ns.probe(&["sctp", "127.0.0.1:8082"]);
        assert_eq!(p.code, 2, "{}", p.line);
        assert!(p.stderr.contains("sctp is not available"), "{}", p.stderr);
        // The other ports of a pod still work; SCTP alone cannot be served.
        let _serve = ns.serve(&["--sctp", "8082", "--tcp", "8080"]);
        ns.probe(&["tcp", "127.0.0.1:8080"]).expect(0, "connected");
        let alone = ns
            .exec(weft())
            .args(["serve", "--sctp", "8083"])
            .output()
            .expect("run weft serve");
        assert!(!alone.status.success());
        assert!(String::from_utf8_lossy(&alone.stderr).contains("SCTP is not available"));
    }
}

#[test]
fn serve_exits_zero_on_sigterm() {
    let ns = Netns::new("sigterm");
    let serve = ns.serve(&["--tcp", "8080", "--udp", "8080"]);
    ns.probe(&["tcp", "127.0.0.1:8080"]).expect(0, "connected");
    let status = serve.stop();
    assert!(status.success(), "{status:?}");
    ns.probe(&["tcp", "127.0.0.1:8080"]).expect(1, "refused");
}

#[test]
fn names_that_do_not_resolve_are_reported() {
    let ns = Netns::new("names");
    let _serve = ns.serve(&["--tcp", "8080"]);
    // `localhost` comes from /etc/hosts; `.invalid` never resolves (RFC 6761).
    ns.probe(&["tcp", "localhost:8080"]).expect(0, "connected");
    ns.probe(&["tcp", "no-such-host.invalid:8080"])
        .expect(1, "unresolved");
    ns.probe(&["icmp", "no-such-host.invalid"])
        .expect(1, "unresolved");
}

#[test]
fn a_port_given_as_tcp_and_http_answers_both() {
    let ns = Netns::new("both");
    let _serve = ns.serve(&["--tcp", "8080", "--http", "8080"]);
    let p = ns.probe(&["tcp", "127.0.0.1:8080"]);
    p.expect(0, "connected");
    assert_eq!(p.field("client"), Some("127.0.0.1"), "{}", p.line);
    let p = ns.probe(&["http", "http://127.0.0.1:8080/both"]);
    p.expect(0, "answered");
    assert_eq!(p.field("path"), Some("/both"), "{}", p.line);
}

#[test]
fn usage_errors_exit_2() {
    // In a namespace of its own, so a regression that binds or connects stays there.
    let ns = Netns::new("usage");
    for args in [
        &["tcp", "10.0.0.1"][..],
        &["udp", "fd00::1:53"],
        &["http", "ftp://example.com/"],
        &[
            "http",
            "https://example.com/",
            "--resolve",
            "example.com:443",
        ],
        &["tcp", "10.0.0.1:80", "--timeout-ms", "0"],
        &["udp", "10.0.0.1:80", "--timeout-ms", "18446744073709551615"],
        &["dns", "kubernetes.default", "--type", "NOSUCHTYPE"],
        &["dns", "kubernetes.default", "--server", "not-an-address"],
    ] {
        let out = ns
            .exec(weft())
            .arg("probe")
            .args(args)
            .output()
            .expect("run weft probe");
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(out.stdout.is_empty(), "{args:?}");
        assert!(!out.stderr.is_empty(), "{args:?}");
    }
    let out = ns
        .exec(weft())
        .arg("serve")
        .output()
        .expect("run weft serve");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("nothing to serve"));
}
