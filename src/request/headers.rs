//! Which headers cross the proxy, both ways, and what rproxy adds: the one rule for the request
//! an upstream gets (hop-by-hop and `Connection`-named headers dropped, never Host or the
//! framing; one normalised Content-Length; X-Forwarded-*, X-Real-IP, X-Request-Id; the route's
//! headers) and for the response a client gets (hop-by-hop dropped; Date, X-Request-Id and HSTS
//! ours). Engines feed the lines in (`Lines`) and write what comes out (`HeaderSink`).

pub use super::client::ClientAddr;
pub use super::lines::{
    connection_tokens, kind, parse_length, Digits, HeaderSink, IpText, Kind, Kinded, Lines,
};
use super::Listener;
use crate::routing::Route;
use crate::upstream::Pool;

/// The `Strict-Transport-Security` value of routes with `hsts: true`.
pub const HSTS: &str = "max-age=31536000";

/// The HSTS header a response on `listener` for `route` carries, if any (https only).
pub fn hsts(listener: Listener, route: &Route) -> Option<&'static str> {
    (listener == Listener::Https && route.hsts).then_some(HSTS)
}

/// The Host header, or the :authority of an HTTP/2 request.
pub fn request_host(req: &pingora_http::RequestHeader) -> &str {
    req.headers
        .get(http::header::HOST)
        .and_then(|v| host_text(v.as_bytes()))
        .or_else(|| req.uri.authority().map(|a| a.as_str()))
        .unwrap_or("")
}

/// A Host value as text: visible ASCII, spaces and tabs only (what `HeaderValue::to_str`
/// takes); anything else is no host at all, for routing and for `X-Forwarded-Host` alike.
pub fn host_text(value: &[u8]) -> Option<&str> {
    let text = value
        .iter()
        .all(|&b| b == b'\t' || (b' '..=b'~').contains(&b));
    text.then(|| std::str::from_utf8(value).ok()).flatten()
}

/// A Content-Length that cannot be read one way only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("malformed or conflicting Content-Length")]
pub struct BadLength;

/// The Content-Length of a message: every line and list element must agree (`3, 3` is 3).
pub fn content_length<L: Lines + ?Sized>(lines: &L) -> Result<Option<u64>, BadLength> {
    let mut length = None;
    let mut bad = false;
    lines.each(|k, _, value| {
        if bad || k != Kind::ContentLength {
            return;
        }
        for token in value.split(|&b| b == b',').map(<[u8]>::trim_ascii) {
            match parse_length(token) {
                Some(n) if length.is_none_or(|l| l == n) => length = Some(n),
                _ => bad = true,
            }
        }
    });
    if bad {
        Err(BadLength)
    } else {
        Ok(length)
    }
}

/// Is this a WebSocket handshake (an `Upgrade` naming `websocket`)? Other upgrades (`h2c`) are
/// not carried: their `Upgrade` is hop-by-hop like any other.
pub fn is_websocket_upgrade<L: Lines + ?Sized>(lines: &L) -> bool {
    let mut websocket = false;
    lines.each(|k, _, value| {
        websocket |= k == Kind::Upgrade
            && connection_tokens(value).any(|t| t.eq_ignore_ascii_case(b"websocket"));
    });
    websocket
}

/// Does the client accept trailers (`TE: trailers`)? TE is hop-by-hop and never forwarded as
/// it came; an engine speaking HTTP/2 to the upstream sends `te: trailers` again when this
/// holds (the one TE value HTTP/2 allows, RFC 9113 8.2.2), which gRPC servers require.
pub fn wants_trailers<L: Lines + ?Sized>(lines: &L) -> bool {
    let mut wants = false;
    lines.each(|_, name, value| {
        wants |= name.eq_ignore_ascii_case("te")
            && connection_tokens(value).any(|t| t.eq_ignore_ascii_case(b"trailers"));
    });
    wants
}

/// Does the client wait for `100 Continue` before it sends its body? rproxy answers that
/// itself once the request is admitted (its declared length within `max_body`), and never
/// forwards the `Expect` header: the body is counted against the limit as it comes.
pub fn expects_continue<L: Lines + ?Sized>(lines: &L) -> bool {
    let mut expects = false;
    lines.each(|k, _, value| {
        expects |= k == Kind::Expect && value.trim_ascii().eq_ignore_ascii_case(b"100-continue");
    });
    expects
}

/// Does a `Connection` header of `lines` name headers other than `close` and `keep-alive`?
pub fn connection_names_others<L: Lines + ?Sized>(lines: &L) -> bool {
    let mut named = false;
    lines.each(|k, _, value| {
        if !named && k == Kind::Connection {
            named = connection_tokens(value).any(|t| {
                !t.eq_ignore_ascii_case(b"close") && !t.eq_ignore_ascii_case(b"keep-alive")
            });
        }
    });
    named
}

/// Is `target` one of the tokens of a `Connection` header of `lines`?
pub fn named_in_connection<L: Lines + ?Sized>(lines: &L, target: &str) -> bool {
    let mut found = false;
    lines.each(|k, _, value| {
        if !found && k == Kind::Connection {
            found = connection_tokens(value).any(|t| t.eq_ignore_ascii_case(target.as_bytes()));
        }
    });
    found
}

/// Does `route` set a header named `name` (which then replaces the client's and rproxy's)?
pub fn set_by_route(route: &Route, name: &str) -> bool {
    route
        .headers
        .iter()
        .any(|(n, _)| n.as_str().eq_ignore_ascii_case(name))
}

/// What the forwarded request says about its client and body.
#[derive(Debug, Clone, Copy)]
pub struct Forwarding<'a> {
    /// The client and the connection's peer (`client::client_of`).
    pub client: Option<ClientAddr>,
    /// `http` or `https`.
    pub proto: &'static str,
    /// The Host (or :authority) the client sent, port included.
    pub host: &'a [u8],
    pub request_id: &'a [u8],
    /// The body's declared length, forwarded as one normalised value. (A body without one is
    /// framed by the engine that sends it.)
    pub content_length: Option<u64>,
    /// Whether this is a WebSocket handshake, and from which HTTP version.
    pub upgrade: Upgrade<'a>,
}

/// The WebSocket handshake a forwarded request is, if any.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Upgrade<'a> {
    /// None: `Upgrade` is hop-by-hop like any other header.
    No,
    /// An HTTP/1.1 handshake: the client's `Upgrade` goes along, with `Connection: upgrade`.
    Client,
    /// An HTTP/2 extended CONNECT (RFC 8441) made an HTTP/1.1 handshake: `Upgrade: websocket`,
    /// `Connection: upgrade`, `Sec-WebSocket-Version: 13` and this fresh `Sec-WebSocket-Key`
    /// replace whatever of these the client sent.
    FromH2 { key: &'a [u8] },
}

/// The handshake lines of an HTTP/1.1 handshake made from an HTTP/2 one, which the client's own
/// lines of these names never replace.
fn is_h1_handshake_line(name: &str) -> bool {
    name.eq_ignore_ascii_case("sec-websocket-key")
        || name.eq_ignore_ascii_case("sec-websocket-version")
}

/// Writes the header lines of the request the upstream gets: the client's headers minus
/// hop-by-hop ones (and those its `Connection` names, never Host or the framing), a Host when the
/// client sent only `:authority`, one normalised Content-Length, the Cookie lines joined in one
/// (RFC 9113 8.2.3), the client's X-Forwarded-For lines joined and the client's address appended,
/// X-Real-IP, X-Forwarded-Proto, X-Forwarded-Host and X-Request-Id, then the route's headers,
/// which replace any of these of the same name.
pub fn forward_request<L: Lines + ?Sized, S: HeaderSink>(
    lines: &L,
    f: &Forwarding,
    route: &Route,
    out: &mut S,
) {
    let ours = |name: &str| route.headers.is_empty() || !set_by_route(route, name);
    let named = connection_names_others(lines);
    let mut xff: Vec<&[u8]> = Vec::new();
    let mut cookies: Vec<&[u8]> = Vec::new();
    let mut has_host = false;
    let mut upgrade: Option<&[u8]> = None;
    let from_h2 = matches!(f.upgrade, Upgrade::FromH2 { .. });
    lines.each(|k, name, value| {
        let client_upgrade = f.upgrade == Upgrade::Client;
        let exempt = matches!(k, Kind::Host | Kind::ContentLength | Kind::TransferEncoding)
            || (k == Kind::Upgrade && client_upgrade);
        if named && !exempt && named_in_connection(lines, name) {
            return;
        }
        match k {
            Kind::Upgrade if client_upgrade => upgrade = Some(value),
            Kind::Other if from_h2 && is_h1_handshake_line(name) => {}
            // `Expect: 100-continue` is rproxy's to answer (`expects_continue`), not the app's.
            Kind::Hop
            | Kind::Connection
            | Kind::Upgrade
            | Kind::Expect
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
                out.header(name.as_bytes(), value);
            }
            _ => out.header(name.as_bytes(), value),
        }
    });
    if !has_host && !f.host.is_empty() && ours("host") {
        out.header(b"host", f.host);
    }
    if let Some(n) = f.content_length {
        let mut digits = Digits::default();
        out.header(b"content-length", digits.of(n));
    }
    if !cookies.is_empty() && ours("cookie") {
        out.joined(b"cookie", &cookies, b"; ");
    }
    let peer = f.client.map(|c| IpText::new(c.peer));
    if ours("x-forwarded-for") {
        if let Some(peer) = &peer {
            xff.push(peer.as_bytes());
        }
        if !xff.is_empty() {
            out.joined(b"x-forwarded-for", &xff, b", ");
        }
    }
    if let Some(c) = f.client.filter(|_| ours("x-real-ip")) {
        out.header(b"x-real-ip", IpText::new(c.ip).as_bytes());
    }
    let host = (!f.host.is_empty()).then_some(f.host);
    let added = [
        ("x-forwarded-proto", Some(f.proto.as_bytes())),
        ("x-forwarded-host", host),
        ("x-request-id", Some(f.request_id)),
    ];
    for (name, value) in added {
        if let Some(value) = value.filter(|_| ours(name)) {
            out.header(name.as_bytes(), value);
        }
    }
    for (name, value) in &route.headers {
        out.header(name.as_str().as_bytes(), value.as_bytes());
    }
    if let Some(upgrade) = upgrade {
        out.header(b"upgrade", upgrade);
        out.header(b"connection", b"upgrade");
    }
    if let Upgrade::FromH2 { key } = f.upgrade {
        out.header(b"upgrade", b"websocket");
        out.header(b"connection", b"upgrade");
        out.header(b"sec-websocket-version", b"13");
        out.header(b"sec-websocket-key", key);
    }
}

/// The value of the cookie `name` in the request's Cookie lines.
pub fn cookie<'a, L: Lines + ?Sized>(lines: &'a L, name: &str) -> Option<&'a [u8]> {
    let mut found = None;
    lines.each(|k, _, value| {
        if k == Kind::Cookie && found.is_none() {
            found = value.split(|&b| b == b';').find_map(|pair| {
                let at = pair.iter().position(|&b| b == b'=')?;
                let (n, v) = (pair[..at].trim_ascii(), pair[at + 1..].trim_ascii());
                (n == name.as_bytes()).then_some(v)
            });
        }
    });
    found
}

/// The value of `pool`'s sticky cookie in the request, when the pool is sticky.
pub fn sticky_value<'a, L: Lines + ?Sized>(lines: &'a L, pool: &Pool) -> Option<&'a [u8]> {
    cookie(lines, &pool.sticky.as_ref()?.cookie)
}

/// What rproxy adds to every response it passes on.
#[derive(Debug, Clone, Copy)]
pub struct Added<'a> {
    pub request_id: &'a [u8],
    pub hsts: Option<&'a str>,
    /// The Date header's value.
    pub date: &'a [u8],
    /// A sticky-session cookie (`Pool::sticky_cookie`).
    pub set_cookie: Option<&'a str>,
}

/// Writes the header lines of the response the client gets: the upstream's headers minus
/// hop-by-hop ones (and those its `Connection` names, never the framing), its Date and
/// X-Request-Id (rproxy sets them) and its HSTS when rproxy sets one; then the Content-Length
/// `length` as one value, Date, X-Request-Id and HSTS. Transfer-Encoding stays for the engine to
/// use or drop.
pub fn forward_response<L: Lines + ?Sized, S: HeaderSink>(
    lines: &L,
    length: Option<u64>,
    added: &Added,
    out: &mut S,
) {
    let named = connection_names_others(lines);
    lines.each(|k, name, value| {
        let framing = matches!(k, Kind::ContentLength | Kind::TransferEncoding);
        if named && !framing && named_in_connection(lines, name) {
            return;
        }
        let keep = match k {
            Kind::Hop
            | Kind::Connection
            | Kind::Upgrade
            | Kind::Date
            | Kind::RequestId
            | Kind::ContentLength => false,
            Kind::Hsts => added.hsts.is_none(),
            _ => true,
        };
        if keep {
            out.header(name.as_bytes(), value);
        }
    });
    if let Some(n) = length {
        let mut digits = Digits::default();
        out.header(b"content-length", digits.of(n));
    }
    added_lines(added, out);
}

/// Date, X-Request-Id and HSTS: on every response rproxy sends, its own ones included.
pub fn added_lines<S: HeaderSink>(added: &Added, out: &mut S) {
    if !added.date.is_empty() {
        out.header(b"date", added.date);
    }
    out.header(b"x-request-id", added.request_id);
    if let Some(hsts) = added.hsts {
        out.header(b"strict-transport-security", hsts.as_bytes());
    }
    if let Some(cookie) = added.set_cookie {
        out.header(b"set-cookie", cookie.as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routing::Target;
    use http::header::{HeaderName, HeaderValue};

    fn raw(headers: &[(&'static str, &'static [u8])]) -> Vec<httparse::Header<'static>> {
        headers
            .iter()
            .map(|&(name, value)| httparse::Header { name, value })
            .collect()
    }

    fn route(headers: &[(&'static str, &'static str)]) -> Route {
        let mut route = Route::new("r".into(), "/", Target::Static(".".into()));
        for (n, v) in headers {
            route
                .headers
                .push((HeaderName::from_static(n), HeaderValue::from_static(v)));
        }
        route
    }

    fn forwarding(host: &'static [u8]) -> Forwarding<'static> {
        Forwarding {
            client: Some(ClientAddr::direct("192.0.2.7".parse().unwrap())),
            proto: "https",
            host,
            request_id: b"id1",
            content_length: None,
            upgrade: Upgrade::No,
        }
    }

    fn forwarded(lines: &[httparse::Header], f: &Forwarding, route: &Route) -> String {
        let mut out = Vec::new();
        forward_request(lines, f, route, &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn expect_is_answered_by_rproxy_and_never_forwarded() {
        let lines = raw(&[("Host", b"a.test"), ("Expect", b" 100-Continue ")]);
        assert!(expects_continue(&lines[..]));
        assert!(!expects_continue(&raw(&[("Expect", b"x-other")])[..]));
        let out = forwarded(&lines, &forwarding(b"a.test"), &route(&[]));
        assert!(!out.to_ascii_lowercase().contains("expect"), "{out}");
    }

    #[test]
    fn the_request_an_upstream_gets() {
        let lines = raw(&[
            ("Host", b"app.test:8080"),
            ("X-Forwarded-For", b"10.0.0.1"),
            ("Connection", b"keep-alive, X-Secret"),
            ("X-Secret", b"1"),
            ("TE", b"trailers"),
            ("X-Real-IP", b"6.6.6.6"),
            ("X-Env", b"dev"),
            ("Accept", b"*/*"),
            ("x-forwarded-for", b"10.0.0.2"),
        ]);
        let got = forwarded(
            &lines,
            &forwarding(b"app.test:8080"),
            &route(&[("x-env", "prod")]),
        );
        assert_eq!(
            got,
            "Host: app.test:8080\r\nAccept: */*\r\n\
             x-forwarded-for: 10.0.0.1, 10.0.0.2, 192.0.2.7\r\nx-real-ip: 192.0.2.7\r\n\
             x-forwarded-proto: https\r\nx-forwarded-host: app.test:8080\r\nx-request-id: id1\r\n\
             x-env: prod\r\n"
        );
    }

    #[test]
    fn framing_survives_connection_and_route_headers_replace_ours() {
        let lines = raw(&[
            ("Host", b"h"),
            ("Connection", b"content-length, host, cookie, x-a"),
            ("Cookie", b"a=1"),
            ("Content-Length", b"3, 3"),
            ("x-a", b"1"),
        ]);
        let mut f = forwarding(b"h");
        f.content_length = Some(3);
        let got = forwarded(&lines, &f, &route(&[]));
        assert!(got.contains("Host: h\r\n"), "{got}");
        assert!(got.contains("content-length: 3\r\n"), "{got}");
        assert!(!got.to_ascii_lowercase().contains("cookie"), "{got}");
        assert!(!got.contains("x-a:"), "{got}");
        let got = forwarded(
            &raw(&[("Host", b"a")]),
            &forwarding(b"a"),
            &route(&[("host", "inner.svc"), ("x-forwarded-proto", "http")]),
        );
        assert_eq!(
            got.to_ascii_lowercase().matches("host:").count(),
            2,
            "{got}"
        );
        assert!(got.contains("host: inner.svc\r\n"), "{got}");
        assert!(got.contains("x-forwarded-host: a\r\n"), "{got}");
        assert_eq!(got.matches("x-forwarded-proto").count(), 1, "{got}");
        assert!(got.contains("x-forwarded-proto: http\r\n"), "{got}");
    }

    #[test]
    fn http2_lines_get_a_host_and_one_cookie() {
        let mut map = http::HeaderMap::new();
        map.append("cookie", HeaderValue::from_static("a=1"));
        map.append("cookie", HeaderValue::from_static("b=2"));
        let mut out = Vec::new();
        forward_request(&map, &forwarding(b"h:8443"), &route(&[]), &mut out);
        let got = String::from_utf8(out).unwrap();
        assert!(
            got.starts_with("host: h:8443\r\ncookie: a=1; b=2\r\n"),
            "{got}"
        );
    }

    #[test]
    fn websocket_upgrade_is_kept() {
        let lines = raw(&[
            ("Host", b"h"),
            ("Connection", b"Upgrade"),
            ("Upgrade", b"websocket"),
        ]);
        let mut f = forwarding(b"h");
        let got = forwarded(&lines, &f, &route(&[]));
        assert!(!got.to_ascii_lowercase().contains("upgrade"), "{got}");
        f.upgrade = Upgrade::Client;
        let got = forwarded(&lines, &f, &route(&[]));
        assert!(
            got.ends_with("upgrade: websocket\r\nconnection: upgrade\r\n"),
            "{got}"
        );
    }

    #[test]
    fn a_cookie_among_others_and_lines() {
        let lines = raw(&[
            ("Cookie", b"a=1; srv = x1 ;b=2"),
            ("Cookie", b"srv=second"),
            ("X-Srv", b"srv=no"),
        ]);
        assert_eq!(cookie(&lines[..], "srv"), Some(&b"x1"[..]));
        assert_eq!(cookie(&lines[..], "b"), Some(&b"2"[..]));
        assert_eq!(cookie(&lines[..], "sr"), None);
        assert_eq!(
            cookie(&raw(&[("Cookie", b"novalue; =x")])[..], "novalue"),
            None
        );
    }

    #[test]
    fn an_h2_websocket_becomes_an_h1_handshake() {
        let lines = raw(&[
            ("sec-websocket-version", b"13"),
            ("sec-websocket-key", b"from-the-client"),
            ("sec-websocket-protocol", b"chat"),
            ("x-forwarded-for", b"10.0.0.1"),
        ]);
        let mut f = forwarding(b"h:8443");
        f.upgrade = Upgrade::FromH2 { key: b"k==" };
        let got = forwarded(&lines, &f, &route(&[]));
        assert!(!got.contains("from-the-client"), "{got}");
        assert_eq!(got.matches("sec-websocket-version").count(), 1, "{got}");
        assert!(got.contains("sec-websocket-protocol: chat\r\n"), "{got}");
        assert!(
            got.contains("x-forwarded-for: 10.0.0.1, 192.0.2.7\r\n"),
            "{got}"
        );
        assert!(got.contains("host: h:8443\r\n"), "{got}");
        assert!(
            got.ends_with(
                "upgrade: websocket\r\nconnection: upgrade\r\n\
                 sec-websocket-version: 13\r\nsec-websocket-key: k==\r\n"
            ),
            "{got}"
        );
    }

    #[test]
    fn connection_tokens_beside_non_ascii_are_honoured() {
        let lines = raw(&[("Connection", b"\xd6,x"), ("x", b"secret"), ("Host", b"h")]);
        let got = forwarded(&lines, &forwarding(b"h"), &route(&[]));
        assert!(!got.contains("x: secret"), "{got}");
    }

    #[test]
    fn the_response_a_client_gets() {
        let lines = raw(&[
            ("Content-Length", b"5, 5"),
            ("Connection", b"keep-alive, x-a"),
            ("x-a", b"1"),
            ("Date", b"x"),
            ("Keep-Alive", b"timeout=5"),
            ("X-Request-Id", b"up"),
            ("Strict-Transport-Security", b"max-age=1"),
            ("Server", b"u"),
        ]);
        let added = Added {
            request_id: b"id",
            hsts: Some(HSTS),
            date: b"D",
            set_cookie: None,
        };
        let mut out = Vec::new();
        forward_response(&lines[..], Some(5), &added, &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "Server: u\r\ncontent-length: 5\r\ndate: D\r\nx-request-id: id\r\n\
             strict-transport-security: max-age=31536000\r\n"
        );
    }

    #[test]
    fn content_lengths() {
        let cl = |v: &'static [u8]| content_length(&raw(&[("Content-Length", v)])[..]);
        assert_eq!(cl(b"3"), Ok(Some(3)));
        assert_eq!(cl(b"3, 3"), Ok(Some(3)));
        assert_eq!(cl(b"3, 4"), Err(BadLength));
        assert_eq!(cl(b"+3"), Err(BadLength));
        assert_eq!(cl(b""), Err(BadLength));
        assert_eq!(cl(b"99999999999999999999"), Err(BadLength));
        let two = raw(&[("content-length", b"1"), ("Content-Length", b"2")]);
        assert_eq!(content_length(&two[..]), Err(BadLength));
        assert_eq!(content_length(&raw(&[])[..]), Ok(None));
    }
}
