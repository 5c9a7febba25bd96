//! A Service as the proxy sees it: the ports to forward and on which addresses, and the
//! policies that decide which endpoints each kind of traffic may reach.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use std::time::Duration;

use k8s_openapi::api::core::v1::Service;

/// Services with this label belong to another proxy (kube-proxy honours it too).
pub const PROXY_NAME_LABEL: &str = "service.kubernetes.io/service-proxy-name";

/// kube-proxy's default for `sessionAffinityConfig.clientIP.timeoutSeconds`.
pub const DEFAULT_AFFINITY: Duration = Duration::from_secs(10800);

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Protocol {
    Tcp,
    Udp,
    Sctp,
}

impl Protocol {
    pub fn parse(s: Option<&str>) -> Option<Protocol> {
        match s.unwrap_or("TCP") {
            "TCP" => Some(Protocol::Tcp),
            "UDP" => Some(Protocol::Udp),
            "SCTP" => Some(Protocol::Sctp),
            _ => None,
        }
    }

    /// The IP protocol number, as `meta l4proto` reads it.
    pub fn number(self) -> u8 {
        match self {
            Protocol::Tcp => 6,
            Protocol::Udp => 17,
            Protocol::Sctp => 132,
        }
    }

    /// Lower case, as nft and set names spell it.
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Sctp => "sctp",
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "TCP",
            Protocol::Udp => "UDP",
            Protocol::Sctp => "SCTP",
        }
    }
}

/// One port of one Service, with everything that decides where its traffic goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServicePort {
    pub namespace: String,
    pub service: String,
    /// The Service port's name, which EndpointSlice ports carry too ("" when unnamed).
    pub port_name: String,
    pub protocol: Protocol,
    pub port: u16,
    pub cluster_ip: Option<Ipv4Addr>,
    pub node_port: Option<u16>,
    /// externalIPs and LoadBalancer ingress IPs: traffic from outside the cluster.
    pub external_ips: Vec<Ipv4Addr>,
    /// `externalTrafficPolicy: Local`: external traffic only to this node's endpoints, with
    /// the client's source address kept.
    pub external_local: bool,
    /// `internalTrafficPolicy: Local`: cluster-IP traffic only to this node's endpoints.
    pub internal_local: bool,
    /// `sessionAffinity: ClientIP` and its timeout.
    pub affinity: Option<Duration>,
    /// LoadBalancer ingress IPs (also in `external_ips`), which `source_ranges` guard.
    pub load_balancer_ips: Vec<Ipv4Addr>,
    /// `loadBalancerSourceRanges`: when set, only these clients reach the load balancer IPs.
    pub source_ranges: Vec<Ipv4Net>,
}

impl ServicePort {
    /// `ns/name:port/PROTO`, how logs and `weft trace` name it.
    pub fn id(&self) -> String {
        let port = if self.port_name.is_empty() {
            self.port.to_string()
        } else {
            self.port_name.clone()
        };
        format!(
            "{}/{}:{}/{}",
            self.namespace,
            self.service,
            port,
            self.protocol.as_str()
        )
    }
}

/// Why a Service gets no rules at all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Skip {
    /// `clusterIP: None`: DNS answers with the endpoints themselves.
    Headless,
    ExternalName,
    /// Labelled for another proxy.
    OtherProxy(String),
    /// No IPv4 cluster IP (yet): nothing to match on. weft's table is IPv4 for now.
    NoClusterIp,
}

/// The ports weft proxies for `svc`, or why it proxies none.
pub fn ports(svc: &Service) -> Result<Vec<ServicePort>, Skip> {
    if let Some(proxy) = svc
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(PROXY_NAME_LABEL))
    {
        return Err(Skip::OtherProxy(proxy.clone()));
    }
    let Some(spec) = &svc.spec else {
        return Err(Skip::NoClusterIp);
    };
    if spec.type_.as_deref() == Some("ExternalName") {
        return Err(Skip::ExternalName);
    }
    if spec.cluster_ip.as_deref() == Some("None") {
        return Err(Skip::Headless);
    }
    // Dual-stack Services list both families in clusterIPs, in either order.
    let cluster_ip = spec
        .cluster_ip
        .iter()
        .chain(spec.cluster_ips.iter().flatten())
        .find_map(|ip| ip.parse::<Ipv4Addr>().ok());
    let Some(cluster_ip) = cluster_ip else {
        return Err(Skip::NoClusterIp);
    };
    let mut external_ips: Vec<Ipv4Addr> = spec
        .external_ips
        .iter()
        .flatten()
        .filter_map(|ip| ip.parse().ok())
        .collect();
    let mut load_balancer_ips: Vec<Ipv4Addr> = Vec::new();
    if spec.type_.as_deref() == Some("LoadBalancer") {
        let ingress = svc
            .status
            .as_ref()
            .and_then(|s| s.load_balancer.as_ref())
            .and_then(|lb| lb.ingress.as_ref());
        load_balancer_ips.extend(
            ingress
                .into_iter()
                .flatten()
                // ipMode Proxy: the load balancer delivers to the node itself, not to
                // this address, so kube-proxy leaves it alone and so does weft.
                .filter(|i| i.ip_mode.as_deref() != Some("Proxy"))
                .filter_map(|i| i.ip.as_deref()?.parse::<Ipv4Addr>().ok()),
        );
        external_ips.extend(&load_balancer_ips);
    }
    // The API server validated the ranges; IPv6 ones do not apply to an IPv4 table.
    // Merged, because the kernel's interval sets refuse overlapping elements.
    let source_ranges: Vec<Ipv4Net> = Ipv4Net::aggregate(
        &spec
            .load_balancer_source_ranges
            .iter()
            .flatten()
            .filter_map(|r| r.trim().parse::<Ipv4Net>().ok().map(|n| n.trunc()))
            .collect::<Vec<_>>(),
    );
    external_ips.sort();
    external_ips.dedup();
    let node_ports = matches!(spec.type_.as_deref(), Some("NodePort" | "LoadBalancer"));
    let affinity = (spec.session_affinity.as_deref() == Some("ClientIP")).then(|| {
        spec.session_affinity_config
            .as_ref()
            .and_then(|c| c.client_ip.as_ref())
            .and_then(|c| c.timeout_seconds)
            .filter(|t| *t > 0)
            .map_or(DEFAULT_AFFINITY, |t| Duration::from_secs(t as u64))
    });
    let out = spec
        .ports
        .iter()
        .flatten()
        .filter_map(|p| {
            // The API server validated these; a port that still fails is left out rather
            // than taking every other Service down with it.
            let protocol = Protocol::parse(p.protocol.as_deref())?;
            let port = u16::try_from(p.port).ok().filter(|p| *p != 0)?;
            Some(ServicePort {
                namespace: svc.metadata.namespace.clone().unwrap_or_default(),
                service: svc.metadata.name.clone().unwrap_or_default(),
                port_name: p.name.clone().unwrap_or_default(),
                protocol,
                port,
                cluster_ip: Some(cluster_ip),
                node_port: p
                    .node_port
                    .filter(|_| node_ports)
                    .and_then(|n| u16::try_from(n).ok())
                    .filter(|n| *n != 0),
                external_ips: external_ips.clone(),
                external_local: spec.external_traffic_policy.as_deref() == Some("Local")
                    && (node_ports || !external_ips.is_empty()),
                internal_local: spec.internal_traffic_policy.as_deref() == Some("Local"),
                affinity,
                load_balancer_ips: load_balancer_ips.clone(),
                source_ranges: source_ranges.clone(),
            })
        })
        .collect();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn svc(v: serde_json::Value) -> Service {
        serde_json::from_value(v).expect("service")
    }

    #[test]
    fn a_nodeport_service_with_two_ports() {
        let s = svc(json!({
            "metadata": {"name": "web", "namespace": "shop"},
            "spec": {"type": "NodePort", "clusterIP": "10.96.0.20", "externalTrafficPolicy": "Local",
                     "ports": [{"name": "http", "port": 80, "nodePort": 30080},
                               {"name": "dns", "port": 53, "protocol": "UDP", "nodePort": 30053}]}
        }));
        let p = ports(&s).expect("proxied");
        assert_eq!(p.len(), 2);
        assert_eq!(p[0].id(), "shop/web:http/TCP");
        assert_eq!(p[0].node_port, Some(30080));
        assert!(p[0].external_local && !p[0].internal_local);
        assert_eq!(p[1].protocol, Protocol::Udp);
        assert_eq!(p[1].affinity, None);
    }

    #[test]
    fn a_clusterip_service_ignores_node_ports_and_local_external_policy() {
        let s = svc(json!({
            "metadata": {"name": "db", "namespace": "a"},
            "spec": {"clusterIP": "10.96.0.21", "externalTrafficPolicy": "Local",
                     "sessionAffinity": "ClientIP",
                     "ports": [{"port": 5432, "nodePort": 30001}]}
        }));
        let p = ports(&s).expect("proxied");
        assert_eq!(p[0].node_port, None);
        assert!(!p[0].external_local);
        assert_eq!(p[0].affinity, Some(DEFAULT_AFFINITY));
    }

    #[test]
    fn load_balancer_ingress_and_external_ips_are_external_addresses() {
        let s = svc(json!({
            "metadata": {"name": "lb", "namespace": "a"},
            "spec": {"type": "LoadBalancer", "clusterIP": "10.96.0.22", "externalIPs": ["192.168.1.50"],
                     "sessionAffinity": "ClientIP", "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 30}},
                     "ports": [{"port": 80, "nodePort": 30002}]},
            "status": {"loadBalancer": {"ingress": [{"ip": "192.168.1.200"}, {"hostname": "lb.example"}]}}
        }));
        let p = ports(&s).expect("proxied");
        assert_eq!(
            p[0].external_ips,
            vec![
                "192.168.1.50".parse::<Ipv4Addr>().unwrap(),
                "192.168.1.200".parse().unwrap()
            ]
        );
        assert_eq!(p[0].affinity, Some(Duration::from_secs(30)));
    }

    #[test]
    fn dual_stack_takes_the_ipv4_cluster_ip_and_ranges_merge() {
        let s = svc(json!({
            "metadata": {"name": "d", "namespace": "a"},
            "spec": {"type": "LoadBalancer", "clusterIP": "fd00::5", "clusterIPs": ["fd00::5", "10.96.0.5"],
                     "loadBalancerSourceRanges": ["10.0.0.0/8", "10.1.0.0/16", "fd00::/8"],
                     "ports": [{"port": 80}]},
            "status": {"loadBalancer": {"ingress": [{"ip": "192.168.2.1"}, {"ip": "192.168.2.2", "ipMode": "Proxy"}]}}
        }));
        let p = ports(&s).expect("proxied");
        assert_eq!(p[0].cluster_ip, Some(Ipv4Addr::new(10, 96, 0, 5)));
        assert_eq!(
            p[0].source_ranges,
            vec!["10.0.0.0/8".parse::<Ipv4Net>().unwrap()]
        );
        assert_eq!(p[0].load_balancer_ips, vec![Ipv4Addr::new(192, 168, 2, 1)]);
    }

    #[test]
    fn services_not_proxied_say_why() {
        let headless = svc(
            json!({"metadata": {"name": "h"}, "spec": {"clusterIP": "None", "ports": [{"port": 80}]}}),
        );
        assert_eq!(ports(&headless), Err(Skip::Headless));
        let ext = svc(
            json!({"metadata": {"name": "e"}, "spec": {"type": "ExternalName", "externalName": "x.example"}}),
        );
        assert_eq!(ports(&ext), Err(Skip::ExternalName));
        let other = svc(
            json!({"metadata": {"name": "o", "labels": {PROXY_NAME_LABEL: "cilium"}},
                               "spec": {"clusterIP": "10.96.0.23", "ports": [{"port": 80}]}}),
        );
        assert_eq!(ports(&other), Err(Skip::OtherProxy("cilium".into())));
        let pending = svc(json!({"metadata": {"name": "p"}, "spec": {"ports": [{"port": 80}]}}));
        assert_eq!(ports(&pending), Err(Skip::NoClusterIp));
    }
}
