//! The cluster-wide watches behind the node's own models (cluster DNS, NetworkPolicy):
//! each kind is watched once and its events handed to every model that needs them.

use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, ListParams};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client};
use tokio::sync::mpsc::UnboundedSender;

use super::lag::Queue;
use super::{dns, policy};

/// Where events go; a model that is off has no sender.
#[derive(Clone)]
pub struct Sinks {
    pub dns: Option<Queue<dns::Event>>,
    pub policy: Option<Queue<policy::Event>>,
}

/// The version of ClusterNetworkPolicy the agent reads (the storage version; objects
/// written as v1alpha2 are served under it too).
const CNP: (&str, &str, &str) = (
    "policy.networking.k8s.io",
    "v1beta1",
    "ClusterNetworkPolicy",
);

/// Watches `api` until the process ends; `send` gets every event, and the watch waits
/// while a consumer's queue is full. A stream that ends reports on `ended` (the agent
/// then stops rather than act on a frozen view).
fn watch<K, F>(api: Api<K>, what: &'static str, ended: UnboundedSender<&'static str>, send: F)
where
    K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + 'static,
    F: Fn(watcher::Event<K>) -> BoxFuture<'static, ()> + Send + 'static,
{
    let events = watcher(api, watcher::Config::default())
        .default_backoff()
        .for_each(move |e| match e {
            Ok(e) => send(e),
            // The watcher backs off and retries by itself; say why it has to.
            Err(e) => {
                tracing::warn!("watching {what}: {e}");
                futures::future::ready(()).boxed()
            }
        });
    tokio::spawn(async move {
        events.await;
        let _ = ended.send(what);
    });
}

/// Starts the watches the sinks need.
pub async fn spawn(client: &Client, sinks: Sinks, ended: &UnboundedSender<&'static str>) {
    if sinks.dns.is_none() && sinks.policy.is_none() {
        return;
    }
    let s = sinks.clone();
    watch(
        Api::<Pod>::all(client.clone()),
        "Pods",
        ended.clone(),
        move |e| {
            let (pol, dns) = (s.policy.clone(), s.dns.clone());
            async move {
                if let Some(p) = pol {
                    p.push(policy::Event::Pod(Box::new(e.clone()))).await;
                }
                if let Some(d) = dns {
                    d.push(dns::Event::Pod(Box::new(e))).await;
                }
            }
            .boxed()
        },
    );
    let s = sinks.clone();
    watch(
        Api::<Namespace>::all(client.clone()),
        "Namespaces",
        ended.clone(),
        move |e| {
            let (pol, dns) = (s.policy.clone(), s.dns.clone());
            async move {
                if let Some(p) = pol {
                    p.push(policy::Event::Namespace(Box::new(e.clone()))).await;
                }
                if let Some(d) = dns {
                    d.push(dns::Event::Namespace(Box::new(e))).await;
                }
            }
            .boxed()
        },
    );
    let s = sinks.clone();
    watch(
        Api::<Node>::all(client.clone()),
        "Nodes",
        ended.clone(),
        move |e| {
            let (pol, dns) = (s.policy.clone(), s.dns.clone());
            async move {
                if let Some(p) = pol {
                    p.push(policy::Event::Node(Box::new(e.clone()))).await;
                }
                if let Some(d) = dns {
                    d.push(dns::Event::Node(Box::new(e))).await;
                }
            }
            .boxed()
        },
    );
    let Some(p) = sinks.policy else { return };
    let tx = p.clone();
    watch(
        Api::<NetworkPolicy>::all(client.clone()),
        "NetworkPolicies",
        ended.clone(),
        move |e| {
            let tx = tx.clone();
            async move { tx.push(policy::Event::NetworkPolicy(Box::new(e))).await }.boxed()
        },
    );
    let ar = ApiResource::from_gvk(&GroupVersionKind::gvk(CNP.0, CNP.1, CNP.2));
    let api = Api::<DynamicObject>::all_with(client.clone(), &ar);
    // A cluster without the network-policy-api CRDs has no ClusterNetworkPolicies: an
    // empty list, not a view that never completes.
    match api.list_metadata(&ListParams::default().limit(1)).await {
        Err(kube::Error::Api(e)) if e.code == 404 => {
            tracing::info!(
                "ClusterNetworkPolicy is not served by this API; only NetworkPolicy applies"
            );
            for e in [watcher::Event::Init, watcher::Event::InitDone] {
                p.push(policy::Event::ClusterNetworkPolicy(Box::new(e)))
                    .await;
            }
        }
        _ => {
            let tx = p.clone();
            watch_dynamic(api, ar, "ClusterNetworkPolicies", ended.clone(), move |e| {
                let tx = tx.clone();
                async move {
                    tx.push(policy::Event::ClusterNetworkPolicy(Box::new(e)))
                        .await
                }
                .boxed()
            })
        }
    }
}

/// [`watch`] for a kind known only by its group, version and kind.
fn watch_dynamic<F>(
    api: Api<DynamicObject>,
    ar: ApiResource,
    what: &'static str,
    ended: UnboundedSender<&'static str>,
    send: F,
) where
    F: Fn(watcher::Event<DynamicObject>) -> BoxFuture<'static, ()> + Send + 'static,
{
    let events = kube::runtime::watcher::watcher(api, watcher::Config::default())
        .default_backoff()
        .for_each(move |e| {
            match e {
                Ok(mut e) => {
                    // Objects arrive without their type when listed; the model wants it.
                    if let watcher::Event::Apply(o) | watcher::Event::InitApply(o) = &mut e {
                        if o.types.is_none() {
                            o.types = Some(kube::api::TypeMeta {
                                api_version: ar.api_version.clone(),
                                kind: ar.kind.clone(),
                            });
                        }
                    }
                    send(e)
                }
                Err(e) => {
                    tracing::warn!("watching {what}: {e}");
                    futures::future::ready(()).boxed()
                }
            }
        });
    tokio::spawn(async move {
        events.await;
        let _ = ended.send(what);
    });
}
