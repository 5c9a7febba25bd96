//! Replies to parsed queries: errors, REFUSED, and the zone's answers, written into the
//! caller's buffer. This is the hot path: one hash lookup under a read lock, and copies of
//! bytes encoded when the records changed.

use std::net::IpAddr;

use crate::acl::Acl;
use crate::model::Model;
use crate::name::in_zone;
use crate::records::{TYPE_A, TYPE_AAAA, TYPE_ANY, TYPE_AXFR, TYPE_CNAME, TYPE_IXFR, TYPE_SRV};
use crate::wire::{
    parse, put_header, put_opt, reply_flags, set_count, Edns, Parsed, Query, CLASS_IN, FLAG_TC,
    RCODE_BADVERS, RCODE_NOERROR, RCODE_NXDOMAIN, RCODE_REFUSED,
};
use crate::zone::{Lookup, Zone};

/// What became of a request.
#[derive(Debug)]
pub enum Decision<'a> {
    /// `out` holds the reply.
    Reply,
    /// Send nothing.
    Drop,
    /// Not in the zone: the forwarder answers. The lowercase name is in the caller's buffer.
    Forward(Query<'a>),
    /// The name is an alias (ExternalName) of a name outside the zone, here in wire
    /// format, with the alias's TTL: [`crate::chase`] answers.
    Chase(Query<'a>, Vec<u8>, u32),
}

/// Answer one request from `src`, into `out`. Over UDP (`udp`) the reply is cut to what
/// the client takes; `lower` receives the question's name in lowercase.
pub fn respond<'a>(
    model: &Model,
    acl: &Acl,
    src: IpAddr,
    msg: &'a [u8],
    udp: bool,
    out: &mut Vec<u8>,
    lower: &mut [u8; 255],
) -> Decision<'a> {
    out.clear();
    let allowed = acl.allows(src, model);
    match parse(msg, lower) {
        Parsed::Drop => Decision::Drop,
        // A stranger's garbage gets nothing: only well-formed questions earn a REFUSED.
        Parsed::Error { .. } if !allowed => Decision::Drop,
        Parsed::Error {
            id,
            flags,
            rcode,
            question,
            edns,
        } => {
            error_reply(out, id, flags, rcode as u16, question, edns);
            Decision::Reply
        }
        Parsed::Query(q) if !allowed => {
            error_reply(
                out,
                q.id,
                q.flags,
                RCODE_REFUSED as u16,
                Some(q.question),
                q.edns,
            );
            Decision::Reply
        }
        Parsed::Query(q) => {
            if q.edns.is_some_and(|e| e.version > 0) {
                error_reply(out, q.id, q.flags, RCODE_BADVERS, Some(q.question), q.edns);
                return Decision::Reply;
            }
            // Zone transfers are not offered, and not forwarded either.
            if q.qclass != CLASS_IN || matches!(q.qtype, TYPE_IXFR | TYPE_AXFR) {
                error_reply(
                    out,
                    q.id,
                    q.flags,
                    RCODE_REFUSED as u16,
                    Some(q.question),
                    q.edns,
                );
                return Decision::Reply;
            }
            let zone = model.zone();
            let qname = &lower[..q.qname_len];
            let lookup = zone.lookup(qname, q.qtype);
            if matches!(lookup, Lookup::NotOurs) {
                return Decision::Forward(q);
            }
            if let Some(target) = alias_of(&lookup, q.qtype) {
                if !in_zone(target, zone.apex()) {
                    return Decision::Chase(q, target.to_vec(), zone.ttl());
                }
            }
            let additional = zone_reply(out, &q, &zone, lookup);
            drop(zone);
            if udp && out.len() > q.udp_limit() {
                // Additional records are a courtesy: drop them before truncating (RFC 2181 9).
                if let Some(at) = additional {
                    out.truncate(at);
                    set_count(out, 3, q.edns.is_some() as u16);
                    if let Some(e) = q.edns {
                        put_opt(out, 0, e.dnssec_ok);
                    }
                }
                truncate_to(out, q.question.len(), q.edns, q.udp_limit());
            }
            Decision::Reply
        }
    }
}

/// A reply carrying only an rcode (and the question and an OPT when the request had them).
pub fn error_reply(
    out: &mut Vec<u8>,
    id: u16,
    req_flags: u16,
    rcode: u16,
    question: Option<&[u8]>,
    edns: Option<Edns>,
) {
    out.clear();
    let counts = [question.is_some() as u16, 0, 0, edns.is_some() as u16];
    put_header(out, id, reply_flags(req_flags, rcode, false), counts);
    out.extend(question.unwrap_or(&[]));
    if let Some(e) = edns {
        put_opt(out, rcode, e.dnssec_ok);
    }
}

/// The target of a CNAME answer to a question for another type.
fn alias_of<'z>(lookup: &Lookup<'z>, qtype: u16) -> Option<&'z [u8]> {
    let Lookup::Answer(_, wire) = lookup else {
        return None;
    };
    if matches!(qtype, TYPE_CNAME | TYPE_ANY) || wire.get(2..4)? != TYPE_CNAME.to_be_bytes() {
        return None;
    }
    let rdlen = u16::from_be_bytes([*wire.get(10)?, *wire.get(11)?]) as usize;
    wire.get(12..12 + rdlen)
}

/// Follow CNAMEs inside the zone from the answer at `at`, appending each target's records
/// (owner: a pointer to the target name in the record before). Returns how many.
fn chase_in_zone(out: &mut Vec<u8>, mut at: usize, zone: &Zone, qtype: u16) -> u16 {
    let mut added = 0u16;
    // A loop of aliases ends here rather than filling the reply.
    for _ in 0..8 {
        let Some(tail) = out.get(at..) else { break };
        let Some(target) = alias_of(&Lookup::Answer(1, tail), qtype) else {
            break;
        };
        let mut name = [0u8; 255];
        let Some(n) = name.get_mut(..target.len()) else {
            break;
        };
        n.copy_from_slice(target);
        let name = &name[..target.len()];
        let owner = at + 12;
        if !in_zone(name, zone.apex()) || owner > 0x3FFF {
            break;
        }
        let Some(wire) = zone
            .rrset(name, qtype)
            .or_else(|| zone.rrset(name, TYPE_CNAME))
        else {
            break;
        };
        let next = out.len();
        let mut r = 0;
        while r + 12 <= wire.len() {
            let len = 12 + u16::from_be_bytes([wire[r + 10], wire[r + 11]]) as usize;
            out.extend((0xC000 | owner as u16).to_be_bytes());
            out.extend(&wire[r + 2..(r + len).min(wire.len())]);
            added = added.saturating_add(1);
            r += len;
        }
        at = next;
    }
    added
}

/// Returns where the additional section starts when it holds more than the OPT.
fn zone_reply(out: &mut Vec<u8>, q: &Query, zone: &Zone, lookup: Lookup) -> Option<usize> {
    match lookup {
        Lookup::Answer(n, wire) => write_zone(out, q, zone, RCODE_NOERROR, &[(n, wire)]),
        Lookup::Many(sets) => write_zone(out, q, zone, RCODE_NOERROR, &sets),
        Lookup::NoData => write_zone(out, q, zone, RCODE_NOERROR, &[]),
        Lookup::NxDomain => write_zone(out, q, zone, RCODE_NXDOMAIN, &[]),
        Lookup::NotOurs => None,
    }
}

/// An authoritative reply; no answers means a negative one, with the SOA as authority.
fn write_zone(
    out: &mut Vec<u8>,
    q: &Query,
    zone: &Zone,
    rcode: u8,
    answers: &[(u16, &[u8])],
) -> Option<usize> {
    let an: u32 = answers.iter().map(|(n, _)| *n as u32).sum();
    let negative = answers.is_empty();
    let counts = [
        1,
        an.min(u16::MAX as u32) as u16,
        negative as u16,
        q.edns.is_some() as u16,
    ];
    put_header(out, q.id, reply_flags(q.flags, rcode as u16, true), counts);
    out.extend(q.question);
    let answers_at = out.len();
    for (_, wire) in answers {
        out.extend(*wire);
    }
    if answers.len() == 1 {
        let chased = chase_in_zone(out, answers_at, zone, q.qtype);
        set_count(out, 1, (an as u16).saturating_add(chased));
    }
    if negative {
        // The SOA's owner is the apex, which ends the question's name: point at it.
        let at = 12 + q.qname_len - zone.apex().len();
        out.extend((0xC000 | at as u16).to_be_bytes());
        out.extend(zone.soa_tail());
    }
    let additional_at = out.len();
    let extra = if q.qtype == TYPE_SRV {
        srv_targets(out, answers_at, zone)
    } else {
        0
    };
    set_count(out, 3, extra + q.edns.is_some() as u16);
    if let Some(e) = q.edns {
        put_opt(out, 0, e.dnssec_ok);
    }
    (extra > 0).then_some(additional_at)
}

/// The addresses of SRV targets in the zone, as additional records (the specification's
/// "may"; it saves clients a query per target). Each owner is a pointer to the target
/// name inside its SRV record already in the reply. Returns how many were added.
fn srv_targets(out: &mut Vec<u8>, answers_at: usize, zone: &Zone) -> u16 {
    let end = out.len();
    let mut added = 0u16;
    let mut seen: Vec<(usize, usize)> = Vec::new();
    let mut p = answers_at;
    while p + 12 <= end {
        let rtype = u16::from_be_bytes([out[p + 2], out[p + 3]]);
        let rdlen = u16::from_be_bytes([out[p + 10], out[p + 11]]) as usize;
        let (target, next) = (p + 18, p + 12 + rdlen);
        p = next;
        if rtype != TYPE_SRV || next > end || target >= next || target > 0x3FFF {
            continue;
        }
        let name = (target, next);
        if seen.iter().any(|&(a, b)| out[a..b] == out[name.0..name.1]) {
            continue;
        }
        seen.push(name);
        let mut lower = [0u8; 255];
        let Some(n) = lower.get_mut(..next - target) else {
            continue;
        };
        n.copy_from_slice(&out[target..next]);
        let n = next - target;
        for t in [TYPE_A, TYPE_AAAA] {
            let Some(wire) = zone.rrset(&lower[..n], t) else {
                continue;
            };
            // Each record: owner pointer (2), type .. rdata; swap the owner.
            let mut r = 0;
            while r + 12 <= wire.len() {
                let len = 12 + u16::from_be_bytes([wire[r + 10], wire[r + 11]]) as usize;
                out.extend((0xC000 | target as u16).to_be_bytes());
                out.extend(&wire[r + 2..(r + len).min(wire.len())]);
                added = added.saturating_add(1);
                r += len;
            }
        }
    }
    added
}

/// Over UDP a reply larger than the client takes goes out as header and question with TC
/// set; the client asks again over TCP (RFC 2181 9: no partial RRsets).
pub fn truncate_to(out: &mut Vec<u8>, question_len: usize, edns: Option<Edns>, limit: usize) {
    if out.len() <= limit {
        return;
    }
    out.truncate(12 + question_len);
    set_count(out, 1, 0);
    set_count(out, 2, 0);
    set_count(out, 3, edns.is_some() as u16);
    let flags = u16::from_be_bytes([out[2], out[3]]) | FLAG_TC;
    out[2..4].copy_from_slice(&flags.to_be_bytes());
    if let Some(e) = edns {
        put_opt(out, 0, e.dnssec_ok);
    }
}
