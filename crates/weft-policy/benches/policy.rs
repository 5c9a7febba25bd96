//! NetworkPolicy at scale: new-connection rate through the policy table, time from a
//! policy change to enforcement, and a full sync. Run as root:
//!
//! ```text
//! cargo bench -p weft-policy --bench policy
//! WEFT_BENCH_RUNS=N       rounds of the connection-rate measurement (default 9)
//! WEFT_BENCH_CONNECTS=N   connections per sample (default 3000)
//! WEFT_BENCH_CHANGES=N    policy changes timed per compile path (default 11)
//! WEFT_BENCH_KERNEL=0     the compiler's figures only
//! ```
//!
//! Every table is loaded whole (the class-keyed tables hold ~10 k elements at 100
//! policies and ~70 k at 1000, nearly all in hash maps).
//!
//! The world: one node `n1` with pod CIDR 10.244.0.0/22 and 1000 pods on it (50 namespaces
//! of 20 pods, addresses handed out in creation order so namespaces interleave), two
//! other nodes. Policies are 20 per namespace (namespace and pod selectors, named and
//! numbered ports, ipBlocks with except, egress for some, one default-deny ingress per
//! namespace); the 100-policy configuration is the first 2 of each namespace.
//!
//! Every configuration gets its own node namespace holding the table and two pod
//! namespaces (client = pod 0, server = pod 1 of the view, both entered by `setns` from a
//! thread) wired to it by veth pairs; so configurations alternate within one run without
//! reloading tables. Every namespace is removed on exit and on panic (RAII guards).

use std::io::Write as _;
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use weft_policy::desired::{desired, Incremental};
use weft_policy::enforcer::Enforcer;
use weft_policy::{check, Cluster, Endpoint, Protocol};

#[path = "policy_world/mod.rs"]
mod world;
use world::*;

// ---------------------------------------------------------------------------------------
// Namespaces, removed on drop.

struct Netns(String);

impl Netns {
    fn new(tag: &str) -> Netns {
        let name = format!("weft-b-pol-{tag}-{}", std::process::id());
        run("ip", &["netns", "add", &name]);
        let ns = Netns(name);
        ns.exec(&["ip", "link", "set", "lo", "up"]);
        ns
    }

    fn path(&self) -> PathBuf {
        PathBuf::from(format!("/run/netns/{}", self.0))
    }

    fn exec(&self, args: &[&str]) -> String {
        let mut a = vec!["netns", "exec", &self.0];
        a.extend_from_slice(args);
        run("ip", &a)
    }

    /// Runs `f` on a new thread inside the namespace and waits for it.
    fn run_in<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        self.spawn_in(f).join().expect("netns thread")
    }

    fn spawn_in<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> std::thread::JoinHandle<T> {
        let file = std::fs::File::open(self.path()).expect("opening the netns");
        std::thread::spawn(move || {
            nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
            f()
        })
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

fn run(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd).args(args).output().expect("spawning");
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

// ---------------------------------------------------------------------------------------
// One node namespace with a client and a server pod namespace.

struct Lab {
    node: Netns,
    client: Netns,
    _server: Netns,
}

const CLIENT: u32 = 0;
const SERVER: u32 = 1;

impl Lab {
    fn new(tag: &str) -> Lab {
        let node = Netns::new(&format!("{tag}-n"));
        let client = Netns::new(&format!("{tag}-c"));
        let server = Netns::new(&format!("{tag}-s"));
        for (pod, node_if, i) in [(&client, "vc", CLIENT), (&server, "vs", SERVER)] {
            let addr = pod_ip(i).to_string();
            node.exec(&[
                "ip", "link", "add", node_if, "type", "veth", "peer", "name", "eth0",
            ]);
            node.exec(&["ip", "link", "set", "eth0", "netns", &pod.0]);
            node.exec(&["ip", "addr", "add", "10.244.0.1/32", "dev", node_if]);
            node.exec(&["ip", "link", "set", node_if, "up"]);
            node.exec(&["ip", "route", "add", &format!("{addr}/32"), "dev", node_if]);
            pod.exec(&["ip", "addr", "add", &format!("{addr}/32"), "dev", "eth0"]);
            pod.exec(&["ip", "link", "set", "eth0", "up"]);
            pod.exec(&["ip", "route", "add", "10.244.0.1/32", "dev", "eth0"]);
            pod.exec(&["ip", "route", "add", "default", "via", "10.244.0.1"]);
        }
        node.exec(&["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
        let l = server.run_in(|| TcpListener::bind(("0.0.0.0", PORT)).expect("bind"));
        std::thread::spawn(move || {
            for s in l.incoming() {
                drop(s);
            }
        });
        Lab {
            node,
            client,
            _server: server,
        }
    }

    /// `n` connects (closed with RST, so no TIME_WAIT piles up): connections per second.
    fn rate(&self, n: u32) -> f64 {
        self.client.run_in(move || {
            let to = SocketAddr::from((pod_ip(SERVER), PORT));
            let t0 = Instant::now();
            for _ in 0..n {
                let s = TcpStream::connect_timeout(&to, Duration::from_secs(2)).expect("connect");
                let rst = nix::libc::linger {
                    l_onoff: 1,
                    l_linger: 0,
                };
                nix::sys::socket::setsockopt(&s, nix::sys::socket::sockopt::Linger, &rst).unwrap();
            }
            f64::from(n) / t0.elapsed().as_secs_f64()
        })
    }

    fn connects(&self) -> bool {
        self.client.run_in(|| {
            TcpStream::connect_timeout(
                &SocketAddr::from((pod_ip(SERVER), PORT)),
                Duration::from_millis(300),
            )
            .is_ok()
        })
    }
}

// ---------------------------------------------------------------------------------------

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn env(name: &str, default: u32) -> u32 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn say(s: &str) {
    eprintln!("{s}");
    let _ = std::io::stderr().flush();
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    if !nix::unistd::Uid::effective().is_root() {
        eprintln!("policy bench: needs root (network namespaces); skipped");
        return;
    }
    println!("### The compiler alone, 1000 pods (medians of 6 changes; desired() of 2)");
    println!();
    compile_only();
    if env("WEFT_BENCH_KERNEL", 1) == 0 {
        return;
    }
    let runs = env("WEFT_BENCH_RUNS", 9);
    let per_sample = env("WEFT_BENCH_CONNECTS", 3000);
    let changes = env("WEFT_BENCH_CHANGES", 11);
    let ctx = ctx();
    let client = Endpoint::Ip(IpAddr::V4(pod_ip(CLIENT)));
    let server = Endpoint::Ip(IpAddr::V4(pod_ip(SERVER)));

    // --- the configurations: their views, tables and labs.
    struct Config {
        name: &'static str,
        policies: usize,
        lab: Lab,
        elements: usize,
        rates: Vec<f64>,
    }
    let mut configs: Vec<Config> = Vec::new();
    let mut big: Option<(Cluster, Enforcer)> = None;
    let mut full_desired = Vec::new();
    let mut full_sync = Vec::new();
    for (name, per_ns) in [
        ("0 policies", Some(0)),
        ("100 policies", Some(2)),
        ("1000 policies", Some(POLICIES_PER_NS)),
    ] {
        let tag = format!("c{}", configs.len());
        let lab = Lab::new(&tag);
        let mut loaded = 0;
        let mut policies = 0;
        if let Some(per_ns) = per_ns {
            let c = with_policies(per_ns);
            policies = c.policies.len();
            let d = check(&c, &client, &server, PORT, Protocol::Tcp).unwrap();
            assert!(
                d.allowed,
                "{name}: the measured connection must be allowed:\n{d}"
            );
            let mut e = Enforcer::open_in(&lab.node.path()).expect("nf_tables");
            let t0 = Instant::now();
            let rs = desired(&c, &ctx);
            let t1 = Instant::now();
            e.sync(&rs).expect("first sync");
            let t2 = Instant::now();
            loaded = elements(&rs);
            say(&format!(
                "{name}: {policies} policies, {loaded} elements loaded; desired {:.1} ms, sync {:.1} ms",
                ms(t1 - t0),
                ms(t2 - t1)
            ));
            if per_ns == POLICIES_PER_NS {
                full_desired.push(ms(t1 - t0));
                full_sync.push(ms(t2 - t1));
                big = Some((c, e));
            }
        }
        assert!(lab.connects(), "{name}: client reaches server");
        configs.push(Config {
            name,
            policies,
            lab,
            elements: loaded,
            rates: Vec::new(),
        });
    }

    // --- 1. new-connection rate, configurations alternating (order rotated each round).
    for c in &configs {
        c.lab.rate(per_sample / 3); // warm-up
    }
    let mut ratios: Vec<Vec<f64>> = vec![Vec::new(); configs.len()];
    for round in 0..runs as usize {
        let mut got = vec![0.0; configs.len()];
        for k in 0..configs.len() {
            let i = (round + k) % configs.len();
            got[i] = configs[i].lab.rate(per_sample);
        }
        for (i, r) in got.iter().enumerate() {
            configs[i].rates.push(*r);
            ratios[i].push(r / got[0]);
        }
        say(&format!("round {round}: {got:.0?}"));
    }

    println!();
    println!("### New connections (TCP connect + RST), client pod 0 -> server pod 1:{PORT}");
    println!();
    println!(
        "{runs} rounds x {per_sample} connects per configuration, configurations alternating; medians."
    );
    println!();
    println!("| configuration | policies | map elements (whole table loaded) | connects/s (median) | ratio to 0 policies (median of per-round ratios) | min..max ratio |");
    println!("| --- | ---: | ---: | ---: | ---: | --- |");
    for (i, c) in configs.iter_mut().enumerate() {
        let mut r = ratios[i].clone();
        let (lo, hi) = (
            r.iter().cloned().fold(f64::MAX, f64::min),
            r.iter().cloned().fold(0.0, f64::max),
        );
        println!(
            "| {} | {} | {} | {:.0} | {:.3} | {lo:.3}..{hi:.3} |",
            c.name,
            c.policies,
            c.elements,
            median(&mut c.rates),
            median(&mut r)
        );
    }

    // --- 2. a policy change to enforcement, at 1000 policies x 1000 pods.
    let Some((mut cluster, mut enforcer)) = big else {
        println!("\n(the 1000-policy table was not loaded: no change-to-enforcement or full-sync figures)");
        return;
    };
    let lab = &configs[2].lab;
    let (k, j) = (SERVER % NAMESPACES, 0); // the server's namespace, its first policy
    let versions = [np(&policy_yaml(k, j, true)), np(&policy_yaml(k, j, false))];
    let mut apply_t = Vec::new();
    let mut desired_t = Vec::new();
    let mut sync_t = Vec::new();
    let mut total_t = Vec::new();
    let mut changed_elems = Vec::new();
    let mut inc = Incremental::default();
    let _ = inc.desired(&cluster, &ctx);
    let mut inc_t = Vec::new();
    let mut inc_sync_t = Vec::new();
    let mut inc_total_t = Vec::new();
    for step in 0..(2 * changes as usize) {
        let v = &versions[step % 2];
        let open = step % 2 == 1;
        let incremental = step >= changes as usize;
        let t0 = Instant::now();
        cluster.apply_network_policy(v).unwrap();
        let t1 = Instant::now();
        let rs = if incremental {
            inc.desired(&cluster, &ctx)
        } else {
            desired(&cluster, &ctx)
        };
        let t2 = Instant::now();
        let sum = enforcer.sync(&rs).expect("sync");
        let t3 = Instant::now();
        assert_eq!(lab.connects(), open, "step {step}: enforced");
        changed_elems.push((sum.elements_added + sum.elements_deleted) as f64);
        if incremental {
            inc_t.push(ms(t2 - t1));
            inc_sync_t.push(ms(t3 - t2));
            inc_total_t.push(ms(t3 - t0));
        } else {
            apply_t.push(ms(t1 - t0));
            desired_t.push(ms(t2 - t1));
            sync_t.push(ms(t3 - t2));
            total_t.push(ms(t3 - t0));
        }
        say(&format!(
            "change {step} ({}): apply {:.3} ms, desired {:.1} ms, sync {:.1} ms ({} elements changed)",
            if incremental { "incremental" } else { "desired()" },
            ms(t1 - t0),
            ms(t2 - t1),
            ms(t3 - t2),
            sum.elements_added + sum.elements_deleted
        ));
    }

    // --- 3. full sync: an empty namespace's table to the full 1000-policy one.
    let fresh = Netns::new("full");
    for _ in 0..3 {
        let mut e = Enforcer::open_in(&fresh.path()).expect("nf_tables");
        let t0 = Instant::now();
        let rs = desired(&cluster, &ctx);
        let t1 = Instant::now();
        e.sync(&rs).expect("full sync");
        let t2 = Instant::now();
        full_desired.push(ms(t1 - t0));
        full_sync.push(ms(t2 - t1));
        say(&format!(
            "full: desired {:.1} ms, sync {:.1} ms",
            ms(t1 - t0),
            ms(t2 - t1)
        ));
        e.remove().expect("remove");
    }

    // --- the report.
    println!();
    println!("### One NetworkPolicy change to enforcement, 1000 policies x 1000 pods");
    println!();
    println!("{changes} changes per path (the server namespace's policy p00 toggling its ports; each one verified by a probe); medians in ms.");
    println!();
    println!("| path | apply to Cluster | desired | Enforcer::sync | total | elements changed |");
    println!("| --- | ---: | ---: | ---: | ---: | ---: |");
    println!(
        "| `desired()` (full recompute) | {:.3} | {:.1} | {:.1} | {:.1} | {:.0} |",
        median(&mut apply_t),
        median(&mut desired_t),
        median(&mut sync_t),
        median(&mut total_t),
        median(&mut changed_elems.clone())
    );
    println!(
        "| `Incremental::desired()` (what the agent runs) | (same) | {:.2} | {:.1} | {:.1} | |",
        median(&mut inc_t),
        median(&mut inc_sync_t),
        median(&mut inc_total_t)
    );
    println!();
    println!("### Full sync, empty table to 1000 policies x 1000 pods");
    println!();
    println!(
        "| desired() (whole table) | Enforcer::sync, empty to full (one transaction) | elements | samples |\n| ---: | ---: | ---: | ---: |\n| {:.0} ms | {:.0} ms | {} | {} |",
        median(&mut full_desired.clone()),
        median(&mut full_sync.clone()),
        configs[2].elements,
        full_sync.len()
    );
}

/// The compiler alone (no kernel): table size, full compile, and one policy change through
/// `desired()` and `Incremental`, at 100 and 1000 policies.
fn compile_only() {
    let ctx = ctx();
    println!("| policies | map elements | desired() full | change: apply | change: desired() | change: Incremental | subject classes recomputed | change: Incremental, previous table still held | change: diff (the Rust half of Enforcer::sync) |");
    println!("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    for per_ns in [2, POLICIES_PER_NS] {
        let mut c = with_policies(per_ns);
        let t0 = Instant::now();
        let rs = desired(&c, &ctx);
        let full = ms(t0.elapsed());
        let n = elements(&rs);
        let mut inc = Incremental::default();
        let _ = inc.desired(&c, &ctx);
        let versions = [
            np(&policy_yaml(SERVER % NAMESPACES, 0, true)),
            np(&policy_yaml(SERVER % NAMESPACES, 0, false)),
        ];
        let (mut ap, mut de, mut ic, mut pods) = (Vec::new(), Vec::new(), Vec::new(), 0);
        for step in 0..6 {
            let t0 = Instant::now();
            c.apply_network_policy(&versions[step % 2]).unwrap();
            let t1 = Instant::now();
            let a = inc.desired(&c, &ctx);
            let t2 = Instant::now();
            pods = inc.recompiled;
            if step < 2 {
                let b = desired(&c, &ctx);
                de.push(ms(t2.elapsed()));
                assert!(a == b, "incremental equals full");
            }
            ap.push(ms(t1 - t0));
            ic.push(ms(t2 - t1));
        }
        // As in the agent: the enforcer keeps the last table, which shares its maps with
        // the compiler's, so the compiler's edit copies each map it changes; and the
        // enforcer's diff compares the changed maps whole.
        let (mut held, mut diff) = (Vec::new(), Vec::new());
        let mut prev = inc.desired(&c, &ctx);
        for step in 0..4 {
            c.apply_network_policy(&versions[step % 2]).unwrap();
            let t1 = Instant::now();
            let next = inc.desired(&c, &ctx);
            let t2 = Instant::now();
            let mut batch = weft_nft::netlink::Batch::new(1);
            weft_nft::diff::incremental(&prev, &next, &mut batch).unwrap();
            let t3 = Instant::now();
            held.push(ms(t2 - t1));
            diff.push(ms(t3 - t2));
            prev = next;
        }
        println!(
            "| {} | {n} | {full:.0} ms | {:.3} ms | {:.0} ms | {:.2} ms | {pods} | {:.0} ms | {:.0} ms |",
            c.policies.len(),
            median(&mut ap),
            median(&mut de),
            median(&mut ic),
            median(&mut held),
            median(&mut diff)
        );
    }
}
