//! The CNI error type. Every failure carries the spec's error code, because runtimes decide
//! what to do (retry, give up, report) from the code, and a message that names the field or
//! the object so a human can fix it.

use serde::Serialize;

/// Error codes from the CNI specification ("Error" section); 100+ are weft's own.
pub mod code {
    pub const INCOMPATIBLE_VERSION: u32 = 1;
    pub const UNSUPPORTED_FIELD: u32 = 2;
    pub const CONTAINER_UNKNOWN: u32 = 3;
    pub const INVALID_ENV: u32 = 4;
    pub const IO: u32 = 5;
    pub const DECODE: u32 = 6;
    pub const INVALID_CONFIG: u32 = 7;
    pub const TRY_AGAIN_LATER: u32 = 11;
    pub const NOT_AVAILABLE: u32 = 50;
    pub const NOT_AVAILABLE_IMPAIRED: u32 = 51;
    /// weft: the address range has no free address.
    pub const RANGE_EXHAUSTED: u32 = 100;
    /// weft: a kernel operation (netlink, sysctl, namespace) failed.
    pub const KERNEL: u32 = 101;
    /// weft: the interface the runtime asked for already exists in the container.
    pub const INTERFACE_EXISTS: u32 = 102;
    /// weft: CHECK found the container's network not as ADD left it.
    pub const CHECK_FAILED: u32 = 103;
    /// weft: a delegated IPAM plugin failed or could not be run.
    pub const DELEGATE: u32 = 104;
    /// weft: an address asked for (CNI_ARGS IP=, runtimeConfig.ips) cannot be given.
    pub const REQUESTED_UNAVAILABLE: u32 = 105;
}

#[derive(Debug, thiserror::Error)]
#[error("{msg}{}", if details.is_empty() { String::new() } else { format!(": {details}") })]
pub struct Error {
    pub code: u32,
    pub msg: String,
    pub details: String,
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub fn new(code: u32, msg: impl Into<String>) -> Error {
        Error {
            code,
            msg: msg.into(),
            details: String::new(),
        }
    }

    pub fn with_details(mut self, details: impl Into<String>) -> Error {
        self.details = details.into();
        self
    }

    pub fn invalid_config(field: &str, problem: impl std::fmt::Display) -> Error {
        Error::new(
            code::INVALID_CONFIG,
            format!("invalid network config: field `{field}`: {problem}"),
        )
    }

    pub fn invalid_env(var: &str, problem: impl std::fmt::Display) -> Error {
        Error::new(
            code::INVALID_ENV,
            format!("invalid environment: {var}: {problem}"),
        )
    }

    pub fn io(what: impl std::fmt::Display, e: std::io::Error) -> Error {
        Error::new(code::IO, format!("{what}: {e}"))
    }

    pub fn kernel(what: impl std::fmt::Display, e: weft_netlink::Error) -> Error {
        Error::new(code::KERNEL, format!("{what}: {e}"))
    }

    /// The JSON the spec wants on stdout.
    pub fn to_json(&self, cni_version: &str) -> serde_json::Value {
        #[derive(Serialize)]
        struct Wire<'a> {
            #[serde(rename = "cniVersion")]
            cni_version: &'a str,
            code: u32,
            msg: &'a str,
            #[serde(skip_serializing_if = "str::is_empty")]
            details: &'a str,
        }
        serde_json::to_value(Wire {
            cni_version,
            code: self.code,
            msg: &self.msg,
            details: &self.details,
        })
        .unwrap_or_default()
    }
}
