//! HTTP/1 request smuggling: every request whose body framing could be read two ways is answered
//! 400 + `connection: close` and never reaches an upstream; malformed chunks and obsolete line
//! folding are never forwarded as a complete request; plain chunked bodies still work.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{find, raw_status, Proxy, RawUpstream, Upstream};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A request a smuggler hopes the upstream reads as a second one.
const SMUGGLED: &str = "GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n";

/// A raw upstream that records every byte it receives and answers `200 ok` (then closes) only
/// once a connection has delivered a complete request (head plus its body by Content-Length or
/// chunked terminator).
struct Recorder {
    raw: RawUpstream,
    bytes: Arc<Mutex<Vec<u8>>>,
    complete: Arc<AtomicUsize>,
}

impl Recorder {
    async fn start() -> Recorder {
        let bytes = Arc::new(Mutex::new(Vec::new()));
        let complete = Arc::new(AtomicUsize::new(0));
        let (all, done) = (bytes.clone(), complete.clone());
        let raw = RawUpstream::start(move |mut s: TcpStream| {
            let (all, done) = (all.clone(), done.clone());
            async move {
                let mut conn = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    let n = match tokio::time::timeout(Duration::from_secs(5), s.read(&mut chunk))
                        .await
                    {
                        Ok(Ok(n)) if n > 0 => n,
                        _ => return,
                    };
                    conn.extend_from_slice(&chunk[..n]);
                    all.lock().unwrap().extend_from_slice(&chunk[..n]);
                    if request_complete(&conn) {
                        done.fetch_add(1, Ordering::SeqCst);
                        let _ = s
                            .write_all(
                                b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok",
                            )
                            .await;
                        return;
                    }
                }
            }
        })
        .await;
        Recorder {
            raw,
            bytes,
            complete,
        }
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes.lock().unwrap()).into_owned()
    }
}

/// Whether `buf` starts with a whole HTTP/1 request.
fn request_complete(buf: &[u8]) -> bool {
    let Some(end) = find(buf, b"\r\n\r\n") else {
        return false;
    };
    let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
    let body = &buf[end + 4..];
    for line in head.lines() {
        if let Some(v) = line.strip_prefix("content-length:") {
            return v.trim().parse::<usize>().is_ok_and(|n| body.len() >= n);
        }
        if line.starts_with("transfer-encoding:") {
            return body.starts_with(b"0\r\n\r\n") || find(body, b"\r\n0\r\n\r\n").is_some();
        }
    }
    true
}

/// Writes `bytes` on a fresh connection and reads until the proxy closes it or `timeout`
/// passes. Returns what was read and whether the connection was closed.
async fn exchange(proxy: &Proxy, bytes: &[u8], timeout: Duration) -> (String, bool) {
    let mut s = TcpStream::connect(proxy.http_addr())
        .await
        .expect("connect");
    let _ = s.write_all(bytes).await;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + timeout;
    let closed = loop {
        match tokio::time::timeout_at(deadline, s.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break true,
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
            Err(_) => break false,
        }
    };
    (String::from_utf8_lossy(&buf).into_owned(), closed)
}

fn routes(recorder: &Recorder, echo: &Upstream) -> String {
    format!(
        "upstreams:\n  raw:\n    servers: [{}]\n    retries: 0\n    read_timeout: 3s\n  echo:\n    servers: [{}]\n\
         routes:\n  - {{ path: /raw, upstream: raw }}\n  - {{ path: /echo, upstream: echo }}\n",
        recorder.raw.host_port(),
        echo.host_port()
    )
}

fn post(headers: &str, body: &str) -> Vec<u8> {
    format!("POST /raw HTTP/1.1\r\nHost: x\r\n{headers}\r\n\r\n{body}{SMUGGLED}").into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ambiguous_framing_is_400_close_and_never_forwarded() {
    let recorder = Recorder::start().await;
    let echo = Upstream::echo("echo").await;
    let proxy = Proxy::start(&routes(&recorder, &echo)).await;

    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "CL + TE",
            post(
                "Content-Length: 5\r\nTransfer-Encoding: chunked",
                "0\r\n\r\n",
            ),
        ),
        (
            "TE + CL",
            post(
                "Transfer-Encoding: chunked\r\nContent-Length: 5",
                "0\r\n\r\n",
            ),
        ),
        (
            "CL 3 and CL 4",
            post("Content-Length: 3\r\nContent-Length: 4", "abcd"),
        ),
        ("CL `3, 4`", post("Content-Length: 3, 4", "abcd")),
        ("CL `+3`", post("Content-Length: +3", "abc")),
        ("CL `-3`", post("Content-Length: -3", "abc")),
        ("CL `3 4`", post("Content-Length: 3 4", "abcd")),
        (
            "TE gzip, chunked",
            post("Transfer-Encoding: gzip, chunked", "0\r\n\r\n"),
        ),
        (
            "two TE headers",
            post(
                "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked",
                "0\r\n\r\n",
            ),
        ),
        (
            "TE chunked, identity",
            post("Transfer-Encoding: chunked, identity", "0\r\n\r\n"),
        ),
        (
            "TE xchunked",
            post("Transfer-Encoding: xchunked", "0\r\n\r\n"),
        ),
        (
            "TE identity",
            post("Transfer-Encoding: identity", "0\r\n\r\n"),
        ),
        (
            "TE chunked + TE identity",
            post(
                "Transfer-Encoding: chunked\r\nTransfer-Encoding: identity",
                "0\r\n\r\n",
            ),
        ),
    ];
    let answers = futures_util::future::join_all(
        cases
            .iter()
            .map(|(_, req)| exchange(&proxy, req, Duration::from_secs(3))),
    )
    .await;

    let mut wrong = Vec::new();
    for ((name, _), (resp, closed)) in cases.iter().zip(answers) {
        let head = resp
            .split("\r\n\r\n")
            .next()
            .unwrap_or("")
            .to_ascii_lowercase();
        let answers = resp.matches("HTTP/1.").count();
        if raw_status(&resp) != 400 {
            wrong.push(format!(
                "{name}: want 400, got {:?}",
                resp.lines().next().unwrap_or("<nothing>")
            ));
        } else if !head.contains("connection: close") {
            wrong.push(format!("{name}: 400 without `connection: close`:\n{head}"));
        } else if !closed {
            wrong.push(format!("{name}: connection still open 3 s after the 400"));
        } else if answers != 1 {
            wrong.push(format!(
                "{name}: {answers} responses, the smuggled request was answered:\n{resp}"
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    assert_eq!(
        recorder.raw.connections(),
        0,
        "the upstream was contacted: {:?}",
        recorder.text()
    );
    assert_eq!(echo.requests(), 0);

    // The proxy still serves well-formed requests.
    let resp = proxy.get("/echo/after").await;
    assert_eq!(resp.status().as_u16(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_chunks_and_folded_headers_are_never_forwarded_whole() {
    let recorder = Recorder::start().await;
    let echo = Upstream::echo("echo").await;
    let proxy = Proxy::start(&routes(&recorder, &echo)).await;

    let te = "Transfer-Encoding: chunked";
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "chunk size `zz`",
            post(te, &format!("3\r\nabc\r\nzz\r\n{SMUGGLED}0\r\n\r\n")),
        ),
        (
            "chunk size overflowing 64 bits",
            post(te, "1ffffffffffffffff1\r\nabc\r\n0\r\n\r\n"),
        ),
        ("negative chunk size", post(te, "-3\r\nabc\r\n0\r\n\r\n")),
        (
            "folded header line",
            format!("GET /raw HTTP/1.1\r\nHost: x\r\nX-A: a\r\n folded\r\n\r\n{SMUGGLED}")
                .into_bytes(),
        ),
        (
            "TE hidden in a folded line",
            post(
                "Content-Length: 5\r\nX-A: a\r\n Transfer-Encoding: chunked",
                "0\r\n\r\n",
            ),
        ),
        (
            "space before the colon",
            post(
                "Content-Length: 5\r\nTransfer-Encoding : chunked",
                "0\r\n\r\n",
            ),
        ),
    ];
    let answers = futures_util::future::join_all(
        cases
            .iter()
            .map(|(_, req)| exchange(&proxy, req, Duration::from_secs(4))),
    )
    .await;

    let mut wrong = Vec::new();
    for ((name, _), (resp, closed)) in cases.iter().zip(answers) {
        let status = raw_status(&resp);
        let ok = status == 400 || (resp.is_empty() && closed);
        if !ok {
            wrong.push(format!(
                "{name}: want 400 or a closed connection, got {:?} (closed: {closed})",
                resp.lines().next().unwrap_or("<nothing>")
            ));
        }
        if resp.matches("HTTP/1.").count() > 1 {
            wrong.push(format!("{name}: more than one response:\n{resp}"));
        }
    }
    let seen = recorder.text();
    assert!(
        wrong.is_empty(),
        "{}\nupstream saw: {seen:?}",
        wrong.join("\n")
    );
    assert_eq!(
        recorder.complete.load(Ordering::SeqCst),
        0,
        "the upstream received a complete request: {seen:?}"
    );
    assert!(
        !seen.contains("/smuggled"),
        "the smuggled request reached the upstream: {seen:?}"
    );
    assert!(
        !seen.contains("folded"),
        "a folded line reached the upstream: {seen:?}"
    );
    assert_eq!(echo.requests(), 0);
    assert_eq!(proxy.get("/echo/after").await.status().as_u16(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_chunked_post_works_and_keeps_the_connection_in_step() {
    let recorder = Recorder::start().await;
    let echo = Upstream::echo("echo").await;
    let proxy = Proxy::start(&routes(&recorder, &echo)).await;

    let mut s = TcpStream::connect(proxy.http_addr()).await.unwrap();
    s.write_all(
        b"POST /echo/chunked HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n\
          5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\n\r\n",
    )
    .await
    .unwrap();
    let first = common::read_response(&mut s, Duration::from_secs(5)).await;
    assert_eq!(raw_status(&first), 200, "{first}");
    // A second request on the same connection is read where the first one ended.
    s.write_all(b"GET /echo/second HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let second = common::read_response(&mut s, Duration::from_secs(5)).await;
    assert_eq!(raw_status(&second), 200, "{second}");

    let seen = echo.state.seen();
    let uris: Vec<&str> = seen.iter().map(|s| s.uri.as_str()).collect();
    assert_eq!(uris, ["/echo/chunked", "/echo/second"]);
    assert_eq!(&seen[0].body[..], b"hello world");
    assert_eq!(recorder.raw.connections(), 0);
}

/// `Connection` may name headers to drop, but never the framing: a body announced by a
/// Content-Length that `Connection` names still reaches the upstream as this request's body,
/// never as a request of its own. Over plain HTTP/1.1 (the fast path) and with a chunked body
/// (pingora's path).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_cannot_name_the_framing_away() {
    let recorder = Recorder::start().await;
    let echo = Upstream::echo("echo").await;
    let proxy = Proxy::start(&routes(&recorder, &echo)).await;
    let sized = format!(
        "POST /raw/sized HTTP/1.1\r\nHost: x\r\nConnection: content-length, close\r\n\
         Content-Length: {}\r\n\r\n{SMUGGLED}",
        SMUGGLED.len()
    );
    let chunked = format!(
        "POST /raw/chunked HTTP/1.1\r\nHost: x\r\nConnection: transfer-encoding, close\r\n\
         Transfer-Encoding: chunked\r\n\r\n{:x}\r\n{SMUGGLED}\r\n0\r\n\r\n",
        SMUGGLED.len()
    );
    // Expect sends it to pingora's path, with the Content-Length named by Connection.
    let expecting = format!(
        "POST /raw/expecting HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n\
         Connection: content-length, close\r\nContent-Length: {}\r\n\r\n{SMUGGLED}",
        SMUGGLED.len()
    );
    for request in [sized, chunked, expecting] {
        let (got, closed) = exchange(&proxy, request.as_bytes(), Duration::from_secs(5)).await;
        // rproxy answers `Expect: 100-continue` itself (the upstream never sees it).
        let expects = request.contains("Expect:");
        let interim = "HTTP/1.1 100 Continue\r\n\r\n";
        assert_eq!(got.starts_with(interim), expects, "{request:?}: {got}");
        let got = got.strip_prefix(interim).unwrap_or(&got);
        assert_eq!(raw_status(got), 200, "{request:?}: {got}");
        assert!(closed, "the client asked to close");
    }
    // Every head reached the upstream with framing, so it read the smuggled bytes as bodies
    // (pingora's path may re-frame a sized body as chunked: also fine).
    let seen = recorder.text().to_ascii_lowercase();
    let sized = format!("content-length: {}", SMUGGLED.len());
    let heads: Vec<&str> = seen
        .split("post /raw/")
        .skip(1)
        .map(|r| r.split("\r\n\r\n").next().unwrap_or(""))
        .collect();
    assert_eq!(heads.len(), 3, "{seen:?}");
    assert!(!seen.contains("expect:"), "Expect forwarded: {seen:?}");
    for head in heads {
        let framed = head
            .lines()
            .any(|l| l == sized || l == "transfer-encoding: chunked");
        assert!(framed, "a head without its framing: {head:?}");
    }
    assert_eq!(recorder.complete.load(Ordering::SeqCst), 3, "{seen:?}");
}
