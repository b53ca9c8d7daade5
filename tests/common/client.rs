//! Clients: reqwest (no system proxy, no redirects) and raw TCP for requests a well-behaved
//! client cannot send, plus a minimal HTTP/1 response reader.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A reqwest client that ignores any system proxy and never follows redirects.
pub fn client() -> reqwest::Client {
    client_builder().build().expect("reqwest client")
}

/// The base builder behind [`client`], for tests that need more settings.
pub fn client_builder() -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(10))
}

/// A client that opens a fresh connection for every request (no keep-alive pooling).
pub fn fresh_client() -> reqwest::Client {
    client_builder()
        .pool_max_idle_per_host(0)
        .build()
        .expect("reqwest client")
}

/// The response body parsed as JSON (panics with the body text when it is not JSON).
pub async fn json_body(resp: reqwest::Response) -> serde_json::Value {
    let text = resp.text().await.expect("response body");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// Writes `bytes` to `addr` and reads the response until the peer closes, a complete response
/// (by `Content-Length` or chunked terminator) arrived, or 5 s passed. Returns what was read.
pub async fn raw_request(addr: SocketAddr, bytes: &[u8]) -> String {
    raw_request_timeout(addr, bytes, Duration::from_secs(5)).await
}

/// [`raw_request`] with an explicit overall timeout.
pub async fn raw_request_timeout(addr: SocketAddr, bytes: &[u8], timeout: Duration) -> String {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    // The peer may answer and close before reading everything; ignore write errors.
    let _ = stream.write_all(bytes).await;
    let _ = stream.flush().await;
    read_response(&mut stream, timeout).await
}

/// Reads one HTTP/1.x response from `stream` (see [`raw_request`] for when it stops).
pub async fn read_response(stream: &mut TcpStream, timeout: Duration) -> String {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        if response_complete(&buf) {
            break;
        }
        match tokio::time::timeout_at(deadline, stream.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    String::from_utf8_lossy(&buf).into_owned()
}

/// Whether `buf` holds a complete response with a known length (skipping 1xx heads).
fn response_complete(buf: &[u8]) -> bool {
    let mut rest = buf;
    loop {
        let Some(end) = find(rest, b"\r\n\r\n") else {
            return false;
        };
        let head = String::from_utf8_lossy(&rest[..end]).to_ascii_lowercase();
        let body = &rest[end + 4..];
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse::<u16>().ok())
            .unwrap_or(0);
        if (100..200).contains(&status) && status != 101 {
            rest = body;
            continue;
        }
        if status == 204 || status == 304 || status == 101 {
            return true;
        }
        for line in head.lines() {
            if let Some(v) = line.strip_prefix("content-length:") {
                return v
                    .trim()
                    .parse::<usize>()
                    .map(|n| body.len() >= n)
                    .unwrap_or(false);
            }
            if line.starts_with("transfer-encoding:") && line.contains("chunked") {
                return find(body, b"0\r\n\r\n").is_some_and(|i| i == 0 || body[i - 1] == b'\n');
            }
        }
        return false;
    }
}

pub(crate) fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// The status code of a raw response text (`HTTP/1.1 404 Not Found` -> 404); 0 when absent.
pub fn raw_status(resp: &str) -> u16 {
    resp.split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// Sends `n` GETs for `path` (fresh connection each when `fresh`) and counts responses by their
/// `X-Server` header. Panics on a non-200 answer.
pub async fn count_servers(
    client: &reqwest::Client,
    url: &str,
    n: usize,
) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for i in 0..n {
        let resp = client
            .get(url)
            .send()
            .await
            .unwrap_or_else(|e| panic!("request {i} to {url}: {e}"));
        assert_eq!(resp.status().as_u16(), 200, "request {i} to {url}");
        let server = resp
            .headers()
            .get("x-server")
            .map(|v| v.to_str().unwrap_or("?").to_string())
            .unwrap_or_else(|| "<none>".to_string());
        *counts.entry(server).or_insert(0) += 1;
    }
    counts
}
