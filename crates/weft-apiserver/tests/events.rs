//! Events are bounded: past `MAX_EVENTS` the oldest go, down to `LOW_WATER`, so a flood of
//! Events (from the control plane or from agents) cannot grow the store, and the newest
//! stay for `kubectl describe`.

mod common;

use common::*;
use k8s_openapi::api::core::v1::Event;
use kube::api::{Api, ListParams, PostParams};
use serde_json::json;
use weft_apiserver::controllers::events::{LOW_WATER, MAX_EVENTS};

fn event(i: usize) -> Event {
    serde_json::from_value(json!({
        "metadata": {"name": format!("ev-{i:05}"), "namespace": "default"},
        "involvedObject": {"kind": "Pod", "name": format!("p-{i}"), "namespace": "default"},
        "reason": "Started", "message": format!("event {i}"), "type": "Normal",
    }))
    .expect("literal")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_past_the_bound_are_pruned_oldest_first() {
    let srv = start().await;
    let api: Api<Event> = Api::namespaced(srv.client().await, "default");
    let total = MAX_EVENTS + 150;
    for i in 0..total {
        api.create(&PostParams::default(), &event(i))
            .await
            .unwrap_or_else(|e| panic!("create event {i}: {e}"));
    }
    let names = eventually("events pruned to the bound", || async {
        let list = api.list(&ListParams::default()).await.ok()?;
        let names: Vec<String> = list
            .items
            .iter()
            .filter_map(|e| e.metadata.name.clone())
            .collect();
        (names.len() <= MAX_EVENTS).then_some(names)
    })
    .await;
    assert!(
        names.len() >= LOW_WATER,
        "pruned to {} events, below the low-water mark {LOW_WATER}",
        names.len()
    );
    // No timestamps of their own: the server's creation time (in seconds) orders them, and
    // names break ties, so the oldest are the first names.
    let newest = format!("ev-{:05}", total - 1);
    assert!(
        names.contains(&newest),
        "the newest event {newest} was pruned"
    );
    assert!(
        !names.contains(&"ev-00000".to_string()),
        "the oldest event survived"
    );
}
