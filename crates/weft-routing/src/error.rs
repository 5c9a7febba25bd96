//! One error type for the crate. Every message names the node and the kernel object it was
//! about ("route 10.244.2.0/24 via 192.168.1.3 for node node-2: ..."), so an operator
//! reading the agent's log knows which Node object to look at.

use std::fmt;

pub type Result<T> = std::result::Result<T, Error>;

/// A node's entry that was not installed because the input asked for something that cannot
/// or must not be done (two nodes claiming one podCIDR, a host-gw gateway off the segment).
/// Refusals are about bad input, not failures of the kernel: the rest of the cluster is
/// still routed, and the refusal is reported in `Changes::refused`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{object} for node {node}: {reason}")]
pub struct Refusal {
    pub node: String,
    /// The kernel object that would have been made ("route 10.244.2.0/24 via 192.168.1.3").
    pub object: String,
    pub reason: String,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("unknown routing backend {0:?}: expected \"host-gw\" or \"vxlan\"")]
    UnknownBackend(String),

    /// This node's own configuration cannot work (no podCIDR for vxlan, the underlay IP is
    /// not on the underlay interface, ...).
    #[error("node {node}: {reason}")]
    Config { node: String, reason: String },

    /// The kernel refused a change to one node's entry.
    #[error("{object} for node {node}: {source}")]
    Node {
        node: String,
        object: String,
        #[source]
        source: weft_netlink::Error,
    },

    /// Something not made by weft stands where a node's entry must go.
    #[error("{object} for node {node}: {reason}")]
    Blocked {
        node: String,
        object: String,
        reason: String,
    },

    /// The kernel refused something that belongs to no single node (the vxlan device,
    /// reading the routing table).
    #[error("{what}: {source}")]
    Netlink {
        what: String,
        #[source]
        source: weft_netlink::Error,
    },

    /// Some entries could not be changed; the others were. `applied` counts what was done.
    #[error("{}", Failures(.failures))]
    Partial {
        applied: Box<crate::Changes>,
        failures: Vec<Error>,
    },
}

impl Error {
    pub(crate) fn netlink(what: impl Into<String>, source: weft_netlink::Error) -> Error {
        Error::Netlink {
            what: what.into(),
            source,
        }
    }

    pub(crate) fn config(node: &str, reason: impl Into<String>) -> Error {
        Error::Config {
            node: node.to_string(),
            reason: reason.into(),
        }
    }
}

struct Failures<'a>(&'a [Error]);

impl fmt::Display for Failures<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} routing change(s) failed", self.0.len())?;
        for e in self.0 {
            write!(f, "; {e}")?;
        }
        Ok(())
    }
}
