//! How far each of a node's components is behind what it has seen: the agent writes it
//! to `<state dir>/sync.json` about twice a second, `weft lab status` reads it.
//!
//! A component is *behind* while a change it has seen (a watch event) is not yet in the
//! state it applies (the kernel's tables, the running pods, the DNS zone, the proxy's
//! routes); by how much is the age of the oldest such change.

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Duration;

pub const FILE: &str = "sync.json";

/// A report older than this says nothing about now: the agent is stuck or gone.
pub const STALE: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeSync {
    pub node: String,
    /// When the agent wrote it, in milliseconds since the Unix epoch.
    pub written_at_ms: u64,
    pub components: Vec<ComponentSync>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ComponentSync {
    pub name: String,
    /// Changes seen and not applied yet.
    pub pending: u64,
    /// The age of the oldest of them (0 when none).
    pub behind_ms: u64,
    /// Changes seen since the agent started.
    pub changes: u64,
    /// Applies that carried at least one change (nf_tables transactions, reconcile
    /// passes, zone updates, route-table swaps).
    pub transactions: u64,
    /// The worst seen since the agent started, and when (ms since the epoch).
    pub peak_behind_ms: u64,
    pub peak_pending: u64,
    pub peak_at_ms: u64,
}

pub fn path(state_dir: &Path) -> PathBuf {
    state_dir.join(FILE)
}

/// The node's report; None when there is none (the agent has not written one yet).
pub fn read(state_dir: &Path) -> Option<NodeSync> {
    serde_json::from_slice(&std::fs::read(path(state_dir)).ok()?).ok()
}

pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn secs(ms: u64) -> String {
    format!("{:.1}s", ms as f64 / 1000.0)
}

impl ComponentSync {
    pub fn in_sync(&self) -> bool {
        self.pending == 0
    }

    /// `in sync` or `behind by 2.3s (812 pending)`.
    pub fn state(&self) -> String {
        match self.pending {
            0 => "in sync".into(),
            n => format!("behind by {} ({n} pending)", secs(self.behind_ms)),
        }
    }

    /// The worst so far, for the status table.
    pub fn peak(&self) -> String {
        match self.peak_pending {
            0 => "-".into(),
            n => format!("{} ({n} pending)", secs(self.peak_behind_ms)),
        }
    }
}

impl NodeSync {
    /// How old the report is at `now_ms`, when it is too old to trust.
    pub fn stale(&self, now_ms: u64) -> Option<Duration> {
        let age = Duration::from_millis(now_ms.saturating_sub(self.written_at_ms));
        (age > STALE).then_some(age)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_read_as_the_status_prints_them() {
        let mut c = ComponentSync {
            name: "services".into(),
            ..Default::default()
        };
        assert_eq!((c.state(), c.peak()), ("in sync".into(), "-".into()));
        c.pending = 812;
        c.behind_ms = 2345;
        c.peak_pending = 900;
        c.peak_behind_ms = 4000;
        assert_eq!(c.state(), "behind by 2.3s (812 pending)");
        assert_eq!(c.peak(), "4.0s (900 pending)");
        let n = NodeSync {
            node: "node-1".into(),
            written_at_ms: 10_000,
            components: vec![c],
        };
        assert_eq!(n.stale(14_000), None);
        assert_eq!(n.stale(16_000), Some(Duration::from_secs(6)));
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read(dir.path()), None);
        std::fs::write(path(dir.path()), serde_json::to_vec(&n).unwrap()).unwrap();
        assert_eq!(read(dir.path()), Some(n));
    }
}
