//! The HTTP/1.1 fast path's heads and bodies (`rproxy::fast::head`, `rproxy::fast::body`) on raw
//! bytes from clients and upstreams. Nothing may panic; a request head that `parse_request`
//! takes must be written upstream well-formed, with rproxy's forwarding headers once each, no
//! hop-by-hop or `Connection`-named line, every other client line in order and the body framed
//! as the proxy forwards it; an upstream response head must reach the client the same way, framed
//! as `ResponseHead::framing` says. `ChunkedScanner` must agree with a reference decoder and not
//! depend on how the bytes are split; `Progress` over a Content-Length never takes more than it.
//!
//! Input: byte 0 = mode and options, byte 1 = one more option byte, then the bytes under test:
//!
//! | `b0 & 3` | bytes | options |
//! | --- | --- | --- |
//! | 0 | a request head (and body) | `b0`: 4 https, 8 IPv6 client, 16 route `/api` with `strip_prefix`; `b1`: the route's headers (one bit each, `rproxy_fuzz::ROUTE_HEADERS`) |
//! | 1 | a response head (and body) | `b0`: 4 answers a HEAD, 8 keep-alive, 16 HSTS; `b1`: status and `head_only` of a local response |
//! | 2 | a chunked body | `b1`: seed of the split points |
//! | 3 | a Content-Length body | `b1`: the length (`& 0x80`: 8 bytes of the body as a little-endian u64) |
//!
//! `head_end`, `parse_request` and `parse_response` run on the bytes in every mode.
//! `fuzz/regressions/fast_heads/` holds the minimized inputs of past findings (fuzz/README.md).
#![no_main]

use std::net::IpAddr;

use httparse::Status;
use libfuzzer_sys::fuzz_target;
use rproxy::fast::body::{ChunkedScanner, Framing, Progress};
use rproxy::fast::head::{
    head_end, parse_request, parse_response, storage, write_client_response,
    write_local_response, write_upstream_request, Added, Client, Parsed, MAX_HEADERS,
};
use rproxy_fuzz::{connection_tokens, decimal, show, values, FORWARDED, HOP};

const GENERATED_ID: &[u8] = b"0123456789abcdef0123456789abcdef";
const DATE: &[u8] = b"Sun, 22 Nov 2026 08:00:00 GMT";
const HSTS: &str = "max-age=31536000";
const LOCAL_STATUS: &[u16] = &[400, 404, 413, 429, 500, 502, 503, 504];

fuzz_target!(|data: &[u8]| {
    let [flags, opt, raw @ ..] = data else {
        return;
    };
    heads_never_panic(raw);
    match flags & 3 {
        0 => request(*flags, *opt, raw),
        1 => response(*flags, *opt, raw),
        2 => chunked(*opt, raw),
        _ => length(*opt, raw),
    }
});

/// `head_end`, and the two parsers on the same bytes: where `head_end` says a head ends, a parser
/// is no longer waiting for bytes, and a complete head ends there (unless the bytes start with
/// empty lines, which httparse skips and `head_end` does not).
fn heads_never_panic(raw: &[u8]) {
    let end = head_end(raw);
    let model = (0..raw.len()).find_map(|at| {
        if raw[at] != b'\n' {
            None
        } else if raw.get(at + 1) == Some(&b'\n') {
            Some(at + 2)
        } else if raw.get(at + 1..at + 3) == Some(b"\r\n") {
            Some(at + 3)
        } else {
            None
        }
    });
    assert_eq!(end, model, "head_end");
    let leading_empty = matches!(raw.first(), Some(b'\r' | b'\n'));
    let mut st = storage();
    let req_len = match parse_request(raw, &mut st) {
        Parsed::Complete(req) => Some(req.len),
        Parsed::Partial => {
            assert!(end.is_none() || leading_empty, "head_end {end:?} but Partial");
            None
        }
        Parsed::Elsewhere(why) => {
            assert!(!why.is_empty());
            None
        }
    };
    let mut st = storage();
    let resp_len = match parse_response(raw, &mut st) {
        Ok(Some(resp)) => Some(resp.len),
        Ok(None) => {
            assert!(end.is_none() || leading_empty, "head_end {end:?} but partial");
            None
        }
        Err(_) => None,
    };
    if !leading_empty {
        for len in [req_len, resp_len].into_iter().flatten() {
            assert_eq!(end, Some(len), "head_end against the parsed length");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Requests

fn request(flags: u8, opt: u8, raw: &[u8]) {
    let mut st = storage();
    let Parsed::Complete(req) = parse_request(raw, &mut st) else {
        return;
    };
    // The client's head, parsed again on its own.
    let mut hb = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut h = httparse::Request::new(&mut hb);
    let Ok(Status::Complete(len)) = h.parse(raw) else {
        panic!("parse_request took a head httparse does not");
    };
    let (method, target) = (h.method.unwrap(), h.path.unwrap());
    let lines: Vec<(&str, &[u8])> = h.headers.iter().map(|h| (h.name, h.value)).collect();
    assert_eq!(h.version, Some(1));
    assert_eq!((req.len, req.method, req.target), (len, method, target));
    assert!(target.starts_with('/'));
    assert_eq!(req.path(), target.split('?').next().unwrap());
    let hosts: Vec<&[u8]> = values(&lines, "host");
    assert_eq!(hosts.len(), 1, "one Host");
    assert_eq!(req.host.as_bytes(), hosts[0]);
    assert!(!req.host.is_empty());
    for refused in ["transfer-encoding", "expect", "upgrade"] {
        assert!(values(&lines, refused).is_empty(), "{refused} taken");
    }
    let lengths: Vec<&[u8]> = values(&lines, "content-length")
        .into_iter()
        .flat_map(|v| v.split(|&b| b == b','))
        .map(<[u8]>::trim_ascii)
        .collect();
    assert_eq!(req.has_length, !lengths.is_empty());
    match lengths.first() {
        None => assert_eq!(req.content_length, 0),
        Some(first) => {
            assert!(lengths.iter().all(|l| l == first), "conflicting lengths taken");
            assert_eq!(Some(req.content_length), decimal(first));
        }
    }
    let tokens = connection_tokens(&lines);
    assert_eq!(req.close, tokens.iter().any(|t| t == b"close"));
    if let Some(id) = req.request_id {
        assert!(values(&lines, "x-request-id").contains(&id));
    }

    // The route, the client, and the head they make.
    let api = flags & 16 != 0;
    let route = rproxy_fuzz::route(api, opt);
    if api && !route.matches(req.path()) {
        return;
    }
    let upstream_target = route.upstream_path(req.target);
    let ip: IpAddr = if flags & 8 != 0 {
        "2001:db8::7".parse().unwrap()
    } else {
        "192.0.2.7".parse().unwrap()
    };
    let proto = if flags & 4 != 0 { "https" } else { "http" };
    let id = match req.request_id {
        Some(id) if !id.is_empty() && id.len() <= 128 && id.iter().all(u8::is_ascii_graphic) => id,
        _ => GENERATED_ID,
    };
    let client = Client {
        ip,
        proto,
        request_id: id,
    };
    let mut out = Vec::new();
    write_upstream_request(&mut out, &req, &upstream_target, &client, &route);

    // It parses whole, as the same request.
    let mut ob = [httparse::EMPTY_HEADER; MAX_HEADERS + 32];
    let mut o = httparse::Request::new(&mut ob);
    match o.parse(&out) {
        Ok(Status::Complete(n)) => assert_eq!(n, out.len(), "bytes after the head"),
        other => panic!("upstream head does not parse: {other:?}\n{}", show(&out)),
    }
    assert_eq!(o.method, Some(method));
    assert_eq!(o.path, Some(&*upstream_target));
    assert_eq!(o.version, Some(1));
    let got: Vec<(&str, &[u8])> = o.headers.iter().map(|h| (h.name, h.value)).collect();
    let ctx = || format!("\nclient:\n{}\nupstream:\n{}", show(raw), show(&out));

    let by_route = |name: &str| rproxy_fuzz::by_route(&route, name);
    // rproxy's forwarding headers, exactly once, with the route's value where it sets one.
    let ip_text = ip.to_string();
    let mut xff: Vec<&[u8]> = values(&lines, "x-forwarded-for")
        .into_iter()
        .map(<[u8]>::trim_ascii)
        .filter(|v| !v.is_empty())
        .collect();
    xff.push(ip_text.as_bytes());
    let ours: [(&str, Vec<u8>); 6] = [
        ("host", req.host.as_bytes().to_vec()),
        ("x-forwarded-for", xff.join(&b", "[..])),
        ("x-real-ip", ip_text.as_bytes().to_vec()),
        ("x-forwarded-proto", proto.as_bytes().to_vec()),
        ("x-forwarded-host", req.host.as_bytes().to_vec()),
        ("x-request-id", id.to_vec()),
    ];
    for (name, value) in &ours {
        let want = by_route(name).unwrap_or_else(|| value.clone());
        let have = values(&got, name);
        assert_eq!(have, [&want[..]], "`{name}` once, as rproxy sets it{}", ctx());
    }
    // Cookie lines become one (RFC 9113 8.2.3 for HTTP/2 clients), unless the route sets it.
    let cookies = values(&lines, "cookie");
    let cookie = by_route("cookie").or_else(|| (!cookies.is_empty()).then(|| cookies.join(&b"; "[..])));
    let cookie_named = tokens.iter().any(|t| t == b"cookie") && by_route("cookie").is_none();
    // (Empty Cookie lines leave empty crumbs, `; a=1; `, which a parser trims at the ends.)
    let want: Vec<&[u8]> = cookie.iter().map(|c| c.trim_ascii()).collect();
    let want = if cookie_named { Vec::new() } else { want };
    assert_eq!(values(&got, "cookie"), want, "cookie{}", ctx());
    // Every other route header once, with its value.
    for (n, v) in &route.headers {
        assert_eq!(values(&got, n.as_str()), [v.as_bytes()], "route's {n}{}", ctx());
    }
    // Nothing hop-by-hop, nor anything the client's Connection names (but what rproxy sets).
    for name in HOP.iter().chain(&["transfer-encoding"]) {
        assert!(values(&got, name).is_empty(), "`{name}` forwarded{}", ctx());
    }
    for t in &tokens {
        let Ok(name) = std::str::from_utf8(t) else {
            continue;
        };
        let set = FORWARDED.contains(&name) || by_route(name).is_some();
        // `close` and `keep-alive` are options, not names; a Content-Length is checked as framing.
        if set || ["close", "keep-alive", "content-length", "cookie"].contains(&name) {
            continue;
        }
        assert!(values(&got, name).is_empty(), "`{name}` is named by Connection{}", ctx());
    }
    // The upstream frames the body as rproxy forwards it: req.content_length bytes.
    check_length(&got, req.has_length.then_some(req.content_length), &ctx);
    // Every other client line, in order, untouched.
    let other = |name: &str| {
        let l = name.to_ascii_lowercase();
        !(HOP.contains(&l.as_str())
            || FORWARDED.contains(&l.as_str())
            || ["cookie", "close", "content-length"].contains(&l.as_str())
            || tokens.iter().any(|t| t == l.as_bytes())
            || by_route(&l).is_some())
    };
    let sent: Vec<_> = lines.iter().filter(|(n, _)| other(n)).collect();
    let kept: Vec<_> = got.iter().filter(|(n, _)| other(n)).collect();
    assert_eq!(sent, kept, "the client's other lines{}", ctx());
}

// ---------------------------------------------------------------------------------------------
// Responses

fn response(flags: u8, opt: u8, raw: &[u8]) {
    local_response(opt);
    let mut st = storage();
    let Ok(Some(resp)) = parse_response(raw, &mut st) else {
        return;
    };
    let mut hb = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut h = httparse::Response::new(&mut hb);
    let Ok(Status::Complete(len)) = h.parse(raw) else {
        panic!("parse_response took a head httparse does not");
    };
    let lines: Vec<(&str, &[u8])> = h.headers.iter().map(|h| (h.name, h.value)).collect();
    let (code, version) = (h.code.unwrap(), h.version.unwrap());
    assert_eq!((resp.len, resp.code, resp.reason), (len, code, h.reason.unwrap_or("")));

    // RFC 9112 6.3, and 9.3 for keep-alive.
    let head_request = flags & 4 != 0;
    let framing = resp.framing(head_request);
    let te = values(&lines, "transfer-encoding");
    let lengths: Vec<Option<u64>> = values(&lines, "content-length")
        .into_iter()
        .flat_map(|v| v.split(|&b| b == b','))
        .map(|t| decimal(t.trim_ascii()))
        .collect();
    let model = if head_request || code < 200 || code == 204 || code == 304 {
        Framing::None
    } else if let Some(last) = te.last() {
        let coding = last.rsplit(|&b| b == b',').next().unwrap().trim_ascii();
        if coding.eq_ignore_ascii_case(b"chunked") {
            Framing::Chunked
        } else {
            Framing::UntilClose
        }
    } else {
        match lengths.first() {
            None => Framing::UntilClose,
            Some(first) => {
                assert!(first.is_some() && lengths.iter().all(|l| l == first));
                match first.unwrap() {
                    0 => Framing::None,
                    n => Framing::Length(n),
                }
            }
        }
    };
    assert_eq!(framing, model, "framing");
    let tokens = connection_tokens(&lines);
    let close_token = tokens.iter().any(|t| t == b"close");
    let keep_token = tokens.iter().any(|t| t == b"keep-alive");
    let close = close_token || (version == 0 && !(keep_token && te.is_empty()));
    // (RFC 9112 9.3: `close` wins over an HTTP/1.0 `keep-alive`.)
    assert_eq!(resp.close, close, "close");

    // RFC 9110 15: a status outside 100..599 is invalid and SHOULD be taken as a 5xx; 600-999
    // pass as they are, but one below 100 would be skipped as interim (as 1xx are) or mangled:
    // `parse_response` refuses it (a 502).
    assert!(code >= 100, "status {code:03} taken");
    // What the exchange writes back: not interim responses, and a 101 is refused.
    if code < 200 {
        return;
    }
    let hsts = (flags & 16 != 0).then_some(HSTS);
    let keep_alive = flags & 8 != 0 && framing != Framing::UntilClose;
    let added = Added {
        keep_alive,
        request_id: b"id-1",
        hsts,
        date: DATE,
    };
    let mut out = Vec::new();
    write_client_response(&mut out, &resp, &added);

    let mut ob = [httparse::EMPTY_HEADER; MAX_HEADERS + 8];
    let mut o = httparse::Response::new(&mut ob);
    match o.parse(&out) {
        Ok(Status::Complete(n)) => assert_eq!(n, out.len(), "bytes after the head"),
        other => panic!("client head does not parse: {other:?}\n{}", show(&out)),
    }
    assert_eq!((o.version, o.code), (Some(1), Some(code)));
    assert_eq!(o.reason, Some(resp.reason));
    let got: Vec<(&str, &[u8])> = o.headers.iter().map(|h| (h.name, h.value)).collect();
    let ctx = || format!("\nupstream:\n{}\nclient:\n{}", show(raw), show(&out));

    let connection: &[u8] = if keep_alive { b"keep-alive" } else { b"close" };
    let mut set: Vec<(&str, &[u8])> = vec![
        ("date", DATE),
        ("connection", connection),
        ("x-request-id", b"id-1"),
    ];
    if let Some(v) = hsts {
        set.push(("strict-transport-security", v.as_bytes()));
    }
    for (name, value) in &set {
        assert_eq!(values(&got, name), [*value], "`{name}` once, as rproxy sets it{}", ctx());
    }
    for name in HOP.iter().filter(|n| **n != "connection") {
        assert!(values(&got, name).is_empty(), "`{name}` passed on{}", ctx());
    }
    for t in &tokens {
        let Ok(name) = std::str::from_utf8(t) else {
            continue;
        };
        // Framing headers are checked as framing below.
        if set.iter().any(|(n, _)| *n == name)
            || ["close", "keep-alive", "content-length", "transfer-encoding"].contains(&name)
        {
            continue;
        }
        assert!(values(&got, name).is_empty(), "`{name}` is named by Connection{}", ctx());
    }
    // The client frames the body as rproxy relays it.
    let got_te = values(&got, "transfer-encoding");
    match framing {
        Framing::Chunked => {
            assert!(values(&got, "content-length").is_empty(), "length beside chunked{}", ctx());
            let last = got_te.last().map(|v| v.rsplit(|&b| b == b',').next().unwrap());
            assert!(
                last.is_some_and(|c| c.trim_ascii().eq_ignore_ascii_case(b"chunked")),
                "chunked body without chunked coding{}",
                ctx()
            );
        }
        Framing::Length(n) => {
            assert!(got_te.is_empty(), "Transfer-Encoding beside a length{}", ctx());
            check_length(&got, Some(n), &ctx);
        }
        Framing::UntilClose => {
            assert!(values(&got, "content-length").is_empty(), "length on a close-delimited body{}", ctx());
            assert!(!keep_alive);
        }
        Framing::None => {}
    }
    // Every other upstream line, in order, untouched.
    let other = |name: &str| {
        let l = name.to_ascii_lowercase();
        !(HOP.contains(&l.as_str())
            || set.iter().any(|(n, _)| *n == l)
            || ["close", "content-length"].contains(&l.as_str())
            || tokens.iter().any(|t| t == l.as_bytes()))
    };
    let sent: Vec<_> = lines.iter().filter(|(n, _)| other(n)).collect();
    let kept: Vec<_> = got.iter().filter(|(n, _)| other(n)).collect();
    assert_eq!(sent, kept, "the upstream's other lines{}", ctx());

    // The body that came with the head, through the framing: never more than a length.
    let mut progress = Progress::new(framing);
    let body = &raw[len..];
    if let Ok(used) = progress.feed(body) {
        assert!(used <= body.len());
        match framing {
            Framing::None => assert_eq!(used, 0),
            Framing::Length(n) => assert_eq!(used as u64, n.min(body.len() as u64)),
            Framing::UntilClose => assert_eq!(used, body.len()),
            Framing::Chunked => {}
        }
    }
}

/// A response rproxy makes itself parses, with its body's length.
fn local_response(opt: u8) {
    let status = LOCAL_STATUS[usize::from(opt & 7)];
    let head_only = opt & 8 != 0;
    let added = Added {
        keep_alive: opt & 16 != 0,
        request_id: b"id-2",
        hsts: None,
        date: DATE,
    };
    let extra = [("retry-after", "1")];
    let extra = if opt & 32 != 0 { &extra[..] } else { &[] };
    let mut out = Vec::new();
    write_local_response(&mut out, status, extra, &added, head_only);
    let mut ob = [httparse::EMPTY_HEADER; 16];
    let mut o = httparse::Response::new(&mut ob);
    let Ok(Status::Complete(n)) = o.parse(&out) else {
        panic!("local response does not parse\n{}", show(&out));
    };
    assert_eq!(o.code, Some(status));
    let got: Vec<(&str, &[u8])> = o.headers.iter().map(|h| (h.name, h.value)).collect();
    let length = decimal(values(&got, "content-length")[0]).unwrap();
    assert_eq!(out.len() - n, if head_only { 0 } else { length as usize });
    for name in ["date", "connection", "x-request-id"] {
        assert_eq!(values(&got, name).len(), 1);
    }
}

// ---------------------------------------------------------------------------------------------
// Bodies

/// What a chunked body decodes to, per RFC 9112 7.1.
#[derive(Debug, PartialEq, Eq)]
enum Decoded {
    /// The body ends after `end` bytes.
    Complete { end: usize, data: Vec<u8> },
    /// A valid start; `data` is the content so far.
    Incomplete { data: Vec<u8> },
    Invalid,
}

fn chunked(seed: u8, body: &[u8]) {
    // At once.
    let mut whole = ChunkedScanner::default();
    let mut data = Vec::new();
    let at_once = whole.feed_data(body, |d| data.extend_from_slice(d));
    let done = whole.is_done();
    if let Ok(n) = at_once {
        assert!(n <= body.len());
        assert!(done || n == body.len(), "stopped early without being done");
    }
    // `feed` and `Progress` say the same.
    assert_eq!(ChunkedScanner::default().feed(body), at_once);
    let mut p = Progress::new(Framing::Chunked);
    let mut pdata = Vec::new();
    assert_eq!(p.feed_data(body, |d| pdata.extend_from_slice(d)), at_once);
    assert_eq!((p.is_done(), &pdata), (done, &data));

    // In pieces: from the seed, and byte by byte.
    for mode in [Some(seed), None] {
        let mut s = ChunkedScanner::default();
        let mut pieces_data = Vec::new();
        let mut used = 0;
        let mut failed = false;
        let mut rng = u32::from(seed).wrapping_mul(0x9e37_79b9) | 1;
        let mut at = 0;
        while at < body.len() && !s.is_done() {
            let len = match mode {
                Some(seed) => {
                    rng ^= rng << 13;
                    rng ^= rng >> 17;
                    rng ^= rng << 5;
                    (rng % (u32::from(seed & 0x1f) + 2)) as usize
                }
                None => 1,
            };
            let piece = &body[at..(at + len).min(body.len())];
            match s.feed_data(piece, |d| pieces_data.extend_from_slice(d)) {
                Ok(n) => {
                    assert!(n <= piece.len());
                    assert!(s.is_done() || n == piece.len());
                    used += n;
                }
                Err(_) => {
                    failed = true;
                    break;
                }
            }
            at += piece.len();
        }
        assert_eq!(failed, at_once.is_err(), "split feeding changes the outcome");
        if let Ok(n) = at_once {
            assert_eq!((used, s.is_done()), (n, done), "split feeding");
            assert_eq!(pieces_data, data, "split feeding hands over other data");
        }
    }

    // Against the reference decoders.
    let lenient = decode(body, false);
    let strict = decode(body, true);
    if strict != Decoded::Invalid {
        assert_eq!(lenient, strict, "the lenient reference rejects a valid body");
    }
    match lenient {
        Decoded::Complete { end, data: want } => {
            assert_eq!(at_once, Ok(end), "where the body ends");
            assert!(done);
            assert_eq!(data, want, "content");
        }
        Decoded::Incomplete { data: want } => {
            assert_eq!(at_once, Ok(body.len()), "an unfinished body");
            assert!(!done);
            assert_eq!(data.len(), want.len(), "content so far");
            assert_eq!(data, want, "content so far");
        }
        Decoded::Invalid => assert!(at_once.is_err(), "a malformed body accepted"),
    }
}

/// A chunked body decoder written from RFC 9112 7.1. `strict`: extensions and trailer lines
/// follow the grammar; otherwise (what `ChunkedScanner` accepts, as most proxies do) an extension
/// starts at `;`, SP or HTAB after the size and runs to CR, and a trailer line is any non-empty
/// run of bytes other than CR and LF. Both cap a chunk size at 15 hex digits, as rproxy does.
fn decode(b: &[u8], strict: bool) -> Decoded {
    let mut c = Cursor { b, i: 0 };
    let mut data = Vec::new();
    match c.body(strict, &mut data) {
        Ok(()) => Decoded::Complete { end: c.i, data },
        Err(Stop::Incomplete) => Decoded::Incomplete { data },
        Err(Stop::Invalid) => Decoded::Invalid,
    }
}

enum Stop {
    Incomplete,
    Invalid,
}

struct Cursor<'a> {
    b: &'a [u8],
    i: usize,
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

impl Cursor<'_> {
    fn peek(&self) -> Result<u8, Stop> {
        self.b.get(self.i).copied().ok_or(Stop::Incomplete)
    }

    fn eat(&mut self, want: u8) -> Result<(), Stop> {
        if self.peek()? != want {
            return Err(Stop::Invalid);
        }
        self.i += 1;
        Ok(())
    }

    fn crlf(&mut self) -> Result<(), Stop> {
        self.eat(b'\r')?;
        self.eat(b'\n')
    }

    /// `*( SP / HTAB )`; true when there was any.
    fn bws(&mut self) -> Result<bool, Stop> {
        let from = self.i;
        while matches!(self.peek()?, b' ' | b'\t') {
            self.i += 1;
        }
        Ok(self.i > from)
    }

    /// `1*tchar`.
    fn token(&mut self) -> Result<(), Stop> {
        let from = self.i;
        while is_tchar(self.peek()?) {
            self.i += 1;
        }
        if self.i == from {
            return Err(Stop::Invalid);
        }
        Ok(())
    }

    fn quoted(&mut self) -> Result<(), Stop> {
        self.eat(b'"')?;
        loop {
            match self.peek()? {
                b'"' => {
                    self.i += 1;
                    return Ok(());
                }
                b'\\' => {
                    self.i += 1;
                    match self.peek()? {
                        b'\t' | b' '..=b'~' | 0x80.. => self.i += 1,
                        _ => return Err(Stop::Invalid),
                    }
                }
                b'\t' | b' ' | b'!' | 0x23..=0x5b | 0x5d..=0x7e | 0x80.. => self.i += 1,
                _ => return Err(Stop::Invalid),
            }
        }
    }

    fn body(&mut self, strict: bool, data: &mut Vec<u8>) -> Result<(), Stop> {
        loop {
            // chunk-size
            let mut size: u64 = 0;
            let mut digits = 0;
            while let Some(d) = (self.peek()? as char).to_digit(16) {
                if digits == 15 {
                    return Err(Stop::Invalid);
                }
                digits += 1;
                size = size * 16 + u64::from(d);
                self.i += 1;
            }
            if digits == 0 {
                return Err(Stop::Invalid);
            }
            // [ chunk-ext ] CRLF
            if strict {
                loop {
                    // BWS ";" BWS ext-name [ BWS "=" BWS ext-val ], or the CRLF.
                    let ws = self.bws()?;
                    match self.peek()? {
                        b';' => self.i += 1,
                        b'\r' if !ws => break,
                        _ => return Err(Stop::Invalid),
                    }
                    self.bws()?;
                    self.token()?;
                    let back = self.i;
                    self.bws()?;
                    if self.peek()? == b'=' {
                        self.i += 1;
                        self.bws()?;
                        if self.peek()? == b'"' {
                            self.quoted()?;
                        } else {
                            self.token()?;
                        }
                    } else {
                        self.i = back;
                    }
                }
            } else if matches!(self.peek()?, b';' | b' ' | b'\t') {
                while !matches!(self.peek()?, b'\r' | b'\n') {
                    self.i += 1;
                }
            }
            self.crlf()?;
            if size == 0 {
                break;
            }
            // chunk-data CRLF
            let left = (self.b.len() - self.i) as u64;
            if left < size {
                data.extend_from_slice(&self.b[self.i..]);
                self.i = self.b.len();
                return Err(Stop::Incomplete);
            }
            let end = self.i + size as usize;
            data.extend_from_slice(&self.b[self.i..end]);
            self.i = end;
            self.crlf()?;
        }
        // trailer-section CRLF
        loop {
            if self.peek()? == b'\r' {
                return self.crlf();
            }
            if strict {
                // field-name ":" OWS field-value OWS
                self.token()?;
                self.eat(b':')?;
                while matches!(self.peek()?, b'\t' | b' '..=b'~' | 0x80..) {
                    self.i += 1;
                }
            } else {
                while !matches!(self.peek()?, b'\r' | b'\n') {
                    self.i += 1;
                }
            }
            self.crlf()?;
        }
    }
}

/// `Progress` over a Content-Length body (and the other framings) fed in pieces.
fn length(opt: u8, body: &[u8]) {
    let n = if opt & 0x80 != 0 {
        let mut le = [0u8; 8];
        let k = body.len().min(8);
        le[..k].copy_from_slice(&body[..k]);
        u64::from_le_bytes(le)
    } else {
        u64::from(opt)
    };
    let mut p = Progress::new(Framing::Length(n));
    let mut used: u64 = 0;
    let mut rng = u32::from(opt).wrapping_mul(0x9e37_79b9) | 1;
    let mut at = 0;
    while at < body.len() {
        rng ^= rng << 13;
        rng ^= rng >> 17;
        rng ^= rng << 5;
        let len = (rng % 9) as usize;
        let piece = &body[at..(at + len).min(body.len())];
        let mut handed = Vec::new();
        let got = p.feed_data(piece, |d| handed.extend_from_slice(d)).unwrap();
        let want = (n - used).min(piece.len() as u64) as usize;
        assert_eq!(got, want, "Length({n}) after {used} bytes, given {}", piece.len());
        assert_eq!(handed, &piece[..got]);
        used += got as u64;
        assert!(used <= n);
        assert_eq!(p.is_done(), used == n);
        at += piece.len();
    }
    assert_eq!(p.is_done(), used == n);
    let mut none = Progress::new(Framing::None);
    assert_eq!(none.feed(body).unwrap(), 0);
    assert!(none.is_done());
    let mut close = Progress::new(Framing::UntilClose);
    assert_eq!(close.feed(body).unwrap(), body.len());
    assert!(!close.is_done());
}

// ---------------------------------------------------------------------------------------------

/// The head says the body is `n` bytes: one Content-Length line with one value, `n`; or, with
/// no length (`None`), no Content-Length at all.
fn check_length(got: &[(&str, &[u8])], n: Option<u64>, ctx: &dyn Fn() -> String) {
    let lines = values(got, "content-length");
    let framed = match n {
        None => lines.is_empty(),
        Some(n) => lines.len() == 1 && decimal(lines[0]) == Some(n),
    };
    assert!(
        framed,
        "body of {n:?} bytes framed as Content-Length {:?}{}",
        lines.iter().map(|v| String::from_utf8_lossy(v)).collect::<Vec<_>>(),
        ctx()
    );
}
