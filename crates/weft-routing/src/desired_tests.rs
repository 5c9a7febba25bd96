use super::*;

fn node(name: &str, ip: &str, cidr: Option<&str>, mac: Option<u8>) -> NodeInfo {
    NodeInfo {
        name: name.to_string(),
        underlay_ip: ip.parse().unwrap(),
        pod_cidr: cidr.map(|c| c.parse().unwrap()),
        vtep_mac: mac.map(|m| [0x0a, 0x58, 0, 0, 0, m]),
    }
}

fn cluster() -> Vec<NodeInfo> {
    vec![
        node("node-1", "192.168.1.2", Some("10.244.1.0/24"), Some(1)),
        node("node-2", "192.168.1.3", Some("10.244.2.0/24"), Some(2)),
        node("node-3", "192.168.1.4", Some("10.244.3.0/24"), Some(3)),
    ]
}

const VXLAN: Backend = Backend::Vxlan { vni: 1, port: 8472 };

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

fn count<'a>(names: impl Iterator<Item = &'a str>) -> std::collections::HashMap<&'a str, usize> {
    let mut m = std::collections::HashMap::new();
    for n in names {
        *m.entry(n).or_insert(0) += 1;
    }
    m
}

/// Every routed node has exactly one route, and for vxlan exactly one neighbour and one FDB
/// entry; nothing else is there.
fn assert_one_of_each(d: &Desired, backend: Backend) {
    let mut names: Vec<&str> = d.routes.iter().map(|r| r.node.as_str()).collect();
    names.sort();
    let before = names.len();
    names.dedup();
    assert_eq!(before, names.len(), "a node has two routes: {d:?}");
    let mut dsts: Vec<IpNet> = d.routes.iter().map(|r| r.dst).collect();
    dsts.sort();
    dsts.dedup();
    assert_eq!(
        dsts.len(),
        d.routes.len(),
        "two routes for one subnet: {d:?}"
    );
    match backend {
        Backend::HostGw => assert!(d.neighbours.is_empty() && d.fdb.is_empty(), "{d:?}"),
        Backend::Vxlan { .. } => {
            let neigh = count(d.neighbours.iter().map(|n| n.node.as_str()));
            let fdb = count(d.fdb.iter().map(|f| f.node.as_str()));
            for r in &d.routes {
                assert_eq!(neigh.get(r.node.as_str()), Some(&1), "{}", r.node);
                assert_eq!(fdb.get(r.node.as_str()), Some(&1), "{}", r.node);
            }
            assert_eq!(d.neighbours.len(), d.routes.len());
            assert_eq!(d.fdb.len(), d.routes.len());
        }
    }
}

#[test]
fn host_gw_routes_each_remote_subnet_via_its_node() {
    let nodes = cluster();
    let d = desired(Backend::HostGw, &nodes[0], &nodes);
    assert_eq!(
        d.routes,
        vec![
            DesiredRoute {
                node: "node-2".into(),
                dst: net("10.244.2.0/24"),
                via: ip("192.168.1.3"),
                dev: RouteDev::Underlay,
            },
            DesiredRoute {
                node: "node-3".into(),
                dst: net("10.244.3.0/24"),
                via: ip("192.168.1.4"),
                dev: RouteDev::Underlay,
            },
        ]
    );
    assert!(d.refused.is_empty() && d.waiting.is_empty(), "{d:?}");
    assert_one_of_each(&d, Backend::HostGw);
}

#[test]
fn vxlan_one_route_neighbour_and_fdb_entry_per_remote_node() {
    let nodes = cluster();
    let d = desired(VXLAN, &nodes[1], &nodes);
    assert_eq!(d.routes.len(), 2);
    assert_eq!(
        d.routes[0],
        DesiredRoute {
            node: "node-1".into(),
            dst: net("10.244.1.0/24"),
            via: ip("10.244.1.0"),
            dev: RouteDev::Vxlan,
        }
    );
    assert_eq!(
        d.neighbours[1],
        DesiredNeighbour {
            node: "node-3".into(),
            ip: ip("10.244.3.0"),
            mac: [0x0a, 0x58, 0, 0, 0, 3],
        }
    );
    assert_eq!(
        d.fdb[1],
        DesiredFdb {
            node: "node-3".into(),
            mac: [0x0a, 0x58, 0, 0, 0, 3],
            dst: ip("192.168.1.4"),
        }
    );
    assert_eq!(
        d.routes[0].describe(&VXLAN),
        "route 10.244.1.0/24 via 10.244.1.0 dev weft.1 onlink"
    );
    assert_one_of_each(&d, VXLAN);
}

#[test]
fn nodes_without_lease_or_vtep_mac_wait() {
    let mut nodes = cluster();
    nodes.push(node("node-4", "192.168.1.5", None, Some(4)));
    nodes[2].vtep_mac = None;
    let d = desired(VXLAN, &nodes[0], &nodes);
    assert_eq!(d.routes.len(), 1, "{d:?}");
    assert_eq!(d.routes[0].node, "node-2");
    let waiting: Vec<&str> = d.waiting.iter().map(|w| w.node.as_str()).collect();
    assert_eq!(waiting, vec!["node-3", "node-4"]);
    assert!(d.refused.is_empty());
    assert_one_of_each(&d, VXLAN);

    // host-gw needs no MAC: node-3 is routed, node-4 still waits for its lease.
    let d = desired(Backend::HostGw, &nodes[0], &nodes);
    assert_eq!(d.routes.len(), 2, "{d:?}");
    assert_eq!(d.waiting.len(), 1);
}

#[test]
fn two_nodes_claiming_one_pod_cidr_the_later_is_refused() {
    let mut nodes = cluster();
    nodes.push(node(
        "node-4",
        "192.168.1.5",
        Some("10.244.2.0/24"),
        Some(4),
    ));
    for backend in [Backend::HostGw, VXLAN] {
        let d = desired(backend, &nodes[0], &nodes);
        let to_2: Vec<&DesiredRoute> = d
            .routes
            .iter()
            .filter(|r| r.dst == net("10.244.2.0/24"))
            .collect();
        assert_eq!(to_2.len(), 1, "{d:?}");
        assert_eq!(to_2[0].node, "node-2");
        assert_eq!(d.refused.len(), 1, "{d:?}");
        let msg = d.refused[0].to_string();
        assert_eq!(d.refused[0].node, "node-4");
        assert!(
            msg.contains("node-4") && msg.contains("node-2") && msg.contains("10.244.2.0/24"),
            "{msg}"
        );
        assert_one_of_each(&d, backend);
    }
    // Whoever is listed first keeps the subnet.
    nodes.swap(1, 3);
    let d = desired(Backend::HostGw, &nodes[0], &nodes);
    let to_2: Vec<&str> = d
        .routes
        .iter()
        .filter(|r| r.dst == net("10.244.2.0/24"))
        .map(|r| r.node.as_str())
        .collect();
    assert_eq!(to_2, vec!["node-4"]);
}

#[test]
fn overlapping_subnets_are_refused_whichever_is_wider() {
    let mut nodes = cluster();
    nodes.push(node("wide", "192.168.1.6", Some("10.244.2.0/23"), Some(6)));
    nodes.push(node(
        "narrow",
        "192.168.1.7",
        Some("10.244.3.128/25"),
        Some(7),
    ));
    nodes.push(node("mine", "192.168.1.8", Some("10.244.1.0/25"), Some(8)));
    let d = desired(Backend::HostGw, &nodes[0], &nodes);
    let refused: Vec<&str> = d.refused.iter().map(|r| r.node.as_str()).collect();
    assert_eq!(refused, vec!["wide", "narrow", "mine"], "{d:?}");
    assert!(
        d.refused[2].reason.contains("own podCIDR"),
        "{:?}",
        d.refused[2]
    );
    assert_eq!(d.routes.len(), 2);
}

#[test]
fn duplicate_names_ips_and_macs_are_refused() {
    let mut nodes = cluster();
    nodes.push(node(
        "node-2",
        "192.168.1.9",
        Some("10.244.9.0/24"),
        Some(9),
    ));
    nodes.push(node(
        "node-5",
        "192.168.1.4",
        Some("10.244.5.0/24"),
        Some(5),
    ));
    nodes.push(node(
        "node-6",
        "192.168.1.10",
        Some("10.244.6.0/24"),
        Some(3),
    ));
    nodes.push(node(
        "node-7",
        "192.168.1.2",
        Some("10.244.7.0/24"),
        Some(7),
    ));
    nodes.push(node(
        "node-8",
        "192.168.1.11",
        Some("10.244.8.0/24"),
        Some(1),
    ));
    let d = desired(VXLAN, &nodes[0], &nodes);
    let refused: Vec<(&str, &str)> = d
        .refused
        .iter()
        .map(|r| (r.node.as_str(), r.reason.as_str()))
        .collect();
    assert_eq!(refused.len(), 5, "{refused:?}");
    assert!(refused[0].1.contains("listed twice"), "{refused:?}");
    assert!(refused[1].1.contains("node-3"), "{refused:?}");
    assert!(refused[2].1.contains("VTEP MAC"), "{refused:?}");
    assert!(refused[3].1.contains("own"), "{refused:?}");
    assert!(refused[4].1.contains("own"), "{refused:?}");
    assert_eq!(d.routes.len(), 2);
    assert_one_of_each(&d, VXLAN);
}

#[test]
fn host_bits_in_pod_cidr_are_ignored() {
    let nodes = vec![
        node("node-1", "192.168.1.2", Some("10.244.1.0/24"), Some(1)),
        node("node-2", "192.168.1.3", Some("10.244.2.7/24"), Some(2)),
    ];
    let d = desired(VXLAN, &nodes[0], &nodes);
    assert_eq!(d.routes[0].dst, net("10.244.2.0/24"));
    assert_eq!(d.routes[0].via, ip("10.244.2.0"));
}

#[test]
fn host_gw_refuses_mixed_families() {
    let nodes = vec![
        node("node-1", "192.168.1.2", Some("10.244.1.0/24"), None),
        node("node-2", "fd00::3", Some("10.244.2.0/24"), None),
        node("node-3", "fd00::4", Some("fd10:0:0:3::/64"), None),
    ];
    let d = desired(Backend::HostGw, &nodes[0], &nodes);
    assert_eq!(d.refused.len(), 1, "{d:?}");
    assert!(d.refused[0].reason.contains("vxlan"), "{d:?}");
    assert_eq!(d.routes.len(), 1);
    assert_eq!(d.routes[0].via, ip("fd00::4"));
}

#[test]
fn host_gw_gateway_off_the_segment_is_refused_clearly() {
    let mut nodes = cluster();
    nodes.push(node("node-4", "10.0.0.5", Some("10.244.4.0/24"), None));
    let mut d = desired(Backend::HostGw, &nodes[0], &nodes);
    d.refuse_off_segment(&[net("192.168.1.2/24")], "eth0");
    assert_eq!(d.routes.len(), 2, "{d:?}");
    assert!(d.routes.iter().all(|r| r.node != "node-4"));
    assert_eq!(d.refused.len(), 1);
    assert_eq!(
        d.refused[0].to_string(),
        "route 10.244.4.0/24 via 10.0.0.5 for node node-4: gateway 10.0.0.5 is not on this \
         node's L2 segment (eth0: 192.168.1.0/24); host-gw needs all nodes on one L2 segment, \
         use the vxlan backend"
    );
    // VXLAN routes are onlink on the overlay: the segment does not matter.
    let mut v = desired(VXLAN, &nodes[0], &nodes);
    v.refuse_off_segment(&[net("192.168.1.2/24")], "eth0");
    assert!(v.refused.is_empty());
}

#[test]
fn many_nodes_with_conflicts_keep_one_of_each() {
    // 60 nodes; every 7th reuses an earlier subnet, every 11th an earlier MAC.
    let mut nodes = Vec::new();
    for i in 1..=60u8 {
        let subnet = if i % 7 == 0 { i - 3 } else { i };
        let mac = if i % 11 == 0 { i - 5 } else { i };
        nodes.push(node(
            &format!("node-{i}"),
            &format!("192.168.1.{}", u16::from(i) + 1),
            Some(&format!("10.244.{subnet}.0/24")),
            Some(mac),
        ));
    }
    for backend in [Backend::HostGw, VXLAN] {
        let d = desired(backend, &nodes[0], &nodes);
        assert_one_of_each(&d, backend);
        assert_eq!(d.routes.len() + d.refused.len(), 59, "{backend}");
        assert!(d.routes.iter().all(|r| r.node != "node-7"));
    }
}

#[test]
fn thousands_of_nodes_one_of_each_and_a_late_duplicate_refused() {
    let mut nodes = Vec::new();
    for i in 1..=5000u32 {
        let [_, _, hi, lo] = i.to_be_bytes();
        nodes.push(NodeInfo {
            name: format!("node-{i}"),
            underlay_ip: IpAddr::from([172, 16, hi, lo]),
            pod_cidr: Some(net(&format!("10.{}.{lo}.0/24", 100 + u32::from(hi)))),
            vtep_mac: Some([0x0a, 0x58, 0, 0, hi, lo]),
        });
    }
    let mut late = nodes[4321].clone();
    late.name = "late".into();
    late.underlay_ip = ip("172.31.0.1");
    late.vtep_mac = Some([0x0a, 0x58, 1, 0, 0, 0]);
    nodes.push(late);
    let d = desired(VXLAN, &nodes[0], &nodes);
    assert_one_of_each(&d, VXLAN);
    assert_eq!(d.routes.len(), 4999);
    assert_eq!(d.refused.len(), 1, "{:?}", d.refused);
    assert!(d.refused[0].reason.contains("node-4322"), "{:?}", d.refused);
}
