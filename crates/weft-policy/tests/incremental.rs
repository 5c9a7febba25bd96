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
        let mut incs = common::compilers(&["node-1", "node-2", "node-3"]);
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

/// One change to the view.
type Change<'a> = Box<dyn Fn(&mut weft_policy::Cluster) + 'a>;

/// Pods coming, going and relabelled under every case's final policies: the compiler
/// that carries its cache across these changes gives the table a fresh one gives, on
/// every node, and reuses rows (not every subject class is computed again).
#[test]
fn pods_coming_and_going_keep_incremental_equal_to_full() {
    use std::net::{IpAddr, Ipv4Addr};
    use weft_policy::view::Pod;
    let world = common::world();
    let cases = common::cases(&world);
    let pod = |ns: &str, name: &str, label: &str, node: &str, ip: [u8; 4]| Pod {
        namespace: ns.into(),
        name: name.into(),
        labels: [("pod".to_string(), label.to_string())].into(),
        ips: vec![IpAddr::V4(Ipv4Addr::from(ip))],
        node: Some(node.into()),
        host_network: false,
        ports: world
            .cluster()
            .expect("the world is valid")
            .pod("x", "a")
            .expect("x/a")
            .ports
            .clone(),
    };
    let mut reused = 0;
    for (file, case) in &cases {
        let mut cluster = world.cluster().expect("the world is valid");
        for step in &case.steps {
            let _ = step.apply_to(&mut cluster);
        }
        let mut incs: Vec<(NodeContext, Incremental)> = ["node-1", "node-2"]
            .iter()
            .map(|n| {
                let ctx = NodeContext {
                    node_name: (*n).into(),
                    log_group: None,
                };
                let mut inc = Incremental::default();
                let _ = inc.desired(&cluster, &ctx);
                (ctx, inc)
            })
            .collect();
        let changes: Vec<Change> = vec![
            // A pod like x/a joins its classes; one with new labels makes its own.
            Box::new(|c| c.upsert_pod(pod("x", "d", "a", "node-1", [10, 244, 1, 40]))),
            Box::new(|c| c.upsert_pod(pod("y", "e", "new", "node-1", [10, 244, 1, 41]))),
            Box::new(|c| c.upsert_pod(pod("z", "f", "b", "node-2", [10, 244, 2, 42]))),
            // Relabelled, then gone; a pod of the world gone and back.
            Box::new(|c| c.upsert_pod(pod("x", "d", "c", "node-1", [10, 244, 1, 40]))),
            Box::new(|c| c.delete_pod("y", "e")),
            Box::new(|c| c.delete_pod("x", "a")),
            Box::new(|c| c.upsert_pod(pod("x", "a", "a", "node-1", [10, 244, 1, 11]))),
            Box::new(|c| c.delete_pod("x", "d")),
        ];
        for (i, change) in changes.iter().enumerate() {
            change(&mut cluster);
            for (ctx, inc) in incs.iter_mut() {
                let got = inc.desired(&cluster, ctx);
                let want = desired(&cluster, ctx);
                assert!(
                    got == want,
                    "{file} pod change {i} on {}: incremental differs",
                    ctx.node_name
                );
                if inc.recompiled < cluster.pods.len() / 3 {
                    reused += 1;
                }
            }
        }
    }
    assert!(reused > 0, "some pod changes reused rows");
}
