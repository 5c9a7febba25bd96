//! The CNI network config the agent writes for its node: weft's bridge plugin on `cbr0`
//! with weft IPAM over the node's podCIDR. Masquerading is the agent's job (one rule for the
//! whole node, see `masq`), so the plugin's own `ipMasq` stays off.

use ipnet::IpNet;
use serde_json::{json, Value};
use std::path::Path;

pub const NETWORK_NAME: &str = "weft";
pub const BRIDGE: &str = "cbr0";

pub fn render(pod_cidr: IpNet, mtu: u32, ipam_dir: &Path) -> Value {
    json!({
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
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn uses_the_node_subnet() {
        let v = super::render(
            "10.244.2.0/24".parse().unwrap(),
            1450,
            std::path::Path::new("/x"),
        );
        assert_eq!(v["ipam"]["subnet"], "10.244.2.0/24");
        assert_eq!(v["mtu"], 1450);
        assert_eq!(v["bridge"], "cbr0");
    }
}
