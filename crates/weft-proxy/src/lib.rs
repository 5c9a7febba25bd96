//! weft-proxy: what kube-proxy does, as a pure function from Services and EndpointSlices to
//! one nf_tables table, and a thin applier that sends the kernel only the difference.
//!
//! The table holds services as *data*. A packet's `daddr . l4proto . dport` is looked up
//! in a set per endpoint count; the matching rule DNATs through one map keyed by
//! `daddr . l4proto . dport . numgen random mod K`. Adding a service, or changing one of its
//! endpoints, changes set and map elements only: the chains stay the same whatever the
//! number of services, so a commit neither walks nor re-validates thousands of chains
//! (the cost measured for kube-proxy's chain-per-service shape in BENCHMARKS.md).
//!
//! Layers: [`service`] reads a Service into the ports weft proxies, [`endpoint`] picks the
//! endpoints each port sends to, [`desired`] compiles both into a [`weft_nft::Ruleset`],
//! and [`proxier::Proxier`] applies it in one network namespace.

pub mod affinity;
pub mod conntrack;
pub mod contribution;
pub mod controller;
pub mod desired;
pub mod endpoint;
pub mod error;
pub mod health;
pub mod model;
pub mod proxier;
pub mod service;
pub mod trace;
mod transaction;

pub use desired::{desired, NodeContext, TABLE};
pub use error::{Error, Result};
pub use model::Model;
pub use proxier::Proxier;
