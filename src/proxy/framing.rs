//! Request-smuggling defences for HTTP/1: a request whose body framing could be read two ways
//! (Content-Length with Transfer-Encoding, conflicting Content-Lengths, any Transfer-Encoding
//! but a plain `chunked`) is refused with 400 before anything is forwarded. Pingora drops the
//! Content-Length of a CL+TE request before our filters run, so the raw head is checked.

use pingora_proxy::Session;

/// Why the request's framing is refused, if it is.
pub fn problem(session: &Session) -> Option<&'static str> {
    let h1 = session.as_downstream().as_http1()?;
    check(&h1.get_headers_raw_bytes())
}

pub fn check(raw: &[u8]) -> Option<&'static str> {
    let mut lengths: Vec<&[u8]> = Vec::new();
    let mut encodings = 0;
    for line in raw.split(|&b| b == b'\n').skip(1) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let (name, value) = (&line[..colon], line[colon + 1..].trim_ascii());
        if name.eq_ignore_ascii_case(b"content-length") {
            lengths.extend(value.split(|&b| b == b',').map(<[u8]>::trim_ascii));
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            encodings += 1;
            if encodings > 1 || !value.eq_ignore_ascii_case(b"chunked") {
                return Some("Transfer-Encoding other than a single `chunked`");
            }
        }
    }
    if encodings > 0 && !lengths.is_empty() {
        return Some("both Content-Length and Transfer-Encoding");
    }
    if lengths
        .iter()
        .any(|l| l.is_empty() || !l.iter().all(u8::is_ascii_digit))
    {
        return Some("malformed Content-Length");
    }
    if lengths.windows(2).any(|w| w[0] != w[1]) {
        return Some("conflicting Content-Length values");
    }
    None
}

#[cfg(test)]
mod tests {
    use super::check;

    #[test]
    fn ambiguous_framing_is_refused() {
        let head = |h: &str| format!("POST / HTTP/1.1\r\nHost: a\r\n{h}\r\n\r\n");
        assert_eq!(check(head("Content-Length: 3").as_bytes()), None);
        assert_eq!(check(head("Transfer-Encoding: Chunked").as_bytes()), None);
        assert!(
            check(head("Content-Length: 3\r\nTransfer-Encoding: chunked").as_bytes()).is_some()
        );
        assert!(check(head("Content-Length: 3\r\nContent-Length: 4").as_bytes()).is_some());
        assert!(check(head("Content-Length: 3, 4").as_bytes()).is_some());
        assert_eq!(check(head("Content-Length: 3, 3").as_bytes()), None);
        assert!(check(head("Transfer-Encoding: gzip, chunked").as_bytes()).is_some());
        assert!(
            check(head("Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked").as_bytes())
                .is_some()
        );
        assert!(check(head("Content-Length: +3").as_bytes()).is_some());
    }
}
