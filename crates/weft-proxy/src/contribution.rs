//! What one Service port puts in the table: set and map elements only. The table's
//! structure (its chains, and which per-count sets exist) follows from the elements alone,
//! so a change to one Service is a change to its elements, and the controller can keep the
//! table up to date service by service (see [`crate::model`]).

use std::net::Ipv4Addr;
use std::time::Duration;

use weft_nft::{Elem, Value};

use crate::desired::{Dynamic, NodeContext, SetId};
use crate::endpoint::{targets, Endpoints, Targets};
use crate::service::{Protocol, ServicePort};

/// One element of one set.
#[derive(Debug, Clone, PartialEq)]
pub struct Element {
    pub set: SetId,
    pub key: Vec<Value>,
    pub elem: Elem,
}

fn el(set: SetId, key: Vec<Value>) -> Element {
    Element {
        set,
        key,
        elem: Elem::default(),
    }
}

/// One kind of traffic (to an address, or to a node port) and where it may go.
struct Dispatch<'a> {
    nodeport: bool,
    /// The short-circuit for pods: only the endpoints and their set, nothing else.
    from_pods: bool,
    key: Vec<Value>,
    proto: Protocol,
    to: Targets<'a>,
    masquerade: bool,
    affinity: Option<Duration>,
}

impl Dispatch<'_> {
    fn fixed(&self, name: &'static str) -> SetId {
        SetId::fixed(self.nodeport, name)
    }

    fn push(self, out: &mut Vec<Element>) {
        let eps = match &self.to {
            Targets::Some(eps) => eps,
            _ if self.from_pods => return,
            Targets::None => return out.push(el(self.fixed("no-endpoints"), self.key)),
            Targets::NoneLocal => return out.push(el(self.fixed("no-local-endpoints"), self.key)),
        };
        let backends = if self.from_pods {
            "from-pods-backends"
        } else {
            "backends"
        };
        for (slot, ep) in eps.iter().enumerate() {
            let mut k = self.key.clone();
            k.push(Value::Integer(slot as u32));
            out.push(Element {
                set: self.fixed(backends),
                key: k,
                elem: Elem::value(vec![Value::Ipv4(ep.ip), Value::Port(ep.port)]),
            });
        }
        if self.masquerade && !self.from_pods {
            out.push(el(self.fixed("masq"), self.key.clone()));
        }
        if let (Some(t), false) = (self.affinity, self.from_pods) {
            out.push(el(self.fixed("affinity-services"), self.key.clone()));
            let secs = t.as_secs().max(1);
            out.push(el(
                SetId::Dynamic(Dynamic::Affinity {
                    nodeport: self.nodeport,
                    proto: self.proto,
                    secs,
                }),
                self.key.clone(),
            ));
        }
        out.push(el(
            SetId::Dynamic(Dynamic::Endpoints {
                nodeport: self.nodeport,
                from_pods: self.from_pods,
                proto: self.proto,
                count: eps.len() as u32,
            }),
            self.key,
        ));
    }
}

/// The elements of one Service port, seen from `node`.
pub fn contributions(sp: &ServicePort, eps: &Endpoints, node: &NodeContext) -> Vec<Element> {
    let mut out = Vec::new();
    let all = eps.of(sp);
    for e in all {
        out.push(el(
            SetId::Fixed("hairpin"),
            vec![Value::Ipv4(e.ip), Value::Ipv4(e.ip)],
        ));
    }
    let proto = Value::Proto(sp.protocol.number());
    let port = Value::Port(sp.port);
    let addr_key = |ip: Ipv4Addr| vec![Value::Ipv4(ip), proto.clone(), port.clone()];
    let internal = targets(all, sp.internal_local, &node.node_name);
    let external = targets(all, sp.external_local, &node.node_name);
    // Local external policy keeps the client's address: no masquerade.
    let masq_external = !sp.external_local;
    // Pods reaching a Local-policy external address (or node port) go cluster-wide, as if
    // to the cluster IP: the policy is about clients from outside.
    let short_circuit = |key: Vec<Value>, nodeport: bool, out: &mut Vec<Element>| {
        if sp.external_local {
            Dispatch {
                nodeport,
                from_pods: true,
                key,
                proto: sp.protocol,
                to: targets(all, false, &node.node_name),
                masquerade: false,
                affinity: None,
            }
            .push(out);
        }
    };
    if let Some(ip) = sp.cluster_ip {
        out.push(el(SetId::Fixed("cluster-ips"), addr_key(ip)));
        out.push(el(SetId::Fixed("cluster-ip-addrs"), vec![Value::Ipv4(ip)]));
        Dispatch {
            nodeport: false,
            from_pods: false,
            key: addr_key(ip),
            proto: sp.protocol,
            to: internal,
            masquerade: false,
            affinity: sp.affinity,
        }
        .push(&mut out);
    }
    for ip in &sp.external_ips {
        Dispatch {
            nodeport: false,
            from_pods: false,
            key: addr_key(*ip),
            proto: sp.protocol,
            to: external.clone(),
            masquerade: masq_external,
            affinity: sp.affinity,
        }
        .push(&mut out);
        short_circuit(addr_key(*ip), false, &mut out);
    }
    if !sp.source_ranges.is_empty() {
        for ip in &sp.load_balancer_ips {
            for r in &sp.source_ranges {
                let mut from = addr_key(*ip);
                from.push(Value::Ipv4(r.network()));
                let mut to = addr_key(*ip);
                to.push(Value::Ipv4(r.broadcast()));
                out.push(Element {
                    set: SetId::Fixed("firewall-allow"),
                    key: from,
                    elem: Elem::interval(to),
                });
            }
            out.push(el(SetId::Fixed("firewall"), addr_key(*ip)));
        }
    }
    if let Some(np) = sp.node_port {
        Dispatch {
            nodeport: true,
            from_pods: false,
            key: vec![proto.clone(), Value::Port(np)],
            proto: sp.protocol,
            to: external,
            masquerade: masq_external,
            affinity: sp.affinity,
        }
        .push(&mut out);
        short_circuit(vec![proto.clone(), Value::Port(np)], true, &mut out);
    }
    out
}
