//! The line a weft server sends first on a TCP/SCTP connection and puts before the echoed
//! payload of a UDP reply: who answered, and the client address it saw. `weft probe` prints
//! that address, so its output shows the server's view of the client (the documents' point:
//! between pods there is no NAT, the server sees the client's own pod IP), not the client's.
//!
//! Format: `weft-serve proto=P host=H [pod=NS/NAME] client=IP:PORT\n`, space-separated
//! `key=value` words; readers ignore keys they do not know so fields can be added.

use std::net::SocketAddr;

pub const PREFIX: &str = "weft-serve";

/// Who this server is: the host name and, in a lab pod, the pod it runs as.
#[derive(Debug, Clone)]
pub struct Identity {
    pub host: String,
    pub pod_name: Option<String>,
    pub pod_namespace: Option<String>,
}

impl Identity {
    /// Pod and namespace come from `POD_NAME` / `POD_NAMESPACE` (what the lab, and a
    /// Kubernetes downward-API env, set); the host from the kernel's host name.
    pub fn from_env() -> Self {
        let host = nix::unistd::gethostname()
            .map(|h| h.to_string_lossy().into_owned())
            .unwrap_or_else(|_| "unknown".to_string());
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        Identity {
            host,
            pod_name: env("POD_NAME"),
            pod_namespace: env("POD_NAMESPACE"),
        }
    }

    /// `NS/NAME`, or `NAME` alone when no namespace is known.
    pub fn pod(&self) -> Option<String> {
        let name = self.pod_name.as_deref()?;
        Some(match self.pod_namespace.as_deref() {
            Some(ns) => format!("{ns}/{name}"),
            None => name.to_string(),
        })
    }

    pub fn greeting(&self, proto: &str, client: SocketAddr) -> String {
        let mut line = format!("{PREFIX} proto={proto} host={}", word(&self.host));
        if let Some(pod) = self.pod() {
            line.push_str(&format!(" pod={}", word(&pod)));
        }
        line.push_str(&format!(" client={}\n", canonical(client)));
        line
    }
}

/// A greeting as a probe reads it back.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Greeting {
    pub host: Option<String>,
    pub pod: Option<String>,
    pub client: Option<SocketAddr>,
}

/// `None` when the line is not a weft greeting (some other server answered).
pub fn parse(line: &str) -> Option<Greeting> {
    let mut words = line.split_whitespace();
    if words.next()? != PREFIX {
        return None;
    }
    let mut g = Greeting::default();
    for w in words {
        match w.split_once('=') {
            Some(("host", v)) => g.host = Some(v.to_string()),
            Some(("pod", v)) => g.pod = Some(v.to_string()),
            Some(("client", v)) => g.client = v.parse().ok(),
            _ => {}
        }
    }
    Some(g)
}

/// A v4 client on a dual-stack socket shows up as `::ffff:a.b.c.d`; print it as the v4
/// address it is so the output matches the pod IPs users know.
pub fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}

/// Keep a value one word so the line stays splittable on whitespace.
fn word(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_whitespace() || c.is_control() {
                '_'
            } else {
                c
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(pod: Option<&str>, ns: Option<&str>) -> Identity {
        Identity {
            host: "node 1".into(),
            pod_name: pod.map(Into::into),
            pod_namespace: ns.map(Into::into),
        }
    }

    #[test]
    fn greeting_round_trips() {
        let client: SocketAddr = "10.244.1.2:41234".parse().unwrap();
        let line = id(Some("web"), Some("default")).greeting("tcp", client);
        assert_eq!(
            line,
            "weft-serve proto=tcp host=node_1 pod=default/web client=10.244.1.2:41234\n"
        );
        let g = parse(&line).unwrap();
        assert_eq!(g.client, Some(client));
        assert_eq!(g.pod.as_deref(), Some("default/web"));
        assert_eq!(g.host.as_deref(), Some("node_1"));
    }

    #[test]
    fn mapped_v4_client_prints_as_v4() {
        let mapped: SocketAddr = "[::ffff:10.0.0.7]:9".parse().unwrap();
        let line = id(None, None).greeting("udp", mapped);
        assert!(line.ends_with(" client=10.0.0.7:9\n"), "{line}");
        assert!(!line.contains("pod="));
    }

    #[test]
    fn v6_client_round_trips() {
        let client: SocketAddr = "[fd00::2]:5000".parse().unwrap();
        let g = parse(&id(None, None).greeting("tcp", client)).unwrap();
        assert_eq!(g.client, Some(client));
    }

    #[test]
    fn other_servers_lines_are_not_greetings() {
        assert_eq!(parse("SSH-2.0-OpenSSH_9.6"), None);
        assert_eq!(parse(""), None);
        assert_eq!(
            parse("weft-serve future=1 client=bad"),
            Some(Greeting::default())
        );
    }
}
