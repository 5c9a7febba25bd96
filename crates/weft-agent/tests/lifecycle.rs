//! Ending pods and surviving agent restarts: stop removes namespace, veth, address and
//! record; a new runtime on the same state directory adopts running pods (same processes,
//! established connections intact), distrusts PIDs that no longer match, removes the
//! remains of a start that never finished; gc stops what is no longer wanted.

mod common;

use common::*;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use weft_netlink::Netns;

fn sleeper(name: &str, extra: &str) -> String {
    format!(
        "metadata: {{name: {name}, uid: uid-{name}}}\nspec:\n  terminationGracePeriodSeconds: 1\n{extra}  containers:\n  - {{name: main, command: [sleep, '1000']}}\n"
    )
}

#[test]
fn stop_removes_namespace_veth_address_and_record() {
    let node = Node::new("stop");
    let mut rt = node.runtime();
    let keeper = rt.start(&pod(&sleeper("keeper", ""))).unwrap();
    let web = rt
        .start(&pod(
            "metadata: {name: web, uid: uid-web}\nspec:\n  terminationGracePeriodSeconds: 5\n  containers:\n  - {name: web, ports: [{containerPort: 8080}]}\n",
        ))
        .unwrap();
    // Ignores SIGTERM (sh and its sleep both): only SIGKILL after the grace period ends it.
    let stubborn = rt
        .start(&pod(
            "metadata: {name: stubborn, uid: uid-stubborn}\nspec:\n  terminationGracePeriodSeconds: 1\n  containers:\n  - {name: main, command: [sh, -c, 'trap \"\" TERM; sleep 1000']}\n",
        ))
        .unwrap();
    assert_eq!(node.bridge_ports().len(), 3);
    let mut holders = node.ipam_holders();
    holders.sort();
    assert_eq!(holders, ["uid-keeper", "uid-stubborn", "uid-web"]);

    let web_ns = web.netns.file_name().unwrap().to_str().unwrap().to_string();
    let web_pid = web.containers[0].pid.unwrap();
    rt.stop("uid-web").unwrap();
    assert!(!node.namespaces().contains(&web_ns));
    assert!(!alive(web_pid), "web's process survived stop");
    assert_eq!(node.bridge_ports().len(), 2, "web's veth is left");
    assert!(!node.ipam_holders().contains(&"uid-web".to_string()));
    assert!(!node.state_dir().join("pods/uid-web").exists());
    assert!(rt.status("uid-web").is_none());
    // A running pod's mount namespace does not pin the stopped pod's namespace mount.
    let keeper_pid = keeper.containers[0].pid.unwrap();
    let mounts = std::fs::read_to_string(format!("/proc/{keeper_pid}/mountinfo")).unwrap();
    assert!(!mounts.contains(&web_ns), "keeper still holds {web_ns}");
    // Idempotent, and unknown pods are no error.
    rt.stop("uid-web").unwrap();
    rt.stop("uid-never-was").unwrap();

    let stubborn_pid = stubborn.containers[0].pid.unwrap();
    rt.stop("uid-stubborn").unwrap();
    assert!(!alive(stubborn_pid), "SIGKILL after the grace period");
    assert!(!node
        .namespaces()
        .iter()
        .any(|n| n.ends_with("default-stubborn")));
    assert_eq!(node.ipam_holders(), ["uid-keeper"]);
    assert!(alive(keeper_pid));
    rt.stop("uid-keeper").unwrap();
    node.assert_only_node_left();
    assert!(node.bridge_ports().is_empty());
}

#[test]
fn a_new_runtime_adopts_pods_and_their_connections_survive() {
    let node = Node::new("adopt");
    let mut rt = node.runtime();
    let web = rt
        .start(&pod(
            "metadata: {name: web, uid: uid-web}\nspec:\n  terminationGracePeriodSeconds: 2\n  containers:\n  - name: web\n    ports: [{containerPort: 8080}]\n    readinessProbe: {tcpSocket: {port: 8080}, periodSeconds: 1}\n",
        ))
        .unwrap();
    let client = rt.start(&pod(&sleeper("client", ""))).unwrap();
    tend_until(&mut rt, "uid-web", "web ready", |s| s.ready);

    // A connection from inside the client pod's namespace to the server pod.
    let client_ns = Netns::from_path(&client.netns).unwrap();
    let server = std::net::SocketAddr::new(ip(&web), 8080);
    let stream = client_ns
        .run_in(|| TcpStream::connect(server))
        .unwrap()
        .unwrap();
    // The client speaks first: the server answers with its greeting, then the echo.
    (&stream).write_all(b"before\n").unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut greeting = String::new();
    reader.read_line(&mut greeting).unwrap();
    assert!(
        greeting.contains(&format!("client={}:", ip(&client))),
        "{greeting}"
    );
    let mut echo = String::new();
    reader.read_line(&mut echo).unwrap();
    assert_eq!(echo, "before\n");

    // One runtime per state directory.
    let second = node.runtime_result().err().map(|e| e.to_string());
    assert!(second.is_some_and(|e| e.contains("another runtime")));

    // The agent dies (nothing is stopped), a new one starts on the same state directory.
    drop(rt);
    let mut rt = node.runtime();
    let mut adopted = rt.adopt().unwrap();
    adopted.sort();
    assert_eq!(adopted, ["uid-client", "uid-web"]);
    let web2 = rt.status("uid-web").unwrap();
    assert_eq!(web2.containers[0].pid, web.containers[0].pid);
    assert!(web2.containers[0].running);
    assert!(web2.ready, "readiness is kept across the restart");
    assert_eq!(web2.ips, web.ips);

    (&stream).write_all(b"still there\n").unwrap();
    let mut echo = String::new();
    reader.read_line(&mut echo).unwrap();
    assert_eq!(echo, "still there\n");
    drop(reader);
    drop(stream);

    // exec works in adopted pods; adopt again changes nothing.
    let (code, out, _) = exec(
        &rt,
        "uid-client",
        &["weft", "probe", "tcp", &server.to_string()],
    );
    assert_eq!(code, 0, "{out}");
    assert_eq!(rt.adopt().unwrap().len(), 2);

    let stopped = rt.gc(&keep(&["uid-web"])).unwrap();
    assert_eq!(stopped, ["uid-client"]);
    assert!(!node
        .namespaces()
        .iter()
        .any(|n| n.ends_with("default-client")));
    assert!(rt.status("uid-web").unwrap().containers[0].running);
    assert_eq!(node.ipam_holders(), ["uid-web"]);
    assert_eq!(rt.gc(&keep(&[])).unwrap(), ["uid-web"]);
    node.assert_only_node_left();
    assert!(node.bridge_ports().is_empty());
    assert!(node.ipam_holders().is_empty());
}

#[test]
fn adopt_distrusts_stale_pids_and_removes_unfinished_starts() {
    let node = Node::new("stale");
    let mut rt = node.runtime();
    let died = rt.start(&pod(&sleeper("died", ""))).unwrap();
    let reused = rt
        .start(&pod(&sleeper("reused", "  restartPolicy: Never\n")))
        .unwrap();
    let half = rt.start(&pod(&sleeper("half", ""))).unwrap();
    let died_pid = died.containers[0].pid.unwrap();
    let reused_pid = reused.containers[0].pid.unwrap();
    let half_pid = half.containers[0].pid.unwrap();
    drop(rt);

    // While no agent runs: a container is killed; a record's PID stops matching (as if the
    // PID now belonged to another process); a record is left as a crash mid-start leaves it.
    run_ok(std::process::Command::new("kill").args(["-9", &died_pid.to_string()]));
    let edit = |uid: &str, from: &str, to: &str| {
        let p = node.state_dir().join(format!("pods/{uid}/record.json"));
        let s = std::fs::read_to_string(&p).unwrap();
        assert!(s.contains(from), "{s}");
        std::fs::write(&p, s.replacen(from, to, 1)).unwrap();
    };
    let rec =
        std::fs::read_to_string(node.state_dir().join("pods/uid-reused/record.json")).unwrap();
    let start_line = rec
        .lines()
        .find(|l| l.contains("\"start_time\""))
        .unwrap()
        .to_string();
    edit("uid-reused", &start_line, "      \"start_time\": 1,");
    edit(
        "uid-half",
        "\"phase\": \"running\"",
        "\"phase\": \"creating\"",
    );

    let mut rt = node.runtime();
    let mut adopted = rt.adopt().unwrap();
    adopted.sort();
    assert_eq!(adopted, ["uid-died", "uid-reused"]);
    // The unfinished start is gone entirely.
    assert!(!node
        .namespaces()
        .iter()
        .any(|n| n.ends_with("default-half")));
    assert!(!alive(half_pid));
    assert!(!node.ipam_holders().contains(&"uid-half".to_string()));
    assert!(!node.state_dir().join("pods/uid-half").exists());

    let st = rt.status("uid-reused").unwrap();
    assert!(
        !st.containers[0].running,
        "a PID whose start time differs is not ours"
    );
    let st = rt.status("uid-died").unwrap();
    assert!(!st.containers[0].running);
    assert_eq!(st.containers[0].exit_code, Some(137));
    // restartPolicy Always (the default) starts it again.
    let st = tend_until(&mut rt, "uid-died", "restarted", |s| {
        s.containers[0].running
    });
    assert_eq!(st.containers[0].restarts, 1);
    assert_ne!(st.containers[0].pid, Some(died_pid));

    // Stopping the pod also ends the untrusted process still living in its namespace.
    assert!(alive(reused_pid));
    rt.gc(&keep(&[])).unwrap();
    assert!(!alive(reused_pid));
    node.assert_only_node_left();
    assert!(node.ipam_holders().is_empty());
}

#[test]
fn after_a_reboot_recorded_pods_without_namespace_are_cleaned_up() {
    let node = Node::new("reboot");
    let mut rt = node.runtime();
    let st = rt.start(&pod(&sleeper("gone", ""))).unwrap();
    drop(rt);
    // What a reboot leaves: records and IPAM state on disk, no processes, no namespace.
    let name = st.netns.file_name().unwrap().to_str().unwrap().to_string();
    let pid = st.containers[0].pid.unwrap();
    run_ok(std::process::Command::new("kill").args(["-9", &pid.to_string()]));
    run_ok(std::process::Command::new("ip").args(["netns", "del", &name]));
    assert_eq!(node.ipam_holders(), ["uid-gone"]);

    let mut rt = node.runtime();
    assert!(rt.adopt().unwrap().is_empty());
    assert!(rt.status("uid-gone").is_none());
    assert!(node.ipam_holders().is_empty(), "the address is released");
    assert!(node.bridge_ports().is_empty(), "the host veth is removed");
    assert!(!node.state_dir().join("pods/uid-gone").exists());
    // The pod can start again under the same uid.
    rt.start(&pod(&sleeper("gone", ""))).unwrap();
    rt.gc(&keep(&[])).unwrap();
    node.assert_only_node_left();
}

#[test]
fn starting_a_recorded_pod_takes_it_back_instead_of_restarting_it() {
    let node = Node::new("restart-start");
    let mut rt = node.runtime();
    let first = rt.start(&pod(&sleeper("kept", ""))).unwrap();
    drop(rt);
    // A new agent that starts its pods without calling adopt() first.
    let mut rt = node.runtime();
    let again = rt.start(&pod(&sleeper("kept", ""))).unwrap();
    assert_eq!(again.containers[0].pid, first.containers[0].pid);
    assert!(again.containers[0].running);
    assert_eq!(again.ips, first.ips);
    assert_eq!(node.ipam_holders(), ["uid-kept"]);
    rt.gc(&keep(&[])).unwrap();
    node.assert_only_node_left();
}

#[test]
fn a_failed_cni_del_still_removes_the_namespace_and_is_retried() {
    let node = Node::new("deldie");
    let mut rt = node.runtime();
    let p = rt.start(&pod(&sleeper("broken", ""))).unwrap();
    let ns_name = p.netns.file_name().unwrap().to_str().unwrap().to_string();
    let saved = node.state_dir().join("pods/uid-broken/cni-config.json");
    let good = std::fs::read(&saved).unwrap();
    // DEL cannot run: the saved network config is unreadable.
    std::fs::write(&saved, "{ not a network config").unwrap();
    let err = rt.stop("uid-broken").unwrap_err().to_string();
    assert!(err.contains("CNI DEL"), "{err}");
    // Every other step ran: the namespace (and with it the veth) is gone...
    assert!(
        !node.namespaces().contains(&ns_name),
        "a failed DEL left the namespace"
    );
    // (the kernel destroys a dead namespace's devices in the background)
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while !node.bridge_ports().is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(node.bridge_ports().is_empty(), "a failed DEL left the veth");
    // ...and the record stays, so the DEL is retried and releases the address.
    assert!(node.state_dir().join("pods/uid-broken").exists());
    assert_eq!(node.ipam_holders(), ["uid-broken"]);
    std::fs::write(&saved, good).unwrap();
    rt.stop("uid-broken").unwrap();
    assert!(node.ipam_holders().is_empty());
    assert!(!node.state_dir().join("pods/uid-broken").exists());
    node.assert_only_node_left();
}

/// Processes whose network namespace is the file `netns` (a pod's /run/netns entry).
fn pids_in(netns: &std::path::Path) -> Vec<u32> {
    use std::os::unix::fs::MetadataExt;
    let inode = std::fs::metadata(netns).unwrap().ino();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::metadata(format!("/proc/{pid}/ns/net")).is_ok_and(|m| m.ino() == inode)
        })
        .collect()
}

#[test]
fn stop_all_ends_several_pods_together_each_by_its_own_grace_period() {
    let node = Node::new("stopall");
    let mut rt = node.runtime();
    let quick = rt.start(&pod(&sleeper("quick", ""))).unwrap();
    // Ignores SIGTERM: only the SIGKILL after its own grace period ends it.
    let stubborn = rt
        .start(&pod(
            "metadata: {name: stubborn, uid: uid-stubborn}\nspec:\n  terminationGracePeriodSeconds: 1\n  containers:\n  - {name: main, command: [sh, -c, 'trap \"\" TERM; sleep 1000']}\n",
        ))
        .unwrap();
    // Leaves a daemon in a session of its own, out of the container's process group:
    // only the pass over the namespaces' processes finds it.
    let daemon = rt
        .start(&pod(
            "metadata: {name: daemon, uid: uid-daemon}\nspec:\n  terminationGracePeriodSeconds: 1\n  containers:\n  - {name: main, command: [sh, -c, 'setsid sleep 1001 & sleep 1000']}\n",
        ))
        .unwrap();
    let keeper = rt.start(&pod(&sleeper("keeper", ""))).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while pids_in(&daemon.netns).len() < 3 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let daemon_pids = pids_in(&daemon.netns);
    assert_eq!(daemon_pids.len(), 3, "sh, its sleep and the daemon");
    let pids: Vec<u32> = [&quick, &stubborn]
        .iter()
        .map(|p| p.containers[0].pid.unwrap())
        .chain(daemon_pids)
        .collect();

    let uids = ["uid-quick", "uid-stubborn", "uid-daemon", "uid-never-was"].map(String::from);
    let results = rt.stop_all(&uids);
    let order: Vec<&str> = results.iter().map(|(u, _)| u.as_str()).collect();
    assert_eq!(order, uids.iter().map(String::as_str).collect::<Vec<_>>());
    for (uid, r) in &results {
        assert!(r.is_ok(), "{uid}: {r:?}");
        assert!(rt.status(uid).is_none(), "{uid} still known");
        assert!(
            !node.state_dir().join("pods").join(uid).exists(),
            "{uid}'s record"
        );
    }
    for pid in pids {
        assert!(!alive(pid), "process {pid} survived stop_all");
    }
    assert_eq!(node.ipam_holders(), ["uid-keeper"]);
    let left = node.namespaces();
    assert_eq!(left.len(), 2, "the node and keeper's namespace: {left:?}");
    assert!(alive(keeper.containers[0].pid.unwrap()));
    rt.stop_all(&["uid-keeper".to_string()]);
    node.assert_only_node_left();
}
