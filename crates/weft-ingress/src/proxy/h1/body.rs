//! Message bodies between two connections: framed by Content-Length, by chunked coding
//! (decoded strictly, so what the next hop reads is exactly what was read here, and
//! re-encoded), or by the end of the connection. Bytes go through the connection's own
//! buffers; nothing is allocated per body.

use std::io;
use std::ops::Range;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use super::buf::ReadBuf;

/// How a message's body ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// This many bytes (0: no body).
    Length(u64),
    Chunked,
    /// At the end of the connection (responses only).
    Close,
}

impl Default for Framing {
    fn default() -> Self {
        Framing::Length(0)
    }
}

/// Written out once this much is waiting.
const WRITE_AT: usize = 64 << 10;
/// A chunk-size line's extension, or a trailer section, may not be longer.
const MAX_EXT: usize = 1024;
const MAX_TRAILERS: usize = 16 << 10;

#[derive(Debug)]
pub enum BodyError {
    /// The side the body came from failed or ended early.
    Read(io::Error),
    /// The side it went to failed.
    Write(io::Error),
    Malformed(&'static str),
    TooLarge,
    /// The side it came from sent nothing for [`Bounds::idle`].
    Idle,
}

/// What one body may cost.
#[derive(Debug, Clone, Copy)]
pub struct Bounds {
    /// More data than this is `TooLarge`.
    pub max: u64,
    /// The longest wait for the body's next bytes; a client trickling a body (a slow POST)
    /// would otherwise hold its connection and an endpoint's for ever.
    pub idle: Option<Duration>,
}

impl std::fmt::Display for BodyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BodyError::Read(e) => write!(f, "reading the body: {e}"),
            BodyError::Write(e) => write!(f, "writing the body: {e}"),
            BodyError::Malformed(why) => write!(f, "malformed chunked body: {why}"),
            BodyError::TooLarge => f.write_str("body too large"),
            BodyError::Idle => f.write_str("no body bytes within the body timeout"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum St {
    #[default]
    Size,
    Ext,
    SizeLf,
    Data,
    DataCr,
    DataLf,
    TrailerStart,
    TrailerLine,
    TrailerLf,
    EndLf,
    Done,
}

/// A strict chunked decoder (RFC 9112 7.1): hex sizes without spaces or signs, CRLF line
/// ends only (a bare CR or LF is an error), extensions and trailers read and dropped.
#[derive(Debug, Default)]
pub struct Chunked {
    st: St,
    size: u64,
    digits: bool,
    extra: usize,
}

impl Chunked {
    pub fn done(&self) -> bool {
        self.st == St::Done
    }

    /// Reads framing from the front of `input` up to the next data, which it returns as a
    /// range of `input`; the first value is how much of `input` was taken (data included).
    pub fn decode(&mut self, input: &[u8]) -> Result<(usize, Option<Range<usize>>), BodyError> {
        let bad = |why| Err(BodyError::Malformed(why));
        let mut i = 0;
        while i < input.len() {
            let b = input[i];
            match self.st {
                St::Size => match (b as char).to_digit(16) {
                    Some(d) => {
                        if self.size > (u64::MAX >> 4) {
                            return bad("chunk size overflows");
                        }
                        self.size = self.size * 16 + u64::from(d);
                        self.digits = true;
                    }
                    None if !self.digits => return bad("chunk size missing"),
                    None if b == b';' => {
                        self.st = St::Ext;
                        self.extra = 0;
                    }
                    None if b == b'\r' => self.st = St::SizeLf,
                    None => return bad("invalid byte in a chunk size"),
                },
                St::Ext => match b {
                    b'\r' => self.st = St::SizeLf,
                    b'\t' | b' '..=b'~' | 0x80..=0xff => {
                        self.extra += 1;
                        if self.extra > MAX_EXT {
                            return bad("chunk extension too long");
                        }
                    }
                    _ => return bad("control byte in a chunk extension"),
                },
                St::SizeLf if b == b'\n' => {
                    self.st = if self.size == 0 {
                        self.extra = 0;
                        St::TrailerStart
                    } else {
                        St::Data
                    };
                }
                St::Data => {
                    let n = usize::try_from(self.size)
                        .unwrap_or(usize::MAX)
                        .min(input.len() - i);
                    self.size -= n as u64;
                    if self.size == 0 {
                        self.st = St::DataCr;
                    }
                    return Ok((i + n, Some(i..i + n)));
                }
                St::DataCr if b == b'\r' => self.st = St::DataLf,
                St::DataLf if b == b'\n' => {
                    self.st = St::Size;
                    self.digits = false;
                }
                St::TrailerStart if b == b'\r' => self.st = St::EndLf,
                St::TrailerStart | St::TrailerLine if b != b'\r' && b != b'\n' => {
                    self.st = St::TrailerLine;
                    self.extra += 1;
                    if self.extra > MAX_TRAILERS {
                        return bad("trailers too long");
                    }
                }
                St::TrailerLine if b == b'\r' => self.st = St::TrailerLf,
                St::TrailerLf if b == b'\n' => self.st = St::TrailerStart,
                St::EndLf if b == b'\n' => {
                    self.st = St::Done;
                    return Ok((i + 1, None));
                }
                St::Done => return Ok((i, None)),
                _ => return bad("line not ended by CRLF"),
            }
            i += 1;
        }
        Ok((i, None))
    }
}

/// Appends `data` to `out` as it goes on the wire: as is, or as one chunk.
fn emit(out: &mut Vec<u8>, data: &[u8], chunked: bool) {
    if data.is_empty() {
        return;
    }
    if chunked {
        use std::io::Write;
        let _ = write!(out, "{:x}\r\n", data.len());
        out.extend_from_slice(data);
        out.extend_from_slice(b"\r\n");
    } else {
        out.extend_from_slice(data);
    }
}

async fn write_out<W: AsyncWrite + Unpin>(wr: &mut W, out: &mut Vec<u8>) -> Result<(), BodyError> {
    if !out.is_empty() {
        wr.write_all(out).await.map_err(BodyError::Write)?;
        out.clear();
    }
    Ok(())
}

async fn fill<R: AsyncRead + Unpin>(
    rd: &mut R,
    buf: &mut ReadBuf,
    idle: Option<Duration>,
) -> Result<usize, BodyError> {
    match idle {
        // No timer on the common path (responses): only a client's body is bounded.
        None => buf.read_from(rd).await.map_err(BodyError::Read),
        Some(d) => match tokio::time::timeout(d, buf.read_from(rd)).await {
            Ok(r) => r.map_err(BodyError::Read),
            Err(_) => Err(BodyError::Idle),
        },
    }
}

fn ended() -> BodyError {
    BodyError::Read(io::ErrorKind::UnexpectedEof.into())
}

/// Copies a body framed as `from` from `rd` (its first bytes may already be in `buf`) to
/// `wr`, as is or re-chunked (`chunk_out`), after whatever `out` already holds (a head),
/// within `bounds`. Everything is written when it returns
/// Ok, except that `wr` is not flushed. Returns the data's length.
pub async fn copy<R, W>(
    rd: &mut R,
    buf: &mut ReadBuf,
    wr: &mut W,
    out: &mut Vec<u8>,
    from: Framing,
    chunk_out: bool,
    bounds: Bounds,
) -> Result<u64, BodyError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let (limit, idle) = (bounds.max, bounds.idle);
    let mut total: u64 = 0;
    match from {
        Framing::Length(n) => {
            if n > limit {
                return Err(BodyError::TooLarge);
            }
            while total < n {
                if buf.is_empty() {
                    write_out(wr, out).await?;
                    if fill(rd, buf, idle).await? == 0 {
                        return Err(ended());
                    }
                }
                let have = buf.filled();
                let take = usize::try_from(n - total)
                    .unwrap_or(usize::MAX)
                    .min(have.len());
                emit(out, &have[..take], chunk_out);
                buf.consume(take);
                total += take as u64;
                if out.len() >= WRITE_AT {
                    write_out(wr, out).await?;
                }
            }
        }
        Framing::Close => loop {
            if buf.is_empty() {
                write_out(wr, out).await?;
                if fill(rd, buf, idle).await? == 0 {
                    break;
                }
            }
            let have = buf.filled();
            total += have.len() as u64;
            if total > limit {
                return Err(BodyError::TooLarge);
            }
            emit(out, have, chunk_out);
            let n = have.len();
            buf.consume(n);
            if out.len() >= WRITE_AT {
                write_out(wr, out).await?;
            }
        },
        Framing::Chunked => {
            let mut dec = Chunked::default();
            while !dec.done() {
                if buf.is_empty() {
                    write_out(wr, out).await?;
                    if fill(rd, buf, idle).await? == 0 {
                        return Err(ended());
                    }
                }
                let (used, data) = dec.decode(buf.filled())?;
                if let Some(r) = data {
                    total += r.len() as u64;
                    if total > limit {
                        return Err(BodyError::TooLarge);
                    }
                    emit(out, &buf.filled()[r], chunk_out);
                }
                buf.consume(used);
                if out.len() >= WRITE_AT {
                    write_out(wr, out).await?;
                }
            }
        }
    }
    if chunk_out {
        out.extend_from_slice(b"0\r\n\r\n");
    }
    write_out(wr, out).await?;
    Ok(total)
}
