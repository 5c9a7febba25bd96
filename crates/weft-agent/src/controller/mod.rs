//! The node agent's control loop: watch this node's pods and every Node through the
//! Kubernetes API (kube-rs, so the lab's control plane and a real cluster look the same),
//! compile them into desired state (routes, the CNI config, running pods) and apply it.
//!
//! Level-triggered: any Node or Pod watch event, or a one-second tick, runs one pass over
//! the reflector caches (routes, then pods); a pass does only what differs from the last
//! one. Services, cluster DNS, NetworkPolicy and Ingress run on tasks of their own, each
//! applying a burst of changes at once; how far each is behind is published
//! (`lag.rs`).

mod cniconf;
mod dns;
mod events;
mod health;
pub mod ingress;
mod lag;
mod masq;
mod node;
mod node_api;
mod pods;
mod policy;
mod policy_fqdn;
mod policy_log;
mod policy_socket;
mod relist;
mod retry;
mod services;
mod watches;

use crate::{Runtime, RuntimeConfig};
use futures::StreamExt;
use ipnet::IpNet;
use k8s_openapi::api::core::v1::{Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::{reflector, watcher, WatchStreamExt};
use kube::{Api, Client};
use std::net::IpAddr;
use std::os::unix::fs::DirBuilderExt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;
use weft_routing::{Backend, NodeInfo, Router};

#[derive(Debug, Clone)]
pub struct AgentConfig {
    pub kubeconfig: Option<PathBuf>,
    pub node_name: String,
    pub node_ip: IpAddr,
    pub backend: String,
    pub underlay_if: String,
    pub state_dir: PathBuf,
    pub weft_bin: PathBuf,
    pub netns_prefix: String,
    pub cluster_cidr: IpNet,
    pub cluster_dns: Option<IpAddr>,
    pub cluster_domain: String,
    /// Run this node's pods (the lab). On a real cluster the kubelet and the container
    /// runtime do, and the agent only routes and masquerades.
    pub run_pods: bool,
    /// Answer the cluster zone at `cluster_dns` on this node (in place of CoreDNS).
    pub serve_dns: bool,
    /// Where the DNS server sends names outside the cluster zone.
    pub dns_upstreams: weft_dns::Upstreams,
    /// Enforce NetworkPolicy and ClusterNetworkPolicy on this node.
    pub network_policy: bool,
    /// Log denied packets to this nflog group, explained per policy and rule in the
    /// agent's log (they are counted per policy and rule without it, in
    /// `state_dir/policy-denials.tsv`).
    pub policy_nflog_group: Option<u16>,
    /// Serve Ingresses on this node (the L7 proxy on ports 80 and 443).
    pub ingress: Option<ingress::IngressConfig>,
}

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("kubernetes API: {op}: {source}")]
    Api {
        op: String,
        #[source]
        source: kube::Error,
    },
    #[error("kubeconfig {path}: {problem}")]
    Kubeconfig { path: String, problem: String },
    #[error("routing: {0}")]
    Routing(#[from] weft_routing::Error),
    #[error("netlink: {0}")]
    Netlink(#[from] weft_netlink::Error),
    #[error("nf_tables: {0}")]
    Nft(#[from] weft_nft::Error),
    #[error("services: {0}")]
    Proxy(#[from] weft_proxy::Error),
    #[error("watching {what}: {problem}")]
    Watch { what: &'static str, problem: String },
    #[error("network policy: {0}")]
    Policy(#[from] weft_policy::Error),
    #[error("cluster DNS: {0}")]
    Dns(#[from] weft_dns::Error),
    #[error("ingress: {0}")]
    Ingress(#[from] weft_ingress::Error),
    #[error("pod runtime: {0}")]
    Runtime(#[from] crate::Error),
    #[error("{op}: {source}")]
    Io {
        op: String,
        #[source]
        source: std::io::Error,
    },
}

pub type Error = AgentError;
pub type Result<T> = std::result::Result<T, AgentError>;

impl AgentError {
    pub fn api(op: &str) -> impl FnOnce(kube::Error) -> AgentError + '_ {
        move |source| AgentError::Api {
            op: op.to_string(),
            source,
        }
    }
}

async fn client(cfg: &AgentConfig) -> Result<Client> {
    let config = match &cfg.kubeconfig {
        Some(path) => {
            // In the lab the control plane writes the kubeconfig as it starts: give it time.
            for _ in 0..300 {
                if path.exists() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            let bad = |problem: String| AgentError::Kubeconfig {
                path: path.display().to_string(),
                problem,
            };
            let kc = kube::config::Kubeconfig::read_from(path).map_err(|e| bad(e.to_string()))?;
            kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
                .await
                .map_err(|e| bad(e.to_string()))?
        }
        None => kube::Config::infer()
            .await
            .map_err(|e| AgentError::Kubeconfig {
                path: "(in-cluster or default)".into(),
                problem: e.to_string(),
            })?,
    };
    Client::try_from(config).map_err(AgentError::api("build the client"))
}

/// Runs the agent until the process is stopped.
pub async fn run(cfg: AgentConfig) -> Result<()> {
    let client = client(&cfg).await?;
    let backend = Backend::parse(&cfg.backend)?;
    node::register(&client, &cfg, None).await?;
    tracing::info!(node = %cfg.node_name, backend = backend.name(), "registered; waiting for a podCIDR");
    let pod_cidr = node::wait_pod_cidr(&client, &cfg).await?;
    let me = NodeInfo {
        name: cfg.node_name.clone(),
        underlay_ip: cfg.node_ip,
        pod_cidr: Some(pod_cidr),
        vtep_mac: None,
    };
    let handle = weft_netlink::Handle::new()?;
    let mut router = Router::new(handle, backend, me, &cfg.underlay_if)?;
    if let Some(mac) = router.vtep_mac() {
        node::register(&client, &cfg, Some(&weft_netlink::mac_to_string(&mac))).await?;
    }
    masq::ensure(cfg.cluster_cidr)?;

    let notify = Arc::new(Notify::new());
    let (nodes, node_writer) = reflector::store::<Node>();
    let (pods, pod_writer) = reflector::store::<Pod>();
    let node_stream = reflector(
        node_writer,
        watcher(Api::<Node>::all(client.clone()), watcher::Config::default()),
    )
    .default_backoff()
    .touched_objects();
    let pods_api: Api<Pod> = Api::all(client.clone());
    let pod_cfg = watcher::Config::default().fields(&format!("spec.nodeName={}", cfg.node_name));
    let pod_stream = reflector(pod_writer, watcher(pods_api, pod_cfg))
        .default_backoff()
        .touched_objects();
    let lags = lag::Registry::default();
    let pod_lag = lags.component("pods");
    let route_lag = lags.component("routes");
    // Service and EndpointSlice events go to the service controller as they are, so a
    // change recompiles only the Service it touches.
    let service_events = services::start(&cfg, &lags)?;
    let service_stream = watcher(
        Api::<Service>::all(client.clone()),
        watcher::Config::default(),
    )
    .default_backoff()
    .map(|e| e.map(|e| services::Event::Service(Box::new(e))));
    let slice_stream = watcher(
        Api::<EndpointSlice>::all(client.clone()),
        watcher::Config::default(),
    )
    .default_backoff()
    .map(|e| e.map(|e| services::Event::Slice(Box::new(e))));
    // DNS answers pass through network policy (`domainNames` peers) before they leave.
    let (policy_events, hook) = match cfg.network_policy {
        true => {
            let (q, hook) = policy::start(
                &cfg.node_name,
                lags.component("policy"),
                cfg.policy_nflog_group,
                cfg.state_dir.join("policy-denials.tsv"),
            )?;
            (
                Some(q),
                Some(hook as std::sync::Arc<dyn weft_dns::AnswerHook>),
            )
        }
        false => (None, None),
    };
    let dns_events = match (cfg.serve_dns, cfg.cluster_dns) {
        (true, Some(ip)) => Some(start_dns(&cfg, ip, &lags, hook).await?),
        (true, None) => {
            tracing::warn!("--serve-dns without --cluster-dns: no address to serve; DNS is off");
            None
        }
        (false, _) => None,
    };
    // A watch whose stream ends leaves its cache frozen: the agent stops rather than act
    // on a world it no longer sees (its supervisor or init system restarts it).
    let (ended, mut watch_ended) = tokio::sync::mpsc::unbounded_channel::<&'static str>();
    let sinks = watches::Sinks {
        dns: dns_events.clone(),
        policy: policy_events.clone(),
    };
    watches::spawn(&client, sinks, &ended).await;
    if let Some(ic) = &cfg.ingress {
        ingress::start(&client, &cfg, ic, &ended, lags.component("ingress")).await?;
    }
    lags.publish(cfg.node_name.clone(), cfg.state_dir.clone());
    for (what, stream) in [
        ("Services", service_stream.boxed()),
        ("EndpointSlices", slice_stream.boxed()),
    ] {
        let (tx, dns_tx) = (service_events.clone(), dns_events.clone());
        let ended = ended.clone();
        let watch = stream.for_each(move |e| {
            let (tx, dns_tx) = (tx.clone(), dns_tx.clone());
            async move {
                match e {
                    // Both queues are bounded: a full one holds this watch back.
                    Ok(e) => {
                        if let Some(d) = &dns_tx {
                            d.push(match &e {
                                services::Event::Service(s) => dns::Event::Service(s.clone()),
                                services::Event::Slice(s) => dns::Event::Slice(s.clone()),
                            })
                            .await;
                        }
                        tx.push(e).await;
                    }
                    // The watcher backs off and retries by itself; say why it has to.
                    Err(e) => tracing::warn!("watching {what}: {e}"),
                }
            }
        });
        tokio::spawn(async move {
            watch.await;
            let _ = ended.send(what);
        });
    }
    // The reflectors' caches coalesce: a pass reads the latest state, however many
    // events led to it.
    for (what, stream, lag) in [
        ("Nodes", node_stream.map(|_| ()).boxed(), route_lag.clone()),
        (
            "this node's Pods",
            pod_stream.map(|_| ()).boxed(),
            pod_lag.clone(),
        ),
    ] {
        let (n, ended) = (notify.clone(), ended.clone());
        let watch = stream.for_each(move |_| {
            lag.seen();
            n.notify_one();
            futures::future::ready(())
        });
        tokio::spawn(async move {
            watch.await;
            let _ = ended.send(what);
        });
    }
    // Nothing is reconciled before both caches hold a complete list: an empty cache would
    // read as "no pods", and the pod loop would stop every running pod.
    let unlisted = |what| AgentError::Watch {
        what,
        problem: "the watch ended before its first list completed".into(),
    };
    nodes
        .wait_until_ready()
        .await
        .map_err(|_| unlisted("Nodes"))?;
    pods.wait_until_ready()
        .await
        .map_err(|_| unlisted("this node's Pods"))?;
    if cfg.run_pods {
        events::start(&client, &cfg);
        node_api::start(&client, &cfg).await;
    }
    // A kubelet runs this node's pods: its CNI ADDs wait here for each pod's policy. Held
    // for the loop's life; the socket goes when the agent stops.
    let policy_socket = match (&policy_events, cfg.run_pods) {
        (Some(q), false) => Some(policy_socket::serve(
            cfg.state_dir.join(policy_socket::SOCKET_NAME),
            pods.clone(),
            q.clone(),
        )?),
        _ => None,
    };
    if let Some(s) = &policy_socket {
        s.remove_on_signal();
    }

    let mut runtime: Option<Arc<Mutex<Runtime>>> = None;
    let mut cni_written = false;
    let mut pod_sync = pods::PodSync::default();
    // (failures so far, next attempt) while the plugin's GC has not succeeded.
    let mut gc_retry: Option<(u32, std::time::Instant)> = None;
    let mut last_heartbeat = std::time::Instant::now();
    loop {
        tokio::select! {
            _ = notify.notified() => {}
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            Some(what) = watch_ended.recv() => {
                return Err(AgentError::Watch {
                    what,
                    problem: "the watch stream ended; stopping rather than reconcile from a frozen cache".into(),
                });
            }
        }
        route_lag.taken();
        // Oldest first: on a conflict (two nodes claiming one podCIDR) the first one wins.
        let mut node_objs = nodes.state();
        node_objs.sort_by_key(|n| {
            (
                n.metadata.creation_timestamp.as_ref().map(|t| t.0),
                n.metadata.name.clone(),
            )
        });
        let all: Vec<NodeInfo> = node_objs
            .iter()
            .filter_map(|n| node::node_info(n))
            .collect();
        match router.sync(&all) {
            Ok(_) => route_lag.applied(),
            Err(e) => tracing::warn!("routing: {e}"),
        }
        if !cfg.run_pods && runtime.is_none() && !cni_written {
            let socket = policy_socket.as_ref().map(|s| s.path());
            write_cni_config(&cfg, pod_cidr, backend, socket)?;
            cni_written = true;
            tracing::info!(%pod_cidr, "CNI config written; pods are left to the kubelet");
        }
        if runtime.is_none() && cfg.run_pods {
            let mut rt = start_runtime(&cfg, pod_cidr, backend)?;
            // What no pod of this node owns any more (deleted while the agent was down) goes,
            // and so do addresses a crash leaked (the runtime's CNI GC).
            let keep: std::collections::HashSet<String> = pods
                .state()
                .iter()
                .filter_map(|p| p.metadata.uid.clone())
                .collect();
            match rt.gc(&keep) {
                Ok(gone) if !gone.is_empty() => {
                    tracing::info!(count = gone.len(), "removed pods no longer in the API")
                }
                Ok(_) => {}
                Err(e) => {
                    // Pods that failed to stop are the pod loop's to retry; the plugin's GC
                    // (leaked addresses) is retried here.
                    tracing::warn!("pod GC: {e}; the CNI GC is retried with back-off");
                    gc_retry = Some((1, std::time::Instant::now() + retry::delay(1)));
                }
            }
            runtime = Some(Arc::new(Mutex::new(rt)));
            tracing::info!(%pod_cidr, "CNI config written; running pods");
        }
        if let (Some(rt), Some((n, at))) = (&runtime, gc_retry) {
            if std::time::Instant::now() >= at {
                gc_retry = retry_cni_gc(rt, n).await;
            }
        }
        if let Some(rt) = &runtime {
            pod_lag.taken();
            let pass = pod_sync
                .reconcile(
                    &client,
                    rt.clone(),
                    &cfg,
                    pods.state(),
                    policy_events.as_ref(),
                )
                .await;
            match pass {
                // A pod that could not start is told on the pod (status, Events) and
                // retried with back-off; the pass has still acted on every change it took.
                pods::Pass::Done => pod_lag.applied(),
                // What it took is in force once a pass gets to the end of it.
                pods::Pass::Unfinished => notify.notify_one(),
            }
        } else if !cfg.run_pods {
            // The kubelet runs this node's pods: nothing to apply here.
            pod_lag.taken();
            pod_lag.applied();
        }
        if last_heartbeat.elapsed() > Duration::from_secs(10) {
            if let Err(e) = node::heartbeat(&client, &cfg).await {
                tracing::warn!("heartbeat: {e}");
            }
            last_heartbeat = std::time::Instant::now();
        }
    }
}

/// One more CNI GC after `failures` failed ones; when the next is due, if it failed too.
async fn retry_cni_gc(
    rt: &Arc<Mutex<Runtime>>,
    failures: u32,
) -> Option<(u32, std::time::Instant)> {
    let r = rt.clone();
    let res = tokio::task::spawn_blocking(move || match r.lock() {
        Ok(r) => r.cni_gc().map_err(|e| e.to_string()),
        // The pod loop reports and clears a poisoned lock; try again later.
        Err(_) => Err("the pod runtime's lock is poisoned".to_string()),
    })
    .await
    .unwrap_or_else(|e| Err(format!("the CNI GC panicked: {e}")));
    match res {
        Ok(()) => {
            tracing::info!(attempts = failures + 1, "CNI GC done");
            None
        }
        Err(e) => {
            let n = failures + 1;
            let wait = retry::delay(n);
            tracing::warn!(attempt = n, retry_in = ?wait, "CNI GC: {e}");
            Some((n, std::time::Instant::now() + wait))
        }
    }
}

/// Changes waiting for the DNS model at most; a full queue holds the watches back.
const DNS_QUEUE: usize = 4096;

/// Starts this node's DNS server; returns where its watch events go (Services and slices
/// come from the service watches, the rest from `watches`).
async fn start_dns(
    cfg: &AgentConfig,
    ip: IpAddr,
    lags: &lag::Registry,
    hook: Option<std::sync::Arc<dyn weft_dns::AnswerHook>>,
) -> Result<lag::Queue<dns::Event>> {
    let mut server = dns::DnsServer::start(cfg, ip, hook).await?;
    let lag = lags.component("dns");
    let (tx, mut rx) = lag::queue(lag.clone(), DNS_QUEUE);
    // Its own task: an answer follows its objects without waiting on a reconcile pass.
    // Each change updates the zone in place (only the records it touches), so whatever
    // has queued up is applied at once, then counted as one update.
    tokio::spawn(async move {
        while let Some(e) = rx.recv().await {
            server.event(e);
            let n = 1 + lag::drain(&mut rx, DNS_QUEUE, |e| server.event(e));
            lag.taken_n(n);
            lag.applied();
        }
    });
    Ok(tx)
}

/// Writes the node's CNI network config (`<state_dir>/cni.json`) for its pod subnet: what
/// the lab's pod runtime uses, and what a real cluster's container runtime can be pointed at
/// (naming `policy_socket` when the agent serves one).
fn write_cni_config(
    cfg: &AgentConfig,
    pod_cidr: IpNet,
    backend: Backend,
    policy_socket: Option<&std::path::Path>,
) -> Result<std::path::PathBuf> {
    // The node's state (CNI config, IPAM, pods' records) is root's alone.
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&cfg.state_dir)
        .map_err(|e| AgentError::Io {
            op: format!("create {}", cfg.state_dir.display()),
            source: e,
        })?;
    let mtu = match backend {
        Backend::Vxlan { .. } => 1450,
        Backend::HostGw => 1500,
    };
    let conf = cniconf::render(pod_cidr, mtu, &cfg.state_dir.join("ipam"), policy_socket);
    let conf_path = cfg.state_dir.join("cni.json");
    std::fs::write(&conf_path, conf.to_string()).map_err(|e| AgentError::Io {
        op: format!("write {}", conf_path.display()),
        source: e,
    })?;
    Ok(conf_path)
}

fn start_runtime(cfg: &AgentConfig, pod_cidr: IpNet, backend: Backend) -> Result<Runtime> {
    // The agent orders its own pods' policy (`policy::before_start`): no socket to wait on.
    let conf_path = write_cni_config(cfg, pod_cidr, backend, None)?;
    let cni_bin_dir = cfg.state_dir.join("cni-bin");
    std::fs::create_dir_all(&cni_bin_dir).map_err(|e| AgentError::Io {
        op: "create cni-bin".into(),
        source: e,
    })?;
    let link = cni_bin_dir.join("weft");
    if !link.exists() {
        std::os::unix::fs::symlink(&cfg.weft_bin, &link).map_err(|e| AgentError::Io {
            op: "link the CNI plugin".into(),
            source: e,
        })?;
    }
    let mut rt = Runtime::new(RuntimeConfig {
        node_name: cfg.node_name.clone(),
        state_dir: cfg.state_dir.join("pods"),
        weft_bin: cfg.weft_bin.clone(),
        cni_conf: conf_path,
        cni_bin_dir,
        netns_prefix: cfg.netns_prefix.clone(),
        cluster_dns: cfg.cluster_dns,
        cluster_domain: cfg.cluster_domain.clone(),
        host_netns: None,
    })?;
    let adopted = rt.adopt()?;
    tracing::info!(count = adopted.len(), "adopted running pods");
    Ok(rt)
}
