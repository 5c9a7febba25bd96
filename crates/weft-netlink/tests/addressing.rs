//! Addresses, routes, neighbours and FDB entries: add, read back (through the API and
//! independently through iproute2), delete, and the errors for duplicates and absentees.

mod common;

use std::net::{IpAddr, Ipv4Addr};

use common::{ip_json, items, tool_json, TestNs};
use weft_netlink::{
    mac_to_string, Family, FdbEntry, Handle, IpNet, Link, Neighbour, Route, RouteScope, VxlanSpec,
    RTPROT_BOOT, RT_TABLE_MAIN,
};

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// A veth pair with both ends in the namespace and up, so routes through it are live.
fn live_link(h: &mut Handle, name: &str) -> Link {
    let ns = h.netns().try_clone().unwrap();
    let peer = format!("{name}p");
    let l = h.create_veth(name, &peer, &ns, None).unwrap();
    let p = h.link_by_name(&peer).unwrap().unwrap();
    h.set_up(p.index).unwrap();
    h.set_up(l.index).unwrap();
    l
}

#[test]
fn addresses_add_read_back_delete() {
    let t = TestNs::new("addr");
    let mut h = t.handle();
    let l = live_link(&mut h, "d0");
    let v4 = net("10.1.0.1/24");
    let v6 = net("fd00:1::1/64");

    h.add_addr(l.index, v4).unwrap();
    h.add_addr_nodad(l.index, v6).unwrap();
    let nets: Vec<IpNet> = h
        .addrs(Some(l.index))
        .unwrap()
        .iter()
        .map(|a| a.net)
        .collect();
    assert!(nets.contains(&v4), "{nets:?}");
    assert!(nets.contains(&v6), "{nets:?}");
    assert!(h
        .addrs(None)
        .unwrap()
        .iter()
        .any(|a| a.index == l.index && a.net == v4));

    let shown = ip_json(&t.name, &["addr", "show", "dev", "d0"]);
    let infos = items(&shown[0]["addr_info"]);
    assert!(infos
        .iter()
        .any(|a| a["local"] == "10.1.0.1" && a["prefixlen"] == 24));
    let v6_info = infos
        .iter()
        .find(|a| a["local"] == "fd00:1::1")
        .expect("v6 address in ip output");
    assert_eq!(v6_info["prefixlen"], 64);
    assert!(
        v6_info.get("tentative").is_none(),
        "nodad address is not tentative"
    );

    let err = h.add_addr(l.index, v4).unwrap_err();
    assert!(err.is_exists(), "{err}");
    assert!(err.to_string().contains("10.1.0.1/24"), "{err}");

    h.del_addr(l.index, v4).unwrap();
    h.del_addr(l.index, v6).unwrap();
    let nets: Vec<IpNet> = h
        .addrs(Some(l.index))
        .unwrap()
        .iter()
        .map(|a| a.net)
        .collect();
    assert!(!nets.contains(&v4) && !nets.contains(&v6), "{nets:?}");
    let err = h.del_addr(l.index, v4).unwrap_err();
    assert!(err.is_not_found(), "{err}");
}

fn find(h: &mut Handle, family: Family, dst: IpNet, table: u32) -> Vec<Route> {
    h.routes(family)
        .unwrap()
        .into_iter()
        .filter(|r| r.dst == dst && r.table == table)
        .collect()
}

#[test]
fn routes_add_replace_delete() {
    let t = TestNs::new("route");
    let mut h = t.handle();
    let l = live_link(&mut h, "r0");
    h.add_addr(l.index, net("10.1.0.1/24")).unwrap();
    h.add_addr_nodad(l.index, net("fd00:1::1/64")).unwrap();

    let dst = net("10.2.0.0/24");
    let r = Route::new(dst).via(ip("10.1.0.254")).dev(l.index);
    h.add_route(&r).unwrap();
    let found = find(&mut h, Family::V4, dst, RT_TABLE_MAIN);
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].gateway, Some(ip("10.1.0.254")));
    assert_eq!(found[0].oif, Some(l.index));
    assert_eq!(found[0].protocol, RTPROT_BOOT);
    let shown = ip_json(&t.name, &["route", "show", "10.2.0.0/24"]);
    assert_eq!(shown[0]["gateway"], "10.1.0.254");
    assert_eq!(shown[0]["dev"], "r0");

    let err = h.add_route(&r).unwrap_err();
    assert!(err.is_exists(), "{err}");
    assert!(err.to_string().contains("route to 10.2.0.0/24"), "{err}");

    // Replace swaps the gateway in place: still one route.
    h.replace_route(&Route::new(dst).via(ip("10.1.0.253")).dev(l.index))
        .unwrap();
    let found = find(&mut h, Family::V4, dst, RT_TABLE_MAIN);
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].gateway, Some(ip("10.1.0.253")));

    // The VXLAN backend's shape: a gateway no address covers, made reachable by onlink.
    let remote = net("10.244.2.0/24");
    let onlink = Route::new(remote)
        .via(ip("10.244.2.0"))
        .dev(l.index)
        .onlink();
    h.add_route(&onlink).unwrap();
    let found = find(&mut h, Family::V4, remote, RT_TABLE_MAIN);
    assert!(found[0].onlink, "{found:?}");
    let shown = ip_json(&t.name, &["route", "show", "10.244.2.0/24"]);
    assert!(
        items(&shown[0]["flags"]).iter().any(|f| f == "onlink"),
        "{shown}"
    );

    // Without onlink the kernel refuses that gateway, and says why (extended ack).
    let err = h
        .add_route(
            &Route::new(net("10.244.3.0/24"))
                .via(ip("10.244.3.0"))
                .dev(l.index),
        )
        .unwrap_err();
    match &err {
        weft_netlink::Error::Kernel { detail, .. } => {
            let detail = detail.as_deref().unwrap_or_default();
            assert!(detail.to_lowercase().contains("gateway"), "{err}");
        }
        other => panic!("expected a kernel error, got {other}"),
    }
    assert!(err.to_string().contains("(kernel: "), "{err}");

    // Another table, link scope, metric and source.
    let in_table = Route::new(net("10.3.0.0/16"))
        .dev(l.index)
        .scope(RouteScope::Link)
        .table(100)
        .metric(50)
        .src(ip("10.1.0.1"));
    h.add_route(&in_table).unwrap();
    let found = find(&mut h, Family::V4, net("10.3.0.0/16"), 100);
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].scope, RouteScope::Link);
    assert_eq!(found[0].metric, Some(50));
    assert_eq!(found[0].src, Some(ip("10.1.0.1")));
    assert!(find(&mut h, Family::V4, net("10.3.0.0/16"), RT_TABLE_MAIN).is_empty());
    let shown = ip_json(&t.name, &["route", "show", "table", "100"]);
    assert_eq!(shown[0]["dst"], "10.3.0.0/16");

    // IPv6 and a default route.
    let v6 = Route::new(net("fd00:2::/64"))
        .via(ip("fd00:1::fe"))
        .dev(l.index);
    h.add_route(&v6).unwrap();
    assert_eq!(
        find(&mut h, Family::V6, net("fd00:2::/64"), RT_TABLE_MAIN).len(),
        1
    );
    let default = Route::new(net("0.0.0.0/0")).via(ip("10.1.0.254"));
    h.add_route(&default).unwrap();
    let shown = ip_json(&t.name, &["route", "show", "default"]);
    assert_eq!(shown[0]["gateway"], "10.1.0.254");

    // Delete, built by hand without gateway: matches by destination and table.
    for gone in [Route::new(dst).dev(l.index), onlink, in_table, v6, default] {
        h.del_route(&gone).unwrap();
        assert!(
            find(&mut h, Family::All, gone.dst, gone.table).is_empty(),
            "{gone:?}"
        );
        let err = h.del_route(&gone).unwrap_err();
        assert!(err.is_not_found(), "{err}");
    }
}

#[test]
fn multipath_routes_spread_over_each_gateway() {
    let t = TestNs::new("ecmp");
    let mut h = t.handle();
    let l = live_link(&mut h, "m0");
    h.add_addr(l.index, net("192.168.1.254/24")).unwrap();
    let dst = net("192.168.2.0/24");
    let r = Route::new(dst).via_each([ip("192.168.1.2"), ip("192.168.1.3")]);
    h.add_route(&r).unwrap();
    let found = find(&mut h, Family::V4, dst, RT_TABLE_MAIN);
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(
        found[0].multipath,
        vec![ip("192.168.1.2"), ip("192.168.1.3")]
    );
    let shown = ip_json(&t.name, &["route", "show", "192.168.2.0/24"]);
    let hops: Vec<&str> = shown[0]["nexthops"]
        .as_array()
        .expect("nexthops")
        .iter()
        .filter_map(|n| n["gateway"].as_str())
        .collect();
    assert_eq!(hops, ["192.168.1.2", "192.168.1.3"]);
    h.del_route(&found[0]).unwrap();
    assert!(find(&mut h, Family::V4, dst, RT_TABLE_MAIN).is_empty());
    let both = Route::new(dst)
        .via(ip("192.168.1.2"))
        .via_each([ip("192.168.1.3")]);
    let err = h.add_route(&both).unwrap_err();
    assert!(err.to_string().contains("not both"), "{err}");
}

#[test]
fn neighbours_replace_read_back_delete() {
    let t = TestNs::new("neigh");
    let mut h = t.handle();
    let l = live_link(&mut h, "n0");
    h.add_addr(l.index, net("10.1.0.1/24")).unwrap();
    let mac = [0x02, 0x00, 0x00, 0x00, 0x00, 0x07];
    let n = Neighbour {
        index: l.index,
        ip: ip("10.1.0.7"),
        mac,
        permanent: true,
    };
    h.replace_neighbour(&n).unwrap();
    let mac2 = [0x02, 0x00, 0x00, 0x00, 0x00, 0x08];
    h.replace_neighbour(&Neighbour { mac: mac2, ..n }).unwrap();
    let got = h.neighbours(Some(l.index)).unwrap();
    let entry = got.iter().find(|e| e.ip == n.ip).expect("neighbour");
    assert_eq!(entry.mac, mac2);
    assert!(entry.permanent);

    let shown = ip_json(&t.name, &["neigh", "show", "dev", "n0"]);
    let e = items(&shown)
        .into_iter()
        .find(|e| e["dst"] == "10.1.0.7")
        .expect("neighbour in ip output");
    assert_eq!(e["lladdr"], mac_to_string(&mac2));
    assert!(items(&e["state"]).iter().any(|s| s == "PERMANENT"), "{e}");

    let v6 = Neighbour {
        ip: ip("fd00::7"),
        ..n
    };
    h.replace_neighbour(&v6).unwrap();
    assert!(h.neighbours(None).unwrap().contains(&v6));

    h.del_neighbour(&n).unwrap();
    h.del_neighbour(&v6).unwrap();
    let left = h.neighbours(Some(l.index)).unwrap();
    assert!(
        left.iter().all(|e| e.ip != n.ip && e.ip != v6.ip),
        "{left:?}"
    );
    let err = h.del_neighbour(&n).unwrap_err();
    assert!(err.is_not_found(), "{err}");
}

#[test]
fn vxlan_fdb_replace_append_delete() {
    let t = TestNs::new("fdb");
    let mut h = t.handle();
    let local = IpAddr::V4(Ipv4Addr::new(192, 168, 1, 2));
    let vx = h
        .create_vxlan(&VxlanSpec {
            port: 8472,
            ..VxlanSpec::new("weft.1", 1, local)
        })
        .unwrap();
    let mac = [0x0a, 0x58, 0x0a, 0xf4, 0x02, 0x00];
    let e = FdbEntry {
        index: vx.index,
        mac,
        dst: Some(ip("192.168.1.3")),
        permanent: true,
    };
    h.replace_fdb(&e).unwrap();
    // Replace moves the MAC to another VTEP: still one entry for it.
    let moved = FdbEntry {
        dst: Some(ip("192.168.1.4")),
        ..e
    };
    h.replace_fdb(&moved).unwrap();
    let got: Vec<FdbEntry> = h
        .fdb(Some(vx.index))
        .unwrap()
        .into_iter()
        .filter(|f| f.mac == mac)
        .collect();
    assert_eq!(got, vec![moved]);

    let shown = tool_json("bridge", &t.name, &["fdb", "show", "dev", "weft.1"]);
    let entry = items(&shown)
        .into_iter()
        .find(|f| f["mac"] == mac_to_string(&mac))
        .expect("fdb entry in bridge output");
    assert_eq!(entry["dst"], "192.168.1.4");

    // Flooding: the all-zero MAC with two VTEPs appended.
    let zero = FdbEntry {
        mac: [0; 6],
        dst: Some(ip("192.168.1.5")),
        ..e
    };
    let zero2 = FdbEntry {
        dst: Some(ip("192.168.1.6")),
        ..zero
    };
    h.append_fdb(&zero).unwrap();
    h.append_fdb(&zero2).unwrap();
    let flood: Vec<Option<IpAddr>> = h
        .fdb(Some(vx.index))
        .unwrap()
        .into_iter()
        .filter(|f| f.mac == [0; 6])
        .map(|f| f.dst)
        .collect();
    assert!(
        flood.contains(&zero.dst) && flood.contains(&zero2.dst),
        "{flood:?}"
    );

    h.del_fdb(&moved).unwrap();
    h.del_fdb(&zero).unwrap();
    let left = h.fdb(Some(vx.index)).unwrap();
    assert!(left.iter().all(|f| f.mac != mac), "{left:?}");
    assert!(left.iter().any(|f| f.dst == zero2.dst), "{left:?}");
    assert!(left.iter().all(|f| f.dst != zero.dst), "{left:?}");
    let err = h.del_fdb(&moved).unwrap_err();
    assert!(err.is_not_found(), "{err}");
}
