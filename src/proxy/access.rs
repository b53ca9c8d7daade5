//! The end of every request: metrics under the contract's names and one access-log line
//! (target `rproxy::access`), text or JSON per `--log-format`.

use pingora_error::Error;
use pingora_proxy::Session;

use super::{client_ip, request_host, Ctx};
use crate::metrics;

/// Records a finished request.
pub fn record(session: &Session, e: Option<&Error>, ctx: &Ctx) {
    let code = session
        .response_written()
        .map(|r| r.status.as_u16())
        .or(ctx.local_status)
        .unwrap_or(0);
    let elapsed = ctx.start.elapsed();
    metrics::observe_request(
        ctx.route_name(),
        ctx.pool_name(),
        code,
        elapsed.as_secs_f64(),
    );
    let server = ctx.backend.as_ref().map(|b| b.backend().label.as_str());
    if let (Some(server), Some(status)) = (server, ctx.upstream_status) {
        metrics::observe_upstream(ctx.pool_name(), server, status);
    }
    if !tracing::enabled!(target: "rproxy::access", tracing::Level::INFO) {
        return;
    }
    let req = session.req_header();
    let error = e.map(|e| e.to_string());
    tracing::info!(
        target: "rproxy::access",
        client = %client_ip(session).map(|ip| ip.to_string()).unwrap_or_default(),
        method = %req.method,
        host = request_host(req),
        path = req.uri.path(),
        status = code,
        route = ctx.route_name(),
        upstream = ctx.pool_name(),
        server = server.unwrap_or(""),
        bytes_in = session.body_bytes_read(),
        bytes_out = session.body_bytes_sent(),
        upstream_ms = ctx.upstream_header.map(|d| d.as_secs_f64() * 1e3),
        ms = elapsed.as_secs_f64() * 1e3,
        request_id = ctx.request_id_str(),
        error = error.as_deref(),
        "access"
    );
}
