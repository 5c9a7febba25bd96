//! `weft lab status`'s sync table: per node and component, whether the agent has applied
//! everything it has seen, read from each node's `sync.json` (weft-agent's report).

use weft_agent::sync_status::{self, NodeSync};
use weft_lab::LabState;

/// One line per node and component: `in sync`, `behind by 2.3s (812 pending)`, or why
/// there is nothing to say (no report yet, a stale one).
pub fn print(name: &str, state: &LabState) {
    let dir = weft_lab::lab_dir(name).join("nodes");
    let now = sync_status::unix_ms();
    println!(
        "\n{:<12} {:<10} {:<32} {:<24} {:>8} {:>12}",
        "NODE", "COMPONENT", "SYNC", "WORST SO FAR", "CHANGES", "TRANSACTIONS"
    );
    for node in &state.topology.nodes {
        let report: Option<NodeSync> = sync_status::read(&dir.join(&node.name));
        let Some(report) = report else {
            println!(
                "{:<12} {:<10} no report yet (agent starting?)",
                node.name, "-"
            );
            continue;
        };
        if let Some(age) = report.stale(now) {
            println!(
                "{:<12} {:<10} unknown: the agent's last report is {}s old",
                node.name,
                "-",
                age.as_secs()
            );
            continue;
        }
        for c in &report.components {
            println!(
                "{:<12} {:<10} {:<32} {:<24} {:>8} {:>12}",
                node.name,
                c.name,
                c.state(),
                c.peak(),
                c.changes,
                c.transactions
            );
        }
    }
}
