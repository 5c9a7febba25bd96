//! The matcher and the compile step, trap by trap, outside the truth-table world: nodes,
//! outside addresses, host-network pods, ICMP, named ports that differ per pod, and
//! validation messages.

use std::collections::BTreeMap;
use std::net::IpAddr;

use crate::cnp::ClusterNetworkPolicy;
use crate::matcher::{check, Endpoint, Reason};
use crate::model::*;
use crate::view::{Cluster, ContainerPort, Namespace, Node, Pod};

fn labels(p: &[(&str, &str)]) -> BTreeMap<String, String> {
    p.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// Two nodes; x/a and x/b on n1, y/c on n2, h (host network) on n2.
fn world() -> Cluster {
    let mut c = Cluster::default();
    c.upsert_node(Node {
        name: "n1".into(),
        labels: labels(&[("role", "worker")]),
        ips: vec![ip("172.18.0.1")],
    });
    c.upsert_node(Node {
        name: "n2".into(),
        labels: labels(&[("role", "control")]),
        ips: vec![ip("172.18.0.2")],
    });
    for ns in ["x", "y"] {
        c.upsert_namespace(Namespace {
            name: ns.into(),
            labels: labels(&[("ns", ns), ("kubernetes.io/metadata.name", ns)]),
        });
    }
    let web = |port| ContainerPort {
        name: "web".into(),
        port,
        protocol: Protocol::Tcp,
    };
    for (ns, name, addr, node, ports, host) in [
        ("x", "a", "10.244.1.10", "n1", vec![web(80)], false),
        ("x", "b", "10.244.1.11", "n1", vec![web(8080)], false),
        ("y", "c", "10.244.2.10", "n2", vec![], false),
        ("y", "h", "172.18.0.2", "n2", vec![], true),
    ] {
        c.upsert_pod(Pod {
            namespace: ns.into(),
            name: name.into(),
            labels: labels(&[("pod", name)]),
            ips: vec![ip(addr)],
            node: Some(node.into()),
            host_network: host,
            ports,
        });
    }
    c
}

fn np(c: &mut Cluster, yaml: &str) {
    let p: k8s_openapi::api::networking::v1::NetworkPolicy = serde_yaml::from_str(yaml).unwrap();
    c.apply_network_policy(&p).unwrap();
}

fn cnp(c: &mut Cluster, yaml: &str) {
    let p: ClusterNetworkPolicy = serde_yaml::from_str(yaml).unwrap();
    c.apply_cluster_network_policy(&p).unwrap();
}

fn pod(s: &str) -> Endpoint {
    let (ns, n) = s.split_once('/').unwrap();
    Endpoint::pod(ns, n)
}

fn allowed(c: &Cluster, s: &Endpoint, d: &Endpoint, port: u16, proto: Protocol) -> bool {
    check(c, s, d, port, proto).unwrap().allowed
}

const DENY_ALL_X: &str = "metadata: {namespace: x, name: deny}
spec: {podSelector: {}, policyTypes: [Ingress, Egress]}";

#[test]
fn policy_types_defaults() {
    let compile = |yaml: &str| {
        let p: k8s_openapi::api::networking::v1::NetworkPolicy =
            serde_yaml::from_str(yaml).unwrap();
        crate::netpol::compile(&p).unwrap()
    };
    let p = compile("metadata: {namespace: x, name: p}\nspec: {podSelector: {}, egress: [{}]}");
    assert_eq!(
        p.ingress,
        Some(vec![]),
        "egress rules, no types: ingress isolated too"
    );
    assert_eq!(p.egress.as_ref().map(Vec::len), Some(1));
    let p = compile("metadata: {namespace: x, name: p}\nspec: {podSelector: {}, egress: []}");
    assert_eq!(
        p.egress, None,
        "egress: [] without types isolates no egress"
    );
    assert!(p.ingress.is_some());
    let p = compile(
        "metadata: {namespace: x, name: p}\nspec: {podSelector: {}, policyTypes: [Egress], ingress: [{}]}",
    );
    assert_eq!(
        p.ingress, None,
        "ingress rules under types [Egress] are ignored"
    );
    assert_eq!(p.egress, Some(vec![]));
    let p = compile(
        "metadata: {namespace: x, name: p}\nspec: {podSelector: {}, ingress: [{ports: [{port: 53, protocol: UDP}]}]}",
    );
    let r = &p.ingress.unwrap()[0];
    assert_eq!(r.peers, vec![PeerMatch::All], "no from: every peer");
    assert_eq!(
        r.ports,
        vec![PortRule {
            protocol: Some(Protocol::Udp),
            port: PortMatch::Range(53, 53)
        }]
    );
}

#[test]
fn own_node_is_always_allowed_other_nodes_are_not() {
    let mut c = world();
    np(&mut c, DENY_ALL_X);
    let n1 = Endpoint::Node("n1".into());
    let n2 = Endpoint::Node("n2".into());
    let d = check(&c, &n1, &pod("x/a"), 80, Protocol::Tcp).unwrap();
    assert!(d.allowed);
    assert_eq!(d.ingress.reason, Reason::OwnNode);
    assert!(
        allowed(&c, &pod("x/a"), &n1, 22, Protocol::Tcp),
        "pod to own node"
    );
    assert!(
        !allowed(&c, &n2, &pod("x/a"), 80, Protocol::Tcp),
        "another node is a peer"
    );
    assert!(!allowed(&c, &pod("x/a"), &n2, 80, Protocol::Tcp));
    // A host-network pod is its node.
    assert!(!allowed(&c, &pod("y/h"), &pod("x/a"), 80, Protocol::Tcp));
    let by_ip = Endpoint::Ip(ip("172.18.0.1"));
    assert!(allowed(&c, &by_ip, &pod("x/b"), 80, Protocol::Tcp));
}

#[test]
fn ip_block_except_and_outside_addresses() {
    let mut c = world();
    np(
        &mut c,
        "metadata: {namespace: x, name: out}
spec:
  podSelector: {matchLabels: {pod: a}}
  policyTypes: [Egress]
  egress:
    - to: [{ipBlock: {cidr: 0.0.0.0/0, except: [10.0.0.0/8, 192.168.0.0/16]}}]",
    );
    let a = pod("x/a");
    assert!(allowed(
        &c,
        &a,
        &Endpoint::Ip(ip("8.8.8.8")),
        53,
        Protocol::Udp
    ));
    assert!(!allowed(
        &c,
        &a,
        &Endpoint::Ip(ip("10.1.2.3")),
        53,
        Protocol::Udp
    ));
    assert!(!allowed(
        &c,
        &a,
        &Endpoint::Ip(ip("192.168.4.4")),
        53,
        Protocol::Udp
    ));
    // The pod addresses are inside 10/8: excepted, so other pods are unreachable.
    assert!(!allowed(&c, &a, &pod("y/c"), 80, Protocol::Tcp));
    // A node address outside the excepts is an ipBlock match.
    assert!(allowed(
        &c,
        &a,
        &Endpoint::Node("n2".into()),
        80,
        Protocol::Tcp
    ));
}

#[test]
fn named_ports_resolve_per_pod() {
    let mut c = world();
    np(
        &mut c,
        "metadata: {namespace: x, name: web}
spec:
  podSelector: {}
  ingress: [{ports: [{port: web}]}]",
    );
    let src = pod("y/c");
    assert!(allowed(&c, &src, &pod("x/a"), 80, Protocol::Tcp));
    assert!(!allowed(&c, &src, &pod("x/a"), 8080, Protocol::Tcp));
    assert!(allowed(&c, &src, &pod("x/b"), 8080, Protocol::Tcp));
    assert!(!allowed(&c, &src, &pod("x/b"), 80, Protocol::Tcp));
    assert!(
        !allowed(&c, &src, &pod("x/a"), 80, Protocol::Udp),
        "web is a TCP port"
    );
    // Egress named ports are the peer's; an outside address has none.
    np(
        &mut c,
        "metadata: {namespace: y, name: web-out}
spec:
  podSelector: {}
  policyTypes: [Egress]
  egress: [{ports: [{port: web}]}]",
    );
    assert!(allowed(&c, &src, &pod("x/b"), 8080, Protocol::Tcp));
    assert!(!allowed(
        &c,
        &src,
        &Endpoint::Ip(ip("8.8.8.8")),
        80,
        Protocol::Tcp
    ));
}

#[test]
fn icmp_passes_only_rules_without_ports() {
    let mut c = world();
    np(
        &mut c,
        "metadata: {namespace: x, name: p}
spec:
  podSelector: {matchLabels: {pod: a}}
  ingress: [{ports: [{port: 80}]}]",
    );
    let icmp = Protocol::Other(1);
    assert!(!allowed(&c, &pod("y/c"), &pod("x/a"), 0, icmp));
    np(
        &mut c,
        "metadata: {namespace: x, name: q}
spec:
  podSelector: {matchLabels: {pod: a}}
  ingress: [{from: [{namespaceSelector: {}}]}]",
    );
    assert!(allowed(&c, &pod("y/c"), &pod("x/a"), 0, icmp));
}

#[test]
fn decisions_name_the_rule() {
    let mut c = world();
    cnp(
        &mut c,
        "metadata: {name: guard}
spec:
  tier: Admin
  priority: 3
  subject: {namespaces: {matchLabels: {ns: x}}}
  ingress:
    - {name: web, action: Accept, from: [{namespaces: {}}], protocols: [{tcp: {destinationPort: {number: 80}}}]}
    - {name: rest, action: Deny, from: [{namespaces: {}}]}",
    );
    let d = check(&c, &pod("y/c"), &pod("x/a"), 81, Protocol::Tcp).unwrap();
    assert!(!d.allowed);
    let Reason::Rule { rule, .. } = &d.ingress.reason else {
        panic!("{d}")
    };
    assert_eq!(rule.policy, PolicyId::cluster("guard"));
    assert_eq!((rule.index, rule.name.as_deref()), (1, Some("rest")));
    assert_eq!((rule.tier, rule.action), (Tier::Admin, Action::Deny));
    let text = d.to_string();
    assert!(
        text.contains(
            "ClusterNetworkPolicy guard (Admin tier, priority 3) ingress[1] \"rest\": Deny"
        ),
        "{text}"
    );
    let d = check(&c, &pod("y/c"), &pod("x/a"), 80, Protocol::Tcp).unwrap();
    assert!(d.allowed, "{d}");
    np(&mut c, DENY_ALL_X);
    let d = check(&c, &pod("x/a"), &pod("y/c"), 80, Protocol::Tcp).unwrap();
    assert!(!d.allowed);
    assert!(matches!(&d.egress.reason, Reason::Isolated { policies, .. }
        if policies == &vec![PolicyId::network_policy("x", "deny")]));
    assert!(matches!(d.ingress.reason, Reason::Default { .. }));
}

#[test]
fn nodes_networks_and_domain_names_peers() {
    let mut c = world();
    cnp(
        &mut c,
        "metadata: {name: egress}
spec:
  tier: Admin
  priority: 1
  subject: {pods: {namespaceSelector: {matchLabels: {ns: x}}, podSelector: {}}}
  egress:
    - {action: Accept, to: [{domainNames: [example.com]}]}
    - {action: Deny, to: [{nodes: {matchLabels: {role: control}}}]}
    - {action: Deny, to: [{networks: [8.8.8.0/24]}]}",
    );
    let a = pod("x/a");
    assert!(!allowed(
        &c,
        &a,
        &Endpoint::Node("n2".into()),
        443,
        Protocol::Tcp
    ));
    assert!(!allowed(
        &c,
        &a,
        &Endpoint::Ip(ip("8.8.8.8")),
        53,
        Protocol::Udp
    ));
    assert!(allowed(
        &c,
        &a,
        &Endpoint::Ip(ip("9.9.9.9")),
        53,
        Protocol::Udp
    ));
    // Known only by its address (no DNS answer named it), a domainNames Accept matches
    // nothing (crate::fqdn grants what answers name).
    assert!(allowed(
        &c,
        &a,
        &Endpoint::Ip(ip("93.184.215.14")),
        443,
        Protocol::Tcp
    ));
}

#[test]
fn baseline_pass_and_legacy_spellings() {
    let mut c = world();
    cnp(
        &mut c,
        "metadata: {name: base}
spec:
  tier: Baseline
  priority: 1
  subject: {namespaces: {}}
  ingress:
    - {action: Pass, from: [{namespaces: {matchLabels: {ns: y}}}]}
    - {action: Deny, from: [{namespaces: {}}], ports: [{portNumber: {protocol: UDP, port: 53}}, {portRange: {start: 1000, end: 2000}}]}
    - {action: Allow, from: [{namespaces: {}}]}",
    );
    assert!(
        allowed(&c, &pod("y/c"), &pod("x/a"), 53, Protocol::Udp),
        "passed: default"
    );
    assert!(!allowed(&c, &pod("x/b"), &pod("x/a"), 53, Protocol::Udp));
    assert!(!allowed(&c, &pod("x/b"), &pod("x/a"), 1500, Protocol::Tcp));
    assert!(allowed(&c, &pod("x/b"), &pod("x/a"), 2001, Protocol::Tcp));
}

#[test]
fn namespaces_not_yet_seen_match_by_name() {
    let mut c = world();
    c.delete_namespace("y");
    np(
        &mut c,
        "metadata: {namespace: x, name: p}
spec:
  podSelector: {}
  ingress: [{from: [{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: y}}}]}]",
    );
    assert!(allowed(&c, &pod("y/c"), &pod("x/a"), 80, Protocol::Tcp));
}

#[test]
fn unknown_endpoints_are_errors() {
    let c = world();
    let e = check(&c, &pod("x/nope"), &pod("x/a"), 80, Protocol::Tcp).unwrap_err();
    assert_eq!(e.to_string(), "pod x/nope: not in the cluster view");
}

fn np_error(spec: &str) -> String {
    let yaml = format!("metadata: {{namespace: x, name: bad}}\nspec: {spec}");
    let p: k8s_openapi::api::networking::v1::NetworkPolicy = serde_yaml::from_str(&yaml).unwrap();
    let mut c = world();
    c.apply_network_policy(&p).unwrap_err().to_string()
}

#[test]
fn invalid_network_policies_name_field_and_value() {
    for (spec, want) in [
        (
            "{podSelector: {}, ingress: [{from: [{ipBlock: {cidr: 10.0.0.0/33}}]}]}",
            "NetworkPolicy x/bad: spec.ingress[0].from[0].ipBlock.cidr",
        ),
        (
            "{podSelector: {}, ingress: [{from: [{ipBlock: {cidr: 10.0.0.0/8, except: [11.0.0.0/16]}}]}]}",
            "spec.ingress[0].from[0].ipBlock.except[0]",
        ),
        (
            "{podSelector: {}, egress: [{ports: [{port: web, endPort: 90}]}]}",
            "spec.egress[0].ports[0].endPort",
        ),
        (
            "{podSelector: {}, ingress: [{ports: [{protocol: ICMP, port: 1}]}]}",
            "spec.ingress[0].ports[0].protocol: must be TCP, UDP or SCTP (got \"ICMP\")",
        ),
        (
            "{podSelector: {}, ingress: [{from: [{}]}]}",
            "spec.ingress[0].from[0]: a peer needs",
        ),
        (
            "{podSelector: {}, ingress: [{from: [{ipBlock: {cidr: 10.0.0.0/8}, podSelector: {}}]}]}",
            "ipBlock must be alone",
        ),
        (
            "{podSelector: {}, ingress: [{ports: [{port: 80, endPort: 79}]}]}",
            "must not be below port 80",
        ),
        ("{podSelector: {}, policyTypes: [Both]}", "spec.policyTypes[0]"),
    ] {
        let e = np_error(spec);
        assert!(e.contains(want), "{spec}: {e}");
    }
    // The refused update does not leave the previous version enforcing.
    let mut c = world();
    np(
        &mut c,
        "metadata: {namespace: x, name: bad}\nspec: {podSelector: {}, policyTypes: [Ingress]}",
    );
    let p: k8s_openapi::api::networking::v1::NetworkPolicy = serde_yaml::from_str(
        "metadata: {namespace: x, name: bad}\nspec: {podSelector: {}, policyTypes: [Sideways]}",
    )
    .unwrap();
    assert!(c.apply_network_policy(&p).is_err());
    assert!(c.policies.is_empty());
}

#[test]
fn invalid_cluster_network_policies_name_field_and_value() {
    for (spec, want) in [
        (
            "{tier: Top, priority: 1, subject: {namespaces: {}}}",
            "ClusterNetworkPolicy bad: spec.tier: must be Admin or Baseline (got \"Top\")",
        ),
        ("{tier: Admin, priority: 1001, subject: {namespaces: {}}}", "spec.priority"),
        (
            "{tier: Admin, priority: 1, subject: {namespaces: {}, pods: {podSelector: {}}}}",
            "spec.subject",
        ),
        (
            "{tier: Admin, priority: 1, subject: {namespaces: {}}, ingress: [{action: Drop, from: [{namespaces: {}}]}]}",
            "spec.ingress[0].action",
        ),
        (
            "{tier: Admin, priority: 1, subject: {namespaces: {}}, ingress: [{action: Deny, from: []}]}",
            "spec.ingress[0].from",
        ),
        (
            "{tier: Admin, priority: 1, subject: {namespaces: {}}, egress: [{action: Deny, to: [{networks: [nope]}]}]}",
            "spec.egress[0].to[0].networks[0]",
        ),
        (
            "{tier: Admin, priority: 1, subject: {namespaces: {}}, egress: [{action: Deny, to: [{namespaces: {}}], protocols: [{tcp: {}, udp: {}}]}]}",
            "spec.egress[0].protocols[0]",
        ),
        (
            "{tier: Admin, priority: 1, subject: {namespaces: {}}, egress: [{action: Deny, to: [{namespaces: {}}], protocols: [{tcp: {destinationPort: {range: {start: 9, end: 2}}}}]}]}",
            "spec.egress[0].protocols[0].tcp.destinationPort.range.end",
        ),
    ] {
        let yaml = format!("metadata: {{name: bad}}\nspec: {spec}");
        let p: ClusterNetworkPolicy = serde_yaml::from_str(&yaml).unwrap();
        let e = crate::cluster_policy::compile(&p).unwrap_err().to_string();
        assert!(e.contains(want), "{spec}: {e}");
    }
}

#[test]
fn cli_spellings() {
    use crate::matcher::parse_port;
    assert_eq!("x/a".parse::<Endpoint>().unwrap(), Endpoint::pod("x", "a"));
    assert_eq!(
        "node/n1".parse::<Endpoint>().unwrap(),
        Endpoint::Node("n1".into())
    );
    assert_eq!(
        "10.0.0.1".parse::<Endpoint>().unwrap(),
        Endpoint::Ip(ip("10.0.0.1"))
    );
    assert!("x/a/b".parse::<Endpoint>().is_err());
    assert_eq!(parse_port("80/tcp").unwrap(), (80, Protocol::Tcp));
    assert_eq!(parse_port("53/UDP").unwrap(), (53, Protocol::Udp));
    assert_eq!(parse_port("icmp").unwrap(), (0, Protocol::Other(1)));
    assert!(parse_port("80")
        .unwrap_err()
        .to_string()
        .contains("PORT/PROTO"));
}

#[test]
fn a_node_is_also_its_pod_gateway() {
    let n: k8s_openapi::api::core::v1::Node = serde_yaml::from_str(
        "metadata: {name: n1}
spec: {podCIDR: 10.244.1.0/24, podCIDRs: [10.244.1.0/24, 'fd00:1::/64']}
status: {addresses: [{type: InternalIP, address: 172.18.0.1}, {type: Hostname, address: n1}]}",
    )
    .unwrap();
    let node = Node::from_api(&n);
    assert_eq!(
        node.ips,
        vec![ip("172.18.0.1"), ip("10.244.1.1"), ip("fd00:1::1")]
    );
    let mut c = world();
    c.apply_node(&n);
    np(&mut c, DENY_ALL_X);
    // The node's bridge address talking to its own pod, both ways.
    assert!(allowed(
        &c,
        &Endpoint::Ip(ip("10.244.1.1")),
        &pod("x/a"),
        80,
        Protocol::Tcp
    ));
    assert!(allowed(
        &c,
        &pod("x/a"),
        &Endpoint::Ip(ip("10.244.1.1")),
        53,
        Protocol::Udp
    ));
}
