//! `weft lab demo`: the documents' scenarios, run for real on a fresh lab and narrated.
//!
//! Scenario 1: frontend-pod and backend-pod on node-1 talk across the bridge with no NAT.
//! Scenario 2: backend-pod on node-2: the routes in the pod and on the node, and the
//! packet crossing the VXLAN overlay. Step 4: a Service in front of backend-pod, by cluster
//! IP, node port and load balancer address. Cluster DNS: backend by name. Ingress: two
//! hosts and two paths from outside, one over TLS. NetworkPolicy: a
//! default-deny, then an allow for frontend-pod only. Each step prints what it did and what it saw; the
//! demo exits non-zero if any check fails, and removes its lab in every case.

mod dns;
mod ingress;
mod policy;
mod services;

use crate::exec;
use anyhow::{bail, Context, Result};
use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use kube::api::{ListParams, PostParams};
use kube::{Api, Client};
use std::time::{Duration, Instant};
use weft_netlink::{Family, Handle, Netns, RT_TABLE_MAIN};

struct Narrator {
    step: u32,
    failed: Vec<String>,
}

impl Narrator {
    fn step(&mut self, what: &str) {
        self.step += 1;
        println!("\n[{}] {what}", self.step);
    }
    fn saw(&self, what: impl std::fmt::Display) {
        println!("    {what}");
    }
    /// Runs a probe from a pod, shows its line, and checks it (and, if given, that the
    /// server saw `client`).
    fn probe(
        &mut self,
        lab: &str,
        ns: &str,
        args: &[&str],
        client: Option<&str>,
        what: &str,
    ) -> Result<String> {
        let (ok, line) = in_pod(lab, ns, "frontend-pod", args)?;
        self.saw(&line);
        let seen = client.is_none_or(|c| line.contains(&format!("client={c}")));
        self.check(ok && seen, what);
        Ok(line)
    }

    fn check(&mut self, ok: bool, what: &str) {
        if ok {
            println!("    ok: {what}");
        } else {
            println!("    FAILED: {what}");
            self.failed.push(what.to_string());
        }
    }
}

/// Removes the demo's lab however the demo ends.
struct LabGuard(String);

impl Drop for LabGuard {
    fn drop(&mut self) {
        if weft_lab::load(&self.0).is_ok() {
            println!();
            if let Err(e) = crate::lab::down(&self.0) {
                eprintln!("weft lab demo: removing lab {}: {e:#}", self.0);
            }
        }
    }
}

const PODS: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: NS}
---
apiVersion: v1
kind: Pod
metadata: {name: frontend-pod, namespace: NS, labels: {app: frontend}}
spec:
  nodeName: node-1
  containers: [{name: app, image: weft/serve, ports: [{containerPort: 8080}]}]
---
apiVersion: v1
kind: Pod
metadata: {name: backend-pod, namespace: NS, labels: {app: backend}}
spec:
  nodeName: BACKEND_NODE
  containers:
  - name: app
    image: weft/serve
    ports: [{containerPort: 8080}, {containerPort: 8081, protocol: UDP}]
    readinessProbe: {tcpSocket: {port: 8080}, periodSeconds: 1}
"#;

fn pod_ip(p: &Pod) -> Option<String> {
    p.status.as_ref()?.pod_ip.clone()
}

fn is_ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Creates one pod and waits until it runs with an address (so IPs follow creation order).
async fn create_pod(client: &Client, ns: &str, pod: Pod) -> Result<Pod> {
    let api: Api<Pod> = Api::namespaced(client.clone(), ns);
    let name = pod.metadata.name.clone().unwrap_or_default();
    api.create(&PostParams::default(), &pod)
        .await
        .with_context(|| format!("create pod {ns}/{name}"))?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let p = api.get(&name).await?;
        if pod_ip(&p).is_some() && is_ready(&p) {
            return Ok(p);
        }
        if Instant::now() > deadline {
            bail!("pod {ns}/{name} did not become ready with an IP");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn apply_scenario(client: &Client, ns: &str, backend_node: &str) -> Result<(Pod, Pod)> {
    let text = PODS.replace("BACKEND_NODE", backend_node).replace("NS", ns);
    let mut docs = text.split("\n---\n");
    let nsobj: Namespace = serde_yaml::from_str(docs.next().context("namespace doc")?)?;
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &nsobj)
        .await?;
    let front: Pod = serde_yaml::from_str(docs.next().context("frontend doc")?)?;
    let back: Pod = serde_yaml::from_str(docs.next().context("backend doc")?)?;
    let f = create_pod(client, ns, front).await?;
    let b = create_pod(client, ns, back).await?;
    Ok((f, b))
}

/// Runs `weft ARGS` inside a pod; returns (success, the line it printed).
fn in_pod(lab: &str, ns: &str, pod: &str, args: &[&str]) -> Result<(bool, String)> {
    let argv: Vec<String> = std::iter::once("weft")
        .chain(args.iter().copied())
        .map(String::from)
        .collect();
    let out = exec::command(lab, ns, pod, &argv)?.output()?;
    Ok((
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).trim().to_string(),
    ))
}

fn show_routes(n: &Narrator, netns: &str, only_from: Option<&str>) -> Result<Vec<String>> {
    let ns = Netns::from_name(netns)?;
    let mut h = Handle::in_netns(&ns)?;
    let links = h.links()?;
    let mut lines = Vec::new();
    for r in h
        .routes(Family::V4)?
        .into_iter()
        .filter(|r| r.table == RT_TABLE_MAIN)
    {
        if only_from.is_some_and(|p| !r.dst.to_string().starts_with(p)) {
            continue;
        }
        let via = r.gateway.map(|g| format!(" via {g}")).unwrap_or_default();
        let dev = links
            .iter()
            .find(|l| Some(l.index) == r.oif)
            .map(|l| l.name.as_str())
            .unwrap_or("?");
        let onlink = if r.onlink { " onlink" } else { "" };
        let line = format!("{}{via} dev {dev}{onlink}", r.dst);
        n.saw(&line);
        lines.push(line);
    }
    Ok(lines)
}

pub fn run() -> Result<()> {
    let lab = format!("demo-{}", std::process::id() % 100_000);
    let mut n = Narrator {
        step: 0,
        failed: Vec::new(),
    };
    println!("weft lab demo: the documents' scenarios on a real two-node lab");
    n.step("Build the lab: two nodes on one LAN, each leasing a /24 of 10.244.0.0/16, VXLAN between them");
    crate::lab::up(&lab, 2, "vxlan", None)?;
    let _guard = LabGuard(lab.clone());
    let state = weft_lab::load(&lab)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let client = rt.block_on(crate::kube::client(&crate::lab::kubeconfig_path(&lab)))?;
    let nodes = rt.block_on(Api::<Node>::all(client.clone()).list(&ListParams::default()))?;
    for node in &nodes.items {
        let ip = node
            .status
            .as_ref()
            .and_then(|s| s.addresses.as_ref())
            .and_then(|a| a.first())
            .map(|a| a.address.clone());
        let cidr = node.spec.as_ref().and_then(|s| s.pod_cidr.clone());
        n.saw(format!(
            "{}: node IP {}, pod subnet {}",
            node.metadata.name.as_deref().unwrap_or("?"),
            ip.unwrap_or_default(),
            cidr.unwrap_or_default()
        ));
    }

    n.step(
        "Scenario 1: frontend-pod and backend-pod on node-1 (the CNI plugin gives each its own IP)",
    );
    let (f1, b1) = rt.block_on(apply_scenario(&client, "scenario1", "node-1"))?;
    let (fip, bip) = (
        pod_ip(&f1).unwrap_or_default(),
        pod_ip(&b1).unwrap_or_default(),
    );
    n.saw(format!(
        "frontend-pod {fip}, backend-pod {bip}, both on node-1's bridge cbr0"
    ));
    n.check(
        fip == "10.244.1.2" && bip == "10.244.1.3",
        "the documents' addresses: 10.244.1.2 and 10.244.1.3",
    );
    ping(
        &mut n,
        &lab,
        "scenario1",
        &bip,
        "the ping crosses the bridge and is answered",
    )?;
    let tcp = format!("{bip}:8080");
    n.probe(
        &lab,
        "scenario1",
        &["probe", "tcp", &tcp],
        Some(&fip),
        "backend-pod sees frontend-pod's own IP: no NAT between pods",
    )?;

    n.step("Scenario 2: backend-pod on node-2; frontend-pod stays on node-1");
    let (f2, b2) = rt.block_on(apply_scenario(&client, "scenario2", "node-2"))?;
    let (fip, bip) = (
        pod_ip(&f2).unwrap_or_default(),
        pod_ip(&b2).unwrap_or_default(),
    );
    n.saw(format!(
        "frontend-pod {fip} on node-1, backend-pod {bip} on node-2"
    ));
    n.check(
        bip.starts_with("10.244.2."),
        "node-2's pods come from node-2's subnet",
    );
    // The documents' command as written, through the lab's API and node-1's node API.
    n.saw("kubectl exec frontend-pod -- ip route   (kubectl, against the lab):");
    let (ok, routes) = kubectl_exec(&lab, "scenario2", &["ip", "route"])?;
    for l in routes.lines() {
        n.saw(l);
    }
    n.check(
        ok && routes.contains("default via 10.244.1.1"),
        "the pod's default route leads to its node's bridge (cbr0, 10.244.1.1)",
    );
    n.saw("on node-1, the route to node-2's pods:");
    let routes = show_routes(&n, &state.topology.nodes[0].netns, Some("10.244.2."))?;
    n.check(
        routes.iter().any(|r| r.contains("dev weft.1 onlink")),
        "node-1 sends 10.244.2.0/24 into the VXLAN device weft.1",
    );
    let ns1 = Netns::from_name(&state.topology.nodes[0].netns)?;
    let mut h1 = Handle::in_netns(&ns1)?;
    if let Some(vx) = h1.link_by_name("weft.1")? {
        for nb in h1
            .neighbours(Some(vx.index))?
            .iter()
            .filter(|x| x.permanent)
        {
            n.saw(format!(
                "neighbour {} -> {} (node-2's VTEP)",
                nb.ip,
                weft_netlink::mac_to_string(&nb.mac)
            ));
        }
        for e in h1
            .fdb(Some(vx.index))?
            .iter()
            .filter(|e| e.dst.is_some() && e.mac != [0; 6])
        {
            n.saw(format!(
                "fdb {} -> {} (encapsulated in UDP 8472 to node-2's IP)",
                weft_netlink::mac_to_string(&e.mac),
                e.dst.map(|d| d.to_string()).unwrap_or_default()
            ));
        }
    }
    ping(
        &mut n,
        &lab,
        "scenario2",
        &bip,
        "the ping crosses nodes through the overlay",
    )?;
    let tcp = format!("{bip}:8080");
    n.probe(
        &lab,
        "scenario2",
        &["probe", "tcp", &tcp],
        Some(&fip),
        "across nodes too, the server sees the client's pod IP",
    )?;
    let udp = format!("{bip}:8081");
    n.probe(
        &lab,
        "scenario2",
        &["probe", "udp", &udp],
        Some(&fip),
        "UDP crosses as well, without NAT",
    )?;

    services::step(&mut n, &lab, &state, &rt, &client)?;
    dns::step(&mut n, &lab)?;
    ingress::step(&mut n, &state, &weft_lab::lab_dir(&lab), &rt, &client)?;
    policy::step(&mut n, &lab, &rt, &client, &bip)?;

    n.step("Leaving the cluster: a pod reaches the external host from its node's IP (masquerade)");
    let ext = Netns::from_name(&state.topology.external.netns)?;
    let ext_addr = state.topology.external.addr.addr();
    let server = crate::nsexec::command_in(&ext, std::env::current_exe()?)
        .args(["serve", "--tcp", "9000"])
        .stdout(std::process::Stdio::null())
        .spawn()?;
    let _server = KillOnDrop(server);
    let deadline = Instant::now() + Duration::from_secs(15);
    let (mut ok, mut line) = (false, String::new());
    while Instant::now() < deadline && !ok {
        (ok, line) = in_pod(
            &lab,
            "scenario2",
            "frontend-pod",
            &["probe", "tcp", &format!("{ext_addr}:9000")],
        )?;
    }
    n.saw(&line);
    n.check(
        ok && line.contains("client=192.168.1.2"),
        "traffic leaving the cluster CIDR carries node-1's address",
    );

    println!();
    if !n.failed.is_empty() {
        bail!(
            "{} check(s) failed: {}",
            n.failed.len(),
            n.failed.join("; ")
        );
    }
    println!("demo passed: {} steps; removing the lab", n.step);
    Ok(())
}

/// `kubectl exec frontend-pod -- ARGV` in `ns`, the documents' way: the real kubectl,
/// through the lab's API server and the node's agent. (exit 0, stdout).
fn kubectl_exec(lab: &str, ns: &str, argv: &[&str]) -> Result<(bool, String)> {
    let out = std::process::Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(crate::lab::kubeconfig_path(lab))
        .args(["exec", "-n", ns, "frontend-pod", "--"])
        .args(argv)
        .output()
        .context("run kubectl (is it installed?)")?;
    Ok((
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    ))
}

/// The documents' `kubectl exec frontend-pod -- ping -c 1 IP`, verbatim when the machine
/// has ping (pods see the host's files); else the same ICMP echo by `weft probe icmp`.
fn ping(n: &mut Narrator, lab: &str, ns: &str, ip: &str, what: &str) -> Result<()> {
    let has_ping = ["/usr/bin/ping", "/bin/ping"]
        .iter()
        .any(|p| std::path::Path::new(p).exists());
    if !has_ping {
        n.saw(format!(
            "kubectl exec frontend-pod -- ping {ip}   (no ping on this machine: weft probe icmp)"
        ));
        n.probe(lab, ns, &["probe", "icmp", ip], None, what)?;
        return Ok(());
    }
    n.saw(format!("kubectl exec frontend-pod -- ping -c 1 {ip}"));
    let (ok, out) = kubectl_exec(lab, ns, &["ping", "-c", "1", "-W", "2", ip])?;
    for l in out.lines().filter(|l| !l.trim().is_empty()) {
        n.saw(l);
    }
    n.check(ok && out.contains("1 received"), what);
    Ok(())
}

struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
