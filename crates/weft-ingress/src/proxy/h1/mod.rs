//! weft's own HTTP/1.1 path, as nginx proxies: a client connection is served start to end
//! on its own task. Each request head is parsed here (`head`, with `httparse`), routed,
//! and written to a pooled endpoint connection (`pool`) on the same task, with no channel
//! and no task per endpoint connection as hyper's client has; the response head is read
//! and rewritten (`response`), and bodies are streamed both ways (`body`) through buffers
//! the connection keeps (`buf`). `exchange` is one request's trip to the endpoints.
//! HTTP/2 (ALPN `h2`, or cleartext with prior knowledge, `rewind`) stays on hyper.

mod body;
mod buf;
mod exchange;
mod head;
mod pool;
mod response;
mod rewind;
#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::Instant;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, watch};

use super::forward::{logging, Conn, Line};
use super::Shared;
use crate::table::{Decision, Route};
use body::Framing;
use buf::ReadBuf;
use head::{Client, Parsed, RequestHead};

pub use pool::Upstreams;
pub use rewind::Rewind;

/// A client connection this path serves.
pub trait Socket: AsyncRead + AsyncWrite + Unpin {
    /// Turns Nagle's algorithm off, once the connection is known to stay open for another
    /// request (a kept-alive answer written in pieces must not wait for the client's ACK).
    /// A connection that closes after its answer never needs it: the close sends what is
    /// queued at once. nginx sets it at the same point; a connection per request saves
    /// the system call.
    fn no_delay(&self) {}

    /// Called before the connection's last answer is written whole: the kernel may hold
    /// it until the close, so the answer and the FIN leave in one segment.
    fn last_answer(&self) {}
}

impl Socket for tokio::net::TcpStream {
    fn no_delay(&self) {
        let _ = self.set_nodelay(true);
    }

    fn last_answer(&self) {
        use std::os::fd::AsRawFd;
        let one: libc::c_int = 1;
        // SAFETY: the descriptor is this open socket's for the whole call, and the option
        // value is a c_int that outlives it, with its size given. A failure only means
        // the FIN leaves in a segment of its own.
        unsafe {
            libc::setsockopt(
                self.as_raw_fd(),
                libc::IPPROTO_TCP,
                libc::TCP_CORK,
                (&one as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
    }
}

/// Set at the accept, as nginx does for TLS: a handshake's flights are written in pieces.
impl Socket for tokio_rustls::server::TlsStream<tokio::net::TcpStream> {}

/// What the connections of one event loop share.
pub struct Ctx {
    pub shared: Arc<Shared>,
    pub upstreams: Arc<Upstreams>,
}

/// A client connection's state, kept from request to request.
pub struct Session {
    client: ReadBuf,
    up: ReadBuf,
    /// What is being written next (a head, body bytes).
    out: Vec<u8>,
    max_head: usize,
    max_body: u64,
    body_timeout: std::time::Duration,
    /// `Socket::no_delay` was called.
    no_delay: bool,
    /// Held while the connection serves requests, so a drain waits for it.
    guard: Option<mpsc::Sender<()>>,
}

/// How a connection ended here.
pub enum End {
    Closed,
    /// An HTTP/2 client with prior knowledge: hyper takes it with these bytes first.
    Http2(Vec<u8>),
}

/// A closed connection's buffers, for the next connection on the same thread: a
/// connection per request then costs no allocation for them.
#[derive(Default)]
struct Spare {
    client: ReadBuf,
    up: ReadBuf,
    out: Vec<u8>,
    head: RequestHead,
}

/// At most this many spares are kept per thread, none holding a buffer larger than
/// `SPARE_MAX` (a large body's buffers are freed).
const SPARES_KEPT: usize = 256;
const SPARE_MAX: usize = 64 << 10;

thread_local! {
    static SPARES: std::cell::RefCell<Vec<Spare>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Serves HTTP/1.1 requests on `io` until the client closes, a request leaves the
/// connection unusable, or `stop` turns true (between requests).
pub async fn serve<C>(
    ctx: &Ctx,
    io: &mut C,
    conn: Conn,
    stop: &mut watch::Receiver<bool>,
    guard: mpsc::Sender<()>,
) -> End
where
    C: Socket,
{
    let limits = &ctx.shared.limits;
    let spare = SPARES
        .with(|s| s.borrow_mut().pop())
        .unwrap_or_else(|| Spare {
            client: ReadBuf::with_capacity(4096),
            up: ReadBuf::with_capacity(4096),
            out: Vec::with_capacity(4096),
            head: RequestHead::default(),
        });
    let mut s = Session {
        client: spare.client,
        up: spare.up,
        out: spare.out,
        max_head: limits.max_header_bytes,
        max_body: limits.max_body,
        body_timeout: limits.body_timeout,
        no_delay: false,
        guard: Some(guard),
    };
    let mut head = spare.head;
    let end = requests(ctx, io, conn, stop, &mut s, &mut head).await;
    let small = s
        .client
        .capacity()
        .max(s.up.capacity())
        .max(s.out.capacity())
        <= SPARE_MAX
        && head.upstream.capacity() <= SPARE_MAX;
    if small {
        s.client.clear();
        s.up.clear();
        s.out.clear();
        let spare = Spare {
            client: std::mem::take(&mut s.client),
            up: std::mem::take(&mut s.up),
            out: std::mem::take(&mut s.out),
            head,
        };
        SPARES.with(|l| {
            let mut l = l.borrow_mut();
            if l.len() < SPARES_KEPT {
                l.push(spare);
            }
        });
    }
    end
}

/// The requests of one connection, one after another.
async fn requests<C>(
    ctx: &Ctx,
    io: &mut C,
    conn: Conn,
    stop: &mut watch::Receiver<bool>,
    s: &mut Session,
    head: &mut RequestHead,
) -> End
where
    C: Socket,
{
    let limits = &ctx.shared.limits;
    let client = Client {
        ip: conn.client.ip(),
        scheme: conn.scheme,
    };
    let mut first = true;
    loop {
        // The whole head within the header timeout, counted from when it is awaited
        // (so an idle kept-alive connection is closed after it too, as hyper does).
        let waiting = Instant::now();
        let deadline = tokio::time::Instant::from_std(waiting) + limits.header_timeout;
        let parsed = loop {
            match head::parse(s.client.filled(), s.max_head, client, head) {
                Parsed::Partial => {}
                p => break p,
            }
            let idle = s.client.is_empty();
            let read = tokio::time::timeout_at(deadline, s.client.read_from(io));
            let got = if idle {
                // Between requests a drain closes the connection at once. The read is
                // polled first: bytes already there need no waiter on the stop channel
                // (and no random pick of a branch).
                tokio::select! {
                    biased;
                    r = read => r,
                    _ = stop.wait_for(|s| *s) => return End::Closed,
                }
            } else {
                read.await
            };
            match got {
                Ok(Ok(n)) if n > 0 => {}
                // Timed out, closed, or broken: nothing to answer.
                _ => return End::Closed,
            }
        };
        let n = match parsed {
            Parsed::Complete(n) => n,
            Parsed::Http2 if first => return End::Http2(s.client.take_all()),
            Parsed::Http2 => {
                refuse(io, s, 400, "HTTP/2 preface mid-connection", true).await;
                return End::Closed;
            }
            Parsed::Refuse(status, why) => {
                refuse(io, s, status, why, true).await;
                return End::Closed;
            }
            Parsed::Partial => return End::Closed,
        };
        s.client.consume(n);
        // A request is timed from when its head was awaited on a new connection, whose
        // first bytes follow the accept at once (one clock read fewer per connection);
        // on a kept-alive one that wait may have been idle, so from its head's arrival.
        let start = if first { waiting } else { Instant::now() };
        first = false;
        let closing = *stop.borrow();
        if !request(ctx, io, s, head, conn, closing, start).await || closing {
            return End::Closed;
        }
    }
}

/// One request: refused, or sent on and answered. Returns whether the connection can
/// take another.
async fn request<C>(
    ctx: &Ctx,
    io: &mut C,
    s: &mut Session,
    head: &RequestHead,
    conn: Conn,
    closing: bool,
    start: Instant,
) -> bool
where
    C: Socket,
{
    if !s.no_delay && !head.close && !closing {
        io.no_delay();
        s.no_delay = true;
    }
    let line = logging().then(|| Line {
        conn,
        method: &head.method,
        host: &head.host,
        target: head.path(),
    });
    // A refusal leaves the body unread: the connection cannot take another request.
    let has_body = head.body != Framing::Length(0);
    let logged = |status: u16, route: Option<Arc<Route>>| {
        if let Some(l) = &line {
            l.write(status, &route, None, start, Instant::now());
        }
    };
    if let Framing::Length(n) = head.body {
        if n > s.max_body {
            logged(413, None);
            let why = format!("request body over {} bytes", s.max_body);
            refuse(io, s, 413, &why, true).await;
            return false;
        }
    }
    let route = match ctx.shared.table().decide(&head.host, head.path()) {
        Decision::Route(r) => r.clone(),
        Decision::NotFound => {
            logged(404, None);
            return refuse(io, s, 404, "no route", has_body || closing).await && !has_body;
        }
    };
    let order = ctx.shared.balancer.order(&route.backend.endpoints);
    if order.is_empty() {
        let why = format!("no ready endpoint for {}", route.backend.name());
        logged(503, Some(route));
        return refuse(io, s, 503, &why, has_body || closing).await && !has_body;
    }
    match exchange::forward(ctx, io, s, head, &route, &order, closing, start).await {
        Ok(served) => {
            if let Some(l) = &line {
                l.write(
                    served.status,
                    &Some(route),
                    served.endpoint,
                    start,
                    served.end,
                );
            }
            served.keep && !served.upgraded
        }
        Err((0, _)) => {
            logged(400, Some(route));
            false
        }
        Err((status, why)) => {
            // A body that was (partly) sent or refused is not read to its end.
            let close = has_body || closing;
            let msg = match status {
                502 | 504 => format!("no endpoint of {} answered", route.backend.name()),
                _ => why.clone(),
            };
            tracing::debug!("ingress: {} {}: {why}", head.method, head.target);
            logged(status, Some(route));
            refuse(io, s, status, &msg, close).await && !close
        }
    }
}

/// Answers with a short text (weft's own answer, not an endpoint's). When `close`, the
/// connection is closed after it, lingering so the answer is not lost to a reset while
/// the client is still sending. Returns whether the answer was written.
async fn refuse<C>(io: &mut C, s: &mut Session, status: u16, msg: &str, close: bool) -> bool
where
    C: AsyncRead + AsyncWrite + Unpin,
{
    use std::io::Write;
    let reason = hyper::StatusCode::from_u16(status)
        .ok()
        .and_then(|c| c.canonical_reason())
        .unwrap_or("");
    s.out.clear();
    let _ = write!(
        s.out,
        "HTTP/1.1 {status} {reason}\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n{}\r\n{msg}\n",
        msg.len() + 1,
        if close { "connection: close\r\n" } else { "" },
    );
    let ok = io.write_all(&s.out).await.is_ok() && io.flush().await.is_ok();
    if ok && close {
        linger(io, s).await;
    }
    ok
}

/// Closes our side and reads (and drops) what the client still sends, for at most a
/// second or 1 MiB, as nginx's lingering close: closing with unread bytes would send a
/// reset, and the client could lose the answer it has not read yet.
async fn linger<C>(io: &mut C, s: &mut Session)
where
    C: AsyncRead + AsyncWrite + Unpin,
{
    let _ = io.shutdown().await;
    // Read into the connection's own buffer: a scratch array here would make every
    // connection's future (moved into its task at spawn) 8 KiB larger.
    let buf = &mut s.client;
    let drain = async {
        let mut total = 0usize;
        while total < (1 << 20) {
            buf.clear();
            match buf.read_from(io).await {
                Ok(0) | Err(_) => return,
                Ok(n) => total += n,
            }
        }
    };
    let _ = tokio::time::timeout(std::time::Duration::from_secs(1), drain).await;
}
