//! The `ProxyHttp` implementation: one small method per pingora phase. A request loads the
//! runtime once, is routed, then either answered locally (redirect, static file, error),
//! tunnelled (WebSocket), or forwarded to a healthy server of its route's pool.

mod compression;
mod ctx;
pub mod headers;
mod linger;
pub mod respond;
pub(crate) mod static_files;
mod websocket;

use std::net::IpAddr;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use http::header::HeaderValue;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_error::{Error, Result};
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::{FailToProxy, ProxyHttp, Session};

pub use ctx::Ctx;

use crate::request::client::{client_of, ClientAddr};
use crate::request::failure::{Attempts, Next};
use crate::request::framing::{request_framing, RawHead};
use crate::request::headers::{self as rules, request_host};
use crate::request::id::RequestId;
use crate::request::limits::{self, Refusal, ACME_CHALLENGE};
use crate::request::websocket::{Connect, NOT_A_WEBSOCKET_ROUTE};
use crate::request::{local, Failure, Listener};
use crate::routing::{Route, Target};
use crate::state::{Runtime, State};
use crate::upstream::SelectKey;
use headers::Client;

/// The proxy logic of one listener.
pub struct Proxy {
    pub listener: Listener,
    pub state: Arc<State>,
}

/// The connection's peer (the client a PROXY protocol header named, if one did).
pub(crate) fn peer_ip(session: &Session) -> Option<IpAddr> {
    session
        .client_addr()
        .and_then(|a| a.as_inet())
        .map(|a| a.ip())
}

/// The client of the request in `session`, as `request::client` decides it.
fn client_addr(session: &Session, rt: &Runtime) -> Option<ClientAddr> {
    let trusted = &rt.settings.trusted_proxies;
    peer_ip(session).map(|peer| client_of(peer, &session.req_header().headers, trusted))
}

/// The status of the final response head written to the client, if one was (a `100 Continue`
/// rproxy sent is not one).
pub(crate) fn final_status(session: &Session) -> Option<u16> {
    session
        .response_written()
        .map(|r| r.status)
        .filter(|s| !s.is_informational())
        .map(|s| s.as_u16())
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

/// The client's `X-Request-Id` when it is usable, else a new one.
fn request_id(req: &RequestHeader) -> HeaderValue {
    let given = crate::request::id::given(&req.headers);
    // A usable id and hex digits are always valid header values.
    HeaderValue::from_bytes(RequestId::of(given).as_bytes())
        .unwrap_or_else(|_| HeaderValue::from_static("0"))
}

/// Why an HTTP/1 request's framing is refused, if it is (read from the raw head: pingora drops
/// the Content-Length of a CL+TE request before our filters run).
fn framing_problem(session: &Session) -> Option<crate::request::framing::BadFraming> {
    let h1 = session.as_downstream().as_http1()?;
    request_framing(&RawHead(&h1.get_headers_raw_bytes())).err()
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
        respond::send(session, status, extra, ctx.request_id_str()).await?;
        Ok(true)
    }

    /// The 308 to https for a routed host on the plain listener, if it applies.
    fn redirect_target(&self, rt: &Runtime, req: &RequestHeader) -> Option<String> {
        let host = request_host(req);
        let port = limits::redirect_port(self.listener, rt, host, req.uri.path())?;
        let target = req.uri.path_and_query().map_or("/", |p| p.as_str());
        Some(limits::redirect_location(host, port, target))
    }

    /// An HTTP-01 validation request on the plain listener: `Some(answer)` (`None` inside when
    /// there is no such token).
    fn acme_challenge(&self, rt: &Runtime, req: &RequestHeader) -> Option<Option<String>> {
        let acme = rt
            .acme
            .as_ref()
            .filter(|_| limits::is_acme_challenge(self.listener, rt, req.uri.path()))?;
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
        respond::send_body(session, 200, "application/octet-stream", body.into()).await?;
        Ok(true)
    }

    /// The sticky-session cookie of the response from the current server, if one is due.
    fn sticky_cookie(&self, session: &Session, ctx: &Ctx) -> Option<String> {
        let (pool, backend) = (ctx.pool.as_ref()?, ctx.backend.as_ref()?);
        let sent = rules::sticky_value(&session.req_header().headers, pool);
        pool.sticky_cookie(backend.backend(), sent, self.listener == Listener::Https)
    }

    /// Picks a server of the route's pool that this request has not tried yet.
    fn pick(&self, session: &Session, ctx: &mut Ctx) -> bool {
        let Some(pool) = ctx.pool.clone() else {
            return false;
        };
        let req = session.req_header();
        let key = SelectKey {
            client_ip: ctx.client_ip(),
            uri: req.uri.path_and_query().map_or("/", |p| p.as_str()),
            sticky: rules::sticky_value(&req.headers, &pool),
        };
        match pool.select(&key, ctx.attempts.tried()) {
            Some(backend) => {
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
        match limits::admission(route, ctx.client_ip()) {
            Ok(guard) => ctx.inflight = Some(guard),
            Err(refusal) => return self.refuse(session, ctx, refusal).await.map(Some),
        }
        let declared = rules::content_length(&session.req_header().headers)
            .ok()
            .flatten();
        if declared.is_some_and(|len| limits::body_too_large(len, route)) {
            session.set_keepalive(None);
            self.local(session, ctx, 413, &[("connection", "close")])
                .await?;
            // A client waiting for `100 Continue` sends no body after a 413.
            if !rules::expects_continue(&session.req_header().headers) {
                linger::drain_upload(session).await;
            }
            return Ok(Some(true));
        }
        Ok(None)
    }

    /// Answers a request a limit refused.
    async fn refuse(&self, session: &mut Session, ctx: &mut Ctx, refusal: Refusal) -> Result<bool> {
        let refused = local::refusal(refusal);
        self.local(session, ctx, refused.status, &refused.headers())
            .await
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
            return self.refuse(session, ctx, Refusal::NoServer).await;
        }
        if websocket::connect_of(session.req_header()) == Connect::WebSocket {
            return self.websocket(session, ctx, route, true).await;
        }
        if route.websocket && rules::is_websocket_upgrade(&session.req_header().headers) {
            return self.websocket(session, ctx, route, false).await;
        }
        let body_timeout = ctx.runtime.as_ref().map(|rt| rt.settings.body_timeout);
        session.set_read_timeout(body_timeout);
        // The body is admitted so far: rproxy itself asks for it, and counts it as it comes.
        if rules::expects_continue(&session.req_header().headers) {
            session.write_continue_response().await?;
        }
        Ok(false)
    }

    /// Counts `failure` against the current server when it should, and decides whether the
    /// request goes again; for another server, `ctx.backend` is left empty for the next pick.
    fn after_failure(
        &self,
        ctx: &mut Ctx,
        failure: &Failure,
        replayable: bool,
        reused: bool,
    ) -> bool {
        let (Some(pool), Some(b)) = (ctx.pool.clone(), ctx.backend.as_ref()) else {
            return false;
        };
        let server = b.backend().clone();
        if failure.counts_against_server(reused) {
            pool.report_failure(&server);
        }
        match ctx.attempts.after(failure, server.addr, replayable, reused) {
            Next::Stop => false,
            Next::Again => true,
            Next::Elsewhere => {
                ctx.backend = None;
                true
            }
        }
    }

    /// What the request forwarded for `session` says about its client.
    fn client<'a>(&self, ctx: &'a Ctx) -> Client<'a> {
        Client {
            addr: ctx.client,
            listener: self.listener,
            request_id: ctx.request_id.as_bytes(),
        }
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
    /// files, healthy-server choice (503) and WebSocket tunnels (an HTTP/2 CONNECT is one when its
    /// `:protocol` is `websocket` and its route carries them; any other is refused: 405 or 400).
    /// `Ok(true)` = already answered.
    async fn request_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<bool> {
        let rt = self.state.runtime();
        ctx.runtime = Some(rt.clone());
        ctx.client = client_addr(session, &rt);
        if let Some(why) = framing_problem(session) {
            tracing::warn!(client = ?ctx.client_ip(), "refused: {why}");
            session.set_keepalive(None);
            return self
                .local(session, ctx, 400, &[("connection", "close")])
                .await;
        }
        if limits::head_too_large(head_size(session.req_header()), &rt.settings) {
            session.set_keepalive(None);
            return self
                .local(session, ctx, 431, &[("connection", "close")])
                .await;
        }
        let connect = websocket::connect_of(session.req_header());
        if let Connect::Refused(status) = connect {
            session.set_keepalive(None);
            return self.local(session, ctx, status, &[]).await;
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
        if connect == Connect::WebSocket && !websocket::carries_websockets(&route) {
            return self.local(session, ctx, NOT_A_WEBSOCKET_ROUTE, &[]).await;
        }
        if let Some(answered) = self.admit(session, ctx, &route).await? {
            return Ok(answered);
        }
        match &route.target {
            Target::Static(dir) => {
                let path = session.req_header().uri.path().to_string();
                let rel = path.get(route.prefix.len()..).unwrap_or("");
                let hsts = rules::hsts(self.listener, &route).is_some();
                let (rid, pre) = (ctx.request_id_str(), route.precompressed);
                let status = static_files::serve(session, dir, rel, rid, hsts, pre).await?;
                ctx.local_status = Some(status);
                Ok(true)
            }
            Target::Upstream(pool) => {
                ctx.pool = Some(pool.clone());
                ctx.attempts = Attempts::new(pool.peer.retries);
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
        let mut peer = pool.http_peer(backend.backend());
        // A gRPC call's deadline bounds the wait (504: DEADLINE_EXCEEDED to the client).
        if let Some(deadline) = crate::request::grpc::timeout(&session.req_header().headers) {
            let read = peer
                .options
                .read_timeout
                .map_or(deadline, |t| t.min(deadline));
            peer.options.read_timeout = Some(read);
        }
        if pool.transport.multiplexes() {
            ctx.stream_turn = backend.backend().stream_turn.take().await;
        }
        Ok(Box::new(peer))
    }

    /// The upstream stream is open: the next request may take its turn.
    async fn connected_to_upstream(
        &self,
        _session: &mut Session,
        _reused: bool,
        _peer: &HttpPeer,
        #[cfg(unix)] _fd: std::os::unix::io::RawFd,
        #[cfg(windows)] _sock: std::os::windows::io::RawSocket,
        _digest: Option<&pingora_core::protocols::Digest>,
        ctx: &mut Ctx,
    ) -> Result<()> {
        ctx.stream_turn = None;
        Ok(())
    }

    /// A connect failed: it counts against the server, and the request goes to another one
    /// while `retries` lasts (`crate::request::failure` decides).
    fn fail_to_connect(
        &self,
        _session: &mut Session,
        peer: &HttpPeer,
        ctx: &mut Ctx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        ctx.stream_turn = None;
        tracing::warn!(upstream = %ctx.pool_name(), server = %peer, "connect failed: {e}");
        let retry = self.after_failure(ctx, &Failure::from_pingora(&e), false, false);
        e.set_retry(retry);
        e
    }

    /// An upstream failed after the request was sent: whether it counts against the server and
    /// goes again is `crate::request::failure`'s decision. A request can be replayed when it is
    /// idempotent, its body is held whole and no response byte has come.
    fn error_while_proxy(
        &self,
        peer: &HttpPeer,
        session: &mut Session,
        e: Box<Error>,
        ctx: &mut Ctx,
        client_reused: bool,
    ) -> Box<Error> {
        let mut e = e.more_context(format!("Peer: {peer}"));
        if e.esource() != &pingora_error::ErrorSource::Upstream {
            e.set_retry(false);
            return e;
        }
        let failure = Failure::from_pingora(&e);
        let idempotent = crate::request::is_idempotent(session.req_header().method.as_str());
        let replayable = (idempotent || failure.unprocessed())
            && !session.as_ref().retry_buffer_truncated()
            && ctx.upstream_status.is_none();
        let retry = self.after_failure(ctx, &failure, replayable, client_reused);
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
        // The version (and whether HEADERS may end the stream) are pingora's to say: HTTP/2 to
        // an h2 or h2c pool.
        let (version, end_stream) = (req.version, req.send_end_stream());
        *req = headers::upstream_request(session.req_header(), &self.client(ctx), &route)?;
        req.set_version(version);
        if let Some(end) = end_stream {
            req.set_send_end_stream(end);
        }
        if version == http::Version::HTTP_2 && rules::wants_trailers(&session.req_header().headers)
        {
            req.insert_header("te", "trailers")?;
        }
        Ok(())
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
            Some(route) if limits::body_too_large(ctx.body_bytes, route) => {
                Err(respond::http_error(413, "request body over max_body"))
            }
            _ => Ok(()),
        }
    }

    /// Records the upstream status; the client's head is the shared rule's
    /// (`crate::request::headers::forward_response`).
    async fn response_filter(
        &self,
        session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        if resp.status.is_informational() {
            return Ok(());
        }
        ctx.upstream_status = Some(resp.status.as_u16());
        ctx.grpc_status = crate::request::grpc::code_in(&resp.headers);
        if let Some(b) = &ctx.backend {
            b.backend().record_success();
        }
        ctx.upstream_header = ctx.upstream_start.map(|t| t.elapsed());
        let verdict = compression::decide(session, resp, ctx);
        let date = pingora_core::protocols::http::date::get_cached_date();
        let cookie = self.sticky_cookie(session, ctx);
        let added = rules::Added {
            request_id: ctx.request_id.as_bytes(),
            hsts: ctx
                .route
                .as_ref()
                .and_then(|r| rules::hsts(self.listener, r)),
            date: date.as_bytes(),
            set_cookie: cookie.as_deref(),
        };
        *resp = headers::client_response(resp, &added, verdict)?;
        Ok(())
    }

    /// Compresses the body when `response_filter` chose to (`ctx.encoder`): each piece as it
    /// comes, flushed, and the stream finished with the body's last piece.
    fn response_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut Ctx,
    ) -> Result<Option<std::time::Duration>> {
        compression::body(ctx, body, end_of_stream)?;
        Ok(None)
    }

    /// Trailers end a compressed body (an HTTP/2 upstream's): the encoder's last bytes are
    /// written in their place (HTTP/1.1 clients never get trailers from rproxy either).
    async fn response_trailer_filter(
        &self,
        _session: &mut Session,
        _trailers: &mut http::HeaderMap,
        ctx: &mut Ctx,
    ) -> Result<Option<Bytes>> {
        compression::finish(ctx)
    }

    /// A gRPC call's status comes in the response's trailers.
    fn upstream_response_trailer_filter(
        &self,
        _session: &mut Session,
        trailers: &mut http::HeaderMap,
        ctx: &mut Ctx,
    ) -> Result<()> {
        if let Some(code) = crate::request::grpc::code_in(trailers) {
            ctx.grpc_status = Some(code);
        }
        Ok(())
    }

    /// The upstream's response has ended: the server stops counting this request (for
    /// least_conn) before the last bytes reach the client, whose next request may come at once.
    fn upstream_response_body_filter(
        &self,
        _session: &mut Session,
        _body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut Ctx,
    ) -> Result<Option<std::time::Duration>> {
        if end_of_stream {
            if let Some(b) = ctx.backend.as_mut() {
                b.release();
            }
        }
        Ok(None)
    }

    /// Answers a failure with the status `crate::request::Failure` gives it.
    async fn fail_to_proxy(&self, session: &mut Session, e: &Error, ctx: &mut Ctx) -> FailToProxy {
        let code = Failure::from_pingora(e).status();
        // The connection is not reused after a failure: say so in the answer.
        session.set_keepalive(None);
        if code > 0 && final_status(session).is_none() {
            if let Err(we) = respond::send(session, code, &[], ctx.request_id_str()).await {
                tracing::debug!("cannot send the error response: {we}");
            }
        }
        if code == 413 {
            // The body went over `max_body` as it came: the rest is read and dropped.
            linger::drain_upload(session).await;
        }
        ctx.local_status = Some(code);
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }

    /// Failures that are the client's (it left, stalled, sent something malformed) and 413s
    /// are told by the access log at INFO, not by pingora's ERROR line.
    fn suppress_error_log(&self, _session: &Session, _ctx: &Ctx, e: &Error) -> bool {
        let failure = Failure::from_pingora(e);
        failure.is_clients() || failure.status() == 413
    }

    /// Metrics and the access log line.
    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut Ctx) {
        ctx.log(session, e);
    }
}
