//! The parts of a case only a real proxy shows: every replica of a Service answering in
//! turn, one access-log line per request naming the route and the endpoint chosen, and a
//! replica's process killed while requests flow.

use super::*;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;
use weft_ingress::cases::{qualified, Case, Request};

/// Sends `r` without pause until every replica of its Service has answered; then checks
/// the access log has one line for each of those requests.
pub fn every_replica(
    lab: &Lab,
    file: &str,
    case: &Case,
    r: &Request,
    pods: &BTreeMap<String, PodInfo>,
) {
    let Expect::Service(svc) = &r.expect else {
        panic!("{file}: everyReplica without a Service (the case format refuses this)");
    };
    let (ns, name) = qualified(svc);
    let want: BTreeSet<String> = (1..=case.replica_count())
        .map(|i| format!("{ns}/{name}-{i}"))
        .collect();
    let stop = lab.state.path().join("no-stop");
    let mut seen = BTreeSet::new();
    let mut results = Vec::new();
    for _ in 0..5 {
        let got = steady_results(steady(lab, &r.url, 2, &stop, &NODE_IPS));
        seen.extend(
            got.iter()
                .filter(|s| s.status == 200)
                .map(|s| s.pod.clone()),
        );
        results.extend(got);
        if seen == want {
            break;
        }
    }
    let failed: Vec<&Sent> = results.iter().filter(|s| s.status != 200).collect();
    println!(
        "{file}: {}: {} requests, {} replicas answered, {} failed",
        r.url,
        results.len(),
        seen.len(),
        failed.len()
    );
    assert_eq!(seen, want, "{file}: {}: not every replica answered", r.url);
    assert!(failed.is_empty(), "{file}: {}: failed: {failed:?}", r.url);
    check_access_log(lab, file, &results, &ns, &name, r.endpoint_port, pods);
}

/// Every request of `results` has exactly one access-log line in one agent's log, with
/// the route to `ns/svc` and the endpoint (pod IP and port) that answered it.
pub fn check_access_log(
    lab: &Lab,
    file: &str,
    results: &[Sent],
    ns: &str,
    svc: &str,
    port: Option<u16>,
    pods: &BTreeMap<String, PodInfo>,
) {
    // The log is written out every 100 ms.
    std::thread::sleep(Duration::from_millis(500));
    let mut by_id: BTreeMap<String, Vec<AccessLine>> = BTreeMap::new();
    for l in access_lines(lab, "wid=") {
        if let Some(id) = l.url.rsplit_once("wid=").map(|(_, id)| id.to_string()) {
            by_id.entry(id).or_default().push(l);
        }
    }
    let route = format!(":{ns}/{svc}:");
    let mut wrong = Vec::new();
    for s in results.iter().filter(|s| s.status == 200) {
        let lines = by_id.get(&s.id).map_or(&[][..], Vec::as_slice);
        let ip = pods.get(&s.pod).map_or("?", |p| p.ip.as_str());
        let ok = match lines {
            [l] => {
                let (eip, eport) = l.endpoint.rsplit_once(':').unwrap_or(("", ""));
                l.status == 200
                    && l.route.contains(&route)
                    && l.route
                        .split(':')
                        .next()
                        .is_some_and(|ing| ing.contains('/'))
                    && eip == ip
                    && port.is_none_or(|p| eport == p.to_string())
            }
            _ => false,
        };
        if !ok {
            wrong.push(format!(
                "request {} answered by {} ({ip}): {lines:?}",
                s.id, s.pod
            ));
        }
    }
    let sample = results
        .first()
        .and_then(|s| by_id.get(&s.id))
        .and_then(|v| v.first())
        .map(|l| l.raw.clone());
    println!(
        "{file}: access log: {} requests, {} with their line; e.g. {}",
        results.len(),
        results.len() - wrong.len(),
        sample.unwrap_or_default()
    );
    assert!(
        wrong.is_empty(),
        "{file}: {} requests without their one right access-log line:\n{}",
        wrong.len(),
        wrong
            .iter()
            .take(10)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// The pids in a pod's network namespace: its container's processes.
fn pod_pids(lab: &Lab, node: &str, ns: &str, pod: &str) -> Vec<i32> {
    let netns = lab.pod_netns_in(node, ns, pod);
    let out = std::process::Command::new("ip")
        .args(["netns", "pids", &netns])
        .output()
        .expect("spawn ip");
    assert!(
        out.status.success(),
        "ip netns pids {netns}: {}",
        text(&out)
    );
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

/// The case's `kill`: the first request is sent without pause from the external host to
/// both nodes; once the victim is seen answering, its process is SIGKILLed (the pod
/// object stays, so its endpoint is still listed until the agent reports the container
/// ended); the load goes on until the endpoint is gone and `during` requests were sent
/// after the kill. None may fail, and the victim answers none after the kill.
pub fn kill_mid_run(lab: &Lab, file: &str, case: &Case, pods: &BTreeMap<String, PodInfo>) {
    let (Some((ns, svc, victim)), Some(k), Some(first)) = (
        case.kill_target(),
        case.kill.as_ref(),
        case.requests.first(),
    ) else {
        return;
    };
    let key = format!("{ns}/{victim}");
    let v = pods
        .get(&key)
        .unwrap_or_else(|| panic!("{file}: no pod {key}"));
    let stop = lab.state.path().join(format!("{file}-stop"));
    let load = steady(lab, &first.url, 300, &stop, &NODE_IPS);
    let this_run = format!("wid={}-", load.run);
    // The victim answers before the kill: the access log shows it chosen.
    let victim_ep = format!("{}:", v.ip);
    let answered = wait_for(Duration::from_secs(20), || {
        access_lines(lab, &this_run)
            .iter()
            .any(|l| l.status == 200 && l.endpoint.starts_with(&victim_ep))
            .then_some(())
    });
    assert!(
        answered.is_some(),
        "{file}: {key} never chosen before the kill\n{}",
        lab.logs()
    );
    let pids = pod_pids(lab, &v.node, &ns, &victim);
    assert!(!pids.is_empty(), "{file}: no process in {key}'s namespace");
    for pid in &pids {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(*pid),
            nix::sys::signal::Signal::SIGKILL,
        )
        .expect("SIGKILL the victim's process");
    }
    let killed = Instant::now();
    let kill_at = epoch(SystemTime::now());
    let lines_at_kill = access_lines(lab, &this_run).len();
    let listed_at_kill = slice_addresses(lab, &ns, &svc).contains(&v.ip);
    let gone = wait_for(Duration::from_secs(30), || {
        (!slice_addresses(lab, &ns, &svc).contains(&v.ip)).then(|| killed.elapsed())
    });
    let gone = gone.unwrap_or_else(|| panic!("{file}: {key} still listed 30 s after its kill"));
    // Requests keep flowing after the proxies have had the slice's change.
    std::thread::sleep(Duration::from_secs(2));
    let enough = lines_at_kill + k.during as usize;
    let more = wait_for(Duration::from_secs(60), || {
        (access_lines(lab, &this_run).len() >= enough).then_some(())
    });
    assert!(
        more.is_some(),
        "{file}: fewer than {} requests after the kill",
        k.during
    );
    std::fs::write(&stop, "").expect("stop file");
    let results = steady_results(load);
    let after: Vec<&Sent> = results.iter().filter(|s| s.sent > kill_at).collect();
    let failed: Vec<&Sent> = results.iter().filter(|s| s.status != 200).collect();
    let before = results
        .iter()
        .filter(|s| s.pod == key && s.done < kill_at)
        .count();
    let ejected = agent_log_lines(lab, &format!("endpoint {victim_ep}"))
        .into_iter()
        .filter(|l| l.contains("ejected"))
        .filter_map(|l| l.split_once("ingress: ").map(|(_, m)| m.to_string()))
        .collect::<Vec<_>>();
    println!(
        "{file}: killed {key} ({} pid(s)); listed in its EndpointSlice right after: {listed_at_kill}; \
         gone from it after {} ms; {} requests, {} after the kill, {} failed; {key} answered {before} before; \
         proxies ejected it after refused connects {} time(s): {:?}",
        pids.len(),
        gone.as_millis(),
        results.len(),
        after.len(),
        failed.len(),
        ejected.len(),
        ejected.first()
    );
    assert!(
        failed.is_empty(),
        "{file}: failed requests: {:?}",
        &failed[..failed.len().min(10)]
    );
    assert!(before > 0, "{file}: {key} answered nothing before the kill");
    assert!(
        after.len() >= k.during as usize,
        "{file}: only {} requests after the kill, the case wants {}",
        after.len(),
        k.during
    );
    let late = results
        .iter()
        .filter(|s| s.pod == key && s.sent > kill_at)
        .count();
    assert_eq!(late, 0, "{file}: {key} answered after its kill");
    // Connects to the dead endpoint were refused while the proxies still listed it, and
    // the proxies stopped choosing it: no line of a request sent after the kill ends at it.
    assert!(
        !ejected.is_empty(),
        "{file}: no proxy met a refused connect to {key}\n{}",
        lab.logs()
    );
    let sent: BTreeMap<&str, f64> = results.iter().map(|s| (s.id.as_str(), s.sent)).collect();
    let chosen_after: Vec<AccessLine> = access_lines(lab, &this_run)
        .into_iter()
        .filter(|l| l.endpoint.starts_with(&victim_ep))
        .filter(|l| {
            let id = l.url.rsplit_once("wid=").map_or("", |(_, id)| id);
            sent.get(id).is_some_and(|t| *t > kill_at)
        })
        .collect();
    assert!(
        chosen_after.is_empty(),
        "{file}: {key} chosen after the kill: {chosen_after:?}"
    );
    check_access_log(lab, file, &results, &ns, &svc, None, pods);
}
