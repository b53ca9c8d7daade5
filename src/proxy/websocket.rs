//! WebSocket upgrades, carried by rproxy itself instead of pingora's proxy loop (pingora #946:
//! a 101 sent before the request is read can end the tunnel). We write the handshake upstream,
//! relay the answer, then pump bytes both ways until either side closes or the tunnel has been
//! quiet for the route's `websocket_idle_timeout`.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use pingora_error::{Error, ErrorType, OrErr, Result};
use pingora_http::ResponseHeader;
use pingora_proxy::Session;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{sleep_until, timeout, Instant};

use crate::metrics;
use crate::request::headers;

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

/// Relays the upstream's answer and, on 101, carries the tunnel to its end. Returns the status.
pub async fn relay(
    session: &mut Session,
    mut upstream: TcpStream,
    route: &str,
    request_id: &http::HeaderValue,
    t: Timeouts,
) -> Result<u16> {
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
    let mut resp = resp;
    resp.insert_header("x-request-id", request_id.clone())?;
    session.write_response_header(Box::new(resp), false).await?;
    if status != 101 {
        relay_plain_body(session, upstream, rest, body_len).await?;
        return Ok(status);
    }
    metrics::websocket_opened(route);
    let result = pump(session, upstream, rest, t.idle).await;
    metrics::websocket_closed(route);
    if let Err(e) = &result {
        tracing::debug!(route, "WebSocket tunnel ended: {e}");
    }
    Ok(101)
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
    let content_length = headers::content_length(&*parsed.headers).or_err(
        ErrorType::InvalidHTTPHeader,
        "bad Content-Length in the handshake answer",
    )?;
    let mut chunked = false;
    for h in parsed.headers.iter() {
        chunked |= headers::kind(h.name) == headers::Kind::TransferEncoding;
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
