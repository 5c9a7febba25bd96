//! Bad input gets the real API server's answers: 400 for undecodable bodies, 422 naming
//! each bad field, 401 without the token.

mod common;

use axum::http::Request;
use common::*;
use k8s_openapi::api::core::v1::{ConfigMap, Node, Service};
use k8s_openapi::api::networking::v1::{Ingress, NetworkPolicy};
use kube::api::{Api, DeleteParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use serde::de::DeserializeOwned;
use serde_json::json;

fn obj<T: DeserializeOwned>(v: serde_json::Value) -> T {
    serde_json::from_value(v).expect("literal")
}

async fn raw(client: &kube::Client, path: &str, ct: &str, body: &[u8]) -> kube::Error {
    let req = Request::post(path)
        .header("content-type", ct)
        .body(body.to_vec())
        .expect("request");
    client
        .request_text(req)
        .await
        .expect_err("must be rejected")
}

/// The fields named by a 422's causes.
fn fields(e: &kube::Error) -> Vec<String> {
    let st = api_status(e).expect("an API status");
    assert_eq!(st.code, 422, "{st:?}");
    assert_eq!(st.reason, "Invalid");
    st.details
        .as_ref()
        .map(|d| d.causes.iter().map(|c| c.field.clone()).collect())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_json_and_yaml_are_400() {
    let s = start().await;
    let c = s.client().await;
    let path = "/api/v1/namespaces/default/configmaps";
    let e = raw(&c, path, "application/json", b"{\"metadata\": {\"name\": ").await;
    assert_eq!(api_status(&e).map(|s| s.code), Some(400), "{e:?}");
    let e = raw(
        &c,
        path,
        "application/yaml",
        b"metadata:\n  name: [unclosed\n",
    )
    .await;
    assert_eq!(api_status(&e).map(|s| s.code), Some(400), "{e:?}");
    // Well-formed but ill-typed: data must be a map of strings.
    let e = raw(
        &c,
        path,
        "application/json",
        br#"{"metadata":{"name":"x"},"data":[1]}"#,
    )
    .await;
    assert_eq!(api_status(&e).map(|s| s.code), Some(400), "{e:?}");
    // YAML that is fine is accepted.
    let ok = Request::post(path)
        .header("content-type", "application/yaml")
        .body(
            b"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: from-yaml\ndata:\n  k: v\n"
                .to_vec(),
        )
        .expect("request");
    c.request_text(ok).await.expect("yaml create");
    let api: Api<ConfigMap> = Api::namespaced(c, "default");
    assert!(api.get("from-yaml").await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_kind_is_404_status() {
    let s = start().await;
    let c = s.client().await;
    let req = Request::get("/apis/apps/v1/namespaces/default/statefulsets")
        .body(Vec::new())
        .expect("request");
    let e = c.request_text(req).await.expect_err("unknown kind");
    let st = api_status(&e).expect("Status body");
    assert_eq!((st.code, st.reason.as_str()), (404, "NotFound"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_cidrs_and_policy_rules_name_each_field() {
    let s = start().await;
    let c = s.client().await;
    let np: Api<NetworkPolicy> = Api::namespaced(c.clone(), "default");
    let bad: NetworkPolicy = obj(json!({
        "metadata": {"name": "np"},
        "spec": {
            "podSelector": {"matchExpressions": [{"key": "app", "operator": "Within", "values": ["a"]}]},
            "ingress": [{
                "from": [{"ipBlock": {"cidr": "10.0.0.0/33"}},
                         {"ipBlock": {"cidr": "10.0.0.0/8", "except": ["192.168.0.0/16"]}}],
                "ports": [{"endPort": 90}, {"protocol": "ICMP", "port": 70000}]
            }]
        }
    }));
    let e = np
        .create(&PostParams::default(), &bad)
        .await
        .expect_err("invalid");
    let mut f = fields(&e);
    f.sort();
    assert_eq!(
        f,
        [
            "spec.ingress[0].from[0].ipBlock.cidr",
            "spec.ingress[0].from[1].ipBlock.except[0]",
            "spec.ingress[0].ports[0].endPort",
            "spec.ingress[0].ports[1].port",
            "spec.ingress[0].ports[1].protocol",
            "spec.podSelector.matchExpressions[0].operator",
        ]
    );

    let nodes: Api<Node> = Api::all(c.clone());
    let bad: Node =
        obj(json!({"metadata": {"name": "node-1"}, "spec": {"podCIDR": "10.244.1.0/99"}}));
    let e = nodes
        .create(&PostParams::default(), &bad)
        .await
        .expect_err("invalid");
    assert!(fields(&e).contains(&"spec.podCIDR".to_string()));

    let ing: Api<Ingress> = Api::namespaced(c.clone(), "default");
    let bad: Ingress = obj(
        json!({"metadata": {"name": "Bad_Name"}, "spec": {"rules": [{"http": {"paths": [
        {"path": "api", "pathType": "Prefix", "backend": {"service": {"name": "web", "port": {"number": 80}}}}]}}]}}),
    );
    let e = ing
        .create(&PostParams::default(), &bad)
        .await
        .expect_err("invalid");
    let mut f = fields(&e);
    f.sort();
    assert_eq!(f, ["metadata.name", "spec.rules[0].http.paths[0].path"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_node_port_is_422_until_released() {
    let s = start().await;
    let svcs: Api<Service> = Api::namespaced(s.client().await, "default");
    let svc = |name: &str| -> Service {
        obj(
            json!({"metadata": {"name": name}, "spec": {"type": "NodePort", "selector": {"app": name},
            "ports": [{"port": 80, "nodePort": 30080}]}}),
        )
    };
    let pp = PostParams::default();
    let a = svcs.create(&pp, &svc("a")).await.expect("first");
    let ports = a.spec.and_then(|s| s.ports).unwrap_or_default();
    assert_eq!(ports[0].node_port, Some(30080));
    let e = svcs.create(&pp, &svc("b")).await.expect_err("duplicate");
    assert_eq!(fields(&e), ["spec.ports[0].nodePort"]);
    let msg = &api_status(&e).expect("status").message;
    assert!(msg.contains("provided port is already allocated"), "{msg}");
    svcs.delete("a", &DeleteParams::default())
        .await
        .expect("delete a");
    svcs.create(&pp, &svc("b"))
        .await
        .expect("port released by the delete");

    // Within one Service: the same number twice for one protocol is a duplicate, for TCP
    // and UDP it is allowed (DNS on a NodePort).
    let two = |name: &str, second: &str| -> Service {
        obj(
            json!({"metadata": {"name": name}, "spec": {"type": "NodePort", "ports": [
            {"name": "a", "port": 53, "protocol": "TCP", "nodePort": 30053},
            {"name": "b", "port": 54, "protocol": second, "nodePort": 30053}]}}),
        )
    };
    let e = svcs
        .create(&pp, &two("dns-dup", "TCP"))
        .await
        .expect_err("duplicate");
    assert_eq!(fields(&e), ["spec.ports[1].nodePort"]);
    svcs.create(&pp, &two("dns", "UDP"))
        .await
        .expect("TCP and UDP share a nodePort");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_or_wrong_token_is_401() {
    let s = start().await;
    for token in [None, Some("not-the-token".to_string())] {
        let kc = Kubeconfig::read_from(s.kubeconfig()).expect("kubeconfig");
        let mut cfg = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
            .await
            .expect("config");
        cfg.auth_info.token = token.map(Into::into);
        let c = kube::Client::try_from(cfg).expect("client");
        let api: Api<ConfigMap> = Api::namespaced(c, "default");
        let e = api
            .list(&Default::default())
            .await
            .expect_err("unauthenticated");
        assert_eq!(api_status(&e).map(|s| s.code), Some(401), "{e:?}");
        let e = api
            .create(
                &PostParams::default(),
                &obj(json!({"metadata": {"name": "x"}})),
            )
            .await
            .expect_err("no anonymous writes");
        assert_eq!(api_status(&e).map(|s| s.code), Some(401), "{e:?}");
    }
}
