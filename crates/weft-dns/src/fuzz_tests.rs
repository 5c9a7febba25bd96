//! Seeded mutations of valid messages through the query parser and the reply cache's
//! reader: nothing may panic, UDP replies stay within the client's size, and the server
//! still answers a good query correctly afterwards.

use std::net::IpAddr;
use std::str::FromStr;
use std::time::{Duration, Instant};

use hickory_proto::op::{Edns, Message, Query, ResponseCode};
use hickory_proto::rr::{Name, RecordType};

use crate::acl::Acl;
use crate::answer::{respond, Decision};
use crate::cache::Entry;
use crate::fixtures::*;
use crate::wire::{parse, Parsed};
use crate::{Model, ZoneConfig};

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn query(name: &str, t: &str, edns: bool) -> Vec<u8> {
    let mut m = Message::query();
    m.add_query(Query::query(
        Name::from_ascii(name).unwrap(),
        RecordType::from_str(t).unwrap(),
    ));
    if edns {
        let mut e = Edns::new();
        e.set_max_payload(1232);
        m.set_edns(e);
    }
    m.to_vec().unwrap()
}

fn mutate(r: &mut Rng, seed: &[u8]) -> Vec<u8> {
    let mut m = seed.to_vec();
    for _ in 0..1 + r.below(4) {
        match r.below(6) {
            0 => m.truncate(r.below(m.len() + 1)),
            1 if !m.is_empty() => {
                let i = r.below(m.len());
                m[i] ^= 1 << r.below(8);
            }
            2 => {
                let i = r.below(m.len() + 1);
                m.insert(i, r.next() as u8);
            }
            3 if !m.is_empty() => {
                let i = r.below(m.len());
                m.remove(i);
            }
            4 if m.len() >= 12 => {
                // A count field set to anything.
                let i = 4 + 2 * r.below(4);
                m[i] = r.next() as u8;
                m[i + 1] = r.next() as u8;
            }
            _ if !m.is_empty() => {
                // A compression pointer or label length where a name was.
                let i = r.below(m.len());
                m[i] = [0xC0, 0x3F, 0x40, 0x80, 0][r.below(5)];
            }
            _ => {}
        }
    }
    m
}

fn model() -> Model {
    let md = Model::new(ZoneConfig::default()).unwrap();
    md.upsert_service(&service(
        "default",
        "web",
        &["10.96.0.20"],
        &[("http", 80, "TCP")],
    ));
    md.upsert_service(&headless("default", "hl", &[("http", 80, "TCP")], false));
    let eps: Vec<String> = (0..40).map(|i| format!("10.244.0.{i}")).collect();
    let eps: Vec<Ep> = eps.iter().map(|a| (a.as_str(), None, None)).collect();
    md.upsert_slice(&slice(
        "default",
        "hl-1",
        "hl",
        "IPv4",
        &eps,
        &[("http", 80, "TCP")],
    ));
    md
}

#[test]
fn mutated_queries_never_panic() {
    let md = model();
    let acl = Acl::new(&[], &[]);
    let seeds = [
        query("web.default.svc.cluster.local.", "A", false),
        query("WEB.default.svc.cluster.local.", "A", true),
        query("hl.default.svc.cluster.local.", "A", true),
        query("_http._tcp.hl.default.svc.cluster.local.", "SRV", false),
        query("nope.svc.cluster.local.", "AAAA", true),
        query("20.0.96.10.in-addr.arpa.", "PTR", false),
        query("www.example.com.", "A", true),
    ];
    let mut r = Rng(0xD15EA5E);
    let (mut out, mut lower) = (Vec::new(), [0u8; 255]);
    let mut outcomes = [0usize; 3];
    for i in 0..30_000 {
        let seed = &seeds[i % seeds.len()];
        let m = mutate(&mut r, seed);
        for (udp, src) in [(true, "127.0.0.1"), (false, "192.0.2.7")] {
            let src: IpAddr = src.parse().unwrap();
            match respond(&md, &acl, src, &m, udp, &mut out, &mut lower) {
                Decision::Reply => {
                    outcomes[0] += 1;
                    assert!(out.len() >= 12);
                    assert_eq!(out[..2], m[..2], "reply carries the query's ID");
                    if udp {
                        assert!(out.len() <= 1232, "{} bytes over UDP", out.len());
                    }
                }
                Decision::Drop => outcomes[1] += 1,
                Decision::Forward(_) | Decision::Chase(..) => outcomes[2] += 1,
            }
        }
    }
    // The mutations reached every outcome, not only the first byte check.
    assert!(outcomes.iter().all(|&n| n > 1000), "{outcomes:?}");

    let good = query("web.default.svc.cluster.local.", "A", false);
    assert!(matches!(parse(&good, &mut lower), Parsed::Query(_)));
    let d = respond(
        &md,
        &acl,
        "127.0.0.1".parse().unwrap(),
        &good,
        true,
        &mut out,
        &mut lower,
    );
    assert!(matches!(d, Decision::Reply));
    let reply = Message::from_vec(&out).unwrap();
    assert_eq!(reply.metadata.response_code, ResponseCode::NoError);
    assert_eq!(reply.answers.len(), 1);
}

#[test]
fn mutated_upstream_replies_never_panic() {
    // Zone replies stand in for upstream ones: every section, a SOA, an OPT.
    let md = model();
    let acl = Acl::new(&[], &[]);
    let (mut out, mut lower) = (Vec::new(), [0u8; 255]);
    let mut replies = Vec::new();
    for (name, t) in [
        ("hl.default.svc.cluster.local.", "A"),
        ("nope.svc.cluster.local.", "A"),
        ("_http._tcp.web.default.svc.cluster.local.", "SRV"),
    ] {
        let q = query(name, t, true);
        let d = respond(
            &md,
            &acl,
            "127.0.0.1".parse().unwrap(),
            &q,
            false,
            &mut out,
            &mut lower,
        );
        assert!(matches!(d, Decision::Reply));
        replies.push(out.clone());
    }
    let client = query("hl.default.svc.cluster.local.", "A", true);
    let mut r = Rng(0xCAC4E);
    let mut parsed = 0;
    for i in 0..20_000 {
        let m = mutate(&mut r, &replies[i % replies.len()]);
        if let Some(e) = Entry::from_reply(&m, Duration::from_secs(60)) {
            parsed += 1;
            if let Parsed::Query(q) = parse(&client, &mut lower) {
                e.write_reply(&mut out, &q, Instant::now());
                let target = b"\x03www\x07example\x03net\x00";
                crate::chase::reply(&mut out, &q, 30, target, Some(&e), Instant::now());
                assert!(out.len() >= 12);
            }
        }
    }
    assert!(parsed > 1000, "{parsed}");
}
