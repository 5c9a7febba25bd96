//! Services in a real two-node lab, driven by ordinary manifests: a ClusterIP balances
//! over pods on both nodes without NAT for pod clients, UDP too; a Service without
//! endpoints refuses at once; a pod reaches itself through its Service; a NodePort with
//! `externalTrafficPolicy: Local` answers the external host from the node's own pod and
//! keeps the client's address, and so does a LoadBalancer address routed to both nodes,
//! whose health check ports report local endpoints; removing a pod takes it out of the
//! Service.

mod lab_support;

use lab_support::*;
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

const POD_WAIT: Duration = Duration::from_secs(60);
const SYNC_WAIT: Duration = Duration::from_secs(20);

fn pod(name: &str, node: &str, labels: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  labels: {{{labels}}}\nspec:\n  nodeName: {node}\n  containers:\n  - name: app\n    image: weft/serve\n    ports: [{{name: echo, containerPort: 8080}}, {{containerPort: 8081, protocol: UDP}}]\n    readinessProbe: {{tcpSocket: {{port: 8080}}, periodSeconds: 1}}\n---\n"
    )
}

const SERVICES: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports:
  - {name: tcp, port: 80, targetPort: echo}
  - {name: udp, port: 81, targetPort: 8081, protocol: UDP}
---
apiVersion: v1
kind: Service
metadata: {name: web-local}
spec:
  type: NodePort
  externalTrafficPolicy: Local
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080, nodePort: 30080}]
---
apiVersion: v1
kind: Service
metadata: {name: web-lb}
spec:
  type: LoadBalancer
  externalTrafficPolicy: Local
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: lonely}
spec:
  selector: {app: nobody}
  ports: [{port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: only-web-1}
spec:
  selector: {role: one}
  ports: [{port: 80, targetPort: 8080}]
"#;

fn jsonpath(lab: &Lab, svc: &str, path: &str) -> String {
    let out = lab.kubectl(&["get", "service", svc, "-o", &format!("jsonpath={path}")]);
    assert!(out.status.success(), "get service {svc}: {}", text(&out));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn cluster_ip(lab: &Lab, svc: &str) -> String {
    jsonpath(lab, svc, "{.spec.clusterIP}")
}

/// Probes from `pod` until every pod in `want` has answered (or the time is up); returns
/// who answered and the client address each answer reported.
fn answered_by(
    lab: &Lab,
    from: &str,
    args: &[&str],
    want: &[&str],
) -> (BTreeSet<String>, BTreeSet<String>) {
    let (mut pods, mut clients) = (BTreeSet::new(), BTreeSet::new());
    let t0 = Instant::now();
    while t0.elapsed() < SYNC_WAIT {
        let mut full = vec!["probe"];
        full.extend_from_slice(args);
        let (ok, out) = lab.exec_weft(from, &full);
        if ok {
            if let Some(p) = field(&out, "pod") {
                pods.insert(p.trim_start_matches("default/").to_string());
            }
            clients.insert(client_ip(&out));
        }
        if want.iter().all(|w| pods.contains(*w)) {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    (pods, clients)
}

/// A probe from the lab's external host (192.168.1.254): (exit 0, line).
fn probe_from_external(lab: &Lab, args: &[&str]) -> (bool, String) {
    let external = format!("weft-{}-external", lab.name);
    let out = std::process::Command::new("ip")
        .args(["netns", "exec", &external, weft(), "probe"])
        .args(args)
        .output()
        .expect("spawn probe");
    (out.status.success(), text(&out))
}

#[test]
fn services_in_a_two_node_lab() {
    let lab = Lab::up(2, "vxlan");
    lab.apply(
        &[
            pod("web-1", "node-1", "app: web, role: one"),
            pod("web-2", "node-2", "app: web"),
            pod("client", "node-1", "app: client"),
        ]
        .concat(),
    );
    let pods = lab.wait_running(&["web-1", "web-2", "client"], POD_WAIT);
    lab.apply(SERVICES);
    let web = cluster_ip(&lab, "web");

    // Pod -> ClusterIP: both endpoints answer, one on the client's own node (bridged
    // reply, un-DNATed by conntrack) and one across the overlay; no NAT for a pod client.
    let (who, clients) = answered_by(
        &lab,
        "client",
        &["tcp", &format!("{web}:80")],
        &["web-1", "web-2"],
    );
    assert_eq!(
        who,
        ["web-1", "web-2"].map(String::from).into(),
        "{}",
        lab.logs()
    );
    assert_eq!(
        clients,
        [pods["client"].ip.clone()].into(),
        "pod clients keep their IP"
    );
    let (who, _) = answered_by(
        &lab,
        "client",
        &["udp", &format!("{web}:81")],
        &["web-1", "web-2"],
    );
    assert!(!who.is_empty(), "UDP through the cluster IP answered");

    // `weft lab trace` reads the same answer from the kernel: both endpoints, their pods
    // and nodes, and the way to each.
    let trace = lab.lab_ok("trace", &["client", &format!("{web}:80")]);
    for want in [
        "matches a cluster IP",
        "default/web-1 on node-1",
        "default/web-2 on node-2",
        "on this node's bridge",
        "through the VXLAN overlay to node-2",
        "source kept",
    ] {
        assert!(trace.contains(want), "trace lacks {want:?}:\n{trace}");
    }

    // No endpoints: refused at once, not a timeout.
    let lonely = cluster_ip(&lab, "lonely");
    let trace = lab.lab_ok("trace", &["client", &format!("{lonely}:80")]);
    assert!(trace.contains("REJECTS"), "{trace}");
    let t0 = Instant::now();
    let (ok, out) = lab.exec_weft("client", &["probe", "tcp", &format!("{lonely}:80")]);
    assert!(!ok && out.contains("refused"), "lonely: {out}");
    assert!(t0.elapsed() < Duration::from_secs(5), "refused quickly");

    // Hairpin: web-1 through a Service whose only endpoint is web-1.
    let one = cluster_ip(&lab, "only-web-1");
    let (who, clients) = answered_by(&lab, "web-1", &["tcp", &format!("{one}:80")], &["web-1"]);
    assert_eq!(who, ["web-1".to_string()].into());
    assert!(
        !clients.contains(&pods["web-1"].ip),
        "hairpin traffic is masqueraded: {clients:?}"
    );

    // NodePort, Local policy: each node answers with its own pod and keeps the source.
    for (node_ip, pod) in [("192.168.1.2", "web-1"), ("192.168.1.3", "web-2")] {
        let (ok, out) = probe_from_external(&lab, &["tcp", &format!("{node_ip}:30080")]);
        assert!(ok, "node port on {node_ip}: {out}");
        assert_eq!(
            field(&out, "pod"),
            Some(&*format!("default/{pod}")),
            "{out}"
        );
        assert_eq!(client_ip(&out), "192.168.1.254", "source kept: {out}");
    }

    // LoadBalancer, Local policy: an address from the lab's pool, routed by the external
    // host to both nodes; each answers with its own pod, the source kept; each node's
    // health check port says it has one local endpoint.
    let lb = jsonpath(&lab, "web-lb", "{.status.loadBalancer.ingress[0].ip}");
    assert!(lb.starts_with("192.168.2."), "LoadBalancer address: {lb:?}");
    let hc = jsonpath(&lab, "web-lb", "{.spec.healthCheckNodePort}");
    for _ in 0..6 {
        let (ok, out) = probe_from_external(&lab, &["tcp", &format!("{lb}:80")]);
        assert!(ok, "load balancer {lb}: {out}");
        assert_eq!(client_ip(&out), "192.168.1.254", "source kept: {out}");
    }
    for node_ip in ["192.168.1.2", "192.168.1.3"] {
        let (ok, out) = probe_from_external(&lab, &["http", &format!("http://{node_ip}:{hc}/")]);
        assert!(
            ok && out.contains("status=200"),
            "health check on {node_ip}: {out}"
        );
    }

    // web-2 goes: the Service sends everything to web-1, and node-2's node port (Local,
    // no pod left there) drops instead of answering.
    lab.lab_ok("delete", &["pod", "web-2"]);
    let t0 = Instant::now();
    let only_web_1 = || {
        (0..10).all(|_| {
            let (ok, out) = lab.exec_weft("client", &["probe", "tcp", &format!("{web}:80")]);
            ok && field(&out, "pod") == Some("default/web-1")
        })
    };
    while !only_web_1() {
        assert!(
            t0.elapsed() < SYNC_WAIT,
            "web-2 still answers\n{}",
            lab.logs()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let (ok, out) =
        probe_from_external(&lab, &["tcp", "192.168.1.3:30080", "--timeout-ms", "1000"]);
    assert!(
        !ok && out.contains("timeout"),
        "node-2 has no local endpoint: {out}"
    );
}
