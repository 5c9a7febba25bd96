//! Links in real namespaces: bridge, veth across namespaces, vxlan, dummy, state changes,
//! and the errors the kernel gives back. Run as root.

mod common;

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use common::{ip_json, items, TestNs};
use weft_netlink::{mac_to_string, Error, VxlanSpec};

#[test]
fn veth_peer_lands_in_other_namespace_under_a_name_taken_here() {
    let host = TestNs::new("veth-h");
    let pod = TestNs::new("veth-p");
    let mut h = host.handle();
    let mut p = pod.handle();

    // The "host" has its own eth0 (a bridge: this kernel may lack the dummy driver); the
    // pod's eth0 must still be creatable.
    let host_eth0 = h.create_bridge("eth0", None).unwrap();
    let br = h.create_bridge("br0", Some(1400)).unwrap();
    assert_eq!(br.kind.as_deref(), Some("bridge"));
    assert_eq!(br.mtu, 1400);

    let veth = h
        .create_veth("veth0a1b", "eth0", &pod.ns, Some(1400))
        .unwrap();
    assert_eq!(veth.kind.as_deref(), Some("veth"));
    assert_eq!(veth.mtu, 1400);
    assert!(
        veth.link_netnsid.is_some(),
        "peer should be in another namespace"
    );

    let eth0_here = h.link_by_name("eth0").unwrap().unwrap();
    assert_eq!(eth0_here.index, host_eth0.index);
    assert_eq!(eth0_here.kind.as_deref(), Some("bridge"));

    let pod_eth0 = p
        .link_by_name("eth0")
        .unwrap()
        .expect("peer in pod namespace");
    assert_eq!(pod_eth0.kind.as_deref(), Some("veth"));
    assert_eq!(pod_eth0.mtu, 1400);
    assert_eq!(veth.link, Some(pod_eth0.index), "IFLA_LINK names the peer");

    // Independently: iproute2 sees a veth eth0 in the pod namespace.
    let shown = ip_json(&pod.name, &["-d", "link", "show", "dev", "eth0"]);
    assert_eq!(shown[0]["linkinfo"]["info_kind"], "veth");
    assert_eq!(shown[0]["mtu"], 1400);

    // Enslave, raise both ends, and wait for carrier through notifications.
    h.set_master(veth.index, br.index).unwrap();
    h.set_up(br.index).unwrap();
    h.set_up(veth.index).unwrap();
    p.set_up(pod_eth0.index).unwrap();
    let up = h.wait_oper_up(veth.index, Duration::from_secs(10)).unwrap();
    assert!(up.up && up.oper_up);
    assert_eq!(up.master, Some(br.index));

    h.set_hairpin(veth.index, true).unwrap();
    let back = h.link_by_index(veth.index).unwrap().unwrap();
    assert_eq!(back.hairpin, Some(true));
    let shown = ip_json(&host.name, &["-d", "link", "show", "dev", "veth0a1b"]);
    assert_eq!(shown[0]["master"], "br0");
    assert_eq!(shown[0]["linkinfo"]["info_slave_data"]["hairpin"], true);
    h.set_hairpin(veth.index, false).unwrap();
    assert_eq!(
        h.link_by_index(veth.index).unwrap().unwrap().hairpin,
        Some(false)
    );

    let mac = [0x0a, 0x58, 0x0a, 0xf4, 0x01, 0x07];
    p.set_mac(pod_eth0.index, mac).unwrap();
    p.set_mtu(pod_eth0.index, 1300).unwrap();
    let back = p.link_by_name("eth0").unwrap().unwrap();
    assert_eq!(back.mac, Some(mac));
    assert_eq!(back.mtu, 1300);
    let shown = ip_json(&pod.name, &["link", "show", "dev", "eth0"]);
    assert_eq!(shown[0]["address"], mac_to_string(&mac));

    // Renaming onto a taken name fails, and the error says which link and what.
    let err = p.set_name(pod_eth0.index, "lo").unwrap_err();
    assert!(err.is_exists(), "{err}");
    assert!(err.to_string().contains("(eth0) to lo"), "{err}");
    p.set_name(pod_eth0.index, "net0").unwrap();
    assert_eq!(
        p.link_by_index(pod_eth0.index).unwrap().unwrap().name,
        "net0"
    );

    // Releasing from the bridge and going down read back too.
    h.set_master(veth.index, 0).unwrap();
    h.set_down(veth.index).unwrap();
    let back = h.link_by_index(veth.index).unwrap().unwrap();
    assert_eq!(back.master, None);
    assert!(!back.up);

    // Deleting one end removes the pair.
    h.delete_link(veth.index).unwrap();
    assert!(p.link_by_name("net0").unwrap().is_none());
    assert!(
        h.link_by_name("eth0").unwrap().is_some(),
        "host eth0 untouched"
    );
}

#[test]
fn kernel_errors_are_classified_and_name_the_object() {
    let t = TestNs::new("errors");
    let other = TestNs::new("errors-o");
    let mut h = t.handle();

    h.create_bridge("cbr0", None).unwrap();
    let err = h.create_bridge("cbr0", None).unwrap_err();
    assert!(err.is_exists(), "{err}");
    assert!(!err.is_not_found());
    let text = err.to_string();
    assert!(text.starts_with("create bridge cbr0: "), "{text}");
    assert!(text.contains("os error 17"), "{text}");

    // The peer name is taken in the peer namespace: creation fails, and nothing is left.
    other.handle().create_bridge("eth0", None).unwrap();
    let err = h
        .create_veth("vethdup", "eth0", &other.ns, None)
        .unwrap_err();
    assert!(err.is_exists(), "{err}");
    assert!(
        err.to_string().contains("create veth vethdup (peer eth0)"),
        "{err}"
    );
    assert!(h.link_by_name("vethdup").unwrap().is_none());

    let err = h.delete_link(999_999).unwrap_err();
    assert!(err.is_not_found(), "{err}");
    assert!(!err.is_exists());
    let err = h.set_up(999_999).unwrap_err();
    assert!(err.is_not_found(), "{err}");
    assert!(err.to_string().contains("link 999999"), "{err}");

    assert!(!h.delete_link_by_name("nosuchlink").unwrap());
    assert!(h.link_by_name("nosuchlink").unwrap().is_none());
    assert!(h.link_by_index(999_999).unwrap().is_none());
    assert!(h.delete_link_by_name("cbr0").unwrap());
    assert!(h.link_by_name("cbr0").unwrap().is_none());

    // Bad input is refused before it reaches the kernel, naming the field.
    let err = h
        .create_bridge("name-too-long-for-linux", None)
        .unwrap_err();
    assert!(matches!(err, Error::Invalid { .. }), "{err}");
    assert!(err.to_string().contains("interface name"), "{err}");
}

#[test]
fn vxlan_device_reads_back_its_parameters() {
    let t = TestNs::new("vxlan");
    let mut h = t.handle();
    let underlay = h.create_bridge("ul0", None).unwrap();
    let local = IpAddr::V4(Ipv4Addr::new(192, 168, 1, 2));

    let spec = VxlanSpec {
        port: 8472,
        underlay: Some(underlay.index),
        mtu: Some(1450),
        ..VxlanSpec::new("weft.1", 4242, local)
    };
    let vx = h.create_vxlan(&spec).unwrap();
    assert_eq!(vx.kind.as_deref(), Some("vxlan"));
    assert_eq!(vx.mtu, 1450);
    let info = vx.vxlan.expect("vxlan info");
    assert_eq!(info.vni, 4242);
    assert_eq!(info.local, Some(local));
    assert_eq!(info.port, 8472);
    assert_eq!(info.underlay, Some(underlay.index));
    assert!(!info.learning);

    let shown = ip_json(&t.name, &["-d", "link", "show", "dev", "weft.1"]);
    let data = &shown[0]["linkinfo"]["info_data"];
    assert_eq!(data["id"], 4242);
    assert_eq!(data["local"], "192.168.1.2");
    assert_eq!(data["port"], 8472);
    assert_eq!(data["learning"], false);

    let err = h.create_vxlan(&spec).unwrap_err();
    assert!(err.is_exists(), "{err}");
}

#[test]
fn move_to_netns_renames_in_one_step() {
    let a = TestNs::new("move-a");
    let b = TestNs::new("move-b");
    let mut ha = a.handle();
    let mut hb = b.handle();
    // Same name on both sides: only the rename on the way makes the move possible.
    // (Bridges are netns-local, so the link to move is one end of a veth pair.)
    hb.create_bridge("mv0", None).unwrap();
    let v = ha.create_veth("mv0", "mv0peer", &a.ns, None).unwrap();
    ha.move_to_netns(v.index, &b.ns, Some("moved0")).unwrap();
    assert!(ha.link_by_name("mv0").unwrap().is_none());
    assert!(ha.link_by_name("mv0peer").unwrap().is_some());
    let moved = hb.link_by_name("moved0").unwrap().expect("moved link");
    assert_eq!(moved.kind.as_deref(), Some("veth"));
    let err = ha.move_to_netns(v.index, &b.ns, None).unwrap_err();
    assert!(err.is_not_found(), "{err}");
    let names: Vec<String> = items(&ip_json(&b.name, &["link", "show"]))
        .iter()
        .filter_map(|l| l["ifname"].as_str().map(str::to_string))
        .collect();
    assert!(names.contains(&"moved0".to_string()), "{names:?}");
    assert!(names.contains(&"mv0".to_string()), "{names:?}");
}

#[test]
fn wait_oper_up_times_out_while_the_peer_is_down() {
    let a = TestNs::new("wait-a");
    let b = TestNs::new("wait-b");
    let mut h = a.handle();
    let v = h.create_veth("vwait0", "vwait1", &b.ns, None).unwrap();
    h.set_up(v.index).unwrap();
    let err = h
        .wait_oper_up(v.index, Duration::from_millis(300))
        .unwrap_err();
    assert!(matches!(err, Error::Timeout { .. }), "{err}");

    // Once the peer is up, the same wait succeeds.
    let mut hb = b.handle();
    let peer = hb.link_by_name("vwait1").unwrap().unwrap();
    hb.set_up(peer.index).unwrap();
    let up = h.wait_oper_up(v.index, Duration::from_secs(10)).unwrap();
    assert!(up.oper_up);

    let links = h.links().unwrap();
    assert!(links.iter().any(|l| l.name == "lo"));
    assert!(links.iter().any(|l| l.name == "vwait0" && l.oper_up));
}

#[test]
fn detached_delete_returns_first_and_the_link_goes_soon_after() {
    let host = TestNs::new("detach-h");
    let pod = TestNs::new("detach-p");
    let mut h = host.handle();
    let mut p = pod.handle();
    let veth = h.create_veth("vdetach0", "eth0", &pod.ns, None).unwrap();
    let eth0 = p.link_by_name("eth0").unwrap().unwrap();
    p.delete_link_detached(eth0.index).unwrap();
    // The kernel finishes in the background; both ends go (a veth pair dies together).
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while h.link_by_index(veth.index).unwrap().is_some()
        || p.link_by_index(eth0.index).unwrap().is_some()
    {
        assert!(
            std::time::Instant::now() < deadline,
            "veth still there 10 s after a detached delete"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    // A link that does not exist: the background request fails quietly, the caller is fine.
    p.delete_link_detached(eth0.index).unwrap();
}
