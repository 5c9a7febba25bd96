//! The scheduler at a node's capacity: a node takes as many pods as its pod CIDR holds
//! (its allocatable pods); the rest stay unscheduled with `PodScheduled=False` and a
//! `FailedScheduling` Event, and are bound once room frees up. At scale, the bindings
//! equal a recomputation from a full listing. Pods that finished (Succeeded or Failed)
//! but are not deleted take no room.

mod common;

use common::*;
use k8s_openapi::api::core::v1::{Event, Node, Pod};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;
use std::collections::BTreeMap;

fn node(name: &str, cidr: &str) -> Node {
    serde_json::from_value(
        json!({"metadata": {"name": name}, "spec": {"podCIDR": cidr},
        "status": {"conditions": [{"type": "Ready", "status": "True"}]}}),
    )
    .expect("literal")
}

fn pod(name: &str) -> Pod {
    serde_json::from_value(json!({"metadata": {"name": name},
        "spec": {"containers": [{"name": "c", "image": "sh"}]}}))
    .expect("literal")
}

fn node_of(p: &Pod) -> Option<String> {
    p.spec.as_ref()?.node_name.clone().filter(|n| !n.is_empty())
}

/// The PodScheduled=False message of an unbound pod.
fn unschedulable(p: &Pod) -> Option<String> {
    let c = p
        .status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "PodScheduled")?;
    (c.status == "False" && c.reason.as_deref() == Some("Unschedulable"))
        .then(|| c.message.clone().unwrap_or_default())
}

fn allocatable_pods(n: &Node) -> Option<String> {
    let a = n.status.as_ref()?.allocatable.as_ref()?;
    Some(a.get("pods")?.0.clone())
}

/// (pods per node, unbound pods) from a full listing.
async fn recount(pods: &Api<Pod>) -> (BTreeMap<String, usize>, Vec<Pod>) {
    let all = pods.list(&ListParams::default()).await.expect("list").items;
    let mut per_node = BTreeMap::new();
    let mut unbound = Vec::new();
    for p in all {
        match node_of(&p) {
            Some(n) => *per_node.entry(n).or_insert(0) += 1,
            None => unbound.push(p),
        }
    }
    (per_node, unbound)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_beyond_a_nodes_capacity_wait_unscheduled_until_room_frees() {
    let s = start().await;
    let c = s.client().await;
    let nodes: Api<Node> = Api::all(c.clone());
    // A /29 holds 5 pods (8 addresses but network, gateway, broadcast).
    let n = nodes
        .create(&PostParams::default(), &node("small", "10.244.9.0/29"))
        .await
        .expect("node created");
    assert_eq!(allocatable_pods(&n).as_deref(), Some("5"));
    let pods: Api<Pod> = Api::namespaced(c.clone(), "default");
    for i in 0..8 {
        pods.create(&PostParams::default(), &pod(&format!("p{i}")))
            .await
            .expect("pod created");
    }
    let waiting = eventually("5 bound, 3 unschedulable", || async {
        let (per_node, unbound) = recount(&pods).await;
        let said: Vec<String> = unbound.iter().filter_map(unschedulable).collect();
        (per_node.get("small") == Some(&5) && said.len() == 3).then_some((unbound, said))
    })
    .await;
    let (unbound, said) = waiting;
    for m in &said {
        assert_eq!(m, "0/1 nodes are available: 1 Too many pods.");
    }
    let events: Api<Event> = Api::namespaced(c.clone(), "default");
    eventually("a FailedScheduling Event per waiting pod", || async {
        let evs = events.list(&ListParams::default()).await.ok()?.items;
        let failed = unbound.iter().all(|p| {
            evs.iter().any(|e| {
                e.reason.as_deref() == Some("FailedScheduling")
                    && e.involved_object.name == p.metadata.name
            })
        });
        failed.then_some(())
    })
    .await;
    // Two bound pods go (as the agent finishes them): two waiting pods take their place.
    let all = pods.list(&ListParams::default()).await.expect("list").items;
    let gone: Vec<String> = all
        .iter()
        .filter(|p| node_of(p).is_some())
        .take(2)
        .filter_map(|p| p.metadata.name.clone())
        .collect();
    let now = DeleteParams {
        grace_period_seconds: Some(0),
        ..Default::default()
    };
    for name in &gone {
        pods.delete(name, &now).await.expect("deleted");
    }
    let (per_node, unbound) = eventually("room used again", || async {
        let (per_node, unbound) = recount(&pods).await;
        (per_node.get("small") == Some(&5) && unbound.len() == 1).then_some((per_node, unbound))
    })
    .await;
    assert_eq!(per_node.len(), 1);
    assert!(unschedulable(&unbound[0]).is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_scale_bindings_equal_a_recount_and_fill_nodes_to_capacity() {
    let s = start().await;
    let c = s.client().await;
    let nodes: Api<Node> = Api::all(c.clone());
    // Two /26 nodes hold 61 pods each; 150 pods leave 28 waiting.
    for (name, cidr) in [("node-1", "10.244.1.0/26"), ("node-2", "10.244.2.0/26")] {
        nodes
            .create(&PostParams::default(), &node(name, cidr))
            .await
            .expect("node created");
    }
    let pods: Api<Pod> = Api::namespaced(c.clone(), "default");
    for i in 0..150 {
        pods.create(&PostParams::default(), &pod(&format!("p{i}")))
            .await
            .expect("pod created");
    }
    let (per_node, unbound) = eventually("nodes full", || async {
        let (per_node, unbound) = recount(&pods).await;
        let decided = unbound.iter().all(|p| unschedulable(p).is_some());
        (per_node.values().sum::<usize>() == 122 && decided).then_some((per_node, unbound))
    })
    .await;
    assert_eq!(per_node.get("node-1"), Some(&61));
    assert_eq!(per_node.get("node-2"), Some(&61));
    assert_eq!(unbound.len(), 28);
    // A third node: the waiting pods go there (up to its capacity), as a pass from
    // scratch would place them.
    nodes
        .create(&PostParams::default(), &node("node-3", "10.244.3.0/27"))
        .await
        .expect("node created");
    let (per_node, unbound) = eventually("node-3 takes the 28 waiting", || async {
        let (per_node, unbound) = recount(&pods).await;
        (per_node.get("node-3") == Some(&28)).then_some((per_node, unbound))
    })
    .await;
    assert!(unbound.is_empty());
    assert_eq!(per_node.values().sum::<usize>(), 150);
}

fn phase(p: &Pod) -> Option<&str> {
    p.status.as_ref()?.phase.as_deref()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finished_pods_take_no_room_on_their_node() {
    let s = start().await;
    let c = s.client().await;
    let nodes: Api<Node> = Api::all(c.clone());
    nodes
        .create(&PostParams::default(), &node("small", "10.244.9.0/29"))
        .await
        .expect("node created");
    let pods: Api<Pod> = Api::namespaced(c.clone(), "default");
    let create = |name: String| {
        let pods = pods.clone();
        async move {
            let p = pod(&name);
            pods.create(&PostParams::default(), &p)
                .await
                .expect("pod created");
        }
    };
    for i in 0..6 {
        create(format!("p{i}")).await;
    }
    let unbound = eventually("5 bound, 1 unschedulable", || async {
        let (per_node, unbound) = recount(&pods).await;
        let decided = unbound.iter().all(|p| unschedulable(p).is_some());
        (per_node.get("small") == Some(&5) && unbound.len() == 1 && decided).then_some(unbound)
    })
    .await;
    let waiting = unbound[0].metadata.name.clone().unwrap_or_default();
    // Two bound pods finish, one Succeeded, one Failed, and stay: the waiting pod is bound.
    let all = pods.list(&ListParams::default()).await.expect("list").items;
    let bound: Vec<String> = all
        .iter()
        .filter(|p| node_of(p).is_some())
        .filter_map(|p| p.metadata.name.clone())
        .collect();
    for (name, ph) in bound.iter().zip(["Succeeded", "Failed"]) {
        let st = json!({"status": {"phase": ph}});
        pods.patch_status(name, &PatchParams::default(), &Patch::Merge(&st))
            .await
            .expect("status patched");
    }
    eventually("the waiting pod bound", || async {
        let p = pods.get(&waiting).await.ok()?;
        (node_of(&p).as_deref() == Some("small")).then_some(())
    })
    .await;
    // One more fits (6 bound, 2 finished: 4 take room), the next does not.
    create("p6".into()).await;
    create("p7".into()).await;
    let (per_node, unbound) = eventually("7 bound, 1 unschedulable", || async {
        let (per_node, unbound) = recount(&pods).await;
        let decided = unbound.iter().all(|p| unschedulable(p).is_some());
        (per_node.get("small") == Some(&7) && unbound.len() == 1 && decided)
            .then_some((per_node, unbound))
    })
    .await;
    assert_eq!(per_node.len(), 1);
    let all = pods.list(&ListParams::default()).await.expect("list").items;
    let running = all
        .iter()
        .filter(|p| node_of(p).is_some())
        .filter(|p| !matches!(phase(p), Some("Succeeded" | "Failed")))
        .count();
    assert_eq!(running, 5);
    assert_eq!(
        unschedulable(&unbound[0]).as_deref(),
        Some("0/1 nodes are available: 1 Too many pods.")
    );
}
