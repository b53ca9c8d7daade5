//! HTTP/1.1 message heads on the fast path: parsing the client's request head and the upstream's
//! response head (httparse, borrowed from the read buffer), and writing the heads sent on.

use std::io::Write;
use std::net::IpAddr;

use std::mem::MaybeUninit;

use httparse::{Header, Status};

use super::body::Framing;
use crate::proxy::headers;
use crate::routing::Route;

/// Header lines accepted in one head; more sends the request to pingora's path (and makes an
/// upstream response a 502).
pub const MAX_HEADERS: usize = 100;

/// Room for the header lines of one head, left uninitialised until parsed (no 3 KiB memset per
/// head).
pub type Storage<'b> = [MaybeUninit<Header<'b>>; MAX_HEADERS];

pub fn storage<'b>() -> Storage<'b> {
    [const { MaybeUninit::uninit() }; MAX_HEADERS]
}

/// What a header name means to a proxy; one match on the length, then a case-insensitive compare.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Hop-by-hop: never forwarded (RFC 9110 7.6.1).
    Hop,
    Connection,
    Host,
    ContentLength,
    TransferEncoding,
    Expect,
    Upgrade,
    /// Set by rproxy on every forwarded request; the client's value is replaced.
    Forwarded,
    XForwardedFor,
    RequestId,
    Date,
    Hsts,
    Cookie,
    Other,
}

fn kind(name: &str) -> Kind {
    let is = |s: &str| name.eq_ignore_ascii_case(s);
    match name.len() {
        2 if is("te") => Kind::Hop,
        4 if is("host") => Kind::Host,
        4 if is("date") => Kind::Date,
        6 if is("expect") => Kind::Expect,
        6 if is("cookie") => Kind::Cookie,
        7 if is("upgrade") => Kind::Upgrade,
        7 if is("trailer") => Kind::Hop,
        9 if is("x-real-ip") => Kind::Forwarded,
        10 if is("connection") => Kind::Connection,
        10 if is("keep-alive") => Kind::Hop,
        12 if is("x-request-id") => Kind::RequestId,
        14 if is("content-length") => Kind::ContentLength,
        15 if is("x-forwarded-for") => Kind::XForwardedFor,
        16 if is("proxy-connection") => Kind::Hop,
        16 if is("x-forwarded-host") => Kind::Forwarded,
        17 if is("transfer-encoding") => Kind::TransferEncoding,
        17 if is("x-forwarded-proto") => Kind::Forwarded,
        18 if is("proxy-authenticate") => Kind::Hop,
        19 if is("proxy-authorization") => Kind::Hop,
        25 if is("strict-transport-security") => Kind::Hsts,
        _ => Kind::Other,
    }
}

/// The outcome of parsing a head from the bytes read so far.
#[derive(Debug)]
pub enum Parsed<T> {
    /// More bytes are needed.
    Partial,
    /// Not for this path: pingora's proxy answers it (it may be fine, e.g. chunked, or a 400).
    Elsewhere(&'static str),
    Complete(T),
}

/// Where a request's header lines come from.
#[derive(Debug, Clone, Copy)]
enum Lines<'a> {
    /// Parsed by us from an HTTP/1.1 head; `true` when `Connection` names more headers to drop.
    Raw(&'a [Header<'a>], bool),
    /// Parsed by pingora (HTTP/2): lowercase names, no connection-specific headers.
    Map(&'a http::HeaderMap),
}

/// A client request the fast path can forward as it is.
#[derive(Debug)]
pub struct Request<'a> {
    /// The head's size as sent (checked against `max_header_size`).
    pub len: usize,
    pub method: &'a str,
    /// Origin-form target: path and query.
    pub target: &'a str,
    pub host: &'a str,
    pub content_length: u64,
    /// The client asked to close after this exchange.
    pub close: bool,
    pub request_id: Option<&'a [u8]>,
    lines: Lines<'a>,
}

impl<'a> Request<'a> {
    /// The path without the query.
    pub fn path(&self) -> &'a str {
        let t = self.target;
        t.bytes().position(|b| b == b'?').map_or(t, |q| &t[..q])
    }

    pub fn is_idempotent(&self) -> bool {
        matches!(
            self.method,
            "GET" | "HEAD" | "PUT" | "DELETE" | "OPTIONS" | "TRACE"
        )
    }

    pub fn is_head(&self) -> bool {
        self.method == "HEAD"
    }

    /// Every header line, in order.
    fn each(&self, mut f: impl FnMut(&'a str, &'a [u8])) {
        match self.lines {
            Lines::Raw(headers, _) => headers.iter().for_each(|h| f(h.name, h.value)),
            Lines::Map(map) => map.iter().for_each(|(n, v)| f(n.as_str(), v.as_bytes())),
        }
    }

    /// Is `name` one of the tokens of the request's `Connection` headers?
    fn named_by_connection(&self, name: &str) -> bool {
        match self.lines {
            Lines::Raw(headers, true) => named_in_connection(headers, name),
            _ => false,
        }
    }
}

/// Parses a request head at the start of `buf`.
pub fn parse_request<'b>(buf: &'b [u8], storage: &'b mut Storage<'b>) -> Parsed<Request<'b>> {
    let mut req = httparse::Request::new(&mut []);
    let len = match req.parse_with_uninit_headers(buf, storage) {
        Ok(Status::Complete(len)) => len,
        Ok(Status::Partial) => return Parsed::Partial,
        Err(_) => return Parsed::Elsewhere("unparsable head"),
    };
    let (Some(method), Some(target), Some(1)) = (req.method, req.path, req.version) else {
        return Parsed::Elsewhere("not HTTP/1.1");
    };
    if !target.starts_with('/') {
        return Parsed::Elsewhere("not an origin-form target");
    }
    let headers: &'b [Header<'b>] = req.headers;
    let mut head = Request {
        len,
        method,
        target,
        host: "",
        content_length: 0,
        close: false,
        request_id: None,
        lines: Lines::Raw(headers, false),
    };
    let mut hosts = 0;
    let mut named = false;
    let mut length: Option<&[u8]> = None;
    for h in headers {
        match kind(h.name) {
            Kind::Host => {
                hosts += 1;
                head.host = std::str::from_utf8(h.value).unwrap_or("");
            }
            Kind::ContentLength => {
                for token in h.value.split(|&b| b == b',').map(<[u8]>::trim_ascii) {
                    if length.is_some_and(|l| l != token) {
                        return Parsed::Elsewhere("conflicting Content-Length");
                    }
                    length = Some(token);
                }
            }
            Kind::TransferEncoding => return Parsed::Elsewhere("Transfer-Encoding"),
            Kind::Expect => return Parsed::Elsewhere("Expect"),
            Kind::Upgrade => return Parsed::Elsewhere("Upgrade"),
            Kind::Connection => {
                for token in connection_tokens(h.value) {
                    if token.eq_ignore_ascii_case(b"close") {
                        head.close = true;
                    } else if !token.eq_ignore_ascii_case(b"keep-alive") {
                        named = true;
                    }
                }
            }
            Kind::RequestId => head.request_id = Some(h.value),
            _ => {}
        }
    }
    if hosts != 1 || head.host.is_empty() {
        return Parsed::Elsewhere("no single Host");
    }
    if let Some(l) = length {
        match parse_length(l) {
            Some(n) => head.content_length = n,
            None => return Parsed::Elsewhere("malformed Content-Length"),
        }
    }
    head.lines = Lines::Raw(headers, named);
    Parsed::Complete(head)
}

/// Takes an HTTP/2 request that pingora parsed; `None` when it is not for the fast path.
pub fn from_pingora<'a>(
    req: &'a pingora_http::RequestHeader,
    host: &'a str,
) -> Option<Request<'a>> {
    let target = req.uri.path_and_query()?.as_str();
    if !target.starts_with('/') || host.is_empty() || req.method == http::Method::CONNECT {
        return None;
    }
    let content_length = match req.headers.get(http::header::CONTENT_LENGTH) {
        Some(v) => parse_length(v.as_bytes())?,
        None => 0,
    };
    let len = target.len()
        + req
            .headers
            .iter()
            .map(|(k, v)| k.as_str().len() + v.len() + 4)
            .sum::<usize>();
    Some(Request {
        len,
        method: req.method.as_str(),
        target,
        host,
        content_length,
        close: false,
        request_id: req.headers.get("x-request-id").map(|v| v.as_bytes()),
        lines: Lines::Map(&req.headers),
    })
}

fn connection_tokens(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|&b| b == b',')
        .map(<[u8]>::trim_ascii)
        .filter(|t| !t.is_empty())
}

/// All digits and no overflow.
fn parse_length(v: &[u8]) -> Option<u64> {
    if v.is_empty() || v.len() > 19 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(v).ok()?.parse().ok()
}

/// What the forwarded request says about its client.
#[derive(Debug, Clone, Copy)]
pub struct Client<'a> {
    pub ip: IpAddr,
    /// `http` or `https`.
    pub proto: &'static str,
    pub request_id: &'a [u8],
}

/// Writes the request head for the upstream: the client's headers minus hop-by-hop ones (and
/// those its `Connection` names), a Host when the client sent only `:authority`, then
/// X-Forwarded-*, X-Real-IP, X-Request-Id and the route's headers, which replace any the client
/// sent. Several Cookie lines (as HTTP/2 clients send them) become one (RFC 9113 8.2.3).
pub fn write_upstream_request(
    out: &mut Vec<u8>,
    req: &Request,
    target: &str,
    client: &Client,
    route: &Route,
) {
    out.extend_from_slice(req.method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    // The client's X-Forwarded-For lines, joined in order before the client's address.
    let mut xff: Vec<&[u8]> = Vec::new();
    let mut cookies: Vec<&[u8]> = Vec::new();
    let mut has_host = false;
    req.each(|name, value| {
        let keep = match kind(name) {
            Kind::Hop | Kind::Connection | Kind::Upgrade | Kind::Forwarded | Kind::RequestId => {
                false
            }
            Kind::XForwardedFor => {
                let v = value.trim_ascii();
                if !v.is_empty() {
                    xff.push(v);
                }
                false
            }
            Kind::Cookie => {
                cookies.push(value);
                false
            }
            Kind::Host => {
                has_host = true;
                true
            }
            _ => !req.named_by_connection(name),
        };
        if keep && !headers::set_by_route(route, name) {
            line(out, name.as_bytes(), value);
        }
    });
    if !has_host {
        line(out, b"host", req.host.as_bytes());
    }
    if let Some((first, more)) = cookies.split_first() {
        out.extend_from_slice(b"cookie: ");
        out.extend_from_slice(first);
        for c in more {
            out.extend_from_slice(b"; ");
            out.extend_from_slice(c);
        }
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"x-forwarded-for: ");
    for v in xff {
        out.extend_from_slice(v);
        out.extend_from_slice(b", ");
    }
    let ip_start = out.len();
    push_ip(out, client.ip);
    let ip_end = out.len();
    out.extend_from_slice(b"\r\nx-real-ip: ");
    out.extend_from_within(ip_start..ip_end);
    out.extend_from_slice(b"\r\nx-forwarded-proto: ");
    out.extend_from_slice(client.proto.as_bytes());
    out.extend_from_slice(b"\r\n");
    line(out, b"x-forwarded-host", req.host.as_bytes());
    line(out, b"x-request-id", client.request_id);
    for (name, value) in &route.headers {
        line(out, name.as_str().as_bytes(), value.as_bytes());
    }
    out.extend_from_slice(b"\r\n");
}

/// Is `name` one of the tokens of a `Connection` header of `headers`?
fn named_in_connection(headers: &[Header], name: &str) -> bool {
    headers
        .iter()
        .filter(|h| kind(h.name) == Kind::Connection)
        .flat_map(|h| connection_tokens(h.value))
        .any(|t| t.eq_ignore_ascii_case(name.as_bytes()))
}

/// Writes `n` in decimal (what `write!` does, without the formatting machinery).
fn push_decimal(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

fn push_ip(out: &mut Vec<u8>, ip: IpAddr) {
    match ip {
        IpAddr::V4(v4) => {
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    out.push(b'.');
                }
                push_decimal(out, u64::from(octet));
            }
        }
        IpAddr::V6(v6) => {
            let _ = write!(out, "{v6}");
        }
    }
}

fn line(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// An upstream response head.
#[derive(Debug)]
pub struct ResponseHead<'b, 'h> {
    pub len: usize,
    pub code: u16,
    pub reason: &'b str,
    /// The upstream will close the connection after this response.
    pub close: bool,
    headers: &'h [Header<'b>],
    content_length: Option<u64>,
    /// The last transfer coding is `chunked`.
    chunked: bool,
    has_te: bool,
    named_by_connection: bool,
}

/// Why an upstream response head is refused (the client gets 502).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BadResponse {
    #[error("unparsable response head")]
    Unparsable,
    #[error("malformed or conflicting Content-Length")]
    Length,
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
    let headers: &'h [Header<'b>] = resp.headers;
    let mut head = ResponseHead {
        len,
        code,
        reason: resp.reason.unwrap_or(""),
        close: version == 0,
        headers,
        content_length: None,
        chunked: false,
        has_te: false,
        named_by_connection: false,
    };
    let mut keep_alive = false;
    for h in headers {
        match kind(h.name) {
            Kind::ContentLength => {
                for token in h.value.split(|&b| b == b',').map(<[u8]>::trim_ascii) {
                    let n = parse_length(token).ok_or(BadResponse::Length)?;
                    if head.content_length.is_some_and(|l| l != n) {
                        return Err(BadResponse::Length);
                    }
                    head.content_length = Some(n);
                }
            }
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
                        head.close = true;
                    } else if token.eq_ignore_ascii_case(b"keep-alive") {
                        keep_alive = true;
                    } else {
                        head.named_by_connection = true;
                    }
                }
            }
            _ => {}
        }
    }
    // An HTTP/1.0 upstream keeps the connection only when it says so.
    if version == 0 && keep_alive && !head.has_te {
        head.close = false;
    }
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

/// What rproxy adds to a response head it passes on.
#[derive(Debug, Clone, Copy)]
pub struct Added<'a> {
    pub keep_alive: bool,
    pub request_id: &'a [u8],
    pub hsts: Option<&'a str>,
    pub date: &'a [u8],
}

impl<'b> ResponseHead<'b, '_> {
    /// The upstream's headers to pass on: all but hop-by-hop ones (and those its `Connection`
    /// names), Date and X-Request-Id (rproxy sets them), a Content-Length beside a
    /// Transfer-Encoding, and HSTS when rproxy sets it.
    pub fn each_kept(&self, hsts: bool, mut f: impl FnMut(&'b str, &'b [u8])) {
        for h in self.headers {
            let keep = match kind(h.name) {
                Kind::Hop | Kind::Connection | Kind::Upgrade | Kind::Date | Kind::RequestId => {
                    false
                }
                Kind::ContentLength => !self.has_te,
                Kind::Hsts => !hsts,
                _ => !(self.named_by_connection && named_in_connection(self.headers, h.name)),
            };
            if keep {
                f(h.name, h.value);
            }
        }
    }
}

/// Writes the response head for the client: the upstream's status and kept headers, then Date,
/// Connection, X-Request-Id and (on https routes that ask) HSTS.
pub fn write_client_response(out: &mut Vec<u8>, resp: &ResponseHead, added: &Added) {
    out.extend_from_slice(b"HTTP/1.1 ");
    push_decimal(out, u64::from(resp.code));
    out.push(b' ');
    out.extend_from_slice(resp.reason.as_bytes());
    out.extend_from_slice(b"\r\n");
    resp.each_kept(added.hsts.is_some(), |name, value| {
        line(out, name.as_bytes(), value)
    });
    added_lines(out, added);
    if let Some(hsts) = added.hsts {
        line(out, b"strict-transport-security", hsts.as_bytes());
    }
    out.extend_from_slice(b"\r\n");
}

/// Date, Connection and X-Request-Id: on every HTTP/1.1 response rproxy sends.
fn added_lines(out: &mut Vec<u8>, added: &Added) {
    line(out, b"date", added.date);
    let connection: &[u8] = if added.keep_alive {
        b"keep-alive"
    } else {
        b"close"
    };
    line(out, b"connection", connection);
    line(out, b"x-request-id", added.request_id);
}

/// Writes a whole short response rproxy makes itself (an error or refusal).
pub fn write_local_response(
    out: &mut Vec<u8>,
    status: u16,
    extra: &[(&str, &str)],
    added: &Added,
    head_only: bool,
) {
    let body = crate::proxy::respond::error_text(status);
    let _ = write!(
        out,
        "HTTP/1.1 {status} {}\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: {}\r\n",
        crate::proxy::respond::reason(status),
        body.len()
    );
    for (name, value) in extra {
        line(out, name.as_bytes(), value.as_bytes());
    }
    added_lines(out, added);
    out.extend_from_slice(b"\r\n");
    if !head_only {
        out.extend_from_slice(body.as_bytes());
    }
}

/// The length of the head at the start of `buf` (through its empty line), once it is all there.
pub fn head_end(buf: &[u8]) -> Option<usize> {
    let mut from = 0;
    while let Some(i) = buf[from..].iter().position(|&b| b == b'\n') {
        let at = from + i;
        match buf.get(at + 1..at + 3) {
            Some([b'\n', _]) => return Some(at + 2),
            Some([b'\r', b'\n']) => return Some(at + 3),
            None if buf.get(at + 1) == Some(&b'\n') => return Some(at + 2),
            _ => {}
        }
        from = at + 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routing::Target;
    use http::header::{HeaderName, HeaderValue};

    fn request(raw: &[u8]) -> String {
        let mut storage = storage();
        let Parsed::Complete(head) = parse_request(raw, &mut storage) else {
            panic!("not complete: {}", String::from_utf8_lossy(raw));
        };
        let mut route = Route::new("r".into(), "/", Target::Static(".".into()));
        route.headers.push((
            HeaderName::from_static("x-env"),
            HeaderValue::from_static("prod"),
        ));
        let client = Client {
            ip: "192.0.2.7".parse().unwrap(),
            proto: "https",
            request_id: b"id1",
        };
        let mut out = Vec::new();
        write_upstream_request(&mut out, &head, head.target, &client, &route);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn numbers_and_addresses_as_text() {
        let mut out = Vec::new();
        for n in [0u64, 7, 200, 65535, u64::MAX] {
            out.clear();
            push_decimal(&mut out, n);
            assert_eq!(out, n.to_string().as_bytes());
        }
        for ip in ["0.0.0.0", "192.168.10.255", "2001:db8::1", "::ffff:1.2.3.4"] {
            out.clear();
            push_ip(&mut out, ip.parse().unwrap());
            assert_eq!(String::from_utf8_lossy(&out), ip);
        }
    }

    #[test]
    fn finds_the_end_of_a_head() {
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nHost: a\r\n\r\nbody"), Some(27));
        assert_eq!(head_end(b"GET / HTTP/1.1\nHost: a\n\n"), Some(24));
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nHost: a\r\n"), None);
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nHost: a\r\n\r"), None);
    }

    #[test]
    fn forwarded_request_head() {
        let got = request(
            b"GET /a?b HTTP/1.1\r\nHost: app.test:8080\r\nX-Forwarded-For: 10.0.0.1\r\n\
              Connection: keep-alive, X-Secret\r\nX-Secret: 1\r\nTE: trailers\r\n\
              X-Real-IP: 6.6.6.6\r\nX-Env: dev\r\nAccept: */*\r\nx-forwarded-for: 10.0.0.2\r\n\r\n",
        );
        assert_eq!(
            got,
            "GET /a?b HTTP/1.1\r\nHost: app.test:8080\r\nAccept: */*\r\n\
             x-forwarded-for: 10.0.0.1, 10.0.0.2, 192.0.2.7\r\nx-real-ip: 192.0.2.7\r\n\
             x-forwarded-proto: https\r\nx-forwarded-host: app.test:8080\r\nx-request-id: id1\r\n\
             x-env: prod\r\n\r\n"
        );
    }

    #[test]
    fn without_a_client_x_forwarded_for() {
        let got = request(b"POST / HTTP/1.1\r\nhost: h\r\ncontent-length: 2\r\n\r\nhi");
        assert!(
            got.contains("content-length: 2\r\nx-forwarded-for: 192.0.2.7\r\nx-real-ip"),
            "{got}"
        );
    }

    #[test]
    fn requests_for_pingoras_path() {
        for (raw, why) in [
            (&b"GET / HTTP/1.0\r\nHost: h\r\n\r\n"[..], "not HTTP/1.1"),
            (b"GET / HTTP/1.1\r\n\r\n", "no single Host"),
            (
                b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
                "no single Host",
            ),
            (
                b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n",
                "Transfer-Encoding",
            ),
            (
                b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
                "conflicting Content-Length",
            ),
            (
                b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: +1\r\n\r\n",
                "malformed Content-Length",
            ),
            (
                b"GET / HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\n\r\n",
                "Upgrade",
            ),
            (
                b"GET http://h/ HTTP/1.1\r\nHost: h\r\n\r\n",
                "not an origin-form target",
            ),
            (
                b"GET / HTTP/1.1\r\nHost: h\r\n folded\r\n\r\n",
                "unparsable head",
            ),
        ] {
            let mut storage = storage();
            match parse_request(raw, &mut storage) {
                Parsed::Elsewhere(got) => assert_eq!(got, why),
                other => panic!("{why}: {other:?}"),
            }
        }
    }

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
        };
        write_client_response(&mut out, &resp, &added);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nServer: u\r\ndate: D\r\n\
             connection: keep-alive\r\nx-request-id: id\r\n\r\n"
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
}
