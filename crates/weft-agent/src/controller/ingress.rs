//! The node's Ingress proxy: watches Ingresses, IngressClasses, TLS Secrets, Services and
//! EndpointSlices, compiles them into weft-ingress's routing table, and swaps it into the
//! proxy listening on this node's ports 80 and 443. Every node runs one, so any node
//! address (and the LoadBalancer addresses routed to the nodes) reaches it.
//!
//! Status: each agent writes the same `status.loadBalancer` (every node's address,
//! sorted) on the Ingresses weft serves, so agents agree and never flap.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{Ingress, IngressClass};
use kube::api::{Patch, PatchParams};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client};
use tokio::sync::mpsc::UnboundedSender;
use tokio::sync::{watch, Notify};
use weft_ingress::proxy::{Limits, Proxy};
use weft_ingress::{compile, Cluster};

use super::{AgentConfig, AgentError, Result};

/// Where the proxy listens.
#[derive(Debug, Clone)]
pub struct IngressConfig {
    pub http: SocketAddr,
    pub https: SocketAddr,
}

/// Changes closer together than this are compiled once.
const BATCH: Duration = Duration::from_millis(20);

struct Stores {
    ingresses: Store<Ingress>,
    classes: Store<IngressClass>,
    secrets: Store<Secret>,
    services: Store<Service>,
    slices: Store<EndpointSlice>,
    nodes: Store<Node>,
}

/// Watches `api` into a store; every change pokes `changed`. A stream that ends reports
/// on `ended` (the agent then stops rather than serve from a frozen cache).
fn reflect<K>(
    api: Api<K>,
    what: &'static str,
    changed: Arc<Notify>,
    ended: UnboundedSender<&'static str>,
) -> Store<K>
where
    K: kube::Resource
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone,
{
    let (store, writer) = reflector::store::<K>();
    let stream = reflector::reflector(writer, watcher(api, watcher::Config::default()))
        .default_backoff()
        .for_each(move |e| {
            match e {
                Ok(_) => changed.notify_one(),
                Err(e) => tracing::warn!("ingress: watching {what}: {e}"),
            }
            futures::future::ready(())
        });
    tokio::spawn(async move {
        stream.await;
        let _ = ended.send(what);
    });
    store
}

/// Binds the proxy's ports (an error if they are taken) and starts serving and watching.
pub async fn start(
    client: &Client,
    cfg: &AgentConfig,
    ic: &IngressConfig,
    ended: &UnboundedSender<&'static str>,
) -> Result<()> {
    let proxy = Proxy::new(Limits::default(), &[cfg.node_name.as_str()])?;
    let bind = |addr: SocketAddr| async move {
        tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| AgentError::Ingress(weft_ingress::Error::Listen { addr, source }))
    };
    let (http, https) = (bind(ic.http).await?, bind(ic.https).await?);
    let (stop_tx, stop) = watch::channel(false);
    tokio::spawn(proxy.clone().serve(http, false, stop.clone()));
    tokio::spawn(proxy.clone().serve(https, true, stop));
    // A SIGTERM drains: no new connections, open requests finish, then the agent exits.
    tokio::spawn(async move {
        if let Ok(mut term) =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            term.recv().await;
            let _ = stop_tx.send(true);
            tokio::time::sleep(Limits::default().drain).await;
            std::process::exit(0);
        }
    });
    let changed = Arc::new(Notify::new());
    let c = client.clone();
    let stores = Stores {
        ingresses: reflect(
            Api::all(c.clone()),
            "Ingresses",
            changed.clone(),
            ended.clone(),
        ),
        classes: reflect(
            Api::all(c.clone()),
            "IngressClasses",
            changed.clone(),
            ended.clone(),
        ),
        secrets: reflect(
            Api::all(c.clone()),
            "Secrets",
            changed.clone(),
            ended.clone(),
        ),
        services: reflect(
            Api::all(c.clone()),
            "Services",
            changed.clone(),
            ended.clone(),
        ),
        slices: reflect(
            Api::all(c.clone()),
            "EndpointSlices",
            changed.clone(),
            ended.clone(),
        ),
        nodes: reflect(Api::all(c), "Nodes", changed.clone(), ended.clone()),
    };
    tracing::info!(http = %ic.http, https = %ic.https, "ingress proxy listening");
    let client = client.clone();
    tokio::spawn(async move {
        if let Err(e) = run(client, stores, proxy, changed).await {
            tracing::error!("ingress: {e}");
        }
    });
    Ok(())
}

async fn run(client: Client, s: Stores, proxy: Proxy, changed: Arc<Notify>) -> Result<()> {
    // Nothing is served from a partial view: a missing Secret would serve the default
    // certificate, a missing Service a 503.
    let unlisted = |what| AgentError::Watch {
        what,
        problem: "the watch ended before its first list completed".into(),
    };
    s.ingresses
        .wait_until_ready()
        .await
        .map_err(|_| unlisted("Ingresses"))?;
    s.classes
        .wait_until_ready()
        .await
        .map_err(|_| unlisted("IngressClasses"))?;
    s.secrets
        .wait_until_ready()
        .await
        .map_err(|_| unlisted("Secrets"))?;
    s.services
        .wait_until_ready()
        .await
        .map_err(|_| unlisted("Services"))?;
    s.slices
        .wait_until_ready()
        .await
        .map_err(|_| unlisted("EndpointSlices"))?;
    s.nodes
        .wait_until_ready()
        .await
        .map_err(|_| unlisted("Nodes"))?;
    let mut last_problems = Vec::new();
    loop {
        let cluster = Cluster {
            ingresses: s.ingresses.state(),
            classes: s.classes.state(),
            secrets: s
                .secrets
                .state()
                .into_iter()
                .filter(|x| x.type_.as_deref() == Some("kubernetes.io/tls"))
                .collect(),
            services: s.services.state(),
            slices: s.slices.state(),
        };
        let compiled = compile(&cluster);
        if compiled.problems != last_problems {
            for p in &compiled.problems {
                tracing::warn!("ingress {}: {}", p.ingress, p.message);
            }
            last_problems = compiled.problems.clone();
        }
        let served = compiled.served.clone();
        let routes = compiled.table.route_count();
        if proxy.update(compiled) {
            tracing::info!(ingresses = served.len(), routes, "ingress routes updated");
        }
        write_status(&client, &s, &served).await;
        tokio::select! {
            _ = changed.notified() => {}
            _ = tokio::time::sleep(Duration::from_secs(30)) => {}
        }
        tokio::time::sleep(BATCH).await;
    }
}

/// Every node's InternalIP, sorted: the addresses a served Ingress is reachable on.
fn node_addresses(nodes: &Store<Node>) -> Vec<String> {
    let mut ips: Vec<String> = nodes
        .state()
        .iter()
        .flat_map(|n| n.status.iter().flat_map(|s| s.addresses.iter().flatten()))
        .filter(|a| a.type_ == "InternalIP")
        .map(|a| a.address.clone())
        .collect();
    ips.sort();
    ips.dedup();
    ips
}

fn status_ips(ing: &Ingress) -> Vec<String> {
    ing.status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref())
        .map(|v| v.iter().filter_map(|i| i.ip.clone()).collect())
        .unwrap_or_default()
}

/// Writes `status.loadBalancer` where it differs: the node addresses on served
/// Ingresses; nothing on the others (an Ingress that moved to another class loses the
/// status weft wrote, and only that).
async fn write_status(client: &Client, s: &Stores, served: &[String]) {
    let ips = node_addresses(&s.nodes);
    for ing in s.ingresses.state() {
        let ns = ing.metadata.namespace.clone().unwrap_or_default();
        let name = ing.metadata.name.clone().unwrap_or_default();
        let ours = served.binary_search(&format!("{ns}/{name}")).is_ok();
        let have = status_ips(&ing);
        let want = match (ours, have == ips) {
            (true, false) => ips.clone(),
            (false, true) if !have.is_empty() => Vec::new(),
            _ => continue,
        };
        let entries: Vec<_> = want
            .iter()
            .map(|ip| serde_json::json!({"ip": ip}))
            .collect();
        let patch = serde_json::json!({"status": {"loadBalancer": {"ingress": entries}}});
        let api: Api<Ingress> = Api::namespaced(client.clone(), &ns);
        if let Err(e) = api
            .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            tracing::warn!("ingress {ns}/{name}: writing status: {e}");
        }
    }
}
