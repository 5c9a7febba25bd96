//! The bench's cluster view: 1000 pods in 50 namespaces on node n1, two other nodes, and
//! 20 policies per namespace (see the bench's own doc for the shape).

use std::net::{IpAddr, Ipv4Addr};

use k8s_openapi::api::networking::v1::NetworkPolicy;
use weft_policy::desired::{NodeContext, FAMILY, TABLE};
use weft_policy::view::{ContainerPort, Namespace, Node, Pod};
use weft_policy::{Cluster, Protocol};

pub const PODS: u32 = 1000;
pub const NAMESPACES: u32 = 50;
pub const POLICIES_PER_NS: u32 = 20;
pub const PORT: u16 = 8080;

// ---------------------------------------------------------------------------------------
// The cluster view.

pub fn pod_ip(i: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 244, 0, 0)) + 10 + i)
}

pub fn ns_name(k: u32) -> String {
    format!("ns{k:02}")
}

pub fn world() -> Cluster {
    let mut c = Cluster::default();
    for (n, gw) in [(1u8, "10.244.0.1"), (2, "10.244.4.1"), (3, "10.244.8.1")] {
        c.upsert_node(Node {
            name: format!("n{n}"),
            labels: [("kubernetes.io/hostname".to_string(), format!("n{n}"))].into(),
            ips: vec![
                IpAddr::V4(Ipv4Addr::new(172, 18, 0, n)),
                gw.parse().unwrap(),
            ],
        });
    }
    for k in 0..NAMESPACES {
        let name = ns_name(k);
        c.upsert_namespace(Namespace {
            name: name.clone(),
            labels: [
                ("kubernetes.io/metadata.name".to_string(), name.clone()),
                ("team".to_string(), format!("t{}", k % 5)),
                (
                    "env".to_string(),
                    if k % 2 == 0 { "prod" } else { "dev" }.to_string(),
                ),
            ]
            .into(),
        });
    }
    for i in 0..PODS {
        let (k, p) = (i % NAMESPACES, i / NAMESPACES);
        let mut ports = vec![ContainerPort {
            name: "http".into(),
            port: PORT,
            protocol: Protocol::Tcp,
        }];
        if p.is_multiple_of(2) {
            ports.push(ContainerPort {
                name: "metrics".into(),
                port: 9090,
                protocol: Protocol::Tcp,
            });
        }
        if p.is_multiple_of(7) {
            ports.push(ContainerPort {
                name: "dns".into(),
                port: 53,
                protocol: Protocol::Udp,
            });
        }
        c.upsert_pod(Pod {
            namespace: ns_name(k),
            name: format!("p{p:02}"),
            labels: [
                ("app".to_string(), format!("a{}", p % 5)),
                (
                    "tier".to_string(),
                    if p < 10 { "web" } else { "db" }.to_string(),
                ),
            ]
            .into(),
            ips: vec![IpAddr::V4(pod_ip(i))],
            node: Some("n1".into()),
            host_network: false,
            ports,
        });
    }
    c
}

/// Policy `j` of namespace `k`; `variant` changes its ports (the change being timed).
pub fn policy_yaml(k: u32, j: u32, variant: bool) -> String {
    let ns = ns_name(k);
    if j == POLICIES_PER_NS - 1 {
        return format!(
            "metadata: {{namespace: {ns}, name: default-deny}}
spec: {{podSelector: {{}}, policyTypes: [Ingress]}}"
        );
    }
    let app = j % 5;
    let from_team = (k + 4 + j / 5) % 5;
    let from_app = (j + j / 5) % 5;
    let ports = if variant {
        "[{port: 443}, {port: 8443}]"
    } else {
        "[{port: http}, {port: 443}]"
    };
    let mut y = format!(
        "metadata: {{namespace: {ns}, name: p{j:02}}}
spec:
  podSelector: {{matchLabels: {{app: a{app}}}}}
  ingress:
    - from:
        - namespaceSelector: {{matchLabels: {{team: t{from_team}}}}}
          podSelector: {{matchLabels: {{app: a{from_app}}}}}
        - podSelector: {{matchExpressions: [{{key: tier, operator: In, values: [web]}}]}}
      ports: {ports}
    - from: [{{podSelector: {{}}}}]
      ports: [{{port: metrics}}, {{port: 9100, endPort: 9110}}]
"
    );
    if j % 4 == 1 {
        y += &format!(
            "    - from: [{{ipBlock: {{cidr: 10.{k}.0.0/16, except: [10.{k}.{j}.0/24]}}}}]
      ports: [{{port: 443}}]
"
        );
    }
    if j % 7 == 2 {
        y += &format!(
            "    - from: [{{ipBlock: {{cidr: 10.244.{}.{}/28}}}}]
",
            k % 4,
            (j * 16) % 256
        );
    }
    if j.is_multiple_of(3) {
        y += &format!(
            "  egress:
    - to:
        - namespaceSelector: {{}}
          podSelector: {{matchLabels: {{app: a{app}}}}}
      ports: [{{port: {PORT}}}]
    - to: [{{namespaceSelector: {{matchLabels: {{env: prod}}}}}}]
      ports: [{{port: dns, protocol: UDP}}, {{port: 53, protocol: TCP}}]
    - to: [{{ipBlock: {{cidr: 192.168.{j}.0/24}}}}]
  policyTypes: [Ingress, Egress]
"
        );
    }
    y
}

pub fn np(yaml: &str) -> NetworkPolicy {
    serde_yaml::from_str(yaml).unwrap_or_else(|e| panic!("{e}: {yaml}"))
}

/// The world with the first `per_ns` policies of every namespace (the default-deny last).
pub fn with_policies(per_ns: u32) -> Cluster {
    let mut c = world();
    for k in 0..NAMESPACES {
        for j in 0..per_ns {
            let j = if j + 1 == per_ns && per_ns > 2 {
                POLICIES_PER_NS - 1
            } else {
                j
            };
            c.apply_network_policy(&np(&policy_yaml(k, j, false)))
                .unwrap();
        }
    }
    c
}

pub fn ctx() -> NodeContext {
    NodeContext {
        node_name: "n1".into(),
        log_group: None,
    }
}

pub fn elements(rs: &weft_nft::Ruleset) -> usize {
    rs.table(FAMILY, TABLE)
        .unwrap()
        .sets
        .values()
        .map(|s| s.elements.len())
        .sum()
}
