//! One upstream response passed on to the client: its head parsed and prepared (interim 1xx
//! heads skipped), the body bytes relayed as they arrive in their framing (as they are, or
//! decoded for HTTP/2 clients; decoded, compressed and framed again when the route compresses
//! it, `squeeze.rs`), and the upstream connection pooled again when the response ended cleanly.

use std::sync::Arc;
use std::time::Instant;

use bytes::Buf;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

use super::body::{ChunkError, Framing, Progress};
use super::exchange::{fail, read_response_head, Downstream, Next, Record, UpSide, UP_BUFFER};
use super::head::{self, Added, BadResponse, Request, ResponseHead};
use super::squeeze::Squeeze;
use super::{buffers, pool};
use crate::request::compress::{self, Verdict};
use crate::request::headers::hsts;
use crate::request::{Failure, Listener};
use crate::routing::Route;
use crate::upstream::{ActiveGuard, Backend, PeerSettings};

/// The body bytes at the start of `buf` and what to pass on of them: as they are, or decoded
/// from chunked framing into `decoded`.
fn body_part<'b>(
    progress: &mut Progress,
    buf: &'b [u8],
    decode: bool,
    decoded: &'b mut Vec<u8>,
) -> Result<(usize, &'b [u8]), ChunkError> {
    if !decode || !progress.is_chunked() {
        let used = progress.feed(buf)?;
        return Ok((used, &buf[..used]));
    }
    decoded.clear();
    let used = progress.feed_data(buf, |data| decoded.extend_from_slice(data))?;
    Ok((used, decoded))
}

/// Passes one upstream response on to the client.
pub(super) struct Relay<'a> {
    pub(super) listener: Listener,
    pub(super) route: &'a Route,
    pub(super) peer: &'a PeerSettings,
    pub(super) server: &'a Arc<Backend>,
    /// When the response head arrived: the connection's last use, for the idle pool.
    pub(super) head_at: Instant,
    pub(super) id: &'a [u8],
    /// A sticky-session cookie for the client (`Pool::sticky_cookie`).
    pub(super) set_cookie: Option<&'a str>,
}

/// A response whose head has been passed on.
struct Started {
    framing: Framing,
    progress: Progress,
    /// The upstream said it closes after this response.
    upstream_close: bool,
    keep: bool,
    /// No byte after the message end came with the head.
    clean: bool,
    /// The body's encoder, when it is compressed (`crate::request::compress`).
    squeeze: Option<Squeeze>,
}

impl Relay<'_> {
    pub(super) async fn run<D: Downstream>(
        &self,
        d: &mut D,
        up: &mut UpSide,
        req: &Request<'_>,
        mut stream: TcpStream,
        rec: &mut Record,
        backend: &mut ActiveGuard,
    ) -> Next {
        let mut s = match self.start(d, up, req, &mut stream, rec, backend).await {
            Ok(Some(s)) => s,
            Ok(None) => return Next::Close,
            Err(f) => {
                tracing::warn!(server = %self.server.label, "{f}");
                return fail(d, req, rec, f, self.id).await;
            }
        };
        let mut done = s.progress.is_done();
        // A body that fills the lent buffer is read on in larger pieces.
        let mut piece = UP_BUFFER;
        while !done {
            up.buf.clear();
            up.buf.reserve(piece);
            let room = up.buf.capacity();
            let read = up
                .timer
                .within(self.peer.read_timeout, stream.read_buf(&mut up.buf));
            let read = tokio::select! {
                biased;
                read = read => read,
                () = d.gone() => return self.client_left(rec, "left during the response"),
            };
            let n = match read {
                Ok(Ok(n)) if n > 0 => {
                    if n == room {
                        piece = buffers::BODY;
                    }
                    n
                }
                Ok(_) if s.framing == Framing::UntilClose => {
                    match s.squeeze.as_mut().map(|z| z.next(&[], true, !D::DECODES)) {
                        Some(Ok(last)) => d.body(last, true).await,
                        Some(Err(e)) => return compress_failed(d, rec, e),
                        None => d.body(&[], true).await,
                    };
                    break;
                }
                _ => {
                    rec.error = Some(Failure::Truncated);
                    d.abort();
                    return Next::Close;
                }
            };
            let decode = D::DECODES || s.squeeze.is_some();
            let (used, data) =
                match body_part(&mut s.progress, &up.buf[..n], decode, &mut up.decoded) {
                    Ok(part) => part,
                    Err(e) => {
                        rec.error = Some(e.into());
                        d.abort();
                        return Next::Close;
                    }
                };
            s.clean = used == n;
            done = s.progress.is_done();
            if done {
                backend.release();
            }
            let data = match s.squeeze.as_mut().map(|z| z.next(data, done, !D::DECODES)) {
                Some(Ok(squeezed)) => squeezed,
                Some(Err(e)) => return compress_failed(d, rec, e),
                None => data,
            };
            if !d.body(data, done).await {
                return self.client_left(rec, "closed during the response");
            }
            rec.bytes_out += data.len();
        }
        if done && s.clean && !s.upstream_close {
            let keep = pool::Keep {
                idle_timeout: self.peer.idle_timeout,
                max: self.peer.keepalive,
            };
            pool::put(self.server, stream, keep, self.head_at);
        }
        if s.keep && done {
            Next::KeepAlive
        } else {
            Next::Close
        }
    }

    /// The client left before the response was complete: the upstream connection is dropped
    /// (closed) with this exchange, and the request logged as the client's doing (499).
    fn client_left(&self, rec: &mut Record, why: &'static str) -> Next {
        let failure = Failure::ClientGone(why);
        rec.status = failure.logged_status(rec.status);
        rec.error = Some(failure);
        Next::Close
    }

    /// Parses the response head in `up.buf` (skipping 1xx interim responses) and passes it on
    /// with the body bytes that came with it. `Ok(None)`: the client is gone.
    async fn start<D: Downstream>(
        &self,
        d: &mut D,
        up: &mut UpSide,
        req: &Request<'_>,
        stream: &mut TcpStream,
        rec: &mut Record,
        backend: &mut ActiveGuard,
    ) -> Result<Option<Started>, Failure> {
        loop {
            let head = match self.read_head(d, up, req, rec)? {
                Head::Final(head) => head,
                Head::Interim(len) => {
                    // Interim responses (100, 103) are not passed on.
                    up.buf.advance(len);
                    if head::head_end(&up.buf).is_none() {
                        read_response_head(up, stream, self.peer.read_timeout)
                            .await
                            .map_err(|e| match e {
                                Failure::Reset => Failure::Truncated,
                                e => e,
                            })?;
                    }
                    continue;
                }
            };
            let mut started = head.started;
            let done = started.progress.is_done();
            let first = match head.first {
                First::Raw(from, to) => &up.buf[from..to],
                First::Decoded => &up.decoded[..],
            };
            if done {
                backend.release();
            }
            let first = match started.squeeze.as_mut() {
                Some(z) => z
                    .next(first, done, !D::DECODES)
                    .map_err(|e| Failure::Status(500, format!("compressing the response: {e}")))?,
                None => first,
            };
            if !d.send_head(first, done).await {
                self.client_left(rec, "closed before the response head");
                return Ok(None);
            }
            rec.bytes_out += first.len();
            return Ok(Some(started));
        }
    }

    /// Parses the response head in `up.buf`; a final one is prepared for the client, with
    /// where the body bytes that came with it are. (Synchronous: the parsed head's storage is
    /// not part of the exchange's future.)
    fn read_head<D: Downstream>(
        &self,
        d: &mut D,
        up: &mut UpSide,
        req: &Request<'_>,
        rec: &mut Record,
    ) -> Result<Head, Failure> {
        let mut storage = head::storage();
        let resp = head::parse_response(&up.buf, &mut storage)?.ok_or(BadResponse::Unparsable)?;
        if resp.code == 101 {
            return Err(BadResponse::Unparsable.into());
        }
        if resp.code < 200 {
            return Ok(Head::Interim(resp.len));
        }
        let framing = resp.framing(req.is_head());
        let keep = !req.close && framing != Framing::UntilClose && !d.draining();
        let date = pingora_core::protocols::http::date::get_cached_date();
        let added = Added {
            keep_alive: keep,
            request_id: self.id,
            hsts: hsts(self.listener, self.route),
            date: date.as_bytes(),
            set_cookie: self.set_cookie,
        };
        let (verdict, squeeze) = self.compression(req, &resp);
        let decode = D::DECODES || squeeze.is_some();
        let mut progress = Progress::new(framing);
        let avail = &up.buf[resp.len..];
        let (used, first) = body_part(&mut progress, avail, decode, &mut up.decoded)?;
        let first = if decode && progress.is_chunked() {
            First::Decoded
        } else {
            First::Raw(resp.len, resp.len + first.len())
        };
        rec.status = resp.code;
        rec.upstream_status = Some(resp.code);
        d.prepare_head(&resp, &added, verdict);
        Ok(Head::Final(Prepared {
            started: Started {
                framing,
                progress,
                upstream_close: resp.close,
                keep,
                clean: used == avail.len(),
                squeeze,
            },
            first,
        }))
    }
}

impl Relay<'_> {
    /// What `crate::request::compress` decides for `resp`, with the encoder of a compressed
    /// body.
    fn compression(&self, req: &Request<'_>, resp: &ResponseHead) -> (Verdict, Option<Squeeze>) {
        let c = self.route.compress.as_ref();
        let (verdict, encoder) = compress::decide(c, req.method, false, req, resp.code, resp);
        (verdict, encoder.map(Squeeze::new))
    }
}

/// The encoder failed mid-body: the client must not take the response as complete.
fn compress_failed<D: Downstream>(d: &mut D, rec: &mut Record, e: std::io::Error) -> Next {
    rec.error = Some(Failure::Status(
        500,
        format!("compressing the response: {e}"),
    ));
    d.abort();
    Next::Close
}

/// Where the body bytes that came with a response head are.
enum First {
    /// `up.buf[from..to]`.
    Raw(usize, usize),
    /// `up.decoded`.
    Decoded,
}

/// A final response head, prepared for the client.
struct Prepared {
    started: Started,
    first: First,
}

/// What a response head is.
enum Head {
    Final(Prepared),
    /// An interim (1xx) head of this length.
    Interim(usize),
}
