//! A node made of a network namespace, for running the pod runtime against the real CNI
//! plugin. Every namespace carries the prefix `weft-t-pr-<pid>-<tag>-`; the guard kills
//! whatever runs in them and deletes them on drop, on success and on panic.

#![allow(dead_code)]

use std::collections::HashSet;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use weft_agent::{PodRuntimeStatus, Runtime, RuntimeConfig};

/// The weft binary: `$WEFT_BIN`, else the one next to this test's target directory.
pub fn weft_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("WEFT_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("test executable path");
    // <target>/debug/deps/<test> -> <target>/debug/weft
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .map(|d| d.join("weft"))
        .expect("target directory");
    assert!(
        bin.is_file(),
        "{} is missing: build it first with `cargo build -p weft` (same CARGO_TARGET_DIR), or set WEFT_BIN",
        bin.display()
    );
    bin
}

pub struct Node {
    pub prefix: String,
    pub name: String,
    pub dir: tempfile::TempDir,
}

impl Node {
    pub fn new(tag: &str) -> Node {
        let prefix = format!("weft-t-pr-{}-{tag}-", std::process::id());
        let name = format!("{prefix}node");
        run_ok(Command::new("ip").args(["netns", "add", &name]));
        let node = Node {
            prefix,
            name,
            dir: tempfile::tempdir().expect("temp dir"),
        };
        node.ip(&["link", "set", "lo", "up"]);
        let conf = format!(
            r#"{{"cniVersion":"1.1.0","name":"testnet","type":"weft","bridge":"cbr0",
                "isGateway":true,"isDefaultGateway":true,"hairpinMode":true,
                "ipam":{{"type":"weft","subnet":"10.244.1.0/24","dataDir":"{}"}}}}"#,
            node.dir.path().join("ipam").display()
        );
        std::fs::write(node.conf_path(), conf).expect("write CNI config");
        node
    }

    pub fn conf_path(&self) -> PathBuf {
        self.dir.path().join("10-weft.conf")
    }

    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    pub fn config(&self) -> RuntimeConfig {
        let mut c = RuntimeConfig::new("node-1", self.state_dir(), weft_bin(), self.conf_path());
        c.cni_bin_dir = PathBuf::from("/nonexistent");
        c.netns_prefix = self.prefix.clone();
        c.host_netns = Some(PathBuf::from(format!("/run/netns/{}", self.name)));
        c
    }

    pub fn runtime(&self) -> Runtime {
        Runtime::new(self.config()).expect("runtime")
    }

    pub fn runtime_result(&self) -> weft_agent::Result<Runtime> {
        Runtime::new(self.config())
    }

    /// `ip -n <node> ARGS`, which must succeed.
    pub fn ip(&self, args: &[&str]) -> String {
        let out = run_ok(Command::new("ip").arg("-n").arg(&self.name).args(args));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Host-side veths on the node's bridge.
    pub fn bridge_ports(&self) -> Vec<String> {
        let out = self.ip(&["-j", "link", "show", "master", "cbr0"]);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap_or_default();
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|l| l["ifname"].as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Container ids holding an address in weft IPAM's state on disk.
    pub fn ipam_holders(&self) -> Vec<String> {
        let store = weft_cni::ipam::Store::open(&self.dir.path().join("ipam"), "testnet")
            .expect("open the IPAM store");
        let state = store.read().expect("read the IPAM state");
        state
            .allocations
            .into_iter()
            .map(|a| a.container_id)
            .collect()
    }

    /// No pod namespace is left, only the node's.
    pub fn assert_only_node_left(&self) {
        assert_eq!(self.namespaces(), std::slice::from_ref(&self.name));
    }

    /// Our namespaces that exist right now (pods and node).
    pub fn namespaces(&self) -> Vec<String> {
        netns_list()
            .into_iter()
            .filter(|n| n.starts_with(&self.prefix))
            .collect()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        // Pods' processes are detached on purpose: kill them, or their namespaces live on.
        for ns in self.namespaces() {
            if let Ok(o) = Command::new("ip").args(["netns", "pids", &ns]).output() {
                for pid in String::from_utf8_lossy(&o.stdout).split_whitespace() {
                    let _ = Command::new("kill").args(["-9", pid]).status();
                }
            }
            let _ = Command::new("ip").args(["netns", "del", &ns]).status();
        }
    }
}

pub fn netns_list() -> Vec<String> {
    std::fs::read_dir("/run/netns")
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().to_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

pub fn run_ok(c: &mut Command) -> Output {
    let out = c.output().unwrap_or_else(|e| panic!("spawn {c:?}: {e}"));
    assert!(
        out.status.success(),
        "{c:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

pub fn pod(yaml: &str) -> Pod {
    serde_yaml::from_str(yaml).expect("pod YAML")
}

/// Run `argv` in the pod; (exit code, stdout, stderr).
pub fn exec(rt: &Runtime, uid: &str, argv: &[&str]) -> (i32, String, String) {
    let argv: Vec<String> = argv.iter().map(|s| s.to_string()).collect();
    let out = rt
        .exec_command(uid, &argv)
        .expect("exec command")
        .stdin(Stdio::null())
        .output()
        .expect("run exec command");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Call `probe_all` until `cond` holds for the pod's status; panics with the last status
/// after a generous limit (this waits for processes, it does not measure them).
pub fn tend_until(
    rt: &mut Runtime,
    uid: &str,
    what: &str,
    cond: impl Fn(&PodRuntimeStatus) -> bool,
) -> PodRuntimeStatus {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        rt.probe_all();
        let st = rt.status(uid).expect("pod known");
        if cond(&st) {
            return st;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: never happened; last status {st:#?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub fn ip(st: &PodRuntimeStatus) -> IpAddr {
    st.ips[0]
}

pub fn inode(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).expect("stat").ino()
}

pub fn keep(uids: &[&str]) -> HashSet<String> {
    uids.iter().map(|s| s.to_string()).collect()
}

/// Whether `pid` is a live process (not absent, not a zombie).
pub fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            let state = s[s.rfind(')').unwrap() + 1..]
                .split_whitespace()
                .next()
                .unwrap_or("");
            state != "Z" && state != "X"
        })
        .unwrap_or(false)
}
