//! Services-shaped ruleset benchmark: weft-nft over netlink against `nft -f`.
//!
//! `cargo run --release -p weft-nft --bin nft-bench -- [--sizes 1000,10000,30000]
//!  [--full-runs 3] [--inc-runs 11] [--nft-full-max 30000] [--pick cascade|named|anon|shared]
//!  [--shape chains|dnat-map]`
//!
//! `--shape chains` (default) is the Services shape, a chain per service and per
//! endpoint; `--shape dnat-map` holds the same services as elements of one DNAT map.
//!
//! Runs as root inside a network namespace it creates and removes.

use std::net::{IpAddr, Ipv4Addr};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use weft_nft::*;

mod cpu;
mod dnat_map;
use cpu::{cpu_since, cpu_times, print_cpu_split, CpuRow};

const TABLE: &str = "weft-bench";

/// How a service chain picks an endpoint: `numgen random mod 10 vmap` over a per-service
/// map, or with `--pick shared` one named verdict map keyed by
/// `ip daddr . meta l4proto . th dport . numgen random mod 10` (which Linux then validates
/// once per service chain, quadratic in another way).
static ANON_PICK: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);

/// `--pick named`: the per-service map is a named set `svc-N-eps`; `--pick anon`
/// makes it anonymous as kube-proxy does. Linux binds each anonymous set with a walk over
/// the whole transaction so far, which makes a full load with one per service quadratic.
static NAMED_VMAPS: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// `--pick cascade` (default): no per-service set at all; the service chain tries endpoint k with
/// `numgen random mod (10 - k) 0 goto sep-i-k`, which is uniform overall (as kube-proxy's
/// iptables mode does with probabilities).
static CASCADE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);

fn named_vmaps() -> bool {
    NAMED_VMAPS.load(std::sync::atomic::Ordering::Relaxed)
}

fn service_vmap(i: usize) -> Set {
    let mut vmap = Set::map(
        format!("svc-{i}-eps"),
        vec![KeyType::Integer],
        DataType::Verdict,
    );
    vmap.typeof_key = Some(vec![Selector::NumgenRandom(ENDPOINTS as u32)]);
    for j in 0..ENDPOINTS {
        vmap.insert(
            vec![Value::Integer(j as u32)],
            Elem::verdict(Verdict::Goto(format!("sep-{i}-{j}"))),
        );
    }
    vmap
}

fn anon_pick() -> bool {
    ANON_PICK.load(std::sync::atomic::Ordering::Relaxed)
}

fn endpoint_key() -> Vec<Selector> {
    vec![
        Selector::IpDaddr,
        Selector::MetaL4proto,
        Selector::ThDport,
        Selector::NumgenRandom(ENDPOINTS as u32),
    ]
}
const ENDPOINTS: usize = 10;

struct Netns(String);

impl Netns {
    fn new() -> Netns {
        let name = format!("weft-t-nft-bench-{}", std::process::id());
        let st = Command::new("ip").args(["netns", "add", &name]).status();
        assert!(
            st.map(|s| s.success()).unwrap_or(false),
            "ip netns add {name} failed (root needed)"
        );
        Netns(name)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

fn addr(base: [u8; 2], i: usize) -> Ipv4Addr {
    Ipv4Addr::new(base[0], base[1] + (i >> 16) as u8, (i >> 8) as u8, i as u8)
}

fn service_ip(i: usize) -> Ipv4Addr {
    addr([10, 96], i)
}

fn endpoint_ip(i: usize, j: usize, generation: usize) -> Ipv4Addr {
    addr([10, 128 + 8 * generation as u8], i * ENDPOINTS + j)
}

fn endpoint_chain(i: usize, j: usize, generation: usize) -> Chain {
    let ip = endpoint_ip(i, j, generation);
    Chain::regular(format!("sep-{i}-{j}"))
        .with_rule(Rule::new(vec![
            Stmt::eq(Selector::IpSaddr, Value::Ipv4(ip)),
            Stmt::jump("mark-for-masquerade"),
        ]))
        .with_rule(Rule::new(vec![
            Stmt::eq(Selector::MetaL4proto, Value::Proto(6)),
            Stmt::Dnat {
                addr: IpAddr::V4(ip),
                port: Some(8080),
            },
        ]))
}

fn service_chain(i: usize) -> Chain {
    if CASCADE.load(std::sync::atomic::Ordering::Relaxed) {
        let mut c = Chain::regular(format!("svc-{i}"));
        for k in 0..ENDPOINTS {
            let left = (ENDPOINTS - k) as u32;
            let pick = if left > 1 {
                vec![
                    Stmt::eq(Selector::NumgenRandom(left), Value::Integer(0)),
                    Stmt::goto(format!("sep-{i}-{k}")),
                ]
            } else {
                vec![Stmt::goto(format!("sep-{i}-{k}"))]
            };
            c.rules.push(Rule::new(pick));
        }
        return c;
    }
    if !anon_pick() {
        return Chain::regular(format!("svc-{i}")).with_rule(Rule::new(vec![Stmt::Vmap {
            key: endpoint_key(),
            map: SetRef::Named("service-endpoints".into()),
        }]));
    }
    let map = if named_vmaps() {
        SetRef::Named(format!("svc-{i}-eps"))
    } else {
        SetRef::Anonymous(Box::new(service_vmap(i)))
    };
    Chain::regular(format!("svc-{i}")).with_rule(Rule::new(vec![Stmt::Vmap {
        key: vec![Selector::NumgenRandom(ENDPOINTS as u32)],
        map,
    }]))
}

fn endpoint_elements(i: usize) -> Vec<(Vec<Value>, Elem)> {
    (0..ENDPOINTS)
        .map(|j| {
            (
                vec![
                    Value::Ipv4(service_ip(i)),
                    Value::Proto(6),
                    Value::Port(80),
                    Value::Integer(j as u32),
                ],
                Elem::verdict(Verdict::Goto(format!("sep-{i}-{j}"))),
            )
        })
        .collect()
}

fn add_service(t: &mut Table, i: usize) {
    t.add_chain(service_chain(i));
    for j in 0..ENDPOINTS {
        t.add_chain(endpoint_chain(i, j, 0));
    }
    if named_vmaps() {
        t.add_set(service_vmap(i));
    }
    if !anon_pick() {
        let eps = Arc::make_mut(t.sets.get_mut("service-endpoints").expect("map exists"));
        for (k, e) in endpoint_elements(i) {
            eps.insert(k, e);
        }
    }
    let map = Arc::make_mut(t.sets.get_mut("service-ips").expect("map exists"));
    map.insert(
        vec![Value::Ipv4(service_ip(i)), Value::Proto(6), Value::Port(80)],
        Elem::verdict(Verdict::Goto(format!("svc-{i}"))),
    );
}

fn services(n: usize) -> Ruleset {
    let mut t = Table::new(Family::Ip, TABLE);
    t.add_set(Set::map(
        "service-ips",
        vec![KeyType::Ipv4Addr, KeyType::InetProto, KeyType::InetService],
        DataType::Verdict,
    ));
    if !anon_pick() {
        let mut eps = Set::map(
            "service-endpoints",
            endpoint_key().iter().map(|k| k.key_type()).collect(),
            DataType::Verdict,
        );
        eps.typeof_key = Some(endpoint_key());
        t.add_set(eps);
    }
    t.add_chain(
        Chain::base(
            "prerouting",
            BaseChain {
                kind: ChainType::Nat,
                hook: Hook::Prerouting,
                priority: -100,
                policy: Policy::Accept,
            },
        )
        .with_rule(Rule::new(vec![Stmt::jump("services")])),
    );
    t.add_chain(
        Chain::regular("services").with_rule(Rule::new(vec![Stmt::Vmap {
            key: vec![Selector::IpDaddr, Selector::MetaL4proto, Selector::ThDport],
            map: SetRef::Named("service-ips".into()),
        }])),
    );
    t.add_chain(
        Chain::regular("mark-for-masquerade").with_rule(Rule::new(vec![Stmt::MarkOr {
            ct: false,
            bits: 0x4000,
        }])),
    );
    for i in 0..n {
        add_service(&mut t, i);
    }
    let mut rs = Ruleset::default();
    rs.add_table(t);
    rs
}

fn table_mut(rs: &mut Ruleset) -> &mut Table {
    rs.table_mut(Family::Ip, TABLE).expect("bench table")
}

/// The `nft -f` script adding service `i` to an existing table.
fn nft_add_service(i: usize) -> String {
    let mut s = String::new();
    for j in 0..ENDPOINTS {
        s.push_str(&format!("add chain ip {TABLE} sep-{i}-{j}\n"));
    }
    s.push_str(&format!("add chain ip {TABLE} svc-{i}\n"));
    for j in 0..ENDPOINTS {
        s.push_str(&nft_endpoint_rules(i, j, 0));
    }
    if named_vmaps() {
        let m = service_vmap(i);
        let elems: Vec<String> = (0..ENDPOINTS)
            .map(|j| format!("{j} : goto sep-{i}-{j}"))
            .collect();
        s.push_str(&format!(
            "add map ip {TABLE} {} {{ typeof numgen random mod {ENDPOINTS} : verdict; elements = {{ {} }}; }}\n",
            m.name,
            elems.join(", ")
        ));
    }
    for r in &service_chain(i).rules {
        s.push_str(&format!(
            "add rule ip {TABLE} svc-{i} {}\n",
            render::rule(r, Family::Ip)
        ));
    }
    if !anon_pick() {
        let elems: Vec<String> = endpoint_elements(i)
            .iter()
            .map(|(k, e)| {
                let keys: Vec<String> = k.iter().map(render::value).collect();
                let v = match &e.data {
                    Some(ElemData::Verdict(v)) => render::verdict(v),
                    _ => String::new(),
                };
                format!("{} : {v}", keys.join(" . "))
            })
            .collect();
        // Declared again (a no-op when the map exists) so the script stands on its own.
        s.push_str(&format!(
            "add map ip {TABLE} service-endpoints {{ typeof ip daddr . meta l4proto . th dport . numgen random mod {ENDPOINTS} : verdict; }}\n"
        ));
        s.push_str(&format!(
            "add element ip {TABLE} service-endpoints {{ {} }}\n",
            elems.join(", ")
        ));
    }
    s.push_str(&format!(
        "add element ip {TABLE} service-ips {{ {} . tcp . 80 : goto svc-{i} }}\n",
        service_ip(i)
    ));
    s
}

fn nft_endpoint_rules(i: usize, j: usize, generation: usize) -> String {
    let c = endpoint_chain(i, j, generation);
    c.rules
        .iter()
        .map(|r| {
            format!(
                "add rule ip {TABLE} sep-{i}-{j} {}\n",
                render::rule(r, Family::Ip)
            )
        })
        .collect()
}

fn nft_f(ns: &Netns, script: &str) -> Duration {
    let path = std::env::temp_dir().join(format!("weft-nft-bench-{}.nft", std::process::id()));
    std::fs::write(&path, script).expect("writing nft script");
    let t0 = Instant::now();
    let out = Command::new("ip")
        .args(["netns", "exec", &ns.0, "nft", "-f"])
        .arg(&path)
        .output()
        .expect("running nft");
    let d = t0.elapsed();
    let _ = std::fs::remove_file(&path);
    assert!(
        out.status.success(),
        "nft -f failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    d
}

/// Applies `prev -> next` through the touched path and times it, then reverts.
fn touched_round_trip(
    be: &mut Backend,
    prev: &Ruleset,
    next: &Ruleset,
    touched: &diff::Touched,
) -> Duration {
    let t0 = Instant::now();
    be.apply_touched(prev, next, touched)
        .expect("weft touched update");
    let took = t0.elapsed();
    be.apply_touched(next, prev, touched).expect("revert");
    took
}

fn commit_floor(be: &mut Backend, runs: usize) -> Duration {
    let mut base = Table::new(Family::Ip, "weft-bench-floor");
    base.add_set(Set::new("s", vec![KeyType::Ipv4Addr]));
    let mut small = Ruleset::default();
    small.add_table(base);
    be.apply_full(&small).expect("floor table");
    let mut more = small.clone();
    let t = more
        .table_mut(Family::Ip, "weft-bench-floor")
        .expect("floor table");
    Arc::make_mut(t.sets.get_mut("s").expect("set")).insert(
        vec![Value::Ipv4(Ipv4Addr::new(1, 2, 3, 4))],
        Elem::default(),
    );
    let mut v = Vec::new();
    for _ in 0..runs {
        let t0 = Instant::now();
        be.apply_incremental(&small, &more).expect("floor element");
        v.push(t0.elapsed());
        be.apply_incremental(&more, &small).expect("floor revert");
    }
    let _ = be.delete_table(Family::Ip, "weft-bench-floor");
    median(v)
}

fn batch_mb(model: &Ruleset) -> String {
    let mut b = weft_nft::netlink::Batch::new(1);
    let _ = diff::full(model, &mut b);
    let bytes = b.finish().bytes().len();
    format!("{:.1} MB", bytes as f64 / 1e6)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn opt_median(v: Vec<Duration>) -> Option<Duration> {
    (!v.is_empty()).then(|| median(v))
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let sizes: Vec<usize> = arg(&args, "--sizes")
        .unwrap_or_else(|| "1000,10000,30000".into())
        .split(',')
        .filter_map(|s| s.parse().ok())
        .collect();
    let full_runs: usize = arg(&args, "--full-runs")
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let inc_runs: usize = arg(&args, "--inc-runs")
        .and_then(|s| s.parse().ok())
        .unwrap_or(11);
    let off =
        |f: &std::sync::atomic::AtomicBool| f.store(false, std::sync::atomic::Ordering::Relaxed);
    match arg(&args, "--pick").as_deref() {
        None | Some("cascade") => {}
        Some("named") => {
            off(&CASCADE);
            NAMED_VMAPS.store(true, std::sync::atomic::Ordering::Relaxed);
        }
        Some("anon") => off(&CASCADE),
        Some("shared") => {
            off(&CASCADE);
            off(&ANON_PICK);
        }
        Some(other) => panic!("--pick takes named, anon or shared, not {other}"),
    }
    let nft_full_max: usize = arg(&args, "--nft-full-max")
        .and_then(|s| s.parse().ok())
        .unwrap_or(usize::MAX);

    let ns = Netns::new();
    let mut be = Backend::open_in(std::path::Path::new(&format!("/run/netns/{}", ns.0)))
        .expect("nf_tables socket");
    match arg(&args, "--shape").as_deref() {
        None | Some("chains") => {}
        Some("dnat-map") => {
            dnat_map::run(&ns, &mut be, &sizes, inc_runs, nft_full_max);
            return;
        }
        Some(other) => panic!("--shape takes chains or dnat-map, not {other}"),
    }
    println!("| N | objects | (a) weft full | (b) nft -f full | b/a | (c) weft add svc | (c) weft, full diff | (c) nft -f | nft/weft | (d) weft endpoint | (d) weft, full diff | (d) nft -f | nft/weft | (d) weft's build, touched / full diff | kernel commit floor | batch |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    let mut cpu_rows: Vec<CpuRow> = Vec::new();
    for &n in &sizes {
        let model = services(n);
        let t = model.table(Family::Ip, TABLE).expect("table");
        let objects = format!(
            "{} chains, {} rules, {} map elements",
            t.chains.len(),
            t.chains.values().map(|c| c.rules.len()).sum::<usize>(),
            t.sets.values().map(|s| s.elements.len()).sum::<usize>(),
        );

        // (a) full apply into an empty namespace.
        let mut weft_full = Vec::new();
        let mut weft_cpu = Vec::new();
        for _ in 0..full_runs {
            let _ = be.delete_table(Family::Ip, TABLE);
            let (t0, c0) = (Instant::now(), cpu_times(libc::RUSAGE_THREAD));
            be.apply_full(&model).expect("weft full apply");
            weft_full.push(t0.elapsed());
            weft_cpu.push(cpu_since(libc::RUSAGE_THREAD, c0));
        }

        // (c) one added service, (d) one endpoint of one service changes address: weft
        // first, on the ruleset weft applied.
        let mut added = model.clone();
        add_service(table_mut(&mut added), n);
        let mut touched_add = diff::Touched::default();
        touched_add
            .set(Family::Ip, TABLE, "service-ips")
            .set(Family::Ip, TABLE, "service-endpoints")
            .set(Family::Ip, TABLE, format!("svc-{n}-eps"))
            .chain(Family::Ip, TABLE, format!("svc-{n}"));
        for j in 0..ENDPOINTS {
            touched_add.chain(Family::Ip, TABLE, format!("sep-{n}-{j}"));
        }
        let (k, j) = (n / 2, 3);
        let mut changed = model.clone();
        table_mut(&mut changed).add_chain(endpoint_chain(k, j, 1));
        let mut touched_ep = diff::Touched::default();
        touched_ep.chain(Family::Ip, TABLE, format!("sep-{k}-{j}"));
        let (mut weft_add, mut weft_add_full, mut weft_ep, mut weft_ep_full) =
            (vec![], vec![], vec![], vec![]);
        for _ in 0..inc_runs {
            weft_add.push(touched_round_trip(&mut be, &model, &added, &touched_add));
            let t0 = Instant::now();
            be.apply_incremental(&model, &added)
                .expect("weft add service");
            weft_add_full.push(t0.elapsed());
            be.apply_touched(&added, &model, &touched_add)
                .expect("revert");
            weft_ep.push(touched_round_trip(&mut be, &model, &changed, &touched_ep));
            let t0 = Instant::now();
            be.apply_incremental(&model, &changed)
                .expect("weft endpoint change");
            weft_ep_full.push(t0.elapsed());
            be.apply_touched(&changed, &model, &touched_ep)
                .expect("revert");
        }
        // The kernel's own floor: one element into a small set of another table, which
        // still commits a new generation over every chain in the namespace.
        let floor = commit_floor(&mut be, inc_runs);
        // weft's own share of (d): building the transaction, without sending it.
        let (mut build_touched, mut build_full) = (vec![], vec![]);
        for _ in 0..inc_runs {
            let mut b = weft_nft::netlink::Batch::new(1);
            let t0 = Instant::now();
            diff::incremental_touched(&model, &changed, &touched_ep, &mut b).expect("diff");
            build_touched.push(t0.elapsed());
            let mut b = weft_nft::netlink::Batch::new(1);
            let t0 = Instant::now();
            diff::incremental(&model, &changed, &mut b).expect("diff");
            build_full.push(t0.elapsed());
        }

        // (b) the same ruleset through nft -f, then nft's (c) and (d) on the ruleset nft
        // made (nft needs its own set userdata to parse element keys).
        let (mut nft_full, mut nft_add, mut nft_ep) = (vec![], vec![], vec![]);
        let mut nft_cpu = Vec::new();
        if n <= nft_full_max {
            let script = render::ruleset(&model);
            for _ in 0..(if n >= 10_000 { 1 } else { full_runs }) {
                be.delete_table(Family::Ip, TABLE).expect("delete");
                let c0 = cpu_times(libc::RUSAGE_CHILDREN);
                nft_full.push(nft_f(&ns, &script));
                nft_cpu.push(cpu_since(libc::RUSAGE_CHILDREN, c0));
            }
            let add_script = nft_add_service(n);
            let ep_script = format!(
                "flush chain ip {TABLE} sep-{k}-{j}\n{}",
                nft_endpoint_rules(k, j, 1)
            );
            for _ in 0..inc_runs.min(5) {
                nft_add.push(nft_f(&ns, &add_script));
                be.apply_touched(&added, &model, &touched_add)
                    .expect("revert");
                nft_ep.push(nft_f(&ns, &ep_script));
                be.apply_touched(&changed, &model, &touched_ep)
                    .expect("revert");
            }
        }

        let (a, c, d) = (median(weft_full), median(weft_add), median(weft_ep));
        let (cf, df) = (median(weft_add_full), median(weft_ep_full));
        let (b, c2, d2) = (
            opt_median(nft_full),
            opt_median(nft_add),
            opt_median(nft_ep),
        );
        let ratio = |x: Option<Duration>, y: Duration| {
            x.map(|x| format!("{:.1}x", x.as_secs_f64() / y.as_secs_f64()))
                .unwrap_or_else(|| "-".into())
        };
        let oms = |x: Option<Duration>| x.map(ms).unwrap_or_else(|| "skipped".into());
        println!(
            "| {n} | {objects} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {:.3} / {:.1} ms | {} | {} |",
            ms(a),
            oms(b),
            ratio(b, a),
            ms(c),
            ms(cf),
            oms(c2),
            ratio(c2, c),
            ms(d),
            ms(df),
            oms(d2),
            ratio(d2, d),
            median(build_touched).as_secs_f64() * 1e3,
            median(build_full).as_secs_f64() * 1e3,
            ms(floor),
            batch_mb(&model),
        );
        cpu_rows.push((n, a, weft_cpu, b, nft_cpu));
        let _ = be.delete_table(Family::Ip, TABLE);
    }
    print_cpu_split(&cpu_rows);
}
