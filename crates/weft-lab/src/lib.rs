//! weft-lab: a whole multi-node cluster inside network namespaces on one machine.
//!
//! A lab named N is a root namespace `weft-N` holding the underlay bridge (the "LAN",
//! 192.168.1.0/24 by default), one namespace per node (`weft-N-node-K`, `eth0` at
//! 192.168.1.(K+1)) and an `external` host standing for a client outside the cluster. Pods
//! live in namespaces named after their node (`weft-N-node-K.<ns>-<pod>`). Nothing is added
//! to the machine's own network.

pub mod access;
pub mod error;
pub mod lab;
pub mod supervise;
pub mod topology;
pub mod world;

pub use error::{Error, Result};
pub use lab::{down, lab_dir, list, load, state_root, up, LabState};
pub use topology::{LabSpec, Topology};
