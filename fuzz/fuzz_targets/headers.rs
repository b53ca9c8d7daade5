//! A raw HTTP/1 request head (request line, `Name: value` lines) -> `RequestHeader` -> the
//! request pingora's path sends upstream (`proxy::headers::upstream_request`, or `handshake` for
//! a WebSocket). Invariant: no hop-by-hop header reaches the upstream (RFC 9110 7.6.1), nor any
//! header the client's `Connection` names, except what rproxy sets itself (Host, the framing,
//! X-Forwarded-*, X-Real-IP, X-Request-Id, the route's headers) and the `Upgrade` +
//! `Connection: upgrade` pair of a WebSocket handshake, which is kept on purpose.
//! The first input byte picks the options: 1 WebSocket handshake, 2 route headers, 4 https,
//! 8 a client IP, 16 route `/api` with `strip_prefix`.
//! `fuzz/regressions/headers/` holds the minimized inputs of past findings.
#![no_main]

use http::header::{HeaderName, HeaderValue};
use httparse::Status;
use libfuzzer_sys::fuzz_target;
use pingora_http::RequestHeader;
use rproxy::proxy::headers::{handshake, upstream_request, Client};
use rproxy::request::Listener;
use rproxy::routing::Route;
use rproxy_fuzz::{by_route, connection_tokens, route, show, values, FORWARDED, HOP};

/// The route headers the options' bit 2 sets (bits of `rproxy_fuzz::ROUTE_HEADERS`): X-Env,
/// Host and X-Real-IP.
const ROUTE_HEADER_BITS: u8 = 1 | 4 | 32;

fuzz_target!(|data: &[u8]| {
    let Some((&flags, head)) = data.split_first() else {
        return;
    };
    let websocket = flags & 1 != 0;
    let route = route(
        flags & 16 != 0,
        if flags & 2 != 0 { ROUTE_HEADER_BITS } else { 0 },
    );
    let listener = if flags & 4 != 0 {
        Listener::Https
    } else {
        Listener::Http
    };
    let ip = (flags & 8 != 0).then(|| std::net::IpAddr::from([192, 0, 2, flags]));

    let mut lines = head
        .split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l));
    let request_line = lines.next().unwrap_or_default();
    let mut parts = request_line.splitn(3, |&b| b == b' ');
    let method = parts.next().unwrap_or_default();
    let target = parts.next().unwrap_or(b"/");
    let Ok(mut req) = RequestHeader::build(method, target, None)
        .or_else(|_| RequestHeader::build("GET", b"/", None))
    else {
        return;
    };
    for line in lines {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let name = &line[..colon];
        let Ok(value) = HeaderValue::from_bytes(line[colon + 1..].trim_ascii()) else {
            continue;
        };
        // pingora's parser refuses a request with an invalid name; a valid one is ASCII.
        if HeaderName::from_bytes(name).is_err() {
            continue;
        }
        let Ok(name) = String::from_utf8(name.to_vec()) else {
            continue;
        };
        let _ = req.append_header(name, value);
    }

    let client = Client {
        ip,
        listener,
        request_id: b"id-7",
    };
    let Some(got) = upstream(&req, &client, &route, websocket) else {
        return;
    };
    let sent: Vec<(&str, &[u8])> = req
        .headers
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_bytes()))
        .collect();
    let got: Vec<(&str, &[u8])> = got
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_slice()))
        .collect();
    check(&sent, &got, websocket, &route, listener, ip);
});

/// The upstream request's lines: pingora's header, or the handshake's bytes parsed back.
fn upstream(
    req: &RequestHeader,
    client: &Client,
    route: &Route,
    websocket: bool,
) -> Option<Vec<(String, Vec<u8>)>> {
    let own = |n: &str, v: &[u8]| (n.to_string(), v.to_vec());
    if !websocket {
        let out = upstream_request(req, client, route).ok()?;
        return Some(
            out.headers
                .iter()
                .map(|(n, v)| own(n.as_str(), v.as_bytes()))
                .collect(),
        );
    }
    let bytes = handshake(req, client, route);
    let mut ob = vec![httparse::EMPTY_HEADER; req.headers.len() + 32];
    let mut o = httparse::Request::new(&mut ob);
    match o.parse(&bytes) {
        Ok(Status::Complete(n)) => assert_eq!(n, bytes.len(), "bytes after the handshake"),
        other => panic!("handshake does not parse: {other:?}\n{}", show(&bytes)),
    }
    Some(o.headers.iter().map(|h| own(h.name, h.value)).collect())
}

fn check(
    sent: &[(&str, &[u8])],
    got: &[(&str, &[u8])],
    websocket: bool,
    route: &Route,
    listener: Listener,
    ip: Option<std::net::IpAddr>,
) {
    let ctx = || format!("\nclient: {sent:?}\nupstream: {got:?}");
    // rproxy's own headers, once, with the route's value where it sets one.
    let ip = ip.map(|ip| ip.to_string());
    let ours = [
        ("x-forwarded-proto", Some(listener.proto())),
        ("x-real-ip", ip.as_deref()),
        ("x-request-id", Some("id-7")),
    ];
    for (name, value) in ours {
        let want = by_route(route, name).or_else(|| value.map(|v| v.as_bytes().to_vec()));
        let want: Vec<&[u8]> = want.iter().map(Vec::as_slice).collect();
        assert_eq!(
            values(got, name),
            want,
            "`{name}` as rproxy sets it{}",
            ctx()
        );
    }
    for (n, v) in &route.headers {
        assert_eq!(
            values(got, n.as_str()),
            [v.as_bytes()],
            "route's {n}{}",
            ctx()
        );
    }
    // The WebSocket pair, kept when the client asked for an upgrade.
    let upgrade = values(sent, "upgrade");
    let kept = websocket && !upgrade.is_empty();
    if kept {
        assert_eq!(
            values(got, "upgrade"),
            [*upgrade.last().unwrap()],
            "upgrade{}",
            ctx()
        );
        assert_eq!(
            values(got, "connection"),
            [&b"upgrade"[..]],
            "connection{}",
            ctx()
        );
    }
    for name in HOP.iter().chain(&["transfer-encoding"]) {
        if kept && (*name == "upgrade" || *name == "connection") {
            continue;
        }
        assert!(
            values(got, name).is_empty(),
            "hop-by-hop `{name}` survived{}",
            ctx()
        );
    }
    // Headers the client's Connection names, unless rproxy sets them itself.
    for t in connection_tokens(sent) {
        let Ok(name) = std::str::from_utf8(&t) else {
            continue;
        };
        let set = FORWARDED.contains(&name)
            || name == "content-length"
            || by_route(route, name).is_some();
        if set || (kept && (name == "upgrade" || name == "connection")) {
            continue;
        }
        assert!(
            values(got, name).is_empty(),
            "`{name}` is named by Connection but survived{}",
            ctx()
        );
    }
}
