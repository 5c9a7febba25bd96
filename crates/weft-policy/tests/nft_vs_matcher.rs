//! The compiled tables against the matcher: for every case step, every node's desired
//! table is run on the first packet of every connection between the world's pods, nodes
//! and an outside address, through the forward hooks the packet crosses (the client's
//! node for a pod client, the server's node for a pod server), and must agree with
//! `check`. This is what keeps the nft data and the matcher one decision.

mod common;

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};

use weft_policy::cases::Service;
use weft_policy::desired::{desired, NodeContext, FAMILY, TABLE};
use weft_policy::table_eval::{forward, Outcome, Packet};
use weft_policy::{check, Cluster, Endpoint, Protocol};

const OUTSIDE: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 7);

/// An endpoint with its address and the node it sits on.
fn endpoints(c: &Cluster) -> Vec<(Endpoint, Ipv4Addr, Option<String>)> {
    let v4 = |ips: &[IpAddr]| {
        ips.iter().find_map(|a| match a {
            IpAddr::V4(a) => Some(*a),
            _ => None,
        })
    };
    let mut out = Vec::new();
    for p in c.pods.values() {
        out.push((
            Endpoint::pod(&p.namespace, &p.name),
            v4(&p.ips).unwrap(),
            p.node.clone(),
        ));
    }
    for n in c.nodes.values() {
        out.push((
            Endpoint::Node(n.name.clone()),
            v4(&n.ips).unwrap(),
            Some(n.name.clone()),
        ));
    }
    out.push((Endpoint::Ip(IpAddr::V4(OUTSIDE)), OUTSIDE, None));
    out
}

#[test]
fn compiled_tables_agree_with_the_matcher() {
    let world = common::world();
    let mut services = world.services().unwrap();
    services.push(Service {
        protocol: Protocol::Tcp,
        port: 8080,
    });
    services.push(Service {
        protocol: Protocol::Other(1),
        port: 0,
    });
    let mut failures = Vec::new();
    let mut checked = 0usize;
    for (file, case) in common::cases(&world) {
        let mut cluster = world.cluster().unwrap();
        for (i, step) in case.steps.iter().enumerate() {
            step.apply_to(&mut cluster).unwrap();
            let tables: BTreeMap<String, weft_nft::Table> = cluster
                .nodes
                .keys()
                .map(|n| {
                    let ctx = NodeContext {
                        node_name: n.clone(),
                        log_group: None,
                    };
                    let rs = desired(&cluster, &ctx);
                    (n.clone(), rs.table(FAMILY, TABLE).unwrap().clone())
                })
                .collect();
            let eps = endpoints(&cluster);
            for (s, sip, snode) in &eps {
                for (d, dip, dnode) in &eps {
                    let pod = |e: &Endpoint| matches!(e, Endpoint::Pod { .. });
                    if s == d || (!pod(s) && !pod(d)) {
                        continue;
                    }
                    // Forward hooks crossed: the client's node if the client is a pod,
                    // the server's if the server is a pod (once if they are the same).
                    let mut hops = Vec::new();
                    if pod(s) {
                        hops.extend(snode.clone());
                    }
                    if pod(d) && dnode != snode {
                        hops.extend(dnode.clone());
                    }
                    if pod(d) && dnode == snode && !pod(s) {
                        // The node itself to its own pod: output hook, nothing to check.
                        hops.clear();
                    }
                    if pod(s) && !pod(d) && dnode == snode {
                        // A pod to its own node: input hook.
                        hops.clear();
                    }
                    for svc in &services {
                        let want = check(&cluster, s, d, svc.port, svc.protocol)
                            .unwrap()
                            .allowed;
                        let pkt = Packet {
                            saddr: *sip,
                            daddr: *dip,
                            proto: svc.protocol,
                            dport: svc.port,
                        };
                        let mut got = true;
                        let mut by = String::new();
                        for h in &hops {
                            if let Outcome::Dropped { chain } = forward(&tables[h], &pkt) {
                                got = false;
                                by = format!("{h} {chain}");
                                break;
                            }
                        }
                        checked += 1;
                        if got != want {
                            let dec = check(&cluster, s, d, svc.port, svc.protocol).unwrap();
                            failures.push(format!(
                                "{file} step {i}: {s} -> {d} {svc}: table {} {by}, matcher {dec}",
                                if got { "accepts" } else { "drops" },
                            ));
                        }
                    }
                }
            }
        }
    }
    assert!(checked > 10_000, "only {checked} packets checked");
    assert!(
        failures.is_empty(),
        "{} disagreements:\n{}",
        failures.len(),
        failures[..failures.len().min(40)].join("\n")
    );
}
