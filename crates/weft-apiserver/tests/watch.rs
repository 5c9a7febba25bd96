//! kube-rs drives the server as the agent will: watchers, resumes, 410 relists, 409s.

mod common;

use common::*;
use futures_util::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, DeleteParams, PostParams, WatchEvent, WatchParams};
use kube::runtime::watcher;
use serde_json::json;

fn cm(name: &str, v: &str) -> ConfigMap {
    serde_json::from_value(json!({"metadata": {"name": name}, "data": {"v": v}}))
        .expect("configmap literal")
}

fn v(c: &ConfigMap) -> String {
    c.data
        .as_ref()
        .and_then(|d| d.get("v").cloned())
        .unwrap_or_default()
}

fn name(c: &ConfigMap) -> String {
    c.metadata.name.clone().unwrap_or_default()
}

type Watch = futures_util::stream::BoxStream<'static, watcher::Result<watcher::Event<ConfigMap>>>;

/// Next event of the kube-rs watcher, skipping the errors it reports while reconnecting.
async fn next_event(w: &mut Watch) -> watcher::Event<ConfigMap> {
    bounded("next watcher event", async {
        loop {
            match w.next().await {
                Some(Ok(ev)) => return ev,
                Some(Err(_)) => continue,
                None => panic!("watcher stream ended"),
            }
        }
    })
    .await
}

/// Reads events up to and including InitDone; returns the names listed.
async fn until_init_done(w: &mut Watch) -> Vec<String> {
    let mut listed = Vec::new();
    loop {
        match next_event(w).await {
            watcher::Event::InitApply(o) => listed.push(name(&o)),
            watcher::Event::InitDone => return listed,
            _ => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watcher_sees_creates_updates_deletes_in_order() {
    let s = start().await;
    let api: Api<ConfigMap> = Api::namespaced(s.client().await, "default");
    let mut w: Watch = watcher(api.clone(), watcher::Config::default()).boxed();
    until_init_done(&mut w).await;

    let pp = PostParams::default();
    let mut a = api.create(&pp, &cm("a", "1")).await.expect("create");
    a.data = Some([("v".to_string(), "2".to_string())].into());
    api.replace("a", &pp, &a).await.expect("update");
    api.create(&pp, &cm("b", "1")).await.expect("create b");
    api.delete("a", &DeleteParams::default())
        .await
        .expect("delete");

    let mut seen = Vec::new();
    while seen.len() < 4 {
        match next_event(&mut w).await {
            watcher::Event::Apply(o) => seen.push(format!("apply {} {}", name(&o), v(&o))),
            watcher::Event::Delete(o) => seen.push(format!("delete {} {}", name(&o), v(&o))),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(seen, ["apply a 1", "apply a 2", "apply b 1", "delete a 2"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_resumes_from_a_resource_version() {
    let s = start().await;
    let api: Api<ConfigMap> = Api::namespaced(s.client().await, "default");
    let pp = PostParams::default();
    let a = api.create(&pp, &cm("a", "1")).await.expect("create");
    let rv = a.metadata.resource_version.clone().expect("rv set");

    // While nobody watches: create b, update a, delete b.
    api.create(&pp, &cm("b", "1")).await.expect("create b");
    let mut a2 = a.clone();
    a2.data = Some([("v".to_string(), "2".to_string())].into());
    api.replace("a", &pp, &a2).await.expect("update a");
    api.delete("b", &DeleteParams::default())
        .await
        .expect("delete b");

    let mut stream = api
        .watch(&WatchParams::default(), &rv)
        .await
        .expect("watch")
        .boxed();
    let mut seen = Vec::new();
    while seen.len() < 3 {
        let ev = bounded("watch event", stream.try_next())
            .await
            .expect("watch stream ok")
            .expect("not ended");
        match ev {
            WatchEvent::Added(o) => seen.push(format!("added {}", name(&o))),
            WatchEvent::Modified(o) => seen.push(format!("modified {} {}", name(&o), v(&o))),
            WatchEvent::Deleted(o) => seen.push(format!("deleted {}", name(&o))),
            WatchEvent::Bookmark(_) => {}
            WatchEvent::Error(e) => panic!("watch error {e:?}"),
        }
    }
    assert_eq!(seen, ["added b", "modified a 2", "deleted b"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_old_resource_version_is_410_gone() {
    let s = start_with_history(100).await;
    let api: Api<ConfigMap> = Api::namespaced(s.client().await, "default");
    let pp = PostParams::default();
    let first = api.create(&pp, &cm("first", "1")).await.expect("create");
    let old_rv = first.metadata.resource_version.clone().expect("rv");
    for i in 0..150 {
        api.create(&pp, &cm(&format!("c{i}"), "1"))
            .await
            .expect("create");
    }
    let mut stream = api
        .watch(&WatchParams::default(), &old_rv)
        .await
        .expect("watch request accepted")
        .boxed();
    let ev = bounded("watch event", stream.try_next())
        .await
        .expect("stream ok")
        .expect("one event");
    match ev {
        WatchEvent::Error(e) => {
            assert_eq!(e.code, 410);
            assert_eq!(e.reason, "Expired");
        }
        other => panic!("expected 410 ERROR event, got {other:?}"),
    }
    // The relist gives a resourceVersion that can be watched from.
    let list = api.list(&Default::default()).await.expect("relist");
    assert_eq!(list.items.len(), 151);
    let rv = list.metadata.resource_version.expect("list rv");
    let mut stream = api
        .watch(&WatchParams::default(), &rv)
        .await
        .expect("watch")
        .boxed();
    api.create(&pp, &cm("after", "1")).await.expect("create");
    let ev = bounded("watch event", stream.try_next())
        .await
        .expect("ok")
        .expect("event");
    assert!(
        matches!(ev, WatchEvent::Added(ref o) if name(o) == "after"),
        "{ev:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_watcher_resumes_across_restart_and_relists_after_410() {
    let mut s = start().await;
    let addr = s.addr();
    let client = s.client().await;
    let api: Api<ConfigMap> = Api::namespaced(client, "default");
    let pp = PostParams::default();
    api.create(&pp, &cm("a", "1")).await.expect("create");
    let mut w: Watch = watcher(api.clone(), watcher::Config::default()).boxed();
    assert_eq!(until_init_done(&mut w).await, ["a"]);

    // The server goes away; "b" is written through another instance on the same data;
    // the server comes back on the original port with its full event history.
    s.start_elsewhere().await;
    let other: Api<ConfigMap> = Api::namespaced(s.client().await, "default");
    other.create(&pp, &cm("b", "1")).await.expect("create b");
    s.restart_on(addr, 20_000).await;
    match next_event(&mut w).await {
        watcher::Event::Apply(o) => assert_eq!(name(&o), "b"),
        other => panic!("expected the watch to resume with b, got {other:?}"),
    }

    // Again, but now with more writes than the restarted server keeps: 410, relist.
    s.start_elsewhere().await;
    let other: Api<ConfigMap> = Api::namespaced(s.client().await, "default");
    for i in 0..150 {
        other
            .create(&pp, &cm(&format!("c{i}"), "1"))
            .await
            .expect("create");
    }
    s.restart_on(addr, 100).await;
    loop {
        match next_event(&mut w).await {
            watcher::Event::Init => break,
            watcher::Event::Apply(o) => panic!("expected a relist, got Apply({})", name(&o)),
            _ => {}
        }
    }
    let listed = until_init_done(&mut w).await;
    assert_eq!(listed.len(), 152, "{listed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streaming_list_watcher_ends_init_with_a_bookmark() {
    let s = start().await;
    let api: Api<ConfigMap> = Api::namespaced(s.client().await, "default");
    let pp = PostParams::default();
    for n in ["x", "y"] {
        api.create(&pp, &cm(n, "1")).await.expect("create");
    }
    let mut w: Watch = watcher(api.clone(), watcher::Config::default().streaming_lists()).boxed();
    let mut listed = until_init_done(&mut w).await;
    listed.sort();
    assert_eq!(listed, ["x", "y"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_update_is_409_conflict() {
    let s = start().await;
    let api: Api<ConfigMap> = Api::namespaced(s.client().await, "default");
    let pp = PostParams::default();
    let a = api.create(&pp, &cm("a", "1")).await.expect("create");
    let mut first = a.clone();
    first.data = Some([("v".to_string(), "2".to_string())].into());
    api.replace("a", &pp, &first)
        .await
        .expect("first update wins");
    let mut second = a.clone();
    second.data = Some([("v".to_string(), "3".to_string())].into());
    let err = api
        .replace("a", &pp, &second)
        .await
        .expect_err("stale update");
    let st = api_status(&err).expect("an API status");
    assert_eq!(st.code, 409);
    assert_eq!(st.reason, "Conflict");
    assert_eq!(v(&api.get("a").await.expect("get")), "2");
}
