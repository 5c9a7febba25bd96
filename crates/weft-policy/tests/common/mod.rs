//! Loading the truth-table world and cases for tests.
#![allow(dead_code)]

pub mod netns;

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;

use weft_policy::cases::{Case, Matrix, Service, Step, World};
use weft_policy::view::{Namespace, Node, Pod};
use weft_policy::Cluster;

pub fn cases_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/cases")
}

pub fn world() -> World {
    World::load(&cases_dir().join("world.yaml")).expect("tests/cases/world.yaml")
}

/// Every case file but the world, by file name.
pub fn cases(world: &World) -> Vec<(String, Case)> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(cases_dir())
        .expect("tests/cases")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .filter(|p| p.file_name().is_some_and(|n| n != "world.yaml"))
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            let case = Case::load(&p, world).unwrap_or_else(|e| panic!("{name}: {e}"));
            (name, case)
        })
        .collect()
}

/// A step's matrices per served port; each must be stated exactly once and be complete.
pub fn expectations(world: &World, step: &Step, at: &str) -> Vec<(Service, Matrix)> {
    let pods = world.pod_names();
    let mut out = Vec::new();
    let mut seen = BTreeSet::new();
    for e in &step.expect {
        let m = e.matrix().unwrap_or_else(|err| panic!("{at}: {err}"));
        assert_eq!(
            m.len(),
            pods.len() * pods.len(),
            "{at}: the grid must cover every pair"
        );
        for s in e.services().unwrap_or_else(|err| panic!("{at}: {err}")) {
            assert!(seen.insert(s), "{at}: {s} stated twice");
            out.push((s, m.clone()));
        }
    }
    for s in world.services().expect("world serves") {
        assert!(seen.contains(&s), "{at}: no matrix for {s}");
    }
    out
}

/// The IPv6 twin of an IPv4 address, for dual-stack runs.
pub fn six(a: Ipv4Addr) -> IpAddr {
    IpAddr::V6(Ipv6Addr::from(
        (0xfd00u128 << 112) | u128::from(u32::from(a)),
    ))
}

/// Gives every pod and node that has one IPv4 address its IPv6 twin as well.
pub fn dual_stack(c: &mut Cluster) {
    let add = |ips: &mut Vec<IpAddr>| {
        if let [IpAddr::V4(a)] = ips[..] {
            ips.push(six(a));
        }
    };
    c.pods.values_mut().for_each(|p| add(&mut p.ips));
    c.nodes.values_mut().for_each(|n| add(&mut n.ips));
}

/// Pod x/a of [`two_pods`].
pub const POD_A: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 11);
/// Pod y/b of [`two_pods`].
pub const POD_B: Ipv4Addr = Ipv4Addr::new(10, 244, 2, 11);

pub fn labels(p: &[(&str, &str)]) -> BTreeMap<String, String> {
    p.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect()
}

/// Node n1 (172.18.0.1) running pods x/a ([`POD_A`]) and y/b ([`POD_B`]), each labelled
/// `pod: <name>`, in namespaces labelled `ns: <name>`.
pub fn two_pods() -> Cluster {
    let mut c = Cluster::default();
    c.upsert_node(Node {
        name: "n1".into(),
        labels: labels(&[]),
        ips: vec![IpAddr::V4(Ipv4Addr::new(172, 18, 0, 1))],
    });
    for ns in ["x", "y"] {
        c.upsert_namespace(Namespace {
            name: ns.into(),
            labels: labels(&[("ns", ns)]),
        });
    }
    for (ns, name, ip) in [("x", "a", POD_A), ("y", "b", POD_B)] {
        c.upsert_pod(Pod {
            namespace: ns.into(),
            name: name.into(),
            labels: labels(&[("pod", name)]),
            ips: vec![IpAddr::V4(ip)],
            node: Some("n1".into()),
            host_network: false,
            ports: vec![],
        });
    }
    c
}

/// One incremental compiler per named node, each with the node's context.
pub fn compilers(
    nodes: &[&str],
) -> Vec<(
    weft_policy::desired::NodeContext,
    weft_policy::desired::Incremental,
)> {
    nodes
        .iter()
        .map(|n| {
            let ctx = weft_policy::desired::NodeContext {
                node_name: (*n).into(),
                log_group: Some(3),
            };
            (ctx, weft_policy::desired::Incremental::default())
        })
        .collect()
}
