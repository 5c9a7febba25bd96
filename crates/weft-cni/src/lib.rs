//! weft-cni: the CNI 1.1 plugin (bridge + veth) and its IPAM.
//!
//! A runtime execs the plugin with CNI_* in the environment and the network config on
//! stdin; [`plugin::main_from_env`] is that entry point. The layers below are: `env` and
//! `config` (parse and validate, before any change), `addressing` and `ipam` (who gets which
//! address), `bridge`, `veth` and `sandbox` (the kernel objects), and `result`.
//!
//! With `policySocket` in the network config (the node agent writes it when it enforces
//! NetworkPolicy for pods a kubelet runs), ADD returns only once the agent has committed
//! the new pod's policy with its addresses, so the runtime never starts a process outside
//! it; a refusal, no agent or no answer within `policyTimeoutSeconds` (default 10) fails
//! the ADD and undoes it. `policy_wait` has the wire format and the client.

pub mod addressing;
pub mod bridge;
pub mod config;
pub mod delegate;
pub mod env;
pub mod error;
pub mod ipam;
pub mod masq;
pub mod plugin;
pub mod policy_wait;
pub mod result;
pub mod sandbox;
pub mod version;
pub mod veth;

pub use error::{Error, Result};
