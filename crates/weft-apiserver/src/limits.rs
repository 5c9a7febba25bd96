//! What one client can cost the server: request body size, concurrent watches per client,
//! concurrent non-watch requests. (Header-read and TLS-handshake timeouts live in the
//! accept loop, `server.rs`.) Every refusal is a Kubernetes `Status`.

use crate::config::Config;
use crate::error::ApiError;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Semaphore;

/// The remote address of the connection a request came on (a request extension set by the
/// accept loop).
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub SocketAddr);

/// How long a client refused for load is asked to wait.
const RETRY_AFTER_SECONDS: u32 = 1;

pub struct Limits {
    pub max_body: usize,
    pub max_watches_per_client: usize,
    pub max_inflight: usize,
    pub header_read_timeout: Duration,
    inflight: Arc<Semaphore>,
    /// Open watches per client. There is one token, so a client is its source address.
    watches: Mutex<HashMap<IpAddr, usize>>,
}

impl Limits {
    pub fn new(cfg: &Config) -> Arc<Limits> {
        Arc::new(Limits {
            max_body: cfg.max_request_body_bytes,
            max_watches_per_client: cfg.max_watches_per_client,
            max_inflight: cfg.max_requests_inflight,
            header_read_timeout: Duration::from_millis(cfg.header_read_timeout_ms),
            inflight: Arc::new(Semaphore::new(cfg.max_requests_inflight)),
            watches: Mutex::new(HashMap::new()),
        })
    }

    /// A slot for one more watch by `peer`'s client, or 429.
    pub fn watch_slot(self: &Arc<Self>, peer: Option<Peer>) -> Result<WatchSlot, ApiError> {
        let ip = peer.map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |p| p.0.ip());
        let mut w = self.watches.lock().unwrap_or_else(|e| e.into_inner());
        let n = w.entry(ip).or_insert(0);
        if *n >= self.max_watches_per_client {
            return Err(too_many(format!(
                "too many watches from this client: the limit is {} concurrent watches per client",
                self.max_watches_per_client
            )));
        }
        *n += 1;
        Ok(WatchSlot {
            limits: self.clone(),
            ip,
        })
    }
}

/// One open watch; dropping it frees the slot.
pub struct WatchSlot {
    limits: Arc<Limits>,
    ip: IpAddr,
}

impl Drop for WatchSlot {
    fn drop(&mut self) {
        let mut w = self
            .limits
            .watches
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(n) = w.get_mut(&self.ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                w.remove(&self.ip);
            }
        }
    }
}

/// 429 TooManyRequests with `Retry-After` (and `details.retryAfterSeconds`, as kube-apiserver
/// sends).
pub fn too_many(message: String) -> ApiError {
    let mut e = ApiError::new(StatusCode::TOO_MANY_REQUESTS, "TooManyRequests", message);
    e.details.retry_after_seconds = Some(RETRY_AFTER_SECONDS);
    e
}

/// 413 naming the limit; kube-apiserver's wording.
pub fn too_large(limit: usize) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "RequestEntityTooLarge",
        format!("Request entity too large: limit is {limit}"),
    )
}

/// Reads a request body of at most `limit` bytes; a bigger one is refused with 413 as soon
/// as it is known to be bigger (its Content-Length, or the byte that crosses the limit).
pub async fn read_body(headers: &HeaderMap, body: Body, limit: usize) -> Result<Bytes, ApiError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let mut stream = body.into_data_stream();
    if declared.is_some_and(|n| n > limit as u64) {
        drain(&mut stream, limit).await;
        return Err(too_large(limit));
    }
    let mut buf = Vec::with_capacity(declared.map_or(0, |n| n as usize));
    while let Some(chunk) = stream.next().await {
        let chunk =
            chunk.map_err(|e| ApiError::bad_request(format!("reading the request body: {e}")))?;
        if buf.len() + chunk.len() > limit {
            drop(buf);
            drain(&mut stream, limit).await;
            return Err(too_large(limit));
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(Bytes::from(buf))
}

/// Reads and discards what is left of a refused body (nothing is kept), so an HTTP/1 client
/// still writing it reads the 413 instead of a broken pipe. Bounded: at most `4 * limit`
/// more bytes and 10 seconds; past that the connection is simply closed.
async fn drain(stream: &mut axum::body::BodyDataStream, limit: usize) {
    let cap = limit.saturating_mul(4);
    let _ = tokio::time::timeout(Duration::from_secs(10), async {
        let mut seen = 0usize;
        while let Some(Ok(chunk)) = stream.next().await {
            seen += chunk.len();
            if seen > cap {
                break;
            }
        }
    })
    .await;
}

/// Whether a request is long-running (a watch, or an exec/attach/portforward/log stream):
/// those are bounded per client, not by the in-flight limit.
fn long_running(req: &Request) -> bool {
    let path = req.uri().path();
    let watch_query = req.uri().query().is_some_and(|q| {
        q.split('&')
            .any(|kv| matches!(kv, "watch=1" | "watch=true" | "watch=True"))
    });
    let watch_path = path.starts_with("/api/v1/watch/")
        || (path.starts_with("/apis/") && path.split('/').nth(4) == Some("watch"));
    let stream = path.starts_with("/api/v1/namespaces/")
        && ["/exec", "/attach", "/portforward", "/log"]
            .iter()
            .any(|s| path.ends_with(s))
        && path.contains("/pods/");
    watch_query || watch_path || stream
}

/// Bounds concurrent short requests: past `--max-requests-inflight`, 429 with Retry-After.
/// Health probes are exempt (they are cheap and must answer under load).
pub async fn inflight(State(limits): State<Arc<Limits>>, req: Request, next: Next) -> Response {
    let probe = matches!(req.uri().path(), "/healthz" | "/livez" | "/readyz");
    if probe || long_running(&req) {
        return next.run(req).await;
    }
    let Ok(_permit) = limits.inflight.clone().try_acquire_owned() else {
        return too_many(format!(
            "Too many requests, please try again later (the limit is {} concurrent requests)",
            limits.max_inflight
        ))
        .into_response();
    };
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunked(parts: usize, size: usize) -> Body {
        let chunks =
            (0..parts).map(move |_| Ok::<_, std::io::Error>(Bytes::from(vec![b'x'; size])));
        Body::from_stream(futures_util::stream::iter(chunks))
    }

    #[tokio::test]
    async fn a_chunked_body_over_the_limit_is_413_without_content_length() {
        let e = read_body(&HeaderMap::new(), chunked(10, 1000), 9_999)
            .await
            .expect_err("over");
        assert_eq!(e.code, StatusCode::PAYLOAD_TOO_LARGE);
        assert!(e.message.contains("9999"), "{}", e.message);
        let ok = read_body(&HeaderMap::new(), chunked(10, 1000), 10_000)
            .await
            .expect("at the limit");
        assert_eq!(ok.len(), 10_000);
    }

    #[tokio::test]
    async fn a_declared_length_over_the_limit_is_413() {
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_LENGTH, "20000".parse().expect("value"));
        let e = read_body(&h, chunked(20, 1000), 10_000)
            .await
            .expect_err("over");
        assert_eq!(e.code, StatusCode::PAYLOAD_TOO_LARGE);
    }

    #[test]
    fn watches_and_streams_are_long_running() {
        let req = |uri: &str| Request::get(uri).body(Body::empty()).expect("request");
        assert!(long_running(&req("/api/v1/pods?watch=1")));
        assert!(long_running(&req("/api/v1/watch/pods")));
        assert!(long_running(&req("/apis/apps/v1/watch/deployments")));
        assert!(long_running(&req(
            "/api/v1/namespaces/a/pods/p/exec?command=ls"
        )));
        assert!(!long_running(&req("/api/v1/pods")));
        assert!(!long_running(&req("/apis/apps/v1/deployments?watch=0")));
    }
}

/// Deepest YAML nesting accepted: serde_yaml's and serde_json's own recursion limit.
pub const MAX_YAML_DEPTH: usize = 128;

/// Refuses YAML nested deeper than [`MAX_YAML_DEPTH`] before serde_yaml sees it. serde_yaml
/// does refuse such documents, but only after libyaml has scanned all of it, and libyaml's
/// scan is quadratic in flow nesting (600 KB of `{"a":` took 37 s of CPU in a release
/// build). Walking libyaml's events and stopping at the first one too deep costs only the
/// scan up to that depth.
pub fn check_yaml_depth(input: &[u8]) -> Result<(), ApiError> {
    use unsafe_libyaml as unsafe_sys;
    let mut parser = Box::<unsafe_sys::yaml_parser_t>::new_uninit();
    let p = parser.as_mut_ptr();
    // SAFETY: the parser is initialized before use and deleted once; it lives in a Box
    // (libyaml keeps pointers into it) and reads `input`, which outlives it. Each event
    // that yaml_parser_parse fills is deleted after its type is read.
    unsafe {
        if unsafe_sys::yaml_parser_initialize(p).fail {
            return Err(ApiError::internal("cannot initialize the YAML parser"));
        }
        unsafe_sys::yaml_parser_set_encoding(p, unsafe_sys::YAML_UTF8_ENCODING);
        unsafe_sys::yaml_parser_set_input_string(p, input.as_ptr(), input.len() as u64);
        let mut depth = 0usize;
        let mut too_deep = false;
        loop {
            let mut event = std::mem::MaybeUninit::<unsafe_sys::yaml_event_t>::uninit();
            if unsafe_sys::yaml_parser_parse(p, event.as_mut_ptr()).fail {
                // Malformed: serde_yaml reports it with its position.
                break;
            }
            let ty = (*event.as_ptr()).type_;
            unsafe_sys::yaml_event_delete(event.as_mut_ptr());
            match ty {
                unsafe_sys::YAML_SEQUENCE_START_EVENT | unsafe_sys::YAML_MAPPING_START_EVENT => {
                    depth += 1;
                    if depth > MAX_YAML_DEPTH {
                        too_deep = true;
                        break;
                    }
                }
                unsafe_sys::YAML_SEQUENCE_END_EVENT | unsafe_sys::YAML_MAPPING_END_EVENT => {
                    depth = depth.saturating_sub(1)
                }
                unsafe_sys::YAML_STREAM_END_EVENT => break,
                _ => {}
            }
        }
        unsafe_sys::yaml_parser_delete(p);
        if too_deep {
            return Err(ApiError::bad_request(format!(
                "error decoding YAML: nesting deeper than {MAX_YAML_DEPTH} levels"
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod yaml_tests {
    use super::*;

    #[test]
    fn deep_yaml_is_refused_quickly_and_normal_yaml_passes() {
        let depth = 100_000;
        let objects = format!("{}1{}", "{\"a\":".repeat(depth), "}".repeat(depth));
        let arrays = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
        for deep in [objects, arrays] {
            let t = std::time::Instant::now();
            let e = check_yaml_depth(deep.as_bytes()).expect_err("too deep");
            assert_eq!(e.code, StatusCode::BAD_REQUEST);
            assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
        }
        let ok = format!(
            "{}1{}",
            "[".repeat(MAX_YAML_DEPTH),
            "]".repeat(MAX_YAML_DEPTH)
        );
        check_yaml_depth(ok.as_bytes()).expect("at the limit");
        check_yaml_depth(b"a:\n  b: [1, {c: d}]\n---\nx: y\n").expect("normal");
        check_yaml_depth(b"a: [unclosed\n").expect("malformed is left to serde_yaml");
    }
}
