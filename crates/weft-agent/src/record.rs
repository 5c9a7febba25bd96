//! The durable record of a pod under `<state_dir>/pods/<uid>/record.json`: what the runtime
//! made for it (namespace, addresses, processes), so that a restarted agent can adopt the
//! pod or tear down what a crash left half-made. Every write is atomic and fsynced (file,
//! then directory) before the call that made it returns.

use k8s_openapi::api::core::v1::Pod;
use serde::{Deserialize, Serialize};
use std::fs::{self, File};
use std::io::Write;
use std::net::IpAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// Written before the namespace exists: a crash from here to `Running` leaves a
    /// record whose remains `adopt()` removes.
    Creating,
    Running,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PodRecord {
    pub uid: String,
    pub phase: Phase,
    pub netns_name: String,
    /// Identity of the namespace, compared with `/proc/PID/ns/net` before a PID is trusted.
    pub netns_inode: Option<u64>,
    pub ips: Vec<IpAddr>,
    /// The node the pod runs on (for NODE_NAME in processes started from the record).
    #[serde(default)]
    pub node_name: String,
    /// When the runtime began to start the pod, in seconds since the Unix epoch.
    #[serde(default)]
    pub started_at: Option<u64>,
    pub containers: Vec<ContainerRecord>,
    /// The pod as it was started: after a restart the runtime re-derives from it what it
    /// needs to restart containers and run probes.
    pub pod: Pod,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ContainerRecord {
    pub name: String,
    pub pid: Option<u32>,
    /// Start time of `pid` in clock ticks since boot (/proc/PID/stat field 22): a PID reused
    /// by an unrelated process after ours ended does not match it.
    pub start_time: Option<u64>,
    pub running: bool,
    pub exit_code: Option<i32>,
    pub restarts: u32,
    pub ready: bool,
    /// When the current (or last) process started, in seconds since the Unix epoch.
    #[serde(default)]
    pub started_at: Option<u64>,
}

pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Where one pod's files live.
#[derive(Debug, Clone)]
pub struct PodDir(pub PathBuf);

impl PodDir {
    pub fn new(state_dir: &Path, uid: &str) -> PodDir {
        PodDir(pods_dir(state_dir).join(uid))
    }
    pub fn record(&self) -> PathBuf {
        self.0.join("record.json")
    }
    pub fn resolv_conf(&self) -> PathBuf {
        self.0.join("resolv.conf")
    }
    pub fn hosts(&self) -> PathBuf {
        self.0.join("hosts")
    }
    /// The network config the pod was added with: DEL must send the same one (libcni keeps
    /// the same cache), even if the node's config file changed since.
    pub fn cni_config(&self) -> PathBuf {
        self.0.join("cni-config.json")
    }
    pub fn log(&self, container: &str) -> PathBuf {
        self.0.join(format!("{container}.log"))
    }
    /// The log of the container's instance before the current one.
    pub fn previous_log(&self, container: &str) -> PathBuf {
        self.0.join(format!("{container}.previous.log"))
    }
}

pub fn pods_dir(state_dir: &Path) -> PathBuf {
    state_dir.join("pods")
}

pub fn save(dir: &PodDir, rec: &PodRecord) -> Result<()> {
    let bytes = serde_json::to_vec_pretty(rec).map_err(|e| Error::Record {
        path: dir.record().display().to_string(),
        reason: e.to_string(),
    })?;
    write_durable(&dir.record(), &bytes)
}

pub fn load(path: &Path) -> Result<PodRecord> {
    let bytes = fs::read(path).map_err(|e| Error::io(format!("read {}", path.display()), e))?;
    serde_json::from_slice(&bytes).map_err(|e| Error::Record {
        path: path.display().to_string(),
        reason: e.to_string(),
    })
}

/// Replace `path` with `bytes` so that after a crash it holds either the old or the new
/// content, and the new content once this returns.
pub fn write_durable(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path
        .parent()
        .ok_or_else(|| Error::Config(format!("{} has no parent directory", path.display())))?;
    fs::create_dir_all(dir).map_err(|e| Error::io(format!("create {}", dir.display()), e))?;
    let tmp = path.with_extension("tmp");
    let op = || format!("write {}", path.display());
    let mut f = fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| Error::io(op(), e))?;
    f.write_all(bytes).map_err(|e| Error::io(op(), e))?;
    f.sync_all().map_err(|e| Error::io(op(), e))?;
    fs::rename(&tmp, path).map_err(|e| Error::io(op(), e))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(format!("sync directory {}", dir.display()), e))
}

/// The uids that have a directory under `<state_dir>/pods`, sorted.
pub fn list(state_dir: &Path) -> Result<Vec<String>> {
    let dir = pods_dir(state_dir);
    let entries = match fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io(format!("list {}", dir.display()), e)),
    };
    let mut uids = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| Error::io(format!("list {}", dir.display()), e))?;
        if entry.path().is_dir() {
            if let Some(name) = entry.file_name().to_str() {
                uids.push(name.to_string());
            }
        }
    }
    uids.sort();
    Ok(uids)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_through_disk() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = PodDir::new(tmp.path(), "u-1");
        let rec = PodRecord {
            uid: "u-1".into(),
            phase: Phase::Running,
            netns_name: "p-default-a".into(),
            netns_inode: Some(4026532000),
            ips: vec!["10.244.1.2".parse().unwrap()],
            node_name: "node-1".into(),
            started_at: Some(1),
            containers: vec![ContainerRecord {
                name: "c".into(),
                pid: Some(42),
                start_time: Some(7),
                running: true,
                ..Default::default()
            }],
            pod: serde_yaml::from_str("metadata: {name: a, uid: u-1}").unwrap(),
        };
        save(&dir, &rec).unwrap();
        let back = load(&dir.record()).unwrap();
        assert_eq!(back.phase, Phase::Running);
        assert_eq!(back.containers[0].pid, Some(42));
        assert_eq!(back.pod.metadata.name.as_deref(), Some("a"));
        assert_eq!(list(tmp.path()).unwrap(), ["u-1"]);
        assert!(!dir.record().with_extension("tmp").exists());
    }
}
