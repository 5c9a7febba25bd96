//! weft-policy: Kubernetes NetworkPolicy (networking.k8s.io/v1) and ClusterNetworkPolicy
//! (policy.networking.k8s.io v1beta1 / v1alpha2) for weft, as pure functions from objects
//! to decisions and to an nf_tables table, plus a thin applier.
//!
//! Layers:
//! - [`view::Cluster`] is what policy reads: pods (labels, addresses, node, named ports),
//!   namespaces, nodes, and the policies compiled by [`netpol`] and [`cluster_policy`]
//!   into the normalised [`model`] (API defaults applied; invalid objects refused with an
//!   [`Error`] naming the field and value).
//! - [`matcher`] is the one implementation of decisions: [`check`] says whether a
//!   connection is allowed, at the client's egress and the server's ingress, and which
//!   rules decided (policy, tier, rule index and name).
//! - [`desired`] compiles the view into this node's `inet weft-policy` table. Policy is
//!   data: a constant set of chains, and maps keyed by [`classes`]: a local pod's subject
//!   class (the policies that apply to it), any address's peer class (what every rule's
//!   peers say of it), and per class pair the row of denials over protocols and ports
//!   that the matcher gives ([`cells`] are the regions in which its answers are
//!   constant). A new pod, a label change or a policy edit changes elements only.
//!   [`desired::Incremental`] gives the same table and, when only policies changed,
//!   recomputes only the subject classes they touch and returns a [`delta::Delta`] of
//!   the elements that changed.
//! - [`enforcer::Enforcer`] sends the kernel the difference from what it last committed
//!   (or only a delta's elements), in one transaction.
//! - [`counters`] reads the kernel's per-element counters of the row maps and isolated
//!   sets and counts denials per policy and rule, always; with a flag, [`nflog`] reads
//!   the packets the table logs and [`denials`] names, through the matcher, the policy
//!   and rule that dropped each, for the log.
//! - [`cases`] reads the truth-table suite (`tests/cases`), which the tests run through
//!   the matcher and through the compiled tables ([`table_eval`]), and which a lab can run
//!   as real probes.
//!
//! Semantics worth knowing (the crate README has the full list):
//! - an ipBlock (and a ClusterNetworkPolicy `networks` peer) matches pod addresses too:
//!   the packet carries only an address, and most implementations do the same;
//! - traffic between a pod and its own node, and a pod to itself, is always allowed;
//! - replies of allowed connections pass by conntrack; a policy change does not cut
//!   established connections;
//! - `domainNames` peers (Accept rules only) match the addresses weft's DNS answered the
//!   pod for a matching name, until the answer's TTL ([`fqdn`]);
//!
//! For the agent:
//! ```no_run
//! use weft_policy::{desired, enforcer::Enforcer, Cluster, NodeContext};
//! # fn events() -> Vec<k8s_openapi::api::core::v1::Pod> { vec![] }
//! let mut cluster = Cluster::default();
//! for pod in events() {
//!     cluster.apply_pod(&pod); // and apply_namespace, apply_node, apply_network_policy,
//!                              // apply_cluster_network_policy, delete_* on deletes
//! }
//! let ctx = NodeContext { node_name: "node-1".into(), log_group: None };
//! let mut enforcer = Enforcer::open().unwrap();
//! enforcer.sync(&desired(&cluster, &ctx)).unwrap(); // after each batch of events
//! ```

mod cache;
pub mod cases;
pub mod cells;
pub mod classes;
pub mod cluster_policy;
pub mod cnp;
mod compile;
pub mod counters;
pub mod decision;
pub mod delta;
pub mod denials;
pub mod desired;
pub mod endpoint;
pub mod enforcer;
pub mod error;
pub mod fqdn;
mod incremental;
pub mod matcher;
pub mod model;
pub mod netpol;
pub mod nflog;
mod rows;
pub mod selector;
pub mod table_eval;
pub mod view;

pub use desired::{desired, NodeContext, TABLE};
pub use enforcer::Enforcer;
pub use error::{Error, Result};
pub use matcher::{check, parse_port, Decision, Endpoint, Reason, RuleRef, Verdict};
pub use model::{Direction, Protocol, Tier};
pub use view::Cluster;

#[cfg(test)]
mod matcher_tests;
