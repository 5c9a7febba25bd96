use std::net::SocketAddr;

/// What went wrong in weft's Ingress, with what to fix.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{what}: {problem}")]
    Invalid { what: String, problem: String },
    #[error("certificate from {source_name}: {problem}")]
    Certificate {
        source_name: String,
        problem: String,
    },
    #[error("listen on {addr}: {source} (is another server on this port?)")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("ingress worker {index}: {source}")]
    Worker {
        index: usize,
        #[source]
        source: std::io::Error,
    },
    #[error("read {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {problem}")]
    Case { path: String, problem: String },
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub fn invalid(what: impl Into<String>, problem: impl Into<String>) -> Error {
        Error::Invalid {
            what: what.into(),
            problem: problem.into(),
        }
    }
}
