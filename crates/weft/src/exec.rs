//! `weft lab exec POD -- CMD`: run a command as if inside the pod: its network namespace
//! and a private mount namespace where the pod's resolv.conf and hosts are in place. The pod
//! is found in its node's records (no API call), so exec works even while the control plane
//! is down. `weft lab exec --host H -- CMD` runs a command on one of the lab's hosts
//! instead: `external`, `node-K` or `control-plane` (the lab's root namespace, where the
//! API server listens), in that host's network namespace.

use anyhow::{bail, Context, Result};
use std::path::PathBuf;

/// The runtime state directory of each node of the lab (see the agent's `--state-dir`).
fn node_state_dirs(lab: &str) -> Result<Vec<PathBuf>> {
    let state = weft_lab::load(lab)?;
    let base = weft_lab::lab_dir(lab).join("nodes");
    Ok(state
        .topology
        .nodes
        .iter()
        .map(|n| base.join(&n.name).join("pods"))
        .collect())
}

pub fn command(
    lab: &str,
    namespace: &str,
    pod: &str,
    argv: &[String],
) -> Result<std::process::Command> {
    let weft = std::env::current_exe().context("find the weft binary")?;
    for dir in node_state_dirs(lab)? {
        if !dir.exists() {
            continue;
        }
        match weft_agent::exec_recorded(&dir, &weft, namespace, pod, argv) {
            Ok(cmd) => return Ok(cmd),
            Err(weft_agent::Error::UnknownPod(_)) => continue,
            Err(e) => return Err(e).with_context(|| format!("exec in pod {namespace}/{pod}")),
        }
    }
    bail!("pod {namespace}/{pod} is not running in lab {lab} (see `weft lab get pods -n {namespace}`)")
}

pub fn run(lab: &str, namespace: &str, pod: &str, argv: &[String]) -> Result<u8> {
    let status = command(lab, namespace, pod, argv)?
        .status()
        .with_context(|| format!("run {:?} in pod {namespace}/{pod}", argv.first()))?;
    Ok(status.code().map(|c| c as u8).unwrap_or(128))
}

/// The network namespace of a lab host: `external`, `node-K` or `control-plane`.
fn host_netns(lab: &str, host: &str) -> Result<String> {
    let state = weft_lab::load(lab)?;
    let t = &state.topology;
    if host == "control-plane" {
        return Ok(t.root_netns.clone());
    }
    let found = t.hosts().find(|h| h.name == host).map(|h| h.netns.clone());
    match found {
        Some(ns) => Ok(ns),
        None => {
            let names: Vec<&str> = t.hosts().map(|h| h.name.as_str()).collect();
            bail!(
                "lab {lab} has no host {host:?} (hosts: control-plane, {})",
                names.join(", ")
            )
        }
    }
}

/// `weft lab exec --host HOST -- CMD`: the command's exit code (128+N for signal N).
pub fn run_host(lab: &str, host: &str, argv: &[String]) -> Result<u8> {
    use std::os::unix::process::ExitStatusExt;
    let netns = host_netns(lab, host)?;
    let ns = weft_netlink::Netns::from_name(&netns)
        .with_context(|| format!("open the network namespace {netns} of host {host}"))?;
    let program = match argv.first().map(String::as_str) {
        Some("weft") => std::env::current_exe().context("find the weft binary")?,
        Some(p) => PathBuf::from(p),
        None => bail!("no command given"),
    };
    let status = crate::nsexec::command_in(&ns, &program)
        .args(&argv[1..])
        .status()
        .with_context(|| format!("run {:?} on {host}", argv[0]))?;
    Ok(status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0)) as u8)
}
