//! The served table: per name, per type, the answer section already encoded.
//!
//! Records arrive one at a time with reference counts (two objects may publish the same
//! record: two pods sharing a node's IP, one address in two slices during a rollout), and
//! each touched set is re-encoded once per batch. An answer is then a copy of bytes: every
//! record's owner is the compression pointer `0xC00C`, the question name the answer
//! follows, so the client's spelling of the name is what it sees back.
//!
//! Names below the cluster domain exist when they hold a record or a name below them does
//! (empty non-terminals such as `svc.<zone>` answer NODATA, RFC 8020). Reverse names
//! (`in-addr.arpa`, `ip6.arpa`) are not ours to deny: only their records are served, and
//! every other question there is forwarded.

use std::collections::HashMap;

use crate::name::{in_zone, parent, to_wire};
use crate::records::{RData, Record, TYPE_CNAME, TYPE_SOA};

#[derive(Default)]
struct RrSet {
    /// Each record's rdata with how many objects publish it, sorted by rdata (the answer's
    /// order). A sorted vector rather than a map: almost every set holds one record, and a
    /// map's smallest node costs hundreds of bytes, which at 100k names was a third of the
    /// server's memory.
    rdatas: Vec<(Box<[u8]>, u32)>,
    /// The records as they go into an answer, owner `0xC00C`.
    wire: Vec<u8>,
    count: u16,
}

impl RrSet {
    fn add(&mut self, rdata: Vec<u8>) {
        match self.rdatas.binary_search_by(|(r, _)| (**r).cmp(&rdata[..])) {
            Ok(i) => self.rdatas[i].1 += 1,
            Err(i) => self.rdatas.insert(i, (rdata.into_boxed_slice(), 1)),
        }
    }

    fn remove(&mut self, rdata: &[u8]) {
        if let Ok(i) = self.rdatas.binary_search_by(|(r, _)| (**r).cmp(rdata)) {
            self.rdatas[i].1 -= 1;
            if self.rdatas[i].1 == 0 {
                self.rdatas.remove(i);
            }
        }
    }
}

#[derive(Default)]
struct Node {
    sets: Vec<(u16, RrSet)>,
    /// References from [`RData::Exists`].
    marks: u32,
    /// Names directly below that exist.
    below: u32,
}

impl Node {
    fn exists(&self) -> bool {
        !self.sets.is_empty() || self.marks > 0 || self.below > 0
    }

    fn set(&self, rtype: u16) -> Option<&RrSet> {
        self.sets.iter().find(|(t, _)| *t == rtype).map(|(_, s)| s)
    }
}

/// What the zone says about a question.
pub enum Lookup<'a> {
    /// Records of the asked type (or the name's CNAME): count and encoded answer section.
    Answer(u16, &'a [u8]),
    /// Several sets (type ANY).
    Many(Vec<(u16, &'a [u8])>),
    NoData,
    NxDomain,
    /// Not in the cluster zone and no record here: forward it.
    NotOurs,
}

pub struct Zone {
    apex: Vec<u8>,
    ttl: u32,
    names: HashMap<Box<[u8]>, Node>,
    serial: u32,
    /// SOA type..rdata, for the authority section of negative answers (owner added there).
    soa_tail: Vec<u8>,
    dirty: Vec<(Box<[u8]>, u16)>,
}

impl Zone {
    /// An empty zone: SOA and NS at the apex, `dns-version` TXT, and the `svc` and `pod`
    /// subtrees, which always exist.
    pub fn new(domain: &str, ttl: u32, nameserver_ips: &[std::net::IpAddr]) -> Option<Zone> {
        let apex = to_wire(domain)?;
        if apex.len() <= 1 {
            return None;
        }
        let mut zone = Zone {
            apex,
            ttl,
            names: HashMap::new(),
            serial: 1,
            soa_tail: Vec::new(),
            dirty: Vec::new(),
        };
        zone.names.insert(zone.apex.clone().into(), Node::default());
        let ns = format!("ns.dns.{domain}");
        let mut fixed = vec![
            Record {
                name: domain.into(),
                data: RData::Ns(ns.clone()),
            },
            Record {
                name: format!("dns-version.{domain}"),
                data: RData::Txt(crate::records::SCHEMA_VERSION.into()),
            },
            Record {
                name: format!("svc.{domain}"),
                data: RData::Exists,
            },
            Record {
                name: format!("pod.{domain}"),
                data: RData::Exists,
            },
        ];
        for ip in nameserver_ips {
            let data = match ip {
                std::net::IpAddr::V4(v4) => RData::A(*v4),
                std::net::IpAddr::V6(v6) => RData::Aaaa(*v6),
            };
            fixed.push(Record {
                name: ns.clone(),
                data,
            });
        }
        for r in &fixed {
            zone.add(r);
        }
        zone.finish(1);
        Some(zone)
    }

    pub fn apex(&self) -> &[u8] {
        &self.apex
    }

    pub fn ttl(&self) -> u32 {
        self.ttl
    }

    pub fn serial(&self) -> u32 {
        self.serial
    }

    /// SOA type, class, TTL, length and rdata: a negative answer's authority record
    /// without its owner.
    pub fn soa_tail(&self) -> &[u8] {
        &self.soa_tail
    }

    pub fn add(&mut self, r: &Record) {
        let Some(owner) = to_wire(&r.name) else {
            return;
        };
        let in_cluster = in_zone(&owner, &self.apex);
        let existed = self.names.get(owner.as_slice()).is_some_and(Node::exists);
        let node = self
            .names
            .entry(owner.clone().into_boxed_slice())
            .or_default();
        match (r.data.rtype(), r.data.to_wire()) {
            (Some(t), Some(rdata)) => {
                let i = match node.sets.iter().position(|(st, _)| *st == t) {
                    Some(i) => i,
                    None => {
                        node.sets.push((t, RrSet::default()));
                        node.sets.len() - 1
                    }
                };
                node.sets[i].1.add(rdata);
                self.dirty.push((owner.clone().into(), t));
            }
            (None, _) => node.marks += 1,
            (Some(_), None) => {}
        }
        let exists = node.exists();
        if !existed && exists && in_cluster {
            self.link_parent(&owner);
        }
        if !exists {
            self.names.remove(owner.as_slice());
        }
    }

    pub fn remove(&mut self, r: &Record) {
        let Some(owner) = to_wire(&r.name) else {
            return;
        };
        let Some(node) = self.names.get_mut(owner.as_slice()) else {
            return;
        };
        match (r.data.rtype(), r.data.to_wire()) {
            (Some(t), Some(rdata)) => {
                if let Some(i) = node.sets.iter().position(|(st, _)| *st == t) {
                    let set = &mut node.sets[i].1;
                    set.remove(&rdata);
                    if set.rdatas.is_empty() {
                        node.sets.swap_remove(i);
                    } else {
                        self.dirty.push((owner.clone().into(), t));
                    }
                }
            }
            (None, _) => node.marks = node.marks.saturating_sub(1),
            (Some(_), None) => {}
        }
        self.prune(&owner);
    }

    /// A name came into existence: its parents up to the apex now have it below them.
    fn link_parent(&mut self, owner: &[u8]) {
        let Some(p) = parent(owner) else { return };
        if p.len() < self.apex.len() {
            return;
        }
        let node = self.names.entry(p.into()).or_default();
        let was = node.exists();
        node.below += 1;
        if !was {
            let p = p.to_vec();
            self.link_parent(&p);
        }
    }

    /// Drop a name that no longer exists, and the parents that existed only for it.
    fn prune(&mut self, owner: &[u8]) {
        let mut cur = owner.to_vec();
        loop {
            if cur == self.apex {
                return;
            }
            match self.names.get(cur.as_slice()) {
                Some(n) if !n.exists() => {
                    self.names.remove(cur.as_slice());
                }
                _ => return,
            }
            if !in_zone(&cur, &self.apex) {
                return;
            }
            let Some(p) = parent(&cur).map(<[u8]>::to_vec) else {
                return;
            };
            match self.names.get_mut(p.as_slice()) {
                Some(n) => n.below = n.below.saturating_sub(1),
                None => return,
            }
            cur = p;
        }
    }

    /// Re-encode the sets touched since the last call, and the SOA with `serial`.
    pub fn finish(&mut self, serial: u32) {
        let ttl = self.ttl.to_be_bytes();
        for (owner, t) in std::mem::take(&mut self.dirty) {
            let Some(node) = self.names.get_mut(&owner) else {
                continue;
            };
            let Some((_, set)) = node.sets.iter_mut().find(|(st, _)| *st == t) else {
                continue;
            };
            set.wire.clear();
            set.count = 0;
            for (rdata, _) in &set.rdatas {
                if set.count == u16::MAX {
                    break;
                }
                set.wire.extend([0xC0, 0x0C]);
                set.wire.extend(t.to_be_bytes());
                set.wire.extend([0, 1]);
                set.wire.extend(ttl);
                set.wire.extend((rdata.len() as u16).to_be_bytes());
                set.wire.extend(rdata);
                set.count += 1;
            }
        }
        if serial != self.serial || self.soa_tail.is_empty() {
            self.serial = serial;
            self.encode_soa();
        }
    }

    fn encode_soa(&mut self) {
        let domain = crate::name::to_dotted(&self.apex);
        let mut rdata = to_wire(&format!("ns.dns.{domain}")).unwrap_or_else(|| vec![0]);
        rdata.extend(to_wire(&format!("hostmaster.{domain}")).unwrap_or_else(|| vec![0]));
        // serial, refresh, retry, expire, minimum: nobody transfers this zone, so the
        // timers are conventional; minimum is the negative-caching TTL (RFC 2308).
        for v in [self.serial, 7200, 1800, 86400, self.ttl] {
            rdata.extend(v.to_be_bytes());
        }
        let mut tail = Vec::with_capacity(10 + rdata.len());
        tail.extend(TYPE_SOA.to_be_bytes());
        tail.extend([0, 1]);
        tail.extend(self.ttl.to_be_bytes());
        tail.extend((rdata.len() as u16).to_be_bytes());
        tail.extend(&rdata);
        self.soa_tail = tail;
        let node = self.names.entry(self.apex.clone().into()).or_default();
        let mut set = RrSet::default();
        set.add(rdata);
        set.wire.extend([0xC0, 0x0C]);
        set.wire.extend(&self.soa_tail);
        set.count = 1;
        node.sets.retain(|(t, _)| *t != TYPE_SOA);
        node.sets.push((TYPE_SOA, set));
    }

    /// Answer a question whose name is already lowercase wire format.
    pub fn lookup(&self, qname: &[u8], qtype: u16) -> Lookup<'_> {
        let in_cluster = in_zone(qname, &self.apex);
        let node = self.names.get(qname);
        if !in_cluster {
            // Reverse names: only what we hold, and only positive answers.
            return match node.and_then(|n| n.set(qtype).map(|s| (s.count, s))) {
                Some((count, s)) => Lookup::Answer(count, &s.wire),
                None if qtype == crate::records::TYPE_ANY && node.is_some() => many(node),
                None => Lookup::NotOurs,
            };
        }
        let Some(node) = node.filter(|n| n.exists()) else {
            return Lookup::NxDomain;
        };
        if qtype == crate::records::TYPE_ANY {
            return many(Some(node));
        }
        if let Some(s) = node.set(qtype) {
            return Lookup::Answer(s.count, &s.wire);
        }
        if let Some(s) = node.set(TYPE_CNAME) {
            return Lookup::Answer(s.count, &s.wire);
        }
        Lookup::NoData
    }

    /// The encoded records of one type at a name (owner `0xC00C`), if any.
    pub fn rrset(&self, name: &[u8], rtype: u16) -> Option<&[u8]> {
        let set = self.names.get(name)?.set(rtype)?;
        Some(&set.wire)
    }

    /// Every name that exists with its sets (type, answer bytes), the SOA left out (its
    /// serial is a clock): two zones with the same records compare equal.
    pub fn snapshot(&self) -> std::collections::BTreeMap<String, Vec<(u16, Vec<u8>)>> {
        self.names
            .iter()
            .filter(|(_, n)| n.exists())
            .map(|(k, n)| {
                let mut sets: Vec<(u16, Vec<u8>)> = n
                    .sets
                    .iter()
                    .filter(|(t, _)| *t != TYPE_SOA)
                    .map(|(t, s)| (*t, s.wire.clone()))
                    .collect();
                sets.sort();
                (crate::name::to_dotted(k), sets)
            })
            .collect()
    }

    /// How many names the table holds (for metrics and tests).
    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }
}

fn many(node: Option<&Node>) -> Lookup<'_> {
    match node {
        Some(n) if !n.sets.is_empty() => Lookup::Many(
            n.sets
                .iter()
                .map(|(_, s)| (s.count, s.wire.as_slice()))
                .collect(),
        ),
        Some(_) => Lookup::NoData,
        None => Lookup::NotOurs,
    }
}
