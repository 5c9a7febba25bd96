//! `weft control-plane` arguments.

use crate::error::Error;
use clap::Parser;
use ipnet::{Ipv4Net, Ipv6Net};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;

/// `--service-cidr`: an IPv4 range, optionally followed by an IPv6 one for dual-stack
/// Services (`10.96.0.0/12,fd00:10:96::/108`), as kube-apiserver's
/// `--service-cluster-ip-range` takes them. IPv4 comes first: the cluster's DNS address
/// and the `kubernetes` Service are IPv4.
#[derive(Debug, Clone, Copy)]
pub struct ServiceCidrs {
    pub v4: Ipv4Net,
    pub v6: Option<Ipv6Net>,
}

impl FromStr for ServiceCidrs {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let mut parts = s.split(',').map(str::trim);
        let v4 = parts
            .next()
            .unwrap_or("")
            .parse()
            .map_err(|_| format!("{s:?}: the first range must be an IPv4 CIDR"))?;
        let v6 = match parts.next() {
            None => None,
            Some(p) => Some(
                p.parse()
                    .map_err(|_| format!("{s:?}: the second range must be an IPv6 CIDR"))?,
            ),
        };
        if parts.next().is_some() {
            return Err(format!("{s:?}: at most two ranges, one per IP family"));
        }
        Ok(ServiceCidrs { v4, v6 })
    }
}

impl std::fmt::Display for ServiceCidrs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.v6 {
            Some(v6) => write!(f, "{},{v6}", self.v4),
            None => write!(f, "{}", self.v4),
        }
    }
}

#[derive(Debug, Clone, Parser)]
#[command(
    name = "weft control-plane",
    about = "Kubernetes-compatible API server with an embedded store and the controllers networking needs"
)]
pub struct Config {
    /// Directory for the store log, certificates and token (created if missing).
    #[arg(long, default_value = "/var/lib/weft/control-plane")]
    pub data_dir: PathBuf,
    /// Address to serve HTTPS on (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:6443")]
    pub listen: SocketAddr,
    /// Service ClusterIP range: IPv4, or IPv4,IPv6 for dual-stack Services.
    #[arg(long, default_value = "10.96.0.0/12")]
    pub service_cidr: ServiceCidrs,
    /// Pod network; each node gets a slice of it as spec.podCIDR.
    #[arg(long, default_value = "10.244.0.0/16")]
    pub cluster_cidr: Ipv4Net,
    /// Prefix length of each node's pod CIDR.
    #[arg(long, default_value_t = 24)]
    pub node_cidr_size: u8,
    /// NodePort range, inclusive.
    #[arg(long, default_value = "30000-32767")]
    pub service_node_port_range: String,
    /// Addresses for LoadBalancer Services (status.loadBalancer.ingress); none if unset.
    #[arg(long)]
    pub load_balancer_cidr: Option<Ipv4Net>,
    /// Where to write a kubeconfig for clients (default: DATA_DIR/kubeconfig).
    #[arg(long)]
    pub kubeconfig_out: Option<PathBuf>,
    /// Watch events kept for resourceVersion resumes; older resumes get 410 Gone.
    #[arg(long, default_value_t = 20_000)]
    pub watch_history: usize,
    /// Largest request body accepted; bigger ones get 413 (kube-apiserver's limit is 3 MiB).
    #[arg(long, default_value_t = 3 * 1024 * 1024)]
    pub max_request_body_bytes: usize,
    /// Concurrent watches one client (token and source IP address) may hold; more get 429.
    #[arg(long, default_value_t = 1000)]
    pub max_watches_per_client: usize,
    /// Concurrent non-watch requests; more get 429 (kube-apiserver's --max-requests-inflight).
    #[arg(long, default_value_t = 400)]
    pub max_requests_inflight: usize,
    /// Milliseconds a new connection has to finish its TLS handshake, and a client to send a
    /// request's complete headers; slower connections are closed.
    #[arg(long, default_value_t = 10_000)]
    pub header_read_timeout_ms: u64,
    /// Also serve on an inherited TCP socket that is already listening (its descriptor
    /// number; repeatable). `weft lab` hands the control plane a socket it bound on the
    /// machine's loopback, so kubectl there reaches a server inside the lab's namespace
    /// with no relay in between.
    #[arg(long = "listen-fd", value_name = "FD")]
    pub listen_fds: Vec<i32>,
}

impl Config {
    pub fn from_args(args: &[String]) -> Result<Config, clap::Error> {
        let mut argv = vec!["weft control-plane".to_string()];
        argv.extend(args.iter().cloned());
        Config::try_parse_from(argv)
    }

    pub fn node_port_range(&self) -> Result<(u16, u16), Error> {
        let bad = || {
            Error::Config(format!(
                "--service-node-port-range {:?}: expected LOW-HIGH, e.g. 30000-32767",
                self.service_node_port_range
            ))
        };
        let (lo, hi) = self
            .service_node_port_range
            .split_once('-')
            .ok_or_else(bad)?;
        let lo: u16 = lo.trim().parse().map_err(|_| bad())?;
        let hi: u16 = hi.trim().parse().map_err(|_| bad())?;
        if lo == 0 || lo > hi {
            return Err(bad());
        }
        Ok((lo, hi))
    }

    pub fn check(&self) -> Result<(), Error> {
        if self.node_cidr_size < self.cluster_cidr.prefix_len() || self.node_cidr_size > 30 {
            return Err(Error::Config(format!(
                "--node-cidr-size {} must be between the cluster CIDR's prefix /{} and /30",
                self.node_cidr_size,
                self.cluster_cidr.prefix_len()
            )));
        }
        if self.service_cidr.v4.prefix_len() > 28 {
            return Err(Error::Config(format!(
                "--service-cidr {} is too small: need at least a /28",
                self.service_cidr.v4
            )));
        }
        if self.service_cidr.v6.is_some_and(|c| c.prefix_len() > 124) {
            return Err(Error::Config(format!(
                "--service-cidr {}: the IPv6 range is too small: need at least a /124",
                self.service_cidr
            )));
        }
        self.node_port_range()?;
        for (flag, v) in [
            (
                "--max-request-body-bytes",
                self.max_request_body_bytes as u64,
            ),
            (
                "--max-watches-per-client",
                self.max_watches_per_client as u64,
            ),
            ("--max-requests-inflight", self.max_requests_inflight as u64),
            ("--header-read-timeout-ms", self.header_read_timeout_ms),
        ] {
            if v == 0 {
                return Err(Error::Config(format!("{flag} must be at least 1")));
            }
        }
        Ok(())
    }
}
