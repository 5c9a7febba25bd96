//! Three nodes on one LAN, each with a pod; pods talk across nodes through routes this crate
//! installs, for both backends. Needs root; every namespace is removed afterwards.

mod common;

use common::capture::{Capture, Seen};
use common::{fdb_entries, neighbours, pod_routes, talk, tool_json, Lab};
use weft_netlink::{mac_to_string, Handle};
use weft_routing::{Backend, Changes, Delta, NodeInfo, Router};

const PORT: u16 = 7000;

fn routers(lab: &mut Lab, backend: Backend) -> Vec<Router> {
    let mut out = Vec::new();
    for node in &mut lab.nodes {
        let h = Handle::in_netns(&node.ns.ns).expect("netlink in node");
        let r = Router::new(h, backend, node.info.clone(), "eth0").expect("router");
        // What the agent would publish as the weft.dev/vtep-mac annotation.
        node.info.vtep_mac = r.vtep_mac();
        out.push(r);
    }
    out
}

fn delta(added: usize, updated: usize, removed: usize) -> Delta {
    Delta {
        added,
        updated,
        removed,
    }
}

/// Per remote node exactly one route (and for vxlan one neighbour and one FDB entry), read
/// back with iproute2, and nothing else of the kind.
fn assert_kernel_state(lab: &Lab, at: usize, remotes: &[&NodeInfo], backend: Backend) {
    let node = &lab.nodes[at];
    let own = node.info.pod_cidr.expect("own podCIDR").to_string();
    let routes = pod_routes(&node.ns.name, &own);
    let mut want_routes = Vec::new();
    let mut want_neigh = Vec::new();
    let mut want_fdb = Vec::new();
    for r in remotes {
        let cidr = r.pod_cidr.expect("remote podCIDR");
        match backend {
            Backend::HostGw => want_routes.push((
                cidr.to_string(),
                r.underlay_ip.to_string(),
                "eth0".to_string(),
                "87".to_string(),
                false,
            )),
            Backend::Vxlan { .. } => {
                let gw = cidr.network().to_string();
                let mac = mac_to_string(&r.vtep_mac.expect("remote VTEP MAC"));
                want_routes.push((
                    cidr.to_string(),
                    gw.clone(),
                    "weft.1".to_string(),
                    "87".to_string(),
                    true,
                ));
                want_neigh.push((gw, mac.clone(), true));
                want_fdb.push((mac, r.underlay_ip.to_string()));
            }
        }
    }
    want_routes.sort();
    want_neigh.sort();
    want_fdb.sort();
    let name = &node.info.name;
    assert_eq!(routes, want_routes, "routes on {name}");
    if matches!(backend, Backend::Vxlan { .. }) {
        assert_eq!(
            neighbours(&node.ns.name, "weft.1"),
            want_neigh,
            "neighbours on {name}"
        );
        assert_eq!(
            fdb_entries(&node.ns.name, "weft.1"),
            want_fdb,
            "fdb on {name}"
        );
    }
}

fn assert_quiet(c: &Changes) {
    assert_eq!(c.total(), 0, "a repeated sync changed something: {c:?}");
    assert!(c.refused.is_empty(), "{c:?}");
}

fn cross_node_scenario(test: &str, backend: Backend) {
    let mut lab = Lab::new(test, 3);
    let mut routers = routers(&mut lab, backend);
    let all = lab.infos();
    let is_vxlan = matches!(backend, Backend::Vxlan { .. });
    let overlay = usize::from(is_vxlan) * 2;

    for r in &mut routers {
        let c = r.sync(&all).expect("first sync");
        assert_eq!(c.routes, delta(2, 0, 0), "{c:?}");
        assert_eq!(c.neighbours, delta(overlay, 0, 0), "{c:?}");
        assert_eq!(c.fdb, delta(overlay, 0, 0), "{c:?}");
        assert!(c.refused.is_empty() && c.waiting.is_empty(), "{c:?}");
    }

    // pod on node-1 -> pod on node-3, watched on node-1's LAN port.
    let (pod1, pod3) = (lab.nodes[0].pod_ip(), lab.nodes[2].pod_ip());
    let wire = Capture::start(&lab.lan, "n1");
    let listener = common::listen(&lab.nodes[2].pod, pod3, PORT);
    let peer = talk(&lab.nodes[0].pod, listener, pod3, PORT);
    assert_eq!(
        peer.ip(),
        pod1,
        "the server must see the client pod's IP (no NAT)"
    );
    let seen = wire.find_tcp(pod1, pod3).expect("the SYN crossed the LAN");
    match backend {
        Backend::HostGw => assert_eq!(
            seen,
            Seen::Plain {
                src: pod1,
                dst: pod3
            }
        ),
        Backend::Vxlan { .. } => assert_eq!(
            seen,
            Seen::Vxlan {
                outer_src: lab.nodes[0].info.underlay_ip,
                outer_dst: lab.nodes[2].info.underlay_ip,
                port: 8472,
                vni: 1,
                inner_src: pod1,
                inner_dst: pod3,
            }
        ),
    }

    for r in &mut routers {
        assert_quiet(&r.sync(&all).expect("second sync"));
    }
    for (i, node) in lab.nodes.iter().enumerate() {
        let remotes: Vec<&NodeInfo> = all.iter().filter(|n| n.name != node.info.name).collect();
        assert_kernel_state(&lab, i, &remotes, backend);
    }

    // node-3 leaves: the others withdraw exactly its entries.
    let without_3: Vec<NodeInfo> = all[..2].to_vec();
    for (i, r) in routers.iter_mut().enumerate().take(2) {
        let c = r.sync(&without_3).expect("sync without node-3");
        assert_eq!(c.routes, delta(0, 0, 1), "node-{}: {c:?}", i + 1);
        assert_eq!(c.neighbours, delta(0, 0, overlay / 2), "{c:?}");
        assert_eq!(c.fdb, delta(0, 0, overlay / 2), "{c:?}");
        let other = &all[1 - i];
        assert_kernel_state(&lab, i, &[other], backend);
    }
    let refused = common::connect(&lab.nodes[0].pod, pod3, PORT);
    assert!(
        refused.is_err(),
        "pod on node-3 still reachable after node-3 was withdrawn"
    );
    // ... while node-2's pod still is.
    let pod2 = lab.nodes[1].pod_ip();
    let listener = common::listen(&lab.nodes[1].pod, pod2, PORT);
    assert_eq!(talk(&lab.nodes[0].pod, listener, pod2, PORT).ip(), pod1);

    // Teardown leaves no route of ours and, for vxlan, no device.
    for r in routers {
        r.teardown().expect("teardown");
    }
    for node in &lab.nodes {
        let own = node.info.pod_cidr.unwrap().to_string();
        assert!(
            pod_routes(&node.ns.name, &own).is_empty(),
            "{}",
            node.ns.name
        );
        let links = tool_json("ip", &node.ns.name, &["link", "show"]);
        assert!(
            common::items(&links)
                .iter()
                .all(|l| l["ifname"] != "weft.1"),
            "{links}"
        );
    }
}

#[test]
fn host_gw_routes_pods_across_nodes() {
    cross_node_scenario("hgw", Backend::HostGw);
}

#[test]
fn vxlan_routes_pods_across_nodes() {
    cross_node_scenario("vx", Backend::parse("vxlan").unwrap());
}

#[test]
fn vxlan_device_is_what_flannel_makes() {
    let mut lab = Lab::new("vxdev", 1);
    let routers = routers(&mut lab, Backend::parse("vxlan").unwrap());
    let ns = &lab.nodes[0].ns.name;
    let dev = &common::items(&tool_json(
        "ip",
        ns,
        &["-d", "addr", "show", "dev", "weft.1"],
    ))[0];
    let info = &dev["linkinfo"]["info_data"];
    assert_eq!(dev["linkinfo"]["info_kind"], "vxlan", "{dev}");
    assert_eq!(info["id"], 1, "{dev}");
    assert_eq!(info["port"], 8472, "{dev}");
    assert_eq!(info["local"], "192.168.1.2", "{dev}");
    assert_eq!(info["learning"], false, "{dev}");
    assert_eq!(dev["mtu"], 1450, "eth0 has MTU 1500: {dev}");
    assert_eq!(
        dev["address"].as_str(),
        routers[0].vtep_mac().map(|m| mac_to_string(&m)).as_deref()
    );
    let v4: Vec<String> = common::items(&dev["addr_info"])
        .iter()
        .filter(|a| a["family"] == "inet")
        .map(|a| format!("{}/{}", a["local"].as_str().unwrap_or(""), a["prefixlen"]))
        .collect();
    assert_eq!(v4, vec!["10.244.1.0/32"], "{dev}");
    assert!(
        common::items(&dev["flags"]).iter().any(|f| f == "UP"),
        "{dev}"
    );
}

#[test]
fn vxlan_device_is_adopted_or_recreated() {
    let mut lab = Lab::new("adopt", 1);
    let vxlan = Backend::parse("vxlan").unwrap();
    let info = lab.nodes[0].info.clone();
    let mut h = lab.nodes[0].ns.handle();

    // A restart finds its own device: same index and MAC, MTU and address repaired.
    let first = routers(&mut lab, vxlan).remove(0);
    let mac = first.vtep_mac();
    drop(first);
    let dev = h.link_by_name("weft.1").unwrap().expect("weft.1");
    h.set_mtu(dev.index, 1300).unwrap();
    h.add_addr(dev.index, "10.244.9.0/32".parse().unwrap())
        .unwrap();
    let again = Router::new(lab.nodes[0].ns.handle(), vxlan, info.clone(), "eth0").unwrap();
    assert_eq!(again.vtep_mac(), mac);
    let now = h.link_by_name("weft.1").unwrap().expect("weft.1");
    assert_eq!((now.index, now.mtu), (dev.index, 1450));
    let addrs: Vec<String> = h
        .addrs(Some(now.index))
        .unwrap()
        .iter()
        .filter(|a| a.net.addr().is_ipv4())
        .map(|a| a.net.to_string())
        .collect();
    assert_eq!(addrs, vec!["10.244.1.0/32"]);
    drop(again);

    // A device with another port cannot be fixed in place: it is made anew on 8472.
    h.delete_link(now.index).unwrap();
    let mut spec = weft_netlink::VxlanSpec::new("weft.1", 1, info.underlay_ip);
    spec.port = 4789;
    h.create_vxlan(&spec).unwrap();
    let r = Router::new(lab.nodes[0].ns.handle(), vxlan, info, "eth0").unwrap();
    let made = h.link_by_name("weft.1").unwrap().expect("weft.1");
    assert_eq!(made.vxlan.expect("vxlan info").port, 8472);
    assert_eq!(r.vtep_mac(), made.mac);
}

#[test]
fn vxlan_node_changing_ip_or_mac_updates_its_entries() {
    let mut lab = Lab::new("move", 2);
    let vxlan = Backend::parse("vxlan").unwrap();
    let mut rs = routers(&mut lab, vxlan);
    let mut all = lab.infos();
    rs[0].sync(&all).unwrap();

    all[1].underlay_ip = "192.168.1.50".parse().unwrap();
    let c = rs[0].sync(&all).unwrap();
    assert_eq!(
        (c.routes, c.neighbours, c.fdb),
        (delta(0, 0, 0), delta(0, 0, 0), delta(0, 1, 0)),
        "{c:?}"
    );
    assert_kernel_state(&lab, 0, &[&all[1]], vxlan);

    all[1].vtep_mac = Some([0x0a, 0x58, 0, 0, 0, 0x42]);
    let c = rs[0].sync(&all).unwrap();
    // New MAC: the neighbour is rewritten, the old MAC's FDB entry goes, the new one comes.
    assert_eq!(
        (c.routes, c.neighbours, c.fdb),
        (delta(0, 0, 0), delta(0, 1, 0), delta(1, 0, 1)),
        "{c:?}"
    );
    assert_kernel_state(&lab, 0, &[&all[1]], vxlan);
    assert_quiet(&rs[0].sync(&all).unwrap());
}

#[test]
fn host_gw_refuses_a_node_off_the_segment() {
    let mut lab = Lab::new("seg", 2);
    let mut rs = routers(&mut lab, Backend::HostGw);
    let mut all = lab.infos();
    all.push(NodeInfo {
        name: "node-4".into(),
        underlay_ip: "10.0.0.5".parse().unwrap(),
        pod_cidr: Some("10.244.4.0/24".parse().unwrap()),
        vtep_mac: None,
    });
    let c = rs[0]
        .sync(&all)
        .expect("the on-segment nodes are still routed");
    assert_eq!(c.routes, delta(1, 0, 0), "{c:?}");
    assert_eq!(c.refused.len(), 1, "{c:?}");
    let msg = c.refused[0].to_string();
    assert!(
        msg.starts_with("route 10.244.4.0/24 via 10.0.0.5 for node node-4:")
            && msg.contains("L2 segment")
            && msg.contains("192.168.1.0/24"),
        "{msg}"
    );
    assert_kernel_state(&lab, 0, &[&all[1]], Backend::HostGw);
}

#[test]
fn routes_not_made_by_weft_are_left_alone() {
    let mut lab = Lab::new("foreign", 2);
    let mut rs = routers(&mut lab, Backend::HostGw);
    let all = lab.infos();
    let ns = lab.nodes[0].ns.name.clone();
    let ip = |args: &[&str]| {
        let ok = std::process::Command::new("ip")
            .args(["-n", &ns])
            .args(args)
            .status()
            .expect("run ip")
            .success();
        assert!(ok, "ip {args:?}");
    };
    // Someone else's route to node-2's subnet, and an unrelated one.
    ip(&["route", "add", "10.244.2.0/24", "via", "192.168.1.3"]);
    ip(&["route", "add", "10.99.0.0/16", "via", "192.168.1.3"]);

    let err = rs[0].sync(&all).expect_err("a foreign route is in the way");
    let msg = err.to_string();
    assert!(
        msg.contains("route 10.244.2.0/24 via 192.168.1.3 for node node-2")
            && msg.contains("did not make"),
        "{msg}"
    );
    let before = pod_routes(&ns, "10.244.1.0/24");
    assert_eq!(
        before,
        vec![(
            "10.244.2.0/24".into(),
            "192.168.1.3".into(),
            "eth0".into(),
            "boot".into(),
            false
        )]
    );
    rs.remove(0).teardown().unwrap();
    let routes = common::items(&tool_json("ip", &ns, &["route"]));
    for dst in ["10.244.2.0/24", "10.99.0.0/16"] {
        assert!(
            routes.iter().any(|r| r["dst"] == dst),
            "{dst} gone: {routes:?}"
        );
    }
}

#[test]
fn switching_backends_replaces_routes_and_removes_the_overlay() {
    let mut lab = Lab::new("switch", 2);
    let vxlan = Backend::parse("vxlan").unwrap();
    let mut rs = routers(&mut lab, vxlan);
    let all = lab.infos();
    for r in &mut rs {
        r.sync(&all).unwrap();
    }
    drop(rs);

    // Every agent restarts with host-gw.
    let mut rs = routers(&mut lab, Backend::HostGw);
    for (i, r) in rs.iter_mut().enumerate() {
        let c = r.sync(&all).unwrap();
        // Deleting weft.1 took its routes, neighbours and FDB entries along.
        assert_eq!(c.routes, delta(1, 0, 0), "{c:?}");
        assert_eq!(c.neighbours.total() + c.fdb.total(), 0, "{c:?}");
        assert_kernel_state(&lab, i, &[&all[1 - i]], Backend::HostGw);
        let links = tool_json("ip", &lab.nodes[i].ns.name, &["link", "show"]);
        assert!(
            common::items(&links)
                .iter()
                .all(|l| l["ifname"] != "weft.1"),
            "{links}"
        );
    }
    let (pod1, pod2) = (lab.nodes[0].pod_ip(), lab.nodes[1].pod_ip());
    let listener = common::listen(&lab.nodes[1].pod, pod2, PORT);
    assert_eq!(talk(&lab.nodes[0].pod, listener, pod2, PORT).ip(), pod1);
}

#[test]
fn host_gw_node_changing_ip_updates_its_route() {
    let mut lab = Lab::new("hgwmove", 2);
    let mut rs = routers(&mut lab, Backend::HostGw);
    let mut all = lab.infos();
    rs[0].sync(&all).unwrap();
    all[1].underlay_ip = "192.168.1.50".parse().unwrap();
    let c = rs[0].sync(&all).unwrap();
    assert_eq!(c.routes, delta(0, 1, 0), "{c:?}");
    assert_kernel_state(&lab, 0, &[&all[1]], Backend::HostGw);
    assert_quiet(&rs[0].sync(&all).unwrap());
}

#[test]
fn bad_node_configuration_is_named() {
    let lab = Lab::new("config", 1);
    let me = lab.nodes[0].info.clone();
    let handle = || lab.nodes[0].ns.handle();
    let vxlan = Backend::parse("vxlan").unwrap();
    let msg = |r: weft_routing::Result<Router>| match r {
        Ok(_) => panic!("accepted"),
        Err(e) => e.to_string(),
    };
    assert_eq!(
        msg(Router::new(handle(), Backend::HostGw, me.clone(), "eth9")),
        "node node-1: underlay interface eth9 not found"
    );
    let moved = NodeInfo {
        underlay_ip: "192.168.1.77".parse().unwrap(),
        ..me.clone()
    };
    assert_eq!(
        msg(Router::new(handle(), vxlan, moved, "eth0")),
        "node node-1: underlay IP 192.168.1.77 is not an address of eth0"
    );
    let unleased = NodeInfo {
        pod_cidr: None,
        ..me.clone()
    };
    assert!(msg(Router::new(handle(), vxlan, unleased.clone(), "eth0")).contains("no podCIDR"));
    // host-gw makes no device, so it can run before the lease; nothing was left behind.
    let mut r = Router::new(handle(), Backend::HostGw, unleased, "eth0").unwrap();
    assert_eq!(r.vtep_mac(), None);
    let c = r.sync(&lab.infos()).unwrap();
    assert_eq!(c.total(), 0);
    assert_eq!(
        c.to_string(),
        "routes +0 ~0 -0, neighbours +0 ~0 -0, fdb +0 ~0 -0, 0 refused, 0 waiting"
    );
    let links = tool_json("ip", &lab.nodes[0].ns.name, &["link", "show"]);
    assert!(
        common::items(&links)
            .iter()
            .all(|l| l["ifname"] != "weft.1"),
        "{links}"
    );
}
