//! weft-policy: NetworkPolicy and ClusterNetworkPolicy (doc in progress).

pub mod cases;
pub mod cells;
pub mod cluster_policy;
pub mod cnp;
pub mod desired;
pub mod enforcer;
pub mod error;
pub mod matcher;
pub mod model;
pub mod netpol;
pub mod selector;
pub mod table_eval;
pub mod view;

pub use error::{Error, Result};
pub use matcher::{check, Decision, Endpoint, Reason, RuleRef, Verdict};
pub use model::{Direction, Protocol, Tier};
pub use view::Cluster;

#[cfg(test)]
mod matcher_tests;
