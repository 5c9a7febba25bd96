use std::net::IpAddr;
use std::path::PathBuf;

/// What the runtime knows about a pod right now (the networking half of a PodStatus).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PodRuntimeStatus {
    pub uid: String,
    /// Running, Succeeded or Failed (Kubernetes' pod phases; a pod the runtime knows is
    /// past Pending).
    pub phase: String,
    /// When the runtime began to start the pod (seconds since the Unix epoch).
    pub started_at: Option<u64>,
    pub namespace: String,
    pub name: String,
    pub ips: Vec<IpAddr>,
    /// `/run/netns/<name>`.
    pub netns: PathBuf,
    pub containers: Vec<ContainerState>,
    /// Every container ready.
    pub ready: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ContainerState {
    pub name: String,
    pub pid: Option<u32>,
    pub running: bool,
    /// When it has exited: its code (128+N for signal N), None if it ended unobserved.
    pub exit_code: Option<i32>,
    pub ready: bool,
    pub restarts: u32,
    /// When the current (or last) process started (seconds since the Unix epoch).
    pub started_at: Option<u64>,
}
