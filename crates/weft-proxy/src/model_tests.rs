use super::*;
use crate::contribution::contributions;
use crate::desired::desired;
use crate::endpoint::Endpoints;
use crate::service;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde_json::json;
use std::collections::BTreeMap;

/// A tiny deterministic generator: the test explores the same cases every run.
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

fn node() -> NodeContext {
    NodeContext {
        node_name: "node-1".into(),
        cluster_cidr: Some("10.244.0.0/16".parse().unwrap()),
    }
}

/// A random Service `i` and its slice: type, policies, affinity, protocol and endpoints
/// all vary, so counts, dynamic sets and chains come and go.
fn random_service(i: usize, g: &mut Lcg) -> (Service, EndpointSlice) {
    let kind = ["ClusterIP", "NodePort", "LoadBalancer"][g.below(3) as usize];
    let proto = ["TCP", "UDP"][g.below(2) as usize];
    let etp = ["Cluster", "Local"][g.below(2) as usize];
    let timeout = [30, 60][g.below(2) as usize];
    let mut spec = json!({
        "type": kind, "clusterIP": format!("10.96.{}.{}", i / 200, i % 200 + 1),
        "externalTrafficPolicy": etp,
        "ports": [{"name": "p", "port": 80, "protocol": proto, "nodePort": 30000 + i}]
    });
    if g.below(3) == 0 {
        spec["sessionAffinity"] = json!("ClientIP");
        spec["sessionAffinityConfig"] = json!({"clientIP": {"timeoutSeconds": timeout}});
    }
    if g.below(4) == 0 {
        spec["loadBalancerSourceRanges"] = json!(["10.0.0.0/8"]);
    }
    let svc: Service = serde_json::from_value(json!({
        "metadata": {"name": format!("s{i}"), "namespace": "t"},
        "spec": spec,
        "status": {"loadBalancer": {"ingress": [{"ip": format!("192.168.2.{}", i % 250 + 1)}]}}
    }))
    .unwrap();
    let n = g.below(4);
    let eps: Vec<_> = (0..n)
        .map(|j| {
            json!({"addresses": [format!("10.244.{}.{}", g.below(3), j + 2)],
                   "nodeName": format!("node-{}", g.below(2) + 1)})
        })
        .collect();
    let slice: EndpointSlice = serde_json::from_value(json!({
        "metadata": {"name": format!("s{i}-1"), "namespace": "t",
                     "labels": {"kubernetes.io/service-name": format!("s{i}")}},
        "addressType": "IPv4",
        "ports": [{"name": "p", "port": 8080, "protocol": proto}],
        "endpoints": eps,
    }))
    .unwrap();
    (svc, slice)
}

fn elements(svc: &Service, slice: &EndpointSlice) -> Vec<Element> {
    let eps = Endpoints::from_slices([slice]);
    service::ports(svc)
        .unwrap_or_default()
        .iter()
        .flat_map(|sp| contributions(sp, &eps, &node()))
        .collect()
}

fn from_scratch(all: &BTreeMap<usize, (Service, EndpointSlice)>) -> Ruleset {
    let ports: Vec<_> = all
        .values()
        .flat_map(|(s, _)| service::ports(s).unwrap_or_default())
        .collect();
    let eps = Endpoints::from_slices(all.values().map(|(_, e)| e));
    desired(&ports, &eps, &node())
}

/// The kernel's view of the table, as the deltas would leave it.
type Shadow = BTreeMap<String, BTreeMap<Key, Elem>>;

fn apply(shadow: &mut Shadow, d: Delta) {
    if let Some((_, after)) = &d.structure {
        shadow.retain(|name, _| after.sets.contains_key(name));
        for name in after.sets.keys() {
            shadow.entry(name.clone()).or_default();
        }
    }
    for (set, key, _) in d.removed {
        if let Some(s) = shadow.get_mut(&set.name()) {
            assert!(
                s.remove(&key).is_some(),
                "removed {key:?} absent from {set:?}"
            );
        }
    }
    for (set, key, elem) in d.added {
        let s = shadow
            .get_mut(&set.name())
            .expect("added to a set that exists");
        assert!(s.insert(key, elem).is_none(), "added twice to {set:?}");
    }
}

#[test]
fn service_by_service_updates_equal_a_full_compile_and_deltas_track_them() {
    let mut g = Lcg(7);
    let mut model = Model::new(node());
    let mut all = BTreeMap::new();
    let mut shadow: Shadow = model
        .ruleset()
        .tables
        .values()
        .flat_map(|t| t.sets.keys())
        .map(|n| (n.clone(), BTreeMap::new()))
        .collect();
    for round in 0..400 {
        let i = g.below(40) as usize;
        let id = ("t".to_string(), format!("s{i}"));
        if g.below(5) == 0 {
            all.remove(&i);
            model.remove_service(&id);
        } else {
            let (svc, slice) = random_service(i, &mut g);
            model.set_service(id, elements(&svc, &slice));
            all.insert(i, (svc, slice));
        }
        if round % 7 == 0 {
            apply(&mut shadow, model.take_delta());
            let want = from_scratch(&all);
            assert_eq!(model.ruleset(), want, "round {round}");
            let t = want.table(Family::Ip, crate::TABLE).unwrap();
            let elems: Shadow = t
                .sets
                .iter()
                .map(|(n, s)| (n.clone(), s.elements.clone()))
                .collect();
            assert_eq!(
                shadow, elems,
                "round {round}: deltas drifted from the table"
            );
        }
    }
}

#[test]
fn an_unchanged_service_makes_no_delta() {
    let mut g = Lcg(3);
    let mut model = Model::new(node());
    let (svc, slice) = random_service(1, &mut g);
    let id = ("t".to_string(), "s1".to_string());
    model.set_service(id.clone(), elements(&svc, &slice));
    let _ = model.take_delta();
    model.set_service(id, elements(&svc, &slice));
    assert!(model.take_delta().is_empty());
}

#[test]
fn two_services_claiming_one_key_the_oldest_wins_and_the_next_takes_over() {
    let svc = |name: &str, ip: &str| -> Service {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "t"},
            "spec": {"clusterIP": ip, "externalIPs": ["192.168.5.5"], "ports": [{"name": "p", "port": 80}]}
        }))
        .unwrap()
    };
    let slice = |name: &str, ep: &str| -> EndpointSlice {
        serde_json::from_value(json!({
            "metadata": {"name": format!("{name}-1"), "namespace": "t",
                         "labels": {"kubernetes.io/service-name": name}},
            "addressType": "IPv4", "ports": [{"name": "p", "port": 8080}],
            "endpoints": [{"addresses": [ep]}]
        }))
        .unwrap()
    };
    let external_target = |m: &Model| -> Option<weft_nft::ElemData> {
        let key = Key(vec![
            Value::Ipv4([192, 168, 5, 5].into()),
            Value::Proto(6),
            Value::Port(80),
            Value::Integer(0),
        ]);
        let rs = m.ruleset();
        let t = rs.table(Family::Ip, crate::TABLE).unwrap();
        t.sets["backends"]
            .elements
            .get(&key)
            .and_then(|e| e.data.clone())
    };
    let to = |ip: [u8; 4]| {
        Some(weft_nft::ElemData::Value(vec![
            Value::Ipv4(ip.into()),
            Value::Port(8080),
        ]))
    };
    let mut model = Model::new(node());
    let (a, b) = (
        ("t".to_string(), "a".to_string()),
        ("t".to_string(), "b".to_string()),
    );
    model.set_service(
        a.clone(),
        elements(&svc("a", "10.96.0.1"), &slice("a", "10.244.1.1")),
    );
    model.set_service(
        b.clone(),
        elements(&svc("b", "10.96.0.2"), &slice("b", "10.244.2.2")),
    );
    assert_eq!(
        external_target(&model),
        to([10, 244, 1, 1]),
        "the first claim holds"
    );
    let _ = model.take_delta();
    model.remove_service(&a);
    assert_eq!(
        external_target(&model),
        to([10, 244, 2, 2]),
        "the next takes over"
    );
    let d = model.take_delta();
    assert!(d
        .added
        .iter()
        .any(|(s, k, _)| s.name() == "backends" && k.0[0] == Value::Ipv4([192, 168, 5, 5].into())));
    model.remove_service(&b);
    assert_eq!(external_target(&model), None);
}
