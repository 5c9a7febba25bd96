//! A CNI plugin that exits 0 but prints something that is not a CNI result: the pod is
//! not started with a made-up address, the error and the pod's Event name the plugin and
//! what it printed, nothing of the attempt is left in the kernel, and once the plugin is
//! fixed the same pod starts and stops cleanly. A GC answered that way fails too.

mod common;

use common::*;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

/// The node's `weft` plugin in CNI_PATH: the real plugin does its work, then `tail`
/// decides what the runtime reads.
fn install_plugin(dir: &Path, tail: &str) {
    std::fs::create_dir_all(dir).unwrap();
    let script = dir.join("weft");
    let body = format!("#!/bin/sh\n{} \"$@\" {tail}\n", weft_bin().display());
    // Replaced whole (a new inode), so a plugin being executed never sees half a file.
    let tmp = dir.join(".weft.new");
    std::fs::write(&tmp, body).unwrap();
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::rename(&tmp, &script).unwrap();
}

const GARBAGE: &str = ">/dev/null; echo 'IP: 10.244.1.99 (trust me)'";

fn wait_no_bridge_ports(node: &Node) {
    // The kernel destroys a dead namespace's devices in the background.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !node.bridge_ports().is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(node.bridge_ports().is_empty(), "{:?}", node.bridge_ports());
}

#[test]
fn a_plugin_exiting_0_with_unreadable_output_fails_the_start_and_leaks_nothing() {
    let mut events = weft_agent::events::install().expect("the only recorder");
    let node = Node::new("garbage");
    let bin = node.dir.path().join("cni-bin");
    install_plugin(&bin, GARBAGE);
    let mut cfg = node.config();
    cfg.cni_bin_dir = bin.clone();
    let mut rt = weft_agent::Runtime::new(cfg).unwrap();
    let web = pod(
        "metadata: {name: web, uid: uid-web}\nspec:\n  terminationGracePeriodSeconds: 1\n  containers:\n  - {name: main, command: [sleep, '1000']}\n",
    );
    let plugin = bin.join("weft").display().to_string();

    let err = rt.start(&web).unwrap_err().to_string();
    assert!(
        err.contains(&plugin) && err.contains("exited 0") && err.contains("(trust me)"),
        "{err}"
    );
    assert!(
        rt.status("uid-web").is_none(),
        "a pod without a readable result runs"
    );
    let ev = events.try_recv().expect("an event for the failed start");
    assert_eq!((ev.type_, ev.reason), ("Warning", "FailedCreatePodSandBox"));
    assert!(
        ev.message.contains(&plugin) && ev.message.contains("(trust me)"),
        "{ev:?}"
    );
    assert_eq!(
        (ev.namespace.as_str(), ev.name.as_str()),
        ("default", "web")
    );
    // The undo ran: no namespace, no veth. The undo's DEL got the same unreadable
    // answer, so the record stays for the next attempt to DEL again.
    node.assert_only_node_left();
    wait_no_bridge_ports(&node);
    assert!(node.ipam_holders().is_empty(), "{:?}", node.ipam_holders());
    assert!(node.state_dir().join("pods/uid-web").exists());

    // The next attempt must first finish that DEL, and says so when it cannot.
    let err = rt.start(&web).unwrap_err().to_string();
    assert!(
        err.contains("CNI DEL") && err.contains("(trust me)"),
        "{err}"
    );
    let again: Vec<_> = std::iter::from_fn(|| events.try_recv().ok()).collect();
    assert!(
        again
            .iter()
            .any(|e| e.reason == "FailedCreatePodSandBox" && e.message.contains("earlier attempt")),
        "{again:?}"
    );
    node.assert_only_node_left();

    // Fixed: the same pod starts, with one address, one veth, one namespace.
    install_plugin(&bin, "");
    let st = rt.start(&web).unwrap();
    assert_eq!(st.ips.len(), 1);
    assert!(
        st.ips[0].to_string().starts_with("10.244.1."),
        "{:?}",
        st.ips
    );
    assert_ne!(st.ips[0].to_string(), "10.244.1.99");
    assert_eq!(node.ipam_holders(), ["uid-web"]);
    assert_eq!(node.bridge_ports().len(), 1);
    assert_eq!(node.namespaces().len(), 2, "{:?}", node.namespaces());
    rt.stop("uid-web").unwrap();
    node.assert_only_node_left();
    wait_no_bridge_ports(&node);
    assert!(node.ipam_holders().is_empty(), "{:?}", node.ipam_holders());
    assert!(!node.state_dir().join("pods/uid-web").exists());

    // GC answered with garbage is a failed GC, returned (the agent retries it), not a
    // warning that leaves leaked addresses held for good.
    install_plugin(&bin, GARBAGE);
    let err = rt.gc(&keep(&[])).unwrap_err().to_string();
    assert!(
        err.contains("CNI GC") && err.contains("(trust me)"),
        "{err}"
    );
    install_plugin(&bin, "");
    rt.cni_gc().unwrap();
}
