//! The client's request head: parsed from HTTP/1.1 bytes or taken from pingora's HTTP/2 parse,
//! checked for what the fast path takes, and written for the upstream with forwarding headers.

use std::net::IpAddr;

use httparse::{Header, Status};

use super::{
    connection_tokens, kind, line, named_in_connection, parse_length, push_decimal, push_ip, Kind,
    Storage,
};
use crate::proxy::headers;
use crate::routing::Route;

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
    /// The request declared a Content-Length (forwarded as `content_length`).
    pub has_length: bool,
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
        has_length: false,
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
        head.has_length = true;
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
    // `Expect: 100-continue` waits for an interim response this path does not send.
    if !target.starts_with('/')
        || host.is_empty()
        || req.method == http::Method::CONNECT
        || req.headers.contains_key(http::header::EXPECT)
    {
        return None;
    }
    let declared = req.headers.get(http::header::CONTENT_LENGTH);
    let content_length = match declared {
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
        has_length: declared.is_some(),
        close: false,
        request_id: req.headers.get("x-request-id").map(|v| v.as_bytes()),
        lines: Lines::Map(&req.headers),
    })
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
/// those its `Connection` names, never Host or the framing), one normalised Content-Length, a
/// Host when the client sent only `:authority`, then X-Forwarded-*, X-Real-IP, X-Request-Id and
/// the route's headers, which replace any of these of the same name. Several Cookie lines (as
/// HTTP/2 clients send them) become one (RFC 9113 8.2.3).
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
    // Ours unless the route sets it.
    let ours = |name: &str| !headers::set_by_route(route, name);
    // The client's X-Forwarded-For lines, joined in order before the client's address.
    let mut xff: Vec<&[u8]> = Vec::new();
    let mut cookies: Vec<&[u8]> = Vec::new();
    let mut has_host = false;
    req.each(|name, value| {
        let k = kind(name);
        let framing = matches!(k, Kind::Host | Kind::ContentLength | Kind::TransferEncoding);
        if !framing && req.named_by_connection(name) {
            return;
        }
        match k {
            Kind::Hop
            | Kind::Connection
            | Kind::Upgrade
            | Kind::Forwarded
            | Kind::RequestId
            | Kind::ContentLength
            | Kind::TransferEncoding => {}
            Kind::XForwardedFor => {
                let v = value.trim_ascii();
                if !v.is_empty() {
                    xff.push(v);
                }
            }
            Kind::Cookie => cookies.push(value),
            _ if !ours(name) => {}
            Kind::Host => {
                has_host = true;
                line(out, name.as_bytes(), value);
            }
            _ => line(out, name.as_bytes(), value),
        }
    });
    if !has_host && ours("host") {
        line(out, b"host", req.host.as_bytes());
    }
    if req.has_length {
        out.extend_from_slice(b"content-length: ");
        push_decimal(out, req.content_length);
        out.extend_from_slice(b"\r\n");
    }
    if let Some((first, more)) = cookies.split_first().filter(|_| ours("cookie")) {
        out.extend_from_slice(b"cookie: ");
        out.extend_from_slice(first);
        for c in more {
            out.extend_from_slice(b"; ");
            out.extend_from_slice(c);
        }
        out.extend_from_slice(b"\r\n");
    }
    if ours("x-forwarded-for") {
        out.extend_from_slice(b"x-forwarded-for: ");
        for v in xff {
            out.extend_from_slice(v);
            out.extend_from_slice(b", ");
        }
        push_ip(out, client.ip);
        out.extend_from_slice(b"\r\n");
    }
    if ours("x-real-ip") {
        out.extend_from_slice(b"x-real-ip: ");
        push_ip(out, client.ip);
        out.extend_from_slice(b"\r\n");
    }
    for (name, value) in [
        ("x-forwarded-proto", client.proto.as_bytes()),
        ("x-forwarded-host", req.host.as_bytes()),
        ("x-request-id", client.request_id),
    ] {
        if ours(name) {
            line(out, name.as_bytes(), value);
        }
    }
    for (name, value) in &route.headers {
        line(out, name.as_str().as_bytes(), value.as_bytes());
    }
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::super::storage;
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
    fn http2_requests_for_pingoras_path() {
        let req = |method: &str, path: &[u8], headers: &[(&str, &str)]| {
            let mut r = pingora_http::RequestHeader::build(method, path, None).unwrap();
            for (k, v) in headers {
                r.append_header(k.to_string(), *v).unwrap();
            }
            r
        };
        let post = req("POST", b"/up?x=1", &[("content-length", "12")]);
        let got = from_pingora(&post, "h").expect("a plain POST is taken");
        assert_eq!(
            (got.method, got.target, got.content_length),
            ("POST", "/up?x=1", 12)
        );
        let expect = req(
            "POST",
            b"/",
            &[("expect", "100-continue"), ("content-length", "1")],
        );
        assert!(from_pingora(&expect, "h").is_none());
        assert!(
            from_pingora(&req("GET", b"/", &[]), "").is_none(),
            "no host"
        );
        assert!(from_pingora(&req("CONNECT", b"/", &[]), "h").is_none());
        let bad = req("POST", b"/", &[("content-length", "1x")]);
        assert!(from_pingora(&bad, "h").is_none());
    }

    #[test]
    fn framing_survives_connection_and_route_headers_replace_ours() {
        let got = request(
            b"POST / HTTP/1.1\r\nHost: h\r\nConnection: content-length, cookie\r\n\
              Cookie: a=1\r\nContent-Length: 3, 3\r\n\r\nabc",
        );
        assert!(got.contains("content-length: 3\r\n"), "{got}");
        assert!(!got.to_ascii_lowercase().contains("cookie"), "{got}");
        let mut storage = super::super::storage();
        let Parsed::Complete(req) =
            parse_request(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", &mut storage)
        else {
            panic!("parses");
        };
        let mut route = Route::new("r".into(), "/", Target::Static(".".into()));
        for (n, v) in [("host", "inner.svc"), ("x-forwarded-proto", "https")] {
            route
                .headers
                .push((HeaderName::from_static(n), HeaderValue::from_static(v)));
        }
        let client = Client {
            ip: "192.0.2.7".parse().unwrap(),
            proto: "http",
            request_id: b"id",
        };
        let mut out = Vec::new();
        write_upstream_request(&mut out, &req, req.target, &client, &route);
        let out = String::from_utf8(out).unwrap();
        let hosts = out
            .lines()
            .filter(|l| l.to_ascii_lowercase().starts_with("host:"))
            .count();
        assert_eq!(hosts, 1, "{out}");
        assert!(out.contains("host: inner.svc\r\n"), "{out}");
        assert_eq!(out.matches("x-forwarded-proto").count(), 1, "{out}");
        assert!(out.contains("x-forwarded-proto: https\r\n"), "{out}");
    }
}
