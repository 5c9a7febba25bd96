//! The incremental model against the from-scratch compile: after every step of a seeded
//! random history of objects, the served zone must equal one built from all objects anew.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;

use crate::fixtures::*;
use crate::records::compile;
use crate::zone::Zone;
use crate::{Model, ZoneConfig};

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*: deterministic, enough to shuffle a history.
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn random_service(r: &mut Rng, ns: &str, name: &str) -> Service {
    match r.below(4) {
        0 => external_name(ns, name, "db.example.org"),
        1 => headless(ns, name, &[("web", 80, "TCP")], r.below(2) == 0),
        _ => {
            let ip = format!("10.96.0.{}", r.below(4));
            service(
                ns,
                name,
                &[ip.as_str()],
                &[("web", 80, "TCP"), ("", 81, "TCP")],
            )
        }
    }
}

fn random_slice(r: &mut Rng, ns: &str, name: &str) -> EndpointSlice {
    let svc = format!("s{}", r.below(3));
    let addrs: Vec<String> = (0..r.below(4))
        .map(|_| format!("10.244.0.{}", r.below(6)))
        .collect();
    let hosts = ["a", "b"];
    let eps: Vec<Ep> = addrs
        .iter()
        .map(|a| {
            let host = (r.below(3) == 0).then(|| hosts[r.below(2) as usize]);
            let ready = [None, Some(true), Some(false)][r.below(3) as usize];
            (a.as_str(), host, ready)
        })
        .collect();
    slice(ns, name, &svc, "IPv4", &eps, &[("web", 8080, "TCP")])
}

#[test]
fn incremental_equals_from_scratch() {
    let cfg = ZoneConfig::default();
    let model = Model::new(cfg.clone()).unwrap();
    let mut r = Rng(0x05EE_DD45);
    let mut services: BTreeMap<(String, String), Service> = BTreeMap::new();
    let mut slices: BTreeMap<(String, String), EndpointSlice> = BTreeMap::new();
    let mut pods: BTreeMap<(String, String), Pod> = BTreeMap::new();
    let namespaces = ["a", "b"];
    for step in 0..600 {
        let ns = namespaces[r.below(2) as usize].to_string();
        let name = match r.below(3) {
            0 => "s0".to_string(),
            1 => "s1".to_string(),
            _ => "s2".to_string(),
        };
        let k = (ns.clone(), name.clone());
        match r.below(6) {
            0 => {
                let s = random_service(&mut r, &ns, &name);
                model.upsert_service(&s);
                services.insert(k, s);
            }
            1 => {
                model.delete_service(&ns, &name);
                services.remove(&k);
            }
            2 => {
                let slice_name = format!("sl{}", r.below(4));
                let s = random_slice(&mut r, &ns, &slice_name);
                model.upsert_slice(&s);
                slices.insert((ns, slice_name), s);
            }
            3 => {
                let slice_name = format!("sl{}", r.below(4));
                model.delete_slice(&ns, &slice_name);
                slices.remove(&(ns, slice_name));
            }
            4 => {
                // Two pods may share an IP (host network): the name stays while either does.
                let ip = format!("10.244.1.{}", r.below(3));
                let p = pod(&ns, &name, &[ip.as_str()]);
                model.upsert_pod(&p);
                pods.insert(k, p);
            }
            _ => {
                model.delete_pod(&ns, &name);
                pods.remove(&k);
            }
        }
        let slice_refs: Vec<&EndpointSlice> = slices.values().collect();
        let want = compile(
            &cfg.domain,
            services.values(),
            &slice_refs,
            pods.values(),
            [],
        );
        assert_eq!(model.records(), want, "records after step {step}");
        let mut fresh = Zone::new(&cfg.domain, cfg.ttl, &[]).unwrap();
        for rec in &want {
            fresh.add(rec);
        }
        fresh.finish(1);
        assert_eq!(
            model.zone().snapshot(),
            fresh.snapshot(),
            "zone after step {step}"
        );
    }
    // Delete everything: only the fixed names remain.
    for (ns, name) in services.keys() {
        model.delete_service(ns, name);
    }
    for (ns, name) in slices.keys() {
        model.delete_slice(ns, name);
    }
    for (ns, name) in pods.keys() {
        model.delete_pod(ns, name);
    }
    let empty = Zone::new(&cfg.domain, cfg.ttl, &[]).unwrap();
    assert_eq!(model.zone().snapshot(), empty.snapshot());
}
