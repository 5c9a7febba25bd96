//! Upstream replies kept for their TTL. An entry is the reply as received, minus its OPT
//! record, with the offset of every TTL field: serving it is a copy that patches the ID,
//! the client's spelling of the question, and each TTL less the time spent in the cache.
//!
//! Negative replies (NXDOMAIN, NODATA) are kept for the SOA's TTL or minimum, whichever is
//! lower (RFC 2308); a negative reply without an SOA, and failures, are not kept.
//! The bound is two generations of at most `cap / 2` entries: when the young one fills,
//! the old one is dropped whole, so eviction costs nothing per query and a name asked
//! again within a generation survives (it is moved into the young one).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::records::{TYPE_OPT, TYPE_SOA};
use crate::wire::{
    put_opt, read_rr, set_count, skip_name, Query, FLAG_CD, FLAG_QR, FLAG_RA, FLAG_RD, FLAG_TC,
};

/// The cache key: lowercase wire name, then type and class.
pub fn key(qname_lower: &[u8], qtype: u16, qclass: u16) -> Vec<u8> {
    let mut k = Vec::with_capacity(qname_lower.len() + 4);
    k.extend(qname_lower);
    k.extend(qtype.to_be_bytes());
    k.extend(qclass.to_be_bytes());
    k
}

#[derive(Debug)]
pub struct Entry {
    msg: Vec<u8>,
    question_len: usize,
    /// Offsets of TTL fields with the value received.
    ttls: Vec<(usize, u32)>,
    fetched: Instant,
    /// How long the entry may be served; 0: pass it on once, never cache.
    keep: u32,
}

impl Entry {
    /// Read an upstream reply (already checked to answer our question). `None` when the
    /// records do not parse.
    pub fn from_reply(reply: &[u8], max_ttl: Duration) -> Option<Entry> {
        let mut msg = reply.to_vec();
        let count = |m: &[u8], i: usize| u16::from_be_bytes([m[4 + 2 * i], m[5 + 2 * i]]);
        if msg.len() < 12 || count(&msg, 0) != 1 {
            return None;
        }
        let q_end = skip_name(&msg, 12)? + 4;
        if q_end > msg.len() {
            return None;
        }
        let (an, ns, ar) = (count(&msg, 1), count(&msg, 2), count(&msg, 3));
        let total = an as usize + ns as usize + ar as usize;
        let mut ttls = Vec::with_capacity(total);
        let mut min_answer = u32::MAX;
        let mut negative_ttl = None;
        let mut opt = None;
        let mut i = q_end;
        for n in 0..total {
            let (fixed, rtype, _, ttl, _, end) = read_rr(&msg, i)?;
            if rtype == TYPE_OPT {
                opt = Some((i, end));
            } else {
                ttls.push((fixed + 4, ttl));
                if n < an as usize {
                    min_answer = min_answer.min(ttl);
                } else if n < (an + ns) as usize && rtype == TYPE_SOA {
                    let minimum_at = end.checked_sub(4)?;
                    let minimum = u32::from_be_bytes(msg.get(minimum_at..end)?.try_into().ok()?);
                    negative_ttl = Some(ttl.min(minimum));
                }
            }
            i = end;
        }
        msg.truncate(i);
        if let Some((start, end)) = opt {
            // The OPT is hop-by-hop (RFC 6891): the client gets ours. Names are only
            // compressed against earlier bytes, so cutting the last record is safe; an OPT
            // elsewhere (rare) costs a decode and re-encode.
            if end != msg.len() {
                let mut m = hickory_proto::op::Message::from_vec(reply).ok()?;
                m.edns = None;
                let again = m.to_vec().ok()?;
                return Entry::from_reply(&again, max_ttl);
            }
            msg.truncate(start);
            set_count(&mut msg, 3, ar - 1);
        }
        let rcode = msg[3] & 0xF;
        let keep = match rcode {
            0 if an > 0 => min_answer,
            0 | 3 => negative_ttl.unwrap_or(0),
            _ => 0,
        };
        Some(Entry {
            msg,
            question_len: q_end - 12,
            ttls,
            fetched: Instant::now(),
            keep: keep.min(max_ttl.as_secs().min(u32::MAX as u64) as u32),
        })
    }

    pub fn cacheable(&self) -> bool {
        self.keep > 0
    }

    fn elapsed(&self, now: Instant) -> u32 {
        now.saturating_duration_since(self.fetched)
            .as_secs()
            .min(u32::MAX as u64) as u32
    }

    fn fresh(&self, now: Instant) -> bool {
        self.elapsed(now) < self.keep
    }

    /// The reply decoded, TTLs aged: for the rare paths that rebuild a message.
    pub fn message(&self, now: Instant) -> Option<hickory_proto::op::Message> {
        let mut m = hickory_proto::op::Message::from_vec(&self.msg).ok()?;
        let age = self.elapsed(now);
        for r in m
            .answers
            .iter_mut()
            .chain(&mut m.authorities)
            .chain(&mut m.additionals)
        {
            r.ttl = r.ttl.saturating_sub(age);
        }
        Some(m)
    }

    pub fn rcode(&self) -> u8 {
        self.msg[3] & 0xF
    }

    /// The reply for `q`: its ID, its question as the client spelled it, TTLs aged, an OPT
    /// if it sent one. Not truncated here.
    pub fn write_reply(&self, out: &mut Vec<u8>, q: &Query, now: Instant) {
        out.clear();
        out.extend(&self.msg);
        out[0..2].copy_from_slice(&q.id.to_be_bytes());
        let up = u16::from_be_bytes([out[2], out[3]]);
        let flags = (up & !(FLAG_RD | FLAG_CD | FLAG_TC))
            | FLAG_QR
            | FLAG_RA
            | (q.flags & (FLAG_RD | FLAG_CD));
        out[2..4].copy_from_slice(&flags.to_be_bytes());
        if q.question.len() == self.question_len {
            out[12..12 + self.question_len].copy_from_slice(q.question);
        }
        let age = self.elapsed(now);
        for &(at, ttl) in &self.ttls {
            out[at..at + 4].copy_from_slice(&ttl.saturating_sub(age).to_be_bytes());
        }
        if let Some(e) = q.edns {
            let ar = u16::from_be_bytes([out[10], out[11]]);
            set_count(out, 3, ar.saturating_add(1));
            put_opt(out, 0, e.dnssec_ok);
        }
    }
}

#[derive(Default)]
struct Generations {
    young: HashMap<Vec<u8>, Arc<Entry>>,
    old: HashMap<Vec<u8>, Arc<Entry>>,
}

pub struct Cache {
    half: usize,
    gens: Mutex<Generations>,
}

impl Cache {
    pub fn new(cap: usize) -> Cache {
        Cache {
            half: cap.div_ceil(2),
            gens: Mutex::new(Generations::default()),
        }
    }

    pub fn get(&self, key: &[u8], now: Instant) -> Option<Arc<Entry>> {
        if self.half == 0 {
            return None;
        }
        let mut g = self.gens.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(e) = g.young.get(key) {
            return e.fresh(now).then(|| e.clone());
        }
        let e = g.old.remove(key)?;
        if !e.fresh(now) {
            return None;
        }
        Self::put(&mut g, self.half, key.to_vec(), e.clone());
        Some(e)
    }

    pub fn insert(&self, key: Vec<u8>, entry: Arc<Entry>) {
        if self.half == 0 || !entry.cacheable() {
            return;
        }
        let mut g = self.gens.lock().unwrap_or_else(|e| e.into_inner());
        Self::put(&mut g, self.half, key, entry);
    }

    fn put(g: &mut Generations, half: usize, key: Vec<u8>, entry: Arc<Entry>) {
        if g.young.len() >= half && !g.young.contains_key(&key) {
            g.old = std::mem::take(&mut g.young);
        }
        g.young.insert(key, entry);
    }

    pub fn len(&self) -> usize {
        let g = self.gens.lock().unwrap_or_else(|e| e.into_inner());
        g.young.len() + g.old.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
