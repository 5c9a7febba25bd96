//! The CNI network config the agent writes for its node: weft's bridge plugin on `cbr0`
//! with weft IPAM over the node's podCIDR. Masquerading is the agent's job (one rule for the
//! whole node, see `masq`), so the plugin's own `ipMasq` stays off. When the agent serves
//! the policy socket (a kubelet's node enforcing NetworkPolicy), the config names it as
//! `policySocket`, so each ADD returns only once the new pod's policy is in the kernel;
//! without it (the agent runs the pods and orders that itself, or policy is off) there is
//! nothing to wait for.

use ipnet::IpNet;
use serde_json::{json, Value};
use std::path::Path;

pub const NETWORK_NAME: &str = "weft";
pub const BRIDGE: &str = "cbr0";

pub fn render(pod_cidr: IpNet, mtu: u32, ipam_dir: &Path, policy_socket: Option<&Path>) -> Value {
    let mut conf = json!({
        "cniVersion": "1.1.0",
        "name": NETWORK_NAME,
        "type": "weft",
        "bridge": BRIDGE,
        "isGateway": true,
        "isDefaultGateway": true,
        "hairpinMode": true,
        "ipMasq": false,
        "mtu": mtu,
        "ipam": {
            "type": "weft",
            "subnet": pod_cidr.trunc().to_string(),
            "dataDir": ipam_dir,
        },
    });
    if let Some(socket) = policy_socket {
        conf["policySocket"] = json!(socket);
    }
    conf
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    #[test]
    fn uses_the_node_subnet() {
        let v = super::render(
            "10.244.2.0/24".parse().unwrap(),
            1450,
            Path::new("/x"),
            None,
        );
        assert_eq!(v["ipam"]["subnet"], "10.244.2.0/24");
        assert_eq!(v["mtu"], 1450);
        assert_eq!(v["bridge"], "cbr0");
        assert!(v.get("policySocket").is_none());
    }

    /// What the agent writes is what the plugin reads: the same config parses with the
    /// socket, and ADD will wait on it with the default timeout.
    #[test]
    fn names_the_policy_socket_the_plugin_waits_on() {
        let sock = Path::new("/var/lib/weft/agent/policy.sock");
        let v = super::render(
            "10.244.2.0/24".parse().unwrap(),
            1450,
            Path::new("/x"),
            Some(sock),
        );
        let conf = weft_cni::config::NetConf::parse(v.to_string().as_bytes()).unwrap();
        let wait = conf.policy.expect("a policy wait");
        assert_eq!(wait.socket, sock);
        assert_eq!(wait.timeout, weft_cni::policy_wait::DEFAULT_TIMEOUT);
    }
}
