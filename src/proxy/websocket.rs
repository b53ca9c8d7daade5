//! WebSocket tunnels, carried by rproxy itself instead of pingora's proxy loop (pingora #946:
//! a 101 sent before the request is read can end the tunnel): an HTTP/1.1 upgrade, or an
//! HTTP/2 extended CONNECT (RFC 8441) made into an HTTP/1.1 handshake upstream. We write the
//! handshake upstream, relay the answer (a 101 becomes an h2 `200`), then pump bytes both ways
//! (the h1 connection's, or the h2 stream's DATA frames) until either side closes or the tunnel
//! has been quiet for the route's `websocket_idle_timeout`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use pingora_error::{Error, ErrorType, OrErr, Result};
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::Session;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{sleep_until, timeout, Instant};

use super::{headers, Ctx, Proxy};
use crate::metrics;
use crate::request::failure::Next;
use crate::request::headers::{self as rules, Upgrade};
use crate::request::websocket::{self as ws, Connect};
use crate::request::Failure;
use crate::routing::{Route, Target};

const MAX_HEAD: usize = 64 << 10;

/// Timeouts of one tunnel.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    pub connect: Duration,
    pub handshake: Duration,
    pub idle: Duration,
}

/// Opens the upstream connection and sends the handshake. Errors are upstream errors
/// (connect failures are retryable by the caller).
pub async fn connect(addr: SocketAddr, head: &[u8], t: Timeouts) -> Result<TcpStream> {
    let mut stream = match timeout(t.connect, TcpStream::connect(addr)).await {
        Ok(s) => s.or_err(ErrorType::ConnectRefused, "connecting for a WebSocket")?,
        Err(_) => {
            return Error::e_explain(ErrorType::ConnectTimedout, "connecting for a WebSocket")
        }
    };
    stream
        .write_all(head)
        .await
        .or_err(ErrorType::WriteError, "sending the WebSocket handshake")?;
    Ok(stream)
}

/// What a request makes of CONNECT: an ordinary request, an RFC 8441 WebSocket, or a refusal.
pub fn connect_of(req: &RequestHeader) -> Connect {
    let protocol = req.extensions.get::<h2::ext::Protocol>();
    ws::connect(&req.method, protocol.map(h2::ext::Protocol::as_str))
}

/// Does `route` carry WebSockets (an HTTP/2 one is refused where an HTTP/1.1 upgrade would be
/// forwarded as a plain request)?
pub fn carries_websockets(route: &Route) -> bool {
    route.websocket && matches!(route.target, Target::Upstream(_))
}

impl Proxy {
    /// Carries a WebSocket handshake end to end: the client's HTTP/1.1 upgrade, or (`h2`) an
    /// HTTP/2 extended CONNECT. Tries the pool's servers while connecting fails.
    pub(super) async fn websocket(
        &self,
        session: &mut Session,
        ctx: &mut Ctx,
        route: &Arc<Route>,
        h2: bool,
    ) -> Result<bool> {
        let Some(pool) = ctx.pool.clone() else {
            return Ok(false);
        };
        let key = h2.then(ws::new_key);
        let upgrade = match &key {
            Some(key) => Upgrade::FromH2 {
                key: key.as_bytes(),
            },
            None => Upgrade::Client,
        };
        let head = headers::handshake(session.req_header(), &self.client(ctx), route, upgrade);
        let timeouts = Timeouts {
            connect: pool.peer.connect_timeout,
            handshake: pool.peer.read_timeout,
            idle: route.websocket_idle_timeout,
        };
        session.set_read_timeout(None);
        loop {
            let Some(backend) = ctx.backend.as_ref().map(|b| b.backend().clone()) else {
                return self.local(session, ctx, 502, &[]).await;
            };
            match connect(backend.addr, &head, timeouts).await {
                Ok(stream) => {
                    let tunnel = Tunnel {
                        route: &route.name,
                        request_id: &ctx.request_id,
                        upgrade,
                        t: timeouts,
                    };
                    let status = relay(session, stream, tunnel).await.unwrap_or_else(|e| {
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
                    let failure = Failure::from_pingora(&e);
                    let next = ctx.attempts.after(&failure, backend.addr, false, false);
                    if next == Next::Stop || !self.pick(session, ctx) {
                        return self.local(session, ctx, failure.status(), &[]).await;
                    }
                }
            }
        }
    }
}

/// One tunnel's settings.
#[derive(Clone, Copy)]
struct Tunnel<'a> {
    route: &'a str,
    request_id: &'a http::HeaderValue,
    /// `Upgrade::Client` for an HTTP/1.1 client, `Upgrade::FromH2` for an HTTP/2 one.
    upgrade: Upgrade<'a>,
    t: Timeouts,
}

/// Relays the upstream's answer and, on 101, carries the tunnel to its end. Returns the status.
async fn relay(session: &mut Session, mut upstream: TcpStream, tunnel: Tunnel<'_>) -> Result<u16> {
    let t = tunnel.t;
    let (resp, rest, body_len) = match timeout(t.handshake, read_head(&mut upstream)).await {
        Ok(r) => r?,
        Err(_) => {
            return Error::e_explain(
                ErrorType::ReadTimedout,
                "waiting for the WebSocket handshake answer",
            )
        }
    };
    let status = resp.status.as_u16();
    let mut resp = match tunnel.upgrade {
        Upgrade::FromH2 { key } => h2_answer(resp, key)?,
        _ => resp,
    };
    resp.insert_header("x-request-id", tunnel.request_id.clone())?;
    session.write_response_header(Box::new(resp), false).await?;
    if status != 101 {
        relay_plain_body(session, upstream, rest, body_len).await?;
        return Ok(status);
    }
    let route = tunnel.route;
    metrics::websocket_opened(route);
    let result = pump(session, upstream, rest, t.idle).await;
    metrics::websocket_closed(route);
    if let Err(e) = &result {
        tracing::debug!(route, "WebSocket tunnel ended: {e}");
    }
    Ok(101)
}

/// The HTTP/2 answer to an extended CONNECT, made from the upstream's answer to its HTTP/1.1
/// handshake: a 101 that accepts `key` becomes `200` (RFC 8441 5) without the handshake's own
/// lines; any other answer but a 2xx (a tunnel that is not there) goes as it is.
fn h2_answer(resp: ResponseHeader, key: &[u8]) -> Result<ResponseHeader> {
    let status = resp.status.as_u16();
    if status != 101 {
        if resp.status.is_success() {
            return Error::e_explain(
                ErrorType::InvalidHTTPHeader,
                format!("upstream answered a WebSocket handshake with {status}"),
            );
        }
        return Ok(resp);
    }
    let accept = resp.headers.get("sec-websocket-accept");
    if !ws::accepts(key, accept.map(http::HeaderValue::as_bytes)) {
        return Error::e_explain(
            ErrorType::InvalidHTTPHeader,
            "upstream's Sec-WebSocket-Accept does not match the key sent",
        );
    }
    let mut out = ResponseHeader::build(200, Some(resp.headers.len()))?;
    for (name, value) in resp.headers.iter() {
        if !ws::not_in_h2_answer(name.as_str()) {
            out.append_header(name.clone(), value.clone())?;
        }
    }
    Ok(out)
}

/// Copies bytes both ways; ends on EOF from the upstream, an error, or `idle` without traffic.
async fn pump(
    session: &mut Session,
    upstream: TcpStream,
    first: Bytes,
    idle: Duration,
) -> Result<()> {
    let (mut up_read, mut up_write) = upstream.into_split();
    if !first.is_empty() {
        session.write_response_body(Some(first), false).await?;
    }
    let mut buf = vec![0u8; 16 << 10];
    let mut deadline = Instant::now() + idle;
    let mut client_open = true;
    loop {
        tokio::select! {
            from_client = session.read_request_body(), if client_open => {
                match from_client? {
                    Some(bytes) => up_write.write_all(&bytes).await.or_err(ErrorType::WriteError, "writing to the upstream")?,
                    None => {
                        // The client is done sending; let the upstream finish its side.
                        client_open = false;
                        let _ = up_write.shutdown().await;
                    }
                }
            }
            from_upstream = up_read.read(&mut buf) => {
                let n = from_upstream.or_err(ErrorType::ReadError, "reading from the upstream")?;
                if n == 0 {
                    session.write_response_body(None, true).await?;
                    return Ok(());
                }
                session.write_response_body(Some(Bytes::copy_from_slice(&buf[..n])), false).await?;
            }
            _ = sleep_until(deadline) => {
                tracing::debug!("WebSocket idle for {idle:?}; closing");
                return Ok(());
            }
        }
        deadline = Instant::now() + idle;
    }
}

/// Sends a non-101 answer's body (Content-Length or close-delimited) to the client.
async fn relay_plain_body(
    session: &mut Session,
    mut upstream: TcpStream,
    first: Bytes,
    len: Option<u64>,
) -> Result<()> {
    let mut left = len.unwrap_or(u64::MAX);
    let first = first.slice(..first.len().min(usize::try_from(left).unwrap_or(usize::MAX)));
    left -= first.len() as u64;
    session.write_response_body(Some(first), left == 0).await?;
    let mut buf = vec![0u8; 16 << 10];
    while left > 0 {
        let n = upstream
            .read(&mut buf)
            .await
            .or_err(ErrorType::ReadError, "reading from the upstream")?;
        if n == 0 {
            break;
        }
        let n = n.min(usize::try_from(left).unwrap_or(usize::MAX));
        left -= n as u64;
        session
            .write_response_body(Some(Bytes::copy_from_slice(&buf[..n])), left == 0)
            .await?;
    }
    if len.is_none() {
        session.write_response_body(None, true).await?;
    }
    Ok(())
}

/// Reads the upstream's response head; returns it, the bytes after it, and a Content-Length.
async fn read_head(upstream: &mut TcpStream) -> Result<(ResponseHeader, Bytes, Option<u64>)> {
    let mut buf = BytesMut::with_capacity(4096);
    loop {
        let n = upstream
            .read_buf(&mut buf)
            .await
            .or_err(ErrorType::ReadError, "reading the handshake answer")?;
        if n == 0 {
            return Error::e_explain(
                ErrorType::ConnectionClosed,
                "upstream closed during the WebSocket handshake",
            );
        }
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut parsed = httparse::Response::new(&mut headers);
        match parsed.parse(&buf) {
            Ok(httparse::Status::Complete(len)) => {
                let (resp, body_len) = to_response(&parsed)?;
                let rest = buf.split_off(len).freeze();
                return Ok((resp, rest, body_len));
            }
            Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD => continue,
            Ok(httparse::Status::Partial) => {
                return Error::e_explain(
                    ErrorType::InvalidHTTPHeader,
                    "upstream handshake answer too large",
                )
            }
            Err(e) => {
                return Error::e_explain(
                    ErrorType::InvalidHTTPHeader,
                    format!("bad upstream handshake answer: {e}"),
                )
            }
        }
    }
}

fn to_response(parsed: &httparse::Response) -> Result<(ResponseHeader, Option<u64>)> {
    let code = parsed.code.unwrap_or(502);
    let mut resp = ResponseHeader::build(code, Some(parsed.headers.len()))?;
    let content_length = rules::content_length(&*parsed.headers).or_err(
        ErrorType::InvalidHTTPHeader,
        "bad Content-Length in the handshake answer",
    )?;
    let mut chunked = false;
    for h in parsed.headers.iter() {
        chunked |= rules::kind(h.name) == rules::Kind::TransferEncoding;
        resp.append_header(h.name.to_string(), h.value)?;
    }
    if code != 101 && chunked {
        return Error::e_explain(
            ErrorType::InvalidHTTPHeader,
            "chunked answer to a WebSocket handshake is not relayed",
        );
    }
    Ok((resp, if code == 101 { Some(0) } else { content_length }))
}
