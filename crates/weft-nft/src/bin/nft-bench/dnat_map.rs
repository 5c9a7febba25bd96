//! `--shape dnat-map`: the same services and endpoints as the prescribed shape, held as data
//! instead of chains. One rule per protocol does `dnat ip to ip daddr . meta l4proto . th dport .
//! numgen random mod 10 map @backends`: a service is ten elements (one per endpoint slot), an
//! endpoint change replaces one element. The table has three chains whatever N is, so a
//! commit's walk over every chain costs nothing, and elements of a map whose data are not
//! verdicts need no re-validation. This is the shape the goals call for; it is
//! measured here to show what the kernel allows once the chains are gone.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use weft_nft::*;

use super::{median, ms, service_ip, touched_round_trip, Netns, ENDPOINTS};

const TABLE: &str = "weft-bench-map";

fn endpoint_ip(i: usize, j: usize, generation: usize) -> Ipv4Addr {
    super::endpoint_ip(i, j, generation)
}

fn key(i: usize, j: usize) -> Vec<Value> {
    vec![
        Value::Ipv4(service_ip(i)),
        Value::Proto(6),
        Value::Port(80),
        Value::Integer(j as u32),
    ]
}

fn target(i: usize, j: usize, generation: usize) -> Elem {
    Elem::value(vec![
        Value::Ipv4(endpoint_ip(i, j, generation)),
        Value::Port(8080),
    ])
}

fn backends_key() -> Vec<Selector> {
    vec![
        Selector::IpDaddr,
        Selector::MetaL4proto,
        Selector::ThDport,
        Selector::NumgenRandom(ENDPOINTS as u32),
    ]
}

fn ruleset(n: usize) -> Ruleset {
    let mut t = Table::new(Family::Ip, TABLE);
    let mut backends = Set::map(
        "backends",
        backends_key().iter().map(|k| k.key_type()).collect(),
        DataType::Value(vec![KeyType::Ipv4Addr, KeyType::InetService]),
    );
    backends.typeof_key = Some(backends_key());
    for i in 0..n {
        for j in 0..ENDPOINTS {
            backends.insert(key(i, j), target(i, j, 0));
        }
    }
    t.add_set(backends);
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
    // A port from a map needs the protocol known first: one rule per protocol.
    let mut services = Chain::regular("services");
    for proto in [6, 17] {
        services = services.with_rule(Rule::new(vec![
            Stmt::eq(Selector::MetaL4proto, Value::Proto(proto)),
            Stmt::DnatMap {
                key: backends_key(),
                map: SetRef::Named("backends".into()),
            },
        ]));
    }
    t.add_chain(services);
    t.add_chain(
        Chain::regular("mark-for-masquerade").with_rule(Rule::new(vec![Stmt::MarkOr {
            ct: false,
            bits: 0x4000,
        }])),
    );
    let mut rs = Ruleset::default();
    rs.add_table(t);
    rs
}

fn backends(rs: &mut Ruleset) -> &mut Set {
    let t = rs.table_mut(Family::Ip, TABLE).expect("map table");
    std::sync::Arc::make_mut(t.sets.get_mut("backends").expect("backends"))
}

fn kernel_backends(be: &mut Backend) -> std::collections::BTreeMap<Key, Elem> {
    be.read_table(Family::Ip, TABLE)
        .expect("read back")
        .expect("table present")
        .sets
        .remove("backends")
        .expect("backends map")
        .elements
}

fn nft_script(lines: &[String]) -> String {
    lines.join("\n") + "\n"
}

fn nft_elem(i: usize, j: usize, generation: usize) -> String {
    format!(
        "{} . tcp . 80 . {j} : {} . 8080",
        service_ip(i),
        endpoint_ip(i, j, generation)
    )
}

/// Full apply, one added service and one changed endpoint, weft and `nft -f`, at each size.
pub fn run(ns: &Netns, be: &mut Backend, sizes: &[usize], inc_runs: usize, nft_full_max: usize) {
    println!("| N | elements | chains | (a) weft full | (b) nft -f full | b/a | (c) weft add svc | (c) nft -f | (d) weft endpoint | (d) nft -f |");
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for &n in sizes {
        let model = ruleset(n);
        let _ = be.delete_table(Family::Ip, TABLE);
        let t0 = Instant::now();
        be.apply_full(&model).expect("weft full apply");
        let full = t0.elapsed();

        let mut added = model.clone();
        for j in 0..ENDPOINTS {
            backends(&mut added).insert(key(n, j), target(n, j, 0));
        }
        let (k, j) = (n / 2, 3);
        let mut changed = model.clone();
        backends(&mut changed).insert(key(k, j), target(k, j, 1));
        // The controller names the elements it changed, so the diff is as small as they are.
        let mut touched_add = diff::Touched::default();
        for j in 0..ENDPOINTS {
            touched_add.element(Family::Ip, TABLE, "backends", key(n, j));
        }
        let mut touched_ep = diff::Touched::default();
        touched_ep.element(Family::Ip, TABLE, "backends", key(k, j));
        // The kernel really holds what each path wrote: read back once per size.
        be.apply_touched(&model, &added, &touched_add)
            .expect("add service");
        assert_eq!(kernel_backends(be), backends(&mut added).elements);
        be.apply_touched(&added, &model, &touched_add)
            .expect("revert");
        be.apply_touched(&model, &changed, &touched_ep)
            .expect("change endpoint");
        assert_eq!(kernel_backends(be), backends(&mut changed).elements);
        be.apply_touched(&changed, &model, &touched_ep)
            .expect("revert");
        let (mut add, mut ep) = (Vec::new(), Vec::new());
        for _ in 0..inc_runs {
            add.push(touched_round_trip(be, &model, &added, &touched_add));
            ep.push(touched_round_trip(be, &model, &changed, &touched_ep));
        }

        let (mut nft_full, mut nft_add, mut nft_ep) = (None, Vec::new(), Vec::new());
        if n <= nft_full_max {
            be.delete_table(Family::Ip, TABLE).expect("delete");
            nft_full = Some(super::nft_f(ns, &render::ruleset(&model)));
            let add_script = nft_script(&[format!(
                "add element ip {TABLE} backends {{ {} }}",
                (0..ENDPOINTS)
                    .map(|j| nft_elem(n, j, 0))
                    .collect::<Vec<_>>()
                    .join(", ")
            )]);
            let del_script = nft_script(&[format!(
                "delete element ip {TABLE} backends {{ {} }}",
                (0..ENDPOINTS)
                    .map(|j| format!("{} . tcp . 80 . {j}", service_ip(n)))
                    .collect::<Vec<_>>()
                    .join(", ")
            )]);
            let ep_key = format!("{} . tcp . 80 . {j}", service_ip(k));
            let ep_script = nft_script(&[
                format!("delete element ip {TABLE} backends {{ {ep_key} }}"),
                format!(
                    "add element ip {TABLE} backends {{ {} }}",
                    nft_elem(k, j, 1)
                ),
            ]);
            let ep_back = nft_script(&[
                format!("delete element ip {TABLE} backends {{ {ep_key} }}"),
                format!(
                    "add element ip {TABLE} backends {{ {} }}",
                    nft_elem(k, j, 0)
                ),
            ]);
            for _ in 0..inc_runs.min(5) {
                nft_add.push(super::nft_f(ns, &add_script));
                super::nft_f(ns, &del_script);
                nft_ep.push(super::nft_f(ns, &ep_script));
                super::nft_f(ns, &ep_back);
            }
        }
        let opt = |v: Vec<Duration>| (!v.is_empty()).then(|| ms(median(v)));
        let nft_full_s = nft_full.map(ms).unwrap_or_else(|| "-".into());
        let ratio = nft_full
            .map(|b| format!("{:.1}x", b.as_secs_f64() / full.as_secs_f64()))
            .unwrap_or_else(|| "-".into());
        println!(
            "| {n} | {} | 3 | {} | {nft_full_s} | {ratio} | {} | {} | {} | {} |",
            n * ENDPOINTS,
            ms(full),
            opt(add).unwrap_or_default(),
            opt(nft_add).unwrap_or_else(|| "-".into()),
            opt(ep).unwrap_or_default(),
            opt(nft_ep).unwrap_or_else(|| "-".into()),
        );
        let _ = be.delete_table(Family::Ip, TABLE);
    }
}
