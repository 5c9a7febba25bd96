//! `weft agent --no-pods`, the mode for a real cluster: the kubelet and its container
//! runtime run the pods, the agent registers the node, routes, masquerades and writes the
//! node's CNI config. Here a namespace joins a lab's underlay as an extra node running such
//! an agent, and the test plays the container runtime: it calls the CNI plugin with the
//! config the agent wrote, then checks that a lab pod on another node reaches that pod by
//! its own IP, and that the agent did not run the API's pods itself.

mod lab_support;

use lab_support::*;
use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A namespace of ours, deleted (with whatever runs in it) on drop.
struct Ns(String);

impl Ns {
    fn new(name: String) -> Ns {
        let _ = Command::new("ip")
            .args(["netns", "del", &name])
            .stderr(Stdio::null())
            .status();
        let ok = Command::new("ip")
            .args(["netns", "add", &name])
            .status()
            .map(|s| s.success());
        assert!(matches!(ok, Ok(true)), "ip netns add {name}");
        Ns(name)
    }
}

impl Drop for Ns {
    fn drop(&mut self) {
        if let Ok(o) = Command::new("ip").args(["netns", "pids", &self.0]).output() {
            for pid in String::from_utf8_lossy(&o.stdout).split_whitespace() {
                let _ = Command::new("kill").args(["-9", pid]).status();
            }
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.0])
            .stderr(Stdio::null())
            .status();
    }
}

/// A background process, killed on drop.
struct Bg(Child);

impl Drop for Bg {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn cni(node_ns: &str, pod_ns: &str, command: &str, conf: &str) -> (bool, String) {
    let mut child = Command::new("ip")
        .args(["netns", "exec", node_ns, weft(), "cni"])
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", "kubelet-pod-1")
        .env("CNI_NETNS", format!("/run/netns/{pod_ns}"))
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", "/nonexistent")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn weft cni");
    use std::io::Write;
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(conf.as_bytes())
        .expect("write config");
    let out = child.wait_with_output().expect("wait weft cni");
    (out.status.success(), text(&out))
}

#[test]
fn a_no_pods_agent_routes_for_pods_a_runtime_made_with_its_cni_config() {
    let lab = Lab::up(1, "host-gw");
    let root = format!("weft-{}", lab.name);
    let node = Ns::new(format!("weft-{}-kubelet", lab.name));
    let pod = Ns::new(format!("weft-{}-kubelet.pod", lab.name));

    // The extra node's eth0 on the lab's underlay, as `lab up` wires its own nodes.
    let host_end = format!("k{}", std::process::id() % 100_000);
    ip(
        &root,
        &[
            "link", "add", &host_end, "type", "veth", "peer", "name", "eth0", "netns", &node.0,
        ],
    );
    ip(&root, &["link", "set", &host_end, "master", "lan0", "up"]);
    ip(&node.0, &["addr", "add", "192.168.1.50/24", "dev", "eth0"]);
    ip(&node.0, &["link", "set", "eth0", "up"]);
    ip(&node.0, &["link", "set", "lo", "up"]);

    let state = tempfile::tempdir().expect("agent state dir");
    let log = state.path().join("agent.log");
    let _agent = Bg(Command::new("ip")
        .args(["netns", "exec", &node.0, weft(), "agent", "--no-pods"])
        .arg("--kubeconfig")
        .arg(lab.dir().join("kubeconfig.internal"))
        .args([
            "--node-name",
            "kubelet-node",
            "--node-ip",
            "192.168.1.50",
            "--backend",
            "host-gw",
            "--netns-prefix",
        ])
        .arg(format!("weft-{}-kubelet.", lab.name))
        .arg("--state-dir")
        .arg(state.path().join("agent"))
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&log).expect("log"))
        .stderr(std::fs::File::create(state.path().join("agent.err")).expect("log"))
        .spawn()
        .expect("spawn weft agent"));
    let agent_log = || {
        let mut s = String::new();
        for f in ["agent.log", "agent.err"] {
            if let Ok(mut file) = std::fs::File::open(state.path().join(f)) {
                let _ = file.read_to_string(&mut s);
            }
        }
        s
    };

    // The agent registers the node, gets a podCIDR and writes the CNI config a runtime uses.
    let conf_path = state.path().join("agent/cni.json");
    let conf = wait_for(Duration::from_secs(30), || {
        std::fs::read_to_string(&conf_path).ok()
    })
    .unwrap_or_else(|| panic!("no CNI config written by the agent:\n{}", agent_log()));

    // A pod in the API bound to this node is the kubelet's to run, not the agent's.
    lab.apply(&echo_pod("api-pod", "kubelet-node"));

    // The "runtime" gives its pod a network with that config and starts a server in it.
    let (ok, out) = cni(&node.0, &pod.0, "ADD", &conf);
    assert!(ok, "CNI ADD with the agent's config failed: {out}");
    let result: serde_json::Value = serde_json::from_str(&out).expect("CNI result JSON");
    let pod_ip = result["ips"][0]["address"]
        .as_str()
        .and_then(|a| a.split('/').next())
        .expect("an address")
        .to_string();
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
            agent_log()
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
    let (ok, out) = cni(&node.0, &pod.0, "DEL", &conf);
    assert!(ok, "CNI DEL failed: {out}");
}
