//! HTTP/1.1 connections (plain or TLS) on the fast path: request heads read and parsed here
//! (with the header, keep-alive and body deadlines), pipelined requests kept in step, and the
//! connection handed to pingora, with every byte read put back, at the first request not ours.

use std::net::IpAddr;
use std::time::Duration;

use std::cell::RefCell;
use std::pin::Pin;
use std::task::Poll;

use bytes::{Buf, BytesMut};
use pingora_core::protocols::Stream;
use pingora_core::server::ShutdownWatch;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt, ReadBuf};
use tokio::time::Instant;

use super::exchange::{self, Downstream, Next, UpSide};
use super::head::{self, Added, Parsed, Request, ResponseHead};
use super::replay::Replayed;
use super::timer::{Elapsed, Timer};
use super::{buffers, Engine, PREREAD_BODY};
use crate::request::compress::Verdict;
use crate::request::Failure;
use crate::state::Settings;

/// The client read buffer's size.
const READ_BUFFER: usize = 4096;
/// How long a client may keep a response waiting by not reading it.
const CLIENT_WRITE_TIMEOUT: Duration = Duration::from_secs(60);

/// How a connection leaves the fast path.
pub enum Left {
    Closed,
    /// For pingora's proxy, with every byte read so far put back.
    Elsewhere(Stream),
}

/// A client connection on the fast path.
struct Conn {
    io: Stream,
    ip: IpAddr,
    timer: Timer,
    /// The head being written to the client.
    out: Vec<u8>,
    shutdown: ShutdownWatch,
    /// `server.body_timeout` of the configuration the current request runs on.
    body_timeout: Duration,
    /// Bytes of the client's next request that came while watching for it to leave (`gone`).
    early: BytesMut,
}

/// What to do after one request.
enum Step {
    KeepAlive,
    Close,
    Elsewhere,
}

impl Engine {
    /// Serves HTTP/1.1 requests on `io` until the connection ends or one is not for this path.
    pub async fn serve(&self, io: Stream, accepted: Instant, shutdown: &ShutdownWatch) -> Left {
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
            out: Vec::new(),
            shutdown: shutdown.clone(),
            body_timeout: Duration::ZERO,
            early: BytesMut::new(),
        };
        let mut up = UpSide::new();
        // No read buffer until bytes arrive (`read_some`).
        let mut buf = BytesMut::new();
        let header_timeout = self.state.peek().settings.header_timeout;
        let mut deadline = Some(accepted + header_timeout);
        loop {
            match self.one(&mut conn, &mut up, &mut buf, deadline).await {
                Step::KeepAlive => deadline = None,
                Step::Close => return Left::Closed,
                Step::Elsewhere => {
                    return Left::Elsewhere(Box::new(Replayed::new(buf.freeze(), conn.io)));
                }
            }
        }
    }

    /// Reads one request head (by `deadline`, or after an idle wait when `None`) and answers it.
    /// The answering runs in a future of its own on the heap: an idle connection holds only
    /// what waiting for the next head takes, not an exchange's state (BENCHMARKS.md, memory).
    async fn one(
        &self,
        conn: &mut Conn,
        up: &mut UpSide,
        buf: &mut BytesMut,
        deadline: Option<Instant>,
    ) -> Step {
        let settings = self.state.peek().settings.clone();
        conn.body_timeout = settings.body_timeout;
        match read_head(conn, buf, deadline, &settings).await {
            None => Step::Close,
            Some(false) => Step::Elsewhere,
            Some(true) => {
                conn.out = buffers::take_vec();
                let step = Box::pin(self.answer(conn, up, buf, &settings)).await;
                buffers::give_vec(std::mem::take(&mut conn.out));
                if !conn.early.is_empty() {
                    // What came while the request ran follows what was read with it.
                    buf.extend_from_slice(&conn.early);
                    conn.early = BytesMut::new();
                }
                if buf.is_empty() {
                    // An idle connection keeps no buffer.
                    *buf = BytesMut::new();
                }
                step
            }
        }
    }

    /// Answers the request whose head is at the start of `buf`.
    async fn answer(
        &self,
        conn: &mut Conn,
        up: &mut UpSide,
        buf: &mut BytesMut,
        settings: &Settings,
    ) -> Step {
        let whole = {
            let mut storage = head::storage();
            let Parsed::Complete(req) = head::parse_request(buf, &mut storage) else {
                return Step::Elsewhere;
            };
            let whole = req.len as u64 + req.content_length;
            if req.content_length > PREREAD_BODY || buf.len() as u64 >= whole {
                let (step, used) = self.dispatch(conn, up, &req, buf).await;
                buf.advance(used);
                return step;
            }
            // A request pingora's path answers (e.g. 413) goes there before its body is read.
            if self.route(&req).is_none() {
                return Step::Elsewhere;
            }
            whole as usize
        };
        // A small body is read whole first (see PREREAD_BODY), then the head parsed again.
        if !read_body(conn, buf, whole, settings.body_timeout).await {
            return Step::Close;
        }
        let mut storage = head::storage();
        let Parsed::Complete(req) = head::parse_request(buf, &mut storage) else {
            return Step::Elsewhere;
        };
        let (step, used) = self.dispatch(conn, up, &req, buf).await;
        buf.advance(used);
        step
    }

    /// Routes and answers `req` (head and any body bytes in `buf`); returns what to do next and
    /// how many bytes of `buf` the request used.
    async fn dispatch(
        &self,
        conn: &mut Conn,
        up: &mut UpSide,
        req: &Request<'_>,
        buf: &[u8],
    ) -> (Step, usize) {
        let Some(routed) = self.route(req) else {
            return (Step::Elsewhere, 0);
        };
        let here =
            (buf.len() - req.len).min(usize::try_from(req.content_length).unwrap_or(usize::MAX));
        let body = &buf[req.len..req.len + here];
        let rest = req.content_length - here as u64;
        let plan = self.admit(routed, req, conn.ip);
        let step = match exchange::run(self, conn, up, req, body, rest, plan).await {
            Next::KeepAlive => Step::KeepAlive,
            Next::Close => Step::Close,
        };
        (step, req.len + here)
    }
}

impl Downstream for Conn {
    const DECODES: bool = false;

    fn draining(&self) -> bool {
        *self.shutdown.borrow()
    }

    async fn local(
        &mut self,
        status: u16,
        extra: &[(&str, &str)],
        added: &Added<'_>,
        head_only: bool,
    ) -> bool {
        self.out.clear();
        head::write_local_response(&mut self.out, status, extra, added, head_only);
        write_all(&mut self.io, &mut self.timer, &self.out).await
    }

    fn prepare_head(&mut self, resp: &ResponseHead<'_, '_>, added: &Added<'_>, verdict: Verdict) {
        self.out.clear();
        head::write_client_response(&mut self.out, resp, added, verdict);
    }

    async fn send_head(&mut self, first: &[u8], _end: bool) -> bool {
        self.out.extend_from_slice(first);
        write_all(&mut self.io, &mut self.timer, &self.out).await
    }

    async fn body(&mut self, data: &[u8], _end: bool) -> bool {
        data.is_empty() || write_all(&mut self.io, &mut self.timer, data).await
    }

    /// Closing the connection (which follows) tells the client: the framing says what is missing.
    fn abort(&mut self) {}

    /// The connection's end, or a reset: the client left. Bytes of a pipelined request mean it
    /// is still there; they are kept for the next request, and the watch ends.
    async fn gone(&mut self) {
        if self.early.is_empty() {
            match read_some(&mut self.io, &mut self.early).await {
                Ok(n) if n > 0 => {}
                _ => return,
            }
        }
        std::future::pending().await
    }

    async fn read_body(&mut self, buf: &mut BytesMut, max: usize) -> Result<usize, Failure> {
        let mut part = (&mut self.io).take(max as u64);
        match self
            .timer
            .within(self.body_timeout, part.read_buf(buf))
            .await
        {
            Ok(Ok(n)) if n > 0 => Ok(n),
            Ok(_) => Err(Failure::ClientGone("closed early")),
            Err(Elapsed) => Err(Failure::ClientTimeout),
        }
    }
}

/// Writes `data` to the client and flushes it; false when the client is gone or stalled.
async fn write_all(io: &mut Stream, timer: &mut Timer, data: &[u8]) -> bool {
    let write = async {
        io.write_all(data).await?;
        io.flush().await
    };
    matches!(timer.within(CLIENT_WRITE_TIMEOUT, write).await, Ok(Ok(())))
}

/// Reads until `buf` holds a complete request head. `Some(true)`: complete; `Some(false)`: not
/// for this path (too large); `None`: the connection is done (closed, timed out, draining).
async fn read_head(
    conn: &mut Conn,
    buf: &mut BytesMut,
    mut deadline: Option<Instant>,
    settings: &Settings,
) -> Option<bool> {
    // Idle until the first byte of the next request; its head's deadline is set only if the
    // first read did not bring the whole head (the clock is not read for nothing).
    let mut idle = deadline.is_none();
    loop {
        if head::head_end(buf).is_some() {
            return Some(true);
        }
        if buf.len() as u64 > settings.max_header_size {
            return Some(false);
        }
        if !buf.is_empty() && buf.capacity() - buf.len() < 512 {
            buf.reserve(READ_BUFFER);
        }
        let read = match deadline {
            _ if idle => idle_read(conn, buf, settings.keepalive_timeout).await?,
            Some(at) => conn.timer.until(at, read_some(&mut conn.io, buf)).await,
            None => {
                let at = Instant::now() + settings.header_timeout;
                deadline = Some(at);
                conn.timer.until(at, read_some(&mut conn.io, buf)).await
            }
        };
        match read {
            Ok(Ok(n)) if n > 0 => idle = false,
            _ => return None,
        }
    }
}

/// Waits on an idle keep-alive connection for the next request's first bytes; `None` when the
/// server starts draining first.
async fn idle_read(
    conn: &mut Conn,
    buf: &mut BytesMut,
    keepalive: Duration,
) -> Option<Result<std::io::Result<usize>, Elapsed>> {
    if *conn.shutdown.borrow() {
        return None;
    }
    let mut shutdown = conn.shutdown.clone();
    let read = conn.timer.within(keepalive, read_some(&mut conn.io, buf));
    tokio::select! {
        biased;
        r = read => Some(r),
        _ = shutdown.changed() => None,
    }
}

thread_local! {
    /// Where a connection without a buffer reads its first bytes.
    static SCRATCH: RefCell<Box<[u8]>> = RefCell::new(vec![0; READ_BUFFER].into_boxed_slice());
}

/// Reads into `buf`. A buffer without room (an idle connection's) is read through the thread's
/// scratch space and takes only the bytes that came, so a waiting connection holds no buffer.
async fn read_some(io: &mut Stream, buf: &mut BytesMut) -> std::io::Result<usize> {
    if buf.capacity() > buf.len() {
        return io.read_buf(buf).await;
    }
    std::future::poll_fn(|cx| {
        SCRATCH.with(|scratch| {
            let mut scratch = scratch.borrow_mut();
            let mut read = ReadBuf::new(&mut scratch[..]);
            match Pin::new(&mut *io).poll_read(cx, &mut read) {
                Poll::Ready(Ok(())) => {
                    buf.extend_from_slice(read.filled());
                    Poll::Ready(Ok(read.filled().len()))
                }
                Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
                Poll::Pending => Poll::Pending,
            }
        })
    })
    .await
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
