//! What rproxy decides about a request, whichever engine carries its bytes: which headers cross
//! the proxy both ways (`headers`), who the client is (`client`), whether a body's framing is
//! acceptable (`framing`), the route's limits and the answers given before routing (`limits`),
//! why an upstream attempt failed and what follows from it: status, retry, ejection
//! (`failure`), the responses rproxy writes itself (`local`), request ids (`id`), the
//! access-log record (`access`), what makes a WebSocket of an HTTP/2 CONNECT (`websocket`) and
//! response compression (`compress`).
//!
//! Two engines call these rules: rproxy's own (`crate::fast`) and pingora's `ProxyHttp`
//! (`crate::proxy`). An engine reads and writes bytes; neither imports the other.

pub mod access;
pub mod client;
pub mod compress;
pub mod failure;
pub mod framing;
pub mod grpc;
pub mod headers;
pub mod id;
pub mod limits;
mod lines;
pub mod local;
pub mod websocket;

pub use failure::Failure;

/// Which listener a request came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    Http,
    Https,
}

impl Listener {
    /// The scheme, as `X-Forwarded-Proto` says it.
    pub fn proto(self) -> &'static str {
        match self {
            Listener::Http => "http",
            Listener::Https => "https",
        }
    }
}

/// The request target an upstream gets, and routes match: without a fragment (a client has no
/// business sending one, RFC 9110 4.2.4; pingora's parser drops it too).
pub fn without_fragment(target: &str) -> &str {
    match target.bytes().position(|b| b == b'#') {
        Some(at) => &target[..at],
        None => target,
    }
}

/// Is `method` idempotent (RFC 9110 9.2.2), so that a request may be sent again?
pub fn is_idempotent(method: &str) -> bool {
    matches!(
        method,
        "GET" | "HEAD" | "PUT" | "DELETE" | "OPTIONS" | "TRACE"
    )
}
