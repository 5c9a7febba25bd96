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
use std::net::IpAddr;
use std::time::{Duration, Instant};

use weft_policy::desired::{desired, Incremental};
use weft_policy::enforcer::Enforcer;
use weft_policy::{check, Cluster, Endpoint, Protocol};

#[path = "policy_world/lab.rs"]
mod lab;
#[path = "../tests/common/netns.rs"]
mod netns;
#[path = "policy_world/mod.rs"]
mod world;
use lab::*;
use world::*;

// ---------------------------------------------------------------------------------------

/// This thread's CPU time in ms (user and system: the kernel's work on a netlink
/// transaction counts too): what a change costs whatever else runs on the machine.
fn cpu_ms() -> f64 {
    let t = nix::time::clock_gettime(nix::time::ClockId::CLOCK_THREAD_CPUTIME_ID)
        .expect("thread CPU clock");
    t.tv_sec() as f64 * 1e3 + t.tv_nsec() as f64 / 1e6
}

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
    if let Ok(n) = std::env::var("WEFT_BENCH_PROFILE_UPDATE") {
        profile_update(n.parse().unwrap_or(200));
        return;
    }
    println!("### The compiler alone, 1000 pods (CPU time of the compiling thread; medians of 12 changes per incremental path, 4 for desired())");
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
    // The last configuration is the 1000-policy table with its sets declared without
    // `counter`: what the per-element denial counters cost a new connection, side by side.
    for (name, per_ns, counters) in [
        ("0 policies", Some(0), true),
        ("100 policies", Some(2), true),
        ("1000 policies", Some(POLICIES_PER_NS), true),
        (
            "1000 policies, no element counters",
            Some(POLICIES_PER_NS),
            false,
        ),
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
            let mut rs = desired(&c, &ctx);
            let t1 = Instant::now();
            if !counters {
                for t in rs.tables.values_mut() {
                    for set in t.sets.values_mut() {
                        std::sync::Arc::make_mut(set).flags.counter = false;
                    }
                }
            }
            e.sync(&rs).expect("first sync");
            let t2 = Instant::now();
            loaded = elements(&rs);
            say(&format!(
                "{name}: {policies} policies, {loaded} elements loaded; desired {:.1} ms, sync {:.1} ms",
                ms(t1 - t0),
                ms(t2 - t1)
            ));
            if per_ns == POLICIES_PER_NS && counters {
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
    let mut counted_vs_not: Vec<f64> = Vec::new();
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
        counted_vs_not.push(got[2] / got[3]);
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

    println!();
    println!(
        "1000 policies with element counters / without, median of per-round ratios: {:.3} ({:.3}..{:.3})",
        median(&mut counted_vs_not.clone()),
        counted_vs_not.iter().cloned().fold(f64::MAX, f64::min),
        counted_vs_not.iter().cloned().fold(0.0, f64::max),
    );

    // --- 2. a policy change to enforcement, at 1000 policies x 1000 pods.
    let Some((mut cluster, mut enforcer)) = big else {
        println!("\n(the 1000-policy table was not loaded: no change-to-enforcement or full-sync figures)");
        return;
    };
    let lab = &configs[2].lab;
    let (k, j) = (SERVER % NAMESPACES, 0); // the server's namespace, its first policy
    let versions = [np(&policy_yaml(k, j, true)), np(&policy_yaml(k, j, false))];
    // Three paths, in rounds of two changes each (close, open), alternating within a
    // round: `desired()` + `sync`, the previous agent's `Incremental::desired()` + `sync`
    // (the compiler and the Enforcer share the table, so an edit copies the changed maps
    // and the diff compares them whole), and the agent's `Incremental::update()` +
    // `Enforcer::apply` (only the touched elements). Before each path's turn, an untimed
    // sync brings the Enforcer and that path's compiler to the current policies.
    const PATHS: [&str; 3] = [
        "`desired()` + `Enforcer::sync`",
        "`Incremental::desired()` + `Enforcer::sync` (previous agent)",
        "`Incremental::update()` + `Enforcer::apply` (the agent)",
    ];
    // apply, compile, Enforcer, total (wall); compile, Enforcer (this thread's CPU).
    let mut t: Vec<[Vec<f64>; 6]> = vec![Default::default(); PATHS.len()];
    let mut changed_elems: Vec<Vec<f64>> = vec![Vec::new(); PATHS.len()];
    let mut held = Incremental::default();
    let mut agent = Incremental::default();
    let mut step = 0;
    for round in 0..(changes as usize).div_ceil(2) {
        for k in 0..PATHS.len() {
            let path = (round + k) % PATHS.len();
            match path {
                1 => {
                    let rs = held.desired(&cluster, &ctx);
                    enforcer.sync(&rs).expect("sync");
                }
                2 => {
                    // The Enforcer's copy shared with nobody, as in the agent.
                    enforcer.sync(&desired(&cluster, &ctx)).expect("sync");
                    let _ = agent.update(&cluster, &ctx);
                }
                _ => {}
            }
            for _ in 0..2 {
                let v = &versions[step % 2];
                let open = step % 2 == 1;
                step += 1;
                let t0 = Instant::now();
                cluster.apply_network_policy(v).unwrap();
                let t1 = Instant::now();
                let c1 = cpu_ms();
                let split = |t: &mut [Vec<f64>; 6]| {
                    t[1].push(ms(t1.elapsed()));
                    t[4].push(cpu_ms() - c1);
                    (Instant::now(), cpu_ms())
                };
                let ((t2, c2), sum) = match path {
                    0 => {
                        let rs = desired(&cluster, &ctx);
                        let at = split(&mut t[path]);
                        (at, enforcer.sync(&rs).expect("sync"))
                    }
                    1 => {
                        let rs = held.desired(&cluster, &ctx);
                        let at = split(&mut t[path]);
                        (at, enforcer.sync(&rs).expect("sync"))
                    }
                    _ => {
                        let u = agent.update(&cluster, &ctx);
                        let at = split(&mut t[path]);
                        (at, enforcer.apply(u).expect("apply"))
                    }
                };
                t[path][2].push(ms(t2.elapsed()));
                t[path][5].push(cpu_ms() - c2);
                let t3 = Instant::now();
                t[path][0].push(ms(t1 - t0));
                t[path][3].push(ms(t3 - t0));
                assert_eq!(lab.connects(), open, "{}: enforced", PATHS[path]);
                changed_elems[path].push((sum.elements_added + sum.elements_deleted) as f64);
                say(&format!(
                    "change {step} ({}): apply {:.3} ms, compile {:.1} ms, sync {:.1} ms, total {:.1} ms ({} elements changed)",
                    PATHS[path],
                    ms(t1 - t0),
                    t[path][1].last().unwrap(),
                    t[path][2].last().unwrap(),
                    ms(t3 - t0),
                    sum.elements_added + sum.elements_deleted
                ));
            }
        }
    }

    // --- 3. full sync: an empty namespace's table to the full 1000-policy one.
    let fresh = Netns::with_prefix("weft-b-pol", "full");
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
    println!("{} changes per path (the server namespace's policy p00 closing and opening tcp/{PORT} in turn, each verified by a probe), paths alternating in rounds of two changes; medians in ms.", 2 * (changes as usize).div_ceil(2));
    println!();
    println!("| path | apply to Cluster | compile | Enforcer | total | compile, CPU | Enforcer, CPU | elements changed |");
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    for (i, name) in PATHS.iter().enumerate() {
        let [a, c, e, tot, cc, ec] = &mut t[i];
        println!(
            "| {name} | {:.3} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.0} |",
            median(a),
            median(c),
            median(e),
            median(tot),
            median(cc),
            median(ec),
            median(&mut changed_elems[i])
        );
    }
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

/// The compiler alone (no kernel), in CPU time of this thread (the machine is shared, so
/// wall time would measure the others): table size, full compile, and one policy change through
/// `desired()`, `Incremental::desired()` and `Incremental::update()`, at 100 and 1000
/// policies.
fn compile_only() {
    let ctx = ctx();
    println!("| policies | map elements | desired() full | change: apply | change: desired() | change: `Incremental::desired()`, previous table held (+ diff) | change: `Incremental::update()` | elements in the delta | subject classes recomputed |");
    println!("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    let mut pod_changes = Vec::new();
    for per_ns in [2, POLICIES_PER_NS] {
        let mut c = with_policies(per_ns);
        let t0 = cpu_ms();
        let rs = desired(&c, &ctx);
        let full = cpu_ms() - t0;
        let n = elements(&rs);
        let versions = [
            np(&policy_yaml(SERVER % NAMESPACES, 0, true)),
            np(&policy_yaml(SERVER % NAMESPACES, 0, false)),
        ];
        // The previous agent: the Enforcer kept the last table, which shared its maps
        // with the compiler's, so the compiler's edit copied each map it changed and the
        // diff compared them whole. The agent now: `update()` returns the touched
        // elements only. Alternating, two changes each.
        let mut held_inc = Incremental::default();
        let mut prev = held_inc.desired(&c, &ctx);
        let mut agent = Incremental::default();
        let _ = agent.update(&c, &ctx);
        let (mut ap, mut de, mut held, mut up, mut delta_n, mut pods) = (
            Vec::new(),
            Vec::new(),
            Vec::new(),
            Vec::new(),
            Vec::new(),
            0,
        );
        let mut step = 0;
        for round in 0..6 {
            for k in 0..3 {
                let path = (round + k) % 3;
                if path == 1 {
                    prev = held_inc.desired(&c, &ctx);
                } else if path == 2 {
                    let _ = agent.update(&c, &ctx);
                }
                for _ in 0..2 {
                    let t0 = cpu_ms();
                    c.apply_network_policy(&versions[step % 2]).unwrap();
                    step += 1;
                    let t1 = cpu_ms();
                    ap.push(t1 - t0);
                    match path {
                        0 if de.len() < 4 => {
                            let _ = desired(&c, &ctx);
                            de.push(cpu_ms() - t1);
                        }
                        0 => {}
                        1 => {
                            let next = held_inc.desired(&c, &ctx);
                            let mut batch = weft_nft::netlink::Batch::new(1);
                            weft_nft::diff::incremental(&prev, &next, &mut batch).unwrap();
                            held.push(cpu_ms() - t1);
                            prev = next;
                        }
                        _ => {
                            let u = agent.update(&c, &ctx);
                            up.push(cpu_ms() - t1);
                            pods = agent.recompiled;
                            if let weft_policy::desired::Update::Delta(d) = &u {
                                delta_n.push(d.elements() as f64);
                            }
                        }
                    }
                }
            }
        }
        // Pod changes in the agent's compiler: a pod like ns00/p03 comes and goes, and
        // p03 is relabelled to a label set no pod has and back (before, each was a
        // whole compile, as `desired()`).
        let (mut come_go, mut relabel) = (Vec::new(), Vec::new());
        let base = c.pod(&ns_name(0), "p03").expect("p03").clone();
        for r in 0..6u32 {
            let mut extra = base.clone();
            extra.name = "extra".into();
            extra.ips = vec![std::net::IpAddr::V4(pod_ip(1000 + r))];
            let t0 = cpu_ms();
            c.upsert_pod(extra);
            let _ = agent.update(&c, &ctx);
            let t1 = cpu_ms();
            c.delete_pod(&ns_name(0), "extra");
            let _ = agent.update(&c, &ctx);
            come_go.extend([t1 - t0, cpu_ms() - t1]);
            let mut moved = base.clone();
            moved.labels.insert("app".into(), format!("x{r}"));
            let t0 = cpu_ms();
            c.upsert_pod(moved);
            let _ = agent.update(&c, &ctx);
            let t1 = cpu_ms();
            c.upsert_pod(base.clone());
            let _ = agent.update(&c, &ctx);
            relabel.extend([t1 - t0, cpu_ms() - t1]);
        }
        pod_changes.push((c.policies.len(), median(&mut come_go), median(&mut relabel)));
        println!(
            "| {} | {n} | {full:.0} ms | {:.3} ms | {:.0} ms | {:.1} ms | {:.1} ms | {:.0} | {pods} |",
            c.policies.len(),
            median(&mut ap),
            median(&mut de),
            median(&mut held),
            median(&mut up),
            median(&mut delta_n),
        );
    }
    println!();
    println!(
        "Pod changes, `Incremental::update()` (the agent's compiler), CPU time, medians of 12:"
    );
    println!();
    println!(
        "| policies | a pod like another comes or goes | a pod relabelled to new labels or back |"
    );
    println!("| ---: | ---: | ---: |");
    for (n, cg, rl) in pod_changes {
        println!("| {n} | {cg:.1} ms | {rl:.1} ms |");
    }
}

/// Only the agent's compiler on policy changes at 1000 x 1000, in a loop, for a profiler
/// (`WEFT_BENCH_PROFILE_UPDATE=N`): nothing else runs, so a profile is of this path alone.
fn profile_update(n: u32) {
    let ctx = ctx();
    let mut c = with_policies(POLICIES_PER_NS);
    let versions = [
        np(&policy_yaml(SERVER % NAMESPACES, 0, true)),
        np(&policy_yaml(SERVER % NAMESPACES, 0, false)),
    ];
    let mut agent = Incremental::default();
    let _ = agent.update(&c, &ctx);
    let mut t = Vec::new();
    for i in 0..n as usize {
        c.apply_network_policy(&versions[i % 2]).unwrap();
        let t0 = cpu_ms();
        let _ = agent.update(&c, &ctx);
        t.push(cpu_ms() - t0);
    }
    println!(
        "{n} policy changes, `update()` CPU median {:.1} ms",
        median(&mut t)
    );
}
