//! Every truth-table case, step after step, through the kernel: each node's table is
//! synced incrementally into its own fresh network namespace as the agent does it
//! (`Incremental::update`, then `Enforcer::apply`: a whole table diffed against the last
//! one, interval maps replaced element by element, or after a policy-only step a delta
//! of the touched elements), and after each step a fresh Enforcer adopts
//! the kernel's table and must find nothing to change (pods are dual-stack here, so both
//! families' maps are loaded), i.e. the kernel holds exactly the
//! model (no element refused as overlapping, none lost).

mod common;

use std::process::Command;

use weft_policy::desired::{desired, Incremental, NodeContext, Update};
use weft_policy::enforcer::Enforcer;

struct Netns(String);

impl Netns {
    fn new(tag: &str) -> Netns {
        let name = format!("weft-t-polc-{tag}-{}", std::process::id());
        let ok = Command::new("ip")
            .args(["netns", "add", &name])
            .status()
            .expect("ip netns add")
            .success();
        assert!(ok, "ip netns add {name}");
        Netns(name)
    }

    fn path(&self) -> std::path::PathBuf {
        format!("/run/netns/{}", self.0).into()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

#[test]
fn every_case_step_loads_and_reads_back_exactly() {
    if !nix::unistd::Uid::effective().is_root() {
        eprintln!("skipped: needs root for network namespaces");
        return;
    }
    let world = common::world();
    let nodes: Vec<String> = world.nodes.iter().map(|n| n.name.clone()).collect();
    let spaces: Vec<Netns> = nodes.iter().map(|n| Netns::new(n)).collect();
    let mut enforcers: Vec<(Enforcer, Incremental)> = spaces
        .iter()
        .map(|ns| {
            (
                Enforcer::open_in(&ns.path()).unwrap(),
                Incremental::default(),
            )
        })
        .collect();
    let mut deltas = 0;
    // Cases follow one another in the same namespaces: each case's first step replaces
    // the previous case's last table, which exercises the diff on interval maps too.
    for (file, case) in common::cases(&world) {
        let mut cluster = world.cluster().unwrap();
        for (i, step) in case.steps.iter().enumerate() {
            step.apply_to(&mut cluster).unwrap();
            // Dual stack: the IPv6 maps get elements too.
            common::dual_stack(&mut cluster);
            for ((node, ns), (enf, inc)) in nodes.iter().zip(&spaces).zip(&mut enforcers) {
                let ctx = NodeContext {
                    node_name: node.clone(),
                    log_group: Some(1),
                };
                let want = desired(&cluster, &ctx);
                let update = inc.update(&cluster, &ctx);
                deltas += usize::from(matches!(update, Update::Delta(_)));
                enf.apply(update)
                    .unwrap_or_else(|e| panic!("{file} step {i} on {node}: {e}"));
                let mut fresh = Enforcer::open_in(&ns.path()).unwrap();
                let sum = fresh.sync(&want).unwrap();
                assert!(
                    sum.is_empty(),
                    "{file} step {i} on {node}: the kernel differs from the model: {sum:?}"
                );
            }
        }
    }
    assert!(deltas > 0, "some steps went to the kernel as deltas");
}
