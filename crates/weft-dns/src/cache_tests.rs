//! The cache's reading of upstream replies, its TTL rules and its bound; the resolv.conf
//! reader and the loop guard.

use std::sync::Arc;
use std::time::{Duration, Instant};

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::{A, SOA};
use hickory_proto::rr::{Name, RData, Record, RecordType};

use crate::cache::{key, Cache, Entry};
use crate::forward::{parse_resolv_conf, without_self};
use crate::wire::{parse, Parsed};

fn name(s: &str) -> Name {
    Name::from_ascii(s).unwrap()
}

fn reply(
    rcode: ResponseCode,
    answers: &[(u32, [u8; 4])],
    soa: Option<(u32, u32)>,
    opt: bool,
) -> Vec<u8> {
    let mut m = Message::new(7, MessageType::Response, OpCode::Query);
    m.metadata.response_code = rcode;
    m.add_query(Query::query(name("www.example.com."), RecordType::A));
    for (ttl, ip) in answers {
        let a = A::from(std::net::Ipv4Addr::from(*ip));
        m.add_answer(Record::from_rdata(
            name("www.example.com."),
            *ttl,
            RData::A(a),
        ));
    }
    if let Some((ttl, minimum)) = soa {
        let soa = SOA::new(
            name("ns.example.com."),
            name("h.example.com."),
            1,
            2,
            3,
            4,
            minimum,
        );
        m.add_authority(Record::from_rdata(
            name("example.com."),
            ttl,
            RData::SOA(soa),
        ));
    }
    if opt {
        let mut e = Edns::new();
        e.set_max_payload(1232);
        m.set_edns(e);
    }
    m.to_vec().unwrap()
}

fn client_query(edns: bool) -> Vec<u8> {
    let mut m = Message::new(0x4242, MessageType::Query, OpCode::Query);
    m.add_query(Query::query(name("WWW.example.COM."), RecordType::A));
    if edns {
        m.set_edns(Edns::new());
    }
    m.to_vec().unwrap()
}

fn serve(e: &Entry, edns: bool, at: Instant) -> Message {
    let q = client_query(edns);
    let mut lower = [0u8; 255];
    let Parsed::Query(q) = parse(&q, &mut lower) else {
        panic!("query does not parse")
    };
    let mut out = Vec::new();
    e.write_reply(&mut out, &q, at);
    Message::from_vec(&out).unwrap()
}

#[test]
fn positive_reply_ttl_is_the_lowest_and_ages() {
    let max = Duration::from_secs(3600);
    let e = Entry::from_reply(
        &reply(
            ResponseCode::NoError,
            &[(300, [192, 0, 2, 1]), (60, [192, 0, 2, 2])],
            None,
            true,
        ),
        max,
    )
    .unwrap();
    assert!(e.cacheable());
    let now = Instant::now();
    let m = serve(&e, true, now + Duration::from_secs(10));
    assert_eq!(m.metadata.id, 0x4242);
    assert_eq!(m.queries[0].name().to_ascii(), "WWW.example.COM.");
    let ttls: Vec<u32> = m.answers.iter().map(|r| r.ttl).collect();
    assert!(ttls == vec![290, 50] || ttls == vec![289, 49], "{ttls:?}");
    // The upstream's OPT is gone; ours is there because the client sent one.
    assert_eq!(m.edns.as_ref().map(|e| e.max_payload()), Some(1232));
    assert!(serve(&e, false, now).edns.is_none());

    let cache = Cache::new(10);
    let k = key(b"\x03www\x07example\x03com\x00", 1, 1);
    cache.insert(k.clone(), Arc::new(e));
    assert!(cache.get(&k, now).is_some());
    // Expired at the lowest TTL.
    assert!(cache.get(&k, now + Duration::from_secs(61)).is_none());
}

#[test]
fn negative_reply_ttl_is_the_soa_minimum_or_ttl() {
    let max = Duration::from_secs(3600);
    let nx = Entry::from_reply(
        &reply(ResponseCode::NXDomain, &[], Some((300, 60)), false),
        max,
    )
    .unwrap();
    assert!(nx.cacheable());
    let cache = Cache::new(10);
    let k = b"k".to_vec();
    cache.insert(k.clone(), Arc::new(nx));
    let now = Instant::now();
    assert!(cache.get(&k, now + Duration::from_secs(59)).is_some());
    assert!(cache.get(&k, now + Duration::from_secs(61)).is_none());
    let nodata = Entry::from_reply(
        &reply(ResponseCode::NoError, &[], Some((20, 600)), false),
        max,
    )
    .unwrap();
    let cache = Cache::new(10);
    cache.insert(k.clone(), Arc::new(nodata));
    assert!(cache.get(&k, now + Duration::from_secs(21)).is_none());
    // No SOA: not cached (RFC 2308 5); failures neither.
    let bare = Entry::from_reply(&reply(ResponseCode::NXDomain, &[], None, false), max).unwrap();
    assert!(!bare.cacheable());
    let fail = Entry::from_reply(&reply(ResponseCode::ServFail, &[], None, false), max).unwrap();
    assert!(!fail.cacheable());
    // The cap.
    let long = Entry::from_reply(
        &reply(
            ResponseCode::NoError,
            &[(86400, [192, 0, 2, 1])],
            None,
            false,
        ),
        Duration::from_secs(10),
    )
    .unwrap();
    let cache = Cache::new(10);
    cache.insert(k.clone(), Arc::new(long));
    assert!(cache.get(&k, now + Duration::from_secs(11)).is_none());
}

#[test]
fn cache_is_bounded() {
    let e = Arc::new(
        Entry::from_reply(
            &reply(ResponseCode::NoError, &[(300, [192, 0, 2, 1])], None, false),
            Duration::from_secs(3600),
        )
        .unwrap(),
    );
    let cache = Cache::new(100);
    let now = Instant::now();
    for i in 0..1000u32 {
        cache.insert(i.to_be_bytes().to_vec(), e.clone());
        // A name asked all the time stays.
        cache.insert(b"hot".to_vec(), e.clone());
        assert!(cache.get(b"hot", now).is_some());
    }
    assert!(cache.len() <= 100, "{}", cache.len());
    assert!(Cache::new(0).get(b"hot", now).is_none());
}

#[test]
fn resolv_conf_and_self() {
    let text = "# comment\nsearch example.com\nnameserver 192.0.2.53\nnameserver fe80::1%eth0\nnameserver 2001:db8::53\nnameserver 127.0.0.1\noptions ndots:5\n";
    let ups = parse_resolv_conf(text);
    let want: Vec<std::net::SocketAddr> = vec![
        "192.0.2.53:53".parse().unwrap(),
        "[2001:db8::53]:53".parse().unwrap(),
        "127.0.0.1:53".parse().unwrap(),
    ];
    assert_eq!(ups, want);
    // Listening on 0.0.0.0:53, 127.0.0.1:53 is us; on 10.96.0.10:53 it is not.
    assert_eq!(
        without_self(ups.clone(), &["0.0.0.0:53".parse().unwrap()]).len(),
        2
    );
    assert_eq!(
        without_self(ups.clone(), &["10.96.0.10:53".parse().unwrap()]).len(),
        3
    );
    assert_eq!(
        without_self(ups, &["127.0.0.1:53".parse().unwrap()]).len(),
        2
    );
}
