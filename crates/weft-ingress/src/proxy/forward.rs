//! One request through the proxy: route it, refuse what must be refused, send it to an
//! endpoint (another one if the connect fails and the request can be replayed), pass
//! upgrades through, and log one line.

use std::convert::Infallible;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full, Limited};
use hyper::body::{Body as _, Incoming};
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode, Uri, Version};
use hyper_util::rt::TokioIo;

use super::pool::{Failure, Pool};
use super::{access_log, headers};
use super::{Body, BoxError, Shared};
use crate::table::{Decision, Route, ServicePort};

/// Who is asking, and over what.
#[derive(Debug, Clone, Copy)]
pub struct Conn {
    pub client: SocketAddr,
    pub scheme: &'static str,
}

/// What the access log says about a request (formatted only when it is written).
struct Outcome {
    status: StatusCode,
    route: Option<Arc<Route>>,
    endpoint: Option<SocketAddr>,
}

pub async fn handle(
    shared: Arc<Shared>,
    pool: Arc<Pool>,
    req: Request<Incoming>,
    conn: Conn,
) -> Result<Response<Body>, Infallible> {
    let start = Instant::now();
    let host = request_host(&req);
    let log = logging();
    // Kept only for the log line; both share the request's bytes.
    let seen = log.then(|| (req.method().clone(), req.uri().path_and_query().cloned()));
    let (resp, outcome) = route(&shared, &pool, req, conn, &host).await;
    if let Some((method, target)) = seen {
        let host = host.as_ref().and_then(|h| h.to_str().ok()).unwrap_or("");
        let target = target.as_ref().map_or("/", |t| t.as_str());
        let line = Line {
            conn,
            method: method.as_str(),
            host,
            target,
        };
        line.write(
            outcome.status.as_u16(),
            &outcome.route,
            outcome.endpoint,
            start,
            Instant::now(),
        );
    }
    Ok(resp)
}

/// What the access log says of a request, whichever path served it.
pub struct Line<'a> {
    pub conn: Conn,
    pub method: &'a str,
    pub host: &'a str,
    pub target: &'a str,
}

impl Line<'_> {
    /// Writes the line (the caller checked that the access log is on): the request took
    /// from `start` to `end`.
    pub fn write(
        &self,
        status: u16,
        route: &Option<Arc<Route>>,
        endpoint: Option<SocketAddr>,
        start: Instant,
        end: Instant,
    ) {
        use access_log::{push_ip, push_ms, push_socket, push_u64};
        access_log::line(start, end, |w, took| {
            push_ip(w, self.conn.client.ip());
            w.extend_from_slice(b" \"");
            for part in [
                self.method,
                " ",
                self.conn.scheme,
                "://",
                self.host,
                self.target,
            ] {
                w.extend_from_slice(part.as_bytes());
            }
            w.extend_from_slice(b"\" ");
            push_u64(w, u64::from(status));
            w.extend_from_slice(b" route=");
            match route {
                Some(r) => {
                    let b = &r.backend;
                    for part in [&r.source, ":", &b.namespace, "/", &b.service, ":"] {
                        w.extend_from_slice(part.as_bytes());
                    }
                    match &b.port {
                        ServicePort::Number(n) => match u64::try_from(*n) {
                            Ok(n) => push_u64(w, n),
                            Err(_) => {
                                let _ = write!(w, "{n}");
                            }
                        },
                        ServicePort::Name(n) => w.extend_from_slice(n.as_bytes()),
                    }
                }
                None => w.push(b'-'),
            }
            w.extend_from_slice(b" endpoint=");
            match endpoint {
                Some(e) => push_socket(w, e),
                None => w.push(b'-'),
            }
            w.push(b' ');
            push_ms(w, took);
            w.extend_from_slice(b"ms");
        });
    }
}

/// Whether access-log lines are written (the tracing filter decides, as for the agent's
/// other lines).
pub fn logging() -> bool {
    tracing::enabled!(target: "weft::ingress::access", tracing::Level::INFO)
}

/// The host a request is for: the URI's authority (HTTP/2, absolute-form), else `Host`.
/// An HTTP/1.1 `Host` is shared with the request, not copied.
fn request_host(req: &Request<Incoming>) -> Option<HeaderValue> {
    match req.uri().authority() {
        Some(a) => HeaderValue::from_str(a.as_str()).ok(),
        None => req.headers().get(header::HOST).cloned(),
    }
}

fn local(status: StatusCode, msg: &str) -> Response<Body> {
    let mut r = Response::new(
        Full::new(Bytes::from(format!("{msg}\n")))
            .map_err(|e| match e {})
            .boxed_unsync(),
    );
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    r
}

fn refuse(status: StatusCode, msg: &str, route: Option<Arc<Route>>) -> (Response<Body>, Outcome) {
    (
        local(status, msg),
        Outcome {
            status,
            route,
            endpoint: None,
        },
    )
}

fn idempotent(m: &Method) -> bool {
    matches!(
        *m,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE
    )
}

async fn route(
    shared: &Shared,
    pool: &Arc<Pool>,
    mut req: Request<Incoming>,
    conn: Conn,
    host_value: &Option<HeaderValue>,
) -> (Response<Body>, Outcome) {
    let host = host_value
        .as_ref()
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    if let Some(why) = headers::framing_problem(req.headers()) {
        return refuse(StatusCode::BAD_REQUEST, &format!("refused: {why}"), None);
    }
    let declared = req.body().size_hint().exact();
    if declared.is_some_and(|n| n > shared.limits.max_body) {
        return refuse(
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!("request body over {} bytes", shared.limits.max_body),
            None,
        );
    }
    let route: Arc<Route> = match shared.table().decide(host, req.uri().path()) {
        Decision::Route(r) => r.clone(),
        Decision::NotFound => return refuse(StatusCode::NOT_FOUND, "no route", None),
    };
    let order = shared.balancer.order(&route.backend.endpoints);
    if order.is_empty() {
        let msg = format!("no ready endpoint for {}", route.backend.name());
        return refuse(StatusCode::SERVICE_UNAVAILABLE, &msg, Some(route));
    }
    let upgrade = match req.version() {
        Version::HTTP_11 => headers::upgrade_protocol(req.headers()),
        _ => None,
    };
    let client_upgrade = upgrade.as_ref().map(|_| hyper::upgrade::on(&mut req));
    let (parts, body) = req.into_parts();
    // A request never sent can go to another endpoint; one whose body is already on its
    // way cannot be replayed, so only empty-bodied ones are retried.
    let replayable = body.is_end_stream();
    let mut head = parts.headers;
    headers::strip_hop_by_hop(&mut head, upgrade.as_ref());
    headers::add_forwarded(
        &mut head,
        conn.client.ip(),
        host_value.as_ref(),
        conn.scheme,
    );
    if let Some(h) = host_value {
        head.insert(header::HOST, h.clone());
    }
    let max_body = shared.limits.max_body;
    let mut body = Some(
        Limited::new(body, usize::try_from(max_body).unwrap_or(usize::MAX))
            .map_err(BoxError::from)
            .boxed_unsync(),
    );
    // Origin-form: the connection is the endpoint's already.
    let target = match parts.uri.path_and_query() {
        Some(t) => Uri::from(t.clone()),
        None => Uri::from_static("/"),
    };
    let mut last_status = StatusCode::BAD_GATEWAY;
    let mut head = Some(head);
    let tries = order.len();
    for (n, i) in order.iter().enumerate() {
        let ep = route.backend.endpoints[i];
        let this_body = match body.take() {
            Some(b) => b,
            None if replayable => Empty::new().map_err(|e| match e {}).boxed_unsync(),
            None => break,
        };
        // Headers are copied only when another endpoint may still need them.
        let this_head = match (replayable && n + 1 < tries, &head) {
            (true, Some(h)) => h.clone(),
            _ => head.take().unwrap_or_default(),
        };
        let mut up = Request::new(this_body);
        *up.method_mut() = parts.method.clone();
        *up.headers_mut() = this_head;
        *up.version_mut() = Version::HTTP_11;
        *up.uri_mut() = target.clone();
        let sent = tokio::time::timeout(shared.limits.upstream_timeout, pool.send(ep, up));
        match sent.await {
            Ok(Ok((mut resp, lease))) => {
                shared.balancer.succeeded(ep);
                let status = resp.status();
                let resp = if status == StatusCode::SWITCHING_PROTOCOLS {
                    if let Some(client_side) = client_upgrade {
                        let server_side = hyper::upgrade::on(&mut resp);
                        tokio::spawn(splice(client_side, server_side, ep));
                    }
                    // The connection now belongs to the splice, never to the pool.
                    drop(lease);
                    resp.map(|b| b.map_err(BoxError::from).boxed_unsync())
                } else {
                    headers::strip_hop_by_hop(resp.headers_mut(), None);
                    lease
                        .attach(resp)
                        .map(|b| b.map_err(BoxError::from).boxed_unsync())
                };
                let outcome = Outcome {
                    status,
                    route: Some(route),
                    endpoint: Some(ep),
                };
                return (resp, outcome);
            }
            Ok(Err(e)) => {
                let connect = matches!(e, Failure::Connect(_));
                if shared.balancer.failed(ep, connect) {
                    tracing::warn!(
                        "ingress: endpoint {ep} of {} ejected: {e}",
                        route.backend.name()
                    );
                }
                if is_body_limit(&e) {
                    let msg = format!("request body over {max_body} bytes");
                    return refuse(StatusCode::PAYLOAD_TOO_LARGE, &msg, Some(route));
                }
                // A failed connect sent nothing, so any method may go elsewhere; a request
                // that broke on the way only when repeating it is safe.
                if !(replayable && (connect || idempotent(&parts.method))) {
                    break;
                }
            }
            Err(_) => {
                shared.balancer.failed(ep, false);
                last_status = StatusCode::GATEWAY_TIMEOUT;
                break;
            }
        }
    }
    let msg = format!("no endpoint of {} answered", route.backend.name());
    refuse(last_status, &msg, Some(route))
}

fn is_body_limit(e: &Failure) -> bool {
    let Failure::Exchange(e) = e else {
        return false;
    };
    let mut src: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(s) = src {
        if s.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        src = s.source();
    }
    false
}

/// Joins the client's and the endpoint's upgraded connections (a WebSocket, h2c) until
/// either side closes.
async fn splice(
    client: hyper::upgrade::OnUpgrade,
    server: hyper::upgrade::OnUpgrade,
    ep: SocketAddr,
) {
    let (c, s) = match tokio::try_join!(client, server) {
        Ok(pair) => pair,
        Err(e) => {
            tracing::warn!("ingress: upgrade to {ep} failed: {e}");
            return;
        }
    };
    let (mut c, mut s) = (TokioIo::new(c), TokioIo::new(s));
    if let Err(e) = tokio::io::copy_bidirectional(&mut c, &mut s).await {
        tracing::debug!("ingress: upgraded connection to {ep} ended: {e}");
    }
}
