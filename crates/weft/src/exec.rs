//! `weft lab exec POD -- CMD`: run a command as if inside the pod: its network namespace
//! and a private mount namespace where the pod's resolv.conf and hosts are in place. The pod
//! is found in its node's records (no API call), so exec works even while the control plane
//! is down.

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
