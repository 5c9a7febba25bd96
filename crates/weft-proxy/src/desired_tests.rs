use super::*;
use crate::service::{self, Protocol};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde_json::json;
use weft_nft::{ElemData, Key};

fn node(name: &str) -> NodeContext {
    NodeContext {
        node_name: name.into(),
        cluster_cidr: Some("10.244.0.0/16".parse().unwrap()),
    }
}

fn compile(services: &[serde_json::Value], slices: &[serde_json::Value], on: &str) -> Ruleset {
    let mut ports = Vec::new();
    for s in services {
        let svc: Service = serde_json::from_value(s.clone()).unwrap();
        ports.extend(service::ports(&svc).unwrap_or_default());
    }
    let slices: Vec<EndpointSlice> = slices
        .iter()
        .map(|s| serde_json::from_value(s.clone()).unwrap())
        .collect();
    desired(&ports, &Endpoints::from_slices(&slices), &node(on))
}

fn slice(svc: &str, eps: &[(&str, &str)]) -> serde_json::Value {
    let endpoints: Vec<_> = eps
        .iter()
        .map(|(ip, node)| json!({"addresses": [ip], "nodeName": node}))
        .collect();
    json!({
        "metadata": {"name": format!("{svc}-1"), "namespace": "default",
                     "labels": {"kubernetes.io/service-name": svc}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        "endpoints": endpoints,
    })
}

fn web(kind: &str, etp: &str) -> serde_json::Value {
    json!({
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {"type": kind, "clusterIP": "10.96.0.20", "externalTrafficPolicy": etp,
                 "externalIPs": ["192.168.1.50"],
                 "ports": [{"name": "http", "port": 80, "targetPort": 8080, "nodePort": 30080}]}
    })
}

fn keys(rs: &Ruleset, set: &str) -> Vec<Vec<Value>> {
    let t = rs.table(Family::Ip, TABLE).expect("table");
    t.sets
        .get(set)
        .unwrap_or_else(|| panic!("set {set}"))
        .elements
        .keys()
        .map(|Key(k)| k.clone())
        .collect()
}

fn targets_of(rs: &Ruleset, map: &str) -> Vec<(Vec<Value>, Vec<Value>)> {
    let t = rs.table(Family::Ip, TABLE).expect("table");
    t.sets[map]
        .elements
        .iter()
        .map(|(Key(k), e)| match &e.data {
            Some(ElemData::Value(v)) => (k.clone(), v.clone()),
            other => panic!("map data {other:?}"),
        })
        .collect()
}

fn vip(port: u16) -> Vec<Value> {
    vec![
        Value::Ipv4([10, 96, 0, 20].into()),
        Value::Proto(Protocol::Tcp.number()),
        Value::Port(port),
    ]
}

#[test]
fn each_endpoint_gets_a_slot_of_its_service_key() {
    let rs = compile(
        &[web("ClusterIP", "Cluster")],
        &[slice(
            "web",
            &[("10.244.1.2", "node-1"), ("10.244.2.2", "node-2")],
        )],
        "node-1",
    );
    let external = vec![
        Value::Ipv4([192, 168, 1, 50].into()),
        Value::Proto(6),
        Value::Port(80),
    ];
    assert_eq!(keys(&rs, "endpoints-tcp-n2"), vec![vip(80), external]);
    let b = targets_of(&rs, "backends");
    // The cluster IP and the external IP, two slots each.
    assert_eq!(b.len(), 4);
    let mut slot0 = vip(80);
    slot0.push(Value::Integer(0));
    assert_eq!(b[0].0, slot0);
    assert_eq!(
        b[0].1,
        vec![Value::Ipv4([10, 244, 1, 2].into()), Value::Port(8080)]
    );
    // A ClusterIP service has no node port; its external IP is masqueraded (Cluster).
    assert!(keys(&rs, "nodeport-backends").is_empty());
    assert_eq!(keys(&rs, "masq").len(), 1);
    let services = &rs.table(Family::Ip, TABLE).unwrap().chains["services"];
    let dnat_rules = services
        .rules
        .iter()
        .filter(|r| r.stmts.iter().any(|s| matches!(s, Stmt::DnatMap { .. })))
        .count();
    assert_eq!(dnat_rules, 1, "one DNAT rule per endpoint count in use");
}

#[test]
fn no_endpoints_is_a_reject_for_every_address_and_the_node_port() {
    let rs = compile(
        &[web("NodePort", "Cluster")],
        &[slice("web", &[])],
        "node-1",
    );
    assert_eq!(keys(&rs, "no-endpoints").len(), 2);
    assert_eq!(
        keys(&rs, "nodeport-no-endpoints"),
        vec![vec![Value::Proto(6), Value::Port(30080)]]
    );
    assert!(keys(&rs, "backends").is_empty());
    assert!(!rs
        .table(Family::Ip, TABLE)
        .unwrap()
        .sets
        .keys()
        .any(|s| s.starts_with("endpoints-")));
}

#[test]
fn local_external_policy_uses_local_endpoints_keeps_the_source_or_drops() {
    let eps = [slice(
        "web",
        &[
            ("10.244.1.2", "node-1"),
            ("10.244.2.2", "node-2"),
            ("10.244.2.3", "node-2"),
        ],
    )];
    let on1 = compile(&[web("NodePort", "Local")], &eps, "node-1");
    assert_eq!(keys(&on1, "nodeport-endpoints-tcp-n1").len(), 1);
    assert!(keys(&on1, "nodeport-masq").is_empty());
    // Cluster IP traffic still reaches all three.
    assert_eq!(keys(&on1, "endpoints-tcp-n3"), vec![vip(80)]);
    let on2 = compile(&[web("NodePort", "Local")], &eps, "node-2");
    assert_eq!(keys(&on2, "nodeport-endpoints-tcp-n2").len(), 1);
    let on3 = compile(&[web("NodePort", "Local")], &eps, "node-3");
    assert_eq!(keys(&on3, "nodeport-no-local-endpoints").len(), 1);
    assert_eq!(
        keys(&on3, "no-local-endpoints").len(),
        1,
        "the external IP drops too"
    );
    let cluster = compile(&[web("NodePort", "Cluster")], &eps, "node-3");
    assert_eq!(keys(&cluster, "nodeport-masq").len(), 1);
    assert_eq!(keys(&cluster, "nodeport-endpoints-tcp-n3").len(), 1);
}

#[test]
fn every_endpoint_can_hairpin() {
    let rs = compile(
        &[web("ClusterIP", "Cluster")],
        &[slice("web", &[("10.244.1.2", "node-1")])],
        "node-1",
    );
    let ip = Value::Ipv4([10, 244, 1, 2].into());
    assert_eq!(keys(&rs, "hairpin"), vec![vec![ip.clone(), ip]]);
}

#[test]
fn the_same_inputs_give_the_same_table_and_render_as_nft_syntax() {
    let svcs = [web("LoadBalancer", "Cluster")];
    let eps = [slice("web", &[("10.244.1.2", "node-1")])];
    let a = compile(&svcs, &eps, "node-1");
    assert_eq!(a, compile(&svcs, &eps, "node-1"));
    let text = weft_nft::render::ruleset(&a);
    assert!(text.contains("dnat ip to"), "{text}");
    assert!(text.contains("numgen random mod 1"), "{text}");
}
