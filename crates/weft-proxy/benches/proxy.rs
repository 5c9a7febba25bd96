//! Service sync: weft-proxy against kube-proxy's nftables mode, same Services, same
//! namespace, same run.
//!
//! kube-proxy (Go) cannot be built here, and its sync time is mostly the
//! `nft` CLI. So the peer is what kube-proxy's nftables mode hands to `nft -f`: its table
//! (KEP-3866: a `service-ips` verdict map, a chain per service and one per endpoint, `numgen`
//! over a vmap) and, for a change, its partial-sync transaction. Only that `nft -f` is
//! timed for the peer: kube-proxy's own Go work is left out, in its favour. For weft the
//! time is everything its agent does with the watch event(s) of a change: the objects
//! handed to its controller, the Service they touch compiled into the model, and the
//! model's delta sent over netlink as one transaction. A full sync lists and compiles
//! every object (k8s-openapi Services and EndpointSlices).
//!
//! Three paths per size: a full sync into an empty namespace, adding one Service, and
//! moving one endpoint of an existing Service. Medians over the runs, the ratio peer/weft.
//!
//! Run: `cargo bench -p weft-proxy --bench proxy` (as root, nftables installed).
//! `WEFT_BENCH_SIZES=1000,10000` and `WEFT_BENCH_RUNS=5` override the defaults.

use std::io::Write;
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde_json::json;
use weft_proxy::controller::Controller;
use weft_proxy::{Model, NodeContext, Proxier};

const ENDPOINTS: usize = 5;

struct Netns(String);

impl Netns {
    fn new(tag: &str) -> Netns {
        let name = format!("weft-bench-proxy-{tag}-{}", std::process::id());
        let ok = Command::new("ip").args(["netns", "add", &name]).status();
        assert!(matches!(ok, Ok(s) if s.success()), "ip netns add {name}");
        Netns(name)
    }

    fn path(&self) -> std::path::PathBuf {
        format!("/run/netns/{}", self.0).into()
    }

    /// `nft -f -` inside the namespace, timed from spawn to exit.
    fn nft(&self, script: &str) -> Duration {
        let t0 = Instant::now();
        let mut child = Command::new("ip")
            .args(["netns", "exec", &self.0, "nft", "-f", "-"])
            .stdin(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn nft");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(script.as_bytes())
            .expect("write script");
        let out = child.wait_with_output().expect("nft");
        let took = t0.elapsed();
        assert!(
            out.status.success(),
            "nft -f failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        took
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

fn service_ip(i: usize) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 96, 0, 0)) + 10 + i as u32)
}

fn endpoint_ip(i: usize, j: usize, generation: usize) -> Ipv4Addr {
    let n = (i * ENDPOINTS + j) as u32 + generation as u32 * 7_000_000;
    Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 128, 0, 0)) + n % (1 << 22))
}

static VERSION: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// A fresh resourceVersion, as the API server stamps every write.
fn rv() -> String {
    VERSION
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        .to_string()
}

fn k8s_service(i: usize) -> Service {
    serde_json::from_value(json!({
        "metadata": {"name": format!("svc-{i}"), "namespace": "bench", "resourceVersion": rv()},
        "spec": {"clusterIP": service_ip(i).to_string(),
                 "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}
    }))
    .expect("service")
}

fn k8s_slice(i: usize, generation: &[usize]) -> EndpointSlice {
    let eps: Vec<_> = (0..ENDPOINTS)
        .map(|j| json!({"addresses": [endpoint_ip(i, j, generation[j]).to_string()], "nodeName": "node-1"}))
        .collect();
    serde_json::from_value(json!({
        "metadata": {"name": format!("svc-{i}-1"), "namespace": "bench", "resourceVersion": rv(),
                     "labels": {"kubernetes.io/service-name": format!("svc-{i}")}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        "endpoints": eps,
    }))
    .expect("slice")
}

struct Cluster {
    services: Vec<Service>,
    slices: Vec<EndpointSlice>,
}

impl Cluster {
    fn new(n: usize) -> Cluster {
        Cluster {
            services: (0..n).map(k8s_service).collect(),
            slices: (0..n).map(|i| k8s_slice(i, &[0; ENDPOINTS])).collect(),
        }
    }

    /// A full sync: every object listed, compiled and sent (an agent's start).
    fn sync(&self, c: &mut Controller, p: &mut Proxier) -> Duration {
        let t0 = Instant::now();
        c.update(&self.services, &self.slices);
        p.apply(&mut c.model).expect("weft sync");
        t0.elapsed()
    }
}

/// What weft's agent does with the watch events of one change: the objects handed to its
/// controller, the Service they touch recompiled, the delta sent.
fn on_event(
    c: &mut Controller,
    p: &mut Proxier,
    svc: Option<&Service>,
    slice: &EndpointSlice,
) -> Duration {
    let t0 = Instant::now();
    if let Some(s) = svc {
        c.apply_service(std::sync::Arc::new(s.clone()));
    }
    c.apply_slice(std::sync::Arc::new(slice.clone()));
    c.flush();
    p.apply(&mut c.model).expect("weft sync");
    t0.elapsed()
}
/// kube-proxy's names: `service-<hash>-<ns>/<name>/tcp/<port>`, and
/// `endpoint-<hash>-<ns>/<name>/tcp/<port>__<ip>/<port>` (the hash keeps them unique).
fn svc_chain(i: usize) -> String {
    format!("service-{i:08X}-bench/svc-{i}/tcp/http")
}

fn ep_chain(i: usize, ip: Ipv4Addr) -> String {
    format!("endpoint-{i:08X}-bench/svc-{i}/tcp/http__{ip}/8080")
}

/// The chains and rules of one service, as kube-proxy's sync writes them.
fn kube_proxy_service(i: usize, gens: &[usize], out: &mut String) {
    let vip = service_ip(i);
    let eps: Vec<Ipv4Addr> = (0..ENDPOINTS).map(|j| endpoint_ip(i, j, gens[j])).collect();
    let sc = svc_chain(i);
    out.push_str(&format!(
        "add chain ip kube-proxy {sc}\nflush chain ip kube-proxy {sc}\n"
    ));
    out.push_str(&format!(
        "add rule ip kube-proxy {sc} ip daddr {vip} tcp dport 80 ip saddr != 10.244.0.0/16 jump mark-for-masquerade\n"
    ));
    let vmap: Vec<String> = eps
        .iter()
        .enumerate()
        .map(|(j, ip)| format!("{j} : goto {}", ep_chain(i, *ip)))
        .collect();
    for ip in &eps {
        let ec = ep_chain(i, *ip);
        out.push_str(&format!(
            "add chain ip kube-proxy {ec}\nflush chain ip kube-proxy {ec}\n"
        ));
        out.push_str(&format!(
            "add rule ip kube-proxy {ec} ip saddr {ip} jump mark-for-masquerade\n"
        ));
        out.push_str(&format!(
            "add rule ip kube-proxy {ec} meta l4proto tcp dnat to {ip}:8080\n"
        ));
    }
    out.push_str(&format!(
        "add rule ip kube-proxy {sc} numgen random mod {ENDPOINTS} vmap {{ {} }}\n",
        vmap.join(", ")
    ));
    out.push_str(&format!(
        "add element ip kube-proxy service-ips {{ {vip} . tcp . 80 : goto {sc} }}\n"
    ));
    out.push_str(&format!(
        "add element ip kube-proxy cluster-ips {{ {vip} }}\n"
    ));
}

fn kube_proxy_full(n: usize) -> String {
    let mut s = String::from(
        "add table ip kube-proxy\n\
         add map ip kube-proxy service-ips { type ipv4_addr . inet_proto . inet_service : verdict ; }\n\
         add set ip kube-proxy cluster-ips { type ipv4_addr ; }\n\
         add chain ip kube-proxy mark-for-masquerade\n\
         add rule ip kube-proxy mark-for-masquerade mark set mark or 0x4000\n\
         add chain ip kube-proxy masquerading\n\
         add rule ip kube-proxy masquerading mark and 0x4000 == 0 return\n\
         add rule ip kube-proxy masquerading mark set mark xor 0x4000\n\
         add rule ip kube-proxy masquerading masquerade fully-random\n\
         add chain ip kube-proxy services\n\
         add rule ip kube-proxy services ip daddr . meta l4proto . th dport vmap @service-ips\n\
         add chain ip kube-proxy nat-prerouting { type nat hook prerouting priority -100 ; }\n\
         add rule ip kube-proxy nat-prerouting jump services\n\
         add chain ip kube-proxy nat-output { type nat hook output priority -100 ; }\n\
         add rule ip kube-proxy nat-output jump services\n\
         add chain ip kube-proxy nat-postrouting { type nat hook postrouting priority 100 ; }\n\
         add rule ip kube-proxy nat-postrouting jump masquerading\n",
    );
    for i in 0..n {
        kube_proxy_service(i, &[0; ENDPOINTS], &mut s);
    }
    s
}

/// kube-proxy's partial sync after endpoint `j` of service `i` moved: the new endpoint's
/// chain, the service chain rewritten, the old endpoint chain deleted.
fn kube_proxy_move(i: usize, j: usize, gens: &[usize]) -> String {
    let mut old = gens.to_vec();
    old[j] -= 1;
    let mut s = String::new();
    kube_proxy_service(i, gens, &mut s);
    s.push_str(&format!(
        "delete chain ip kube-proxy {}\n",
        ep_chain(i, endpoint_ip(i, j, old[j]))
    ));
    s
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

fn env_list(name: &str, default: &[usize]) -> Vec<usize> {
    std::env::var(name)
        .ok()
        .map(|v| v.split(',').filter_map(|s| s.trim().parse().ok()).collect())
        .filter(|v: &Vec<usize>| !v.is_empty())
        .unwrap_or_else(|| default.to_vec())
}

fn main() {
    let sizes = env_list("WEFT_BENCH_SIZES", &[1000, 5000, 10000]);
    let runs = env_list("WEFT_BENCH_RUNS", &[5])[0].max(1);
    let node = NodeContext {
        node_name: "node-1".into(),
        cluster_cidr: Some("10.244.0.0/16".parse().expect("cidr")),
    };
    println!("weft-proxy vs kube-proxy's nftables transactions (nft -f), {ENDPOINTS} endpoints per Service, medians of {runs} runs");
    println!("| Services | full: weft | full: nft -f | ratio | add one: weft | add one: nft -f | ratio | move an endpoint: weft | nft -f | ratio |");
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for &n in &sizes {
        eprintln!("{n} services: full syncs");
        let mut cluster = Cluster::new(n);
        let (mut wf, mut kf) = (Vec::new(), Vec::new());
        for _ in 0..runs.min(3) {
            let ns = Netns::new("full");
            let mut p = Proxier::open_in(&ns.path()).expect("proxier");
            let mut c = Controller::new(Model::new(node.clone()));
            wf.push(cluster.sync(&mut c, &mut p));
            let ns = Netns::new("kp");
            kf.push(ns.nft(&kube_proxy_full(n)));
        }
        // Incremental paths on one namespace each, as a running proxy sees them.
        let weft_ns = Netns::new("w");
        let mut p = Proxier::open_in(&weft_ns.path()).expect("proxier");
        let mut c = Controller::new(Model::new(node.clone()));
        cluster.sync(&mut c, &mut p);
        let kp_ns = Netns::new("k");
        kp_ns.nft(&kube_proxy_full(n));
        let (mut wa, mut ka, mut wm, mut km) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let mut gens = vec![0usize; ENDPOINTS];
        eprintln!("{n} services: incremental syncs");
        for r in 0..runs {
            let i = n + r;
            let (svc, slice) = (k8s_service(i), k8s_slice(i, &[0; ENDPOINTS]));
            wa.push(on_event(&mut c, &mut p, Some(&svc), &slice));
            cluster.services.push(svc);
            cluster.slices.push(slice);
            let mut s = String::new();
            kube_proxy_service(i, &[0; ENDPOINTS], &mut s);
            ka.push(kp_ns.nft(&s));

            let (k, j) = (n / 2, r % ENDPOINTS);
            gens[j] += 1;
            cluster.slices[k] = k8s_slice(k, &gens);
            wm.push(on_event(&mut c, &mut p, None, &cluster.slices[k]));
            km.push(kp_ns.nft(&kube_proxy_move(k, j, &gens)));
        }
        let row = |w: Vec<Duration>, k: Vec<Duration>| {
            let (w, k) = (median(w), median(k));
            format!(
                "{} | {} | {:.1}x",
                ms(w),
                ms(k),
                k.as_secs_f64() / w.as_secs_f64()
            )
        };
        println!(
            "| {n} | {} | {} | {} |",
            row(wf, kf),
            row(wa, ka),
            row(wm, km)
        );
    }
}
