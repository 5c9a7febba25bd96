//! `Incremental::desired` equals `desired` after every step of every truth-table case, on
//! every node, single- and dual-stack, also when one compiler lives across all the cases
//! (so policy-only steps take the incremental path and the rest the full one).

mod common;

use weft_policy::desired::{desired, Incremental, NodeContext};

#[test]
fn incremental_equals_full_after_every_step() {
    let world = common::world();
    let cases = common::cases(&world);
    for dual in [false, true] {
        let mut incs: Vec<(NodeContext, Incremental)> = ["node-1", "node-2", "node-3"]
            .iter()
            .map(|n| {
                let ctx = NodeContext {
                    node_name: (*n).into(),
                    log_group: Some(3),
                };
                (ctx, Incremental::default())
            })
            .collect();
        let mut partial = 0;
        for (file, case) in &cases {
            let mut cluster = world.cluster().expect("the world is valid");
            if dual {
                common::dual_stack(&mut cluster);
            }
            for (i, step) in case.steps.iter().enumerate() {
                // Refused objects are part of some cases; the view is what it is after.
                let _ = step.apply_to(&mut cluster);
                for (ctx, inc) in incs.iter_mut() {
                    let got = inc.desired(&cluster, ctx);
                    let want = desired(&cluster, ctx);
                    assert!(
                        got == want,
                        "{file} step {i} on {} (dual {dual}): incremental differs",
                        ctx.node_name
                    );
                    if inc.recompiled > 0 && inc.recompiled < cluster.pods.len() / 3 {
                        partial += 1;
                    }
                    // Asked again with nothing changed: nothing recompiled, same table.
                    assert!(inc.desired(&cluster, ctx) == want);
                    assert_eq!(inc.recompiled, 0);
                }
            }
        }
        assert!(partial > 0, "some steps took the incremental path");
    }
}
