//! A Service's ClusterIPs (one per IP family), NodePorts, health check port and
//! LoadBalancer address, taken from the store's allocators ([`crate::allocator`]): no
//! other Service is read, so a create costs the same at 30 Services and at 30k.
//!
//! Admission only writes the chosen values into the object; the values become taken
//! when the transaction writes it, and free again when a later write drops them.

use crate::allocator::{ip_of, random_start, Pool, View};
use crate::error::{ApiError, Cause};
use crate::server::NetConfig;
use crate::store::Tx;
use axum::http::StatusCode;
use k8s_openapi::api::core::v1::{
    LoadBalancerIngress, LoadBalancerStatus, Service, ServiceSpec, ServiceStatus,
};
use std::net::IpAddr;

const V4: &str = "IPv4";
const V6: &str = "IPv6";

fn strings(v: Option<&Vec<String>>) -> Vec<String> {
    let items = v.into_iter().flatten().filter(|s| !s.is_empty());
    items.cloned().collect()
}

/// A stored Service's ClusterIPs: `clusterIPs`, or `clusterIP` written without it.
fn ips_of(spec: &ServiceSpec) -> Vec<String> {
    let ips = strings(spec.cluster_ips.as_ref());
    if !ips.is_empty() {
        return ips;
    }
    let single = spec.cluster_ip.iter().filter(|s| !s.is_empty());
    single.cloned().collect()
}

fn spec_of(svc: &Service) -> Option<&ServiceSpec> {
    svc.spec.as_ref()
}

/// kube-apiserver answers a full range with 500 InternalError; the message names the range.
fn range_full(what: &str, free: &str, range: &str) -> ApiError {
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "InternalError",
        format!("failed to allocate a {what}: no free {free} in {range} (the range is full)"),
    )
}

/// `old` is the stored Service, typed.
pub fn allocate_service(
    tx: &Tx,
    net: &NetConfig,
    svc: &mut Service,
    old: Option<&Service>,
) -> Result<(), ApiError> {
    let view = tx.allocations();
    // What this Service holds already: it may keep those values.
    let own = old.map(|o| view.alloc.held(o)).unwrap_or_default();
    let name = svc.metadata.name.clone().unwrap_or_default();
    let ns = svc.metadata.namespace.as_deref().unwrap_or("");
    let is_kubernetes = ns == "default" && name == "kubernetes";
    let invalid = |c: Cause| ApiError::invalid("Service", &name, vec![c]);
    let Some(spec) = svc.spec.as_mut() else {
        return Ok(());
    };
    let ty = spec.type_.clone().unwrap_or_else(|| "ClusterIP".into());
    if ty == "ExternalName" {
        return Ok(());
    }
    let old_spec = old.and_then(spec_of);
    cluster_ips(&view, net, spec, old_spec, &own, is_kubernetes).map_err(|e| match e {
        Failure::Invalid(c) => invalid(c),
        Failure::Api(e) => e,
    })?;
    let wants_node_ports = ty == "NodePort" || ty == "LoadBalancer";
    let mine = if wants_node_ports {
        node_ports(&view, spec, old_spec, &own).map_err(|e| match e {
            Failure::Invalid(c) => invalid(c),
            Failure::Api(e) => e,
        })?
    } else {
        Vec::new()
    };
    let old_health = old_spec
        .and_then(|o| o.health_check_node_port)
        .and_then(|n| u64::try_from(n).ok());
    health_check_port(&view, spec, ty == "LoadBalancer", old_health, &own, &mine).map_err(invalid)
}

enum Failure {
    Invalid(Cause),
    Api(ApiError),
}

impl From<Cause> for Failure {
    fn from(c: Cause) -> Self {
        Failure::Invalid(c)
    }
}

/// The Service's IP families from its ClusterIPs, `ipFamilies` and `ipFamilyPolicy`, as
/// kube-apiserver derives them; returns (families, policy).
fn families(
    net: &NetConfig,
    spec: &ServiceSpec,
    old: Option<&ServiceSpec>,
    ips: &[String],
) -> Result<(Vec<&'static str>, String), Cause> {
    let mut fams: Vec<&'static str> = Vec::new();
    for (i, s) in ips.iter().enumerate() {
        let ip: IpAddr = s.parse().map_err(|_| {
            Cause::invalid(
                format!("spec.clusterIPs[{i}]"),
                s,
                "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)",
            )
        })?;
        fams.push(if ip.is_ipv4() { V4 } else { V6 });
    }
    let mut asked = strings(spec.ip_families.as_ref());
    if asked.is_empty() {
        asked = old
            .map(|o| strings(o.ip_families.as_ref()))
            .unwrap_or_default();
    }
    for (i, f) in asked.iter().enumerate() {
        let fam = match f.as_str() {
            V4 => V4,
            V6 => V6,
            other => {
                let field = format!("spec.ipFamilies[{i}]");
                return Err(Cause::not_supported(field, other, &[V4, V6]));
            }
        };
        match fams.get(i) {
            Some(have) if *have != fam => {
                return Err(Cause::invalid(
                    format!("spec.ipFamilies[{i}]"),
                    fam,
                    &format!("must match the IP family of spec.clusterIPs[{i}] ({have})"),
                ))
            }
            Some(_) => {}
            None => fams.push(fam),
        }
    }
    if fams.is_empty() {
        fams.push(V4);
    }
    if fams.len() > 2 || (fams.len() == 2 && fams[0] == fams[1]) {
        return Err(Cause::duplicate("spec.ipFamilies[1]", fams[1]));
    }
    let policy = match spec.ip_family_policy.as_deref().filter(|s| !s.is_empty()) {
        Some(p) => p.to_string(),
        None if fams.len() == 2 => "RequireDualStack".to_string(),
        None => old
            .and_then(|o| o.ip_family_policy.as_deref())
            .unwrap_or("SingleStack")
            .to_string(),
    };
    let dual = net.service_cidr_v6.is_some();
    let other = if fams[0] == V4 { V6 } else { V4 };
    match policy.as_str() {
        "SingleStack" => fams.truncate(1),
        "PreferDualStack" if dual && fams.len() == 1 => fams.push(other),
        "PreferDualStack" if !dual => fams.truncate(1),
        "PreferDualStack" => {}
        "RequireDualStack" if !dual => {
            return Err(Cause::invalid(
                "spec.ipFamilyPolicy",
                "RequireDualStack",
                "this cluster is not configured for dual-stack services",
            ))
        }
        "RequireDualStack" if fams.len() == 1 => fams.push(other),
        "RequireDualStack" => {}
        p => {
            let supported = ["SingleStack", "PreferDualStack", "RequireDualStack"];
            return Err(Cause::not_supported("spec.ipFamilyPolicy", p, &supported));
        }
    }
    if let Some(i) = fams.iter().position(|f| *f == V6 && !dual) {
        return Err(Cause::invalid(
            format!("spec.ipFamilies[{i}]"),
            V6,
            "not configured on this cluster",
        ));
    }
    Ok((fams, policy))
}

/// ClusterIPs: the primary is immutable once set; `None` means headless; a secondary is
/// allocated when the family policy gains a family and released when it loses one.
fn cluster_ips(
    view: &View,
    net: &NetConfig,
    spec: &mut ServiceSpec,
    old: Option<&ServiceSpec>,
    own: &[(Pool, u64)],
    is_kubernetes: bool,
) -> Result<(), Failure> {
    let old_ips = old.map(ips_of).unwrap_or_default();
    let single_owned = spec.cluster_ip.clone();
    let single = single_owned.as_deref().filter(|s| !s.is_empty());
    let given = strings(spec.cluster_ips.as_ref());
    if let Some(o) = old_ips.first() {
        for asked in [single, given.first().map(String::as_str)]
            .into_iter()
            .flatten()
        {
            if asked != o {
                let detail = format!("may not change once set (was {o})");
                return Err(Cause::invalid("spec.clusterIPs[0]", asked, &detail).into());
            }
        }
    }
    // A write that leaves the ClusterIPs out keeps the stored ones, as kube-apiserver does.
    let mut ips = match (given.is_empty(), single) {
        (false, _) => given.clone(),
        (true, Some(s)) if old_ips.first().map(String::as_str) != Some(s) => vec![s.to_string()],
        (true, _) => old_ips.clone(),
    };
    if let (Some(s), Some(first)) = (single, ips.first()) {
        if s != first {
            return Err(
                Cause::invalid("spec.clusterIPs[0]", first, "must match `clusterIP`").into(),
            );
        }
    }
    if ips.first().is_some_and(|ip| ip == "None") {
        if ips.len() > 1 {
            let c = Cause::invalid(
                "spec.clusterIPs[1]",
                &ips[1],
                "must be empty when the first is 'None'",
            );
            return Err(c.into());
        }
        spec.cluster_ip = Some("None".into());
        spec.cluster_ips = Some(vec!["None".into()]);
        return Ok(());
    }
    let (fams, policy) = families(net, spec, old, &ips)?;
    if old.is_none() && given.len() > fams.len() {
        let i = fams.len();
        let detail = format!("only {i} address(es) for ipFamilyPolicy {policy}");
        return Err(Cause::invalid(format!("spec.clusterIPs[{i}]"), &given[i], &detail).into());
    }
    ips.truncate(fams.len());
    if let (Some(o), Some(n)) = (old_ips.get(1), ips.get(1)) {
        if o != n && fams.len() == 2 && old_ips.len() == 2 {
            let detail = format!("may not change once set (was {o})");
            return Err(Cause::invalid("spec.clusterIPs[1]", n, &detail).into());
        }
    }
    for (i, fam) in fams.iter().enumerate() {
        let pool = if *fam == V4 {
            Pool::ClusterV4
        } else {
            Pool::ClusterV6
        };
        let Some(range) = view.range(pool) else {
            let c = Cause::invalid(
                format!("spec.ipFamilies[{i}]"),
                fam,
                "not configured on this cluster",
            );
            return Err(c.into());
        };
        match ips.get(i) {
            Some(ip) if old_ips.get(i) == Some(ip) => {}
            Some(ip) => {
                let off = ip.parse().ok().and_then(|a| range.ip_offset(a));
                let Some(off) = off else {
                    let detail = format!("failed to allocate IP {ip}: provided IP is not in the valid range. The range of valid IPs is {}", range.name);
                    return Err(Cause::invalid("spec.clusterIPs", ip, &detail).into());
                };
                if view.taken_by_other(pool, off, own) {
                    let detail =
                        format!("failed to allocate IP {ip}: provided IP is already allocated");
                    return Err(Cause::invalid("spec.clusterIPs", ip, &detail).into());
                }
            }
            // A write that names only the primary keeps the secondary the Service has.
            None if old_ips
                .get(i)
                .and_then(|o| o.parse::<IpAddr>().ok())
                .is_some_and(|o| o.is_ipv4() == (*fam == V4)) =>
            {
                ips.push(old_ips[i].clone());
            }
            None => {
                // .1 is the `kubernetes` Service's, .10 cluster DNS's: handed out only
                // when asked for.
                let kubernetes =
                    (is_kubernetes && i == 0 && !view.taken_by_other(pool, 1, own)).then_some(1);
                let off = kubernetes.or_else(|| {
                    view.find_free(pool, random_start(), |o| {
                        range.is_host(o) && o != 1 && o != 10
                    })
                });
                let Some(off) = off else {
                    return Err(Failure::Api(range_full(
                        "serviceIP",
                        "cluster IP",
                        &range.name,
                    )));
                };
                ips.push(ip_of(pool, range.value(off)).to_string());
            }
        }
    }
    spec.cluster_ip = Some(ips[0].clone());
    spec.cluster_ips = Some(ips);
    spec.ip_families = Some(fams.iter().map(|f| f.to_string()).collect());
    spec.ip_family_policy = Some(policy);
    Ok(())
}

/// NodePorts of a NodePort or LoadBalancer Service; returns them with their protocols
/// (one number may serve TCP and UDP of one Service).
fn node_ports(
    view: &View,
    spec: &mut ServiceSpec,
    old: Option<&ServiceSpec>,
    own: &[(Pool, u64)],
) -> Result<Vec<(u16, String)>, Failure> {
    let Some(range) = view.range(Pool::NodePort) else {
        return Ok(Vec::new());
    };
    let taken = |n: u64| {
        range
            .port_offset(n)
            .is_some_and(|off| view.taken_by_other(Pool::NodePort, off, own))
    };
    let old_ports = old.and_then(|o| o.ports.as_deref()).unwrap_or_default();
    let Some(ports) = spec.ports.as_mut() else {
        return Ok(Vec::new());
    };
    let mut mine: Vec<(u16, String)> = Vec::new();
    for (i, p) in ports.iter_mut().enumerate() {
        let asked = p.node_port.and_then(|n| u64::try_from(n).ok());
        let asked = asked.filter(|n| *n > 0);
        let proto = p.protocol.clone().unwrap_or_else(|| "TCP".into());
        let field = format!("spec.ports[{i}].nodePort");
        let port = match asked {
            Some(n) => {
                if range.port_offset(n).is_none() {
                    let detail = format!(
                        "provided port is not in the valid range. The range of valid ports is {}",
                        range.name
                    );
                    return Err(Cause::invalid(field, n, &detail).into());
                }
                if taken(n) {
                    return Err(
                        Cause::invalid(field, n, "provided port is already allocated").into(),
                    );
                }
                if mine
                    .iter()
                    .any(|(m, pr)| u64::from(*m) == n && *pr == proto)
                {
                    return Err(Cause::duplicate(field, n).into());
                }
                n as u16
            }
            None => {
                let kept = old_ports
                    .iter()
                    .find(|o| o.port == p.port && o.protocol == p.protocol)
                    .and_then(|o| o.node_port)
                    .and_then(|n| u64::try_from(n).ok())
                    .filter(|n| range.port_offset(*n).is_some() && !taken(*n))
                    .filter(|n| !mine.iter().any(|(m, _)| u64::from(*m) == *n));
                let fresh = || {
                    let off = view.find_free(Pool::NodePort, random_start(), |o| {
                        !mine
                            .iter()
                            .any(|(m, _)| range.port_offset(u64::from(*m)) == Some(o))
                    })?;
                    Some(range.value(off) as u64)
                };
                match kept.or_else(fresh) {
                    Some(n) => n as u16,
                    None => {
                        return Err(Failure::Api(range_full(
                            "nodePort",
                            "node port",
                            &range.name,
                        )))
                    }
                }
            }
        };
        p.node_port = Some(i32::from(port));
        mine.push((port, proto));
    }
    Ok(mine)
}

/// A LoadBalancer Service with `externalTrafficPolicy: Local` gets `healthCheckNodePort`:
/// where each node tells the load balancer whether it has local endpoints.
fn health_check_port(
    view: &View,
    spec: &mut ServiceSpec,
    load_balancer: bool,
    old: Option<u64>,
    own: &[(Pool, u64)],
    mine: &[(u16, String)],
) -> Result<(), Cause> {
    let wanted = load_balancer && spec.external_traffic_policy.as_deref() == Some("Local");
    if !wanted {
        spec.health_check_node_port = None;
        return Ok(());
    }
    let Some(range) = view.range(Pool::NodePort) else {
        return Ok(());
    };
    let free = |n: u64| match range.port_offset(n) {
        Some(off) => {
            !view.taken_by_other(Pool::NodePort, off, own)
                && !mine.iter().any(|(p, _)| u64::from(*p) == n)
        }
        None => false,
    };
    let asked = spec
        .health_check_node_port
        .and_then(|n| u64::try_from(n).ok());
    let asked = asked.filter(|n| *n > 0);
    let port = match asked {
        Some(n) if free(n) => n,
        Some(n) => {
            let detail = format!("must be a free port in {}", range.name);
            return Err(Cause::invalid("spec.healthCheckNodePort", n, &detail));
        }
        None => {
            let fresh = || {
                let off = view.find_free(Pool::NodePort, random_start(), |o| {
                    free(range.value(o) as u64)
                })?;
                Some(range.value(off) as u64)
            };
            match old.filter(|n| free(*n)).or_else(fresh) {
                Some(n) => n,
                None => {
                    return Err(Cause::invalid(
                        "spec.healthCheckNodePort",
                        0,
                        "no free port left in the NodePort range",
                    ))
                }
            }
        }
    };
    spec.health_check_node_port = i32::try_from(port).ok();
    Ok(())
}

/// LoadBalancer Services get an ingress IP from `--load-balancer-cidr` (honouring
/// `spec.loadBalancerIP` when it is in the pool and free, else the lowest free address),
/// in `status.loadBalancer`; a Service that stops being a LoadBalancer gives it back.
pub fn allocate_load_balancer(tx: &Tx, svc: &mut Service, old: Option<&Service>) {
    let view = tx.allocations();
    let Some(range) = view.range(Pool::LoadBalancer) else {
        return;
    };
    let is_lb = spec_of(svc).and_then(|s| s.type_.as_deref()) == Some("LoadBalancer");
    let lb = svc.status.as_ref().and_then(|s| s.load_balancer.as_ref());
    let first = lb.and_then(|l| l.ingress.as_ref()?.first()?.ip.clone());
    let current = first.and_then(|s| s.parse::<IpAddr>().ok());
    let status = |svc: &mut Service, lb: LoadBalancerStatus| {
        svc.status
            .get_or_insert_with(ServiceStatus::default)
            .load_balancer = Some(lb);
    };
    if !is_lb {
        if current.is_some_and(|ip| range.ip_offset(ip).is_some()) {
            status(svc, LoadBalancerStatus::default());
        }
        return;
    }
    if current.is_some() {
        return;
    }
    let own = old.map(|o| view.alloc.held(o)).unwrap_or_default();
    let free = |ip: IpAddr| {
        range
            .ip_offset(ip)
            .filter(|o| range.is_host(*o) && !view.taken_by_other(Pool::LoadBalancer, *o, &own))
    };
    let asked = spec_of(svc)
        .and_then(|s| s.load_balancer_ip.as_deref())
        .and_then(|s| s.parse::<IpAddr>().ok())
        .and_then(free);
    let off = asked.or_else(|| view.find_free(Pool::LoadBalancer, 0, |o| range.is_host(o)));
    match off {
        Some(off) => {
            let ip = ip_of(Pool::LoadBalancer, range.value(off));
            let ingress = LoadBalancerIngress {
                ip: Some(ip.to_string()),
                ip_mode: Some("VIP".into()),
                ..Default::default()
            };
            let lb = LoadBalancerStatus {
                ingress: Some(vec![ingress]),
            };
            status(svc, lb);
        }
        None => tracing::warn!(
            "no LoadBalancer address left in {} for {}/{}",
            range.name,
            svc.metadata.namespace.as_deref().unwrap_or(""),
            svc.metadata.name.as_deref().unwrap_or("")
        ),
    }
}
