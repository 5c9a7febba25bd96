//! A lab's life as a whole: ten nodes get ten distinct pod subnets, two labs run side by
//! side without seeing each other, and `lab down` leaves no namespace, process, mount or
//! file behind.

mod lab_support;

use lab_support::*;
use std::collections::BTreeSet;
use std::time::Duration;

#[test]
fn ten_nodes_get_distinct_pod_subnets_and_gateways() {
    let lab = Lab::up(10, "host-gw");
    let out = lab.kubectl(&["get", "nodes", "-o", "json"]);
    assert!(out.status.success(), "kubectl get nodes: {}", text(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("node list JSON");
    let cluster: ipnet::Ipv4Net = "10.244.0.0/16".parse().expect("cidr");
    let mut cidrs = BTreeSet::new();
    let mut by_node = Vec::new();
    for n in v["items"].as_array().into_iter().flatten() {
        let name = n["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let cidr: ipnet::Ipv4Net = n["spec"]["podCIDR"]
            .as_str()
            .and_then(|c| c.parse().ok())
            .unwrap_or_else(|| panic!("{name} has no IPv4 podCIDR: {n}"));
        assert_eq!(cidr.prefix_len(), 24, "{name}: {cidr}");
        assert!(cluster.contains(&cidr), "{name}: {cidr} outside {cluster}");
        assert!(cidrs.insert(cidr), "{name}: {cidr} given twice");
        by_node.push((name, cidr));
    }
    assert_eq!(by_node.len(), 10, "ten Nodes: {by_node:?}");

    // One pod per node brings up every node's bridge; each bridge carries its own gateway,
    // the first address of its node's subnet, and the pod's IP lies in that subnet.
    let manifest: String = (1..=10)
        .map(|k| echo_pod(&format!("p{k}"), &format!("node-{k}")))
        .collect();
    lab.apply(&manifest);
    let names: Vec<String> = (1..=10).map(|k| format!("p{k}")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let pods = lab.wait_running(&refs, Duration::from_secs(120));
    let mut gateways = BTreeSet::new();
    for (node, cidr) in &by_node {
        let gw = cidr.hosts().next().expect("a /24 has hosts");
        let addrs = ip(
            &lab.node_netns(node),
            &["-4", "-o", "addr", "show", "dev", "cbr0"],
        );
        assert!(
            addrs.contains(&format!("{gw}/24")),
            "{node}: cbr0 should hold {gw}/24, has: {addrs}"
        );
        assert!(gateways.insert(gw), "gateway {gw} twice");
        let pod = pods
            .values()
            .find(|p| &p.node == node)
            .expect("a pod on every node");
        let pod_ip: std::net::Ipv4Addr = pod.ip.parse().expect("pod IP");
        assert!(
            cidr.contains(&pod_ip),
            "{node}: pod IP {pod_ip} outside {cidr}"
        );
    }
    // And the far ends of the lab reach each other.
    let tcp = lab.probe_ok("p1", &["tcp", &format!("{}:8080", pods["p10"].ip)]);
    assert_eq!(client_ip(&tcp), pods["p1"].ip, "{tcp}");
}

/// What a lab has running: supervisor, control plane, agents and every process inside its
/// namespaces (the pods' servers).
fn lab_pids(lab: &Lab) -> Vec<u32> {
    let mut pids: Vec<u32> = lab.procs().values().copied().collect();
    pids.extend(lab.supervisor_pid().map(|p| p as u32));
    for ns in lab.namespaces() {
        let out = std::process::Command::new("ip")
            .args(["netns", "pids", &ns])
            .output()
            .expect("ip netns pids");
        pids.extend(
            String::from_utf8_lossy(&out.stdout)
                .split_whitespace()
                .filter_map(|p| p.parse::<u32>().ok()),
        );
    }
    pids
}

fn assert_nothing_left(lab: &Lab, pids: &[u32]) {
    assert!(
        lab.namespaces().is_empty(),
        "namespaces left: {:?}",
        lab.namespaces()
    );
    let living: Vec<u32> = pids.iter().copied().filter(|p| alive(*p)).collect();
    assert!(
        living.is_empty(),
        "processes of lab {} still running: {living:?}",
        lab.name
    );
    let state = lab.state.path().display().to_string();
    let mentioning = processes_mentioning(&state);
    assert!(
        mentioning.is_empty(),
        "processes still using {state}: {mentioning:?}"
    );
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let prefix = format!("weft-{}", lab.name);
    let left: Vec<&str> = mounts
        .lines()
        .filter(|l| l.contains(&format!("/{prefix}-")) || l.contains(&format!("/{prefix} ")))
        .collect();
    assert!(left.is_empty(), "mounts left: {left:?}");
    // Files: the lab's directory is removed, nothing else was written in the state root, and
    // nothing under the default state root or /run carries the lab's name.
    let entries: Vec<_> = walk(lab.state.path());
    let stray: Vec<_> = entries
        .iter()
        .filter(|p| p.as_path() != lab.state.path().join("labs"))
        .filter(|p| p.extension().is_none_or(|e| e != "yaml"))
        .collect();
    assert!(stray.is_empty(), "files left in the state dir: {stray:?}");
    for root in ["/var/lib/weft/labs", "/run", "/run/netns", "/tmp"] {
        let named: Vec<String> = std::fs::read_dir(root)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n == &lab.name || n.starts_with(&prefix))
            .collect();
        assert!(named.is_empty(), "{root} still holds {named:?}");
    }
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut v = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            v.extend(walk(&p));
        }
        v.push(p);
    }
    v
}

#[test]
fn two_labs_side_by_side_and_down_leaves_nothing() {
    let mut first = Lab::up(2, "vxlan");
    let mut second = Lab::up(2, "host-gw");
    assert_ne!(first.name, second.name);
    // Same pod names and the same addressing in both: each lab is its own world.
    for lab in [&first, &second] {
        lab.apply(&[echo_pod("px", "node-1"), echo_pod("py", "node-2")].concat());
    }
    let pods1 = first.wait_running(&["px", "py"], Duration::from_secs(60));
    let pods2 = second.wait_running(&["px", "py"], Duration::from_secs(60));
    for (lab, pods) in [(&first, &pods1), (&second, &pods2)] {
        let tcp = lab.probe_ok("px", &["tcp", &format!("{}:8080", pods["py"].ip)]);
        assert_eq!(client_ip(&tcp), pods["px"].ip, "lab {}: {tcp}", lab.name);
        assert!(
            !lab.procs().is_empty(),
            "lab {} reports its processes",
            lab.name
        );
    }

    let pids = lab_pids(&first);
    assert!(
        pids.len() >= 5,
        "supervisor, control plane, 2 agents, pods: {pids:?}"
    );
    first.down();
    assert_nothing_left(&first, &pids);

    // The second lab did not notice.
    let tcp = second.probe_ok("px", &["tcp", &format!("{}:8080", pods2["py"].ip)]);
    assert_eq!(client_ip(&tcp), pods2["px"].ip, "{tcp}");
    assert_eq!(
        second.namespaces().len(),
        2 + 2 + 2,
        "root, external, 2 nodes, 2 pods: {:?}",
        second.namespaces()
    );

    // A lab whose supervisor is stopped (as a test that paused it and died would leave it)
    // still comes down completely.
    let pids = lab_pids(&second);
    let supervisor = second.supervisor_pid().expect("supervisor pid");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(supervisor),
        nix::sys::signal::Signal::SIGSTOP,
    )
    .expect("pause the supervisor");
    second.down();
    assert_nothing_left(&second, &pids);
}

#[test]
fn kubeconfig_merge_adds_a_context_and_down_takes_it_out() {
    let mut lab = Lab::up(1, "host-gw");
    let mine = lab.state.path().join("my-kubeconfig");
    let existing = "apiVersion: v1\nkind: Config\nclusters:\n- name: prod\n  cluster: {server: 'https://prod.invalid'}\nusers:\n- name: me\n  user: {token: x}\ncontexts:\n- name: prod\n  context: {cluster: prod, user: me}\ncurrent-context: prod\n";
    std::fs::write(&mine, existing).expect("write kubeconfig");
    let file = mine.display().to_string();
    let out = lab.lab_ok("kubeconfig", &["--merge", "--file", &file]);
    let context = format!("weft-{}", lab.name);
    assert!(out.contains(&context), "{out}");
    let got = std::process::Command::new("kubectl")
        .args([
            "--kubeconfig",
            &file,
            "--context",
            &context,
            "get",
            "nodes",
            "-o",
            "name",
        ])
        .output()
        .expect("kubectl");
    assert!(got.status.success(), "{}", text(&got));
    assert_eq!(String::from_utf8_lossy(&got.stdout).trim(), "node/node-1");
    let current = std::process::Command::new("kubectl")
        .args(["--kubeconfig", &file, "config", "current-context"])
        .output()
        .expect("kubectl");
    assert_eq!(
        String::from_utf8_lossy(&current.stdout).trim(),
        "prod",
        "the current context is the user's"
    );
    lab.down();
    let after = std::fs::read_to_string(&mine).expect("read kubeconfig");
    assert!(!after.contains(&context), "context left behind:\n{after}");
    assert!(
        after.contains("prod.invalid"),
        "the user's own entries went:\n{after}"
    );
}
