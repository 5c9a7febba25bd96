//! networking.k8s.io/v1 NetworkPolicy into the model, with the API's defaults applied:
//!
//! - no `policyTypes`: Ingress, plus Egress only when `egress` has rules (so a policy with
//!   egress rules and no types isolates ingress too, and `egress: []` isolates nothing);
//! - no `from`/`to` (or an empty list): every peer; no `ports`: every port and protocol;
//! - a port's protocol defaults to TCP; `endPort` makes `port..=endPort`;
//! - `podSelector` alone in a peer: the policy's namespace; with `namespaceSelector`: both.

use std::str::FromStr;

use ipnet::IpNet;
use k8s_openapi::api::networking::v1::{NetworkPolicy, NetworkPolicyPeer, NetworkPolicyPort};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::error::{Ctx, Result};
use crate::model::*;
use crate::selector::Selector;

pub fn compile(np: &NetworkPolicy) -> Result<Policy> {
    let ns = np
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".into());
    let name = np.metadata.name.clone().unwrap_or_default();
    let ctx = Ctx::new(format!("NetworkPolicy {ns}/{name}"));
    let Some(spec) = &np.spec else {
        return Err(ctx.err("spec", "null", "a NetworkPolicy needs a spec"));
    };
    let pods = match &spec.pod_selector {
        Some(s) => Selector::from_api(s, &ctx, "spec.podSelector")?,
        None => Selector::everything(),
    };
    let (mut ingress_type, mut egress_type) = (false, false);
    match &spec.policy_types {
        Some(types) if !types.is_empty() => {
            for (i, t) in types.iter().enumerate() {
                match t.as_str() {
                    "Ingress" => ingress_type = true,
                    "Egress" => egress_type = true,
                    other => {
                        return Err(ctx.err(
                            &format!("spec.policyTypes[{i}]"),
                            other,
                            "must be Ingress or Egress",
                        ))
                    }
                }
            }
        }
        _ => {
            ingress_type = true;
            egress_type = spec.egress.as_ref().is_some_and(|e| !e.is_empty());
        }
    }
    let mut ingress = Vec::new();
    for (i, r) in spec.ingress.iter().flatten().enumerate() {
        let at = format!("spec.ingress[{i}]");
        ingress.push(rule(
            &ctx,
            &ns,
            &at,
            "from",
            i,
            r.from.as_deref(),
            r.ports.as_deref(),
        )?);
    }
    let mut egress = Vec::new();
    for (i, r) in spec.egress.iter().flatten().enumerate() {
        let at = format!("spec.egress[{i}]");
        egress.push(rule(
            &ctx,
            &ns,
            &at,
            "to",
            i,
            r.to.as_deref(),
            r.ports.as_deref(),
        )?);
    }
    Ok(Policy {
        id: PolicyId::network_policy(&ns, &name),
        tier: Tier::NetworkPolicy,
        priority: 0,
        subject: Subject {
            namespaces: NamespaceMatch::Own(ns.clone()),
            pods,
        },
        // Rules of a direction the policy does not declare are ignored, as the API says.
        ingress: ingress_type.then_some(ingress),
        egress: egress_type.then_some(egress),
    })
}

fn rule(
    ctx: &Ctx,
    ns: &str,
    at: &str,
    peers_field: &str,
    index: usize,
    peers: Option<&[NetworkPolicyPeer]>,
    ports: Option<&[NetworkPolicyPort]>,
) -> Result<Rule> {
    let mut out_peers = Vec::new();
    for (i, p) in peers.unwrap_or_default().iter().enumerate() {
        out_peers.push(peer(ctx, ns, &format!("{at}.{peers_field}[{i}]"), p)?);
    }
    if out_peers.is_empty() {
        out_peers.push(PeerMatch::All);
    }
    let mut out_ports = Vec::new();
    for (i, p) in ports.unwrap_or_default().iter().enumerate() {
        out_ports.push(port(ctx, &format!("{at}.ports[{i}]"), p)?);
    }
    Ok(Rule {
        index,
        name: None,
        action: Action::Allow,
        peers: out_peers,
        ports: out_ports,
    })
}

fn peer(ctx: &Ctx, ns: &str, at: &str, p: &NetworkPolicyPeer) -> Result<PeerMatch> {
    if let Some(b) = &p.ip_block {
        if p.pod_selector.is_some() || p.namespace_selector.is_some() {
            return Err(ctx.err(
                &format!("{at}.ipBlock"),
                &b.cidr,
                "ipBlock must be alone in its peer (no podSelector or namespaceSelector)",
            ));
        }
        let cidr = parse_cidr(ctx, &format!("{at}.ipBlock.cidr"), &b.cidr)?;
        let mut except = Vec::new();
        for (i, e) in b.except.iter().flatten().enumerate() {
            let f = format!("{at}.ipBlock.except[{i}]");
            let net = parse_cidr(ctx, &f, e)?;
            if !cidr.contains(&net) || net.prefix_len() <= cidr.prefix_len() {
                return Err(ctx.err(
                    &f,
                    e,
                    &format!("must be a strict subset of the cidr {cidr}"),
                ));
            }
            except.push(net);
        }
        return Ok(PeerMatch::IpBlock { cidr, except });
    }
    let namespaces = match &p.namespace_selector {
        Some(s) => NamespaceMatch::Selected(Selector::from_api(
            s,
            ctx,
            &format!("{at}.namespaceSelector"),
        )?),
        None => NamespaceMatch::Own(ns.to_owned()),
    };
    let pods = match &p.pod_selector {
        Some(s) => Selector::from_api(s, ctx, &format!("{at}.podSelector"))?,
        None if p.namespace_selector.is_some() => Selector::everything(),
        None => {
            return Err(ctx.err(
                at,
                "{}",
                "a peer needs podSelector, namespaceSelector or ipBlock",
            ))
        }
    };
    Ok(PeerMatch::Pods { namespaces, pods })
}

fn port(ctx: &Ctx, at: &str, p: &NetworkPolicyPort) -> Result<PortRule> {
    let protocol = match &p.protocol {
        None => Protocol::Tcp,
        Some(s) => Protocol::parse(s)
            .ok_or_else(|| ctx.err(&format!("{at}.protocol"), s, "must be TCP, UDP or SCTP"))?,
    };
    let port = match (&p.port, p.end_port) {
        (None, None) => PortMatch::Any,
        (None, Some(e)) => {
            return Err(ctx.err(&format!("{at}.endPort"), e, "endPort needs a port"));
        }
        (Some(IntOrString::String(name)), end) => {
            if end.is_some() {
                return Err(ctx.err(
                    &format!("{at}.endPort"),
                    end.unwrap_or_default(),
                    "endPort needs a numeric port, not a named one",
                ));
            }
            if let Ok(n) = name.parse::<i32>() {
                // "80" as a string: the API refuses it; say so rather than guess.
                return Err(ctx.err(
                    &format!("{at}.port"),
                    n,
                    "a numeric port must be an integer, not a string",
                ));
            }
            if name.is_empty() || name.len() > 15 {
                return Err(ctx.err(
                    &format!("{at}.port"),
                    name,
                    "a named port has 1 to 15 characters",
                ));
            }
            PortMatch::Named(name.clone())
        }
        (Some(IntOrString::Int(n)), end) => {
            let start = port_number(ctx, &format!("{at}.port"), *n)?;
            match end {
                None => PortMatch::Range(start, start),
                Some(e) => {
                    let end = port_number(ctx, &format!("{at}.endPort"), e)?;
                    if end < start {
                        return Err(ctx.err(
                            &format!("{at}.endPort"),
                            e,
                            &format!("must not be below port {start}"),
                        ));
                    }
                    PortMatch::Range(start, end)
                }
            }
        }
    };
    Ok(PortRule {
        protocol: Some(protocol),
        port,
    })
}

pub(crate) fn port_number(ctx: &Ctx, at: &str, n: i32) -> Result<u16> {
    match u16::try_from(n) {
        Ok(p) if p > 0 => Ok(p),
        _ => Err(ctx.err(at, n, "a port is 1 to 65535")),
    }
}

/// A CIDR; host bits are cleared (`10.0.0.1/24` is `10.0.0.0/24`), a bare address is a
/// host route.
pub(crate) fn parse_cidr(ctx: &Ctx, at: &str, s: &str) -> Result<IpNet> {
    if let Ok(n) = IpNet::from_str(s) {
        return Ok(n.trunc());
    }
    match std::net::IpAddr::from_str(s) {
        Ok(a) => Ok(IpNet::from(a)),
        Err(_) => Err(ctx.err(at, s, "not a CIDR such as 10.0.0.0/8 or fd00::/8")),
    }
}
