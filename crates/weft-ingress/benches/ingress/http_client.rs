//! A small HTTP/1.1 client inside the namespace (route checks, reconfiguration probes).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use crate::PROXY_IP;

#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub body: Vec<u8>,
    pub close: bool,
}

fn find(h: &[u8], n: &[u8]) -> Option<usize> {
    h.windows(n.len()).position(|w| w == n)
}

pub fn request(s: &mut TcpStream, host: &str, path: &str, close: bool) -> Result<Resp, String> {
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\n{}\r\n",
        if close { "Connection: close\r\n" } else { "" }
    );
    s.write_all(req.as_bytes())
        .map_err(|e| format!("write: {}", e.kind()))?;
    let mut buf = Vec::with_capacity(512);
    let mut tmp = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = find(&buf, b"\r\n\r\n") {
            break i + 4;
        }
        let n = s
            .read(&mut tmp)
            .map_err(|e| format!("read: {}", e.kind()))?;
        if n == 0 {
            return Err(if buf.is_empty() {
                "closed before the response".into()
            } else {
                "closed mid-response".into()
            });
        }
        buf.extend_from_slice(&tmp[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or("bad status line")?;
    let mut len = 0usize;
    let mut conn_close = false;
    for line in head.lines().skip(1) {
        if let Some((k, v)) = line.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                len = v.trim().parse().map_err(|_| "bad content-length")?;
            } else if k.eq_ignore_ascii_case("connection") {
                conn_close = v.trim().eq_ignore_ascii_case("close");
            } else if k.eq_ignore_ascii_case("transfer-encoding") {
                return Err("chunked response (not expected here)".into());
            }
        }
    }
    let mut body = buf[head_end..].to_vec();
    while body.len() < len {
        let n = s
            .read(&mut tmp)
            .map_err(|e| format!("read body: {}", e.kind()))?;
        if n == 0 {
            return Err("closed mid-body".into());
        }
        body.extend_from_slice(&tmp[..n]);
    }
    body.truncate(len);
    Ok(Resp {
        status,
        body,
        close: conn_close || close,
    })
}

pub fn connect(port: u16) -> Result<TcpStream, String> {
    let a: SocketAddr = format!("{PROXY_IP}:{port}").parse().expect("addr");
    let s = TcpStream::connect_timeout(&a, Duration::from_secs(2))
        .map_err(|e| format!("connect: {}", e.kind()))?;
    let _ = s.set_nodelay(true);
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    Ok(s)
}

fn get_once(port: u16, host: &str, path: &str) -> Result<Resp, String> {
    let mut s = connect(port)?;
    request(&mut s, host, path, true)
}

/// What a route answered: "a", "b" (the backend's Service), or the status.
pub fn answer(port: u16, host: &str, path: &str) -> String {
    match get_once(port, host, path) {
        Ok(r) if r.status == 200 => String::from_utf8_lossy(&r.body).trim().to_string(),
        Ok(r) => r.status.to_string(),
        Err(e) => e,
    }
}
