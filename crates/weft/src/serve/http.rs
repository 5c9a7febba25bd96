//! HTTP echo: answers every request with JSON describing it and who served it (pod,
//! namespace, host, method, path, headers, client address), the way Kubernetes tutorials'
//! echo servers do. HTTP/1.1 keep-alive; anything malformed gets a 400, then the
//! connection closes.

use super::greeting::{canonical, Identity};
use serde_json::{json, Map, Value};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::TcpStream;

const MAX_HEAD: usize = 32 * 1024;
const MAX_BODY: u64 = 1024 * 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    pub target: String,
    pub version: String,
    pub headers: Vec<(String, String)>,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn has_token(&self, name: &str, token: &str) -> bool {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .flat_map(|(_, v)| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    }

    /// The protocol an HTTP/1.1 request asks to switch to (`Connection: upgrade`).
    fn upgrade(&self) -> Option<String> {
        if self.version != "HTTP/1.1" || !self.has_token("connection", "upgrade") {
            return None;
        }
        self.header("upgrade").map(str::to_string)
    }

    /// HTTP/1.1 keeps the connection unless told to close; 1.0 only when asked to keep it.
    pub fn keep_alive(&self) -> bool {
        if self.version == "HTTP/1.0" {
            self.has_token("connection", "keep-alive")
        } else {
            !self.has_token("connection", "close")
        }
    }

    fn body_length(&self) -> Result<Body, String> {
        if let Some(te) = self.header("transfer-encoding") {
            return if te.trim().eq_ignore_ascii_case("chunked") {
                Ok(Body::Chunked)
            } else {
                Err(format!("unsupported transfer-encoding {te:?}"))
            };
        }
        let lengths: Vec<&str> = self
            .headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case("content-length"))
            .map(|(_, v)| v.trim())
            .collect();
        match lengths.as_slice() {
            [] => Ok(Body::Length(0)),
            // Disagreeing lengths are a request-smuggling shape: refuse, do not guess.
            [first, rest @ ..] if rest.iter().all(|l| l == first) => first
                .parse()
                .map(Body::Length)
                .map_err(|_| format!("bad content-length {first:?}")),
            _ => Err("conflicting content-length headers".into()),
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Body {
    Length(u64),
    Chunked,
}

/// Methods that mark the start of an HTTP request on a port that also speaks plain echo.
const METHODS: [&str; 9] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH", "CONNECT", "TRACE",
];

#[derive(Debug, PartialEq, Eq)]
pub enum Sniff {
    Http,
    NotHttp,
    /// Too few bytes yet to tell ("GE").
    Undecided,
}

/// Whether the first bytes a client sent open an HTTP request.
pub fn sniff(first: &[u8]) -> Sniff {
    let mut undecided = false;
    for m in METHODS {
        let want = [m.as_bytes(), b" "].concat();
        if first.starts_with(&want) {
            return Sniff::Http;
        }
        undecided |= want.starts_with(first);
    }
    if undecided {
        Sniff::Undecided
    } else {
        Sniff::NotHttp
    }
}

/// Splits a request line into method, target and version.
fn request_line(line: &str) -> Result<(&str, &str, &str), String> {
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(format!("bad request line {line:?}"));
    };
    if method.is_empty() || !method.bytes().all(is_token_byte) {
        return Err(format!("bad method {method:?}"));
    }
    if target.is_empty() || target.bytes().any(|b| b.is_ascii_control()) {
        return Err(format!("bad request target {target:?}"));
    }
    if version != "HTTP/1.1" && version != "HTTP/1.0" {
        return Err(format!("unsupported version {version:?}"));
    }
    Ok((method, target, version))
}

/// Parses a request head (request line and header lines, without the blank line).
pub fn parse_head(head: &str) -> Result<Request, String> {
    let mut lines = head.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l));
    let (method, target, version) = request_line(lines.next().unwrap_or_default())?;
    let mut headers = Vec::new();
    for line in lines {
        if line.starts_with([' ', '\t']) {
            return Err("obsolete header line folding".into());
        }
        let Some((name, value)) = line.split_once(':') else {
            return Err(format!("header line without a colon: {line:?}"));
        };
        if name.is_empty() || !name.bytes().all(is_token_byte) {
            return Err(format!("bad header name {name:?}"));
        }
        headers.push((name.to_string(), value.trim().to_string()));
    }
    if version == "HTTP/1.1" && !headers.iter().any(|(n, _)| n.eq_ignore_ascii_case("host")) {
        return Err("HTTP/1.1 request without a Host header".into());
    }
    Ok(Request {
        method: method.to_string(),
        target: target.to_string(),
        version: version.to_string(),
        headers,
    })
}

fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// The JSON an echo answers with.
pub fn describe(req: &Request, identity: &Identity, client: &str, body_bytes: u64) -> Value {
    let (path, query) = match req.target.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (req.target.as_str(), None),
    };
    let mut headers = Map::new();
    for (name, value) in &req.headers {
        let key = name.to_ascii_lowercase();
        // Repeated headers fold into one comma-separated value, as RFC 9110 allows.
        let merged = match headers.get(&key).and_then(Value::as_str) {
            Some(prev) => format!("{prev}, {value}"),
            None => value.clone(),
        };
        headers.insert(key, Value::String(merged));
    }
    json!({
        "pod": identity.pod_name,
        "namespace": identity.pod_namespace,
        "host": identity.host,
        "method": req.method,
        "path": path,
        "query": query,
        "version": req.version,
        "headers": headers,
        "client": client,
        "body_bytes": body_bytes,
    })
}

pub fn serve(stream: TcpStream, identity: &Identity) -> io::Result<()> {
    serve_after(stream, identity, Vec::new())
}

/// Serves a connection whose first bytes were already read (to sniff the protocol).
pub fn serve_after(stream: TcpStream, identity: &Identity, first: Vec<u8>) -> io::Result<()> {
    let client = canonical(stream.peer_addr()?).to_string();
    let mut out = stream.try_clone()?;
    let mut reader = BufReader::new(io::Cursor::new(first).chain(stream));
    loop {
        let head = match read_head(&mut reader) {
            Ok(Some(h)) => h,
            Ok(None) => return Ok(()),
            Err(Malformed::Io(e)) => return Err(e),
            Err(Malformed::Bad(why)) => return respond_error(&mut out, 400, &why),
        };
        let req = match parse_head(&head) {
            Ok(r) => r,
            Err(why) => return respond_error(&mut out, 400, &why),
        };
        let length = match req.body_length() {
            Ok(Body::Length(n)) if n > MAX_BODY => {
                return respond_error(&mut out, 413, "request body over 1 MiB")
            }
            Ok(length) => length,
            Err(why) => return respond_error(&mut out, 400, &why),
        };
        // curl and others wait (about a second) for this before sending a large body.
        let has_body = length != Body::Length(0);
        if has_body && req.version == "HTTP/1.1" && req.has_token("expect", "100-continue") {
            out.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
        }
        let body_bytes = match length {
            Body::Length(n) => discard(&mut reader, n)?,
            Body::Chunked => match discard_chunked(&mut reader) {
                Ok(n) => n,
                Err(Malformed::Io(e)) => return Err(e),
                Err(Malformed::Bad(why)) => return respond_error(&mut out, 400, &why),
            },
        };
        if let Some(protocol) = req.upgrade() {
            let key = req.header("sec-websocket-key").map(str::to_string);
            return super::upgrade::switch(&mut reader, &mut out, &protocol, key.as_deref());
        }
        let keep = req.keep_alive();
        let mut body = describe(&req, identity, &client, body_bytes).to_string();
        body.push('\n');
        respond(&mut out, 200, &body, keep, req.method == "HEAD")?;
        if !keep {
            return Ok(());
        }
    }
}

enum Malformed {
    Io(io::Error),
    Bad(String),
}

impl From<io::Error> for Malformed {
    fn from(e: io::Error) -> Self {
        Malformed::Io(e)
    }
}

/// Reads up to the blank line ending a head. `None` when the client closed between requests.
fn read_head(reader: &mut impl BufRead) -> Result<Option<String>, Malformed> {
    let mut head = Vec::new();
    loop {
        let room = (MAX_HEAD + 1).saturating_sub(head.len()) as u64;
        let start = head.len();
        let n = reader.by_ref().take(room).read_until(b'\n', &mut head)?;
        if n == 0 {
            return if head.is_empty() {
                Ok(None)
            } else {
                Err(Malformed::Bad(
                    "connection closed inside the request head".into(),
                ))
            };
        }
        if head.len() > MAX_HEAD {
            return Err(Malformed::Bad("request head over 32 KiB".into()));
        }
        let line = &head[start..];
        if line == b"\r\n" || line == b"\n" {
            // RFC 9112: ignore empty lines before a request line.
            if start == 0 {
                head.clear();
                continue;
            }
            head.truncate(start);
            return String::from_utf8(head)
                .map(|h| Some(h.trim_end().to_string()))
                .map_err(|_| Malformed::Bad("request head is not UTF-8".into()));
        }
        if !line.ends_with(b"\n") {
            return Err(Malformed::Bad(
                "connection closed inside the request head".into(),
            ));
        }
        // Refuse a client that is not speaking HTTP now, not after it sends a blank line
        // it may never send.
        if start == 0 {
            let text = String::from_utf8_lossy(line);
            request_line(text.trim_end_matches(['\r', '\n'])).map_err(Malformed::Bad)?;
        }
    }
}

fn discard(reader: &mut impl Read, n: u64) -> io::Result<u64> {
    let copied = io::copy(&mut reader.by_ref().take(n), &mut io::sink())?;
    if copied < n {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    Ok(copied)
}

fn discard_chunked(reader: &mut impl BufRead) -> Result<u64, Malformed> {
    let mut total = 0u64;
    loop {
        let mut line = String::new();
        reader.by_ref().take(1024).read_line(&mut line)?;
        let size_text = line.trim().split(';').next().unwrap_or_default();
        let size = u64::from_str_radix(size_text, 16)
            .map_err(|_| Malformed::Bad(format!("bad chunk size {size_text:?}")))?;
        total += size;
        if total > MAX_BODY {
            return Err(Malformed::Bad("request body over 1 MiB".into()));
        }
        if size == 0 {
            skip_trailers(reader)?;
            return Ok(total);
        }
        discard(reader, size)?;
        let mut crlf = String::new();
        reader.by_ref().take(2).read_line(&mut crlf)?;
        if !crlf.trim_end_matches(['\r', '\n']).is_empty() {
            return Err(Malformed::Bad("chunk not followed by CRLF".into()));
        }
    }
}

/// Trailer fields after the last chunk, up to the blank line.
fn skip_trailers(reader: &mut impl BufRead) -> Result<(), Malformed> {
    let mut seen = 0;
    loop {
        let mut line = Vec::new();
        let n = reader
            .by_ref()
            .take(MAX_HEAD as u64)
            .read_until(b'\n', &mut line)?;
        seen += n;
        if n == 0 || seen > MAX_HEAD {
            return Err(Malformed::Bad("chunked body without an end".into()));
        }
        if line == b"\r\n" || line == b"\n" {
            return Ok(());
        }
    }
}

fn respond(
    out: &mut impl Write,
    status: u16,
    body: &str,
    keep: bool,
    head_only: bool,
) -> io::Result<()> {
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        413 => "Content Too Large",
        _ => "",
    };
    let mut msg = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: {}\r\n\r\n",
        body.len(),
        if keep { "keep-alive" } else { "close" }
    );
    if !head_only {
        msg.push_str(body);
    }
    out.write_all(msg.as_bytes())?;
    out.flush()
}

fn respond_error(out: &mut impl Write, status: u16, why: &str) -> io::Result<()> {
    let body = format!("{}\n", json!({ "error": why }));
    respond(out, status, &body, false, false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn identity() -> Identity {
        Identity {
            host: "node-1".into(),
            pod_name: Some("web".into()),
            pod_namespace: Some("default".into()),
        }
    }

    #[test]
    fn parses_a_request_and_describes_it() {
        let req = parse_head("GET /a/b?x=1 HTTP/1.1\r\nHost: web\r\nX-A: 1\r\nx-a: 2").unwrap();
        assert!(req.keep_alive());
        let v = describe(&req, &identity(), "10.244.1.2:5000", 0);
        assert_eq!(v["path"], "/a/b");
        assert_eq!(v["query"], "x=1");
        assert_eq!(v["method"], "GET");
        assert_eq!(v["pod"], "web");
        assert_eq!(v["namespace"], "default");
        assert_eq!(v["host"], "node-1");
        assert_eq!(v["client"], "10.244.1.2:5000");
        assert_eq!(v["headers"]["x-a"], "1, 2");
        assert_eq!(v["headers"]["host"], "web");
    }

    #[test]
    fn malformed_heads_are_rejected() {
        for bad in [
            "GARBAGE",
            "GET / HTTP/1.1 extra",
            "GET / HTTP/2.0\r\nHost: a",
            "GET / HTTP/1.1\r\nHost a",
            "GET / HTTP/1.1\r\nHost: a\r\n folded",
            "G(T / HTTP/1.1\r\nHost: a",
            "GET / HTTP/1.1",
            "GET /\x01 HTTP/1.1\r\nHost: a",
        ] {
            assert!(parse_head(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn connection_persistence_follows_the_version() {
        let close = parse_head("GET / HTTP/1.1\r\nHost: a\r\nConnection: close").unwrap();
        assert!(!close.keep_alive());
        let old = parse_head("GET / HTTP/1.0").unwrap();
        assert!(!old.keep_alive());
        let old_keep = parse_head("GET / HTTP/1.0\r\nConnection: Keep-Alive").unwrap();
        assert!(old_keep.keep_alive());
    }

    #[test]
    fn http_is_sniffed_from_the_first_bytes() {
        assert_eq!(sniff(b"GET / HTTP/1.1\r\n"), Sniff::Http);
        assert_eq!(sniff(b"OPTIONS * HTTP/1.1"), Sniff::Http);
        assert_eq!(sniff(b"GE"), Sniff::Undecided);
        assert_eq!(sniff(b""), Sniff::Undecided);
        assert_eq!(sniff(b"weft-probe 1\n"), Sniff::NotHttp);
        assert_eq!(sniff(b"GETX / HTTP/1.1"), Sniff::NotHttp);
    }

    #[test]
    fn a_client_not_speaking_http_is_refused_at_its_first_line() {
        let mut r = Cursor::new(b"weft-probe 1\n".to_vec());
        assert!(matches!(read_head(&mut r), Err(Malformed::Bad(_))));
    }

    #[test]
    fn conflicting_lengths_are_refused() {
        let r = parse_head("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2")
            .unwrap();
        assert!(r.body_length().is_err());
        let r = parse_head("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1").unwrap();
        assert!(r.body_length().is_err());
        let r = parse_head("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip").unwrap();
        assert!(r.body_length().is_err());
    }

    #[test]
    fn heads_are_read_up_to_the_blank_line() {
        let mut r = Cursor::new(b"\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\nrest".to_vec());
        let head = read_head(&mut r).ok().flatten().unwrap();
        assert_eq!(head, "GET / HTTP/1.1\r\nHost: a");
        let mut rest = String::new();
        r.read_to_string(&mut rest).unwrap();
        assert_eq!(rest, "rest");
        assert!(matches!(read_head(&mut Cursor::new(Vec::new())), Ok(None)));
        assert!(matches!(
            read_head(&mut Cursor::new(b"GET / HT".to_vec())),
            Err(Malformed::Bad(_))
        ));
        let huge = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(MAX_HEAD));
        assert!(matches!(
            read_head(&mut Cursor::new(huge.into_bytes())),
            Err(Malformed::Bad(_))
        ));
    }

    #[test]
    fn chunked_bodies_are_counted() {
        let mut r = Cursor::new(b"3\r\nabc\r\n2;x=y\r\nde\r\n0\r\nT: 1\r\n\r\nNEXT".to_vec());
        assert!(matches!(discard_chunked(&mut r), Ok(5)));
        let mut rest = String::new();
        r.read_to_string(&mut rest).unwrap();
        assert_eq!(rest, "NEXT");
        let mut bare = Cursor::new(b"1\r\nx\r\n0\r\n\r\nGET".to_vec());
        assert!(matches!(discard_chunked(&mut bare), Ok(1)));
        let mut rest = String::new();
        bare.read_to_string(&mut rest).unwrap();
        assert_eq!(rest, "GET");
        let mut bad = Cursor::new(b"zz\r\n".to_vec());
        assert!(matches!(discard_chunked(&mut bad), Err(Malformed::Bad(_))));
    }

    /// Whatever a client sends, the parser answers (a request or an error) and never
    /// panics: truncations, byte flips, insertions and random bytes around a valid head.
    #[test]
    fn mutated_requests_never_panic_the_parser() {
        let valid = b"POST /a/b?x=1 HTTP/1.1\r\nHost: web\r\nContent-Length: 5\r\nConnection: keep-alive\r\n\r\nhello";
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = |n: usize| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % n as u64) as usize
        };
        let check = |bytes: &[u8]| {
            if let Ok(head) = std::str::from_utf8(bytes) {
                if let Ok(req) = parse_head(head.trim_end_matches("\r\n\r\nhello")) {
                    let _ = req.body_length();
                    let _ = req.keep_alive();
                }
            }
            let _ = sniff(bytes);
            let _ = read_head(&mut Cursor::new(bytes.to_vec()));
        };
        for cut in 0..valid.len() {
            check(&valid[..cut]);
        }
        for _ in 0..20_000 {
            let mut b = valid.to_vec();
            for _ in 0..1 + next(4) {
                let at = next(b.len());
                match next(3) {
                    0 => b[at] = next(256) as u8,
                    1 => b.insert(at, [b'\r', b'\n', b':', b' ', 0, 0xff][next(6)]),
                    _ => {
                        b.remove(at);
                    }
                }
                if b.is_empty() {
                    break;
                }
            }
            check(&b);
        }
    }
}
