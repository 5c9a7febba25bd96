//! Sizes from the issue: 10k Services and 50k pods: the model's update and lookup cost,
//! and queries per second over real UDP inside a network namespace of its own. Figures,
//! not assertions (a measurement, not a test). Run as root with
//! `cargo bench -p weft-dns --bench scale`.

use std::time::Instant;

use hickory_proto::op::{Message, Query};
use hickory_proto::rr::{Name, RecordType};
use weft_dns::acl::Acl;
use weft_dns::answer::{respond, Decision};
use weft_dns::fixtures::*;
use weft_dns::{Model, ZoneConfig};

fn big_model() -> Model {
    let md = Model::new(ZoneConfig::default()).unwrap();
    let t = Instant::now();
    for i in 0..10_000u32 {
        let ip = format!("10.96.{}.{}", i / 250, i % 250 + 1);
        md.upsert_service(&service(
            &format!("ns{}", i % 100),
            &format!("svc{i}"),
            &[ip.as_str()],
            &[("http", 80, "TCP")],
        ));
    }
    for i in 0..50_000u32 {
        let ip = format!("10.244.{}.{}", i / 250, i % 250 + 1);
        md.upsert_pod(&pod(
            &format!("ns{}", i % 100),
            &format!("pod{i}"),
            &[ip.as_str()],
        ));
    }
    println!("load 10k services + 50k pods: {:?}", t.elapsed());
    md
}

fn update_and_lookup_cost_at_scale() {
    let md = big_model();
    let n = 2_000u32;
    let t = Instant::now();
    for i in 0..n {
        md.upsert_service(&service(
            "ns7",
            "svc7",
            &[&format!("10.97.{}.{}", i / 250, i % 250 + 1)],
            &[("http", 80, "TCP")],
        ));
    }
    println!("one Service update: {:?}", t.elapsed() / n);
    let t = Instant::now();
    for i in 0..n {
        md.upsert_pod(&pod(
            "ns3",
            "pod3",
            &[&format!("10.245.{}.{}", i / 250, i % 250 + 1)],
        ));
    }
    println!("one Pod update: {:?}", t.elapsed() / n);

    let acl = Acl::new(&[], &[]);
    let names = [
        "svc123.ns23.svc.cluster.local.",
        "nope.ns1.svc.cluster.local.",
        "10-244-0-5.ns4.pod.cluster.local.",
    ];
    let qs: Vec<Vec<u8>> = names
        .iter()
        .map(|n| {
            let mut m = Message::query();
            m.add_query(Query::query(Name::from_ascii(n).unwrap(), RecordType::A));
            m.to_vec().unwrap()
        })
        .collect();
    let (mut out, mut lower) = (Vec::with_capacity(1500), [0u8; 255]);
    let src = "127.0.0.1".parse().unwrap();
    let n = 3_000_000;
    let t = Instant::now();
    for i in 0..n {
        let d = respond(
            &md,
            &acl,
            src,
            &qs[i % qs.len()],
            true,
            &mut out,
            &mut lower,
        );
        assert!(matches!(d, Decision::Reply));
    }
    let el = t.elapsed();
    println!(
        "respond(): {:?} per query, {:.0} queries/s on one core",
        el / n as u32,
        n as f64 / el.as_secs_f64()
    );
}

#[path = "../tests/common/mod.rs"]
mod common;

/// Queries per second over real UDP: the server on one current-thread runtime (one
/// core), the load from another thread keeping 64 queries in flight.
fn udp_queries_per_second() {
    common::in_netns(&[], || async {
        let md = big_model();
        let cfg = weft_dns::ServerConfig {
            listen: vec!["127.0.0.1:0".parse().unwrap()],
            upstreams: weft_dns::Upstreams::List(vec![]),
            ..weft_dns::ServerConfig::default()
        };
        let server = weft_dns::Server::bind(cfg, md).await.unwrap();
        let addr = server.local_addrs()[0];
        tokio::spawn(server.run());
        let cpu_before = thread_cpu_secs();
        let load = std::thread::spawn(move || {
            let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            s.connect(addr).unwrap();
            s.set_read_timeout(Some(std::time::Duration::from_millis(200)))
                .unwrap();
            let mut m = Message::query();
            m.add_query(Query::query(
                Name::from_ascii("svc123.ns23.svc.cluster.local.").unwrap(),
                RecordType::A,
            ));
            let q = m.to_vec().unwrap();
            let mut buf = [0u8; 1500];
            let (mut sent, mut got) = (0u64, 0u64);
            let t = Instant::now();
            while t.elapsed().as_secs_f64() < 3.0 {
                for _ in 0..64 {
                    s.send(&q).unwrap();
                    sent += 1;
                }
                for _ in 0..64 {
                    if s.recv(&mut buf).is_ok() {
                        got += 1;
                    } else {
                        break;
                    }
                }
            }
            let el = t.elapsed().as_secs_f64();
            println!(
                "UDP: {:.0} answers/s ({sent} sent, {got} answered)",
                got as f64 / el
            );
            got
        });
        while !load.is_finished() {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        let got = load.join().unwrap();
        // What one core gives, whatever else the machine is doing.
        let cpu = thread_cpu_secs() - cpu_before;
        println!(
            "server thread: {cpu:.2} s of CPU, {:.0} answers per CPU-second",
            got as f64 / cpu
        );
    });
}

/// CPU time (user + system) of the calling thread, from /proc.
fn thread_cpu_secs() -> f64 {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap();
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split(' ').collect();
    let ticks: f64 = f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap();
    ticks / 100.0
}

fn main() {
    update_and_lookup_cost_at_scale();
    udp_queries_per_second();
}
