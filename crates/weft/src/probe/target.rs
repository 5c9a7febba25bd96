//! What to probe: `HOST:PORT`, `HOST`, and `http://` URLs, split and resolved.

use std::io;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};

/// A host (IP literal or name) and a port, as given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPort {
    pub host: String,
    pub port: u16,
}

/// `HOST:PORT`, `[V6]:PORT`; a bare IPv6 literal needs brackets since its colons are ambiguous.
pub fn host_port(s: &str) -> Result<HostPort, String> {
    if let Ok(sa) = s.parse::<SocketAddr>() {
        return Ok(HostPort {
            host: sa.ip().to_string(),
            port: sa.port(),
        });
    }
    let Some((host, port)) = s.rsplit_once(':') else {
        return Err(format!(
            "{s:?} has no port: give HOST:PORT ([V6]:PORT for IPv6)"
        ));
    };
    if host.contains(':') {
        return Err(format!(
            "{s:?}: put an IPv6 address in brackets, as [V6]:PORT"
        ));
    }
    let port = port
        .parse::<u16>()
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| format!("{s:?}: the port must be a number from 1 to 65535"))?;
    if host.is_empty() || host.starts_with('[') {
        return Err(format!("{s:?}: bad host"));
    }
    Ok(HostPort {
        host: host.to_string(),
        port,
    })
}

/// A host alone (ICMP): an IP literal, `[V6]`, or a name.
pub fn host(s: &str) -> Result<String, String> {
    let h = s
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(s);
    if h.is_empty() || h.contains(char::is_whitespace) {
        return Err(format!("{s:?} is not a host"));
    }
    if h.contains(':') && h.parse::<IpAddr>().is_err() {
        return Err(format!("{s:?} is neither an IPv6 address nor a host name"));
    }
    Ok(h.to_string())
}

/// Resolves with the system resolver (the pod's /etc/resolv.conf, so cluster DNS in a lab).
/// IP literals never touch it.
pub fn resolve(host: &str, port: u16) -> io::Result<SocketAddr> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, port));
    }
    let mut addrs: Vec<SocketAddr> = (host, port).to_socket_addrs()?.collect();
    // Prefer IPv4 like most clients in clusters that are single-stack v4.
    addrs.sort_by_key(|a| a.is_ipv6());
    addrs
        .into_iter()
        .next()
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no addresses"))
}

/// An `http://` URL, split for a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpUrl {
    /// `https://`: the exchange runs over TLS.
    pub tls: bool,
    pub host: String,
    pub port: u16,
    /// `host[:port]` as written, for the Host header.
    pub authority: String,
    /// Path and query, at least `/`.
    pub path: String,
}

/// curl's `--resolve HOST:PORT:ADDR`: connect to ADDR when the URL names HOST:PORT.
pub fn resolve_rule(s: &str) -> Result<(String, u16, SocketAddr), String> {
    let bad =
        || format!("--resolve {s:?}: want HOST:PORT:ADDR, e.g. shop.example:443:192.168.1.11");
    let (host, rest) = s.split_once(':').ok_or_else(bad)?;
    let (port, addr) = rest.split_once(':').ok_or_else(bad)?;
    let port: u16 = port.parse().map_err(|_| bad())?;
    let ip: std::net::IpAddr = addr
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .map_err(|_| bad())?;
    if host.is_empty() || port == 0 {
        return Err(bad());
    }
    Ok((host.to_string(), port, SocketAddr::new(ip, port)))
}

pub fn http_url(s: &str) -> Result<HttpUrl, String> {
    let (tls, rest) = if let Some(r) = s.strip_prefix("http://") {
        (false, r)
    } else if let Some(r) = s.strip_prefix("https://") {
        (true, r)
    } else if s.contains("://") {
        return Err(format!(
            "{s:?}: only http:// and https:// URLs are supported"
        ));
    } else {
        (false, s)
    };
    let default_port = if tls { 443 } else { 80 };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let tail = tail.split('#').next().unwrap_or_default();
    let path = if tail.starts_with('?') {
        format!("/{tail}")
    } else if tail.is_empty() {
        "/".to_string()
    } else {
        tail.to_string()
    };
    if path.contains(|c: char| c.is_whitespace() || c.is_control()) {
        return Err(format!("{s:?}: spaces in the path must be written %20"));
    }
    if authority.contains('@') {
        return Err(format!("{s:?}: user info in URLs is not supported"));
    }
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (h, after) = v6
            .split_once(']')
            .ok_or_else(|| format!("{s:?}: unclosed '['"))?;
        let port = match after.strip_prefix(':') {
            Some(p) => p.parse().map_err(|_| format!("{s:?}: bad port"))?,
            None if after.is_empty() => default_port,
            None => return Err(format!("{s:?}: bad authority")),
        };
        (h.to_string(), port)
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (
                h.to_string(),
                p.parse().map_err(|_| format!("{s:?}: bad port"))?,
            ),
            None => (authority.to_string(), default_port),
        }
    };
    if host.is_empty() || port == 0 {
        return Err(format!("{s:?}: needs a host (and a port from 1 to 65535)"));
    }
    Ok(HttpUrl {
        tls,
        host,
        port,
        authority: authority.to_string(),
        path,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_ports() {
        let hp = |s| host_port(s).map(|h| (h.host, h.port));
        assert_eq!(hp("10.244.1.3:80"), Ok(("10.244.1.3".into(), 80)));
        assert_eq!(hp("[fd00::1]:8080"), Ok(("fd00::1".into(), 8080)));
        assert_eq!(hp("web.default:81"), Ok(("web.default".into(), 81)));
        for bad in ["10.0.0.1", "fd00::1:80", "x:0", "x:99999", ":80", "[x]:1"] {
            assert!(host_port(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn hosts() {
        assert_eq!(host("[::1]"), Ok("::1".into()));
        assert_eq!(host("10.0.0.1"), Ok("10.0.0.1".into()));
        assert_eq!(host("node-1"), Ok("node-1".into()));
        assert!(host("a:b").is_err());
        assert!(host("").is_err());
    }

    #[test]
    fn urls() {
        let u = http_url("http://10.96.0.5:8080/a/b?c=d#frag").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("10.96.0.5", 8080));
        assert_eq!(u.path, "/a/b?c=d");
        assert_eq!(u.authority, "10.96.0.5:8080");
        let u = http_url("web.default").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.path.as_str()),
            ("web.default", 80, "/")
        );
        let u = http_url("http://[::1]/x").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("::1", 80));
        let u = http_url("http://h?q=1").unwrap();
        assert_eq!(u.path, "/?q=1");
        let u = http_url("https://secure.example/p").unwrap();
        assert!(u.tls);
        assert_eq!((u.host.as_str(), u.port), ("secure.example", 443));
        for bad in [
            "ftp://x",
            "http://",
            "http://h:0/",
            "http://h/a b",
            "http://[::1/",
        ] {
            assert!(http_url(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn literals_resolve_without_a_resolver() {
        assert_eq!(
            resolve("fd00::1", 53).unwrap(),
            "[fd00::1]:53".parse::<SocketAddr>().unwrap()
        );
    }
}
