//! The cluster both proxies serve, as the Kubernetes objects weft compiles: two Services
//! on the two backends, a TLS Secret, the Ingresses of the throughput runs and of the
//! reconfiguration test.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{Ingress, IngressClass};
use k8s_openapi::ByteString;
use serde_json::json;

use crate::{BACKENDS, PORT_A, PORT_B};

fn obj<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> Arc<T> {
    Arc::new(serde_json::from_value(v).expect("object"))
}

fn service(name: &str) -> Arc<Service> {
    obj(json!({
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"ports": [{"name": "http", "port": 80}]}
    }))
}

fn slice(name: &str, port: u16) -> Arc<EndpointSlice> {
    obj(json!({
        "metadata": {"name": format!("{name}-1"), "namespace": "default",
                     "labels": {"kubernetes.io/service-name": name}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": port}],
        "endpoints": BACKENDS.iter().map(|a| json!({"addresses": [a], "conditions": {"ready": true}})).collect::<Vec<_>>(),
    }))
}

fn path(p: &str, svc: &str) -> serde_json::Value {
    json!({"path": p, "pathType": "Prefix",
           "backend": {"service": {"name": svc, "port": {"number": 80}}}})
}

fn ingress(
    name: &str,
    host: &str,
    paths: Vec<serde_json::Value>,
    tls: Option<serde_json::Value>,
    second: usize,
) -> Arc<Ingress> {
    let mut spec = json!({
        "ingressClassName": "weft",
        "rules": [{"host": host, "http": {"paths": paths}}],
    });
    if let Some(t) = tls {
        spec["tls"] = t;
    }
    obj(json!({
        "metadata": {"name": name, "namespace": "default",
                     "creationTimestamp": format!("2026-01-01T{:02}:{:02}:{:02}Z", second / 3600, second / 60 % 60, second % 60)},
        "spec": spec,
    }))
}

fn base_cluster(dir: &Path) -> weft_ingress::Cluster {
    let mut c = weft_ingress::Cluster::default();
    c.classes
        .push(obj::<IngressClass>(weft_ingress::cases::default_class()));
    c.services.push(service("svc-a"));
    c.services.push(service("svc-b"));
    c.slices.push(slice("svc-a", PORT_A));
    c.slices.push(slice("svc-b", PORT_B));
    let crt = fs::read(dir.join("tls.crt")).expect("tls.crt");
    let key = fs::read(dir.join("tls.key")).expect("tls.key");
    let mut s = Secret::default();
    s.metadata.name = Some("bench-tls".into());
    s.metadata.namespace = Some("default".into());
    s.type_ = Some("kubernetes.io/tls".into());
    s.data = Some(BTreeMap::from([
        ("tls.crt".to_string(), ByteString(crt)),
        ("tls.key".to_string(), ByteString(key)),
    ]));
    c.secrets.push(Arc::new(s));
    c
}

/// The throughput runs' routes: shop.bench `/` -> a, `/api` -> b; blog.bench `/` -> b;
/// TLS for both names with the bench's certificate.
pub fn small_cluster(dir: &Path) -> weft_ingress::Cluster {
    let mut c = base_cluster(dir);
    let tls = json!([{"hosts": ["shop.bench", "blog.bench"], "secretName": "bench-tls"}]);
    c.ingresses.push(ingress(
        "shop",
        "shop.bench",
        vec![path("/", "svc-a"), path("/api", "svc-b")],
        Some(tls),
        0,
    ));
    c.ingresses.push(ingress(
        "blog",
        "blog.bench",
        vec![path("/", "svc-b")],
        None,
        1,
    ));
    c
}

pub fn many_host(i: usize) -> String {
    format!("h-{i:05}.bench")
}

/// Ingress `i` of the reconfiguration test: its host's `/` to a, plus `/v<k>` to b for
/// each change `k` made to it.
pub fn many_ingress(i: usize, changes: &[usize]) -> Arc<Ingress> {
    let mut paths = vec![path("/", "svc-a")];
    paths.extend(changes.iter().map(|k| path(&format!("/v{k}"), "svc-b")));
    ingress(&format!("ing-{i:05}"), &many_host(i), paths, None, i)
}

/// Which Ingress change `k` (1-based) edits.
pub fn changed_index(k: usize, n: usize) -> usize {
    (k * 997 + 13) % n
}

pub fn many_cluster(dir: &Path, n: usize) -> weft_ingress::Cluster {
    let mut c = base_cluster(dir);
    c.ingresses = (0..n).map(|i| many_ingress(i, &[])).collect();
    c
}
