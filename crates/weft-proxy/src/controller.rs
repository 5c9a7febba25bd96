//! From the API's Services and EndpointSlices to the model, recompiling only what changed.
//! A Service's elements depend on its object and its slices; their resourceVersions say
//! when either changed, so one pass over the lists finds the Services to recompile.

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::{Hash, Hasher};

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::contribution::contributions;
use crate::endpoint::{Endpoints, SERVICE_NAME_LABEL};
use crate::health::{self, Health};
use crate::model::{Model, ServiceId};
use crate::service;

/// What a Service's compiled elements depend on: its object and its slices, by version,
/// hashed (the pass runs over every Service on every event, so it must not allocate).
type Fingerprint = u64;

pub struct Controller {
    pub model: Model,
    /// Per Service (by the hash of its namespace and name, so the pass looks it up
    /// without allocating): its id and the fingerprint it was compiled at.
    compiled: HashMap<u64, (ServiceId, Fingerprint)>,
}

fn id_hash(ns: &str, name: &str) -> u64 {
    let mut h = DefaultHasher::new();
    (ns, name).hash(&mut h);
    h.finish()
}

/// What one pass found.
#[derive(Debug, Default)]
pub struct Pass {
    pub recompiled: usize,
    pub removed: usize,
    /// The health check ports this node serves, with what each reports.
    pub health: BTreeMap<u16, Health>,
}

fn version(meta: &ObjectMeta) -> &str {
    meta.resource_version.as_deref().unwrap_or_default()
}

fn ns_name(meta: &ObjectMeta) -> (&str, &str) {
    (
        meta.namespace.as_deref().unwrap_or_default(),
        meta.name.as_deref().unwrap_or_default(),
    )
}

fn fingerprint(svc: &Service, slices: &[&EndpointSlice]) -> Fingerprint {
    let mut h = DefaultHasher::new();
    version(&svc.metadata).hash(&mut h);
    // Slices in any order: combine their hashes commutatively.
    let mut acc = 0u64;
    for s in slices {
        let mut hs = DefaultHasher::new();
        version(&s.metadata).hash(&mut hs);
        ns_name(&s.metadata).hash(&mut hs);
        acc = acc.wrapping_add(hs.finish());
    }
    acc.hash(&mut h);
    h.finish()
}

impl Controller {
    pub fn new(model: Model) -> Controller {
        Controller {
            model,
            compiled: HashMap::new(),
        }
    }

    /// Brings the model up to date with these lists (all of the cluster's).
    pub fn update<'a>(
        &mut self,
        services: impl IntoIterator<Item = &'a Service>,
        slices: impl IntoIterator<Item = &'a EndpointSlice>,
    ) -> Pass {
        let mut by_service: HashMap<(&str, &str), Vec<&EndpointSlice>> = HashMap::new();
        for s in slices {
            if let Some(name) = s
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(SERVICE_NAME_LABEL))
            {
                let ns = s.metadata.namespace.as_deref().unwrap_or_default();
                by_service.entry((ns, name.as_str())).or_default().push(s);
            }
        }
        let node = self.model.node().clone();
        let mut pass = Pass::default();
        let mut seen: HashSet<u64> = HashSet::new();
        for svc in services {
            let key = ns_name(&svc.metadata);
            let mine = by_service.get(&key).map(Vec::as_slice).unwrap_or_default();
            let fp = fingerprint(svc, mine);
            let h = id_hash(key.0, key.1);
            let changed = self.compiled.get(&h).map(|(_, f)| *f) != Some(fp);
            let checked = svc
                .spec
                .as_ref()
                .is_some_and(|s| s.health_check_node_port.is_some());
            if changed || checked {
                let eps = Endpoints::from_slices(mine.iter().copied());
                if let Some((port, h)) = health::check(svc, &eps, &node.node_name) {
                    pass.health.insert(port, h);
                }
                if changed {
                    let elements = service::ports(svc)
                        .unwrap_or_default()
                        .iter()
                        .flat_map(|sp| contributions(sp, &eps, &node))
                        .collect();
                    let id: ServiceId = (key.0.to_string(), key.1.to_string());
                    self.model.set_service(id.clone(), elements);
                    self.compiled.insert(h, (id, fp));
                    pass.recompiled += 1;
                }
            }
            seen.insert(h);
        }
        let gone: Vec<u64> = self
            .compiled
            .keys()
            .filter(|h| !seen.contains(*h))
            .copied()
            .collect();
        for h in &gone {
            if let Some((id, _)) = self.compiled.remove(h) {
                self.model.remove_service(&id);
            }
        }
        pass.removed = gone.len();
        pass
    }
}
