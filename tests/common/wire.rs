//! Raw HTTP/1.1 on the wire for tests that need exact bytes: an upstream that reads requests
//! off the socket and writes canned answers, and a client connection that reads responses one
//! at a time, keeping bytes that arrive early (answers to pipelined requests).

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use std::sync::Arc;

use super::tls::{client_config, TestCert};
use super::{find, Proxy, RawUpstream};

/// How long a client waits for one response before the test fails.
pub const RESPONSE_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause between pieces an upstream writes separately, so they reach the proxy in separate reads.
pub const PIECE_GAP: Duration = Duration::from_millis(30);
// ---------------------------------------------------------------------------------------------
// The upstream side: raw requests off the wire
// ---------------------------------------------------------------------------------------------

/// Header names (lowercase) and values, in order.
pub type Headers = Vec<(String, String)>;

/// A request as a raw upstream read it.
pub struct Req {
    pub method: String,
    pub path: String,
    pub headers: Headers,
    pub body: Vec<u8>,
}

pub fn to_headers(headers: &[httparse::Header]) -> Headers {
    headers
        .iter()
        .map(|h| {
            (
                h.name.to_ascii_lowercase(),
                String::from_utf8_lossy(h.value).into_owned(),
            )
        })
        .collect()
}

pub fn values<'a>(headers: &'a [(String, String)], name: &str) -> Vec<&'a str> {
    headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
        .collect()
}

/// Reads more bytes into `buf`; `None` at EOF, on error or after 10 s of silence.
pub async fn read_more(s: &mut TcpStream, buf: &mut Vec<u8>) -> Option<()> {
    let mut chunk = [0u8; 16 << 10];
    match tokio::time::timeout(Duration::from_secs(10), s.read(&mut chunk)).await {
        Ok(Ok(n)) if n > 0 => {
            buf.extend_from_slice(&chunk[..n]);
            Some(())
        }
        _ => None,
    }
}

/// Reads the next request (head, then a Content-Length body) from `s`, keeping any bytes past
/// it in `buf`; `None` at EOF, after 10 s of silence or on a head that does not parse.
pub async fn next_request(s: &mut TcpStream, buf: &mut Vec<u8>) -> Option<Req> {
    loop {
        let parsed = {
            let mut storage = [httparse::EMPTY_HEADER; 64];
            let mut req = httparse::Request::new(&mut storage);
            match req.parse(buf) {
                Ok(httparse::Status::Complete(len)) => Some((
                    len,
                    req.method?.to_string(),
                    req.path?.to_string(),
                    to_headers(req.headers),
                )),
                Ok(httparse::Status::Partial) => None,
                Err(_) => return None,
            }
        };
        if let Some((len, method, path, headers)) = parsed {
            let body_len = values(&headers, "content-length")
                .first()
                .and_then(|v| v.parse::<usize>().ok())
                .unwrap_or(0);
            if buf.len() >= len + body_len {
                let body = buf[len..len + body_len].to_vec();
                buf.drain(..len + body_len);
                return Some(Req {
                    method,
                    path,
                    headers,
                    body,
                });
            }
        }
        read_more(s, buf).await?;
    }
}

/// A raw HTTP/1.1 upstream that keeps every connection open and writes `answer(request)` for
/// each request, in order.
pub async fn keep_alive_upstream<F>(answer: F) -> RawUpstream
where
    F: Fn(&Req) -> Vec<u8> + Send + Sync + 'static,
{
    let answer = Arc::new(answer);
    RawUpstream::start(move |mut s: TcpStream| {
        let answer = answer.clone();
        async move {
            let mut buf = Vec::new();
            while let Some(req) = next_request(&mut s, &mut buf).await {
                if s.write_all(&answer(&req)).await.is_err() {
                    return;
                }
            }
        }
    })
    .await
}

/// Writes `pieces` one by one with [`PIECE_GAP`] between them.
pub async fn write_pieces(s: &mut TcpStream, pieces: &[&[u8]]) {
    for (i, piece) in pieces.iter().enumerate() {
        if i > 0 {
            tokio::time::sleep(PIECE_GAP).await;
        }
        if s.write_all(piece).await.is_err() {
            return;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The client side: one raw connection, responses read one at a time
// ---------------------------------------------------------------------------------------------

/// A response as the client read it.
pub struct Resp {
    pub status: u16,
    pub headers: Headers,
    /// The body as it came on the wire (chunk framing and trailers included).
    pub raw: Vec<u8>,
    /// The body without chunk framing.
    pub body: Vec<u8>,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        values(&self.headers, name).first().copied()
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A raw client connection to the proxy; bytes that arrive ahead of time (answers to pipelined
/// requests) are kept for the next response.
pub struct Conn<S = TcpStream> {
    pub s: S,
    pub buf: Vec<u8>,
}

impl Conn {
    pub async fn open(proxy: &Proxy) -> Conn {
        let s = TcpStream::connect(proxy.http_addr())
            .await
            .expect("connect to the proxy");
        Conn { s, buf: Vec::new() }
    }
}

impl Conn<tokio_rustls::client::TlsStream<TcpStream>> {
    /// HTTP/1.1 over TLS on the https listener (ALPN `http/1.1`), with SNI the first name of
    /// `cert`, which the client trusts alone.
    pub async fn open_tls(proxy: &Proxy, cert: &TestCert) -> Self {
        let name = cert.names[0].clone();
        let config = client_config(&[cert], &[b"http/1.1"]);
        let tcp = TcpStream::connect(proxy.https_addr())
            .await
            .expect("connect to the https listener");
        let server_name = rustls::pki_types::ServerName::try_from(name).expect("a DNS name");
        let s = tokio_rustls::TlsConnector::from(config)
            .connect(server_name, tcp)
            .await
            .expect("TLS handshake");
        assert_eq!(s.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
        Conn { s, buf: Vec::new() }
    }
}

impl<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin> Conn<S> {
    pub async fn send(&mut self, bytes: &[u8]) {
        self.s.write_all(bytes).await.expect("write to the proxy");
    }

    /// Sends a GET for `path` and reads its response.
    pub async fn get(&mut self, path: &str) -> Resp {
        self.send(get(path).as_bytes()).await;
        self.response(false).await
    }

    pub async fn response(&mut self, head_request: bool) -> Resp {
        self.response_within(RESPONSE_TIMEOUT, head_request).await
    }

    /// Reads the next response (an interim one too, as it is); panics with what arrived when
    /// it is not complete within `timeout`. A close-delimited body is read up to the close.
    pub async fn response_within(&mut self, timeout: Duration, head_request: bool) -> Resp {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(resp) = self.complete(head_request) {
                return resp;
            }
            if !self.fill(deadline).await {
                // EOF: only a close-delimited body may end here.
                return self.close_delimited().unwrap_or_else(|| {
                    panic!(
                        "connection closed before a complete response; got:\n{}",
                        String::from_utf8_lossy(&self.buf)
                    )
                });
            }
        }
    }

    /// Reads more; false at EOF or reset. Panics at `deadline`.
    pub async fn fill(&mut self, deadline: tokio::time::Instant) -> bool {
        let mut chunk = [0u8; 16 << 10];
        match tokio::time::timeout_at(deadline, self.s.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => false,
            Ok(Ok(n)) => {
                self.buf.extend_from_slice(&chunk[..n]);
                true
            }
            Err(_) => panic!(
                "no complete response in time; got:\n{}",
                String::from_utf8_lossy(&self.buf)
            ),
        }
    }

    /// Whether the proxy closes the connection (EOF or reset within 5 s, with nothing more).
    pub async fn is_closed(&mut self) -> bool {
        let mut chunk = [0u8; 1024];
        match tokio::time::timeout(Duration::from_secs(5), self.s.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => self.buf.is_empty(),
            _ => false,
        }
    }

    /// The head at the start of `buf`: (length, status, headers).
    pub fn head(&self) -> Option<(usize, u16, Headers)> {
        let mut storage = [httparse::EMPTY_HEADER; 64];
        let mut resp = httparse::Response::new(&mut storage);
        match resp.parse(&self.buf) {
            Ok(httparse::Status::Complete(len)) => {
                Some((len, resp.code.unwrap_or(0), to_headers(resp.headers)))
            }
            Ok(httparse::Status::Partial) => None,
            Err(e) => panic!(
                "unparsable response head ({e}):\n{}",
                String::from_utf8_lossy(&self.buf)
            ),
        }
    }

    /// Takes a response whose end is known from `buf`.
    pub fn complete(&mut self, head_request: bool) -> Option<Resp> {
        let (len, status, headers) = self.head()?;
        let bodiless = head_request || status < 200 || status == 204 || status == 304;
        let chunked = values(&headers, "transfer-encoding")
            .iter()
            .any(|v| v.to_ascii_lowercase().contains("chunked"));
        let length = values(&headers, "content-length")
            .first()
            .map(|v| v.trim().parse::<usize>().expect("numeric content-length"));
        let (raw_len, body) = if bodiless {
            (0, Vec::new())
        } else if chunked {
            decode_chunked(&self.buf[len..])?
        } else if let Some(n) = length {
            if self.buf.len() < len + n {
                return None;
            }
            (n, self.buf[len..len + n].to_vec())
        } else {
            return None;
        };
        let raw = self.buf[len..len + raw_len].to_vec();
        self.buf.drain(..len + raw_len);
        Some(Resp {
            status,
            headers,
            raw,
            body,
        })
    }

    /// At EOF: the response whose body ran to the close.
    pub fn close_delimited(&mut self) -> Option<Resp> {
        let (len, status, headers) = self.head()?;
        let raw = self.buf.split_off(len);
        self.buf.clear();
        Some(Resp {
            status,
            headers,
            body: raw.clone(),
            raw,
        })
    }
}

/// A whole chunked body at the start of `data`: (its length on the wire, the decoded bytes);
/// `None` while incomplete. Panics on bad framing.
pub fn decode_chunked(data: &[u8]) -> Option<(usize, Vec<u8>)> {
    let mut at = 0;
    let mut body = Vec::new();
    loop {
        let line_end = at + find(&data[at..], b"\r\n")?;
        let line = std::str::from_utf8(&data[at..line_end]).expect("chunk size line");
        let size_hex = line.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_hex, 16)
            .unwrap_or_else(|_| panic!("bad chunk size line {line:?}"));
        at = line_end + 2;
        if size == 0 {
            // Trailer lines, then the empty line.
            loop {
                let end = at + find(&data[at..], b"\r\n")?;
                let empty = end == at;
                at = end + 2;
                if empty {
                    return Some((at, body));
                }
            }
        }
        if data.len() < at + size + 2 {
            return None;
        }
        body.extend_from_slice(&data[at..at + size]);
        assert_eq!(
            &data[at + size..at + size + 2],
            b"\r\n",
            "chunk data ends in CRLF"
        );
        at += size + 2;
    }
}

/// Asserts a 200 whose body is `want`.
#[track_caller]
pub fn assert_ok(resp: &Resp, want: &str) {
    let got = (resp.status, resp.text());
    assert_eq!(got, (200, want.to_string()), "headers: {:?}", resp.headers);
}

/// A GET of `path` for the host the tests route.
pub fn get(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: fast.test\r\n\r\n")
}

/// A 200 with `body` and its Content-Length.
pub fn ok(body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// `n` bytes that differ from one position to the next (xorshift), so a lost or moved byte shows.
pub fn payload(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// An upstream whose answer body is every X-Request-Id it got (joined with `|`), and which sends
/// an `X-Request-Id: from-upstream` of its own that must never reach the client.
pub async fn request_id_upstream() -> RawUpstream {
    keep_alive_upstream(|req| {
        let ids = values(&req.headers, "x-request-id").join("|");
        format!(
            "HTTP/1.1 200 OK\r\nX-Request-Id: from-upstream\r\nContent-Length: {}\r\n\r\n{ids}",
            ids.len()
        )
        .into_bytes()
    })
    .await
}

/// Checks the X-Request-Id values a client got for a request whose own id could not be kept:
/// exactly one, 32 lowercase hex digits, and the one the upstream got (`upstream_saw`, from
/// [`request_id_upstream`]). Returns it.
pub fn generated_id(ids: &[&str], upstream_saw: &str, what: &str) -> String {
    assert_eq!(ids.len(), 1, "{what}: {ids:?}");
    let id = ids[0];
    let hex = id.len() == 32 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    assert!(hex, "{what}: {id:?} is not 32 lowercase hex digits");
    assert_eq!(upstream_saw, id, "{what}: the upstream got another id");
    id.to_string()
}
