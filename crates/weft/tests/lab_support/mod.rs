//! A whole weft lab driven through the `weft lab` CLI, as a user drives it. Every lab gets a
//! unique name and its own WEFT_STATE_DIR, and `weft lab down` runs when the guard drops, on
//! success and on panic.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

pub fn weft() -> &'static str {
    env!("CARGO_BIN_EXE_weft")
}

static SEQ: AtomicU32 = AtomicU32::new(0);

/// `e<pid%100000><letter>`: unique per test process and lab, within the 20-character limit.
pub fn unique_name() -> String {
    let n = SEQ.fetch_add(1, Ordering::Relaxed);
    let letter = (b'a' + (n % 26) as u8) as char;
    format!("e{}{letter}", std::process::id() % 100_000)
}

/// Polls `f` until it returns Some or `limit` passes; None on timeout.
pub fn wait_for<T>(limit: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

pub fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// What the lab reports about one pod.
#[derive(Debug, Clone)]
pub struct PodInfo {
    pub node: String,
    pub ip: String,
    pub phase: String,
    pub uid: String,
    /// The Ready condition (the echo pods' readiness probe connects to their TCP port).
    pub ready: bool,
}

pub struct Lab {
    pub name: String,
    pub state: tempfile::TempDir,
    down: bool,
}

impl Lab {
    /// `weft lab up`; the guard exists before `up` runs, so a half-built lab is removed too.
    pub fn up(nodes: u32, backend: &str) -> Lab {
        Lab::up_env(nodes, backend, &[])
    }

    /// `weft lab up` with extra environment (e.g. sudo's `SUDO_UID`).
    pub fn up_env(nodes: u32, backend: &str, env: &[(&str, &str)]) -> Lab {
        Lab::up_with(nodes, backend, env, None)
    }

    /// `weft lab up -f FILE` with `lab_yaml` as the lab file.
    pub fn up_file(nodes: u32, backend: &str, lab_yaml: &str) -> Lab {
        Lab::up_with(nodes, backend, &[], Some(lab_yaml))
    }

    fn up_with(nodes: u32, backend: &str, env: &[(&str, &str)], lab_yaml: Option<&str>) -> Lab {
        let lab = Lab {
            name: unique_name(),
            state: tempfile::tempdir().expect("temp state dir"),
            down: false,
        };
        let file = lab.state.path().join("lab.yaml");
        let mut args = vec![
            "lab".to_string(),
            "up".into(),
            "--name".into(),
            lab.name.clone(),
            "--nodes".into(),
            nodes.to_string(),
            "--backend".into(),
            backend.into(),
        ];
        if let Some(y) = lab_yaml {
            std::fs::write(&file, y).expect("write lab file");
            args.extend(["-f".to_string(), file.display().to_string()]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = lab
            .weft_cmd(&args)
            .envs(env.iter().copied())
            .output()
            .expect("spawn weft lab up");
        assert!(
            out.status.success(),
            "weft lab up {} failed: {}\n{}",
            lab.name,
            text(&out),
            lab.logs()
        );
        lab
    }

    /// The weft binary with this lab's state dir.
    pub fn weft_cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(weft());
        c.env("WEFT_STATE_DIR", self.state.path()).args(args);
        c.stdin(Stdio::null());
        c
    }

    /// `weft lab SUB --name N ARGS...`.
    pub fn lab(&self, sub: &str, args: &[&str]) -> Output {
        let mut full = vec!["lab", sub, "--name", self.name.as_str()];
        full.extend_from_slice(args);
        self.weft_cmd(&full).output().expect("spawn weft lab")
    }

    pub fn lab_ok(&self, sub: &str, args: &[&str]) -> String {
        let out = self.lab(sub, args);
        assert!(
            out.status.success(),
            "weft lab {sub} {args:?} failed: {}",
            text(&out)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn dir(&self) -> PathBuf {
        self.state.path().join("labs").join(&self.name)
    }

    pub fn kubeconfig(&self) -> PathBuf {
        PathBuf::from(self.lab_ok("kubeconfig", &[]).trim())
    }

    /// A kube-rs client with the lab's kubeconfig (as the user's kubectl has it).
    pub async fn client(&self) -> kube::Client {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let kc = kube::config::Kubeconfig::read_from(self.kubeconfig()).expect("kubeconfig");
        let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
            .await
            .expect("config");
        kube::Client::try_from(cfg).expect("client")
    }

    pub fn kubectl(&self, args: &[&str]) -> Output {
        Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(self.kubeconfig())
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("spawn kubectl")
    }

    /// kubectl run inside the lab's root namespace with the lab-internal kubeconfig: what
    /// works while the supervisor (which answers `weft lab kubeconfig`) is paused.
    pub fn kubectl_inside(&self, args: &[&str]) -> Output {
        Command::new("ip")
            .args(["netns", "exec", &format!("weft-{}", self.name), "kubectl"])
            .arg("--kubeconfig")
            .arg(self.dir().join("kubeconfig.internal"))
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("spawn kubectl")
    }

    /// The tail of every log of the lab, for failure messages.
    pub fn logs(&self) -> String {
        let mut s = String::new();
        if let Ok(rd) = std::fs::read_dir(self.dir().join("logs")) {
            for e in rd.flatten() {
                let body = std::fs::read_to_string(e.path()).unwrap_or_default();
                let tail: String = body
                    .lines()
                    .rev()
                    .take(15)
                    .collect::<Vec<_>>()
                    .into_iter()
                    .rev()
                    .collect::<Vec<_>>()
                    .join("\n");
                s.push_str(&format!("--- {} ---\n{tail}\n", e.path().display()));
            }
        }
        s
    }

    pub fn apply(&self, yaml: &str) {
        let f = self
            .state
            .path()
            .join(format!("m{}.yaml", SEQ.fetch_add(1, Ordering::Relaxed)));
        std::fs::write(&f, yaml).expect("write manifest");
        self.lab_ok("apply", &["-f", &f.display().to_string()]);
    }

    /// The default namespace's pods by name.
    pub fn pods(&self) -> BTreeMap<String, PodInfo> {
        let out = self.lab("get", &["pods", "-o", "json"]);
        pod_infos(&out.stdout, false)
    }

    /// Every namespace's pods, by `namespace/name`.
    pub fn all_pods(&self) -> BTreeMap<String, PodInfo> {
        let out = self.kubectl(&["get", "pods", "-A", "-o", "json"]);
        pod_infos(&out.stdout, true)
    }

    /// Waits until every named pod is Running and Ready with an IP.
    pub fn wait_running(&self, names: &[&str], limit: Duration) -> BTreeMap<String, PodInfo> {
        let got = wait_for(limit, || {
            let pods = self.pods();
            names
                .iter()
                .all(|n| {
                    pods.get(*n)
                        .is_some_and(|p| p.phase == "Running" && p.ready && !p.ip.is_empty())
                })
                .then_some(pods)
        });
        got.unwrap_or_else(|| {
            panic!(
                "pods {names:?} not Running and Ready with an IP within {limit:?}: {:?}\n{}",
                self.pods(),
                self.logs()
            )
        })
    }

    /// The named network namespace of a pod in the default namespace: the agent names it
    /// `<node netns>.<namespace>-<pod>` (names that need sanitising get a hash suffix).
    pub fn pod_netns(&self, node: &str, pod: &str) -> String {
        self.pod_netns_in(node, "default", pod)
    }

    /// The same for a pod in namespace `ns`.
    pub fn pod_netns_in(&self, node: &str, ns: &str, pod: &str) -> String {
        format!("weft-{}-{node}.{ns}-{pod}", self.name)
    }

    pub fn node_netns(&self, node: &str) -> String {
        format!("weft-{}-{node}", self.name)
    }

    /// `weft lab exec POD -- weft ARGS...`: (exit 0, output).
    pub fn exec_weft(&self, pod: &str, args: &[&str]) -> (bool, String) {
        let mut full = vec![pod, "--", "weft"];
        full.extend_from_slice(args);
        let out = self.lab("exec", &full);
        (out.status.success(), text(&out))
    }

    /// A probe from a pod that must succeed; returns its line.
    pub fn probe_ok(&self, pod: &str, args: &[&str]) -> String {
        let mut full = vec!["probe"];
        full.extend_from_slice(args);
        let (ok, out) = self.exec_weft(pod, &full);
        assert!(ok, "probe {args:?} from {pod} failed: {out}");
        out
    }

    /// The supervisor's status.json: process name -> pid.
    pub fn procs(&self) -> BTreeMap<String, u32> {
        let bytes = std::fs::read(self.dir().join("status.json")).unwrap_or_default();
        let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
        v["procs"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| Some((p["name"].as_str()?.to_string(), p["pid"].as_u64()? as u32)))
            .collect()
    }

    pub fn supervisor_pid(&self) -> Option<i32> {
        std::fs::read_to_string(self.dir().join("supervisor.pid"))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// Named namespaces that belong to this lab.
    pub fn namespaces(&self) -> Vec<String> {
        let prefix = format!("weft-{}", self.name);
        netns_names()
            .into_iter()
            .filter(|n| n == &prefix || n.starts_with(&format!("{prefix}-")))
            .collect()
    }

    /// `weft lab down`, checked.
    pub fn down(&mut self) {
        self.down = true;
        let out = self.lab("down", &[]);
        assert!(out.status.success(), "weft lab down failed: {}", text(&out));
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if !self.down {
            // A test that stopped the supervisor must not leave it stopped: down signals it.
            if let Some(pid) = self.supervisor_pid() {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGCONT,
                );
            }
            let _ = self.lab("down", &[]);
        }
    }
}

/// A pod list's JSON (`kubectl get pods -o json`) as PodInfo, keyed by name or, with
/// `qualified`, by `namespace/name`.
fn pod_infos(json: &[u8], qualified: bool) -> BTreeMap<String, PodInfo> {
    let v: serde_json::Value = serde_json::from_slice(json).unwrap_or_default();
    let s = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_string();
    let mut m = BTreeMap::new();
    for p in v["items"].as_array().into_iter().flatten() {
        let name = s(&p["metadata"]["name"]);
        let key = if qualified {
            format!("{}/{name}", s(&p["metadata"]["namespace"]))
        } else {
            name
        };
        m.insert(
            key,
            PodInfo {
                node: s(&p["spec"]["nodeName"]),
                ip: s(&p["status"]["podIP"]),
                phase: s(&p["status"]["phase"]),
                uid: s(&p["metadata"]["uid"]),
                ready: p["status"]["conditions"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|c| c["type"] == "Ready" && c["status"] == "True"),
            },
        );
    }
    m
}

pub fn netns_names() -> Vec<String> {
    std::fs::read_dir("/run/netns")
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// `ip -n NS ARGS`, which must succeed.
pub fn ip(ns: &str, args: &[&str]) -> String {
    let out = Command::new("ip")
        .arg("-n")
        .arg(ns)
        .args(args)
        .output()
        .expect("spawn ip");
    assert!(out.status.success(), "ip -n {ns} {args:?}: {}", text(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The value after `key=` in a probe line.
pub fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
}

/// The host part of a probe's `client=` (which may carry a port).
pub fn client_ip(line: &str) -> String {
    let c = field(line, "client").unwrap_or_default();
    match c.rsplit_once(':') {
        Some((host, port)) if port.chars().all(|ch| ch.is_ascii_digit()) => host.to_string(),
        _ => c.to_string(),
    }
}

/// A pod manifest running weft's echo server: TCP 8080, UDP 8081.
pub fn echo_pod(name: &str, node: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: \"{name}\"\n  labels: {{app: e2e}}\nspec:\n  nodeName: {node}\n  containers:\n  - name: app\n    image: weft/serve\n    ports: [{{containerPort: 8080}}, {{containerPort: 8081, protocol: UDP}}]\n    readinessProbe: {{tcpSocket: {{port: 8080}}, periodSeconds: 1}}\n---\n"
    )
}

/// Every process whose command line or environment mentions `needle`.
pub fn processes_mentioning(needle: &str) -> Vec<(u32, String)> {
    let me = std::process::id();
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if pid == me {
            continue;
        }
        let cmd = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        let env = std::fs::read(e.path().join("environ")).unwrap_or_default();
        let hay = |b: &[u8]| String::from_utf8_lossy(b).contains(needle);
        if hay(&cmd) || hay(&env) {
            found.push((pid, String::from_utf8_lossy(&cmd).replace('\0', " ")));
        }
    }
    found
}

pub fn alive(pid: u32) -> bool {
    // A zombie has exited: only its entry waits for the parent.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => !s
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

pub fn path_exists(p: &Path) -> bool {
    std::fs::symlink_metadata(p).is_ok()
}
