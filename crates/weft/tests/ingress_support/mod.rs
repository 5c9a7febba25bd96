//! What the Ingress lab tests share: the echo world the cases assume, one request from
//! the external host, the agents' access-log lines, and a load from the external host.

#![allow(dead_code)]

pub mod kill;

use crate::lab_support::*;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use weft_ingress::cases::Expect;

pub const NODE_IPS: [&str; 2] = ["192.168.1.2", "192.168.1.3"];

/// Replica `NAME-i` of an echo Service: container ports 8080 (`web`) and 9090 (`web2`),
/// both answering HTTP with the pod's name. A pod that must stay dead once killed does
/// not restart (`never_restart`).
pub fn echo_replica(ns: &str, name: &str, i: u32, never_restart: bool) -> String {
    let restart = if never_restart {
        "\n  restartPolicy: Never"
    } else {
        ""
    };
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}-{i}, namespace: {ns}, labels: {{app: {name}}}}}\n\
         spec:{restart}\n  containers: [{{name: app, image: weft/serve, ports: [{{containerPort: 8080, name: web}}, {{containerPort: 9090, name: web2}}]}}]\n---\n"
    )
}

/// An echo Service (ports `http` 80 to `web`, `alt` 8081 to `web2`, as the cases assume)
/// with its namespace, without pods.
pub fn echo_service_only(ns: &str, name: &str) -> String {
    let mut y = String::new();
    if ns != "default" {
        y.push_str(&format!(
            "apiVersion: v1\nkind: Namespace\nmetadata: {{name: {ns}}}\n---\n"
        ));
    }
    y.push_str(&format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: {ns}}}\n\
         spec:\n  selector: {{app: {name}}}\n  ports:\n  - {{name: http, port: 80, targetPort: web}}\n  - {{name: alt, port: 8081, targetPort: web2}}\n---\n"
    ));
    y
}

/// An echo Service and its replicas `NAME-1..=replicas`.
pub fn echo_service(ns: &str, name: &str, replicas: u32, never_restart: &[String]) -> String {
    let mut y = echo_service_only(ns, name);
    for i in 1..=replicas {
        let pod = format!("{name}-{i}");
        y.push_str(&echo_replica(ns, name, i, never_restart.contains(&pod)));
    }
    y
}

/// One request from the external host: (status, `namespace/pod` that answered).
pub struct Answer {
    pub ok: bool,
    pub status: Option<u16>,
    pub pod: Option<String>,
    pub line: String,
}

/// `weft probe http URL` from the external host with `extra` flags (--resolve, --host,
/// TLS trust).
pub fn probe(lab: &Lab, url: &str, method: &str, extra: &[&str]) -> Answer {
    let mut args = vec![
        "--host",
        "external",
        "--",
        weft(),
        "probe",
        "http",
        url,
        "--method",
        method,
    ];
    args.extend_from_slice(extra);
    let out = lab.lab("exec", &args);
    let line = text(&out).trim().to_string();
    Answer {
        ok: out.status.success(),
        status: field(&line, "status").and_then(|s| s.parse().ok()),
        pod: field(&line, "pod").map(str::to_string),
        line,
    }
}

/// `url` sent to `node`'s address, as curl's --resolve does it.
pub fn request(lab: &Lab, url: &str, node: &str, method: &str, tls: &[&str]) -> Answer {
    let (scheme, rest) = url.split_once("://").expect("url");
    let host = rest.split('/').next().unwrap_or(rest);
    let port = if scheme == "https" { 443 } else { 80 };
    let resolve = format!("{host}:{port}:{node}");
    let mut extra = vec!["--resolve", &resolve];
    extra.extend_from_slice(tls);
    probe(lab, url, method, &extra)
}

/// The Service a `namespace/NAME-i` pod belongs to, as a case writes it.
pub fn service_of(pod: &str) -> Option<String> {
    let (ns, name) = pod.split_once('/')?;
    let svc = name.rsplit_once('-')?.0;
    Some(if ns == "default" {
        svc.to_string()
    } else {
        format!("{ns}/{svc}")
    })
}

/// What an answer means in the case format: the Service whose pod answered, or the
/// status weft answered itself.
pub fn meaning(a: &Answer) -> Option<Expect> {
    match (a.status, &a.pod) {
        (Some(200), Some(pod)) => service_of(pod).map(Expect::Service),
        (Some(s), None) => Some(Expect::Status(s)),
        _ => None,
    }
}

pub fn write(lab: &Lab, name: &str, body: &str) -> PathBuf {
    let p = lab.state.path().join(name);
    std::fs::write(&p, body).expect("write");
    p
}

pub fn kubectl_ok(lab: &Lab, args: &[&str]) -> String {
    let out = lab.kubectl(args);
    assert!(out.status.success(), "kubectl {args:?}: {}", text(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Waits until every named pod (`namespace/name`) is Ready with an IP.
pub fn wait_ready(lab: &Lab, names: &[String], limit: Duration) -> BTreeMap<String, PodInfo> {
    let got = wait_for(limit, || {
        let pods = lab.all_pods();
        names
            .iter()
            .all(|n| pods.get(n).is_some_and(|p| p.ready && !p.ip.is_empty()))
            .then_some(pods)
    });
    got.unwrap_or_else(|| panic!("pods {names:?} not Ready within {limit:?}\n{}", lab.logs()))
}

/// The ready addresses the EndpointSlices of a Service list.
pub fn slice_addresses(lab: &Lab, ns: &str, svc: &str) -> Vec<String> {
    let label = format!("kubernetes.io/service-name={svc}");
    let out = lab.kubectl(&[
        "get",
        "endpointslices",
        "-n",
        ns,
        "-l",
        &label,
        "-o",
        "json",
    ]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    let mut found = Vec::new();
    for s in v["items"].as_array().into_iter().flatten() {
        for e in s["endpoints"].as_array().into_iter().flatten() {
            if e["conditions"]["ready"] != serde_json::Value::Bool(false) {
                let addrs = e["addresses"].as_array().into_iter().flatten();
                found.extend(addrs.filter_map(|a| a.as_str().map(str::to_string)));
            }
        }
    }
    found
}

/// One access-log line of an agent: `<client> "<method> <url>" <status> route=<r>
/// endpoint=<e> <ms>ms`, where the route is `<ns>/<ingress>:<ns>/<service>:<port>`.
#[derive(Debug, Clone)]
pub struct AccessLine {
    pub agent: String,
    pub url: String,
    pub status: u16,
    pub route: String,
    pub endpoint: String,
    pub raw: String,
}

const ACCESS: &str = " INFO weft::ingress::access: ";

fn parse_access(agent: &str, raw: &str) -> Option<AccessLine> {
    let (_, rest) = raw.split_once(ACCESS)?;
    let (_, quoted) = rest.split_once(" \"")?;
    let (request, after) = quoted.split_once("\" ")?;
    let url = request.split_once(' ')?.1.to_string();
    let mut words = after.split_whitespace();
    let status = words.next()?.parse().ok()?;
    let route = words.next()?.strip_prefix("route=")?.to_string();
    let endpoint = words.next()?.strip_prefix("endpoint=")?.to_string();
    Some(AccessLine {
        agent: agent.to_string(),
        url,
        status,
        route,
        endpoint,
        raw: raw.to_string(),
    })
}

/// Every agent's log: (file name, text).
fn agent_logs(lab: &Lab) -> Vec<(String, String)> {
    std::fs::read_dir(lab.dir().join("logs"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.starts_with("agent-")
                .then(|| (name, std::fs::read_to_string(e.path()).unwrap_or_default()))
        })
        .collect()
}

/// Every access-log line of every agent whose URL contains `needle`.
pub fn access_lines(lab: &Lab, needle: &str) -> Vec<AccessLine> {
    agent_logs(lab)
        .iter()
        .flat_map(|(name, body)| {
            body.lines()
                .filter(|l| l.contains(ACCESS) && l.contains(needle))
                .filter_map(|l| parse_access(name, l))
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Lines of the agents' logs (any kind) containing `needle`.
pub fn agent_log_lines(lab: &Lab, needle: &str) -> Vec<String> {
    agent_logs(lab)
        .iter()
        .flat_map(|(_, body)| {
            body.lines()
                .filter(|l| l.contains(needle))
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Runs a script of `ingress_support` with python3 on the external host.
pub fn python(lab: &Lab, script: &str, args: &[&str]) -> std::process::Child {
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

pub fn json_output(child: std::process::Child) -> serde_json::Value {
    let out = child.wait_with_output().expect("python3");
    assert!(out.status.success(), "script failed: {}", text(&out));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&out)))
}

/// One request of `steady.py`: its id (in the URL's `wid=`), when it was sent and
/// answered (seconds since the epoch), the status (0: none) and the pod or the error.
#[derive(Debug, Clone)]
pub struct Sent {
    pub id: String,
    pub sent: f64,
    pub done: f64,
    pub status: u16,
    pub pod: String,
}

/// A run of `steady.py`: its requests' ids start with `run`.
pub struct Load {
    pub child: std::process::Child,
    pub run: String,
}

/// Starts `steady.py` for `url` (http) against `addrs`, for at most `seconds` or until
/// `stop` exists.
pub fn steady(lab: &Lab, url: &str, seconds: u32, stop: &Path, addrs: &[&str]) -> Load {
    static RUN: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let run = format!(
        "r{}",
        RUN.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    );
    let rest = url.strip_prefix("http://").expect("an http:// url");
    let (host, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let (secs, stop) = (seconds.to_string(), stop.display().to_string());
    let mut args = vec![run.as_str(), host, path, secs.as_str(), stop.as_str(), "6"];
    args.extend_from_slice(addrs);
    let child = python(lab, "steady.py", &args);
    Load { child, run }
}

pub fn steady_results(load: Load) -> Vec<Sent> {
    let v = json_output(load.child);
    v["results"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| {
            Some(Sent {
                id: r[0].as_str()?.to_string(),
                sent: r[1].as_f64()?,
                done: r[2].as_f64()?,
                status: u16::try_from(r[3].as_u64()?).ok()?,
                pod: r[4].as_str()?.to_string(),
            })
        })
        .collect()
}

pub fn epoch(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}
