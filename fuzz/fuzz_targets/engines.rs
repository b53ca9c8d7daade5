//! One raw HTTP/1.1 request head through both engines' upstream writers: the fast path's
//! (`fast::head::parse_request` + `write_upstream_request`) and pingora's
//! (`proxy::headers::upstream_request` on the `RequestHeader` pingora's parser builds from the
//! same bytes). Where both take the request, the upstream gets the same method, target and header
//! lines (names in any case, values exact but for the blanks around them, order free), and the framing verdict pingora's path
//! reads from the raw head (`request_framing(&RawHead(..))`) is the fast path's. Where the fast
//! path hands the request over (`Parsed::Elsewhere`), pingora's side is checked alone: no
//! hop-by-hop or `Connection`-named line, rproxy's headers once, the declared length as framed.
//!
//! Input: byte 0 = options (1 https listener, 2 IPv6 client, 4 route `/api` with
//! `strip_prefix`), byte 1 = the route's headers (one bit each, `rproxy_fuzz::ROUTE_HEADERS`), then the bytes.
//! `fuzz/regressions/engines/` holds the minimized inputs of the disagreements it found (fixed
//! at 8fbc4f2, see fuzz/README.md); every check is strict.
#![no_main]

use std::net::IpAddr;

use httparse::Status;
use libfuzzer_sys::fuzz_target;
use rproxy::fast::head::{self, parse_request, storage, write_upstream_request, Parsed};
use rproxy::proxy::headers::{self as pingora_headers, upstream_request};
use rproxy::request::framing::{request_framing, BodyFraming, RawHead};
use rproxy::request::id::usable;
use rproxy::request::Listener;
use rproxy::routing::Route;
use rproxy_fuzz::{
    by_route, connection_tokens, pingora_request, route, show, values, FORWARDED, HOP,
};

/// Stands for the id an engine makes up when the client's is missing or unusable (both engines
/// take `request::id::RequestId::of`; only which client line they give it is compared).
const NEW_ID: &[u8] = b"0123456789abcdef0123456789abcdef";

/// An engine's request id for the client line it reads.
fn id_of(given: Option<&[u8]>) -> &[u8] {
    given.filter(|id| usable(id)).unwrap_or(NEW_ID)
}

fuzz_target!(|data: &[u8]| {
    let [flags, opt, raw @ ..] = data else {
        return;
    };
    let route = route(flags & 4 != 0, *opt);
    let listener = if flags & 1 != 0 {
        Listener::Https
    } else {
        Listener::Http
    };
    let ip: IpAddr = if flags & 2 != 0 {
        "2001:db8::7"
    } else {
        "192.0.2.7"
    }
    .parse()
    .unwrap();

    // The head as httparse reads it; pingora's raw head bytes end where it ends.
    let mut hb = vec![httparse::EMPTY_HEADER; 256];
    let mut h = httparse::Request::new(&mut hb);
    let mut st = storage();
    let fast = parse_request(raw, &mut st);
    let Ok(Status::Complete(len)) = h.parse(raw) else {
        assert!(
            !matches!(fast, Parsed::Complete(_)),
            "fast path took what httparse does not"
        );
        return;
    };
    let head = &raw[..len];

    // One framing verdict: over the raw head (pingora's path) and over the parsed lines (the
    // fast path), and what the fast path does with it.
    let verdict = request_framing(&RawHead(head));
    assert_eq!(
        verdict,
        request_framing(&h.headers[..]),
        "framing: raw head against parsed lines\n{}",
        show(head)
    );
    match &fast {
        Parsed::Complete(req) => {
            let want = if req.has_length {
                BodyFraming::Length(req.content_length)
            } else {
                BodyFraming::None
            };
            assert_eq!(
                verdict,
                Ok(want),
                "framing: the fast path's\n{}",
                show(head)
            );
        }
        Parsed::Elsewhere("Transfer-Encoding") => assert_eq!(verdict, Ok(BodyFraming::Chunked)),
        Parsed::Elsewhere("ambiguous framing") => assert!(verdict.is_err()),
        Parsed::Elsewhere(_) | Parsed::Partial => {}
    }
    // pingora's path answers a refused framing with 400 before any upstream request.
    let Ok(framing) = verdict else {
        return;
    };

    // Pingora's side, where pingora's parser and policy take the request and the route is the one
    // its path would pick.
    let Some(preq) = pingora_request(head) else {
        return;
    };
    if !route.matches(preq.uri.path()) {
        return;
    }
    let pid = id_of(rproxy::request::id::given(&preq.headers));
    let client = pingora_headers::Client {
        ip: Some(ip),
        listener,
        request_id: pid,
    };
    let Ok(pout) = upstream_request(&preq, &client, &route) else {
        return;
    };
    let plines: Vec<(&str, &[u8])> = pout
        .headers
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_bytes()))
        .collect();
    let client_lines: Vec<(&str, &[u8])> = h.headers.iter().map(|h| (h.name, h.value)).collect();
    let ptext = text(&plines);
    let pctx = || {
        format!(
            "\nclient:\n{}\npingora's upstream request:\n{ptext}",
            show(head)
        )
    };
    pingora_side(
        &client_lines,
        &plines,
        &route,
        listener,
        ip,
        pid,
        framing,
        &pctx,
    );

    // The fast path's side, where it takes the request.
    let Parsed::Complete(req) = fast else {
        return;
    };
    if !route.matches(req.path()) {
        return;
    }
    let target = route.upstream_path(req.target);
    let fid = id_of(req.request_id);
    let client = head::Client {
        ip,
        proto: listener.proto(),
        request_id: fid,
    };
    let mut out = Vec::new();
    write_upstream_request(&mut out, &req, &target, &client, &route);
    let mut ob = vec![httparse::EMPTY_HEADER; head::MAX_HEADERS + 32];
    let mut o = httparse::Request::new(&mut ob);
    match o.parse(&out) {
        Ok(Status::Complete(n)) => assert_eq!(n, out.len(), "bytes after the head"),
        other => panic!(
            "fast upstream head does not parse: {other:?}\n{}",
            show(&out)
        ),
    }
    let flines: Vec<(&str, &[u8])> = o.headers.iter().map(|h| (h.name, h.value)).collect();
    let ctx = || {
        format!(
            "\nclient:\n{}\nfast path's upstream request:\n{}\npingora's:\n{} {}\n{ptext}",
            show(head),
            show(&out),
            pout.method,
            show(pout.raw_path()),
        )
    };

    // The same request line and the same header lines.
    assert_eq!(o.method, Some(pout.method.as_str()), "method{}", ctx());
    assert_eq!(
        o.path.map(str::as_bytes),
        Some(pout.raw_path()),
        "target{}",
        ctx()
    );
    let (f, p) = (multiset(&flines), multiset(&plines));
    assert_eq!(f, p, "header lines (fast, pingora){}", ctx());
});

/// Lines as (lowercase name, value) as the upstream reads them (a value's leading and trailing
/// blanks are not part of it: `Cookie: ; ` from two empty Cookie lines arrives as `;`), sorted.
fn multiset(lines: &[(&str, &[u8])]) -> Vec<(String, Vec<u8>)> {
    let mut m: Vec<_> = lines
        .iter()
        .map(|(n, v)| (n.to_ascii_lowercase(), v.trim_ascii().to_vec()))
        .collect();
    m.sort();
    m
}

/// Lines as text, one a line.
fn text(lines: &[(&str, &[u8])]) -> String {
    lines
        .iter()
        .map(|(n, v)| format!("{n}: {}\n", show(v)))
        .collect()
}

/// What pingora's upstream request must be on its own.
#[allow(clippy::too_many_arguments)]
fn pingora_side(
    client: &[(&str, &[u8])],
    got: &[(&str, &[u8])],
    route: &Route,
    listener: Listener,
    ip: IpAddr,
    id: &[u8],
    framing: BodyFraming,
    ctx: &dyn Fn() -> String,
) {
    for name in HOP.iter().chain(&["transfer-encoding"]) {
        assert!(values(got, name).is_empty(), "`{name}` forwarded{}", ctx());
    }
    // Nothing the client's Connection names, but Host, the framing and what rproxy sets.
    for t in connection_tokens(client) {
        let Ok(name) = std::str::from_utf8(&t) else {
            continue;
        };
        if FORWARDED.contains(&name) || name == "content-length" || by_route(route, name).is_some()
        {
            continue;
        }
        assert!(
            values(got, name).is_empty(),
            "`{name}` is named by Connection{}",
            ctx()
        );
    }
    let ip = ip.to_string();
    let ours: [(&str, &[u8]); 3] = [
        ("x-forwarded-proto", listener.proto().as_bytes()),
        ("x-real-ip", ip.as_bytes()),
        ("x-request-id", id),
    ];
    for (name, value) in ours {
        let want = by_route(route, name).unwrap_or_else(|| value.to_vec());
        assert_eq!(
            values(got, name),
            [&want[..]],
            "`{name}` once, as rproxy sets it{}",
            ctx()
        );
    }
    let lengths = values(got, "content-length");
    match framing {
        BodyFraming::Length(n) => {
            assert_eq!(
                lengths,
                [n.to_string().as_bytes()],
                "Content-Length {n}{}",
                ctx()
            )
        }
        BodyFraming::None | BodyFraming::Chunked => {
            assert!(
                lengths.is_empty(),
                "a Content-Length on {framing:?}{}",
                ctx()
            )
        }
    }
}
