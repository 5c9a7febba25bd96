//! An ExternalName Service's CNAME followed to its target's addresses. Stub resolvers in
//! pods (glibc, musl) do not ask again for a CNAME's target: they expect the server to
//! return the chain, so a bare CNAME would leave them with no address. A target outside
//! the zone is resolved through the forwarder (cache and coalescing included); one inside
//! the zone is appended by [`crate::answer`] directly.
//!
//! This path is rare and goes through hickory-proto: the upstream's records carry
//! compression pointers into the upstream's message, and re-encoding them is its job.

use std::time::Instant;

use hickory_proto::op::{Edns, Message, OpCode, Query as HQuery};
use hickory_proto::rr::rdata::CNAME;
use hickory_proto::rr::{Name, RData, Record};
use hickory_proto::serialize::binary::BinDecodable;

use crate::answer::error_reply;
use crate::cache::Entry;
use crate::wire::{Query, FLAG_CD, FLAG_RD, MAX_UDP, RCODE_SERVFAIL};

/// The reply to `q`, whose name is an alias (TTL `ttl`) of `target` (wire format): the
/// CNAME, then the upstream's answer for the target with the upstream's rcode; SERVFAIL
/// when the upstream gave none. Not truncated here.
pub fn reply(
    out: &mut Vec<u8>,
    q: &Query,
    ttl: u32,
    target: &[u8],
    upstream: Option<&Entry>,
    now: Instant,
) {
    let servfail = |out: &mut Vec<u8>| {
        error_reply(
            out,
            q.id,
            q.flags,
            RCODE_SERVFAIL as u16,
            Some(q.question),
            q.edns,
        );
    };
    let (Ok(question), Ok(target), Some(up)) = (
        HQuery::from_bytes(q.question),
        Name::from_bytes(target),
        upstream.and_then(|e| e.message(now)),
    ) else {
        return servfail(out);
    };
    let mut r = Message::response(q.id, OpCode::Query);
    r.metadata.authoritative = true;
    r.metadata.recursion_desired = q.flags & FLAG_RD != 0;
    r.metadata.checking_disabled = q.flags & FLAG_CD != 0;
    r.metadata.recursion_available = true;
    r.metadata.response_code = up.metadata.response_code;
    let alias = Record::from_rdata(question.name().clone(), ttl, RData::CNAME(CNAME(target)));
    r.add_query(question);
    r.add_answer(alias);
    if up.answers.is_empty() {
        r.add_authorities(up.authorities);
    } else {
        r.add_answers(up.answers);
    }
    if let Some(e) = q.edns {
        let mut edns = Edns::new();
        edns.set_max_payload(MAX_UDP);
        edns.flags_mut().dnssec_ok = e.dnssec_ok;
        r.set_edns(edns);
    }
    match r.to_vec() {
        Ok(v) => *out = v,
        Err(_) => servfail(out),
    }
}
