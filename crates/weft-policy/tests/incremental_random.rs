//! Random sequences of policy, pod, label and namespace changes: after every change the
//! compiler that carries its cache across the whole sequence gives the table a fresh
//! compile gives, on two nodes. The policies are those of every truth-table case (so a
//! policy id can come back with another case's version of it), the pods and namespaces
//! those of the world plus a few that come, go and are relabelled.

mod common;

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};

use weft_policy::desired::desired;
use weft_policy::model::{Policy, PolicyId};
use weft_policy::view::{Namespace, Pod};
use weft_policy::Cluster;

/// xorshift64*: a fixed sequence per seed, so a failure names a seed that repeats it.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn pick<'a, T>(&mut self, v: &'a [T]) -> &'a T {
        &v[self.below(v.len())]
    }
}

/// Every version of every policy the cases make, by id.
fn policy_pool() -> Vec<Policy> {
    let world = common::world();
    let mut pool: Vec<Policy> = Vec::new();
    for (_, case) in common::cases(&world) {
        let mut cluster = world.cluster().expect("the world is valid");
        for step in &case.steps {
            let _ = step.apply_to(&mut cluster);
            for p in cluster.policies.values() {
                if !pool.contains(p) {
                    pool.push(p.clone());
                }
            }
        }
    }
    pool
}

const LABELS: [&str; 4] = ["a", "b", "c", "new"];
const NAMESPACES: [&str; 4] = ["x", "y", "z", "w"];

/// One random change; returns what it did, for the failure message.
fn change(rng: &mut Rng, c: &mut Cluster, pool: &[Policy], ports: &Pod) -> String {
    match rng.below(8) {
        0 | 1 => {
            let p = rng.pick(pool).clone();
            let what = format!("policy {:?} put", p.id);
            c.upsert_policy(p);
            what
        }
        2 => {
            let ids: Vec<PolicyId> = c.policies.keys().cloned().collect();
            if ids.is_empty() {
                return "nothing".into();
            }
            let id = rng.pick(&ids).clone();
            c.policies.remove(&id);
            format!("policy {id:?} removed")
        }
        3 | 4 => {
            // A pod of the sequence's own (addresses 10.244.n.100..) comes or changes.
            let n = rng.below(6);
            let ns = *rng.pick(&NAMESPACES);
            let label = *rng.pick(&LABELS);
            let node = 1 + rng.below(2);
            let pod = Pod {
                namespace: ns.into(),
                name: format!("r{n}"),
                labels: [("pod".to_string(), label.to_string())].into(),
                ips: vec![IpAddr::V4(Ipv4Addr::new(
                    10,
                    244,
                    node as u8,
                    100 + n as u8,
                ))],
                node: Some(format!("node-{node}")),
                host_network: false,
                ports: if rng.below(2) == 0 {
                    ports.ports.clone()
                } else {
                    Vec::new()
                },
            };
            // The same name in another namespace is another pod: drop the old one so an
            // address has one owner.
            c.pods.retain(|(_, name), _| *name != pod.name);
            let what = format!("pod {ns}/r{n} label {label} on node-{node}");
            c.upsert_pod(pod);
            what
        }
        5 => {
            let keys: Vec<(String, String)> = c.pods.keys().cloned().collect();
            let k = rng.pick(&keys).clone();
            if rng.below(2) == 0 {
                c.pods.remove(&k);
                format!("pod {}/{} removed", k.0, k.1)
            } else {
                let label = *rng.pick(&LABELS);
                if let Some(p) = c.pods.get_mut(&k) {
                    p.labels.insert("pod".into(), label.into());
                }
                format!("pod {}/{} relabelled {label}", k.0, k.1)
            }
        }
        6 => {
            let ns = *rng.pick(&NAMESPACES);
            let mut labels: BTreeMap<String, String> =
                [("kubernetes.io/metadata.name".to_string(), ns.to_string())].into();
            let value = *rng.pick(&LABELS);
            labels.insert("ns".into(), value.into());
            c.upsert_namespace(Namespace {
                name: ns.into(),
                labels,
            });
            format!("namespace {ns} labelled ns={value}")
        }
        _ => {
            let ns = *rng.pick(&NAMESPACES);
            c.delete_namespace(ns);
            format!("namespace {ns} removed (its pods stay)")
        }
    }
}

#[test]
fn random_changes_keep_incremental_equal_to_full() {
    let pool = policy_pool();
    assert!(pool.len() > 10, "the cases give a pool of policies");
    let world = common::world();
    let base = world.cluster().expect("the world is valid");
    let ported = base.pod("x", "a").expect("x/a").clone();
    let mut partial = 0;
    for seed in 1..=12u64 {
        let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
        let mut cluster = base.clone();
        if seed % 2 == 0 {
            common::dual_stack(&mut cluster);
        }
        let mut incs = common::compilers(&["node-1", "node-2"]);
        let mut done = Vec::new();
        for step in 0..60 {
            done.push(change(&mut rng, &mut cluster, &pool, &ported));
            for (ctx, inc) in incs.iter_mut() {
                let got = inc.desired(&cluster, ctx);
                let want = desired(&cluster, ctx);
                assert!(
                    got == want,
                    "seed {seed} step {step} on {}: incremental differs after {:?}",
                    ctx.node_name,
                    done
                );
                if inc.recompiled > 0 && inc.recompiled < cluster.pods.len() / 3 {
                    partial += 1;
                }
            }
        }
    }
    assert!(partial > 0, "some changes took the incremental path");
}
