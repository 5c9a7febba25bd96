//! ClusterIP and NodePort allocation: never handed out twice (concurrent creates, across
//! restarts), freed by deletes, type changes and family changes, never taken by a write
//! that failed, and a full range answered with an error that names it.

mod common;

use common::*;
use futures_util::StreamExt;
use k8s_openapi::api::core::v1::Service;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde::de::DeserializeOwned;
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::path::Path;
use weft_apiserver::Server;

fn obj<T: DeserializeOwned>(v: Value) -> T {
    serde_json::from_value(v).expect("literal")
}

fn cluster_ips(s: &Service) -> Vec<String> {
    s.spec
        .as_ref()
        .and_then(|s| s.cluster_ips.clone())
        .unwrap_or_default()
}

fn node_ports(s: &Service) -> Vec<i32> {
    let ports = s.spec.as_ref().and_then(|s| s.ports.clone());
    ports
        .unwrap_or_default()
        .iter()
        .filter_map(|p| p.node_port)
        .collect()
}

fn svc(name: &str, spec: Value) -> Service {
    let mut spec = spec;
    if spec["ports"].is_null() {
        spec["ports"] = json!([{"port": 80}]);
    }
    obj(json!({"metadata": {"name": name}, "spec": spec}))
}

/// A server with extra arguments, restartable on the same data directory and arguments.
async fn server(dir: &Path, extra: &[&str]) -> Server {
    let mut args: Vec<String> = vec![
        "--data-dir".into(),
        dir.display().to_string(),
        "--listen".into(),
        "127.0.0.1:0".into(),
        "--kubeconfig-out".into(),
        dir.join("kubeconfig").display().to_string(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    let cfg = weft_apiserver::Config::from_args(&args).expect("arguments parse");
    weft_apiserver::start(cfg).await.expect("server starts")
}

async fn services(s: &Server) -> Api<Service> {
    Api::namespaced(client_for(&s.kubeconfig).await, "default")
}

fn status(e: &kube::Error) -> (u16, String, Vec<String>) {
    let st = api_status(e).expect("an API status");
    let fields = st
        .details
        .as_ref()
        .map(|d| d.causes.iter().map(|c| c.field.clone()).collect())
        .unwrap_or_default();
    (st.code, st.message.clone(), fields)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_creates_never_share_an_ip_or_port() {
    let dir = tempfile::tempdir().expect("tempdir");
    // 254 addresses and 300 ports for 240 Services, half of them NodePorts: a random
    // start collides often, so a race would show.
    let s = server(
        dir.path(),
        &[
            "--service-cidr",
            "10.96.0.0/24",
            "--service-node-port-range",
            "30000-30299",
        ],
    )
    .await;
    let api = services(&s).await;
    let created: Vec<Service> = bounded(
        "240 concurrent creates",
        futures_util::stream::iter(0..240)
            .map(|i| {
                let api = api.clone();
                async move {
                    let ty = if i % 2 == 0 { "NodePort" } else { "ClusterIP" };
                    let spec = json!({"type": ty, "ports": [{"name": "a", "port": 80}, {"name": "b", "port": 81}]});
                    api.create(&PostParams::default(), &svc(&format!("s{i}"), spec))
                        .await
                        .expect("create")
                }
            })
            .buffer_unordered(16)
            .collect(),
    )
    .await;
    let mut ips = BTreeSet::new();
    let mut ports = BTreeSet::new();
    for c in &created {
        for ip in cluster_ips(c) {
            assert!(ips.insert(ip.clone()), "{ip} handed out twice");
        }
        for p in node_ports(c) {
            assert!(ports.insert(p), "node port {p} handed out twice");
        }
    }
    assert_eq!((ips.len(), ports.len()), (240, 240));
    assert!(!ips.contains("10.96.0.1"));
    assert!(!ips.contains("10.96.0.10"));
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_range_names_itself_and_a_delete_frees_an_address() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = server(dir.path(), &["--service-cidr", "10.96.0.0/28"]).await;
    let api = services(&s).await;
    let pp = PostParams::default();
    // 16 addresses: the network, .1 (kubernetes), .10 (kube-dns) and the broadcast are
    // not for others: 12 are.
    let mut ips = BTreeSet::new();
    for i in 0..12 {
        let c = api
            .create(&pp, &svc(&format!("s{i}"), json!({})))
            .await
            .expect("create");
        assert!(ips.insert(cluster_ips(&c)[0].clone()));
    }
    let e = api
        .create(&pp, &svc("full", json!({})))
        .await
        .expect_err("range is full");
    let (code, msg, _) = status(&e);
    assert_eq!(code, 500, "{msg}");
    assert!(msg.contains("no free cluster IP in 10.96.0.0/28"), "{msg}");
    let victim = api.get("s5").await.expect("s5");
    let freed = cluster_ips(&victim)[0].clone();
    api.delete("s5", &DeleteParams::default())
        .await
        .expect("delete");
    let c = api
        .create(&pp, &svc("after", json!({})))
        .await
        .expect("the freed address");
    assert_eq!(cluster_ips(&c), [freed]);
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allocations_survive_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let args = [
        "--service-cidr",
        "10.96.0.0/28",
        "--service-node-port-range",
        "30000-30011",
    ];
    let s = server(dir.path(), &args).await;
    let api = services(&s).await;
    let pp = PostParams::default();
    let mut ips = BTreeSet::new();
    let mut ports = BTreeSet::new();
    for i in 0..6 {
        let c = api
            .create(
                &pp,
                &svc(&format!("before-{i}"), json!({"type": "NodePort"})),
            )
            .await
            .expect("create");
        ips.insert(cluster_ips(&c)[0].clone());
        ports.insert(node_ports(&c)[0]);
    }
    s.shutdown().await;
    let s = server(dir.path(), &args).await;
    let api = services(&s).await;
    // The other six addresses and ports are still free; the first six are not.
    for i in 0..6 {
        let c = api
            .create(
                &pp,
                &svc(&format!("after-{i}"), json!({"type": "NodePort"})),
            )
            .await
            .expect("create after restart");
        assert!(
            ips.insert(cluster_ips(&c)[0].clone()),
            "{c:?} reuses an address"
        );
        assert!(ports.insert(node_ports(&c)[0]), "{c:?} reuses a port");
    }
    let e = api
        .create(&pp, &svc("full", json!({"type": "NodePort"})))
        .await
        .expect_err("full");
    assert!(
        status(&e).1.contains("no free cluster IP in 10.96.0.0/28"),
        "{e:?}"
    );
    let taken = ips.iter().next().cloned().expect("an address");
    let e = api
        .create(&pp, &svc("dup", json!({"clusterIP": taken})))
        .await
        .expect_err("taken before the restart");
    let (code, msg, fields) = status(&e);
    assert_eq!((code, fields), (422, vec!["spec.clusterIPs".to_string()]));
    assert!(msg.contains("provided IP is already allocated"), "{msg}");
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_and_dry_run_writes_take_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = server(dir.path(), &[]).await;
    let api = services(&s).await;
    // Admission picks the address and port, then validation refuses the port name.
    let bad = svc(
        "bad",
        json!({"type": "NodePort", "clusterIP": "10.96.0.50", "ports": [{"name": "Bad_Name", "port": 80, "nodePort": 30050}]}),
    );
    let e = api
        .create(&PostParams::default(), &bad)
        .await
        .expect_err("invalid");
    assert_eq!(status(&e).0, 422);
    let dry = PostParams {
        dry_run: true,
        ..Default::default()
    };
    let ok = svc(
        "ok",
        json!({"type": "NodePort", "clusterIP": "10.96.0.50", "ports": [{"port": 80, "nodePort": 30050}]}),
    );
    api.create(&dry, &ok).await.expect("dry run");
    let c = api
        .create(&PostParams::default(), &ok)
        .await
        .expect("neither took them");
    assert_eq!(
        (cluster_ips(&c), node_ports(&c)),
        (vec!["10.96.0.50".to_string()], vec![30050])
    );
    // Now they are taken, with the field named.
    let again = svc(
        "again",
        json!({"type": "NodePort", "ports": [{"port": 80, "nodePort": 30050}]}),
    );
    let e = api
        .create(&PostParams::default(), &again)
        .await
        .expect_err("port taken");
    let (code, msg, fields) = status(&e);
    assert_eq!(
        (code, fields),
        (422, vec!["spec.ports[0].nodePort".to_string()])
    );
    assert!(msg.contains("provided port is already allocated"), "{msg}");
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn type_changes_release_and_take_node_ports() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = server(dir.path(), &["--service-node-port-range", "30000-30001"]).await;
    let api = services(&s).await;
    let pp = PostParams::default();
    let np = || json!({"type": "NodePort"});
    let a = api.create(&pp, &svc("a", np())).await.expect("a");
    api.create(&pp, &svc("b", np())).await.expect("b");
    let e = api
        .create(&pp, &svc("c", np()))
        .await
        .expect_err("no port left");
    let (code, msg, _) = status(&e);
    assert_eq!(code, 500);
    assert!(msg.contains("no free node port in 30000-30001"), "{msg}");
    let patch = json!({"spec": {"type": "ClusterIP"}});
    let a2 = api
        .patch("a", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("NodePort to ClusterIP");
    assert!(node_ports(&a2).is_empty());
    let c = api
        .create(&pp, &svc("c", np()))
        .await
        .expect("a's port was released");
    assert_eq!(node_ports(&c), node_ports(&a));
    // Back to NodePort: nothing is left for a.
    let patch = json!({"spec": {"type": "NodePort"}});
    let e = api
        .patch("a", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect_err("no port left");
    assert_eq!(status(&e).0, 500);
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dual_stack_secondary_addresses_come_and_go_with_the_policy() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = server(
        dir.path(),
        &["--service-cidr", "10.96.0.0/24,fd00:10:96::/120"],
    )
    .await;
    let api = services(&s).await;
    let pp = PostParams::default();
    let d = api
        .create(
            &pp,
            &svc("dual", json!({"ipFamilyPolicy": "RequireDualStack"})),
        )
        .await
        .expect("dual-stack");
    let ips = cluster_ips(&d);
    assert_eq!(ips.len(), 2, "{ips:?}");
    assert!(
        ips[0].starts_with("10.96.0.") && ips[1].starts_with("fd00:10:96::"),
        "{ips:?}"
    );
    let families = d
        .spec
        .as_ref()
        .and_then(|s| s.ip_families.clone())
        .unwrap_or_default();
    assert_eq!(families, ["IPv4", "IPv6"]);
    // The secondary is held: nobody else may ask for it.
    let ask_v6 = |name: &str| {
        svc(
            name,
            json!({"ipFamilies": ["IPv6"], "clusterIPs": [ips[1].clone()]}),
        )
    };
    let e = api.create(&pp, &ask_v6("v6")).await.expect_err("held");
    assert_eq!(status(&e).0, 422);
    // Down to one family: the IPv6 address is released.
    let patch = json!({"spec": {"ipFamilyPolicy": "SingleStack"}});
    let single = api
        .patch("dual", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("to single-stack");
    assert_eq!(cluster_ips(&single), [ips[0].clone()]);
    let v6 = api.create(&pp, &ask_v6("v6")).await.expect("released");
    assert_eq!(cluster_ips(&v6), [ips[1].clone()]);
    // Up again: a new secondary, the primary unchanged.
    let patch = json!({"spec": {"ipFamilyPolicy": "PreferDualStack"}});
    let again = api
        .patch("dual", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("to dual-stack");
    let now = cluster_ips(&again);
    assert_eq!(now.len(), 2);
    assert_eq!(now[0], ips[0]);
    assert_ne!(now[1], ips[1]);
    // A write naming only the primary keeps the secondary.
    let patch = json!({"spec": {"clusterIPs": [now[0].clone()]}});
    let kept = api
        .patch("dual", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("primary only");
    assert_eq!(cluster_ips(&kept), now);
    // A single-stack cluster refuses RequireDualStack, naming the field.
    let dir2 = tempfile::tempdir().expect("tempdir");
    let s2 = server(dir2.path(), &[]).await;
    let e = services(&s2)
        .await
        .create(
            &pp,
            &svc("dual", json!({"ipFamilyPolicy": "RequireDualStack"})),
        )
        .await
        .expect_err("not dual-stack");
    let (code, _, fields) = status(&e);
    assert_eq!(
        (code, fields),
        (422, vec!["spec.ipFamilyPolicy".to_string()])
    );
    s2.shutdown().await;
    s.shutdown().await;
}
