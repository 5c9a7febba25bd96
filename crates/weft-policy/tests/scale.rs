//! The table's shape does not grow with the cluster: chains and maps are the same for 2
//! pods or 600 and 40 policies; only elements change. Also a rough cost figure.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Instant;

use weft_policy::desired::{desired, NodeContext, FAMILY, TABLE};
use weft_policy::view::{ContainerPort, Namespace, Node, Pod};
use weft_policy::{Cluster, Protocol};

fn cluster(namespaces: u32, pods_per_ns: u32, policies: bool) -> Cluster {
    let mut c = Cluster::default();
    for n in 1..=3u8 {
        c.upsert_node(Node {
            name: format!("n{n}"),
            labels: BTreeMap::new(),
            ips: vec![IpAddr::V4(Ipv4Addr::new(172, 18, 0, n))],
        });
    }
    for ns in 0..namespaces {
        let name = format!("ns{ns}");
        c.upsert_namespace(Namespace {
            name: name.clone(),
            labels: [("team".to_string(), format!("t{}", ns % 4))].into(),
        });
        for p in 0..pods_per_ns {
            let i = ns * pods_per_ns + p;
            c.upsert_pod(Pod {
                namespace: name.clone(),
                name: format!("p{p}"),
                labels: [("app".to_string(), format!("a{}", p % 5))].into(),
                ips: vec![IpAddr::V4(Ipv4Addr::new(
                    10,
                    244,
                    (i % 3) as u8 + 1,
                    (i / 3) as u8 + 2,
                ))],
                node: Some(format!("n{}", i % 3 + 1)),
                host_network: false,
                ports: vec![ContainerPort {
                    name: "http".into(),
                    port: 8000 + (p % 3) as u16,
                    protocol: Protocol::Tcp,
                }],
            });
        }
        if policies {
            let yaml = format!(
                "metadata: {{namespace: {name}, name: web}}
spec:
  podSelector: {{matchLabels: {{app: a{}}}}}
  ingress:
    - from: [{{namespaceSelector: {{matchLabels: {{team: t{}}}}}}}]
      ports: [{{port: http}}, {{port: 443}}]
    - from: [{{ipBlock: {{cidr: 10.244.{}.0/24, except: [10.244.{}.128/25]}}}}]",
                ns % 5,
                ns % 4,
                ns % 3 + 1,
                ns % 3 + 1
            );
            let np: k8s_openapi::api::networking::v1::NetworkPolicy =
                serde_yaml::from_str(&yaml).unwrap();
            c.apply_network_policy(&np).unwrap();
        }
    }
    c
}

fn shape(c: &Cluster) -> (Vec<String>, Vec<String>, usize) {
    let ctx = NodeContext {
        node_name: "n1".into(),
        log_group: None,
    };
    let rs = desired(c, &ctx);
    let t = rs.table(FAMILY, TABLE).unwrap();
    (
        t.chains.keys().cloned().collect(),
        t.sets.keys().cloned().collect(),
        t.sets.values().map(|s| s.elements.len()).sum(),
    )
}

#[test]
fn chains_do_not_grow_with_pods_or_policies() {
    let small = shape(&cluster(1, 2, false));
    let t0 = Instant::now();
    let big = shape(&cluster(40, 15, true));
    let took = t0.elapsed();
    assert_eq!(small.0, big.0, "chains");
    assert_eq!(small.1, big.1, "maps");
    assert!(big.2 > 0);
    eprintln!(
        "600 pods, 40 policies: {} elements on n1 in {took:?}",
        big.2
    );
}
