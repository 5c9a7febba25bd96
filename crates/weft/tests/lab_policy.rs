//! The NetworkPolicy truth tables (crates/weft-policy/tests/cases) probed for real: a
//! three-node lab holds the upstream netpol e2e world (namespaces x, y, z; pods a, b, c on
//! node-1, node-2, node-3; ports 80 and 81 on TCP and UDP), every case's steps are applied
//! with kubectl, and after each step every pair of pods is probed on every port and
//! compared with the case's expected matrix. SCTP is not probed: this kernel has no SCTP,
//! and the cases' SCTP-only rules are proven at the rule level (they admit no TCP or UDP,
//! which the TCP and UDP cells here check).

mod lab_support;

use lab_support::*;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;
use weft_policy::cases::{format_grid, Case, Matrix, Service, World};
use weft_policy::Protocol;

fn cases_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../weft-policy/tests/cases")
}

/// The services the lab probes: the world's, without SCTP.
fn probed(world: &World) -> Vec<Service> {
    world
        .services()
        .expect("the world's services")
        .into_iter()
        .filter(|s| s.protocol != Protocol::Sctp)
        .collect()
}

fn manifest(world: &World, services: &[Service]) -> String {
    let mut y = String::new();
    for ns in &world.namespaces {
        let labels = serde_json::to_string(&ns.labels).expect("labels");
        y.push_str(&format!(
            "apiVersion: v1\nkind: Namespace\nmetadata: {{name: \"{}\", labels: {labels}}}\n---\n",
            ns.name
        ));
    }
    for p in &world.pods {
        let (ns, name) = p.pod.split_once('/').expect("ns/pod");
        let labels = serde_json::to_string(&p.labels).expect("labels");
        let ports: Vec<String> = services
            .iter()
            .map(|s| {
                let proto = s.protocol.to_string().to_uppercase();
                format!(
                    "{{name: serve-{}-{}, containerPort: {}, protocol: {proto}}}",
                    s.port,
                    s.protocol.to_string().to_lowercase(),
                    s.port
                )
            })
            .collect();
        y.push_str(&format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: \"{name}\", namespace: \"{ns}\", labels: {labels}}}\nspec:\n  nodeName: {}\n  containers:\n  - name: serve\n    image: weft/serve\n    ports: [{}]\n    readinessProbe: {{tcpSocket: {{port: 80}}, periodSeconds: 1}}\n---\n",
            p.node,
            ports.join(", ")
        ));
    }
    y
}

/// Every world pod's address in the lab, and every node's.
fn adopt_lab_addresses(lab: &Lab, world: &mut World) {
    let out = lab.kubectl(&["get", "pods", "-A", "-o", "json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("pod list");
    let mut ips = BTreeMap::new();
    for p in v["items"].as_array().into_iter().flatten() {
        let key = format!(
            "{}/{}",
            p["metadata"]["namespace"].as_str().unwrap_or_default(),
            p["metadata"]["name"].as_str().unwrap_or_default()
        );
        if let Some(ip) = p["status"]["podIP"].as_str().and_then(|s| s.parse().ok()) {
            ips.insert(key, ip);
        }
    }
    for p in &mut world.pods {
        p.ip = *ips
            .get(&p.pod)
            .unwrap_or_else(|| panic!("{} has no IP in the lab", p.pod));
    }
    let out = lab.kubectl(&["get", "nodes", "-o", "json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("node list");
    for n in v["items"].as_array().into_iter().flatten() {
        let name = n["metadata"]["name"].as_str().unwrap_or_default();
        let Some(w) = world.nodes.iter_mut().find(|w| w.name == name) else {
            continue;
        };
        w.pod_cidr = n["spec"]["podCIDR"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        w.ips = n["status"]["addresses"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|a| a["type"] == "InternalIP")
            .filter_map(|a| a["address"].as_str()?.parse().ok())
            .collect();
    }
}

/// One probe, alone and with a long timeout: whether SRC reaches DST on SVC.
fn probe_one(lab: &Lab, world: &World, src: &str, dst: &str, svc: Service) -> bool {
    let ip = world
        .pods
        .iter()
        .find(|p| p.pod == dst)
        .map(|p| p.ip.to_string())
        .unwrap_or_default();
    let (ns, name) = src.split_once('/').expect("ns/pod");
    let target = format!("{ip}:{}", svc.port);
    let proto = svc.protocol.to_string().to_lowercase();
    let out = lab.lab(
        "exec",
        &[
            "-n",
            ns,
            name,
            "--",
            "weft",
            "probe",
            &proto,
            &target,
            "--timeout-ms",
            "2000",
        ],
    );
    out.status.success()
}

/// Probes every pair on every service at once: one shell per client pod running its
/// probes in parallel. Returns the matrix per service.
fn probe_all(lab: &Lab, world: &World, services: &[Service]) -> BTreeMap<Service, Matrix> {
    let handles: Vec<_> = world
        .pods
        .iter()
        .map(|src| {
            let mut script = String::new();
            for dst in &world.pods {
                for s in services {
                    let proto = s.protocol.to_string().to_lowercase();
                    script.push_str(&format!(
                        "weft probe {proto} {}:{} --timeout-ms 1000 & ",
                        dst.ip, s.port
                    ));
                }
            }
            script.push_str("wait");
            let (ns, name) = src.pod.split_once('/').expect("ns/pod");
            let args: Vec<String> = ["-n", ns, name, "--", "sh", "-c", &script]
                .iter()
                .map(|s| s.to_string())
                .collect();
            let lab_name = lab.name.clone();
            let state = lab.state.path().to_path_buf();
            let src = src.pod.clone();
            std::thread::spawn(move || {
                let out = std::process::Command::new(weft())
                    .env("WEFT_STATE_DIR", state)
                    .args(["lab", "exec", "--name", &lab_name])
                    .args(&args)
                    .output()
                    .expect("spawn weft lab exec");
                (src, String::from_utf8_lossy(&out.stdout).into_owned())
            })
        })
        .collect();
    let by_ip: BTreeMap<String, String> = world
        .pods
        .iter()
        .map(|p| (p.ip.to_string(), p.pod.clone()))
        .collect();
    let mut got: BTreeMap<Service, Matrix> = BTreeMap::new();
    for h in handles {
        let (src, out) = h.join().expect("probe thread");
        for line in out.lines() {
            let mut f = line.split_whitespace();
            let (Some(proto), Some(target), Some(verdict)) = (f.next(), f.next(), f.next()) else {
                continue;
            };
            let Some((ip, port)) = target.rsplit_once(':') else {
                continue;
            };
            let (Some(svc), Some(dst)) =
                (Service::parse(&format!("{proto}/{port}")), by_ip.get(ip))
            else {
                continue;
            };
            let ok = matches!(verdict, "connected" | "answered");
            got.entry(svc)
                .or_default()
                .insert((src.clone(), dst.clone()), ok);
        }
    }
    got
}

fn kubectl_ok(lab: &Lab, args: &[&str]) {
    let out = lab.kubectl(args);
    assert!(out.status.success(), "kubectl {args:?}: {}", text(&out));
}

/// Applies a step's changes with kubectl, in the order the matcher does: deletes, labels,
/// objects.
fn apply_step(lab: &Lab, step: &weft_policy::cases::Step) {
    for d in &step.delete {
        let kind = d.kind.to_lowercase();
        match &d.namespace {
            Some(ns) => kubectl_ok(lab, &["delete", &kind, &d.name, "-n", ns]),
            None => kubectl_ok(lab, &["delete", &kind, &d.name]),
        }
    }
    for l in &step.label_pods {
        let (ns, name) = l.pod.split_once('/').expect("ns/pod");
        let patch =
            serde_json::json!([{"op": "replace", "path": "/metadata/labels", "value": l.labels}]);
        kubectl_ok(
            lab,
            &[
                "patch",
                "pod",
                name,
                "-n",
                ns,
                "--type=json",
                "-p",
                &patch.to_string(),
            ],
        );
    }
    for l in &step.label_namespaces {
        let mut labels = l.labels.clone();
        labels
            .entry("kubernetes.io/metadata.name".into())
            .or_insert_with(|| l.namespace.clone());
        let patch =
            serde_json::json!([{"op": "replace", "path": "/metadata/labels", "value": labels}]);
        kubectl_ok(
            lab,
            &[
                "patch",
                "namespace",
                &l.namespace,
                "--type=json",
                "-p",
                &patch.to_string(),
            ],
        );
    }
    for (i, o) in step.apply.iter().enumerate() {
        // As JSON: kubectl's YAML 1.1 would read a bare `y` as true. Replaced, not
        // applied: a step's object is the whole object (`kubectl apply` would keep the
        // policyTypes the API server defaulted from the previous version).
        let f = lab.state.path().join(format!("step-{i}.json"));
        std::fs::write(&f, serde_json::to_string(o).expect("json")).expect("write object");
        let f = f.display().to_string();
        let created = lab.kubectl(&["create", "-f", &f]);
        if !created.status.success() {
            assert!(
                text(&created).contains("AlreadyExists")
                    || text(&created).contains("already exists"),
                "kubectl create: {}",
                text(&created)
            );
            kubectl_ok(lab, &["replace", "-f", &f]);
        }
    }
}

/// Back to the world: no policies, the world's labels.
fn reset(lab: &Lab, world: &World) {
    for ns in &world.namespaces {
        kubectl_ok(lab, &["delete", "networkpolicy", "--all", "-n", &ns.name]);
    }
    kubectl_ok(lab, &["delete", "clusternetworkpolicies", "--all"]);
    let step = weft_policy::cases::Step {
        label_pods: world
            .pods
            .iter()
            .map(|p| weft_policy::cases::PodLabels {
                pod: p.pod.clone(),
                labels: p.labels.clone(),
            })
            .collect(),
        label_namespaces: world
            .namespaces
            .iter()
            .map(|n| weft_policy::cases::NamespaceLabels {
                namespace: n.name.clone(),
                labels: n.labels.clone(),
            })
            .collect(),
        ..Default::default()
    };
    apply_step(lab, &step);
}

#[test]
fn every_truth_table_case_holds_for_real_packets() {
    let mut world = World::load(&cases_dir().join("world.yaml")).expect("world.yaml");
    let services = probed(&world);
    let lab = Lab::up(3, "host-gw");
    lab.apply(&manifest(&world, &services));
    let names: Vec<String> = world.pods.iter().map(|p| p.pod.clone()).collect();
    // wait_running reads the default namespace; wait on the whole list here.
    let ready = wait_for(Duration::from_secs(120), || {
        let out = lab.kubectl(&["get", "pods", "-A", "-o", "json"]);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        let n = v["items"]
            .as_array()?
            .iter()
            .filter(|p| {
                p["status"]["conditions"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|c| c["type"] == "Ready" && c["status"] == "True")
            })
            .count();
        (n >= names.len()).then_some(())
    });
    assert!(
        ready.is_some(),
        "the world's pods never became Ready:\n{}",
        lab.logs()
    );
    adopt_lab_addresses(&lab, &mut world);

    let mut files: Vec<PathBuf> = std::fs::read_dir(cases_dir())
        .expect("cases dir")
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.extension().is_some_and(|e| e == "yaml")
                && p.file_name().is_some_and(|n| n != "world.yaml")
        })
        .collect();
    files.sort();
    assert!(files.len() >= 20, "found {} cases", files.len());
    let mut failures = Vec::new();
    let mut cells = 0usize;
    for file in &files {
        let case = Case::load(file, &world).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        for (i, step) in case.steps.iter().enumerate() {
            let at = format!(
                "{} step {i} ({})",
                file.file_name().unwrap_or_default().to_string_lossy(),
                step.name.as_deref().unwrap_or("")
            );
            apply_step(&lab, step);
            let mut want: BTreeMap<Service, Matrix> = BTreeMap::new();
            for e in &step.expect {
                let m = e.matrix().expect("grid");
                for s in e.services().expect("services") {
                    if services.contains(&s) {
                        want.insert(s, m.clone());
                    }
                }
            }
            // Policy reaches every node within a second. Hundreds of probes at once on a
            // small machine can miss a reply: a cell that disagrees is probed again
            // alone, with a long timeout, up to three times.
            std::thread::sleep(Duration::from_millis(300));
            let mut last = probe_all(&lab, &world, &services);
            for (s, m) in &want {
                let got = last.entry(*s).or_default();
                for (cell, allowed) in m {
                    for _ in 0..3 {
                        if got.get(cell) == Some(allowed) {
                            break;
                        }
                        std::thread::sleep(Duration::from_millis(300));
                        let ok = probe_one(&lab, &world, &cell.0, &cell.1, *s);
                        got.insert(cell.clone(), ok);
                    }
                }
            }
            for (s, m) in &want {
                cells += m.len();
                let got = last.get(s).cloned().unwrap_or_default();
                if &got != m {
                    failures.push(format!(
                        "{at} on {s}:\nwant\n{}got\n{}",
                        format_grid(m, &names),
                        format_grid(&got, &names)
                    ));
                }
            }
        }
        reset(&lab, &world);
    }
    println!("{} cases, {cells} cells probed", files.len());
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));

    // Every refused probe was dropped by some node's table, logged to nflog, explained by
    // that node's agent and counted against the policy that decided.
    let out = lab
        .weft_cmd(&["lab", "policy", "counters", "--name", &lab.name])
        .output()
        .expect("spawn weft lab policy counters");
    let text = String::from_utf8_lossy(&out.stdout);
    println!("{text}");
    assert!(out.status.success(), "{text}");
    assert!(!text.contains("no counters"), "{text}");
    assert!(
        text.contains("isolation")
            && text.contains("ClusterNetworkPolicy")
            && !text.contains("(no denied packets)"),
        "every node's agent counts denials per policy:\n{text}"
    );
}

/// A probe from the lab's external host.
fn from_external(lab: &Lab, target: &str) -> (bool, String) {
    let out = std::process::Command::new("ip")
        .args(["netns", "exec", &format!("weft-{}-external", lab.name)])
        .args([weft(), "probe", "tcp", target, "--timeout-ms", "1000"])
        .output()
        .expect("spawn probe");
    (out.status.success(), text(&out))
}

/// Polls `probe` until it gives `want` (policy reaches the nodes within a second).
fn settles(want: bool, mut probe: impl FnMut() -> (bool, String)) -> (bool, String) {
    let mut last = (false, String::new());
    for _ in 0..20 {
        last = probe();
        if last.0 == want {
            break;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    last
}

/// Policy applies to the connection as the endpoint receives it: through a cluster IP
/// (after DNAT, from the client pod's own address) and through a node port with
/// externalTrafficPolicy Local (from the outside client's address).
#[test]
fn services_are_allowed_or_refused_as_the_endpoint_policy_says() {
    let lab = Lab::up(2, "host-gw");
    lab.apply(
        r#"
apiVersion: v1
kind: Pod
metadata: {name: web, labels: {app: web}}
spec:
  nodeName: node-2
  containers:
  - {name: app, image: weft/serve, ports: [{containerPort: 8080}], readinessProbe: {tcpSocket: {port: 8080}, periodSeconds: 1}}
---
apiVersion: v1
kind: Pod
metadata: {name: frontend, labels: {app: frontend}}
spec:
  nodeName: node-1
  containers: [{name: app, image: weft/serve, ports: [{containerPort: 8080}]}]
---
apiVersion: v1
kind: Pod
metadata: {name: other, labels: {app: other}}
spec:
  nodeName: node-1
  containers: [{name: app, image: weft/serve, ports: [{containerPort: 8080}]}]
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  type: NodePort
  externalTrafficPolicy: Local
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080, nodePort: 30080}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: web-from-frontend}
spec:
  podSelector: {matchLabels: {app: web}}
  ingress: [{from: [{podSelector: {matchLabels: {app: frontend}}}], ports: [{port: 8080}]}]
"#,
    );
    lab.wait_running(&["web", "frontend", "other"], Duration::from_secs(60));
    let out = lab.kubectl(&["get", "svc", "web", "-o", "jsonpath={.spec.clusterIP}"]);
    let vip = format!("{}:80", String::from_utf8_lossy(&out.stdout).trim());
    let node_port = "192.168.1.3:30080"; // node-2, where the endpoint runs

    let probe = |pod: &str| {
        let (ok, line) = lab.exec_weft(pod, &["probe", "tcp", &vip, "--timeout-ms", "1000"]);
        (ok, line)
    };
    let (ok, line) = settles(true, || probe("frontend"));
    assert!(ok, "frontend through the cluster IP: {line}");
    let (ok, line) = settles(false, || probe("other"));
    assert!(!ok, "other through the cluster IP must be refused: {line}");
    let (ok, line) = settles(false, || from_external(&lab, node_port));
    assert!(
        !ok,
        "the outside through the node port must be refused: {line}"
    );

    // Admitting the outside client's address opens the node port to it, and only that.
    lab.apply(
        r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: web-from-outside}
spec:
  podSelector: {matchLabels: {app: web}}
  ingress: [{from: [{ipBlock: {cidr: 192.168.1.254/32}}]}]
"#,
    );
    // Connected and answered: on a loaded machine the greeting can miss one probe's
    // one-second deadline, which is not what this checks.
    let (ok, line) = settles(true, || {
        let (ok, line) = from_external(&lab, node_port);
        (ok && line.contains("client="), line)
    });
    assert!(
        ok,
        "the admitted outside client through the node port: {line}"
    );
    assert!(
        line.contains("client=192.168.1.254"),
        "Local keeps the client's address, which the policy saw: {line}"
    );
    let (ok, line) = settles(false, || probe("other"));
    assert!(!ok, "other is still refused: {line}");
}
