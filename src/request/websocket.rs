//! WebSocket over HTTP/2 (RFC 8441), as rules: which CONNECT requests are WebSocket handshakes
//! and which are refused, the fresh `Sec-WebSocket-Key` of the HTTP/1.1 handshake an upstream
//! gets for one, and the check of the upstream's `Sec-WebSocket-Accept` (rproxy is the
//! WebSocket client on that side, so it checks what the h2 client cannot).

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use sha1::{Digest, Sha1};

/// RFC 6455 1.3: appended to the key before hashing it.
const ACCEPT_GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// What a request's method and `:protocol` make of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Connect {
    /// Not a CONNECT: an ordinary request.
    No,
    /// An extended CONNECT with `:protocol websocket` (RFC 8441 4).
    WebSocket,
    /// Any other CONNECT (plain, or another `:protocol`): refused with this status.
    Refused(u16),
}

/// Classifies a request by its method and its `:protocol` pseudo-header (HTTP/2 only).
pub fn connect(method: &http::Method, protocol: Option<&str>) -> Connect {
    if method != http::Method::CONNECT {
        return Connect::No;
    }
    match protocol {
        Some(p) if p.eq_ignore_ascii_case("websocket") => Connect::WebSocket,
        // rproxy is no forward proxy (nginx and pingora answer a CONNECT 405 too).
        None => Connect::Refused(405),
        // A protocol rproxy does not carry (RFC 8441 4: the request is malformed for us).
        Some(_) => Connect::Refused(400),
    }
}

/// The status for an extended CONNECT to a route that does not carry WebSockets
/// (`websocket: false`, or a static route): what an HTTP/1.1 upgrade there could never become.
pub const NOT_A_WEBSOCKET_ROUTE: u16 = 405;

/// A fresh `Sec-WebSocket-Key`: 16 random bytes in base64 (RFC 6455 4.1).
pub fn new_key() -> String {
    STANDARD.encode(rand::random::<[u8; 16]>())
}

/// The `Sec-WebSocket-Accept` an upstream must answer `key` with (RFC 6455 4.2.2).
pub fn accept_for(key: &[u8]) -> String {
    let mut sha = Sha1::new();
    sha.update(key);
    sha.update(ACCEPT_GUID);
    STANDARD.encode(sha.finalize())
}

/// Does the upstream's `Sec-WebSocket-Accept` answer `key`?
pub fn accepts(key: &[u8], accept: Option<&[u8]>) -> bool {
    accept.is_some_and(|a| a.trim_ascii() == accept_for(key).as_bytes())
}

/// Is this an upstream 101's header that the HTTP/2 answer must not carry (RFC 8441 5: the
/// handshake's own fields; hop-by-hop lines are dropped by the h2 writer as well)?
pub fn not_in_h2_answer(name: &str) -> bool {
    name.eq_ignore_ascii_case("sec-websocket-accept")
        || matches!(
            super::lines::kind(name),
            super::lines::Kind::Hop
                | super::lines::Kind::Connection
                | super::lines::Kind::Upgrade
                | super::lines::Kind::ContentLength
                | super::lines::Kind::TransferEncoding
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn which_connects_are_websockets() {
        let connect_m = http::Method::CONNECT;
        assert_eq!(connect(&http::Method::GET, None), Connect::No);
        assert_eq!(connect(&connect_m, Some("websocket")), Connect::WebSocket);
        assert_eq!(connect(&connect_m, Some("WebSocket")), Connect::WebSocket);
        assert_eq!(connect(&connect_m, None), Connect::Refused(405));
        assert_eq!(
            connect(&connect_m, Some("connect-udp")),
            Connect::Refused(400)
        );
    }

    #[test]
    fn the_accept_of_rfc_6455() {
        // RFC 6455 1.3's example.
        let key = b"dGhlIHNhbXBsZSBub25jZQ==";
        assert_eq!(accept_for(key), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
        assert!(accepts(key, Some(b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")));
        assert!(!accepts(key, Some(b"nope")));
        assert!(!accepts(key, None));
        let fresh = new_key();
        assert_eq!(fresh.len(), 24);
        assert_ne!(fresh, new_key());
    }

    #[test]
    fn the_h2_answer_drops_the_handshake_lines() {
        for name in [
            "Sec-WebSocket-Accept",
            "upgrade",
            "Connection",
            "keep-alive",
        ] {
            assert!(not_in_h2_answer(name), "{name}");
        }
        for name in [
            "sec-websocket-protocol",
            "Sec-WebSocket-Extensions",
            "set-cookie",
        ] {
            assert!(!not_in_h2_answer(name), "{name}");
        }
    }
}
