//! weft-cni: the CNI 1.1 plugin (bridge + veth) and its IPAM.
pub mod plugin;
