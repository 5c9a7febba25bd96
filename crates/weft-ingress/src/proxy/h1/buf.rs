//! A read buffer kept for a connection's life: bytes arrive at the end, a parser takes
//! them from the front, and the space is reused rather than reallocated per request.

use std::io;

use tokio::io::{AsyncRead, AsyncReadExt};

/// What one read asks the kernel for at least: a request head or a small response fits
/// in one read.
const READ_AT_LEAST: usize = 4096;

#[derive(Default)]
pub struct ReadBuf {
    data: Vec<u8>,
    start: usize,
}

impl ReadBuf {
    pub fn with_capacity(n: usize) -> ReadBuf {
        ReadBuf {
            data: Vec::with_capacity(n),
            start: 0,
        }
    }

    /// The bytes read and not yet taken.
    pub fn filled(&self) -> &[u8] {
        &self.data[self.start..]
    }

    pub fn is_empty(&self) -> bool {
        self.start == self.data.len()
    }

    /// Takes `n` bytes from the front.
    pub fn consume(&mut self, n: usize) {
        self.start = (self.start + n).min(self.data.len());
        if self.start == self.data.len() {
            self.data.clear();
            self.start = 0;
        }
    }

    pub fn capacity(&self) -> usize {
        self.data.capacity()
    }

    pub fn clear(&mut self) {
        self.data.clear();
        self.start = 0;
    }

    /// Takes everything (what a splice passes on, or a closing connection leaves).
    pub fn take_all(&mut self) -> Vec<u8> {
        let v = self.data[self.start..].to_vec();
        self.data.clear();
        self.start = 0;
        v
    }

    /// Reads once more from `rd`, appending; Ok(0) is the end of the stream.
    pub async fn read_from<R: AsyncRead + Unpin>(&mut self, rd: &mut R) -> io::Result<usize> {
        if self.start > 0 && self.data.capacity() - self.data.len() < READ_AT_LEAST {
            // Move what is left to the front instead of growing.
            self.data.drain(..self.start);
            self.start = 0;
        }
        self.data.reserve(READ_AT_LEAST);
        rd.read_buf(&mut self.data).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn reads_append_and_consume_takes_from_the_front() {
        let mut b = ReadBuf::with_capacity(8);
        let mut src: &[u8] = b"hello world";
        let n = b.read_from(&mut src).await.expect("read");
        assert_eq!(n, 11);
        b.consume(6);
        assert_eq!(b.filled(), b"world");
        b.consume(5);
        assert!(b.is_empty());
        let mut src: &[u8] = b"again";
        b.read_from(&mut src).await.expect("read");
        assert_eq!(b.take_all(), b"again");
        assert!(b.is_empty());
    }
}
