//! The zone kept up to date one object at a time, shared between the watchers that feed it
//! and the server that answers from it.
//!
//! Each object's records are compiled by [`crate::records`] and remembered as that
//! object's *contribution*; an update replaces one contribution and sends the zone only
//! the difference, so it costs in proportion to the object (for an EndpointSlice: to its
//! Service's endpoints), never to the cluster. The change is visible to the next query as
//! soon as the call returns.

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use k8s_openapi::api::core::v1::{Namespace, Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::config::ZoneConfig;
use crate::error::{Error, Result};
use crate::records::{self, Record};
use crate::zone::Zone;

type Key = (String, String);

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Owner {
    Service(Key),
    Pod(Key),
    Namespace(String),
}

#[derive(Default)]
struct State {
    /// Boxed: a table holds its values inline, and a k8s object is several hundred bytes
    /// even when empty, so unboxed the tables' spare buckets alone were megabytes at 10k
    /// Services.
    services: HashMap<Key, Box<Service>>,
    slices: HashMap<Key, Box<EndpointSlice>>,
    /// Service (namespace, name) -> its slices' names.
    by_service: HashMap<Key, BTreeSet<String>>,
    /// Each owner's records, sorted (a boxed slice: a set's smallest node would cost more
    /// than the one record most owners have).
    contributions: HashMap<Owner, Box<[Record]>>,
    nodes: HashMap<String, Vec<IpAddr>>,
}

struct Inner {
    cfg: ZoneConfig,
    state: Mutex<State>,
    zone: RwLock<Zone>,
    /// Node InternalIPs with how many Nodes claim each: clients allowed besides the CIDRs.
    node_ips: RwLock<HashMap<IpAddr, u32>>,
}

/// The cluster's DNS records; clones share one table (an `Arc`).
#[derive(Clone)]
pub struct Model {
    inner: Arc<Inner>,
}

fn key(meta: &ObjectMeta) -> Option<Key> {
    Some((meta.namespace.clone()?, meta.name.clone()?))
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic elsewhere while holding the lock leaves plain data behind; keep serving it.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Model {
    pub fn new(cfg: ZoneConfig) -> Result<Model> {
        let domain = cfg.domain.trim_end_matches('.').to_ascii_lowercase();
        let zone = Zone::new(&domain, cfg.ttl, &cfg.nameserver_ips).ok_or_else(|| Error::Zone {
            domain: cfg.domain.clone(),
            why: "needs at least one label, each 1-63 bytes, 255 in all".into(),
        })?;
        let cfg = ZoneConfig { domain, ..cfg };
        Ok(Model {
            inner: Arc::new(Inner {
                cfg,
                state: Mutex::new(State::default()),
                zone: RwLock::new(zone),
                node_ips: RwLock::new(HashMap::new()),
            }),
        })
    }

    pub fn config(&self) -> &ZoneConfig {
        &self.inner.cfg
    }

    /// The table as it is now, for answering; hold it only for one answer.
    pub(crate) fn zone(&self) -> RwLockReadGuard<'_, Zone> {
        self.inner.zone.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether `ip` is one of the Nodes' InternalIPs.
    pub fn is_node_ip(&self, ip: IpAddr) -> bool {
        let ips = self
            .inner
            .node_ips
            .read()
            .unwrap_or_else(|e| e.into_inner());
        ips.contains_key(&ip)
    }

    pub fn upsert_service(&self, svc: &Service) {
        let Some(k) = key(&svc.metadata) else { return };
        // Only the spec and identity matter here ([`records::service_records`]); do not
        // keep the rest of a big object.
        let svc = Service {
            metadata: ObjectMeta {
                namespace: Some(k.0.clone()),
                name: Some(k.1.clone()),
                ..ObjectMeta::default()
            },
            spec: svc.spec.clone(),
            status: None,
        };
        let mut st = lock(&self.inner.state);
        st.services.insert(k.clone(), Box::new(svc));
        self.recompile_service(&mut st, &k);
    }

    pub fn delete_service(&self, namespace: &str, name: &str) {
        let k = (namespace.to_string(), name.to_string());
        let mut st = lock(&self.inner.state);
        st.services.remove(&k);
        self.set(&mut st, Owner::Service(k), BTreeSet::new());
    }

    pub fn upsert_slice(&self, slice: &EndpointSlice) {
        let Some(k) = key(&slice.metadata) else {
            return;
        };
        let mut st = lock(&self.inner.state);
        let old_svc = st
            .slices
            .get(&k)
            .and_then(|s| records::slice_service(s).map(str::to_string));
        let new_svc = records::slice_service(slice).map(str::to_string);
        let mut slice = slice.clone();
        slice.metadata.managed_fields = None;
        slice.metadata.annotations = None;
        st.slices.insert(k.clone(), Box::new(slice));
        if let Some(old) = old_svc.as_ref().filter(|o| Some(*o) != new_svc.as_ref()) {
            let sk = (k.0.clone(), old.clone());
            Self::unlink_slice(&mut st, &sk, &k.1);
            self.recompile_service(&mut st, &sk);
        }
        if let Some(new) = new_svc {
            let sk = (k.0.clone(), new);
            st.by_service
                .entry(sk.clone())
                .or_default()
                .insert(k.1.clone());
            self.recompile_service(&mut st, &sk);
        }
    }

    pub fn delete_slice(&self, namespace: &str, name: &str) {
        let k = (namespace.to_string(), name.to_string());
        let mut st = lock(&self.inner.state);
        let Some(old) = st.slices.remove(&k) else {
            return;
        };
        if let Some(svc) = records::slice_service(&old) {
            let sk = (k.0.clone(), svc.to_string());
            Self::unlink_slice(&mut st, &sk, &k.1);
            self.recompile_service(&mut st, &sk);
        }
    }

    fn unlink_slice(st: &mut State, service: &Key, slice: &str) {
        if let Some(set) = st.by_service.get_mut(service) {
            set.remove(slice);
            if set.is_empty() {
                st.by_service.remove(service);
            }
        }
    }

    pub fn upsert_pod(&self, pod: &Pod) {
        let Some(k) = key(&pod.metadata) else { return };
        let recs = records::pod_records(&self.inner.cfg.domain, pod);
        let mut st = lock(&self.inner.state);
        self.set(&mut st, Owner::Pod(k), recs);
    }

    pub fn delete_pod(&self, namespace: &str, name: &str) {
        let mut st = lock(&self.inner.state);
        let k = (namespace.to_string(), name.to_string());
        self.set(&mut st, Owner::Pod(k), BTreeSet::new());
    }

    pub fn upsert_namespace(&self, ns: &Namespace) {
        let Some(name) = ns.metadata.name.clone() else {
            return;
        };
        let recs = records::namespace_records(&self.inner.cfg.domain, &name);
        let mut st = lock(&self.inner.state);
        self.set(&mut st, Owner::Namespace(name), recs);
    }

    pub fn delete_namespace(&self, name: &str) {
        let mut st = lock(&self.inner.state);
        self.set(&mut st, Owner::Namespace(name.to_string()), BTreeSet::new());
    }

    /// A Node's InternalIPs become allowed clients.
    pub fn upsert_node(&self, node: &Node) {
        let Some(name) = node.metadata.name.clone() else {
            return;
        };
        let ips: Vec<IpAddr> = node
            .status
            .iter()
            .flat_map(|s| s.addresses.iter().flatten())
            .filter(|a| a.type_ == "InternalIP")
            .filter_map(|a| a.address.parse().ok())
            .collect();
        let mut st = lock(&self.inner.state);
        let old = st.nodes.insert(name, ips.clone()).unwrap_or_default();
        self.swap_node_ips(&old, &ips);
    }

    pub fn delete_node(&self, name: &str) {
        let mut st = lock(&self.inner.state);
        let old = st.nodes.remove(name).unwrap_or_default();
        self.swap_node_ips(&old, &[]);
    }

    fn swap_node_ips(&self, old: &[IpAddr], new: &[IpAddr]) {
        let mut ips = self
            .inner
            .node_ips
            .write()
            .unwrap_or_else(|e| e.into_inner());
        for ip in new {
            *ips.entry(*ip).or_insert(0) += 1;
        }
        for ip in old {
            if let Some(n) = ips.get_mut(ip) {
                *n -= 1;
                if *n == 0 {
                    ips.remove(ip);
                }
            }
        }
    }

    fn recompile_service(&self, st: &mut State, k: &Key) {
        let recs = match st.services.get(k) {
            Some(svc) => {
                let slices: Vec<&EndpointSlice> = st
                    .by_service
                    .get(k)
                    .into_iter()
                    .flatten()
                    .filter_map(|n| st.slices.get(&(k.0.clone(), n.clone())).map(|s| &**s))
                    .collect();
                records::service_records(&self.inner.cfg.domain, svc, &slices)
            }
            None => BTreeSet::new(),
        };
        self.set(st, Owner::Service(k.clone()), recs);
    }

    /// Replace one owner's records, sending the zone only the difference.
    fn set(&self, st: &mut State, owner: Owner, new: BTreeSet<Record>) {
        let new: Box<[Record]> = new.into_iter().collect();
        let old = st.contributions.remove(&owner).unwrap_or_default();
        if old != new {
            let mut zone = self.inner.zone.write().unwrap_or_else(|e| e.into_inner());
            // Both sorted: membership by binary search.
            for r in new.iter().filter(|r| old.binary_search(r).is_err()) {
                zone.add(r);
            }
            for r in old.iter().filter(|r| new.binary_search(r).is_err()) {
                zone.remove(r);
            }
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs() as u32)
                .unwrap_or(0);
            let serial = now.max(zone.serial().wrapping_add(1));
            zone.finish(serial);
        }
        if !new.is_empty() {
            st.contributions.insert(owner, new);
        }
    }

    /// Every record the model holds now, for comparing with [`records::compile`].
    pub fn records(&self) -> BTreeSet<Record> {
        let st = lock(&self.inner.state);
        st.contributions.values().flatten().cloned().collect()
    }
}
