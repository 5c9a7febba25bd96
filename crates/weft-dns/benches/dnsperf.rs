//! Cluster DNS benchmark: weft-dns against Knot DNS (authoritative, same records) and
//! Unbound (forwarding cache), driven by dnsperf. See BENCHMARKS.md, "Cluster DNS".
//!
//! The driver is `scripts/bench-dns.sh` (run as root); `cargo bench -p weft-dns --bench
//! dnsperf` runs that script with this binary. The script calls the binary twice:
//!
//! - `dnsperf gen DIR`: builds the cluster (100 namespaces, 10k Services, 50k pods) into a
//!   [`weft_dns::Model`], and writes from `Model::records()` the Knot zone files
//!   (`cluster.local.zone`, `10.in-addr.arpa.zone`) so both servers hold the same records,
//!   the upstream zone `example.org.zone`, and the dnsperf query files.
//! - `dnsperf serve ADDR UPSTREAM`: builds the same cluster again, one object at a time
//!   (nothing but the model keeps them, as in the agent), binds weft's server on ADDR with
//!   the agent's settings (default `ServerConfig`, forwarding to UPSTREAM) on the agent's
//!   runtime (tokio multi-thread, 2 workers), and serves until killed. The script runs it
//!   inside the benchmark's network namespace, pinned to one core.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use weft_dns::fixtures;
use weft_dns::records::{RData, Record};
use weft_dns::{Model, ServerConfig, Upstreams, ZoneConfig};

const DOMAIN: &str = "cluster.local";
const TTL: u32 = 30;
const NAMESERVER: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);

const NAMESPACES: usize = 100;
const SERVICES_PER_NS: usize = 100; // 10k Services
const PODS_PER_NS: usize = 500; // 50k pods
/// Every HEADLESS_EVERY-th Service is headless, with one EndpointSlice of ENDPOINTS ready pods.
const HEADLESS_EVERY: usize = 10;
const ENDPOINTS: usize = 5;
/// Names in the upstream zone (the forwarded mix asks each of them over and over).
const UPSTREAM_NAMES: usize = 1000;
const UPSTREAM_TTL: u32 = 3600;
/// Lines in the cluster query file (dnsperf loops over it).
const QUERIES: usize = 200_000;

fn ns_name(n: usize) -> String {
    format!("ns-{n:03}")
}

fn svc_name(s: usize) -> String {
    if s.is_multiple_of(HEADLESS_EVERY) {
        format!("hl-{s:03}")
    } else {
        format!("svc-{s:03}")
    }
}

/// Pod k of namespace n: global index, IP in 10.244.0.0/16.
fn pod_ip(n: usize, k: usize) -> Ipv4Addr {
    let g = n * PODS_PER_NS + k + 1;
    Ipv4Addr::new(10, 244, (g >> 8) as u8, (g & 0xff) as u8)
}

/// ClusterIP of Service s in namespace n, in 10.96.0.0/16 above the DNS Service's address.
fn cluster_ip(n: usize, s: usize) -> Ipv4Addr {
    let g = n * SERVICES_PER_NS + s + 256;
    Ipv4Addr::new(10, 96, (g >> 8) as u8, (g & 0xff) as u8)
}

/// The headless Service s of namespace n selects these pods.
fn endpoint_pods(s: usize) -> impl Iterator<Item = usize> {
    let first = (s / HEADLESS_EVERY) * ENDPOINTS;
    (first..first + ENDPOINTS).map(|k| k % PODS_PER_NS)
}

fn ports_of(s: usize) -> Vec<fixtures::Port<'static>> {
    if s.is_multiple_of(3) {
        vec![("http", 80, "TCP"), ("grpc", 9090, "TCP")]
    } else {
        vec![("http", 80, "TCP")]
    }
}

/// Feed the whole cluster to the model one object at a time, as the agent's watchers do.
fn build() -> Model {
    let mut zone = ZoneConfig::new(DOMAIN);
    zone.ttl = TTL;
    zone.nameserver_ips = vec![IpAddr::V4(NAMESERVER)];
    let model = Model::new(zone).expect("zone config");
    for n in 0..NAMESPACES {
        let ns = ns_name(n);
        model.upsert_namespace(&k8s_openapi::api::core::v1::Namespace {
            metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                name: Some(ns.clone()),
                ..Default::default()
            },
            ..Default::default()
        });
        for k in 0..PODS_PER_NS {
            let ip = pod_ip(n, k).to_string();
            model.upsert_pod(&fixtures::pod(&ns, &format!("pod-{k:03}"), &[&ip]));
        }
        for s in 0..SERVICES_PER_NS {
            let name = svc_name(s);
            let ports = ports_of(s);
            if s.is_multiple_of(HEADLESS_EVERY) {
                model.upsert_service(&fixtures::headless(&ns, &name, &ports, false));
                let ips: Vec<String> = endpoint_pods(s).map(|k| pod_ip(n, k).to_string()).collect();
                let eps: Vec<fixtures::Ep> = ips
                    .iter()
                    .map(|ip| (ip.as_str(), None, Some(true)))
                    .collect();
                model.upsert_slice(&fixtures::slice(
                    &ns,
                    &format!("{name}-abcde"),
                    &name,
                    "IPv4",
                    &eps,
                    &ports,
                ));
            } else {
                let ip = cluster_ip(n, s).to_string();
                model.upsert_service(&fixtures::service(&ns, &name, &[&ip], &ports));
            }
        }
    }
    model
}

fn fqdn(name: &str) -> String {
    format!("{name}.")
}

fn rr_line(out: &mut String, r: &Record, ttl: u32) -> bool {
    let owner = fqdn(&r.name);
    let _ = match &r.data {
        RData::A(ip) => writeln!(out, "{owner} {ttl} IN A {ip}"),
        RData::Aaaa(ip) => writeln!(out, "{owner} {ttl} IN AAAA {ip}"),
        RData::Cname(t) => writeln!(out, "{owner} {ttl} IN CNAME {}", fqdn(t)),
        RData::Ptr(t) => writeln!(out, "{owner} {ttl} IN PTR {}", fqdn(t)),
        RData::Ns(t) => writeln!(out, "{owner} {ttl} IN NS {}", fqdn(t)),
        RData::Srv {
            priority,
            weight,
            port,
            target,
        } => writeln!(
            out,
            "{owner} {ttl} IN SRV {priority} {weight} {port} {}",
            fqdn(target)
        ),
        RData::Txt(t) => writeln!(out, "{owner} {ttl} IN TXT \"{t}\""),
        RData::Exists => return false,
    };
    true
}

fn soa(out: &mut String, apex: &str, ttl: u32) {
    let _ = writeln!(
        out,
        "{apex}. {ttl} IN SOA ns.dns.{DOMAIN}. hostmaster.{DOMAIN}. 1 7200 1800 86400 {ttl}"
    );
    let _ = writeln!(out, "{apex}. {ttl} IN NS ns.dns.{DOMAIN}.");
}

/// Knot's zone files from the model's records, plus what weft's zone adds by itself (SOA,
/// NS, `ns.dns` A, `dns-version` TXT; see zone.rs).
fn write_zones(dir: &Path, records: &BTreeSet<Record>) -> (usize, usize) {
    let mut fwd = String::new();
    let mut rev = String::new();
    soa(&mut fwd, DOMAIN, TTL);
    let _ = writeln!(fwd, "ns.dns.{DOMAIN}. {TTL} IN A {NAMESERVER}");
    let _ = writeln!(fwd, "dns-version.{DOMAIN}. {TTL} IN TXT \"1.1.0\"");
    soa(&mut rev, "10.in-addr.arpa", TTL);
    // Names held only by an "exists" mark need a record at or below them to exist in Knot
    // too: collect every name that holds data and all its ancestors.
    let mut held: BTreeSet<&str> = BTreeSet::new();
    for r in records.iter().filter(|r| r.data != RData::Exists) {
        let mut name = r.name.as_str();
        while held.insert(name) {
            match name.split_once('.') {
                Some((_, parent)) => name = parent,
                None => break,
            }
        }
    }
    let mut bare = 0;
    let mut n = 0;
    for r in records {
        if r.data == RData::Exists {
            if !held.contains(r.name.as_str()) {
                bare += 1;
            }
            continue;
        }
        let out = if r.name.ends_with(".in-addr.arpa") {
            assert!(r.name.ends_with(".10.in-addr.arpa"), "{}", r.name);
            &mut rev
        } else {
            assert!(r.name.ends_with(DOMAIN), "{}", r.name);
            &mut fwd
        };
        if rr_line(out, r, TTL) {
            n += 1;
        }
    }
    std::fs::write(dir.join("cluster.local.zone"), fwd).unwrap();
    std::fs::write(dir.join("10.in-addr.arpa.zone"), rev).unwrap();
    (n, bare)
}

/// A small deterministic generator (xorshift64*), so every run asks the same questions.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn reverse_name(ip: Ipv4Addr) -> String {
    let o = ip.octets();
    format!("{}.{}.{}.{}.in-addr.arpa", o[3], o[2], o[1], o[0])
}

/// The query mix, by share of the file. Each entry: (label, percent).
const MIX: &[(&str, usize)] = &[
    ("Service A (ClusterIP)", 30),
    ("headless Service A (5 endpoints)", 10),
    ("pod A (a-b-c-d.ns.pod)", 5),
    ("SRV _http._tcp / _grpc._tcp", 10),
    ("PTR (ClusterIP and endpoint)", 10),
    ("NXDOMAIN (no such Service)", 10),
    ("search-path expansion of an external name (NXDOMAIN)", 25),
];

fn query(rng: &mut Rng, kind: usize) -> String {
    let n = rng.below(NAMESPACES);
    let ns = ns_name(n);
    let clusterip = |rng: &mut Rng| loop {
        let s = rng.below(SERVICES_PER_NS);
        if !s.is_multiple_of(HEADLESS_EVERY) {
            return s;
        }
    };
    match kind {
        0 => {
            let s = clusterip(rng);
            format!("{}.{ns}.svc.{DOMAIN} A", svc_name(s))
        }
        1 => {
            let s = rng.below(SERVICES_PER_NS / HEADLESS_EVERY) * HEADLESS_EVERY;
            format!("{}.{ns}.svc.{DOMAIN} A", svc_name(s))
        }
        2 => {
            let ip = pod_ip(n, rng.below(PODS_PER_NS));
            let dashed = ip.to_string().replace('.', "-");
            format!("{dashed}.{ns}.pod.{DOMAIN} A")
        }
        3 => {
            // grpc exists only on every third Service: ask it there.
            let s = rng.below(SERVICES_PER_NS / 3) * 3;
            let port = if rng.below(2) == 0 { "http" } else { "grpc" };
            format!("_{port}._tcp.{}.{ns}.svc.{DOMAIN} SRV", svc_name(s))
        }
        4 => {
            let s = rng.below(SERVICES_PER_NS);
            let ip = if s.is_multiple_of(HEADLESS_EVERY) {
                let k: Vec<usize> = endpoint_pods(s).collect();
                pod_ip(n, k[rng.below(k.len())])
            } else {
                cluster_ip(n, s)
            };
            format!("{} PTR", reverse_name(ip))
        }
        5 => format!("nosuch-{:03}.{ns}.svc.{DOMAIN} A", rng.below(1000)),
        _ => {
            // A pod resolving api-N.example.com with ndots:5 tries its search list first.
            let host = format!("api-{}.example.com", rng.below(1000));
            match rng.below(3) {
                0 => format!("{host}.{ns}.svc.{DOMAIN} A"),
                1 => format!("{host}.svc.{DOMAIN} A"),
                _ => format!("{host}.{DOMAIN} A"),
            }
        }
    }
}

fn write_queries(dir: &Path) -> String {
    let mut rng = Rng(0x5eed_d15e_a5e0_0001);
    let total: usize = MIX.iter().map(|m| m.1).sum();
    assert_eq!(total, 100);
    let mut kinds = Vec::with_capacity(QUERIES);
    for (i, (_, pct)) in MIX.iter().enumerate() {
        kinds.extend(std::iter::repeat_n(i, QUERIES * pct / 100));
    }
    // Shuffle the kinds (Fisher-Yates) so the file interleaves them.
    for i in (1..kinds.len()).rev() {
        let j = rng.below(i + 1);
        kinds.swap(i, j);
    }
    let mut out = String::with_capacity(QUERIES * 48);
    for &k in &kinds {
        out.push_str(&query(&mut rng, k));
        out.push('\n');
    }
    std::fs::write(dir.join("queries-cluster.txt"), out).unwrap();

    // The upstream zone and the forwarded mix: every name asked over and over.
    let mut zone = String::new();
    let _ = writeln!(
        zone,
        "example.org. {UPSTREAM_TTL} IN SOA ns.example.org. hostmaster.example.org. 1 7200 1800 86400 {UPSTREAM_TTL}"
    );
    let _ = writeln!(zone, "example.org. {UPSTREAM_TTL} IN NS ns.example.org.");
    let _ = writeln!(zone, "ns.example.org. {UPSTREAM_TTL} IN A 192.0.2.1");
    for i in 0..UPSTREAM_NAMES {
        let _ = writeln!(
            zone,
            "host-{i:04}.example.org. {UPSTREAM_TTL} IN A 198.51.{}.{}",
            100 + i / 250,
            1 + i % 250
        );
    }
    std::fs::write(dir.join("example.org.zone"), zone).unwrap();
    let mut names: Vec<usize> = (0..UPSTREAM_NAMES).collect();
    for i in (1..names.len()).rev() {
        let j = rng.below(i + 1);
        names.swap(i, j);
    }
    let mut fq = String::new();
    for i in names {
        let _ = writeln!(fq, "host-{i:04}.example.org A");
    }
    std::fs::write(dir.join("queries-forward.txt"), fq).unwrap();

    let mut mix = String::new();
    for (label, pct) in MIX {
        let _ = writeln!(mix, "{pct}% {label}");
    }
    mix
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn gen(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    let t = std::time::Instant::now();
    let model = build();
    let built = t.elapsed();
    let records = model.records();
    let (n, bare) = write_zones(dir, &records);
    let mix = write_queries(dir);
    std::fs::write(dir.join("mix.txt"), &mix).unwrap();
    println!(
        "gen: {} model records ({n} zone-file records, {bare} names held only by an \
         'exists' mark with nothing below them); model built in {:.2} s",
        records.len(),
        built.as_secs_f64()
    );
    assert_eq!(bare, 0, "Knot could not serve those names as weft does");
    print!("{mix}");
}

fn serve(listen: SocketAddr, upstream: SocketAddr) {
    // The agent's runtime (crates/weft/src/agent.rs): multi-thread, 2 workers.
    let workers: usize = std::env::var("WEFT_DNS_BENCH_WORKERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let t = std::time::Instant::now();
        let model = build();
        let built = t.elapsed();
        let cfg = ServerConfig {
            listen: vec![listen],
            allowed: vec!["10.244.0.0/16".parse().unwrap()],
            upstreams: Upstreams::List(vec![upstream]),
            ..ServerConfig::default()
        };
        let server = weft_dns::Server::bind(cfg, model).await.expect("bind");
        eprintln!(
            "weft-dns serving on {listen} (upstream {upstream}), {workers} runtime workers, \
             model built in {:.2} s, RSS {} KiB",
            built.as_secs_f64(),
            rss_kib()
        );
        let stats = server.stats();
        // SIGUSR1 prints the reply delays since the last one (the script sends one before
        // and one after each latency run of weft's).
        let delays = server.stats();
        tokio::spawn(async move {
            use tokio::signal::unix::{signal, SignalKind};
            let Ok(mut usr1) = signal(SignalKind::user_defined1()) else {
                return;
            };
            let mut last = delays.get().reply_delay.counts();
            while usr1.recv().await.is_some() {
                let now = delays.get().reply_delay.counts();
                let d: [u64; weft_dns::delay::BUCKETS] = std::array::from_fn(|i| now[i] - last[i]);
                eprintln!("weft-dns reply delay: {}", delay_summary(&d));
                last = now;
            }
        });
        let run = tokio::spawn(server.run());
        // The script stops the server with SIGINT; print the counters first.
        let _ = tokio::signal::ctrl_c().await;
        let s = stats.get();
        use std::sync::atomic::Ordering::Relaxed;
        eprintln!(
            "weft-dns stats: queries {} forwarded {} cache_hits {} servfail {} dropped {} \
             upstream_queries {} cached_entries {}",
            s.queries.load(Relaxed),
            s.forwarded.load(Relaxed),
            s.cache_hits.load(Relaxed),
            s.servfail.load(Relaxed),
            s.dropped.load(Relaxed),
            stats.upstream_queries(),
            stats.cached_entries()
        );
        run.abort();
    });
}

/// `replies N p50 .. p99 .. p99.9 .. max ..` in µs (bucket upper bounds, 1/8 resolution).
fn delay_summary(d: &[u64; weft_dns::delay::BUCKETS]) -> String {
    use weft_dns::delay::{percentile, upper_bound};
    let us = |ns: u64| format!("{:.1}", ns as f64 / 1000.0);
    let max = d.iter().rposition(|&c| c > 0).map_or(0, upper_bound);
    format!(
        "replies {} p50 {} p90 {} p99 {} p99.9 {} max {} (us, arrival to send)",
        d.iter().sum::<u64>(),
        us(percentile(d, 50.0)),
        us(percentile(d, 90.0)),
        us(percentile(d, 99.0)),
        us(percentile(d, 99.9)),
        us(max)
    )
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    match args.first().map(String::as_str) {
        Some("gen") => gen(&PathBuf::from(&args[1])),
        Some("serve") => serve(
            args[1].parse().expect("listen address"),
            args[2].parse().expect("upstream address"),
        ),
        _ => {
            // `cargo bench`: run the driver with this binary.
            let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
            let script = root.join("scripts/bench-dns.sh");
            let exe = std::env::current_exe().unwrap();
            let status = std::process::Command::new("bash")
                .arg(&script)
                .env("WEFT_DNS_BENCH_BIN", exe)
                .current_dir(&root)
                .status()
                .expect("run scripts/bench-dns.sh");
            std::process::exit(status.code().unwrap_or(1));
        }
    }
}
