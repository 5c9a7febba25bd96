//! The HTTP/1.1 path's parsers on their own: what is refused and why, what an endpoint
//! is sent, the chunked decoder, and a fuzz of the request parser whose every accepted
//! request must reach the endpoint with the framing it was read with.

use super::body::{Chunked, Framing};
use super::head::{self, Client, Parsed, RequestHead};
use super::response;

const MAX: usize = 32 << 10;

fn client() -> Client {
    Client {
        ip: "10.1.2.3".parse().expect("ip"),
        scheme: "http",
    }
}

fn parse(raw: &[u8]) -> (Parsed, RequestHead) {
    let mut h = RequestHead::default();
    let p = head::parse(raw, MAX, client(), &mut h);
    (p, h)
}

fn status(raw: &str) -> u16 {
    match parse(raw.as_bytes()).0 {
        Parsed::Refuse(s, _) => s,
        Parsed::Complete(_) => 200,
        Parsed::Partial => 0,
        Parsed::Http2 => 2,
    }
}

#[test]
fn smuggling_shapes_are_refused() {
    let h = "GET / HTTP/1.1\r\nHost: a\r\n";
    assert_eq!(status(&format!("{h}\r\n")), 200);
    for (extra, want) in [
        ("Content-Length: 6\r\nTransfer-Encoding: chunked\r\n", 400),
        ("Content-Length: 4\r\nContent-Length: 5\r\n", 400),
        ("Content-Length: 4\r\nContent-Length: 4\r\n", 400),
        ("Content-Length: +4\r\n", 400),
        ("Content-Length: 4, 4\r\n", 400),
        ("Transfer-Encoding: gzip\r\n", 400),
        ("Transfer-Encoding: gzip, chunked\r\n", 501),
        (
            "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
            400,
        ),
        ("X-A: 1\r\n folded\r\n", 400),
        ("X-A: a\rb\r\n", 400),
        ("Host: b\r\n", 400),
    ] {
        assert_eq!(status(&format!("{h}{extra}\r\n")), want, "{extra:?}");
    }
    assert_eq!(status("GET / HTTP/1.1\r\n\r\n"), 400, "no Host");
    assert_eq!(
        status("POST / HTTP/1.0\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"),
        400
    );
    assert_eq!(status("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"), 2);
    assert_eq!(status("GET / HTTP/1.1\r\nHost: a\r\n"), 0, "incomplete");
    let big = format!(
        "GET / HTTP/1.1\r\nHost: a\r\nX-Big: {}\r\n\r\n",
        "a".repeat(MAX)
    );
    assert_eq!(status(&big), 431);
    assert_eq!(status(&big[..MAX + 10]), 431, "too large before its end");
    let many: String = (0..120).map(|i| format!("X-{i}: 1\r\n")).collect();
    assert_eq!(status(&format!("{h}{many}\r\n")), 431);
}

#[test]
fn the_endpoint_gets_the_request_without_hop_by_hop_headers_and_with_the_client() {
    let raw = b"POST http://Shop.Example/a/b?q=1#frag HTTP/1.1\r\nHost: other\r\n\
        Connection: keep-alive, X-Secret\r\nX-Secret: 1\r\nKeep-Alive: 5\r\nTE: trailers\r\n\
        X-Forwarded-For: 1.1.1.1\r\nX-Forwarded-Host: evil\r\nForwarded: for=1.1.1.1\r\n\
        X-Kept: yes\r\nContent-Length: 3\r\n\r\nabc";
    let (p, h) = parse(raw);
    assert_eq!(p, Parsed::Complete(raw.len() - 3));
    assert_eq!(h.host, "Shop.Example");
    assert_eq!(h.path(), "/a/b?q=1");
    assert_eq!(h.body, Framing::Length(3));
    assert!(!h.close && !h.upgrade);
    let up = String::from_utf8(h.upstream.clone()).expect("utf-8");
    assert_eq!(
        up,
        "POST /a/b?q=1 HTTP/1.1\r\nX-Kept: yes\r\nhost: Shop.Example\r\n\
         x-forwarded-for: 1.1.1.1, 10.1.2.3\r\nx-forwarded-proto: http\r\n\
         x-forwarded-host: Shop.Example\r\n\
         forwarded: for=1.1.1.1, for=10.1.2.3;host=\"Shop.Example\";proto=http\r\n\
         content-length: 3\r\n\r\n"
    );
}

#[test]
fn upgrades_keep_their_protocol_and_http10_closes() {
    let (p, h) =
        parse(b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n");
    assert!(matches!(p, Parsed::Complete(_)));
    assert!(h.upgrade);
    let up = String::from_utf8(h.upstream.clone()).expect("utf-8");
    assert!(
        up.ends_with("connection: upgrade\r\nupgrade: websocket\r\n\r\n"),
        "{up}"
    );
    let (_, h) = parse(b"GET / HTTP/1.0\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: x\r\n\r\n");
    assert!(h.close && !h.upgrade);
    let (_, h) = parse(b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(h.path(), "*");
    let (_, h) = parse(b"GET http://a.test HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(h.path(), "/");
    assert!(String::from_utf8_lossy(&h.upstream).starts_with("GET / HTTP/1.1\r\n"));
    assert_eq!(status("GET a.test:80 HTTP/1.1\r\nHost: a\r\n\r\n"), 400);
}

fn response_of(raw: &[u8], req: &RequestHead) -> (response::ResponseHead, String) {
    let mut out = Vec::new();
    match response::parse(raw, MAX, req, false, &mut out) {
        response::Parsed::Complete(_, r) => (r, String::from_utf8(out).expect("utf-8")),
        other => panic!("{other:?}"),
    }
}

#[test]
fn responses_are_framed_for_the_client() {
    let (_, get) = parse(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n");
    let (r, out) = response_of(
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nKeep-Alive: x\r\n\r\nok",
        &get,
    );
    assert_eq!(r.body, Framing::Length(2));
    assert!(r.reusable && !r.chunk_out && !r.close_client);
    assert_eq!(out, "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n");
    // Chunked stays chunked; a body to the end of the connection is chunked for a 1.1
    // client and leaves the endpoint's connection unused.
    let (r, _) = response_of(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
        &get,
    );
    assert!(r.body == Framing::Chunked && r.chunk_out && r.reusable);
    let (r, out) = response_of(b"HTTP/1.1 200 OK\r\n\r\n", &get);
    assert!(r.body == Framing::Close && r.chunk_out && !r.reusable);
    assert!(out.contains("transfer-encoding: chunked\r\n"), "{out}");
    // Both framings: chunked wins, the connection is not trusted again.
    let (r, out) = response_of(
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
        &get,
    );
    assert!(r.body == Framing::Chunked && !r.reusable);
    assert!(!out.contains("content-length"), "{out}");
    let (_, head) = parse(b"HEAD / HTTP/1.1\r\nHost: a\r\n\r\n");
    let (r, out) = response_of(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n", &head);
    assert_eq!(r.body, Framing::Length(0));
    assert!(out.contains("content-length: 9"));
    // An HTTP/1.0 client gets the end of the connection instead of chunks.
    let (_, old) = parse(b"GET / HTTP/1.0\r\nHost: a\r\n\r\n");
    let (r, out) = response_of(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
        &old,
    );
    assert!(!r.chunk_out && r.close_client);
    assert!(out.ends_with("connection: close\r\n\r\n"), "{out}");
    let mut out = Vec::new();
    assert_eq!(
        response::parse(b"HTTP/1.1 100 Continue\r\n\r\n", MAX, &get, false, &mut out),
        response::Parsed::Interim(25)
    );
    assert!(matches!(
        response::parse(
            b"HTTP/1.1 101 Switching\r\n\r\n",
            MAX,
            &get,
            false,
            &mut out
        ),
        response::Parsed::Bad(_)
    ));
    assert!(matches!(
        response::parse(
            b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            MAX,
            &get,
            false,
            &mut out
        ),
        response::Parsed::Bad(_)
    ));
}

/// Decodes `input` fed in pieces of `step` bytes; the data, or the first error.
fn dechunk(input: &[u8], step: usize) -> Result<Vec<u8>, String> {
    let mut d = Chunked::default();
    let mut data = Vec::new();
    let mut pending: Vec<u8> = Vec::new();
    for piece in input.chunks(step.max(1)) {
        pending.extend_from_slice(piece);
        loop {
            let (used, got) = d.decode(&pending).map_err(|e| e.to_string())?;
            if let Some(r) = got {
                data.extend_from_slice(&pending[r]);
            }
            pending.drain(..used);
            if d.done() {
                return Ok(data);
            }
            if used == 0 || pending.is_empty() {
                break;
            }
        }
    }
    Err("incomplete".into())
}

#[test]
fn chunked_decoding_is_strict() {
    let good = b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nTrailer: x\r\n\r\n";
    for step in [1, 2, 3, 7, 100] {
        assert_eq!(
            dechunk(good, step).as_deref(),
            Ok(&b"hello world"[..]),
            "step {step}"
        );
    }
    for bad in [
        &b"5\nhello\r\n0\r\n\r\n"[..],
        b"5\r\nhello\n0\r\n\r\n",
        b"5\r\nhelloXX0\r\n\r\n",
        b" 5\r\nhello\r\n0\r\n\r\n",
        b"-5\r\nhello\r\n0\r\n\r\n",
        b"\r\n",
        b"fffffffffffffffff\r\n",
        b"0\r\nX: a\rb\r\n\r\n",
        b"5;a\x01\r\nhello\r\n0\r\n\r\n",
    ] {
        assert!(
            dechunk(bad, 1).is_err(),
            "{:?}",
            String::from_utf8_lossy(bad)
        );
    }
}

/// A request from a seed corpus with some bytes changed, inserted or dropped.
fn mutate(seed: &mut u64, corpus: &[&[u8]]) -> Vec<u8> {
    let mut next = || {
        *seed ^= *seed << 13;
        *seed ^= *seed >> 7;
        *seed ^= *seed << 17;
        *seed
    };
    let mut v = corpus[(next() % corpus.len() as u64) as usize].to_vec();
    for _ in 0..(next() % 6) {
        let at = (next() % (v.len() as u64 + 1)) as usize;
        let byte =
            [b'\r', b'\n', b' ', b':', 0, b'\t', 0xff, b'0', b'a', b','][(next() % 10) as usize];
        match next() % 3 {
            0 if at < v.len() => v[at] = byte,
            1 => v.insert(at, byte),
            _ if at < v.len() => {
                v.remove(at);
            }
            _ => {}
        }
    }
    v
}

/// What a next hop reads from a head we send: its framing and Host, by httparse again.
fn reread(up: &[u8]) -> (Framing, String) {
    let mut headers = [httparse::EMPTY_HEADER; 128];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(up) {
        Ok(httparse::Status::Complete(n)) => assert_eq!(n, up.len(), "one head, nothing after"),
        other => panic!(
            "the endpoint's head does not parse: {other:?}\n{}",
            String::from_utf8_lossy(up)
        ),
    }
    let get = |name: &str| -> Vec<&[u8]> {
        req.headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value)
            .collect()
    };
    let (cl, te, host) = (get("content-length"), get("transfer-encoding"), get("host"));
    assert!(cl.len() + te.len() <= 1, "framing sent twice");
    assert_eq!(host.len(), 1, "one Host");
    let framing = match (cl.first(), te.first()) {
        (_, Some(t)) => {
            assert_eq!(*t, b"chunked");
            Framing::Chunked
        }
        (Some(n), None) => Framing::Length(head::content_length(n).expect("length")),
        (None, None) => Framing::Length(0),
    };
    (framing, String::from_utf8_lossy(host[0]).into_owned())
}

#[test]
fn fuzzed_heads_never_reach_an_endpoint_framed_differently() {
    let corpus: [&[u8]; 8] = [
        b"GET /x HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n",
        b"POST /x HTTP/1.1\r\nHost: a.test\r\nContent-Length: 5\r\n\r\n",
        b"POST /x HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"POST /x HTTP/1.1\r\nHost: a.test\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"GET /x HTTP/1.1\r\nHost: a.test\r\nConnection: Upgrade, x-a\r\nUpgrade: websocket\r\nx-a: 1\r\n\r\n",
        b"GET http://a.test/x?q=1#f HTTP/1.1\r\nHost: b.test\r\n\r\n",
        b"OPTIONS * HTTP/1.1\r\nHost: a.test\r\nX-Forwarded-For: 1.2.3.4\r\n\r\n",
        b"GET /x HTTP/1.0\r\nHost: a.test\r\nForwarded: for=x\r\nExpect: 100-continue\r\n\r\n",
    ];
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let (mut complete, mut refused) = (0, 0);
    for _ in 0..200_000 {
        let raw = mutate(&mut seed, &corpus);
        let (p, h) = parse(&raw);
        match p {
            Parsed::Complete(n) => {
                complete += 1;
                assert!(n <= raw.len());
                let (framing, host) = reread(&h.upstream);
                assert_eq!(framing, h.body, "{:?}", String::from_utf8_lossy(&raw));
                assert_eq!(host, h.host);
                assert!(h.path().starts_with('/') || h.path() == "*");
            }
            Parsed::Refuse(s, why) => {
                refused += 1;
                assert!([400, 431, 501].contains(&s), "{s} {why}");
            }
            Parsed::Partial | Parsed::Http2 => {}
        }
    }
    assert!(
        complete > 10_000 && refused > 10_000,
        "{complete} / {refused}"
    );
}
