//! The query side of the wire by hand: the fixed header, the one question and an OPT
//! record, read without allocating. A query is only ever *read* here; [`crate::answer`]
//! writes replies.

/// Largest UDP reply sent, and the size advertised in our OPT records: the DNS flag day
/// 2020 value, which avoids IP fragmentation on ordinary paths.
pub const MAX_UDP: u16 = 1232;
/// A client without EDNS gets at most this much over UDP (RFC 1035).
pub const CLASSIC_UDP: u16 = 512;

pub const RCODE_NOERROR: u8 = 0;
pub const RCODE_FORMERR: u8 = 1;
pub const RCODE_SERVFAIL: u8 = 2;
pub const RCODE_NXDOMAIN: u8 = 3;
pub const RCODE_NOTIMP: u8 = 4;
pub const RCODE_REFUSED: u8 = 5;
/// Extended (EDNS) rcode 16: the OPT's upper 8 bits say 1, the header's 4 bits say 0.
pub const RCODE_BADVERS: u16 = 16;

pub const CLASS_IN: u16 = 1;

pub const FLAG_QR: u16 = 0x8000;
pub const FLAG_AA: u16 = 0x0400;
pub const FLAG_TC: u16 = 0x0200;
pub const FLAG_RD: u16 = 0x0100;
pub const FLAG_RA: u16 = 0x0080;
pub const FLAG_CD: u16 = 0x0010;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Edns {
    pub udp_size: u16,
    pub version: u8,
    pub dnssec_ok: bool,
}

/// A query that parsed. `question` is the question section as the client sent it (the
/// name's case included); the lowercase name is in the caller's buffer.
#[derive(Clone, Copy, Debug)]
pub struct Query<'a> {
    pub id: u16,
    pub flags: u16,
    pub question: &'a [u8],
    pub qname_len: usize,
    pub qtype: u16,
    pub qclass: u16,
    pub edns: Option<Edns>,
}

impl Query<'_> {
    /// The most this client can take over UDP.
    pub fn udp_limit(&self) -> usize {
        match self.edns {
            Some(e) => e.udp_size.clamp(CLASSIC_UDP, MAX_UDP) as usize,
            None => CLASSIC_UDP as usize,
        }
    }
}

#[derive(Debug)]
pub enum Parsed<'a> {
    Query(Query<'a>),
    /// Answerable only with an error: the header was readable. `question` is there when it
    /// parsed (echoed back), `edns` when an OPT was read before the fault.
    Error {
        id: u16,
        flags: u16,
        rcode: u8,
        question: Option<&'a [u8]>,
        edns: Option<Edns>,
    },
    /// Not even a header, or a response (answering responses makes loops): no reply.
    Drop,
}

fn u16_at(b: &[u8], i: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(i)?, *b.get(i + 1)?]))
}

/// Read the name at `at`, no compression allowed (a question's name is the first in the
/// message), lowercased into `lower`. Returns its length on the wire.
pub fn read_qname(msg: &[u8], at: usize, lower: &mut [u8; 255]) -> Option<usize> {
    let mut i = at;
    loop {
        let len = *msg.get(i)? as usize;
        if len & 0xC0 != 0 {
            return None;
        }
        let end = i + 1 + len;
        if end - at > 255 {
            return None;
        }
        let src = msg.get(i..end)?;
        for (d, s) in lower[i - at..end - at].iter_mut().zip(src) {
            *d = s.to_ascii_lowercase();
        }
        i = end;
        if len == 0 {
            return Some(i - at);
        }
    }
}

/// Skip a possibly compressed name; the offset after it.
pub fn skip_name(msg: &[u8], mut i: usize) -> Option<usize> {
    loop {
        let len = *msg.get(i)? as usize;
        match len & 0xC0 {
            0 if len == 0 => return Some(i + 1),
            0 => i += 1 + len,
            0xC0 => return msg.get(i + 1).map(|_| i + 2),
            _ => return None,
        }
    }
}

/// One resource record's fixed fields: (type, class, ttl, rdata start, rdata end).
pub fn read_rr(msg: &[u8], at: usize) -> Option<(usize, u16, u16, u32, usize, usize)> {
    let i = skip_name(msg, at)?;
    let rtype = u16_at(msg, i)?;
    let class = u16_at(msg, i + 2)?;
    let ttl = u32::from_be_bytes(msg.get(i + 4..i + 8)?.try_into().ok()?);
    let rdlen = u16_at(msg, i + 8)? as usize;
    let start = i + 10;
    let end = start + rdlen;
    if end > msg.len() {
        return None;
    }
    Some((i, rtype, class, ttl, start, end))
}

pub fn parse<'a>(msg: &'a [u8], lower: &mut [u8; 255]) -> Parsed<'a> {
    let (Some(id), Some(flags)) = (u16_at(msg, 0), u16_at(msg, 2)) else {
        return Parsed::Drop;
    };
    if msg.len() < 12 || flags & FLAG_QR != 0 {
        return Parsed::Drop;
    }
    let count = |i| u16_at(msg, i).unwrap_or(0);
    let (qd, an, ns, ar) = (count(4), count(6), count(8), count(10));
    let err = |rcode, question, edns| Parsed::Error {
        id,
        flags,
        rcode,
        question,
        edns,
    };
    let opcode = (flags >> 11) & 0xF;

    let question = if qd == 1 {
        read_qname(msg, 12, lower).and_then(|n| {
            let q = msg.get(12..12 + n + 4)?;
            Some((q, n))
        })
    } else {
        None
    };
    if opcode != 0 {
        return err(RCODE_NOTIMP, question.map(|q| q.0), None);
    }
    let Some((question, qname_len)) = question else {
        return err(RCODE_FORMERR, None, None);
    };
    let qtype = u16_at(question, qname_len).unwrap_or(0);
    let qclass = u16_at(question, qname_len + 2).unwrap_or(0);

    let mut i = 12 + question.len();
    let mut edns = None;
    for n in 0..(an as u32 + ns as u32 + ar as u32) {
        let Some((name_end, rtype, class, ttl, _, end)) = read_rr(msg, i) else {
            return err(RCODE_FORMERR, Some(question), edns);
        };
        if rtype == crate::records::TYPE_OPT {
            // Only one OPT, in the additional section, owned by the root (RFC 6891).
            if edns.is_some() || n < an as u32 + ns as u32 || name_end != i + 1 {
                return err(RCODE_FORMERR, Some(question), edns);
            }
            edns = Some(Edns {
                udp_size: class,
                version: (ttl >> 16) as u8,
                dnssec_ok: ttl & 0x8000 != 0,
            });
        }
        i = end;
    }
    Parsed::Query(Query {
        id,
        flags,
        question,
        qname_len,
        qtype,
        qclass,
        edns,
    })
}

/// Write a reply header.
pub fn put_header(out: &mut Vec<u8>, id: u16, flags: u16, counts: [u16; 4]) {
    out.extend(id.to_be_bytes());
    out.extend(flags.to_be_bytes());
    for c in counts {
        out.extend(c.to_be_bytes());
    }
}

/// The reply flags for a request: QR, its opcode, RD and CD copied, RA (we recurse for
/// names outside the zone, though not for whom we refuse), and the rcode's low 4 bits.
pub fn reply_flags(req_flags: u16, rcode: u16, authoritative: bool) -> u16 {
    let ra = if rcode == RCODE_REFUSED as u16 {
        0
    } else {
        FLAG_RA
    };
    let mut f = FLAG_QR | ra | (req_flags & (0x7800 | FLAG_RD | FLAG_CD)) | (rcode & 0xF);
    if authoritative {
        f |= FLAG_AA;
    }
    f
}

/// Our OPT record: root owner, our UDP size, the extended rcode's upper bits, DO echoed.
pub fn put_opt(out: &mut Vec<u8>, rcode: u16, dnssec_ok: bool) {
    out.push(0);
    out.extend(crate::records::TYPE_OPT.to_be_bytes());
    out.extend(MAX_UDP.to_be_bytes());
    out.push((rcode >> 4) as u8);
    out.push(0);
    out.extend(if dnssec_ok { [0x80, 0] } else { [0, 0] });
    out.extend([0, 0]);
}

/// Set a header count in place.
pub fn set_count(out: &mut [u8], index: usize, n: u16) {
    if let Some(c) = out.get_mut(4 + 2 * index..6 + 2 * index) {
        c.copy_from_slice(&n.to_be_bytes());
    }
}
