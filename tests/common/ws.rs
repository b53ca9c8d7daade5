//! WebSocket for tests: echo upstreams (a tokio-tungstenite one, and a hand-written one that
//! answers `101` the instant it has the request head, as in pingora issue #946) and client
//! helpers with bounded waits.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{Connector, MaybeTlsStream, WebSocketStream};

use super::{read_head, RawUpstream};

/// A client WebSocket over plain TCP or TLS.
pub type ClientWs = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// How long one WebSocket step (connect, one message) may take.
pub const STEP: Duration = Duration::from_secs(10);

/// The first message [`fast_upstream`] sends, before the client has said anything.
pub const GREETING: &str = "hello from a fast upstream";

/// An upstream that accepts WebSocket upgrades (tokio-tungstenite) and echoes every text and
/// binary message; anything that is not an upgrade is closed.
pub async fn echo_upstream() -> RawUpstream {
    RawUpstream::start(|stream| async move {
        let Ok(ws) = tokio_tungstenite::accept_async(stream).await else {
            return;
        };
        echo(ws).await;
    })
    .await
}

/// An upstream that writes `101 Switching Protocols` and a first text frame ([`GREETING`]) in one
/// write the moment it has read the request head, then echoes. This is the timing that breaks
/// tunnels in pingora issue #946.
pub async fn fast_upstream() -> RawUpstream {
    RawUpstream::start(|mut stream| async move {
        let head = read_head(&mut stream).await;
        let Some(key) = header_value(&head, "sec-websocket-key") else {
            let _ = stream
                .write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n")
                .await;
            return;
        };
        let mut out = format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Accept: {}\r\n\r\n",
            derive_accept_key(key.as_bytes())
        )
        .into_bytes();
        // An unmasked server text frame: FIN + opcode 1, then the (short) length.
        out.push(0x81);
        out.push(GREETING.len() as u8);
        out.extend_from_slice(GREETING.as_bytes());
        if stream.write_all(&out).await.is_err() {
            return;
        }
        let ws = WebSocketStream::from_raw_socket(stream, Role::Server, None).await;
        echo(ws).await;
    })
    .await
}

/// Echoes text and binary messages until the peer closes or the connection fails (tungstenite
/// answers a close frame itself while `next` is polled).
async fn echo<S: AsyncRead + AsyncWrite + Unpin>(mut ws: WebSocketStream<S>) {
    while let Some(Ok(msg)) = ws.next().await {
        if (msg.is_text() || msg.is_binary()) && ws.send(msg).await.is_err() {
            return;
        }
    }
}

/// The value of header `name` (case-insensitive) in a raw request head.
fn header_value(head: &str, name: &str) -> Option<String> {
    head.lines().find_map(|line| {
        let (k, v) = line.split_once(':')?;
        k.trim()
            .eq_ignore_ascii_case(name)
            .then(|| v.trim().to_string())
    })
}

/// Opens `ws://...` (no TLS) with a bounded wait.
pub async fn connect(url: &str) -> Result<ClientWs, String> {
    match tokio::time::timeout(STEP, tokio_tungstenite::connect_async(url)).await {
        Err(_) => Err(format!("connect {url}: timed out")),
        Ok(Err(e)) => Err(format!("connect {url}: {e}")),
        Ok(Ok((ws, resp))) if resp.status().as_u16() == 101 => Ok(ws),
        Ok(Ok((_, resp))) => Err(format!("connect {url}: status {}", resp.status())),
    }
}

/// Opens `wss://<host>:<port>/...` over a TCP connection to `addr` (so `host` need not resolve),
/// with `tls` as the client config; SNI is `host`.
pub async fn connect_tls(
    addr: SocketAddr,
    url: &str,
    tls: Arc<rustls::ClientConfig>,
) -> Result<ClientWs, String> {
    let work = async {
        let tcp = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect {addr}: {e}"))?;
        tokio_tungstenite::client_async_tls_with_config(
            url,
            tcp,
            None,
            Some(Connector::Rustls(tls)),
        )
        .await
        .map_err(|e| format!("connect {url}: {e}"))
    };
    match tokio::time::timeout(STEP, work).await {
        Err(_) => Err(format!("connect {url}: timed out")),
        Ok(Err(e)) => Err(e),
        Ok(Ok((ws, resp))) if resp.status().as_u16() == 101 => Ok(ws),
        Ok(Ok((_, resp))) => Err(format!("connect {url}: status {}", resp.status())),
    }
}

/// The next text or binary message within `wait` (pings and pongs are skipped).
pub async fn next_data<S: AsyncRead + AsyncWrite + Unpin>(
    ws: &mut WebSocketStream<S>,
    wait: Duration,
) -> Result<Message, String> {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Err(_) => return Err(format!("no message within {wait:?}")),
            Ok(None) => return Err("connection closed".into()),
            Ok(Some(Err(e))) => return Err(format!("read: {e}")),
            Ok(Some(Ok(m @ (Message::Text(_) | Message::Binary(_))))) => return Ok(m),
            Ok(Some(Ok(Message::Close(frame)))) => {
                return Err(format!("closed by peer: {frame:?}"))
            }
            Ok(Some(Ok(_))) => {}
        }
    }
}

/// Sends `n` messages (alternating text and binary, tagged with `tag`) one at a time and checks
/// each comes back unchanged.
pub async fn echo_roundtrips<S: AsyncRead + AsyncWrite + Unpin>(
    ws: &mut WebSocketStream<S>,
    n: usize,
    tag: &str,
) -> Result<(), String> {
    for i in 0..n {
        let msg = if i % 2 == 0 {
            Message::text(format!("{tag} message {i}"))
        } else {
            Message::binary(format!("{tag} bytes {i}").into_bytes())
        };
        tokio::time::timeout(STEP, ws.send(msg.clone()))
            .await
            .map_err(|_| format!("send {i}: timed out"))?
            .map_err(|e| format!("send {i}: {e}"))?;
        let got = next_data(ws, STEP)
            .await
            .map_err(|e| format!("echo {i}: {e}"))?;
        if got != msg {
            return Err(format!("echo {i}: sent {msg:?}, got {got:?}"));
        }
    }
    Ok(())
}

/// Sends a close frame and waits (bounded) for the connection to finish; errors are ignored.
pub async fn close<S: AsyncRead + AsyncWrite + Unpin>(mut ws: WebSocketStream<S>) {
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        let _ = ws.close(None).await;
        while let Some(Ok(_)) = ws.next().await {}
    })
    .await;
}
