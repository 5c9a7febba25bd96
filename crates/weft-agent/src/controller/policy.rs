//! NetworkPolicy and ClusterNetworkPolicy on this node: watch events feed weft-policy's
//! view of the cluster, and a thread of its own moves the node's `inet weft-policy` table
//! to what the view implies, one transaction per batch of events (a burst of changes is
//! coalesced into one commit, every 50 ms at most). Events come through a bounded queue
//! (a full one holds the watches back) and count as the `policy` component's lag until
//! the commit that includes them.
//!
//! Nothing is enforced from a partial view: the table is first written once every watch
//! (Pods, Namespaces, Nodes, NetworkPolicies, ClusterNetworkPolicies) has listed. A pod
//! this node starts is entered into the view with its address and the table committed
//! *before* its process runs (the runtime's `start_with` hook), so a new pod is never
//! reachable, nor able to reach out, outside its policies. On a node whose pods a kubelet
//! runs, the CNI plugin's ADD asks the same through `policy_socket` before it returns.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::runtime::Handle;
use tokio::sync::mpsc::Receiver;

use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::DynamicObject;
use kube::runtime::watcher;
use weft_policy::cnp::ClusterNetworkPolicy;
use weft_policy::{Cluster, Enforcer, NodeContext};

use super::lag::{self, Lag, Queue};
use super::policy_fqdn::{any_domain_names, Answers, FqdnHook};
use super::policy_log::{DenialCounts, DenialLog, READ_EVERY};
use super::relist::{key, Change, Key, Seen};

/// How often the table is read back from the kernel and repaired, whatever happened.
const RESYNC: Duration = Duration::from_secs(300);
/// Events arriving within this window are committed together.
const BATCH: Duration = Duration::from_millis(50);
/// Events waiting for the policy thread.
const QUEUE: usize = 4096;

pub enum Event {
    Pod(Box<watcher::Event<Pod>>),
    Namespace(Box<watcher::Event<Namespace>>),
    Node(Box<watcher::Event<Node>>),
    NetworkPolicy(Box<watcher::Event<NetworkPolicy>>),
    ClusterNetworkPolicy(Box<watcher::Event<DynamicObject>>),
    /// This node is about to start `pod` with `ips`: commit its policy, then answer.
    Starting {
        pod: Box<Pod>,
        ips: Vec<IpAddr>,
        done: Sender<Result<(), String>>,
    },
    /// A start whose commit failed or came too late: the runtime undid it and gave its
    /// addresses back (they may go to another pod next), so the pod leaves the view
    /// without them, unless a newer start gave it others.
    Abandoned {
        pod: Key,
        ips: Vec<IpAddr>,
    },
    /// The node's DNS server is about to send `answer`: grant what `domainNames` peers
    /// allow of it, then say so.
    Resolved {
        answer: weft_dns::Answer,
        done: tokio::sync::oneshot::Sender<()>,
    },
}

#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
enum Kind {
    Pod,
    Namespace,
    Node,
    NetworkPolicy,
    ClusterNetworkPolicy,
}

const KINDS: [Kind; 5] = [
    Kind::Pod,
    Kind::Namespace,
    Kind::Node,
    Kind::NetworkPolicy,
    Kind::ClusterNetworkPolicy,
];

struct PolicySync {
    cluster: Cluster,
    ctx: NodeContext,
    /// Recompiles only the pods a policy change selects and hands the Enforcer only the
    /// elements that changed (the same table as `desired`).
    compiler: weft_policy::desired::Incremental,
    enforcer: Enforcer,
    seen: HashMap<Kind, Seen>,
    /// Addresses of this node's pods as the runtime gave them, before the API's pod
    /// status says so: a watch event from before the status update must not take a
    /// running pod out of its policies.
    local_ips: HashMap<Key, Vec<IpAddr>>,
    dirty: bool,
    last_full: Instant,
    lag: Arc<Lag>,
    /// The agent's runtime: the thread waits on the queue through it.
    rt: Handle,
    /// Denied packets from nflog, explained against `cluster` (with an nflog group).
    denials: Option<DenialLog>,
    /// The kernel's denial counters per policy and rule, always.
    counts: DenialCounts,
    /// DNS answers still live, for `domainNames` peers.
    answers: Answers,
    /// Whether the DNS hook is needed: some policy has a `domainNames` peer.
    fqdn_active: Arc<AtomicBool>,
}

/// Starts the policy thread (from within the agent's runtime); events go to the returned
/// queue. Denials are counted per policy and rule into `counters_file`; with an
/// `nflog_group` they are also logged there, and explained in the agent's log.
pub fn start(
    node_name: &str,
    lag: Arc<Lag>,
    nflog_group: Option<u16>,
    counters_file: std::path::PathBuf,
) -> super::Result<(Queue<Event>, Arc<FqdnHook>)> {
    let denials = match nflog_group {
        Some(group) => Some(DenialLog::start(group)?),
        None => None,
    };
    let mut sync = PolicySync {
        cluster: Cluster::default(),
        compiler: Default::default(),
        ctx: NodeContext {
            node_name: node_name.to_string(),
            log_group: nflog_group,
        },
        enforcer: Enforcer::open()?,
        seen: HashMap::new(),
        local_ips: HashMap::new(),
        dirty: true,
        last_full: Instant::now(),
        lag: lag.clone(),
        rt: Handle::current(),
        denials,
        counts: DenialCounts::new(counters_file),
        answers: Answers::default(),
        fqdn_active: Arc::new(AtomicBool::new(false)),
    };
    let active = sync.fqdn_active.clone();
    let (tx, rx) = lag::queue(lag, QUEUE);
    std::thread::Builder::new()
        .name("network-policy".into())
        .spawn(move || sync.run(rx))
        .map_err(|source| super::AgentError::Io {
            op: "start the network-policy thread".into(),
            source,
        })?;
    let hook = Arc::new(FqdnHook {
        events: tx.clone(),
        active,
    });
    Ok((tx, hook))
}

impl PolicySync {
    /// The next event within `wait`; `Err` once every sender is gone.
    fn next(&self, rx: &mut Receiver<Event>, wait: Duration) -> Result<Option<Event>, ()> {
        // The timer is made inside the runtime's context (block_on's), not on this thread.
        match self
            .rt
            .block_on(async { tokio::time::timeout(wait, rx.recv()).await })
        {
            Ok(Some(e)) => Ok(Some(e)),
            Ok(None) => Err(()),
            Err(_) => Ok(None),
        }
    }

    fn run(&mut self, mut rx: Receiver<Event>) {
        let mut said_waiting = false;
        let started = Instant::now();
        loop {
            // Block for the first event, then take whatever else arrives within BATCH.
            let Ok(first) = self.next(&mut rx, Duration::from_secs(1)) else {
                return;
            };
            // Denials logged until now were dropped by the table of the view as it is,
            // before these events, so they are explained against that view (only those
            // still on their way from the reader thread meet the next one).
            if let Some(d) = self.denials.as_mut() {
                d.drain(&self.cluster);
            }
            let mut waiting = Vec::new();
            let deadline = Instant::now() + BATCH;
            let mut next = first;
            let mut taken = 0;
            while let Some(e) = next {
                taken += 1;
                if let Some(w) = self.event(e) {
                    waiting.push(w);
                }
                let left = deadline.saturating_duration_since(Instant::now());
                next = self.next(&mut rx, left).unwrap_or(None);
            }
            self.lag.taken_n(taken);
            if self.last_full.elapsed() > RESYNC {
                self.enforcer.resync();
                self.last_full = Instant::now();
                self.dirty = true;
            }
            // The counters of the table the kernel holds, before a commit changes it.
            if self.dirty || self.counts.last_read.elapsed() >= READ_EVERY {
                self.counts
                    .read(&mut self.enforcer, &self.compiler.attribution());
            }
            let result = if !self.listed() {
                if !said_waiting && started.elapsed() > Duration::from_secs(10) {
                    tracing::warn!("network policy: still waiting for the first list of every watched kind (see the watch errors above)");
                    said_waiting = true;
                }
                Err("network policy is not in force yet: the agent has not listed every kind it watches".to_string())
            } else if self.dirty {
                self.commit()
            } else {
                Ok(())
            };
            // In force: counted as applied. Not yet (unlisted, or the commit failed):
            // they stay pending, and the report shows the component behind.
            if result.is_ok() {
                self.lag.applied();
            }
            for done in waiting {
                let _ = done.send(result.clone());
            }
        }
    }

    fn listed(&self) -> bool {
        KINDS
            .iter()
            .all(|k| self.seen.get(k).is_some_and(Seen::listed))
    }

    fn commit(&mut self) -> Result<(), String> {
        // Only what changed goes to the Enforcer, which holds the one copy of the table.
        let update = self.compiler.update(&self.cluster, &self.ctx);
        let result = match self.enforcer.apply(update) {
            Err(weft_policy::Error::Delta { problem, .. }) => {
                // The two disagree on the previous table: compile it whole.
                tracing::warn!("network policy: {problem}; compiling the whole table");
                self.compiler = Default::default();
                let update = self.compiler.update(&self.cluster, &self.ctx);
                self.enforcer.apply(update)
            }
            other => other,
        };
        match result {
            Ok(sum) => {
                self.dirty = false;
                tracing::debug!(?sum, "network policy synced");
                // A connection the policy no longer allows ends now rather than living on
                // as established (a UDP flow would otherwise outlast any change); the
                // standard leaves this to the implementation. Only after a change: the
                // conntrack dump walks the kernel's whole (global) hash table, ~25 ms
                // here, and an unchanged table cannot deny a flow it let through.
                let cut = if sum.is_empty() {
                    Ok(0)
                } else {
                    self.enforcer.cut_denied_flows()
                };
                if let Err(e) = cut {
                    tracing::warn!("network policy: cutting denied flows: {e}");
                }
                self.fqdn_active
                    .store(any_domain_names(&self.cluster), Ordering::Relaxed);
                // The view changed: what the live DNS answers grant may have too.
                self.answers
                    .regrant(&self.cluster, &self.ctx.node_name, &mut self.enforcer);
                Ok(())
            }
            Err(e) => {
                // The next batch (or the one-second tick) tries again from the kernel's
                // own state.
                tracing::warn!("network policy: {e}");
                Err(e.to_string())
            }
        }
    }

    /// Applies one event to the view; a pod about to start returns who waits for the
    /// commit.
    fn event(&mut self, e: Event) -> Option<Sender<Result<(), String>>> {
        match e {
            Event::Pod(e) => {
                for c in self.seen.entry(Kind::Pod).or_default().changes(&e) {
                    match c {
                        Change::Upsert(p) => self.apply_pod(p, None),
                        Change::Delete(k) => {
                            self.local_ips.remove(&k);
                            self.cluster.delete_pod(&k.0, &k.1);
                        }
                    }
                }
                self.dirty = true;
            }
            Event::Namespace(e) => self.handle(
                Kind::Namespace,
                &e,
                |c, n| c.apply_namespace(n),
                |c, k| c.delete_namespace(&k.1),
            ),
            Event::Node(e) => self.handle(
                Kind::Node,
                &e,
                |c, n| c.apply_node(n),
                |c, k| c.delete_node(&k.1),
            ),
            Event::NetworkPolicy(e) => self.handle(
                Kind::NetworkPolicy,
                &e,
                |c, np| {
                    if let Err(err) = c.apply_network_policy(np) {
                        tracing::warn!("NetworkPolicy {}: {err}", name_of(&np.metadata));
                    }
                },
                |c, k| c.delete_network_policy(&k.0, &k.1),
            ),
            Event::ClusterNetworkPolicy(e) => self.handle(
                Kind::ClusterNetworkPolicy,
                &e,
                |c, obj| {
                    let parsed = serde_json::to_value(obj)
                        .and_then(serde_json::from_value::<ClusterNetworkPolicy>);
                    let res = match parsed {
                        Ok(cnp) => c
                            .apply_cluster_network_policy(&cnp)
                            .map_err(|e| e.to_string()),
                        Err(e) => Err(e.to_string()),
                    };
                    if let Err(err) = res {
                        tracing::warn!("ClusterNetworkPolicy {}: {err}", name_of(&obj.metadata));
                    }
                },
                |c, k| c.delete_cluster_network_policy(&k.1),
            ),
            Event::Starting { pod, ips, done } => {
                self.apply_pod(&pod, Some(ips));
                self.dirty = true;
                return Some(done);
            }
            Event::Abandoned { pod, ips } => {
                if abandon(&mut self.local_ips, &mut self.cluster, &pod, &ips) {
                    self.dirty = true;
                }
            }
            Event::Resolved { answer, done } => {
                // At once, not at the batch's end: the answer is waiting.
                self.answers.answered(
                    &self.cluster,
                    &self.ctx.node_name,
                    &mut self.enforcer,
                    answer,
                );
                let _ = done.send(());
            }
        }
        None
    }

    /// A pod into the view, with the runtime's addresses while its status has none.
    fn apply_pod(&mut self, pod: &Pod, runtime_ips: Option<Vec<IpAddr>>) {
        let k = key(&pod.metadata);
        if let Some(ips) = runtime_ips {
            self.local_ips.insert(k.clone(), ips);
        }
        match weft_policy::view::Pod::from_api(pod) {
            Some(mut p) => {
                if p.ips.is_empty() {
                    if let Some(ips) = self.local_ips.get(&k) {
                        p.ips = ips.clone();
                    }
                }
                // A pod with no address yet (pending, unschedulable) puts nothing in the
                // table, and keeping it would make every such pod's event a change of the
                // world the compiler compares whole: 10k pending pods cost each agent most
                // of a core. It enters with its first address.
                if p.ips.is_empty() {
                    self.cluster.delete_pod(&p.namespace, &p.name);
                    return;
                }
                self.cluster.upsert_pod(p);
            }
            None => self.cluster.apply_pod(pod),
        }
    }

    fn handle<K: kube::Resource>(
        &mut self,
        kind: Kind,
        e: &watcher::Event<K>,
        upsert: impl Fn(&mut Cluster, &K),
        delete: impl Fn(&mut Cluster, &Key),
    ) {
        for c in self.seen.entry(kind).or_default().changes(e) {
            match c {
                Change::Upsert(o) => upsert(&mut self.cluster, o),
                Change::Delete(k) => delete(&mut self.cluster, &k),
            }
            self.dirty = true;
        }
        if matches!(e, watcher::Event::InitDone) {
            self.dirty = true;
        }
    }
}

/// Takes back the runtime's `ips` of a start that did not happen; whether the view changed.
fn abandon(
    local_ips: &mut HashMap<Key, Vec<IpAddr>>,
    cluster: &mut Cluster,
    pod: &Key,
    ips: &[IpAddr],
) -> bool {
    if local_ips.get(pod).map(Vec::as_slice) != Some(ips) {
        return false;
    }
    local_ips.remove(pod);
    // Only addresses that came from the runtime: the API's status, once it has some, stays.
    match cluster.pod(&pod.0, &pod.1) {
        Some(p) if p.ips == ips => {
            let mut p = p.clone();
            p.ips.clear();
            cluster.upsert_pod(p);
            true
        }
        _ => false,
    }
}

fn name_of(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> String {
    match &meta.namespace {
        Some(ns) => format!("{ns}/{}", meta.name.as_deref().unwrap_or_default()),
        None => meta.name.clone().unwrap_or_default(),
    }
}

/// The runtime's hook for a pod about to start: its policy is in the kernel when this
/// returns Ok. An Err undoes the start; the pod loop tries again on its next pass.
pub fn before_start(
    tx: &Queue<Event>,
    pod: &Pod,
    ips: Vec<IpAddr>,
) -> std::result::Result<(), crate::HookError> {
    commit_starting(tx, pod, ips, Duration::from_secs(10)).map_err(Into::into)
}

/// Enters `pod` with `ips` into the view and waits, at most `wait`, for the commit that
/// includes it: the pod runtime's hook here, the CNI ADD's policy socket on a kubelet's
/// node. Blocks the calling thread (not one of the runtime's workers).
pub fn commit_starting(
    tx: &Queue<Event>,
    pod: &Pod,
    ips: Vec<IpAddr>,
    wait: Duration,
) -> std::result::Result<(), String> {
    let (done, answer) = std::sync::mpsc::channel();
    let sent = tx.push_blocking(Event::Starting {
        pod: Box::new(pod.clone()),
        ips: ips.clone(),
        done,
    });
    if !sent {
        return Err("the network-policy thread has stopped".into());
    }
    let result = match answer.recv_timeout(wait) {
        Ok(r) => r,
        Err(_) => Err(format!("network policy did not commit within {wait:?}")),
    };
    if result.is_err() {
        // The caller undoes the start; the queue keeps this behind the Starting.
        tx.push_blocking(Event::Abandoned {
            pod: key(&pod.metadata),
            ips,
        });
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_abandoned_start_takes_back_only_its_own_addresses() {
        let ip = |s: &str| -> IpAddr { s.parse().unwrap() };
        let k: Key = ("np".into(), "web".into());
        let pod = |ips: Vec<IpAddr>| weft_policy::view::Pod {
            namespace: "np".into(),
            name: "web".into(),
            labels: Default::default(),
            ips,
            node: Some("n1".into()),
            host_network: false,
            ports: vec![],
        };
        let mut cluster = Cluster::default();
        let mut local = HashMap::new();
        local.insert(k.clone(), vec![ip("10.0.0.5")]);
        cluster.upsert_pod(pod(vec![ip("10.0.0.5")]));
        // Another start's addresses: not this one's to take back.
        assert!(!abandon(&mut local, &mut cluster, &k, &[ip("10.0.0.6")]));
        assert_eq!(cluster.pod("np", "web").unwrap().ips, vec![ip("10.0.0.5")]);
        assert!(abandon(&mut local, &mut cluster, &k, &[ip("10.0.0.5")]));
        assert!(cluster.pod("np", "web").unwrap().ips.is_empty());
        assert!(local.is_empty());
        // The status already says another address: the view keeps it.
        local.insert(k.clone(), vec![ip("10.0.0.7")]);
        cluster.upsert_pod(pod(vec![ip("10.0.0.9")]));
        assert!(!abandon(&mut local, &mut cluster, &k, &[ip("10.0.0.7")]));
        assert_eq!(cluster.pod("np", "web").unwrap().ips, vec![ip("10.0.0.9")]);
        assert!(local.is_empty());
    }
}
