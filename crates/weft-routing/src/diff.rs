//! Desired against actual, still without the kernel: which routes, neighbours and FDB
//! entries to add, update or remove so that the kernel ends up with exactly the desired
//! ones and nothing else of ours. Only what differs is touched, so a repeated sync with the
//! same input plans nothing.

use weft_netlink::{FdbEntry, Neighbour, Route};

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
    let mut out = Vec::new();
    let mut kept: Vec<&Route> = Vec::new();
    let mut later = Vec::new();
    for w in want {
        let same_dst: Vec<&Route> = owned.iter().filter(|r| r.dst == w.item.dst).collect();
        if let Some(have) = same_dst.iter().find(|r| same_route(&w.item, r)) {
            kept.push(have);
        } else if let Some(have) = same_dst.iter().find(|r| same_metric(&w.item, r)) {
            // Replacing keys on destination and metric: the old one is overwritten in place.
            kept.push(have);
            later.push(Action::wanted(
                w,
                Kind::Update,
                Step::ReplaceRoute(w.item.clone()),
            ));
        } else {
            later.push(Action::wanted(w, Kind::Add, Step::AddRoute(w.item.clone())));
        }
    }
    for r in owned {
        if !kept.iter().any(|k| std::ptr::eq(*k, r)) {
            out.push(Action::stale(describe_route(r), Step::DelRoute(r.clone())));
        }
    }
    out.extend(later);
    out
}

/// `present`: every neighbour on the overlay device. Only permanent ones are ours to remove
/// (the kernel's own resolved entries come and go); a desired IP with a learned entry is
/// overwritten with the permanent one.
pub(crate) fn neighbours(want: &[Wanted<Neighbour>], present: &[Neighbour]) -> Vec<Action> {
    let mut out = Vec::new();
    let mut later = Vec::new();
    for w in want {
        match present.iter().find(|n| n.ip == w.item.ip) {
            Some(have) if *have == w.item => {}
            Some(_) => later.push(Action::wanted(w, Kind::Update, Step::SetNeighbour(w.item))),
            None => later.push(Action::wanted(w, Kind::Add, Step::SetNeighbour(w.item))),
        }
    }
    for n in present {
        if n.permanent && !want.iter().any(|w| w.item.ip == n.ip) {
            out.push(Action::stale(
                format!(
                    "neighbour {} lladdr {}",
                    n.ip,
                    weft_netlink::mac_to_string(&n.mac)
                ),
                Step::DelNeighbour(*n),
            ));
        }
    }
    out.extend(later);
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
    let ours: Vec<&FdbEntry> = present.iter().filter(|e| e.dst.is_some()).collect();
    let mut out = Vec::new();
    let mut later = Vec::new();
    for e in &ours {
        if !want.iter().any(|w| w.item.mac == e.mac) {
            out.push(Action::stale(describe(e), Step::DelFdb(**e)));
        }
    }
    for w in want {
        let same_mac: Vec<&FdbEntry> = ours
            .iter()
            .copied()
            .filter(|e| e.mac == w.item.mac)
            .collect();
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
