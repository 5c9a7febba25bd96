//! apps/v1 Deployments: pods from the template, rollouts, scale down, garbage collection.

mod common;

use common::*;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;

fn images(pods: &[Pod]) -> Vec<String> {
    let mut v: Vec<String> = pods
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter_map(|p| p.spec.as_ref()?.containers[0].image.clone())
        .collect();
    v.sort();
    v
}

/// Plays the node agent: every bound, running-to-be pod becomes Ready; pods being
/// deleted are finished off.
async fn agent_pass(pods: &Api<Pod>) {
    for p in pods.list(&ListParams::default()).await.expect("list").items {
        let name = p.metadata.name.clone().unwrap_or_default();
        if p.metadata.deletion_timestamp.is_some() {
            let dp = DeleteParams {
                grace_period_seconds: Some(0),
                ..Default::default()
            };
            let _ = pods.delete(&name, &dp).await;
            continue;
        }
        let bound = p.spec.as_ref().and_then(|s| s.node_name.clone()).is_some();
        let is_ready = p
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
        if bound && !is_ready {
            let st = json!({"status": {"phase": "Running", "podIP": "10.244.1.9",
                "conditions": [{"type": "Ready", "status": "True"}]}});
            let _ = pods
                .patch_status(&name, &PatchParams::default(), &Patch::Merge(&st))
                .await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deployment_creates_rolls_scales_and_collects_its_pods() {
    let s = start().await;
    let c = s.client().await;
    let node: Node = serde_json::from_value(json!({"metadata": {"name": "node-1"},
        "status": {"conditions": [{"type": "Ready", "status": "True"}]}}))
    .expect("node");
    Api::<Node>::all(c.clone())
        .create(&PostParams::default(), &node)
        .await
        .expect("node");
    let deps: Api<Deployment> = Api::namespaced(c.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(c.clone(), "default");
    let d: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "web", "image": "v1", "ports": [{"containerPort": 80}]}]}}}
    }))
    .expect("deployment");
    deps.create(&PostParams::default(), &d)
        .await
        .expect("create");

    let want = |imgs: &[&str]| imgs.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    eventually("3 ready v1 pods", || async {
        agent_pass(&pods).await;
        let d = deps.get("web").await.ok()?;
        let st = d.status?;
        let list = pods.list(&ListParams::default()).await.ok()?;
        (st.ready_replicas == Some(3) && images(&list.items) == want(&["v1", "v1", "v1"]))
            .then_some(())
    })
    .await;

    // A new image rolls the pods over.
    let p =
        json!({"spec": {"template": {"spec": {"containers": [{"name": "web", "image": "v2"}]}}}});
    deps.patch("web", &PatchParams::default(), &Patch::Strategic(&p))
        .await
        .expect("patch");
    eventually("rolled to v2", || async {
        agent_pass(&pods).await;
        let d = deps.get("web").await.ok()?;
        let st = d.status?;
        let list = pods.list(&ListParams::default()).await.ok()?;
        (st.updated_replicas == Some(3)
            && st.replicas == Some(3)
            && images(&list.items) == want(&["v2", "v2", "v2"]))
        .then_some(())
    })
    .await;

    // Scale down to 1.
    let p = json!({"spec": {"replicas": 1}});
    deps.patch("web", &PatchParams::default(), &Patch::Merge(&p))
        .await
        .expect("scale");
    eventually("one pod", || async {
        agent_pass(&pods).await;
        let list = pods.list(&ListParams::default()).await.ok()?;
        (images(&list.items) == want(&["v2"])).then_some(())
    })
    .await;

    // Deleting the Deployment deletes its pods.
    deps.delete("web", &DeleteParams::default())
        .await
        .expect("delete");
    eventually("pods collected", || async {
        agent_pass(&pods).await;
        let list = pods.list(&ListParams::default()).await.ok()?;
        list.items.is_empty().then_some(())
    })
    .await;

    // A template that its selector does not select is invalid.
    let bad: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "bad"},
        "spec": {"selector": {"matchLabels": {"app": "x"}},
            "template": {"metadata": {"labels": {"app": "y"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}}}
    }))
    .expect("deployment");
    let e = deps
        .create(&PostParams::default(), &bad)
        .await
        .expect_err("invalid");
    let st = api_status(&e).expect("status");
    assert_eq!(st.code, 422);
    let fields: Vec<String> = st
        .details
        .as_ref()
        .map(|d| d.causes.iter().map(|c| c.field.clone()).collect())
        .unwrap_or_default();
    assert_eq!(fields, ["spec.template.metadata.labels"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scale_subresource_sets_replicas() {
    let s = start().await;
    let deps: Api<Deployment> = Api::namespaced(s.client().await, "default");
    let d: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "web", "image": "v1"}]}}}
    }))
    .expect("deployment");
    deps.create(&PostParams::default(), &d)
        .await
        .expect("create");
    let sc = deps.get_scale("web").await.expect("get scale");
    assert_eq!(sc.spec.and_then(|s| s.replicas), Some(1));
    assert_eq!(
        sc.status.and_then(|s| s.selector).as_deref(),
        Some("app=web")
    );
    let p = json!({"spec": {"replicas": 5}});
    deps.patch_scale("web", &PatchParams::default(), &Patch::Merge(&p))
        .await
        .expect("scale");
    let d = deps.get("web").await.expect("get");
    assert_eq!(d.spec.replicas, Some(5));
}

fn deployment(name: &str, replicas: i32) -> Deployment {
    serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "c", "image": "v1"}]}}}
    }))
    .expect("deployment")
}

/// Each live Deployment's pods and status, recomputed from full listings by owner uid;
/// Some when every Deployment has its replicas and says so, and no pod is owned by a
/// Deployment that is gone.
async fn recomputed(deps: &Api<Deployment>, pods: &Api<Pod>) -> Option<usize> {
    let ds = deps.list(&ListParams::default()).await.ok()?.items;
    let ps = pods.list(&ListParams::default()).await.ok()?.items;
    let owner = |p: &Pod| -> Option<String> {
        let refs = p.metadata.owner_references.as_ref()?;
        Some(refs.iter().find(|o| o.kind == "Deployment")?.uid.clone())
    };
    let uids: Vec<String> = ds.iter().filter_map(|d| d.metadata.uid.clone()).collect();
    if ps
        .iter()
        .any(|p| owner(p).is_some_and(|u| !uids.contains(&u)))
    {
        return None;
    }
    for d in &ds {
        let mine = ps
            .iter()
            .filter(|p| owner(p) == d.metadata.uid && p.metadata.deletion_timestamp.is_none())
            .count() as i32;
        let st = d.status.as_ref()?;
        if Some(mine) != d.spec.replicas || st.replicas != Some(mine) {
            return None;
        }
    }
    Some(ds.len())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_scale_and_after_a_restart_pods_equal_a_recomputation_from_scratch() {
    let mut s = start().await;
    let c = s.client().await;
    let node: Node = serde_json::from_value(json!({"metadata": {"name": "node-1"},
        "status": {"conditions": [{"type": "Ready", "status": "True"}]}}))
    .expect("node");
    Api::<Node>::all(c.clone())
        .create(&PostParams::default(), &node)
        .await
        .expect("node");
    let deps: Api<Deployment> = Api::namespaced(c.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(c.clone(), "default");
    for i in 0..30 {
        deps.create(&PostParams::default(), &deployment(&format!("d{i}"), 4))
            .await
            .expect("create");
    }
    eventually("30 Deployments of 4", || async {
        agent_pass(&pods).await;
        (recomputed(&deps, &pods).await == Some(30)).then_some(())
    })
    .await;
    // Scale some down, some up, and delete others; then restart, so the controller's
    // resync (through the owner index) must finish what the events started.
    for i in 0..10 {
        let p = json!({"spec": {"replicas": if i % 2 == 0 { 1 } else { 6 }}});
        deps.patch(&format!("d{i}"), &PatchParams::default(), &Patch::Merge(&p))
            .await
            .expect("scale");
    }
    for i in 10..15 {
        deps.delete(&format!("d{i}"), &DeleteParams::default())
            .await
            .expect("delete");
    }
    let addr = s.addr();
    s.restart_on(addr, 20_000).await;
    eventually("25 Deployments, each with its replicas", || async {
        agent_pass(&pods).await;
        (recomputed(&deps, &pods).await == Some(25)).then_some(())
    })
    .await;
    let total = pods.list(&ListParams::default()).await.expect("list").items;
    let live = total
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none());
    // d0, d2, .. at 1; d1, d3, .. at 6; d15..d29 at 4.
    assert_eq!(live.count(), 5 + 5 * 6 + 15 * 4);
}
