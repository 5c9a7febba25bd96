//! Ingress in a lab, from the lab's external host, through the proxy every node runs.
//! The routing cases of weft-ingress (`crates/weft-ingress/tests/cases`) are sent for
//! real, to each node's address and to the load balancer address, over HTTP and HTTPS
//! (certificates checked against the hostname, SNI choosing between them), and once more
//! with `weft probe http --host` to a node's address, whose access-log line must name the
//! route and the endpoint chosen. What a case asks beyond that (every replica answering,
//! a replica's process killed mid-run) is done by `ingress_support::kill`. Besides the
//! cases: hostile and slow clients, 200 reconfigurations under load with a WebSocket held
//! open, and how soon a new endpoint is picked up.

mod ingress_support;
mod lab_support;

use ingress_support::*;
use lab_support::*;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use weft_ingress::cases::{default_class, qualified, Case, Expect, Request};

/// The load balancer address the agents' published Service `kube-system/weft-ingress`
/// got: it reaches the proxies as the node addresses do.
fn published_address(lab: &Lab) -> String {
    let got = wait_for(Duration::from_secs(20), || {
        let out = lab.kubectl(&[
            "get",
            "service",
            "-n",
            "kube-system",
            "weft-ingress",
            "-o",
            "jsonpath={.status.loadBalancer.ingress[0].ip}",
        ]);
        let ip = String::from_utf8_lossy(&out.stdout).trim().to_string();
        (!ip.is_empty()).then_some(ip)
    });
    got.unwrap_or_else(|| {
        panic!(
            "no load balancer address for kube-system/weft-ingress\n{}",
            lab.logs()
        )
    })
}

/// A two-node lab; its control plane made `weft` the default IngressClass, exactly as
/// the cases' `default_class` describes it.
fn lab_with_class() -> Lab {
    let lab = Lab::up(2, "vxlan");
    let got = kubectl_ok(&lab, &["get", "ingressclass", "weft", "-o", "json"]);
    let got: serde_json::Value = serde_json::from_str(&got).expect("class json");
    let want = default_class();
    assert_eq!(got["spec"], want["spec"], "{got}");
    assert_eq!(
        got["metadata"]["annotations"], want["metadata"]["annotations"],
        "{got}"
    );
    lab
}

#[test]
fn routing_cases_through_the_proxy() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../weft-ingress/tests/cases");
    let cases = Case::load_dir(&dir).expect("cases");
    let lab = lab_with_class();
    let pods = apply_world(&lab, &cases);
    // Requests go in turn to each node and to the load balancer address.
    let lb = published_address(&lab);
    let entries: Vec<&str> = vec![NODE_IPS[0], NODE_IPS[1], lb.as_str()];
    let mut checked = 0;
    for (file, case) in &cases {
        let started = Instant::now();
        let (objects, certs) = create_objects(&lab, file, case);
        // Changes take effect within a second or so; every request must settle.
        let mut last = Vec::new();
        let settled = wait_for(Duration::from_secs(15), || {
            last.clear();
            for (i, r) in case.requests.iter().enumerate() {
                let node = entries[i % entries.len()];
                let tls = trust(r, &certs);
                let tls: Vec<&str> = tls.iter().map(String::as_str).collect();
                let a = request(&lab, &r.url, node, &r.method, &tls);
                if meaning(&a).as_ref() != Some(&r.expect) {
                    last.push(format!(
                        "{file}: {} {} via {node}: want {:?}, got: {}",
                        r.method, r.url, r.expect, a.line
                    ));
                }
            }
            last.is_empty().then_some(())
        });
        assert!(
            settled.is_some(),
            "case {file} ({}):\n{}\n{}",
            case.name,
            last.join("\n"),
            lab.logs()
        );
        checked += case.requests.len();
        for (i, r) in case.requests.iter().enumerate() {
            by_host_flag(&lab, file, i, r, &certs, &pods);
        }
        other_certificates_fail(&lab, file, case, &certs);
        check_status(&lab, file, &objects, &lb);
        for r in case.requests.iter().filter(|r| r.every_replica) {
            ingress_support::kill::every_replica(&lab, file, case, r, &pods);
        }
        ingress_support::kill::kill_mid_run(&lab, file, case, &pods);
        for o in objects.iter().rev() {
            let kind = o["kind"].as_str().unwrap_or_default();
            let name = o["metadata"]["name"].as_str().unwrap_or_default();
            let ns = o["metadata"]["namespace"].as_str().unwrap_or("default");
            kubectl_ok(&lab, &["delete", kind, name, "-n", ns, "--wait=false"]);
        }
        println!(
            "{file}: checked in {:.1} s",
            started.elapsed().as_secs_f64()
        );
    }
    assert!(checked >= 40, "only {checked} requests checked");
}

/// Every case's echo Services, each with the most replicas a case asks of it; replicas a
/// case kills do not restart. Waits until every pod is Ready.
fn apply_world(lab: &Lab, cases: &[(String, Case)]) -> BTreeMap<String, PodInfo> {
    let mut replicas: BTreeMap<(String, String), u32> = BTreeMap::new();
    let mut victims = Vec::new();
    for (_, c) in cases {
        for s in &c.services {
            let n = replicas.entry(qualified(s)).or_insert(1);
            *n = (*n).max(c.replica_count());
        }
        victims.extend(c.kill_target().map(|(_, _, pod)| pod));
    }
    let world: String = replicas
        .iter()
        .map(|((ns, n), r)| echo_service(ns, n, *r, &victims))
        .collect();
    lab.apply(&world);
    let names: Vec<String> = replicas
        .iter()
        .flat_map(|((ns, n), r)| (1..=*r).map(move |i| format!("{ns}/{n}-{i}")))
        .collect();
    wait_ready(lab, &names, Duration::from_secs(180))
}

/// The case's TLS Secrets and objects, created one at a time, oldest first (a case's
/// precedence follows creation order); the objects and each Secret's certificate file.
fn create_objects(
    lab: &Lab,
    file: &str,
    case: &Case,
) -> (Vec<serde_json::Value>, BTreeMap<String, PathBuf>) {
    let mut objects: Vec<serde_json::Value> = case.object_values().expect("objects");
    let mut certs = BTreeMap::new();
    for t in &case.tls_secrets {
        let g = t.generate().expect("generate");
        let (ns, name) = qualified(&t.name);
        certs.insert(
            format!("{ns}/{name}"),
            write(lab, &format!("{file}-{name}.pem"), &g.cert_pem),
        );
        objects.insert(0, g.object);
    }
    for (i, o) in objects.iter().enumerate() {
        let f = write(lab, &format!("{file}-{i}.json"), &o.to_string());
        kubectl_ok(lab, &["create", "-f", &f.display().to_string()]);
    }
    (objects, certs)
}

/// How a request trusts the server: the case's Secret's certificate, else anything.
fn trust(r: &Request, certs: &BTreeMap<String, PathBuf>) -> Vec<String> {
    let (scheme, _, _) = r.parts().expect("url");
    match (scheme, &r.certificate) {
        ("https", Some(c)) if c != "default" => {
            vec!["--cacert".into(), certs[c].display().to_string()]
        }
        ("https", _) => vec!["--insecure".into()],
        _ => vec![],
    }
}

/// The request sent to the second node's address with `--host` (no --resolve), marked by
/// a query: it gets the same answer (over https its certificate checked against the
/// `--host` name, not the address), and one agent logs one line for it with the route's
/// Service and the endpoint that answered (at the case's `endpointPort`).
fn by_host_flag(
    lab: &Lab,
    file: &str,
    i: usize,
    r: &Request,
    certs: &BTreeMap<String, PathBuf>,
    pods: &BTreeMap<String, PodInfo>,
) {
    let (scheme, host, path) = r.parts().expect("url");
    let sep = if path.contains('?') { '&' } else { '?' };
    let marker = format!("wlog={file}.{i}");
    let url = format!("{scheme}://{}{path}{sep}{marker}", NODE_IPS[1]);
    let mut extra = vec!["--host".to_string(), host.to_string()];
    extra.extend(trust(r, certs));
    let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
    let a = probe(lab, &url, &r.method, &extra);
    assert_eq!(
        meaning(&a).as_ref(),
        Some(&r.expect),
        "{file}: {url} --host {host}: {}",
        a.line
    );
    let mine = || -> Vec<AccessLine> {
        access_lines(lab, &marker)
            .into_iter()
            .filter(|l| l.url.ends_with(&marker))
            .collect()
    };
    let _ = wait_for(Duration::from_secs(5), || {
        (!mine().is_empty()).then_some(())
    });
    // The log is written out every 100 ms: a second line for the request would be there
    // by now.
    std::thread::sleep(Duration::from_millis(300));
    let lines = mine();
    let [line] = lines.as_slice() else {
        panic!("{file}: {url}: want one access-log line, got {lines:?}");
    };
    let ok = match (&r.expect, &a.pod) {
        (Expect::Service(svc), Some(pod)) => {
            let (ns, name) = qualified(svc);
            let ip = pods.get(pod).map_or("?", |p| p.ip.as_str());
            let (eip, eport) = line.endpoint.rsplit_once(':').unwrap_or(("", ""));
            line.status == 200
                && line.route.contains(&format!(":{ns}/{name}:"))
                && eip == ip
                && r.endpoint_port.is_none_or(|p| eport == p.to_string())
        }
        (Expect::Status(s), _) => line.status == *s && line.endpoint == "-",
        _ => false,
    };
    assert!(
        ok,
        "{file}: {url}: access-log line {} for {}",
        line.raw, a.line
    );
}

/// The certificate is the one the case names: another Secret's does not verify, whether
/// the name comes from the URL or from `--host`.
fn other_certificates_fail(lab: &Lab, file: &str, case: &Case, certs: &BTreeMap<String, PathBuf>) {
    for r in case
        .requests
        .iter()
        .filter(|r| r.url.starts_with("https://"))
    {
        let want = r.certificate.as_deref().unwrap_or("default");
        let (_, host, path) = r.parts().expect("url");
        let by_ip = format!("https://{}{path}", NODE_IPS[0]);
        for (name, pem) in certs.iter().filter(|(n, _)| *n != want) {
            let pem = pem.display().to_string();
            let a = request(lab, &r.url, NODE_IPS[0], "GET", &["--cacert", &pem]);
            assert!(
                !a.ok,
                "{file}: {} verified with {name}'s certificate: {}",
                r.url, a.line
            );
            let a = probe(lab, &by_ip, "GET", &["--host", host, "--cacert", &pem]);
            assert!(
                !a.ok,
                "{file}: {by_ip} --host {host} verified with {name}'s: {}",
                a.line
            );
        }
    }
}

/// Served Ingresses carry the published load balancer address in `status.loadBalancer`;
/// Ingresses of another class carry none, checked once the served ones of the same case
/// have theirs (status starts empty, so checking sooner would prove nothing).
fn check_status(lab: &Lab, file: &str, objects: &[serde_json::Value], lb: &str) {
    let mut classes = vec![default_class()];
    classes.extend(
        objects
            .iter()
            .filter(|o| o["kind"] == "IngressClass")
            .cloned(),
    );
    let classes: Vec<k8s_openapi::api::networking::v1::IngressClass> = classes
        .into_iter()
        .map(|c| serde_json::from_value(c).expect("class"))
        .collect();
    let classes = weft_ingress::class::Classes::from_objects(&classes);
    let (mut served, mut ignored) = (Vec::new(), Vec::new());
    for o in objects.iter().filter(|o| o["kind"] == "Ingress") {
        let ing: k8s_openapi::api::networking::v1::Ingress =
            serde_json::from_value(o.clone()).expect("ingress");
        let name = ing.metadata.name.clone().unwrap_or_default();
        let ns = ing
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into());
        if classes.serves(&ing) {
            served.push((ns, name));
        } else {
            ignored.push((ns, name));
        }
    }
    let status = |ns: &str, name: &str| {
        let out = lab.kubectl(&[
            "get",
            "ingress",
            "-n",
            ns,
            name,
            "-o",
            "jsonpath={.status.loadBalancer.ingress[*].ip}",
        ]);
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    for (ns, name) in &served {
        let got = wait_for(Duration::from_secs(10), || {
            (status(ns, name) == lb).then_some(())
        });
        assert!(
            got.is_some(),
            "{file}: ingress {ns}/{name}: status should be {lb:?}"
        );
    }
    if !ignored.is_empty() {
        assert!(!served.is_empty(), "{file}: no served Ingress to wait for");
    }
    for (ns, name) in &ignored {
        let got = status(ns, name);
        assert!(
            got.is_empty(),
            "{file}: ingress {ns}/{name} of another class got status {got:?}"
        );
    }
    println!(
        "{file}: status: {} served with {lb}, {} of another class without",
        served.len(),
        ignored.len()
    );
}

fn ingress_for(name: &str, host: &str, svc: &str, extra_paths: &str) -> String {
    format!(
        "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {{name: {name}}}\nspec:\n  rules:\n  - host: {host}\n    http:\n      paths:\n      - {{path: /stable, pathType: Prefix, backend: {{service: {{name: {svc}, port: {{number: 80}}}}}}}}\n{extra_paths}"
    )
}

/// Waits until `url` answers 200 through the first node's proxy.
fn wait_served(lab: &Lab, url: &str) {
    let ready = wait_for(Duration::from_secs(15), || {
        let a = request(lab, url, NODE_IPS[0], "GET", &[]);
        (a.status == Some(200)).then_some(())
    });
    assert!(ready.is_some(), "{url} never served\n{}", lab.logs());
}

#[test]
fn hostile_and_slow_clients_get_the_right_status() {
    let lab = lab_with_class();
    lab.apply(&echo_service("default", "web", 1, &[]));
    lab.apply(&ingress_for("web", "web.example", "web", ""));
    lab.wait_running(&["web-1"], Duration::from_secs(60));
    wait_served(&lab, "http://web.example/stable");
    let r = json_output(python(&lab, "hostile.py", &[NODE_IPS[0], "web.example"]));
    let status = |k: &str| r[k].as_i64().unwrap_or(-2);
    // The plain request goes to the only route's prefix (/stable) or 404s: either way
    // weft answered; the hostile ones are refused before any backend sees them.
    assert_eq!(status("normal"), 404, "{r}");
    assert_eq!(
        r["cl_and_te_responses"], 1,
        "a smuggled request was answered: {r}"
    );
    for k in ["two_lengths", "obs_fold", "bare_cr", "te_not_chunked"] {
        assert_eq!(status(k), 400, "{k}: {r}");
    }
    assert_eq!(status("huge_header"), 431, "{r}");
    assert_eq!(status("huge_body_declared"), 413, "{r}");
    assert_eq!(
        status("served_while_slow"),
        404,
        "others wait on a slow client: {r}"
    );
    let closed_after = r["slow_closed_after_s"].as_f64().unwrap_or(99.0);
    assert!(
        status("slow_client") != 200 && closed_after < 20.0,
        "slow client not cut off: {r}"
    );
}

#[test]
fn two_hundred_reconfigurations_under_load_fail_nothing() {
    let lab = lab_with_class();
    lab.apply(&echo_service("default", "steady", 2, &[]));
    lab.apply(&echo_service("default", "other", 1, &[]));
    lab.apply(&ingress_for("steady", "steady.example", "steady", ""));
    lab.wait_running(
        &["steady-1", "steady-2", "other-1"],
        Duration::from_secs(60),
    );
    wait_served(&lab, "http://steady.example/stable");
    let stop = lab.state.path().join("stop-load");
    let load = python(
        &lab,
        "load.py",
        &[NODE_IPS[1], "steady.example", &stop.display().to_string()],
    );
    std::thread::sleep(Duration::from_secs(1));
    // 200 updates of the same host: a path added, moved and removed each time, and a
    // second Ingress churned beside it.
    for i in 0..200 {
        let extra = format!(
            "      - {{path: /v{i}, pathType: Prefix, backend: {{service: {{name: other, port: {{number: 80}}}}}}}}\n"
        );
        let f = write(
            &lab,
            "churn.yaml",
            &ingress_for("steady", "steady.example", "steady", &extra),
        );
        kubectl_ok(&lab, &["apply", "-f", &f.display().to_string()]);
    }
    std::fs::write(&stop, "").expect("stop file");
    let r = json_output(load);
    assert_eq!(r["failures"], serde_json::json!([]), "{r}\n{}", lab.logs());
    for k in ["keepalive_ok", "fresh_ok", "ws_echoes"] {
        assert!(r[k].as_u64().unwrap_or(0) > 20, "{k} too low: {r}");
    }
    // The last update comes to be served (kubectl returning means the API has it; the
    // proxies follow within the watch's delay).
    let last = wait_for(Duration::from_secs(15), || {
        let a = request(&lab, "http://steady.example/v199", NODE_IPS[0], "GET", &[]);
        (a.pod.as_deref() == Some("default/other-1")).then_some(())
    });
    assert!(
        last.is_some(),
        "/v199 never routed to other\n{}",
        lab.logs()
    );
}

/// How long after a new endpoint appears in its Service's EndpointSlice the proxies send
/// requests to it: a Service with no pod answers 503 through the Ingress, then a pod
/// comes; requests flow from the external host all along. Printed, not asserted.
#[test]
fn a_new_endpoint_is_picked_up() {
    let lab = lab_with_class();
    lab.apply(&echo_service_only("default", "late"));
    lab.apply(&ingress_for("late", "late.example", "late", ""));
    let url = "http://late.example/stable";
    let empty = wait_for(Duration::from_secs(15), || {
        let a = request(&lab, url, NODE_IPS[0], "GET", &[]);
        (a.status == Some(503)).then_some(())
    });
    assert!(
        empty.is_some(),
        "no 503 from a Service without pods\n{}",
        lab.logs()
    );
    let stop = lab.state.path().join("stop-late");
    let load = steady(&lab, url, 120, &stop, &NODE_IPS);
    std::thread::sleep(Duration::from_millis(500));
    // A watch on the slice, timestamping each change as it arrives.
    let mut watch = std::process::Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(lab.kubeconfig())
        .args([
            "get",
            "endpointslices",
            "-l",
            "kubernetes.io/service-name=late",
            "-w",
            "-o",
            "jsonpath={.endpoints[*].addresses[0]}{\"\\n\"}",
        ])
        .stdout(std::process::Stdio::piped())
        .stdin(std::process::Stdio::null())
        .spawn()
        .expect("kubectl get -w");
    let stdout = watch.stdout.take().expect("watch stdout");
    let listed = std::thread::spawn(move || {
        use std::io::BufRead;
        std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .find(|l| !l.trim().is_empty())
            .map(|_| epoch(std::time::SystemTime::now()))
    });
    std::thread::sleep(Duration::from_millis(500));
    let applied = epoch(std::time::SystemTime::now());
    lab.apply(&echo_replica("default", "late", 1, false));
    let done = wait_for(Duration::from_secs(90), || {
        listed.is_finished().then_some(())
    });
    let _ = watch.kill();
    let _ = watch.wait();
    assert!(done.is_some(), "late-1 never listed\n{}", lab.logs());
    let listed_at = listed
        .join()
        .expect("watch thread")
        .unwrap_or_else(|| panic!("the watch ended without listing late-1\n{}", lab.logs()));
    let served = wait_for(Duration::from_secs(15), || {
        access_lines(&lab, "late.example")
            .iter()
            .any(|l| l.status == 200)
            .then_some(())
    });
    std::fs::write(&stop, "").expect("stop file");
    let results = steady_results(load);
    assert!(served.is_some(), "late-1 never served\n{}", lab.logs());
    let first = results
        .iter()
        .filter(|s| s.status == 200 && s.pod == "default/late-1")
        .map(|s| s.done)
        .fold(f64::INFINITY, f64::min);
    assert!(
        first.is_finite(),
        "no request answered by late-1: {} sent",
        results.len()
    );
    let other: Vec<&Sent> = results
        .iter()
        .filter(|s| s.status != 200 && s.status != 503)
        .collect();
    assert!(
        other.is_empty(),
        "requests neither 503 nor served: {other:?}"
    );
    println!(
        "ingress: endpoint picked up after {} ms (the slice listed it {} ms after the pod \
         was applied, seen by a watch; {} requests)",
        ((first - listed_at) * 1000.0).round(),
        ((listed_at - applied) * 1000.0).round(),
        results.len()
    );
}
