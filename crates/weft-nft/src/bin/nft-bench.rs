//! Services-shaped ruleset benchmark: weft-nft over netlink against `nft -f`.
//!
//! `cargo run --release -p weft-nft --bin nft-bench -- [--sizes 1000,10000,30000]
//!  [--full-runs 3] [--inc-runs 11] [--nft-full-max 30000]`
//!
//! Runs as root inside a network namespace it creates and removes.

use std::net::{IpAddr, Ipv4Addr};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use weft_nft::*;

const TABLE: &str = "weft-bench";
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
    let mut vmap = Set::map("", vec![KeyType::Integer], DataType::Verdict);
    for j in 0..ENDPOINTS {
        vmap.insert(
            vec![Value::Integer(j as u32)],
            Elem::verdict(Verdict::Goto(format!("sep-{i}-{j}"))),
        );
    }
    Chain::regular(format!("svc-{i}")).with_rule(Rule::new(vec![Stmt::Vmap {
        key: vec![Selector::NumgenRandom(ENDPOINTS as u32)],
        map: SetRef::Anonymous(Box::new(vmap)),
    }]))
}

fn add_service(t: &mut Table, i: usize) {
    t.add_chain(service_chain(i));
    for j in 0..ENDPOINTS {
        t.add_chain(endpoint_chain(i, j, 0));
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
    let c = service_chain(i);
    s.push_str(&format!(
        "add rule ip {TABLE} svc-{i} {}\n",
        render::rule(&c.rules[0], Family::Ip)
    ));
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

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
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
    let nft_full_max: usize = arg(&args, "--nft-full-max")
        .and_then(|s| s.parse().ok())
        .unwrap_or(usize::MAX);

    let ns = Netns::new();
    let mut be = Backend::open_in(std::path::Path::new(&format!("/run/netns/{}", ns.0)))
        .expect("nf_tables socket");
    println!("| N | objects | (a) weft full | (b) nft -f full | b/a | (c) weft add svc | (c) nft -f add svc | ratio | (d) weft endpoint | (d) nft -f endpoint | ratio |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    for &n in &sizes {
        let model = services(n);
        let t = model.table(Family::Ip, TABLE).expect("table");
        let objects = format!(
            "{} chains, {} rules, {} map elements",
            t.chains.len(),
            t.chains.values().map(|c| c.rules.len()).sum::<usize>(),
            n
        );

        // (a) full apply into an empty namespace.
        let mut weft_full = Vec::new();
        for _ in 0..full_runs {
            let _ = be.delete_table(Family::Ip, TABLE);
            let t0 = Instant::now();
            be.apply_full(&model).expect("weft full apply");
            weft_full.push(t0.elapsed());
        }
        // (b) the same ruleset through nft -f.
        let nft_full = if n <= nft_full_max {
            let script = render::ruleset(&model);
            let mut v = Vec::new();
            for _ in 0..full_runs.min(if n >= 10_000 { 1 } else { full_runs }) {
                be.delete_table(Family::Ip, TABLE).expect("delete");
                v.push(nft_f(&ns, &script));
            }
            Some(median(v))
        } else {
            None
        };
        // Both incremental paths start from the weft-applied full ruleset.
        let _ = be.delete_table(Family::Ip, TABLE);
        be.apply_full(&model).expect("weft full apply");

        // (c) one added service.
        let mut added = model.clone();
        add_service(table_mut(&mut added), n);
        let mut weft_add = Vec::new();
        for _ in 0..inc_runs {
            let t0 = Instant::now();
            be.apply_incremental(&model, &added)
                .expect("weft add service");
            weft_add.push(t0.elapsed());
            be.apply_incremental(&added, &model).expect("revert");
        }
        let script = nft_add_service(n);
        let mut nft_add = Vec::new();
        for _ in 0..inc_runs.min(5) {
            nft_add.push(nft_f(&ns, &script));
            be.apply_incremental(&added, &model).expect("revert");
        }

        // (d) one endpoint of one service changes address.
        let (k, j) = (n / 2, 3);
        let mut changed = model.clone();
        table_mut(&mut changed).add_chain(endpoint_chain(k, j, 1));
        let mut weft_ep = Vec::new();
        for _ in 0..inc_runs {
            let t0 = Instant::now();
            be.apply_incremental(&model, &changed)
                .expect("weft endpoint change");
            weft_ep.push(t0.elapsed());
            be.apply_incremental(&changed, &model).expect("revert");
        }
        let script = format!(
            "flush chain ip {TABLE} sep-{k}-{j}\n{}",
            nft_endpoint_rules(k, j, 1)
        );
        let mut nft_ep = Vec::new();
        for _ in 0..inc_runs.min(5) {
            nft_ep.push(nft_f(&ns, &script));
            be.apply_incremental(&changed, &model).expect("revert");
        }

        let (a, c, d) = (median(weft_full), median(weft_add), median(weft_ep));
        let (c2, d2) = (median(nft_add), median(nft_ep));
        let ratio = |x: Duration, y: Duration| format!("{:.1}x", x.as_secs_f64() / y.as_secs_f64());
        println!(
            "| {n} | {objects} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            ms(a),
            nft_full.map(ms).unwrap_or_else(|| "skipped".into()),
            nft_full.map(|b| ratio(b, a)).unwrap_or_else(|| "-".into()),
            ms(c),
            ms(c2),
            ratio(c2, c),
            ms(d),
            ms(d2),
            ratio(d2, d),
        );
        let _ = be.delete_table(Family::Ip, TABLE);
    }
}
