//! The proxy as the agent runs it, `Proxy::start_workers`, in a network namespace of the
//! test's own: every worker listens on both ports (one port chosen for all when 0 is
//! asked for), connections are served whichever socket the kernel hands them to, a
//! request in flight at `stop` is answered, and a port already taken is an error.

mod common;

use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use weft_ingress::proxy::{Limits, Proxy};
use weft_ingress::{compile, Error};

/// A backend answering `ok`, after 600 ms when the path starts `/slow`.
async fn backend() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = l.local_addr().expect("addr").port();
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = l.accept().await else { return };
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(|req: Request<Incoming>| async move {
                    if req.uri().path().starts_with("/slow") {
                        tokio::time::sleep(Duration::from_millis(600)).await;
                    }
                    Ok::<_, std::convert::Infallible>(Response::new(Full::new(Bytes::from_static(
                        b"ok",
                    ))))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    port
}

/// One request on a new connection that the client then closes: the status line and the
/// body, or what came before the connection ended.
async fn get(at: SocketAddr, path: &str) -> String {
    let mut s = TcpStream::connect(at).await.expect("connect");
    let req = format!("GET {path} HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.expect("send");
    let mut out = String::new();
    let _ = s.read_to_string(&mut out).await;
    out
}

/// The listening TCP sockets on `port` in this thread's network namespace.
fn listening(port: u16) -> usize {
    let tcp = std::fs::read_to_string("/proc/thread-self/net/tcp").expect("net/tcp");
    let local = format!(":{port:04X}");
    tcp.lines()
        .skip(1)
        .filter(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            // local_address, remote_address, st: 0A is LISTEN.
            f.len() > 3 && f[1].ends_with(&local) && f[3] == "0A"
        })
        .count()
}

#[test]
fn workers_share_the_ports_serve_and_drain() {
    common::in_netns(|| async {
        let port = backend().await;
        let proxy = Proxy::new(Limits::default(), &["default"]).expect("proxy");
        assert!(proxy.update(compile(&common::a_test(port, &["127.0.0.1"]))));
        let (stop, rx) = tokio::sync::watch::channel(false);
        let any: SocketAddr = "127.0.0.1:0".parse().expect("addr");
        let n = NonZeroUsize::new(3).expect("3");
        let workers = proxy.start_workers(n, any, Some(any), rx).expect("workers");
        assert_eq!(workers.count(), 3);
        let http = workers.http_addr();
        let https = workers.https_addr().expect("https");
        assert_ne!(http.port(), 0, "the chosen port is reported");
        assert_ne!(http.port(), https.port());
        assert_eq!(listening(http.port()), 3, "every worker listens on HTTP");
        assert_eq!(listening(https.port()), 3, "every worker listens on HTTPS");

        // Many new connections, whichever worker's socket the kernel picks: all served.
        let answers = futures::future::join_all(
            (0..60).map(|i| get(http, if i % 2 == 0 { "/a" } else { "/b" })),
        )
        .await;
        for (i, a) in answers.iter().enumerate() {
            assert!(a.starts_with("HTTP/1.1 200"), "request {i}: {a:?}");
            assert!(a.ends_with("ok"), "request {i}: {a:?}");
        }

        // A request in flight when the workers are told to stop still gets its answer;
        // after the drain, nothing listens any more and every thread has ended.
        let slow = tokio::spawn(get(http, "/slow"));
        tokio::time::sleep(Duration::from_millis(200)).await;
        stop.send(true).expect("stop");
        let answer = slow.await.expect("slow request");
        assert!(answer.starts_with("HTTP/1.1 200"), "in flight: {answer:?}");
        tokio::task::spawn_blocking(move || workers.join())
            .await
            .expect("join");
        assert_eq!(listening(http.port()), 0, "the sockets are closed");
        assert!(
            TcpStream::connect(http).await.is_err(),
            "refused after the drain"
        );
    });
}

#[test]
fn a_port_already_taken_is_an_error_naming_it() {
    common::in_netns(|| async {
        // A server that does not share its port (no SO_REUSEPORT) holds it.
        let taken = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let at = taken.local_addr().expect("addr");
        let proxy = Proxy::new(Limits::default(), &["default"]).expect("proxy");
        let (_stop, rx) = tokio::sync::watch::channel(false);
        let n = NonZeroUsize::new(2).expect("2");
        match proxy.start_workers(n, at, None, rx) {
            Err(e @ Error::Listen { addr, .. }) => {
                assert_eq!(addr, at);
                assert!(e.to_string().contains(&at.to_string()), "{e}");
            }
            Err(e) => panic!("another error: {e}"),
            Ok(_) => panic!("workers started on a port another server holds"),
        }
    });
}
