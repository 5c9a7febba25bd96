//! The cluster as policy sees it: pods (labels, addresses, node, named ports), namespaces
//! (labels), nodes (labels, addresses), and the compiled policies. The agent feeds it
//! watch events; the matcher and the nft compiler read it.

use std::collections::BTreeMap;
use std::net::IpAddr;

use k8s_openapi::api::core::v1 as core;
use k8s_openapi::api::networking::v1::NetworkPolicy;

use crate::cnp::ClusterNetworkPolicy;
use crate::error::Result;
use crate::model::{Policy, PolicyId, Protocol};
use crate::selector::Labels;

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ContainerPort {
    pub name: String,
    pub port: u16,
    pub protocol: Protocol,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pod {
    pub namespace: String,
    pub name: String,
    pub labels: Labels,
    pub ips: Vec<IpAddr>,
    pub node: Option<String>,
    /// Host-network pods are their node as far as policy goes: never subjects or pod peers.
    pub host_network: bool,
    /// Named container ports only (the others cannot be referred to).
    pub ports: Vec<ContainerPort>,
}

impl Pod {
    /// A pod from its API object; `None` for pods that hold no address worth a rule
    /// (finished pods, whose address may already belong to a new pod).
    pub fn from_api(p: &core::Pod) -> Option<Pod> {
        let meta = &p.metadata;
        let status = p.status.as_ref();
        if matches!(
            status.and_then(|s| s.phase.as_deref()),
            Some("Succeeded" | "Failed")
        ) {
            return None;
        }
        let mut ips: Vec<IpAddr> = status
            .and_then(|s| s.pod_ips.as_ref())
            .into_iter()
            .flatten()
            .filter_map(|a| a.ip.parse().ok())
            .collect();
        if ips.is_empty() {
            ips.extend(
                status
                    .and_then(|s| s.pod_ip.as_deref())
                    .and_then(|a| a.parse::<IpAddr>().ok()),
            );
        }
        let spec = p.spec.as_ref();
        let ports = spec
            .into_iter()
            .flat_map(|s| s.containers.iter())
            .flat_map(|c| c.ports.iter().flatten())
            .filter_map(|cp| {
                Some(ContainerPort {
                    name: cp.name.clone()?,
                    port: u16::try_from(cp.container_port).ok()?,
                    protocol: Protocol::parse(cp.protocol.as_deref().unwrap_or("TCP"))?,
                })
            })
            .collect();
        Some(Pod {
            namespace: meta.namespace.clone().unwrap_or_else(|| "default".into()),
            name: meta.name.clone().unwrap_or_default(),
            labels: meta.labels.clone().unwrap_or_default(),
            ips,
            node: spec.and_then(|s| s.node_name.clone()),
            host_network: spec.and_then(|s| s.host_network).unwrap_or(false),
            ports,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Namespace {
    pub name: String,
    pub labels: Labels,
}

impl Namespace {
    pub fn from_api(n: &core::Namespace) -> Namespace {
        let name = n.metadata.name.clone().unwrap_or_default();
        let mut labels = n.metadata.labels.clone().unwrap_or_default();
        // The API server sets this label on every namespace; objects built by hand (tests,
        // the lab) may lack it, and policies select namespaces by it.
        labels
            .entry("kubernetes.io/metadata.name".into())
            .or_insert_with(|| name.clone());
        Namespace { name, labels }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub name: String,
    pub labels: Labels,
    pub ips: Vec<IpAddr>,
}

impl Node {
    /// A node's addresses are its InternalIP and ExternalIP addresses and the pod
    /// gateway on its bridge, the first address of each pod CIDR (weft's CNI puts it on
    /// `cbr0`): a node talking to its own pods uses that one as source, and pods reach the
    /// node there, so policy must know it as the node's.
    pub fn from_api(n: &core::Node) -> Node {
        let mut ips: Vec<IpAddr> = n
            .status
            .as_ref()
            .and_then(|s| s.addresses.as_ref())
            .into_iter()
            .flatten()
            .filter(|a| a.type_ == "InternalIP" || a.type_ == "ExternalIP")
            .filter_map(|a| a.address.parse().ok())
            .collect();
        let spec = n.spec.as_ref();
        let cidrs = spec
            .and_then(|s| s.pod_cidrs.clone())
            .filter(|c| !c.is_empty())
            .or_else(|| spec.and_then(|s| s.pod_cidr.clone()).map(|c| vec![c]))
            .unwrap_or_default();
        for c in cidrs {
            if let Some(gw) = c.parse::<ipnet::IpNet>().ok().and_then(first_address) {
                if !ips.contains(&gw) {
                    ips.push(gw);
                }
            }
        }
        Node {
            name: n.metadata.name.clone().unwrap_or_default(),
            labels: n.metadata.labels.clone().unwrap_or_default(),
            ips,
        }
    }
}

/// The address after a network's own (`10.244.1.1` of `10.244.1.0/24`), if the network
/// has one.
fn first_address(net: ipnet::IpNet) -> Option<IpAddr> {
    match net {
        ipnet::IpNet::V4(n) if n.prefix_len() < 32 => {
            Some(IpAddr::V4((u32::from(n.network()) + 1).into()))
        }
        ipnet::IpNet::V6(n) if n.prefix_len() < 128 => {
            Some(IpAddr::V6((u128::from(n.network()) + 1).into()))
        }
        _ => None,
    }
}

/// Who holds an address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Owner {
    Pod(String, String),
    Node(String),
}

/// Everything policy decisions read. Mutated by watch events, read by
/// [`crate::matcher`] and [`crate::desired`].
#[derive(Debug, Clone, Default)]
pub struct Cluster {
    pub namespaces: BTreeMap<String, Namespace>,
    pub pods: BTreeMap<(String, String), Pod>,
    pub nodes: BTreeMap<String, Node>,
    pub policies: BTreeMap<PolicyId, Policy>,
}

impl Cluster {
    pub fn upsert_pod(&mut self, pod: Pod) {
        self.pods
            .insert((pod.namespace.clone(), pod.name.clone()), pod);
    }

    /// A watch event for a pod: finished pods are removed.
    pub fn apply_pod(&mut self, p: &core::Pod) {
        match Pod::from_api(p) {
            Some(pod) => self.upsert_pod(pod),
            None => self.delete_pod(
                p.metadata.namespace.as_deref().unwrap_or("default"),
                p.metadata.name.as_deref().unwrap_or_default(),
            ),
        }
    }

    pub fn delete_pod(&mut self, namespace: &str, name: &str) {
        self.pods.remove(&(namespace.to_owned(), name.to_owned()));
    }

    pub fn upsert_namespace(&mut self, ns: Namespace) {
        self.namespaces.insert(ns.name.clone(), ns);
    }

    pub fn apply_namespace(&mut self, n: &core::Namespace) {
        self.upsert_namespace(Namespace::from_api(n));
    }

    pub fn delete_namespace(&mut self, name: &str) {
        self.namespaces.remove(name);
    }

    pub fn upsert_node(&mut self, node: Node) {
        self.nodes.insert(node.name.clone(), node);
    }

    pub fn apply_node(&mut self, n: &core::Node) {
        self.upsert_node(Node::from_api(n));
    }

    pub fn delete_node(&mut self, name: &str) {
        self.nodes.remove(name);
    }

    pub fn upsert_policy(&mut self, p: Policy) {
        self.policies.insert(p.id.clone(), p);
    }

    /// Compiles and stores a NetworkPolicy. An invalid one is refused with an error naming
    /// the field, and the previous version (if any) is removed: weft does not keep
    /// enforcing a policy the user has since replaced.
    pub fn apply_network_policy(&mut self, np: &NetworkPolicy) -> Result<()> {
        let id = PolicyId::network_policy(
            np.metadata.namespace.as_deref().unwrap_or("default"),
            np.metadata.name.as_deref().unwrap_or_default(),
        );
        self.policies.remove(&id);
        self.upsert_policy(crate::netpol::compile(np)?);
        Ok(())
    }

    pub fn delete_network_policy(&mut self, namespace: &str, name: &str) {
        self.policies
            .remove(&PolicyId::network_policy(namespace, name));
    }

    /// As [`Cluster::apply_network_policy`], for a ClusterNetworkPolicy.
    pub fn apply_cluster_network_policy(&mut self, cnp: &ClusterNetworkPolicy) -> Result<()> {
        let id = PolicyId::cluster(cnp.metadata.name.as_deref().unwrap_or_default());
        self.policies.remove(&id);
        self.upsert_policy(crate::cluster_policy::compile(cnp)?);
        Ok(())
    }

    pub fn delete_cluster_network_policy(&mut self, name: &str) {
        self.policies.remove(&PolicyId::cluster(name));
    }

    pub fn pod(&self, namespace: &str, name: &str) -> Option<&Pod> {
        self.pods.get(&(namespace.to_owned(), name.to_owned()))
    }

    /// Labels of a namespace; one the view has not seen yet has only its name label.
    pub fn namespace_labels(&self, name: &str) -> Labels {
        match self.namespaces.get(name) {
            Some(ns) => ns.labels.clone(),
            None => [("kubernetes.io/metadata.name".to_owned(), name.to_owned())].into(),
        }
    }

    /// Who holds `ip`: a (non host-network) pod first, else a node.
    pub fn owner(&self, ip: IpAddr) -> Option<Owner> {
        if let Some(p) = self
            .pods
            .values()
            .find(|p| !p.host_network && p.ips.contains(&ip))
        {
            return Some(Owner::Pod(p.namespace.clone(), p.name.clone()));
        }
        self.nodes
            .values()
            .find(|n| n.ips.contains(&ip))
            .map(|n| Owner::Node(n.name.clone()))
    }
}
