//! `weft agent --no-pods`, the mode for a real cluster: the kubelet and its container
//! runtime run the pods, the agent registers the node, routes, masquerades, enforces
//! NetworkPolicy and writes the node's CNI config. Here a namespace joins a lab's underlay
//! as an extra node running such an agent, and the test plays the container runtime: it
//! calls the CNI plugin with the config the agent wrote (CNI_ARGS naming the pod, as
//! kubelet's runtimes pass them), then checks what the pod can reach and what reaches it.
//!
//! The policy tests are in `lab_no_pods_policy.rs`, on the same harness (`no_pods`).

mod lab_support;
mod no_pods;

use lab_support::*;
use no_pods::*;
use std::process::{Command, Stdio};
use std::time::Duration;

#[test]
fn a_no_pods_agent_routes_for_pods_a_runtime_made_with_its_cni_config() {
    let lab = Lab::up(1, "host-gw");
    let node = KubeletNode::join(&lab);
    let pod = node.pod_ns("pod");

    // A pod in the API bound to this node is the kubelet's to run, not the agent's.
    lab.apply(&echo_pod("api-pod", "kubelet-node"));

    // The "runtime" gives its pod a network with that config and starts a server in it.
    let api_pod = PodArgs {
        namespace: "default",
        name: "api-pod",
        uid: None,
    };
    let (ok, out) = cni(
        &node.ns.0,
        &pod.0,
        "ADD",
        "kubelet-pod-1",
        &api_pod,
        &node.conf,
    );
    assert!(
        ok,
        "CNI ADD with the agent's config failed: {out}\n{}",
        node.log()
    );
    let pod_ip = result_ip(&out);
    let _server = Bg(Command::new("ip")
        .args(["netns", "exec", &pod.0, weft(), "serve", "--tcp", "8080"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn weft serve"));

    // A lab pod on node-1 reaches it across nodes, and the server sees the client's pod IP.
    lab.apply(&echo_pod("client", "node-1"));
    let pods = lab.wait_running(&["client"], Duration::from_secs(60));
    let line = wait_for(Duration::from_secs(30), || {
        let (ok, out) = lab.exec_weft("client", &["probe", "tcp", &format!("{pod_ip}:8080")]);
        ok.then_some(out)
    })
    .unwrap_or_else(|| {
        panic!(
            "node-1's pod never reached {pod_ip}:8080 on the no-pods node\n{}",
            node.log()
        )
    });
    assert_eq!(
        client_ip(&line),
        pods["client"].ip,
        "NAT between pods: {line}"
    );

    // The agent ran none of the API's pods: no namespace of its own, the pod never Running.
    let prefix = format!("weft-{}-kubelet.default-", lab.name);
    assert!(
        !netns_names().iter().any(|n| n.starts_with(&prefix)),
        "the no-pods agent started a pod: {:?}",
        netns_names()
    );
    assert_ne!(
        lab.pods()
            .get("api-pod")
            .map(|p| p.phase.clone())
            .as_deref(),
        Some("Running")
    );

    // The runtime's DEL releases its address.
    let (ok, out) = cni(
        &node.ns.0,
        &pod.0,
        "DEL",
        "kubelet-pod-1",
        &api_pod,
        &node.conf,
    );
    assert!(ok, "CNI DEL failed: {out}");
    assert!(node.allocations().is_empty(), "{:?}", node.allocations());
}
