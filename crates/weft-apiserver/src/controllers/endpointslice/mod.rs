//! EndpointSlices for Services with selectors: a pure function from a Service and its
//! namespace's pods to the desired slices, and an applier that writes the difference.
//!
//! A batch of store events touches only the Services it names, the Services whose
//! selector picks a changed pod (before or after the change, found through the store's
//! selector index), and the owners of managed slices someone deleted; each is
//! recomputed from the pods its selector picks (the store's label index). A full resync
//! (start-up, falling out of the event ring) does the same for every Service, one at a
//! time.
//!
//! The same pass keeps each selector Service's v1 Endpoints, mirrored from its desired
//! slices as kube-controller-manager's endpoints controller would write them: ready
//! endpoints in `addresses`, not-ready ones in `notReadyAddresses`, terminating ones left
//! out (all in `addresses` with publishNotReadyAddresses), one subset per port list.
//! Endpoints carry `endpointslice.kubernetes.io/skip-mirror` as upstream's do; only those
//! are deleted with their Service, so hand-written Endpoints of selector-less Services
//! stay the user's.

mod desired;

use super::decoded::Decoded;
use super::Reconcile;
use crate::api::crud;
use crate::error::ApiError;
use crate::resources::{ENDPOINTS, ENDPOINTSLICES, PODS, SERVICES};
use crate::server::AppState;
use crate::store::{self, Event, EventType, Tx};
use crate::typed;
pub(crate) use desired::short_hash;
pub use desired::{desired_endpoints, desired_slices, MANAGED_BY};
use desired::{endpoints_managed, managed_slice_owner, selector};
use desired::{MANAGED_BY_LABEL, SERVICE_NAME_LABEL};
use k8s_openapi::api::core::v1::{Endpoints, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// Brings a Service's Endpoints to `want`; None deletes them if this controller made
/// them. A Service without a selector is not passed here: its Endpoints are the user's.
fn apply_endpoints(
    tx: &mut Tx,
    state: &AppState,
    ns: &str,
    name: &str,
    want: Option<Endpoints>,
) -> Result<(), ApiError> {
    let key = store::key(ENDPOINTS, ns, name);
    let Some(stored) = tx.get(ENDPOINTS, &key) else {
        if let Some(want) = want {
            crud::create_in(tx, state, ENDPOINTS, typed::encode(&want)?, false)?;
        }
        return Ok(());
    };
    // Stored Endpoints that are not valid Endpoints are someone else's to mend.
    let Some(old) = typed::view::<Endpoints>(&stored) else {
        return Ok(());
    };
    match want {
        Some(want)
            if old.subsets != want.subsets || old.metadata.labels != want.metadata.labels =>
        {
            let mut new = old;
            new.subsets = want.subsets;
            new.metadata.labels = want.metadata.labels;
            let new = typed::encode(&new)?;
            crud::update_in(tx, state, ENDPOINTS, &key, &stored, new, None, false)?;
        }
        None if endpoints_managed(&old.metadata) => {
            crate::api::delete::delete_in(tx, ENDPOINTS, &key, &stored, None, false)?;
        }
        _ => {}
    }
    Ok(())
}

/// Writes the difference between a set of managed slices and the desired ones.
fn apply_diff(
    tx: &mut Tx,
    state: &AppState,
    ns: &str,
    existing: &[Arc<Value>],
    mut desired: BTreeMap<String, EndpointSlice>,
) -> Result<(), ApiError> {
    for stored in existing {
        let name = crate::meta::name(stored).to_string();
        let key = store::key(ENDPOINTSLICES, ns, &name);
        let old = typed::view::<EndpointSlice>(stored);
        match (desired.remove(&name), old) {
            (Some(want), Some(old)) => {
                let same = old.endpoints == want.endpoints
                    && old.ports == want.ports
                    && old.metadata.labels == want.metadata.labels
                    && old.metadata.owner_references == want.metadata.owner_references;
                if !same {
                    let mut new = old;
                    new.endpoints = want.endpoints;
                    new.ports = want.ports;
                    new.metadata.labels = want.metadata.labels;
                    new.metadata.owner_references = want.metadata.owner_references;
                    let new = typed::encode(&new)?;
                    crud::update_in(tx, state, ENDPOINTSLICES, &key, stored, new, None, false)?;
                }
            }
            // Not wanted, or not a slice one can read: replaced by what is wanted.
            (want, _) => {
                crate::api::delete::delete_in(tx, ENDPOINTSLICES, &key, stored, None, false)?;
                if let Some(want) = want {
                    desired.insert(name, want);
                }
            }
        }
    }
    for s in desired.into_values() {
        crud::create_in(tx, state, ENDPOINTSLICES, typed::encode(&s)?, false)?;
    }
    Ok(())
}

fn by_name(slices: Vec<EndpointSlice>) -> BTreeMap<String, EndpointSlice> {
    slices
        .into_iter()
        .map(|s| (s.metadata.name.clone().unwrap_or_default(), s))
        .collect()
}

/// Brings one Service's managed slices to the desired state; a Service that is gone
/// (or has no selector) keeps none.
fn reconcile_service(
    tx: &mut Tx,
    state: &AppState,
    pods_decoded: &mut Decoded<Pod>,
    ns: &str,
    name: &str,
) -> Result<(), ApiError> {
    let (desired, endpoints) = match tx.get(SERVICES, &store::key(SERVICES, ns, name)) {
        Some(stored) => {
            let svc: Service = typed::view(&stored).unwrap_or_default();
            let pods: Vec<Arc<Pod>> = match selector(&svc) {
                Some(sel) => {
                    let found = tx.select(PODS, ns, sel);
                    found.iter().filter_map(|p| pods_decoded.get(p)).collect()
                }
                None => Vec::new(),
            };
            let slices = desired_slices(&svc, &pods);
            // Some(None): a selector-less Service, whose Endpoints are left alone.
            let ep = selector(&svc).map(|_| desired_endpoints(&svc, &slices));
            (by_name(slices), Some(ep))
        }
        None => (BTreeMap::new(), Some(None)),
    };
    let mine = BTreeMap::from([
        (SERVICE_NAME_LABEL.to_string(), name.to_string()),
        (MANAGED_BY_LABEL.to_string(), MANAGED_BY.to_string()),
    ]);
    let existing = tx.select(ENDPOINTSLICES, ns, &mine);
    apply_diff(tx, state, ns, &existing, desired)?;
    match endpoints {
        Some(Some(want)) => apply_endpoints(tx, state, ns, name, Some(want)),
        Some(None) if tx.get(SERVICES, &store::key(SERVICES, ns, name)).is_none() => {
            apply_endpoints(tx, state, ns, name, None)
        }
        _ => Ok(()),
    }
}

/// The Services (namespace, name) a batch of events may change the slices of.
fn affected(tx: &Tx, events: &[Arc<Event>]) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    for e in events {
        let ns = crate::meta::namespace(&e.object);
        if std::ptr::eq(e.res, SERVICES) {
            out.insert((ns.to_string(), crate::meta::name(&e.object).to_string()));
        } else if std::ptr::eq(e.res, PODS) {
            // The Services that picked the pod before the change and those that pick it
            // now. Only the labels are read: most pods are picked by no Service, and the
            // ones that are get decoded whole (once) when their Services are recomputed.
            for pod in std::iter::once(&e.object).chain(e.prev.as_ref()) {
                let labels = typed::meta(pod).labels.unwrap_or_default();
                for svc in tx.services_selecting(ns, &labels) {
                    out.insert((ns.to_string(), crate::meta::name(&svc).to_string()));
                }
            }
        } else if std::ptr::eq(e.res, ENDPOINTSLICES) && e.ty == EventType::Deleted {
            let meta = typed::meta(&e.object);
            if let Some(Some(svc)) = managed_slice_owner(&meta) {
                out.insert((ns.to_string(), svc.to_string()));
            }
        } else if std::ptr::eq(e.res, ENDPOINTS)
            && e.ty == EventType::Deleted
            && endpoints_managed(&typed::meta(&e.object))
        {
            out.insert((ns.to_string(), crate::meta::name(&e.object).to_string()));
        }
    }
    out
}

/// Every Service, and every owner named by a managed slice or Endpoints (their Service
/// may be gone), recomputed one by one through the indexes as the event path does: the
/// cost follows the Services' own pods, not every pod of the namespace per Service, and
/// each write lock is held for one Service, so clients are served meanwhile (a restart
/// with 30k Services and 10k pods held the lock for minutes when a namespace was one
/// transaction over all its pods).
fn full_resync(state: &AppState, pods_decoded: &mut Decoded<Pod>) {
    let (owners, orphans) = {
        let st = state.store.read();
        let name = |o: &Value| crate::meta::name(o).to_string();
        let ns = |o: &Value| crate::meta::namespace(o).to_string();
        let mut owners: BTreeSet<(String, String)> = st
            .list(SERVICES, None)
            .iter()
            .map(|s| (ns(s), name(s)))
            .collect();
        let mut orphans = Vec::new();
        for slice in st.list(ENDPOINTSLICES, None) {
            match managed_slice_owner(&typed::meta(&slice)) {
                Some(Some(svc)) => {
                    owners.insert((ns(&slice), svc.to_string()));
                }
                Some(None) => orphans.push(slice),
                None => {}
            }
        }
        for ep in st.list(ENDPOINTS, None) {
            if endpoints_managed(&typed::meta(&ep)) {
                owners.insert((ns(&ep), name(&ep)));
            }
        }
        (owners, orphans)
    };
    // A managed slice that names no Service belongs to none.
    for slice in orphans {
        let key = store::object_key(ENDPOINTSLICES, &slice);
        let r = state.store.write(|tx| match tx.get(ENDPOINTSLICES, &key) {
            Some(cur) => crate::api::delete::delete_in(tx, ENDPOINTSLICES, &key, &cur, None, false)
                .map(|_| ()),
            None => Ok(()),
        });
        if let Err(e) = r {
            tracing::warn!("endpointslice controller, slice {key}: {}", e.message);
        }
    }
    reconcile_each(state, pods_decoded, owners);
}

/// Each Service in a transaction of its own, so the store lock is never held across many.
fn reconcile_each(
    state: &AppState,
    pods_decoded: &mut Decoded<Pod>,
    services: BTreeSet<(String, String)>,
) {
    for (ns, name) in services {
        let r = state
            .store
            .write(|tx| reconcile_service(tx, state, pods_decoded, &ns, &name));
        if let Err(e) = r {
            tracing::warn!(
                "endpointslice controller, service {ns}/{name}: {}",
                e.message
            );
        }
    }
}

#[derive(Default)]
pub struct Controller {
    /// Pods as k8s-openapi types, decoded once per stored version.
    pods: Decoded<Pod>,
}

impl Reconcile for Controller {
    fn reconcile(&mut self, state: &AppState, events: Option<&[Arc<Event>]>) {
        let Some(events) = events else {
            full_resync(state, &mut self.pods);
            return;
        };
        // A transaction that writes nothing: a consistent read of the indexes.
        let services = match state.store.write(|tx| Ok(affected(tx, events))) {
            Ok((s, _)) => s,
            Err(e) => {
                tracing::warn!("endpointslice controller: {}", e.message);
                return;
            }
        };
        reconcile_each(state, &mut self.pods, services);
    }
}
