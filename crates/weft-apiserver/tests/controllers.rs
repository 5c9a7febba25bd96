//! Controllers: defaults, ClusterIP/NodePort allocation, node IPAM, EndpointSlices, the
//! scheduler, and graceful pod deletion.

mod common;

use common::*;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde::de::DeserializeOwned;
use serde_json::json;
use std::collections::BTreeSet;
use std::net::Ipv4Addr;

fn obj<T: DeserializeOwned>(v: serde_json::Value) -> T {
    serde_json::from_value(v).expect("literal")
}

fn ready_node(name: &str, ready: bool) -> Node {
    obj(
        json!({"metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
        "status": {"conditions": [{"type": "Ready", "status": if ready {"True"} else {"False"}}]}}),
    )
}

fn pod_cidr(n: &Node) -> String {
    n.spec
        .as_ref()
        .and_then(|s| s.pod_cidr.clone())
        .unwrap_or_default()
}

fn cluster_ip(s: &Service) -> String {
    s.spec
        .as_ref()
        .and_then(|s| s.cluster_ip.clone())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_namespaces_and_kubernetes_service() {
    let s = start().await;
    let c = s.client().await;
    let ns: Api<Namespace> = Api::all(c.clone());
    for n in ["default", "kube-system", "kube-public"] {
        let got = ns.get(n).await.expect("namespace exists");
        let label = got.metadata.labels.unwrap_or_default();
        assert_eq!(
            label.get("kubernetes.io/metadata.name").map(String::as_str),
            Some(n)
        );
    }
    let svc: Api<Service> = Api::namespaced(c.clone(), "default");
    assert_eq!(
        cluster_ip(&svc.get("kubernetes").await.expect("kubernetes svc")),
        "10.96.0.1"
    );
    let slices: Api<EndpointSlice> = Api::namespaced(c, "default");
    let k = slices.get("kubernetes").await.expect("kubernetes slice");
    assert_eq!(
        k.endpoints.unwrap_or_default()[0].addresses,
        [s.addr().ip().to_string()]
    );
    assert_eq!(
        k.ports.unwrap_or_default()[0].port,
        Some(i32::from(s.addr().port()))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_ips_are_unique_in_range_and_released_on_delete() {
    let s = start().await;
    let svcs: Api<Service> = Api::namespaced(s.client().await, "default");
    let pp = PostParams::default();
    let mk = |name: &str, ip: Option<&str>| -> Service {
        let mut spec = json!({"ports": [{"port": 80}]});
        if let Some(ip) = ip {
            spec["clusterIP"] = json!(ip);
        }
        obj(json!({"metadata": {"name": name}, "spec": spec}))
    };
    let mut ips = BTreeSet::new();
    for i in 0..40 {
        let created = svcs
            .create(&pp, &mk(&format!("s{i}"), None))
            .await
            .expect("create");
        let ip: Ipv4Addr = cluster_ip(&created).parse().expect("an IPv4 ClusterIP");
        let o = ip.octets();
        assert_eq!((o[0], o[1] & 0xf0), (10, 96), "{ip} in 10.96.0.0/12");
        assert_ne!(ip, Ipv4Addr::new(10, 96, 0, 1));
        assert_ne!(ip, Ipv4Addr::new(10, 96, 0, 10));
        assert!(ips.insert(ip), "{ip} handed out twice");
    }
    // .10 is kept for DNS: the control plane gives it to kube-system/kube-dns, and nobody
    // else gets it.
    let system: Api<Service> = Api::namespaced(s.client().await, "kube-system");
    let dns = system.get("kube-dns").await.expect("kube-system/kube-dns");
    assert_eq!(cluster_ip(&dns), "10.96.0.10");
    let e = svcs
        .create(&pp, &mk("dns-again", Some("10.96.0.10")))
        .await
        .expect_err(".10 is kube-dns's");
    assert_eq!(api_status(&e).map(|s| s.code), Some(422));
    let taken = ips.iter().next().copied().expect("one ip").to_string();
    let e = svcs
        .create(&pp, &mk("dup", Some(&taken)))
        .await
        .expect_err("taken");
    assert_eq!(api_status(&e).map(|s| s.code), Some(422));
    let e = svcs
        .create(&pp, &mk("outside", Some("192.168.0.5")))
        .await
        .expect_err("out of range");
    assert_eq!(api_status(&e).map(|s| s.code), Some(422));
    // Deleting the owner releases the address.
    let owner = svcs
        .list(&ListParams::default())
        .await
        .expect("list")
        .items
        .into_iter()
        .find(|x| cluster_ip(x) == taken)
        .expect("owner");
    svcs.delete(
        &owner.metadata.name.unwrap_or_default(),
        &DeleteParams::default(),
    )
    .await
    .expect("delete");
    let again = svcs
        .create(&pp, &mk("dup", Some(&taken)))
        .await
        .expect("released");
    assert_eq!(cluster_ip(&again), taken);
    // The ClusterIP is immutable.
    let patch = json!({"spec": {"clusterIP": "10.96.0.99"}});
    let e = svcs
        .patch("dup", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect_err("immutable");
    assert_eq!(api_status(&e).map(|s| s.code), Some(422));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_ipam_follows_node_names_and_survives_restart() {
    let mut s = start().await;
    let addr = s.addr();
    let nodes: Api<Node> = Api::all(s.client().await);
    let pp = PostParams::default();
    let n2 = nodes
        .create(&pp, &ready_node("node-2", true))
        .await
        .expect("node-2");
    assert_eq!(pod_cidr(&n2), "10.244.2.0/24");
    let n1 = nodes
        .create(&pp, &ready_node("node-1", true))
        .await
        .expect("node-1");
    assert_eq!(pod_cidr(&n1), "10.244.1.0/24");
    let w = nodes
        .create(&pp, &ready_node("worker", true))
        .await
        .expect("worker");
    assert_eq!(pod_cidr(&w), "10.244.3.0/24");
    // An update that omits podCIDR keeps it.
    let mut n2b = nodes.get("node-2").await.expect("get");
    if let Some(spec) = n2b.spec.as_mut() {
        spec.pod_cidr = None;
        spec.pod_cidrs = None;
    }
    let n2b = nodes.replace("node-2", &pp, &n2b).await.expect("update");
    assert_eq!(pod_cidr(&n2b), "10.244.2.0/24");

    s.restart_on(addr, 20_000).await;
    let nodes: Api<Node> = Api::all(s.client().await);
    assert_eq!(
        pod_cidr(&nodes.get("node-1").await.expect("get")),
        "10.244.1.0/24"
    );
    nodes
        .delete("node-1", &DeleteParams::default())
        .await
        .expect("delete");
    let other = nodes
        .create(&pp, &ready_node("other", true))
        .await
        .expect("other");
    assert_eq!(pod_cidr(&other), "10.244.1.0/24", "released subnet reused");
    let n1 = nodes
        .create(&pp, &ready_node("node-1", true))
        .await
        .expect("node-1 again");
    assert_eq!(
        pod_cidr(&n1),
        "10.244.4.0/24",
        "its own index is taken: lowest free"
    );
}

fn pod(name: &str, node: Option<&str>, port_name: &str, port: i32) -> Pod {
    let mut spec = json!({"containers": [{"name": "c", "image": "weft",
        "ports": [{"name": port_name, "containerPort": port}]}]});
    if let Some(n) = node {
        spec["nodeName"] = json!(n);
    }
    obj(json!({"metadata": {"name": name, "labels": {"app": "web"}}, "spec": spec}))
}

async fn set_status(pods: &Api<Pod>, name: &str, ip: &str, ready: bool) {
    let status = json!({"status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}],
        "conditions": [{"type": "Ready", "status": if ready {"True"} else {"False"}}]}});
    pods.patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .expect("status patch");
}

/// The endpoints of `svc`'s managed slices as (pod, ip, port, ready, serving, terminating).
async fn endpoints(
    slices: &Api<EndpointSlice>,
    svc: &str,
) -> BTreeSet<(String, String, i32, bool, bool, bool)> {
    let lp = ListParams::default().labels(&format!("kubernetes.io/service-name={svc}"));
    let mut out = BTreeSet::new();
    for s in slices.list(&lp).await.expect("list slices").items {
        let port = s
            .ports
            .as_ref()
            .and_then(|p| p.first())
            .and_then(|p| p.port)
            .unwrap_or(0);
        for e in s.endpoints.unwrap_or_default() {
            let c = e.conditions.unwrap_or_default();
            out.insert((
                e.target_ref.and_then(|r| r.name).unwrap_or_default(),
                e.addresses[0].clone(),
                port,
                c.ready.unwrap_or(false),
                c.serving.unwrap_or(false),
                c.terminating.unwrap_or(false),
            ));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoint_slices_follow_pods_readiness_and_named_ports() {
    let s = start().await;
    let c = s.client().await;
    let nodes: Api<Node> = Api::all(c.clone());
    let pp = PostParams::default();
    nodes
        .create(&pp, &ready_node("node-1", true))
        .await
        .expect("node");
    let pods: Api<Pod> = Api::namespaced(c.clone(), "default");
    let svcs: Api<Service> = Api::namespaced(c.clone(), "default");
    let slices: Api<EndpointSlice> = Api::namespaced(c.clone(), "default");
    let svc: Service = obj(
        json!({"metadata": {"name": "web"}, "spec": {"selector": {"app": "web"},
        "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}}),
    );
    svcs.create(&pp, &svc).await.expect("svc");
    pods.create(&pp, &pod("a", Some("node-1"), "http", 8080))
        .await
        .expect("a");
    pods.create(&pp, &pod("b", Some("node-1"), "http", 9090))
        .await
        .expect("b");
    set_status(&pods, "a", "10.244.1.10", true).await;
    set_status(&pods, "b", "10.244.1.11", false).await;

    let want: BTreeSet<_> = [
        (
            "a".to_string(),
            "10.244.1.10".to_string(),
            8080,
            true,
            true,
            false,
        ),
        (
            "b".to_string(),
            "10.244.1.11".to_string(),
            9090,
            false,
            false,
            false,
        ),
    ]
    .into();
    eventually("slices for a and b", || async {
        (endpoints(&slices, "web").await == want).then_some(())
    })
    .await;
    let all = slices
        .list(&ListParams::default().labels("kubernetes.io/service-name=web"))
        .await
        .expect("list");
    assert!(all.items.iter().all(|s| s
        .endpoints
        .iter()
        .flatten()
        .all(|e| e.node_name.as_deref() == Some("node-1"))));

    // b becomes ready; a is deleted: it terminates gracefully (it is on a node).
    set_status(&pods, "b", "10.244.1.11", true).await;
    pods.delete("a", &DeleteParams::default())
        .await
        .expect("delete a");
    let want: BTreeSet<_> = [
        (
            "a".to_string(),
            "10.244.1.10".to_string(),
            8080,
            false,
            true,
            true,
        ),
        (
            "b".to_string(),
            "10.244.1.11".to_string(),
            9090,
            true,
            true,
            false,
        ),
    ]
    .into();
    eventually("a terminating, b ready", || async {
        (endpoints(&slices, "web").await == want).then_some(())
    })
    .await;
    // The node agent finishes the deletion with grace 0.
    pods.delete(
        "a",
        &DeleteParams {
            grace_period_seconds: Some(0),
            ..Default::default()
        },
    )
    .await
    .expect("final delete");
    let want: BTreeSet<_> = [(
        "b".to_string(),
        "10.244.1.11".to_string(),
        9090,
        true,
        true,
        false,
    )]
    .into();
    eventually("only b", || async {
        (endpoints(&slices, "web").await == want).then_some(())
    })
    .await;

    // Deleting the Service removes its slices.
    svcs.delete("web", &DeleteParams::default())
        .await
        .expect("delete svc");
    eventually("slices gone", || async {
        let lp = ListParams::default().labels("kubernetes.io/service-name=web");
        slices
            .list(&lp)
            .await
            .ok()
            .filter(|l| l.items.is_empty())
            .map(|_| ())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduler_spreads_pods_over_ready_nodes() {
    let s = start().await;
    let c = s.client().await;
    let nodes: Api<Node> = Api::all(c.clone());
    let pp = PostParams::default();
    for (n, ready) in [("node-1", true), ("node-2", true), ("node-3", false)] {
        nodes
            .create(&pp, &ready_node(n, ready))
            .await
            .expect("node");
    }
    let pods: Api<Pod> = Api::namespaced(c, "default");
    for i in 0..6 {
        pods.create(&pp, &pod(&format!("p{i}"), None, "http", 80))
            .await
            .expect("pod");
    }
    let placed = eventually("all pods bound", || async {
        let list = pods.list(&ListParams::default()).await.ok()?;
        let names: Vec<String> = list
            .items
            .iter()
            .filter_map(|p| p.spec.as_ref()?.node_name.clone())
            .collect();
        (names.len() == 6).then_some(names)
    })
    .await;
    let on = |n: &str| placed.iter().filter(|x| *x == n).count();
    assert_eq!((on("node-1"), on("node-2"), on("node-3")), (3, 3, 0));
    // Field selectors as the node agent uses them.
    let mine = pods
        .list(&ListParams::default().fields("spec.nodeName=node-1"))
        .await
        .expect("field selector");
    assert_eq!(mine.items.len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_balancer_services_get_addresses_from_the_pool() {
    let dir = tempfile::tempdir().expect("tempdir");
    let args: Vec<String> = [
        "--data-dir",
        &dir.path().display().to_string(),
        "--listen",
        "127.0.0.1:0",
        "--load-balancer-cidr",
        "192.168.1.240/30",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let cfg = weft_apiserver::Config::from_args(&args).expect("args");
    let server = weft_apiserver::start(cfg).await.expect("start");
    let svcs: Api<Service> = Api::namespaced(client_for(&server.kubeconfig).await, "default");
    let lb = |name: &str| -> Service {
        obj(
            json!({"metadata": {"name": name}, "spec": {"type": "LoadBalancer", "ports": [{"port": 80}]}}),
        )
    };
    let ingress_ip = |s: &Service| {
        s.status
            .as_ref()
            .and_then(|st| st.load_balancer.as_ref())
            .and_then(|l| l.ingress.as_ref())
            .and_then(|i| i.first())
            .and_then(|i| i.ip.clone())
    };
    let pp = PostParams::default();
    // A /30 has two host addresses.
    let a = svcs.create(&pp, &lb("a")).await.expect("a");
    let b = svcs.create(&pp, &lb("b")).await.expect("b");
    let c = svcs.create(&pp, &lb("c")).await.expect("c");
    assert_eq!(ingress_ip(&a).as_deref(), Some("192.168.1.241"));
    assert_eq!(ingress_ip(&b).as_deref(), Some("192.168.1.242"));
    assert_eq!(ingress_ip(&c), None, "pool exhausted");
    // Turning a into a ClusterIP Service releases its address; c gets it on its next write.
    let p = json!({"spec": {"type": "ClusterIP"}});
    let a = svcs
        .patch("a", &PatchParams::default(), &Patch::Merge(&p))
        .await
        .expect("patch a");
    assert_eq!(ingress_ip(&a), None);
    let p = json!({"metadata": {"labels": {"touch": "1"}}});
    let c = svcs
        .patch("c", &PatchParams::default(), &Patch::Merge(&p))
        .await
        .expect("patch c");
    assert_eq!(ingress_ip(&c).as_deref(), Some("192.168.1.241"));
    server.shutdown().await;
}

/// Deleting a Node deletes the pods bound to it (pod GC: no kubelet is left to stop them);
/// a pod naming a node that has not registered yet is left alone for the grace period.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_of_a_deleted_node_are_deleted() {
    let s = start().await;
    let c = s.client().await;
    let nodes: Api<Node> = Api::all(c.clone());
    let pp = PostParams::default();
    for n in ["node-1", "node-2"] {
        nodes.create(&pp, &ready_node(n, true)).await.expect("node");
    }
    let pods: Api<Pod> = Api::namespaced(c, "default");
    let pinned = |name: &str, node: &str| -> Pod {
        obj(json!({"metadata": {"name": name},
            "spec": {"nodeName": node, "containers": [{"name": "c", "image": "weft"}]}}))
    };
    for (p, n) in [
        ("a1", "node-1"),
        ("a2", "node-1"),
        ("b1", "node-2"),
        ("later", "node-9"),
    ] {
        pods.create(&pp, &pinned(p, n)).await.expect("pod");
    }
    nodes
        .delete("node-1", &DeleteParams::default())
        .await
        .expect("delete node");
    let left = eventually("node-1's pods deleted", || async {
        let list = pods.list(&ListParams::default()).await.ok()?;
        let names: BTreeSet<String> = list
            .items
            .into_iter()
            .filter_map(|p| p.metadata.name)
            .collect();
        (!names.contains("a1") && !names.contains("a2")).then_some(names)
    })
    .await;
    assert!(left.contains("b1"), "node-2's pod must stay: {left:?}");
    assert!(
        left.contains("later"),
        "a pod waiting for its node to register must stay: {left:?}"
    );
}

/// The lifecycle controller finds pods whose grace period ran out through the store's
/// index of terminating pods (it no longer walks every pod on each tick).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_grace_period_deletes_the_pod() {
    let s = start().await;
    let c = s.client().await;
    let pp = PostParams::default();
    Api::<Node>::all(c.clone())
        .create(&pp, &ready_node("node-1", true))
        .await
        .expect("node");
    let pods: Api<Pod> = Api::namespaced(c, "default");
    let pod: Pod = obj(json!({"metadata": {"name": "p"},
        "spec": {"nodeName": "node-1", "containers": [{"name": "c", "image": "x"}]}}));
    pods.create(&pp, &pod).await.expect("pod");
    let dp = DeleteParams {
        grace_period_seconds: Some(1),
        ..Default::default()
    };
    pods.delete("p", &dp).await.expect("graceful delete");
    let p = pods.get("p").await.expect("still there, terminating");
    assert!(p.metadata.deletion_timestamp.is_some());
    eventually("deleted once its grace period ran out", || async {
        pods.get_opt("p")
            .await
            .ok()
            .flatten()
            .is_none()
            .then_some(())
    })
    .await;
}
