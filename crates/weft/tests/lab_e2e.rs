//! The lab end to end, for both backends: pods reach each other on one node and across
//! nodes with their own IPs, egress leaves with the node's IP, an agent killed under an open
//! connection comes back without breaking it, a deleted pod gives its IP back, and a removed
//! node's routes are withdrawn. One lab per backend carries these checks in order (the
//! destructive ones last), so the suite stays a few minutes long.

mod lab_support;

use lab_support::*;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

const POD_WAIT: Duration = Duration::from_secs(60);

#[test]
fn vxlan_lab_end_to_end() {
    lab_end_to_end("vxlan");
}

#[test]
fn host_gw_lab_end_to_end() {
    lab_end_to_end("host-gw");
}

fn lab_end_to_end(backend: &str) {
    let lab = Lab::up(3, backend);
    let manifest = [
        echo_pod("a1", "node-1"),
        echo_pod("a2", "node-1"),
        echo_pod("b", "node-2"),
        echo_pod("c", "node-3"),
    ]
    .concat();
    lab.apply(&manifest);
    let pods = lab.wait_running(&["a1", "a2", "b", "c"], POD_WAIT);
    for (name, node) in [
        ("a1", "node-1"),
        ("a2", "node-1"),
        ("b", "node-2"),
        ("c", "node-3"),
    ] {
        assert_eq!(pods[name].node, node, "{name} is pinned to {node}");
    }

    pods_reach_each_other_with_their_own_ips(&lab, &pods);
    egress_leaves_with_the_node_ip(&lab);
    agent_kill_keeps_connections_and_converges(&lab, &pods);
    pod_delete_releases_its_ip(&lab, &pods);
    node_removal_withdraws_its_routes(&lab, &pods);
}

fn pods_reach_each_other_with_their_own_ips(
    lab: &Lab,
    pods: &std::collections::BTreeMap<String, PodInfo>,
) {
    // a1 -> a2 crosses node-1's bridge; a1 -> b and b -> a1 cross the underlay.
    for (from, to) in [("a1", "a2"), ("a1", "b"), ("b", "a1"), ("c", "b")] {
        let (src, dst) = (&pods[from].ip, &pods[to].ip);
        let tcp = lab.probe_ok(from, &["tcp", &format!("{dst}:8080")]);
        assert_eq!(
            &client_ip(&tcp),
            src,
            "tcp {from} -> {to}: server saw {tcp}"
        );
        let udp = lab.probe_ok(from, &["udp", &format!("{dst}:8081")]);
        assert_eq!(
            &client_ip(&udp),
            src,
            "udp {from} -> {to}: server saw {udp}"
        );
        lab.probe_ok(from, &["icmp", dst]);
    }
}

fn egress_leaves_with_the_node_ip(lab: &Lab) {
    let external = format!("weft-{}-external", lab.name);
    let mut serve = std::process::Command::new("ip");
    serve
        .args(["netns", "exec", &external, weft(), "serve", "--tcp", "9000"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let _server = Bg(serve.spawn().expect("spawn weft serve in external"));
    for (pod, node_ip) in [("a1", "192.168.1.2"), ("b", "192.168.1.3")] {
        // The server may still be binding: retry until it answers.
        let line = wait_for(Duration::from_secs(10), || {
            let (ok, out) = lab.exec_weft(pod, &["probe", "tcp", "192.168.1.254:9000"]);
            ok.then_some(out)
        })
        .unwrap_or_else(|| panic!("{pod} never reached the external host"));
        assert_eq!(client_ip(&line), node_ip, "egress from {pod}: {line}");
    }
}

/// A TCP connection opened from inside `netns` (the socket stays in the namespace it was
/// created in, so only the connecting thread enters it).
fn connect_from(netns: &str, target: String) -> TcpStream {
    let path = format!("/run/netns/{netns}");
    std::thread::spawn(move || {
        let f = std::fs::File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
        nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET)
            .unwrap_or_else(|e| panic!("setns {path}: {e}"));
        let addr = target.parse().expect("socket address");
        TcpStream::connect_timeout(&addr, Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("connect {target} from {path}: {e}"))
    })
    .join()
    .expect("connecting thread")
}

/// Sends `word` and reads until the echo server returned it.
fn exchange(s: &mut TcpStream, word: &str) -> Result<(), String> {
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    s.write_all(format!("{word}\n").as_bytes())
        .map_err(|e| format!("write {word}: {e}"))?;
    let mut got = Vec::new();
    let mut buf = [0u8; 512];
    while !String::from_utf8_lossy(&got).contains(word) {
        let n = s.read(&mut buf).map_err(|e| format!("read {word}: {e}"))?;
        if n == 0 {
            return Err(format!(
                "connection closed before {word} came back: {}",
                String::from_utf8_lossy(&got)
            ));
        }
        got.extend_from_slice(&buf[..n]);
    }
    Ok(())
}

fn agent_kill_keeps_connections_and_converges(
    lab: &Lab,
    pods: &std::collections::BTreeMap<String, PodInfo>,
) {
    let mut conn = connect_from(
        &lab.pod_netns("node-1", "a1"),
        format!("{}:8080", pods["b"].ip),
    );
    exchange(&mut conn, "before-kill").expect("connection works before the kill");

    let old = lab.procs()["agent-node-2"];
    kill(Pid::from_raw(old as i32), Signal::SIGKILL).expect("kill the agent of node-2");
    let new = wait_for(Duration::from_secs(20), || {
        lab.procs()
            .get("agent-node-2")
            .copied()
            .filter(|p| *p != old && alive(*p))
    })
    .unwrap_or_else(|| {
        panic!(
            "the supervisor did not restart agent-node-2\n{}",
            lab.logs()
        )
    });
    assert_ne!(new, old);
    exchange(&mut conn, "after-restart").expect("the connection survives the agent's restart");

    lab.apply(&echo_pod("b2", "node-2"));
    let now = lab.wait_running(&["b2"], POD_WAIT);
    let tcp = lab.probe_ok("a1", &["tcp", &format!("{}:8080", now["b2"].ip)]);
    assert_eq!(client_ip(&tcp), pods["a1"].ip, "a1 -> b2: {tcp}");
    // The pods the old agent started are still served (adopted, not restarted elsewhere).
    assert_eq!(
        now["b"].ip, pods["b"].ip,
        "b kept its IP across the agent restart"
    );
    lab.probe_ok("a1", &["tcp", &format!("{}:8080", pods["b"].ip)]);
    exchange(&mut conn, "after-converge").expect("the connection still works after convergence");
}

fn ipam_allocations(lab: &Lab, node: &str) -> Vec<String> {
    let store = weft_cni::ipam::Store::open(&lab.dir().join(format!("nodes/{node}/ipam")), "weft")
        .expect("open the IPAM store");
    let state = store.read().expect("read the IPAM state");
    state
        .allocations
        .into_iter()
        .map(|a| a.ip.to_string())
        .collect()
}

fn pod_delete_releases_its_ip(lab: &Lab, pods: &std::collections::BTreeMap<String, PodInfo>) {
    let ip = pods["a2"].ip.clone();
    let netns = lab.pod_netns("node-1", "a2");
    assert!(netns_names().contains(&netns), "a2 runs in {netns}");
    assert!(
        ipam_allocations(lab, "node-1").contains(&ip),
        "IPAM holds a2's {ip}"
    );

    let node1 = lab.node_netns("node-1");
    let ports = bridge_ports(&node1);

    lab.lab_ok("delete", &["pod", "a2"]);
    let released = wait_for(Duration::from_secs(30), || {
        (!netns_names().contains(&netns)
            && !ipam_allocations(lab, "node-1").contains(&ip)
            && bridge_ports(&node1) == ports - 1)
            .then_some(())
    });
    assert!(
        released.is_some(),
        "after deleting a2: netns present={}, IPAM {:?} (a2 had {ip}), cbr0 ports {} (were {ports})\n{}",
        netns_names().contains(&netns),
        ipam_allocations(lab, "node-1"),
        bridge_ports(&node1),
        lab.logs()
    );
    assert!(!lab.pods().contains_key("a2"), "a2 is gone from the API");

    // The node keeps allocating: a new pod there starts and is reachable.
    lab.apply(&echo_pod("a3", "node-1"));
    let now = lab.wait_running(&["a3"], POD_WAIT);
    assert!(ipam_allocations(lab, "node-1").contains(&now["a3"].ip));
    lab.probe_ok("b", &["tcp", &format!("{}:8080", now["a3"].ip)]);
}

/// Links enslaved to the node's bridge: one host-side veth per pod.
fn bridge_ports(netns: &str) -> usize {
    ip(netns, &["-o", "link", "show", "master", "cbr0"])
        .lines()
        .count()
}

fn node_pod_cidr(lab: &Lab, node: &str) -> Option<String> {
    let out = lab.kubectl(&["get", "node", node, "-o", "json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    v["spec"]["podCIDR"].as_str().map(String::from)
}

fn has_route(netns: &str, cidr: &str) -> bool {
    ip(netns, &["route", "show"])
        .lines()
        .any(|l| l.split_whitespace().next() == Some(cidr))
}

/// Deleting node-3's Node object withdraws the route to its pod subnet on the others.
/// A running agent would put its Node back (a restarted agent registers again, as a
/// kubelet does), so the test first freezes the supervisor (SIGSTOP: it restarts agents)
/// and kills node-3's agent: what is left is a node that is gone from the cluster.
fn node_removal_withdraws_its_routes(
    lab: &Lab,
    pods: &std::collections::BTreeMap<String, PodInfo>,
) {
    let cidr = node_pod_cidr(lab, "node-3").expect("node-3 has a podCIDR");
    for n in ["node-1", "node-2"] {
        assert!(
            has_route(&lab.node_netns(n), &cidr),
            "{n} routes {cidr} while node-3 is up"
        );
    }
    let c = format!("{}:8080", pods["c"].ip);
    lab.probe_ok("a1", &["tcp", &c]);

    let supervisor = Pid::from_raw(lab.supervisor_pid().expect("supervisor pid"));
    kill(supervisor, Signal::SIGSTOP).expect("pause the supervisor");
    let agent = lab.procs()["agent-node-3"];
    kill(Pid::from_raw(agent as i32), Signal::SIGKILL).expect("kill node-3's agent");
    // kubectl talks to the control plane from inside the lab's root namespace (the
    // machine's loopback works too: the control plane accepts on that socket itself).
    let out = lab.kubectl_inside(&["delete", "node", "node-3"]);
    assert!(out.status.success(), "kubectl delete node: {}", text(&out));

    let withdrawn = wait_for(Duration::from_secs(30), || {
        ["node-1", "node-2"]
            .iter()
            .all(|n| !has_route(&lab.node_netns(n), &cidr))
            .then_some(())
    });
    let routes = ip(&lab.node_netns("node-1"), &["route", "show"]);
    // VXLAN also withdraws the tunnel's forwarding entry towards node-3's underlay address.
    let fdb = bridge_fdb(&lab.node_netns("node-1"));
    // Probed while the supervisor is still paused (a resumed one brings node-3 back), from
    // a1's namespace directly, as a process of the test's own.
    let probe = std::process::Command::new("ip")
        .args(["netns", "exec", &lab.pod_netns("node-1", "a1"), weft()])
        .args(["probe", "tcp", &c, "--timeout-ms", "1000"])
        .output()
        .expect("spawn weft probe");
    // Pod GC removes c with its Node. It must have done so before node-3's agent, once
    // resumed, registers the node again (or c would rightly stay, bound to a live node).
    let gc = wait_for(Duration::from_secs(30), || {
        (!lab.pods().contains_key("c")).then_some(())
    });
    kill(supervisor, Signal::SIGCONT).expect("resume the supervisor");
    assert!(gc.is_some(), "c outlived the deletion of its node");
    assert!(
        withdrawn.is_some(),
        "route to {cidr} still there after node-3 was deleted:\n{routes}"
    );
    assert!(
        !fdb.contains("dst 192.168.1.4 "),
        "FDB still points at node-3:\n{fdb}"
    );
    assert!(
        !probe.status.success(),
        "a1 still reaches c on the removed node: {}",
        text(&probe)
    );

    // Resumed, the supervisor restarts node-3's agent, which registers the node again and
    // its subnet is routed once more.
    let back = wait_for(Duration::from_secs(60), || {
        let cidr = node_pod_cidr(lab, "node-3")?;
        has_route(&lab.node_netns("node-1"), &cidr).then_some(cidr)
    });
    assert!(
        back.is_some(),
        "node-3 did not come back after its agent restarted\n{}",
        lab.logs()
    );
    // Deleting the Node deleted its pods (pod GC, as in Kubernetes), and node-3's agent,
    // back, tears down what it still ran for them.
    assert!(
        !lab.pods().contains_key("c"),
        "c came back with its node: {:?}",
        lab.pods()
    );
    let c_netns = lab.pod_netns("node-3", "c");
    let torn_down = wait_for(Duration::from_secs(30), || {
        (!netns_names().contains(&c_netns)).then_some(())
    });
    assert!(torn_down.is_some(), "{c_netns} is still there");
    // A new pod on the re-registered node is reachable across nodes.
    lab.apply(&echo_pod("c2", "node-3"));
    let c2 = lab.wait_running(&["c2"], Duration::from_secs(60))["c2"]
        .ip
        .clone();
    let again = wait_for(Duration::from_secs(30), || {
        lab.exec_weft(
            "a1",
            &[
                "probe",
                "tcp",
                &format!("{c2}:8080"),
                "--timeout-ms",
                "1000",
            ],
        )
        .0
        .then_some(())
    });
    assert!(
        again.is_some(),
        "c2 on the re-registered node-3 is unreachable\n{}",
        lab.logs()
    );
}

fn bridge_fdb(netns: &str) -> String {
    let out = std::process::Command::new("bridge")
        .args(["-n", netns, "fdb", "show"])
        .output()
        .expect("spawn bridge");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A background process killed on drop.
struct Bg(std::process::Child);

impl Drop for Bg {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A pod deleted while its node's agent is down is torn down once the agent is back: the
/// restarted agent adopts the pods still running on the node, and one the API no longer
/// wants must lose its namespace, its server and its IP, as after a delete with the agent up.
/// The supervisor is paused (SIGSTOP) so the killed agent stays down until the pod is
/// deleted; kubectl then talks from the lab's root namespace (the paused supervisor carries
/// the host's API forwarder).
#[test]
fn pod_deleted_while_its_agent_is_down_is_torn_down_after_restart() {
    let lab = Lab::up(1, "host-gw");
    lab.apply(&[echo_pod("keep", "node-1"), echo_pod("gone", "node-1")].concat());
    let pods = lab.wait_running(&["keep", "gone"], POD_WAIT);
    let ip = pods["gone"].ip.clone();
    let netns = lab.pod_netns("node-1", "gone");
    assert!(netns_names().contains(&netns), "gone runs in {netns}");

    let supervisor = Pid::from_raw(lab.supervisor_pid().expect("supervisor pid"));
    kill(supervisor, Signal::SIGSTOP).expect("pause the supervisor");
    let agent = lab.procs()["agent-node-1"];
    kill(Pid::from_raw(agent as i32), Signal::SIGKILL).expect("kill node-1's agent");
    let out = lab.kubectl_inside(&["delete", "pod", "gone", "--wait=false"]);
    kill(supervisor, Signal::SIGCONT).expect("resume the supervisor");
    assert!(out.status.success(), "kubectl delete pod: {}", text(&out));

    let cleaned = wait_for(Duration::from_secs(30), || {
        (!lab.pods().contains_key("gone")
            && !netns_names().contains(&netns)
            && !ipam_allocations(&lab, "node-1").contains(&ip))
        .then_some(())
    });
    assert!(
        cleaned.is_some(),
        "after the agent restarted: pod in API={}, netns present={}, IPAM {:?} (gone had {ip})",
        lab.pods().contains_key("gone"),
        netns_names().contains(&netns),
        ipam_allocations(&lab, "node-1"),
    );
    // The pod that was not deleted was adopted and still serves.
    lab.probe_ok("keep", &["tcp", &format!("{}:8080", pods["keep"].ip)]);
}

/// An agent killed while it is starting pods converges after the supervisor restarts it:
/// every pod ends up Running with one address, and nothing half-made is left behind (no
/// extra namespaces, no addresses held for nobody).
#[test]
fn agent_killed_while_starting_pods_converges_without_leaks() {
    let lab = Lab::up(1, "vxlan");
    let names: Vec<String> = (0..6).map(|i| format!("m{i}")).collect();
    let manifest: String = names.iter().map(|n| echo_pod(n, "node-1")).collect();
    let old = lab.procs()["agent-node-1"];
    lab.apply(&manifest);
    // Kill as soon as the first pod namespace appears: the agent is mid-way through starting.
    let prefix = format!("weft-{}-node-1.", lab.name);
    wait_for(Duration::from_secs(30), || {
        netns_names()
            .iter()
            .any(|n| n.starts_with(&prefix))
            .then_some(())
    })
    .expect("the agent starts creating pods");
    kill(Pid::from_raw(old as i32), Signal::SIGKILL).expect("kill the agent");

    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let pods = lab.wait_running(&refs, POD_WAIT);
    let mut ips: Vec<String> = pods.values().map(|p| p.ip.clone()).collect();
    ips.sort();
    ips.dedup();
    assert_eq!(ips.len(), names.len(), "distinct IPs: {pods:?}");
    let converged = wait_for(Duration::from_secs(30), || {
        let mut held = ipam_allocations(&lab, "node-1");
        held.sort();
        let spaces = netns_names()
            .iter()
            .filter(|n| n.starts_with(&prefix))
            .count();
        let ports = bridge_ports(&lab.node_netns("node-1"));
        (held == ips && spaces == names.len() && ports == names.len()).then_some(())
    });
    assert!(
        converged.is_some(),
        "after the restart: IPAM {:?} for pods {ips:?}; pod namespaces {:?}; cbr0 ports {}",
        ipam_allocations(&lab, "node-1"),
        netns_names()
            .into_iter()
            .filter(|n| n.starts_with(&prefix))
            .collect::<Vec<_>>(),
        bridge_ports(&lab.node_netns("node-1"))
    );
    for p in pods.values() {
        lab.probe_ok("m0", &["tcp", &format!("{}:8080", p.ip)]);
    }
}

/// The control plane killed (-9) is restarted by the supervisor with its objects intact:
/// the pods are still there, the agents reconnect, and a pod applied afterwards starts and
/// serves HTTP (a port named http runs weft's HTTP echo) to a pod created before.
#[test]
fn control_plane_restart_keeps_the_cluster() {
    let lab = Lab::up(2, "host-gw");
    let http_pod = |name: &str, node: &str| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: \"{name}\"}}\nspec:\n  nodeName: {node}\n  containers:\n  - name: app\n    image: weft/serve\n    ports: [{{containerPort: 8000, name: http}}]\n    readinessProbe: {{tcpSocket: {{port: 8000}}, periodSeconds: 1}}\n---\n"
        )
    };
    lab.apply(&http_pod("h1", "node-1"));
    let before = lab.wait_running(&["h1"], POD_WAIT);

    let old = lab.procs()["control-plane"];
    kill(Pid::from_raw(old as i32), Signal::SIGKILL).expect("kill the control plane");
    wait_for(Duration::from_secs(20), || {
        lab.procs()
            .get("control-plane")
            .copied()
            .filter(|p| *p != old && alive(*p))
    })
    .unwrap_or_else(|| panic!("the control plane was not restarted\n{}", lab.logs()));

    // Applying retries until the restarted control plane answers.
    let f = lab.state.path().join("h2.yaml");
    std::fs::write(&f, http_pod("h2", "node-2")).expect("write manifest");
    let applied = wait_for(Duration::from_secs(30), || {
        lab.lab("apply", &["-f", &f.display().to_string()])
            .status
            .success()
            .then_some(())
    });
    assert!(applied.is_some(), "apply after the restart\n{}", lab.logs());
    let after = lab.wait_running(&["h1", "h2"], POD_WAIT);
    assert_eq!(after["h1"].uid, before["h1"].uid, "h1 survived the restart");
    assert_eq!(after["h1"].ip, before["h1"].ip);
    let line = lab.probe_ok(
        "h2",
        &["http", &format!("http://{}:8000/x", after["h1"].ip)],
    );
    assert!(line.contains("status=200"), "{line}");
    assert_eq!(field(&line, "server"), Some("h1"), "{line}");
    assert_eq!(client_ip(&line), after["h2"].ip, "{line}");
}
