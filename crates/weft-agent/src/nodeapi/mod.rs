//! The node API: what a kubelet serves on port 10250 for the pods of its node, and what
//! the API server forwards `kubectl exec`, `logs` and `port-forward` to.
//!
//! - `GET /exec/{namespace}/{pod}/{container}?command=...&stdin=&stdout=&stderr=&tty=`,
//!   a WebSocket speaking `v5.channel.k8s.io` (see [`exec`]);
//! - `GET /containerLogs/{namespace}/{pod}/{container}?follow=&tailLines=&sinceSeconds=&
//!   sinceTime=&timestamps=&previous=&limitBytes=` (see [`logs`]);
//! - `GET /attach/{namespace}/{pod}/{container}?stdout=&stderr=`, the container's output
//!   as it is written, over the same protocol (see [`attach`]);
//! - `GET /portForward/{namespace}/{pod}`, a WebSocket speaking
//!   `SPDY/3.1+portforward.k8s.io` (see [`portforward`]).
//!
//! HTTPS with a serving certificate generated at each start and kept in memory only (its
//! private key is never written); the agent publishes the certificate on its Node
//! ([`CERT_ANNOTATION`]) and the API server trusts that certificate and no other for this
//! node. Every request needs the cluster's bearer token (the one in the agent's
//! kubeconfig): nothing answers an unauthenticated caller.

pub mod attach;
pub mod exec;
pub mod logs;
pub mod portforward;
pub mod spdy;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::net::TcpListener;

use crate::error::{Error, Result};
use crate::launch::find_recorded;
use crate::record::PodDir;

/// The kubelet's port.
pub const PORT: u16 = 10250;

/// The Node annotation holding the node API's serving certificate (PEM).
pub const CERT_ANNOTATION: &str = "weft.dev/node-api-cert";

#[derive(Debug, Clone)]
pub struct NodeApiConfig {
    /// Where to listen: the node's InternalIP and [`PORT`].
    pub listen: SocketAddr,
    /// The bearer token a caller must present.
    pub token: String,
    /// The pod runtime's state directory (its records, logs).
    pub pods_state_dir: PathBuf,
    /// The weft binary (`weft` in a command).
    pub weft_bin: PathBuf,
}

pub(crate) struct Shared {
    pub cfg: NodeApiConfig,
}

/// A started node API.
pub struct NodeApi {
    pub addr: SocketAddr,
    /// The serving certificate, PEM: what the Node's [`CERT_ANNOTATION`] publishes.
    pub cert_pem: String,
}

/// Binds, generates the serving certificate and serves in a task of its own.
pub async fn start(cfg: NodeApiConfig) -> Result<NodeApi> {
    let key = rcgen::KeyPair::generate().map_err(cert_err)?;
    let mut params =
        rcgen::CertificateParams::new(vec!["localhost".to_string()]).map_err(cert_err)?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "weft-node-api");
    params
        .subject_alt_names
        .push(rcgen::SanType::IpAddress(cfg.listen.ip()));
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    params.not_after = rcgen::date_time_ymd(2099, 1, 1);
    let cert = params.self_signed(&key).map_err(cert_err)?;
    let cert_pem = cert.pem();
    let der: CertificateDer<'static> = cert.der().clone();
    let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Config(format!("node API TLS: {e}")))?
        .with_no_client_auth()
        .with_single_cert(vec![der], key_der)
        .map_err(|e| Error::Config(format!("node API TLS: {e}")))?;
    // HTTP/1.1 only: exec is a WebSocket upgrade.
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    let listener = TcpListener::bind(cfg.listen)
        .await
        .map_err(|e| Error::io(format!("node API: listen on {}", cfg.listen), e))?;
    let addr = listener
        .local_addr()
        .map_err(|e| Error::io("node API: local address", e))?;
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
    let app = router(Arc::new(Shared { cfg }));
    tokio::spawn(async move {
        loop {
            let (tcp, _) = match listener.accept().await {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!("node API: accept: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            };
            let _ = tcp.set_nodelay(true);
            let (acceptor, app) = (acceptor.clone(), app.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let svc = TowerToHyperService::new(app);
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection_with_upgrades(TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    tracing::info!(%addr, "node API (exec, logs) listening");
    Ok(NodeApi { addr, cert_pem })
}

fn cert_err(e: rcgen::Error) -> Error {
    Error::Config(format!("node API certificate: {e}"))
}

fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/exec/{namespace}/{pod}/{container}", any(exec::handle))
        .route("/attach/{namespace}/{pod}/{container}", any(attach::handle))
        .route(
            "/containerLogs/{namespace}/{pod}/{container}",
            get(logs::handle),
        )
        .route("/portForward/{namespace}/{pod}", any(portforward::handle))
        .layer(middleware::from_fn_with_state(shared.clone(), authenticate))
        .with_state(shared)
}

async fn authenticate(State(s): State<Arc<Shared>>, req: Request, next: Next) -> Response {
    let ok = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|t| constant_time_eq(t.trim().as_bytes(), s.cfg.token.as_bytes()));
    if !ok {
        return status_response(StatusCode::UNAUTHORIZED, "Unauthorized", "Unauthorized");
    }
    next.run(req).await
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A `Status` object as the API server answers errors (kubectl prints its message).
pub(crate) fn status_response(code: StatusCode, reason: &str, message: &str) -> Response {
    let body = serde_json::json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {},
        "status": "Failure", "message": message, "reason": reason, "code": code.as_u16(),
    });
    (
        code,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

/// The directory of a pod this node runs, if `container` is one of its containers; else
/// the `Status` kubectl prints (the pod is elsewhere, or the container is misspelt).
pub(crate) async fn find_container(
    s: &Shared,
    namespace: &str,
    pod: &str,
    container: &str,
) -> std::result::Result<PodDir, Box<Response>> {
    let dir = s.cfg.pods_state_dir.clone();
    let (ns, name, c) = (namespace.to_owned(), pod.to_owned(), container.to_owned());
    let found = tokio::task::spawn_blocking(move || {
        let rec = find_recorded(&dir, &ns, &name).ok().flatten()?;
        let known = rec.plan.containers.iter().any(|p| p.name == c);
        Some((rec.dir, known))
    })
    .await
    .ok()
    .flatten();
    match found {
        Some((dir, true)) => Ok(dir),
        Some((_, false)) => Err(Box::new(status_response(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            &format!("container {container} is not valid for pod {pod}"),
        ))),
        None => Err(Box::new(status_response(
            StatusCode::NOT_FOUND,
            "NotFound",
            &format!("pod {namespace}/{pod} is not running on this node"),
        ))),
    }
}

/// Whether the client's WebSocket upgrade offers `protocol` among its subprotocols.
pub(crate) fn offers_subprotocol(headers: &axum::http::HeaderMap, protocol: &str) -> bool {
    headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|p| p.trim() == protocol)
}

/// The query string's pairs, repeated keys kept in order (`command=sh&command=-c`).
pub(crate) fn query_pairs(q: Option<&str>) -> Vec<(String, String)> {
    q.unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

pub(crate) fn query_true(q: &[(String, String)], key: &str) -> bool {
    q.iter()
        .any(|(k, v)| k == key && matches!(v.as_str(), "1" | "true" | "True"))
}

pub(crate) fn query_get<'a>(q: &'a [(String, String)], key: &str) -> Option<&'a str> {
    q.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                match std::str::from_utf8(&b[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                {
                    Some(v) => {
                        out.push(v);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_keeps_repeated_keys_and_decodes() {
        let q = query_pairs(Some(
            "command=sh&command=-c&command=exit%203&tty=true&x=%zz",
        ));
        let cmd: Vec<&str> = q
            .iter()
            .filter(|(k, _)| k == "command")
            .map(|(_, v)| v.as_str())
            .collect();
        assert_eq!(cmd, ["sh", "-c", "exit 3"]);
        assert!(query_true(&q, "tty"));
        assert!(!query_true(&q, "stdin"));
        assert_eq!(query_get(&q, "x"), Some("%zz"));
        assert_eq!(percent_decode("a%2"), "a%2");
    }
}
