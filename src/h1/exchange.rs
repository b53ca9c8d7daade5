//! One request on the fast path, from its plan to its log line: refusals answered locally,
//! upstream attempts (pooled or new connection, retries as on pingora's path), the response
//! head rewritten and the body relayed as it arrives.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Buf;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::body::{ChunkError, Framing, Progress};
use super::head::{self, Added, BadResponse, Client, RequestHead};
use super::timer::{Elapsed, Timer};
use super::{head_end, pool, Conn, Engine, Forward, Next, Plan};
use crate::proxy::access::{self, Entry};
use crate::proxy::{self, Listener, Refusal};
use crate::routing::Route;
use crate::upstream::{Backend, PeerSettings, SelectKey};

/// The longest upstream response head accepted.
const MAX_RESPONSE_HEAD: usize = 64 << 10;
/// The upstream read buffer's size.
const UP_BUFFER: usize = 16 << 10;

/// Why an exchange did not complete.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    #[error("connect failed: {0}")]
    Connect(std::io::Error),
    #[error("connect timed out")]
    ConnectTimeout,
    #[error("upstream closed or reset before responding")]
    Reset,
    #[error("upstream read timed out")]
    Timeout,
    #[error("upstream write timed out")]
    WriteTimeout,
    #[error("bad upstream response: {0}")]
    Bad(#[from] BadResponse),
    #[error("upstream response body: {0}")]
    Chunks(#[from] ChunkError),
    #[error("upstream ended the response early")]
    Truncated,
    #[error("client request body: {0}")]
    Client(&'static str),
}

impl Failure {
    /// The status the client gets when nothing has been sent to it yet; 0 = none.
    fn status(&self) -> u16 {
        match self {
            Failure::ConnectTimeout | Failure::Timeout | Failure::WriteTimeout => 504,
            Failure::Client("timed out") => 408,
            Failure::Client(_) => 0,
            _ => 502,
        }
    }
}

/// What the log line and metrics of a request say.
#[derive(Default)]
struct Record {
    status: u16,
    upstream_status: Option<u16>,
    server: Option<Arc<Backend>>,
    bytes_in: usize,
    bytes_out: usize,
    upstream_time: Option<Duration>,
    error: Option<Failure>,
}

/// Answers the planned request `h` and writes its log line.
pub(super) async fn run(
    engine: &Engine,
    conn: &mut Conn,
    h: &RequestHead<'_, '_>,
    body: &[u8],
    rest: u64,
    plan: Plan,
) -> Next {
    let start = std::time::Instant::now();
    let generated;
    let id: &[u8] = match h.request_id {
        Some(id) if proxy::usable_request_id(id) => id,
        _ => {
            generated = proxy::new_request_id();
            &generated
        }
    };
    let mut rec = Record {
        bytes_in: body.len(),
        ..Record::default()
    };
    // Refusals keep the connection when the whole body was read.
    let keep = !h.close && rest == 0;
    let (route, pool, next) = match plan {
        Plan::Elsewhere => return Next::Elsewhere,
        Plan::Refuse(Refusal::RateLimited(after)) => {
            let after = after.to_string();
            let extra = [("retry-after", after.as_str())];
            let next = local(conn, h, &mut rec, 429, &extra, keep, id).await;
            (None, None, next)
        }
        Plan::Refuse(Refusal::Busy) => {
            let next = local(conn, h, &mut rec, 503, RETRY, keep, id).await;
            (None, None, next)
        }
        Plan::NoServer(route, pool) => {
            let next = local(conn, h, &mut rec, 503, RETRY, keep, id).await;
            (Some(route), Some(pool), next)
        }
        Plan::Forward(fwd) => {
            let (route, pool) = (fwd.route.clone(), fwd.pool.clone());
            let next = forward(engine, conn, h, body, rest, fwd, id, &mut rec).await;
            (Some(route), Some(pool), next)
        }
    };
    let route_name = route.as_ref().map_or("", |r| r.name.as_str());
    let error = rec.error.as_ref().map(|e| e as &dyn std::fmt::Display);
    access::log(&Entry {
        client: Some(conn.ip),
        method: h.method,
        host: h.host,
        path: h.path(),
        status: rec.status,
        route: route_name,
        upstream: pool.as_ref().map_or("", |p| p.name.as_str()),
        server: rec.server.as_ref().map(|b| b.label.as_str()),
        upstream_status: rec.upstream_status,
        bytes_in: rec.bytes_in,
        bytes_out: rec.bytes_out,
        upstream_time: rec.upstream_time,
        elapsed: start.elapsed(),
        request_id: std::str::from_utf8(id).unwrap_or(""),
        error,
    });
    next
}

const RETRY: &[(&str, &str)] = &[("retry-after", "1")];

/// Writes a response rproxy makes itself.
async fn local(
    conn: &mut Conn,
    h: &RequestHead<'_, '_>,
    rec: &mut Record,
    status: u16,
    extra: &[(&str, &str)],
    keep: bool,
    id: &[u8],
) -> Next {
    let keep = keep && !*conn.shutdown.borrow();
    let date = pingora_core::protocols::http::date::get_cached_date();
    let added = Added {
        keep_alive: keep,
        request_id: id,
        hsts: None,
        date: date.as_bytes(),
    };
    conn.out.clear();
    head::write_local_response(&mut conn.out, status, extra, &added, h.is_head());
    rec.status = status;
    let written = write_client(&mut conn.io, &mut conn.timer, &conn.out).await;
    if keep && written {
        Next::KeepAlive
    } else {
        Next::Close
    }
}

/// Sends the request upstream (retrying as configured) and relays the response.
#[allow(clippy::too_many_arguments)]
async fn forward(
    engine: &Engine,
    conn: &mut Conn,
    h: &RequestHead<'_, '_>,
    body: &[u8],
    rest: u64,
    fwd: Forward,
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
        ip: conn.ip,
        proto: engine.listener.proto(),
        request_id: id,
    };
    conn.out.clear();
    head::write_upstream_request(
        &mut conn.out,
        h,
        &route.upstream_path(h.target),
        &client,
        &route,
    );
    conn.out.extend_from_slice(body);
    let replayable = rest == 0 && h.is_idempotent();
    let mut retries = pool.peer.retries;
    let mut tried: Vec<SocketAddr> = Vec::new();
    let mut fresh = false;
    loop {
        let server = backend.backend().clone();
        rec.server = Some(server.clone());
        let started = std::time::Instant::now();
        let failure = match attempt(conn, server.addr, &pool.peer, fresh, rest, rec).await {
            Ok(up) => {
                rec.upstream_time = Some(started.elapsed());
                server.record_success();
                let relay = Relay {
                    listener: engine.listener,
                    route: &route,
                    peer: &pool.peer,
                    addr: server.addr,
                    id,
                };
                drop(rt);
                return relay.run(conn, h, up, rec).await;
            }
            Err(f) => f,
        };
        let (again, same_server) = match &failure.0 {
            Failure::Connect(_) | Failure::ConnectTimeout => (true, false),
            Failure::Reset => (replayable, failure.1),
            _ => (false, false),
        };
        if !failure.1
            && matches!(
                failure.0,
                Failure::Connect(_) | Failure::ConnectTimeout | Failure::Reset
            )
        {
            pool.report_failure(&server);
        }
        if failure.1 {
            tracing::debug!(upstream = %pool.name, server = %server.label, "reused connection: {}", failure.0);
        } else {
            tracing::warn!(upstream = %pool.name, server = %server.label, "{}", failure.0);
        }
        if !again || retries == 0 {
            return fail(conn, h, rec, failure.0, id).await;
        }
        retries -= 1;
        fresh = same_server;
        if !same_server {
            tried.push(server.addr);
            let key = SelectKey {
                client_ip: Some(conn.ip),
                uri: h.target,
            };
            match pool.select(&key, &tried) {
                Some(next) => backend = next.begin(),
                None => return fail(conn, h, rec, failure.0, id).await,
            }
        }
    }
}

/// Answers a failed exchange (nothing has reached the client yet) and closes.
async fn fail(
    conn: &mut Conn,
    h: &RequestHead<'_, '_>,
    rec: &mut Record,
    failure: Failure,
    id: &[u8],
) -> Next {
    let status = failure.status();
    rec.error = Some(failure);
    if status == 0 {
        return Next::Close;
    }
    let extra: &[(&str, &str)] = if status == 503 { RETRY } else { &[] };
    local(conn, h, rec, status, extra, false, id).await;
    Next::Close
}

/// One try on one server: connect (or reuse), send, read the response head into `up_buf`.
/// The error says whether the connection was a reused one.
async fn attempt(
    conn: &mut Conn,
    addr: SocketAddr,
    peer: &PeerSettings,
    fresh: bool,
    rest: u64,
    rec: &mut Record,
) -> Result<TcpStream, (Failure, bool)> {
    let pooled = if fresh { None } else { pool::take(addr) };
    let reused = pooled.is_some();
    let mut up = match pooled {
        Some(s) => s,
        None => connect(&mut conn.timer, addr, peer.connect_timeout)
            .await
            .map_err(|f| (f, false))?,
    };
    let sent = async {
        let w = conn
            .timer
            .within(peer.write_timeout, up.write_all(&conn.out))
            .await;
        match w {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return Err(Failure::Reset),
            Err(Elapsed) => return Err(Failure::WriteTimeout),
        }
        if rest > 0 {
            stream_body(conn, &mut up, rest, peer, rec).await?;
        }
        conn.up_buf.clear();
        read_response_head(conn, &mut up, peer.read_timeout).await
    };
    sent.await.map_err(|f| (f, reused))?;
    Ok(up)
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
        Ok(Err(e)) => Err(Failure::Connect(e)),
        Err(Elapsed) => Err(Failure::ConnectTimeout),
    }
}

/// Copies the rest of a large request body from the client to the upstream.
async fn stream_body(
    conn: &mut Conn,
    up: &mut TcpStream,
    mut rest: u64,
    peer: &PeerSettings,
    rec: &mut Record,
) -> Result<(), Failure> {
    let limit = conn.body_timeout;
    while rest > 0 {
        conn.up_buf.clear();
        conn.up_buf.reserve(UP_BUFFER);
        let want = usize::try_from(rest).map_or(UP_BUFFER, |r| r.min(UP_BUFFER));
        let mut chunk = (&mut conn.io).take(want as u64);
        let n = match conn
            .timer
            .within(limit, chunk.read_buf(&mut conn.up_buf))
            .await
        {
            Ok(Ok(n)) if n > 0 => n,
            Ok(_) => return Err(Failure::Client("closed early")),
            Err(Elapsed) => return Err(Failure::Client("timed out")),
        };
        rest -= n as u64;
        rec.bytes_in += n;
        match conn
            .timer
            .within(peer.write_timeout, up.write_all(&conn.up_buf))
            .await
        {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return Err(Failure::Truncated),
            Err(Elapsed) => return Err(Failure::WriteTimeout),
        }
    }
    Ok(())
}

/// Reads until `up_buf` (empty, or holding the start of a head) holds a complete response head.
async fn read_response_head(
    conn: &mut Conn,
    up: &mut TcpStream,
    limit: Duration,
) -> Result<(), Failure> {
    loop {
        if conn.up_buf.capacity() - conn.up_buf.len() < 1024 {
            conn.up_buf.reserve(UP_BUFFER);
        }
        match conn
            .timer
            .within(limit, up.read_buf(&mut conn.up_buf))
            .await
        {
            Ok(Ok(n)) if n > 0 => {}
            Ok(_) if conn.up_buf.is_empty() => return Err(Failure::Reset),
            Ok(_) => return Err(Failure::Truncated),
            Err(Elapsed) => return Err(Failure::Timeout),
        }
        if head_end(&conn.up_buf).is_some() {
            return Ok(());
        }
        if conn.up_buf.len() > MAX_RESPONSE_HEAD {
            return Err(Failure::Bad(BadResponse::Unparsable));
        }
    }
}

/// Writes `data` to the client and flushes it; false when the client is gone or stalled.
async fn write_client(
    io: &mut Box<pingora_core::protocols::l4::stream::Stream>,
    timer: &mut Timer,
    data: &[u8],
) -> bool {
    let write = async {
        io.write_all(data).await?;
        io.flush().await
    };
    matches!(timer.within(CLIENT_WRITE_TIMEOUT, write).await, Ok(Ok(())))
}

/// How long a client may keep a response waiting by not reading it.
const CLIENT_WRITE_TIMEOUT: Duration = Duration::from_secs(60);

/// Passes one upstream response on to the client.
struct Relay<'a> {
    listener: Listener,
    route: &'a Route,
    peer: &'a PeerSettings,
    addr: SocketAddr,
    id: &'a [u8],
}

impl Relay<'_> {
    async fn run(
        &self,
        conn: &mut Conn,
        h: &RequestHead<'_, '_>,
        mut up: TcpStream,
        rec: &mut Record,
    ) -> Next {
        let (mut body, upstream_close, keep) = match self.head(conn, h, &mut up).await {
            Ok(v) => v,
            Err(f) => {
                tracing::warn!(server = %self.addr, "{f}");
                return fail(conn, h, rec, f, self.id).await;
            }
        };
        rec.status = body.code;
        rec.upstream_status = Some(body.code);
        let mut done = body.progress.is_done();
        if !write_client(&mut conn.io, &mut conn.timer, &conn.out).await {
            return Next::Close;
        }
        rec.bytes_out += body.first;
        let mut clean = body.extra == 0;
        while !done {
            conn.up_buf.clear();
            conn.up_buf.reserve(UP_BUFFER);
            let read = conn
                .timer
                .within(self.peer.read_timeout, up.read_buf(&mut conn.up_buf));
            let n = match read.await {
                Ok(Ok(n)) if n > 0 => n,
                Ok(_) if body.framing == Framing::UntilClose => break,
                _ => {
                    rec.error = Some(Failure::Truncated);
                    return Next::Close;
                }
            };
            let used = match body.progress.feed(&conn.up_buf[..n]) {
                Ok(used) => used,
                Err(e) => {
                    rec.error = Some(Failure::Chunks(e));
                    return Next::Close;
                }
            };
            clean = used == n;
            done = body.progress.is_done();
            if !write_client(&mut conn.io, &mut conn.timer, &conn.up_buf[..used]).await {
                return Next::Close;
            }
            rec.bytes_out += used;
        }
        if done && clean && !upstream_close {
            pool::put(self.addr, up, self.peer.idle_timeout);
        }
        if keep && done {
            Next::KeepAlive
        } else {
            Next::Close
        }
    }

    /// Parses the response head in `up_buf` (skipping 1xx interim responses), writes the head
    /// for the client into `out` with the body bytes that came with it.
    async fn head(
        &self,
        conn: &mut Conn,
        h: &RequestHead<'_, '_>,
        up: &mut TcpStream,
    ) -> Result<(Body, bool, bool), Failure> {
        loop {
            let mut storage = [httparse::EMPTY_HEADER; head::MAX_HEADERS];
            let resp = head::parse_response(&conn.up_buf, &mut storage)?
                .ok_or(Failure::Bad(BadResponse::Unparsable))?;
            if resp.code == 101 {
                return Err(Failure::Bad(BadResponse::Unparsable));
            }
            if resp.code < 200 {
                // Interim responses (100, 103) are not passed on.
                let len = resp.len;
                conn.up_buf.advance(len);
                if head_end(&conn.up_buf).is_none() {
                    read_response_head(conn, up, self.peer.read_timeout)
                        .await
                        .map_err(|e| match e {
                            Failure::Reset => Failure::Truncated,
                            e => e,
                        })?;
                }
                continue;
            }
            let framing = resp.framing(h.is_head());
            let keep = !h.close && framing != Framing::UntilClose && !*conn.shutdown.borrow();
            let date = pingora_core::protocols::http::date::get_cached_date();
            let hsts = (self.listener == Listener::Https && self.route.hsts)
                .then_some(crate::proxy::static_files::HSTS);
            let added = Added {
                keep_alive: keep,
                request_id: self.id,
                hsts,
                date: date.as_bytes(),
            };
            let mut progress = Progress::new(framing);
            let avail = &conn.up_buf[resp.len..];
            let first = progress.feed(avail)?;
            conn.out.clear();
            head::write_client_response(&mut conn.out, &resp, &added);
            conn.out.extend_from_slice(&avail[..first]);
            let body = Body {
                code: resp.code,
                framing,
                progress,
                first,
                extra: avail.len() - first,
            };
            return Ok((body, resp.close, keep));
        }
    }
}

/// The response body as it starts.
struct Body {
    code: u16,
    framing: Framing,
    progress: Progress,
    /// Body bytes that came with the head.
    first: usize,
    /// Bytes after the end of the message (the upstream is out of step: not reused).
    extra: usize,
}
