//! The admin listener: `/metrics` (Prometheus text), `/healthz` (the process runs) and
//! `/readyz` (configuration loaded, proxy listeners accepting, first probe round done; 503 while
//! draining). It is a small server of our own, not a pingora service, so that it keeps answering
//! through a graceful shutdown, when pingora closes its listeners.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::metrics;
use crate::state::State;

const MAX_HEAD: usize = 8 << 10;
const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// Serves the admin endpoints on `addr`.
pub struct Admin {
    pub state: Arc<State>,
    pub addr: SocketAddr,
    /// The proxy listeners that must accept connections before `/readyz` says ready.
    pub proxy_listeners: Vec<SocketAddr>,
    listening: AtomicBool,
}

impl Admin {
    pub fn new(state: Arc<State>, addr: SocketAddr, proxy_listeners: Vec<SocketAddr>) -> Admin {
        Admin {
            state,
            addr,
            proxy_listeners,
            listening: AtomicBool::new(false),
        }
    }

    async fn answer(&self, path: &str) -> (u16, &'static str, Vec<u8>) {
        let plain = "text/plain; charset=utf-8";
        match path {
            "/healthz" => (200, plain, b"ok\n".to_vec()),
            "/readyz" if self.state.is_draining() => (503, plain, b"draining\n".to_vec()),
            "/readyz" if self.ready().await => (200, plain, b"ready\n".to_vec()),
            "/readyz" => (503, plain, b"starting\n".to_vec()),
            "/metrics" => (200, "text/plain; version=0.0.4", metrics::render()),
            _ => (404, plain, b"404 Not Found\n".to_vec()),
        }
    }

    async fn ready(&self) -> bool {
        if !self.listening.load(Ordering::Acquire) {
            let mut all = true;
            for addr in &self.proxy_listeners {
                let probe = tokio::time::timeout(
                    Duration::from_millis(500),
                    TcpStream::connect(local(*addr)),
                );
                all &= matches!(probe.await, Ok(Ok(_)));
            }
            self.listening.store(all, Ordering::Release);
        }
        self.listening.load(Ordering::Acquire) && self.state.is_ready()
    }

    async fn serve(&self, mut conn: TcpStream) {
        let mut head = Vec::with_capacity(512);
        let read = tokio::time::timeout(READ_TIMEOUT, async {
            let mut buf = [0u8; 1024];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < MAX_HEAD {
                match conn.read(&mut buf).await {
                    Ok(0) | Err(_) => return false,
                    Ok(n) => head.extend_from_slice(&buf[..n]),
                }
            }
            true
        });
        if !matches!(read.await, Ok(true)) {
            return;
        }
        let line = head.split(|&b| b == b'\r').next().unwrap_or_default();
        let mut words = line.split(|&b| b == b' ');
        let (method, target) = (
            words.next().unwrap_or_default(),
            words.next().unwrap_or_default(),
        );
        let path = std::str::from_utf8(target)
            .unwrap_or("")
            .split('?')
            .next()
            .unwrap_or("");
        let (status, content_type, body) = self.answer(path).await;
        let reason = http::StatusCode::from_u16(status)
            .ok()
            .and_then(|s| s.canonical_reason())
            .unwrap_or("");
        let mut out = format!(
            "HTTP/1.1 {status} {reason}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
            body.len()
        )
        .into_bytes();
        if method != b"HEAD" {
            out.extend_from_slice(&body);
        }
        let _ = conn.write_all(&out).await;
        let _ = conn.shutdown().await;
    }
}

/// A wildcard listen address, as reachable from this host.
fn local(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => {
            SocketAddr::new(Ipv4Addr::LOCALHOST.into(), addr.port())
        }
        IpAddr::V6(ip) if ip.is_unspecified() => {
            SocketAddr::new(Ipv6Addr::LOCALHOST.into(), addr.port())
        }
        _ => addr,
    }
}

/// Runs the admin server; it keeps serving after the shutdown signal (the drain is visible on
/// `/readyz`) until the process exits.
pub struct AdminService {
    pub admin: Arc<Admin>,
}

#[async_trait]
impl BackgroundService for AdminService {
    async fn start(&self, _shutdown: ShutdownWatch) {
        let listener = match TcpListener::bind(self.admin.addr).await {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(addr = %self.admin.addr, "cannot listen for admin requests: {e}");
                return;
            }
        };
        loop {
            let Ok((conn, _)) = listener.accept().await else {
                continue;
            };
            let admin = self.admin.clone();
            tokio::spawn(async move { admin.serve(conn).await });
        }
    }
}
