//! Ingress in a lab, from the lab's external host, through the proxy every node runs:
//! the routing cases of weft-ingress (`crates/weft-ingress/tests/cases`) sent for real,
//! to each node's address and to the load balancer address, over HTTP and HTTPS (certificates checked against the hostname, SNI choosing between
//! them), ten replicas sharing the traffic and an endpoint killed mid-run, hostile and
//! slow clients, and 200 reconfigurations under load with a WebSocket held open.

mod lab_support;

use lab_support::*;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;
use weft_ingress::cases::{default_class, qualified, Case, Expect};

const NODE_IPS: [&str; 2] = ["192.168.1.2", "192.168.1.3"];

/// Echo pods `NAME-1..=replicas` and their Service (ports `http` 80 and `alt` 8081, both
/// to the container port named `web`), as the cases assume.
fn echo_service(ns: &str, name: &str, replicas: u32) -> String {
    let mut y = String::new();
    if ns != "default" {
        y.push_str(&format!(
            "apiVersion: v1\nkind: Namespace\nmetadata: {{name: {ns}}}\n---\n"
        ));
    }
    for i in 1..=replicas {
        y.push_str(&format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}-{i}, namespace: {ns}, labels: {{app: {name}}}}}\n\
             spec:\n  containers: [{{name: app, image: weft/serve, ports: [{{containerPort: 8080, name: web}}]}}]\n---\n"
        ));
    }
    y.push_str(&format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: {ns}}}\n\
         spec:\n  selector: {{app: {name}}}\n  ports:\n  - {{name: http, port: 80, targetPort: web}}\n  - {{name: alt, port: 8081, targetPort: web}}\n---\n"
    ));
    y
}

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

/// One request from the external host: (status, `namespace/pod` that answered).
struct Answer {
    ok: bool,
    status: Option<u16>,
    pod: Option<String>,
    line: String,
}

fn request(lab: &Lab, url: &str, node: &str, method: &str, tls: &[&str]) -> Answer {
    let (scheme, rest) = url.split_once("://").expect("url");
    let host = rest.split('/').next().unwrap_or(rest);
    let port = if scheme == "https" { 443 } else { 80 };
    let resolve = format!("{host}:{port}:{node}");
    let mut args = vec![
        "--host",
        "external",
        "--",
        weft(),
        "probe",
        "http",
        url,
        "--resolve",
        &resolve,
        "--method",
        method,
    ];
    args.extend_from_slice(tls);
    let out = lab.lab("exec", &args);
    let line = text(&out).trim().to_string();
    Answer {
        ok: out.status.success(),
        status: field(&line, "status").and_then(|s| s.parse().ok()),
        pod: field(&line, "pod").map(str::to_string),
        line,
    }
}

/// What an answer means in the case format: the Service whose pod answered, or the
/// status weft answered itself.
fn meaning(a: &Answer) -> Option<Expect> {
    match (a.status, &a.pod) {
        (Some(200), Some(pod)) => {
            let (ns, name) = pod.split_once('/')?;
            let svc = name.rsplit_once('-')?.0;
            Some(Expect::Service(if ns == "default" {
                svc.to_string()
            } else {
                format!("{ns}/{svc}")
            }))
        }
        (Some(s), None) => Some(Expect::Status(s)),
        _ => None,
    }
}

fn write(lab: &Lab, name: &str, body: &str) -> PathBuf {
    let p = lab.state.path().join(name);
    std::fs::write(&p, body).expect("write");
    p
}

fn kubectl_ok(lab: &Lab, args: &[&str]) -> String {
    let out = lab.kubectl(args);
    assert!(out.status.success(), "kubectl {args:?}: {}", text(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn routing_cases_through_the_proxy() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../weft-ingress/tests/cases");
    let cases = Case::load_dir(&dir).expect("cases");
    let lab = lab_with_class();
    let services: BTreeSet<(String, String)> = cases
        .iter()
        .flat_map(|(_, c)| c.services.iter().map(|s| qualified(s)))
        .collect();
    let world: String = services
        .iter()
        .map(|(ns, n)| echo_service(ns, n, 1))
        .collect();
    lab.apply(&world);
    let pods: Vec<String> = services.iter().map(|(_, n)| format!("{n}-1")).collect();
    let names: Vec<&str> = pods.iter().map(String::as_str).collect();
    // Pods in other namespaces are not listed by name here; their Service is checked by
    // the requests themselves.
    let default_pods: Vec<&str> = names
        .iter()
        .zip(&services)
        .filter(|(_, (ns, _))| ns == "default")
        .map(|(n, _)| *n)
        .collect();
    lab.wait_running(&default_pods, Duration::from_secs(90));
    // Requests go in turn to each node and to the load balancer address.
    let lb = published_address(&lab);
    let entries: Vec<&str> = vec![NODE_IPS[0], NODE_IPS[1], lb.as_str()];
    let mut checked = 0;
    for (file, case) in &cases {
        let mut objects: Vec<serde_json::Value> = case.object_values().expect("objects");
        let mut certs = BTreeMap::new();
        for t in &case.tls_secrets {
            let g = t.generate().expect("generate");
            let (ns, name) = qualified(&t.name);
            certs.insert(
                format!("{ns}/{name}"),
                write(&lab, &format!("{file}-{name}.pem"), &g.cert_pem),
            );
            objects.insert(0, g.object);
        }
        // One object at a time, oldest first: a case's precedence follows creation order.
        let mut files = Vec::new();
        for (i, o) in objects.iter().enumerate() {
            let f = write(&lab, &format!("{file}-{i}.json"), &o.to_string());
            kubectl_ok(&lab, &["create", "-f", &f.display().to_string()]);
            files.push(f);
        }
        // Changes take effect within a second or so; every request must settle.
        let mut last = Vec::new();
        let settled = wait_for(Duration::from_secs(15), || {
            last.clear();
            for (i, r) in case.requests.iter().enumerate() {
                let node = entries[i % entries.len()];
                let (scheme, _, _) = r.parts().expect("url");
                let tls: Vec<String> = match (scheme, &r.certificate) {
                    ("https", Some(c)) if c != "default" => {
                        vec!["--cacert".into(), certs[c].display().to_string()]
                    }
                    ("https", _) => vec!["--insecure".into()],
                    _ => vec![],
                };
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
        // The certificate is the one the case names: another Secret's does not verify.
        for r in case
            .requests
            .iter()
            .filter(|r| r.url.starts_with("https://"))
        {
            let want = r.certificate.as_deref().unwrap_or("default");
            for (name, pem) in &certs {
                if name == want {
                    continue;
                }
                let a = request(
                    &lab,
                    &r.url,
                    NODE_IPS[0],
                    "GET",
                    &["--cacert", &pem.display().to_string()],
                );
                assert!(
                    !a.ok,
                    "{file}: {} verified with {name}'s certificate: {}",
                    r.url, a.line
                );
            }
        }
        check_status(&lab, file, &objects, &lb);
        for f in files.iter().rev() {
            kubectl_ok(
                &lab,
                &["delete", "-f", &f.display().to_string(), "--wait=false"],
            );
        }
    }
    assert!(checked >= 40, "only {checked} requests checked");
}

/// Served Ingresses carry the published load balancer address in `status.loadBalancer`;
/// Ingresses of another class carry none.
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
    for o in objects.iter().filter(|o| o["kind"] == "Ingress") {
        let ing: k8s_openapi::api::networking::v1::Ingress =
            serde_json::from_value(o.clone()).expect("ingress");
        let name = ing.metadata.name.clone().unwrap_or_default();
        let ns = ing
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into());
        let want = if classes.serves(&ing) {
            lb.to_string()
        } else {
            String::new()
        };
        let got = wait_for(Duration::from_secs(10), || {
            let out = lab.kubectl(&[
                "get",
                "ingress",
                "-n",
                &ns,
                &name,
                "-o",
                "jsonpath={.status.loadBalancer.ingress[*].ip}",
            ]);
            let got = String::from_utf8_lossy(&out.stdout).trim().to_string();
            (got == want).then_some(got)
        });
        assert!(
            got.is_some(),
            "{file}: ingress {ns}/{name}: status should be {want:?}"
        );
    }
}

fn ingress_for(name: &str, host: &str, svc: &str, extra_paths: &str) -> String {
    format!(
        "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {{name: {name}}}\nspec:\n  rules:\n  - host: {host}\n    http:\n      paths:\n      - {{path: /stable, pathType: Prefix, backend: {{service: {{name: {svc}, port: {{number: 80}}}}}}}}\n{extra_paths}"
    )
}

/// Runs a script of `ingress_support` with python3 on the external host.
fn python(lab: &Lab, script: &str, args: &[&str]) -> std::process::Child {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/ingress_support")
        .join(script);
    let path = path.display().to_string();
    let mut full = vec![
        "exec",
        "--name",
        lab.name.as_str(),
        "--host",
        "external",
        "--",
        "python3",
        &path,
    ];
    full.extend_from_slice(args);
    lab.weft_cmd(&["lab"])
        .args(&full)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn python3")
}

/// Waits until `url` answers 200 through the first node's proxy.
fn wait_served(lab: &Lab, url: &str) {
    let ready = wait_for(Duration::from_secs(15), || {
        let a = request(lab, url, NODE_IPS[0], "GET", &[]);
        (a.status == Some(200)).then_some(())
    });
    assert!(ready.is_some(), "{url} never served\n{}", lab.logs());
}

fn json_output(child: std::process::Child) -> serde_json::Value {
    let out = child.wait_with_output().expect("python3");
    assert!(out.status.success(), "script failed: {}", text(&out));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&out)))
}

#[test]
fn ten_replicas_share_traffic_and_a_killed_endpoint_fails_no_request() {
    let lab = lab_with_class();
    lab.apply(&echo_service("default", "ten", 10));
    lab.apply(&ingress_for("ten", "ten.example", "ten", ""));
    let names: Vec<String> = (1..=10).map(|i| format!("ten-{i}")).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    lab.wait_running(&names, Duration::from_secs(120));
    let seen = wait_for(Duration::from_secs(30), || {
        let mut seen = BTreeSet::new();
        for i in 0..60 {
            let a = request(
                &lab,
                "http://ten.example/stable",
                NODE_IPS[i % 2],
                "GET",
                &[],
            );
            seen.extend(a.pod);
        }
        (seen.len() == 10).then_some(seen)
    });
    assert!(
        seen.is_some(),
        "not every replica got traffic\n{}",
        lab.logs()
    );
    // A pod killed outright (no graceful shutdown) while requests flow: connects to it
    // are refused until its endpoint goes, and the proxy sends those requests elsewhere.
    let kill = {
        let kubeconfig = lab.kubeconfig();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(500));
            std::process::Command::new("kubectl")
                .arg("--kubeconfig")
                .arg(kubeconfig)
                .args([
                    "delete",
                    "pod",
                    "ten-3",
                    "--grace-period=0",
                    "--force",
                    "--wait=false",
                ])
                .output()
                .expect("kubectl delete")
        })
    };
    let mut failed = Vec::new();
    for i in 0..120 {
        let a = request(
            &lab,
            "http://ten.example/stable",
            NODE_IPS[i % 2],
            "GET",
            &[],
        );
        if a.status != Some(200) {
            failed.push(a.line);
        }
    }
    let out = kill.join().expect("kill thread");
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        failed.is_empty(),
        "{} of 120 requests failed:\n{}",
        failed.len(),
        failed.join("\n")
    );
}

#[test]
fn hostile_and_slow_clients_get_the_right_status() {
    let lab = lab_with_class();
    lab.apply(&echo_service("default", "web", 1));
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
    lab.apply(&echo_service("default", "steady", 2));
    lab.apply(&echo_service("default", "other", 1));
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
