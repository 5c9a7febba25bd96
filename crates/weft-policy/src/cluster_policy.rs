//! ClusterNetworkPolicy into the model. Peers with no field set fail closed (see
//! [`PeerMatch::Unknown`]); `domainNames` peers (Accept rules only) match the addresses
//! weft's DNS answered for a matching name ([`crate::fqdn`]); rules keep their written
//! order, which is their precedence.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use crate::cnp::{self, ClusterNetworkPolicy};
use crate::error::{Ctx, Result};
use crate::model::*;
use crate::netpol::{parse_cidr, port_number};
use crate::selector::Selector;

pub fn compile(cnp: &ClusterNetworkPolicy) -> Result<Policy> {
    let name = cnp.metadata.name.clone().unwrap_or_default();
    let ctx = Ctx::new(format!("ClusterNetworkPolicy {name}"));
    let spec = &cnp.spec;
    let tier = match spec.tier.as_str() {
        "Admin" => Tier::Admin,
        "Baseline" => Tier::Baseline,
        other => return Err(ctx.err("spec.tier", other, "must be Admin or Baseline")),
    };
    let priority = match u32::try_from(spec.priority) {
        Ok(p) if p <= 1000 => p,
        _ => return Err(ctx.err("spec.priority", spec.priority, "must be 0 to 1000")),
    };
    let subject = match (&spec.subject.namespaces, &spec.subject.pods) {
        (Some(ns), None) => Subject {
            namespaces: NamespaceMatch::Selected(sel(&ctx, "spec.subject.namespaces", ns)?),
            pods: Selector::everything(),
        },
        (None, Some(p)) => Subject {
            namespaces: NamespaceMatch::Selected(sel(
                &ctx,
                "spec.subject.pods.namespaceSelector",
                &p.namespace_selector,
            )?),
            pods: sel(&ctx, "spec.subject.pods.podSelector", &p.pod_selector)?,
        },
        _ => return Err(ctx.err("spec.subject", "", "set exactly one of namespaces and pods")),
    };
    let ingress = match &spec.ingress {
        None => None,
        Some(rules) => Some(
            rules
                .iter()
                .enumerate()
                .map(|(i, r)| {
                    let at = format!("spec.ingress[{i}]");
                    let peers = r
                        .from
                        .iter()
                        .enumerate()
                        .map(|(j, p)| {
                            let f = format!("{at}.from[{j}]");
                            pod_peer(&ctx, &f, p.namespaces.as_ref(), p.pods.as_ref())
                                .map(|o| o.unwrap_or(PeerMatch::Unknown))
                        })
                        .collect::<Result<Vec<_>>>()?;
                    rule(
                        &ctx,
                        &at,
                        i,
                        &r.name,
                        &r.action,
                        peers,
                        &r.protocols,
                        &r.ports,
                    )
                })
                .collect::<Result<Vec<_>>>()?,
        ),
    };
    let egress = match &spec.egress {
        None => None,
        Some(rules) => Some(
            rules
                .iter()
                .enumerate()
                .map(|(i, r)| {
                    let at = format!("spec.egress[{i}]");
                    let peers =
                        r.to.iter()
                            .enumerate()
                            .map(|(j, p)| egress_peer(&ctx, &format!("{at}.to[{j}]"), p))
                            .collect::<Result<Vec<_>>>()?;
                    rule(
                        &ctx,
                        &at,
                        i,
                        &r.name,
                        &r.action,
                        peers,
                        &r.protocols,
                        &r.ports,
                    )
                })
                .collect::<Result<Vec<_>>>()?,
        ),
    };
    Ok(Policy {
        id: PolicyId::cluster(&name),
        tier,
        priority,
        subject,
        // "CNPs with no ingress rules do not affect ingress traffic."
        ingress: ingress.filter(|r| !r.is_empty()),
        egress: egress.filter(|r| !r.is_empty()),
    })
}

fn sel(ctx: &Ctx, at: &str, s: &LabelSelector) -> Result<Selector> {
    Selector::from_api(s, ctx, at)
}

fn pod_peer(
    ctx: &Ctx,
    at: &str,
    namespaces: Option<&LabelSelector>,
    pods: Option<&cnp::NamespacedPod>,
) -> Result<Option<PeerMatch>> {
    Ok(match (namespaces, pods) {
        (Some(n), None) => Some(PeerMatch::Pods {
            namespaces: NamespaceMatch::Selected(sel(ctx, &format!("{at}.namespaces"), n)?),
            pods: Selector::everything(),
        }),
        (None, Some(p)) => Some(PeerMatch::Pods {
            namespaces: NamespaceMatch::Selected(sel(
                ctx,
                &format!("{at}.pods.namespaceSelector"),
                &p.namespace_selector,
            )?),
            pods: sel(ctx, &format!("{at}.pods.podSelector"), &p.pod_selector)?,
        }),
        (Some(_), Some(_)) => return Err(ctx.err(at, "", "set exactly one field of a peer")),
        (None, None) => None,
    })
}

fn egress_peer(ctx: &Ctx, at: &str, p: &cnp::EgressPeer) -> Result<PeerMatch> {
    let set = [
        p.namespaces.is_some(),
        p.pods.is_some(),
        p.nodes.is_some(),
        p.networks.is_some(),
        p.domain_names.is_some(),
    ]
    .iter()
    .filter(|b| **b)
    .count();
    if set > 1 {
        return Err(ctx.err(at, "", "set exactly one field of a peer"));
    }
    if let Some(peer) = pod_peer(ctx, at, p.namespaces.as_ref(), p.pods.as_ref())? {
        return Ok(peer);
    }
    if let Some(n) = &p.nodes {
        return Ok(PeerMatch::Nodes(sel(ctx, &format!("{at}.nodes"), n)?));
    }
    if let Some(nets) = &p.networks {
        let nets = nets
            .iter()
            .enumerate()
            .map(|(i, c)| parse_cidr(ctx, &format!("{at}.networks[{i}]"), c))
            .collect::<Result<Vec<_>>>()?;
        return Ok(PeerMatch::Networks(nets));
    }
    if let Some(d) = &p.domain_names {
        if d.is_empty() {
            return Err(ctx.err(
                &format!("{at}.domainNames"),
                "[]",
                "needs at least one name",
            ));
        }
        for (i, n) in d.iter().enumerate() {
            if !crate::fqdn::valid(n) {
                return Err(ctx.err(
                    &format!("{at}.domainNames[{i}]"),
                    n,
                    "not a domain name such as example.org or *.example.org",
                ));
            }
        }
        return Ok(PeerMatch::DomainNames(d.clone()));
    }
    Ok(PeerMatch::Unknown)
}

#[allow(clippy::too_many_arguments)]
fn rule(
    ctx: &Ctx,
    at: &str,
    index: usize,
    name: &Option<String>,
    action: &str,
    peers: Vec<PeerMatch>,
    protocols: &Option<Vec<cnp::ProtocolMatch>>,
    legacy: &Option<Vec<cnp::LegacyPort>>,
) -> Result<Rule> {
    let action = match action {
        "Accept" | "Allow" => Action::Accept,
        "Deny" => Action::Deny,
        "Pass" => Action::Pass,
        other => {
            return Err(ctx.err(
                &format!("{at}.action"),
                other,
                "must be Accept, Deny or Pass",
            ))
        }
    };
    if action != Action::Accept && peers.iter().any(|p| matches!(p, PeerMatch::DomainNames(_))) {
        // As the API's validation: a Deny on names could never be complete.
        return Err(ctx.err(
            &format!("{at}.action"),
            action.as_str(),
            "domainNames peers are only allowed in Accept rules",
        ));
    }
    if peers.is_empty() {
        let f = if at.contains("ingress") { "from" } else { "to" };
        return Err(ctx.err(&format!("{at}.{f}"), "[]", "needs at least one peer"));
    }
    let mut ports = Vec::new();
    for (i, p) in protocols.iter().flatten().enumerate() {
        ports.push(protocol(ctx, &format!("{at}.protocols[{i}]"), p)?);
    }
    for (i, p) in legacy.iter().flatten().enumerate() {
        ports.push(legacy_port(ctx, &format!("{at}.ports[{i}]"), p)?);
    }
    Ok(Rule {
        index,
        name: name.clone().filter(|n| !n.is_empty()),
        action,
        peers,
        ports,
    })
}

fn protocol(ctx: &Ctx, at: &str, p: &cnp::ProtocolMatch) -> Result<PortRule> {
    let mut found = Vec::new();
    for (proto, pp, field) in [
        (Protocol::Tcp, &p.tcp, "tcp"),
        (Protocol::Udp, &p.udp, "udp"),
        (Protocol::Sctp, &p.sctp, "sctp"),
    ] {
        if let Some(pp) = pp {
            let f = format!("{at}.{field}.destinationPort");
            let port = match &pp.destination_port {
                None => PortMatch::Any,
                Some(d) => match (d.number, &d.range) {
                    (Some(n), None) => {
                        let n = port_number(ctx, &format!("{f}.number"), n)?;
                        PortMatch::Range(n, n)
                    }
                    (None, Some(r)) => range(ctx, &format!("{f}.range"), r.start, r.end)?,
                    _ => return Err(ctx.err(&f, "", "set exactly one of number and range")),
                },
            };
            found.push(PortRule {
                protocol: Some(proto),
                port,
            });
        }
    }
    if let Some(n) = &p.destination_named_port {
        found.push(PortRule {
            protocol: None,
            port: PortMatch::Named(n.clone()),
        });
    }
    match found.len() {
        1 => Ok(found.remove(0)),
        _ => Err(ctx.err(
            at,
            "",
            "set exactly one of tcp, udp, sctp and destinationNamedPort",
        )),
    }
}

fn legacy_port(ctx: &Ctx, at: &str, p: &cnp::LegacyPort) -> Result<PortRule> {
    let proto = |f: &str, s: &Option<String>| match s.as_deref() {
        None => Ok(Protocol::Tcp),
        Some(s) => Protocol::parse(s).ok_or_else(|| ctx.err(f, s, "must be TCP, UDP or SCTP")),
    };
    match (&p.port_number, &p.named_port, &p.port_range) {
        (Some(n), None, None) => {
            let port = port_number(ctx, &format!("{at}.portNumber.port"), n.port)?;
            Ok(PortRule {
                protocol: Some(proto(&format!("{at}.portNumber.protocol"), &n.protocol)?),
                port: PortMatch::Range(port, port),
            })
        }
        (None, Some(name), None) => Ok(PortRule {
            protocol: None,
            port: PortMatch::Named(name.clone()),
        }),
        (None, None, Some(r)) => Ok(PortRule {
            protocol: Some(proto(&format!("{at}.portRange.protocol"), &r.protocol)?),
            port: range(ctx, &format!("{at}.portRange"), r.start, r.end)?,
        }),
        _ => Err(ctx.err(
            at,
            "",
            "set exactly one of portNumber, namedPort and portRange",
        )),
    }
}

fn range(ctx: &Ctx, at: &str, start: i32, end: i32) -> Result<PortMatch> {
    let s = port_number(ctx, &format!("{at}.start"), start)?;
    let e = port_number(ctx, &format!("{at}.end"), end)?;
    if e < s {
        return Err(ctx.err(&format!("{at}.end"), end, "must not be below start"));
    }
    Ok(PortMatch::Range(s, e))
}
