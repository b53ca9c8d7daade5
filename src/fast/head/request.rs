//! The client's request head: parsed from HTTP/1.1 bytes or taken from pingora's HTTP/2 parse,
//! checked for what the fast path takes, and written for the upstream with forwarding headers.

use httparse::{Header, Status};

use super::{Storage, MAX_HEADERS};
use crate::request::client::ClientAddr;
use crate::request::framing::{request_framing, BodyFraming};
use crate::request::headers::{
    self, connection_tokens, Forwarding, Kind, Kinded, Lines as HeaderLines,
};
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
    /// Parsed by us from an HTTP/1.1 head.
    Raw(&'a [Header<'a>]),
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
    /// The kind of each of the `Raw` lines, classified once.
    kinds: [Kind; MAX_HEADERS],
}

impl<'a> Request<'a> {
    /// The path without the query.
    pub fn path(&self) -> &'a str {
        let t = self.target;
        t.bytes().position(|b| b == b'?').map_or(t, |q| &t[..q])
    }

    pub fn is_idempotent(&self) -> bool {
        crate::request::is_idempotent(self.method)
    }

    pub fn is_head(&self) -> bool {
        self.method == "HEAD"
    }
}

impl HeaderLines for Request<'_> {
    fn each<'s>(&'s self, f: impl FnMut(Kind, &'s str, &'s [u8])) {
        match self.lines {
            Lines::Raw(headers) => {
                let mut f = f;
                for (h, k) in headers.iter().zip(&self.kinds) {
                    f(*k, h.name, h.value);
                }
            }
            Lines::Map(map) => map.each(f),
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
    let target = crate::request::without_fragment(target);
    let headers: &'b [Header<'b>] = req.headers;
    let mut kinds = [Kind::Other; MAX_HEADERS];
    let lines = Kinded::new(headers, &mut kinds);
    let (content_length, has_length) = match request_framing(&lines) {
        Ok(BodyFraming::None) => (0, false),
        Ok(BodyFraming::Length(n)) => (n, true),
        Ok(BodyFraming::Chunked) => return Parsed::Elsewhere("Transfer-Encoding"),
        Err(_) => return Parsed::Elsewhere("ambiguous framing"),
    };
    let mut host = "";
    let mut hosts = 0;
    let mut close = false;
    for (h, k) in headers.iter().zip(lines.kinds) {
        match k {
            Kind::Host => {
                hosts += 1;
                host = headers::host_text(h.value).unwrap_or("");
            }
            Kind::Expect => return Parsed::Elsewhere("Expect"),
            Kind::Upgrade if headers::is_websocket_upgrade(std::slice::from_ref(h)) => {
                return Parsed::Elsewhere("WebSocket")
            }
            Kind::Connection => {
                close |= connection_tokens(h.value).any(|t| t.eq_ignore_ascii_case(b"close"));
            }
            _ => {}
        }
    }
    if hosts != 1 || host.is_empty() {
        return Parsed::Elsewhere("no single Host");
    }
    let request_id = crate::request::id::given(headers);
    Parsed::Complete(Request {
        len,
        method,
        target,
        host,
        content_length,
        has_length,
        close,
        request_id,
        lines: Lines::Raw(headers),
        kinds,
    })
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
    let declared = headers::content_length(&req.headers).ok()?;
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
        content_length: declared.unwrap_or(0),
        has_length: declared.is_some(),
        close: false,
        request_id: crate::request::id::given(&req.headers),
        lines: Lines::Map(&req.headers),
        kinds: [Kind::Other; MAX_HEADERS],
    })
}

/// What the forwarded request says about its client.
#[derive(Debug, Clone, Copy)]
pub struct Client<'a> {
    pub addr: ClientAddr,
    /// `http` or `https`.
    pub proto: &'static str,
    pub request_id: &'a [u8],
}

/// Writes the request head for the upstream: the request line, then the header lines
/// `crate::request::headers::forward_request` decides.
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
    let forwarding = Forwarding {
        client: Some(client.addr),
        proto: client.proto,
        host: req.host.as_bytes(),
        request_id: client.request_id,
        content_length: req.has_length.then_some(req.content_length),
        upgrade: headers::Upgrade::No,
    };
    headers::forward_request(req, &forwarding, route, out);
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
            addr: ClientAddr::direct("192.0.2.7".parse().unwrap()),
            proto: "https",
            request_id: b"id1",
        };
        let mut out = Vec::new();
        write_upstream_request(&mut out, &head, head.target, &client, &route);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn forwarded_request_head() {
        let got =
            request(b"POST /a?b HTTP/1.1\r\nHost: app.test:8080\r\nContent-Length: 2, 2\r\n\r\nhi");
        assert_eq!(
            got,
            "POST /a?b HTTP/1.1\r\nHost: app.test:8080\r\ncontent-length: 2\r\n\
             x-forwarded-for: 192.0.2.7\r\nx-real-ip: 192.0.2.7\r\nx-forwarded-proto: https\r\n\
             x-forwarded-host: app.test:8080\r\nx-request-id: id1\r\nx-env: prod\r\n\r\n"
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
                "ambiguous framing",
            ),
            (
                b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: +1\r\n\r\n",
                "ambiguous framing",
            ),
            (
                b"GET / HTTP/1.1\r\nHost: h\r\nUpgrade: WebSocket\r\n\r\n",
                "WebSocket",
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
}
