//! The Kubernetes DNS specification (schema 1.1.0) as pure functions from objects to
//! records. Nothing here looks at the network or at other objects than the ones given:
//! [`crate::model::Model`] decides which objects to compile together and keeps the result.
//!
//! Choices where the specification leaves room, all as CoreDNS's kubernetes plugin does
//! them unless said otherwise:
//! - a Service's own name exists while it has records, and a ClusterIP or ExternalName
//!   Service's name always does (NODATA for the other address family); a headless
//!   Service without ready endpoints has no name at all, NXDOMAIN, as the specification
//!   says it should be;
//! - a headless endpoint without `hostname` is named by its dashed address
//!   (`10-244-1-3`, `fd00--1`), and gets a PTR like one with a hostname;
//! - `<hostname>.<subdomain>.<ns>.svc` names for pods come only from the endpoints of the
//!   headless Service named `<subdomain>`, which carry the pod's `spec.hostname` when the
//!   EndpointSlice controller put it there; a Pod object alone never makes that name;
//! - pod names `a-b-c-d.<ns>.pod` exist only for a running Pod with that IP in that
//!   namespace (CoreDNS's `pods verified`), never for any well-formed address.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;

use crate::name::{dashed, label, reverse, to_wire};

/// The label on an EndpointSlice that names its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// `dns-version.<zone>` TXT.
pub const SCHEMA_VERSION: &str = "1.1.0";

pub const TYPE_A: u16 = 1;
pub const TYPE_NS: u16 = 2;
pub const TYPE_CNAME: u16 = 5;
pub const TYPE_SOA: u16 = 6;
pub const TYPE_PTR: u16 = 12;
pub const TYPE_TXT: u16 = 16;
pub const TYPE_AAAA: u16 = 28;
pub const TYPE_SRV: u16 = 33;
pub const TYPE_OPT: u16 = 41;
pub const TYPE_IXFR: u16 = 251;
pub const TYPE_AXFR: u16 = 252;
pub const TYPE_ANY: u16 = 255;

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RData {
    A(Ipv4Addr),
    Aaaa(Ipv6Addr),
    Cname(String),
    Ptr(String),
    Ns(String),
    Srv {
        priority: u16,
        weight: u16,
        port: u16,
        target: String,
    },
    Txt(String),
    /// No record: the name exists (answers NODATA rather than NXDOMAIN) while it is held.
    Exists,
}

impl RData {
    pub fn rtype(&self) -> Option<u16> {
        Some(match self {
            RData::A(_) => TYPE_A,
            RData::Aaaa(_) => TYPE_AAAA,
            RData::Cname(_) => TYPE_CNAME,
            RData::Ptr(_) => TYPE_PTR,
            RData::Ns(_) => TYPE_NS,
            RData::Srv { .. } => TYPE_SRV,
            RData::Txt(_) => TYPE_TXT,
            RData::Exists => return None,
        })
    }

    /// The RDATA as it goes on the wire (names uncompressed), `None` for [`RData::Exists`]
    /// or a target that is not a valid name.
    pub fn to_wire(&self) -> Option<Vec<u8>> {
        Some(match self {
            RData::A(ip) => ip.octets().to_vec(),
            RData::Aaaa(ip) => ip.octets().to_vec(),
            RData::Cname(n) | RData::Ptr(n) | RData::Ns(n) => to_wire(n)?,
            RData::Srv {
                priority,
                weight,
                port,
                target,
            } => {
                let mut v = Vec::with_capacity(6 + target.len() + 2);
                v.extend(priority.to_be_bytes());
                v.extend(weight.to_be_bytes());
                v.extend(port.to_be_bytes());
                v.extend(to_wire(target)?);
                v
            }
            RData::Txt(s) => {
                let mut v = Vec::with_capacity(s.len() + 1);
                for chunk in s.as_bytes().chunks(255) {
                    v.push(chunk.len() as u8);
                    v.extend(chunk);
                }
                if s.is_empty() {
                    v.push(0);
                }
                v
            }
            RData::Exists => return None,
        })
    }
}

/// One record: owner name (lowercase, no trailing dot) and data. The TTL is the zone's.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Record {
    pub name: String,
    pub data: RData,
}

fn rec(name: impl Into<String>, data: RData) -> Record {
    Record {
        name: name.into(),
        data,
    }
}

fn addr_record(name: &str, ip: IpAddr) -> Record {
    match ip {
        IpAddr::V4(v4) => rec(name, RData::A(v4)),
        IpAddr::V6(v6) => rec(name, RData::Aaaa(v6)),
    }
}

/// The Service an EndpointSlice belongs to (its `kubernetes.io/service-name` label).
pub fn slice_service(slice: &EndpointSlice) -> Option<&str> {
    slice
        .metadata
        .labels
        .as_ref()?
        .get(SERVICE_NAME_LABEL)
        .map(String::as_str)
}

/// Whether a Service is headless (`clusterIP: None`).
pub fn is_headless(svc: &Service) -> bool {
    let Some(spec) = &svc.spec else { return false };
    spec.cluster_ip.as_deref() == Some("None")
        || spec
            .cluster_ips
            .as_ref()
            .is_some_and(|ips| ips.iter().any(|ip| ip == "None"))
}

fn proto_label(p: Option<&str>) -> String {
    format!("_{}", p.unwrap_or("TCP").to_ascii_lowercase())
}

/// The records of one Service: its name and, for a headless one, its ready endpoints
/// from `slices` (those of other Services are ignored, so callers may pass any superset).
pub fn service_records(zone: &str, svc: &Service, slices: &[&EndpointSlice]) -> BTreeSet<Record> {
    let mut out = BTreeSet::new();
    let (Some(ns), Some(name)) = (
        svc.metadata.namespace.as_deref().and_then(label),
        svc.metadata.name.as_deref().and_then(label),
    ) else {
        return out;
    };
    let Some(spec) = &svc.spec else { return out };
    let base = format!("{name}.{ns}.svc.{zone}");
    let headless = is_headless(svc);
    if !headless {
        out.insert(rec(&base, RData::Exists));
    }

    if spec.type_.as_deref() == Some("ExternalName") {
        if let Some(target) = spec.external_name.as_deref() {
            let target = target
                .strip_suffix('.')
                .unwrap_or(target)
                .to_ascii_lowercase();
            if to_wire(&target).is_some() {
                out.insert(rec(&base, RData::Cname(target)));
            }
        }
        return out;
    }

    if headless {
        let publish_not_ready = spec.publish_not_ready_addresses.unwrap_or(false);
        for slice in slices {
            if slice.metadata.namespace.as_deref() != svc.metadata.namespace.as_deref()
                || slice_service(slice) != svc.metadata.name.as_deref()
            {
                continue;
            }
            endpoint_records(&base, slice, publish_not_ready, &mut out);
        }
        return out;
    }

    let ips: Vec<&str> = match (&spec.cluster_ips, &spec.cluster_ip) {
        (Some(ips), _) if !ips.is_empty() => ips.iter().map(String::as_str).collect(),
        (_, Some(ip)) => vec![ip.as_str()],
        _ => vec![],
    };
    let ips: Vec<IpAddr> = ips.iter().filter_map(|s| s.parse().ok()).collect();
    for &ip in &ips {
        out.insert(addr_record(&base, ip));
        out.insert(rec(reverse(ip), RData::Ptr(base.clone())));
    }
    if !ips.is_empty() {
        for port in spec.ports.iter().flatten() {
            let (Some(pname), Ok(p)) = (
                port.name.as_deref().and_then(label),
                u16::try_from(port.port),
            ) else {
                continue;
            };
            let owner = format!("_{pname}.{}.{base}", proto_label(port.protocol.as_deref()));
            out.insert(rec(owner, srv(p, &base)));
        }
    }
    out
}

fn srv(port: u16, target: &str) -> RData {
    RData::Srv {
        priority: 0,
        weight: 100,
        port,
        target: target.to_string(),
    }
}

fn endpoint_records(
    base: &str,
    slice: &EndpointSlice,
    publish_not_ready: bool,
    out: &mut BTreeSet<Record>,
) {
    if slice.address_type != "IPv4" && slice.address_type != "IPv6" {
        return;
    }
    let ports: Vec<(String, u16)> = slice
        .ports
        .iter()
        .flatten()
        .filter_map(|p| {
            let name = p.name.as_deref().and_then(label)?;
            let port = u16::try_from(p.port?).ok()?;
            Some((
                format!("_{name}.{}.{base}", proto_label(p.protocol.as_deref())),
                port,
            ))
        })
        .collect();
    for ep in slice.endpoints.iter().flatten() {
        // EndpointSlice semantics: an absent `ready` means ready.
        let ready = ep.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true);
        if !ready && !publish_not_ready {
            continue;
        }
        for addr in &ep.addresses {
            let Ok(ip) = addr.parse::<IpAddr>() else {
                continue;
            };
            let host = ep
                .hostname
                .as_deref()
                .and_then(label)
                .unwrap_or_else(|| dashed(ip));
            let host_name = format!("{host}.{base}");
            out.insert(addr_record(base, ip));
            out.insert(addr_record(&host_name, ip));
            out.insert(rec(reverse(ip), RData::Ptr(host_name.clone())));
            for (owner, port) in &ports {
                out.insert(rec(owner, srv(*port, &host_name)));
            }
        }
    }
}

/// A Pod's `a-b-c-d.<ns>.pod.<zone>` records, one per pod IP; none for a pod that has
/// finished (its IP may already belong to another pod).
pub fn pod_records(zone: &str, pod: &Pod) -> BTreeSet<Record> {
    let mut out = BTreeSet::new();
    let Some(ns) = pod.metadata.namespace.as_deref().and_then(label) else {
        return out;
    };
    let Some(status) = &pod.status else {
        return out;
    };
    if matches!(status.phase.as_deref(), Some("Succeeded") | Some("Failed")) {
        return out;
    }
    let mut ips: Vec<&str> = status
        .pod_ips
        .iter()
        .flatten()
        .map(|p| p.ip.as_str())
        .collect();
    if ips.is_empty() {
        ips.extend(status.pod_ip.as_deref());
    }
    for ip in ips.iter().filter_map(|s| s.parse::<IpAddr>().ok()) {
        out.insert(addr_record(&format!("{}.{ns}.pod.{zone}", dashed(ip)), ip));
    }
    out
}

/// A Namespace makes `<ns>.svc.<zone>` and `<ns>.pod.<zone>` exist (NODATA) even before
/// it has Services or pods.
pub fn namespace_records(zone: &str, namespace: &str) -> BTreeSet<Record> {
    let Some(ns) = label(namespace) else {
        return BTreeSet::new();
    };
    [
        rec(format!("{ns}.svc.{zone}"), RData::Exists),
        rec(format!("{ns}.pod.{zone}"), RData::Exists),
    ]
    .into_iter()
    .collect()
}

/// Every object's records at once: what the incremental model must always equal.
pub fn compile<'a>(
    zone: &str,
    services: impl IntoIterator<Item = &'a Service>,
    slices: &[&EndpointSlice],
    pods: impl IntoIterator<Item = &'a Pod>,
    namespaces: impl IntoIterator<Item = &'a str>,
) -> BTreeSet<Record> {
    let mut out = BTreeSet::new();
    for svc in services {
        out.extend(service_records(zone, svc, slices));
    }
    for pod in pods {
        out.extend(pod_records(zone, pod));
    }
    for ns in namespaces {
        out.extend(namespace_records(zone, ns));
    }
    out
}
