//! The upstream's response head: parsed from its bytes, its framing decided (RFC 9112 6.3), and
//! written for the client without hop-by-hop headers and with what rproxy adds.

use httparse::{Header, Status};

use super::Storage;
use super::MAX_HEADERS;
use crate::fast::body::Framing;
use crate::request::compress::{self, Verdict};
use crate::request::headers::{self, connection_tokens, Digits, HeaderSink, Kind, Kinded, Lines};
use crate::request::local;

/// An upstream response head.
#[derive(Debug)]
pub struct ResponseHead<'b, 'h> {
    pub len: usize,
    pub code: u16,
    pub reason: &'b str,
    /// The upstream will close the connection after this response.
    pub close: bool,
    headers: &'h [Header<'b>],
    /// The kind of each line, classified once.
    kinds: [Kind; MAX_HEADERS],
    content_length: Option<u64>,
    /// The last transfer coding is `chunked`.
    chunked: bool,
    has_te: bool,
}

/// Why an upstream response head is refused (the client gets 502).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BadResponse {
    #[error("unparsable response head")]
    Unparsable,
    #[error("malformed or conflicting Content-Length")]
    Length,
    #[error("status code below 100")]
    Status,
}

/// Parses a response head at the start of `buf`; `Ok(None)` when more bytes are needed.
pub fn parse_response<'b, 'h>(
    buf: &'b [u8],
    storage: &'h mut Storage<'b>,
) -> Result<Option<ResponseHead<'b, 'h>>, BadResponse> {
    let mut resp = httparse::Response::new(&mut []);
    let parsed = httparse::ParserConfig::default()
        .parse_response_with_uninit_headers(&mut resp, buf, storage);
    let len = match parsed {
        Ok(Status::Complete(len)) => len,
        Ok(Status::Partial) => return Ok(None),
        Err(_) => return Err(BadResponse::Unparsable),
    };
    let (Some(code), Some(version)) = (resp.code, resp.version) else {
        return Err(BadResponse::Unparsable);
    };
    if code < 100 {
        return Err(BadResponse::Status);
    }
    let headers: &'h [Header<'b>] = resp.headers;
    let mut kinds = [Kind::Other; MAX_HEADERS];
    let content_length = headers::content_length(&Kinded::new(headers, &mut kinds))
        .map_err(|_| BadResponse::Length)?;
    let mut head = ResponseHead {
        len,
        code,
        reason: resp.reason.unwrap_or(""),
        close: version == 0,
        headers,
        kinds,
        content_length,
        chunked: false,
        has_te: false,
    };
    let (mut keep_alive, mut said_close) = (false, false);
    for (h, k) in headers.iter().zip(&kinds) {
        match k {
            Kind::TransferEncoding => {
                head.has_te = true;
                head.chunked = h
                    .value
                    .rsplit(|&b| b == b',')
                    .next()
                    .is_some_and(|t| t.trim_ascii().eq_ignore_ascii_case(b"chunked"));
            }
            Kind::Connection => {
                for token in connection_tokens(h.value) {
                    if token.eq_ignore_ascii_case(b"close") {
                        said_close = true;
                    } else if token.eq_ignore_ascii_case(b"keep-alive") {
                        keep_alive = true;
                    }
                }
            }
            _ => {}
        }
    }
    // An HTTP/1.0 upstream keeps the connection only when it says so (and `close` wins).
    head.close = said_close || (version == 0 && (!keep_alive || head.has_te));
    Ok(Some(head))
}

impl ResponseHead<'_, '_> {
    /// How the body of this response ends (RFC 9112 6.3).
    pub fn framing(&self, head_request: bool) -> Framing {
        if head_request || self.code < 200 || self.code == 204 || self.code == 304 {
            Framing::None
        } else if self.has_te {
            if self.chunked {
                Framing::Chunked
            } else {
                Framing::UntilClose
            }
        } else {
            match self.content_length {
                Some(0) => Framing::None,
                Some(n) => Framing::Length(n),
                None => Framing::UntilClose,
            }
        }
    }
}

impl Lines for ResponseHead<'_, '_> {
    fn each<'s>(&'s self, mut f: impl FnMut(Kind, &'s str, &'s [u8])) {
        for (h, k) in self.headers.iter().zip(&self.kinds) {
            f(*k, h.name, h.value);
        }
    }
}

/// What rproxy adds to a response head it passes on.
#[derive(Debug, Clone, Copy)]
pub struct Added<'a> {
    pub keep_alive: bool,
    pub request_id: &'a [u8],
    pub hsts: Option<&'a str>,
    pub date: &'a [u8],
    pub set_cookie: Option<&'a str>,
}

impl<'a> Added<'a> {
    fn lines(&self) -> headers::Added<'a> {
        headers::Added {
            request_id: self.request_id,
            hsts: self.hsts,
            date: self.date,
            set_cookie: self.set_cookie,
        }
    }
}

impl<'b> ResponseHead<'b, '_> {
    /// The header lines the client gets (`crate::request::headers::forward_response`), as
    /// `verdict` (`crate::request::compress`) has them.
    pub fn forward<S: HeaderSink>(&self, added: &Added, verdict: Verdict, out: &mut S) {
        let length = self.declared_length();
        compress::forward_response(self, length, &added.lines(), verdict, out);
    }

    /// The Content-Length to pass on, as one value: none beside a Transfer-Encoding.
    pub fn declared_length(&self) -> Option<u64> {
        self.content_length.filter(|_| !self.has_te)
    }
}

/// Writes the response head for the client: the upstream's status, the forwarded header lines
/// and Connection.
pub fn write_client_response(
    out: &mut Vec<u8>,
    resp: &ResponseHead,
    added: &Added,
    verdict: Verdict,
) {
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(Digits::default().of(u64::from(resp.code)));
    out.push(b' ');
    out.extend_from_slice(resp.reason.as_bytes());
    out.extend_from_slice(b"\r\n");
    resp.forward(added, verdict, out);
    connection_line(out, added.keep_alive);
    out.extend_from_slice(b"\r\n");
}

fn connection_line(out: &mut Vec<u8>, keep_alive: bool) {
    let value: &[u8] = if keep_alive { b"keep-alive" } else { b"close" };
    out.header(b"connection", value);
}

/// Writes a whole short response rproxy makes itself (an error or refusal).
pub fn write_local_response(
    out: &mut Vec<u8>,
    status: u16,
    extra: &[(&str, &str)],
    added: &Added,
    head_only: bool,
) {
    let body = local::text(status);
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(Digits::default().of(u64::from(status)));
    out.push(b' ');
    out.extend_from_slice(local::reason(status).as_bytes());
    out.extend_from_slice(b"\r\n");
    local::head_lines(status, body.len(), extra, &added.lines(), out);
    connection_line(out, added.keep_alive);
    out.extend_from_slice(b"\r\n");
    if !head_only {
        out.extend_from_slice(body.as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::super::storage;
    use super::*;

    #[test]
    fn response_framing_and_head() {
        let raw = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: keep-alive\r\nDate: x\r\n\
                    Keep-Alive: timeout=5\r\nX-Request-Id: up\r\nServer: u\r\n\r\nhello";
        let mut storage = storage();
        let resp = parse_response(raw, &mut storage).unwrap().unwrap();
        assert_eq!(resp.framing(false), Framing::Length(5));
        assert_eq!(resp.framing(true), Framing::None);
        assert!(!resp.close);
        let mut out = Vec::new();
        let added = Added {
            keep_alive: true,
            request_id: b"id",
            hsts: None,
            date: b"D",
            set_cookie: None,
        };
        write_client_response(&mut out, &resp, &added, Verdict::Untouched);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "HTTP/1.1 200 OK\r\nServer: u\r\ncontent-length: 5\r\ndate: D\r\n\
             x-request-id: id\r\nconnection: keep-alive\r\n\r\n"
        );
    }

    #[test]
    fn response_framings() {
        let framing = |raw: &[u8]| {
            let mut storage = storage();
            parse_response(raw, &mut storage).map(|r| {
                let r = r.unwrap();
                (r.framing(false), r.close)
            })
        };
        assert_eq!(
            framing(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n"),
            Ok((Framing::Chunked, false))
        );
        assert_eq!(
            framing(b"HTTP/1.1 200 OK\r\n\r\n"),
            Ok((Framing::UntilClose, false))
        );
        assert_eq!(
            framing(b"HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n"),
            Ok((Framing::Length(1), true))
        );
        assert_eq!(
            framing(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n"),
            Ok((Framing::None, true))
        );
        assert_eq!(
            framing(b"HTTP/1.1 200 OK\r\nContent-Length: 1, 2\r\n\r\n"),
            Err(BadResponse::Length)
        );
    }

    #[test]
    fn connection_never_names_the_framing_away_and_close_wins() {
        let head = |raw: &[u8]| {
            let mut storage = storage();
            let resp = parse_response(raw, &mut storage).unwrap().unwrap();
            let mut out = Vec::new();
            let added = Added {
                keep_alive: true,
                request_id: b"id",
                hsts: None,
                date: b"D",
                set_cookie: None,
            };
            write_client_response(&mut out, &resp, &added, Verdict::Untouched);
            (String::from_utf8(out).unwrap(), resp.close)
        };
        let (out, _) = head(b"HTTP/1.1 200 OK\r\nConnection: content-length, x-a\r\nX-A: 1\r\nContent-Length: 2, 2\r\n\r\n");
        assert!(out.contains("content-length: 2\r\n"), "{out}");
        assert!(!out.to_ascii_lowercase().contains("x-a:"), "{out}");
        let (out, _) = head(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: transfer-encoding\r\n\r\n");
        assert!(out.contains("Transfer-Encoding: chunked\r\n"), "{out}");
        let (_, close) =
            head(b"HTTP/1.0 200 OK\r\nConnection: keep-alive, close\r\nContent-Length: 0\r\n\r\n");
        assert!(close, "close wins over keep-alive");
        let mut storage = storage();
        assert_eq!(
            parse_response(b"HTTP/1.1 002 X\r\n\r\n", &mut storage).err(),
            Some(BadResponse::Status)
        );
    }
}
