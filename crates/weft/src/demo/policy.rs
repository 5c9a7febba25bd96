//! NetworkPolicy: scenario2 gets a default-deny for ingress, and backend-pod then admits
//! frontend-pod only. Every node enforces it in its `inet weft-policy` table; a third pod
//! on node-1 shows that the allow names frontend-pod and nobody else.

use anyhow::{Context, Result};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::{DeleteParams, PostParams};
use kube::{Api, Client};
use std::time::{Duration, Instant};

use super::{create_pod, in_pod, Narrator};

const OTHER: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: other-pod, namespace: scenario2, labels: {app: other}}
spec:
  nodeName: node-1
  containers: [{name: app, image: weft/serve, ports: [{containerPort: 8080}]}]
"#;

const DENY_ALL: &str = r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: default-deny, namespace: scenario2}
spec:
  podSelector: {}
  policyTypes: [Ingress]
"#;

const ALLOW_FRONTEND: &str = r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: backend-from-frontend, namespace: scenario2}
spec:
  podSelector: {matchLabels: {app: backend}}
  ingress:
  - from: [{podSelector: {matchLabels: {app: frontend}}}]
    ports: [{port: 8080}]
"#;

/// Probes from `pod` until the result is `want` (policy reaches the nodes within a
/// second; a loaded machine may take longer), or 30 s pass; returns what was last seen.
fn until(lab: &str, pod: &str, target: &str, want: bool) -> Result<(bool, String)> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (ok, line) = in_pod(
            lab,
            "scenario2",
            pod,
            &["probe", "tcp", target, "--timeout-ms", "1000"],
        )?;
        if ok == want || Instant::now() > deadline {
            return Ok((ok, line));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

pub fn step(
    n: &mut Narrator,
    lab: &str,
    rt: &tokio::runtime::Runtime,
    client: &Client,
    backend_ip: &str,
) -> Result<()> {
    n.step("NetworkPolicy: a default-deny in scenario2, then backend-pod admits frontend-pod only");
    let other: Pod = serde_yaml::from_str(OTHER)?;
    rt.block_on(create_pod(client, "scenario2", other))?;
    let api: Api<NetworkPolicy> = Api::namespaced(client.clone(), "scenario2");
    let create = |yaml: &str| -> Result<()> {
        let np: NetworkPolicy = serde_yaml::from_str(yaml)?;
        rt.block_on(api.create(&PostParams::default(), &np))
            .context("create a NetworkPolicy")?;
        Ok(())
    };
    let target = format!("{backend_ip}:8080");

    create(DENY_ALL)?;
    n.saw("networkpolicy scenario2/default-deny: podSelector {}, policyTypes [Ingress]");
    let (ok, line) = until(lab, "frontend-pod", &target, false)?;
    n.saw(&line);
    n.check(
        !ok,
        "with no rule admitting it, frontend-pod cannot reach backend-pod",
    );

    create(ALLOW_FRONTEND)?;
    n.saw("networkpolicy scenario2/backend-from-frontend: app=backend admits app=frontend on 8080");
    let (ok, line) = until(lab, "frontend-pod", &target, true)?;
    n.saw(&line);
    n.check(ok, "frontend-pod connects again");
    let (ok, line) = until(lab, "other-pod", &target, false)?;
    n.saw(&line);
    n.check(!ok, "other-pod, on the same node, is still refused");
    for (src, want) in [
        ("scenario2/frontend-pod", true),
        ("scenario2/other-pod", false),
    ] {
        let (allowed, why) = crate::policy::explain(lab, src, "scenario2/backend-pod", "8080/tcp")?;
        n.saw(format!(
            "weft lab policy check {src} scenario2/backend-pod 8080/tcp:"
        ));
        for l in why.lines() {
            n.saw(format!("  {l}"));
        }
        n.check(
            allowed == want,
            "the matcher gives the same answer and names the rules",
        );
    }

    // The steps after this one are about other things: the namespace opens again.
    for name in ["default-deny", "backend-from-frontend"] {
        rt.block_on(api.delete(name, &DeleteParams::default()))
            .with_context(|| format!("delete NetworkPolicy scenario2/{name}"))?;
    }
    Ok(())
}
