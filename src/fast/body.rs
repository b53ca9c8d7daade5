//! Where an HTTP/1.1 message body ends: no body, a Content-Length, a chunked body (found by
//! scanning the chunk framing as the bytes pass through, never re-encoding them) or the close.

/// How a message body is delimited (RFC 9112 6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    None,
    Length(u64),
    Chunked,
    UntilClose,
}

/// A chunked body that does not follow RFC 9112 7.1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("malformed chunked body")]
pub struct ChunkError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum State {
    /// Hex digits of a chunk size.
    #[default]
    Size,
    /// After the size: extensions up to the CR.
    Ext,
    SizeLf,
    Data,
    DataCr,
    DataLf,
    /// At the start of a trailer line, or of the final empty line.
    TrailerStart,
    TrailerLine,
    TrailerLf,
    EndLf,
    Done,
}

/// The longest chunk size we accept: 15 hex digits (2^60 bytes).
const MAX_SIZE_DIGITS: u8 = 15;

/// Follows a chunked body through the bytes fed to it, piece by piece.
#[derive(Debug, Default)]
pub struct ChunkedScanner {
    state: State,
    /// Bytes left of the current chunk (or the size being read).
    size: u64,
    digits: u8,
}

impl ChunkedScanner {
    /// Consumes the start of `buf`: returns how many of its bytes belong to the body (all of
    /// them until the last chunk and trailers end, then the count up to that end).
    pub fn feed(&mut self, buf: &[u8]) -> Result<usize, ChunkError> {
        self.feed_data(buf, |_| {})
    }

    /// As `feed`, and hands each run of chunk data (the body without its framing) to `on_data`.
    pub fn feed_data<'b>(
        &mut self,
        buf: &'b [u8],
        mut on_data: impl FnMut(&'b [u8]),
    ) -> Result<usize, ChunkError> {
        let mut i = 0;
        while i < buf.len() && self.state != State::Done {
            if self.state == State::Data {
                let take = (buf.len() - i).min(usize::try_from(self.size).unwrap_or(usize::MAX));
                on_data(&buf[i..i + take]);
                i += take;
                self.size -= take as u64;
                if self.size == 0 {
                    self.state = State::DataCr;
                }
                continue;
            }
            self.step(buf[i])?;
            i += 1;
        }
        Ok(i)
    }

    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    fn step(&mut self, b: u8) -> Result<(), ChunkError> {
        use State::*;
        self.state = match (self.state, b) {
            (Size, b) if b.is_ascii_hexdigit() => {
                if self.digits == MAX_SIZE_DIGITS {
                    return Err(ChunkError);
                }
                self.digits += 1;
                self.size = self.size * 16 + u64::from(hex(b));
                Size
            }
            (Size, b';' | b' ' | b'\t') if self.digits > 0 => Ext,
            (Size, b'\r') if self.digits > 0 => SizeLf,
            (Ext, b'\r') => SizeLf,
            (Ext, b) if b != b'\n' => Ext,
            (SizeLf, b'\n') if self.size == 0 => TrailerStart,
            (SizeLf, b'\n') => Data,
            (DataCr, b'\r') => DataLf,
            (DataLf, b'\n') => {
                self.digits = 0;
                Size
            }
            (TrailerStart, b'\r') => EndLf,
            (TrailerStart | TrailerLine, b) if b != b'\n' && b != b'\r' => TrailerLine,
            (TrailerLine, b'\r') => TrailerLf,
            (TrailerLf, b'\n') => TrailerStart,
            (EndLf, b'\n') => Done,
            _ => return Err(ChunkError),
        };
        Ok(())
    }
}

fn hex(b: u8) -> u8 {
    match b {
        b'0'..=b'9' => b - b'0',
        b'a'..=b'f' => b - b'a' + 10,
        _ => b - b'A' + 10,
    }
}

/// How much of a message body has passed, for any framing.
#[derive(Debug)]
pub struct Progress {
    framing: Framing,
    /// Bytes left of a Content-Length body.
    left: u64,
    chunks: ChunkedScanner,
}

impl Progress {
    pub fn new(framing: Framing) -> Progress {
        Progress {
            framing,
            left: match framing {
                Framing::Length(n) => n,
                _ => 0,
            },
            chunks: ChunkedScanner::default(),
        }
    }

    /// How many bytes at the start of `buf` belong to the body.
    pub fn feed(&mut self, buf: &[u8]) -> Result<usize, ChunkError> {
        match self.framing {
            Framing::None => Ok(0),
            Framing::Length(_) => {
                let n = usize::try_from(self.left).map_or(buf.len(), |l| l.min(buf.len()));
                self.left -= n as u64;
                Ok(n)
            }
            Framing::Chunked => self.chunks.feed(buf),
            Framing::UntilClose => Ok(buf.len()),
        }
    }

    /// As `feed`, and hands the body's content (chunked framing removed) to `on_data`.
    pub fn feed_data<'b>(
        &mut self,
        buf: &'b [u8],
        mut on_data: impl FnMut(&'b [u8]),
    ) -> Result<usize, ChunkError> {
        if self.framing == Framing::Chunked {
            return self.chunks.feed_data(buf, on_data);
        }
        let used = self.feed(buf)?;
        if used > 0 {
            on_data(&buf[..used]);
        }
        Ok(used)
    }

    pub fn is_chunked(&self) -> bool {
        self.framing == Framing::Chunked
    }

    /// The whole body has passed (a close-delimited one only ends with the connection).
    pub fn is_done(&self) -> bool {
        match self.framing {
            Framing::None => true,
            Framing::Length(_) => self.left == 0,
            Framing::Chunked => self.chunks.is_done(),
            Framing::UntilClose => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan_whole(body: &[u8]) -> Result<usize, ChunkError> {
        let mut s = ChunkedScanner::default();
        let n = s.feed(body)?;
        assert!(s.is_done(), "not done after {n} bytes");
        Ok(n)
    }

    #[test]
    fn finds_the_end_of_a_chunked_body() {
        let body = b"5\r\nhello\r\n1a;ext=1\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\n\r\nNEXT";
        assert_eq!(scan_whole(body), Ok(body.len() - 4));
        let trailers = b"3\r\nabc\r\n0\r\nX-Sum: 1\r\nX-B: 2\r\n\r\n";
        assert_eq!(scan_whole(trailers), Ok(trailers.len()));
    }

    #[test]
    fn chunk_data_is_handed_over_without_framing() {
        let body = b"5\r\nhello\r\n6;x=y\r\n world\r\n0\r\nT: 1\r\n\r\n";
        for split in 0..body.len() {
            let mut s = ChunkedScanner::default();
            let mut data = Vec::new();
            let (a, b) = body.split_at(split);
            let used = s.feed_data(a, |d| data.extend_from_slice(d)).unwrap()
                + s.feed_data(b, |d| data.extend_from_slice(d)).unwrap();
            assert_eq!(used, body.len());
            assert!(s.is_done());
            assert_eq!(data, b"hello world", "split at {split}");
        }
    }

    #[test]
    fn byte_by_byte_is_the_same_as_at_once() {
        let body = b"A\r\n0123456789\r\n0\r\nT: v\r\n\r\n";
        let mut s = ChunkedScanner::default();
        let mut used = 0;
        for b in body.iter() {
            used += s.feed(std::slice::from_ref(b)).unwrap();
        }
        assert!(s.is_done());
        assert_eq!(used, body.len());
    }

    #[test]
    fn progress_per_framing() {
        let mut p = Progress::new(Framing::Length(5));
        assert_eq!(p.feed(b"abc").unwrap(), 3);
        assert!(!p.is_done());
        assert_eq!(p.feed(b"defgh").unwrap(), 2);
        assert!(p.is_done());
        let mut p = Progress::new(Framing::None);
        assert_eq!(p.feed(b"x").unwrap(), 0);
        assert!(p.is_done());
        let mut p = Progress::new(Framing::UntilClose);
        assert_eq!(p.feed(b"xyz").unwrap(), 3);
        assert!(!p.is_done());
    }

    #[test]
    fn malformed_framing_is_an_error() {
        for bad in [
            &b"x\r\n"[..],
            b"\r\n",
            b"5\nhello",
            b"5\r\nhelloX",
            b"1000000000000000\r\n",
            b"0\r\nBad\nLine\r\n\r\n",
            b"0\r\n\r\r",
        ] {
            let mut s = ChunkedScanner::default();
            assert_eq!(
                s.feed(bad),
                Err(ChunkError),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
