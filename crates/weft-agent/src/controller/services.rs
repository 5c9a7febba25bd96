//! Services on this node: Service and EndpointSlice watch events go to weft-proxy's
//! controller, which recompiles only the Services they touch into its model; the kernel
//! then receives only what those changed (one nf_tables transaction).

use std::sync::Arc;
use std::time::{Duration, Instant};

use ipnet::IpNet;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::watcher;
use weft_proxy::controller::{Controller, Kind};
use weft_proxy::{Model, NodeContext, Proxier};

use super::lag::{self, Queue, Registry};
use super::AgentConfig;

/// A watch event for the service controller (boxed: a Service is most of a kilobyte).
pub enum Event {
    Service(Box<watcher::Event<Service>>),
    Slice(Box<watcher::Event<EndpointSlice>>),
}

/// How often the kernel's table is read back and repaired, whatever happened: the
/// deltas assume nobody else edits it, and this bounds how long an edit (an `nft -f`
/// reload that flushed everything, say) can go unnoticed.
const RESYNC: Duration = Duration::from_secs(300);
/// Events closer together than this go into one nf_tables transaction.
const BATCH: Duration = Duration::from_millis(100);
/// Events waiting for the service controller at most; a full queue holds the Service
/// and EndpointSlice watches back instead of growing.
pub const QUEUE: usize = 4096;

/// Starts the service controller on a task of its own (a slow pod start must not hold
/// Services back); returns where the Service and EndpointSlice watch events go.
pub fn start(cfg: &AgentConfig, lags: &Registry) -> weft_proxy::Result<Queue<Event>> {
    let mut sync = ServiceSync::new(cfg)?;
    let lag = lags.component("services");
    let (queue, mut rx) = lag::queue(lag.clone(), QUEUE);
    tokio::spawn(async move {
        loop {
            let first = tokio::select! {
                e = rx.recv() => match e {
                    Some(e) => Some(e),
                    None => return,
                },
                // Retries and the periodic repair need no event.
                _ = tokio::time::sleep(Duration::from_secs(1)) => None,
            };
            let mut taken = 0;
            if let Some(e) = first {
                // The rest of a burst joins this transaction.
                tokio::time::sleep(BATCH).await;
                sync.event(e);
                taken = 1 + lag::drain(&mut rx, QUEUE, |e| sync.event(e));
            }
            lag.taken_n(taken);
            if sync.reconcile() {
                lag.applied();
            }
        }
    });
    Ok(queue)
}

pub struct ServiceSync {
    proxier: Proxier,
    controller: Controller,
    health: super::health::HealthServers,
    /// Events arrived (or the last sync failed, or a health port is not up yet) since
    /// the last sync.
    pending: bool,
    last_full: Instant,
    started: Instant,
    said_waiting: bool,
}

fn ns_name(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> (&str, &str) {
    (
        meta.namespace.as_deref().unwrap_or_default(),
        meta.name.as_deref().unwrap_or_default(),
    )
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
            pending: true,
            last_full: Instant::now(),
            started: Instant::now(),
            said_waiting: false,
        })
    }

    pub fn event(&mut self, e: Event) {
        use watcher::Event as W;
        let c = &mut self.controller;
        match e {
            Event::Service(e) => match *e {
                W::Apply(s) | W::InitApply(s) => c.apply_service(Arc::new(s)),
                W::Delete(s) => {
                    let (ns, name) = ns_name(&s.metadata);
                    c.delete_service(ns, name)
                }
                W::Init => c.relist_begin(Kind::Service),
                W::InitDone => c.relist_end(Kind::Service),
            },
            Event::Slice(e) => match *e {
                W::Apply(s) | W::InitApply(s) => c.apply_slice(Arc::new(s)),
                W::Delete(s) => {
                    let (ns, name) = ns_name(&s.metadata);
                    c.delete_slice(ns, name)
                }
                W::Init => c.relist_begin(Kind::Slice),
                W::InitDone => c.relist_end(Kind::Slice),
            },
        }
        self.pending = true;
    }

    /// One transaction for everything pending; whether the table is then what the
    /// controller's model says.
    pub fn reconcile(&mut self) -> bool {
        // Until both lists are complete, a sync would remove Services not seen yet (a
        // restarted agent adopting its predecessor's table would cut them off).
        if !self.controller.ready() {
            if !self.said_waiting && self.started.elapsed() > Duration::from_secs(10) {
                tracing::warn!("services: still waiting for the first list of Services and EndpointSlices (see the watch errors above)");
                self.said_waiting = true;
            }
            return false;
        }
        if self.last_full.elapsed() > RESYNC {
            self.proxier.resync();
            self.last_full = Instant::now();
            self.pending = true;
        }
        if !self.pending {
            return true;
        }
        self.pending = false;
        let pass = self.controller.flush();
        // A port that could not be bound yet (still in use) is tried again next pass.
        if !self.health.sync(pass.health) {
            self.pending = true;
        }
        match self.proxier.apply(&mut self.controller.model) {
            Ok(sum) if !sum.is_empty() => tracing::info!(
                recompiled = pass.recompiled,
                elements_added = sum.elements_added,
                elements_deleted = sum.elements_deleted,
                chains = sum.chains_added + sum.chains_replaced + sum.chains_deleted,
                "services synced"
            ),
            Ok(_) => {}
            Err(e) => {
                tracing::warn!("services: {e}; retrying with a full sync");
                self.pending = true;
            }
        }
        !self.pending
    }
}
