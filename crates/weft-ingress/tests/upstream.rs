//! The proxy's side towards endpoints, in a network namespace of the test's own: kept-alive
//! connections reused across requests, a refused connect retried on the next endpoint,
//! an `Upgrade` passed through on a connection that then leaves the pool, and failing
//! endpoints ejected for a while and taken back after it.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use weft_ingress::compile;
use weft_ingress::proxy::{Http1, Limits, Proxy, EJECT_FOR, RESPONSE_FAILURES};

/// A backend on 127.0.0.1 (its port returned) that counts the connections it accepts,
/// answers `ok`, and answers an upgrade with 101 and then echoes what it reads.
async fn backend(accepted: Arc<AtomicUsize>) -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = l.local_addr().expect("addr").port();
    serve(l, accepted, Arc::new(AtomicBool::new(true)));
    port
}

/// Accepts on `l`, counting the connections. While `healthy` is false each one is closed
/// at once, unanswered (a pod whose server dies on every request); then they are served.
fn serve(l: TcpListener, accepted: Arc<AtomicUsize>, healthy: Arc<AtomicBool>) {
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = l.accept().await else { return };
            accepted.fetch_add(1, Ordering::SeqCst);
            if healthy.load(Ordering::SeqCst) {
                tokio::spawn(answer(s));
            }
        }
    });
}

async fn answer(s: TcpStream) {
    let svc = hyper::service::service_fn(|mut req: Request<Incoming>| async move {
        if req.headers().contains_key(hyper::header::UPGRADE) {
            let on = hyper::upgrade::on(&mut req);
            tokio::spawn(async move {
                let Ok(up) = on.await else { return };
                let mut io = TokioIo::new(up);
                let mut buf = [0u8; 64];
                while let Ok(n) = io.read(&mut buf).await {
                    if n == 0 || io.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                }
            });
            let mut r = Response::new(Full::new(Bytes::new()));
            *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
            r.headers_mut()
                .insert("connection", "upgrade".parse().expect("value"));
            r.headers_mut()
                .insert("upgrade", "echo".parse().expect("value"));
            return Ok::<_, std::convert::Infallible>(r);
        }
        Ok(Response::new(Full::new(Bytes::from_static(b"ok"))))
    });
    let _ = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(s), svc)
        .with_upgrades()
        .await;
}

#[test]
fn connections_are_reused_refused_connects_retried_and_upgrades_passed() {
    for engine in [Http1::Native, Http1::Hyper] {
        common::in_netns(move || reused(engine));
    }
}

async fn reused(engine: Http1) {
    {
        let accepted = Arc::new(AtomicUsize::new(0));
        let port = backend(accepted.clone()).await;
        let proxy = Proxy::new(Limits::default(), &["default"])
            .expect("proxy")
            .with_http1(engine);
        assert!(proxy.update(compile(&common::a_test(port, &["127.0.0.1", "127.0.0.2"]))));
        let (_stop, rx) = tokio::sync::watch::channel(false);
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let at = l.local_addr().expect("addr");
        tokio::spawn(proxy.clone().serve(l, false, rx));

        // One client connection, requests one after another: every one answered, all on
        // one backend connection. The first whose turn it is to try the refusing endpoint
        // first is retried on the other; that refusal ejects it, so the rest go straight
        // to the listening one.
        gets(at, 20, "reused").await;
        assert_eq!(accepted.load(Ordering::SeqCst), 1, "one pooled connection");

        // An upgrade: 101 through the proxy on the idle connection, then bytes both ways.
        // That connection is the splice's from then on, so the next request needs a new one.
        let mut s = TcpStream::connect(at).await.expect("connect");
        s.write_all(
            b"GET /ws HTTP/1.1\r\nHost: a.test\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n",
        )
        .await
        .expect("write");
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            assert_eq!(
                s.read(&mut byte).await.expect("read"),
                1,
                "head ended early"
            );
            head.push(byte[0]);
        }
        let head = String::from_utf8_lossy(&head);
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        s.write_all(b"ping").await.expect("write");
        let mut echo = [0u8; 4];
        s.read_exact(&mut echo).await.expect("echo");
        assert_eq!(&echo, b"ping");
        assert_eq!(accepted.load(Ordering::SeqCst), 1, "the idle one was used");
        gets(at, 1, "after the upgrade").await;
        assert_eq!(
            accepted.load(Ordering::SeqCst),
            2,
            "the upgraded connection left the pool"
        );
    }
}

/// Requests per run: enough that an endpoint never ejected would get a third of them.
const RUN: usize = 50;

#[test]
fn failing_endpoints_are_ejected_and_taken_back_after_a_while() {
    for engine in [Http1::Native, Http1::Hyper] {
        common::in_netns(move || ejection(engine));
    }
}

async fn ejection(engine: Http1) {
    // Three endpoints of one Service on one port: 127.0.0.1 answers, 127.0.0.2 closes
    // every connection unanswered, nothing listens on 127.0.0.3 (connects are refused).
    let good = Arc::new(AtomicUsize::new(0));
    let port = backend(good.clone()).await;
    let closer = Arc::new(AtomicUsize::new(0));
    let closer_healthy = Arc::new(AtomicBool::new(false));
    let l = TcpListener::bind(("127.0.0.2", port))
        .await
        .expect("bind the closing endpoint");
    serve(l, closer.clone(), closer_healthy.clone());
    let eps = ["127.0.0.1", "127.0.0.2", "127.0.0.3"];
    let proxy = Proxy::new(Limits::default(), &["default"])
        .expect("proxy")
        .with_http1(engine);
    assert!(proxy.update(compile(&common::a_test(port, &eps))));
    let (_stop, rx) = tokio::sync::watch::channel(false);
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let at = l.local_addr().expect("addr");
    tokio::spawn(proxy.clone().serve(l, false, rx));

    // Every GET answered: each one that meets a failing endpoint is retried on another.
    // The refused connect ejects 127.0.0.3 at once, RESPONSE_FAILURES unanswered
    // requests eject 127.0.0.2; from then on they are tried only if all else fails.
    let start = Instant::now();
    gets(at, RUN, "failing").await;
    let failed_at = Instant::now();
    let closes = closer.load(Ordering::SeqCst);
    assert!(
        (1..=RESPONSE_FAILURES as usize).contains(&closes),
        "{engine:?}: the closing endpoint got {closes} connections in {RUN} requests"
    );

    // Both healthy again, but still ejected: no request goes to them.
    closer_healthy.store(true, Ordering::SeqCst);
    let refuser = Arc::new(AtomicUsize::new(0));
    let l = TcpListener::bind(("127.0.0.3", port))
        .await
        .expect("bind the refusing endpoint's address");
    serve(l, refuser.clone(), Arc::new(AtomicBool::new(true)));
    gets(at, RUN, "healed, ejected").await;
    let ejected_run = start.elapsed();
    let (late_closes, late_refuser) = (
        closer.load(Ordering::SeqCst) - closes,
        refuser.load(Ordering::SeqCst),
    );
    assert_eq!(
        (late_closes, late_refuser),
        (0, 0),
        "{engine:?}: connections to the ejected endpoints (127.0.0.2, 127.0.0.3) while \
         ejected; both runs took {ejected_run:?} of the {EJECT_FOR:?}"
    );

    // Both were ejected before the first run ended; once that is EJECT_FOR ago, each
    // takes its round-robin turn again.
    tokio::time::sleep_until((failed_at + EJECT_FOR + Duration::from_millis(100)).into()).await;
    gets(at, 2 * eps.len(), "after ejection").await;
    let (back_closer, back_refuser) = (
        closer.load(Ordering::SeqCst) - closes,
        refuser.load(Ordering::SeqCst),
    );
    println!(
        "{engine:?}: {RUN} GETs with two failing endpoints + {RUN} with them healed, \
         ejected: {ejected_run:?}; connections: closing endpoint {closes} while failing, \
         {late_closes} while ejected, {back_closer} after; refusing endpoint {late_refuser} \
         while ejected, {back_refuser} after; good endpoint {}",
        good.load(Ordering::SeqCst)
    );
    assert!(
        back_closer > 0 && back_refuser > 0,
        "{engine:?}: after the ejection the healed endpoints got {back_closer} and \
         {back_refuser} connections in {} requests",
        2 * eps.len()
    );
}

/// `n` GETs one after another on one client connection, each answered `ok` by some
/// endpoint.
async fn gets(at: SocketAddr, n: usize, run: &str) {
    let tcp = TcpStream::connect(at).await.expect("connect");
    let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    for i in 0..n {
        let req = Request::builder()
            .uri(format!("/{i}"))
            .header("host", "a.test")
            .body(Full::new(Bytes::new()))
            .expect("request");
        tx.ready().await.expect("client connection");
        let resp = tx.send_request(req).await.expect("response");
        assert_eq!(resp.status(), StatusCode::OK, "{run} run, request {i}");
        let body = resp.into_body().collect().await.expect("body").to_bytes();
        assert_eq!(&body[..], b"ok", "{run} run, request {i}");
    }
}
