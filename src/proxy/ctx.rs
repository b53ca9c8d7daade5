//! Per-request state carried between the pingora phases of one request, and its access-log
//! record when it ends.

use crate::request::client::ClientAddr;
use std::sync::Arc;
use std::time::Instant;

use pingora_error::Error;
use pingora_proxy::Session;

use crate::request::access::{self, Entry};
use crate::request::failure::Attempts;
use crate::request::grpc;
use crate::request::headers::request_host;
use crate::request::Failure;
use crate::routing::{InflightGuard, Route};
use crate::state::Runtime;
use crate::upstream::{ActiveGuard, Pool};

/// What one request has decided so far.
#[derive(Debug)]
pub struct Ctx {
    pub start: Instant,
    /// The configuration this request runs on, loaded once.
    pub runtime: Option<Arc<Runtime>>,
    pub route: Option<Arc<Route>>,
    pub pool: Option<Arc<Pool>>,
    /// The server the current attempt goes to, counted as in flight while held.
    pub backend: Option<ActiveGuard>,
    /// The retry budget and the servers that failed this request.
    pub attempts: Attempts,
    pub body_bytes: u64,
    pub upstream_status: Option<u16>,
    /// The status a response written by rproxy itself carried.
    pub local_status: Option<u16>,
    pub inflight: Option<InflightGuard>,
    /// The client's `X-Request-Id`, or one made here; sent upstream and back to the client.
    pub request_id: http::HeaderValue,
    /// When the current upstream attempt started, and how long its response head took.
    pub upstream_start: Option<Instant>,
    pub upstream_header: Option<std::time::Duration>,
    /// This request's turn at opening a stream on an HTTP/2 upstream connection, held from
    /// `upstream_peer` until the stream is open or the connect failed.
    pub stream_turn: Option<crate::upstream::peer::HeldTurn>,
    /// The upstream's `grpc-status` (in the response head or its trailers).
    pub grpc_status: Option<u16>,
    /// The client and the connection's peer, once the request head is in.
    pub client: Option<ClientAddr>,
    /// The response body's encoder, when it is compressed (`crate::request::compress`).
    pub encoder: Option<crate::request::compress::Encoder>,
}

impl Default for Ctx {
    fn default() -> Self {
        Ctx {
            start: Instant::now(),
            runtime: None,
            route: None,
            pool: None,
            backend: None,
            attempts: Attempts::default(),
            body_bytes: 0,
            upstream_status: None,
            local_status: None,
            inflight: None,
            request_id: http::HeaderValue::from_static(""),
            upstream_start: None,
            upstream_header: None,
            stream_turn: None,
            grpc_status: None,
            client: None,
            encoder: None,
        }
    }
}

impl Ctx {
    pub fn route_name(&self) -> &str {
        self.route.as_ref().map_or("", |r| r.name.as_str())
    }

    /// The request id as text (always printable ASCII).
    /// The client's address (`request::client`), once the request head is in.
    pub fn client_ip(&self) -> Option<std::net::IpAddr> {
        self.client.map(|c| c.ip)
    }

    pub fn request_id_str(&self) -> &str {
        self.request_id.to_str().unwrap_or("")
    }

    pub fn pool_name(&self) -> &str {
        self.pool.as_ref().map_or("", |p| p.name.as_str())
    }

    /// Metrics and the access-log line of the request, as it ends.
    pub fn log(&self, session: &Session, e: Option<&Error>) {
        let req = session.req_header();
        let written = super::final_status(session)
            .or(self.local_status)
            .unwrap_or(0);
        let status = e.map_or(written, |e| Failure::from_pingora(e).logged_status(written));
        let error = e.map(|e| e as &dyn std::fmt::Display);
        access::log(&Entry {
            client: self.client_ip().or_else(|| super::peer_ip(session)),
            method: req.method.as_str(),
            host: request_host(req),
            path: req.uri.path(),
            status,
            route: self.route_name(),
            upstream: self.pool_name(),
            upstream_protocol: self
                .pool
                .as_ref()
                .map_or("", |p| p.transport.protocol.name()),
            server: self.backend.as_ref().map(|b| b.backend().label.as_str()),
            upstream_status: self.upstream_status,
            bytes_in: session.body_bytes_read(),
            bytes_out: session.body_bytes_sent(),
            upstream_time: self.upstream_header,
            elapsed: self.start.elapsed(),
            request_id: self.request_id_str(),
            grpc_status: self.grpc_status.or_else(|| {
                self.local_status
                    .and_then(|s| grpc::local_answer(&req.headers, s))
            }),
            error,
        });
    }
}
