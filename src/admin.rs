//! The admin listener: `/metrics` (Prometheus text), `/healthz` (the process runs) and
//! `/readyz` (configuration loaded, listeners up, first probe round done; 503 while draining).

use std::sync::Arc;

use async_trait::async_trait;
use http::Response;
use pingora_core::apps::http_app::ServeHttp;
use pingora_core::protocols::http::ServerSession;

use crate::metrics;
use crate::state::State;

/// Serves the admin endpoints.
pub struct Admin {
    pub state: Arc<State>,
}

fn text(status: u16, body: impl Into<Vec<u8>>, content_type: &str) -> Response<Vec<u8>> {
    let body = body.into();
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .header("content-length", body.len())
        .body(body)
        .unwrap_or_default()
}

#[async_trait]
impl ServeHttp for Admin {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let plain = "text/plain; charset=utf-8";
        match session.req_header().uri.path() {
            "/healthz" => text(200, "ok\n", plain),
            "/readyz" if self.state.is_ready() => text(200, "ready\n", plain),
            "/readyz" if self.state.is_draining() => text(503, "draining\n", plain),
            "/readyz" => text(503, "starting\n", plain),
            "/metrics" => text(200, metrics::render(), "text/plain; version=0.0.4"),
            _ => text(404, "404 Not Found\n", plain),
        }
    }
}
