//! A node whose CNI plugin exits 0 but prints something that is not a CNI result, in a
//! real lab through the real agent: the pod stays Pending without an IP, its Events and
//! status name the plugin and what it printed, the agent keeps retrying (the undo's DEL
//! is retried too, and says so), and once the plugin is fixed the pod comes up with
//! nothing of the failed attempts left: no namespace, veth or address.

mod lab_support;

use lab_support::*;
use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

/// Replaces the node's `weft` plugin in CNI_PATH (whole, so a running call never reads
/// half a script): the real plugin works, then `tail` decides what the agent reads.
fn install_plugin(path: &Path, tail: &str) {
    let tmp = path.with_extension("new");
    std::fs::write(&tmp, format!("#!/bin/sh\n{} \"$@\" {tail}\n", weft())).expect("write plugin");
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    std::fs::rename(&tmp, path).expect("install plugin");
}

/// (reason, message) of the Events about pod `name`.
fn events_of(lab: &Lab, name: &str) -> Vec<(String, String)> {
    let o = lab.kubectl(&["get", "events", "-o", "json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_default();
    v["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["involvedObject"]["name"] == name)
        .map(|e| {
            let s = |k: &str| e[k].as_str().unwrap_or_default().to_string();
            (s("reason"), s("message"))
        })
        .collect()
}

fn pod_json(lab: &Lab, name: &str) -> serde_json::Value {
    let o = lab.kubectl(&["get", "pod", name, "-o", "json"]);
    serde_json::from_slice(&o.stdout).unwrap_or_default()
}

#[test]
fn a_plugin_answering_garbage_is_reported_on_the_pod_retried_and_leaks_nothing() {
    let lab = Lab::up(1, "host-gw");
    let node_dir = lab.dir().join("nodes").join("node-1");
    let plugin = node_dir.join("cni-bin").join("weft");
    // The agent links its plugin once it has a pod subnet; `lab up` waits for that.
    assert!(
        wait_for(Duration::from_secs(60), || path_exists(&plugin)
            .then_some(()))
        .is_some(),
        "{} never appeared\n{}",
        plugin.display(),
        lab.logs()
    );
    install_plugin(&plugin, ">/dev/null; echo 'IP: 10.244.1.99 (trust me)'");
    lab.apply(&echo_pod("victim", "node-1"));

    // Retried: the first attempt's ADD and a later attempt's DEL of its remains are both
    // told, each naming the plugin and its output. Meanwhile the pod never runs.
    let shown = plugin.display().to_string();
    let told = |events: &[(String, String)], what: &str| {
        events.iter().any(|(reason, msg)| {
            reason == "FailedCreatePodSandBox"
                && msg.contains(what)
                && msg.contains(&shown)
                && msg.contains("(trust me)")
        })
    };
    let events = wait_for(Duration::from_secs(90), || {
        let p = pod_json(&lab, "victim");
        assert_ne!(
            p["status"]["phase"], "Running",
            "a pod without a readable CNI result runs: {p}"
        );
        assert!(
            p["status"]["podIP"].as_str().unwrap_or_default().is_empty(),
            "the pod got an IP from an unreadable result: {p}"
        );
        let ev = events_of(&lab, "victim");
        (told(&ev, "CNI ADD") && told(&ev, "CNI DEL")).then_some(ev)
    })
    .unwrap_or_else(|| {
        panic!(
            "no retried, reported failure: {:?}\n{}",
            events_of(&lab, "victim"),
            lab.logs()
        )
    });
    let p = pod_json(&lab, "victim");
    let ready = p["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["type"] == "Ready")
        .cloned()
        .unwrap_or_default();
    let msg = ready["message"].as_str().unwrap_or_default();
    assert!(
        ready["reason"] == "SandboxSetupFailed"
            && msg.contains("(trust me)")
            && msg.contains("attempt"),
        "status: {p}\nevents: {events:?}"
    );
    // The agent's log counts the attempts and their back-off.
    let log = std::fs::read_to_string(lab.dir().join("logs").join("agent-node-1.log"))
        .unwrap_or_default();
    assert!(
        log.contains("start failed") && log.contains("retry_in"),
        "{log}"
    );

    // Fixed: the pod comes up, and only its own namespace, veth and address exist.
    install_plugin(&plugin, "");
    let pods = lab.wait_running(&["victim"], Duration::from_secs(120));
    let ip_addr = pods["victim"].ip.clone();
    assert_ne!(ip_addr, "10.244.1.99");
    let prefix = format!("{}.", lab.node_netns("node-1"));
    let pod_namespaces: Vec<String> = netns_names()
        .into_iter()
        .filter(|n| n.starts_with(&prefix))
        .collect();
    assert_eq!(pod_namespaces, [lab.pod_netns("node-1", "victim")]);
    let held: BTreeSet<String> = weft_cni::ipam::Store::open(&node_dir.join("ipam"), "weft")
        .and_then(|s| s.read())
        .map(|st| st.allocations.iter().map(|a| a.ip.to_string()).collect())
        .expect("read node-1's IPAM state");
    assert_eq!(held, BTreeSet::from([ip_addr]), "addresses held on node-1");
    let ports = ip(
        &lab.node_netns("node-1"),
        &["-o", "link", "show", "master", "cbr0"],
    );
    assert_eq!(
        ports.lines().count(),
        1,
        "veths on node-1's bridge: {ports}"
    );
    let probe = lab.probe_ok("victim", &["tcp", &format!("{}:8080", pods["victim"].ip)]);
    assert!(probe.contains("pod=default/victim"), "{probe}");
}
