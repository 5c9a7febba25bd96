//! Pods started by the runtime, wired by the real CNI plugin inside a node namespace:
//! the built-in server, commands, the pod's own resolv.conf/hosts/host name, readiness
//! probes and restart policies.

mod common;

use common::*;

const WEB: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: default, uid: uid-web}
spec:
  containers:
  - name: web
    ports:
    - containerPort: 8080
"#;

const CLIENT: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: default, uid: uid-client}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    command: [sleep]
    args: ["1000"]
    env:
    - {name: GREETING, value: hello}
    - name: MY_IP
      valueFrom: {fieldRef: {fieldPath: status.podIP}}
"#;

#[test]
fn a_client_pod_reaches_the_builtin_server_with_its_own_ip() {
    let node = Node::new("serve");
    let mut rt = node.runtime();
    let web = rt.start(&pod(WEB)).unwrap();
    // The step before the containers sees the pod wired and nothing running in it yet.
    let mut before = None;
    let client = rt
        .start_with(&pod(CLIENT), |st| {
            let pids = std::process::Command::new("ip")
                .args(["netns", "pids"])
                .arg(st.netns.file_name().unwrap())
                .output()
                .unwrap()
                .stdout;
            before = Some((st.ips.clone(), pids));
            Ok(())
        })
        .unwrap();
    let (before_ips, before_pids) = before.unwrap();
    assert_eq!(before_ips, client.ips);
    assert!(before_pids.is_empty(), "a process ran before the hook");
    assert_eq!(web.ips, ["10.244.1.2".parse::<std::net::IpAddr>().unwrap()]);
    assert_eq!(ip(&client).to_string(), "10.244.1.3");
    assert_eq!(
        web.netns,
        std::path::PathBuf::from(format!("/run/netns/{}default-web", node.prefix))
    );
    assert!(node
        .namespaces()
        .contains(&format!("{}default-client", node.prefix)));
    // The container process lives in the pod's namespace.
    let pid = web.containers[0].pid.unwrap();
    assert_eq!(
        inode(&std::path::PathBuf::from(format!("/proc/{pid}/ns/net"))),
        inode(&web.netns)
    );
    // Nothing of the runtime's leaks into a container: `sleep` holds stdin, stdout, stderr.
    let client_pid = client.containers[0].pid.unwrap();
    let mut fds: Vec<String> = std::fs::read_dir(format!("/proc/{client_pid}/fd"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    fds.sort();
    assert_eq!(fds, ["0", "1", "2"]);
    // No readiness probe: ready once running.
    tend_until(&mut rt, "uid-web", "web ready", |s| s.ready);

    let target = format!("{}:8080", ip(&web));
    let (code, out, err) = exec(&rt, "uid-client", &["weft", "probe", "tcp", &target]);
    assert_eq!(code, 0, "probe failed: {out}{err}");
    assert!(out.contains("client=10.244.1.3"), "{out}");
    // The server's identity comes from the pod: host name (UTS) and POD_NAME/NAMESPACE.
    assert!(out.contains("server=web"), "{out}");
    assert!(out.contains("pod=default/web"), "{out}");

    let (code, out, _) = exec(
        &rt,
        "uid-client",
        &[
            "sh",
            "-c",
            "echo $POD_NAME $POD_NAMESPACE $POD_IP $NODE_NAME $GREETING $MY_IP; hostname",
        ],
    );
    assert_eq!(code, 0);
    assert_eq!(
        out,
        "client default 10.244.1.3 node-1 hello 10.244.1.3\nclient\n"
    );
    // Another process (the `weft lab exec` CLI) reaches the pod from the records alone,
    // while the runtime holds the state directory.
    let out = weft_agent::exec_recorded(
        &node.state_dir(),
        &weft_bin(),
        "default",
        "client",
        &[
            "sh".to_string(),
            "-c".to_string(),
            "hostname; echo $GREETING".to_string(),
        ],
    )
    .unwrap()
    .output()
    .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "client\nhello\n");
    let missing = weft_agent::exec_recorded(
        &node.state_dir(),
        &weft_bin(),
        "default",
        "nobody",
        &["true".to_string()],
    );
    assert!(missing.is_err());

    // A closed port is refused: the exit code of the command comes back.
    let (code, _, _) = exec(
        &rt,
        "uid-client",
        &["weft", "probe", "tcp", &format!("{}:9", ip(&web))],
    );
    assert_eq!(code, 1);
}

#[test]
fn pods_see_their_own_resolv_conf_and_hosts_the_host_keeps_its_own() {
    let node = Node::new("files");
    let mut rt = node.runtime();
    let host_resolv = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    let host_hosts = std::fs::read_to_string("/etc/hosts").unwrap_or_default();
    let etc_mounts_before = etc_mounts();
    let st = rt
        .start(&pod(
            &CLIENT.replace("namespace: default", "namespace: shop")
        ))
        .unwrap();
    let (code, out, err) = exec(&rt, "uid-client", &["cat", "/etc/resolv.conf"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out,
        "nameserver 10.96.0.10\nsearch shop.svc.cluster.local svc.cluster.local cluster.local\noptions ndots:5\n"
    );
    let (_, hosts, _) = exec(&rt, "uid-client", &["cat", "/etc/hosts"]);
    assert!(hosts.contains("127.0.0.1\tlocalhost\n"), "{hosts}");
    assert!(hosts.contains(&format!("{}\tclient\n", ip(&st))), "{hosts}");
    // The running container sees them too (its mount namespace, not only exec's).
    let pid = st.containers[0].pid.unwrap();
    let seen = std::fs::read_to_string(format!("/proc/{pid}/root/etc/resolv.conf")).unwrap();
    assert!(seen.starts_with("nameserver 10.96.0.10\n"), "{seen}");
    // Nothing leaked back to the host.
    assert_eq!(
        std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default(),
        host_resolv
    );
    assert_eq!(
        std::fs::read_to_string("/etc/hosts").unwrap_or_default(),
        host_hosts
    );
    assert_eq!(etc_mounts(), etc_mounts_before);
    rt.stop("uid-client").unwrap();
}

/// Mounts over /etc files in the test's own mount namespace (the host's view).
fn etc_mounts() -> usize {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter(|l| l.contains(" /etc/resolv.conf ") || l.contains(" /etc/hosts "))
        .count()
}

#[test]
fn readiness_follows_http_and_exec_probes() {
    let node = Node::new("ready");
    let mut rt = node.runtime();
    let go = node.dir.path().join("go");
    let side = node.dir.path().join("side-ready");
    let yaml = format!(
        r#"
metadata: {{name: lazy, uid: uid-lazy}}
spec:
  terminationGracePeriodSeconds: 2
  containers:
  - name: web
    command: [sh, -c, 'while [ ! -e {go} ]; do sleep 0.05; done; exec weft serve --http 8080']
    readinessProbe:
      httpGet: {{port: http, path: /healthz}}
      periodSeconds: 1
    ports:
    - {{name: http, containerPort: 8080}}
  - name: side
    command: [sleep, "1000"]
    readinessProbe:
      exec: {{command: [test, -e, {side}]}}
      periodSeconds: 1
"#,
        go = go.display(),
        side = side.display()
    );
    rt.start(&pod(&yaml)).unwrap();
    rt.probe_all();
    let st = rt.status("uid-lazy").unwrap();
    assert!(st.containers.iter().all(|c| c.running), "{st:#?}");
    assert!(!st.containers[0].ready, "nothing listens yet: {st:#?}");
    assert!(!st.ready);

    std::fs::write(&go, "").unwrap();
    let st = tend_until(&mut rt, "uid-lazy", "web ready", |s| s.containers[0].ready);
    assert!(!st.containers[1].ready && !st.ready, "{st:#?}");

    std::fs::write(&side, "").unwrap();
    let st = tend_until(&mut rt, "uid-lazy", "pod ready", |s| s.ready);
    assert!(st.containers.iter().all(|c| c.ready && c.restarts == 0));

    // A probe that starts failing makes the container unready after failureThreshold.
    std::fs::remove_file(&side).unwrap();
    tend_until(&mut rt, "uid-lazy", "side unready", |s| {
        !s.containers[1].ready && !s.ready
    });
    rt.stop("uid-lazy").unwrap();
}

#[test]
fn restart_policy_always_restarts_never_leaves_exited() {
    let node = Node::new("restart");
    let mut rt = node.runtime();
    let yaml = |name: &str, policy: &str| {
        format!(
            "metadata: {{name: {name}, uid: uid-{name}}}\nspec:\n  restartPolicy: {policy}\n  containers:\n  - {{name: c, command: [sh, -c, 'echo ran; exit 3']}}\n"
        )
    };
    rt.start(&pod(&yaml("once", "Never"))).unwrap();
    rt.start(&pod(&yaml("again", "Always"))).unwrap();
    let st = tend_until(&mut rt, "uid-once", "exited", |s| !s.containers[0].running);
    assert_eq!(st.containers[0].exit_code, Some(3));
    assert_eq!(st.containers[0].restarts, 0);
    assert!(!st.ready);
    assert_eq!(st.phase, "Failed");
    let kube = st.to_pod_status();
    assert_eq!(kube.pod_ip.as_deref(), Some(ip(&st).to_string().as_str()));
    let term = kube.container_statuses.unwrap()[0]
        .state
        .clone()
        .unwrap()
        .terminated
        .unwrap();
    assert_eq!(term.exit_code, 3);
    tend_until(&mut rt, "uid-again", "restarted twice", |s| {
        s.containers[0].restarts >= 2
    });
    rt.probe_all();
    let st = rt.status("uid-once").unwrap();
    assert_eq!(
        (st.containers[0].running, st.containers[0].restarts),
        (false, 0)
    );
    // The record says the same on disk.
    // Each run has a log of its own, in the CRI format; the run before is kept as the
    // previous log (`kubectl logs --previous`).
    let path = rt.log_path("uid-again", "c").unwrap();
    // A restart may just have begun a new log whose writer has not written yet (a loaded
    // machine): wait for the line, a bounded while.
    let read = |p: &std::path::Path| std::fs::read_to_string(p).unwrap_or_default();
    let has_run = |l: &str| l.contains(" stdout F ran\n");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let previous_path = path.with_file_name("c.previous.log");
    while !(has_run(&read(&path)) && has_run(&read(&previous_path)))
        && std::time::Instant::now() < deadline
    {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    for l in [read(&path), read(&previous_path)] {
        assert!(has_run(&l), "{l}");
    }
    assert!(rt.log_path("uid-again", "nope").is_none());
    let rec = std::fs::read_to_string(node.state_dir().join("pods/uid-once/record.json")).unwrap();
    assert!(rec.contains("\"exit_code\": 3"), "{rec}");
}

#[test]
fn a_failed_start_leaves_nothing_behind() {
    let node = Node::new("fail");
    let mut rt = node.runtime();
    let err = rt
        .start(&pod(
            "metadata: {name: bad, uid: uid-bad}\nspec: {containers: [{name: c, command: [no-such-program-weft]}]}",
        ))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("no-such-program-weft") && err.contains("not found"),
        "{err}"
    );
    node.assert_only_node_left();
    assert!(node.ipam_holders().is_empty(), "{:?}", node.ipam_holders());
    assert!(node.bridge_ports().is_empty());
    assert!(!node.state_dir().join("pods/uid-bad").exists());
    assert!(rt.status("uid-bad").is_none());
    // A refusal from the step before the containers undoes the start too.
    let mut seen = None;
    let err = rt
        .start_with(&pod(CLIENT), |st| {
            seen = Some(st.clone());
            Err("policy not ready".into())
        })
        .unwrap_err()
        .to_string();
    assert!(err.contains("policy not ready"), "{err}");
    let seen = seen.unwrap();
    assert_eq!((seen.phase.as_str(), seen.containers.len()), ("Pending", 0));
    assert_eq!(seen.ips.len(), 1);
    node.assert_only_node_left();
    assert!(node.ipam_holders().is_empty());
    assert!(node.bridge_ports().is_empty());

    // A config written after the agent started is picked up by the next start.
    let mut cfg = node.config();
    cfg.cni_conf = node.dir.path().join("later.conf");
    cfg.state_dir = node.dir.path().join("state-later");
    let mut later = weft_agent::Runtime::new(cfg.clone()).unwrap();
    let err = later.start(&pod(CLIENT)).unwrap_err().to_string();
    assert!(err.contains("later.conf"), "{err}");
    node.assert_only_node_left();
    std::fs::copy(node.conf_path(), &cfg.cni_conf).unwrap();
    later.start(&pod(CLIENT)).unwrap();
    later.stop("uid-client").unwrap();

    // A node without its pod subnet yet: the plugin says "try again later" (CNI code 11),
    // the start is undone, and a retry once the subnet file exists succeeds.
    let subnet_file = node.dir.path().join("subnet.env");
    let conf = std::fs::read_to_string(node.conf_path()).unwrap().replace(
        r#""subnet":"10.244.1.0/24""#,
        &format!(r#""subnetFile":"{}""#, subnet_file.display()),
    );
    std::fs::write(&cfg.cni_conf, conf).unwrap();
    let err = later.start(&pod(CLIENT)).unwrap_err();
    assert!(err.is_try_again(), "{err}");
    node.assert_only_node_left();
    std::fs::write(&subnet_file, "WEFT_SUBNET=10.244.1.0/24\n").unwrap();
    later.start(&pod(CLIENT)).unwrap();
    later.stop("uid-client").unwrap();
    node.assert_only_node_left();

    // A pod without a uid is refused before anything is made.
    let err = rt
        .start(&pod("metadata: {name: x}\nspec: {containers: [{name: c}]}"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("metadata.uid"), "{err}");
}

#[test]
fn a_failing_liveness_probe_restarts_the_container() {
    let node = Node::new("live");
    let mut rt = node.runtime();
    let alive_file = node.dir.path().join("alive");
    std::fs::write(&alive_file, "").unwrap();
    let yaml = format!(
        r#"
metadata: {{name: lively, uid: uid-lively}}
spec:
  containers:
  - name: main
    command: [sleep, "1000"]
    livenessProbe:
      exec: {{command: [test, -e, {}]}}
      periodSeconds: 1
      failureThreshold: 2
"#,
        alive_file.display()
    );
    let first = rt.start(&pod(&yaml)).unwrap().containers[0].pid;
    // Passing probes leave it alone: several periods pass without a restart.
    let deadline = std::time::Instant::now() + std::time::Duration::from_millis(2500);
    while std::time::Instant::now() < deadline {
        rt.probe_all();
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let st = rt.status("uid-lively").unwrap();
    assert_eq!(
        (st.containers[0].restarts, st.containers[0].pid),
        (0, first)
    );
    std::fs::remove_file(&alive_file).unwrap();
    let st = tend_until(&mut rt, "uid-lively", "restarted by liveness", |s| {
        s.containers[0].restarts == 1 && s.containers[0].running
    });
    assert_ne!(st.containers[0].pid, first);
    assert!(!alive(first.unwrap()));
}
