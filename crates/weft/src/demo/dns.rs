//! Cluster DNS: frontend-pod finds the backend Service by its short name. The pod's
//! resolv.conf points at the kube-dns address, which its own node answers (weft-dns in the
//! agent), and the search path turns `backend` into `backend.scenario2.svc.cluster.local`.

use anyhow::Result;

use super::{in_pod, Narrator};

pub fn step(n: &mut Narrator, lab: &str) -> Result<()> {
    n.step(
        "Cluster DNS: frontend-pod finds backend by name (every node answers the kube-dns address)",
    );
    let out = crate::exec::command(
        lab,
        "scenario2",
        "frontend-pod",
        &["cat".to_string(), "/etc/resolv.conf".to_string()],
    )?
    .output()?;
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        n.saw(format!("resolv.conf: {line}"));
    }
    let (ok, line) = in_pod(
        lab,
        "scenario2",
        "frontend-pod",
        &["probe", "dns", "backend.scenario2.svc.cluster.local"],
    )?;
    n.saw(&line);
    n.check(
        ok && line.contains(" IN A "),
        "the Service's name answers with its cluster IP, from node-1 itself",
    );
    // The system resolver walks the search path: `backend` is the Service of the pod's
    // own namespace.
    let (ok, line) = in_pod(
        lab,
        "scenario2",
        "frontend-pod",
        &["probe", "tcp", "backend:80"],
    )?;
    n.saw(&line);
    n.check(
        ok && line.contains("pod=scenario2/backend-pod"),
        "a connection to `backend:80` reaches backend-pod through the Service",
    );
    Ok(())
}
