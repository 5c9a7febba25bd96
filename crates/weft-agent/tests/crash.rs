//! The agent as its own process, killed with SIGKILL like a crash: its pods keep running
//! (they are not its children any more), an established connection between two pods
//! survives, and a runtime in another process adopts them by PID.

mod common;

use common::*;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use weft_agent::PodRuntimeStatus;
use weft_netlink::Netns;

const PODS: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: default, uid: uid-web}
spec:
  terminationGracePeriodSeconds: 2
  containers:
  - name: web
    ports: [{containerPort: 8080}]
    readinessProbe: {tcpSocket: {port: 8080}, periodSeconds: 1}
---
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: default, uid: uid-client}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - {name: main, command: [sleep, "1000"]}
"#;

/// A child process killed on drop.
struct Agent(std::process::Child);

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn pods_outlive_a_killed_agent_and_are_adopted() {
    // The agent ignores SIGTERM (dispositions are inherited over exec); its pods must not.
    // SAFETY: setting a disposition to SIG_IGN installs no handler code.
    unsafe {
        libc::signal(libc::SIGTERM, libc::SIG_IGN);
    }
    let node = Node::new("crash");
    let file = node.dir.path().join("pods.yaml");
    std::fs::write(&file, PODS).unwrap();
    let cfg = node.config();
    let mut agent = Agent(
        Command::new(env!("CARGO_BIN_EXE_weft-pod"))
            .arg("--state-dir")
            .arg(&cfg.state_dir)
            .arg("--weft-bin")
            .arg(&cfg.weft_bin)
            .arg("--cni-conf")
            .arg(&cfg.cni_conf)
            .arg("--prefix")
            .arg(&cfg.netns_prefix)
            .arg("--host-netns")
            .arg(cfg.host_netns.as_ref().unwrap())
            .arg("run")
            .arg(&file)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut lines = BufReader::new(agent.0.stdout.take().unwrap()).lines();
    let mut next = || lines.next().expect("agent output").expect("agent output");
    let web: PodRuntimeStatus = serde_json::from_str(&next()).unwrap();
    let client: PodRuntimeStatus = serde_json::from_str(&next()).unwrap();
    // Waits for the agent's own prober to find the server listening.
    while next() != "ready uid-web" {}

    let server = std::net::SocketAddr::new(ip(&web), 8080);
    let stream = Netns::from_path(&client.netns)
        .unwrap()
        .run_in(|| TcpStream::connect(server))
        .unwrap()
        .unwrap();
    (&stream).write_all(b"before\n").unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    assert!(line.contains(&format!("client={}:", ip(&client))), "{line}");

    // `weft-pod exec` works next to the running agent (from the records, without its lock).
    let out = Command::new(env!("CARGO_BIN_EXE_weft-pod"))
        .arg("--state-dir")
        .arg(&cfg.state_dir)
        .arg("--weft-bin")
        .arg(&cfg.weft_bin)
        .arg("--cni-conf")
        .arg(&cfg.cni_conf)
        .args([
            "exec",
            "default/client",
            "weft",
            "probe",
            "tcp",
            &server.to_string(),
        ])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(said.contains(&format!("client={}", ip(&client))), "{said}");

    let ignored = |pid: u32| {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let mask = status
            .lines()
            .find_map(|l| l.strip_prefix("SigIgn:"))
            .unwrap()
            .trim()
            .to_string();
        u64::from_str_radix(&mask, 16).unwrap()
    };
    assert_ne!(ignored(agent.0.id()) & (1 << (libc::SIGTERM - 1)), 0);
    assert_eq!(
        ignored(web.containers[0].pid.unwrap()) & (1 << (libc::SIGTERM - 1)),
        0
    );

    let agent_pid = agent.0.id();
    agent.0.kill().unwrap();
    agent.0.wait().unwrap();
    let web_pid = web.containers[0].pid.unwrap();
    let client_pid = client.containers[0].pid.unwrap();
    // Not ours: the pods' parent is gone, they were re-parented.
    let ppid = |pid: u32| {
        let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        s[s.rfind(')').unwrap() + 1..]
            .split_whitespace()
            .nth(1)
            .unwrap()
            .parse::<u32>()
            .unwrap()
    };
    assert_ne!(ppid(web_pid), agent_pid);

    let mut rt = node.runtime();
    let mut adopted = rt.adopt().unwrap();
    adopted.sort();
    assert_eq!(adopted, ["uid-client", "uid-web"]);
    let st = rt.status("uid-web").unwrap();
    assert_eq!(st.containers[0].pid, Some(web_pid));
    assert!(st.containers[0].running && st.ready, "{st:#?}");

    // The connection opened under the old agent still carries data.
    line.clear();
    reader.read_line(&mut line).unwrap();
    assert_eq!(line, "before\n");
    (&stream).write_all(b"after\n").unwrap();
    line.clear();
    reader.read_line(&mut line).unwrap();
    assert_eq!(line, "after\n");
    drop(reader);
    drop(stream);

    // A container that is not our child dies: seen through /proc, exit code unknown,
    // restarted by policy.
    run_ok(Command::new("kill").args(["-9", &client_pid.to_string()]));
    let st = tend_until(&mut rt, "uid-client", "restarted", |s| {
        s.containers[0].restarts == 1
    });
    assert!(st.containers[0].running);
    assert_ne!(st.containers[0].pid, Some(client_pid));

    assert_eq!(rt.gc(&keep(&[])).unwrap().len(), 2);
    assert!(!alive(web_pid));
    node.assert_only_node_left();
    assert!(node.ipam_holders().is_empty());
}
