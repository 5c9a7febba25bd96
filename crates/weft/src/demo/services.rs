//! The documents' step 4, kube-proxy's part: a Service in front of backend-pod, reached by
//! its cluster IP from a pod, by its node port and its load balancer address from outside.
//! weft-proxy holds it as data in each node's `ip weft-proxy` table; the step shows the
//! element that sends the cluster IP to backend-pod.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use k8s_openapi::api::core::v1::Service;
use kube::api::PostParams;
use kube::{Api, Client};
use weft_netlink::Netns;
use weft_nft::{ElemData, Family, Value};

use super::{in_pod, Narrator};

const SERVICE: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: backend, namespace: scenario2}
spec:
  type: LoadBalancer
  selector: {app: backend}
  ports: [{name: http, port: 80, targetPort: 8080}]
"#;

/// Retries a probe (the Service's endpoints reach the nodes within a second or so).
pub(super) fn until_ok(
    mut probe: impl FnMut() -> Result<(bool, String)>,
) -> Result<(bool, String)> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (ok, line) = probe()?;
        if ok || Instant::now() > deadline {
            return Ok((ok, line));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

pub(super) fn from_external(ext: &Netns, args: &[&str]) -> Result<(bool, String)> {
    let out = crate::nsexec::command_in(ext, std::env::current_exe()?)
        .arg("probe")
        .args(args)
        .output()?;
    Ok((
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).trim().to_string(),
    ))
}

/// The `backends` elements of node's table that send `vip` somewhere, as lines.
fn backends_of(node_netns: &str, vip: Ipv4Addr) -> Result<Vec<String>> {
    let path = std::path::PathBuf::from(format!("/run/netns/{node_netns}"));
    let mut nft = weft_nft::Backend::open_in(&path)?;
    let Some(map) = nft.read_set(Family::Ip, weft_proxy::TABLE, "backends")? else {
        return Ok(Vec::new());
    };
    Ok(map
        .elements
        .iter()
        .filter(|(k, _)| k.0.first() == Some(&Value::Ipv4(vip)))
        .map(|(k, e)| {
            let join = |v: &[Value]| {
                v.iter()
                    .map(weft_nft::render::value)
                    .collect::<Vec<_>>()
                    .join(" . ")
            };
            let key = join(&k.0);
            let data = match &e.data {
                Some(ElemData::Value(v)) => join(v),
                _ => "?".into(),
            };
            format!("{key} : {data}")
        })
        .collect())
}

pub fn step(
    n: &mut Narrator,
    lab: &str,
    state: &weft_lab::LabState,
    rt: &tokio::runtime::Runtime,
    client: &Client,
) -> Result<()> {
    n.step(
        "Step 4, kube-proxy's part: a Service in front of backend-pod (weft-proxy on every node)",
    );
    let svc: Service = serde_yaml::from_str(SERVICE)?;
    let api: Api<Service> = Api::namespaced(client.clone(), "scenario2");
    let svc = rt
        .block_on(api.create(&PostParams::default(), &svc))
        .context("create service scenario2/backend")?;
    let spec = svc.spec.clone().unwrap_or_default();
    let vip = spec.cluster_ip.clone().unwrap_or_default();
    let node_port = spec
        .ports
        .as_ref()
        .and_then(|p| p.first())
        .and_then(|p| p.node_port)
        .unwrap_or_default();
    let lb = svc
        .status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|l| l.ingress.as_ref())
        .and_then(|i| i.first())
        .and_then(|i| i.ip.clone())
        .unwrap_or_default();
    n.saw(format!(
        "service scenario2/backend: cluster IP {vip}, node port {node_port}, load balancer {lb}"
    ));
    let (ok, line) = until_ok(|| {
        in_pod(
            lab,
            "scenario2",
            "frontend-pod",
            &["probe", "tcp", &format!("{vip}:80")],
        )
    })?;
    n.saw(format!("kubectl exec frontend-pod -- probe {vip}:80:"));
    n.saw(&line);
    n.check(
        ok && line.contains("pod=scenario2/backend-pod"),
        "the cluster IP leads to backend-pod on node-2",
    );
    if let Ok(ip) = vip.parse::<Ipv4Addr>() {
        n.saw(
            "node-1's weft-proxy table, map backends (service . proto . port . slot : endpoint):",
        );
        for l in backends_of(&state.topology.nodes[0].netns, ip)? {
            n.saw(&l);
        }
    }
    let ext = Netns::from_name(&state.topology.external.netns)?;
    let node1 = state.topology.nodes[0].addr.addr();
    let (ok, line) = until_ok(|| from_external(&ext, &["tcp", &format!("{node1}:{node_port}")]))?;
    n.saw(format!(
        "from the external host, node-1's node port {node1}:{node_port}:"
    ));
    n.saw(&line);
    n.check(
        ok && line.contains("pod=scenario2/backend-pod"),
        "any node's port reaches the pod, wherever it runs",
    );
    n.saw("(client= is node-1's address on the path to node-2: with externalTrafficPolicy Cluster");
    n.saw(" the node masquerades, so the reply comes back through it to be un-NATed)");
    let (ok, line) = until_ok(|| from_external(&ext, &["tcp", &format!("{lb}:80")]))?;
    n.saw(format!(
        "from the external host, the load balancer address {lb}:80:"
    ));
    n.saw(&line);
    n.check(
        ok && line.contains("pod=scenario2/backend-pod"),
        "the load balancer address reaches it too",
    );
    Ok(())
}
