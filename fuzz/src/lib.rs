//! What the fuzz targets share: the header names they check rproxy's output against (written
//! here from the RFCs, not taken from rproxy), lookups over parsed header lines, a raw head read
//! the way pingora's HTTP/1 server reads it, and switches that tolerate known findings.

use std::sync::OnceLock;

use http::header::{HeaderName, HeaderValue};
use pingora_http::RequestHeader;
use rproxy::routing::{Route, Target};

/// Never forwarded in either direction (RFC 9110 7.6.1; Transfer-Encoding is the engine's to frame).
pub const HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "te",
    "trailer",
    "upgrade",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
];

/// What the upstream request gets from rproxy, exactly once each.
pub const FORWARDED: &[&str] = &[
    "host",
    "x-forwarded-for",
    "x-real-ip",
    "x-forwarded-proto",
    "x-forwarded-host",
    "x-request-id",
];

/// What a route can set; one bit of an option byte each. The route's value replaces the client's
/// and rproxy's.
pub const ROUTE_HEADERS: &[(&str, &str)] = &[
    ("x-env", "prod"),
    ("accept", "text/html"),
    ("host", "backend.internal"),
    ("x-forwarded-proto", "https"),
    ("x-forwarded-for", "203.0.113.9"),
    ("x-real-ip", "203.0.113.9"),
    ("x-request-id", "route-id"),
    ("cookie", "route=1"),
];

/// The route a request takes: `/` or `/api` with `strip_prefix`, with the `ROUTE_HEADERS` whose
/// bits `headers` has set.
pub fn route(api: bool, headers: u8) -> Route {
    let prefix = if api { "/api" } else { "/" };
    let mut route = Route::new("r".into(), prefix, Target::Static(".".into()));
    route.strip_prefix = api;
    for (i, (n, v)) in ROUTE_HEADERS.iter().enumerate() {
        if headers & (1 << i) != 0 {
            let header = (HeaderName::from_static(n), HeaderValue::from_static(v));
            route.headers.push(header);
        }
    }
    route
}

/// The route's value of header `name`, if it sets one.
pub fn by_route(route: &Route, name: &str) -> Option<Vec<u8>> {
    route
        .headers
        .iter()
        .find(|(n, _)| n.as_str().eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_bytes().to_vec())
}

/// The values of the lines named `name` (any case), in order.
pub fn values<'a>(lines: &[(&str, &'a [u8])], name: &str) -> Vec<&'a [u8]> {
    lines
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| *v)
        .collect()
}

/// Every token of every `Connection` line, lowercased, read as bytes (a value need not be
/// visible ASCII).
pub fn connection_tokens(lines: &[(&str, &[u8])]) -> Vec<Vec<u8>> {
    values(lines, "connection")
        .into_iter()
        .flat_map(|v| v.split(|&b| b == b','))
        .map(|t| t.trim_ascii().to_ascii_lowercase())
        .filter(|t| !t.is_empty())
        .collect()
}

/// `1*DIGIT` that fits a u64.
pub fn decimal(v: &[u8]) -> Option<u64> {
    if v.is_empty() || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(v).ok()?.parse().ok()
}

/// Bytes for an assertion message.
pub fn show(b: &[u8]) -> String {
    String::from_utf8_lossy(b).replace('\r', "\\r")
}

/// Is a known finding tolerated? `var` (e.g. `FAST_HEADS_KNOWN`) is `1` (all of `all`) or a
/// comma-separated list of names from `all`. Read once per process.
pub fn known(var: &'static str, all: &[&str], finding: &str) -> bool {
    static ON: OnceLock<Vec<String>> = OnceLock::new();
    assert!(all.contains(&finding), "unlisted finding {finding}");
    let on = ON.get_or_init(|| {
        let v = std::env::var(var).unwrap_or_default();
        match v.as_str() {
            "1" => all.iter().map(|k| k.to_string()).collect(),
            _ => v.split(',').map(|k| k.trim().to_string()).collect(),
        }
    });
    on.iter().any(|k| k == finding)
}

/// A request head as pingora 0.9's HTTP/1 server hands it to rproxy, or `None` where pingora
/// answers 400 itself. Mirrors `HttpSession::read_request` (httparse, `RequestHeader::build`, one
/// `append_header` per line, Content-Length dropped beside a Transfer-Encoding, then
/// `validate_request`) and the default upstream request policy's refusals of `Connection` tokens
/// (`ConnectionNominations::parse`), which run before `upstream_request_filter`.
pub fn pingora_request(head: &[u8]) -> Option<RequestHeader> {
    let mut hb = vec![httparse::EMPTY_HEADER; 256];
    let mut h = httparse::Request::new(&mut hb);
    let Ok(httparse::Status::Complete(_)) = h.parse(head) else {
        return None;
    };
    let mut req =
        RequestHeader::build(h.method?, h.path?.as_bytes(), Some(h.headers.len())).ok()?;
    if h.version == Some(0) {
        req.set_version(http::Version::HTTP_10);
    }
    for line in h.headers.iter() {
        // pingora takes the value unchecked; httparse's values are valid ones.
        let value = HeaderValue::from_bytes(line.value).ok()?;
        req.append_header(line.name.to_string(), value).ok()?;
    }
    let te = req.headers.get_all("transfer-encoding").iter().count() > 0;
    if te {
        req.remove_header("content-length");
        let last = req.headers.get_all("transfer-encoding").iter().last()?;
        let coding = last.as_bytes().rsplit(|&b| b == b',').next()?.trim_ascii();
        if h.version == Some(0) || !coding.eq_ignore_ascii_case(b"chunked") {
            return None;
        }
    } else if rproxy::request::headers::content_length(&req.headers).is_err() {
        return None;
    }
    let mut hosts = req.headers.get_all("host").iter();
    if let (Some(_), Some(_)) = (hosts.next(), hosts.next()) {
        return None;
    }
    if req
        .headers
        .get("host")
        .is_some_and(|h| h.as_bytes().contains(&b'@'))
    {
        return None;
    }
    let tokens: Vec<&[u8]> = req
        .headers
        .get_all("connection")
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b','))
        .map(<[u8]>::trim_ascii)
        .filter(|t| !t.is_empty())
        .collect();
    let protected = [
        "host",
        "x-forwarded-for",
        "x-forwarded-host",
        "x-forwarded-proto",
    ];
    let refused = tokens.len() >= 10
        || tokens.iter().any(|t| {
            !t.iter()
                .all(|&b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
                || protected
                    .iter()
                    .any(|p| t.eq_ignore_ascii_case(p.as_bytes()))
        });
    (!refused).then_some(req)
}
