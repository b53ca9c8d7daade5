//! One request on the fast path, from its plan to its log line, whichever protocol the client
//! speaks (`Downstream`): refusals answered locally, upstream attempts (a pooled or new
//! connection, retries decided by `crate::request::failure`), then the response passed on by
//! `relay.rs`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use std::time::Instant;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::body::ChunkError;
use super::head::{self, Added, BadResponse, Client, Request, ResponseHead};
use super::relay::Relay;
use super::timer::{Elapsed, Timer};
use super::{buffers, pool, Admitted, Engine, Forward, Plan};
use crate::request::access::{self, Entry};
use crate::request::client::ClientAddr;
use crate::request::compress::Verdict;
use crate::request::failure::{Attempts, Next as AfterFailure};
use crate::request::headers::sticky_value;
use crate::request::id::RequestId;
use crate::request::{local, Failure, Listener};
use crate::upstream::{Backend, PeerSettings, SelectKey};

/// The longest upstream response head accepted.
const MAX_RESPONSE_HEAD: usize = 64 << 10;
/// How much is read from an upstream at once.
pub(super) const UP_BUFFER: usize = buffers::SIZE;

/// The client side of an exchange: where the answer goes, in its protocol.
pub(super) trait Downstream {
    /// Chunked bodies are passed on decoded (HTTP/2) instead of as they are (HTTP/1.1).
    const DECODES: bool;
    /// The server is shutting down: do not keep the connection.
    fn draining(&self) -> bool;
    /// Writes a whole response rproxy makes itself; false when the client is gone.
    async fn local(
        &mut self,
        status: u16,
        extra: &[(&str, &str)],
        added: &Added<'_>,
        head_only: bool,
    ) -> bool;
    /// Writes the response head and the body bytes that came with it; `end`: nothing follows.
    /// Prepares the response head (kept until `send_head`; the upstream's head need not live
    /// across an await).
    /// `verdict`: compressed or varying (`crate::request::compress`).
    fn prepare_head(&mut self, resp: &ResponseHead<'_, '_>, added: &Added<'_>, verdict: Verdict);
    /// Writes the prepared head and the body bytes that came with it; `end`: nothing follows.
    async fn send_head(&mut self, first: &[u8], end: bool) -> bool;
    async fn body(&mut self, data: &[u8], end: bool) -> bool;
    /// Reads up to `max` more request body bytes into `buf`.
    async fn read_body(&mut self, buf: &mut BytesMut, max: usize) -> Result<usize, Failure>;
    /// The response broke off after its head: the client must not take it as complete.
    fn abort(&mut self);
    /// Resolves when the client has left (HTTP/1.1: end of stream or a reset on its connection;
    /// HTTP/2: the stream reset or the connection gone); pending while it waits. Raced against
    /// the upstream, so that a departed client's request is cancelled there at once (the
    /// upstream connection is closed: the app hears the disconnect).
    async fn gone(&mut self);
}

/// The upstream side of a client connection or stream, kept across its requests.
pub(super) struct UpSide {
    /// Bytes read from the upstream (lent from `buffers` for the time of an exchange).
    pub(super) buf: BytesMut,
    /// The request head (and pre-read body) sent upstream.
    out: Vec<u8>,
    pub(super) timer: Timer,
    /// A decoded chunked body part (for clients that take bodies decoded).
    pub(super) decoded: Vec<u8>,
}

impl UpSide {
    pub fn new() -> UpSide {
        UpSide {
            buf: BytesMut::new(),
            out: Vec::new(),
            timer: Timer::new(),
            decoded: Vec::new(),
        }
    }
}

/// What to do with the client connection after an exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Next {
    KeepAlive,
    Close,
}

impl From<BadResponse> for Failure {
    fn from(e: BadResponse) -> Failure {
        Failure::BadResponse(e.to_string())
    }
}

impl From<ChunkError> for Failure {
    fn from(e: ChunkError) -> Failure {
        Failure::BadResponse(e.to_string())
    }
}

/// What the log line and metrics of a request say.
pub(super) struct Record {
    /// When the exchange started.
    pub(super) start: Instant,
    pub(super) status: u16,
    pub(super) upstream_status: Option<u16>,
    pub(super) server: Option<Arc<Backend>>,
    pub(super) bytes_in: usize,
    pub(super) bytes_out: usize,
    pub(super) upstream_time: Option<Duration>,
    pub(super) error: Option<Failure>,
}

/// Answers the planned request `req` (with `body` read and `rest` bytes of it still to come)
/// and writes its log line.
pub(super) async fn run<D: Downstream>(
    engine: &Engine,
    d: &mut D,
    up: &mut UpSide,
    req: &Request<'_>,
    body: &[u8],
    rest: u64,
    admitted: Admitted,
) -> Next {
    let Admitted { client, plan } = admitted;
    let id = RequestId::of(req.request_id);
    let id = id.as_bytes();
    let mut rec = Record {
        start: Instant::now(),
        status: 0,
        upstream_status: None,
        server: None,
        bytes_in: body.len(),
        bytes_out: 0,
        upstream_time: None,
        error: None,
    };
    up.buf = buffers::take();
    up.out = buffers::take_vec();
    // Refusals keep the connection when the whole body was read.
    let keep = !req.close && rest == 0;
    let (route, pool, next) = match plan {
        Plan::Refuse(route, pool, refusal) => {
            let refused = local::refusal(refusal);
            let extra = refused.headers();
            let next = answer(d, req, &mut rec, refused.status, &extra, keep, id).await;
            (route, pool, next)
        }
        Plan::Forward(fwd) => {
            let (route, pool) = (fwd.route.clone(), fwd.pool.clone());
            let next = forward(engine, d, up, req, body, rest, fwd, client, id, &mut rec).await;
            (route, pool, next)
        }
    };
    buffers::give(std::mem::take(&mut up.buf));
    buffers::give_vec(std::mem::take(&mut up.out));
    let error = rec.error.as_ref().map(|e| e as &dyn std::fmt::Display);
    access::log(&Entry {
        client: Some(client.ip),
        method: req.method,
        host: req.host,
        path: req.path(),
        status: rec.status,
        route: &route.name,
        upstream: &pool.name,
        upstream_protocol: pool.transport.protocol.name(),
        server: rec.server.as_ref().map(|b| b.label.as_str()),
        upstream_status: rec.upstream_status,
        bytes_in: rec.bytes_in,
        bytes_out: rec.bytes_out,
        upstream_time: rec.upstream_time,
        elapsed: rec.start.elapsed(),
        request_id: std::str::from_utf8(id).unwrap_or(""),
        grpc_status: None,
        error,
    });
    next
}

/// Writes a response rproxy makes itself.
async fn answer<D: Downstream>(
    d: &mut D,
    req: &Request<'_>,
    rec: &mut Record,
    status: u16,
    extra: &[(&str, &str)],
    keep: bool,
    id: &[u8],
) -> Next {
    let keep = keep && !d.draining();
    let date = pingora_core::protocols::http::date::get_cached_date();
    let added = Added {
        keep_alive: keep,
        request_id: id,
        hsts: None,
        date: date.as_bytes(),
        set_cookie: None,
    };
    rec.status = status;
    let written = d.local(status, extra, &added, req.is_head()).await;
    if keep && written {
        Next::KeepAlive
    } else {
        Next::Close
    }
}

/// Sends the request upstream (retrying as configured) and relays the response.
#[allow(clippy::too_many_arguments)]
async fn forward<D: Downstream>(
    engine: &Engine,
    d: &mut D,
    up: &mut UpSide,
    req: &Request<'_>,
    body: &[u8],
    rest: u64,
    fwd: Forward,
    addr: ClientAddr,
    id: &[u8],
    rec: &mut Record,
) -> Next {
    let Forward {
        rt,
        route,
        pool,
        mut backend,
        _inflight,
    } = fwd;
    let client = Client {
        addr,
        proto: engine.listener.proto(),
        request_id: id,
    };
    up.out.clear();
    let target = route.upstream_path(req.target);
    head::write_upstream_request(&mut up.out, req, &target, &client, &route);
    up.out.extend_from_slice(body);
    let replayable = rest == 0 && req.is_idempotent();
    let mut attempts = Attempts::new(pool.peer.retries);
    let mut fresh = false;
    // The clock is read as rarely as it can be (a read costs ~30 ns here): the first attempt
    // starts with the exchange.
    let mut started = rec.start;
    loop {
        let server = backend.backend().clone();
        rec.server = Some(server.clone());
        let (failure, reused) = match attempt(d, up, &server, &pool.peer, fresh, rest, rec).await {
            Ok(stream) => {
                let head_at = Instant::now();
                rec.upstream_time = Some(head_at - started);
                server.record_success();
                let https = engine.listener == Listener::Https;
                let cookie = pool.sticky_cookie(&server, sticky_value(req, &pool), https);
                let relay = Relay {
                    set_cookie: cookie.as_deref(),
                    listener: engine.listener,
                    route: &route,
                    peer: &pool.peer,
                    server: &server,
                    head_at,
                    id,
                };
                drop(rt);
                return relay.run(d, up, req, stream, rec, &mut backend).await;
            }
            Err(f) => f,
        };
        if failure.counts_against_server(reused) {
            pool.report_failure(&server);
        }
        if failure.is_clients() {
            tracing::debug!(upstream = %pool.name, server = %server.label, "{failure}");
        } else if reused {
            tracing::debug!(upstream = %pool.name, server = %server.label, "reused connection: {failure}");
        } else {
            tracing::warn!(upstream = %pool.name, server = %server.label, "{failure}");
        }
        started = Instant::now();
        match attempts.after(&failure, server.addr, replayable, reused) {
            AfterFailure::Stop => return fail(d, req, rec, failure, id).await,
            // A stale pooled connection: the same server again, on a new connection.
            AfterFailure::Again => fresh = true,
            AfterFailure::Elsewhere => {
                fresh = false;
                let key = SelectKey {
                    client_ip: Some(addr.ip),
                    uri: req.target,
                    sticky: sticky_value(req, &pool),
                };
                match pool.select(&key, attempts.tried()) {
                    Some(next) => backend = next.begin(),
                    None => return fail(d, req, rec, failure, id).await,
                }
            }
        }
    }
}

/// Answers a failed exchange (nothing has reached the client yet) and closes.
pub(super) async fn fail<D: Downstream>(
    d: &mut D,
    req: &Request<'_>,
    rec: &mut Record,
    failure: Failure,
    id: &[u8],
) -> Next {
    let status = failure.status();
    rec.status = failure.logged_status(0);
    rec.error = Some(failure);
    if status != 0 {
        answer(d, req, rec, status, &[], false, id).await;
    }
    Next::Close
}

/// One try on one server: connect (or reuse), send, read the response head into `up.buf`.
/// The error says whether the connection was a reused one.
async fn attempt<D: Downstream>(
    d: &mut D,
    up: &mut UpSide,
    server: &Arc<Backend>,
    peer: &PeerSettings,
    fresh: bool,
    rest: u64,
    rec: &mut Record,
) -> Result<TcpStream, (Failure, bool)> {
    let pooled = if fresh {
        None
    } else {
        pool::take(server, rec.start)
    };
    let reused = pooled.is_some();
    let mut stream = match pooled {
        Some(s) => s,
        None => connect(&mut up.timer, server.addr, peer.connect_timeout)
            .await
            .map_err(|f| (f, false))?,
    };
    let sent = async {
        send_up(&mut up.timer, &mut stream, &up.out, peer, Failure::Reset).await?;
        if rest > 0 {
            stream_body(d, up, &mut stream, rest, peer, rec).await?;
        }
        up.buf.clear();
        // The upstream first: a client's end is looked for only while its answer is not there.
        tokio::select! {
            biased;
            head = read_response_head(up, &mut stream, peer.read_timeout) => head,
            () = d.gone() => Err(Failure::ClientGone("left before the response")),
        }
    };
    sent.await.map_err(|f| (f, reused))?;
    Ok(stream)
}

async fn connect(
    timer: &mut Timer,
    addr: SocketAddr,
    limit: Duration,
) -> Result<TcpStream, Failure> {
    match timer.within(limit, TcpStream::connect(addr)).await {
        Ok(Ok(s)) => {
            let _ = s.set_nodelay(true);
            Ok(s)
        }
        Ok(Err(e)) => Err(Failure::Connect(e.to_string())),
        Err(Elapsed) => Err(Failure::ConnectTimeout),
    }
}

/// Copies the rest of a large request body from the client to the upstream.
async fn stream_body<D: Downstream>(
    d: &mut D,
    up: &mut UpSide,
    stream: &mut TcpStream,
    mut rest: u64,
    peer: &PeerSettings,
    rec: &mut Record,
) -> Result<(), Failure> {
    while rest > 0 {
        up.buf.clear();
        up.buf.reserve(buffers::BODY);
        let want = usize::try_from(rest).map_or(buffers::BODY, |r| r.min(buffers::BODY));
        let n = d.read_body(&mut up.buf, want).await?;
        rest -= n as u64;
        rec.bytes_in += n;
        send_up(&mut up.timer, stream, &up.buf, peer, Failure::Truncated).await?;
    }
    Ok(())
}

/// Writes `data` to the upstream within `write_timeout`; a failed write is `broken`.
async fn send_up(
    timer: &mut Timer,
    stream: &mut TcpStream,
    data: &[u8],
    peer: &PeerSettings,
    broken: Failure,
) -> Result<(), Failure> {
    match timer
        .within(peer.write_timeout, stream.write_all(data))
        .await
    {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err(broken),
        Err(Elapsed) => Err(Failure::WriteTimeout),
    }
}

/// Reads until `up.buf` (empty, or holding the start of a head) holds a complete response head.
pub(super) async fn read_response_head(
    up: &mut UpSide,
    stream: &mut TcpStream,
    limit: Duration,
) -> Result<(), Failure> {
    loop {
        if up.buf.capacity() - up.buf.len() < 1024 {
            up.buf.reserve(UP_BUFFER);
        }
        match up.timer.within(limit, stream.read_buf(&mut up.buf)).await {
            Ok(Ok(n)) if n > 0 => {}
            Ok(_) if up.buf.is_empty() => return Err(Failure::Reset),
            Ok(_) => return Err(Failure::Truncated),
            Err(Elapsed) => return Err(Failure::Timeout),
        }
        if head::head_end(&up.buf).is_some() {
            return Ok(());
        }
        if up.buf.len() > MAX_RESPONSE_HEAD {
            return Err(BadResponse::Unparsable.into());
        }
    }
}
