//! What the proxy tests share: a network namespace of their own, and a cluster of one
//! Service `web` (port 80, named `http`) whose endpoints the test names. Each test binary
//! uses a part of it.
#![allow(dead_code)]

use std::sync::Arc;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde_json::json;
use weft_ingress::cases::default_class;
use weft_ingress::Cluster;

/// Runs `f` on a fresh multi-threaded runtime inside a new network namespace, so the
/// proxy's listeners and backends never touch the machine's own network.
pub fn in_netns<F: std::future::Future<Output = ()>>(f: impl FnOnce() -> F + Send) {
    weft_netlink::Netns::run_in_new(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(f());
    })
    .expect("a network namespace of its own: the tests need root");
}

pub fn obj<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> Arc<T> {
    Arc::new(serde_json::from_value(v).expect("object"))
}

/// The default IngressClass and Service `web` with one slice: `endpoints` on `port`.
/// The test adds its Ingresses (and Secrets).
pub fn web(port: u16, endpoints: &[&str]) -> Cluster {
    let mut c = Cluster::default();
    c.classes.push(obj(default_class()));
    c.services.push(obj::<Service>(json!({
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {"ports": [{"name": "http", "port": 80}]}
    })));
    let endpoints: Vec<_> = endpoints
        .iter()
        .map(|a| json!({"addresses": [a]}))
        .collect();
    c.slices.push(obj::<EndpointSlice>(json!({
        "metadata": {"name": "web-1", "namespace": "default",
                     "labels": {"kubernetes.io/service-name": "web"}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": port}],
        "endpoints": endpoints,
    })));
    c
}

/// `web` plus Ingress `a`: every path of `a.test` to it.
pub fn a_test(port: u16, endpoints: &[&str]) -> Cluster {
    let mut c = web(port, endpoints);
    c.ingresses.push(obj(json!({
        "metadata": {"name": "a", "namespace": "default"},
        "spec": {"rules": [{"host": "a.test", "http": {"paths": [
            {"path": "/", "pathType": "Prefix",
             "backend": {"service": {"name": "web", "port": {"number": 80}}}}]}}]}
    })));
    c
}
