//! UDP has no connection to end: conntrack keeps a flow's NAT decision for as long as
//! packets keep coming. Two changes must therefore reach existing flows (kube-proxy does
//! the same): an endpoint that left stops receiving its clients' flows, and a Service that
//! gains its first endpoints stops being bypassed by flows that began while it had none.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use weft_nft::netlink::conntrack::Flow;
use weft_nft::{ElemData, Family, Key, Ruleset, Value};

use crate::desired::TABLE;

const UDP: u8 = 17;

/// What a sync changed for UDP, as the flows to delete.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Stale {
    /// Endpoints (address, port) no longer behind any UDP service port.
    pub endpoints: BTreeSet<(Ipv4Addr, u16)>,
    /// Service addresses and ports that had no endpoint and now have one.
    pub served: BTreeSet<(Ipv4Addr, u16)>,
    /// Node ports that had no endpoint and now have one.
    pub node_ports: BTreeSet<u16>,
}

impl Stale {
    pub fn is_empty(&self) -> bool {
        self.endpoints.is_empty() && self.served.is_empty() && self.node_ports.is_empty()
    }

    /// Whether `f` is one of the flows this change leaves stale.
    pub fn matches(&self, f: &Flow) -> bool {
        if f.original.proto != UDP {
            return false;
        }
        let natted = f.reply.src != f.original.dst || f.reply.sport != f.original.dport;
        self.endpoints.contains(&(f.reply.src, f.reply.sport))
            || (!natted && self.served.contains(&(f.original.dst, f.original.dport)))
            || (!natted && self.node_ports.contains(&f.original.dport))
    }
}

/// UDP (service key, endpoint) pairs of one backends map.
fn udp_backends(rs: &Ruleset, map: &str) -> BTreeSet<(Vec<Value>, (Ipv4Addr, u16))> {
    let Some(set) = rs.table(Family::Ip, TABLE).and_then(|t| t.sets.get(map)) else {
        return BTreeSet::new();
    };
    set.elements
        .iter()
        .filter_map(|(Key(k), e)| {
            let (_, service) = k.split_last()?;
            if !service.contains(&Value::Proto(UDP)) {
                return None;
            }
            match e.data.as_ref()? {
                ElemData::Value(d) => match d.as_slice() {
                    [Value::Ipv4(ip), Value::Port(p)] => Some((service.to_vec(), (*ip, *p))),
                    _ => None,
                },
                ElemData::Verdict(_) => None,
            }
        })
        .collect()
}

/// The UDP flows that moving the kernel from `prev` to `desired` leaves stale.
pub fn stale(prev: &Ruleset, desired: &Ruleset) -> Stale {
    let mut out = Stale::default();
    for map in ["backends", "nodeport-backends"] {
        let (old, new) = (udp_backends(prev, map), udp_backends(desired, map));
        let endpoints = |s: &BTreeSet<(Vec<Value>, (Ipv4Addr, u16))>| -> BTreeSet<(Ipv4Addr, u16)> {
            s.iter().map(|(_, ep)| *ep).collect()
        };
        out.endpoints
            .extend(endpoints(&old).difference(&endpoints(&new)));
        let services = |s: &BTreeSet<(Vec<Value>, (Ipv4Addr, u16))>| -> BTreeSet<Vec<Value>> {
            s.iter().map(|(k, _)| k.clone()).collect()
        };
        for key in services(&new).difference(&services(&old)) {
            match key.as_slice() {
                [Value::Ipv4(ip), _, Value::Port(p)] => {
                    out.served.insert((*ip, *p));
                }
                [_, Value::Port(p)] => {
                    out.node_ports.insert(*p);
                }
                _ => {}
            }
        }
    }
    out
}
