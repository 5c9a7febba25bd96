//! The REST API: routing, authentication, and request decoding. Verb logic lives in
//! `crud`, watches in `watch`, patch flavours in `patch`, selectors in `selector`.

pub(crate) mod crud;
pub(crate) mod delete;
mod discovery;
pub mod node_proxy;
mod openapi;
mod patch;
mod protobuf;
mod protobuf_schema;
mod scale;
pub mod selector;
pub mod table;
mod watch;

use crate::error::ApiError;
use crate::limits::Peer;
use crate::resources::{self, Resource};
use crate::server::AppState;
use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode, Uri};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use axum::Router;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::Arc;

pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/version", get(discovery::version))
        .route("/healthz", get(|| async { "ok" }))
        .route("/livez", get(|| async { "ok" }))
        .route("/readyz", get(|| async { "ok" }))
        .route("/api", get(discovery::core_versions))
        .route("/api/v1", get(discovery::core_resources))
        .route("/apis", get(discovery::groups))
        .route("/apis/{group}", get(discovery::group))
        .route("/apis/{group}/{version}", get(discovery::group_resources))
        .route("/openapi/v2", get(openapi::v2))
        .route("/openapi/v3", get(openapi::root))
        .route("/openapi/v3/api/{version}", get(openapi::core))
        .route("/openapi/v3/apis/{group}/{version}", get(openapi::group))
        .route(
            "/api/v1/namespaces/{namespace}/pods/{name}/exec",
            any(node_proxy::exec),
        )
        .route(
            "/api/v1/namespaces/{namespace}/pods/{name}/log",
            get(node_proxy::log),
        )
        .route(
            "/api/v1/namespaces/{namespace}/pods/{name}/attach",
            any(node_proxy::attach),
        )
        .route(
            "/api/v1/namespaces/{namespace}/pods/{name}/portforward",
            any(node_proxy::portforward),
        )
        .fallback(resource_request)
        .layer(middleware::from_fn_with_state(state.clone(), authenticate))
        .layer(middleware::from_fn_with_state(
            state.limits.clone(),
            crate::limits::inflight,
        ))
        .with_state(state)
}

/// Bearer-token authentication. Health and version are public as on a real cluster
/// (system:public-info-viewer); everything else needs the token.
async fn authenticate(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let path = req.uri().path();
    let public = req.method() == Method::GET
        && matches!(path, "/healthz" | "/livez" | "/readyz" | "/version");
    if !public {
        let ok = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .is_some_and(|t| constant_time_eq(t.trim().as_bytes(), state.token.as_bytes()));
        if !ok {
            return ApiError::unauthorized().into_response();
        }
    }
    next.run(req).await
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A request for a resource, parsed from its path.
#[derive(Debug, Clone)]
pub struct Target {
    pub res: &'static Resource,
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub sub: Option<String>,
    /// The deprecated `/watch/` path prefix.
    pub watch_path: bool,
}

pub fn parse_path(path: &str) -> Result<Target, ApiError> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, version, mut rest) = match segs.as_slice() {
        ["api", v, rest @ ..] => ("", *v, rest),
        ["apis", g, v, rest @ ..] => (*g, *v, rest),
        _ => return Err(ApiError::no_route(path)),
    };
    let mut watch_path = false;
    if rest.first() == Some(&"watch") {
        watch_path = true;
        rest = &rest[1..];
    }
    let (namespace, rest) = match rest {
        ["namespaces", ns, plural, tail @ ..] if !matches!(*plural, "status" | "finalize") => {
            (Some(ns.to_string()), {
                let mut v = vec![*plural];
                v.extend_from_slice(tail);
                v
            })
        }
        other => (None, other.to_vec()),
    };
    let (plural, name, sub) = match rest.as_slice() {
        [p] => (*p, None, None),
        [p, n] => (*p, Some(n.to_string()), None),
        [p, n, s] => (*p, Some(n.to_string()), Some(s.to_string())),
        _ => return Err(ApiError::no_route(path)),
    };
    let Some(res) = resources::find(group, version, plural) else {
        return Err(ApiError::no_route(path));
    };
    if namespace.is_some() && !res.namespaced {
        return Err(ApiError::no_route(path));
    }
    if let Some(s) = &sub {
        let ok = (s == "status" && res.has_status)
            || (s == "finalize" && res.plural == "namespaces")
            || (s == "scale" && res.plural == "deployments");
        if !ok {
            return Err(ApiError::no_route(path));
        }
    }
    Ok(Target {
        res,
        namespace,
        name,
        sub,
        watch_path,
    })
}

pub type Query = HashMap<String, String>;

fn parse_query(uri: &Uri) -> Query {
    let mut q = HashMap::new();
    if let Some(qs) = uri.query() {
        for pair in qs.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            q.insert(percent_decode(k), percent_decode(v));
        }
    }
    q
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                let hex = std::str::from_utf8(&b[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
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

pub fn is_true(q: &Query, key: &str) -> bool {
    matches!(q.get(key).map(String::as_str), Some("1" | "true" | "True"))
}

/// Decodes a JSON, YAML or Kubernetes-protobuf request body into one object.
pub fn decode_body(headers: &HeaderMap, body: &[u8]) -> Result<Value, ApiError> {
    let ct = content_type(headers);
    let value: Value = if ct.contains("yaml") {
        let s = std::str::from_utf8(body)
            .map_err(|_| ApiError::bad_request("request body is not valid UTF-8"))?;
        crate::limits::check_yaml_depth(s.as_bytes())?;
        serde_yaml::from_str(s)
            .map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")))?
    } else if ct == "application/vnd.kubernetes.protobuf" {
        protobuf::decode(body)?
    } else if ct.is_empty() || ct.contains("json") {
        serde_json::from_slice(body).map_err(|e| {
            ApiError::bad_request(format!("couldn't get version/kind; json parse error: {e}"))
        })?
    } else {
        return Err(ApiError::unsupported_media(&ct));
    };
    if !value.is_object() {
        return Err(ApiError::bad_request(
            "the request body must be a single JSON or YAML object",
        ));
    }
    Ok(value)
}

pub fn content_type(headers: &HeaderMap) -> String {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

pub fn json_response(code: StatusCode, v: &Value) -> Response {
    (
        code,
        [(header::CONTENT_TYPE, "application/json")],
        v.to_string(),
    )
        .into_response()
}

async fn resource_request(State(state): State<Arc<AppState>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let peer = parts.extensions.get::<Peer>().copied();
    let body = match crate::limits::read_body(&parts.headers, body, state.limits.max_body).await {
        Ok(b) => b,
        Err(e) => return e.into_response(),
    };
    let (method, uri, headers) = (parts.method, parts.uri, parts.headers);
    let response = match dispatch(&state, peer, &method, &uri, &headers, &body).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    };
    // Whatever this request wrote or read is on disk before the client hears of it (a
    // watch stream applies the same rule per event).
    state.store.wait_durable().await;
    response
}

async fn dispatch(
    state: &Arc<AppState>,
    peer: Option<Peer>,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<Response, ApiError> {
    let t = parse_path(uri.path())?;
    let q = parse_query(uri);
    if t.sub.as_deref() == Some("scale") {
        return match *method {
            Method::GET | Method::PUT | Method::PATCH => {
                scale::handle(state, method, &t, &q, headers, body)
            }
            _ => Err(ApiError::method_not_allowed()),
        };
    }
    match (method.clone(), t.name.is_some()) {
        (Method::GET, false) if t.watch_path || is_true(&q, "watch") => {
            let slot = state.limits.watch_slot(peer)?;
            watch::watch(state.clone(), &t, &q, headers, slot)
        }
        (Method::GET, true) if t.watch_path || is_true(&q, "watch") => {
            let mut q = q.clone();
            let name = t.name.clone().unwrap_or_default();
            q.insert("fieldSelector".into(), format!("metadata.name={name}"));
            let t = Target { name: None, ..t };
            let slot = state.limits.watch_slot(peer)?;
            watch::watch(state.clone(), &t, &q, headers, slot)
        }
        (Method::GET, false) => crud::list(state, &t, &q, headers),
        (Method::GET, true) => crud::get(state, &t, &q, headers),
        (Method::POST, false) => crud::create(state, &t, &q, headers, body),
        (Method::PUT, true) => crud::update(state, &t, &q, headers, body),
        (Method::PATCH, true) => crud::patch(state, &t, &q, headers, body),
        (Method::DELETE, true) => delete::delete(state, &t, &q, body),
        (Method::DELETE, false) => delete::delete_collection(state, &t, &q),
        _ => Err(ApiError::method_not_allowed()),
    }
}
