//! The few Kubernetes API calls the CLI itself makes (the agent has its own client).

use anyhow::{Context, Result};
use k8s_openapi::api::core::v1::Node;
use kube::{api::ListParams, Api, Client};
use std::path::Path;
use std::time::{Duration, Instant};

pub async fn client(kubeconfig: &Path) -> Result<Client> {
    let kc = kube::config::Kubeconfig::read_from(kubeconfig)
        .with_context(|| format!("read {}", kubeconfig.display()))?;
    let cfg = kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
        .await?;
    Ok(Client::try_from(cfg)?)
}

fn is_ready(n: &Node) -> bool {
    n.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Polls until `want` nodes are Ready or `deadline` passes; reports each change of the count.
pub fn wait_nodes_ready(
    kubeconfig: &Path,
    want: usize,
    deadline: Instant,
    report: &mut dyn FnMut(usize),
) -> Result<usize> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let client = client(kubeconfig).await?;
        let nodes: Api<Node> = Api::all(client);
        let mut last = usize::MAX;
        loop {
            let ready = match nodes.list(&ListParams::default()).await {
                Ok(l) => l.items.iter().filter(|n| is_ready(n)).count(),
                Err(_) => 0,
            };
            if ready != last {
                report(ready);
                last = ready;
            }
            if ready >= want || Instant::now() > deadline {
                return Ok(ready);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
}
