//! Desired against actual, still without the kernel: which routes, neighbours and FDB
//! entries to add, update or remove so that the kernel ends up with exactly the desired
//! ones and nothing else of ours. Only what differs is touched, so a repeated sync with the
//! same input plans nothing.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;

use weft_netlink::{FdbEntry, IpNet, Neighbour, Route};

/// A desired kernel object with the node it is for and how errors should name it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Wanted<T> {
    pub node: String,
    pub object: String,
    pub item: T,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Add,
    Update,
    Remove,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Step {
    AddRoute(Route),
    ReplaceRoute(Route),
    DelRoute(Route),
    SetNeighbour(Neighbour),
    DelNeighbour(Neighbour),
    SetFdb(FdbEntry),
    DelFdb(FdbEntry),
}

/// One change. `node` is None for removals of entries no listed node wants any more.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Action {
    pub node: Option<String>,
    pub object: String,
    pub kind: Kind,
    pub step: Step,
}

impl Action {
    fn wanted<T>(w: &Wanted<T>, kind: Kind, step: Step) -> Action {
        Action {
            node: Some(w.node.clone()),
            object: w.object.clone(),
            kind,
            step,
        }
    }

    fn stale(object: String, step: Step) -> Action {
        Action {
            node: None,
            object,
            kind: Kind::Remove,
            step,
        }
    }
}

/// The metric the kernel gives a route added without one: IPv4 reports none (0), IPv6 1024.
fn same_metric(want: &Route, have: &Route) -> bool {
    let default = if want.dst.addr().is_ipv4() { 0 } else { 1024 };
    want.metric.unwrap_or(default) == have.metric.unwrap_or(default)
}

fn same_route(want: &Route, have: &Route) -> bool {
    want.dst == have.dst
        && want.gateway == have.gateway
        && want.oif == have.oif
        && want.onlink == have.onlink
        && same_metric(want, have)
}

fn describe_route(r: &Route) -> String {
    let mut s = format!("route {}", r.dst);
    if let Some(gw) = r.gateway {
        s.push_str(&format!(" via {gw}"));
    }
    if let Some(oif) = r.oif {
        s.push_str(&format!(" dev {oif}"));
    }
    s
}

/// `owned`: the routes marked with weft's protocol in the table weft uses; no other route
/// is ever removed or replaced.
pub(crate) fn routes(want: &[Wanted<Route>], owned: &[Route]) -> Vec<Action> {
    let mut by_dst: HashMap<IpNet, Vec<usize>> = HashMap::new();
    for (i, r) in owned.iter().enumerate() {
        by_dst.entry(r.dst).or_default().push(i);
    }
    let mut kept = vec![false; owned.len()];
    let mut later = Vec::new();
    for w in want {
        let same_dst = by_dst.get(&w.item.dst).map(Vec::as_slice).unwrap_or(&[]);
        let exact = same_dst.iter().find(|&&i| same_route(&w.item, &owned[i]));
        let in_place = same_dst.iter().find(|&&i| same_metric(&w.item, &owned[i]));
        if let Some(&i) = exact {
            kept[i] = true;
        } else if let Some(&i) = in_place {
            // Replacing keys on destination and metric: the old one is overwritten in place.
            kept[i] = true;
            later.push(Action::wanted(
                w,
                Kind::Update,
                Step::ReplaceRoute(w.item.clone()),
            ));
        } else {
            later.push(Action::wanted(w, Kind::Add, Step::AddRoute(w.item.clone())));
        }
    }
    let mut out: Vec<Action> = owned
        .iter()
        .zip(&kept)
        .filter(|(_, kept)| !**kept)
        .map(|(r, _)| Action::stale(describe_route(r), Step::DelRoute(r.clone())))
        .collect();
    out.extend(later);
    out
}

/// `present`: every neighbour on the overlay device. Only permanent ones are ours to remove
/// (the kernel's own resolved entries come and go); a desired IP with a learned entry is
/// overwritten with the permanent one.
pub(crate) fn neighbours(want: &[Wanted<Neighbour>], present: &[Neighbour]) -> Vec<Action> {
    let mut by_ip: HashMap<IpAddr, &Neighbour> = HashMap::new();
    for n in present {
        by_ip.entry(n.ip).or_insert(n);
    }
    let wanted: HashSet<IpAddr> = want.iter().map(|w| w.item.ip).collect();
    let mut out: Vec<Action> = present
        .iter()
        .filter(|n| n.permanent && !wanted.contains(&n.ip))
        .map(|n| {
            let object = format!(
                "neighbour {} lladdr {}",
                n.ip,
                weft_netlink::mac_to_string(&n.mac)
            );
            Action::stale(object, Step::DelNeighbour(*n))
        })
        .collect();
    for w in want {
        match by_ip.get(&w.item.ip) {
            Some(have) if **have == w.item => {}
            Some(_) => out.push(Action::wanted(w, Kind::Update, Step::SetNeighbour(w.item))),
            None => out.push(Action::wanted(w, Kind::Add, Step::SetNeighbour(w.item))),
        }
    }
    out
}

/// `present`: the FDB entries of the overlay device that point at a VTEP (those with a
/// destination); the device's own multicast entries have none and are not ours.
pub(crate) fn fdb(want: &[Wanted<FdbEntry>], present: &[FdbEntry]) -> Vec<Action> {
    let describe = |e: &FdbEntry| {
        let dst = e.dst.map(|d| d.to_string()).unwrap_or_default();
        format!(
            "fdb entry {} dst {dst}",
            weft_netlink::mac_to_string(&e.mac)
        )
    };
    let mut by_mac: HashMap<[u8; 6], Vec<&FdbEntry>> = HashMap::new();
    for e in present.iter().filter(|e| e.dst.is_some()) {
        by_mac.entry(e.mac).or_default().push(e);
    }
    let wanted: HashSet<[u8; 6]> = want.iter().map(|w| w.item.mac).collect();
    let mut out = Vec::new();
    let mut later = Vec::new();
    for e in present.iter().filter(|e| e.dst.is_some()) {
        if !wanted.contains(&e.mac) {
            out.push(Action::stale(describe(e), Step::DelFdb(*e)));
        }
    }
    for w in want {
        let same_mac = by_mac.get(&w.item.mac).map(Vec::as_slice).unwrap_or(&[]);
        // A MAC may carry several destinations (appended); exactly the desired one stays.
        // The one kept is rewritten in place: the desired destination if it is there, else
        // the first, which a replace moves to the desired destination.
        let keep = same_mac
            .iter()
            .position(|e| e.dst == w.item.dst)
            .or(if same_mac.is_empty() { None } else { Some(0) });
        for (i, e) in same_mac.iter().enumerate() {
            if Some(i) != keep {
                out.push(Action::stale(describe(e), Step::DelFdb(**e)));
            }
        }
        match keep.map(|i| same_mac[i]) {
            Some(e) if *e == w.item => {}
            Some(_) => later.push(Action::wanted(w, Kind::Update, Step::SetFdb(w.item))),
            None => later.push(Action::wanted(w, Kind::Add, Step::SetFdb(w.item))),
        }
    }
    out.extend(later);
    out
}

#[cfg(test)]
#[path = "diff_tests.rs"]
mod tests;
