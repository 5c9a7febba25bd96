//! Just enough SPDY/3.1 for port-forward, the server's half, as kubectl's spdystream
//! speaks it: frames (data; SYN_STREAM, SYN_REPLY, RST_STREAM, PING, GOAWAY; SETTINGS and
//! WINDOW_UPDATE are read and ignored, as spdystream does: it has no flow control), and
//! header blocks. A header block is `count, (len, name, len, value)*` with 32-bit
//! big-endian lengths, compressed as one zlib stream per direction with the protocol's
//! preset dictionary. Reading needs that dictionary (miniz_oxide's inflate with the
//! dictionary as history); writing does not: stored (uncompressed) deflate blocks are a
//! valid zlib stream and need no dictionary (each block followed by the empty one that
//! ends a sync flush).

use miniz_oxide::inflate::core::inflate_flags::{
    TINFL_FLAG_HAS_MORE_INPUT, TINFL_FLAG_USING_NON_WRAPPING_OUTPUT_BUF,
};
use miniz_oxide::inflate::core::{decompress, DecompressorOxide};
use miniz_oxide::inflate::TINFLStatus;
use std::sync::OnceLock;
use tokio::io::{AsyncRead, AsyncReadExt};

pub const SYN_STREAM: u16 = 1;
pub const SYN_REPLY: u16 = 2;
pub const RST_STREAM: u16 = 3;
pub const PING: u16 = 6;
pub const GOAWAY: u16 = 7;
pub const FLAG_FIN: u8 = 1;

/// SPDY/3's header dictionary: length-prefixed names and values, then a tail of common
/// text (draft-mbelshe-httpbis-spdy-00, 2.6.10.1).
pub fn dictionary() -> &'static [u8] {
    static DICT: OnceLock<Vec<u8>> = OnceLock::new();
    DICT.get_or_init(|| {
        let words = [
            "options", "head", "post", "put", "delete", "trace", "accept", "accept-charset",
            "accept-encoding", "accept-language", "accept-ranges", "age", "allow",
            "authorization", "cache-control", "connection", "content-base",
            "content-encoding", "content-language", "content-length", "content-location",
            "content-md5", "content-range", "content-type", "date", "etag", "expect",
            "expires", "from", "host", "if-match", "if-modified-since", "if-none-match",
            "if-range", "if-unmodified-since", "last-modified", "location", "max-forwards",
            "pragma", "proxy-authenticate", "proxy-authorization", "range", "referer",
            "retry-after", "server", "te", "trailer", "transfer-encoding", "upgrade",
            "user-agent", "vary", "via", "warning", "www-authenticate", "method", "get",
            "status", "200 OK", "version", "HTTP/1.1", "url", "public", "set-cookie",
            "keep-alive", "origin",
        ];
        let mut d = Vec::new();
        for w in words {
            d.extend_from_slice(&(w.len() as u32).to_be_bytes());
            d.extend_from_slice(w.as_bytes());
        }
        d.extend_from_slice(
            b"100101201202205206300302303304305306307402405406407408409410411412413414415416417502504505\
203 Non-Authoritative Information204 No Content301 Moved Permanently400 Bad Request401 Unauthorized\
403 Forbidden404 Not Found500 Internal Server Error501 Not Implemented503 Service Unavailable\
Jan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec 00:00:00 Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMT\
chunked,text/html,image/png,image/jpg,image/gif,application/xml,application/xhtml+xml,text/plain,\
text/javascript,publicprivatemax-age=gzip,deflate,sdchcharset=utf-8charset=iso-8859-1,utf-,*,enq=0.",
        );
        d
    })
}

pub fn adler32(data: &[u8]) -> u32 {
    let (mut a, mut b) = (1u32, 0u32);
    for &x in data {
        a = (a + x as u32) % 65521;
        b = (b + a) % 65521;
    }
    (b << 16) | a
}

#[derive(Debug, PartialEq, Eq)]
pub enum Frame {
    Data {
        stream: u32,
        flags: u8,
        data: Vec<u8>,
    },
    Control {
        kind: u16,
        flags: u8,
        payload: Vec<u8>,
    },
}

/// The next frame; None at a clean end of the stream.
pub async fn read_frame(r: &mut (impl AsyncRead + Unpin)) -> std::io::Result<Option<Frame>> {
    let mut head = [0u8; 8];
    match r.read_exact(&mut head).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let w0 = u32::from_be_bytes([head[0], head[1], head[2], head[3]]);
    let flags = head[4];
    let len = u32::from_be_bytes([0, head[5], head[6], head[7]]) as usize;
    let mut payload = vec![0u8; len];
    r.read_exact(&mut payload).await?;
    Ok(Some(if w0 & 0x8000_0000 != 0 {
        Frame::Control {
            kind: (w0 & 0xffff) as u16,
            flags,
            payload,
        }
    } else {
        Frame::Data {
            stream: w0 & 0x7fff_ffff,
            flags,
            data: payload,
        }
    }))
}

fn frame_head(w0: u32, flags: u8, len: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(8 + len);
    v.extend_from_slice(&w0.to_be_bytes());
    v.push(flags);
    v.extend_from_slice(&(len as u32).to_be_bytes()[1..]);
    v
}

pub fn data(stream: u32, fin: bool, data: &[u8]) -> Vec<u8> {
    let mut v = frame_head(
        stream & 0x7fff_ffff,
        if fin { FLAG_FIN } else { 0 },
        data.len(),
    );
    v.extend_from_slice(data);
    v
}

pub fn control(kind: u16, flags: u8, payload: &[u8]) -> Vec<u8> {
    let mut v = frame_head(0x8000_0000 | (3 << 16) | kind as u32, flags, payload.len());
    v.extend_from_slice(payload);
    v
}

pub fn rst_stream(stream: u32, status: u32) -> Vec<u8> {
    let mut p = stream.to_be_bytes().to_vec();
    p.extend_from_slice(&status.to_be_bytes());
    control(RST_STREAM, 0, &p)
}

/// A header block's plain form.
pub fn header_block(headers: &[(&str, &str)]) -> Vec<u8> {
    let mut v = (headers.len() as u32).to_be_bytes().to_vec();
    for (k, val) in headers {
        v.extend_from_slice(&(k.len() as u32).to_be_bytes());
        v.extend_from_slice(k.as_bytes());
        v.extend_from_slice(&(val.len() as u32).to_be_bytes());
        v.extend_from_slice(val.as_bytes());
    }
    v
}

/// This side's header compression: the zlib header once, then one stored block per
/// header block (each ends byte-aligned, as a sync flush would).
#[derive(Default)]
pub struct HeaderEncoder {
    started: bool,
}

impl HeaderEncoder {
    pub fn encode(&mut self, plain: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        if !self.started {
            self.started = true;
            v.extend_from_slice(&[0x78, 0x01]);
        }
        for chunk in plain.chunks(0xffff) {
            let n = chunk.len() as u16;
            v.push(0x00);
            v.extend_from_slice(&n.to_le_bytes());
            v.extend_from_slice(&(!n).to_le_bytes());
            v.extend_from_slice(chunk);
        }
        // An empty stored block, as a sync flush ends: Go's inflater hands out what a
        // stored block held only once it has read the next block's header, which must
        // therefore be in this frame.
        v.extend_from_slice(&[0x00, 0x00, 0x00, 0xff, 0xff]);
        v
    }

    /// A SYN_REPLY for `stream` with no headers.
    pub fn syn_reply(&mut self, stream: u32) -> Vec<u8> {
        let mut p = stream.to_be_bytes().to_vec();
        p.extend_from_slice(&self.encode(&header_block(&[])));
        control(SYN_REPLY, 0, &p)
    }
}

/// The peer's header compression, read back: one inflate stream across all blocks,
/// whose history starts with the dictionary.
pub struct HeaderDecoder {
    started: bool,
    history: Vec<u8>,
    inflate: Box<DecompressorOxide>,
}

impl Default for HeaderDecoder {
    fn default() -> Self {
        HeaderDecoder {
            started: false,
            history: dictionary().to_vec(),
            inflate: Box::default(),
        }
    }
}

impl HeaderDecoder {
    /// Decodes one compressed header block into (lowercase name, value) pairs; values
    /// holding several NUL-separated parts are kept whole.
    pub fn decode(&mut self, block: &[u8]) -> Result<Vec<(String, String)>, String> {
        let mut input = block;
        if !self.started {
            if input.len() < 2 || !u16::from_be_bytes([input[0], input[1]]).is_multiple_of(31) {
                return Err("header block: not a zlib stream".into());
            }
            let mut skip = 2;
            if input[1] & 0x20 != 0 {
                let id = input
                    .get(2..6)
                    .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
                    .ok_or("header block: truncated dictionary id")?;
                if id != adler32(dictionary()) {
                    return Err(format!("header block: unknown dictionary {id:#x}"));
                }
                skip = 6;
            }
            input = &input[skip..];
            self.started = true;
        }
        let start = self.history.len();
        loop {
            let pos = self.history.len();
            self.history.resize(pos + 4096 + input.len() * 8, 0);
            let (status, used, written) = decompress(
                &mut self.inflate,
                input,
                &mut self.history,
                pos,
                TINFL_FLAG_USING_NON_WRAPPING_OUTPUT_BUF | TINFL_FLAG_HAS_MORE_INPUT,
            );
            self.history.truncate(pos + written);
            input = &input[used..];
            match status {
                TINFLStatus::HasMoreOutput => continue,
                TINFLStatus::NeedsMoreInput | TINFLStatus::Done => break,
                other => return Err(format!("header block: inflate: {other:?}")),
            }
        }
        parse_block(&self.history[start..])
    }
}

pub fn parse_block(b: &[u8]) -> Result<Vec<(String, String)>, String> {
    fn take<'a>(b: &'a [u8], i: &mut usize, n: usize) -> Result<&'a [u8], String> {
        let s = b
            .get(*i..*i + n)
            .ok_or_else(|| "header block: truncated".to_string())?;
        *i += n;
        Ok(s)
    }
    fn len(b: &[u8], i: &mut usize) -> Result<usize, String> {
        let x = take(b, i, 4)?;
        Ok(u32::from_be_bytes([x[0], x[1], x[2], x[3]]) as usize)
    }
    let mut i = 0;
    let n = len(b, &mut i)?;
    let mut out = Vec::new();
    for _ in 0..n.min(1024) {
        let kl = len(b, &mut i)?;
        let k = take(b, &mut i, kl)?;
        let vl = len(b, &mut i)?;
        let v = take(b, &mut i, vl)?;
        out.push((
            String::from_utf8_lossy(k).to_ascii_lowercase(),
            String::from_utf8_lossy(v).into_owned(),
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dictionary_is_the_protocols() {
        // Its size and checksum as every SPDY/3 implementation has them (the checksum is
        // what a client's zlib header names).
        assert_eq!(dictionary().len(), 1423);
        assert_eq!(adler32(dictionary()), 0xe3c6_a7c2);
    }

    #[test]
    fn stored_blocks_read_back_across_frames() {
        // Our encoder's output is a zlib stream any inflater reads; read it with ours
        // (which then finds no dictionary id and uses the dictionary only as history).
        let mut enc = HeaderEncoder::default();
        let mut dec = HeaderDecoder::default();
        let a = header_block(&[("streamtype", "error"), ("port", "8080")]);
        let b = header_block(&[("streamtype", "data")]);
        assert_eq!(
            dec.decode(&enc.encode(&a)).unwrap(),
            [
                ("streamtype".into(), "error".into()),
                ("port".into(), "8080".into())
            ]
        );
        assert_eq!(
            dec.decode(&enc.encode(&b)).unwrap(),
            [("streamtype".to_string(), "data".to_string())]
        );
    }

    #[tokio::test]
    async fn frames_round_trip() {
        let mut bytes = data(5, true, b"hi");
        bytes.extend(control(PING, 0, &7u32.to_be_bytes()));
        let mut r = &bytes[..];
        assert_eq!(
            read_frame(&mut r).await.unwrap(),
            Some(Frame::Data {
                stream: 5,
                flags: FLAG_FIN,
                data: b"hi".to_vec()
            })
        );
        assert_eq!(
            read_frame(&mut r).await.unwrap(),
            Some(Frame::Control {
                kind: PING,
                flags: 0,
                payload: 7u32.to_be_bytes().to_vec()
            })
        );
        assert_eq!(read_frame(&mut r).await.unwrap(), None);
    }
}
