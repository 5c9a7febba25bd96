//! The compiled tables against the matcher: for every case step, every node's desired
//! table is run on the first packet of every connection between the world's pods, nodes
//! and an outside address, through the forward hooks the packet crosses (the client's
//! node for a pod client, the server's node for a pod server), and must agree with
//! `check`. This is what keeps the nft data and the matcher one decision.

mod common;

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};

use weft_policy::cases::Service;
use weft_policy::desired::MASQ_BIT;
use weft_policy::desired::{desired, selects_no_pod, NodeContext, FAMILY, TABLE};
use weft_policy::table_eval::{forward, forward_marked, Outcome, Packet};
use weft_policy::{check, Cluster, Endpoint, Protocol};

const OUTSIDE: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 7);

/// Whether this is the kind of endpoint whose traffic the pod's node filters.
fn is_pod(e: &Endpoint) -> bool {
    matches!(e, Endpoint::Pod { .. })
}

/// Endpoints (as named, as asked of the matcher) with their address of the family and
/// the node they sit on. In the IPv6 run pods are asked about by address, so the matcher
/// sees their IPv6 one.
type Ep = (Endpoint, Endpoint, IpAddr, Option<String>);

fn endpoints(c: &Cluster, v6: bool) -> Vec<Ep> {
    let pick = |ips: &[IpAddr]| {
        ips.iter()
            .copied()
            .find(|a| a.is_ipv6() == v6)
            .expect("an address of the family")
    };
    let mut out = Vec::new();
    for p in c.pods.values() {
        let a = pick(&p.ips);
        let named = Endpoint::pod(&p.namespace, &p.name);
        let asked = if v6 { Endpoint::Ip(a) } else { named.clone() };
        out.push((named, asked, a, p.node.clone()));
    }
    for n in c.nodes.values() {
        let a = pick(&n.ips);
        let named = Endpoint::Node(n.name.clone());
        let asked = if v6 { Endpoint::Ip(a) } else { named.clone() };
        out.push((named, asked, a, Some(n.name.clone())));
    }
    let outside = if v6 {
        common::six(OUTSIDE)
    } else {
        IpAddr::V4(OUTSIDE)
    };
    let e = Endpoint::Ip(outside);
    out.push((e.clone(), e, outside, None));
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
    let mut dropped6 = 0usize;
    // Tables that select no pod: the shortcut above must have been exercised.
    let mut unselected = 0usize;
    for ((file, case), v6) in common::cases(&world)
        .into_iter()
        .flat_map(|c| [(c.clone(), false), (c, true)])
    {
        let mut cluster = world.cluster().unwrap();
        for (i, step) in case.steps.iter().enumerate() {
            step.apply_to(&mut cluster).unwrap();
            if v6 {
                common::dual_stack(&mut cluster);
            }
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
            unselected += tables.values().filter(|t| selects_no_pod(t)).count();
            let eps = endpoints(&cluster, v6);
            for (s, s_asked, sip, snode) in &eps {
                for (d, d_asked, dip, dnode) in &eps {
                    let pod = is_pod;
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
                        let want = check(&cluster, s_asked, d_asked, svc.port, svc.protocol)
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
                                if selects_no_pod(&tables[h]) {
                                    // The agent skips cutting flows on such a table.
                                    failures.push(format!(
                                        "{file} step {i}: {s} -> {d} {svc}: dropped on {h}, \
                                         whose table selects no pod"
                                    ));
                                }
                                break;
                            }
                        }
                        // weft-proxy's masquerade bit on the packet changes nothing.
                        let marked = hops.iter().all(|h| {
                            !matches!(
                                forward_marked(&tables[h], &pkt, MASQ_BIT),
                                Outcome::Dropped { .. }
                            )
                        });
                        if marked != got {
                            failures.push(format!(
                                "{file} step {i}: {s} -> {d} {svc}: the masquerade bit changes the verdict"
                            ));
                        }
                        checked += 1;
                        if v6 && !got {
                            dropped6 += 1;
                        }
                        if got != want {
                            let dec =
                                check(&cluster, s_asked, d_asked, svc.port, svc.protocol).unwrap();
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
    assert!(checked > 20_000, "only {checked} packets checked");
    assert!(unselected > 0, "no case step left a node's pods unselected");
    assert!(
        dropped6 > 1_000,
        "the IPv6 maps dropped only {dropped6} packets"
    );
    assert!(
        failures.is_empty(),
        "{} disagreements:\n{}",
        failures.len(),
        failures[..failures.len().min(40)].join("\n")
    );
}
