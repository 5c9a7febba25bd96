//! Netlink message and attribute framing: a flat byte writer and a zero-copy reader.
//!
//! nf_tables attributes carry integers in network byte order, so the helpers here are
//! big-endian unless their name says otherwise.

pub const NLMSG_HDRLEN: usize = 16;
pub const NFGEN_HDRLEN: usize = 4;
pub const NLA_HDRLEN: usize = 4;
pub const NLA_F_NESTED: u16 = 0x8000;
const NLA_TYPE_MASK: u16 = 0x3fff;

pub const NLM_F_REQUEST: u16 = 0x1;
pub const NLM_F_MULTI: u16 = 0x2;
pub const NLM_F_ACK: u16 = 0x4;
pub const NLM_F_DUMP: u16 = 0x300;
pub const NLM_F_CREATE: u16 = 0x400;
pub const NLM_F_APPEND: u16 = 0x800;

pub const NLMSG_ERROR: u16 = 2;
pub const NLMSG_DONE: u16 = 3;

pub fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// A buffer holding one or more netlink messages, written front to back.
#[derive(Default, Debug)]
pub struct Writer {
    pub buf: Vec<u8>,
    /// Set when a nested attribute outgrew its 16-bit length; the buffer is then unusable.
    pub overflow: bool,
}

impl Writer {
    pub fn with_capacity(n: usize) -> Self {
        Writer {
            buf: Vec::with_capacity(n),
            overflow: false,
        }
    }

    /// Starts a message with an nfgenmsg header; returns its offset for [`Writer::end_msg`].
    pub fn begin_msg(&mut self, ty: u16, flags: u16, seq: u32, family: u8, res_id: u16) -> usize {
        let start = self.buf.len();
        self.buf.extend_from_slice(&0u32.to_ne_bytes());
        self.buf.extend_from_slice(&ty.to_ne_bytes());
        self.buf.extend_from_slice(&flags.to_ne_bytes());
        self.buf.extend_from_slice(&seq.to_ne_bytes());
        self.buf.extend_from_slice(&0u32.to_ne_bytes());
        self.buf.push(family);
        self.buf.push(0);
        self.buf.extend_from_slice(&res_id.to_be_bytes());
        start
    }

    pub fn end_msg(&mut self, start: usize) {
        let len = (self.buf.len() - start) as u32;
        self.buf[start..start + 4].copy_from_slice(&len.to_ne_bytes());
    }

    pub fn put(&mut self, ty: u16, data: &[u8]) {
        let len = NLA_HDRLEN + data.len();
        self.buf.extend_from_slice(&(len as u16).to_ne_bytes());
        self.buf.extend_from_slice(&ty.to_ne_bytes());
        self.buf.extend_from_slice(data);
        self.pad();
    }

    fn pad(&mut self) {
        let padded = align4(self.buf.len());
        self.buf.resize(padded, 0);
    }

    pub fn put_str(&mut self, ty: u16, s: &str) {
        let len = NLA_HDRLEN + s.len() + 1;
        self.buf.extend_from_slice(&(len as u16).to_ne_bytes());
        self.buf.extend_from_slice(&ty.to_ne_bytes());
        self.buf.extend_from_slice(s.as_bytes());
        self.buf.push(0);
        self.pad();
    }

    pub fn put_be32(&mut self, ty: u16, v: u32) {
        self.put(ty, &v.to_be_bytes());
    }

    pub fn put_be16(&mut self, ty: u16, v: u16) {
        self.put(ty, &v.to_be_bytes());
    }

    pub fn put_be64(&mut self, ty: u16, v: u64) {
        self.put(ty, &v.to_be_bytes());
    }

    pub fn put_u8(&mut self, ty: u16, v: u8) {
        self.put(ty, &[v]);
    }

    pub fn nest(&mut self, ty: u16) -> usize {
        let start = self.buf.len();
        self.buf.extend_from_slice(&0u16.to_ne_bytes());
        self.buf
            .extend_from_slice(&(ty | NLA_F_NESTED).to_ne_bytes());
        start
    }

    /// Closes a nest; nested attributes are limited to 64 KiB by the u16 length.
    pub fn end_nest(&mut self, start: usize) {
        let len = self.buf.len() - start;
        self.overflow |= len > u16::MAX as usize;
        self.buf[start..start + 2].copy_from_slice(&(len as u16).to_ne_bytes());
    }

    pub fn len(&self) -> usize {
        self.buf.len()
    }

    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }
}

/// One netlink message seen by the reader.
#[derive(Debug, Clone, Copy)]
pub struct Msg<'a> {
    pub ty: u16,
    pub flags: u16,
    pub seq: u32,
    /// Everything after the netlink header.
    pub payload: &'a [u8],
}

impl<'a> Msg<'a> {
    /// The nfgenmsg family and the attributes that follow it.
    pub fn nfgen(&self) -> Option<(u8, Attrs<'a>)> {
        if self.payload.len() < NFGEN_HDRLEN {
            return None;
        }
        Some((self.payload[0], Attrs(&self.payload[NFGEN_HDRLEN..])))
    }
}

/// Iterates the netlink messages in a datagram.
pub struct Msgs<'a>(pub &'a [u8]);

impl<'a> Iterator for Msgs<'a> {
    type Item = Msg<'a>;
    fn next(&mut self) -> Option<Msg<'a>> {
        let b = self.0;
        if b.len() < NLMSG_HDRLEN {
            return None;
        }
        let len = u32::from_ne_bytes([b[0], b[1], b[2], b[3]]) as usize;
        if len < NLMSG_HDRLEN || len > b.len() {
            return None;
        }
        let msg = Msg {
            ty: u16::from_ne_bytes([b[4], b[5]]),
            flags: u16::from_ne_bytes([b[6], b[7]]),
            seq: u32::from_ne_bytes([b[8], b[9], b[10], b[11]]),
            payload: &b[NLMSG_HDRLEN..len],
        };
        self.0 = &b[align4(len).min(b.len())..];
        Some(msg)
    }
}

/// A run of attributes.
#[derive(Clone, Copy, Debug)]
pub struct Attrs<'a>(pub &'a [u8]);

impl<'a> Iterator for Attrs<'a> {
    type Item = (u16, &'a [u8]);
    fn next(&mut self) -> Option<(u16, &'a [u8])> {
        let b = self.0;
        if b.len() < NLA_HDRLEN {
            return None;
        }
        let len = u16::from_ne_bytes([b[0], b[1]]) as usize;
        if len < NLA_HDRLEN || len > b.len() {
            return None;
        }
        let ty = u16::from_ne_bytes([b[2], b[3]]) & NLA_TYPE_MASK;
        let data = &b[NLA_HDRLEN..len];
        self.0 = &b[align4(len).min(b.len())..];
        Some((ty, data))
    }
}

impl<'a> Attrs<'a> {
    /// The first attribute of a type.
    pub fn get(&self, ty: u16) -> Option<&'a [u8]> {
        let mut it = *self;
        it.find(|(t, _)| *t == ty).map(|(_, d)| d)
    }
}

pub fn be32(d: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(d.get(..4)?.try_into().ok()?))
}

pub fn be16(d: &[u8]) -> Option<u16> {
    Some(u16::from_be_bytes(d.get(..2)?.try_into().ok()?))
}

pub fn be64(d: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(d.get(..8)?.try_into().ok()?))
}

/// A NUL-terminated string attribute.
pub fn string(d: &[u8]) -> Option<String> {
    let end = d.iter().position(|b| *b == 0).unwrap_or(d.len());
    std::str::from_utf8(&d[..end]).ok().map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_attributes_round_trip() {
        let mut w = Writer::default();
        let m = w.begin_msg(0x0a00, NLM_F_REQUEST, 7, 2, 0);
        w.put_str(1, "filter");
        let n = w.nest(2);
        w.put_be32(1, 0xdead_beef);
        w.end_nest(n);
        w.end_msg(m);
        let msgs: Vec<_> = Msgs(&w.buf).collect();
        assert_eq!(msgs.len(), 1);
        assert_eq!(msgs[0].seq, 7);
        let (fam, attrs) = msgs[0].nfgen().unwrap();
        assert_eq!(fam, 2);
        assert_eq!(attrs.get(1).and_then(string).as_deref(), Some("filter"));
        let inner = Attrs(attrs.get(2).unwrap());
        assert_eq!(inner.get(1).and_then(be32), Some(0xdead_beef));
    }
}
