//! `weft lab demo`: the documents' scenarios, run for real and narrated.
//!
//! Until the lab exists this is scenario 1 with the CNI plugin alone: a node namespace with
//! its bridge, two pod namespaces wired by the plugin exactly as a runtime calls it, a ping
//! across the bridge, and a TCP connection where the server sees the client's own pod IP.

use crate::nsexec::command_in;
use anyhow::{bail, Context, Result};
use std::io::Write;
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};
use weft_netlink::{Family, Handle, Netns};

/// Everything the demo made, removed on drop (also when a step fails).
struct World {
    names: Vec<String>,
    children: Vec<Child>,
    data_dir: PathBuf,
}

impl Drop for World {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        for n in self.names.iter().rev() {
            let _ = Netns::delete_named(n);
        }
        let _ = std::fs::remove_dir_all(&self.data_dir);
    }
}

struct Narrator {
    step: u32,
    failed: u32,
}

impl Narrator {
    fn step(&mut self, what: &str) {
        self.step += 1;
        println!("\n[{}] {what}", self.step);
    }
    fn saw(&self, what: impl std::fmt::Display) {
        println!("    {what}");
    }
    fn check(&mut self, ok: bool, what: &str) {
        if ok {
            println!("    ok: {what}");
        } else {
            self.failed += 1;
            println!("    FAILED: {what}");
        }
    }
}

fn cni(
    exe: &PathBuf,
    node: &Netns,
    cmd: &str,
    id: &str,
    pod: &Netns,
    conf: &str,
) -> Result<serde_json::Value> {
    let mut child = command_in(node, exe)
        .env("CNI_COMMAND", cmd)
        .env("CNI_CONTAINERID", id)
        .env("CNI_NETNS", pod.path())
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", "/opt/cni/bin")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .context("run the CNI plugin")?;
    child
        .stdin
        .take()
        .context("plugin stdin")?
        .write_all(conf.as_bytes())?;
    let out = child.wait_with_output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!("CNI {cmd} for {id} failed: {text}");
    }
    Ok(serde_json::from_str(&text).unwrap_or(serde_json::Value::Null))
}

fn probe(exe: &PathBuf, ns: &Netns, args: &[&str]) -> Result<(bool, String)> {
    let out = command_in(ns, exe).arg("probe").args(args).output()?;
    let line = String::from_utf8_lossy(&out.stdout).trim().to_string();
    Ok((out.status.success(), line))
}

pub fn run() -> Result<()> {
    let exe = std::env::current_exe().context("find the weft binary")?;
    let tag = format!("weft-demo-{}", std::process::id());
    let mut world = World {
        names: Vec::new(),
        children: Vec::new(),
        data_dir: std::env::temp_dir().join(&tag),
    };
    let mut n = Narrator { step: 0, failed: 0 };
    println!("weft lab demo: scenario 1 of the documents, pods talking inside one node");
    println!("(the multi-node lab is not built yet: this runs the CNI plugin on its own)");

    n.step("Create node-1 and two pods, each in its own network namespace");
    let mut make = |suffix: &str| -> Result<Netns> {
        let name = format!("{tag}-{suffix}");
        let ns = Netns::create_named(&name).with_context(|| format!("create namespace {name}"))?;
        world.names.push(name);
        Ok(ns)
    };
    let node = make("node-1")?;
    let frontend = make("frontend-pod")?;
    let backend = make("backend-pod")?;
    n.saw(format!(
        "namespaces {tag}-{{node-1,frontend-pod,backend-pod}}"
    ));

    n.step("The runtime calls the CNI plugin (weft) for each pod: bridge cbr0, veth pair, IPAM");
    let conf = serde_json::json!({
        "cniVersion": "1.1.0", "name": "podnet", "type": "weft", "bridge": "cbr0",
        "isGateway": true, "isDefaultGateway": true,
        "ipam": {"type": "weft", "subnet": "10.244.1.0/24", "dataDir": world.data_dir},
    })
    .to_string();
    n.saw(format!("network config: {conf}"));
    let started = Instant::now();
    let fr = cni(&exe, &node, "ADD", "frontend-pod", &frontend, &conf)?;
    let br = cni(&exe, &node, "ADD", "backend-pod", &backend, &conf)?;
    let ip = |r: &serde_json::Value| r["ips"][0]["address"].as_str().unwrap_or("?").to_string();
    n.saw(format!(
        "frontend-pod: eth0 {} (host end {} on {})",
        ip(&fr),
        fr["interfaces"][1]["name"].as_str().unwrap_or("?"),
        fr["interfaces"][0]["name"].as_str().unwrap_or("?")
    ));
    n.saw(format!(
        "backend-pod:  eth0 {} (host end {} on {})",
        ip(&br),
        br["interfaces"][1]["name"].as_str().unwrap_or("?"),
        br["interfaces"][0]["name"].as_str().unwrap_or("?")
    ));
    n.saw(format!(
        "two ADDs took {:.1} ms",
        started.elapsed().as_secs_f64() * 1e3
    ));
    n.check(
        ip(&fr) == "10.244.1.2/24" && ip(&br) == "10.244.1.3/24",
        "each pod has its own IP from node-1's subnet",
    );

    n.step("The route table inside frontend-pod");
    let mut h = Handle::in_netns(&frontend)?;
    let links = h.links()?;
    for r in h
        .routes(Family::V4)?
        .into_iter()
        .filter(|r| r.table == weft_netlink::RT_TABLE_MAIN)
    {
        let via = r.gateway.map(|g| format!(" via {g}")).unwrap_or_default();
        let dev = links
            .iter()
            .find(|l| Some(l.index) == r.oif)
            .map(|l| l.name.as_str())
            .unwrap_or("?");
        n.saw(format!("{}{via} dev {dev}", r.dst));
    }
    n.saw("(the default route leads to the bridge cbr0, node-1's gateway 10.244.1.1)");

    n.step("frontend-pod pings backend-pod across the bridge");
    let (ok, line) = probe(&exe, &frontend, &["icmp", "10.244.1.3"])?;
    n.saw(&line);
    n.check(ok, "ICMP echo answered");

    n.step("backend-pod serves TCP on :8080; frontend-pod connects");
    let server = command_in(&backend, &exe)
        .args(["serve", "--tcp", "8080"])
        .stdout(Stdio::null())
        .spawn()
        .context("start weft serve in backend-pod")?;
    world.children.push(server);
    let deadline = Instant::now() + Duration::from_secs(5);
    let (mut ok, mut line) = (false, String::new());
    while Instant::now() < deadline {
        (ok, line) = probe(&exe, &frontend, &["tcp", "10.244.1.3:8080"])?;
        if ok {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    n.saw(&line);
    n.check(ok, "TCP connection established");
    n.check(
        line.contains("client=10.244.1.2"),
        "the server saw the client's own pod IP: no NAT between pods",
    );

    n.step("The runtime deletes both pods: CNI DEL releases the addresses");
    cni(&exe, &node, "DEL", "frontend-pod", &frontend, &conf)?;
    cni(&exe, &node, "DEL", "backend-pod", &backend, &conf)?;
    let left = Handle::in_netns(&node)?
        .links()?
        .into_iter()
        .filter(|l| l.kind.as_deref() == Some("veth"))
        .count();
    n.check(left == 0, "no veth left on node-1");

    drop(world);
    println!();
    if n.failed > 0 {
        bail!("{} check(s) failed", n.failed);
    }
    println!("demo passed: {} steps, every namespace removed", n.step);
    Ok(())
}
