//! The zone's answers per record kind, read back with hickory-proto.

use std::net::IpAddr;
use std::str::FromStr;

use hickory_proto::op::{Edns, Message, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};

use crate::acl::Acl;
use crate::answer::{respond, Decision};
use crate::fixtures::*;
use crate::{Model, ZoneConfig};

fn model() -> Model {
    Model::new(ZoneConfig::default()).unwrap()
}

fn query_bytes(name: &str, t: &str, edns: Option<u16>) -> Vec<u8> {
    let mut m = Message::query();
    m.add_query(Query::query(
        Name::from_ascii(name).unwrap(),
        RecordType::from_str(t).unwrap(),
    ));
    if let Some(size) = edns {
        let mut e = Edns::new();
        e.set_max_payload(size);
        m.set_edns(e);
    }
    m.to_vec().unwrap()
}

/// The reply over TCP (no truncation) to a client on loopback.
fn ask(model: &Model, name: &str, t: &str) -> Message {
    ask_from(model, name, t, "127.0.0.1", false).expect("a reply from the zone")
}

fn ask_from(model: &Model, name: &str, t: &str, src: &str, udp: bool) -> Option<Message> {
    let q = query_bytes(name, t, None);
    let (mut out, mut lower) = (Vec::new(), [0u8; 255]);
    let src: IpAddr = src.parse().unwrap();
    match respond(
        model,
        &Acl::new(&["10.244.0.0/16".parse().unwrap()], &[]),
        src,
        &q,
        udp,
        &mut out,
        &mut lower,
    ) {
        Decision::Reply => Some(Message::from_vec(&out).unwrap()),
        Decision::Drop | Decision::Forward(_) | Decision::Chase(..) => None,
    }
}

fn data(m: &Message) -> Vec<String> {
    let mut v: Vec<String> = m
        .answers
        .iter()
        .map(|r| format!("{} {}", r.record_type(), r.data))
        .collect();
    v.sort();
    v
}

#[test]
fn schema_version() {
    let m = ask(&model(), "dns-version.cluster.local.", "TXT");
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert!(m.metadata.authoritative);
    assert_eq!(data(&m), vec!["TXT 1.1.0"]);
}

#[test]
fn cluster_ip_service() {
    let md = model();
    md.upsert_service(&service(
        "default",
        "web",
        &["10.96.0.20", "fd00:96::20"],
        &[("http", 80, "TCP"), ("", 8080, "TCP"), ("dns", 53, "UDP")],
    ));
    assert_eq!(
        data(&ask(&md, "web.default.svc.cluster.local.", "A")),
        vec!["A 10.96.0.20"]
    );
    assert_eq!(
        data(&ask(&md, "web.default.svc.cluster.local.", "AAAA")),
        vec!["AAAA fd00:96::20"]
    );
    assert_eq!(
        data(&ask(
            &md,
            "_http._tcp.web.default.svc.cluster.local.",
            "SRV"
        )),
        vec!["SRV 0 100 80 web.default.svc.cluster.local."]
    );
    // The target's addresses come along, once however many SRV records name it.
    let m = ask(&md, "_http._tcp.web.default.svc.cluster.local.", "SRV");
    let extra: Vec<String> = m
        .additionals
        .iter()
        .map(|r| format!("{} {} {}", r.name, r.record_type(), r.data))
        .collect();
    assert_eq!(
        extra,
        vec![
            "web.default.svc.cluster.local. A 10.96.0.20",
            "web.default.svc.cluster.local. AAAA fd00:96::20"
        ]
    );
    assert_eq!(
        data(&ask(&md, "_dns._udp.web.default.svc.cluster.local.", "SRV")),
        vec!["SRV 0 100 53 web.default.svc.cluster.local."]
    );
    assert_eq!(
        data(&ask(&md, "20.0.96.10.in-addr.arpa.", "PTR")),
        vec!["PTR web.default.svc.cluster.local."]
    );
    let rev = format!("{}.", crate::name::reverse("fd00:96::20".parse().unwrap()));
    assert_eq!(
        data(&ask(&md, &rev, "PTR")),
        vec!["PTR web.default.svc.cluster.local."]
    );
    // The unnamed port has no SRV; its protocol label is an empty non-terminal.
    let m = ask(&md, "_tcp.web.default.svc.cluster.local.", "SRV");
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert!(m.answers.is_empty());
}

#[test]
fn headless_service() {
    let md = model();
    md.upsert_service(&headless("db", "pg", &[("pg", 5432, "TCP")], false));
    md.upsert_slice(&slice(
        "db",
        "pg-abc",
        "pg",
        "IPv4",
        &[
            ("10.244.1.3", Some("pg-0"), Some(true)),
            ("10.244.2.4", None, None),
            ("10.244.3.5", Some("pg-2"), Some(false)),
        ],
        &[("pg", 5432, "TCP")],
    ));
    assert_eq!(
        data(&ask(&md, "pg.db.svc.cluster.local.", "A")),
        vec!["A 10.244.1.3", "A 10.244.2.4"]
    );
    assert_eq!(
        data(&ask(&md, "pg-0.pg.db.svc.cluster.local.", "A")),
        vec!["A 10.244.1.3"]
    );
    assert_eq!(
        data(&ask(&md, "10-244-2-4.pg.db.svc.cluster.local.", "A")),
        vec!["A 10.244.2.4"]
    );
    let nx = ask(&md, "pg-2.pg.db.svc.cluster.local.", "A");
    assert_eq!(nx.metadata.response_code, ResponseCode::NXDomain);
    assert_eq!(
        data(&ask(&md, "_pg._tcp.pg.db.svc.cluster.local.", "SRV")),
        vec![
            "SRV 0 100 5432 10-244-2-4.pg.db.svc.cluster.local.",
            "SRV 0 100 5432 pg-0.pg.db.svc.cluster.local."
        ]
    );
    assert_eq!(
        data(&ask(&md, "3.1.244.10.in-addr.arpa.", "PTR")),
        vec!["PTR pg-0.pg.db.svc.cluster.local."]
    );
    let m = ask(&md, "_pg._tcp.pg.db.svc.cluster.local.", "SRV");
    let mut extra: Vec<String> = m
        .additionals
        .iter()
        .map(|r| format!("{} {}", r.name, r.data))
        .collect();
    extra.sort();
    assert_eq!(
        extra,
        vec![
            "10-244-2-4.pg.db.svc.cluster.local. 10.244.2.4",
            "pg-0.pg.db.svc.cluster.local. 10.244.1.3"
        ]
    );

    // publishNotReadyAddresses: the not-ready endpoint counts.
    md.upsert_service(&headless("db", "pg", &[("pg", 5432, "TCP")], true));
    assert_eq!(
        data(&ask(&md, "pg-2.pg.db.svc.cluster.local.", "A")),
        vec!["A 10.244.3.5"]
    );

    // Only IPv4 endpoints: AAAA is NODATA.
    let m = ask(&md, "pg.db.svc.cluster.local.", "AAAA");
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert!(m.answers.is_empty());
    assert_eq!(m.authorities.len(), 1);

    // No ready endpoints: NXDOMAIN, as the specification says it should be.
    md.delete_slice("db", "pg-abc");
    let m = ask(&md, "pg.db.svc.cluster.local.", "A");
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
    assert_eq!(m.authorities.len(), 1);
    assert_eq!(
        ask(&md, "pg-0.pg.db.svc.cluster.local.", "A")
            .metadata
            .response_code,
        ResponseCode::NXDomain
    );
}

#[test]
fn headless_ipv6_endpoint() {
    let md = model();
    md.upsert_service(&headless("db", "pg", &[], false));
    md.upsert_slice(&slice(
        "db",
        "pg-v6",
        "pg",
        "IPv6",
        &[("fd00:244::3", None, None)],
        &[],
    ));
    assert_eq!(
        data(&ask(&md, "pg.db.svc.cluster.local.", "AAAA")),
        vec!["AAAA fd00:244::3"]
    );
    assert_eq!(
        data(&ask(&md, "fd00-244--3.pg.db.svc.cluster.local.", "AAAA")),
        vec!["AAAA fd00:244::3"]
    );
}

#[test]
fn external_name() {
    let md = model();
    md.upsert_service(&crate::fixtures::external_name(
        "default",
        "ext",
        "www.example.com.",
    ));
    let m = ask(&md, "ext.default.svc.cluster.local.", "CNAME");
    assert_eq!(data(&m), vec!["CNAME www.example.com."]);
    // Other types: the target is resolved upstream (see chase.rs), not answered here.
    let q = query_bytes("ext.default.svc.cluster.local.", "A", None);
    let (mut out, mut lower) = (Vec::new(), [0u8; 255]);
    let acl = Acl::new(&[], &[]);
    match respond(
        &md,
        &acl,
        "127.0.0.1".parse().unwrap(),
        &q,
        true,
        &mut out,
        &mut lower,
    ) {
        Decision::Chase(_, target, ttl) => {
            assert_eq!(crate::name::to_dotted(&target), "www.example.com");
            assert_eq!(ttl, 30);
        }
        other => panic!("{other:?}"),
    }
    // A target inside the zone is followed here, aliases of aliases too.
    md.upsert_service(&service("default", "web", &["10.96.0.20"], &[]));
    md.upsert_service(&crate::fixtures::external_name(
        "default",
        "in",
        "web.default.svc.cluster.local",
    ));
    md.upsert_service(&crate::fixtures::external_name(
        "default",
        "in2",
        "IN.default.svc.cluster.local",
    ));
    let m = ask(&md, "in2.default.svc.cluster.local.", "A");
    let chain: Vec<String> = m
        .answers
        .iter()
        .map(|r| format!("{} {}", r.name, r.data))
        .collect();
    assert_eq!(
        chain,
        vec![
            "in2.default.svc.cluster.local. in.default.svc.cluster.local.",
            "in.default.svc.cluster.local. web.default.svc.cluster.local.",
            "web.default.svc.cluster.local. 10.96.0.20",
        ]
    );
    // An alias loop ends.
    md.upsert_service(&crate::fixtures::external_name(
        "default",
        "loop",
        "loop.default.svc.cluster.local",
    ));
    let m = ask(&md, "loop.default.svc.cluster.local.", "A");
    assert!(m.answers.len() <= 9);
}

#[test]
fn pods() {
    let md = model();
    md.upsert_pod(&pod("default", "p", &["10.244.1.7", "fd00:244::7"]));
    assert_eq!(
        data(&ask(&md, "10-244-1-7.default.pod.cluster.local.", "A")),
        vec!["A 10.244.1.7"]
    );
    assert_eq!(
        data(&ask(&md, "fd00-244--7.default.pod.cluster.local.", "AAAA")),
        vec!["AAAA fd00:244::7"]
    );
    // Verified: the address must belong to a pod in that namespace.
    let m = ask(&md, "10-244-1-7.other.pod.cluster.local.", "A");
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
    md.delete_pod("default", "p");
    let m = ask(&md, "10-244-1-7.default.pod.cluster.local.", "A");
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
}

#[test]
fn negative_answers_carry_the_soa() {
    let md = model();
    md.upsert_service(&service("default", "web", &["10.96.0.20"], &[]));
    let m = ask(&md, "nope.default.svc.cluster.local.", "A");
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
    assert!(m.metadata.authoritative);
    assert_eq!(m.authorities.len(), 1);
    let soa = &m.authorities[0];
    assert_eq!(soa.name.to_ascii(), "cluster.local.");
    let RData::SOA(s) = &soa.data else {
        panic!("not an SOA: {soa}")
    };
    assert_eq!(s.mname.to_ascii(), "ns.dns.cluster.local.");
    assert_eq!(s.rname.to_ascii(), "hostmaster.cluster.local.");
    assert_eq!(s.minimum, 30);
    assert_eq!(soa.ttl, 30);

    // NODATA: the name exists, not with that type.
    for (name, t) in [
        ("web.default.svc.cluster.local.", "AAAA"),
        ("svc.cluster.local.", "A"),
        ("default.svc.cluster.local.", "A"),
        ("pod.cluster.local.", "A"),
        ("cluster.local.", "A"),
    ] {
        let m = ask(&md, name, t);
        assert_eq!(m.metadata.response_code, ResponseCode::NoError, "{name}");
        assert!(m.answers.is_empty(), "{name}");
        assert_eq!(m.authorities.len(), 1, "{name}");
    }
    // The apex's own records.
    assert_eq!(
        data(&ask(&md, "cluster.local.", "NS")),
        vec!["NS ns.dns.cluster.local."]
    );
    assert_eq!(ask(&md, "cluster.local.", "SOA").answers.len(), 1);
    // A namespace with nothing in it is not there until its Namespace object is.
    let m = ask(&md, "empty.svc.cluster.local.", "A");
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
    let mut ns = k8s_openapi::api::core::v1::Namespace::default();
    ns.metadata.name = Some("empty".into());
    md.upsert_namespace(&ns);
    assert_eq!(
        ask(&md, "empty.svc.cluster.local.", "A")
            .metadata
            .response_code,
        ResponseCode::NoError
    );
}

#[test]
fn search_list_expansions_are_nxdomain_not_forwarded() {
    let md = model();
    let m = ask(&md, "www.example.com.default.svc.cluster.local.", "A");
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
    // Outside the zone: forwarded.
    assert!(ask_from(&md, "www.example.com.", "A", "127.0.0.1", true).is_none());
    assert!(ask_from(&md, "1.2.3.4.in-addr.arpa.", "PTR", "127.0.0.1", true).is_none());
}

#[test]
fn case_is_echoed() {
    let md = model();
    md.upsert_service(&service("default", "web", &["10.96.0.20"], &[]));
    let m = ask(&md, "WeB.Default.SVC.cluster.LOCAL.", "A");
    assert_eq!(
        m.queries[0].name().to_ascii(),
        "WeB.Default.SVC.cluster.LOCAL."
    );
    assert_eq!(
        m.answers[0].name.to_ascii(),
        "WeB.Default.SVC.cluster.LOCAL."
    );
    assert_eq!(data(&m), vec!["A 10.96.0.20"]);
}

#[test]
fn refused_outside_the_allow_list() {
    let md = model();
    md.upsert_service(&service("default", "web", &["10.96.0.20"], &[]));
    for (src, ok) in [
        ("10.244.3.4", true),
        ("192.0.2.1", false),
        ("::1", true),
        ("10.0.0.9", false),
    ] {
        let m = ask_from(&md, "web.default.svc.cluster.local.", "A", src, true).unwrap();
        let want = if ok {
            ResponseCode::NoError
        } else {
            ResponseCode::Refused
        };
        assert_eq!(m.metadata.response_code, want, "{src}");
        // Forwarded names too.
        let fwd = ask_from(&md, "example.com.", "A", src, true);
        assert_eq!(fwd.is_none(), ok, "{src}");
    }
    md.upsert_node(&node("n1", &["10.0.0.9"]));
    let m = ask_from(&md, "web.default.svc.cluster.local.", "A", "10.0.0.9", true).unwrap();
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    md.delete_node("n1");
    let m = ask_from(&md, "web.default.svc.cluster.local.", "A", "10.0.0.9", true).unwrap();
    assert_eq!(m.metadata.response_code, ResponseCode::Refused);
}

#[test]
fn udp_truncation_and_edns() {
    let md = model();
    md.upsert_service(&headless("default", "big", &[], false));
    let eps: Vec<String> = (0..60).map(|i| format!("10.244.0.{i}")).collect();
    let eps: Vec<Ep> = eps.iter().map(|a| (a.as_str(), None, None)).collect();
    md.upsert_slice(&slice("default", "big-1", "big", "IPv4", &eps, &[]));
    // 60 A records: 960 bytes of answers. Without EDNS (512) truncated, with 1232 not.
    let acl = Acl::new(&[], &[]);
    let run = |edns: Option<u16>, udp: bool| {
        let q = query_bytes("big.default.svc.cluster.local.", "A", edns);
        let (mut out, mut lower) = (Vec::new(), [0u8; 255]);
        let d = respond(
            &md,
            &acl,
            "127.0.0.1".parse().unwrap(),
            &q,
            udp,
            &mut out,
            &mut lower,
        );
        assert!(matches!(d, Decision::Reply));
        (out.len(), Message::from_vec(&out).unwrap())
    };
    let (len, m) = run(None, true);
    assert!(
        len <= 512 && m.metadata.truncation && m.answers.is_empty(),
        "{len}"
    );
    assert!(m.edns.is_none());
    let (len, m) = run(Some(4096), true);
    assert!(len <= 1232 && !m.metadata.truncation, "{len}");
    assert_eq!(m.answers.len(), 60);
    assert_eq!(m.edns.as_ref().map(|e| e.max_payload()), Some(1232));
    let (_, m) = run(Some(600), true);
    assert!(m.metadata.truncation);
    assert!(m.edns.is_some());
    let (_, m) = run(None, false);
    assert_eq!(m.answers.len(), 60);

    // SRV: 10 records fit in 700 bytes with their targets' addresses dropped, not cut.
    md.upsert_service(&headless("default", "srv", &[("p", 1, "TCP")], false));
    let eps: Vec<String> = (0..10).map(|i| format!("10.244.1.{i}")).collect();
    let eps: Vec<Ep> = eps.iter().map(|a| (a.as_str(), None, None)).collect();
    md.upsert_slice(&slice(
        "default",
        "srv-1",
        "srv",
        "IPv4",
        &eps,
        &[("p", 1, "TCP")],
    ));
    let q = query_bytes("_p._tcp.srv.default.svc.cluster.local.", "SRV", Some(1232));
    let (mut out, mut lower) = (Vec::new(), [0u8; 255]);
    let src = "127.0.0.1".parse().unwrap();
    respond(&md, &acl, src, &q, true, &mut out, &mut lower);
    let m = Message::from_vec(&out).unwrap();
    assert!(!m.metadata.truncation);
    assert_eq!((m.answers.len(), m.additionals.len()), (10, 10));
    let q = query_bytes("_p._tcp.srv.default.svc.cluster.local.", "SRV", Some(700));
    respond(&md, &acl, src, &q, true, &mut out, &mut lower);
    let m = Message::from_vec(&out).unwrap();
    assert!(out.len() <= 700 && !m.metadata.truncation, "{}", out.len());
    assert_eq!((m.answers.len(), m.additionals.len()), (10, 0));
    assert!(m.edns.is_some());
}

#[test]
fn header_errors() {
    let md = model();
    let acl = Acl::new(&[], &[]);
    let src: IpAddr = "127.0.0.1".parse().unwrap();
    let reply = |msg: &[u8]| {
        let (mut out, mut lower) = (Vec::new(), [0u8; 255]);
        match respond(&md, &acl, src, msg, true, &mut out, &mut lower) {
            Decision::Reply => Some(Message::from_vec(&out).unwrap()),
            _ => None,
        }
    };
    let good = query_bytes("dns-version.cluster.local.", "TXT", None);
    // qdcount 0 and 2.
    let mut q0 = good[..12].to_vec();
    q0[5] = 0;
    assert_eq!(
        reply(&q0).unwrap().metadata.response_code,
        ResponseCode::FormErr
    );
    let mut q2 = good.clone();
    q2[5] = 2;
    assert_eq!(
        reply(&q2).unwrap().metadata.response_code,
        ResponseCode::FormErr
    );
    // Opcode NOTIFY (4).
    let mut n = good.clone();
    n[2] = (n[2] & 0x87) | (4 << 3);
    assert_eq!(
        reply(&n).unwrap().metadata.response_code,
        ResponseCode::NotImp
    );
    // A response is not answered; nor is a short packet.
    let mut r = good.clone();
    r[2] |= 0x80;
    assert!(reply(&r).is_none());
    assert!(reply(&good[..7]).is_none());
    // EDNS version 1: BADVERS.
    let mut m = Message::from_vec(&query_bytes(
        "dns-version.cluster.local.",
        "TXT",
        Some(1232),
    ))
    .unwrap();
    if let Some(e) = m.edns.as_mut() {
        e.set_version(1);
    }
    let out = reply(&m.to_vec().unwrap()).unwrap();
    // 16 is both BADVERS and BADSIG; hickory names it the latter.
    assert_eq!(u16::from(out.metadata.response_code), 16);
    assert_eq!(reply(&good).unwrap().answers.len(), 1);
    // No zone transfers, ours or anyone's.
    for name in ["cluster.local.", "example.com."] {
        let m = reply(&query_bytes(name, "AXFR", None)).unwrap();
        assert_eq!(m.metadata.response_code, ResponseCode::Refused, "{name}");
    }
}

#[test]
fn other_zone_name() {
    let md = Model::new(ZoneConfig {
        ttl: 5,
        ..ZoneConfig::new("Corp.Example.")
    })
    .unwrap();
    md.upsert_service(&service("default", "web", &["10.96.0.20"], &[]));
    let m = ask(&md, "web.default.svc.corp.example.", "A");
    assert_eq!(data(&m), vec!["A 10.96.0.20"]);
    assert_eq!(m.answers[0].ttl, 5);
    assert!(ask_from(
        &md,
        "web.default.svc.cluster.local.",
        "A",
        "127.0.0.1",
        true
    )
    .is_none());
    assert!(Model::new(ZoneConfig::new("")).is_err());
}
