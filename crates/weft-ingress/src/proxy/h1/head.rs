//! A client's request head: parsed with `httparse`, refused when two hops could read its
//! framing differently, and turned into the head the endpoint gets (hop-by-hop headers
//! out, the client's hop recorded in X-Forwarded-* and Forwarded), all in one pass over
//! the bytes, without a header map.

use std::net::IpAddr;

use super::body::Framing;
use crate::proxy::headers::{push_forwarded, push_xff, HOP_BY_HOP};

/// Headers a request may carry; more gets 431, as hyper's server answers.
pub const MAX_HEADERS: usize = 100;
/// What starts an HTTP/2 connection with prior knowledge (RFC 9113 3.4): such a client is
/// handed to hyper.
pub const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0";

/// One request's head, reused from request to request on a connection.
#[derive(Default)]
pub struct RequestHead {
    pub method: String,
    /// The target as the client sent it (for the log).
    pub target: String,
    /// The host it is for: the absolute target's authority, else `Host`.
    pub host: String,
    /// Where the path starts in `target` and where it ends (query included).
    path: (usize, usize),
    pub http10: bool,
    pub body: Framing,
    /// The client asked to close after this request (or speaks HTTP/1.0).
    pub close: bool,
    /// `Connection: upgrade` with an `Upgrade` protocol (HTTP/1.1 only).
    pub upgrade: bool,
    pub expect_continue: bool,
    /// The head the endpoint gets, complete.
    pub upstream: Vec<u8>,
}

impl RequestHead {
    /// Path and query, as routed and sent on (origin-form; `*` for OPTIONS *).
    pub fn path(&self) -> &str {
        out_path(&self.target, self.path)
    }
}

/// What a parse found.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed {
    /// A head of this many bytes; `RequestHead` holds it.
    Complete(usize),
    Partial,
    /// An HTTP/2 client with prior knowledge.
    Http2,
    Refuse(u16, &'static str),
}

/// Who is asking, as the endpoint is told.
#[derive(Debug, Clone, Copy)]
pub struct Client {
    pub ip: IpAddr,
    pub scheme: &'static str,
}

fn eq(a: &str, b: &str) -> bool {
    a.eq_ignore_ascii_case(b)
}

/// The comma-separated tokens of a header value, trimmed.
pub fn tokens(v: &[u8]) -> impl Iterator<Item = &[u8]> {
    v.split(|b| *b == b',').map(|t| t.trim_ascii())
}

fn has_token(v: &[u8], t: &str) -> bool {
    tokens(v).any(|x| x.eq_ignore_ascii_case(t.as_bytes()))
}

/// Parses the head at the start of `buf` into `out`; `max` bounds its size (431 past it).
pub fn parse(buf: &[u8], max: usize, client: Client, out: &mut RequestHead) -> Parsed {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let n = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) if n > max => {
            return Parsed::Refuse(431, "request head too large")
        }
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() > max => {
            return Parsed::Refuse(431, "request head too large")
        }
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        Err(httparse::Error::TooManyHeaders) => return Parsed::Refuse(431, "too many headers"),
        Err(httparse::Error::Version) if buf.starts_with(H2_PREFACE) => return Parsed::Http2,
        // obs-fold, a bare CR, a control byte, a malformed line.
        Err(_) => return Parsed::Refuse(400, "malformed request head"),
    };
    let (Some(method), Some(target), Some(minor)) = (req.method, req.path, req.version) else {
        return Parsed::Refuse(400, "malformed request line");
    };
    match build(method, target, minor, req.headers, client, out) {
        Ok(()) => Parsed::Complete(n),
        Err((status, why)) => Parsed::Refuse(status, why),
    }
}

/// The request's framing and routing facts, then the endpoint's head.
fn build(
    method: &str,
    target: &str,
    minor: u8,
    headers: &[httparse::Header<'_>],
    client: Client,
    out: &mut RequestHead,
) -> Result<(), Refusal> {
    out.method.clear();
    out.method.push_str(method);
    out.target.clear();
    out.target.push_str(target);
    out.http10 = minor == 0;
    out.expect_continue = false;
    let mut host: Option<&[u8]> = None;
    let mut length: Option<u64> = None;
    let mut chunked = false;
    let mut connection: [Option<&[u8]>; 4] = [None; 4];
    let mut upgrade: Option<&[u8]> = None;
    let mut xff: Option<&[u8]> = None;
    let mut fwd: Option<&[u8]> = None;
    for h in headers {
        let v = h.value;
        if eq(h.name, "host") {
            if host.replace(v).is_some() {
                return Err((400, "more than one Host"));
            }
        } else if eq(h.name, "content-length") {
            if length.is_some() {
                return Err((400, "more than one Content-Length"));
            }
            length = Some(content_length(v).ok_or((400, "invalid Content-Length"))?);
        } else if eq(h.name, "transfer-encoding") {
            if chunked {
                return Err((400, "more than one Transfer-Encoding"));
            }
            // Only `chunked` itself: a body in another coding cannot be framed here, and
            // a coding list not ending in chunked has no length at all (RFC 9112 6.3).
            if !v.eq_ignore_ascii_case(b"chunked") {
                return Err(if has_token(v, "chunked") {
                    (501, "transfer coding not implemented")
                } else {
                    (400, "Transfer-Encoding does not end in chunked")
                });
            }
            chunked = true;
        } else if eq(h.name, "connection") {
            match connection.iter_mut().find(|c| c.is_none()) {
                Some(slot) => *slot = Some(v),
                None => return Err((400, "too many Connection headers")),
            }
        } else if eq(h.name, "upgrade") {
            upgrade = Some(v);
        } else if eq(h.name, "x-forwarded-for") {
            xff = xff.or(Some(v));
        } else if eq(h.name, "forwarded") {
            fwd = fwd.or(Some(v));
        } else if eq(h.name, "expect") && v.eq_ignore_ascii_case(b"100-continue") {
            out.expect_continue = true;
        }
    }
    if chunked && length.is_some() {
        // Whichever one a next hop believed, the other leaves bytes for a smuggled request.
        return Err((400, "both Transfer-Encoding and Content-Length"));
    }
    if chunked && out.http10 {
        return Err((400, "Transfer-Encoding in HTTP/1.0"));
    }
    out.body = match (chunked, length) {
        (true, _) => Framing::Chunked,
        (false, Some(n)) => Framing::Length(n),
        (false, None) => Framing::Length(0),
    };
    let conns = connection.iter().flatten();
    out.close = out.http10 || conns.clone().any(|v| has_token(v, "close"));
    out.upgrade =
        !out.http10 && upgrade.is_some() && conns.clone().any(|v| has_token(v, "upgrade"));

    // The target: origin-form, absolute-form (its authority is the host), or `*`.
    let (path, authority) = split_target(target, method)?;
    out.path = path;
    let host = match authority {
        Some(a) => a.as_bytes(),
        None => host.ok_or((400, "no Host"))?,
    };
    let host = std::str::from_utf8(host)
        .ok()
        .filter(|h| h.bytes().all(|b| b.is_ascii_graphic()))
        .ok_or((400, "invalid Host"))?;
    out.host.clear();
    out.host.push_str(host);

    let up = &mut out.upstream;
    up.clear();
    up.extend_from_slice(method.as_bytes());
    up.push(b' ');
    up.extend_from_slice(out_path(target, path).as_bytes());
    up.extend_from_slice(b" HTTP/1.1\r\n");
    for h in headers {
        let n = h.name;
        let named = |v: &&[u8]| has_token(v, n);
        let skip = HOP_BY_HOP.iter().any(|x| eq(n, x))
            || [
                "upgrade",
                "host",
                "content-length",
                "x-forwarded-for",
                "x-forwarded-proto",
            ]
            .iter()
            .any(|x| eq(n, x))
            || ["x-forwarded-host", "forwarded"].iter().any(|x| eq(n, x))
            || (out.expect_continue && eq(n, "expect"))
            || connection.iter().flatten().any(named);
        if !skip {
            up.extend_from_slice(n.as_bytes());
            up.extend_from_slice(b": ");
            up.extend_from_slice(h.value);
            up.extend_from_slice(b"\r\n");
        }
    }
    up.extend_from_slice(b"host: ");
    up.extend_from_slice(host.as_bytes());
    up.extend_from_slice(b"\r\nx-forwarded-for: ");
    push_xff(up, xff, client.ip);
    up.extend_from_slice(b"\r\nx-forwarded-proto: ");
    up.extend_from_slice(client.scheme.as_bytes());
    up.extend_from_slice(b"\r\nx-forwarded-host: ");
    up.extend_from_slice(host.as_bytes());
    up.extend_from_slice(b"\r\nforwarded: ");
    push_forwarded(up, fwd, client.ip, host.as_bytes(), client.scheme);
    up.extend_from_slice(b"\r\n");
    match out.body {
        Framing::Chunked => up.extend_from_slice(b"transfer-encoding: chunked\r\n"),
        Framing::Length(n) if n > 0 || length.is_some() => {
            use std::io::Write;
            let _ = write!(up, "content-length: {n}\r\n");
        }
        _ => {}
    }
    if let (true, Some(proto)) = (out.upgrade, upgrade) {
        up.extend_from_slice(b"connection: upgrade\r\nupgrade: ");
        up.extend_from_slice(proto);
        up.extend_from_slice(b"\r\n");
    }
    up.extend_from_slice(b"\r\n");
    Ok(())
}

fn out_path(target: &str, (from, to): (usize, usize)) -> &str {
    match &target[from..to] {
        "" => "/",
        p => p,
    }
}

/// A Content-Length value: digits only (no sign, no list), at most 18 of them.
pub fn content_length(v: &[u8]) -> Option<u64> {
    if v.is_empty() || v.len() > 18 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(v).ok()?.parse().ok()
}

/// A status and why: what a refused request is answered.
type Refusal = (u16, &'static str);
/// Where a target's path (and query) is, and its authority when it is absolute.
type Target<'t> = ((usize, usize), Option<&'t str>);

/// The path (and query) range of a target, and its authority when absolute.
fn split_target<'t>(target: &'t str, method: &str) -> Result<Target<'t>, Refusal> {
    // A fragment is never sent (RFC 9110 4.2.4); a client that sends one loses it here.
    let end = target.find('#').unwrap_or(target.len());
    if target.starts_with('/') {
        return Ok(((0, end), None));
    }
    if target == "*" && method == "OPTIONS" {
        return Ok(((0, 1), None));
    }
    let lower = |p: &str| {
        target
            .get(..p.len())
            .is_some_and(|s| s.eq_ignore_ascii_case(p))
    };
    let scheme = if lower("http://") {
        7
    } else if lower("https://") {
        8
    } else {
        return Err((400, "request target is neither a path nor an absolute URI"));
    };
    let rest = &target[scheme..end];
    let auth_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let authority = &rest[..auth_end];
    if authority.is_empty() || authority.contains('@') {
        return Err((400, "invalid authority in the request target"));
    }
    let path_start = scheme + auth_end;
    if path_start < end && target.as_bytes()[path_start] == b'/' {
        Ok(((path_start, end), Some(authority)))
    } else if path_start == end {
        // `http://host` is `/`: sent on as the root.
        Ok(((0, 0), Some(authority)))
    } else {
        Err((400, "request target has a query but no path"))
    }
}
