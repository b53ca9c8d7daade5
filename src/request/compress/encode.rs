//! The streaming encoders behind response compression: gzip (flate2), br (brotli) and zstd,
//! each flushed after every piece it is given, so a body streams compressed in step with the
//! upstream (an SSE event reaches the client when the upstream sends it) and is never held whole.

use std::io::{self, Write};

use super::Encoding;

/// gzip level: zlib's default trade-off (nginx users often set `gzip_comp_level 5`/`6`).
pub const GZIP_LEVEL: u32 = 6;
/// brotli quality: fast enough for on-the-fly compression (nginx's brotli module defaults to 6).
pub const BR_QUALITY: u32 = 5;
/// brotli window (2^19 = 512 KiB), which bounds the memory a stream holds.
const BR_LGWIN: u32 = 19;
/// zstd level: zstd's default.
pub const ZSTD_LEVEL: i32 = 3;
/// zstd window (2^20 = 1 MiB): within what browsers decode (RFC 9659 asks at most 8 MiB).
const ZSTD_WINDOW_LOG: u32 = 20;

/// One response body's encoder (a pointer's size: the state is on the heap).
pub struct Encoder {
    inner: Inner,
}

enum Inner {
    Gzip(Box<flate2::write::GzEncoder<Vec<u8>>>),
    Br(Box<brotli::CompressorWriter<Vec<u8>>>),
    Zstd(Box<zstd::stream::write::Encoder<'static, Vec<u8>>>),
    /// The stream has been finished.
    Done,
}

impl std::fmt::Debug for Encoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = match self.inner {
            Inner::Gzip(_) => "gzip",
            Inner::Br(_) => "br",
            Inner::Zstd(_) => "zstd",
            Inner::Done => "done",
        };
        write!(f, "Encoder({name})")
    }
}

impl Encoder {
    /// An encoder for a body of `length` bytes when the response says (its Content-Length):
    /// zstd then sizes its state to the body, as nginx sizes zlib's, which for small responses
    /// costs less to set up than state for the largest window.
    pub fn new(encoding: Encoding, length: Option<u64>) -> io::Result<Encoder> {
        let inner = match encoding {
            Encoding::Gzip => Inner::Gzip(Box::new(flate2::write::GzEncoder::new(
                Vec::new(),
                flate2::Compression::new(GZIP_LEVEL),
            ))),
            // br keeps its full window: sized to the body (window and size hint), it took 3x
            // longer on 8.6 KiB (benches/hot_path.rs, BENCHMARKS.md).
            Encoding::Br => Inner::Br(Box::new(brotli::CompressorWriter::new(
                Vec::new(),
                4096,
                BR_QUALITY,
                BR_LGWIN,
            ))),
            Encoding::Zstd => {
                let mut z = zstd::stream::write::Encoder::new(Vec::new(), ZSTD_LEVEL)?;
                z.window_log(window_for(length, ZSTD_WINDOW_LOG))?;
                // zstd picks its tables for the size it is promised (and fails the stream
                // at its end if the body is not that long: a body short of its
                // Content-Length is broken anyway).
                z.set_pledged_src_size(length)?;
                Inner::Zstd(Box::new(z))
            }
        };
        Ok(Encoder { inner })
    }

    /// Compresses `data` and flushes it (a sync flush: everything given so far can be decoded
    /// from what came out); `end` finishes the stream. `out` is replaced by the bytes to send
    /// (possibly none, for an empty `data` before the end).
    pub fn feed(&mut self, data: &[u8], end: bool, out: &mut Vec<u8>) -> io::Result<()> {
        out.clear();
        if data.is_empty() && !end {
            return Ok(());
        }
        match &mut self.inner {
            Inner::Gzip(w) => {
                w.write_all(data)?;
                if end {
                    w.try_finish()?;
                } else {
                    w.flush()?;
                }
                std::mem::swap(w.get_mut(), out);
            }
            Inner::Br(w) => {
                w.write_all(data)?;
                if end {
                    if let Inner::Br(w) = std::mem::replace(&mut self.inner, Inner::Done) {
                        *out = w.into_inner();
                    }
                    return Ok(());
                }
                w.flush()?;
                std::mem::swap(w.get_mut(), out);
            }
            Inner::Zstd(w) => {
                w.write_all(data)?;
                if end {
                    w.do_finish()?;
                } else {
                    w.flush()?;
                }
                std::mem::swap(w.get_mut(), out);
            }
            Inner::Done => return Ok(()),
        }
        if end {
            self.inner = Inner::Done;
        }
        Ok(())
    }
}

/// The window (log2 bytes) for a body of `length`: the smallest that holds it, from 2^10 up
/// to `max`; `max` when the length is not known.
fn window_for(length: Option<u64>, max: u32) -> u32 {
    match length {
        Some(n) => (u64::BITS - n.saturating_sub(1).leading_zeros()).clamp(10, max),
        None => max,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_fit_the_body() {
        assert_eq!(window_for(None, 19), 19);
        assert_eq!(window_for(Some(0), 19), 10);
        assert_eq!(window_for(Some(1024), 19), 10);
        assert_eq!(window_for(Some(1025), 19), 11);
        assert_eq!(window_for(Some(8800), 19), 14);
        assert_eq!(window_for(Some(1 << 30), 20), 20);
    }

    /// A body of a known length, in pieces, decodes whole with every encoding.
    #[test]
    fn a_body_of_known_length_round_trips() {
        let body: Vec<u8> = (0..9000u32).map(|i| (i % 251) as u8).collect();
        for e in [Encoding::Gzip, Encoding::Br, Encoding::Zstd] {
            let mut enc = Encoder::new(e, Some(body.len() as u64)).unwrap();
            let (mut all, mut out) = (Vec::new(), Vec::new());
            enc.feed(&body[..4000], false, &mut out).unwrap();
            all.extend_from_slice(&out);
            enc.feed(&body[4000..], true, &mut out).unwrap();
            all.extend_from_slice(&out);
            assert_eq!(decode(e, &all), body, "{e:?}");
        }
    }
    use std::io::Read;

    fn decode(e: Encoding, data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        match e {
            Encoding::Gzip => flate2::read::GzDecoder::new(data)
                .read_to_end(&mut out)
                .map(|_| ()),
            Encoding::Br => brotli::Decompressor::new(data, 4096)
                .read_to_end(&mut out)
                .map(|_| ()),
            Encoding::Zstd => zstd::stream::read::Decoder::new(data)
                .and_then(|mut d| d.read_to_end(&mut out))
                .map(|_| ()),
        }
        .unwrap();
        out
    }

    /// Each piece decodes on its own as soon as it is out (the sync flush), and the whole
    /// stream decodes to what went in.
    #[test]
    fn every_encoding_streams_and_round_trips() {
        for e in [Encoding::Gzip, Encoding::Br, Encoding::Zstd] {
            let mut enc = Encoder::new(e, None).unwrap();
            let (mut all, mut out) = (Vec::new(), Vec::new());
            enc.feed(b"data: one\n\n", false, &mut out).unwrap();
            assert!(!out.is_empty(), "{e:?}: nothing after a flush");
            all.extend_from_slice(&out);
            enc.feed(b"", false, &mut out).unwrap();
            assert!(out.is_empty(), "{e:?}");
            let big: Vec<u8> = (0..200_000u32).flat_map(|i| i.to_le_bytes()).collect();
            enc.feed(&big, false, &mut out).unwrap();
            all.extend_from_slice(&out);
            enc.feed(b"end", true, &mut out).unwrap();
            all.extend_from_slice(&out);
            let mut want = b"data: one\n\n".to_vec();
            want.extend_from_slice(&big);
            want.extend_from_slice(b"end");
            assert_eq!(decode(e, &all), want, "{e:?}");
            enc.feed(b"", true, &mut out).unwrap();
            assert!(out.is_empty(), "{e:?}: nothing after the end");
        }
    }
}
