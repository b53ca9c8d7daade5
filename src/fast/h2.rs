//! HTTP/2 streams on the fast path: pingora's h2 server has parsed the request; a request we
//! can take (routed upstream, no body or a small one of declared length) is answered here, any
//! other is handed back untouched for pingora's proxy.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use pingora_core::protocols::http::ServerSession;
use pingora_http::{RequestHeader, ResponseHeader};

use super::exchange::{self, Downstream, UpSide};
use super::head::{self, Added, ResponseHead};
use super::{Engine, PREREAD_BODY};
use crate::request::compress::Verdict;
use crate::request::headers::{request_host, HeaderSink};
use crate::request::{local, Failure};

/// How long a client may keep a response waiting by not reading it.
const CLIENT_WRITE_TIMEOUT: Duration = Duration::from_secs(60);

/// One HTTP/2 stream as the client side of an exchange.
struct Stream<'s> {
    session: &'s mut ServerSession,
    /// The stream was reset after its head went out.
    aborted: bool,
    /// The response head `prepare_head` made, until it is sent.
    head: Option<ResponseHeader>,
}

impl Engine {
    /// Answers the HTTP/2 request of `session`, or gives the session back untouched when the
    /// request is not for the fast path.
    pub async fn serve_h2(&self, mut session: ServerSession) -> Option<ServerSession> {
        let ip = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip());
        let Some(ip) = ip else {
            return Some(session);
        };
        let no_body = session.is_body_empty();
        let routed = {
            let req = session.req_header();
            let Some(request) = head::from_pingora(req, request_host(req)) else {
                return Some(session);
            };
            let sized = req.headers.contains_key(http::header::CONTENT_LENGTH);
            if !no_body && (!sized || request.content_length > PREREAD_BODY) {
                return Some(session);
            }
            match self.route(&request) {
                Some(routed) => routed,
                None => return Some(session),
            }
        };
        // From here on the stream is ours: take its request out of the session.
        let Ok(placeholder) = RequestHeader::build_no_case("GET", b"/", Some(0)) else {
            return Some(session);
        };
        let header = std::mem::replace(session.req_header_mut(), placeholder);
        let req = head::from_pingora(&header, request_host(&header))?;
        let body_timeout = routed.rt.settings.body_timeout;
        session.set_write_timeout(Some(CLIENT_WRITE_TIMEOUT));
        let body = if no_body {
            Some(BytesMut::new())
        } else {
            read_whole_body(&mut session, req.content_length, body_timeout).await
        };
        let mut stream = Stream {
            session: &mut session,
            aborted: false,
            head: None,
        };
        let mut up = UpSide::new();
        match body {
            Some(body) if body.len() as u64 == req.content_length => {
                let plan = self.admit(routed, &req, ip);
                exchange::run(self, &mut stream, &mut up, &req, &body, 0, plan).await;
            }
            _ => {
                let added = Added {
                    keep_alive: false,
                    request_id: b"",
                    hsts: None,
                    date: b"",
                    set_cookie: None,
                };
                stream.local(400, &[], &added, false).await;
            }
        }
        if !stream.aborted {
            let _ = session.finish().await;
        }
        None
    }
}

/// Reads a request body of `len` bytes whole; `None` when the client stalls, resets the stream
/// or sends more.
async fn read_whole_body(
    session: &mut ServerSession,
    len: u64,
    limit: Duration,
) -> Option<BytesMut> {
    let mut body = BytesMut::with_capacity(usize::try_from(len).ok()?);
    loop {
        match tokio::time::timeout(limit, session.read_request_body()).await {
            Ok(Ok(Some(data))) => {
                if (body.len() + data.len()) as u64 > len {
                    return None;
                }
                body.extend_from_slice(&data);
            }
            Ok(Ok(None)) => return Some(body),
            _ => return None,
        }
    }
}

impl Downstream for Stream<'_> {
    const DECODES: bool = true;

    fn draining(&self) -> bool {
        false
    }

    async fn local(
        &mut self,
        status: u16,
        extra: &[(&str, &str)],
        added: &Added<'_>,
        head_only: bool,
    ) -> bool {
        let text = local::text(status);
        let Ok(mut resp) = ResponseHeader::build_no_case(status, Some(4 + extra.len())) else {
            return false;
        };
        let lines = crate::request::headers::Added {
            request_id: added.request_id,
            hsts: added.hsts,
            date: b"",
            set_cookie: None,
        };
        local::head_lines(status, text.len(), extra, &lines, &mut resp);
        let body = if head_only {
            Bytes::new()
        } else {
            Bytes::from(text)
        };
        self.send(resp, body, true).await
    }

    fn prepare_head(&mut self, resp: &ResponseHead<'_, '_>, added: &Added<'_>, verdict: Verdict) {
        self.head = ResponseHeader::build_no_case(resp.code, Some(16))
            .ok()
            .map(|mut out| {
                resp.forward(added, verdict, &mut H2Lines(&mut out));
                out
            });
    }

    async fn send_head(&mut self, first: &[u8], end: bool) -> bool {
        match self.head.take() {
            Some(head) => self.send(head, Bytes::copy_from_slice(first), end).await,
            None => false,
        }
    }

    async fn body(&mut self, data: &[u8], end: bool) -> bool {
        if data.is_empty() && !end {
            return true;
        }
        self.session
            .write_response_body(Bytes::copy_from_slice(data), end)
            .await
            .is_ok()
    }

    async fn read_body(&mut self, _buf: &mut BytesMut, _max: usize) -> Result<usize, Failure> {
        // HTTP/2 bodies are read whole before an exchange starts.
        Err(Failure::ClientBad(
            "an HTTP/2 body is not streamed here".into(),
        ))
    }

    /// The client reset the stream or closed the connection.
    async fn gone(&mut self) {
        let _ = self.session.read_body_or_idle(true).await;
    }

    /// Resets the stream, so the client does not take the cut-off body as whole.
    fn abort(&mut self) {
        if let ServerSession::H2(s) = &mut *self.session {
            s.shutdown();
        }
        self.aborted = true;
    }
}

/// Response lines for an HTTP/2 client: Transfer-Encoding has no place there (RFC 9113 8.2.2).
struct H2Lines<'a>(&'a mut ResponseHeader);

impl HeaderSink for H2Lines<'_> {
    fn header(&mut self, name: &[u8], value: &[u8]) {
        if !name.eq_ignore_ascii_case(b"transfer-encoding") {
            self.0.header(name, value);
        }
    }
}

impl Stream<'_> {
    async fn send(&mut self, resp: ResponseHeader, first: Bytes, end: bool) -> bool {
        // A response without a body ends on its HEADERS frame (h2 clients hold a 304 with a
        // Content-Length and an empty DATA frame after it for a protocol error).
        if end && first.is_empty() {
            if let ServerSession::H2(s) = &mut *self.session {
                return s.write_response_header(Box::new(resp), true).is_ok();
            }
        }
        if self
            .session
            .write_response_header(Box::new(resp))
            .await
            .is_err()
        {
            return false;
        }
        if first.is_empty() && !end {
            return true;
        }
        self.session.write_response_body(first, end).await.is_ok()
    }
}
