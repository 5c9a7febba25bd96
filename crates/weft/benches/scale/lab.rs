//! What the benchmark reads from the lab's state directory and /proc: the supervised
//! processes, their resident memory, the store's size, the machine's free memory.

use std::path::{Path, PathBuf};

pub struct LabDir {
    pub name: String,
    pub dir: PathBuf,
}

impl LabDir {
    pub fn new(state: &Path, name: &str) -> LabDir {
        LabDir {
            name: name.to_string(),
            dir: state.join("labs").join(name),
        }
    }

    pub fn kubeconfig(&self) -> PathBuf {
        self.dir.join("kubeconfig.internal")
    }

    /// The supervisor's (name, pid) of each running program.
    pub fn procs(&self) -> Result<Vec<(String, u32)>, String> {
        let p = self.dir.join("status.json");
        let raw = std::fs::read(&p).map_err(|e| format!("read {}: {e}", p.display()))?;
        let v: serde_json::Value =
            serde_json::from_slice(&raw).map_err(|e| format!("{}: {e}", p.display()))?;
        Ok(v["procs"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|p| p["running"] == serde_json::json!(true))
            .filter_map(|p| Some((p["name"].as_str()?.to_string(), p["pid"].as_u64()? as u32)))
            .collect())
    }

    pub fn pid(&self, name: &str) -> Option<u32> {
        self.procs()
            .ok()?
            .into_iter()
            .find(|(n, _)| n == name)
            .map(|(_, p)| p)
    }

    /// Each node's name and the path of its network namespace.
    pub fn nodes(&self) -> Result<Vec<(String, PathBuf)>, String> {
        Ok(self
            .procs()?
            .into_iter()
            .filter_map(|(n, _)| n.strip_prefix("agent-").map(str::to_string))
            .map(|node| {
                let ns = PathBuf::from(format!("/run/netns/weft-{}-{node}", self.name));
                (node, ns)
            })
            .collect())
    }

    /// Bytes under the control plane's data directory (its store log and snapshot).
    pub fn store_bytes(&self) -> u64 {
        dir_bytes(&self.dir.join("control-plane"))
    }
}

fn dir_bytes(p: &Path) -> u64 {
    let Ok(rd) = std::fs::read_dir(p) else {
        return 0;
    };
    rd.flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

/// A `/proc` status-style field in KiB (`VmRSS:`, `MemAvailable:`).
fn kib(text: &str, field: &str) -> Option<u64> {
    text.lines()
        .find(|l| l.starts_with(field))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

pub fn rss_mib(pid: u32) -> Option<f64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    Some(kib(&s, "VmRSS:")? as f64 / 1024.0)
}

pub fn mem_available_mib() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/meminfo").ok()?;
    Some(kib(&s, "MemAvailable:")? as f64 / 1024.0)
}

pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// CPU seconds (user + system) a process has used, from `/proc/PID/stat` (clock ticks
/// of 1/100 s, as Linux reports them to user space).
pub fn cpu_secs(pid: u32) -> Option<f64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    Some(ticks as f64 / 100.0)
}

impl LabDir {
    /// One line: CPU seconds used so far by the control plane and each agent.
    pub fn cpu_line(&self) -> String {
        self.procs()
            .unwrap_or_default()
            .iter()
            .filter_map(|(n, p)| Some(format!("{n} {:.1}", cpu_secs(*p)?)))
            .collect::<Vec<_>>()
            .join(", ")
    }
}
