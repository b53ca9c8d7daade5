//! The end of every request: metrics under the contract's names and one access-log line
//! (target `rproxy::access`), text or JSON per `--log-format`, whichever engine carried it.
//! A local answer (an error rproxy gives itself) is logged at INFO like any other.

use std::net::IpAddr;
use std::time::Duration;

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
    /// The pool's `protocol` (`http1`, `h2c`, `h2`, `auto`); empty without a pool.
    pub upstream_protocol: &'a str,
    pub server: Option<&'a str>,
    pub upstream_status: Option<u16>,
    pub bytes_in: usize,
    pub bytes_out: usize,
    /// How long the upstream took to send its response head.
    pub upstream_time: Option<Duration>,
    pub elapsed: Duration,
    pub request_id: &'a str,
    /// A gRPC call's status: the upstream's `grpc-status`, or the one rproxy failed it with.
    pub grpc_status: Option<u16>,
    pub error: Option<&'a dyn std::fmt::Display>,
}

/// Records a finished request: metrics, then the access-log line when it is enabled.
pub fn log(e: &Entry) {
    metrics::observe_request(e.route, e.upstream, e.status, e.elapsed.as_secs_f64());
    if let (Some(server), Some(status)) = (e.server, e.upstream_status) {
        metrics::observe_upstream(e.upstream, server, status);
    }
    if let Some(code) = e.grpc_status {
        metrics::observe_grpc(e.route, e.upstream, code);
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
        upstream_protocol = e.upstream_protocol,
        server = e.server.unwrap_or(""),
        bytes_in = e.bytes_in,
        bytes_out = e.bytes_out,
        upstream_ms = e.upstream_time.map(|d| d.as_secs_f64() * 1e3),
        ms = e.elapsed.as_secs_f64() * 1e3,
        request_id = e.request_id,
        grpc_status = e.grpc_status,
        error = error.as_deref(),
        "access"
    );
}
