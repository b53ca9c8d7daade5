//! The admin listener: `/metrics` (Prometheus text), `/healthz` (the process runs) and
//! `/readyz` (configuration loaded, proxy listeners accepting, first probe round done; 503 while
//! draining). It is a small server of our own, not a pingora service, so that it keeps answering
//! through a graceful shutdown, when pingora closes its listeners.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::healthcheck::reachable;
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
                all &= accepts(*addr).await;
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

/// Whether a proxy listener accepts connections. The kernel's table of listening sockets says
/// so without a connection: a bare connect to the https port would be a TLS handshake cut short,
/// which pingora logs as an error. Where that table cannot be read, a connect decides.
async fn accepts(addr: SocketAddr) -> bool {
    if let Some(listed) = kernel_lists(addr) {
        return listed;
    }
    let probe = tokio::time::timeout(
        Duration::from_millis(500),
        TcpStream::connect(reachable(addr)),
    );
    matches!(probe.await, Ok(Ok(_)))
}

/// `Some(true)` when /proc/net/tcp{,6} lists a listening socket on `addr` (or on the wildcard
/// address of its port); None when the table cannot be read.
fn kernel_lists(addr: SocketAddr) -> Option<bool> {
    let table = if addr.is_ipv4() {
        "/proc/net/tcp"
    } else {
        "/proc/net/tcp6"
    };
    let text = std::fs::read_to_string(table).ok()?;
    Some(text.lines().skip(1).any(|line| listens_on(line, addr)))
}

/// One line of /proc/net/tcp{,6}: `sl local_address rem_address st ...`, addresses in hex as
/// the kernel holds them (32-bit words in host byte order), state 0A = LISTEN.
fn listens_on(line: &str, addr: SocketAddr) -> bool {
    let mut fields = line.split_whitespace().skip(1);
    let (Some(local), Some(_remote), Some(state)) = (fields.next(), fields.next(), fields.next())
    else {
        return false;
    };
    let Some((ip_hex, port_hex)) = local.split_once(':') else {
        return false;
    };
    if state != "0A" || u16::from_str_radix(port_hex, 16).ok() != Some(addr.port()) {
        return false;
    }
    let Some(ip) = kernel_ip(ip_hex) else {
        return false;
    };
    ip == addr.ip() || ip.is_unspecified()
}

fn kernel_ip(hex: &str) -> Option<IpAddr> {
    let words = (0..hex.len() / 8)
        .map(|i| u32::from_str_radix(hex.get(i * 8..i * 8 + 8)?, 16).ok())
        .collect::<Option<Vec<u32>>>()?;
    let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_ne_bytes()).collect();
    match bytes.len() {
        4 => <[u8; 4]>::try_from(bytes).ok().map(IpAddr::from),
        16 => <[u8; 16]>::try_from(bytes).ok().map(IpAddr::from),
        _ => None,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_table_lines() {
        // 127.0.0.1:8080 and 0.0.0.0:443 listening, as little-endian x86 prints them.
        let v4 = "   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1";
        let any = "   1: 00000000:01BB 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 2";
        let est = "   2: 0100007F:1F90 0100007F:D431 01 00000000:00000000 00:00000000 00000000     0        0 3";
        let at = |s: &str| s.parse::<SocketAddr>().expect("addr");
        if cfg!(target_endian = "little") {
            assert!(listens_on(v4, at("127.0.0.1:8080")));
            assert!(!listens_on(v4, at("127.0.0.2:8080")));
            assert!(listens_on(any, at("10.1.2.3:443")));
        }
        assert!(!listens_on(v4, at("127.0.0.1:8081")));
        assert!(!listens_on(est, at("127.0.0.1:8080")));
        assert!(!listens_on("garbage", at("127.0.0.1:8080")));
    }

    #[tokio::test]
    async fn a_bound_listener_is_seen_without_a_connection() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        assert_eq!(kernel_lists(addr), Some(true));
        drop(listener);
        assert_eq!(kernel_lists(addr), Some(false));
        assert!(!accepts(addr).await);
    }
}
