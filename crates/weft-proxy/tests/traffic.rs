//! The proxy's table moves real packets: a client outside the cluster, a node that runs
//! the proxy, and a pod with two addresses (two endpoints), each in its own namespace.
//!
//! ```text
//!  client 192.168.77.2 --- 192.168.77.1 node 10.244.1.1 --- 10.244.1.2, .3 pod
//! ```

mod common;

use std::io::{ErrorKind, Write};
use std::net::{Ipv4Addr, UdpSocket};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde_json::json;
use weft_proxy::contribution::contributions;
use weft_proxy::endpoint::Endpoints;
use weft_proxy::{desired, service, Model, NodeContext, Proxier};

fn web(kind: &str, etp: &str) -> Service {
    serde_json::from_value(json!({
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {"type": kind, "clusterIP": VIP, "externalTrafficPolicy": etp,
                 "ports": [{"name": "http", "port": 80, "targetPort": 8080, "nodePort": 30080}]}
    }))
    .unwrap()
}

fn sticky(kind: &str) -> Service {
    serde_json::from_value(json!({
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {"type": kind, "clusterIP": VIP, "sessionAffinity": "ClientIP",
                 "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 60}},
                 "ports": [{"name": "http", "port": 80, "targetPort": 8080, "nodePort": 30080}]}
    }))
    .unwrap()
}

fn slice(eps: &[(&str, &str)]) -> EndpointSlice {
    let endpoints: Vec<_> = eps
        .iter()
        .map(|(ip, node)| json!({"addresses": [ip], "nodeName": node}))
        .collect();
    serde_json::from_value(json!({
        "metadata": {"name": "web-1", "namespace": "default",
                     "labels": {"kubernetes.io/service-name": "web"}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        "endpoints": endpoints,
    }))
    .unwrap()
}

fn node() -> NodeContext {
    NodeContext {
        node_name: "node-1".into(),
        cluster_cidr: Some("10.244.0.0/16".parse().unwrap()),
    }
}

/// One Service and its endpoints: what a test wants the node to proxy.
struct Want {
    svc: Service,
    slice: EndpointSlice,
}

impl Want {
    fn ruleset(&self) -> weft_nft::Ruleset {
        let ports = service::ports(&self.svc).expect("proxied");
        desired(&ports, &Endpoints::from_slices([&self.slice]), &node())
    }
}

fn table(svc: &Service, eps: &[(&str, &str)]) -> Want {
    Want {
        svc: svc.clone(),
        slice: slice(eps),
    }
}

/// The two ways to drive the kernel: a whole desired table diffed against the last one,
/// or the model's per-Service delta. Every behaviour below holds for both.
#[derive(Clone, Copy)]
enum Mode {
    Full,
    Incremental,
}

enum Driver {
    Full(Proxier),
    Incremental(Proxier, Box<Model>),
}

impl World {
    fn driver(&self, mode: Mode) -> Driver {
        match mode {
            Mode::Full => Driver::Full(self.proxier()),
            Mode::Incremental => Driver::Incremental(self.proxier(), Box::new(Model::new(node()))),
        }
    }
}

impl Driver {
    fn sync(&mut self, w: &Want) -> weft_proxy::Result<weft_nft::diff::Summary> {
        match self {
            Driver::Full(p) => p.sync(&w.ruleset()),
            Driver::Incremental(p, model) => {
                let eps = Endpoints::from_slices([&w.slice]);
                let elements = service::ports(&w.svc)
                    .expect("proxied")
                    .iter()
                    .flat_map(|sp| contributions(sp, &eps, &node()))
                    .collect();
                let id = (
                    w.svc.metadata.namespace.clone().unwrap_or_default(),
                    w.svc.metadata.name.clone().unwrap_or_default(),
                );
                model.set_service(id, elements);
                p.apply(model)
            }
        }
    }
}

/// Runs a test body once per mode.
macro_rules! both_modes {
    ($($name:ident),*) => {
        mod full {
            $(#[test] fn $name() { super::$name(super::Mode::Full) })*
        }
        mod incremental {
            $(#[test] fn $name() { super::$name(super::Mode::Incremental) })*
        }
    };
}

both_modes!(
    cluster_ip_balances_over_endpoints_and_masquerades_outside_clients,
    node_port_keeps_the_client_address_only_with_local_policy,
    no_endpoints_is_refused_at_once,
    a_pod_reaches_itself_through_its_service,
    client_ip_affinity_sticks_until_the_endpoint_leaves,
    a_udp_flow_follows_its_endpoint_when_the_endpoint_leaves,
    load_balancer_source_ranges_admit_only_their_clients
);

const SHORT: Duration = Duration::from_secs(2);

fn cluster_ip_balances_over_endpoints_and_masquerades_outside_clients(mode: Mode) {
    let w = World::new("cip");
    let mut p = w.driver(mode);
    p.sync(&table(
        &web("ClusterIP", "Cluster"),
        &[(EP1, "node-1"), (EP2, "node-2")],
    ))
    .expect("sync");
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..40 {
        let (ep, peer) = fetch(&w.client, &format!("{VIP}:80"), SHORT).expect("connect");
        // The client is outside the cluster CIDR: the reply must come back via the node.
        assert_eq!(peer, Ipv4Addr::new(10, 244, 1, 1));
        seen.insert(ep);
    }
    assert_eq!(seen.len(), 2, "both endpoints answered: {seen:?}");
    // One endpoint left: only it answers, and the change was a few elements.
    let sum = p
        .sync(&table(&web("ClusterIP", "Cluster"), &[(EP2, "node-2")]))
        .expect("sync");
    assert_eq!(
        sum.chains_replaced + sum.chains_added + sum.chains_deleted,
        1,
        "{sum:?}"
    );
    for _ in 0..10 {
        let (ep, _) = fetch(&w.client, &format!("{VIP}:80"), SHORT).expect("connect");
        assert_eq!(ep, EP2);
    }
}

fn node_port_keeps_the_client_address_only_with_local_policy(mode: Mode) {
    let w = World::new("np");
    let mut p = w.driver(mode);
    p.sync(&table(&web("NodePort", "Cluster"), &[(EP1, "node-1")]))
        .expect("sync");
    let (_, peer) = fetch(&w.client, &format!("{NODE_IP}:30080"), SHORT).expect("node port");
    assert_eq!(
        peer,
        Ipv4Addr::new(10, 244, 1, 1),
        "Cluster policy masquerades"
    );
    p.sync(&table(&web("NodePort", "Local"), &[(EP1, "node-1")]))
        .expect("sync");
    let (_, peer) = fetch(&w.client, &format!("{NODE_IP}:30080"), SHORT).expect("node port");
    assert_eq!(
        peer,
        Ipv4Addr::new(192, 168, 77, 2),
        "Local policy keeps the source"
    );
    // Local policy, the only endpoint on another node: dropped (a timeout), while the
    // cluster IP still reaches it.
    p.sync(&table(&web("NodePort", "Local"), &[(EP1, "node-2")]))
        .expect("sync");
    let e = fetch(
        &w.client,
        &format!("{NODE_IP}:30080"),
        Duration::from_millis(700),
    )
    .expect_err("dropped");
    assert_eq!(e.kind(), ErrorKind::TimedOut, "{e}");
    fetch(&w.client, &format!("{VIP}:80"), SHORT).expect("cluster IP");
    // Pods are not outside clients: they reach the node port cluster-wide, as kube-proxy
    // short-circuits them.
    let (ep, _) = fetch(&w.pod, &format!("{NODE_IP}:30080"), SHORT).expect("from a pod");
    assert_eq!(ep, EP1);
    // Nor is the node itself.
    let (ep, _) = fetch(&w.node, &format!("{NODE_IP}:30080"), SHORT).expect("from the node");
    assert_eq!(ep, EP1);
}

fn no_endpoints_is_refused_at_once(mode: Mode) {
    let w = World::new("none");
    let mut p = w.driver(mode);
    p.sync(&table(&web("NodePort", "Cluster"), &[]))
        .expect("sync");
    for to in [format!("{VIP}:80"), format!("{NODE_IP}:30080")] {
        let t0 = Instant::now();
        let e = fetch(&w.client, &to, Duration::from_secs(5)).expect_err("refused");
        assert_eq!(e.kind(), ErrorKind::ConnectionRefused, "{to}: {e}");
        assert!(t0.elapsed() < Duration::from_secs(5));
    }
    // A cluster IP on a port no Service has is refused too.
    p.sync(&table(&web("NodePort", "Cluster"), &[(EP1, "node-1")]))
        .expect("sync");
    fetch(&w.client, &format!("{VIP}:80"), SHORT).expect("the Service's port");
    let e = fetch(&w.client, &format!("{VIP}:81"), Duration::from_secs(5)).expect_err("no port 81");
    assert_eq!(e.kind(), ErrorKind::ConnectionRefused, "{e}");
    p.sync(&table(&web("NodePort", "Cluster"), &[]))
        .expect("sync");
    // From the node itself too (the output hook).
    let e = fetch(&w.node, &format!("{VIP}:80"), Duration::from_secs(5)).expect_err("refused");
    assert_eq!(e.kind(), ErrorKind::ConnectionRefused, "{e}");
}

fn a_pod_reaches_itself_through_its_service(mode: Mode) {
    let w = World::new("hp");
    let mut p = w.driver(mode);
    p.sync(&table(&web("ClusterIP", "Cluster"), &[(EP1, "node-1")]))
        .expect("sync");
    let (ep, peer) = fetch(&w.pod, &format!("{VIP}:80"), SHORT).expect("hairpin");
    assert_eq!(ep, EP1);
    assert_eq!(
        peer,
        Ipv4Addr::new(10, 244, 1, 1),
        "hairpin traffic is masqueraded"
    );
}

#[test]
fn a_restarted_proxier_adopts_the_table_and_remove_leaves_nothing() {
    let w = World::new("adopt");
    let t = table(
        &web("NodePort", "Cluster"),
        &[(EP1, "node-1"), (EP2, "node-1")],
    );
    w.proxier().sync(&t.ruleset()).expect("sync");
    let mut again = w.proxier();
    let sum = again.sync(&t.ruleset()).expect("sync");
    assert!(sum.is_empty(), "nothing to change after a restart: {sum:?}");
    fetch(&w.client, &format!("{NODE_IP}:30080"), SHORT).expect("node port");
    again.remove().expect("remove");
    again.remove().expect("remove twice");
    let out = Command::new("ip")
        .args(["netns", "exec", &w.node.0, "nft", "list", "tables"])
        .output()
        .expect("nft");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "");
}

#[test]
fn the_rendered_table_is_what_nft_accepts() {
    let w = World::new("render");
    let t = table(
        &web("LoadBalancer", "Cluster"),
        &[(EP1, "node-1"), (EP2, "node-2")],
    );
    let text = weft_nft::render::ruleset(&t.ruleset());
    let mut child = Command::new("ip")
        .args(["netns", "exec", &w.node.0, "nft", "-c", "-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("nft");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write");
    let out = child.wait_with_output().expect("nft");
    assert!(
        out.status.success(),
        "nft -c rejected:\n{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn client_ip_affinity_sticks_until_the_endpoint_leaves(mode: Mode) {
    let w = World::new("aff");
    let mut p = w.driver(mode);
    let both = [(EP1, "node-1"), (EP2, "node-1")];
    p.sync(&table(&sticky("NodePort"), &both)).expect("sync");
    for to in [format!("{VIP}:80"), format!("{NODE_IP}:30080")] {
        let answers: std::collections::BTreeSet<String> = (0..20)
            .map(|_| fetch(&w.client, &to, SHORT).expect("connect").0)
            .collect();
        assert_eq!(
            answers.len(),
            1,
            "{to}: one endpoint for one client: {answers:?}"
        );
    }
    let (first, _) = fetch(&w.client, &format!("{VIP}:80"), SHORT).expect("connect");
    let other = if first == EP1 { EP2 } else { EP1 };
    // The remembered endpoint leaves (its server still listens, so only a forgotten
    // affinity sends the client elsewhere).
    p.sync(&table(&sticky("NodePort"), &[(other, "node-1")]))
        .expect("sync");
    let (now, _) = fetch(&w.client, &format!("{VIP}:80"), SHORT).expect("connect");
    assert_eq!(now, other, "a stale affinity was forgotten");
    // Both again: the client stays with the endpoint it has now.
    p.sync(&table(&sticky("NodePort"), &both)).expect("sync");
    for _ in 0..20 {
        let (ep, _) = fetch(&w.client, &format!("{VIP}:80"), SHORT).expect("connect");
        assert_eq!(ep, other);
    }
}

fn a_udp_flow_follows_its_endpoint_when_the_endpoint_leaves(mode: Mode) {
    let w = World::new("udp");
    let mut p = w.driver(mode);
    let svc: Service = serde_json::from_value(json!({
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {"clusterIP": VIP, "ports": [{"name": "dns", "port": 53, "targetPort": 8080, "protocol": "UDP"}]}
    }))
    .unwrap();
    let udp_slice = |ep: &str| -> EndpointSlice {
        serde_json::from_value(json!({
            "metadata": {"name": "web-1", "namespace": "default",
                         "labels": {"kubernetes.io/service-name": "web"}},
            "addressType": "IPv4",
            "ports": [{"name": "dns", "port": 8080, "protocol": "UDP"}],
            "endpoints": [{"addresses": [ep], "nodeName": "node-1"}],
        }))
        .unwrap()
    };
    let sync = |p: &mut Driver, ep: &str| {
        p.sync(&Want {
            svc: svc.clone(),
            slice: udp_slice(ep),
        })
        .expect("sync")
    };
    sync(&mut p, EP1);
    // One client socket, one flow: conntrack pins it to the endpoint chosen first.
    let sock = w.client.run_in(|| {
        let s = UdpSocket::bind("192.168.77.2:5353").expect("bind");
        s.connect(format!("{VIP}:53")).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        s
    });
    let ask = || {
        sock.send(b"q").expect("send");
        let mut buf = [0u8; 64];
        let n = sock.recv(&mut buf).expect("answer");
        String::from_utf8_lossy(&buf[..n])
            .split(' ')
            .next()
            .unwrap()
            .to_string()
    };
    assert_eq!(ask(), EP1);
    assert_eq!(ask(), EP1);
    // EP1 leaves (its server still answers): the flow must move, not stay on EP1.
    sync(&mut p, EP2);
    assert_eq!(ask(), EP2, "the stale UDP flow was deleted");
}

fn load_balancer_source_ranges_admit_only_their_clients(mode: Mode) {
    let w = World::new("fw");
    let mut p = w.driver(mode);
    let lb = |ranges: serde_json::Value| -> Service {
        serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"type": "LoadBalancer", "clusterIP": VIP, "loadBalancerSourceRanges": ranges,
                     "ports": [{"name": "http", "port": 80, "targetPort": 8080, "nodePort": 30080}]},
            "status": {"loadBalancer": {"ingress": [{"ip": "192.168.78.10"}]}}
        }))
        .unwrap()
    };
    let to = "192.168.78.10:80";
    // Overlapping ranges are merged (the kernel refuses overlapping interval elements).
    p.sync(&table(
        &lb(json!([
            "10.0.0.0/8",
            "10.1.0.0/16",
            "192.168.77.0/30",
            "192.168.77.0/24"
        ])),
        &[(EP1, "node-1")],
    ))
    .expect("sync");
    fetch(&w.client, to, SHORT).expect("a client inside a range");
    p.sync(&table(&lb(json!(["10.0.0.0/8"])), &[(EP1, "node-1")]))
        .expect("sync");
    let e = fetch(&w.client, to, Duration::from_millis(700)).expect_err("outside every range");
    assert_eq!(e.kind(), ErrorKind::TimedOut, "{e}");
    // The ranges guard the load balancer address only, not the node port.
    fetch(&w.client, &format!("{NODE_IP}:30080"), SHORT).expect("node port");
    p.sync(&table(&lb(json!([])), &[(EP1, "node-1")]))
        .expect("sync");
    fetch(&w.client, to, SHORT).expect("no ranges: everyone");
}

#[test]
fn a_resync_repairs_what_someone_else_did_to_the_table() {
    let w = World::new("resync");
    let mut p = w.proxier();
    let mut model = Model::new(node());
    let want = table(&web("NodePort", "Cluster"), &[(EP1, "node-1")]);
    let eps = Endpoints::from_slices([&want.slice]);
    let elements = service::ports(&want.svc)
        .expect("proxied")
        .iter()
        .flat_map(|sp| contributions(sp, &eps, &node()))
        .collect();
    model.set_service(("default".into(), "web".into()), elements);
    p.apply(&mut model).expect("first sync");
    fetch(&w.client, &format!("{VIP}:80"), SHORT).expect("cluster IP");
    // An `nft -f` reload elsewhere flushes everything.
    sh(
        "ip",
        &["netns", "exec", &w.node.0, "nft", "flush", "ruleset"],
    );
    assert!(fetch(&w.client, &format!("{VIP}:80"), Duration::from_millis(500)).is_err());
    // Nothing changed in the model, so a plain apply sends nothing...
    assert!(p.apply(&mut model).expect("apply").is_empty());
    // ...and the periodic resync puts the table back.
    p.resync();
    p.apply(&mut model).expect("resync");
    fetch(&w.client, &format!("{VIP}:80"), SHORT).expect("cluster IP again");
}
