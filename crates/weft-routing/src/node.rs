//! A node as routing sees it, and how the agent makes one from the Node object's fields.

use std::net::IpAddr;

use ipnet::IpNet;

use crate::error::Refusal;

/// The annotation in which each agent publishes the MAC of its own VXLAN device.
pub const VTEP_MAC_ANNOTATION: &str = "weft.dev/vtep-mac";

/// What routing needs to know about one node (the agent fills it from the Node object:
/// `status.addresses` InternalIP, `spec.podCIDR`, annotation `weft.dev/vtep-mac`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeInfo {
    pub name: String,
    pub underlay_ip: IpAddr,
    /// None until the node has been given its lease.
    pub pod_cidr: Option<IpNet>,
    /// The MAC of the node's own VXLAN device, once its agent has published it.
    pub vtep_mac: Option<[u8; 6]>,
}

impl NodeInfo {
    /// From the Node object's text fields: the InternalIP address, `spec.podCIDR` and the
    /// `weft.dev/vtep-mac` annotation (empty strings count as absent, as the API server
    /// sends them). A field that does not parse makes a refusal naming the field, so the
    /// caller can report the node and route the rest of the cluster.
    pub fn from_fields(
        name: &str,
        internal_ip: Option<&str>,
        pod_cidr: Option<&str>,
        vtep_mac: Option<&str>,
    ) -> Result<NodeInfo, Refusal> {
        let refuse = |field: &str, value: &str, expected: &str| Refusal {
            node: name.to_string(),
            object: "routes".to_string(),
            reason: format!("{field} {value:?} is not {expected}"),
        };
        let ip = present(internal_ip).ok_or_else(|| Refusal {
            node: name.to_string(),
            object: "routes".to_string(),
            reason: "no InternalIP in status.addresses yet".to_string(),
        })?;
        let underlay_ip = ip
            .parse()
            .map_err(|_| refuse("InternalIP", ip, "an IP address"))?;
        let pod_cidr = match present(pod_cidr) {
            Some(c) => Some(
                c.parse::<IpNet>()
                    .map_err(|_| refuse("spec.podCIDR", c, "a CIDR like 10.244.1.0/24"))?,
            ),
            None => None,
        };
        let vtep_mac = match present(vtep_mac) {
            Some(m) => Some(weft_netlink::parse_mac(m).map_err(|_| {
                refuse(
                    &format!("annotation {VTEP_MAC_ANNOTATION}"),
                    m,
                    "a MAC address like 0a:58:0a:f4:01:00",
                )
            })?),
            None => None,
        };
        Ok(NodeInfo {
            name: name.to_string(),
            underlay_ip,
            pod_cidr,
            vtep_mac,
        })
    }
}

/// The API server sends absent strings as empty ones.
fn present(v: Option<&str>) -> Option<&str> {
    v.map(str::trim).filter(|v| !v.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_fields_parses_and_names_bad_fields() {
        let n = NodeInfo::from_fields(
            "node-2",
            Some("192.168.1.3"),
            Some("10.244.2.0/24"),
            Some("0A:58:0a:f4:02:00"),
        )
        .unwrap();
        assert_eq!(n.underlay_ip, "192.168.1.3".parse::<IpAddr>().unwrap());
        assert_eq!(n.pod_cidr, Some("10.244.2.0/24".parse().unwrap()));
        assert_eq!(n.vtep_mac, Some([0x0a, 0x58, 0x0a, 0xf4, 0x02, 0x00]));

        let waiting = NodeInfo::from_fields("node-3", Some("192.168.1.4"), Some(""), None).unwrap();
        assert_eq!((waiting.pod_cidr, waiting.vtep_mac), (None, None));

        let e = NodeInfo::from_fields("node-4", None, None, None).unwrap_err();
        assert_eq!(
            e.to_string(),
            "routes for node node-4: no InternalIP in status.addresses yet"
        );
        let e = NodeInfo::from_fields("node-5", Some("192.168.1.6"), Some("10.244.5.0"), None)
            .unwrap_err();
        assert!(e.to_string().contains("spec.podCIDR \"10.244.5.0\""), "{e}");
        let e = NodeInfo::from_fields("node-6", Some("192.168.1.7"), None, Some("zz")).unwrap_err();
        assert!(
            e.to_string()
                .contains("annotation weft.dev/vtep-mac \"zz\""),
            "{e}"
        );
    }
}
