//! A transaction: NFNL_MSG_BATCH_BEGIN, nf_tables messages, NFNL_MSG_BATCH_END, sent in one
//! datagram so the kernel commits all of it or none of it.

use super::attr::{be32, string, Msgs, Writer, NLM_F_ACK, NLM_F_REQUEST};

pub const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFNL_MSG_BATCH_BEGIN: u16 = 16;
const NFNL_MSG_BATCH_END: u16 = 17;

pub const MSG_NEWTABLE: u16 = 0;
pub const MSG_GETTABLE: u16 = 1;
pub const MSG_DELTABLE: u16 = 2;
pub const MSG_NEWCHAIN: u16 = 3;
pub const MSG_GETCHAIN: u16 = 4;
pub const MSG_DELCHAIN: u16 = 5;
pub const MSG_NEWRULE: u16 = 6;
pub const MSG_GETRULE: u16 = 7;
pub const MSG_DELRULE: u16 = 8;
pub const MSG_NEWSET: u16 = 9;
pub const MSG_GETSET: u16 = 10;
pub const MSG_DELSET: u16 = 11;
pub const MSG_NEWSETELEM: u16 = 12;
pub const MSG_GETSETELEM: u16 = 13;
pub const MSG_DELSETELEM: u16 = 14;

pub fn nft_type(msg: u16) -> u16 {
    (NFNL_SUBSYS_NFTABLES << 8) | msg
}

/// Messages of one transaction, with what each one is about for error reports.
pub struct Batch {
    pub(crate) w: Writer,
    first_seq: u32,
    next_seq: u32,
    /// Offset of each message in `w`, indexed by `seq - first_seq`.
    offsets: Vec<u32>,
    /// Per message: rule position in its chain (or u32::MAX), for error reports.
    details: Vec<u32>,
    last_msg: Option<usize>,
    next_set_id: u32,
    anon_prefix: String,
}

impl Batch {
    pub fn new(first_seq: u32) -> Self {
        let mut b = Batch {
            w: Writer::with_capacity(64 * 1024),
            first_seq,
            next_seq: first_seq,
            offsets: Vec::new(),
            details: Vec::new(),
            last_msg: None,
            next_set_id: 1,
            anon_prefix: format!("__set{:x}{:x}_", std::process::id(), first_seq),
        };
        let m = b.begin(
            NFNL_MSG_BATCH_BEGIN,
            NLM_F_REQUEST,
            0,
            NFNL_SUBSYS_NFTABLES,
            u32::MAX,
        );
        b.w.end_msg(m);
        b
    }

    /// Starts a message; the returned offset goes to `self.w.end_msg`.
    pub(crate) fn begin(
        &mut self,
        ty: u16,
        flags: u16,
        family: u8,
        res_id: u16,
        detail: u32,
    ) -> usize {
        let seq = self.next_seq;
        self.next_seq = self.next_seq.wrapping_add(1);
        let off = self.w.begin_msg(ty, flags, seq, family, res_id);
        self.offsets.push(off as u32);
        self.details.push(detail);
        if ty != NFNL_MSG_BATCH_BEGIN {
            self.last_msg = Some(off);
        }
        off
    }

    pub(crate) fn begin_nft(&mut self, msg: u16, flags: u16, family: u8, detail: u32) -> usize {
        self.begin(nft_type(msg), NLM_F_REQUEST | flags, family, 0, detail)
    }

    pub(crate) fn set_id(&mut self) -> u32 {
        let id = self.next_set_id;
        self.next_set_id += 1;
        id
    }

    /// A name for a new anonymous set. The kernel's `__set%d` allocation scans every set
    /// of the table per new set (quadratic with a set per service), so weft names them
    /// itself, unique per process and batch.
    pub(crate) fn anon_name(&self, id: u32) -> String {
        format!("{}{id}", self.anon_prefix)
    }

    /// Number of nf_tables messages (not counting the batch framing).
    pub fn len(&self) -> usize {
        self.offsets.len() - 1
    }

    pub fn is_empty(&self) -> bool {
        self.last_msg.is_none()
    }

    /// Closes the batch. The last real message asks for an ack, so a successful commit
    /// produces exactly one reply; failures produce one error per refused message.
    pub fn finish(mut self) -> FinishedBatch {
        let ack_seq = self.last_msg.map(|off| {
            let flags_at = off + 6;
            let f =
                u16::from_ne_bytes([self.w.buf[flags_at], self.w.buf[flags_at + 1]]) | NLM_F_ACK;
            self.w.buf[flags_at..flags_at + 2].copy_from_slice(&f.to_ne_bytes());
            u32::from_ne_bytes([
                self.w.buf[off + 8],
                self.w.buf[off + 9],
                self.w.buf[off + 10],
                self.w.buf[off + 11],
            ])
        });
        let m = self.begin(
            NFNL_MSG_BATCH_END,
            NLM_F_REQUEST,
            0,
            NFNL_SUBSYS_NFTABLES,
            u32::MAX,
        );
        self.w.end_msg(m);
        FinishedBatch {
            batch: self,
            ack_seq,
        }
    }

    /// Names the object that message `seq` created or deleted, e.g. `chain ip weft svc-a`.
    pub fn describe(&self, seq: u32) -> String {
        let idx = seq.wrapping_sub(self.first_seq) as usize;
        let Some(&off) = self.offsets.get(idx) else {
            return format!("message {seq} (not part of this transaction)");
        };
        let Some(msg) = Msgs(&self.w.buf[off as usize..]).next() else {
            return format!("message {seq}");
        };
        if msg.ty >> 8 != NFNL_SUBSYS_NFTABLES {
            return "the transaction as a whole".into();
        }
        let Some((family, attrs)) = msg.nfgen() else {
            return format!("message {seq}");
        };
        let fam = crate::model::Family::from_nfproto(family)
            .map(|f| f.as_str())
            .unwrap_or("?");
        let s = |t: u16| attrs.get(t).and_then(string).unwrap_or_default();
        let table = s(1);
        let detail = self.details[idx];
        match msg.ty & 0xff {
            MSG_NEWTABLE => format!("adding table {fam} {table}"),
            MSG_DELTABLE => format!("deleting table {fam} {table}"),
            MSG_NEWCHAIN => format!("adding chain {fam} {table} {}", s(3)),
            MSG_DELCHAIN => format!("deleting chain {fam} {table} {}", s(3)),
            MSG_NEWRULE => format!("adding rule #{detail} to chain {fam} {table} {}", s(2)),
            MSG_DELRULE => format!("flushing chain {fam} {table} {}", s(2)),
            MSG_NEWSET if s(2).starts_with("__set") => {
                format!("adding an anonymous set of rule #{detail} (table {fam} {table})")
            }
            MSG_NEWSET => format!("adding set {fam} {table} {}", s(2)),
            MSG_DELSET => format!("deleting set {fam} {table} {}", s(2)),
            MSG_NEWSETELEM | MSG_DELSETELEM => {
                let verb = if msg.ty & 0xff == MSG_NEWSETELEM {
                    "adding"
                } else {
                    "deleting"
                };
                let set = attrs
                    .get(2)
                    .and_then(string)
                    .filter(|n| !n.starts_with("__set"))
                    .unwrap_or_else(|| {
                        let id = attrs.get(4).and_then(be32).unwrap_or(0);
                        format!("(anonymous set {id} of rule #{detail})")
                    });
                format!("{verb} elements of set {fam} {table} {set}")
            }
            other => format!("nf_tables message {other} in table {fam} {table}"),
        }
    }
}

pub struct FinishedBatch {
    pub batch: Batch,
    /// Sequence number whose ack means success.
    pub ack_seq: Option<u32>,
}

impl FinishedBatch {
    pub fn bytes(&self) -> &[u8] {
        &self.batch.w.buf
    }
}
