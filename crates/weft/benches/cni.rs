//! CNI ADD+DEL latency: weft against the reference plugins (`bridge` + `host-local` from
//! containernetworking-plugins) on the same machine, in the same run, with equivalent configs.
//!
//! A node namespace and the pod namespaces are made up front (not timed). The bench process
//! then enters the node namespace itself, so each plugin is exec'd exactly as a runtime
//! does it (CNI_* env, config on stdin) with no `ip netns exec` in the timed path. For each
//! pod it times ADD then DEL of both plugins, alternating which goes first, so drift and
//! noise fall on both alike; a VERSION call per pod gives each plugin's start-up floor (exec,
//! loading, config parse, no kernel work). Each plugin has its own bridge and subnet. One
//! untimed ADD+DEL per plugin first creates the bridges: the figures are a node's steady state.
//!
//! Run: `cargo bench -p weft --bench cni` (as root). `WEFT_BENCH_PODS` overrides the 200 pods.

use std::fs::File;
use std::io::Write;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sched::{setns, CloneFlags};

const REFERENCE_DIR: &str = "/usr/lib/cni";

/// Named network namespaces, all deleted on drop (also when the bench panics).
struct Namespaces(Vec<String>);

impl Namespaces {
    fn add(&mut self, name: String) -> PathBuf {
        let ok = Command::new("ip")
            .args(["netns", "add", &name])
            .status()
            .map(|s| s.success());
        assert!(matches!(ok, Ok(true)), "ip netns add {name} failed");
        self.0.push(name.clone());
        PathBuf::from(format!("/run/netns/{name}"))
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for name in &self.0 {
            let _ = Command::new("ip").args(["netns", "del", name]).status();
        }
    }
}

struct Plugin {
    label: &'static str,
    exe: PathBuf,
    config: String,
    path: String,
}

#[derive(Default)]
struct Samples {
    add: Vec<Duration>,
    del: Vec<Duration>,
    /// VERSION: exec, start-up and a config parse with no kernel work, the floor under ADD/DEL.
    version: Vec<Duration>,
    /// From the start of DEL until the node has no veth left: when the kernel has finished
    /// unregistering the pair (weft's DEL returns before that; the reference's after).
    gone: Vec<Duration>,
}

impl Plugin {
    /// One invocation; fails the bench loudly if the plugin fails.
    fn call(&self, op: &str, id: &str, netns: &Path) -> Duration {
        let start = Instant::now();
        let mut child = Command::new(&self.exe)
            .env("CNI_COMMAND", op)
            .env("CNI_CONTAINERID", id)
            .env("CNI_NETNS", netns)
            .env("CNI_IFNAME", "eth0")
            .env("CNI_PATH", &self.path)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", self.exe.display()));
        if let Some(mut stdin) = child.stdin.take() {
            // A plugin may answer (VERSION) without reading its config: the exit status
            // below is what tells success.
            let _ = stdin.write_all(self.config.as_bytes());
        }
        let out = child.wait_with_output().expect("wait for plugin");
        let took = start.elapsed();
        assert!(
            out.status.success(),
            "{} {op} {id} failed: {}{}",
            self.label,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        took
    }

    fn add_del(&self, id: &str, netns: &Path, s: &mut Samples) {
        s.add.push(self.call("ADD", id, netns));
        let start = Instant::now();
        s.del.push(self.call("DEL", id, netns));
        s.gone.push(veths_gone(start));
        s.version.push(self.call("VERSION", id, netns));
    }
}

/// Waits until the calling thread's namespace (the node) holds no veth, polling every
/// 200 µs; returns the time since `start`.
fn veths_gone(start: Instant) -> Duration {
    let mut h = weft_netlink::Handle::new().expect("netlink socket in the node");
    loop {
        let links = h.links().expect("list the node's links");
        if links.iter().all(|l| l.kind.as_deref() != Some("veth")) {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "a veth is still in the node 10 s after DEL"
        );
        std::thread::sleep(Duration::from_micros(200));
    }
}

fn bridge_config(plugin: &str, ipam: &str, bridge: &str, subnet: &str, data_dir: &Path) -> String {
    serde_json::json!({
        "cniVersion": "1.0.0", "name": format!("bench-{plugin}"), "type": plugin,
        "bridge": bridge, "isGateway": true, "isDefaultGateway": true, "hairpinMode": true,
        "ipam": {"type": ipam, "subnet": subnet, "dataDir": data_dir}
    })
    .to_string()
}

/// Nearest-rank percentile of sorted samples.
fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn stats(samples: &[Duration]) -> (Duration, Duration) {
    let mut v = samples.to_vec();
    v.sort();
    (percentile(&v, 50.0), percentile(&v, 99.0))
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn main() {
    // `cargo bench` passes `--bench`; nothing here takes arguments.
    let pods: usize = std::env::var("WEFT_BENCH_PODS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let reference = Path::new(REFERENCE_DIR);
    assert!(
        reference.join("bridge").exists() && reference.join("host-local").exists(),
        "reference plugins not in {REFERENCE_DIR}: run scripts/test-deps.sh (containernetworking-plugins)"
    );
    let tmp = tempfile::tempdir().expect("temp dir");
    let pid = std::process::id();
    let mut ns = Namespaces(Vec::new());
    let node = ns.add(format!("weft-t-bench-{pid}-node"));
    let pod_paths: Vec<PathBuf> = (0..=pods)
        .map(|i| ns.add(format!("weft-t-bench-{pid}-pod-{i}")))
        .collect();

    let weft = Plugin {
        label: "weft",
        exe: PathBuf::from(env!("CARGO_BIN_EXE_weft")),
        config: bridge_config(
            "weft",
            "weft",
            "wbr0",
            "10.250.0.0/24",
            &tmp.path().join("weft"),
        ),
        path: "/nonexistent".into(),
    };
    let refp = Plugin {
        label: "reference",
        exe: reference.join("bridge"),
        config: bridge_config(
            "bridge",
            "host-local",
            "rbr0",
            "10.251.0.0/24",
            &tmp.path().join("host-local"),
        ),
        path: REFERENCE_DIR.into(),
    };

    let home = File::open("/proc/self/ns/net").expect("open own netns");
    let node_fd = File::open(&node).expect("open node netns");
    setns(node_fd.as_fd(), CloneFlags::CLONE_NEWNET).expect("enter node netns");

    let (mut ws, mut rs) = (Samples::default(), Samples::default());
    // Warm-up on the spare pod: creates both bridges, pages in both binaries.
    let spare = &pod_paths[pods];
    weft.add_del("warmup", spare, &mut Samples::default());
    refp.add_del("warmup", spare, &mut Samples::default());
    for (i, pod) in pod_paths[..pods].iter().enumerate() {
        let id = format!("pod{i}");
        if i % 2 == 0 {
            weft.add_del(&id, pod, &mut ws);
            refp.add_del(&id, pod, &mut rs);
        } else {
            refp.add_del(&id, pod, &mut rs);
            weft.add_del(&id, pod, &mut ws);
        }
    }
    let leftover = Command::new("ip")
        .args(["-o", "link", "show", "type", "veth"])
        .output();
    setns(home.as_fd(), CloneFlags::CLONE_NEWNET).expect("return to own netns");
    let leftover = leftover
        .map(|o| String::from_utf8_lossy(&o.stdout).lines().count())
        .unwrap_or(0);
    assert_eq!(leftover, 0, "veths left in the node after DEL");

    print_table(pods, &ws, &rs);
}

fn print_table(pods: usize, w: &Samples, r: &Samples) {
    let sum =
        |s: &Samples| -> Vec<Duration> { s.add.iter().zip(&s.del).map(|(a, d)| *a + *d).collect() };
    println!(
        "CNI latency over {pods} pods, ms (reference = bridge + host-local from {REFERENCE_DIR})"
    );
    println!("Goal: weft's ADD+DEL median at most 1/4 of the reference's (ratio >= 4x).");
    println!();
    println!("| op | weft median | weft p99 | reference median | reference p99 | ratio median | ratio p99 | goal |");
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |");
    let rows = [
        ("ADD", w.add.clone(), r.add.clone()),
        ("DEL", w.del.clone(), r.del.clone()),
        ("ADD+DEL", sum(w), sum(r)),
        (
            "DEL start to veth gone (kernel done)",
            w.gone.clone(),
            r.gone.clone(),
        ),
        (
            "VERSION (start-up floor)",
            w.version.clone(),
            r.version.clone(),
        ),
    ];
    for (op, wv, rv) in rows {
        let ((wm, wp), (rm, rp)) = (stats(&wv), stats(&rv));
        let ratio = ms(rm) / ms(wm);
        let goal = if op != "ADD+DEL" {
            "-"
        } else if ratio >= 4.0 {
            "met"
        } else {
            "NOT met"
        };
        println!(
            "| {op} | {:.2} | {:.2} | {:.2} | {:.2} | {ratio:.2}x | {:.2}x | {goal} |",
            ms(wm),
            ms(wp),
            ms(rm),
            ms(rp),
            ms(rp) / ms(wp)
        );
    }
}
