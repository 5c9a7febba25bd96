use std::net::IpAddr;
use std::path::PathBuf;

/// What the runtime knows about a pod right now (the networking half of a PodStatus).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PodRuntimeStatus {
    pub uid: String,
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
}
