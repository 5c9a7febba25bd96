//! `pods/exec`, `pods/attach`, `pods/log` and `pods/portforward`:
//! forwarded to the node API of the pod's node, as kube-apiserver forwards them to the
//! kubelet. The node is reached at its InternalIP and the port its status names
//! (`daemonEndpoints.kubeletEndpoint`), over TLS that trusts exactly the certificate the
//! node published on its Node (`weft.dev/node-api-cert`), with the cluster's token.
//!
//! A WebSocket upgrade (exec) is relayed byte for byte once the node accepted it: the
//! API server needs to understand nothing of the protocol inside.

use crate::error::ApiError;
use crate::resources::{NODES, PODS};
use crate::server::AppState;
use crate::store;
use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

/// The Node annotation with the node API's certificate (weft-agent publishes it).
pub const CERT_ANNOTATION: &str = "weft.dev/node-api-cert";
const DEFAULT_PORT: u16 = 10250;

fn query_get(uri: &Uri, key: &str) -> Option<String> {
    uri.query()?.split('&').find_map(|p| {
        let (k, v) = p.split_once('=').unwrap_or((p, ""));
        (k == key).then(|| super::percent_decode(v))
    })
}

/// Where and how to reach the pod's node, and the node API path for the request.
struct Target {
    addr: SocketAddr,
    cert: CertificateDer<'static>,
    path: String,
}

fn resolve(
    state: &AppState,
    ns: &str,
    name: &str,
    sub: &str,
    uri: &Uri,
) -> Result<Target, ApiError> {
    let pod = state
        .store
        .read()
        .get(PODS, &store::key(PODS, ns, name))
        .ok_or_else(|| ApiError::not_found("pods", "", name))?;
    let containers: Vec<&str> = pod["spec"]["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["name"].as_str())
        .collect();
    let container = match query_get(uri, "container").filter(|c| !c.is_empty()) {
        // Ports belong to the pod, not to one of its containers.
        _ if sub == "portforward" => String::new(),
        Some(c) if containers.contains(&c.as_str()) => c,
        Some(c) => {
            return Err(ApiError::bad_request(format!(
                "container {c} is not valid for pod {name}"
            )))
        }
        None if containers.len() == 1 => containers[0].to_string(),
        None => {
            return Err(ApiError::bad_request(format!(
                "a container name must be specified for pod {name}, choose one of: [{}]",
                containers.join(" ")
            )))
        }
    };
    let phase = pod["status"]["phase"].as_str().unwrap_or("");
    if sub != "log" && matches!(phase, "Succeeded" | "Failed") {
        return Err(ApiError::bad_request(format!(
            "cannot {sub} into a container in a completed pod; current phase is {phase}"
        )));
    }
    let node_name = pod["spec"]["nodeName"].as_str().unwrap_or("");
    if node_name.is_empty() {
        return Err(ApiError::bad_request(format!(
            "pod {name} does not have a host assigned"
        )));
    }
    let node = state
        .store
        .read()
        .get(NODES, &store::key(NODES, "", node_name))
        .ok_or_else(|| ApiError::not_found("nodes", "", node_name))?;
    let unavailable = |why: String| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailable",
            format!("node {node_name}: {why}"),
        )
    };
    let ip: IpAddr = node["status"]["addresses"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|a| a["type"] == "InternalIP")
        .and_then(|a| a["address"].as_str()?.parse().ok())
        .ok_or_else(|| unavailable("no InternalIP".into()))?;
    let port = node["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"]
        .as_u64()
        .and_then(|p| u16::try_from(p).ok())
        .filter(|p| *p != 0)
        .unwrap_or(DEFAULT_PORT);
    let pem = node["metadata"]["annotations"][CERT_ANNOTATION]
        .as_str()
        .ok_or_else(|| unavailable("its agent serves no node API (yet)".into()))?;
    let cert = CertificateDer::from_pem_slice(pem.as_bytes())
        .map_err(|e| unavailable(format!("unreadable node API certificate: {e}")))?;
    let query = uri.query().map(|q| format!("?{q}")).unwrap_or_default();
    let path = match sub {
        "exec" => format!("/exec/{ns}/{name}/{container}{query}"),
        "log" => format!("/containerLogs/{ns}/{name}/{container}{query}"),
        "portforward" => format!("/portForward/{ns}/{name}{query}"),
        "attach" => format!("/attach/{ns}/{name}/{container}{query}"),
        other => {
            return Err(ApiError::bad_request(format!(
                "pods/{other} is not supported by weft's node agent (exec, attach, log and portforward are)"
            )))
        }
    };
    Ok(Target {
        addr: SocketAddr::new(ip, port),
        cert,
        path,
    })
}

async fn connect(
    t: &Target,
) -> Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>, String> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(t.cert.clone())
        .map_err(|e| format!("node API certificate: {e}"))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    let tcp = tokio::time::timeout(
        Duration::from_secs(5),
        tokio::net::TcpStream::connect(t.addr),
    )
    .await
    .map_err(|_| format!("connecting to {}: timed out", t.addr))?
    .map_err(|e| format!("connecting to {}: {e}", t.addr))?;
    let _ = tcp.set_nodelay(true);
    tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(ServerName::IpAddress(t.addr.ip().into()), tcp)
        .await
        .map_err(|e| format!("TLS to {}: {e}", t.addr))
}

pub async fn exec(s: State<Arc<AppState>>, p: Path<(String, String)>, r: Request) -> Response {
    handle(s, p, r, "exec").await
}

pub async fn log(s: State<Arc<AppState>>, p: Path<(String, String)>, r: Request) -> Response {
    handle(s, p, r, "log").await
}

pub async fn attach(s: State<Arc<AppState>>, p: Path<(String, String)>, r: Request) -> Response {
    handle(s, p, r, "attach").await
}

pub async fn portforward(
    s: State<Arc<AppState>>,
    p: Path<(String, String)>,
    r: Request,
) -> Response {
    handle(s, p, r, "portforward").await
}

async fn handle(
    State(state): State<Arc<AppState>>,
    Path((ns, name)): Path<(String, String)>,
    mut req: Request,
    sub: &str,
) -> Response {
    let t = match resolve(&state, &ns, &name, sub, req.uri()) {
        Ok(t) => t,
        Err(e) => return e.into_response(),
    };
    let bad_gateway = |msg: String| {
        ApiError::new(
            StatusCode::BAD_GATEWAY,
            "InternalError",
            format!("error dialing backend: {msg}"),
        )
        .into_response()
    };
    let tls = match connect(&t).await {
        Ok(s) => s,
        Err(e) => return bad_gateway(e),
    };
    let (mut sender, conn) = match hyper::client::conn::http1::handshake(TokioIo::new(tls)).await {
        Ok(x) => x,
        Err(e) => return bad_gateway(e.to_string()),
    };
    tokio::spawn(async move {
        let _ = conn.with_upgrades().await;
    });
    let upgrading = req.headers().contains_key(header::UPGRADE);
    let client_upgrade = upgrading.then(|| hyper::upgrade::on(&mut req));
    let (parts, body) = req.into_parts();
    let mut out = hyper::Request::builder()
        .method(parts.method.clone())
        .uri(t.path.as_str());
    for (k, v) in parts.headers.iter() {
        if k != header::HOST && k != header::AUTHORIZATION {
            out = out.header(k, v);
        }
    }
    let host = HeaderValue::from_str(&t.addr.to_string()).unwrap_or(HeaderValue::from_static(""));
    let auth = HeaderValue::from_str(&format!("Bearer {}", state.token))
        .unwrap_or(HeaderValue::from_static(""));
    let out = match out
        .header(header::HOST, host)
        .header(header::AUTHORIZATION, auth)
        .body(body)
    {
        Ok(r) => r,
        Err(e) => return bad_gateway(e.to_string()),
    };
    let mut resp = match sender.send_request(out).await {
        Ok(r) => r,
        Err(e) => return bad_gateway(e.to_string()),
    };
    if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
        let Some(client_upgrade) = client_upgrade else {
            return bad_gateway("the node switched protocols unasked".into());
        };
        let node_upgrade = hyper::upgrade::on(&mut resp);
        tokio::spawn(async move {
            if let (Ok(a), Ok(b)) = (client_upgrade.await, node_upgrade.await) {
                let _ =
                    tokio::io::copy_bidirectional(&mut TokioIo::new(a), &mut TokioIo::new(b)).await;
            }
        });
        let mut r = Response::new(Body::empty());
        *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        *r.headers_mut() = resp.headers().clone();
        return r;
    }
    let (parts, body) = resp.into_parts();
    Response::from_parts(parts, Body::new(body))
}
