//! `weft lab policy check SRC DST PORT[/PROTO]`: may SRC open a connection to DST, and
//! which rules say so? The lab's objects are read from its API and put to weft-policy's
//! matcher, the same model that compiles every node's `inet weft-policy` table.
//! SRC and DST are `NAMESPACE/POD`, `POD` (in the default namespace), `node/NAME` or an
//! IP address (a pod's or node's address stands for it; any other is outside the cluster).

use anyhow::{bail, Context, Result};
use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, ListParams};
use kube::Api;
use weft_policy::cnp::ClusterNetworkPolicy;
use weft_policy::{check, Cluster, Endpoint, Protocol};

fn endpoint(s: &str) -> Endpoint {
    if let Ok(ip) = s.parse() {
        return Endpoint::Ip(ip);
    }
    match s.split_once('/') {
        Some(("node", name)) => Endpoint::Node(name.to_string()),
        Some((ns, pod)) => Endpoint::pod(ns, pod),
        None => Endpoint::pod("default", s),
    }
}

fn port_proto(s: &str) -> Result<(u16, Protocol)> {
    let (port, proto) = s.split_once('/').unwrap_or((s, "tcp"));
    let proto = Protocol::parse(proto)
        .with_context(|| format!("{s}: the protocol must be tcp, udp or sctp"))?;
    let port: u16 = port
        .parse()
        .ok()
        .filter(|p| *p > 0)
        .with_context(|| format!("{s}: the port must be 1-65535"))?;
    Ok((port, proto))
}

/// Everything policy reads, from the lab's API.
async fn cluster(client: kube::Client) -> Result<Cluster> {
    let lp = ListParams::default();
    let mut c = Cluster::default();
    for n in Api::<Namespace>::all(client.clone()).list(&lp).await? {
        c.apply_namespace(&n);
    }
    for n in Api::<Node>::all(client.clone()).list(&lp).await? {
        c.apply_node(&n);
    }
    for p in Api::<Pod>::all(client.clone()).list(&lp).await? {
        c.apply_pod(&p);
    }
    for np in Api::<NetworkPolicy>::all(client.clone()).list(&lp).await? {
        if let Err(e) = c.apply_network_policy(&np) {
            eprintln!("warning: {e} (ignored, as the agents ignore it)");
        }
    }
    let ar = ApiResource::from_gvk(&GroupVersionKind::gvk(
        "policy.networking.k8s.io",
        "v1beta1",
        "ClusterNetworkPolicy",
    ));
    for obj in Api::<DynamicObject>::all_with(client, &ar)
        .list(&lp)
        .await?
    {
        let cnp: ClusterNetworkPolicy = serde_json::from_value(serde_json::to_value(&obj)?)
            .context("read a ClusterNetworkPolicy")?;
        if let Err(e) = c.apply_cluster_network_policy(&cnp) {
            eprintln!("warning: {e} (ignored, as the agents ignore it)");
        }
    }
    Ok(c)
}

/// The decision for one connection in a lab, as `SRC -> DST PORT/PROTO: ALLOWED ...`
/// lines, and whether it is allowed.
pub fn explain(lab: &str, src: &str, dst: &str, port: &str) -> Result<(bool, String)> {
    weft_lab::load(lab)?;
    let (port, proto) = port_proto(port)?;
    let (src, dst) = (endpoint(src), endpoint(dst));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let c = rt.block_on(async {
        let client = crate::kube::client(&crate::lab::kubeconfig_path(lab)).await?;
        cluster(client).await
    })?;
    let d = match check(&c, &src, &dst, port, proto) {
        Ok(d) => d,
        Err(e) => bail!("{e}"),
    };
    Ok((d.allowed, format!("{src} -> {dst} {port}/{proto}: {d}")))
}

/// Prints the decision; exit 0 when allowed, 1 when denied.
pub fn check_cmd(lab: &str, src: &str, dst: &str, port: &str) -> Result<u8> {
    let (allowed, text) = explain(lab, src, dst, port)?;
    println!("{text}");
    Ok(if allowed { 0 } else { 1 })
}

/// `weft lab policy counters`: each node agent's denial counters
/// (`STATE_DIR/policy-denials.tsv`), then their sum.
pub fn counters_cmd(lab: &str) -> Result<u8> {
    use weft_policy::denials::Counters;
    let state = weft_lab::load(lab)?;
    let base = weft_lab::lab_dir(lab).join("nodes");
    let mut total = Counters::default();
    for n in &state.topology.nodes {
        let file = base.join(&n.name).join("policy-denials.tsv");
        let text = match std::fs::read_to_string(&file) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                println!("{}: no counters (no agent, or no NetworkPolicy)", n.name);
                continue;
            }
            Err(e) => return Err(e).with_context(|| format!("reading {}", file.display())),
        };
        let c =
            Counters::from_tsv(&text).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
        println!("{}:", n.name);
        print_counters(&c);
        for (k, v) in c.counts {
            *total.counts.entry(k).or_default() += v;
        }
    }
    println!("all nodes:");
    print_counters(&total);
    Ok(0)
}

/// `weft policy counters`: this node's denial counters, as its agent wrote them.
pub fn node_counters_cmd(state_dir: &std::path::Path) -> Result<u8> {
    let file = state_dir.join("policy-denials.tsv");
    let text = std::fs::read_to_string(&file).with_context(|| {
        format!(
            "reading {} (is the agent running with --state-dir {}?)",
            file.display(),
            state_dir.display()
        )
    })?;
    let c = weft_policy::denials::Counters::from_tsv(&text)
        .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
    print_counters(&c);
    Ok(0)
}

fn print_counters(c: &weft_policy::denials::Counters) {
    if c.counts.is_empty() {
        println!("  (no denied packets)");
    }
    for (k, n) in &c.counts {
        println!("  {n:>8}  {k}");
    }
}
