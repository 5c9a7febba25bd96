//! NetworkPolicy for pods a kubelet runs: a pod is isolated by the policies that select it
//! by the time the CNI ADD returns, before the runtime could start its process. The node
//! is `weft agent --no-pods` joined to a lab (`no_pods`); the test is its container
//! runtime and uses the CNI config the agent wrote, whose `policySocket` makes ADD wait
//! for the agent's commit. Each Pod object is bound to that node and never gets a status,
//! so the agent can learn the pod's address only from the ADD.

mod lab_support;
mod no_pods;

use lab_support::*;
use no_pods::*;
use std::process::{Command, Stdio};
use std::time::Duration;

/// In namespace `np`: nothing in or out, except TCP 8080 to the pods labelled
/// `role: allowed` (any namespace), and anything from them.
const POLICIES: &str = r#"apiVersion: v1
kind: Namespace
metadata: {name: np}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny-all, namespace: np}
spec: {podSelector: {}, policyTypes: [Ingress, Egress]}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: allow-one, namespace: np}
spec:
  podSelector: {}
  policyTypes: [Ingress, Egress]
  egress:
  - to: [{namespaceSelector: {}, podSelector: {matchLabels: {role: allowed}}}]
    ports: [{port: 8080, protocol: TCP}]
  ingress:
  - from: [{namespaceSelector: {}, podSelector: {matchLabels: {role: allowed}}}]
---
"#;

/// A lab pod on node-1 serving TCP 8080, labelled `role: <name>`.
fn labelled_echo(name: &str) -> String {
    echo_pod(name, "node-1").replace("{app: e2e}", &format!("{{app: e2e, role: {name}}}"))
}

/// A Pod object in `np` bound to the kubelet's node; returns its uid.
fn bound_pod(lab: &Lab, name: &str) -> String {
    lab.apply(&format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: np, labels: {{app: web}}}}\nspec:\n  nodeName: kubelet-node\n  containers:\n  - name: app\n    image: weft/serve\n    ports: [{{containerPort: 8080}}]\n---\n"
    ));
    let out = lab.kubectl(&["get", "pod", "-n", "np", name, "-o", "json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("pod JSON");
    v["metadata"]["uid"].as_str().expect("a uid").to_string()
}

fn probe(from: &Ns, ip: &str, timeout_ms: &str) -> (bool, String) {
    from.weft(&[
        "probe",
        "tcp",
        &format!("{ip}:8080"),
        "--timeout-ms",
        timeout_ms,
    ])
}

/// The config without the wait, as it was before this was built.
fn without_wait(conf: &str) -> String {
    let mut v: serde_json::Value = serde_json::from_str(conf).expect("config JSON");
    v.as_object_mut().expect("object").remove("policySocket");
    v.to_string()
}

fn with_socket(conf: &str, socket: &std::path::Path, timeout_s: f64) -> String {
    let mut v: serde_json::Value = serde_json::from_str(conf).expect("config JSON");
    v["policySocket"] = serde_json::json!(socket);
    v["policyTimeoutSeconds"] = serde_json::json!(timeout_s);
    v.to_string()
}

#[test]
fn a_new_pod_is_isolated_by_its_policy_when_cni_add_returns() {
    let lab = Lab::up(1, "host-gw");
    let node = KubeletNode::join(&lab);
    assert!(
        node.conf.contains("policySocket"),
        "the agent enforces policy, so its CNI config must name its socket: {}",
        node.conf
    );
    lab.apply(POLICIES);
    lab.apply(&(labelled_echo("allowed") + &labelled_echo("denied")));
    let lab_pods = lab.wait_running(&["allowed", "denied"], Duration::from_secs(60));
    let (allowed, denied) = (&lab_pods["allowed"].ip, &lab_pods["denied"].ip);

    // A first pod shows the agent's view holds the policies and the lab pods' addresses:
    // policy objects reach a node's agent when its watch delivers them, which no ADD
    // orders (on any cluster).
    let canary_ns = node.pod_ns("canary");
    let canary = PodArgs {
        namespace: "np",
        name: "canary",
        uid: None,
    };
    bound_pod(&lab, "canary");
    let (ok, out) = cni(
        &node.ns.0,
        &canary_ns.0,
        "ADD",
        "canary",
        &canary,
        &node.conf,
    );
    assert!(ok, "ADD canary: {out}\n{}", node.log());
    wait_for(Duration::from_secs(60), || {
        (!probe(&canary_ns, denied, "1000").0 && probe(&canary_ns, allowed, "2000").0).then_some(())
    })
    .unwrap_or_else(|| panic!("the policies never held for the canary\n{}", node.log()));

    // The pod under test: its object is created, then at once the runtime's ADD (the
    // agent may not have it in its watch yet: it waits for it).
    let web_ns = node.pod_ns("web");
    let uid = bound_pod(&lab, "web");
    let web = PodArgs {
        namespace: "np",
        name: "web",
        uid: Some(&uid),
    };
    let started = std::time::Instant::now();
    let (ok, out) = cni(&node.ns.0, &web_ns.0, "ADD", "web", &web, &node.conf);
    // Informational only (how long the wait made this ADD), never asserted.
    eprintln!("ADD with the policy wait took {:?}", started.elapsed());
    assert!(ok, "ADD web: {out}\n{}", node.log());
    let web_ip = result_ip(&out);
    // Right after ADD returned, where the runtime would start the process: one probe
    // each, no retry. The denied target is refused, the allowed one connects.
    let (reached, line) = probe(&web_ns, denied, "1500");
    assert!(
        !reached,
        "a new pod reached a target its policy denies right after ADD: {line}"
    );
    let (reached, line) = probe(&web_ns, allowed, "3000");
    assert!(reached, "the allowed target refused the new pod: {line}");

    // Ingress as the policy says: from the allowed pod, not from the other.
    let _server = Bg(Command::new("ip")
        .args(["netns", "exec", &web_ns.0, weft(), "serve", "--tcp", "8080"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn weft serve"));
    let target = format!("{web_ip}:8080");
    wait_for(Duration::from_secs(10), || {
        lab.exec_weft("allowed", &["probe", "tcp", &target])
            .0
            .then_some(())
    })
    .unwrap_or_else(|| panic!("the allowed pod never reached {target}\n{}", node.log()));
    let (reached, line) =
        lab.exec_weft("denied", &["probe", "tcp", &target, "--timeout-ms", "1500"]);
    assert!(
        !reached,
        "a lab pod the policy denies reached {target}: {line}"
    );

    // The same without the wait (the config as it was): the agent never learns this
    // pod's address, and the denied target answers. This is what the wait prevents.
    let bare_ns = node.pod_ns("bare");
    bound_pod(&lab, "bare");
    let bare = PodArgs {
        namespace: "np",
        name: "bare",
        uid: None,
    };
    let conf = without_wait(&node.conf);
    let started = std::time::Instant::now();
    let (ok, out) = cni(&node.ns.0, &bare_ns.0, "ADD", "bare", &bare, &conf);
    eprintln!("ADD without the wait took {:?}", started.elapsed());
    assert!(ok, "ADD without the wait: {out}");
    let (reached, line) = probe(&bare_ns, denied, "1500");
    assert!(
        reached,
        "without the wait the pod should be unprotected (else this test proves nothing): {line}"
    );
    let (ok, out) = cni(&node.ns.0, &bare_ns.0, "DEL", "bare", &bare, &conf);
    assert!(ok, "DEL bare: {out}");

    // An agent that takes the connection and never answers: ADD fails after the
    // config's timeout, naming the socket, and leaves nothing behind.
    let silent_path = node.state.path().join("silent.sock");
    let silent = std::os::unix::net::UnixListener::bind(&silent_path).expect("bind");
    let late_ns = node.pod_ns("late");
    bound_pod(&lab, "late");
    let late = PodArgs {
        namespace: "np",
        name: "late",
        uid: None,
    };
    let conf = with_socket(&node.conf, &silent_path, 1.0);
    let (ok, out) = cni(&node.ns.0, &late_ns.0, "ADD", "late", &late, &conf);
    assert!(
        !ok,
        "ADD succeeded with an agent that never answered: {out}"
    );
    assert!(
        out.contains("\"code\":11")
            && out.contains(&silent_path.display().to_string())
            && out.contains("no answer within 1s"),
        "{out}"
    );
    drop(silent);
    assert_leaves_nothing(&node, &late_ns, "late");

    // The agent stops (SIGTERM): its socket goes, and an ADD with its config fails with
    // the cause rather than starting a pod outside its policy.
    let socket = node.agent_dir().join("policy.sock");
    assert!(socket.exists(), "{}", node.log());
    let pid = node.agent.0.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .is_ok_and(|s| s.success()));
    wait_for(Duration::from_secs(10), || (!socket.exists()).then_some(()))
        .unwrap_or_else(|| panic!("the stopped agent left {}", socket.display()));
    let (ok, out) = cni(&node.ns.0, &late_ns.0, "ADD", "late", &late, &node.conf);
    assert!(!ok, "ADD succeeded with no agent: {out}");
    assert!(
        out.contains("\"code\":11")
            && out.contains(&socket.display().to_string())
            && out.contains("connect: No such file or directory"),
        "{out}"
    );
    assert_leaves_nothing(&node, &late_ns, "late");

    // DEL still works without the agent, and releases the pods' addresses.
    for (ns, id, pod) in [
        (&late_ns, "late", &late),
        (&web_ns, "web", &web),
        (&canary_ns, "canary", &canary),
    ] {
        let (ok, out) = cni(&node.ns.0, &ns.0, "DEL", id, pod, &node.conf);
        assert!(ok, "DEL {id}: {out}");
    }
    assert!(node.allocations().is_empty(), "{:?}", node.allocations());
}

/// A failed ADD undid itself: no address held, no veth on either side (the kernel may
/// take a moment to unregister a deleted pair).
fn assert_leaves_nothing(node: &KubeletNode, pod_ns: &Ns, container_id: &str) {
    let held: Vec<_> = node
        .allocations()
        .into_iter()
        .filter(|(id, _)| id == container_id)
        .collect();
    assert!(held.is_empty(), "a failed ADD kept an address: {held:?}");
    let veth = weft_cni::veth::host_name(container_id, "eth0");
    wait_for(Duration::from_secs(10), || {
        (pod_ns.links() == ["lo"] && !node.ns.links().contains(&veth)).then_some(())
    })
    .unwrap_or_else(|| {
        panic!(
            "a failed ADD left links: pod {:?}, node {:?}",
            pod_ns.links(),
            node.ns.links()
        )
    });
}
