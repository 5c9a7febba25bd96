//! Services on this node: every Service and EndpointSlice of the cluster compiled by
//! weft-proxy into the node's `ip weft-proxy` table. After an event, only the Services
//! whose object or slices changed are compiled again, and the kernel receives only what
//! they changed (weft_proxy::Model).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use ipnet::IpNet;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use weft_proxy::controller::Controller;
use weft_proxy::{Model, NodeContext, Proxier};

use super::AgentConfig;

pub struct ServiceSync {
    proxier: Proxier,
    controller: Controller,
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
            controller: Controller::new(Model::new(NodeContext {
                node_name: cfg.node_name.clone(),
                cluster_cidr,
            })),
            health: Default::default(),
            dirty: Arc::new(AtomicBool::new(true)),
        })
    }

    pub fn reconcile(&mut self, services: &[Arc<Service>], slices: &[Arc<EndpointSlice>]) {
        if !self.dirty.swap(false, Ordering::SeqCst) {
            return;
        }
        let pass = self
            .controller
            .update(services.iter().map(|s| &**s), slices.iter().map(|s| &**s));
        self.health.sync(pass.health);
        match self.proxier.apply(&mut self.controller.model) {
            Ok(sum) if !sum.is_empty() => tracing::info!(
                services = services.len(),
                recompiled = pass.recompiled,
                removed = pass.removed,
                elements_added = sum.elements_added,
                elements_deleted = sum.elements_deleted,
                chains = sum.chains_added + sum.chains_replaced + sum.chains_deleted,
                "services synced"
            ),
            Ok(_) => {}
            Err(e) => {
                tracing::warn!("services: {e}; retrying with a full sync");
                self.dirty.store(true, Ordering::SeqCst);
            }
        }
    }
}
