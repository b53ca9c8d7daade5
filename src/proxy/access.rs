//! The end of every request: metrics under the contract's names and one access-log line
//! (target `rproxy::access`), text or JSON per `--log-format`, for either request path.

use std::net::IpAddr;
use std::time::Duration;

use pingora_error::Error;
use pingora_proxy::Session;

use super::{client_ip, request_host, Ctx};
use crate::metrics;

/// What is known about a request when it ends.
pub struct Entry<'a> {
    pub client: Option<IpAddr>,
    pub method: &'a str,
    pub host: &'a str,
    pub path: &'a str,
    /// The status the client got; 0 when it got none.
    pub status: u16,
    pub route: &'a str,
    pub upstream: &'a str,
    pub server: Option<&'a str>,
    pub upstream_status: Option<u16>,
    pub bytes_in: usize,
    pub bytes_out: usize,
    /// How long the upstream took to send its response head.
    pub upstream_time: Option<Duration>,
    pub elapsed: Duration,
    pub request_id: &'a str,
    pub error: Option<&'a dyn std::fmt::Display>,
}

/// Records a finished request: metrics, then the access-log line when it is enabled.
pub fn log(e: &Entry) {
    metrics::observe_request(e.route, e.upstream, e.status, e.elapsed.as_secs_f64());
    if let (Some(server), Some(status)) = (e.server, e.upstream_status) {
        metrics::observe_upstream(e.upstream, server, status);
    }
    if !tracing::enabled!(target: "rproxy::access", tracing::Level::INFO) {
        return;
    }
    let error = e.error.map(|e| e.to_string());
    tracing::info!(
        target: "rproxy::access",
        client = %e.client.map(|ip| ip.to_string()).unwrap_or_default(),
        method = e.method,
        host = e.host,
        path = e.path,
        status = e.status,
        route = e.route,
        upstream = e.upstream,
        server = e.server.unwrap_or(""),
        bytes_in = e.bytes_in,
        bytes_out = e.bytes_out,
        upstream_ms = e.upstream_time.map(|d| d.as_secs_f64() * 1e3),
        ms = e.elapsed.as_secs_f64() * 1e3,
        request_id = e.request_id,
        error = error.as_deref(),
        "access"
    );
}

/// Records a request that went through pingora's proxy.
pub fn record(session: &Session, e: Option<&Error>, ctx: &Ctx) {
    let req = session.req_header();
    let error = e.map(|e| e as &dyn std::fmt::Display);
    log(&Entry {
        client: client_ip(session),
        method: req.method.as_str(),
        host: request_host(req),
        path: req.uri.path(),
        status: session
            .response_written()
            .map(|r| r.status.as_u16())
            .or(ctx.local_status)
            .unwrap_or(0),
        route: ctx.route_name(),
        upstream: ctx.pool_name(),
        server: ctx.backend.as_ref().map(|b| b.backend().label.as_str()),
        upstream_status: ctx.upstream_status,
        bytes_in: session.body_bytes_read(),
        bytes_out: session.body_bytes_sent(),
        upstream_time: ctx.upstream_header,
        elapsed: ctx.start.elapsed(),
        request_id: ctx.request_id_str(),
        error,
    });
}
