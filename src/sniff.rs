//! The first bytes of a plain-HTTP connection: the h2c preface, a plausible HTTP/1 request
//! line, or something else (a TLS handshake sent to the plain port, garbage), which gets a 400
//! at once. The bytes read are put back into the stream before pingora reads it.

use std::time::Duration;

use bytes::BytesMut;
use pingora_core::protocols::l4::stream::Stream as L4Stream;
use pingora_core::protocols::Stream;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const MAX_SNIFF: usize = 8 << 10;
const BAD_REQUEST: &[u8] =
    b"HTTP/1.1 400 Bad Request\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: 16\r\nconnection: close\r\n\r\n400 Bad Request\n";

/// What a plain connection starts with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    H2c,
    Http1,
    /// Not HTTP; answered with 400 and closed.
    Refused,
    /// Closed, or silent until the deadline.
    Gone,
}

/// Reads the start of `stream` (within `deadline`), classifies it, and rewinds what it read.
pub async fn sniff(stream: Stream, deadline: Duration) -> (Option<Stream>, Start) {
    let mut l4 = match stream.into_any().downcast::<L4Stream>() {
        Ok(s) => s,
        Err(_) => {
            tracing::debug!("not a plain TCP stream; cannot sniff");
            return (None, Start::Gone);
        }
    };
    let mut buf = BytesMut::with_capacity(1024);
    let read = tokio::time::timeout(deadline, async {
        while !enough(&buf) {
            match l4.read_buf(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    })
    .await;
    let start = match (classify(&buf), read.is_err()) {
        (_, true) if buf.is_empty() => Start::Gone,
        (None, _) if buf.is_empty() => Start::Gone,
        (None, _) => Start::Http1,
        (Some(s), _) => s,
    };
    if start == Start::Refused {
        let _ = l4.write_all(BAD_REQUEST).await;
        let _ = l4.shutdown().await;
        return (None, start);
    }
    l4.rewind(&buf);
    (Some(l4 as Stream), start)
}

/// Enough bytes to decide: a full preface, or a full first line that is not a preface prefix.
fn enough(buf: &[u8]) -> bool {
    buf.len() >= MAX_SNIFF
        || buf.len() >= H2_PREFACE.len()
        || (buf.contains(&b'\n') && !H2_PREFACE.starts_with(buf))
        || buf.first() == Some(&0x16)
}

/// `None` when undecided (let pingora read on).
pub fn classify(buf: &[u8]) -> Option<Start> {
    if buf.len() >= H2_PREFACE.len() && buf.starts_with(H2_PREFACE) {
        return Some(Start::H2c);
    }
    if buf.first() == Some(&0x16) {
        return Some(Start::Refused);
    }
    match buf.iter().position(|&b| b == b'\n') {
        Some(end) if plausible_request_line(&buf[..end]) => Some(Start::Http1),
        Some(_) => Some(Start::Refused),
        None if method_so_far_ok(buf) => None,
        None => Some(Start::Refused),
    }
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// The bytes before the first space (or all of them) are a method token.
fn method_so_far_ok(buf: &[u8]) -> bool {
    let method = buf.split(|&b| b == b' ').next().unwrap_or(buf);
    method.iter().all(|&b| is_tchar(b))
}

/// `METHOD SP target SP HTTP/x.y`, allowing a trailing CR.
fn plausible_request_line(line: &[u8]) -> bool {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let mut parts = line.splitn(3, |&b| b == b' ');
    let (Some(method), Some(target), Some(version)) = (parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    !method.is_empty()
        && method.iter().all(|&b| is_tchar(b))
        && !target.is_empty()
        && version.starts_with(b"HTTP/")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_starts() {
        assert_eq!(classify(H2_PREFACE), Some(Start::H2c));
        assert_eq!(classify(b"PRI * HTTP/2.0\r\n"), Some(Start::Http1));
        assert!(!enough(b"PRI * HTTP/2.0\r\n"));
        assert_eq!(classify(b"GET / HTTP/1.0\r\n\r\n"), Some(Start::Http1));
        assert_eq!(classify(b"GARBAGE\r\n\r\n"), Some(Start::Refused));
        assert_eq!(classify(b"\x16\x03\x01\x02\x00"), Some(Start::Refused));
        assert_eq!(classify(b"GET /partial"), None);
        assert_eq!(classify(b"G{T"), Some(Start::Refused));
    }
}
