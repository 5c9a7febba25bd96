//! The proxy itself, in a network namespace of each test's own: HTTP/2 over TLS (ALPN)
//! and cleartext, a request in flight across a reconfiguration, a graceful drain, a
//! chunked body over the limit, a fuzz of the request parser that must never disturb
//! a well-behaved client, and TLS sessions that resume (and end with close_notify).

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use k8s_openapi::api::core::v1::Secret;
use rustls::pki_types::pem::PemObject;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use weft_ingress::cases::TlsSecret;
use weft_ingress::proxy::{Http1, Limits, Proxy};
use weft_ingress::{compile, Cluster};

/// A backend answering `backend <path>` after `delay` (when the path starts `/slow`).
async fn backend() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind backend");
    let at = l.local_addr().expect("addr");
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = l.accept().await else { return };
            tokio::spawn(async move {
                let svc =
                    hyper::service::service_fn(|req: Request<hyper::body::Incoming>| async move {
                        if req.uri().path().starts_with("/slow") {
                            tokio::time::sleep(Duration::from_millis(600)).await;
                        }
                        let proto = req
                            .headers()
                            .get("x-forwarded-proto")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("-")
                            .to_string();
                        let n = req
                            .into_body()
                            .collect()
                            .await
                            .map(|b| b.to_bytes().len())
                            .unwrap_or(0);
                        let body = format!("backend proto={proto} body={n}");
                        Ok::<_, std::convert::Infallible>(Response::new(Full::new(Bytes::from(
                            body,
                        ))))
                    });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    at
}

/// One Ingress: `a.test` (TLS from a generated Secret) with `/` to the backend.
fn cluster(backend: SocketAddr, secret: &Secret, with_route: bool) -> Cluster {
    let mut c = common::web(backend.port(), &[&backend.ip().to_string()]);
    c.secrets.push(Arc::new(secret.clone()));
    let paths = if with_route {
        json!([{"path": "/", "pathType": "Prefix",
                "backend": {"service": {"name": "web", "port": {"number": 80}}}}])
    } else {
        json!([{"path": "/elsewhere", "pathType": "Exact",
                "backend": {"service": {"name": "web", "port": {"number": 80}}}}])
    };
    c.ingresses.push(common::obj(json!({
        "metadata": {"name": "a", "namespace": "default"},
        "spec": {"tls": [{"hosts": ["a.test"], "secretName": "a-tls"}],
                 "rules": [{"host": "a.test", "http": {"paths": paths}}]}
    })));
    c
}

struct Running {
    proxy: Proxy,
    http: SocketAddr,
    https: SocketAddr,
    stop: watch::Sender<bool>,
    cert_pem: String,
    secret: Secret,
    backend: SocketAddr,
}

async fn start() -> Running {
    start_with(Http1::default()).await
}

/// `start`, HTTP/1.1 served by `engine`.
async fn start_with(engine: Http1) -> Running {
    let backend = backend().await;
    let generated = TlsSecret {
        name: "a-tls".into(),
        hosts: vec!["a.test".into()],
    }
    .generate()
    .expect("secret");
    let secret: Secret = serde_json::from_value(generated.object).expect("secret");
    let proxy = Proxy::new(
        Limits {
            max_body: 1 << 20,
            ..Limits::default()
        },
        &["default"],
    )
    .expect("proxy")
    .with_http1(engine);
    assert!(proxy.update(compile(&cluster(backend, &secret, true))));
    let (stop, rx) = watch::channel(false);
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let t = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let (http, https) = (l.local_addr().expect("a"), t.local_addr().expect("a"));
    tokio::spawn(proxy.clone().serve(l, false, rx.clone()));
    tokio::spawn(proxy.clone().serve(t, true, rx));
    Running {
        proxy,
        http,
        https,
        stop,
        cert_pem: generated.cert_pem,
        secret,
        backend,
    }
}

/// A raw HTTP/1.1 exchange: the status line's code, or 0 when none came.
async fn raw(addr: SocketAddr, bytes: &[u8]) -> u16 {
    raw_within(addr, bytes, Duration::from_secs(2)).await
}

async fn raw_within(addr: SocketAddr, bytes: &[u8], wait: Duration) -> u16 {
    let Ok(Ok(mut s)) =
        tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(addr)).await
    else {
        return 0;
    };
    if s.write_all(bytes).await.is_err() {
        return 0;
    }
    let mut buf = vec![0u8; 256];
    let n = match tokio::time::timeout(wait, s.read(&mut buf)).await {
        Ok(Ok(n)) => n,
        _ => return 0,
    };
    let head = String::from_utf8_lossy(&buf[..n]);
    head.strip_prefix("HTTP/1.1 ")
        .and_then(|r| r.get(..3))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

fn get(host: &str, path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").into_bytes()
}

#[test]
fn http2_over_tls_by_alpn_and_in_cleartext() {
    common::in_netns(|| async {
        let r = start().await;
        // TLS: ALPN h2, the Secret's certificate checked for a.test.
        let mut roots = rustls::RootCertStore::empty();
        for c in rustls::pki_types::CertificateDer::pem_slice_iter(r.cert_pem.as_bytes()) {
            roots.add(c.expect("pem")).expect("root");
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        cfg.alpn_protocols = vec![b"h2".to_vec()];
        let tcp = TcpStream::connect(r.https).await.expect("connect");
        let name = rustls::pki_types::ServerName::try_from("a.test").expect("name");
        let tls = tokio_rustls::TlsConnector::from(Arc::new(cfg))
            .connect(name, tcp)
            .await
            .expect("handshake");
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
        let (mut send, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
                .await
                .expect("h2 handshake");
        tokio::spawn(conn);
        let req = Request::builder()
            .uri("https://a.test/x")
            .body(Full::new(Bytes::new()))
            .expect("req");
        let resp = send.send_request(req).await.expect("h2 request");
        assert_eq!(resp.version(), hyper::Version::HTTP_2);
        assert_eq!(resp.status(), 200);
        let body = resp.into_body().collect().await.expect("body").to_bytes();
        assert_eq!(&body[..], b"backend proto=https body=0");
        // Cleartext HTTP/2 with prior knowledge.
        let tcp = TcpStream::connect(r.http).await.expect("connect");
        let (mut send, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
                .await
                .expect("h2c handshake");
        tokio::spawn(conn);
        let req = Request::builder()
            .uri("http://a.test/y")
            .body(Full::new(Bytes::new()))
            .expect("req");
        let resp = send.send_request(req).await.expect("h2c request");
        assert_eq!(resp.status(), 200);
        let _ = r.stop.send(true);
    });
}

#[test]
fn a_request_in_flight_survives_a_reconfiguration_and_a_drain() {
    for engine in [Http1::Native, Http1::Hyper] {
        common::in_netns(move || in_flight(engine));
    }
}

async fn in_flight(engine: Http1) {
    {
        let r = start_with(engine).await;
        let http = r.http;
        let slow = tokio::spawn(async move { raw(http, &get("a.test", "/slow")).await });
        tokio::time::sleep(Duration::from_millis(150)).await;
        // The route goes away while the slow request is on its way.
        assert!(r
            .proxy
            .update(compile(&cluster(r.backend, &r.secret, false))));
        assert_eq!(
            raw(r.http, &get("a.test", "/x")).await,
            404,
            "the new table serves new requests"
        );
        assert_eq!(
            slow.await.expect("task"),
            200,
            "the request in flight finished on the old table"
        );
        // Back, then a drain: the open request finishes, new connections are refused.
        r.proxy
            .update(compile(&cluster(r.backend, &r.secret, true)));
        let http = r.http;
        let slow = tokio::spawn(async move { raw(http, &get("a.test", "/slow")).await });
        tokio::time::sleep(Duration::from_millis(150)).await;
        let _ = r.stop.send(true);
        assert_eq!(slow.await.expect("task"), 200, "drained, not cut");
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(
            raw(r.http, &get("a.test", "/x")).await,
            0,
            "accepting after the stop"
        );
    }
}

#[test]
fn a_chunked_body_over_the_limit_gets_413() {
    for engine in [Http1::Native, Http1::Hyper] {
        common::in_netns(move || over_the_limit(engine));
    }
}

async fn over_the_limit(engine: Http1) {
    {
        let r = start_with(engine).await;
        let mut req =
            b"POST /x HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        let chunk = vec![b'a'; 64 * 1024];
        for _ in 0..20 {
            req.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
            req.extend_from_slice(&chunk);
            req.extend_from_slice(b"\r\n");
        }
        req.extend_from_slice(b"0\r\n\r\n");
        assert_eq!(raw(r.http, &req).await, 413);
        let small = b"POST /x HTTP/1.1\r\nHost: a.test\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc";
        assert_eq!(raw(r.http, small).await, 200);
        let _ = r.stop.send(true);
    }
}

/// A request from a seed corpus with some bytes changed, inserted or dropped.
fn mutate(seed: &mut u64, corpus: &[&[u8]]) -> Vec<u8> {
    let mut next = || {
        *seed ^= *seed << 13;
        *seed ^= *seed >> 7;
        *seed ^= *seed << 17;
        *seed
    };
    let mut v = corpus[(next() % corpus.len() as u64) as usize].to_vec();
    for _ in 0..(next() % 6) {
        let at = (next() % (v.len() as u64 + 1)) as usize;
        let byte = [b'\r', b'\n', b' ', b':', 0, b'\t', 0xff, b'0', b'a'][(next() % 9) as usize];
        match next() % 3 {
            0 if at < v.len() => v[at] = byte,
            1 => v.insert(at, byte),
            _ if at < v.len() => {
                v.remove(at);
            }
            _ => {}
        }
    }
    v
}

#[test]
fn fuzzed_requests_get_a_status_and_never_disturb_other_clients() {
    for engine in [Http1::Native, Http1::Hyper] {
        common::in_netns(move || fuzzed(engine));
    }
}

async fn fuzzed(engine: Http1) {
    {
        let r = start_with(engine).await;
        let good_failures = Arc::new(AtomicUsize::new(0));
        let good_ok = Arc::new(AtomicUsize::new(0));
        let (done_tx, done) = watch::channel(false);
        let good = {
            let (f, ok, http) = (good_failures.clone(), good_ok.clone(), r.http);
            let mut done = done.clone();
            tokio::spawn(async move {
                while !*done.borrow_and_update() {
                    match raw(http, &get("a.test", "/good")).await {
                        200 => ok.fetch_add(1, Ordering::Relaxed),
                        _ => f.fetch_add(1, Ordering::Relaxed),
                    };
                }
            })
        };
        let corpus: [&[u8]; 6] = [
            b"GET /x HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n",
            b"POST /x HTTP/1.1\r\nHost: a.test\r\nContent-Length: 5\r\n\r\nhello",
            b"POST /x HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
            b"GET /x HTTP/1.1\r\nHost: a.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
            b"GET http://a.test/x?q=1#f HTTP/1.1\r\nHost: b.test\r\n\r\n",
            b"OPTIONS * HTTP/1.1\r\nHost: a.test\r\n\r\n",
        ];
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let cases: Vec<Vec<u8>> = (0..6000).map(|_| mutate(&mut seed, &corpus)).collect();
        let mut bad = Vec::new();
        // A mutant the parser is still waiting on gets no answer within the wait: fine.
        let wait = Duration::from_millis(300);
        for chunk in cases.chunks(64) {
            let answers =
                futures::future::join_all(chunk.iter().map(|c| raw_within(r.http, c, wait))).await;
            for (c, s) in chunk.iter().zip(answers) {
                // Either no answer (the proxy closed on garbage or waits for more) or a
                // real status; a 5xx would mean the proxy itself failed on the input.
                let fine = s == 0 || (100..500).contains(&s) || s == 503 || s == 502;
                if !fine {
                    bad.push(format!("{s}: {:?}", String::from_utf8_lossy(c)));
                }
            }
        }
        let _ = done_tx.send(true);
        good.await.expect("good client");
        assert!(
            bad.is_empty(),
            "{engine:?}: {} odd answers:\n{}",
            bad.len(),
            bad[..bad.len().min(10)].join("\n")
        );
        assert_eq!(
            good_failures.load(Ordering::Relaxed),
            0,
            "the good client failed ({engine:?})"
        );
        assert!(good_ok.load(Ordering::Relaxed) > 10, "{engine:?}");
        let _ = r.stop.send(true);
    }
}

/// The leaf certificate a TLS handshake with `sni` presents (no verification).
async fn presented(addr: SocketAddr, sni: &str) -> Vec<u8> {
    #[derive(Debug)]
    struct Any(Arc<rustls::crypto::CryptoProvider>);
    impl rustls::client::danger::ServerCertVerifier for Any {
        fn verify_server_cert(
            &self,
            _: &rustls::pki_types::CertificateDer<'_>,
            _: &[rustls::pki_types::CertificateDer<'_>],
            _: &rustls::pki_types::ServerName<'_>,
            _: &[u8],
            _: rustls::pki_types::UnixTime,
        ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
            Ok(rustls::client::danger::ServerCertVerified::assertion())
        }
        fn verify_tls12_signature(
            &self,
            m: &[u8],
            c: &rustls::pki_types::CertificateDer<'_>,
            d: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls12_signature(
                m,
                c,
                d,
                &self.0.signature_verification_algorithms,
            )
        }
        fn verify_tls13_signature(
            &self,
            m: &[u8],
            c: &rustls::pki_types::CertificateDer<'_>,
            d: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls13_signature(
                m,
                c,
                d,
                &self.0.signature_verification_algorithms,
            )
        }
        fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
            self.0.signature_verification_algorithms.supported_schemes()
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(Any(provider)))
        .with_no_client_auth();
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let name = rustls::pki_types::ServerName::try_from(sni.to_string()).expect("name");
    let tls = tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(name, tcp)
        .await
        .expect("handshake");
    let certs = tls.get_ref().1.peer_certificates().expect("certificates");
    certs[0].to_vec()
}

fn der(pem: &str) -> Vec<u8> {
    rustls::pki_types::CertificateDer::from_pem_slice(pem.as_bytes())
        .expect("pem")
        .to_vec()
}

#[test]
fn a_changed_secret_serves_from_the_next_handshake() {
    common::in_netns(|| async {
        let r = start().await;
        assert_eq!(presented(r.https, "a.test").await, der(&r.cert_pem));
        let other = presented(r.https, "b.test").await;
        assert_ne!(
            other,
            der(&r.cert_pem),
            "b.test has no Secret: the default answers"
        );
        // The Secret is rotated: the same name, a new certificate, no restart.
        let rotated = TlsSecret {
            name: "a-tls".into(),
            hosts: vec!["a.test".into()],
        }
        .generate()
        .expect("secret");
        let secret: Secret = serde_json::from_value(rotated.object).expect("secret");
        assert!(r.proxy.update(compile(&cluster(r.backend, &secret, true))));
        assert_eq!(presented(r.https, "a.test").await, der(&rotated.cert_pem));
        let _ = r.stop.send(true);
    });
}

/// A TLS client that resumes sessions (rustls' ticket store), trusting `cert_pem`.
fn resuming_client(cert_pem: &str) -> tokio_rustls::TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls::pki_types::CertificateDer::pem_slice_iter(cert_pem.as_bytes()) {
        roots.add(c.expect("pem")).expect("root");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    tokio_rustls::TlsConnector::from(Arc::new(cfg))
}

/// One request over a new TLS connection from `client`; which kind of handshake it took.
async fn tls_request(
    client: &tokio_rustls::TlsConnector,
    addr: SocketAddr,
) -> rustls::HandshakeKind {
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let name = rustls::pki_types::ServerName::try_from("a.test").expect("name");
    let mut tls = client.connect(name, tcp).await.expect("handshake");
    tls.write_all(&get("a.test", "/x")).await.expect("write");
    // Reading to the end also takes in the session tickets sent after the handshake.
    let mut answer = Vec::new();
    tls.read_to_end(&mut answer).await.expect("read");
    assert!(answer.starts_with(b"HTTP/1.1 200"), "{answer:?}");
    tls.get_ref().1.handshake_kind().expect("handshake done")
}

#[test]
fn a_tls_session_resumes_after_many_other_clients() {
    common::in_netns(|| async {
        let r = start().await;
        let returning = resuming_client(&r.cert_pem);
        assert_eq!(
            tls_request(&returning, r.https).await,
            rustls::HandshakeKind::Full
        );
        // More clients than rustls' default session cache holds (256) handshake in
        // between, each taking its own tickets.
        for _ in 0..300 {
            let other = resuming_client(&r.cert_pem);
            tls_request(&other, r.https).await;
        }
        assert_eq!(
            tls_request(&returning, r.https).await,
            rustls::HandshakeKind::Resumed,
            "the returning client's ticket still resumes its session"
        );
        let _ = r.stop.send(true);
    });
}
