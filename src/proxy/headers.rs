//! Request header rewriting toward upstreams: `X-Forwarded-*`, `X-Real-IP`, hop-by-hop removal
//! (keeping a WebSocket `Upgrade`), and per-route headers.

use std::io::Write;
use std::net::IpAddr;

use http::header::{self, HeaderName, HeaderValue};
use pingora_http::RequestHeader;

use crate::routing::Route;

/// Headers that describe one connection, never forwarded (RFC 9110 7.6.1).
pub const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "upgrade",
];

/// Headers a `Connection` token never removes.
const FRAMING: &[HeaderName] = &[
    header::CONTENT_LENGTH,
    header::TRANSFER_ENCODING,
    header::HOST,
];

/// What the client connection looked like.
#[derive(Debug, Clone, Copy)]
pub struct ClientInfo<'a> {
    pub ip: Option<IpAddr>,
    /// `http` or `https`.
    pub proto: &'static str,
    /// The Host (or :authority) the client sent, port included.
    pub host: Option<&'a HeaderValue>,
    /// Keep `Upgrade`/`Connection: upgrade` for a WebSocket handshake.
    pub upgrade: bool,
}

/// Rewrites `req` for the upstream.
pub fn rewrite_request(
    req: &mut RequestHeader,
    client: &ClientInfo,
    route: &Route,
) -> pingora_error::Result<()> {
    strip_hop_by_hop(req, client.upgrade);
    set_forwarded(req, client)?;
    for (name, value) in &route.headers {
        req.insert_header(name.clone(), value.clone())?;
    }
    Ok(())
}

/// Does `route` set a header named `name` (which then replaces the client's)?
pub fn set_by_route(route: &Route, name: &str) -> bool {
    route
        .headers
        .iter()
        .any(|(n, _)| n.as_str().eq_ignore_ascii_case(name))
}

/// Removes hop-by-hop headers, including those named by `Connection`.
pub fn strip_hop_by_hop(req: &mut RequestHeader, keep_upgrade: bool) {
    // Most requests carry none: one pass over the names instead of a removal per name.
    // `Connection` is one of them, so without any there are no named ones either.
    if !req.headers.keys().any(|k| HOP_BY_HOP.contains(&k.as_str())) {
        return;
    }
    // Split the raw bytes: a value with a non-ASCII byte must still have its other tokens honoured.
    let named: Vec<HeaderName> = req
        .headers
        .get_all(header::CONNECTION)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b','))
        .filter_map(|t| HeaderName::from_bytes(t.trim_ascii()).ok())
        // The framing and the Host are never hop-by-hop, whatever Connection says: dropping
        // Content-Length would make the body a second request to the upstream.
        .filter(|n| !FRAMING.contains(n))
        .collect();
    let upgrade = keep_upgrade
        .then(|| req.headers.get(header::UPGRADE).cloned())
        .flatten();
    for name in named
        .iter()
        .map(HeaderName::as_str)
        .chain(HOP_BY_HOP.iter().copied())
    {
        req.remove_header(name);
    }
    if let Some(upgrade) = upgrade {
        // Infallible for static names with a value taken from a valid header.
        let _ = req.insert_header(header::UPGRADE, upgrade);
        let _ = req.insert_header(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
}

fn set_forwarded(req: &mut RequestHeader, client: &ClientInfo) -> pingora_error::Result<()> {
    if let Some(ip) = client.ip {
        let ip = ip_value(ip);
        let xff = match req.headers.get("x-forwarded-for") {
            Some(prev) if !prev.as_bytes().trim_ascii().is_empty() => {
                let mut v = prev.as_bytes().to_vec();
                v.extend_from_slice(b", ");
                v.extend_from_slice(ip.as_bytes());
                HeaderValue::from_bytes(&v).unwrap_or_else(|_| ip.clone())
            }
            _ => ip.clone(),
        };
        req.insert_header("x-forwarded-for", xff)?;
        req.insert_header("x-real-ip", ip)?;
    }
    req.insert_header("x-forwarded-proto", HeaderValue::from_static(client.proto))?;
    if let Some(host) = client.host.filter(|h| !h.is_empty()) {
        req.insert_header("x-forwarded-host", host.clone())?;
        if req.headers.get(header::HOST).is_none() {
            req.insert_header(header::HOST, host.clone())?;
        }
    }
    Ok(())
}

/// The address as a header value, formatted without a temporary `String`.
fn ip_value(ip: IpAddr) -> HeaderValue {
    // The longest IPv6 text form is 45 bytes.
    let mut buf = [0u8; 48];
    let mut cur = std::io::Cursor::new(&mut buf[..]);
    let written = write!(cur, "{ip}").map(|()| cur.position() as usize);
    written
        .ok()
        .and_then(|n| HeaderValue::from_bytes(&buf[..n]).ok())
        .unwrap_or_else(|| HeaderValue::from_static(""))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routing::Target;
    use std::path::PathBuf;

    fn request(headers: &[(&str, &str)]) -> RequestHeader {
        let mut req = RequestHeader::build("GET", b"/x", None).unwrap();
        for (k, v) in headers {
            req.append_header(k.to_string(), *v).unwrap();
        }
        req
    }

    #[test]
    fn forwarded_and_hop_by_hop() {
        let mut req = request(&[
            ("host", "app.test:8080"),
            ("x-forwarded-for", "10.0.0.1"),
            ("connection", "keep-alive, x-secret"),
            ("x-secret", "1"),
            ("keep-alive", "timeout=5"),
            ("te", "trailers"),
        ]);
        let mut route = Route::new("r".into(), "/", Target::Static(PathBuf::from(".")));
        route.headers.push((
            HeaderName::from_static("x-env"),
            HeaderValue::from_static("prod"),
        ));
        let client = ClientInfo {
            ip: Some("192.0.2.7".parse().unwrap()),
            proto: "https",
            host: Some(&HeaderValue::from_static("app.test:8080")),
            upgrade: false,
        };
        rewrite_request(&mut req, &client, &route).unwrap();
        let h = |n: &str| req.headers.get(n).map(|v| v.to_str().unwrap().to_string());
        assert_eq!(h("x-forwarded-for").as_deref(), Some("10.0.0.1, 192.0.2.7"));
        assert_eq!(h("x-real-ip").as_deref(), Some("192.0.2.7"));
        assert_eq!(h("x-forwarded-proto").as_deref(), Some("https"));
        assert_eq!(h("x-forwarded-host").as_deref(), Some("app.test:8080"));
        assert_eq!(h("host").as_deref(), Some("app.test:8080"));
        assert_eq!(h("x-env").as_deref(), Some("prod"));
        for gone in ["connection", "x-secret", "keep-alive", "te"] {
            assert_eq!(h(gone), None, "{gone} must not be forwarded");
        }
    }

    #[test]
    fn connection_tokens_beside_non_ascii_are_honoured() {
        let mut req = RequestHeader::build("GET", b"/", None).unwrap();
        req.append_header("connection", HeaderValue::from_bytes(b"\xd6,x").unwrap())
            .unwrap();
        req.append_header("x", "secret").unwrap();
        strip_hop_by_hop(&mut req, false);
        assert!(
            req.headers.get("x").is_none(),
            "a header named by Connection is dropped"
        );
    }

    #[test]
    fn connection_never_names_the_framing_away() {
        let mut req = request(&[
            ("host", "h"),
            ("connection", "content-length, host, x-a"),
            ("content-length", "3"),
            ("x-a", "1"),
        ]);
        strip_hop_by_hop(&mut req, false);
        assert_eq!(req.headers.get("content-length").unwrap(), "3");
        assert_eq!(req.headers.get("host").unwrap(), "h");
        assert!(req.headers.get("x-a").is_none());
    }

    #[test]
    fn client_address_values() {
        assert_eq!(ip_value("192.0.2.7".parse().unwrap()), "192.0.2.7");
        let longest = "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255";
        let v6: IpAddr = "2001:db8::1".parse().unwrap();
        assert_eq!(ip_value(v6), "2001:db8::1");
        // The longest text Rust writes for an address: 39 bytes.
        let full = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff";
        assert_eq!(ip_value(longest.parse().unwrap()), full);
    }

    #[test]
    fn websocket_upgrade_is_kept() {
        let mut req = request(&[("connection", "Upgrade"), ("upgrade", "websocket")]);
        strip_hop_by_hop(&mut req, true);
        assert_eq!(req.headers.get("upgrade").unwrap(), "websocket");
        assert_eq!(req.headers.get("connection").unwrap(), "upgrade");
    }
}
