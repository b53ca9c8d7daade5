//! How a request's body is framed, and the requests whose framing could be read two ways
//! (request smuggling): Content-Length with Transfer-Encoding, conflicting or malformed
//! Content-Lengths, any Transfer-Encoding but one plain `chunked`. Both engines take this one
//! verdict; a refused request gets 400 and its connection is closed.

use super::headers::{content_length, kind, Kind, Lines};

/// How the body of an acceptable request is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFraming {
    /// No Content-Length and no Transfer-Encoding.
    None,
    Length(u64),
    Chunked,
}

/// Why a request's framing is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BadFraming {
    #[error("Transfer-Encoding other than a single `chunked`")]
    Encoding,
    #[error("both Content-Length and Transfer-Encoding")]
    Both,
    #[error("malformed or conflicting Content-Length")]
    Length,
}

/// The framing of a request with header `lines`.
pub fn request_framing<L: Lines + ?Sized>(lines: &L) -> Result<BodyFraming, BadFraming> {
    let mut encodings = 0;
    let mut chunked = true;
    lines.each(|k, _, value| {
        if k == Kind::TransferEncoding {
            encodings += 1;
            chunked &= value.trim_ascii().eq_ignore_ascii_case(b"chunked");
        }
    });
    let length = content_length(lines).map_err(|_| BadFraming::Length);
    match (encodings, length?) {
        (0, None) => Ok(BodyFraming::None),
        (0, Some(n)) => Ok(BodyFraming::Length(n)),
        (1, None) if chunked => Ok(BodyFraming::Chunked),
        (_, None) => Err(BadFraming::Encoding),
        (_, Some(_)) => Err(BadFraming::Both),
    }
}

/// The header lines of a raw HTTP/1 head (the request line skipped), for the verdict on bytes
/// that no parser has normalised.
pub struct RawHead<'a>(pub &'a [u8]);

impl Lines for RawHead<'_> {
    fn each<'s>(&'s self, mut f: impl FnMut(Kind, &'s str, &'s [u8])) {
        for line in self.0.split(|&b| b == b'\n').skip(1) {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            let Some(colon) = line.iter().position(|&b| b == b':') else {
                continue;
            };
            // A name that is not text is no framing header.
            if let Ok(name) = std::str::from_utf8(&line[..colon]) {
                let name = name.trim_ascii_end();
                f(kind(name), name, line[colon + 1..].trim_ascii());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verdict(h: &str) -> Result<BodyFraming, BadFraming> {
        let head = format!("POST / HTTP/1.1\r\nHost: a\r\n{h}\r\n\r\n");
        request_framing(&RawHead(head.as_bytes()))
    }

    #[test]
    fn ambiguous_framing_is_refused() {
        assert_eq!(verdict("Content-Length: 3"), Ok(BodyFraming::Length(3)));
        assert_eq!(verdict("X: 1"), Ok(BodyFraming::None));
        assert_eq!(
            verdict("Transfer-Encoding: Chunked"),
            Ok(BodyFraming::Chunked)
        );
        let both = "Content-Length: 3\r\nTransfer-Encoding: chunked";
        assert_eq!(verdict(both), Err(BadFraming::Both));
        let two = "Content-Length: 3\r\nContent-Length: 4";
        assert_eq!(verdict(two), Err(BadFraming::Length));
        assert_eq!(verdict("Content-Length: 3, 4"), Err(BadFraming::Length));
        assert_eq!(verdict("Content-Length: 3, 3"), Ok(BodyFraming::Length(3)));
        let gzip = "Transfer-Encoding: gzip, chunked";
        assert_eq!(verdict(gzip), Err(BadFraming::Encoding));
        let twice = "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked";
        assert_eq!(verdict(twice), Err(BadFraming::Encoding));
        assert_eq!(verdict("Content-Length: +3"), Err(BadFraming::Length));
    }
}
