//! Decisions both request paths (pingora's proxy and `crate::fast`) make the same way: request
//! ids, a route's admission limits, the https redirect and ACME HTTP-01 requests.

use std::net::IpAddr;
use std::sync::Arc;

use super::{Listener, ACME_CHALLENGE};
use crate::routing::{InflightGuard, Route};
use crate::state::Runtime;

/// A client's request id is kept when it is 1 to 128 printable ASCII characters.
pub(crate) fn usable_request_id(id: &[u8]) -> bool {
    !id.is_empty() && id.len() <= 128 && id.iter().all(u8::is_ascii_graphic)
}

/// 128 random bits as 32 lowercase hex digits.
pub(crate) fn new_request_id() -> [u8; 32] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let n = rand::random::<u128>();
    let mut buf = [0u8; 32];
    for (i, b) in buf.iter_mut().enumerate() {
        *b = HEX[((n >> (124 - 4 * i)) & 0xf) as usize];
    }
    buf
}

/// Why a routed request is refused before it goes anywhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// Over the route's `rate_limit`: 429, retry after this many seconds.
    RateLimited(u64),
    /// The route's `max_concurrent` is reached: 503.
    Busy,
}

/// Takes an in-flight slot on `route` for a request from `ip`, unless a limit refuses it.
pub(crate) fn admission(route: &Arc<Route>, ip: Option<IpAddr>) -> Result<InflightGuard, Refusal> {
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

/// The https port a request on `listener` for `host` and `path` is redirected to, if any.
pub(crate) fn redirect_port(
    listener: Listener,
    rt: &Runtime,
    host: &str,
    path: &str,
) -> Option<u16> {
    let port = rt.redirect_https?;
    let applies = listener == Listener::Http
        && !path.starts_with(ACME_CHALLENGE)
        && !host.is_empty()
        && rt.routes.routes_host(host);
    applies.then_some(port)
}

/// Is this an ACME HTTP-01 validation that the plain listener answers?
pub(crate) fn is_acme_challenge(listener: Listener, rt: &Runtime, path: &str) -> bool {
    listener == Listener::Http && rt.acme.is_some() && path.starts_with(ACME_CHALLENGE)
}
