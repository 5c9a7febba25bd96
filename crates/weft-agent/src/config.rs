use std::net::IpAddr;
use std::path::PathBuf;

/// How the runtime is set up on one node.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    pub node_name: String,
    /// Per node: the pods' records, resolv.conf and hosts files, container logs.
    pub state_dir: PathBuf,
    /// The weft binary: the CNI plugin, and `weft serve` for containers without a command.
    pub weft_bin: PathBuf,
    /// A network config JSON file (a single plugin, `"type": "weft"`), read at each start.
    pub cni_conf: PathBuf,
    /// CNI_PATH: where the plugin the network config's `type` names is looked up (the
    /// weft binary stands in for `weft` when it is not there), and where that plugin
    /// finds delegated ones (e.g. a `host-local` IPAM).
    pub cni_bin_dir: PathBuf,
    /// Pods' namespaces are `<netns_prefix><namespace>-<name>`, e.g. `weft-lab1-node-1-`.
    pub netns_prefix: String,
    /// The pod's nameserver; None keeps the host's resolv.conf.
    pub cluster_dns: Option<IpAddr>,
    pub cluster_domain: String,
    /// The node's network namespace when the runtime does not itself run in it: the CNI
    /// plugin is entered into it before it execs. None in production.
    pub host_netns: Option<PathBuf>,
}

impl RuntimeConfig {
    /// The lab's defaults: cluster DNS 10.96.0.10, domain `cluster.local`.
    pub fn new(
        node_name: impl Into<String>,
        state_dir: impl Into<PathBuf>,
        weft_bin: impl Into<PathBuf>,
        cni_conf: impl Into<PathBuf>,
    ) -> RuntimeConfig {
        let node_name = node_name.into();
        RuntimeConfig {
            netns_prefix: format!("weft-{node_name}-"),
            node_name,
            state_dir: state_dir.into(),
            weft_bin: weft_bin.into(),
            cni_conf: cni_conf.into(),
            cni_bin_dir: PathBuf::from("/opt/cni/bin"),
            cluster_dns: Some(IpAddr::from([10, 96, 0, 10])),
            cluster_domain: "cluster.local".to_string(),
            host_netns: None,
        }
    }
}
