//! UDP has no connection to end: conntrack keeps a flow's NAT decision for as long as
//! packets keep coming. Two changes must therefore reach existing flows (kube-proxy does
//! the same): an endpoint that left a Service stops receiving that Service's flows, and
//! a Service that gains its first endpoints stops being bypassed by flows that began
//! while it had none.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use weft_nft::netlink::conntrack::Flow;
use weft_nft::{Elem, ElemData, Family, Key, Ruleset, Value};

use crate::desired::{SetId, BACKEND_MAPS, TABLE};
use crate::model::Delta;

const UDP: u8 = 17;

/// A service address and port, or a node port (on any local address).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Front {
    Address(Ipv4Addr, u16),
    NodePort(u16),
}

impl Front {
    /// From a dispatch key (addr . proto . port, or proto . port), if it is UDP.
    fn of_udp(key: &[Value]) -> Option<Front> {
        match key {
            [Value::Ipv4(ip), Value::Proto(UDP), Value::Port(p)] => Some(Front::Address(*ip, *p)),
            [Value::Proto(UDP), Value::Port(p)] => Some(Front::NodePort(*p)),
            _ => None,
        }
    }

    fn matches(&self, f: &Flow) -> bool {
        match self {
            Front::Address(ip, p) => f.original.dst == *ip && f.original.dport == *p,
            Front::NodePort(p) => f.original.dport == *p,
        }
    }
}

/// The UDP flows a sync leaves stale.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Stale {
    /// (service front, endpoint address, endpoint port) pairs that no longer hold.
    pub gone: BTreeSet<Pair>,
    /// Fronts that had no endpoint and now have one.
    pub served: BTreeSet<Front>,
}

impl Stale {
    pub fn is_empty(&self) -> bool {
        self.gone.is_empty() && self.served.is_empty()
    }

    /// Whether `f` is one of the flows this change leaves stale.
    pub fn matches(&self, f: &Flow) -> bool {
        if f.original.proto != UDP {
            return false;
        }
        let natted = f.reply.src != f.original.dst || f.reply.sport != f.original.dport;
        self.gone.iter().any(|(front, ip, port)| {
            front.matches(f) && f.reply.src == *ip && f.reply.sport == *port
        }) || (!natted && self.served.iter().any(|front| front.matches(f)))
    }
}

fn is_backends(set: &str) -> bool {
    BACKEND_MAPS.contains(&set)
}

fn is_no_endpoints(set: &str) -> bool {
    set == "no-endpoints" || set == "nodeport-no-endpoints"
}

/// A service front and one of its endpoints (address, port).
type Pair = (Front, Ipv4Addr, u16);

/// A backends element as (front, endpoint), if it is UDP.
fn pair(key: &Key, elem: &Elem) -> Option<Pair> {
    let (_, service) = key.0.split_last()?;
    let front = Front::of_udp(service)?;
    match &elem.data {
        Some(ElemData::Value(d)) => match d.as_slice() {
            [Value::Ipv4(ip), Value::Port(p)] => Some((front, *ip, *p)),
            _ => None,
        },
        _ => None,
    }
}

/// What a model delta leaves stale.
pub fn from_delta(d: &Delta) -> Stale {
    let name = |s: &SetId| s.name();
    let added: BTreeSet<_> = d
        .added
        .iter()
        .filter(|(s, _, _)| is_backends(&name(s)))
        .filter_map(|(_, k, e)| pair(k, e))
        .collect();
    let mut out = Stale::default();
    let service_of = |k: &Key| k.0.split_last().map(|(_, s)| s.to_vec());
    let had_backends: BTreeSet<Vec<Value>> = d
        .removed
        .iter()
        .filter(|(s, _, _)| is_backends(&name(s)))
        .filter_map(|(_, k, _)| service_of(k))
        .collect();
    // A Service front with endpoints now and none before (new, or out of no-endpoints):
    // flows that began without NAT must not keep bypassing it.
    for (set, key, _) in &d.added {
        if !is_backends(&name(set)) || key.0.last() != Some(&Value::Integer(0)) {
            continue;
        }
        if let Some(service) = service_of(key).filter(|s| !had_backends.contains(s)) {
            if let Some(front) = Front::of_udp(&service) {
                out.served.insert(front);
            }
        }
    }
    for (set, key, elem) in &d.removed {
        let set = name(set);
        if is_backends(&set) {
            if let Some(p) = pair(key, elem).filter(|p| !added.contains(p)) {
                out.gone.insert(p);
            }
        } else if is_no_endpoints(&set) {
            if let Some(front) = Front::of_udp(&key.0) {
                out.served.insert(front);
            }
        }
    }
    out
}

/// What moving the kernel from `prev` to `desired` (whole tables) leaves stale.
pub fn between(prev: &Ruleset, desired: &Ruleset) -> Stale {
    let elems = |rs: &Ruleset, set: &str| -> BTreeSet<(Key, Option<Pair>)> {
        rs.table(Family::Ip, TABLE)
            .and_then(|t| t.sets.get(set))
            .map(|s| {
                s.elements
                    .iter()
                    .map(|(k, e)| (k.clone(), pair(k, e)))
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut out = Stale::default();
    for set in BACKEND_MAPS {
        let new: BTreeSet<_> = elems(desired, set)
            .into_iter()
            .filter_map(|(_, p)| p)
            .collect();
        let old = elems(prev, set);
        let old_fronts: BTreeSet<Front> = old.iter().filter_map(|(_, p)| p.map(|p| p.0)).collect();
        for (_, p) in old {
            if let Some(p) = p.filter(|p| !new.contains(p)) {
                out.gone.insert(p);
            }
        }
        out.served
            .extend(new.iter().map(|p| p.0).filter(|f| !old_fronts.contains(f)));
    }
    for set in ["no-endpoints", "nodeport-no-endpoints"] {
        let still: BTreeSet<Key> = elems(desired, set).into_iter().map(|(k, _)| k).collect();
        for (k, _) in elems(prev, set) {
            if !still.contains(&k) {
                if let Some(front) = Front::of_udp(&k.0) {
                    out.served.insert(front);
                }
            }
        }
    }
    out
}
