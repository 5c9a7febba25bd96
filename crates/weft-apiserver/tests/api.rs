//! REST semantics: patches, server-side apply, /status, finalizers, selectors, paging,
//! bookmarks, namespace deletion, and a kind without a k8s-openapi type.

mod common;

use axum::http::Request;
use common::*;
use futures_util::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod};
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch,
    PatchParams, PostParams, WatchEvent, WatchParams,
};
use serde::de::DeserializeOwned;
use serde_json::json;

fn obj<T: DeserializeOwned>(v: serde_json::Value) -> T {
    serde_json::from_value(v).expect("literal")
}

fn data(c: &ConfigMap) -> serde_json::Value {
    serde_json::to_value(c.data.clone().unwrap_or_default()).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn merge_json_strategic_patches_and_server_side_apply() {
    let s = start().await;
    let c = s.client().await;
    let cms: Api<ConfigMap> = Api::namespaced(c.clone(), "default");
    let pp = PatchParams::default();
    cms.create(
        &PostParams::default(),
        &obj(json!({"metadata": {"name": "a"}, "data": {"x": "1", "y": "2"}})),
    )
    .await
    .expect("create");
    let m = json!({"data": {"x": "10", "y": null}});
    let got = cms.patch("a", &pp, &Patch::Merge(&m)).await.expect("merge");
    assert_eq!(data(&got), json!({"x": "10"}));
    let j: json_patch::Patch =
        serde_json::from_value(json!([{"op": "add", "path": "/data/z", "value": "3"}]))
            .expect("patch literal");
    let got = cms
        .patch("a", &pp, &Patch::<()>::Json(j))
        .await
        .expect("json patch");
    assert_eq!(data(&got), json!({"x": "10", "z": "3"}));
    // A patch carrying a stale resourceVersion is a conflict.
    let stale = json!({"metadata": {"resourceVersion": "1"}, "data": {"x": "0"}});
    let e = cms
        .patch("a", &pp, &Patch::Merge(&stale))
        .await
        .expect_err("stale");
    assert_eq!(api_status(&e).map(|s| s.code), Some(409));

    // Strategic merge on a pod's containers merges by name.
    let pods: Api<Pod> = Api::namespaced(c.clone(), "default");
    pods.create(&PostParams::default(), &obj(json!({"metadata": {"name": "p"}, "spec": {"containers": [
        {"name": "a", "image": "one", "ports": [{"containerPort": 80}]}, {"name": "b", "image": "two"}]}})))
        .await
        .expect("pod");
    let sp = json!({"spec": {"containers": [{"name": "a", "image": "uno"}]}});
    let got = pods
        .patch("p", &pp, &Patch::Strategic(&sp))
        .await
        .expect("strategic");
    let cs = got.spec.expect("spec").containers;
    assert_eq!(
        (cs.len(), cs[0].image.as_deref(), cs[1].image.as_deref()),
        (2, Some("uno"), Some("two"))
    );
    assert_eq!(cs[0].ports.as_ref().map(|p| p[0].container_port), Some(80));

    // Server-side apply: create, then a second apply that drops a key removes it.
    let ap = PatchParams::apply("weft-test").force();
    let first = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "applied"},
        "data": {"keep": "1", "drop": "2"}});
    let got = cms
        .patch("applied", &ap, &Patch::Apply(&first))
        .await
        .expect("apply create");
    assert_eq!(data(&got), json!({"keep": "1", "drop": "2"}));
    let managers: Vec<String> = got
        .metadata
        .managed_fields
        .unwrap_or_default()
        .into_iter()
        .filter_map(|m| m.manager)
        .collect();
    assert_eq!(managers, ["weft-test"]);
    let second = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "applied"},
        "data": {"keep": "1", "new": "3"}});
    let got = cms
        .patch("applied", &ap, &Patch::Apply(&second))
        .await
        .expect("apply update");
    assert_eq!(data(&got), json!({"keep": "1", "new": "3"}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_is_a_separate_subresource() {
    let s = start().await;
    let pods: Api<Pod> = Api::namespaced(s.client().await, "default");
    let p: Pod = obj(
        json!({"metadata": {"name": "p"}, "spec": {"nodeName": "node-1",
        "containers": [{"name": "c", "image": "i"}]}, "status": {"phase": "Running"}}),
    );
    let created = pods
        .create(&PostParams::default(), &p)
        .await
        .expect("create");
    assert_eq!(
        created.status.and_then(|s| s.phase).as_deref(),
        Some("Pending"),
        "status reset on create"
    );
    let st = json!({"status": {"phase": "Running", "podIP": "10.244.1.5"}, "spec": {"nodeName": "elsewhere"}});
    let got = pods
        .patch_status("p", &PatchParams::default(), &Patch::Merge(&st))
        .await
        .expect("status");
    assert_eq!(
        got.status.as_ref().and_then(|s| s.pod_ip.as_deref()),
        Some("10.244.1.5")
    );
    assert_eq!(
        got.spec.as_ref().and_then(|s| s.node_name.as_deref()),
        Some("node-1"),
        "spec untouched"
    );
    let main = json!({"status": {"phase": "Failed"}, "metadata": {"labels": {"x": "y"}}});
    let got = pods
        .patch("p", &PatchParams::default(), &Patch::Merge(&main))
        .await
        .expect("main");
    assert_eq!(
        got.status.and_then(|s| s.phase).as_deref(),
        Some("Running"),
        "status untouched"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finalizers_hold_a_deletion_until_removed() {
    let s = start().await;
    let cms: Api<ConfigMap> = Api::namespaced(s.client().await, "default");
    cms.create(
        &PostParams::default(),
        &obj(json!({"metadata": {"name": "f", "finalizers": ["weft.dev/hold"]}})),
    )
    .await
    .expect("create");
    cms.delete("f", &DeleteParams::default())
        .await
        .expect("delete");
    let held = cms.get("f").await.expect("still there");
    assert!(held.metadata.deletion_timestamp.is_some());
    let clear = json!({"metadata": {"finalizers": null}});
    cms.patch("f", &PatchParams::default(), &Patch::Merge(&clear))
        .await
        .expect("clear");
    let e = cms
        .get("f")
        .await
        .expect_err("gone once finalizers are empty");
    assert_eq!(api_status(&e).map(|s| s.code), Some(404));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn label_selectors_and_paging() {
    let s = start().await;
    let cms: Api<ConfigMap> = Api::namespaced(s.client().await, "default");
    for (n, tier) in [
        ("a", Some("front")),
        ("b", Some("back")),
        ("c", None),
        ("d", Some("db")),
    ] {
        let mut labels = json!({"app": "shop"});
        if let Some(t) = tier {
            labels["tier"] = json!(t);
        }
        cms.create(
            &PostParams::default(),
            &obj(json!({"metadata": {"name": n, "labels": labels}})),
        )
        .await
        .expect("create");
    }
    let names = |sel: &'static str| {
        let cms = cms.clone();
        async move {
            let l = cms
                .list(&ListParams::default().labels(sel))
                .await
                .expect("list");
            l.items
                .into_iter()
                .filter_map(|c| c.metadata.name)
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(names("tier=front").await, ["a"]);
    assert_eq!(names("app=shop,tier!=front").await, ["b", "c", "d"]);
    assert_eq!(names("tier in (front,db)").await, ["a", "d"]);
    assert_eq!(names("tier notin (front,db)").await, ["b", "c"]);
    assert_eq!(names("tier").await, ["a", "b", "d"]);
    assert_eq!(names("!tier").await, ["c"]);

    let mut seen = Vec::new();
    let mut lp = ListParams::default().limit(3);
    loop {
        let page = cms.list(&lp).await.expect("page");
        seen.extend(page.items.into_iter().filter_map(|c| c.metadata.name));
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(tok) => lp = lp.continue_token(&tok),
            None => break,
        }
    }
    assert_eq!(seen, ["a", "b", "c", "d"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bookmarks_are_sent_when_asked() {
    let s = start().await;
    let cms: Api<ConfigMap> = Api::namespaced(s.client().await, "default");
    cms.create(
        &PostParams::default(),
        &obj(json!({"metadata": {"name": "a"}})),
    )
    .await
    .expect("create");
    let wp = WatchParams::default().initial_events();
    let mut stream = cms.watch(&wp, "").await.expect("watch").boxed();
    let mut added = 0;
    loop {
        match bounded("event", stream.try_next())
            .await
            .expect("ok")
            .expect("event")
        {
            WatchEvent::Added(_) => added += 1,
            WatchEvent::Bookmark(b) => {
                assert_eq!(added, 1);
                assert_eq!(
                    b.metadata
                        .annotations
                        .get("k8s.io/initial-events-end")
                        .map(String::as_str),
                    Some("true")
                );
                break;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_namespace_deletes_its_contents() {
    let s = start().await;
    let c = s.client().await;
    let nss: Api<Namespace> = Api::all(c.clone());
    nss.create(
        &PostParams::default(),
        &obj(json!({"metadata": {"name": "tmp"}})),
    )
    .await
    .expect("ns");
    let cms: Api<ConfigMap> = Api::namespaced(c.clone(), "tmp");
    cms.create(
        &PostParams::default(),
        &obj(json!({"metadata": {"name": "x"}})),
    )
    .await
    .expect("cm");
    nss.delete("tmp", &DeleteParams::default())
        .await
        .expect("delete ns");
    // While terminating, nothing new may be created in it; once empty it goes away.
    if let Err(e) = cms
        .create(
            &PostParams::default(),
            &obj(json!({"metadata": {"name": "y"}})),
        )
        .await
    {
        assert!(
            matches!(api_status(&e).map(|s| s.code), Some(403 | 404)),
            "{e:?}"
        );
    }
    eventually("namespace gone", || async {
        nss.get("tmp")
            .await
            .err()
            .filter(|e| api_status(e).map(|s| s.code) == Some(404))
            .map(|_| ())
    })
    .await;
    let left = Api::<ConfigMap>::all(c)
        .list(&ListParams::default().fields("metadata.namespace=tmp"))
        .await
        .expect("list");
    assert!(left.items.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_network_policy_is_served_as_dynamic_json() {
    let s = start().await;
    let c = s.client().await;
    let gvk = GroupVersionKind::gvk(
        "policy.networking.k8s.io",
        "v1alpha2",
        "ClusterNetworkPolicy",
    );
    let ar = ApiResource::from_gvk_with_plural(&gvk, "clusternetworkpolicies");
    let api: Api<DynamicObject> = Api::all_with(c.clone(), &ar);
    let cnp: DynamicObject = obj(json!({
        "apiVersion": "policy.networking.k8s.io/v1alpha2", "kind": "ClusterNetworkPolicy",
        "metadata": {"name": "deny-all"},
        "spec": {"tier": "Admin", "priority": 10, "subject": {"namespaces": {}},
            "ingress": [{"name": "deny", "action": "Deny", "from": [{"namespaces": {}}]}]}
    }));
    let got = api
        .create(&PostParams::default(), &cnp)
        .await
        .expect("create");
    assert_eq!(got.data["spec"]["ingress"][0]["action"], "Deny");
    let mut bad = cnp.clone();
    bad.metadata.name = Some("bad".into());
    bad.data["spec"]["tier"] = json!("Tenant");
    let e = api
        .create(&PostParams::default(), &bad)
        .await
        .expect_err("invalid tier");
    assert_eq!(api_status(&e).map(|s| s.code), Some(422));
    // Discovery lists it, so kubectl and kube-rs can find it.
    let req = Request::get("/apis/policy.networking.k8s.io/v1alpha2")
        .body(Vec::new())
        .expect("req");
    let text = c.request_text(req).await.expect("discovery");
    assert!(text.contains("clusternetworkpolicies"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_listen_address_gets_a_certificate_from_the_same_ca() {
    let mut s = start().await;
    let ca_before = std::fs::read(s.dir.path().join("pki/ca.crt")).expect("ca");
    s.stop().await;
    // Another loopback address: the old serving certificate does not name it.
    let cfg = config(s.dir.path(), "127.0.0.2:0", 1000);
    s.server = Some(
        weft_apiserver::start(cfg)
            .await
            .expect("restart on 127.0.0.2"),
    );
    let c = s.client().await;
    let cms: Api<ConfigMap> = Api::namespaced(c, "default");
    cms.list(&ListParams::default())
        .await
        .expect("TLS verifies against the same CA");
    let ca_after = std::fs::read(s.dir.path().join("pki/ca.crt")).expect("ca");
    assert_eq!(ca_before, ca_after);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_runtime_event_recorder_publishes() {
    use k8s_openapi::api::events::v1::Event as K8sEvent;
    use kube::runtime::events::{Event, EventType, Recorder};
    use kube::Resource;
    let s = start().await;
    let c = s.client().await;
    let svc = Api::<k8s_openapi::api::core::v1::Service>::namespaced(c.clone(), "default")
        .get("kubernetes")
        .await
        .expect("kubernetes service");
    let recorder = Recorder::new(c.clone(), "weft-test".into());
    let ev = Event {
        type_: EventType::Normal,
        reason: "Tested".into(),
        note: Some("hello".into()),
        action: "Test".into(),
        secondary: None,
    };
    let r = svc.object_ref(&());
    recorder
        .publish(&ev, &r)
        .await
        .expect("first publish creates");
    recorder
        .publish(&ev, &r)
        .await
        .expect("second publish patches the series");
    let events: Api<K8sEvent> = Api::namespaced(c, "default");
    let list = events.list(&ListParams::default()).await.expect("list");
    assert_eq!(list.items.len(), 1);
    assert_eq!(list.items[0].series.as_ref().map(|s| s.count), Some(2));
}
