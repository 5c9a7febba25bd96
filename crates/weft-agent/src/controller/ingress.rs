//! The node's Ingress proxy: watches Ingresses, IngressClasses, TLS Secrets, Services and
//! EndpointSlices, compiles them into weft-ingress's routing table, and swaps it into the
//! proxy listening on this node's ports 80 and 443. Every node runs one, so any node
//! address (and the LoadBalancer addresses routed to the nodes) reaches it.
//!
//! Outside the nodes, the proxies are published as one Service, `kube-system/weft-ingress`
//! (type LoadBalancer, externalTrafficPolicy Local, no selector): each agent keeps an
//! EndpointSlice naming its own node, so a load balancer address delivers to the proxy of
//! whichever node the packet reaches, with the client's address kept.
//!
//! Status: each agent writes the same `status.loadBalancer` on the Ingresses weft
//! serves (that Service's load balancer addresses, or every node's address until it has
//! one), so agents agree and never flap.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{Ingress, IngressClass};
use kube::api::{Patch, PatchParams, PostParams};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client};
use tokio::sync::mpsc::UnboundedSender;
use tokio::sync::{watch, Notify};
use weft_ingress::proxy::{Http1, Limits, Proxy};
use weft_ingress::{compile, Cluster};

use super::lag::Lag;
use super::{AgentConfig, AgentError, Result};

/// Where the proxy listens, and on how many threads.
#[derive(Debug, Clone)]
pub struct IngressConfig {
    pub http: SocketAddr,
    pub https: SocketAddr,
    /// The proxy's workers: each a thread with its own event loop and its own sockets on
    /// both ports (weft_ingress::proxy::Workers), as nginx's worker processes.
    pub workers: NonZeroUsize,
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

/// Watches `api` into a store; every change for which `relevant` holds pokes `changed`
/// (the end of a re-list always does: what it dropped sends no event of its own). A
/// stream that ends reports on `ended` (the agent then stops rather than serve from a
/// frozen cache).
fn reflect<K>(
    api: Api<K>,
    what: &'static str,
    changed: Arc<Notify>,
    ended: UnboundedSender<&'static str>,
    lag: Arc<Lag>,
    relevant: impl Fn(&K) -> bool + Send + 'static,
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
    use watcher::Event as W;
    let (store, writer) = reflector::store::<K>();
    let stream = reflector::reflector(writer, watcher(api, watcher::Config::default()))
        .default_backoff()
        .for_each(move |e| {
            match e {
                Ok(e) => {
                    let poke = match &e {
                        W::Apply(o) | W::InitApply(o) | W::Delete(o) => relevant(o),
                        W::Init => false,
                        W::InitDone => true,
                    };
                    if poke {
                        lag.seen();
                        changed.notify_one()
                    }
                }
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

/// (namespace, name) of a Service.
type ServiceKey = (String, String);

/// The Services a compile reads: those the Ingresses name as backends, and the published
/// one (its load balancer addresses go into Ingress status). Changes to any other Service
/// or EndpointSlice cannot change the routes, so they neither trigger a compile nor enter
/// one: with 30k Services and a handful of Ingresses, recompiling (and copying the caches
/// of) every Service on every Service change made the agent's work per change grow with
/// the cluster.
fn named_services(ingresses: &[Arc<Ingress>]) -> HashSet<ServiceKey> {
    let mut out = HashSet::from([("kube-system".to_string(), PUBLISHED.to_string())]);
    for ing in ingresses {
        // As the compiler reads it (weft_ingress::compile).
        let ns = ing.metadata.namespace.as_deref().unwrap_or("default");
        let Some(spec) = &ing.spec else { continue };
        let paths = spec
            .rules
            .iter()
            .flatten()
            .filter_map(|r| r.http.as_ref())
            .flat_map(|h| h.paths.iter().map(|p| &p.backend));
        for b in spec.default_backend.iter().chain(paths) {
            if let Some(svc) = &b.service {
                out.insert((ns.to_string(), svc.name.clone()));
            }
        }
    }
    out
}

fn service_key(s: &Service) -> ServiceKey {
    (
        s.metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into()),
        s.metadata.name.clone().unwrap_or_default(),
    )
}

/// The Service an EndpointSlice belongs to, by its `kubernetes.io/service-name` label.
fn slice_service(s: &EndpointSlice) -> Option<ServiceKey> {
    let name = s
        .metadata
        .labels
        .as_ref()?
        .get("kubernetes.io/service-name")?;
    Some((
        s.metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into()),
        name.clone(),
    ))
}

/// What the last compile named, shared with the Service and EndpointSlice watches.
type Named = Arc<RwLock<HashSet<ServiceKey>>>;

fn read(named: &Named) -> std::sync::RwLockReadGuard<'_, HashSet<ServiceKey>> {
    // A set of names: nothing a panic elsewhere could leave half-written matters.
    named.read().unwrap_or_else(|e| e.into_inner())
}

/// Binds the proxy's ports (an error if they are taken) and starts serving and watching.
pub async fn start(
    client: &Client,
    cfg: &AgentConfig,
    ic: &IngressConfig,
    ended: &UnboundedSender<&'static str>,
    lag: Arc<Lag>,
) -> Result<()> {
    // WEFT_INGRESS_HTTP1=hyper serves HTTP/1.1 with hyper's server and client instead of
    // weft's own path: to compare the two on a node, or to fall back.
    let http1 = match std::env::var("WEFT_INGRESS_HTTP1") {
        Ok(v) => v
            .parse()
            .map_err(|e| weft_ingress::Error::invalid("WEFT_INGRESS_HTTP1", format!("{e}")))?,
        Err(_) => Http1::default(),
    };
    let proxy = Proxy::new(Limits::default(), &[cfg.node_name.as_str()])?.with_http1(http1);
    let (stop_tx, stop) = watch::channel(false);
    // Binds both ports on every worker before any serves: a taken port is an error here.
    let workers = proxy.start_workers(ic.workers, ic.http, Some(ic.https), stop)?;
    // A SIGTERM drains: no new connections, open requests get `drain` to finish, then the
    // agent exits (as soon as every worker has drained, or when `drain` is over).
    tokio::spawn(async move {
        if let Ok(mut term) =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            term.recv().await;
            let _ = stop_tx.send(true);
            let drained = tokio::task::spawn_blocking(move || workers.join());
            let _ = tokio::time::timeout(Limits::default().drain, drained).await;
            std::process::exit(0);
        }
    });
    let changed = Arc::new(Notify::new());
    // Until the first compile names them: the first list pokes anyway (its end).
    let named: Named = Arc::default();
    let c = client.clone();
    let stores = Stores {
        ingresses: reflect(
            Api::all(c.clone()),
            "Ingresses",
            changed.clone(),
            ended.clone(),
            lag.clone(),
            |_| true,
        ),
        classes: reflect(
            Api::all(c.clone()),
            "IngressClasses",
            changed.clone(),
            ended.clone(),
            lag.clone(),
            |_| true,
        ),
        secrets: reflect(
            Api::all(c.clone()),
            "Secrets",
            changed.clone(),
            ended.clone(),
            lag.clone(),
            |_| true,
        ),
        services: reflect(
            Api::all(c.clone()),
            "Services",
            changed.clone(),
            ended.clone(),
            lag.clone(),
            {
                let named = named.clone();
                move |s: &Service| read(&named).contains(&service_key(s))
            },
        ),
        slices: reflect(
            Api::all(c.clone()),
            "EndpointSlices",
            changed.clone(),
            ended.clone(),
            lag.clone(),
            {
                let named = named.clone();
                move |s: &EndpointSlice| slice_service(s).is_some_and(|k| read(&named).contains(&k))
            },
        ),
        nodes: reflect(
            Api::all(c),
            "Nodes",
            changed.clone(),
            ended.clone(),
            lag.clone(),
            |_| true,
        ),
    };
    tracing::info!(http = %ic.http, https = %ic.https, workers = ic.workers, "ingress proxy listening");
    if let Err(e) = publish(client, cfg, ic).await {
        // Node addresses still reach the proxy; only the load balancer address waits.
        tracing::warn!("ingress: publishing {PUBLISHED}: {e}");
    }
    let client = client.clone();
    tokio::spawn(async move {
        if let Err(e) = run(client, stores, proxy, changed, lag, named).await {
            tracing::error!("ingress: {e}");
        }
    });
    Ok(())
}

async fn run(
    client: Client,
    s: Stores,
    proxy: Proxy,
    changed: Arc<Notify>,
    lag: Arc<Lag>,
    named: Named,
) -> Result<()> {
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
        // The stores hold every change seen so far: this compile covers them all.
        lag.taken();
        let ingresses = s.ingresses.state();
        let wanted = named_services(&ingresses);
        // Published before the Services and slices are read: a change to a newly named
        // one after this pokes the next compile, one before it is in this read.
        *named.write().unwrap_or_else(|e| e.into_inner()) = wanted.clone();
        let cluster = Cluster {
            ingresses,
            classes: s.classes.state(),
            secrets: s
                .secrets
                .state()
                .into_iter()
                .filter(|x| x.type_.as_deref() == Some("kubernetes.io/tls"))
                .collect(),
            services: s
                .services
                .state_filter(|x| wanted.contains(&service_key(x))),
            slices: s
                .slices
                .state_filter(|x| slice_service(x).is_some_and(|k| wanted.contains(&k))),
        };
        // Compiling thousands of Ingresses takes milliseconds: off the runtime's workers,
        // which serve requests meanwhile.
        let p = proxy.clone();
        let (problems, served, routes, swapped) = tokio::task::spawn_blocking(move || {
            let compiled = compile(&cluster);
            let problems = compiled.problems.clone();
            let served = compiled.served.clone();
            let routes = compiled.table.route_count();
            (problems, served, routes, p.update(compiled))
        })
        .await
        .map_err(|e| AgentError::Watch {
            what: "Ingresses",
            problem: format!("compiling the routes failed: {e}"),
        })?;
        if problems != last_problems {
            for p in &problems {
                tracing::warn!("ingress {}: {}", p.ingress, p.message);
            }
            last_problems = problems;
        }
        if swapped {
            tracing::info!(ingresses = served.len(), routes, "ingress routes updated");
        }
        lag.applied();
        write_status(&client, &s, &served).await;
        tokio::select! {
            _ = changed.notified() => {}
            _ = tokio::time::sleep(Duration::from_secs(30)) => {}
        }
        tokio::time::sleep(BATCH).await;
    }
}

/// The Service that publishes the node proxies (in `kube-system`).
pub const PUBLISHED: &str = "weft-ingress";

fn published_service() -> Service {
    let v = serde_json::json!({
        "metadata": {"name": PUBLISHED, "namespace": "kube-system",
                     "labels": {"app.kubernetes.io/name": "weft-ingress"}},
        "spec": {"type": "LoadBalancer", "externalTrafficPolicy": "Local", "ports": [
            {"name": "http", "port": 80, "protocol": "TCP"},
            {"name": "https", "port": 443, "protocol": "TCP"}]}
    });
    serde_json::from_value(v).unwrap_or_default()
}

fn node_slice(cfg: &AgentConfig, ic: &IngressConfig) -> EndpointSlice {
    let v = serde_json::json!({
        "metadata": {"name": format!("{PUBLISHED}-{}", cfg.node_name), "namespace": "kube-system",
                     "labels": {"kubernetes.io/service-name": PUBLISHED,
                                "endpointslice.kubernetes.io/managed-by": "weft-agent"}},
        "addressType": if cfg.node_ip.is_ipv4() { "IPv4" } else { "IPv6" },
        "endpoints": [{"addresses": [cfg.node_ip.to_string()], "nodeName": cfg.node_name,
                       "conditions": {"ready": true, "serving": true, "terminating": false}}],
        "ports": [{"name": "http", "port": ic.http.port(), "protocol": "TCP"},
                  {"name": "https", "port": ic.https.port(), "protocol": "TCP"}]
    });
    serde_json::from_value(v).unwrap_or_default()
}

/// Creates the published Service if nobody has, and this node's EndpointSlice of it.
async fn publish(client: &Client, cfg: &AgentConfig, ic: &IngressConfig) -> Result<()> {
    let pp = PostParams::default();
    let services: Api<Service> = Api::namespaced(client.clone(), "kube-system");
    match services.create(&pp, &published_service()).await {
        Err(kube::Error::Api(e)) if e.code == 409 => {}
        r => {
            r.map_err(AgentError::api("create Service kube-system/weft-ingress"))?;
        }
    }
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), "kube-system");
    let mut want = node_slice(cfg, ic);
    let name = want.metadata.name.clone().unwrap_or_default();
    match slices
        .get_opt(&name)
        .await
        .map_err(AgentError::api("read this node's ingress slice"))?
    {
        None => {
            slices
                .create(&pp, &want)
                .await
                .map_err(AgentError::api("create this node's ingress slice"))?;
        }
        Some(have) if have.endpoints != want.endpoints || have.ports != want.ports => {
            want.metadata.resource_version = have.metadata.resource_version;
            slices
                .replace(&name, &pp, &want)
                .await
                .map_err(AgentError::api("update this node's ingress slice"))?;
        }
        Some(_) => {}
    }
    Ok(())
}

/// Where served Ingresses are reachable: the published Service's load balancer
/// addresses, else every node's InternalIP; sorted.
fn reachable_at(services: &Store<Service>, nodes: &Store<Node>) -> Vec<String> {
    let key = kube::runtime::reflector::ObjectRef::new(PUBLISHED).within("kube-system");
    let mut lb: Vec<String> = services
        .get(&key)
        .and_then(|s| s.status.clone())
        .and_then(|s| s.load_balancer)
        .and_then(|l| l.ingress)
        .into_iter()
        .flatten()
        .filter_map(|i| i.ip)
        .collect();
    if lb.is_empty() {
        return node_addresses(nodes);
    }
    lb.sort();
    lb
}

/// Every node's InternalIP, sorted.
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
    let ips = reachable_at(&s.services, &s.nodes);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn ingress(ns: &str, default: Option<&str>, paths: &[&str]) -> Arc<Ingress> {
        let backend = |s: &str| serde_json::json!({"service": {"name": s, "port": {"number": 80}}});
        let mut spec = serde_json::json!({"rules": [{"host": "x", "http": {"paths":
            paths.iter().map(|p| serde_json::json!({"path": "/", "pathType": "Prefix", "backend": backend(p)})).collect::<Vec<_>>()}}]});
        if let Some(d) = default {
            spec["defaultBackend"] = backend(d);
        }
        let v = serde_json::json!({"metadata": {"name": "i", "namespace": ns}, "spec": spec});
        Arc::new(serde_json::from_value(v).expect("an Ingress"))
    }

    fn key(ns: &str, name: &str) -> ServiceKey {
        (ns.to_string(), name.to_string())
    }

    #[test]
    fn a_compile_reads_only_the_services_ingresses_name_and_the_published_one() {
        let named = named_services(&[
            ingress("a", Some("fallback"), &["web", "api"]),
            ingress("b", None, &["web"]),
        ]);
        let want = HashSet::from([
            key("kube-system", PUBLISHED),
            key("a", "fallback"),
            key("a", "web"),
            key("a", "api"),
            key("b", "web"),
        ]);
        assert_eq!(named, want);
        let mut slice = EndpointSlice::default();
        slice.metadata.namespace = Some("b".into());
        slice.metadata.labels =
            Some([("kubernetes.io/service-name".to_string(), "web".to_string())].into());
        assert_eq!(slice_service(&slice), Some(key("b", "web")));
        slice.metadata.labels = None;
        assert_eq!(slice_service(&slice), None, "a slice of no Service");
        assert!(named_services(&[]).contains(&key("kube-system", PUBLISHED)));
    }
}
