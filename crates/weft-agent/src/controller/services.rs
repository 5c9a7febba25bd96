//! Services on this node: every Service and EndpointSlice of the cluster compiled by
//! weft-proxy into the node's `ip weft-proxy` table, re-synced only after one of them
//! changed (or after a failed sync).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use ipnet::IpNet;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use weft_proxy::endpoint::Endpoints;
use weft_proxy::service::{self, Skip};
use weft_proxy::{NodeContext, Proxier};

use super::AgentConfig;

pub struct ServiceSync {
    proxier: Proxier,
    node: NodeContext,
    health: super::health::HealthServers,
    /// Set by the Service and EndpointSlice watches.
    pub dirty: Arc<AtomicBool>,
}

impl ServiceSync {
    pub fn new(cfg: &AgentConfig) -> weft_proxy::Result<ServiceSync> {
        // Replies from a pod on this node's bridge to a pod that reached it through a
        // Service are bridged, not routed: without this, conntrack never sees them to undo
        // the DNAT. Per namespace; absent only when the kernel lacks br_netfilter.
        if let Err(e) = weft_netlink::sysctl::set("net.bridge.bridge-nf-call-iptables", "1") {
            tracing::warn!("services between pods of one node need br_netfilter: {e}");
        }
        let cluster_cidr = match cfg.cluster_cidr {
            IpNet::V4(n) => Some(n),
            IpNet::V6(_) => None,
        };
        Ok(ServiceSync {
            proxier: Proxier::open()?,
            node: NodeContext {
                node_name: cfg.node_name.clone(),
                cluster_cidr,
            },
            dirty: Arc::new(AtomicBool::new(true)),
            health: Default::default(),
        })
    }

    pub fn reconcile(&mut self, services: &[Arc<Service>], slices: &[Arc<EndpointSlice>]) {
        if !self.dirty.swap(false, Ordering::SeqCst) {
            return;
        }
        let mut ports = Vec::new();
        for svc in services {
            match service::ports(svc) {
                Ok(p) => ports.extend(p),
                Err(Skip::NoClusterIp) => tracing::debug!(
                    service = svc.metadata.name.as_deref().unwrap_or(""),
                    "no IPv4 cluster IP: not proxied"
                ),
                Err(_) => {}
            }
        }
        let endpoints = Endpoints::from_slices(slices.iter().map(|s| &**s));
        let svcs: Vec<&Service> = services.iter().map(|s| &**s).collect();
        self.health.sync(weft_proxy::health::checks(
            &svcs,
            &endpoints,
            &self.node.node_name,
        ));
        let desired = weft_proxy::desired(&ports, &endpoints, &self.node);
        match self.proxier.sync(&desired) {
            Ok(sum) if !sum.is_empty() => tracing::info!(
                ports = ports.len(),
                elements_added = sum.elements_added,
                elements_deleted = sum.elements_deleted,
                chains = sum.chains_added + sum.chains_replaced,
                "services synced"
            ),
            Ok(_) => {}
            Err(e) => {
                tracing::warn!("services: {e}; retrying");
                self.dirty.store(true, Ordering::SeqCst);
            }
        }
    }
}
