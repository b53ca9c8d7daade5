//! rproxy's own HTTP/1.1 path for plain-text connections: the common request (routed to an
//! upstream pool, with no body or one of known length) is parsed, forwarded and answered here,
//! over per-thread keep-alive upstream connections, for a fraction of the general path's work.
//! Anything else (static files, WebSocket, chunked uploads, redirects, ACME, every 4xx that
//! pingora words) goes, with the bytes already read put back, to pingora's proxy.

pub mod body;
mod exchange;
pub mod head;
pub mod pool;
mod timer;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use pingora_core::protocols::l4::stream::Stream as L4Stream;
use pingora_core::protocols::GetSocketDigest;
use pingora_core::server::ShutdownWatch;
use tokio::io::AsyncReadExt;
use tokio::time::Instant;

use crate::proxy::{self, Listener, Refusal};
use crate::routing::{InflightGuard, Route, Target};
use crate::state::{Runtime, State};
use crate::upstream::{ActiveGuard, Pool, SelectKey};
use head::{Parsed, RequestHead};
use timer::Timer;

/// Bodies up to this size are read whole before the request goes upstream, so a request can
/// be sent again on another connection; larger ones are streamed.
const PREREAD_BODY: u64 = 64 << 10;
/// The client read buffer's size.
const READ_BUFFER: usize = 4096;

/// The fast path of one listener.
pub struct Engine {
    pub state: Arc<State>,
    pub listener: Listener,
}

/// How a connection leaves the fast path.
pub enum Left {
    Closed,
    /// For pingora's proxy, with every byte read so far put back.
    Elsewhere(Box<L4Stream>),
}

/// A client connection on the fast path.
struct Conn {
    io: Box<L4Stream>,
    ip: IpAddr,
    timer: Timer,
    /// The head being written (to the upstream, then to the client).
    out: Vec<u8>,
    /// Bytes read from the upstream.
    up_buf: BytesMut,
    shutdown: ShutdownWatch,
    /// `server.body_timeout` of the configuration the current request runs on.
    body_timeout: Duration,
}

/// What to do after one exchange.
enum Next {
    KeepAlive,
    Close,
    Elsewhere,
}

/// A request the fast path forwards: everything decided before the first upstream byte.
struct Forward {
    rt: Arc<Runtime>,
    route: Arc<Route>,
    pool: Arc<Pool>,
    backend: ActiveGuard,
    _inflight: InflightGuard,
}

/// What `plan` decided.
enum Plan {
    Elsewhere,
    Refuse(Refusal),
    NoServer(Arc<Route>, Arc<Pool>),
    Forward(Forward),
}

impl Engine {
    /// Serves HTTP/1.1 requests on `io` until the connection ends or one is not for this path.
    pub async fn serve(
        &self,
        io: Box<L4Stream>,
        accepted: Instant,
        shutdown: &ShutdownWatch,
    ) -> Left {
        let ip = io
            .get_socket_digest()
            .and_then(|d| d.peer_addr().and_then(|a| a.as_inet()).map(|a| a.ip()));
        let Some(ip) = ip else {
            return Left::Elsewhere(io);
        };
        let mut conn = Conn {
            io,
            ip,
            timer: Timer::new(),
            out: Vec::with_capacity(1024),
            up_buf: BytesMut::new(),
            shutdown: shutdown.clone(),
            body_timeout: Duration::ZERO,
        };
        let mut buf = BytesMut::with_capacity(READ_BUFFER);
        let header_timeout = self.state.peek().settings.header_timeout;
        let mut deadline = Some(accepted + header_timeout);
        loop {
            match self.one(&mut conn, &mut buf, deadline).await {
                Next::KeepAlive => deadline = None,
                Next::Close => return Left::Closed,
                Next::Elsewhere => {
                    conn.io.rewind(&buf);
                    return Left::Elsewhere(conn.io);
                }
            }
        }
    }

    /// Reads one request head (by `deadline`, or after an idle wait when `None`) and answers it.
    async fn one(&self, conn: &mut Conn, buf: &mut BytesMut, deadline: Option<Instant>) -> Next {
        let settings = self.state.peek().settings.clone();
        conn.body_timeout = settings.body_timeout;
        match read_head(conn, buf, deadline, &settings).await {
            None => return Next::Close,
            Some(false) => return Next::Elsewhere,
            Some(true) => {}
        }
        {
            let mut storage = [httparse::EMPTY_HEADER; head::MAX_HEADERS];
            let Parsed::Complete(h) = head::parse_request(buf, &mut storage) else {
                return Next::Elsewhere;
            };
            let whole = h.len as u64 + h.content_length;
            // A small body is read whole first (see PREREAD_BODY), then the head parsed again.
            if h.content_length > PREREAD_BODY || buf.len() as u64 >= whole {
                let (next, used) = self.dispatch(conn, &h, buf).await;
                consume(buf, used);
                return next;
            }
        }
        let whole = match head::parse_request(buf, &mut [httparse::EMPTY_HEADER; head::MAX_HEADERS])
        {
            Parsed::Complete(h) => h.len + h.content_length as usize,
            _ => return Next::Elsewhere,
        };
        if !read_body(conn, buf, whole, settings.body_timeout).await {
            return Next::Close;
        }
        let mut storage = [httparse::EMPTY_HEADER; head::MAX_HEADERS];
        let Parsed::Complete(h) = head::parse_request(buf, &mut storage) else {
            return Next::Elsewhere;
        };
        let (next, used) = self.dispatch(conn, &h, buf).await;
        consume(buf, used);
        next
    }

    /// Plans and answers the request `h` (head and any body bytes in `buf`); returns what to do
    /// next and how many bytes of `buf` the request used.
    async fn dispatch(
        &self,
        conn: &mut Conn,
        h: &RequestHead<'_, '_>,
        buf: &[u8],
    ) -> (Next, usize) {
        let body_here =
            (buf.len() - h.len).min(usize::try_from(h.content_length).unwrap_or(usize::MAX));
        let body = &buf[h.len..h.len + body_here];
        let rest = h.content_length - body_here as u64;
        match self.plan(h, conn.ip) {
            Plan::Elsewhere => (Next::Elsewhere, 0),
            plan => {
                let next = exchange::run(self, conn, h, body, rest, plan).await;
                (next, h.len + body_here)
            }
        }
    }

    /// Decides, without side effects until it commits, whether and where the request goes.
    fn plan(&self, h: &RequestHead, ip: IpAddr) -> Plan {
        let rt = self.state.runtime();
        let path = h.path();
        if h.len as u64 > rt.settings.max_header_size
            || proxy::redirect_port(self.listener, &rt, h.host, path).is_some()
            || proxy::is_acme_challenge(self.listener, &rt, path)
        {
            return Plan::Elsewhere;
        }
        let Some(route) = rt.routes.lookup(h.host, path).cloned() else {
            return Plan::Elsewhere;
        };
        let Target::Upstream(pool) = &route.target else {
            return Plan::Elsewhere;
        };
        if h.content_length > route.max_body {
            return Plan::Elsewhere;
        }
        let pool = pool.clone();
        let inflight = match proxy::admission(&route, Some(ip)) {
            Ok(guard) => guard,
            Err(refusal) => return Plan::Refuse(refusal),
        };
        let key = SelectKey {
            client_ip: Some(ip),
            uri: h.target,
        };
        let Some(backend) = pool.select(&key, &[]) else {
            tracing::warn!(route = %route.name, upstream = %pool.name, "no healthy server");
            return Plan::NoServer(route, pool);
        };
        Plan::Forward(Forward {
            rt,
            route,
            pool,
            backend: backend.begin(),
            _inflight: inflight,
        })
    }
}

/// Reads until `buf` holds a complete request head. `Some(true)`: complete; `Some(false)`:
/// not for this path (too large); `None`: the connection is done (closed, timed out, draining).
async fn read_head(
    conn: &mut Conn,
    buf: &mut BytesMut,
    mut deadline: Option<Instant>,
    settings: &crate::state::Settings,
) -> Option<bool> {
    loop {
        if head_end(buf).is_some() {
            return Some(true);
        }
        if buf.len() as u64 > settings.max_header_size {
            return Some(false);
        }
        if buf.capacity() - buf.len() < 512 {
            buf.reserve(READ_BUFFER);
        }
        let read = match deadline {
            Some(at) => conn.timer.until(at, conn.io.read_buf(buf)).await,
            None => idle_read(conn, buf, settings.keepalive_timeout).await?,
        };
        match read {
            Ok(Ok(n)) if n > 0 => {}
            _ => return None,
        }
        if deadline.is_none() {
            deadline = Some(Instant::now() + settings.header_timeout);
        }
    }
}

/// Waits on an idle keep-alive connection for the next request's first bytes; `None` when the
/// server starts draining first.
async fn idle_read(
    conn: &mut Conn,
    buf: &mut BytesMut,
    keepalive: Duration,
) -> Option<Result<std::io::Result<usize>, timer::Elapsed>> {
    if *conn.shutdown.borrow() {
        return None;
    }
    let mut shutdown = conn.shutdown.clone();
    let read = conn.timer.within(keepalive, conn.io.read_buf(buf));
    tokio::select! {
        biased;
        r = read => Some(r),
        _ = shutdown.changed() => None,
    }
}

/// Reads the body until `buf` holds `whole` bytes; false when the client went away or stalled.
async fn read_body(conn: &mut Conn, buf: &mut BytesMut, whole: usize, limit: Duration) -> bool {
    if buf.capacity() < whole {
        buf.reserve(whole - buf.len());
    }
    while buf.len() < whole {
        match conn.timer.within(limit, conn.io.read_buf(buf)).await {
            Ok(Ok(n)) if n > 0 => {}
            _ => return false,
        }
    }
    true
}

/// The length of the head at the start of `buf` (through its empty line), once it is all there.
fn head_end(buf: &[u8]) -> Option<usize> {
    let mut from = 0;
    while let Some(i) = buf[from..].iter().position(|&b| b == b'\n') {
        let at = from + i;
        match buf.get(at + 1..at + 3) {
            Some([b'\n', _]) => return Some(at + 2),
            Some([b'\r', b'\n']) => return Some(at + 3),
            None if buf.get(at + 1) == Some(&b'\n') => return Some(at + 2),
            _ => {}
        }
        from = at + 1;
    }
    None
}

/// Drops the first `n` bytes of `buf` (an answered request).
fn consume(buf: &mut BytesMut, n: usize) {
    buf.advance(n.min(buf.len()));
}

#[cfg(test)]
mod tests {
    use super::head_end;

    #[test]
    fn finds_the_end_of_a_head() {
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nHost: a\r\n\r\nbody"), Some(27));
        assert_eq!(head_end(b"GET / HTTP/1.1\nHost: a\n\n"), Some(24));
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nHost: a\r\n"), None);
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nHost: a\r\n\r"), None);
    }
}
