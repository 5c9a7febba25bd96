//! The EndpointSlice controller works from indexes (the Services a pod's labels select,
//! the pods a selector picks): after churn at scale its slices must equal a
//! recomputation from scratch over every Service and pod.

mod common;

use common::*;
use futures_util::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use weft_apiserver::controllers::endpointslice::{desired_slices, MANAGED_BY};

const SERVICES: usize = 120;
const PODS: usize = 400;

fn svc(i: usize) -> Service {
    // Selectors of one or two labels, overlapping: most pods are picked by several.
    let mut selector = json!({"app": format!("a{}", i % 12)});
    if i.is_multiple_of(3) {
        selector["tier"] = json!(format!("t{}", i % 4));
    }
    serde_json::from_value(json!({
        "metadata": {"name": format!("s{i:03}")},
        "spec": {"selector": selector, "ports": [
            {"name": "http", "port": 80, "targetPort": if i.is_multiple_of(2) { json!("web") } else { json!(8080) }}]}
    }))
    .expect("literal")
}

fn pod(i: usize) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": format!("p{i:03}"), "labels": {"app": format!("a{}", i % 12), "tier": format!("t{}", i % 4)}},
        "spec": {"containers": [{"name": "c", "image": "x",
            "ports": [{"name": "web", "containerPort": 8000 + (i % 3) as i32}]}]}
    }))
    .expect("literal")
}

/// Every managed slice, by name: (service, endpoints, ports) as typed values.
type Slices = BTreeMap<String, (String, Value, Value)>;

fn typed(s: &Value) -> (String, Value, Value) {
    let s: EndpointSlice = serde_json::from_value(s.clone()).expect("a slice");
    let svc = s
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get("kubernetes.io/service-name").cloned())
        .unwrap_or_default();
    let mut endpoints = serde_json::to_value(&s.endpoints).unwrap_or_default();
    if let Some(eps) = endpoints.as_array_mut() {
        eps.sort_by_key(|e| e["targetRef"]["name"].as_str().unwrap_or("").to_string());
    }
    (
        svc,
        endpoints,
        serde_json::to_value(&s.ports).unwrap_or_default(),
    )
}

async fn stored(api: &Api<EndpointSlice>) -> Slices {
    let list = api.list(&ListParams::default()).await.expect("list slices");
    list.items
        .iter()
        .filter(|s| {
            s.metadata
                .labels
                .as_ref()
                .and_then(|l| l.get("endpointslice.kubernetes.io/managed-by"))
                == Some(&MANAGED_BY.to_string())
        })
        .map(|s| {
            let v = serde_json::to_value(s).unwrap_or_default();
            (s.metadata.name.clone().unwrap_or_default(), typed(&v))
        })
        .collect()
}

async fn from_scratch(svcs: &Api<Service>, pods: &Api<Pod>) -> Slices {
    let pods = pods
        .list(&ListParams::default())
        .await
        .expect("list pods")
        .items;
    let mut out = Slices::new();
    for s in svcs
        .list(&ListParams::default())
        .await
        .expect("list services")
        .items
    {
        for slice in desired_slices(&s, &pods) {
            let name = slice.metadata.name.clone().unwrap_or_default();
            let v = serde_json::to_value(&slice).unwrap_or_default();
            out.insert(name, typed(&v));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slices_after_churn_equal_a_recomputation() {
    let s = start().await;
    let c = s.client().await;
    let ns: Namespace =
        serde_json::from_value(json!({"metadata": {"name": "scale"}})).expect("literal");
    Api::<Namespace>::all(c.clone())
        .create(&PostParams::default(), &ns)
        .await
        .expect("namespace");
    let svcs: Api<Service> = Api::namespaced(c.clone(), "scale");
    let pods: Api<Pod> = Api::namespaced(c.clone(), "scale");
    let slices: Api<EndpointSlice> = Api::namespaced(c.clone(), "scale");
    let run =
        |n: usize, f: &(dyn Fn(usize) -> futures_util::future::BoxFuture<'static, ()> + Sync)| {
            let futs: Vec<_> = (0..n).map(f).collect();
            bounded(
                "requests",
                futures_util::stream::iter(futs)
                    .buffer_unordered(16)
                    .collect::<Vec<()>>(),
            )
        };
    let pp = PostParams::default;
    run(SERVICES, &|i| {
        let svcs = svcs.clone();
        Box::pin(async move {
            svcs.create(&pp(), &svc(i)).await.expect("service");
        })
    })
    .await;
    run(PODS, &|i| {
        let pods = pods.clone();
        Box::pin(async move {
            pods.create(&pp(), &pod(i)).await.expect("pod");
            let ready = if i % 5 == 0 { "False" } else { "True" };
            let status = json!({"status": {"podIP": format!("10.244.{}.{}", 1 + i / 200, 2 + i % 200),
                "conditions": [{"type": "Ready", "status": ready}]}});
            pods.patch_status(&format!("p{i:03}"), &PatchParams::default(), &Patch::Merge(&status))
                .await
                .expect("pod status");
        })
    })
    .await;
    // Churn: relabel a quarter of the pods, delete a tenth, flip readiness of some,
    // change a tenth of the selectors and delete a few Services.
    run(PODS, &|i| {
        let pods = pods.clone();
        Box::pin(async move {
            let name = format!("p{i:03}");
            match i % 10 {
                0 => {
                    pods.delete(&name, &DeleteParams::default())
                        .await
                        .expect("delete pod");
                }
                1..=3 => {
                    let p = json!({"metadata": {"labels": {"app": format!("a{}", (i * 7) % 12)}}});
                    pods.patch(&name, &PatchParams::default(), &Patch::Merge(&p))
                        .await
                        .expect("relabel");
                }
                4 => {
                    let p =
                        json!({"status": {"conditions": [{"type": "Ready", "status": "False"}]}});
                    pods.patch_status(&name, &PatchParams::default(), &Patch::Merge(&p))
                        .await
                        .expect("unready");
                }
                _ => {}
            }
        })
    })
    .await;
    run(SERVICES, &|i| {
        let svcs = svcs.clone();
        Box::pin(async move {
            let name = format!("s{i:03}");
            match i % 10 {
                0 => {
                    svcs.delete(&name, &DeleteParams::default()).await.expect("delete service");
                }
                1 => {
                    let p = json!({"spec": {"selector": {"app": format!("a{}", (i + 5) % 12), "tier": null}}});
                    svcs.patch(&name, &PatchParams::default(), &Patch::Merge(&p)).await.expect("reselect");
                }
                _ => {}
            }
        })
    })
    .await;
    let want = from_scratch(&svcs, &pods).await;
    assert!(want.len() >= SERVICES * 9 / 10, "{} slices", want.len());
    let endpoints: usize = want
        .values()
        .map(|(_, e, _)| e.as_array().map_or(0, Vec::len))
        .sum();
    assert!(
        endpoints > PODS,
        "{endpoints} endpoints: most pods are picked by several Services"
    );
    let got = eventually("slices equal a recomputation", || async {
        let got = stored(&slices).await;
        (got == want).then_some(got)
    })
    .await;
    assert_eq!(got.len(), want.len());
    s.server.expect("running").shutdown().await;
}
