#![allow(dead_code)]
//! Shared integration-test harness: runs the real `rproxy` binary on free ports with a YAML file
//! written into a temp dir, starts in-process hyper upstreams on port 0, and offers reqwest and
//! raw-TCP clients. Each test binary uses a subset, hence the `dead_code` allowance.

use std::future::Future;
use std::net::{SocketAddr, TcpListener as StdTcpListener};
use std::time::{Duration, Instant};

mod client;
pub mod curl;
mod proxy;
pub mod python_apps;
mod upstream;
pub mod wire;

pub use client::*;
pub use proxy::*;
pub use upstream::*;

/// How long the harness waits for `/readyz` before giving up.
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// Poll interval for readiness and other bounded waits.
pub const POLL: Duration = Duration::from_millis(50);

/// Path of the binary under test.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_rproxy")
}

/// A port that was free a moment ago, never handed out twice in this process. Ports come from
/// 20000-32767, below Linux's ephemeral range, so outgoing connections cannot take one between
/// this check and rproxy's bind; each test process starts at its own offset.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const LOW: u32 = 20_000;
    const SPAN: u32 = 12_768;
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    let _ = NEXT.compare_exchange(
        u32::MAX,
        std::process::id().wrapping_mul(7919) % SPAN,
        Ordering::AcqRel,
        Ordering::Acquire,
    );
    for _ in 0..SPAN {
        let port = (LOW + NEXT.fetch_add(1, Ordering::AcqRel) % SPAN) as u16;
        if StdTcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in 20000-32767")
}

/// An address with nothing listening on it (connections are refused).
pub fn dead_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], free_port()))
}

/// Polls `cond` every [`POLL`] until it returns true or `timeout` passes; returns whether it held.
pub async fn wait_until<F, Fut>(timeout: Duration, mut cond: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if cond().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(POLL).await;
    }
}

// Helpers for the HTTP/2, TLS, WebSocket, shutdown, reload, metrics, ACME and FastAPI tests.
pub mod h2client;
pub mod pebble;
pub mod prom;
pub mod reload;
pub mod tls;
pub mod whole;
pub mod ws;
