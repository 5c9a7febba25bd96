//! A lab's lifecycle and its state directory (`$WEFT_STATE_DIR/labs/<name>`, default
//! `/var/lib/weft`): `lab.json` records the spec and the topology, so `down` removes exactly
//! what `up` made even after a crash.

use crate::access::{self, Owner};
use crate::error::{Error, Result};
use crate::topology::{plan, validate_name, LabSpec, Topology};
use crate::world;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use weft_netlink::Netns;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LabState {
    pub spec: LabSpec,
    pub topology: Topology,
    /// Who the lab's kubeconfig is handed to (see `access`); labs recorded before this
    /// existed hand it to root.
    #[serde(default)]
    pub owner: Option<Owner>,
}

pub fn state_root() -> PathBuf {
    std::env::var_os("WEFT_STATE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/lib/weft"))
}

pub fn lab_dir(name: &str) -> PathBuf {
    state_root().join("labs").join(name)
}

fn state_file(name: &str) -> PathBuf {
    lab_dir(name).join("lab.json")
}

pub fn load(name: &str) -> Result<LabState> {
    validate_name(name)?;
    let path = state_file(name);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(Error::Missing(name.to_string()))
        }
        Err(e) => return Err(Error::io(format!("read {}", path.display()))(e)),
    };
    serde_json::from_slice(&bytes).map_err(|e| Error::State {
        path: path.display().to_string(),
        problem: format!("{e} (remove the lab's namespaces by hand and delete this file)"),
    })
}

fn save(dir: &Path, state: &LabState) -> Result<()> {
    let bytes = serde_json::to_vec_pretty(state).map_err(|e| Error::State {
        path: dir.display().to_string(),
        problem: e.to_string(),
    })?;
    access::write_private(&dir.join("lab.json"), &bytes, None)
}

/// Builds the lab's network and records it. Refuses a name in use, by a recorded lab or by
/// namespaces left from one whose record is gone.
pub fn up(spec: &LabSpec, progress: &mut dyn FnMut(&str)) -> Result<LabState> {
    let topology = plan(spec)?;
    let dir = lab_dir(&spec.name);
    let taken = Netns::list_named()
        .map_err(Error::kernel("list namespaces"))?
        .iter()
        .any(|n| n == &topology.root_netns);
    if dir.join("lab.json").exists() || taken {
        return Err(Error::Exists(spec.name.clone()));
    }
    let owner = Owner::invoking();
    access::create_lab_dir(&dir, owner)?;
    let state = LabState {
        spec: spec.clone(),
        topology,
        owner: Some(owner),
    };
    // Recorded before building, so a crash half-way is still cleaned up by `down`.
    save(&dir, &state)?;
    if let Err(e) = world::build(&state.topology, progress) {
        let _ = std::fs::remove_dir_all(&dir);
        return Err(e);
    }
    Ok(state)
}

/// Removes the lab's namespaces (pods' too) and its state directory.
pub fn down(name: &str, progress: &mut dyn FnMut(&str)) -> Result<Vec<String>> {
    let state = load(name)?;
    let removed = world::destroy(&state.topology)?;
    progress(&format!("removed {} namespaces", removed.len()));
    let dir = lab_dir(name);
    std::fs::remove_dir_all(&dir).map_err(Error::io(format!("remove {}", dir.display())))?;
    Ok(removed)
}

pub fn list() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(state_root().join("labs"))
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter(|e| e.path().join("lab.json").exists())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}
