//! Active health probes: `GET <health.path>` to every server of a pool each `interval`; a server
//! turns healthy after `rise` passes and unhealthy after `fall` failures. Runs until the pool is
//! dropped (a reload that removes it), holding only a weak reference between rounds.

use std::net::SocketAddr;
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinSet;

use super::probe_over_peer::{self, Ask};
use super::{Backend, Pool};
use crate::config::model::{HealthConfig, StatusRange};
use crate::metrics;
use std::collections::HashMap;

/// Consecutive results of one server.
#[derive(Debug, Default, Clone, Copy)]
struct Streak {
    passes: u32,
    failures: u32,
}

/// Starts the prober of `pool` on the current runtime unless one already runs.
pub fn spawn(pool: &Arc<Pool>) {
    if pool.claim_prober() {
        tokio::spawn(run(Arc::downgrade(pool)));
    }
}

async fn run(pool: Weak<Pool>) {
    let mut streaks: HashMap<SocketAddr, Streak> = HashMap::new();
    loop {
        let Some(strong) = pool.upgrade() else { return };
        let Some(health) = strong.health.clone() else {
            return;
        };
        let members = strong.members();
        streaks.retain(|addr, _| members.backends.iter().any(|b| b.addr == *addr));
        for (i, result) in probe_all(&strong, &members.backends, &health).await {
            let backend = &members.backends[i];
            let streak = streaks.entry(backend.addr).or_default();
            apply(&strong.name, backend, streak, &health, result);
        }
        strong.mark_probed_once();
        drop(strong);
        tokio::time::sleep(health.interval.0).await;
    }
}

async fn probe_all(
    pool: &Pool,
    backends: &[Arc<Backend>],
    health: &HealthConfig,
) -> Vec<(usize, Result<u16, String>)> {
    let mut set = JoinSet::new();
    let plain = pool.transport.is_plain_http1() && !health.grpc;
    for (i, b) in backends.iter().enumerate() {
        let (addr, path, timeout) = (b.addr, health.path.clone(), health.timeout.0);
        if plain {
            set.spawn(async move { (i, probe(addr, &path, timeout).await) });
            continue;
        }
        // TLS or HTTP/2: the way requests go, through the pool's own peer.
        let (peer, host, grpc) = (pool.http_peer(b), b.name.clone(), health.grpc);
        set.spawn(async move {
            let ask = if grpc {
                Ask::GrpcHealth
            } else {
                Ask::Get(&path)
            };
            let attempt = probe_over_peer::probe(&peer, &host, ask);
            let result = tokio::time::timeout(timeout, attempt)
                .await
                .unwrap_or_else(|_| Err(format!("timed out after {timeout:?}")));
            (i, result)
        });
    }
    let mut out = Vec::with_capacity(backends.len());
    while let Some(joined) = set.join_next().await {
        if let Ok(r) = joined {
            out.push(r);
        }
    }
    out
}

fn apply(
    pool: &str,
    backend: &Backend,
    streak: &mut Streak,
    health: &HealthConfig,
    result: Result<u16, String>,
) {
    tracing::debug!(upstream = %pool, server = %backend.label, ?result, "probe");
    let passed = matches!(result, Ok(code) if passes(health.expect, code));
    if passed {
        streak.passes += 1;
        streak.failures = 0;
    } else {
        streak.failures += 1;
        streak.passes = 0;
    }
    let was = backend.is_healthy();
    let now = if was {
        streak.failures < health.fall
    } else {
        streak.passes >= health.rise
    };
    if now != was {
        backend.set_healthy(now);
        let why = match &result {
            Ok(code) => format!("status {code}"),
            Err(e) => e.clone(),
        };
        if now {
            tracing::info!(upstream = %pool, server = %backend.label, "server is healthy ({why})");
        } else {
            tracing::warn!(upstream = %pool, server = %backend.label, "server is unhealthy ({why})");
        }
    }
    metrics::set_upstream_healthy(pool, &backend.label, now);
}

fn passes(expect: StatusRange, code: u16) -> bool {
    expect.contains(code)
}

/// One HTTP/1.1 probe; returns the status code.
pub async fn probe(addr: SocketAddr, path: &str, timeout: Duration) -> Result<u16, String> {
    let attempt = async {
        let mut s = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: rproxy-health-check\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes())
            .await
            .map_err(|e| format!("write: {e}"))?;
        let mut buf = Vec::with_capacity(256);
        let mut chunk = [0u8; 256];
        while !buf.windows(2).any(|w| w == b"\r\n") && buf.len() < 4096 {
            let n = s.read(&mut chunk).await.map_err(|e| format!("read: {e}"))?;
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        parse_status(&buf).ok_or_else(|| "no HTTP status line in the answer".to_string())
    };
    match tokio::time::timeout(timeout, attempt).await {
        Ok(r) => r,
        Err(_) => Err(format!("timed out after {timeout:?}")),
    }
}

fn parse_status(buf: &[u8]) -> Option<u16> {
    let line = buf.split(|&b| b == b'\r').next()?;
    let line = std::str::from_utf8(line).ok()?;
    let mut parts = line.split(' ');
    parts.next().filter(|v| v.starts_with("HTTP/"))?;
    parts.next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_line() {
        assert_eq!(
            parse_status(b"HTTP/1.1 503 Service Unavailable\r\n"),
            Some(503)
        );
        assert_eq!(parse_status(b"garbage\r\n"), None);
    }
}
