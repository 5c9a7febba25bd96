//! The routing cases against the compiled table, without a network: every request of
//! every case in `tests/cases` must be routed to the Service (or answered with the status)
//! the case says, and over https with the certificate it says. The lab test sends the
//! same requests through a real proxy. What only a real proxy shows (every replica
//! answering in turn, a killed replica's process) is checked here as far as a table
//! can: every replica is among the route's endpoints, and the killed one is.

use std::path::Path;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde_json::{json, Value};
use weft_ingress::cases::{default_class, qualified, Case, Expect};
use weft_ingress::{compile, Cluster, Decision};

fn service(ns: &str, name: &str) -> Service {
    serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": ns},
        "spec": {"selector": {"app": name}, "ports": [
            {"name": "http", "port": 80, "targetPort": "web"},
            {"name": "alt", "port": 8081, "targetPort": "web2"},
        ]}
    }))
    .expect("service")
}

/// Service `i`'s replica `r` (from 1) has address 10.1.i.r.
fn slice(ns: &str, name: &str, i: usize, replicas: u32) -> EndpointSlice {
    let endpoints: Vec<Value> = (1..=replicas)
        .map(|r| json!({"addresses": [format!("10.1.{i}.{r}")], "conditions": {"ready": true}}))
        .collect();
    serde_json::from_value(json!({
        "metadata": {"name": format!("{name}-1"), "namespace": ns,
                     "labels": {"kubernetes.io/service-name": name}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080}, {"name": "alt", "port": 9090}],
        "endpoints": endpoints,
    }))
    .expect("slice")
}

/// The address `slice` gives a replica `NAME-r` of the case's Service `svc`.
fn replica_address(case: &Case, ns: &str, svc: &str, pod: &str) -> Option<std::net::IpAddr> {
    let i = case
        .services
        .iter()
        .position(|s| qualified(s) == (ns.into(), svc.into()))?;
    let r: u32 = pod.rsplit_once('-')?.1.parse().ok()?;
    format!("10.1.{i}.{r}").parse().ok()
}

fn obj<T: serde::de::DeserializeOwned>(v: Value) -> Arc<T> {
    let what = v["kind"].to_string();
    Arc::new(serde_json::from_value(v).unwrap_or_else(|e| panic!("{what}: {e}")))
}

/// The case's world as a compiler input; objects get creation times in written order.
fn cluster(case: &Case) -> Cluster {
    let mut c = Cluster::default();
    for (i, s) in case.services.iter().enumerate() {
        let (ns, name) = qualified(s);
        c.services.push(Arc::new(service(&ns, &name)));
        c.slices
            .push(Arc::new(slice(&ns, &name, i, case.replica_count())));
    }
    c.classes.push(obj(default_class()));
    for t in &case.tls_secrets {
        let s: Secret =
            serde_json::from_value(t.generate().expect("generate").object).expect("secret");
        c.secrets.push(Arc::new(s));
    }
    let objects = case.object_values().expect("objects");
    for (i, mut v) in objects.into_iter().enumerate() {
        v["metadata"]["creationTimestamp"] = Value::from(format!("2026-01-01T00:00:{i:02}Z"));
        if v["metadata"]["namespace"].is_null() {
            v["metadata"]["namespace"] = "default".into();
        }
        match v["kind"].as_str() {
            Some("Ingress") => c.ingresses.push(obj(v)),
            Some("IngressClass") => c.classes.push(obj(v)),
            Some("Service") => c.services.push(obj(v)),
            other => panic!(
                "case {}: objects of kind {other:?} are not part of the format",
                case.name
            ),
        }
    }
    c
}

#[test]
fn every_case_routes_as_written() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/cases");
    let cases = Case::load_dir(&dir).expect("cases");
    assert!(cases.len() >= 8, "cases went missing: {}", cases.len());
    let mut failures = Vec::new();
    let mut checked = 0;
    for (file, case) in &cases {
        let compiled = compile(&cluster(case));
        for r in &case.requests {
            let (scheme, host, path) = r.parts().expect("url");
            checked += 1;
            let got = match compiled.table.decide(host, path) {
                Decision::NotFound => Expect::Status(404),
                Decision::Route(route) if route.backend.endpoints.is_empty() => Expect::Status(503),
                Decision::Route(route) => {
                    let b = &route.backend;
                    Expect::Service(if b.namespace == "default" {
                        b.service.clone()
                    } else {
                        format!("{}/{}", b.namespace, b.service)
                    })
                }
            };
            if got != r.expect {
                failures.push(format!(
                    "{file}: {} {}: got {got:?}, want {:?}",
                    r.method, r.url, r.expect
                ));
            }
            if let Decision::Route(route) = compiled.table.decide(host, path) {
                let eps = &route.backend.endpoints;
                if let Some(port) = r
                    .endpoint_port
                    .filter(|p| eps.iter().any(|e| e.port() != *p))
                {
                    failures.push(format!(
                        "{file}: {}: endpoints {eps:?}, want port {port}",
                        r.url
                    ));
                }
                // The proxy's round robin is the lab's to show; here, that every replica
                // is a candidate.
                if r.every_replica && eps.len() != case.replica_count() as usize {
                    failures.push(format!(
                        "{file}: {}: {} endpoints for {} replicas",
                        r.url,
                        eps.len(),
                        case.replica_count()
                    ));
                }
            }
            if let (Some(want), "https") = (&r.certificate, scheme) {
                let got = compiled
                    .certs
                    .find(Some(host))
                    .map_or("default".to_string(), |c| c.source.clone());
                if got != *want {
                    failures.push(format!("{file}: {}: certificate {got}, want {want}", r.url));
                }
            }
        }
    }
    killed_replicas_are_candidates(&cases, &mut failures);
    assert!(
        failures.is_empty(),
        "{} of {checked} requests wrong:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// A case's killed replica is among the endpoints its first request may go to; the kill
/// itself needs a real pod and proxy, so only the lab test does it.
fn killed_replicas_are_candidates(cases: &[(String, Case)], failures: &mut Vec<String>) {
    for (file, case) in cases {
        let (Some((ns, svc, pod)), Some(first)) = (case.kill_target(), case.requests.first())
        else {
            continue;
        };
        println!("{file}: killing {ns}/{pod} mid-run is for the lab test (lab_ingress)");
        let (_, host, path) = first.parts().expect("url");
        let want = replica_address(case, &ns, &svc, &pod).expect("replica address");
        let compiled = compile(&cluster(case));
        match compiled.table.decide(host, path) {
            Decision::Route(r) if r.backend.endpoints.iter().any(|e| e.ip() == want) => {}
            other => failures.push(format!(
                "{file}: kill target {pod} ({want}) not routed: {other:?}"
            )),
        }
    }
}
