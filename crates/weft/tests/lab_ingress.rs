//! Ingress in a lab, from the lab's external host, through the proxy every node runs:
//! the routing cases of weft-ingress (`crates/weft-ingress/tests/cases`) sent for real
//! over HTTP and HTTPS (certificates checked against the hostname, SNI choosing between
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

fn lab_with_class() -> Lab {
    let lab = Lab::up(2, "vxlan");
    lab.apply(&serde_json::to_string(&default_class()).expect("class"));
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
                let node = NODE_IPS[i % NODE_IPS.len()];
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
        check_status(&lab, file, &objects);
        for f in files.iter().rev() {
            kubectl_ok(
                &lab,
                &["delete", "-f", &f.display().to_string(), "--wait=false"],
            );
        }
    }
    assert!(checked >= 40, "only {checked} requests checked");
}

/// Served Ingresses carry every node's address in `status.loadBalancer`; Ingresses of
/// another class carry none.
fn check_status(lab: &Lab, file: &str, objects: &[serde_json::Value]) {
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
            NODE_IPS.join(" ")
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
