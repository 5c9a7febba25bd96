//! Readiness probes, run the way kubelet runs them: a TCP connect, an HTTP GET whose
//! status is 200-399, or a command that exits 0, each within its timeout. TCP and HTTP
//! probes connect from inside the pod's network namespace to the pod's IP, so they depend
//! on the pod alone, not on the node's routing or policy.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use weft_netlink::Netns;

use crate::spec::ProbeAction;

/// Runs one probe; true on success. `exec` builds the command for exec probes (it runs in
/// the pod like `weft lab exec` does).
pub fn run(
    action: &ProbeAction,
    pod_ip: Option<IpAddr>,
    timeout: Duration,
    netns: &Netns,
    exec: impl FnOnce(&[String]) -> Option<Command>,
) -> bool {
    match action {
        ProbeAction::Tcp { host, port } => {
            let Some(addr) = target(host.as_deref(), pod_ip, *port) else {
                return false;
            };
            netns
                .run_in(|| TcpStream::connect_timeout(&addr, timeout).is_ok())
                .unwrap_or(false)
        }
        ProbeAction::Http {
            host,
            port,
            path,
            headers,
        } => {
            let Some(addr) = target(host.as_deref(), pod_ip, *port) else {
                return false;
            };
            netns
                .run_in(|| {
                    http_get(addr, path, headers, timeout).is_some_and(|s| (200..400).contains(&s))
                })
                .unwrap_or(false)
        }
        ProbeAction::Exec { argv } => match exec(argv) {
            Some(cmd) => exec_ok(cmd, timeout),
            None => false,
        },
    }
}

fn target(host: Option<&str>, pod_ip: Option<IpAddr>, port: u16) -> Option<SocketAddr> {
    let ip = match host {
        Some(h) => h.trim_matches(['[', ']']).parse().ok()?,
        None => pod_ip?,
    };
    Some(SocketAddr::new(ip, port))
}

/// The status code of `GET path`, or None if there was no HTTP answer in time.
pub fn http_get(
    addr: SocketAddr,
    path: &str,
    headers: &[(String, String)],
    timeout: Duration,
) -> Option<u16> {
    let deadline = Instant::now() + timeout;
    let mut s = TcpStream::connect_timeout(&addr, timeout).ok()?;
    let left = || {
        deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(1))
    };
    s.set_write_timeout(Some(left())).ok()?;
    let mut req = format!("GET {path} HTTP/1.1\r\n");
    let has = |n: &str| headers.iter().any(|(k, _)| k.eq_ignore_ascii_case(n));
    if !has("host") {
        req.push_str(&format!("Host: {addr}\r\n"));
    }
    if !has("user-agent") {
        req.push_str("User-Agent: kube-probe/weft\r\n");
    }
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("Connection: close\r\n\r\n");
    s.write_all(req.as_bytes()).ok()?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 512];
    // Only the status line matters: read until its end.
    while !buf.contains(&b'\n') && buf.len() < 4096 {
        s.set_read_timeout(Some(left())).ok()?;
        let n = s.read(&mut chunk).ok()?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    status_code(&buf)
}

/// `HTTP/1.x NNN ...` -> NNN.
pub fn status_code(head: &[u8]) -> Option<u16> {
    let line = head.split(|b| *b == b'\n').next()?;
    let line = std::str::from_utf8(line).ok()?;
    let mut words = line.split_whitespace();
    if !words.next()?.starts_with("HTTP/") {
        return None;
    }
    words.next()?.parse().ok()
}

fn exec_ok(mut cmd: Command, timeout: Duration) -> bool {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let Ok(mut child) = cmd.spawn() else {
        return false;
    };
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return status.success(),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return false;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines() {
        assert_eq!(status_code(b"HTTP/1.1 204 No Content\r\n"), Some(204));
        assert_eq!(status_code(b"HTTP/1.0 500 x\r\n"), Some(500));
        assert_eq!(status_code(b"SSH-2.0-OpenSSH\r\n"), None);
        assert_eq!(status_code(b""), None);
    }

    #[test]
    fn targets_default_to_the_pod_ip() {
        let ip: IpAddr = "10.244.1.2".parse().unwrap();
        assert_eq!(
            target(None, Some(ip), 80),
            Some("10.244.1.2:80".parse().unwrap())
        );
        assert_eq!(
            target(Some("[::1]"), Some(ip), 80),
            Some("[::1]:80".parse().unwrap())
        );
        assert_eq!(target(None, None, 80), None);
    }
}
