//! The one error type of weft-dns.

use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("zone {domain:?} is not a valid DNS name: {why}")]
    Zone { domain: String, why: String },
    #[error("bind {proto} {addr}: {source} (is another DNS server already listening there, or is the address missing from the interface?)")]
    Bind {
        proto: &'static str,
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("server config: {0}")]
    Config(String),
    #[error("read resolv.conf {path}: {source}")]
    ResolvConf {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{what} {server}: {source}")]
    Io {
        what: &'static str,
        server: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("no answer from {server} within {timeout_ms} ms (is a DNS server listening there, and is this client allowed?)")]
    Timeout {
        server: SocketAddr,
        timeout_ms: u128,
    },
    #[error("query {name:?}: {why}")]
    BadQuery { name: String, why: String },
    #[error("reply from {server} is not a valid DNS message: {why}")]
    BadReply { server: SocketAddr, why: String },
}

pub type Result<T> = std::result::Result<T, Error>;
