//! An extra node for a lab, run the way a real cluster runs weft: a namespace on the lab's
//! underlay running `weft agent --no-pods`, with the test as its container runtime
//! (calling the CNI plugin with the config the agent wrote). Everything it creates is
//! removed when its guards drop.

#![allow(dead_code)]

use super::lab_support::*;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

/// A namespace of ours, deleted (with whatever runs in it) on drop.
pub struct Ns(pub String);

impl Ns {
    pub fn new(name: String) -> Ns {
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

    /// `weft ARGS...` inside the namespace: (exit 0, output).
    pub fn weft(&self, args: &[&str]) -> (bool, String) {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.0, weft()])
            .args(args)
            .output()
            .expect("spawn weft in a namespace");
        (out.status.success(), text(&out))
    }

    /// Names of the links in the namespace.
    pub fn links(&self) -> Vec<String> {
        let v: serde_json::Value =
            serde_json::from_str(&ip(&self.0, &["-j", "link", "show"])).unwrap_or_default();
        v.as_array()
            .into_iter()
            .flatten()
            .filter_map(|l| l["ifname"].as_str().map(String::from))
            .collect()
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
pub struct Bg(pub Child);

impl Drop for Bg {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// What the runtime says about the pod in CNI_ARGS (kubelet's runtimes pass these).
pub struct PodArgs<'a> {
    pub namespace: &'a str,
    pub name: &'a str,
    pub uid: Option<&'a str>,
}

/// One plugin call as the runtime makes it: (exit 0, stdout and stderr).
pub fn cni(
    node_ns: &str,
    pod_ns: &str,
    command: &str,
    container_id: &str,
    pod: &PodArgs,
    conf: &str,
) -> (bool, String) {
    let mut args = format!(
        "IgnoreUnknown=1;K8S_POD_NAMESPACE={};K8S_POD_NAME={};K8S_POD_INFRA_CONTAINER_ID={container_id}",
        pod.namespace, pod.name
    );
    if let Some(uid) = pod.uid {
        args.push_str(&format!(";K8S_POD_UID={uid}"));
    }
    let mut child = Command::new("ip")
        .args(["netns", "exec", node_ns, weft(), "cni"])
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", container_id)
        .env("CNI_NETNS", format!("/run/netns/{pod_ns}"))
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", "/nonexistent")
        .env("CNI_ARGS", args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn weft cni");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(conf.as_bytes())
        .expect("write config");
    let out = child.wait_with_output().expect("wait weft cni");
    (out.status.success(), text(&out))
}

/// The pod address (without prefix) of an ADD result.
pub fn result_ip(out: &str) -> String {
    let result: serde_json::Value = serde_json::from_str(out).expect("CNI result JSON");
    result["ips"][0]["address"]
        .as_str()
        .and_then(|a| a.split('/').next())
        .unwrap_or_else(|| panic!("no address in {out}"))
        .to_string()
}

static SEQ: AtomicU32 = AtomicU32::new(0);

/// A node named `kubelet-node` (192.168.1.50 on the lab's underlay) whose agent leaves
/// pods to a runtime.
pub struct KubeletNode {
    // Field order is drop order: the agent stops before its namespace goes.
    pub agent: Bg,
    pub ns: Ns,
    pub state: tempfile::TempDir,
    /// The CNI network config the agent wrote.
    pub conf: String,
    lab_name: String,
}

impl KubeletNode {
    pub fn join(lab: &Lab) -> KubeletNode {
        let root = format!("weft-{}", lab.name);
        let ns = Ns::new(format!("weft-{}-kubelet", lab.name));
        // The extra node's eth0 on the lab's underlay, as `lab up` wires its own nodes.
        let host_end = format!(
            "k{}x{}",
            std::process::id() % 100_000,
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        ip(
            &root,
            &[
                "link", "add", &host_end, "type", "veth", "peer", "name", "eth0", "netns", &ns.0,
            ],
        );
        ip(&root, &["link", "set", &host_end, "master", "lan0", "up"]);
        ip(&ns.0, &["addr", "add", "192.168.1.50/24", "dev", "eth0"]);
        ip(&ns.0, &["link", "set", "eth0", "up"]);
        ip(&ns.0, &["link", "set", "lo", "up"]);

        let state = tempfile::tempdir().expect("agent state dir");
        let file = |n: &str| std::fs::File::create(state.path().join(n)).expect("log file");
        let agent = Bg(Command::new("ip")
            .args(["netns", "exec", &ns.0, weft(), "agent", "--no-pods"])
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
            .stdout(file("agent.log"))
            .stderr(file("agent.err"))
            .spawn()
            .expect("spawn weft agent"));
        let mut node = KubeletNode {
            agent,
            ns,
            state,
            conf: String::new(),
            lab_name: lab.name.clone(),
        };
        // The agent registers the node, gets a podCIDR and writes the CNI config.
        let conf_path = node.agent_dir().join("cni.json");
        node.conf = wait_for(Duration::from_secs(30), || {
            std::fs::read_to_string(&conf_path).ok()
        })
        .unwrap_or_else(|| panic!("no CNI config written by the agent:\n{}", node.log()));
        node
    }

    /// The agent's `--state-dir`.
    pub fn agent_dir(&self) -> PathBuf {
        self.state.path().join("agent")
    }

    pub fn log(&self) -> String {
        let mut s = String::new();
        for f in ["agent.log", "agent.err"] {
            if let Ok(mut file) = std::fs::File::open(self.state.path().join(f)) {
                let _ = file.read_to_string(&mut s);
            }
        }
        s
    }

    /// A namespace for one of this node's pods.
    pub fn pod_ns(&self, pod: &str) -> Ns {
        Ns::new(format!("weft-{}-kubelet.{pod}", self.lab_name))
    }

    /// The addresses the node's IPAM holds, by container ID.
    pub fn allocations(&self) -> Vec<(String, String)> {
        let state = weft_cni::ipam::Store::open(&self.agent_dir().join("ipam"), "weft")
            .and_then(|s| s.read())
            .expect("read the node's IPAM state");
        state
            .allocations
            .iter()
            .map(|a| (a.container_id.clone(), a.ip.to_string()))
            .collect()
    }
}
