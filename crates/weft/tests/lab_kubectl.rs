//! The real kubectl (/usr/bin/kubectl, 1.30+) against a lab: `exec` over WebSocket
//! (v5.channel.k8s.io) through the API server to the agent's node API, `-i` with stdin
//! piped in, `-it` under a pseudo-terminal, exit codes carried back; `logs` with `--tail`,
//! `-f`, `--timestamps`, `--previous` and `-c`; the node API refusing callers without the
//! token.

mod lab_support;

use lab_support::*;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const POD_WAIT: Duration = Duration::from_secs(60);

fn kubectl_available() -> bool {
    Command::new("kubectl")
        .args(["version", "--client"])
        .output()
        .is_ok_and(|o| o.status.success())
}

fn kubectl(lab: &Lab, args: &[&str]) -> Command {
    let mut c = Command::new("kubectl");
    c.arg("--kubeconfig").arg(lab.kubeconfig()).args(args);
    c
}

fn run(mut c: Command) -> Output {
    c.stdin(Stdio::null()).output().expect("spawn kubectl")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn examples() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples/pods.yaml")
        .display()
        .to_string()
}

#[test]
fn kubectl_exec_through_the_node_api() {
    if !kubectl_available() {
        eprintln!("skipped: no kubectl");
        return;
    }
    let lab = Lab::up(2, "vxlan");
    lab.lab_ok("apply", &["-f", &examples()]);
    lab.apply(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: done}\nspec:\n  nodeName: node-2\n  restartPolicy: Never\n  containers:\n  - {name: c, image: sh, command: [sh, -c, 'echo bye']}\n",
    );
    let pods = lab.wait_running(&["frontend-pod", "backend-pod", "backend-remote"], POD_WAIT);

    // The documents' command, verbatim.
    let o = lab.kubectl(&["exec", "frontend-pod", "--", "ip", "route"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        stdout(&o).contains("default via 10.244.1.1 dev eth0"),
        "{}",
        text(&o)
    );

    // A probe from the pod on node-1 to the pod on node-2, through kubectl.
    let remote = &pods["backend-remote"].ip;
    let o = lab.kubectl(&[
        "exec",
        "frontend-pod",
        "--",
        "weft",
        "probe",
        "icmp",
        remote,
    ]);
    assert!(o.status.success(), "{}", text(&o));

    // stdout and stderr apart; the exit code is kubectl's.
    let o = lab.kubectl(&[
        "exec",
        "backend-remote",
        "--",
        "sh",
        "-c",
        "echo out; echo err >&2; exit 3",
    ]);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    assert_eq!(stdout(&o), "out\n");
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("err\n"),
        "{}",
        text(&o)
    );

    // stdin piped in, to its end.
    let mut c = kubectl(
        &lab,
        &["exec", "-i", "backend-pod", "--", "sh", "-c", "wc -l; cat"],
    );
    let mut child = c
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"one\ntwo\nthree\n")
        .unwrap();
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(stdout(&o).trim(), "3", "{}", text(&o));

    // -it under a pseudo-terminal (script from util-linux): a terminal of the set size,
    // an interactive shell, its exit code.
    let kc = lab.kubeconfig().display().to_string();
    let script =
        format!("stty cols 91 rows 27; kubectl --kubeconfig {kc} exec -it frontend-pod -- sh");
    let mut child = Command::new("script")
        .args(["-qec", &script, "/dev/null"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    std::thread::sleep(Duration::from_secs(2));
    input
        .write_all(b"tty; stty size; echo $((6*7))-$HOSTNAME\n")
        .unwrap();
    std::thread::sleep(Duration::from_secs(1));
    input.write_all(b"exit 4\n").unwrap();
    let o = child.wait_with_output().unwrap();
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(4), "{out}");
    assert!(out.contains("/dev/pts/"), "{out}");
    assert!(out.contains("27 91"), "{out}");
    assert!(out.contains("42-frontend-pod"), "{out}");

    // Clear errors.
    let o = lab.kubectl(&["exec", "frontend-pod", "-c", "nope", "--", "true"]);
    assert!(!o.status.success());
    assert!(
        text(&o).contains("container nope is not valid for pod frontend-pod"),
        "{}",
        text(&o)
    );
    let o = lab.kubectl(&["exec", "no-such-pod", "--", "true"]);
    assert!(text(&o).contains("not found"), "{}", text(&o));
    wait_for(POD_WAIT, || {
        lab.pods()
            .get("done")
            .is_some_and(|p| p.phase == "Succeeded")
            .then_some(())
    })
    .expect("pod done Succeeded");
    let o = lab.kubectl(&["exec", "done", "--", "true"]);
    assert!(!o.status.success());
    assert!(text(&o).contains("completed pod"), "{}", text(&o));

    // `weft lab exec --host`: the lab's hosts, by name.
    let o = lab.lab(
        "exec",
        &[
            "--host",
            "external",
            "--",
            "weft",
            "probe",
            "tcp",
            "192.168.1.1:6443",
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("local=192.168.1.254:"), "{}", text(&o));
    for (host, addr) in [
        ("node-2", "192.168.1.3/24"),
        ("control-plane", "192.168.1.1/24"),
    ] {
        let o = lab.lab("exec", &["--host", host, "--", "ip", "-4", "-o", "addr"]);
        assert!(text(&o).contains(addr), "{host}: {}", text(&o));
    }
    let o = lab.lab("exec", &["--host", "node-1", "--", "sh", "-c", "exit 7"]);
    assert_eq!(o.status.code(), Some(7), "{}", text(&o));
    let o = lab.lab("exec", &["--host", "node-9", "--", "true"]);
    assert!(text(&o).contains("has no host \"node-9\""), "{}", text(&o));

    // The node API answers nobody without the token, from anywhere on the underlay.
    let root = format!("weft-{}", lab.name);
    for (auth, what) in [
        (None, "no token"),
        (Some("Authorization: Bearer not-the-token"), "a wrong token"),
    ] {
        for path in [
            "/exec/default/frontend-pod/app?command=id&stdout=true",
            "/containerLogs/default/frontend-pod/app",
            "/healthz",
        ] {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", &root, "curl", "-sk", "-o", "/dev/null"])
                .args(["-w", "%{http_code}"]);
            if let Some(h) = auth {
                c.args(["-H", h]);
            }
            let o = c
                .arg(format!("https://192.168.1.2:10250{path}"))
                .output()
                .unwrap();
            assert_eq!(stdout(&o), "401", "{path} with {what}: {}", text(&o));
        }
    }
}

/// The lines `child` prints on stdout until `done` says so or `limit` passes.
fn lines_until(
    child: &mut std::process::Child,
    limit: Duration,
    mut done: impl FnMut(&[String]) -> bool,
) -> Vec<String> {
    let out = child.stdout.take().expect("piped stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let deadline = Instant::now() + limit;
    let mut seen = Vec::new();
    while !done(&seen) && Instant::now() < deadline {
        if let Ok(l) = rx.recv_timeout(Duration::from_millis(200)) {
            seen.push(l);
        }
    }
    seen
}

/// `kubectl logs -f` until `want` shows up; the lines seen.
fn follow_until(lab: &Lab, args: &[&str], want: &str, limit: Duration) -> Vec<String> {
    let mut full = vec!["logs", "-f"];
    full.extend_from_slice(args);
    let mut child = kubectl(lab, &full)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let seen = lines_until(&mut child, limit, |seen| {
        seen.last().is_some_and(|l| l.contains(want))
    });
    let _ = child.kill();
    let _ = child.wait();
    seen
}

#[test]
fn kubectl_logs_tail_follow_timestamps_previous() {
    if !kubectl_available() {
        eprintln!("skipped: no kubectl");
        return;
    }
    let lab = Lab::up(2, "host-gw");
    // Counts once a second on stdout and stderr; the second container's first instance
    // ends after three lines, so that it is restarted and has a previous log.
    let marker = format!("/tmp/weft-once-{}", lab.name);
    let _ = std::fs::remove_file(&marker);
    lab.apply(&format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: talker}}\nspec:\n  nodeName: node-2\n  containers:\n  - name: count\n    image: sh\n    command: [sh, -c, 'i=0; while true; do i=$((i+1)); echo line $i; echo err $i >&2; sleep 1; done']\n  - name: once\n    image: sh\n    command: [sh, -c, 'if [ -e /tmp/weft-once-{lab} ]; then echo second run; sleep 1000; else touch /tmp/weft-once-{lab}; echo first run; exit 1; fi']\n",
        lab = lab.name
    ));
    lab.wait_running(&["talker"], POD_WAIT);
    std::thread::sleep(Duration::from_secs(4));

    let o = run(kubectl(
        &lab,
        &["logs", "talker", "-c", "count", "--tail", "2"],
    ));
    assert!(o.status.success(), "{}", text(&o));
    let lines: Vec<String> = stdout(&o).lines().map(String::from).collect();
    assert_eq!(lines.len(), 2, "{lines:?}");

    // Both streams, in order, each line with its time.
    let o = run(kubectl(
        &lab,
        &["logs", "talker", "-c", "count", "--timestamps"],
    ));
    let all = stdout(&o);
    assert!(all.contains("line 1\n") && all.contains("err 1\n"), "{all}");
    for l in all.lines() {
        let (ts, _) = l.split_once(' ').unwrap();
        assert!(ts.ends_with('Z') && ts.contains('T'), "{l}");
    }

    // --since leaves the old lines out.
    let o = run(kubectl(
        &lab,
        &["logs", "talker", "-c", "count", "--since", "2s"],
    ));
    assert!(!stdout(&o).contains("line 1\n"), "{}", stdout(&o));

    // -f follows lines written after it started.
    let last: u32 = lines
        .iter()
        .filter_map(|l| l.split_whitespace().nth(1)?.parse().ok())
        .max()
        .unwrap();
    let want = format!("line {}", last + 3);
    let seen = follow_until(
        &lab,
        &["talker", "-c", "count", "--tail", "1"],
        &want,
        Duration::from_secs(20),
    );
    assert!(seen.iter().any(|l| l == &want), "followed: {seen:?}");

    // attach: the container's output as it is written (from now on), both streams.
    let mut child = kubectl(&lab, &["attach", "talker", "-c", "count"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let attached = lines_until(&mut child, Duration::from_secs(15), |seen| seen.len() >= 2);
    let _ = child.kill();
    let o = child.wait_with_output().unwrap();
    assert!(
        attached.len() == 2 && attached.iter().all(|l| l.starts_with("line ")),
        "attached: {attached:?} {}",
        text(&o)
    );
    let n: u32 = attached[0][5..].parse().unwrap();
    assert!(n > last, "attach starts at the current end: {attached:?}");
    let o = run(kubectl(&lab, &["attach", "-i", "talker", "-c", "count"]));
    assert!(text(&o).contains("runs with stdin closed"), "{}", text(&o));

    // The restarted container: its log now, and the one before.
    let prev = wait_for(Duration::from_secs(30), || {
        let o = run(kubectl(
            &lab,
            &["logs", "talker", "-c", "once", "--previous"],
        ));
        o.status.success().then(|| stdout(&o))
    })
    .unwrap_or_else(|| panic!("no previous log\n{}", lab.logs()));
    assert_eq!(prev, "first run\n");
    let now = wait_for(Duration::from_secs(10), || {
        let o = run(kubectl(&lab, &["logs", "talker", "-c", "once"]));
        let s = stdout(&o);
        s.contains("second run").then_some(s)
    })
    .expect("the current instance's log");
    assert_eq!(now, "second run\n");
    let o = run(kubectl(
        &lab,
        &["logs", "talker", "-c", "count", "--previous"],
    ));
    assert!(!o.status.success());
    assert!(
        text(&o).contains("previous terminated container"),
        "{}",
        text(&o)
    );
    let _ = std::fs::remove_file(&marker);

    // The files are root's alone, in the CRI format.
    let dir = lab.dir().join("nodes/node-2/pods/pods");
    let uid = &lab.pods()["talker"].uid;
    let f = dir.join(uid).join("count.log");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&f).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "{}", f.display());
    let body = std::fs::read_to_string(&f).unwrap();
    // Each stream in its order (the two streams' lines may interleave either way).
    for (stream, text) in [("stdout", "line 1"), ("stderr", "err 1")] {
        let first = body
            .lines()
            .find(|l| l.split(' ').nth(1) == Some(stream))
            .unwrap();
        let parts: Vec<&str> = first.splitn(4, ' ').collect();
        assert_eq!(&parts[1..], [stream, "F", text], "{first}");
    }
}

#[test]
fn kubectl_describe_tells_the_story_with_events() {
    if !kubectl_available() {
        eprintln!("skipped: no kubectl");
        return;
    }
    let lab = Lab::up(2, "vxlan");
    // Scheduled by the control plane; its readiness probe fails (nothing on 9999).
    lab.apply(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: story, labels: {app: story}}\nspec:\n  containers:\n  - name: app\n    image: weft/serve\n    ports: [{containerPort: 8080}]\n    readinessProbe: {tcpSocket: {port: 9999}, periodSeconds: 1}\n---\napiVersion: v1\nkind: Service\nmetadata: {name: story}\nspec:\n  type: LoadBalancer\n  selector: {app: story}\n  ports: [{port: 80, targetPort: 8080}]\n",
    );
    let describe = |what: &[&str], want: &[&str]| -> String {
        let mut args = vec!["describe"];
        args.extend_from_slice(what);
        wait_for(Duration::from_secs(30), || {
            let o = run(kubectl(&lab, &args));
            let s = stdout(&o);
            want.iter().all(|w| s.contains(w)).then_some(s)
        })
        .unwrap_or_else(|| {
            let o = run(kubectl(&lab, &args));
            panic!("describe {what:?} lacks {want:?}:\n{}", text(&o))
        })
    };
    let pod = describe(
        &["pod", "story"],
        &["Scheduled", "AddedInterface", "Started", "Unhealthy"],
    );
    let info = lab.pods()["story"].clone();
    assert!(
        pod.contains(&format!(
            "Successfully assigned default/story to {}",
            info.node
        )),
        "{pod}"
    );
    assert!(pod.contains(&format!("Add eth0 [{}]", info.ip)), "{pod}");
    assert!(
        pod.contains("Readiness probe of container app failed"),
        "{pod}"
    );
    let svc = describe(&["svc", "story"], &["IPAllocated"]);
    assert!(svc.contains("Assigned IP [\"192.168.2."), "{svc}");

    // A pod its node refuses: the reason in its events, and exec says it does not run.
    lab.apply(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: refused}\nspec:\n  nodeName: node-1\n  hostNetwork: true\n  containers:\n  - {name: c, image: sh, command: [sleep, '100']}\n",
    );
    let refused = describe(&["pod", "refused"], &["FailedCreatePodSandBox"]);
    assert!(refused.contains("spec.hostNetwork"), "{refused}");
    let o = run(kubectl(&lab, &["exec", "refused", "--", "true"]));
    assert!(!o.status.success());
    assert!(
        text(&o).contains("pod default/refused is not running on this node"),
        "{}",
        text(&o)
    );

    // Repeats are counted, not multiplied.
    let o = run(kubectl(&lab, &["get", "events", "-o", "json"]));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let unhealthy: Vec<&serde_json::Value> = v["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["reason"] == "Unhealthy")
        .collect();
    assert_eq!(unhealthy.len(), 1, "{unhealthy:?}");

    // Deleting the pod: the kubelet's Killing.
    let o = run(kubectl(&lab, &["delete", "pod", "story", "--wait=false"]));
    assert!(o.status.success(), "{}", text(&o));
    let events = wait_for(Duration::from_secs(30), || {
        let o = run(kubectl(&lab, &["get", "events"]));
        let s = stdout(&o);
        s.contains("Killing").then_some(s)
    })
    .expect("a Killing event");
    assert!(events.contains("pod/story"), "{events}");
    assert!(events.contains("RegisteredNode"), "{events}");
}

/// A free port on the machine's loopback for kubectl to listen on.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `kubectl port-forward TARGET LOCAL:REMOTE` until it says it forwards; the child.
fn port_forward(lab: &Lab, target: &str, remote: u16) -> (std::process::Child, u16) {
    let local = free_port();
    let mut child = kubectl(lab, &["port-forward", target, &format!("{local}:{remote}")])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next().and_then(Result::ok).unwrap_or_default();
    assert!(
        first.starts_with("Forwarding from"),
        "port-forward {target}: {first:?}"
    );
    std::thread::spawn(move || for _ in lines {});
    (child, local)
}

#[test]
fn kubectl_port_forward_pod_and_service() {
    if !kubectl_available() {
        eprintln!("skipped: no kubectl");
        return;
    }
    let lab = Lab::up(2, "vxlan");
    lab.apply(&echo_pod("echo", "node-2"));
    lab.apply(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: web, labels: {app: web}}\nspec:\n  nodeName: node-1\n  containers:\n  - name: app\n    image: weft/serve\n    ports: [{containerPort: 8000, name: http}]\n---\napiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec:\n  selector: {app: web}\n  ports: [{port: 80, targetPort: 8000}]\n",
    );
    lab.wait_running(&["echo", "web"], POD_WAIT);

    // pod/NAME: several connections at once, each echoed by the pod, which sees them
    // come from its own loopback.
    let (mut pf, local) = port_forward(&lab, "pod/echo", 8080);
    let weft = lab_support::weft();
    let probes: Vec<std::process::Child> = (0..6)
        .map(|_| {
            Command::new(weft)
                .args(["probe", "tcp", &format!("127.0.0.1:{local}")])
                .stdout(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for p in probes {
        let o = p.wait_with_output().unwrap();
        let line = stdout(&o);
        assert!(o.status.success(), "{line}");
        assert_eq!(field(&line, "server"), Some("echo"), "{line}");
        assert_eq!(field(&line, "pod"), Some("default/echo"), "{line}");
    }
    // A bigger exchange, both ways, through one connection.
    {
        use std::io::Read;
        let mut c = std::net::TcpStream::connect(("127.0.0.1", local)).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let line = format!("{}\n", "x".repeat(200_000));
        c.write_all(line.as_bytes()).unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 65536];
        while !got.ends_with(b"\n") {
            let n = c.read(&mut buf).unwrap();
            assert!(n > 0, "closed after {} bytes", got.len());
            got.extend_from_slice(&buf[..n]);
        }
        assert!(got.len() >= 200_000, "{}", got.len());
    }
    let _ = pf.kill();
    let _ = pf.wait();

    // svc/NAME: kubectl picks a pod behind the Service and its target port; HTTP through.
    let (mut pf, local) = port_forward(&lab, "svc/web", 80);
    let o = Command::new(weft)
        .args([
            "probe",
            "http",
            &format!("http://127.0.0.1:{local}/through"),
        ])
        .output()
        .unwrap();
    let line = stdout(&o);
    assert!(o.status.success(), "{line}");
    assert_eq!(field(&line, "status"), Some("200"), "{line}");
    assert_eq!(field(&line, "path"), Some("/through"), "{line}");
    let _ = pf.kill();
    let _ = pf.wait();

    // A port nothing listens on: kubectl reports the pod's refusal.
    let (pf, local) = port_forward(&lab, "pod/echo", 9999);
    let _ = std::net::TcpStream::connect(("127.0.0.1", local));
    let o = {
        let mut pf = pf;
        std::thread::sleep(Duration::from_secs(2));
        let _ = pf.kill();
        pf.wait_with_output().unwrap()
    };
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("error forwarding port 9999 to pod default/echo") && err.contains("refused"),
        "{err}"
    );
}
