//! This node's Node object: registration, the Ready heartbeat, its podCIDR, and the view
//! of every node that cross-node routing is compiled from.

use super::{AgentConfig, Error, Result};
use k8s_openapi::api::core::v1::{Node, NodeAddress, NodeCondition, NodeStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};
use std::collections::BTreeMap;
use std::net::IpAddr;
use weft_routing::NodeInfo;

pub const VTEP_MAC_ANNOTATION: &str = "weft.dev/vtep-mac";

fn now() -> Time {
    Time(k8s_openapi::jiff::Timestamp::now())
}

/// Creates the Node if it does not exist (a real cluster's kubelet does this), and publishes
/// the VXLAN device's MAC for the other nodes.
pub async fn register(client: &Client, cfg: &AgentConfig, vtep_mac: Option<&str>) -> Result<Node> {
    let api: Api<Node> = Api::all(client.clone());
    let existing = api
        .get_opt(&cfg.node_name)
        .await
        .map_err(Error::api("get own Node"))?;
    if existing.is_none() {
        let mut labels = BTreeMap::new();
        labels.insert("kubernetes.io/hostname".to_string(), cfg.node_name.clone());
        labels.insert("kubernetes.io/os".to_string(), "linux".to_string());
        let node = Node {
            metadata: ObjectMeta {
                name: Some(cfg.node_name.clone()),
                labels: Some(labels),
                ..Default::default()
            },
            ..Default::default()
        };
        match api.create(&PostParams::default(), &node).await {
            Ok(_) => {}
            // Another instance (a restarted agent) won the race: fine.
            Err(kube::Error::Api(s)) if s.code == 409 => {}
            Err(e) => return Err(Error::api("register Node")(e)),
        }
    }
    if let Some(mac) = vtep_mac {
        let patch = serde_json::json!({"metadata": {"annotations": {VTEP_MAC_ANNOTATION: mac}}});
        api.patch(
            &cfg.node_name,
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
        .map_err(Error::api("publish the VTEP MAC"))?;
    }
    heartbeat(client, cfg).await
}

/// Reports addresses and a fresh Ready condition in the Node's status.
pub async fn heartbeat(client: &Client, cfg: &AgentConfig) -> Result<Node> {
    let api: Api<Node> = Api::all(client.clone());
    let t = now();
    let status = NodeStatus {
        addresses: Some(vec![
            NodeAddress {
                type_: "InternalIP".into(),
                address: cfg.node_ip.to_string(),
            },
            NodeAddress {
                type_: "Hostname".into(),
                address: cfg.node_name.clone(),
            },
        ]),
        conditions: Some(vec![NodeCondition {
            type_: "Ready".into(),
            status: "True".into(),
            reason: Some("WeftAgentReady".into()),
            message: Some("weft agent is running".into()),
            last_heartbeat_time: Some(t.clone()),
            last_transition_time: Some(t),
        }]),
        ..Default::default()
    };
    let patch = serde_json::json!({ "status": status });
    api.patch_status(
        &cfg.node_name,
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await
    .map_err(Error::api("update Node status"))
}

/// What routing needs to know of a node; None while it has no InternalIP.
pub fn node_info(n: &Node) -> Option<NodeInfo> {
    let name = n.metadata.name.clone()?;
    let pod_cidr = n
        .spec
        .as_ref()
        .and_then(|s| s.pod_cidr.as_ref())
        .and_then(|c| c.parse().ok());
    let underlay_ip: IpAddr = n
        .status
        .as_ref()?
        .addresses
        .as_ref()?
        .iter()
        .find(|a| a.type_ == "InternalIP")?
        .address
        .parse()
        .ok()?;
    let vtep_mac = n
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(VTEP_MAC_ANNOTATION))
        .and_then(|m| weft_netlink::parse_mac(m).ok());
    Some(NodeInfo {
        name,
        underlay_ip,
        pod_cidr,
        vtep_mac,
    })
}

/// Waits until the control plane's node IPAM gives this node its podCIDR.
pub async fn wait_pod_cidr(client: &Client, cfg: &AgentConfig) -> Result<ipnet::IpNet> {
    let api: Api<Node> = Api::all(client.clone());
    loop {
        let n = api
            .get(&cfg.node_name)
            .await
            .map_err(Error::api("get own Node"))?;
        if let Some(c) = n.spec.as_ref().and_then(|s| s.pod_cidr.as_ref()) {
            if let Ok(net) = c.parse() {
                return Ok(net);
            }
            tracing::warn!(pod_cidr = %c, "unparsable podCIDR on own Node");
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}
