//! One error type for the crate. Messages name the pod and the step, so that an error shown
//! next to a pod tells the user what to fix.

use std::io;

pub type Result<T> = std::result::Result<T, Error>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The pod object cannot be run as written (a missing uid, an unknown named port...).
    #[error("pod {pod}: {field}: {reason}")]
    InvalidPod {
        pod: String,
        field: String,
        reason: String,
    },

    /// The runtime's own configuration is unusable.
    #[error("runtime configuration: {0}")]
    Config(String),

    /// A system call or file operation failed.
    #[error("{op}: {source}")]
    Io {
        op: String,
        #[source]
        source: io::Error,
    },

    #[error("{op}: {source}")]
    Netlink {
        op: String,
        #[source]
        source: weft_netlink::Error,
    },

    /// The CNI plugin failed or answered something that is not a CNI result.
    #[error("CNI {command} for pod {pod}: {reason}")]
    Cni {
        command: String,
        pod: String,
        reason: String,
        /// The spec's error code from the plugin's answer, when it gave one.
        code: Option<u64>,
    },

    /// A record under the state directory cannot be read back.
    #[error("pod record {path}: {reason}")]
    Record { path: String, reason: String },

    /// The caller's `before_containers` step refused the pod.
    #[error("pod {pod}: before starting its containers: {reason}")]
    Hook { pod: String, reason: String },

    #[error("pod {0} is not known to this runtime")]
    UnknownPod(String),

    /// Several steps failed: teardown and cleanup try every step and keep every error.
    #[error("{} steps failed: {}", .0.len(), .0.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("; "))]
    Several(Vec<Error>),
}

impl Error {
    pub fn io(op: impl Into<String>, source: io::Error) -> Error {
        Error::Io {
            op: op.into(),
            source,
        }
    }

    pub fn nix(op: impl Into<String>, errno: nix::errno::Errno) -> Error {
        Error::Io {
            op: op.into(),
            source: io::Error::from_raw_os_error(errno as i32),
        }
    }

    pub fn netlink(op: impl Into<String>, source: weft_netlink::Error) -> Error {
        Error::Netlink {
            op: op.into(),
            source,
        }
    }

    /// Ok when nothing failed, the error itself when one did, all of them when several did.
    pub fn all(mut errors: Vec<Error>) -> Result<()> {
        match errors.len() {
            0 => Ok(()),
            1 => Err(errors.remove(0)),
            _ => Err(Error::Several(errors)),
        }
    }

    /// The plugin answered "try again later" (CNI code 11), e.g. the node has no pod
    /// subnet yet: retry the start later rather than report the pod as failed.
    pub fn is_try_again(&self) -> bool {
        matches!(self, Error::Cni { code: Some(11), .. })
    }

    pub fn invalid_pod(
        pod: impl Into<String>,
        field: impl Into<String>,
        reason: impl Into<String>,
    ) -> Error {
        Error::InvalidPod {
            pod: pod.into(),
            field: field.into(),
            reason: reason.into(),
        }
    }
}
