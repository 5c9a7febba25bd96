use super::*;

use std::net::IpAddr;

use weft_netlink::IpNet;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn route(dst: &str, gw: &str, oif: u32) -> Route {
    let dst: IpNet = dst.parse().unwrap();
    Route::new(dst).via(ip(gw)).dev(oif).protocol(0x57)
}

fn wanted<T>(node: &str, item: T) -> Wanted<T> {
    Wanted {
        node: node.to_string(),
        object: format!("object of {node}"),
        item,
    }
}

fn kinds(actions: &[Action]) -> Vec<Kind> {
    actions.iter().map(|a| a.kind).collect()
}

#[test]
fn routes_add_keep_update_remove() {
    let want = vec![
        wanted("node-2", route("10.244.2.0/24", "192.168.1.3", 2)),
        wanted("node-3", route("10.244.3.0/24", "192.168.1.4", 2)),
    ];
    let plan = routes(&want, &[]);
    assert_eq!(kinds(&plan), vec![Kind::Add, Kind::Add]);
    assert!(matches!(&plan[0].step, Step::AddRoute(r) if r == &want[0].item));

    // The kernel reports back exactly what was added: nothing to do.
    let have: Vec<Route> = want.iter().map(|w| w.item.clone()).collect();
    assert!(routes(&want, &have).is_empty());

    // node-3 moved to another underlay IP; node-4 left.
    let have = vec![
        have[0].clone(),
        route("10.244.3.0/24", "192.168.1.9", 2),
        route("10.244.4.0/24", "192.168.1.5", 2),
    ];
    let plan = routes(&want, &have);
    assert_eq!(kinds(&plan), vec![Kind::Remove, Kind::Update]);
    assert!(matches!(&plan[0].step, Step::DelRoute(r) if r.dst.to_string() == "10.244.4.0/24"));
    assert_eq!(plan[0].node, None);
    assert!(matches!(&plan[1].step, Step::ReplaceRoute(r) if r.gateway == Some(ip("192.168.1.4"))));
    assert_eq!(plan[1].node.as_deref(), Some("node-3"));
}

#[test]
fn routes_extra_copies_with_other_metrics_are_removed() {
    let want = vec![wanted("node-2", route("10.244.2.0/24", "192.168.1.3", 2))];
    let have = vec![
        route("10.244.2.0/24", "192.168.1.3", 2).metric(50),
        route("10.244.2.0/24", "192.168.1.3", 2),
    ];
    let plan = routes(&want, &have);
    assert_eq!(kinds(&plan), vec![Kind::Remove]);
    assert!(matches!(&plan[0].step, Step::DelRoute(r) if r.metric == Some(50)));

    // Only a copy with another metric: add ours, remove that one first.
    let plan = routes(&want, &have[..1]);
    assert_eq!(kinds(&plan), vec![Kind::Remove, Kind::Add]);
}

#[test]
fn routes_ipv6_default_metric_reads_back_as_1024() {
    let want = vec![wanted("node-2", route("fd10:0:0:2::/64", "fd00::3", 2))];
    let have = vec![route("fd10:0:0:2::/64", "fd00::3", 2).metric(1024)];
    assert!(routes(&want, &have).is_empty());
}

#[test]
fn routes_onlink_and_device_matter() {
    let onlink = route("10.244.2.0/24", "10.244.2.0", 9).onlink();
    let want = vec![wanted("node-2", onlink.clone())];
    let plan = routes(&want, &[route("10.244.2.0/24", "10.244.2.0", 9)]);
    assert_eq!(kinds(&plan), vec![Kind::Update]);
    let plan = routes(&want, &[route("10.244.2.0/24", "10.244.2.0", 8).onlink()]);
    assert_eq!(kinds(&plan), vec![Kind::Update]);
    assert!(routes(&want, &[onlink]).is_empty());
}

fn neigh(ip_: &str, mac: u8, permanent: bool) -> Neighbour {
    Neighbour {
        index: 9,
        ip: ip(ip_),
        mac: [0x0a, 0x58, 0, 0, 0, mac],
        permanent,
    }
}

#[test]
fn neighbours_learned_entries_are_overwritten_not_removed() {
    let want = vec![
        wanted("node-2", neigh("10.244.2.0", 2, true)),
        wanted("node-3", neigh("10.244.3.0", 3, true)),
    ];
    let have = vec![
        neigh("10.244.2.0", 2, true),
        neigh("10.244.3.0", 3, false),
        neigh("10.244.4.0", 4, true),
        neigh("10.244.9.9", 9, false),
    ];
    let plan = neighbours(&want, &have);
    assert_eq!(kinds(&plan), vec![Kind::Remove, Kind::Update]);
    assert!(matches!(plan[0].step, Step::DelNeighbour(n) if n.ip == ip("10.244.4.0")));
    assert!(
        matches!(plan[1].step, Step::SetNeighbour(n) if n.ip == ip("10.244.3.0") && n.permanent)
    );

    // A new VTEP MAC for node-2 is an update.
    let have: Vec<Neighbour> = want.iter().map(|w| w.item).collect();
    let moved = vec![
        wanted("node-2", neigh("10.244.2.0", 7, true)),
        want[1].clone(),
    ];
    assert_eq!(kinds(&neighbours(&moved, &have)), vec![Kind::Update]);
    assert!(neighbours(&want, &have).is_empty());
}

fn fdb_entry(mac: u8, dst: Option<&str>) -> FdbEntry {
    FdbEntry {
        index: 9,
        mac: [0x0a, 0x58, 0, 0, 0, mac],
        dst: dst.map(ip),
        permanent: true,
    }
}

#[test]
fn fdb_device_multicast_entries_are_not_ours() {
    let mcast = FdbEntry {
        mac: [0x33, 0x33, 0, 0, 0, 1],
        ..fdb_entry(0, None)
    };
    let want = vec![wanted("node-2", fdb_entry(2, Some("192.168.1.3")))];
    let plan = fdb(&want, &[mcast, fdb_entry(2, Some("192.168.1.3"))]);
    assert!(plan.is_empty(), "{plan:?}");
    assert_eq!(kinds(&fdb(&want, &[mcast])), vec![Kind::Add]);
}

#[test]
fn fdb_moved_vtep_is_one_update() {
    let want = vec![wanted("node-2", fdb_entry(2, Some("192.168.1.9")))];
    let plan = fdb(&want, &[fdb_entry(2, Some("192.168.1.3"))]);
    assert_eq!(kinds(&plan), vec![Kind::Update]);
    assert!(matches!(plan[0].step, Step::SetFdb(e) if e.dst == Some(ip("192.168.1.9"))));
}

#[test]
fn fdb_extra_destinations_and_stale_macs_go() {
    let want = vec![wanted("node-2", fdb_entry(2, Some("192.168.1.3")))];
    let have = vec![
        fdb_entry(2, Some("192.168.1.8")),
        fdb_entry(2, Some("192.168.1.3")),
        fdb_entry(0, Some("192.168.1.7")),
        fdb_entry(4, Some("192.168.1.5")),
    ];
    let plan = fdb(&want, &have);
    assert_eq!(kinds(&plan), vec![Kind::Remove, Kind::Remove, Kind::Remove]);
    let removed: Vec<Option<IpAddr>> = plan
        .iter()
        .map(|a| match a.step {
            Step::DelFdb(e) => e.dst,
            _ => None,
        })
        .collect();
    assert!(!removed.contains(&Some(ip("192.168.1.3"))), "{plan:?}");

    // Two stale destinations, neither desired: one is moved, the other removed first.
    let have = vec![
        fdb_entry(2, Some("192.168.1.8")),
        fdb_entry(2, Some("192.168.1.7")),
    ];
    let plan = fdb(&want, &have);
    assert_eq!(kinds(&plan), vec![Kind::Remove, Kind::Update]);
    assert!(matches!(plan[0].step, Step::DelFdb(e) if e.dst == Some(ip("192.168.1.7"))));
}

#[test]
fn thousands_of_nodes_diff_to_nothing_against_themselves() {
    let mut want_routes = Vec::new();
    let mut want_fdb = Vec::new();
    for i in 0..5000u32 {
        let [_, _, hi, lo] = i.to_be_bytes();
        let dst = format!("10.{}.{}.0/24", 100 + u32::from(hi), lo);
        let gw = format!("192.168.{hi}.{lo}");
        want_routes.push(wanted(&format!("node-{i}"), route(&dst, &gw, 2)));
        want_fdb.push(wanted(
            &format!("node-{i}"),
            FdbEntry {
                mac: [0x0a, 0x58, 0, 0, hi, lo],
                ..fdb_entry(0, Some(&gw))
            },
        ));
    }
    let have: Vec<Route> = want_routes.iter().map(|w| w.item.clone()).collect();
    assert!(routes(&want_routes, &have).is_empty());
    assert_eq!(routes(&want_routes[1..], &have).len(), 1);
    let present: Vec<FdbEntry> = want_fdb.iter().map(|w| w.item).collect();
    assert!(fdb(&want_fdb, &present).is_empty());
    assert_eq!(fdb(&want_fdb, &present[1..]).len(), 1);
}
