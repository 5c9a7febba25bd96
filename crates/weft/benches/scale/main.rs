//! The control plane at kube-proxy scale, in a lab (project issue 11). Run by
//! `scripts/bench-scale.sh`, which brings the lab up and down; this program runs inside
//! the lab's root network namespace (`weft lab exec --host control-plane`) and talks to
//! the API server at its own address with kube-rs, one request in flight by default:
//!
//! 1. endpoint pods (echo servers, groups of ten), created and waited for until Running;
//! 2. Services, each selecting one group (ten endpoints), created one by one: the rate of
//!    each block of 1,000;
//! 3. pods no node may run (a nodeSelector nothing matches): Pending, yet listed and
//!    watched by every agent; rate per 1,000;
//! 4. from the last create until every node's `ip weft-proxy` table, read from the kernel,
//!    holds every Service's key and all ten endpoints of each;
//! 5. control-plane resident memory and store size; one fresh client per node lists
//!    every Service and EndpointSlice at once (agents starting) while another client's
//!    small reads are timed, against the same reads alone (watchers.rs);
//! 6. a restart of the control plane (SIGTERM, the supervisor starts it again): the time
//!    until it serves, and until a Service created then is in every node's table with its
//!    endpoints.
//!
//! Knobs (environment): WEFT_SCALE_LAB and WEFT_STATE_DIR (the lab; required),
//! WEFT_SCALE_SERVICES (30000), WEFT_SCALE_ENDPOINT_PODS (300), WEFT_SCALE_IDLE_PODS
//! (10000), WEFT_SCALE_INFLIGHT (1), WEFT_SCALE_SYNC_LIMIT seconds (600).

mod create;
mod lab;
mod objects;
mod tables;
mod watchers;

use std::collections::HashSet;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Namespace, Pod, Service};
use kube::api::ListParams;
use kube::{Api, Client};

fn knob(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

async fn client(kubeconfig: &std::path::Path) -> Result<Client, String> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let kc = kube::config::Kubeconfig::read_from(kubeconfig)
        .map_err(|e| format!("{}: {e}", kubeconfig.display()))?;
    let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .map_err(|e| format!("kubeconfig: {e}"))?;
    Client::try_from(cfg).map_err(|e| format!("client: {e}"))
}

fn cluster_ip(s: &Service) -> Option<Ipv4Addr> {
    s.spec.as_ref()?.cluster_ip.as_deref()?.parse().ok()
}

async fn wait_running(pods: &Api<Pod>, want: usize, limit: Duration) -> Result<(), String> {
    let deadline = Instant::now() + limit;
    let lp = ListParams::default().labels("bench=ep");
    loop {
        let list = pods
            .list(&lp)
            .await
            .map_err(|e| format!("list pods: {e}"))?;
        let running = list
            .items
            .iter()
            .filter(|p| {
                p.status
                    .as_ref()
                    .is_some_and(|s| s.phase.as_deref() == Some("Running") && s.pod_ip.is_some())
            })
            .count();
        if running >= want {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!(
                "{running} of {want} endpoint pods Running after {limit:?}"
            ));
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Prints each node's time from `since` to a complete table; the slowest.
fn report_sync(
    what: &str,
    since: Instant,
    found: &[(String, Option<Instant>, tables::Found)],
    want: usize,
) -> Option<Duration> {
    let mut worst = Some(Duration::ZERO);
    for (node, at, f) in found {
        match at {
            Some(t) => {
                let d = t.saturating_duration_since(since);
                println!(
                    "  {node}: {what} {:.2} s ({} Services complete, backends map {} elements; that read with the map took {:.2} s)",
                    d.as_secs_f64(),
                    f.complete,
                    f.backends_elements,
                    f.read_time.as_secs_f64()
                );
                worst = worst.map(|w| w.max(d));
            }
            None => {
                println!(
                    "  {node}: NOT complete: {} of {want} keyed, {} complete",
                    f.keyed, f.complete
                );
                worst = None;
            }
        }
    }
    worst
}

async fn run() -> Result<(), String> {
    let name = std::env::var("WEFT_SCALE_LAB").map_err(|_| "set WEFT_SCALE_LAB")?;
    let state = std::env::var("WEFT_STATE_DIR").map_err(|_| "set WEFT_STATE_DIR")?;
    let lab = lab::LabDir::new(std::path::Path::new(&state), &name);
    let n_services = knob("WEFT_SCALE_SERVICES", 30_000);
    let n_ep = knob("WEFT_SCALE_ENDPOINT_PODS", 300);
    let n_idle = knob("WEFT_SCALE_IDLE_PODS", 10_000);
    let inflight = knob("WEFT_SCALE_INFLIGHT", 1);
    let sync_limit = Duration::from_secs(knob("WEFT_SCALE_SYNC_LIMIT", 600) as u64);
    let groups = n_ep / objects::GROUP;
    if groups == 0 {
        return Err(format!("at least {} endpoint pods", objects::GROUP));
    }
    let client = client(&lab.kubeconfig()).await?;
    let pods: Api<Pod> = Api::default_namespaced(client.clone());
    let services: Api<Service> = Api::default_namespaced(client.clone());
    let nodes = lab.nodes()?;
    println!(
        "scale bench: lab {name}, {} nodes, {n_ep} endpoint pods, {n_services} Services, {n_idle} idle pods, {inflight} in flight; load {}",
        nodes.len(),
        lab::loadavg()
    );

    println!("  CPU s so far: {}", lab.cpu_line());
    let mem0 = lab::mem_available_mib();
    let t = Instant::now();
    let (_, r) = create::create(
        &pods,
        "endpoint pods",
        n_ep,
        inflight,
        objects::endpoint_pod,
    )
    .await?;
    r.print();
    wait_running(&pods, n_ep, Duration::from_secs(900)).await?;
    println!("  CPU s so far: {}", lab.cpu_line());
    // Let the pods' processes settle before reading the machine's free memory.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mem1 = lab::mem_available_mib();
    println!(
        "  {n_ep} endpoint pods Running {:.1} s after the first create; load {}",
        t.elapsed().as_secs_f64(),
        lab::loadavg()
    );
    if let (Some(a), Some(b)) = (mem0, mem1) {
        println!(
            "  machine's MemAvailable fell by {:.0} MiB: {:.1} MiB per running pod",
            a - b,
            (a - b) / n_ep as f64
        );
    }

    let (created, svc_rates) = create::create(&services, "Services", n_services, inflight, |i| {
        objects::service(i, groups)
    })
    .await?;
    println!("  CPU s so far: {}", lab.cpu_line());
    svc_rates.print();
    println!("  load {}", lab::loadavg());
    let want: HashSet<Ipv4Addr> = created.iter().filter_map(cluster_ip).collect();
    if want.len() != n_services {
        return Err(format!(
            "{} distinct cluster IPs for {n_services} Services",
            want.len()
        ));
    }

    let (_, idle_rates) =
        create::create(&pods, "idle pods", n_idle, inflight, objects::idle_pod).await?;
    println!("  CPU s so far: {}", lab.cpu_line());
    idle_rates.print();
    let last_create = idle_rates.last.max(svc_rates.last);
    println!("  load {}", lab::loadavg());

    let found = tables::wait_all(&nodes, &want, sync_limit);
    let worst = report_sync("complete", last_create, &found, want.len());
    match worst {
        Some(w) => println!(
            "== last create -> every node's table complete: {:.2} s (goal < 5 s); load {}",
            w.as_secs_f64(),
            lab::loadavg()
        ),
        None => println!("== some node's table was not complete within {sync_limit:?}"),
    }

    println!("  CPU s so far: {}", lab.cpu_line());
    let cp = lab.pid("control-plane").ok_or("no control-plane process")?;
    println!(
        "== control plane at this size: RSS {:.0} MiB, store {:.1} MiB on disk",
        lab::rss_mib(cp).unwrap_or(f64::NAN),
        lab.store_bytes() as f64 / 1048576.0
    );
    for (node, _) in &nodes {
        if let Some(p) = lab.pid(&format!("agent-{node}")) {
            println!(
                "  agent {node}: RSS {:.0} MiB",
                lab::rss_mib(p).unwrap_or(f64::NAN)
            );
        }
    }

    watchers::measure(&lab.kubeconfig(), nodes.len()).await?;
    restart(&lab, cp, &services, &nodes, groups, sync_limit).await
}

/// SIGTERM to the control plane; the supervisor starts a new one. Times until the new
/// one answers a list, and until a Service created then is in every node's table.
async fn restart(
    lab: &lab::LabDir,
    old: u32,
    services: &Api<Service>,
    nodes: &[(String, std::path::PathBuf)],
    groups: usize,
    limit: Duration,
) -> Result<(), String> {
    let namespaces: Api<Namespace> = Api::all(services.clone().into_client());
    let t0 = Instant::now();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(old as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .map_err(|e| format!("kill control plane {old}: {e}"))?;
    let lp = ListParams::default().limit(1);
    let new = loop {
        if t0.elapsed() > limit {
            return Err("the control plane did not come back".into());
        }
        if let Some(p) = lab.pid("control-plane").filter(|p| *p != old) {
            if namespaces.list(&lp).await.is_ok() {
                break p;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let serving = t0.elapsed();
    println!(
        "== control-plane restart at this size: serving again {:.2} s after SIGTERM (the supervisor restarts after 0.2 s); RSS {:.0} MiB",
        serving.as_secs_f64(),
        lab::rss_mib(new).unwrap_or(f64::NAN)
    );
    let t1 = Instant::now();
    let mut probe = objects::service(0, groups);
    probe.metadata.name = Some("after-restart".into());
    let probe = services
        .create(&Default::default(), &probe)
        .await
        .map_err(|e| format!("create the probe Service: {e}"))?;
    let ip = cluster_ip(&probe).ok_or("the probe Service has no cluster IP")?;
    let found = tables::wait_all(nodes, &HashSet::from([ip]), limit);
    match report_sync("probe Service complete", t1, &found, 1) {
        Some(w) => println!(
            "== after the restart, a new Service in every node's table {:.2} s after its create ({:.2} s after SIGTERM); load {}",
            w.as_secs_f64(),
            (t1 - t0 + w).as_secs_f64(),
            lab::loadavg()
        ),
        None => println!("== the probe Service did not reach every node within {limit:?}"),
    }
    Ok(())
}

fn main() {
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("scale bench: runtime: {e}");
            std::process::exit(1);
        }
    };
    if let Err(e) = rt.block_on(run()) {
        eprintln!("scale bench: {e}");
        std::process::exit(1);
    }
}
