//! From the API's Service and EndpointSlice events to the model, recompiling only the
//! Services an event touched: the work of a change follows the change, not the cluster.
//!
//! The controller keeps what the rules are made of, not the objects: a Service's ports
//! as the proxy reads them ([`service::ports`]) and each slice's endpoints
//! ([`Endpoints::of_slice`]), about a tenth of the objects' size, with an index from each
//! Service to its slices. A watch that re-lists (`relist_begin` .. `relist_end`)
//! re-applies every object; those whose resourceVersion did not move cost a lookup, and
//! those the re-list no longer has are deleted.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::contribution::contributions;
use crate::endpoint::{Endpoints, SERVICE_NAME_LABEL};
use crate::health::{self, Health};
use crate::model::{Model, ServiceId};
use crate::service::{self, ServicePort};

/// (namespace, name) of an EndpointSlice.
type SliceId = (String, String);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Service,
    Slice,
}

/// What the controller keeps of a Service.
struct KeptService {
    version: Option<String>,
    /// Empty when weft does not proxy the Service (headless, another proxy's, ...).
    ports: Vec<ServicePort>,
    health_port: Option<u16>,
}

/// What the controller keeps of an EndpointSlice.
struct KeptSlice {
    version: Option<String>,
    owner: Option<ServiceId>,
    endpoints: Endpoints,
}

pub struct Controller {
    pub model: Model,
    services: HashMap<ServiceId, KeptService>,
    slices: HashMap<SliceId, KeptSlice>,
    slices_of: HashMap<ServiceId, BTreeSet<SliceId>>,
    health: HashMap<ServiceId, (u16, Health)>,
    dirty: HashSet<ServiceId>,
    /// Objects seen since a re-list of that kind began.
    relisting: HashMap<Kind, HashSet<(String, String)>>,
    listed: HashSet<Kind>,
}

/// What one flush did.
#[derive(Debug, Default)]
pub struct Pass {
    pub recompiled: usize,
    /// The health check ports this node serves, with what each reports.
    pub health: BTreeMap<u16, Health>,
}

fn id(meta: &ObjectMeta) -> (String, String) {
    (
        meta.namespace.clone().unwrap_or_default(),
        meta.name.clone().unwrap_or_default(),
    )
}

fn same_version(kept: &Option<String>, new: &ObjectMeta) -> bool {
    kept.is_some() && *kept == new.resource_version
}

fn service_of(slice: &EndpointSlice) -> Option<ServiceId> {
    let name = slice.metadata.labels.as_ref()?.get(SERVICE_NAME_LABEL)?;
    Some((
        slice.metadata.namespace.clone().unwrap_or_default(),
        name.clone(),
    ))
}

impl Controller {
    pub fn new(model: Model) -> Controller {
        Controller {
            model,
            services: HashMap::new(),
            slices: HashMap::new(),
            slices_of: HashMap::new(),
            health: HashMap::new(),
            dirty: HashSet::new(),
            relisting: HashMap::new(),
            listed: HashSet::new(),
        }
    }

    /// Both kinds have been listed once: until then a flush would install a table that
    /// lacks Services the cluster has.
    pub fn ready(&self) -> bool {
        self.listed.contains(&Kind::Service) && self.listed.contains(&Kind::Slice)
    }

    pub fn apply_service(&mut self, svc: Arc<Service>) {
        let key = id(&svc.metadata);
        if let Some(seen) = self.relisting.get_mut(&Kind::Service) {
            seen.insert(key.clone());
        }
        if self
            .services
            .get(&key)
            .is_some_and(|old| same_version(&old.version, &svc.metadata))
        {
            return;
        }
        let kept = KeptService {
            version: svc.metadata.resource_version.clone(),
            ports: service::ports(&svc).unwrap_or_default(),
            health_port: health::port(&svc),
        };
        self.services.insert(key.clone(), kept);
        self.dirty.insert(key);
    }

    pub fn delete_service(&mut self, namespace: &str, name: &str) {
        let key = (namespace.to_string(), name.to_string());
        if self.services.remove(&key).is_some() {
            self.dirty.insert(key);
        }
    }

    pub fn apply_slice(&mut self, slice: Arc<EndpointSlice>) {
        let key = id(&slice.metadata);
        if let Some(seen) = self.relisting.get_mut(&Kind::Slice) {
            seen.insert(key.clone());
        }
        if self
            .slices
            .get(&key)
            .is_some_and(|old| same_version(&old.version, &slice.metadata))
        {
            return;
        }
        self.delete_slice(&key.0, &key.1);
        let owner = service_of(&slice);
        if let Some(s) = &owner {
            self.slices_of
                .entry(s.clone())
                .or_default()
                .insert(key.clone());
            self.dirty.insert(s.clone());
        }
        let kept = KeptSlice {
            version: slice.metadata.resource_version.clone(),
            owner,
            endpoints: Endpoints::of_slice(&slice),
        };
        self.slices.insert(key, kept);
    }

    pub fn delete_slice(&mut self, namespace: &str, name: &str) {
        let key = (namespace.to_string(), name.to_string());
        if let Some(KeptSlice {
            owner: Some(owner), ..
        }) = self.slices.remove(&key)
        {
            if let Some(set) = self.slices_of.get_mut(&owner) {
                set.remove(&key);
                if set.is_empty() {
                    self.slices_of.remove(&owner);
                }
            }
            self.dirty.insert(owner);
        }
    }

    /// A watch of `kind` starts listing everything again.
    pub fn relist_begin(&mut self, kind: Kind) {
        self.relisting.insert(kind, HashSet::new());
    }

    /// The list is complete: what it did not include is gone.
    pub fn relist_end(&mut self, kind: Kind) {
        let Some(seen) = self.relisting.remove(&kind) else {
            return;
        };
        let gone: Vec<(String, String)> = match kind {
            Kind::Service => self
                .services
                .keys()
                .filter(|k| !seen.contains(*k))
                .cloned()
                .collect(),
            Kind::Slice => self
                .slices
                .keys()
                .filter(|k| !seen.contains(*k))
                .cloned()
                .collect(),
        };
        for (ns, name) in gone {
            match kind {
                Kind::Service => self.delete_service(&ns, &name),
                Kind::Slice => self.delete_slice(&ns, &name),
            }
        }
        self.listed.insert(kind);
    }

    /// Replaces everything with these lists, as one re-list of each kind.
    pub fn update<'a>(
        &mut self,
        services: impl IntoIterator<Item = &'a Service>,
        slices: impl IntoIterator<Item = &'a EndpointSlice>,
    ) -> Pass {
        self.relist_begin(Kind::Service);
        for s in services {
            self.apply_service(Arc::new(s.clone()));
        }
        self.relist_end(Kind::Service);
        self.relist_begin(Kind::Slice);
        for s in slices {
            self.apply_slice(Arc::new(s.clone()));
        }
        self.relist_end(Kind::Slice);
        self.flush()
    }

    /// Recompiles the Services touched since the last flush into the model.
    pub fn flush(&mut self) -> Pass {
        let mut pass = Pass::default();
        let node = self.model.node().clone();
        for key in std::mem::take(&mut self.dirty) {
            let Some(svc) = self.services.get(&key) else {
                self.model.remove_service(&key);
                self.health.remove(&key);
                pass.recompiled += 1;
                continue;
            };
            let eps = Endpoints::merge(
                self.slices_of
                    .get(&key)
                    .into_iter()
                    .flatten()
                    .filter_map(|s| self.slices.get(s).map(|k| &k.endpoints)),
            );
            let check = svc
                .health_port
                .map(|p| health::report(p, &key.0, &key.1, &svc.ports, &eps, &node.node_name));
            match check {
                Some(h) => self.health.insert(key.clone(), h),
                None => self.health.remove(&key),
            };
            let elements = svc
                .ports
                .iter()
                .flat_map(|sp| contributions(sp, &eps, &node))
                .collect();
            self.model.set_service(key, elements);
            pass.recompiled += 1;
        }
        pass.health = self.health.values().cloned().collect();
        pass
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::NodeContext;
    use serde_json::json;

    fn svc(name: &str, rv: &str, ip: &str) -> Arc<Service> {
        Arc::new(
            serde_json::from_value(json!({
                "metadata": {"name": name, "namespace": "a", "resourceVersion": rv},
                "spec": {"clusterIP": ip, "ports": [{"port": 80}]}
            }))
            .unwrap(),
        )
    }

    fn slice(name: &str, service: &str, rv: &str, ep: &str) -> Arc<EndpointSlice> {
        Arc::new(
            serde_json::from_value(json!({
                "metadata": {"name": name, "namespace": "a", "resourceVersion": rv,
                             "labels": {SERVICE_NAME_LABEL: service}},
                "addressType": "IPv4", "ports": [{"port": 8080}],
                "endpoints": [{"addresses": [ep]}]
            }))
            .unwrap(),
        )
    }

    fn controller() -> Controller {
        Controller::new(Model::new(NodeContext {
            node_name: "n".into(),
            cluster_cidr: None,
        }))
    }

    fn backends(c: &Controller) -> usize {
        c.model.ruleset().tables.values().next().unwrap().sets["backends"]
            .elements
            .len()
    }

    /// A Service that varies in what the kept form must carry: type, traffic policy, a
    /// health check port, being weft's to proxy at all.
    fn varied_service(i: u64, rv: u64, g: u64) -> Arc<Service> {
        let kind = ["ClusterIP", "NodePort", "LoadBalancer"][(g % 3) as usize];
        let etp = ["Cluster", "Local"][(g / 3 % 2) as usize];
        let mut v = json!({
            "metadata": {"name": format!("s{i}"), "namespace": "a", "resourceVersion": rv.to_string()},
            "spec": {"type": kind, "clusterIP": format!("10.96.0.{}", i + 1),
                     "externalTrafficPolicy": etp,
                     "healthCheckNodePort": 32000 + i,
                     "ports": [{"name": "p", "port": 80, "nodePort": 30000 + i}]}
        });
        if g.is_multiple_of(7) {
            v["spec"]["clusterIP"] = json!("None");
        }
        Arc::new(serde_json::from_value(v).unwrap())
    }

    /// Slice `j` of Service `svc`; two slices of one Service may share an address.
    fn varied_slice(j: u64, svc: u64, rv: u64, g: u64) -> Arc<EndpointSlice> {
        let eps: Vec<_> = (0..g % 4)
            .map(|k| {
                json!({"addresses": [format!("10.244.{}.{}", k % 2, (g + k) % 5 + 2)],
                       "nodeName": format!("n{}", k % 2),
                       "conditions": {"ready": !(g + k).is_multiple_of(3)}})
            })
            .collect();
        Arc::new(
            serde_json::from_value(json!({
                "metadata": {"name": format!("e{j}"), "namespace": "a", "resourceVersion": rv.to_string(),
                             "labels": {SERVICE_NAME_LABEL: format!("s{svc}")}},
                "addressType": "IPv4", "ports": [{"name": "p", "port": 8080}],
                "endpoints": eps
            }))
            .unwrap(),
        )
    }

    #[test]
    fn what_the_controller_keeps_gives_the_table_and_health_a_recomputation_gives() {
        use crate::desired::desired;
        let mut c = controller();
        c.relist_begin(Kind::Service);
        c.relist_end(Kind::Service);
        c.relist_begin(Kind::Slice);
        c.relist_end(Kind::Slice);
        let mut services: BTreeMap<u64, Arc<Service>> = BTreeMap::new();
        let mut slices: BTreeMap<u64, Arc<EndpointSlice>> = BTreeMap::new();
        let mut g: u64 = 7;
        for rv in 1..400u64 {
            g = g
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let r = g >> 33;
            match r % 5 {
                0 | 1 => {
                    let s = varied_service(r % 6, rv, r / 8);
                    services.insert(r % 6, s.clone());
                    c.apply_service(s);
                }
                2 | 3 => {
                    // A slice may move to another Service.
                    let e = varied_slice(r % 9, r / 16 % 6, rv, r / 128);
                    slices.insert(r % 9, e.clone());
                    c.apply_slice(e);
                }
                _ if r.is_multiple_of(2) => {
                    services.remove(&(r % 6));
                    c.delete_service("a", &format!("s{}", r % 6));
                }
                _ => {
                    slices.remove(&(r % 9));
                    c.delete_slice("a", &format!("e{}", r % 9));
                }
            }
            if !r.is_multiple_of(3) {
                continue;
            }
            let pass = c.flush();
            let all: Vec<&Service> = services.values().map(|s| &**s).collect();
            let eps = Endpoints::from_slices(slices.values().map(|s| &**s));
            let ports: Vec<_> = all
                .iter()
                .flat_map(|s| service::ports(s).unwrap_or_default())
                .collect();
            assert_eq!(
                c.model.ruleset(),
                desired(&ports, &eps, c.model.node()),
                "after rv {rv}"
            );
            assert_eq!(
                pass.health,
                health::checks(&all, &eps, "n"),
                "after rv {rv}"
            );
        }
    }

    #[test]
    fn events_recompile_only_what_they_touch_and_relists_delete_the_rest() {
        let mut c = controller();
        assert!(!c.ready());
        c.relist_begin(Kind::Service);
        c.apply_service(svc("s1", "1", "10.96.0.1"));
        c.apply_service(svc("s2", "2", "10.96.0.2"));
        c.relist_end(Kind::Service);
        c.relist_begin(Kind::Slice);
        c.apply_slice(slice("s1-x", "s1", "3", "10.244.1.2"));
        c.relist_end(Kind::Slice);
        assert!(c.ready());
        assert_eq!(c.flush().recompiled, 2);
        assert_eq!(backends(&c), 1);
        // The same version again: nothing to do.
        c.apply_service(svc("s1", "1", "10.96.0.1"));
        assert_eq!(c.flush().recompiled, 0);
        // A slice moving to s2 touches both Services.
        c.apply_slice(slice("s1-x", "s2", "4", "10.244.1.2"));
        assert_eq!(c.flush().recompiled, 2);
        assert_eq!(backends(&c), 1);
        // A re-list without s1 and the slice deletes them.
        c.relist_begin(Kind::Service);
        c.apply_service(svc("s2", "2", "10.96.0.2"));
        c.relist_end(Kind::Service);
        c.relist_begin(Kind::Slice);
        c.relist_end(Kind::Slice);
        assert_eq!(c.flush().recompiled, 2);
        assert_eq!(backends(&c), 0);
        let rs = c.model.ruleset();
        let cluster_ips = &rs.tables.values().next().unwrap().sets["cluster-ips"];
        assert_eq!(cluster_ips.elements.len(), 1, "s2 stays, without endpoints");
    }
}
