//! What a client can cost the server is bounded, and while one client hits a bound a
//! well-behaved client keeps getting answers: body size (413), nesting depth (400), watches
//! per client (429 + Retry-After), slow clients (closed after the header-read timeout),
//! concurrent requests (429 + Retry-After).

mod common;

use axum::http::Request;
use common::*;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ListParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use serde_json::json;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const CM: &str = "/api/v1/namespaces/default/configmaps";

/// A client that does not retry 429s, so the test sees them.
async fn no_retry_client(kubeconfig: &Path) -> kube::Client {
    let kc = Kubeconfig::read_from(kubeconfig).expect("kubeconfig");
    let mut cfg = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .expect("config");
    cfg.default_retry = false;
    kube::Client::try_from(cfg).expect("client")
}

async fn raw_post(c: &kube::Client, path: &str, ct: &str, body: Vec<u8>) -> kube::Error {
    let req = Request::post(path)
        .header("content-type", ct)
        .body(body)
        .expect("request");
    c.request_text(req).await.expect_err("must be refused")
}

/// A well-behaved request answers, and quickly.
async fn normal_get_answers(c: &kube::Client) -> Duration {
    let t = Instant::now();
    let api: Api<ConfigMap> = Api::namespaced(c.clone(), "default");
    tokio::time::timeout(Duration::from_secs(10), api.list(&ListParams::default()))
        .await
        .expect("a normal list answers within 10 s")
        .expect("a normal list succeeds");
    t.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn oversized_body_is_413_naming_the_limit_and_nothing_is_stored() {
    let s = start().await;
    let c = s.client().await;
    let limit = 3 * 1024 * 1024;
    let cm = |name: &str, size: usize| {
        serde_json::to_vec(&json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name},
            "data": {"big": "x".repeat(size)},
        }))
        .expect("json")
    };
    let e = bounded(
        "4 MiB create",
        raw_post(&c, CM, "application/json", cm("huge", 4 << 20)),
    )
    .await;
    let st = api_status(&e).expect("a Status body");
    assert_eq!(
        (st.code, st.reason.as_str()),
        (413, "RequestEntityTooLarge")
    );
    assert!(st.message.contains(&limit.to_string()), "{}", st.message);
    // Just over the limit, as a JSON merge patch and as an update: also 413.
    let api: Api<ConfigMap> = Api::namespaced(c.clone(), "default");
    let e = bounded(
        "just over",
        raw_post(&c, CM, "application/json", cm("over", limit)),
    )
    .await;
    assert_eq!(api_status(&e).map(|s| s.code), Some(413), "{e:?}");
    // Nothing was stored; a body under the limit is fine.
    for name in ["huge", "over"] {
        let e = api.get(name).await.expect_err("not stored");
        assert_eq!(api_status(&e).map(|s| s.code), Some(404), "{e:?}");
    }
    let req = Request::post(CM)
        .header("content-type", "application/json")
        .body(cm("fits", 2 << 20))
        .expect("request");
    c.request_text(req)
        .await
        .expect("2 MiB ConfigMap is accepted");
    let req = Request::patch(format!("{CM}/fits"))
        .header("content-type", "application/merge-patch+json")
        .body(cm("fits", 4 << 20))
        .expect("request");
    let e = c.request_text(req).await.expect_err("oversized patch");
    assert_eq!(api_status(&e).map(|s| s.code), Some(413), "{e:?}");
    let got = api.get("fits").await.expect("stored");
    assert_eq!(got.data.expect("data")["big"].len(), 2 << 20);
    normal_get_answers(&c).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn deeply_nested_json_and_yaml_are_400_and_the_server_stays_up() {
    let s = start().await;
    let c = s.client().await;
    let depth = 100_000;
    let arrays = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
    let objects = format!("{}1{}", "{\"a\":".repeat(depth), "}".repeat(depth));
    let in_field = format!(r#"{{"metadata":{{"name":"deep"}},"data":{arrays}}}"#);
    let bodies: Vec<(&str, String)> = vec![
        ("application/json", arrays.clone()),
        ("application/json", objects.clone()),
        ("application/json", in_field.clone()),
        ("application/yaml", arrays.clone()),
        ("application/yaml", objects.clone()),
        (
            "application/yaml",
            format!("metadata:\n  name: deep\ndata: {arrays}\n"),
        ),
        // Block-style YAML nesting: "a:\n  a:\n    a: ..." (depth limited to keep it small).
        (
            "application/yaml",
            (0..2_000)
                .map(|i| format!("{}a:\n", " ".repeat(i)))
                .collect::<String>(),
        ),
    ];
    for (ct, body) in bodies {
        let e = bounded("deep create", raw_post(&c, CM, ct, body.into_bytes())).await;
        assert_eq!(api_status(&e).map(|s| s.code), Some(400), "{ct}: {e:?}");
    }
    // Patches and apply bodies go through the same decoders.
    let api: Api<ConfigMap> = Api::namespaced(c.clone(), "default");
    api.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": "target"}})).expect("cm"),
    )
    .await
    .expect("create target");
    for (ct, body) in [
        ("application/merge-patch+json", &objects),
        ("application/json-patch+json", &arrays),
        ("application/strategic-merge-patch+json", &in_field),
        ("application/apply-patch+yaml", &arrays),
    ] {
        let req = Request::patch(format!("{CM}/target?fieldManager=t"))
            .header("content-type", ct)
            .body(body.clone().into_bytes())
            .expect("request");
        let e = bounded("deep patch", c.request_text(req))
            .await
            .expect_err("deep patch refused");
        let code = api_status(&e).map(|s| s.code);
        assert!(matches!(code, Some(400 | 415 | 422)), "{ct}: {e:?}");
    }
    // The process is up and answering.
    normal_get_answers(&c).await;
    assert!(api.get("deep").await.is_err(), "nothing stored");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn watches_per_client_are_capped_with_429_and_retry_after() {
    let cap = 100;
    let s = start_with_args(&["--max-watches-per-client", &cap.to_string()]).await;
    let c = no_retry_client(&s.kubeconfig()).await;
    let watch = |c: kube::Client| async move {
        let req = Request::get(format!("{CM}?watch=1&timeoutSeconds=600"))
            .body(kube::client::Body::empty())
            .expect("request");
        c.send(req).await.expect("an HTTP answer")
    };
    // Three times the cap, concurrently.
    let answers = bounded(
        "open watches",
        futures_util::future::join_all((0..3 * cap).map(|_| watch(c.clone()))),
    )
    .await;
    let (open, refused): (Vec<_>, Vec<_>) = answers.into_iter().partition(|r| r.status() == 200);
    assert_eq!(open.len(), cap, "exactly the cap is admitted");
    assert_eq!(refused.len(), 2 * cap);
    for r in &refused {
        assert_eq!(r.status(), 429);
        assert_eq!(
            r.headers().get("retry-after").map(|v| v.as_bytes()),
            Some(&b"1"[..])
        );
    }
    let body = refused
        .into_iter()
        .next()
        .expect("one refusal")
        .into_body()
        .collect_bytes()
        .await
        .expect("body");
    let st: serde_json::Value = serde_json::from_slice(&body).expect("Status JSON");
    assert_eq!(st["kind"], "Status");
    assert_eq!(st["reason"], "TooManyRequests");
    assert_eq!(st["details"]["retryAfterSeconds"], 1);
    assert!(
        st["message"]
            .as_str()
            .unwrap_or("")
            .contains(&cap.to_string()),
        "{st}"
    );

    // A well-behaved request still answers, and the open watches still stream.
    let api: Api<ConfigMap> = Api::namespaced(c.clone(), "default");
    normal_get_answers(&c).await;
    api.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": "seen"}})).expect("cm"),
    )
    .await
    .expect("create");
    let mut first = open.into_iter();
    let mut one =
        axum::body::Body::new(first.next().expect("an open watch").into_body()).into_data_stream();
    let line = bounded("an event on an open watch", async {
        use futures_util::StreamExt as _;
        let mut buf = Vec::new();
        while let Some(chunk) = one.next().await {
            buf.extend_from_slice(&chunk.expect("chunk"));
            if buf.contains(&b'\n') {
                break;
            }
        }
        buf
    })
    .await;
    assert!(String::from_utf8_lossy(&line).contains("\"seen\""));

    // Closing watches frees their slots.
    drop(one);
    drop(first);
    eventually("a watch is admitted again", || {
        let c = c.clone();
        async move { (watch(c).await.status() == 200).then_some(()) }
    })
    .await;
}

/// A TLS client for the test server that trusts its CA.
fn tls_connector(dir: &Path) -> tokio_rustls::TlsConnector {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in
        rustls::pki_types::CertificateDer::pem_file_iter(dir.join("pki/ca.crt")).expect("ca.crt")
    {
        roots.add(cert.expect("cert")).expect("add");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    tokio_rustls::TlsConnector::from(Arc::new(cfg))
}

async fn tls(
    addr: SocketAddr,
    connector: &tokio_rustls::TlsConnector,
) -> tokio_rustls::client::TlsStream<TcpStream> {
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let name = rustls::pki_types::ServerName::IpAddress(addr.ip().into());
    connector.connect(name, tcp).await.expect("TLS handshake")
}

/// Trickles `first` then one byte every 100 ms until the server closes the connection;
/// returns how long that took.
async fn trickle<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    mut conn: S,
    first: &[u8],
) -> Duration {
    let t = Instant::now();
    let mut sent = 0;
    let mut buf = [0u8; 4096];
    loop {
        tokio::select! {
            r = conn.read(&mut buf) => match r {
                Ok(0) | Err(_) => return t.elapsed(),
                Ok(_) => {} // e.g. a 408 before the close
            },
            _ = tokio::time::sleep(Duration::from_millis(100)) => {
                let byte = if sent < first.len() { first[sent] } else { b'x' };
                sent += 1;
                if !first.is_empty() && conn.write_all(&[byte]).await.is_err() {
                    return t.elapsed();
                }
                let _ = conn.flush().await;
            }
        }
    }
}

async fn closed_within(
    kind: &'static str,
    f: impl std::future::Future<Output = Duration>,
) -> Result<(), &'static str> {
    match tokio::time::timeout(Duration::from_secs(5), f).await {
        Ok(_) => Ok(()),
        Err(_) => Err(kind),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn slow_clients_are_closed_after_the_header_read_timeout() {
    let s = start_with_args(&["--header-read-timeout-ms", "1000"]).await;
    let c = s.client().await;
    let addr = s.addr();
    let connector = tls_connector(s.dir.path());
    let mut slow = tokio::task::JoinSet::new();
    // 200 slow connections of three kinds: TCP only (no TLS handshake), TLS then silence,
    // TLS then headers one byte at a time.
    for i in 0..200 {
        match i % 3 {
            0 => {
                let tcp = TcpStream::connect(addr).await.expect("connect");
                slow.spawn(closed_within("TCP without TLS", trickle(tcp, b"")));
            }
            1 => {
                let conn = tls(addr, &connector).await;
                slow.spawn(closed_within("TLS, then silence", trickle(conn, b"")));
            }
            _ => {
                let conn = tls(addr, &connector).await;
                let head = b"GET /api/v1/namespaces HTTP/1.1\r\nHost: x\r\nX-Slow: ";
                slow.spawn(closed_within("TLS, then byte by byte", trickle(conn, head)));
            }
        }
    }
    // Meanwhile a well-behaved client gets answers, quickly.
    for _ in 0..5 {
        let took = normal_get_answers(&c).await;
        assert!(
            took < Duration::from_secs(2),
            "normal request took {took:?}"
        );
    }
    // Every slow connection is closed, about when the timeout says.
    let mut open = Vec::new();
    while let Some(r) = slow.join_next().await {
        if let Err(kind) = r.expect("trickle task") {
            open.push(kind);
        }
    }
    assert!(open.is_empty(), "not closed within 5 s: {open:?}");
    normal_get_answers(&c).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn overload_is_429_with_retry_after_and_passes() {
    let s = start_with_args(&["--max-requests-inflight", "4"]).await;
    let c = no_retry_client(&s.kubeconfig()).await;
    let addr = s.addr();
    let connector = tls_connector(s.dir.path());
    let token = std::fs::read_to_string(s.dir.path().join("token")).expect("token");
    // Four requests that never finish sending their body hold every slot.
    let mut holders = Vec::new();
    for _ in 0..4 {
        let mut conn = tls(addr, &connector).await;
        let head = format!(
            "POST {CM} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{",
            token.trim()
        );
        conn.write_all(head.as_bytes()).await.expect("write");
        conn.flush().await.expect("flush");
        holders.push(conn);
    }
    let api: Api<ConfigMap> = Api::namespaced(c.clone(), "default");
    let e = eventually("a request is refused for load", || {
        let api = api.clone();
        async move { api.list(&ListParams::default()).await.err() }
    })
    .await;
    let st = api_status(&e).expect("a Status");
    assert_eq!(
        (st.code, st.reason.as_str()),
        (429, "TooManyRequests"),
        "{st:?}"
    );
    let req = Request::get(CM)
        .body(kube::client::Body::empty())
        .expect("req");
    let r = c.send(req).await.expect("answer");
    assert_eq!(r.status(), 429);
    assert_eq!(
        r.headers().get("retry-after").map(|v| v.as_bytes()),
        Some(&b"1"[..])
    );
    // Probes and watches are not counted against the limit.
    let req = Request::get("/readyz")
        .body(kube::client::Body::empty())
        .expect("req");
    assert_eq!(c.send(req).await.expect("readyz").status(), 200);
    let req = Request::get(format!("{CM}?watch=1&timeoutSeconds=5"))
        .body(kube::client::Body::empty())
        .expect("req");
    assert_eq!(c.send(req).await.expect("watch").status(), 200);
    // When the load goes away, requests pass again.
    drop(holders);
    eventually("requests pass again", || {
        let api = api.clone();
        async move { api.list(&ListParams::default()).await.ok() }
    })
    .await;
}
