//! Back-pressure made visible: a burst of Service changes through the real API into a
//! two-node lab. While it lasts `weft lab status` shows the nodes' service controllers
//! behind (the age of the oldest change not applied and how many are pending); once it
//! ends every node reports every component in sync, and each node's `weft-proxy` table
//! holds exactly the cluster IPs the API has. The figures (burst, worst lag, time to
//! catch up, transactions per component) are printed for RELIABILITY.md.
//!
//! Size: `WEFT_BURST_SERVICES` (default 2000).

mod lab_support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Service;
use kube::api::{ListParams, PostParams};
use kube::{Api, Client};
use lab_support::*;
use weft_agent::sync_status::{self, NodeSync};

const NODES: u32 = 2;
const WRITERS: usize = 16;
const COMPONENTS: [&str; 6] = ["pods", "routes", "services", "dns", "ingress", "policy"];

fn service(i: usize) -> Service {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": format!("burst-{i}"), "labels": {"burst": "yes"}},
        "spec": {"ports": [{"port": 80 + (i % 7) as i32, "targetPort": 8080}]}
    }))
    .expect("service")
}

/// Creates the Services `range` names, by [`WRITERS`] concurrent writers; the refusals.
fn create(
    rt: &tokio::runtime::Runtime,
    client: &Client,
    range: std::ops::Range<usize>,
) -> Vec<String> {
    let next = Arc::new(AtomicUsize::new(range.start));
    rt.block_on(async {
        let mut writers = tokio::task::JoinSet::new();
        for _ in 0..WRITERS {
            let (next, end) = (next.clone(), range.end);
            let api = Api::<Service>::default_namespaced(client.clone());
            writers.spawn(async move {
                let mut failed = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= end {
                        return failed;
                    }
                    if let Err(e) = api.create(&PostParams::default(), &service(i)).await {
                        failed.push(format!("burst-{i}: {e}"));
                    }
                }
            });
        }
        let mut all = Vec::new();
        while let Some(r) = writers.join_next().await {
            all.extend(r.expect("writer"));
        }
        all
    })
}

/// A process held to 2% of one CPU (a `cpu` cgroup of its own, v1 or v2) until dropped:
/// a node starved by its neighbours. Dropped, it goes back to the cgroup it came from.
struct Throttled {
    root: std::path::PathBuf,
    dir: std::path::PathBuf,
    came_from: String,
    pid: u32,
}

impl Throttled {
    fn new(pid: u32) -> Throttled {
        let v2 = std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
        let root = std::path::PathBuf::from(match v2 {
            true => "/sys/fs/cgroup",
            false => "/sys/fs/cgroup/cpu",
        });
        let own =
            std::fs::read_to_string(format!("/proc/{pid}/cgroup")).expect("the agent's cgroups");
        // v2: `0::/path`; v1: `N:cpu,cpuacct:/path` for the cpu controller.
        let came_from = own
            .lines()
            .filter_map(|l| {
                let mut f = l.splitn(3, ':');
                Some((f.next()?, f.next()?, f.next()?))
            })
            .find(|(_, ctl, _)| match v2 {
                true => ctl.is_empty(),
                false => ctl.split(',').any(|c| c == "cpu"),
            })
            .map(|(_, _, path)| path.trim_start_matches('/').to_string())
            .expect("the agent's cpu cgroup");
        let dir = root.join(format!("weft-test-burst-{}", std::process::id()));
        std::fs::create_dir(&dir).expect("create a cpu cgroup");
        let t = Throttled {
            root,
            dir,
            came_from,
            pid,
        };
        let set = |file: &str, value: &str| {
            std::fs::write(t.dir.join(file), value)
                .unwrap_or_else(|e| panic!("{}/{file}: {e}", t.dir.display()))
        };
        match v2 {
            true => set("cpu.max", "2000 100000"),
            false => {
                set("cpu.cfs_period_us", "100000");
                set("cpu.cfs_quota_us", "2000");
            }
        }
        set("cgroup.procs", &pid.to_string());
        t
    }
}

impl Drop for Throttled {
    fn drop(&mut self) {
        let back = self.root.join(&self.came_from).join("cgroup.procs");
        let _ = std::fs::write(back, self.pid.to_string());
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// The agent's log lines about falling behind and catching up.
fn lag_lines(lab: &Lab, node: &str) -> Vec<String> {
    std::fs::read_to_string(lab.dir().join("logs").join(format!("agent-{node}.log")))
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("falling behind") || l.contains("caught up"))
        .map(plain)
        .collect()
}

/// A log line without its colours.
fn plain(line: &str) -> String {
    let mut out = String::new();
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Stops a process until dropped (a failing test must not leave it stopped).
struct Frozen(nix::unistd::Pid);

impl Frozen {
    fn new(pid: u32) -> Frozen {
        let pid = nix::unistd::Pid::from_raw(pid as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGSTOP).expect("SIGSTOP");
        Frozen(pid)
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(self.0, nix::sys::signal::Signal::SIGCONT);
    }
}

fn nodes() -> Vec<String> {
    (1..=NODES).map(|k| format!("node-{k}")).collect()
}

/// `weft lab status`'s sync rows: (node, component) -> the SYNC column and the rest.
fn sync_rows(lab: &Lab) -> BTreeMap<(String, String), String> {
    let out = lab.lab("status", &[]);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.starts_with("node-"))
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            let (node, comp) = (w.next()?, w.next()?);
            Some(((node.to_string(), comp.to_string()), l.to_string()))
        })
        .collect()
}

/// Every component of every node in sync, by `weft lab status`.
fn all_in_sync(rows: &BTreeMap<(String, String), String>) -> bool {
    nodes().iter().all(|n| {
        COMPONENTS.iter().all(|c| {
            rows.get(&(n.clone(), c.to_string()))
                .is_some_and(|l| l.contains("in sync"))
        })
    })
}

/// How many changes the node's service controller has seen.
fn services_seen(r: &NodeSync) -> u64 {
    r.components
        .iter()
        .find(|c| c.name == "services")
        .map(|c| c.changes)
        .unwrap_or_default()
}

fn report(lab: &Lab, node: &str) -> NodeSync {
    sync_status::read(&lab.dir().join("nodes").join(node)).expect("the node's sync report")
}

/// The addresses in a node's `cluster-ip-addrs` set, read with nft.
fn table_cluster_ips(lab: &Lab, node: &str) -> BTreeSet<String> {
    let out = std::process::Command::new("ip")
        .args(["netns", "exec", &lab.node_netns(node), "nft", "-j"])
        .args(["list", "set", "ip", "weft-proxy", "cluster-ip-addrs"])
        .output()
        .expect("spawn nft");
    assert!(out.status.success(), "nft on {node}: {}", text(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("nft JSON");
    v["nftables"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|o| o["set"]["elem"].as_array())
        .flatten()
        .filter_map(|e| {
            e.as_str()
                .or_else(|| e["elem"]["val"].as_str())
                .map(str::to_string)
        })
        .collect()
}

/// Every node's table holds exactly the Services' cluster IPs, the `burst` created
/// ones among them.
fn assert_tables_match(lab: &Lab, rt: &tokio::runtime::Runtime, client: &Client, burst: usize) {
    let listed = rt
        .block_on(Api::<Service>::all(client.clone()).list(&ListParams::default()))
        .expect("list Services")
        .items;
    let api_ips: BTreeSet<String> = listed
        .iter()
        .filter_map(|s| s.spec.as_ref()?.cluster_ip.clone())
        .filter(|ip| ip != "None")
        .collect();
    let burst_ips: BTreeSet<String> = listed
        .iter()
        .filter(|s| {
            s.metadata
                .labels
                .as_ref()
                .is_some_and(|l| l.contains_key("burst"))
        })
        .filter_map(|s| s.spec.as_ref()?.cluster_ip.clone())
        .collect();
    assert_eq!(burst_ips.len(), burst, "every Service got a cluster IP");
    for node in nodes() {
        let table = table_cluster_ips(lab, &node);
        let missing: Vec<_> = burst_ips.difference(&table).take(5).collect();
        let extra: Vec<_> = table.difference(&api_ips).take(5).collect();
        assert!(
            missing.is_empty() && extra.is_empty(),
            "{node}'s table: missing {missing:?}, not in the API {extra:?} ({} elements)",
            table.len()
        );
    }
}

#[test]
fn a_burst_of_service_changes_shows_as_lag_and_every_node_catches_up() {
    let burst: usize = std::env::var("WEFT_BURST_SERVICES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    let lab = Lab::up(NODES, "host-gw");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let client = rt.block_on(lab.client());
    assert!(
        wait_for(Duration::from_secs(60), || all_in_sync(&sync_rows(&lab))
            .then_some(()))
        .is_some(),
        "the lab never reported in sync before the burst: {:?}\n{}",
        sync_rows(&lab),
        lab.logs()
    );
    let before: BTreeMap<String, NodeSync> = nodes()
        .into_iter()
        .map(|n| (n.clone(), report(&lab, &n)))
        .collect();

    // `weft lab status` as a user would run it, again and again through the burst.
    let stop = Arc::new(AtomicBool::new(false));
    let behind_seen = Arc::new(Mutex::new(Vec::<String>::new()));
    let watcher = {
        let (stop, seen) = (stop.clone(), behind_seen.clone());
        let (name, state) = (lab.name.clone(), lab.state.path().to_path_buf());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let out = std::process::Command::new(weft())
                    .env("WEFT_STATE_DIR", &state)
                    .args(["lab", "status", "--name", &name])
                    .output()
                    .expect("weft lab status");
                let text = String::from_utf8_lossy(&out.stdout).into_owned();
                let behind = text.lines().filter(|l| l.contains("behind by"));
                seen.lock()
                    .expect("lines")
                    .extend(behind.map(str::to_string));
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };

    let started = Instant::now();
    let failures = create(&rt, &client, 0..burst);
    let burst_time = started.elapsed();
    assert!(failures.is_empty(), "creates refused: {failures:?}");

    let ended = Instant::now();
    let caught_up = wait_for(Duration::from_secs(300), || {
        all_in_sync(&sync_rows(&lab)).then_some(())
    });
    let catch_up = ended.elapsed();
    stop.store(true, Ordering::Relaxed);
    watcher.join().expect("status watcher");
    assert!(
        caught_up.is_some(),
        "not every node caught up within 300 s of the burst: {:?}\n{}",
        sync_rows(&lab),
        lab.logs()
    );
    let behind = behind_seen.lock().expect("lines").clone();
    assert!(
        behind.iter().any(|l| l.contains("services")),
        "weft lab status never showed a node's services behind during a burst of {burst}: {behind:?}"
    );

    assert_tables_match(&lab, &rt, &client, burst);
    // The figures.
    let log_lines: usize = nodes()
        .iter()
        .map(|n| {
            let log =
                std::fs::read_to_string(lab.dir().join("logs").join(format!("agent-{n}.log")))
                    .unwrap_or_default();
            log.lines().filter(|l| l.contains("falling behind")).count()
        })
        .sum();
    println!(
        "burst: {burst} Service creates by {WRITERS} writers in {:.1} s; every node in sync {:.1} s after the last; \
         `weft lab status` showed a component behind {} times; 'falling behind' log lines: {log_lines}",
        burst_time.as_secs_f64(),
        catch_up.as_secs_f64(),
        behind.len()
    );
    // The worst `weft lab status` showed during the burst, per node and component.
    let mut shown: BTreeMap<(String, String), (f64, u64)> = BTreeMap::new();
    for l in &behind {
        let w: Vec<&str> = l.split_whitespace().collect();
        let (Some(node), Some(comp)) = (w.first(), w.get(1)) else {
            continue;
        };
        let secs = w
            .get(4)
            .and_then(|s| s.trim_end_matches('s').parse::<f64>().ok());
        let pending = w
            .get(5)
            .and_then(|s| s.trim_start_matches('(').parse::<u64>().ok());
        if let (Some(secs), Some(pending)) = (secs, pending) {
            let e = shown
                .entry((node.to_string(), comp.to_string()))
                .or_default();
            *e = (e.0.max(secs), e.1.max(pending));
        }
    }
    println!(
        "{:<8} {:<9} {:>8} {:>13} {:>13} {:>13}",
        "node", "component", "changes", "transactions", "worst shown", "worst pending"
    );
    for node in nodes() {
        let after = report(&lab, &node);
        for c in &after.components {
            let b = before[&node]
                .components
                .iter()
                .find(|x| x.name == c.name)
                .cloned()
                .unwrap_or_default();
            let (secs, pending) = shown
                .get(&(node.clone(), c.name.clone()))
                .copied()
                .unwrap_or_default();
            println!(
                "{node:<8} {:<9} {:>8} {:>13} {:>12.1}s {:>13}  (since start: {:.1}s, {} pending)",
                c.name,
                c.changes - b.changes,
                c.transactions - b.transactions,
                secs,
                pending,
                c.peak_behind_ms as f64 / 1000.0,
                c.peak_pending
            );
        }
    }

    // A starved node: node-1's agent held to 2% of a CPU through another burst. It falls
    // behind (its bounded queues fill and hold its watches back), says so in its log and
    // in `weft lab status`, and catches up once it gets its CPU back.
    let starved = 2000;
    let logged_before = lag_lines(&lab, "node-1").len();
    let throttle = Throttled::new(lab.procs()["agent-node-1"]);
    let started = Instant::now();
    let failures = create(&rt, &client, burst..burst + starved);
    assert!(failures.is_empty(), "creates refused: {failures:?}");
    let starved_burst = started.elapsed();
    // Starved, it falls further behind as it works through what it has queued: held
    // there until both the status and the log have said so.
    let mut shown: Option<String> = None;
    let told = wait_for(Duration::from_secs(180), || {
        if let Some(l) = sync_rows(&lab).get(&("node-1".to_string(), "services".to_string())) {
            if l.contains("behind by") {
                shown = Some(l.clone());
            }
        }
        let said = lag_lines(&lab, "node-1")
            .iter()
            .skip(logged_before)
            .any(|l| l.contains("falling behind"));
        (said && shown.is_some()).then_some(())
    });
    assert!(
        told.is_some(),
        "a starved node was not shown behind ({shown:?}) or its log did not say so: {:?}",
        lag_lines(&lab, "node-1")
    );
    let behind = shown.unwrap_or_default();
    drop(throttle);
    let freed = Instant::now();
    assert!(
        wait_for(Duration::from_secs(300), || all_in_sync(&sync_rows(&lab))
            .then_some(()))
        .is_some(),
        "node-1 never caught up once it had its CPU back: {:?}\n{}",
        sync_rows(&lab),
        lab.logs()
    );
    let caught = freed.elapsed();
    let lines: Vec<String> = lag_lines(&lab, "node-1").split_off(logged_before);
    assert!(
        lines.iter().any(|l| l.contains("falling behind"))
            && lines.iter().any(|l| l.contains("caught up")),
        "node-1's log does not tell its falling behind and catching up: {lines:?}"
    );
    let r = report(&lab, "node-1");
    let services = r
        .components
        .iter()
        .find(|c| c.name == "services")
        .cloned()
        .unwrap_or_default();
    println!(
        "starved: {starved} creates in {:.1} s with node-1's agent at 2% of a CPU; status showed `{}`; \
         in sync {:.1} s after it got its CPU back; services at worst {:.1} s behind with {} pending",
        starved_burst.as_secs_f64(),
        behind.split_whitespace().collect::<Vec<_>>().join(" "),
        caught.as_secs_f64(),
        services.peak_behind_ms as f64 / 1000.0,
        services.peak_pending
    );
    for l in &lines {
        println!("node-1: {l}");
    }
    assert_tables_match(&lab, &rt, &client, burst + starved);
    let burst = burst + starved;

    // A node that stops altogether (SIGSTOP, as a starved or hung agent): its report goes
    // stale and the status says so; resumed, it takes what it missed and is in sync, and
    // its table has the Services created meanwhile.
    let seen_before = services_seen(&report(&lab, "node-1"));
    let pid = lab.procs()["agent-node-1"];
    let frozen = Frozen::new(pid);
    let more = 200;
    let failures = create(&rt, &client, burst..burst + more);
    assert!(failures.is_empty(), "creates refused: {failures:?}");
    let shown = wait_for(Duration::from_secs(60), || {
        let rows = sync_rows(&lab);
        rows.iter()
            .find(|((n, _), l)| n == "node-1" && l.contains("unknown"))
            .map(|(_, l)| l.clone())
    });
    let stale = shown.unwrap_or_else(|| {
        panic!(
            "a stopped agent's report never showed as stale: {:?}",
            sync_rows(&lab)
        )
    });
    drop(frozen);
    let resumed = Instant::now();
    // Right after it resumes, node-1 has not read what it missed: it must see the
    // Services first, then apply them.
    let caught_up = wait_for(Duration::from_secs(120), || {
        let seen = services_seen(&report(&lab, "node-1"));
        (seen >= seen_before + more as u64 && all_in_sync(&sync_rows(&lab))).then_some(())
    });
    assert!(
        caught_up.is_some(),
        "node-1 never caught up after it was resumed: {:?}\n{}",
        sync_rows(&lab),
        lab.logs()
    );
    println!(
        "node-1 stopped while {more} Services were created: `{}`; in sync {:.1} s after it was resumed",
        stale.split_whitespace().collect::<Vec<_>>().join(" "),
        resumed.elapsed().as_secs_f64()
    );
    assert_tables_match(&lab, &rt, &client, burst + more);
}
