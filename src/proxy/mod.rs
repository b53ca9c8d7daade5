//! The `ProxyHttp` implementation: one small method per pingora phase. A request loads the
//! runtime once, is routed, then either answered locally (redirect, static file, error),
//! tunnelled (WebSocket), or forwarded to a healthy server of its route's pool.

pub mod access;
mod ctx;
mod decide;
pub mod framing;
pub mod headers;
pub mod respond;
pub(crate) mod static_files;
mod websocket;

use std::net::IpAddr;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use http::header::{HeaderValue, HOST};
use pingora_core::upstreams::peer::HttpPeer;
use pingora_error::{Error, Result};
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::{FailToProxy, ProxyHttp, Session};

pub use ctx::Ctx;
pub(crate) use decide::{
    admission, is_acme_challenge, new_request_id, redirect_port, usable_request_id, Refusal,
};

use crate::routing::{Route, Target};
use crate::state::{Runtime, State};
use crate::upstream::SelectKey;
use headers::ClientInfo;

/// Where ACME HTTP-01 challenges are answered; never redirected.
pub(crate) const ACME_CHALLENGE: &str = "/.well-known/acme-challenge/";

/// Which listener a proxy instance serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    Http,
    Https,
}

impl Listener {
    pub fn proto(self) -> &'static str {
        match self {
            Listener::Http => "http",
            Listener::Https => "https",
        }
    }
}

/// The proxy logic of one listener.
pub struct Proxy {
    pub listener: Listener,
    pub state: Arc<State>,
}

/// The Host header, or the :authority of an HTTP/2 request.
pub(crate) fn request_host(req: &RequestHeader) -> &str {
    req.headers
        .get(HOST)
        .and_then(|v| v.to_str().ok())
        .or_else(|| req.uri.authority().map(|a| a.as_str()))
        .unwrap_or("")
}

pub(crate) fn client_ip(session: &Session) -> Option<IpAddr> {
    session
        .client_addr()
        .and_then(|a| a.as_inet())
        .map(|a| a.ip())
}

/// Approximate size of the request head as sent.
fn head_size(req: &RequestHeader) -> usize {
    let uri = req.uri.path_and_query().map_or(0, |p| p.as_str().len());
    uri + req
        .headers
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len() + 4)
        .sum::<usize>()
}

/// The client's `X-Request-Id` when it is short and printable, else a new random one.
fn request_id(req: &RequestHeader) -> HeaderValue {
    match req.headers.get("x-request-id") {
        Some(id) if usable_request_id(id.as_bytes()) => id.clone(),
        // Hex digits are always a valid header value.
        _ => HeaderValue::from_bytes(&new_request_id())
            .unwrap_or_else(|_| HeaderValue::from_static("0")),
    }
}

/// The Host header, or the :authority of an HTTP/2 request, as a value to forward.
fn host_value(req: &RequestHeader) -> Option<HeaderValue> {
    match req.headers.get(HOST) {
        Some(v) => Some(v.clone()),
        None => req
            .uri
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok()),
    }
}

fn content_length(req: &RequestHeader) -> Option<u64> {
    req.headers
        .get(http::header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

impl Proxy {
    /// Answers with a local response and records its status.
    async fn local(
        &self,
        session: &mut Session,
        ctx: &mut Ctx,
        status: u16,
        extra: &[(&str, &str)],
    ) -> Result<bool> {
        ctx.local_status = Some(status);
        let mut headers = extra.to_vec();
        headers.push(("x-request-id", ctx.request_id_str()));
        respond::send(session, status, &headers).await?;
        Ok(true)
    }

    /// The 308 to https for a routed host on the plain listener, if it applies.
    fn redirect_target(&self, rt: &Runtime, req: &RequestHeader) -> Option<String> {
        let host = request_host(req);
        let port = redirect_port(self.listener, rt, host, req.uri.path())?;
        let name = crate::routing::strip_port(host);
        let authority = if port == 443 {
            name.to_string()
        } else {
            format!("{name}:{port}")
        };
        let target = req.uri.path_and_query().map_or("/", |p| p.as_str());
        Some(format!("https://{authority}{target}"))
    }

    /// An HTTP-01 validation request on the plain listener: `Some(answer)` (`None` inside when
    /// there is no such token).
    fn acme_challenge(&self, rt: &Runtime, req: &RequestHeader) -> Option<Option<String>> {
        let acme = rt
            .acme
            .as_ref()
            .filter(|_| is_acme_challenge(self.listener, rt, req.uri.path()))?;
        let token = req.uri.path().strip_prefix(ACME_CHALLENGE)?;
        Some(crate::acme::http01_answer(acme, token))
    }

    async fn answer_challenge(
        &self,
        session: &mut Session,
        ctx: &mut Ctx,
        answer: Option<String>,
    ) -> Result<bool> {
        let Some(body) = answer else {
            return self.local(session, ctx, 404, &[]).await;
        };
        ctx.local_status = Some(200);
        respond::send_body(session, 200, "application/octet-stream", body.into(), &[]).await?;
        Ok(true)
    }

    /// Picks a server of the route's pool that this request has not tried yet.
    fn pick(&self, session: &Session, ctx: &mut Ctx) -> bool {
        let Some(pool) = ctx.pool.clone() else {
            return false;
        };
        let req = session.req_header();
        let key = SelectKey {
            client_ip: client_ip(session),
            uri: req.uri.path_and_query().map_or("/", |p| p.as_str()),
        };
        match pool.select(&key, &ctx.tried) {
            Some(backend) => {
                ctx.tried.push(backend.addr);
                ctx.backend = Some(backend.begin());
                true
            }
            None => false,
        }
    }

    /// Checks that apply to every routed request before it goes anywhere.
    async fn admit(
        &self,
        session: &mut Session,
        ctx: &mut Ctx,
        route: &Arc<Route>,
    ) -> Result<Option<bool>> {
        match admission(route, client_ip(session)) {
            Ok(guard) => ctx.inflight = Some(guard),
            Err(Refusal::RateLimited(retry_after)) => {
                let retry_after = retry_after.to_string();
                return self
                    .local(session, ctx, 429, &[("retry-after", &retry_after)])
                    .await
                    .map(Some);
            }
            Err(Refusal::Busy) => {
                return self
                    .local(session, ctx, 503, &[("retry-after", "1")])
                    .await
                    .map(Some);
            }
        }
        if content_length(session.req_header()).is_some_and(|len| len > route.max_body) {
            session.set_keepalive(None);
            return self
                .local(session, ctx, 413, &[("connection", "close")])
                .await
                .map(Some);
        }
        Ok(None)
    }

    /// Sends the request to the pool, or tunnels it when it is a WebSocket upgrade.
    async fn forward(
        &self,
        session: &mut Session,
        ctx: &mut Ctx,
        route: &Arc<Route>,
    ) -> Result<bool> {
        if !self.pick(session, ctx) {
            tracing::warn!(route = %route.name, upstream = %ctx.pool_name(), "no healthy server");
            return self.local(session, ctx, 503, &[("retry-after", "1")]).await;
        }
        if route.websocket && session.is_upgrade_req() {
            return self.websocket(session, ctx, route).await;
        }
        let body_timeout = ctx.runtime.as_ref().map(|rt| rt.settings.body_timeout);
        session.set_read_timeout(body_timeout);
        Ok(false)
    }

    /// Carries a WebSocket upgrade end to end (see `websocket.rs`).
    async fn websocket(
        &self,
        session: &mut Session,
        ctx: &mut Ctx,
        route: &Arc<Route>,
    ) -> Result<bool> {
        let Some(pool) = ctx.pool.clone() else {
            return Ok(false);
        };
        let mut req = session.req_header().clone();
        self.rewrite(session, &mut req, route, true, &ctx.request_id)?;
        let timeouts = websocket::Timeouts {
            connect: pool.peer.connect_timeout,
            handshake: pool.peer.read_timeout,
            idle: route.websocket_idle_timeout,
        };
        session.set_read_timeout(None);
        loop {
            let Some(backend) = ctx.backend.as_ref().map(|b| b.backend().clone()) else {
                return self.local(session, ctx, 502, &[]).await;
            };
            match websocket::connect(backend.addr, &req, timeouts).await {
                Ok(stream) => {
                    let status = websocket::relay(session, stream, &route.name, timeouts).await;
                    let status = status.unwrap_or_else(|e| {
                        tracing::warn!(server = %backend.label, "WebSocket handshake failed: {e}");
                        0
                    });
                    if status == 0 && session.response_written().is_none() {
                        return self.local(session, ctx, 502, &[]).await;
                    }
                    ctx.upstream_status = Some(status);
                    return Ok(true);
                }
                Err(e) => {
                    tracing::warn!(server = %backend.label, "WebSocket connect failed: {e}");
                    ctx.backend = None;
                    if ctx.retries_left == 0 || !self.pick(session, ctx) {
                        return self.local(session, ctx, 502, &[]).await;
                    }
                    ctx.retries_left -= 1;
                }
            }
        }
    }

    /// Applies path stripping and forwarding headers to a request bound upstream.
    fn rewrite(
        &self,
        session: &Session,
        req: &mut RequestHeader,
        route: &Route,
        upgrade: bool,
        request_id: &HeaderValue,
    ) -> Result<()> {
        req.insert_header("x-request-id", request_id.clone())?;
        if route.strip_prefix {
            let pq = req.uri.path_and_query().map_or("/", |p| p.as_str());
            let stripped = route.upstream_path(pq).into_owned();
            let uri = stripped
                .parse::<http::Uri>()
                .map_err(|_| respond::http_error(400, "bad path after strip_prefix"))?;
            req.set_uri(uri);
        }
        let host = host_value(session.req_header());
        let client = ClientInfo {
            ip: client_ip(session),
            proto: self.listener.proto(),
            host: host.as_ref(),
            upgrade,
        };
        headers::rewrite_request(req, &client, route)
    }
}

#[async_trait]
impl ProxyHttp for Proxy {
    type CTX = Ctx;

    fn new_ctx(&self) -> Ctx {
        Ctx::default()
    }

    /// The request head is complete: the connection's header deadline no longer applies.
    async fn early_request_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<()> {
        crate::server::headers_received();
        ctx.request_id = request_id(session.req_header());
        Ok(())
    }

    /// Decides everything about the request before any upstream is contacted: header size (431),
    /// https redirect (308), route (404), concurrency (503), declared body size (413), static
    /// files, healthy-server choice (503) and WebSocket tunnels. `Ok(true)` = already answered.
    async fn request_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<bool> {
        let rt = self.state.runtime();
        ctx.runtime = Some(rt.clone());
        if let Some(why) = framing::problem(session) {
            tracing::warn!(client = ?client_ip(session), "refused: {why}");
            session.set_keepalive(None);
            return self
                .local(session, ctx, 400, &[("connection", "close")])
                .await;
        }
        if head_size(session.req_header()) as u64 > rt.settings.max_header_size {
            session.set_keepalive(None);
            return self
                .local(session, ctx, 431, &[("connection", "close")])
                .await;
        }
        if let Some(answer) = self.acme_challenge(&rt, session.req_header()) {
            return self.answer_challenge(session, ctx, answer).await;
        }
        if let Some(location) = self.redirect_target(&rt, session.req_header()) {
            return self
                .local(session, ctx, 308, &[("location", &location)])
                .await;
        }
        let req = session.req_header();
        let Some(route) = rt.routes.lookup(request_host(req), req.uri.path()).cloned() else {
            return self.local(session, ctx, 404, &[]).await;
        };
        ctx.route = Some(route.clone());
        if let Some(answered) = self.admit(session, ctx, &route).await? {
            return Ok(answered);
        }
        match &route.target {
            Target::Static(dir) => {
                let path = session.req_header().uri.path().to_string();
                let rel = path.get(route.prefix.len()..).unwrap_or("");
                let hsts = route.hsts && self.listener == Listener::Https;
                let status =
                    static_files::serve(session, dir, rel, ctx.request_id_str(), hsts).await?;
                ctx.local_status = Some(status);
                Ok(true)
            }
            Target::Upstream(pool) => {
                ctx.pool = Some(pool.clone());
                ctx.retries_left = pool.peer.retries;
                self.forward(session, ctx, &route).await
            }
        }
    }

    /// The server chosen in `request_filter`, or, after a failed connect, another untried one.
    async fn upstream_peer(&self, session: &mut Session, ctx: &mut Ctx) -> Result<Box<HttpPeer>> {
        if ctx.backend.is_none() && !self.pick(session, ctx) {
            return Err(respond::http_error(502, "every server of the pool failed"));
        }
        let (Some(backend), Some(pool)) = (ctx.backend.as_ref(), ctx.pool.as_ref()) else {
            return Err(respond::http_error(502, "no server chosen"));
        };
        ctx.upstream_start = Some(std::time::Instant::now());
        let mut peer = HttpPeer::new(backend.backend().addr, false, String::new());
        let s = &pool.peer;
        peer.options.connection_timeout = Some(s.connect_timeout);
        peer.options.read_timeout = Some(s.read_timeout);
        peer.options.write_timeout = Some(s.write_timeout);
        peer.options.idle_timeout = Some(s.idle_timeout);
        Ok(Box::new(peer))
    }

    /// Nothing was sent on a failed connect, so any method may go to another server while
    /// `retries` lasts. The failure counts toward passive ejection.
    fn fail_to_connect(
        &self,
        _session: &mut Session,
        peer: &HttpPeer,
        ctx: &mut Ctx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        tracing::warn!(upstream = %ctx.pool_name(), server = %peer, "connect failed: {e}");
        if let (Some(pool), Some(b)) = (&ctx.pool, ctx.backend.take()) {
            pool.report_failure(b.backend());
        }
        let retry = ctx.retries_left > 0;
        ctx.retries_left = ctx.retries_left.saturating_sub(1);
        e.set_retry(retry);
        e
    }

    /// An upstream failed after the request was sent. An idempotent request whose body can be
    /// replayed and that has no response byte yet goes again: on a reused connection to the
    /// same server (it was stale), else to another one, unless it timed out. Anything else is
    /// never replayed.
    fn error_while_proxy(
        &self,
        peer: &HttpPeer,
        session: &mut Session,
        e: Box<Error>,
        ctx: &mut Ctx,
        client_reused: bool,
    ) -> Box<Error> {
        let mut e = e.more_context(format!("Peer: {peer}"));
        let upstream_side = e.esource() == &pingora_error::ErrorSource::Upstream;
        let replayable = session.req_header().method.is_idempotent()
            && !session.as_ref().retry_buffer_truncated();
        // A slow upstream is not given the same request again (as on the fast path).
        let timed_out = matches!(
            e.etype(),
            pingora_error::ErrorType::ReadTimedout | pingora_error::ErrorType::WriteTimedout
        );
        let retry = upstream_side
            && replayable
            && !timed_out
            && ctx.upstream_status.is_none()
            && ctx.retries_left > 0;
        if upstream_side && !client_reused {
            if let (Some(pool), Some(b)) = (&ctx.pool, &ctx.backend) {
                pool.report_failure(b.backend());
            }
        }
        if retry {
            ctx.retries_left -= 1;
            if !client_reused {
                ctx.backend = None;
            }
        }
        e.set_retry(retry);
        e
    }

    /// Rewrites the upstream request: strip_prefix, X-Forwarded-*, hop-by-hop, route headers.
    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        req: &mut RequestHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        let Some(route) = ctx.route.clone() else {
            return Ok(());
        };
        self.rewrite(session, req, &route, false, &ctx.request_id)
    }

    /// Counts body bytes against `max_body` (413) and works around pingora #935 (an empty final
    /// chunk from an h2 client must not become a second chunked terminator upstream).
    async fn request_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut Ctx,
    ) -> Result<()> {
        if let Some(b) = body.as_ref() {
            ctx.body_bytes += b.len() as u64;
            if end_of_stream && b.is_empty() {
                *body = None;
            }
        }
        match &ctx.route {
            Some(route) if ctx.body_bytes > route.max_body => {
                Err(respond::http_error(413, "request body over max_body"))
            }
            _ => Ok(()),
        }
    }

    /// Records the upstream status and adds HSTS on https routes that ask for it.
    async fn response_filter(
        &self,
        _session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        ctx.upstream_status = Some(resp.status.as_u16());
        if let Some(b) = &ctx.backend {
            b.backend().record_success();
        }
        ctx.upstream_header = ctx.upstream_start.map(|t| t.elapsed());
        resp.insert_header("x-request-id", ctx.request_id.clone())?;
        if self.listener == Listener::Https && ctx.route.as_ref().is_some_and(|r| r.hsts) {
            resp.insert_header("strict-transport-security", static_files::HSTS)?;
        }
        Ok(())
    }

    /// Maps a failure to the status the client gets (one place: `respond::status_for`).
    async fn fail_to_proxy(&self, session: &mut Session, e: &Error, ctx: &mut Ctx) -> FailToProxy {
        let code = respond::status_for(e);
        // The connection is not reused after a failure: say so in the answer.
        session.set_keepalive(None);
        if code > 0 && session.response_written().is_none() {
            let extra: &[(&str, &str)] = if code == 503 {
                &[("retry-after", "1")]
            } else {
                &[]
            };
            let mut headers = extra.to_vec();
            headers.push(("x-request-id", ctx.request_id_str()));
            if let Err(we) = respond::send(session, code, &headers).await {
                tracing::debug!("cannot send the error response: {we}");
            }
        }
        ctx.local_status = Some(code);
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }

    /// Metrics and the access log line.
    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut Ctx) {
        access::record(session, e, ctx);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_request_ids_are_32_hex_digits_and_differ() {
        let a = request_id(&RequestHeader::build("GET", b"/", None).unwrap());
        let b = new_request_id();
        assert_eq!(a.len(), 32);
        assert_ne!(a.as_bytes(), &b[..]);
        assert!(a
            .as_bytes()
            .iter()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
    }

    #[test]
    fn a_printable_client_request_id_is_kept() {
        let mut req = RequestHeader::build("GET", b"/", None).unwrap();
        req.insert_header("x-request-id", "abc-123").unwrap();
        assert_eq!(request_id(&req), "abc-123");
        req.insert_header("x-request-id", "has space").unwrap();
        assert_eq!(request_id(&req).len(), 32);
    }
}
