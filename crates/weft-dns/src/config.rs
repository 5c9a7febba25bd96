//! What the integrator configures: the zone (names and TTLs) and the server (sockets, who
//! may ask, where other names go).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;

/// The cluster zone. Records are compiled against it; nothing here changes at run time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ZoneConfig {
    /// The cluster domain without a trailing dot, e.g. `cluster.local`.
    pub domain: String,
    /// TTL of every record in the zone and of negative answers (SOA minimum), seconds.
    /// 30 s by default: kube-dns used 30, CoreDNS's kubernetes plugin uses 5. Answers here
    /// change within a second of the objects, so the TTL only bounds how long a *client*
    /// keeps a stale answer; 30 s keeps resolver caches in pods useful without letting a
    /// moved Service linger for long.
    pub ttl: u32,
    /// Addresses answered for `ns.dns.<domain>` (the name the SOA and NS records give for
    /// the zone's server), usually the DNS Service's cluster IP. Empty: that name has no
    /// address records.
    pub nameserver_ips: Vec<std::net::IpAddr>,
}

impl ZoneConfig {
    pub fn new(domain: impl Into<String>) -> ZoneConfig {
        ZoneConfig {
            domain: domain.into(),
            ..ZoneConfig::default()
        }
    }
}

impl Default for ZoneConfig {
    fn default() -> ZoneConfig {
        ZoneConfig {
            domain: "cluster.local".into(),
            ttl: 30,
            nameserver_ips: Vec::new(),
        }
    }
}

/// Where names outside the zone are sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Upstreams {
    /// The `nameserver` lines of a resolv.conf, read once at start (port 53).
    ResolvConf(PathBuf),
    /// These servers, in order of preference.
    List(Vec<SocketAddr>),
}

impl Default for Upstreams {
    fn default() -> Upstreams {
        Upstreams::ResolvConf(PathBuf::from("/etc/resolv.conf"))
    }
}

#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// UDP and TCP are both bound on each address.
    pub listen: Vec<SocketAddr>,
    /// Clients allowed besides loopback, the listen addresses and the Nodes' InternalIPs:
    /// normally the cluster (pod) CIDRs. Everyone else is REFUSED.
    pub allowed: Vec<IpNet>,
    pub upstreams: Upstreams,
    /// Entries in the cache of forwarded answers (positive and negative). 0 disables it.
    pub cache_size: usize,
    /// Cached answers are kept at most this long whatever their TTL says.
    pub max_cache_ttl: Duration,
    /// How long one upstream gets to answer before the next is tried.
    pub upstream_timeout: Duration,
    /// A TCP connection with no complete query for this long is closed.
    pub tcp_idle_timeout: Duration,
    /// Open TCP connections at most; further ones wait in the kernel's backlog.
    pub max_tcp_connections: usize,
    /// UDP questions waiting on an upstream at most; past that a question that misses the
    /// cache gets SERVFAIL at once (bounds tasks and sockets under a flood of new names).
    pub max_forwards: usize,
}

impl Default for ServerConfig {
    fn default() -> ServerConfig {
        ServerConfig {
            listen: vec![SocketAddr::from(([10, 96, 0, 10], 53))],
            allowed: Vec::new(),
            upstreams: Upstreams::default(),
            cache_size: 10_000,
            max_cache_ttl: Duration::from_secs(3600),
            upstream_timeout: Duration::from_secs(2),
            tcp_idle_timeout: Duration::from_secs(10),
            max_tcp_connections: 256,
            max_forwards: 1024,
        }
    }
}
