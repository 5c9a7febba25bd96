//! `weft lab ...`: the lab's commands. The network is built by weft-lab; the programs
//! (control plane, one agent per node) run under a detached supervisor, so the lab lives on
//! after `lab up` returns and `lab down` stops it.

use anyhow::{bail, Context, Result};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};
use weft_lab::supervise::{self, ProcSpec};
use weft_lab::{LabSpec, LabState};

const API_PORT: u16 = 6443;

pub fn kubeconfig_path(name: &str) -> PathBuf {
    weft_lab::lab_dir(name).join("kubeconfig")
}

fn internal_kubeconfig(dir: &Path) -> PathBuf {
    dir.join("kubeconfig.internal")
}

fn progress(msg: &str) {
    println!("  {msg}");
}

/// The nice value of a lab node's agent, and so of everything the node runs (its CNI
/// plugin, its pods). A real cluster's nodes are machines of their own: a thousand pods
/// starting on them take no CPU from the API server. A lab's nodes share the machine's
/// cores with its control plane, and their pod start-ups and teardowns would otherwise
/// take the CPU the API server needs to answer while they happen (see BENCHMARKS.md,
/// kubectl). At nice 10 the control plane (nice 0) comes first when both want a core;
/// the nodes still get every core it leaves idle.
const NODE_NICE: i32 = 10;

/// The programs the supervisor keeps running for a lab; `api_fd` is the listener on the
/// machine's loopback that the control plane serves on besides its own address.
pub fn programs(state: &LabState, weft: &Path, api_fd: Option<i32>) -> Vec<ProcSpec> {
    let dir = weft_lab::lab_dir(&state.spec.name);
    let t = &state.topology;
    let w = weft.display().to_string();
    let mut v = vec![ProcSpec {
        name: "control-plane".into(),
        netns: t.root_netns.clone(),
        argv: vec![
            w.clone(),
            "control-plane".into(),
            "--data-dir".into(),
            dir.join("control-plane").display().to_string(),
            "--listen".into(),
            format!("{}:{API_PORT}", t.gateway.addr()),
            "--cluster-cidr".into(),
            state.spec.cluster_cidr.to_string(),
            "--service-cidr".into(),
            state.spec.service_cidr.to_string(),
            "--load-balancer-cidr".into(),
            state.spec.load_balancer_cidr.to_string(),
            "--kubeconfig-out".into(),
            internal_kubeconfig(&dir).display().to_string(),
        ]
        .into_iter()
        .chain(api_fd.map(|fd| format!("--listen-fd={fd}")))
        .collect(),
        inherit_fds: api_fd.into_iter().collect(),
        nice: 0,
    }];
    for n in &t.nodes {
        v.push(ProcSpec {
            name: format!("agent-{}", n.name),
            netns: n.netns.clone(),
            argv: vec![
                w.clone(),
                "agent".into(),
                "--kubeconfig".into(),
                internal_kubeconfig(&dir).display().to_string(),
                "--node-name".into(),
                n.name.clone(),
                "--node-ip".into(),
                n.addr.addr().to_string(),
                "--backend".into(),
                state.spec.backend.clone(),
                "--state-dir".into(),
                dir.join("nodes").join(&n.name).display().to_string(),
                "--netns-prefix".into(),
                weft_lab::Topology::pod_netns_prefix(n),
                "--cluster-cidr".into(),
                state.spec.cluster_cidr.to_string(),
                "--cluster-dns".into(),
                state.spec.cluster_dns.to_string(),
                "--serve-dns".into(),
                "--ingress".into(),
                // Denied packets counted per policy (`weft lab policy counters`).
                "--policy-nflog-group".into(),
                LAB_POLICY_NFLOG_GROUP.to_string(),
            ]
            .into_iter()
            .chain(
                state
                    .spec
                    .dns_upstreams
                    .iter()
                    .flat_map(|u| ["--dns-upstream".to_string(), u.to_string()]),
            )
            .collect(),
            inherit_fds: Vec::new(),
            nice: NODE_NICE,
        });
    }
    v
}

/// The nflog group a lab's agents log denied packets to (any free group would do).
const LAB_POLICY_NFLOG_GROUP: u16 = 14;

pub fn up(name: &str, nodes: u32, backend: &str, file: Option<&str>) -> Result<()> {
    let mut spec = LabSpec::new(name, nodes, backend);
    if let Some(f) = file {
        spec = read_spec(f, spec)?;
    }
    let started = Instant::now();
    println!(
        "weft lab up: {} ({} nodes, {})",
        spec.name, spec.nodes, spec.backend
    );
    let state = weft_lab::up(&spec, &mut progress)?;
    let dir = weft_lab::lab_dir(name);
    let weft = std::env::current_exe().context("find the weft binary")?;
    let logs = dir.join("logs");
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&logs)
        .with_context(|| format!("create {}", logs.display()))?;
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(logs.join("supervisor.log"))?;
    let mut cmd = std::process::Command::new(&weft);
    cmd.args(["lab", "supervise", "--name", name])
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .process_group(0);
    let child = cmd.spawn().context("start the lab supervisor")?;
    weft_lab::access::write_private(
        &supervise::pid_file(&dir),
        child.id().to_string().as_bytes(),
        None,
    )?;
    progress(&format!(
        "supervisor pid {} (logs in {})",
        child.id(),
        logs.display()
    ));
    if let Err(e) = wait_ready(&state, started) {
        eprintln!("weft lab up: {e:#}; the lab stays up for inspection: `weft lab status --name {name}`, logs in {}", logs.display());
        return Err(e);
    }
    println!(
        "lab {name} is up in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    println!("  export KUBECONFIG={}", kubeconfig_path(name).display());
    println!("  kubectl get nodes -o wide");
    Ok(())
}

fn read_spec(file: &str, mut spec: LabSpec) -> Result<LabSpec> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields, rename_all = "camelCase")]
    struct LabFile {
        nodes: Option<u32>,
        backend: Option<String>,
        underlay: Option<String>,
        #[serde(rename = "clusterCIDR")]
        cluster_cidr: Option<String>,
        #[serde(rename = "serviceCIDR")]
        service_cidr: Option<String>,
        #[serde(rename = "loadBalancerCIDR")]
        load_balancer_cidr: Option<String>,
        #[serde(rename = "dnsUpstreams")]
        dns_upstreams: Option<Vec<String>>,
    }
    let text = std::fs::read_to_string(file).with_context(|| format!("read {file}"))?;
    let f: LabFile = serde_yaml::from_str(&text).with_context(|| {
        format!("{file}: not a lab file (keys: nodes, backend, underlay, clusterCIDR, serviceCIDR, loadBalancerCIDR, dnsUpstreams)")
    })?;
    let cidr = |field: &str, v: &str| -> Result<ipnet::Ipv4Net> {
        v.parse()
            .with_context(|| format!("{file}: {field}: {v:?} is not an IPv4 CIDR"))
    };
    if let Some(n) = f.nodes {
        spec.nodes = n;
    }
    if let Some(b) = f.backend {
        spec.backend = b;
    }
    if let Some(u) = f.underlay {
        spec.underlay = cidr("underlay", &u)?;
    }
    if let Some(c) = f.cluster_cidr {
        spec.cluster_cidr = cidr("clusterCIDR", &c)?;
    }
    if let Some(s) = f.service_cidr {
        spec.service_cidr = cidr("serviceCIDR", &s)?;
        // The control plane puts kube-dns at the range's tenth address.
        spec.cluster_dns = (u32::from(spec.service_cidr.network()) + 10).into();
    }
    for u in f.dns_upstreams.into_iter().flatten() {
        let addr = match u.parse::<std::net::SocketAddr>() {
            Ok(a) => a,
            Err(_) => std::net::SocketAddr::new(
                u.parse()
                    .with_context(|| format!("{file}: dnsUpstreams: {u:?} is not IP or IP:PORT"))?,
                53,
            ),
        };
        spec.dns_upstreams.push(addr);
    }
    if let Some(l) = f.load_balancer_cidr {
        spec.load_balancer_cidr = cidr("loadBalancerCIDR", &l)?;
    }
    Ok(spec)
}

/// Waits for the host kubeconfig and every node Ready, printing what it waits for.
fn wait_ready(state: &LabState, started: Instant) -> Result<()> {
    let name = &state.spec.name;
    let deadline = started + Duration::from_secs(90);
    let kc = kubeconfig_path(name);
    while !kc.exists() {
        if Instant::now() > deadline {
            bail!("the control plane did not come up");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    progress("control plane answering");
    let want = state.topology.nodes.len();
    let ready = crate::kube::wait_nodes_ready(&kc, want, deadline, &mut |n| {
        progress(&format!("{n}/{want} nodes Ready"))
    })?;
    if ready < want {
        bail!("only {ready}/{want} nodes became Ready");
    }
    Ok(())
}

/// The hidden `lab supervise`: keeps the lab's programs running, and holds the API's
/// listener on the machine's loopback.
///
/// The listener is bound here, in the machine's namespace, and the control plane (in the
/// lab's) inherits it and accepts on it directly: a socket stays in the namespace it was
/// made in, whoever uses it. So kubectl on the machine talks to the API server with no
/// relay in between, nothing is added to the machine's network but this one loopback
/// socket, and connections made while the control plane restarts wait in the backlog.
pub fn supervise(name: &str) -> Result<()> {
    use std::os::fd::AsRawFd;
    let state = weft_lab::load(name)?;
    let dir = weft_lab::lab_dir(name);
    let weft = std::env::current_exe()?;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("bind the API listener")?;
    let port = listener.local_addr()?.port();
    let target = std::net::SocketAddr::new(state.topology.gateway.addr().into(), API_PORT);
    let (internal, host) = (internal_kubeconfig(&dir), kubeconfig_path(name));
    let owner = state.owner;
    std::thread::spawn(move || {
        // Once the control plane wrote its kubeconfig, publish the host's copy: it holds
        // the admin token, so it is 0600 and belongs to the user who ran `lab up`.
        for _ in 0..6000 {
            if let Ok(text) = std::fs::read_to_string(&internal) {
                let rewritten = text.replace(&target.to_string(), &format!("127.0.0.1:{port}"));
                match weft_lab::access::write_private(&host, rewritten.as_bytes(), owner) {
                    Ok(()) => return,
                    Err(e) => eprintln!("weft lab supervise: publishing the kubeconfig: {e}"),
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    });
    supervise::run(programs(&state, &weft, Some(listener.as_raw_fd())), &dir)?;
    drop(listener);
    Ok(())
}

pub fn down(name: &str) -> Result<()> {
    let dir = weft_lab::lab_dir(name);
    weft_lab::load(name)?;
    unmerge(name);
    if let Some(pid) = std::fs::read_to_string(supervise::pid_file(&dir))
        .ok()
        .and_then(|s| s.trim().parse::<i32>().ok())
    {
        // SAFETY: signalling the supervisor recorded by `lab up`.
        unsafe {
            libc::kill(pid, libc::SIGTERM);
            // A stopped supervisor (SIGSTOP) must wake up to act on it.
            libc::kill(pid, libc::SIGCONT);
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while Path::new(&format!("/proc/{pid}")).exists() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        unsafe {
            libc::kill(pid, libc::SIGKILL);
        }
    }
    let removed = weft_lab::down(name, &mut progress)?;
    println!("lab {name} is down ({} namespaces removed)", removed.len());
    Ok(())
}

pub fn status(name: &str) -> Result<()> {
    let state = weft_lab::load(name)?;
    let dir = weft_lab::lab_dir(name);
    println!(
        "lab {name}: {} nodes, backend {}, underlay {}",
        state.spec.nodes, state.spec.backend, state.spec.underlay
    );
    let existing = weft_netlink::Netns::list_named()?;
    let mark = |ns: &str| {
        if existing.iter().any(|n| n == ns) {
            "ok"
        } else {
            "MISSING"
        }
    };
    println!("{:<14} {:<28} {:<18} NETNS", "HOST", "NAMESPACE", "ADDRESS");
    for h in state.topology.hosts() {
        println!(
            "{:<14} {:<28} {:<18} {}",
            h.name,
            h.netns,
            h.addr,
            mark(&h.netns)
        );
    }
    match supervise::read_status(&dir) {
        Some(s) => {
            println!(
                "\n{:<16} {:<8} {:<8} {:<9} LAST EXIT",
                "PROCESS", "PID", "STATE", "RESTARTS"
            );
            for p in s.procs {
                let pid = p.pid.map(|p| p.to_string()).unwrap_or_else(|| "-".into());
                let st = if p.running { "running" } else { "down" };
                println!(
                    "{:<16} {:<8} {:<8} {:<9} {}",
                    p.name,
                    pid,
                    st,
                    p.restarts,
                    p.last_exit.unwrap_or_default()
                );
            }
        }
        None => println!("\nsupervisor: no status yet"),
    }
    crate::lab_sync::print(name, &state);
    println!("\nkubeconfig: {}", kubeconfig_path(name).display());
    println!(
        "logs:       {}/ (agent-node-K.log: routes, Services, DNS, policy, the Ingress access log)",
        weft_lab::lab_dir(name).join("logs").display()
    );
    Ok(())
}

pub fn kubeconfig(name: &str, merge: bool, file: Option<PathBuf>) -> Result<()> {
    weft_lab::load(name)?;
    if !merge {
        println!("{}", kubeconfig_path(name).display());
        return Ok(());
    }
    let target = match file {
        Some(f) => f,
        None => crate::kubeconfig::default_target()?,
    };
    let lab = std::fs::read_to_string(kubeconfig_path(name))
        .with_context(|| format!("read {}", kubeconfig_path(name).display()))?;
    let context = crate::kubeconfig::context_name(name);
    let merged = crate::kubeconfig::merge(&read_or_empty(&target)?, &lab, &context)
        .with_context(|| format!("merge into {}", target.display()))?;
    write_user_file(&target, &merged)?;
    let dir = weft_lab::lab_dir(name);
    weft_lab::access::write_private(
        &crate::kubeconfig::record_path(&dir),
        target.display().to_string().as_bytes(),
        None,
    )?;
    println!("lab {name} is context {context} in {}", target.display());
    println!("  kubectl --context {context} get nodes");
    Ok(())
}

fn read_or_empty(path: &Path) -> Result<String> {
    match std::fs::read_to_string(path) {
        Ok(s) => Ok(s),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
        Err(e) => Err(e).with_context(|| format!("read {}", path.display())),
    }
}

/// Writes a file of the user's (0600): it keeps its owner, and a new one (and a new
/// `~/.kube`) belongs to the user who ran weft, through sudo or not.
fn write_user_file(path: &Path, body: &str) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    let owner = match std::fs::metadata(path) {
        Ok(m) => weft_lab::access::Owner {
            uid: m.uid(),
            gid: m.gid(),
        },
        Err(_) => weft_lab::access::Owner::invoking(),
    };
    if let Some(parent) = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty() && !p.exists())
    {
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(parent)
            .with_context(|| format!("create {}", parent.display()))?;
        std::os::unix::fs::chown(parent, Some(owner.uid), Some(owner.gid))
            .with_context(|| format!("chown {}", parent.display()))?;
    }
    weft_lab::access::write_private(path, body.as_bytes(), Some(owner))?;
    Ok(())
}

/// Takes the lab's context out of the kubeconfig it was merged into, if it was.
fn unmerge(name: &str) {
    let record = crate::kubeconfig::record_path(&weft_lab::lab_dir(name));
    let Ok(target) = std::fs::read_to_string(&record) else {
        return;
    };
    let target = PathBuf::from(target.trim());
    let context = crate::kubeconfig::context_name(name);
    let done = read_or_empty(&target)
        .and_then(|cur| crate::kubeconfig::remove(&cur, &context))
        .and_then(|body| write_user_file(&target, &body));
    match done {
        Ok(()) => println!("  removed context {context} from {}", target.display()),
        Err(e) => eprintln!(
            "weft lab down: removing context {context} from {}: {e:#}",
            target.display()
        ),
    }
}

/// `lab apply/get/delete` hand the work to kubectl against the lab's kubeconfig: the lab is
/// driven with ordinary Kubernetes tooling.
pub fn kubectl(name: &str, args: &[String]) -> Result<u8> {
    weft_lab::load(name)?;
    let status = std::process::Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(kubeconfig_path(name))
        .args(args)
        .status()
        .context("run kubectl (is it installed?)")?;
    Ok(status.code().unwrap_or(1) as u8)
}
