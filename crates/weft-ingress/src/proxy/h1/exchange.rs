//! One request to an endpoint and its answer back, on the client connection's own task:
//! the head (and body) written to a pooled connection, the response head read and
//! rewritten, the body streamed to the client, the connection put back. Another endpoint
//! is tried when a connect fails (nothing was sent, and the body is still unread) or when
//! a request without a body that is safe to repeat broke on the way.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use super::body::{self, BodyError, Bounds, Framing};
use super::head::RequestHead;
use super::response::{self, ResponseHead};
use super::{Ctx, Session as Bufs};
use crate::proxy::upstream::Order;
use crate::table::Route;

/// What became of a request sent on.
pub struct Served {
    pub status: u16,
    pub endpoint: Option<SocketAddr>,
    /// The client's connection may take another request.
    pub keep: bool,
    /// The client's connection became a tunnel (an upgrade) and has ended.
    pub upgraded: bool,
    /// When the answer was passed on (read once, for the endpoint's idle time and the log).
    pub end: Instant,
}

/// Why one try on one connection got no response.
enum Fail {
    /// A kept-alive connection the endpoint had closed; nothing reached it.
    Stale,
    /// The exchange broke; `retry` when another endpoint may take the request.
    Broken { retry: bool, why: String },
    /// No response head within the upstream timeout.
    Timeout,
    /// The client's own body was the problem: answer this status (0: the client is gone).
    Client(u16, &'static str),
}

fn idempotent(m: &str) -> bool {
    matches!(m, "GET" | "HEAD" | "OPTIONS" | "PUT" | "DELETE" | "TRACE")
}

/// Sends the request to the endpoints in `order` (indexes into the route's endpoints)
/// until one answers, then streams the answer to `client`. `start` is when the request
/// came: idle connections are judged by it, and a first try on a pooled connection of a
/// request without a body counts the endpoint's timeout from it (it is sent within
/// microseconds); otherwise the timeout counts from when the request was sent.
#[allow(clippy::too_many_arguments)]
pub async fn forward<C>(
    ctx: &Ctx,
    client: &mut C,
    bufs: &mut Bufs,
    head: &RequestHead,
    route: &Route,
    order: &Order,
    closing: bool,
    start: Instant,
) -> Result<Served, (u16, String)>
where
    C: super::Socket,
{
    let shared = &ctx.shared;
    let replayable = head.body == Framing::Length(0);
    let safe = replayable && idempotent(&head.method);
    let mut last = (502, String::new());
    let mut sent_at = Some(start);
    'endpoints: for i in order.iter() {
        let ep = route.backend.endpoints[i];
        loop {
            let (mut up, reused) = match ctx.upstreams.checkout(ep, start) {
                Some(s) => (s, true),
                None => match ctx.upstreams.connect(ep).await {
                    Ok(s) => (s, false),
                    Err(e) => {
                        // Nothing was sent and the body is unread: any request may go on.
                        if shared.balancer.failed(ep, true) {
                            tracing::warn!(
                                "ingress: endpoint {ep} of {} ejected: connect: {e}",
                                route.backend.name()
                            );
                        }
                        last = (502, format!("connect to {ep}: {e}"));
                        continue 'endpoints;
                    }
                },
            };
            let limit = shared.limits.upstream_timeout;
            // A new connection's connect took time of its own: the clock is read again.
            let clock = sent_at.take().filter(|_| reused);
            match exchange(
                client, &mut up, bufs, head, reused, safe, limit, clock, closing,
            )
            .await
            {
                Ok(resp) => {
                    shared.balancer.succeeded(ep);
                    return Ok(answer(ctx, client, up, ep, bufs, head, resp).await);
                }
                Err(Fail::Stale) => continue,
                Err(Fail::Client(status, why)) => return Err((status, why.to_string())),
                Err(Fail::Timeout) => {
                    shared.balancer.failed(ep, false);
                    last = (504, format!("{ep} did not answer within {limit:?}"));
                    break 'endpoints;
                }
                Err(Fail::Broken { retry, why }) => {
                    if shared.balancer.failed(ep, false) {
                        tracing::warn!(
                            "ingress: endpoint {ep} of {} ejected: {why}",
                            route.backend.name()
                        );
                    }
                    last = (502, format!("{ep}: {why}"));
                    if !retry {
                        break 'endpoints;
                    }
                    continue 'endpoints;
                }
            }
        }
    }
    Err(last)
}

/// Writes the request on `up` and reads the response head into `bufs.out` (the client's
/// version of it).
#[allow(clippy::too_many_arguments)]
async fn exchange<C>(
    client: &mut C,
    up: &mut TcpStream,
    bufs: &mut Bufs,
    head: &RequestHead,
    reused: bool,
    safe: bool,
    limit: Duration,
    sent_at: Option<Instant>,
    closing: bool,
) -> Result<ResponseHead, Fail>
where
    C: AsyncRead + AsyncWrite + Unpin,
{
    let broken = |why: String| Fail::Broken { retry: safe, why };
    if let Err(e) = up.write_all(&head.upstream).await {
        return Err(if reused && safe {
            Fail::Stale
        } else {
            Fail::Broken {
                retry: safe,
                why: format!("sending the request: {e}"),
            }
        });
    }
    if head.body != Framing::Length(0) {
        if head.expect_continue {
            let _ = client.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").await;
            let _ = client.flush().await;
        }
        bufs.out.clear();
        let bounds = Bounds {
            max: bufs.max_body,
            idle: Some(bufs.body_timeout),
        };
        let sent = body::copy(
            client,
            &mut bufs.client,
            up,
            &mut bufs.out,
            head.body,
            head.body == Framing::Chunked,
            bounds,
        )
        .await;
        match sent {
            Ok(_) => {}
            Err(BodyError::TooLarge) => return Err(Fail::Client(413, "request body too large")),
            Err(BodyError::Malformed(why)) => return Err(Fail::Client(400, why)),
            Err(BodyError::Read(_)) => return Err(Fail::Client(0, "client went away")),
            Err(BodyError::Idle) => return Err(Fail::Client(408, "request body timed out")),
            Err(BodyError::Write(e)) => {
                return Err(Fail::Broken {
                    retry: false,
                    why: format!("sending the body: {e}"),
                })
            }
        }
    }
    let read = async {
        bufs.up.clear();
        let mut got_any = false;
        loop {
            match response::parse(
                bufs.up.filled(),
                bufs.max_head,
                head,
                closing,
                &mut bufs.out,
            ) {
                response::Parsed::Complete(n, r) => {
                    bufs.up.consume(n);
                    return Ok(r);
                }
                response::Parsed::Interim(n) => {
                    bufs.up.consume(n);
                    continue;
                }
                response::Parsed::Bad(why) => return Err(broken(why.to_string())),
                response::Parsed::Partial => {}
            }
            match bufs.up.read_from(up).await {
                Ok(0) if !got_any && reused && safe => return Err(Fail::Stale),
                Ok(0) => return Err(broken("closed before a response".into())),
                Ok(_) => got_any = true,
                Err(_) if !got_any && reused && safe => return Err(Fail::Stale),
                Err(e) => return Err(broken(format!("reading the response: {e}"))),
            }
        }
    };
    // The endpoint's time counts from when the whole request was sent: after a body, or
    // on another try, that is now.
    let sent_at = match sent_at {
        Some(t) if head.body == Framing::Length(0) => t,
        _ => Instant::now(),
    };
    let deadline = tokio::time::Instant::from_std(sent_at) + limit;
    match tokio::time::timeout_at(deadline, read).await {
        Ok(r) => r,
        Err(_) => Err(Fail::Timeout),
    }
}

/// Streams the response (its head is in `bufs.out`) to the client, then puts `up` back
/// when it can take another request, or joins the two connections after a 101.
async fn answer<C>(
    ctx: &Ctx,
    client: &mut C,
    mut up: TcpStream,
    ep: SocketAddr,
    bufs: &mut Bufs,
    head: &RequestHead,
    resp: ResponseHead,
) -> Served
where
    C: super::Socket,
{
    // The last answer, whole in the buffer, to a client that asked to close: written in
    // one piece and then closed, so it may wait in the kernel for the FIN. Only when the
    // client asked: a close with unread bytes resets the connection and drops what is
    // still queued, and a client that said close must send nothing more (RFC 9112 9.6).
    let whole = matches!(resp.body, Framing::Length(n) if bufs.up.filled().len() as u64 >= n);
    if head.close && resp.close_client && whole && bufs.client.is_empty() {
        client.last_answer();
    }
    if resp.status == 101 {
        // A tunnel is not a request: a drain does not wait for it (as for hyper's).
        bufs.guard = None;
        splice(client, &mut up, bufs, ep).await;
        return Served {
            status: 101,
            endpoint: Some(ep),
            keep: false,
            upgraded: true,
            end: Instant::now(),
        };
    }
    let copied = body::copy(
        &mut up,
        &mut bufs.up,
        client,
        &mut bufs.out,
        resp.body,
        resp.chunk_out,
        Bounds {
            max: u64::MAX,
            idle: None,
        },
    )
    .await;
    let flushed = client.flush().await;
    let end = Instant::now();
    let mut keep = false;
    match copied {
        Ok(_) => {
            // Bytes after the body were never asked for: that endpoint is not trusted
            // with another request.
            if resp.reusable && bufs.up.is_empty() {
                ctx.upstreams.put(ep, up, end);
            }
            keep = !resp.close_client && flushed.is_ok();
        }
        Err(e) => tracing::debug!("ingress: response from {ep} to {}: {e}", head.target),
    }
    Served {
        status: resp.status,
        endpoint: Some(ep),
        keep,
        upgraded: false,
        end,
    }
}

/// After a 101: the head to the client, what each side already sent to the other, then
/// bytes both ways until either closes.
async fn splice<C>(client: &mut C, up: &mut TcpStream, bufs: &mut Bufs, ep: SocketAddr)
where
    C: AsyncRead + AsyncWrite + Unpin,
{
    let early_up = bufs.up.take_all();
    let early_client = bufs.client.take_all();
    bufs.out.extend_from_slice(&early_up);
    let start = async {
        client.write_all(&bufs.out).await?;
        client.flush().await?;
        up.write_all(&early_client).await
    };
    if let Err(e) = start.await {
        tracing::debug!("ingress: upgraded connection to {ep}: {e}");
        return;
    }
    if let Err(e) = tokio::io::copy_bidirectional(client, up).await {
        tracing::debug!("ingress: upgraded connection to {ep} ended: {e}");
    }
}
