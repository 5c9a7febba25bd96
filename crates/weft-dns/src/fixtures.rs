//! Small constructors for the objects the model takes, for tests here and in the lab.
//! Each fills only what DNS reads.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Node, NodeAddress, NodeStatus, Pod, PodIP, PodStatus, Service, ServicePort, ServiceSpec,
};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::records::SERVICE_NAME_LABEL;

fn meta(ns: &str, name: &str) -> ObjectMeta {
    ObjectMeta {
        namespace: Some(ns.into()),
        name: Some(name.into()),
        ..ObjectMeta::default()
    }
}

/// A port: (name, port, protocol); an empty name is an unnamed port.
pub type Port<'a> = (&'a str, u16, &'a str);

/// A ClusterIP Service with these cluster IPs (first one is `clusterIP`).
pub fn service(ns: &str, name: &str, cluster_ips: &[&str], ports: &[Port]) -> Service {
    Service {
        metadata: meta(ns, name),
        spec: Some(ServiceSpec {
            cluster_ip: cluster_ips.first().map(|s| s.to_string()),
            cluster_ips: Some(cluster_ips.iter().map(|s| s.to_string()).collect()),
            ports: Some(
                ports
                    .iter()
                    .map(|(n, p, proto)| ServicePort {
                        name: (!n.is_empty()).then(|| n.to_string()),
                        port: *p as i32,
                        protocol: Some(proto.to_string()),
                        ..ServicePort::default()
                    })
                    .collect(),
            ),
            type_: Some("ClusterIP".into()),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

pub fn headless(ns: &str, name: &str, ports: &[Port], publish_not_ready: bool) -> Service {
    let mut s = service(ns, name, &["None"], ports);
    if let Some(spec) = s.spec.as_mut() {
        spec.publish_not_ready_addresses = Some(publish_not_ready);
    }
    s
}

pub fn external_name(ns: &str, name: &str, target: &str) -> Service {
    Service {
        metadata: meta(ns, name),
        spec: Some(ServiceSpec {
            type_: Some("ExternalName".into()),
            external_name: Some(target.into()),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

/// An endpoint: (address, hostname, ready); `ready: None` leaves the condition out.
pub type Ep<'a> = (&'a str, Option<&'a str>, Option<bool>);

pub fn slice(
    ns: &str,
    name: &str,
    service: &str,
    family: &str,
    eps: &[Ep],
    ports: &[Port],
) -> EndpointSlice {
    let mut m = meta(ns, name);
    m.labels = Some(BTreeMap::from([(
        SERVICE_NAME_LABEL.to_string(),
        service.to_string(),
    )]));
    EndpointSlice {
        metadata: m,
        address_type: family.into(),
        endpoints: Some(
            eps.iter()
                .map(|(addr, host, ready)| Endpoint {
                    addresses: vec![addr.to_string()],
                    hostname: host.map(str::to_string),
                    conditions: Some(EndpointConditions {
                        ready: *ready,
                        ..EndpointConditions::default()
                    }),
                    ..Endpoint::default()
                })
                .collect(),
        ),
        ports: Some(
            ports
                .iter()
                .map(|(n, p, proto)| EndpointPort {
                    name: (!n.is_empty()).then(|| n.to_string()),
                    port: Some(*p as i32),
                    protocol: Some(proto.to_string()),
                    ..EndpointPort::default()
                })
                .collect(),
        ),
    }
}

pub fn pod(ns: &str, name: &str, ips: &[&str]) -> Pod {
    Pod {
        metadata: meta(ns, name),
        status: Some(PodStatus {
            phase: Some("Running".into()),
            pod_ip: ips.first().map(|s| s.to_string()),
            pod_ips: Some(ips.iter().map(|ip| PodIP { ip: ip.to_string() }).collect()),
            ..PodStatus::default()
        }),
        ..Pod::default()
    }
}

pub fn node(name: &str, internal_ips: &[&str]) -> Node {
    Node {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..ObjectMeta::default()
        },
        status: Some(NodeStatus {
            addresses: Some(
                internal_ips
                    .iter()
                    .map(|ip| NodeAddress {
                        type_: "InternalIP".into(),
                        address: ip.to_string(),
                    })
                    .collect(),
            ),
            ..NodeStatus::default()
        }),
        ..Node::default()
    }
}
