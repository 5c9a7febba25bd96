//! The bench's knobs (`WEFT_INGRESS_BENCH_*` in the environment) and the load modes.

#[derive(Debug, Clone)]
pub struct Cfg {
    pub rounds: usize,
    pub secs: u64,
    pub conns: usize,
    pub threads: usize,
    /// weft served the old way: one multi-thread runtime (`FLAVOUR=multi`).
    pub multi: bool,
    /// Which of weft's HTTP/1.1 paths serves (`HTTP1`: native, the default, or hyper).
    pub http1: String,
    pub proxy_cpus: String,
    pub client_cpus: String,
    pub ingresses: usize,
    pub reloads: usize,
    pub access_log: bool,
    pub nginx_log_buffer: bool,
    pub modes: Vec<Mode>,
    pub keep: bool,
    /// Beside wrk in the new-connection modes, our own client's full cost per request
    /// (`fullcost`): `FULL` 1 (the default) or 0.
    pub full: bool,
    /// The paced mode's think time per connection between requests, in ms (`THINK_MS`).
    pub think_ms: u64,
    /// Keep the CPUs from halting during the run (`nohalt`): `NO_HALT` 1 (the default) or 0.
    pub no_halt: bool,
    /// After the rounds, time each new-connection mode on the wire (`wire`, tcpdump):
    /// `WIRE` 1 (the default) or 0.
    pub wire: bool,
}

pub fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(format!("WEFT_INGRESS_BENCH_{name}"))
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

impl Cfg {
    pub fn from_env() -> Cfg {
        let modes: String = env_or(
            "MODES",
            "http-ka,http-close,https-ka,https-close,https-close-paced".into(),
        );
        Cfg {
            rounds: env_or("ROUNDS", 5),
            secs: env_or("SECONDS", 10),
            conns: env_or("CONNS", 64),
            threads: env_or("THREADS", 1),
            multi: env_or("FLAVOUR", String::new()) == "multi",
            http1: env_or("HTTP1", "native".to_string()),
            proxy_cpus: env_or("PROXY_CPUS", "1".to_string()),
            client_cpus: env_or("CLIENT_CPUS", "0".to_string()),
            ingresses: env_or("INGRESSES", 5000),
            reloads: env_or("RELOADS", 5),
            access_log: env_or("ACCESS_LOG", 1u8) == 1,
            nginx_log_buffer: env_or("NGINX_LOG_BUFFER", 1u8) == 1,
            modes: modes
                .split(',')
                .map(|m| Mode::parse(m.trim()).unwrap_or_else(|| panic!("unknown mode {m}")))
                .collect(),
            keep: env_or("KEEP", 0u8) == 1,
            full: env_or("FULL", 1u8) == 1,
            think_ms: env_or("THINK_MS", 25),
            no_halt: env_or("NO_HALT", 1u8) == 1,
            wire: env_or("WIRE", 1u8) == 1,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    HttpKa,
    HttpClose,
    HttpsKa,
    HttpsClose,
    /// `HttpsClose` with a think time per connection: the same offered load for both
    /// proxies, below what wrk's core can drive, so latency is compared at equal load.
    HttpsClosePaced,
}

impl Mode {
    pub fn parse(s: &str) -> Option<Mode> {
        Some(match s {
            "http-ka" => Mode::HttpKa,
            "http-close" => Mode::HttpClose,
            "https-ka" => Mode::HttpsKa,
            "https-close" => Mode::HttpsClose,
            "https-close-paced" => Mode::HttpsClosePaced,
            _ => return None,
        })
    }
    pub fn label(self) -> &'static str {
        match self {
            Mode::HttpKa => "HTTP, keep-alive",
            Mode::HttpClose => "HTTP, new connection per request",
            Mode::HttpsKa => "HTTPS, keep-alive",
            Mode::HttpsClose => "HTTPS, new connection (TLS handshake) per request",
            Mode::HttpsClosePaced => {
                "HTTPS, new connection (TLS handshake) per request, paced (think time per connection)"
            }
        }
    }
    pub fn short(self) -> &'static str {
        match self {
            Mode::HttpKa => "http keep-alive",
            Mode::HttpClose => "http new connection",
            Mode::HttpsKa => "https keep-alive",
            Mode::HttpsClose => "https new connection",
            Mode::HttpsClosePaced => "https new conn, paced",
        }
    }
    pub fn tls(self) -> bool {
        matches!(
            self,
            Mode::HttpsKa | Mode::HttpsClose | Mode::HttpsClosePaced
        )
    }
    pub fn close(self) -> bool {
        matches!(
            self,
            Mode::HttpClose | Mode::HttpsClose | Mode::HttpsClosePaced
        )
    }
    pub fn paced(self) -> bool {
        self == Mode::HttpsClosePaced
    }
}
