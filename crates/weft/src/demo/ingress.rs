//! Ingress from outside: two hosts and two paths to two Services, one host over TLS,
//! asked from the lab's external host through the proxy every node runs on :80 and :443.

use anyhow::{Context, Result};
use k8s_openapi::api::core::v1::{Secret, Service};
use k8s_openapi::api::networking::v1::Ingress;
use kube::api::PostParams;
use kube::{Api, Client};
use weft_netlink::Netns;

use super::services::{from_external, until_ok};
use super::Narrator;

const OBJECTS: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: frontend, namespace: scenario2}
spec:
  selector: {app: frontend}
  ports: [{name: http, port: 80, targetPort: 8080}]
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: shop, namespace: scenario2}
spec:
  tls: [{hosts: [shop.example], secretName: shop-tls}]
  rules:
  - host: shop.example
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: frontend, port: {name: http}}}}
      - {path: /api, pathType: Prefix, backend: {service: {name: backend, port: {number: 80}}}}
  - host: api.example
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: backend, port: {number: 80}}}}
"#;

pub fn step(
    n: &mut Narrator,
    state: &weft_lab::LabState,
    lab_dir: &std::path::Path,
    rt: &tokio::runtime::Runtime,
    client: &Client,
) -> Result<()> {
    n.step(
        "Ingress: two hosts and two paths to two Services, one over TLS (the proxy on every node)",
    );
    let secret = weft_ingress::cases::TlsSecret {
        name: "scenario2/shop-tls".into(),
        hosts: vec!["shop.example".into()],
    }
    .generate()?;
    let cacert = lab_dir.join("demo-shop.example.pem");
    std::fs::write(&cacert, &secret.cert_pem)
        .with_context(|| format!("write {}", cacert.display()))?;
    let s: Secret = serde_json::from_value(secret.object)?;
    let pp = PostParams::default();
    rt.block_on(Api::<Secret>::namespaced(client.clone(), "scenario2").create(&pp, &s))
        .context("create secret scenario2/shop-tls")?;
    let mut docs = OBJECTS.split("\n---\n");
    let svc: Service = serde_yaml::from_str(docs.next().unwrap_or_default())?;
    let ing: Ingress = serde_yaml::from_str(docs.next().unwrap_or_default())?;
    rt.block_on(Api::<Service>::namespaced(client.clone(), "scenario2").create(&pp, &svc))
        .context("create service scenario2/frontend")?;
    rt.block_on(Api::<Ingress>::namespaced(client.clone(), "scenario2").create(&pp, &ing))
        .context("create ingress scenario2/shop")?;
    n.saw("ingress scenario2/shop: shop.example / -> frontend, /api -> backend; api.example -> backend; TLS for shop.example");
    let ext = Netns::from_name(&state.topology.external.netns)?;
    let nodes: Vec<String> = state
        .topology
        .nodes
        .iter()
        .map(|h| h.addr.addr().to_string())
        .collect();
    let node = |i: usize| nodes[i % nodes.len()].clone();
    let cacert = cacert.display().to_string();
    let asks: [(&str, usize, &str, &str); 4] = [
        (
            "http://shop.example/",
            0,
            "frontend-pod",
            "shop.example/ goes to the frontend Service",
        ),
        (
            "http://shop.example/api/items",
            1,
            "backend-pod",
            "shop.example/api goes to the backend Service (longest prefix)",
        ),
        (
            "http://api.example/",
            0,
            "backend-pod",
            "api.example goes to the backend Service",
        ),
        (
            "https://shop.example/",
            1,
            "frontend-pod",
            "over TLS, the certificate of shop-tls checks out for shop.example",
        ),
    ];
    for (url, i, pod, what) in asks {
        let port = if url.starts_with("https") { 443 } else { 80 };
        let host = url.split('/').nth(2).unwrap_or_default();
        let resolve = format!("{host}:{port}:{}", node(i));
        let mut args = vec!["http", url, "--resolve", &resolve, "--expect-status", "200"];
        if port == 443 {
            args.extend(["--cacert", &cacert]);
        }
        let (ok, line) = until_ok(|| from_external(&ext, &args))?;
        n.saw(format!("weft probe {}", args.join(" ")));
        n.saw(&line);
        n.check(ok && line.contains(&format!("pod=scenario2/{pod}")), what);
    }
    let (ok, line) = from_external(
        &ext,
        &[
            "http",
            "http://nothing.example/",
            "--resolve",
            &format!("nothing.example:80:{}", node(0)),
        ],
    )?;
    n.saw(&line);
    n.check(
        ok && line.contains("status=404"),
        "a host no rule names gets 404 from the proxy",
    );
    Ok(())
}
