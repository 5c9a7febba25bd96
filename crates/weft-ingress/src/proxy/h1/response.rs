//! An endpoint's response head: parsed with `httparse`, its framing read as RFC 9112 6.3
//! says, and turned into the head the client gets (hop-by-hop headers out, framing for
//! the client's version, `Connection: close` when this is the connection's last answer).

use std::io::Write;

use super::body::Framing;
use super::head::{content_length, tokens, RequestHead, MAX_HEADERS};
use crate::proxy::headers::HOP_BY_HOP;

/// How the response goes on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResponseHead {
    pub status: u16,
    pub body: Framing,
    /// The endpoint keeps the connection open after the body.
    pub reusable: bool,
    /// The body is re-chunked for the client.
    pub chunk_out: bool,
    /// The client's connection closes after this response.
    pub close_client: bool,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Parsed {
    /// A head of this many bytes, the client's head written out.
    Complete(usize, ResponseHead),
    /// An interim (1xx) response of this many bytes, not passed on.
    Interim(usize),
    Partial,
    Bad(&'static str),
}

fn eq(a: &str, b: &str) -> bool {
    a.eq_ignore_ascii_case(b)
}

fn has_token(v: &[u8], t: &str) -> bool {
    tokens(v).any(|x| x.eq_ignore_ascii_case(t.as_bytes()))
}

/// Parses the response head at the start of `buf` to `req`, writing the client's head to
/// `out`; `closing` when the client's connection closes after it regardless.
pub fn parse(
    buf: &[u8],
    max: usize,
    req: &RequestHead,
    closing: bool,
    out: &mut Vec<u8>,
) -> Parsed {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut headers);
    let n = match resp.parse(buf) {
        Ok(httparse::Status::Complete(n)) if n <= max => n,
        Ok(httparse::Status::Partial) if buf.len() <= max => return Parsed::Partial,
        Ok(_) => return Parsed::Bad("response head too large"),
        Err(_) => return Parsed::Bad("malformed response head"),
    };
    let (Some(status), Some(minor)) = (resp.code, resp.version) else {
        return Parsed::Bad("malformed status line");
    };
    if (100..200).contains(&status) && status != 101 {
        return Parsed::Interim(n);
    }
    if status == 101 && !req.upgrade {
        return Parsed::Bad("101 to a request that asked for no upgrade");
    }
    let mut length: Option<u64> = None;
    let mut te: Option<&[u8]> = None;
    let mut connection: [Option<&[u8]>; 4] = [None; 4];
    let mut upgrade: Option<&[u8]> = None;
    for h in resp.headers.iter() {
        if eq(h.name, "content-length") {
            let Some(v) = content_length(h.value) else {
                return Parsed::Bad("invalid Content-Length");
            };
            if length.is_some_and(|l| l != v) {
                return Parsed::Bad("disagreeing Content-Length values");
            }
            length = Some(v);
        } else if eq(h.name, "transfer-encoding") {
            if te.replace(h.value).is_some() {
                return Parsed::Bad("more than one Transfer-Encoding");
            }
        } else if eq(h.name, "connection") {
            match connection.iter_mut().find(|c| c.is_none()) {
                Some(slot) => *slot = Some(h.value),
                None => return Parsed::Bad("too many Connection headers"),
            }
        } else if eq(h.name, "upgrade") {
            upgrade = Some(h.value);
        }
    }
    let no_body = req.method == "HEAD" || status == 101 || status == 204 || status == 304;
    let te_chunked = te.is_some_and(|v| {
        tokens(v)
            .last()
            .is_some_and(|t| t.eq_ignore_ascii_case(b"chunked"))
    });
    let body = match (no_body, te, length) {
        (true, _, _) => Framing::Length(0),
        (false, Some(_), _) if te_chunked => Framing::Chunked,
        // A coding list not ending in chunked: the body ends with the connection.
        (false, Some(_), _) => Framing::Close,
        (false, None, Some(n)) => Framing::Length(n),
        (false, None, None) => Framing::Close,
    };
    let conn_close = connection.iter().flatten().any(|v| has_token(v, "close"));
    // A length next to a Transfer-Encoding may be a smuggling attempt: that connection
    // is not reused.
    let reusable = status != 101
        && minor == 1
        && !conn_close
        && body != Framing::Close
        && !(te.is_some() && length.is_some());
    let chunk_out = !req.http10 && matches!(body, Framing::Chunked | Framing::Close);
    let close_client =
        status != 101 && (closing || req.close || (body == Framing::Close && !chunk_out));

    out.clear();
    let reason = resp.reason.filter(|r| !r.is_empty()).unwrap_or_else(|| {
        hyper::StatusCode::from_u16(status)
            .ok()
            .and_then(|s| s.canonical_reason())
            .unwrap_or("")
    });
    let _ = write!(out, "HTTP/1.1 {status} {reason}\r\n");
    for h in resp.headers.iter() {
        let n = h.name;
        let skip = HOP_BY_HOP.iter().any(|x| eq(n, x))
            || eq(n, "upgrade")
            || eq(n, "content-length")
            || connection.iter().flatten().any(|v| has_token(v, n));
        if !skip {
            out.extend_from_slice(n.as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(h.value);
            out.extend_from_slice(b"\r\n");
        }
    }
    if let (Some(n), None) = (length, te) {
        let _ = write!(out, "content-length: {n}\r\n");
    }
    if chunk_out {
        out.extend_from_slice(b"transfer-encoding: ");
        out.extend_from_slice(te.filter(|_| te_chunked).unwrap_or(b"chunked"));
        out.extend_from_slice(b"\r\n");
    }
    if status == 101 {
        out.extend_from_slice(b"connection: upgrade\r\nupgrade: ");
        out.extend_from_slice(upgrade.unwrap_or(b""));
        out.extend_from_slice(b"\r\n");
    } else if close_client {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    Parsed::Complete(
        n,
        ResponseHead {
            status,
            body,
            reusable,
            chunk_out,
            close_client,
        },
    )
}
