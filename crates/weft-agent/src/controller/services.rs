//! Services on this node: every Service and EndpointSlice of the cluster compiled by
//! weft-proxy into the node's `ip weft-proxy` table. After an event, only the Services
//! whose object or slices changed are compiled again, and the kernel receives only what
//! they changed (weft_proxy::Model).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use ipnet::IpNet;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use weft_proxy::contribution::contributions;
use weft_proxy::endpoint::{Endpoints, SERVICE_NAME_LABEL};
use weft_proxy::health::{self, Health};
use weft_proxy::model::ServiceId;
use weft_proxy::{service, Model, NodeContext, Proxier};

use super::AgentConfig;

/// What a Service's compiled elements depend on: its object and its slices, by version.
type Fingerprint = (String, Vec<String>);

pub struct ServiceSync {
    proxier: Proxier,
    model: Model,
    compiled: HashMap<ServiceId, Fingerprint>,
    health: super::health::HealthServers,
    /// Set by the Service and EndpointSlice watches.
    pub dirty: Arc<AtomicBool>,
}

fn version(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> String {
    meta.resource_version.clone().unwrap_or_default()
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
            model: Model::new(NodeContext {
                node_name: cfg.node_name.clone(),
                cluster_cidr,
            }),
            compiled: HashMap::new(),
            health: Default::default(),
            dirty: Arc::new(AtomicBool::new(true)),
        })
    }

    pub fn reconcile(&mut self, services: &[Arc<Service>], slices: &[Arc<EndpointSlice>]) {
        if !self.dirty.swap(false, Ordering::SeqCst) {
            return;
        }
        let mut by_service: HashMap<ServiceId, Vec<&EndpointSlice>> = HashMap::new();
        for s in slices {
            let Some(name) = s
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(SERVICE_NAME_LABEL))
            else {
                continue;
            };
            let ns = s.metadata.namespace.clone().unwrap_or_default();
            by_service.entry((ns, name.clone())).or_default().push(s);
        }
        let node = self.model.node().node_name.clone();
        let mut seen: HashMap<ServiceId, ()> = HashMap::with_capacity(services.len());
        let mut checks: BTreeMap<u16, Health> = BTreeMap::new();
        let mut recompiled = 0usize;
        for svc in services {
            let id: ServiceId = (
                svc.metadata.namespace.clone().unwrap_or_default(),
                svc.metadata.name.clone().unwrap_or_default(),
            );
            let mine = by_service.get(&id).map(Vec::as_slice).unwrap_or_default();
            let mut slice_versions: Vec<String> =
                mine.iter().map(|s| version(&s.metadata)).collect();
            slice_versions.sort();
            let fp = (version(&svc.metadata), slice_versions);
            let changed = self.compiled.get(&id) != Some(&fp);
            let is_health_checked = svc
                .spec
                .as_ref()
                .is_some_and(|s| s.health_check_node_port.is_some());
            if changed || is_health_checked {
                let eps = Endpoints::from_slices(mine.iter().copied());
                if let Some((port, h)) = health::check(svc, &eps, &node) {
                    checks.insert(port, h);
                }
                if changed {
                    let elements = service::ports(svc)
                        .unwrap_or_default()
                        .iter()
                        .flat_map(|sp| contributions(sp, &eps, self.model.node()))
                        .collect();
                    self.model.set_service(id.clone(), elements);
                    self.compiled.insert(id.clone(), fp);
                    recompiled += 1;
                }
            }
            seen.insert(id, ());
        }
        let gone: Vec<ServiceId> = self
            .compiled
            .keys()
            .filter(|id| !seen.contains_key(*id))
            .cloned()
            .collect();
        for id in &gone {
            self.model.remove_service(id);
            self.compiled.remove(id);
        }
        self.health.sync(checks);
        match self.proxier.apply(&mut self.model) {
            Ok(sum) if !sum.is_empty() => tracing::info!(
                services = services.len(),
                recompiled,
                removed = gone.len(),
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
