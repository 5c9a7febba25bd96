//! Test worlds made of network namespaces. Every namespace a test creates carries a
//! unique prefix and is deleted when its guard drops, on success and on panic, so tests
//! run in parallel and never leave anything in the machine's own network.

#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

pub fn weft() -> &'static str {
    env!("CARGO_BIN_EXE_weft")
}

static SEQ: AtomicU32 = AtomicU32::new(0);

/// A unique namespace name: `weft-t-<tag>-<pid>-<n>`.
pub fn unique(tag: &str) -> String {
    format!(
        "weft-t-{tag}-{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    )
}

/// A named network namespace (`/run/netns/NAME`), deleted on drop.
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new(tag: &str) -> Netns {
        let name = unique(tag);
        run_ok(Command::new("ip").args(["netns", "add", &name]));
        let ns = Netns { name };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    pub fn path(&self) -> PathBuf {
        PathBuf::from(format!("/run/netns/{}", self.name))
    }

    /// `ip -n NAME ARGS...`, which must succeed.
    pub fn ip(&self, args: &[&str]) -> String {
        let mut c = Command::new("ip");
        c.arg("-n").arg(&self.name).args(args);
        String::from_utf8_lossy(&run_ok(&mut c).stdout).into_owned()
    }

    /// A command run inside the namespace.
    pub fn cmd(&self, prog: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, prog]);
        c
    }

    pub fn has_link(&self, name: &str) -> bool {
        Command::new("ip")
            .args(["-n", &self.name, "link", "show", name])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    }

    /// Whether `name` is gone within `limit`: CNI DEL leaves the kernel's unregistration of
    /// a veth (an RCU grace period) to finish in the background.
    pub fn link_gone_within(&self, name: &str, limit: std::time::Duration) -> bool {
        let deadline = std::time::Instant::now() + limit;
        while self.has_link(name) {
            if std::time::Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        true
    }

    /// Names of the links in this namespace.
    pub fn links(&self) -> Vec<String> {
        let out = self.ip(&["-j", "link", "show"]);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap_or_default();
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|l| l["ifname"].as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Processes still inside (servers) would keep it alive: kill them first.
        let _ = Command::new("ip")
            .args(["netns", "pids", &self.name])
            .output()
            .map(|o| {
                for pid in String::from_utf8_lossy(&o.stdout).split_whitespace() {
                    let _ = Command::new("kill").args(["-9", pid]).status();
                }
            });
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
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

/// A background process killed on drop.
pub struct Bg(pub Child);

impl Drop for Bg {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// What one plugin invocation returned.
#[derive(Debug)]
pub struct CniOut {
    pub code: i32,
    pub json: serde_json::Value,
    pub stdout: String,
    pub stderr: String,
}

impl CniOut {
    pub fn ok(&self) -> &serde_json::Value {
        assert_eq!(
            self.code, 0,
            "plugin failed: {}\n{}",
            self.stdout, self.stderr
        );
        &self.json
    }

    /// The spec's error code on stdout (the process must also have failed).
    pub fn err_code(&self) -> u64 {
        assert_ne!(self.code, 0, "expected a failure, got {}", self.stdout);
        self.json["code"]
            .as_u64()
            .unwrap_or_else(|| panic!("no error code in {:?}", self.stdout))
    }
}

/// Runs `weft cni` inside `host` exactly as a runtime does: CNI_* env, config on stdin.
pub fn cni(host: &Netns, env: &[(&str, &str)], config: &str) -> CniOut {
    let mut c = host.cmd(weft());
    c.env_remove("CNI_COMMAND");
    for (k, v) in env {
        c.env(k, v);
    }
    c.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().expect("spawn weft");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(config.as_bytes())
        .expect("write config");
    let out = child.wait_with_output().expect("wait weft");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    CniOut {
        code: out.status.code().unwrap_or(-1),
        json: serde_json::from_str(&stdout).unwrap_or(serde_json::Value::Null),
        stdout,
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// ADD/DEL/CHECK for a pod namespace.
pub fn cni_op(
    host: &Netns,
    op: &str,
    id: &str,
    pod: Option<&Path>,
    ifname: &str,
    config: &str,
) -> CniOut {
    let netns = pod.map(|p| p.display().to_string()).unwrap_or_default();
    let mut env = vec![
        ("CNI_COMMAND", op),
        ("CNI_CONTAINERID", id),
        ("CNI_IFNAME", ifname),
        ("CNI_PATH", "/nonexistent"),
    ];
    if pod.is_some() {
        env.push(("CNI_NETNS", &netns));
    }
    cni(host, &env, config)
}

/// A bridge network config in the reference plugins' keys, with IPAM state in `data_dir`.
pub fn bridge_config(version: &str, subnet: &str, data_dir: &Path, extra_ipam: &str) -> String {
    format!(
        r#"{{"cniVersion":"{version}","name":"testnet","type":"weft","bridge":"cbr0",
            "isGateway":true,"isDefaultGateway":true,"hairpinMode":true,
            "ipam":{{"type":"weft","subnet":"{subnet}","dataDir":"{}"{extra_ipam}}}}}"#,
        data_dir.display()
    )
}

/// The pod address (without prefix) of an ADD result.
pub fn result_ip(r: &serde_json::Value) -> String {
    let a = r["ips"][0]["address"].as_str().expect("address in result");
    a.split('/').next().unwrap_or(a).to_string()
}
