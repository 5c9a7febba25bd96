//! Transactions are all or nothing, and the incremental applier reaches the desired state.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{fixture, Netns};
use weft_nft::netlink::decode::kernel_view;
use weft_nft::*;

/// `nft list ruleset` without the countdown of element expiry.
fn listing(ns: &Netns) -> String {
    let text = ns.nft_text();
    let mut out = Vec::new();
    let mut skip = false;
    for w in text.split(' ') {
        if skip {
            skip = false;
            continue;
        }
        if w == "expires" {
            skip = true;
            continue;
        }
        out.push(w);
    }
    out.join(" ")
}

fn assert_kernel_holds(be: &mut Backend, rs: &Ruleset) {
    for t in rs.tables.values() {
        let back = be
            .read_table(t.family, &t.name)
            .expect("read")
            .expect("table exists");
        assert_eq!(back, kernel_view(t).expect("lowering"), "table {}", t.name);
    }
}

#[test]
fn one_invalid_object_changes_nothing() {
    let ns = Netns::new("atom");
    let mut be = ns.backend();
    let rs = fixture::ruleset();
    be.apply_full(&rs).expect("apply");
    let before = listing(&ns);

    // A full replacement whose last chain jumps nowhere: the whole thing must be refused.
    let mut bad = rs.clone();
    let t = bad.table_mut(Family::Ip, "weft4").expect("table");
    t.chains.remove("svc-a");
    t.add_chain(Chain::regular("zzz").with_rule(Rule::new(vec![Stmt::jump("no-such-chain")])));
    let err = be.apply_full(&bad).expect_err("must be refused");
    let msg = err.to_string();
    assert!(
        msg.contains("adding rule #0 to chain ip weft4 zzz"),
        "{msg}"
    );
    assert_eq!(err.errno(), Some(libc::ENOENT), "{msg}");
    assert_kernel_holds(&mut be, &rs);
    assert_eq!(listing(&ns), before);

    // A brand-new table with one bad element leaves no table behind.
    let mut fresh = Ruleset::default();
    let mut t = Table::new(Family::Ip, "fresh");
    t.add_chain(Chain::regular("a"));
    let mut m = Set::map("m", vec![KeyType::InetService], DataType::Verdict);
    m.insert(
        vec![Value::Port(1)],
        Elem::verdict(Verdict::Jump("a".into())),
    );
    m.insert(
        vec![Value::Port(2)],
        Elem::verdict(Verdict::Goto("missing".into())),
    );
    t.add_set(m);
    fresh.add_table(t);
    let err = be.apply_full(&fresh).expect_err("must be refused");
    assert!(
        err.to_string().contains("elements of set ip fresh m"),
        "{err}"
    );
    assert!(be.read_table(Family::Ip, "fresh").expect("read").is_none());
    assert_eq!(listing(&ns), before);
}

#[test]
fn invalid_models_are_refused_before_sending() {
    let mut rs = Ruleset::default();
    let mut t = Table::new(Family::Ip, "x");
    t.add_chain(Chain::regular("a").with_rule(Rule::new(vec![Stmt::Dnat {
        addr: "10.0.0.1".parse().expect("addr"),
        port: Some(80),
    }])));
    rs.add_table(t);
    let mut b = weft_nft::netlink::Batch::new(1);
    let err = weft_nft::diff::full(&rs, &mut b).expect_err("port without protocol");
    assert!(err.to_string().contains("transport protocol"), "{err}");
}

#[test]
fn incremental_update_reaches_the_desired_state_and_sends_only_the_difference() {
    let ns = Netns::new("inc");
    let mut be = ns.backend();
    let prev = fixture::ruleset();
    be.apply_full(&prev).expect("apply");

    let nothing = be.apply_incremental(&prev, &prev.clone()).expect("no-op");
    assert!(nothing.is_empty(), "{nothing:?}");

    let mut desired = prev.clone();
    let t = desired.table_mut(Family::Ip, "weft4").expect("table");
    // A new service: a chain, an endpoint chain and one map element.
    t.add_chain(Chain::regular("sep-c-0").with_rule(Rule::new(vec![
        Stmt::eq(Selector::MetaL4proto, Value::Proto(6)),
        Stmt::Dnat {
            addr: "10.244.2.9".parse().expect("addr"),
            port: Some(80),
        },
    ])));
    t.add_chain(Chain::regular("svc-c").with_rule(Rule::new(vec![Stmt::goto("sep-c-0")])));
    let svc = Arc::make_mut(t.sets.get_mut("svc-ips").expect("map"));
    svc.insert(
        vec![
            fixture::v4([10, 96, 0, 3]),
            Value::Proto(6),
            Value::Port(443),
        ],
        Elem::verdict(Verdict::Goto("svc-c".into())),
    );
    // One element changes its verdict, one element goes.
    svc.insert(
        vec![
            fixture::v4([10, 96, 0, 2]),
            Value::Proto(17),
            Value::Port(53),
        ],
        Elem::verdict(Verdict::Goto("svc-c".into())),
    );
    let ports = Arc::make_mut(t.sets.get_mut("ports").expect("ports"));
    ports.elements.remove(&Key(vec![Value::Port(443)]));
    // An endpoint changes address: its chain is replaced.
    t.add_chain(Chain::regular("sep-a-1").with_rule(Rule::new(vec![
        Stmt::eq(Selector::MetaL4proto, Value::Proto(6)),
        Stmt::Dnat {
            addr: "10.244.1.99".parse().expect("addr"),
            port: Some(8080),
        },
    ])));
    // A base chain changes policy only; a set is redefined under a rule that uses it.
    let fwd = Arc::make_mut(t.chains.get_mut("forward").expect("forward"));
    if let Some(b) = fwd.base.as_mut() {
        b.policy = Policy::Accept;
    }
    let aff = Arc::make_mut(t.sets.get_mut("aff-a").expect("aff"));
    aff.timeout = Some(Duration::from_secs(10));
    // A set nobody uses is dropped, another added.
    t.sets.remove("recent");
    let mut extra = Set::new("extra", vec![KeyType::Ipv4Addr]);
    extra.insert(vec![fixture::v4([9, 9, 9, 9])], Elem::default());
    t.add_set(extra);
    // The inet table goes away entirely, a new table appears.
    desired.tables.remove(&(Family::Inet, "weft".to_owned()));
    let mut t6 = Table::new(Family::Ip6, "weft6");
    t6.add_chain(Chain::regular("c").with_rule(Rule::new(vec![Stmt::Counter])));
    desired.add_table(t6);

    let sum = be.apply_incremental(&prev, &desired).expect("incremental");
    assert_kernel_holds(&mut be, &desired);
    assert!(be.read_table(Family::Inet, "weft").expect("read").is_none());
    assert_eq!(sum.elements_added, 3, "{sum:?}"); // new service, changed verdict, set `extra`
    assert_eq!(sum.elements_deleted, 2, "{sum:?}"); // changed verdict, port 443
    assert_eq!(sum.sets_deleted, 2, "{sum:?}"); // recent, redefined aff-a
    let text = ns.nft_text();
    assert!(
        text.contains("10.96.0.3 . tcp . 443 : goto svc-c"),
        "{text}"
    );
    assert!(text.contains("dnat to 10.244.1.99:8080"), "{text}");
    assert!(!text.contains("10.244.1.6"), "{text}");

    // And back again.
    be.apply_incremental(&desired, &prev).expect("revert");
    assert_kernel_holds(&mut be, &prev);
    assert!(be.read_table(Family::Ip6, "weft6").expect("read").is_none());
}

#[test]
fn a_restarted_applier_adopts_the_kernel_state_and_fixes_only_the_difference() {
    let ns = Netns::new("adopt");
    let rs = fixture::ruleset();
    ns.backend().apply_full(&rs).expect("apply");

    // A new process with only its desired model: one chain and one element differ.
    let mut desired = rs.clone();
    let t = desired.table_mut(Family::Ip, "weft4").expect("table");
    t.add_chain(Chain::regular("sep-a-1").with_rule(Rule::new(vec![
        Stmt::eq(Selector::MetaL4proto, Value::Proto(6)),
        Stmt::Dnat {
            addr: "10.244.1.77".parse().expect("addr"),
            port: Some(8080),
        },
    ])));
    Arc::make_mut(t.sets.get_mut("ports").expect("ports"))
        .insert(vec![Value::Port(8443)], Elem::default());
    let mut be = ns.backend();
    let prev = be.adopt(&desired).expect("adopt");
    let sum = be.apply_incremental(&prev, &desired).expect("converge");
    assert_kernel_holds(&mut be, &desired);
    assert_eq!(sum.chains_replaced, 1, "{sum:?}");
    assert_eq!(sum.elements_added, 1, "{sum:?}");
    assert_eq!(sum.elements_deleted, 0, "{sum:?}");
    // Converged: adopting again finds nothing to do.
    let again = be.adopt(&desired).expect("adopt");
    assert!(be
        .apply_incremental(&again, &desired)
        .expect("no-op")
        .is_empty());
}

#[test]
fn removing_a_map_and_the_chains_its_elements_jump_to_in_one_step() {
    let ns = Netns::new("rmmap");
    let mut be = ns.backend();
    let mut t = Table::new(Family::Ip, "weft");
    let mut m = Set::map("eps", vec![KeyType::InetService], DataType::Verdict);
    for p in 0..3u16 {
        t.add_chain(
            Chain::regular(format!("ep-{p}"))
                .with_rule(Rule::new(vec![Stmt::Verdict(Verdict::Accept)])),
        );
        m.insert(
            vec![Value::Port(p)],
            Elem::verdict(Verdict::Goto(format!("ep-{p}"))),
        );
    }
    t.add_set(m);
    t.add_chain(Chain::regular("svc").with_rule(Rule::new(vec![Stmt::Vmap {
        key: vec![Selector::ThDport],
        map: weft_nft::SetRef::Named("eps".into()),
    }])));
    let mut full = Ruleset::default();
    full.add_table(t);
    be.apply_full(&full).expect("apply");
    let mut empty = Ruleset::default();
    empty.add_table(Table::new(Family::Ip, "weft"));
    be.apply_incremental(&full, &empty)
        .expect("remove map, its chains and its user");
    assert_kernel_holds(&mut be, &empty);
}

#[test]
fn touched_objects_alone_carry_an_update() {
    let ns = Netns::new("touch");
    let mut be = ns.backend();
    let prev = fixture::ruleset();
    be.apply_full(&prev).expect("apply");
    let mut desired = prev.clone();
    let t = desired.table_mut(Family::Ip, "weft4").expect("table");
    t.add_chain(Chain::regular("svc-d").with_rule(Rule::new(vec![Stmt::goto("sep-a-1")])));
    Arc::make_mut(t.sets.get_mut("svc-ips").expect("map")).insert(
        vec![
            fixture::v4([10, 96, 0, 4]),
            Value::Proto(6),
            Value::Port(80),
        ],
        Elem::verdict(Verdict::Goto("svc-d".into())),
    );
    t.add_chain(Chain::regular("sep-a-1").with_rule(Rule::new(vec![Stmt::Verdict(Verdict::Drop)])));
    let mut touched = weft_nft::diff::Touched::default();
    touched
        .chain(Family::Ip, "weft4", "svc-d")
        .chain(Family::Ip, "weft4", "sep-a-1")
        .set(Family::Ip, "weft4", "svc-ips");
    let sum = be
        .apply_touched(&prev, &desired, &touched)
        .expect("touched update");
    assert_eq!(
        (sum.chains_added, sum.chains_replaced, sum.elements_added),
        (1, 1, 1),
        "{sum:?}"
    );
    assert_kernel_holds(&mut be, &desired);
    be.apply_touched(&desired, &prev, &touched)
        .expect("and back");
    assert_kernel_holds(&mut be, &prev);
}

#[test]
fn touched_elements_alone_carry_an_update_of_a_large_map() {
    let ns = Netns::new("touch-elem");
    let mut be = ns.backend();
    let mut prev = fixture::ruleset();
    for p in 31000..33000u16 {
        targets(&mut prev).insert(
            vec![Value::Port(p)],
            Elem::value(vec![fixture::v4([10, 244, 2, 9]), Value::Port(8080)]),
        );
    }
    be.apply_full(&prev).expect("apply");
    // One element changes its target, one is added, one goes: named one by one.
    let mut desired = prev.clone();
    let m = targets(&mut desired);
    m.insert(
        vec![Value::Port(31000)],
        Elem::value(vec![fixture::v4([10, 244, 3, 3]), Value::Port(9090)]),
    );
    m.insert(
        vec![Value::Port(30999)],
        Elem::value(vec![fixture::v4([10, 244, 3, 4]), Value::Port(80)]),
    );
    m.elements.remove(&Key(vec![Value::Port(32999)]));
    let mut touched = weft_nft::diff::Touched::default();
    for p in [31000, 30999, 32999] {
        touched.element(Family::Ip, "weft4", "dnat-targets", vec![Value::Port(p)]);
    }
    let sum = be
        .apply_touched(&prev, &desired, &touched)
        .expect("element update");
    assert_eq!(
        (sum.elements_added, sum.elements_deleted),
        (2, 2),
        "replace = delete + add, plus one of each: {sum:?}"
    );
    assert_kernel_holds(&mut be, &desired);
    be.apply_touched(&desired, &prev, &touched)
        .expect("and back");
    assert_kernel_holds(&mut be, &prev);
}

fn targets(rs: &mut Ruleset) -> &mut Set {
    let t = rs.table_mut(Family::Ip, "weft4").expect("table");
    Arc::make_mut(t.sets.get_mut("dnat-targets").expect("map"))
}
