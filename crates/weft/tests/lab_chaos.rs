//! Chaos on a three-node lab, bounded and repeatable (a fixed seed): pods created and
//! deleted by the thousand and Services changed by the hundred while agents are
//! SIGKILLed every few seconds and the control plane every 30 s (the lab's supervisor
//! restarts them). A checker watches throughout; once quiet, the invariants must hold:
//! no two live pods share an IP; every IPAM allocation belongs to a live pod; every node
//! routes every other node's subnet; every Service reaches its pods from every node; no
//! pod namespace or process outlives its pod; every acknowledged write is there.
//!
//! Size: `WEFT_CHAOS_PODS` pod creations (default 2000), one Service change per
//! `pods / 300` pods.

mod lab_support;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Node, Pod, Service};
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::{Api, Client};
use lab_support::*;

const SEED: u64 = 0x5eed_0c4a_05e5_2026;
const LIVE: usize = 45;
const GROUPS: usize = 8;
const SERVICES: usize = 6;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

fn pod(i: usize) -> Pod {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": format!("chaos-{i}"), "labels": {"group": format!("g{}", i % GROUPS)}},
        "spec": {"containers": [{"name": "app", "image": "weft/serve",
                                 "ports": [{"containerPort": 8080}]}]}
    }))
    .expect("pod")
}

fn service(k: usize, group: u64, port: u64) -> Service {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": format!("svc-{k}")},
        "spec": {"selector": {"group": format!("g{group}")},
                 "ports": [{"name": "web", "port": port, "targetPort": 8080}]}
    }))
    .expect("service")
}

/// Retries an API write through control-plane restarts. Some(Ok) once the server
/// acknowledged it; a 409 (create) or 404 (delete) after an attempt whose answer was
/// lost also means the write was applied. Some(Err) when the server refused it, None if
/// it never answered.
async fn persist<T, F, Fut>(mut f: F) -> Option<Result<(), kube::Error>>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, kube::Error>>,
{
    let mut lost_answer = false;
    for _ in 0..300 {
        match f().await {
            Ok(_) => return Some(Ok(())),
            Err(kube::Error::Api(e)) if lost_answer && (e.code == 409 || e.code == 404) => {
                return Some(Ok(()));
            }
            Err(kube::Error::Api(e)) if e.code < 500 => return Some(Err(kube::Error::Api(e))),
            Err(_) => {
                lost_answer = true;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    None
}

#[derive(Default)]
struct Figures {
    agent_kills: AtomicUsize,
    control_plane_kills: AtomicUsize,
    checks: AtomicUsize,
    violations: Mutex<Vec<String>>,
}

impl Figures {
    fn violation(&self, v: String) {
        let mut all = self.violations.lock().expect("lock");
        if all.len() < 50 {
            all.push(v);
        }
    }
}

/// No two live (not deleting) pods with an IP share it.
fn duplicate_ips(pods: &[Pod]) -> Vec<String> {
    let mut by_ip: HashMap<String, Vec<String>> = HashMap::new();
    for p in pods
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
    {
        if let Some(ip) = p.status.as_ref().and_then(|s| s.pod_ip.clone()) {
            by_ip
                .entry(ip)
                .or_default()
                .push(p.metadata.name.clone().unwrap_or_default());
        }
    }
    by_ip
        .into_iter()
        .filter(|(_, v)| v.len() > 1)
        .map(|(ip, v)| format!("{ip} held by {v:?}"))
        .collect()
}

fn kill(pid: u32) {
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    );
}

#[test]
fn chaos_keeps_every_invariant() {
    let total: usize = std::env::var("WEFT_CHAOS_PODS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    let service_every = (total / 300).max(1);
    let lab = Lab::up(3, "vxlan");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let client = rt.block_on(lab.client());
    let figures = Arc::new(Figures::default());
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();

    // Faults: an agent every 3-7 s, the control plane every 30 s.
    let faults = {
        let (stop, figures) = (stop.clone(), figures.clone());
        let status = lab.dir().join("status.json");
        std::thread::spawn(move || {
            let mut rng = Rng(SEED ^ 0xfa17);
            let mut last_cp = Instant::now();
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(3000 + rng.below(4000)));
                let procs: Vec<(String, u32)> = std::fs::read(&status)
                    .ok()
                    .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
                    .and_then(|v| v["procs"].as_array().cloned())
                    .unwrap_or_default()
                    .iter()
                    .filter_map(|p| {
                        Some((p["name"].as_str()?.to_string(), p["pid"].as_u64()? as u32))
                    })
                    .collect();
                let agents: Vec<u32> = procs
                    .iter()
                    .filter(|(n, _)| n.starts_with("agent-"))
                    .map(|(_, p)| *p)
                    .collect();
                if !agents.is_empty() && !stop.load(Ordering::Relaxed) {
                    kill(agents[rng.below(agents.len() as u64) as usize]);
                    figures.agent_kills.fetch_add(1, Ordering::Relaxed);
                }
                if last_cp.elapsed() > Duration::from_secs(30) {
                    if let Some((_, pid)) = procs.iter().find(|(n, _)| n == "control-plane") {
                        kill(*pid);
                        figures.control_plane_kills.fetch_add(1, Ordering::Relaxed);
                    }
                    last_cp = Instant::now();
                }
            }
        })
    };

    // The checker: every 2 s, no two live pods share an IP.
    let checker = {
        let (stop, figures, client) = (stop.clone(), figures.clone(), client.clone());
        rt.spawn(async move {
            let api: Api<Pod> = Api::default_namespaced(client);
            while !stop.load(Ordering::Relaxed) {
                if let Ok(list) = api.list(&ListParams::default()).await {
                    figures.checks.fetch_add(1, Ordering::Relaxed);
                    for d in duplicate_ips(&list.items) {
                        figures.violation(format!("during the run: {d}"));
                    }
                }
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        })
    };

    // The workload: pods in, oldest out, a Service change every few pods.
    let pods: Api<Pod> = Api::default_namespaced(client.clone());
    let services: Api<Service> = Api::default_namespaced(client.clone());
    let mut rng = Rng(SEED);
    let mut live: std::collections::VecDeque<usize> = Default::default();
    let mut acked_pods: BTreeMap<String, bool> = BTreeMap::new();
    let mut acked_services: BTreeMap<String, Option<(u64, u64)>> = BTreeMap::new();
    let (mut pod_ops, mut service_ops, mut unanswered) = (0usize, 0usize, 0usize);
    let pp = PostParams::default();
    let dp = DeleteParams::default();
    let patch_params = kube::api::PatchParams::default();
    for i in 0..total {
        let p = pod(i);
        match rt.block_on(persist(|| pods.create(&pp, &p))) {
            Some(Ok(_)) => {
                acked_pods.insert(format!("chaos-{i}"), true);
                live.push_back(i);
            }
            Some(Err(e)) => figures.violation(format!("create chaos-{i} refused: {e}")),
            None => unanswered += 1,
        }
        pod_ops += 1;
        while live.len() > LIVE {
            let Some(old) = live.pop_front() else { break };
            let name = format!("chaos-{old}");
            match rt.block_on(persist(|| pods.delete(&name, &dp))) {
                Some(Ok(())) => {
                    acked_pods.insert(name, false);
                }
                Some(Err(e)) => figures.violation(format!("delete {name} refused: {e}")),
                None => unanswered += 1,
            }
            pod_ops += 1;
        }
        if i % service_every == 0 {
            let k = rng.below(SERVICES as u64) as usize;
            let name = format!("svc-{k}");
            let (group, port) = (rng.below(GROUPS as u64), 80 + rng.below(3));
            let exists = acked_services.get(&name).is_some_and(|s| s.is_some());
            let r = if exists && rng.below(4) == 0 {
                rt.block_on(persist(|| services.delete(&name, &dp)))
                    .map(|r| r.map(|_| None))
            } else if exists {
                let patch = kube::api::Patch::Merge(
                    serde_json::json!({"spec": {"selector": {"group": format!("g{group}")},
                    "ports": [{"name": "web", "port": port, "targetPort": 8080}]}}),
                );
                rt.block_on(persist(|| services.patch(&name, &patch_params, &patch)))
                    .map(|r| r.map(|_| Some((group, port))))
            } else {
                let s = service(k, group, port);
                rt.block_on(persist(|| services.create(&pp, &s)))
                    .map(|r| r.map(|_| Some((group, port))))
            };
            match r {
                Some(Ok(state)) => {
                    acked_services.insert(name, state);
                }
                Some(Err(e)) => figures.violation(format!("service change on {name} refused: {e}")),
                None => unanswered += 1,
            }
            service_ops += 1;
        }
    }
    stop.store(true, Ordering::Relaxed);
    faults.join().expect("fault thread");
    let _ = rt.block_on(checker);
    let ran = started.elapsed();

    // Quiet: every acknowledged pod running (or gone), every deleted one gone.
    let want_live: BTreeSet<String> = acked_pods
        .iter()
        .filter(|(_, l)| **l)
        .map(|(n, _)| n.clone())
        .collect();
    let settled = wait_for(Duration::from_secs(240), || {
        let list = rt.block_on(pods.list(&ListParams::default())).ok()?;
        let names: BTreeSet<String> = list
            .items
            .iter()
            .filter_map(|p| p.metadata.name.clone())
            .collect();
        let running = list.items.iter().all(|p| {
            p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
                && p.status.as_ref().and_then(|s| s.pod_ip.as_ref()).is_some()
        });
        (names == want_live && running).then_some(list.items)
    });
    let Some(final_pods) = settled else {
        let list = rt
            .block_on(pods.list(&ListParams::default()))
            .map(|l| l.items)
            .unwrap_or_default();
        let got: BTreeSet<String> = list
            .iter()
            .filter_map(|p| p.metadata.name.clone())
            .collect();
        let odd: Vec<String> = list
            .iter()
            .filter(|p| {
                let n = p.metadata.name.clone().unwrap_or_default();
                !want_live.contains(&n)
                    || p.status.as_ref().and_then(|s| s.phase.as_deref()) != Some("Running")
            })
            .map(|p| {
                format!(
                    "{:?} phase={:?} deletion={:?} node={:?} rv={:?} acked={:?}",
                    p.metadata.name,
                    p.status.as_ref().and_then(|s| s.phase.clone()),
                    p.metadata.deletion_timestamp,
                    p.spec.as_ref().and_then(|s| s.node_name.clone()),
                    p.metadata.resource_version,
                    acked_pods.get(p.metadata.name.as_deref().unwrap_or_default()),
                )
            })
            .collect();
        let cp_log =
            std::fs::read_to_string(lab.dir().join("logs/control-plane.log")).unwrap_or_default();
        let mentions: Vec<&str> = odd
            .iter()
            .filter_map(|o| o.split('"').nth(1))
            .flat_map(|name| cp_log.lines().filter(move |l| l.contains(name)))
            .take(20)
            .collect();
        panic!(
            "never quiet: want {} live pods, differ: {:?}\nodd pods:\n{}\ncontrol-plane log lines:\n{}\n{}",
            want_live.len(),
            want_live.symmetric_difference(&got).collect::<Vec<_>>(),
            odd.join("\n"),
            mentions.join("\n"),
            lab.logs()
        );
    };
    for d in duplicate_ips(&final_pods) {
        figures.violation(format!("at the end: {d}"));
    }
    check_services(&lab, &rt, &services, &acked_services, &final_pods, &figures);
    check_nodes(&lab, &rt, &client, &final_pods, &figures);

    let violations = figures.violations.lock().expect("lock").clone();
    println!(
        "chaos: {} s, {pod_ops} pod operations ({total} creations), {service_ops} Service changes, \
         {} agent kills, {} control-plane kills, {} checks, {unanswered} writes never answered, {} violations",
        ran.as_secs(),
        figures.agent_kills.load(Ordering::Relaxed),
        figures.control_plane_kills.load(Ordering::Relaxed),
        figures.checks.load(Ordering::Relaxed),
        violations.len()
    );
    assert!(
        violations.is_empty(),
        "violations:\n{}\n{}",
        violations.join("\n"),
        lab.logs()
    );
}

/// Every acknowledged Service is there as last written (or gone), and reaches a pod of
/// its group from a pod on every node.
fn check_services(
    lab: &Lab,
    rt: &tokio::runtime::Runtime,
    services: &Api<Service>,
    acked: &BTreeMap<String, Option<(u64, u64)>>,
    pods: &[Pod],
    figures: &Figures,
) {
    let mut from_node: BTreeMap<String, String> = BTreeMap::new();
    for p in pods {
        let node = p
            .spec
            .as_ref()
            .and_then(|s| s.node_name.clone())
            .unwrap_or_default();
        from_node
            .entry(node)
            .or_insert_with(|| p.metadata.name.clone().unwrap_or_default());
    }
    for (name, state) in acked {
        let got = rt.block_on(services.get_opt(name)).ok().flatten();
        let Some((group, port)) = state else {
            if got.is_some() {
                figures.violation(format!("service {name} was deleted but is back"));
            }
            continue;
        };
        let Some(svc) = got else {
            figures.violation(format!("service {name} acknowledged but missing"));
            continue;
        };
        let spec = svc.spec.unwrap_or_default();
        let sel = spec
            .selector
            .unwrap_or_default()
            .get("group")
            .cloned()
            .unwrap_or_default();
        if sel != format!("g{group}") {
            figures.violation(format!(
                "service {name}: selector {sel}, last written g{group}"
            ));
        }
        let members = pods
            .iter()
            .filter(|p| {
                p.metadata.labels.as_ref().and_then(|l| l.get("group"))
                    == Some(&format!("g{group}"))
            })
            .count();
        let vip = spec.cluster_ip.unwrap_or_default();
        for (node, client) in &from_node {
            let target = format!("{vip}:{port}");
            let reached = wait_for(Duration::from_secs(10), || {
                let (ok, out) = lab.exec_weft(client, &["probe", "tcp", &target]);
                let want = members > 0;
                (ok == want && (!want || out.contains("pod=default/chaos-"))).then_some(())
            });
            if reached.is_none() {
                figures.violation(format!(
                    "service {name} ({target}, {members} endpoints) from {client} on {node}: not as the API says"
                ));
            }
        }
    }
}

/// Per node: IPAM holds exactly the live pods' addresses, routes reach every other node's
/// subnet, and no pod namespace or process outlives its pod.
fn check_nodes(
    lab: &Lab,
    rt: &tokio::runtime::Runtime,
    client: &Client,
    pods: &[Pod],
    figures: &Figures,
) {
    let nodes = rt
        .block_on(Api::<Node>::all(client.clone()).list(&ListParams::default()))
        .expect("nodes")
        .items;
    let live_names: BTreeSet<String> = pods
        .iter()
        .filter_map(|p| p.metadata.name.clone())
        .collect();
    for node in &nodes {
        let name = node.metadata.name.clone().unwrap_or_default();
        let cidr = node
            .spec
            .as_ref()
            .and_then(|s| s.pod_cidr.clone())
            .unwrap_or_default();
        let want: BTreeSet<String> = pods
            .iter()
            .filter(|p| p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(name.as_str()))
            .filter_map(|p| p.status.as_ref().and_then(|s| s.pod_ip.clone()))
            .collect();
        let ipam_dir = lab.dir().join("nodes").join(&name).join("ipam");
        let held: BTreeSet<String> = weft_cni::ipam::Store::open(&ipam_dir, "weft")
            .and_then(|s| s.read())
            .map(|st| st.allocations.iter().map(|a| a.ip.to_string()).collect())
            .unwrap_or_default();
        if held != want {
            figures.violation(format!(
                "{name}: IPAM holds {:?} beyond the live pods, misses {:?}",
                held.difference(&want).collect::<Vec<_>>(),
                want.difference(&held).collect::<Vec<_>>()
            ));
        }
        let routes = ip(&lab.node_netns(&name), &["route", "show"]);
        for other in nodes
            .iter()
            .filter(|o| o.metadata.name != node.metadata.name)
        {
            let oc = other
                .spec
                .as_ref()
                .and_then(|s| s.pod_cidr.clone())
                .unwrap_or_default();
            if !routes.contains(&oc) {
                figures.violation(format!("{name} ({cidr}) has no route to {oc}:\n{routes}"));
            }
        }
    }
    let prefix = format!("weft-{}-", lab.name);
    for ns in netns_names()
        .iter()
        .filter(|n| n.starts_with(&prefix) && n.contains(".default-"))
    {
        let pod = ns
            .rsplit_once(".default-")
            .map(|(_, p)| p.to_string())
            .unwrap_or_default();
        if !live_names.contains(&pod) {
            figures.violation(format!("namespace {ns} outlived its pod"));
        }
    }
    let serving: Vec<(u32, String)> = processes_mentioning(&lab.name)
        .into_iter()
        .filter(|(_, cmd)| cmd.contains(" serve "))
        .collect();
    if serving.len() != live_names.len() {
        figures.violation(format!(
            "{} pod processes for {} live pods: {serving:?}",
            serving.len(),
            live_names.len()
        ));
    }
}
