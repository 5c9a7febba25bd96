//! The proxy's side towards endpoints, in a network namespace of the test's own: kept-alive
//! connections reused across requests, a refused connect retried on the next endpoint,
//! and an `Upgrade` passed through on a connection that then leaves the pool.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use weft_ingress::compile;
use weft_ingress::proxy::{Http1, Limits, Proxy};

/// A backend on 127.0.0.1:`port` that counts the connections it accepts, answers `ok`,
/// and answers an upgrade with 101 and then echoes what it reads.
async fn backend(accepted: Arc<AtomicUsize>) -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = l.local_addr().expect("addr").port();
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = l.accept().await else { return };
            accepted.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
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
            });
        }
    });
    port
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

        // One client connection, requests one after another: every one answered (half
        // of them first meet the refusing endpoint), all on one backend connection.
        let tcp = TcpStream::connect(at).await.expect("connect");
        let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .expect("handshake");
        tokio::spawn(conn);
        for i in 0..20 {
            let req = Request::builder()
                .uri(format!("/n/{i}"))
                .header("host", "a.test")
                .body(Full::new(Bytes::new()))
                .expect("request");
            tx.ready().await.expect("client connection");
            let resp = tx.send_request(req).await.expect("response");
            assert_eq!(resp.status(), StatusCode::OK, "request {i}");
            let body = resp.into_body().collect().await.expect("body").to_bytes();
            assert_eq!(&body[..], b"ok");
        }
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
        let req = Request::builder()
            .uri("/after")
            .header("host", "a.test")
            .body(Full::new(Bytes::new()))
            .expect("request");
        tx.ready().await.expect("client connection");
        let resp = tx.send_request(req).await.expect("response");
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(
            accepted.load(Ordering::SeqCst),
            2,
            "the upgraded connection left the pool"
        );
    }
}
