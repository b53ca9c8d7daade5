//! The fast path's side of response compression (`crate::request::compress` decides and
//! encodes): the upstream's body bytes, taken decoded from their framing, passed through the
//! encoder piece by piece and, for an HTTP/1.1 client, framed chunked again.

use std::io;

use crate::request::compress::Encoder;

/// One response body being compressed.
pub(super) struct Squeeze {
    encoder: Encoder,
    /// The encoder's output.
    out: Vec<u8>,
    /// The output framed as HTTP/1.1 chunks.
    framed: Vec<u8>,
}

impl Squeeze {
    pub(super) fn new(encoder: Encoder) -> Squeeze {
        Squeeze {
            encoder,
            out: Vec::new(),
            framed: Vec::new(),
        }
    }

    /// What to send the client for the body bytes `data` (`end`: the body's last): compressed,
    /// and framed as chunks (with the last chunk at the end) when `chunked`.
    pub(super) fn next(&mut self, data: &[u8], end: bool, chunked: bool) -> io::Result<&[u8]> {
        self.encoder.feed(data, end, &mut self.out)?;
        if !chunked {
            return Ok(&self.out);
        }
        self.framed.clear();
        if !self.out.is_empty() {
            chunk(&mut self.framed, &self.out);
        }
        if end {
            self.framed.extend_from_slice(b"0\r\n\r\n");
        }
        Ok(&self.framed)
    }
}

/// Appends `data` to `out` as one HTTP/1.1 chunk (`data` not empty).
fn chunk(out: &mut Vec<u8>, data: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let len = data.len();
    let digits = (usize::BITS - len.leading_zeros()).div_ceil(4).max(1);
    for i in (0..digits).rev() {
        out.push(HEX[(len >> (i * 4)) & 0xf]);
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_are_framed() {
        let mut out = Vec::new();
        chunk(&mut out, b"abc");
        chunk(&mut out, &[b'x'; 0x1f0]);
        assert!(out.starts_with(b"3\r\nabc\r\n1f0\r\nxx"), "{out:?}");
        assert!(out.ends_with(b"x\r\n"));
        let encoder = Encoder::new(crate::request::compress::Encoding::Gzip, None).unwrap();
        let mut s = Squeeze::new(encoder);
        assert!(s.next(b"", false, true).unwrap().is_empty());
        let last = s.next(b"", true, true).unwrap();
        assert!(last.ends_with(b"\r\n0\r\n\r\n"), "{last:?}");
    }
}
