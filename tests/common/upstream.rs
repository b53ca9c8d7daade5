//! In-process upstreams on `127.0.0.1:0`: a hyper HTTP/1.1 server that names itself or echoes
//! the request, with a switchable health status, delays and counters; and a raw-TCP one.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use super::find;

/// What an upstream answers to requests other than its health path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reply {
    /// `200`, `X-Server: <name>`, body `<name>`.
    Name,
    /// `200`, `X-Server: <name>`, JSON body describing the request (see [`Seen`]).
    Echo,
}

/// One request as an upstream saw it.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: String,
    /// Path and query, as on the request line.
    pub uri: String,
    pub version: String,
    /// Header name (lowercase) -> values in order.
    pub headers: BTreeMap<String, Vec<String>>,
    pub body: Bytes,
}

impl Seen {
    /// The first value of header `name`.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(&name.to_ascii_lowercase())
            .and_then(|v| v.first())
            .map(String::as_str)
    }

    /// All values of header `name` joined with `, `.
    pub fn header_joined(&self, name: &str) -> Option<String> {
        self.headers
            .get(&name.to_ascii_lowercase())
            .map(|v| v.join(", "))
    }

    pub fn to_json(&self, server: &str) -> serde_json::Value {
        serde_json::json!({
            "server": server,
            "method": self.method,
            "uri": self.uri,
            "version": self.version,
            "headers": self.headers,
            "body_len": self.body.len(),
        })
    }
}

/// Shared, runtime-adjustable state of an [`Upstream`].
pub struct UpstreamState {
    pub name: String,
    /// Status `/health` (the health path) answers with; flip it at runtime.
    pub health_status: AtomicU16,
    /// Delay before answering non-health requests, in milliseconds.
    pub delay_ms: AtomicU64,
    /// Non-health requests received (counted on arrival, before any delay).
    pub requests: AtomicUsize,
    /// Health probes received.
    pub health_checks: AtomicUsize,
    /// Non-health requests currently being handled.
    pub in_flight: AtomicUsize,
    /// Connections accepted.
    pub connections: AtomicUsize,
    /// Every non-health request, in arrival order.
    pub seen: Mutex<Vec<Seen>>,
    pub reply: Reply,
    pub health_path: String,
}

impl UpstreamState {
    pub fn set_health(&self, status: u16) {
        self.health_status.store(status, Ordering::SeqCst);
    }

    pub fn set_delay(&self, delay: Duration) {
        self.delay_ms
            .store(delay.as_millis() as u64, Ordering::SeqCst);
    }

    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }

    pub fn health_checks(&self) -> usize {
        self.health_checks.load(Ordering::SeqCst)
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::SeqCst)
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().expect("seen lock").clone()
    }

    pub fn last_seen(&self) -> Option<Seen> {
        self.seen.lock().expect("seen lock").last().cloned()
    }
}

/// An in-process hyper HTTP/1.1 upstream on `127.0.0.1:0`; stops when dropped.
///
/// - the health path (default `/health`) answers `health_status` (default 200), body `health`;
/// - any other request is counted, recorded in `seen`, delayed by `delay_ms` or by the request
///   header `X-Delay-Ms`, then answered per [`Reply`]. A request header `X-Status: <code>` sets
///   the response status.
pub struct Upstream {
    pub addr: SocketAddr,
    pub state: Arc<UpstreamState>,
    task: JoinHandle<()>,
}

impl Upstream {
    /// An upstream answering with its name.
    pub async fn named(name: &str) -> Upstream {
        UpstreamBuilder::new(name).start().await
    }

    /// An upstream answering with a JSON echo of the request.
    pub async fn echo(name: &str) -> Upstream {
        UpstreamBuilder::new(name).reply(Reply::Echo).start().await
    }

    pub fn builder(name: &str) -> UpstreamBuilder {
        UpstreamBuilder::new(name)
    }

    /// `127.0.0.1:<port>` as written in `servers:`.
    pub fn host_port(&self) -> String {
        self.addr.to_string()
    }

    pub fn name(&self) -> &str {
        &self.state.name
    }

    pub fn requests(&self) -> usize {
        self.state.requests()
    }

    pub fn set_health(&self, status: u16) {
        self.state.set_health(status);
    }

    pub fn set_delay(&self, delay: Duration) {
        self.state.set_delay(delay);
    }

    pub fn last_seen(&self) -> Option<Seen> {
        self.state.last_seen()
    }

    /// Stops accepting (the port is then refused); open connections are dropped with the task.
    pub fn stop(&self) {
        self.task.abort();
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub struct UpstreamBuilder {
    name: String,
    reply: Reply,
    health_status: u16,
    health_path: String,
    delay: Duration,
    port: u16,
    ip: std::net::Ipv4Addr,
}

impl UpstreamBuilder {
    pub fn new(name: &str) -> Self {
        UpstreamBuilder {
            name: name.to_string(),
            reply: Reply::Name,
            health_status: 200,
            health_path: "/health".to_string(),
            delay: Duration::ZERO,
            port: 0,
            ip: std::net::Ipv4Addr::LOCALHOST,
        }
    }

    pub fn reply(mut self, reply: Reply) -> Self {
        self.reply = reply;
        self
    }

    /// Initial status of the health path.
    pub fn health(mut self, status: u16) -> Self {
        self.health_status = status;
        self
    }

    pub fn health_path(mut self, path: &str) -> Self {
        self.health_path = path.to_string();
        self
    }

    pub fn delay(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }

    /// Listen on a given port instead of 0 (e.g. to bring a dead pool member to life).
    pub fn port(mut self, port: u16) -> Self {
        self.port = port;
        self
    }

    /// Listen on another loopback address (e.g. 127.0.0.2), to stand for one DNS answer.
    pub fn ip(mut self, ip: std::net::Ipv4Addr) -> Self {
        self.ip = ip;
        self
    }

    pub async fn start(self) -> Upstream {
        let listener = TcpListener::bind((self.ip, self.port))
            .await
            .expect("bind upstream");
        let addr = listener.local_addr().expect("upstream addr");
        let state = Arc::new(UpstreamState {
            name: self.name,
            health_status: AtomicU16::new(self.health_status),
            delay_ms: AtomicU64::new(self.delay.as_millis() as u64),
            requests: AtomicUsize::new(0),
            health_checks: AtomicUsize::new(0),
            in_flight: AtomicUsize::new(0),
            connections: AtomicUsize::new(0),
            seen: Mutex::new(Vec::new()),
            reply: self.reply,
            health_path: self.health_path,
        });
        let st = state.clone();
        let task = tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                st.connections.fetch_add(1, Ordering::SeqCst);
                let st = st.clone();
                conns.spawn(async move {
                    let svc = service_fn(move |req| handle(st.clone(), req));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .with_upgrades()
                        .await;
                });
                // Reap finished connection tasks so the set does not grow without bound.
                while conns.try_join_next().is_some() {}
            }
        });
        Upstream { addr, state, task }
    }
}

/// Decrements `in_flight` when dropped (also when the proxy gives up on a request).
struct InFlight(Arc<UpstreamState>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn handle(
    st: Arc<UpstreamState>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    if req.uri().path() == st.health_path {
        st.health_checks.fetch_add(1, Ordering::SeqCst);
        let status = st.health_status.load(Ordering::SeqCst);
        return Ok(Response::builder()
            .status(status)
            .header("x-server", st.name.as_str())
            .body(Full::new(Bytes::from_static(b"health")))
            .expect("health response"));
    }

    st.requests.fetch_add(1, Ordering::SeqCst);
    st.in_flight.fetch_add(1, Ordering::SeqCst);
    let _guard = InFlight(st.clone());

    let (parts, body) = req.into_parts();
    let mut headers: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (k, v) in parts.headers.iter() {
        headers
            .entry(k.as_str().to_string())
            .or_default()
            .push(String::from_utf8_lossy(v.as_bytes()).into_owned());
    }
    let body = body
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    let seen = Seen {
        method: parts.method.to_string(),
        uri: parts
            .uri
            .path_and_query()
            .map(|pq| pq.as_str().to_string())
            .unwrap_or_else(|| parts.uri.to_string()),
        version: format!("{:?}", parts.version),
        headers,
        body,
    };
    st.seen.lock().expect("seen lock").push(seen.clone());

    let delay = seen
        .header("x-delay-ms")
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or_else(|| st.delay_ms.load(Ordering::SeqCst));
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    let status = seen
        .header("x-status")
        .and_then(|v| v.parse::<u16>().ok())
        .unwrap_or(200);

    let (ctype, body) = match st.reply {
        Reply::Name => ("text/plain", Bytes::from(st.name.clone())),
        Reply::Echo => (
            "application/json",
            Bytes::from(seen.to_json(&st.name).to_string()),
        ),
    };
    Ok(Response::builder()
        .status(status)
        .header("x-server", st.name.as_str())
        .header("content-type", ctype)
        .body(Full::new(body))
        .expect("response"))
}

/// A raw-TCP upstream on `127.0.0.1:0`: `handler` gets every accepted connection.
/// The listener stops when the returned handle is dropped.
pub struct RawUpstream {
    pub addr: SocketAddr,
    pub connections: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl RawUpstream {
    pub async fn start<F, Fut>(handler: F) -> RawUpstream
    where
        F: Fn(TcpStream) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind raw upstream");
        let addr = listener.local_addr().expect("raw upstream addr");
        let connections = Arc::new(AtomicUsize::new(0));
        let count = connections.clone();
        let task = tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                count.fetch_add(1, Ordering::SeqCst);
                conns.spawn(handler(stream));
                while conns.try_join_next().is_some() {}
            }
        });
        RawUpstream {
            addr,
            connections,
            task,
        }
    }

    pub fn host_port(&self) -> String {
        self.addr.to_string()
    }

    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

impl Drop for RawUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Reads from `stream` until the end of a request head (`\r\n\r\n`), EOF or 5 s; returns it.
pub async fn read_head(stream: &mut TcpStream) -> String {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    while find(&buf, b"\r\n\r\n").is_none() {
        match tokio::time::timeout_at(deadline, stream.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    String::from_utf8_lossy(&buf).into_owned()
}

/// YAML for a pool's `servers:` list, e.g. `[127.0.0.1:1, 127.0.0.1:2]`.
pub fn servers_yaml(addrs: &[String]) -> String {
    format!("[{}]", addrs.join(", "))
}
