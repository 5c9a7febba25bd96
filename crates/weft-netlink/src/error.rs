//! One error type for the crate. Every variant carries the operation and the object it was
//! about, so a message read in a CNI result or a log tells the user what failed and where.

use std::io;
use std::time::Duration;

pub type Result<T> = std::result::Result<T, Error>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The kernel refused a request (a NLMSG_ERROR with a negative errno). `detail` is the
    /// extended-ack text the kernel attached, when it did (e.g. "Nexthop has invalid gateway").
    #[error("{op}: {source}{}", detail.as_deref().map(|d| format!(" (kernel: {d})")).unwrap_or_default())]
    Kernel {
        op: String,
        #[source]
        source: io::Error,
        detail: Option<String>,
    },

    /// A system call outside netlink failed (open, mount, setns, read of /proc/sys, ...).
    #[error("{op}: {source}")]
    Io {
        op: String,
        #[source]
        source: io::Error,
    },

    /// The kernel sent something this crate could not decode.
    #[error("{op}: could not decode the kernel's answer: {reason}")]
    Decode { op: String, reason: String },

    /// The caller passed something the kernel would reject or misread; caught before sending.
    #[error("invalid {what}: {reason}")]
    Invalid { what: String, reason: String },

    /// A named object the operation needs does not exist.
    #[error("{op}: {what} not found")]
    NotFound { op: String, what: String },

    /// An object the operation would create already exists.
    #[error("{op}: {what} already exists")]
    Exists { op: String, what: String },

    #[error("{op}: timed out after {timeout:?}")]
    Timeout { op: String, timeout: Duration },
}

impl Error {
    /// The object is absent: ENOENT, ENODEV (no such link), ESRCH (no such route),
    /// EADDRNOTAVAIL (no such address), or a lookup by name that found nothing.
    pub fn is_not_found(&self) -> bool {
        match self {
            Error::NotFound { .. } => true,
            Error::Kernel { source, .. } | Error::Io { source, .. } => matches!(
                source.raw_os_error(),
                Some(libc_errno::ENOENT)
                    | Some(libc_errno::ENODEV)
                    | Some(libc_errno::ESRCH)
                    | Some(libc_errno::EADDRNOTAVAIL)
            ),
            _ => false,
        }
    }

    /// The object is already there (EEXIST, or a name taken that we checked ourselves).
    pub fn is_exists(&self) -> bool {
        match self {
            Error::Exists { .. } => true,
            Error::Kernel { source, .. } | Error::Io { source, .. } => {
                source.raw_os_error() == Some(libc_errno::EEXIST)
            }
            _ => false,
        }
    }

    /// The raw errno when the error came from the kernel or a system call.
    pub fn errno(&self) -> Option<i32> {
        match self {
            Error::Kernel { source, .. } | Error::Io { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }

    /// Replace the operation text (used to name a link once we know the index failed).
    pub(crate) fn with_op(mut self, new_op: String) -> Error {
        match &mut self {
            Error::Kernel { op, .. }
            | Error::Io { op, .. }
            | Error::Decode { op, .. }
            | Error::NotFound { op, .. }
            | Error::Exists { op, .. }
            | Error::Timeout { op, .. } => *op = new_op,
            Error::Invalid { .. } => {}
        }
        self
    }

    pub(crate) fn io(op: impl Into<String>, source: io::Error) -> Error {
        Error::Io {
            op: op.into(),
            source,
        }
    }

    pub(crate) fn nix(op: impl Into<String>, errno: nix::errno::Errno) -> Error {
        Error::Io {
            op: op.into(),
            source: io::Error::from_raw_os_error(errno as i32),
        }
    }

    pub(crate) fn invalid(what: impl Into<String>, reason: impl Into<String>) -> Error {
        Error::Invalid {
            what: what.into(),
            reason: reason.into(),
        }
    }
}

/// errno values we classify; spelled out via nix so there is no direct libc dependency.
mod libc_errno {
    use nix::errno::Errno;
    pub const ENOENT: i32 = Errno::ENOENT as i32;
    pub const ENODEV: i32 = Errno::ENODEV as i32;
    pub const ESRCH: i32 = Errno::ESRCH as i32;
    pub const EADDRNOTAVAIL: i32 = Errno::EADDRNOTAVAIL as i32;
    pub const EEXIST: i32 = Errno::EEXIST as i32;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_error_message_names_op_and_errno() {
        let e = Error::Kernel {
            op: "create veth veth1234 (peer eth0)".into(),
            source: io::Error::from_raw_os_error(17),
            detail: None,
        };
        assert_eq!(
            e.to_string(),
            "create veth veth1234 (peer eth0): File exists (os error 17)"
        );
        assert!(e.is_exists());
        assert!(!e.is_not_found());
    }

    #[test]
    fn kernel_detail_is_appended() {
        let e = Error::Kernel {
            op: "add route 10.1.0.0/24".into(),
            source: io::Error::from_raw_os_error(19),
            detail: Some("Nexthop device is not up".into()),
        };
        assert!(e
            .to_string()
            .ends_with("(kernel: Nexthop device is not up)"));
        assert!(e.is_not_found());
    }
}
