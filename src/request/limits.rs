//! The answers given before a request goes anywhere: the https redirect and ACME HTTP-01
//! requests on the plain listener, the head and body size limits (431, 413) and a route's
//! admission limits (`rate_limit` 429, `max_concurrent` 503).

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use super::Listener;
use crate::routing::{InflightGuard, Route};
use crate::state::{Runtime, Settings};

/// Where ACME HTTP-01 challenges are answered; never redirected.
pub const ACME_CHALLENGE: &str = "/.well-known/acme-challenge/";

/// Why a routed request is refused before it goes anywhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Over the route's `rate_limit`: 429, retry after this many seconds.
    RateLimited(u64),
    /// The route's `max_concurrent` is reached: 503.
    Busy,
    /// The route's pool has no healthy server (left): 503.
    NoServer,
}

/// Takes an in-flight slot on `route` for a request from `ip`, unless a limit refuses it.
pub fn admission(route: &Arc<Route>, ip: Option<IpAddr>) -> Result<InflightGuard, Refusal> {
    let over = route
        .rate_limit
        .as_ref()
        .zip(ip)
        .and_then(|(l, ip)| l.check(ip));
    if let Some(retry_after) = over {
        return Err(Refusal::RateLimited(retry_after));
    }
    route.enter().ok_or_else(|| {
        tracing::warn!(route = %route.name, "max_concurrent reached");
        Refusal::Busy
    })
}

/// Is a request head of `len` bytes over `server.max_header_size` (431)?
pub fn head_too_large(len: usize, settings: &Settings) -> bool {
    len as u64 > settings.max_header_size
}

/// How much of a refused upload rproxy still reads (and drops) after answering 413, so that
/// the client reads the answer instead of a reset (nginx's lingering close): HTTP/1.1 closes
/// the connection after it, HTTP/2 resets the stream with NO_ERROR if the client still sends.
pub struct Linger {
    /// At most this long in all.
    pub time: Duration,
    /// Given up when nothing comes for this long.
    pub pause: Duration,
    /// At most this many bytes.
    pub bytes: u64,
}

/// The bounds of reading a refused upload to its end.
pub const LINGER: Linger = Linger {
    time: Duration::from_secs(10),
    pause: Duration::from_secs(2),
    bytes: 64 << 20,
};

/// Is a body of (at least) `len` bytes over the route's `max_body` (413)?
pub fn body_too_large(len: u64, route: &Route) -> bool {
    len > route.max_body
}

/// The https port a request on `listener` for `host` and `path` is redirected to, if any.
/// A route's own `redirect_https` decides; otherwise `tls.redirect_http` for every routed host.
pub fn redirect_port(listener: Listener, rt: &Runtime, host: &str, path: &str) -> Option<u16> {
    let port = rt.https_port?;
    if listener != Listener::Http || path.starts_with(ACME_CHALLENGE) || host.is_empty() {
        return None;
    }
    let own = rt.routes.lookup(host, path).and_then(|r| r.redirect_https);
    let applies = own.unwrap_or_else(|| rt.redirect_https.is_some() && rt.routes.routes_host(host));
    applies.then_some(port)
}

/// The `Location` of the redirect to https for `host` (port dropped) and `target`.
pub fn redirect_location(host: &str, port: u16, target: &str) -> String {
    let name = crate::routing::strip_port(host);
    if port == 443 {
        format!("https://{name}{target}")
    } else {
        format!("https://{name}:{port}{target}")
    }
}

/// Is this an ACME HTTP-01 validation that the plain listener answers?
pub fn is_acme_challenge(listener: Listener, rt: &Runtime, path: &str) -> bool {
    listener == Listener::Http && rt.acme.is_some() && path.starts_with(ACME_CHALLENGE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirect_locations() {
        assert_eq!(
            redirect_location("a.test:80", 443, "/x?y"),
            "https://a.test/x?y"
        );
        assert_eq!(
            redirect_location("a.test", 8443, "/"),
            "https://a.test:8443/"
        );
    }
}
