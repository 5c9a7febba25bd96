//! weft's own HTTP/1.1 path (`Http1::Native`) against an endpoint written byte by byte,
//! in a network namespace of the test's own: bodies in each framing both ways on one
//! kept-alive client connection, what the endpoint is told, HTTP/1.0 clients,
//! `Expect: 100-continue`, a pooled connection the endpoint closed, a smuggling try, and a
//! client trickling its body.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use weft_ingress::compile;
use weft_ingress::proxy::{Http1, Limits, Proxy};

/// A response as a client reads it: status, head text, body (de-chunked).
struct Answer {
    status: u16,
    head: String,
    body: Vec<u8>,
}

/// Reads one head off `s` (bytes after it stay in `buf`).
async fn read_head<R: AsyncRead + Unpin>(s: &mut R, buf: &mut Vec<u8>) -> Option<String> {
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head: Vec<u8> = buf.drain(..end + 4).collect();
            return Some(String::from_utf8_lossy(&head).into_owned());
        }
        let mut chunk = [0u8; 4096];
        let n = s.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

async fn more<R: AsyncRead + Unpin>(s: &mut R, buf: &mut Vec<u8>) -> bool {
    let mut chunk = [0u8; 4096];
    match s.read(&mut chunk).await {
        Ok(n) if n > 0 => {
            buf.extend_from_slice(&chunk[..n]);
            true
        }
        _ => false,
    }
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// Reads one response: by Content-Length, chunked, or to the end of the connection.
async fn response<R: AsyncRead + Unpin>(s: &mut R, buf: &mut Vec<u8>, head_req: bool) -> Answer {
    let head = read_head(s, buf).await.expect("a response head");
    let status = head[9..12].parse().expect("status");
    let mut body = Vec::new();
    if head_req || status == 100 {
    } else if let Some(n) = header(&head, "content-length") {
        let n: usize = n.parse().expect("length");
        while buf.len() < n {
            assert!(more(s, buf).await, "body cut short");
        }
        body = buf.drain(..n).collect();
    } else if header(&head, "transfer-encoding") == Some("chunked") {
        loop {
            while !buf.windows(2).any(|w| w == b"\r\n") {
                assert!(more(s, buf).await, "chunk size cut short");
            }
            let at = buf.windows(2).position(|w| w == b"\r\n").expect("line");
            let size = usize::from_str_radix(std::str::from_utf8(&buf[..at]).expect("hex"), 16)
                .expect("chunk size");
            while buf.len() < at + 2 + size + 2 {
                assert!(more(s, buf).await, "chunk cut short");
            }
            body.extend_from_slice(&buf[at + 2..at + 2 + size]);
            buf.drain(..at + 2 + size + 2);
            if size == 0 {
                break;
            }
        }
    } else {
        while more(s, buf).await {}
        body = std::mem::take(buf);
    }
    Answer { status, head, body }
}

/// The endpoint: reads a request (Content-Length or chunked body), answers by path.
async fn endpoint(accepted: Arc<AtomicUsize>) -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = l.local_addr().expect("addr").port();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                return;
            };
            accepted.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = Vec::new();
                while let Some(head) = read_head(&mut s, &mut buf).await {
                    let path = head.split(' ').nth(1).unwrap_or("").to_string();
                    let mut body = Vec::new();
                    if let Some(n) = header(&head, "content-length") {
                        let n: usize = n.parse().expect("length");
                        while buf.len() < n {
                            assert!(more(&mut s, &mut buf).await);
                        }
                        body = buf.drain(..n).collect();
                    } else if header(&head, "transfer-encoding").is_some() {
                        while !buf.windows(5).any(|w| w == b"0\r\n\r\n") {
                            assert!(more(&mut s, &mut buf).await);
                        }
                        body = std::mem::take(&mut buf);
                    }
                    let out: Vec<u8> = match path.as_str() {
                        "/chunked" => b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n3;x=1\r\ndef\r\n0\r\nT: 1\r\n\r\n".to_vec(),
                        "/eof" => {
                            let _ = s.write_all(b"HTTP/1.1 200 OK\r\n\r\nuntil-close").await;
                            return;
                        }
                        "/head" => format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{head}", head.len()).into_bytes(),
                        "/close-after" => {
                            let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok").await;
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            return;
                        }
                        _ => {
                            let text = format!("body={}", String::from_utf8_lossy(&body));
                            format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: keep-alive\r\n\r\n{text}", text.len()).into_bytes()
                        }
                    };
                    if s.write_all(&out).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    port
}

/// The proxy on the native path in front of one `endpoint`; its address and the count of
/// connections the endpoint accepted.
async fn start() -> (SocketAddr, Arc<AtomicUsize>) {
    start_with(Limits::default()).await
}

async fn start_with(limits: Limits) -> (SocketAddr, Arc<AtomicUsize>) {
    let accepted = Arc::new(AtomicUsize::new(0));
    let port = endpoint(accepted.clone()).await;
    let proxy = Proxy::new(limits, &["default"])
        .expect("proxy")
        .with_http1(Http1::Native);
    assert!(proxy.update(compile(&common::a_test(port, &["127.0.0.1"]))));
    let (stop, rx) = tokio::sync::watch::channel(false);
    // The proxy runs until the test's runtime ends.
    std::mem::forget(stop);
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let at = l.local_addr().expect("addr");
    tokio::spawn(proxy.serve(l, false, rx));
    (at, accepted)
}

#[test]
fn bodies_in_every_framing_on_one_kept_alive_connection() {
    common::in_netns(|| async {
        let (at, _) = start().await;
        let mut s = TcpStream::connect(at).await.expect("connect");
        let mut buf = Vec::new();
        let h = "Host: a.test\r\n";
        // A chunked request body, in three chunks, reaches the endpoint whole.
        let req = format!("POST /up HTTP/1.1\r\n{h}Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n1\r\n \r\n5\r\nworld\r\n0\r\n\r\n");
        s.write_all(req.as_bytes()).await.expect("send");
        let a = response(&mut s, &mut buf, false).await;
        assert_eq!(
            (a.status, &a.body[..]),
            (
                200,
                &b"body=5\r\nhello\r\n1\r\n \r\n5\r\nworld\r\n0\r\n\r\n"[..]
            )
        );
        assert!(
            header(&a.head, "keep-alive").is_none() && header(&a.head, "connection").is_none(),
            "{}",
            a.head
        );
        // A chunked response, re-chunked: extensions and trailers dropped.
        s.write_all(format!("GET /chunked HTTP/1.1\r\n{h}\r\n").as_bytes())
            .await
            .expect("send");
        let a = response(&mut s, &mut buf, false).await;
        assert_eq!(&a.body[..], b"abcdef");
        // A body that ends with the endpoint's connection reaches this client chunked,
        // and the client's connection stays.
        s.write_all(format!("GET /eof HTTP/1.1\r\n{h}\r\n").as_bytes())
            .await
            .expect("send");
        let a = response(&mut s, &mut buf, false).await;
        assert_eq!(header(&a.head, "transfer-encoding"), Some("chunked"));
        assert_eq!(&a.body[..], b"until-close");
        // weft's own answer keeps the connection too.
        s.write_all(b"GET / HTTP/1.1\r\nHost: nowhere.test\r\n\r\n")
            .await
            .expect("send");
        assert_eq!(response(&mut s, &mut buf, false).await.status, 404);
        // What the endpoint is told: the client's hop, not the client's claims or the
        // headers that concerned only the client's connection.
        let req = format!("GET /head HTTP/1.1\r\n{h}Connection: x-secret\r\nX-Secret: 1\r\nX-Forwarded-Host: evil\r\nX-Kept: 1\r\n\r\n");
        s.write_all(req.as_bytes()).await.expect("send");
        let a = response(&mut s, &mut buf, false).await;
        let seen = String::from_utf8_lossy(&a.body).to_ascii_lowercase();
        for want in [
            "x-kept: 1",
            "x-forwarded-for: 127.0.0.1",
            "x-forwarded-host: a.test",
            "x-forwarded-proto: http",
            "forwarded: for=127.0.0.1;host=\"a.test\";proto=http",
        ] {
            assert!(seen.contains(want), "{want}: {seen}");
        }
        assert!(
            !seen.contains("x-secret") && !seen.contains("evil"),
            "{seen}"
        );
        // HEAD: the length, no body; the next answer still lines up.
        s.write_all(format!("HEAD /head HTTP/1.1\r\n{h}\r\nGET /x HTTP/1.1\r\n{h}\r\n").as_bytes())
            .await
            .expect("send");
        let a = response(&mut s, &mut buf, true).await;
        assert!(header(&a.head, "content-length").is_some(), "{}", a.head);
        let a = response(&mut s, &mut buf, false).await;
        assert_eq!(&a.body[..], b"body=", "pipelined after HEAD");
    });
}

#[test]
fn http10_clients_and_expect_continue() {
    common::in_netns(|| async {
        let (at, _) = start().await;
        let mut s = TcpStream::connect(at).await.expect("connect");
        let mut buf = Vec::new();
        s.write_all(b"GET /chunked HTTP/1.0\r\nHost: a.test\r\n\r\n")
            .await
            .expect("send");
        let a = response(&mut s, &mut buf, false).await;
        assert!(header(&a.head, "transfer-encoding").is_none(), "{}", a.head);
        assert_eq!(&a.body[..], b"abcdef", "to the end of the connection");

        let mut s = TcpStream::connect(at).await.expect("connect");
        let mut buf = Vec::new();
        s.write_all(b"POST /x HTTP/1.1\r\nHost: a.test\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n").await.expect("send");
        assert_eq!(response(&mut s, &mut buf, false).await.status, 100);
        s.write_all(b"hi").await.expect("send");
        let a = response(&mut s, &mut buf, false).await;
        assert_eq!((a.status, &a.body[..]), (200, &b"body=hi"[..]));
    });
}

#[test]
fn a_pooled_connection_the_endpoint_closed_costs_no_request() {
    common::in_netns(|| async {
        let (at, accepted) = start().await;
        let mut s = TcpStream::connect(at).await.expect("connect");
        let mut buf = Vec::new();
        for path in ["/close-after", "/close-after", "/x"] {
            let req = format!("GET {path} HTTP/1.1\r\nHost: a.test\r\n\r\n");
            s.write_all(req.as_bytes()).await.expect("send");
            assert_eq!(
                response(&mut s, &mut buf, false).await.status,
                200,
                "{path}"
            );
            // The endpoint closes its side meanwhile.
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
        assert_eq!(
            accepted.load(Ordering::SeqCst),
            3,
            "a new connection each time"
        );
    });
}

#[test]
fn a_smuggling_try_gets_one_answer_and_the_connection_closes() {
    common::in_netns(|| async {
        let (at, accepted) = start().await;
        let mut s = TcpStream::connect(at).await.expect("connect");
        s.write_all(b"POST /x HTTP/1.1\r\nHost: a.test\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: a.test\r\n\r\n").await.expect("send");
        let mut all = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut all)).await;
        let text = String::from_utf8_lossy(&all);
        assert!(text.starts_with("HTTP/1.1 400 "), "{text}");
        assert_eq!(text.matches("HTTP/1.1 ").count(), 1, "{text}");
        assert_eq!(
            accepted.load(Ordering::SeqCst),
            0,
            "the endpoint saw nothing"
        );
    });
}

#[test]
fn a_trickled_body_gets_408_while_others_are_served() {
    common::in_netns(|| async {
        let (at, _) = start_with(Limits {
            body_timeout: Duration::from_millis(300),
            ..Limits::default()
        })
        .await;
        let mut slow = TcpStream::connect(at).await.expect("connect");
        slow.write_all(b"POST /x HTTP/1.1\r\nHost: a.test\r\nContent-Length: 10\r\n\r\nabc")
            .await
            .expect("send");
        let mut other = TcpStream::connect(at).await.expect("connect");
        other
            .write_all(b"POST /y HTTP/1.1\r\nHost: a.test\r\nContent-Length: 2\r\n\r\nok")
            .await
            .expect("send");
        let a = response(&mut other, &mut Vec::new(), false).await;
        assert_eq!((a.status, a.body.as_slice()), (200, &b"body=ok"[..]));
        let mut all = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(10), slow.read_to_end(&mut all)).await;
        let text = String::from_utf8_lossy(&all);
        assert!(text.starts_with("HTTP/1.1 408 "), "{text}");
        assert_eq!(text.matches("HTTP/1.1 ").count(), 1, "{text}");
    });
}

#[test]
fn the_endpoint_timeout_counts_from_when_the_body_was_sent() {
    common::in_netns(|| async {
        // The client takes longer to send its body than the endpoint may take to answer:
        // the endpoint's time starts once the body is through, so this is a 200, not 504.
        let (at, _) = start_with(Limits {
            upstream_timeout: Duration::from_millis(400),
            ..Limits::default()
        })
        .await;
        let mut s = TcpStream::connect(at).await.expect("connect");
        s.write_all(b"POST /x HTTP/1.1\r\nHost: a.test\r\nContent-Length: 6\r\n\r\nab")
            .await
            .expect("send");
        for part in [&b"cd"[..], b"ef"] {
            tokio::time::sleep(Duration::from_millis(300)).await;
            s.write_all(part).await.expect("send");
        }
        let a = response(&mut s, &mut Vec::new(), false).await;
        assert_eq!((a.status, a.body.as_slice()), (200, &b"body=abcdef"[..]));
    });
}
