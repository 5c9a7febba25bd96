//! The lab's error type: what failed, on which object, and what to do about it.

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid lab {field}: {problem}")]
    Invalid { field: String, problem: String },
    #[error("lab {0:?} already exists (remove it with `weft lab down --name {0}`)")]
    Exists(String),
    #[error("lab {0:?} does not exist (create it with `weft lab up --name {0}`)")]
    Missing(String),
    #[error("{op}: {source}")]
    Kernel {
        op: String,
        #[source]
        source: weft_netlink::Error,
    },
    #[error("{op}: {source}")]
    Io {
        op: String,
        #[source]
        source: std::io::Error,
    },
    #[error("lab state {path}: {problem}")]
    State { path: String, problem: String },
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub fn invalid(field: &str, problem: impl std::fmt::Display) -> Error {
        Error::Invalid {
            field: field.to_string(),
            problem: problem.to_string(),
        }
    }

    pub fn kernel(op: impl Into<String>) -> impl FnOnce(weft_netlink::Error) -> Error {
        let op = op.into();
        move |source| Error::Kernel { op, source }
    }

    pub fn io(op: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
        let op = op.into();
        move |source| Error::Io { op, source }
    }
}
