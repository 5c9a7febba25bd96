//! What a proxy must do to headers: refuse ambiguous framing, drop hop-by-hop headers,
//! and say who the client was (X-Forwarded-*, Forwarded).

use std::net::IpAddr;

use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};

/// Headers that describe one connection, never forwarded (RFC 9110 7.6.1).
pub const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
];

/// A request whose length two parts of a chain could read differently is a smuggling
/// attempt, refused here. hyper's HTTP/1 parser does most of it before this runs: it
/// refuses obs-fold, bare CR, disagreeing Content-Length values and a Transfer-Encoding
/// that does not end in chunked, and when both Transfer-Encoding and Content-Length
/// come it drops the length, reads chunked and closes the connection after the answer
/// (RFC 9112 6.3), so bytes after the chunked body are never read as a request. This
/// catches what reaches the handler anyway (HTTP/2 requests, which carry no
/// Transfer-Encoding, and repeated headers).
pub fn framing_problem(h: &HeaderMap) -> Option<&'static str> {
    if h.contains_key(header::TRANSFER_ENCODING) && h.contains_key(header::CONTENT_LENGTH) {
        return Some("both Transfer-Encoding and Content-Length");
    }
    if h.get_all(header::CONTENT_LENGTH).iter().count() > 1 {
        return Some("more than one Content-Length");
    }
    if h.get_all(header::TRANSFER_ENCODING).iter().count() > 1 {
        return Some("more than one Transfer-Encoding");
    }
    None
}

/// The protocol a request asks to switch to, when it is an HTTP/1.1 upgrade.
pub fn upgrade_protocol(h: &HeaderMap) -> Option<HeaderValue> {
    let asks = h
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
    asks.then(|| h.get(header::UPGRADE).cloned()).flatten()
}

/// Removes hop-by-hop headers, including any the Connection header names; an upgrade
/// keeps `Connection: upgrade` and its `Upgrade`.
pub fn strip_hop_by_hop(h: &mut HeaderMap, upgrade: Option<&HeaderValue>) {
    // One pass over the few headers a message has is cheaper than a lookup per name, and
    // most messages carry none of these.
    let any = h.keys().any(|k| {
        let k = k.as_str();
        k == "upgrade" || HOP_BY_HOP.contains(&k)
    });
    if !any && upgrade.is_none() {
        return;
    }
    let named: Vec<HeaderName> = h
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .collect();
    for n in named {
        h.remove(n);
    }
    for n in HOP_BY_HOP {
        h.remove(n);
    }
    h.remove(header::UPGRADE);
    if let Some(proto) = upgrade {
        h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        h.insert(header::UPGRADE, proto.clone());
    }
}

/// The X-Forwarded-For value a backend gets: the client appended to `prev` (the
/// request's own value, when it has a non-blank one).
pub fn push_xff(out: &mut Vec<u8>, prev: Option<&[u8]>, client: IpAddr) {
    use std::io::Write;
    if let Some(prev) = prev.filter(|p| !p.trim_ascii().is_empty()) {
        out.extend_from_slice(prev);
        out.extend_from_slice(b", ");
    }
    let _ = write!(out, "{client}");
}

/// The Forwarded value a backend gets (RFC 7239): `prev` (when non-blank), then this hop's
/// `for`, `host` and `proto`.
pub fn push_forwarded(
    out: &mut Vec<u8>,
    prev: Option<&[u8]>,
    client: IpAddr,
    host: &[u8],
    proto: &str,
) {
    use std::io::Write;
    if let Some(prev) = prev.filter(|p| !p.trim_ascii().is_empty()) {
        out.extend_from_slice(prev);
        out.extend_from_slice(b", ");
    }
    let _ = match client {
        IpAddr::V4(a) => write!(out, "for={a}"),
        IpAddr::V6(a) => write!(out, "for=\"[{a}]\""),
    };
    out.extend_from_slice(b";host=\"");
    // Quotes and backslashes would end the quoted string early: dropped.
    out.extend(host.iter().filter(|c| !matches!(c, b'"' | b'\\')));
    out.extend_from_slice(b"\";proto=");
    out.extend_from_slice(proto.as_bytes());
}

/// Appends the client to X-Forwarded-For and Forwarded, and records the original host
/// and scheme, as an edge proxy does: clients cannot choose what the backend is told
/// about the hop they made to weft. The host's value is shared, not copied.
pub fn add_forwarded(h: &mut HeaderMap, client: IpAddr, host: Option<&HeaderValue>, proto: &str) {
    let mut xff = Vec::with_capacity(64);
    push_xff(
        &mut xff,
        h.get("x-forwarded-for").map(|v| v.as_bytes()),
        client,
    );
    let mut fwd = Vec::with_capacity(96);
    let host_bytes = host
        .filter(|v| v.to_str().is_ok())
        .map_or(&b""[..], |v| v.as_bytes());
    push_forwarded(
        &mut fwd,
        h.get(header::FORWARDED).map(|v| v.as_bytes()),
        client,
        host_bytes,
        proto,
    );
    // Moved into the header, not copied.
    let set = |h: &mut HeaderMap, name: &'static str, v: Vec<u8>| {
        if let Ok(v) = HeaderValue::from_maybe_shared(bytes::Bytes::from(v)) {
            h.insert(name, v);
        }
    };
    set(h, "x-forwarded-for", xff);
    let proto = match proto {
        "https" => HeaderValue::from_static("https"),
        _ => HeaderValue::from_static("http"),
    };
    h.insert("x-forwarded-proto", proto);
    // Always set, empty when unknown, so a client's own value never passes.
    let xfh = host
        .cloned()
        .unwrap_or_else(|| HeaderValue::from_static(""));
    h.insert("x-forwarded-host", xfh);
    set(h, "forwarded", fwd);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn framing() {
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("3"));
        assert_eq!(framing_problem(&h), None);
        h.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        assert!(framing_problem(&h).is_some());
    }

    #[test]
    fn hop_by_hop_and_named() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("close, x-secret"),
        );
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("x-kept", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h, None);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-kept"));
    }

    #[test]
    fn upgrade_survives() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, Upgrade"),
        );
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        let up = upgrade_protocol(&h);
        assert_eq!(up.as_ref().map(|v| v.as_bytes()), Some(&b"websocket"[..]));
        strip_hop_by_hop(&mut h, up.as_ref());
        assert_eq!(
            h.get(header::UPGRADE).map(|v| v.as_bytes()),
            Some(&b"websocket"[..])
        );
    }

    #[test]
    fn forwarded_appends() {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", HeaderValue::from_static("1.1.1.1"));
        add_forwarded(
            &mut h,
            "10.0.0.1".parse().expect("ip"),
            Some(&HeaderValue::from_static("a.example")),
            "https",
        );
        assert_eq!(h["x-forwarded-for"], "1.1.1.1, 10.0.0.1");
        assert_eq!(h["x-forwarded-proto"], "https");
        assert_eq!(
            h["forwarded"],
            "for=10.0.0.1;host=\"a.example\";proto=https"
        );
        assert_eq!(h["x-forwarded-host"], "a.example");
        add_forwarded(
            &mut h,
            "::1".parse().expect("ip"),
            Some(&HeaderValue::from_static("b\"x")),
            "http",
        );
        assert_eq!(h["x-forwarded-for"], "1.1.1.1, 10.0.0.1, ::1");
        assert_eq!(
            h["forwarded"],
            "for=10.0.0.1;host=\"a.example\";proto=https, for=\"[::1]\";host=\"bx\";proto=http"
        );
    }
}
