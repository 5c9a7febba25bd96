//! weft-pod: the pod runtime without an API server, for debugging and for tests that need
//! a runtime in a process of its own (one that can be killed like a crashed agent).
//!
//! ```text
//! weft-pod --state-dir D --weft-bin B --cni-conf C [--prefix P] [--node N]
//!          [--host-netns PATH] [--cni-bin-dir D] [--cluster-dns IP|none] COMMAND
//!   run FILE...       start the pods in FILE (YAML, multi-document), print each status as
//!                     a JSON line, then tend them (probes, restarts) until killed, printing
//!                     `ready UID` when a pod becomes ready
//!   status            adopt the recorded pods and print their statuses
//!   stop UID...       stop pods (after adopting them)
//!   exec [NS/]NAME CMD...  run CMD in the pod (also while `run` holds the state);
//!                     exits with its status
//! ```

use std::collections::HashSet;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use serde::Deserialize;
use weft_agent::{Runtime, RuntimeConfig};

fn main() -> ExitCode {
    match run() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("weft-pod: error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<ExitCode, String> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let mut opt = |name: &str| -> Option<String> {
        let i = args.iter().position(|a| a == name)?;
        if i + 1 >= args.len() {
            return None;
        }
        let v = args.remove(i + 1);
        args.remove(i);
        Some(v)
    };
    let need = |v: Option<String>, name: &str| v.ok_or(format!("{name} is required"));
    let state_dir = need(opt("--state-dir"), "--state-dir")?;
    let weft_bin = need(opt("--weft-bin"), "--weft-bin")?;
    let cni_conf = need(opt("--cni-conf"), "--cni-conf")?;
    let node = opt("--node").unwrap_or_else(|| "node-1".into());
    let mut cfg = RuntimeConfig::new(node, state_dir, weft_bin, cni_conf);
    if let Some(p) = opt("--prefix") {
        cfg.netns_prefix = p;
    }
    cfg.host_netns = opt("--host-netns").map(PathBuf::from);
    if let Some(d) = opt("--cni-bin-dir") {
        cfg.cni_bin_dir = d.into();
    }
    match opt("--cluster-dns").as_deref() {
        Some("none") => cfg.cluster_dns = None,
        Some(ip) => cfg.cluster_dns = Some(ip.parse().map_err(|e| format!("--cluster-dns: {e}"))?),
        None => {}
    }
    let (cmd, rest) = args
        .split_first()
        .ok_or("no command (run, status, stop, exec)")?;
    if cmd == "exec" {
        // No runtime (and no lock): works next to a running `weft-pod run`.
        let (pod, argv) = rest
            .split_first()
            .ok_or("exec needs NS/NAME and a command")?;
        let (ns, name) = pod.split_once('/').unwrap_or(("default", pod));
        let status = weft_agent::exec_recorded(&cfg.state_dir, &cfg.weft_bin, ns, name, argv)
            .map_err(|e| e.to_string())?
            .status()
            .map_err(|e| e.to_string())?;
        return Ok(ExitCode::from(
            status.code().unwrap_or(1).clamp(0, 255) as u8
        ));
    }
    let mut rt = Runtime::new(cfg).map_err(|e| e.to_string())?;
    match cmd.as_str() {
        "run" => {
            rt.adopt().map_err(|e| e.to_string())?;
            for file in rest {
                for pod in read_pods(file)? {
                    let st = rt.start(&pod).map_err(|e| e.to_string())?;
                    print_json(&st)?;
                }
            }
            let mut ready = HashSet::new();
            loop {
                rt.probe_all();
                for uid in rt.pods() {
                    if rt.status(&uid).is_some_and(|s| s.ready) && ready.insert(uid.clone()) {
                        println!("ready {uid}");
                    }
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        }
        "status" => {
            for uid in rt.adopt().map_err(|e| e.to_string())? {
                if let Some(st) = rt.status(&uid) {
                    print_json(&st)?;
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        "stop" => {
            rt.adopt().map_err(|e| e.to_string())?;
            for uid in rest {
                rt.stop(uid).map_err(|e| e.to_string())?;
            }
            Ok(ExitCode::SUCCESS)
        }
        other => Err(format!(
            "unknown command {other:?} (run, status, stop, exec)"
        )),
    }
}

fn read_pods(file: &str) -> Result<Vec<Pod>, String> {
    let text = std::fs::read_to_string(file).map_err(|e| format!("read {file}: {e}"))?;
    let mut pods = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(&text) {
        let pod = Pod::deserialize(doc).map_err(|e| format!("{file}: {e}"))?;
        pods.push(pod);
    }
    Ok(pods)
}

fn print_json<T: serde::Serialize>(v: &T) -> Result<(), String> {
    let line = serde_json::to_string(v).map_err(|e| e.to_string())?;
    println!("{line}");
    Ok(())
}
