//! DNS upstreams: servers written as `name:port` are resolved at start and again every
//! `resolve_interval`; every address is a backend of its own. A name that fails to resolve is
//! logged and retried, never fatal. `RPROXY_HOSTS_FILE` (hosts-file format) is read first: a
//! seam for tests and for pinning names without touching the system resolver.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::Path;
use std::sync::{Arc, Weak};

use super::Pool;

/// Resolves `host:port` (blocking: call it off the async threads).
pub fn resolve(addr: &str) -> Result<Vec<SocketAddr>, String> {
    if let Ok(a) = addr.parse::<SocketAddr>() {
        return Ok(vec![a]);
    }
    let (host, port) = addr
        .rsplit_once(':')
        .ok_or_else(|| format!("`{addr}` has no port"))?;
    let port: u16 = port
        .parse()
        .map_err(|_| format!("`{addr}` has no valid port"))?;
    if let Some(path) = std::env::var_os("RPROXY_HOSTS_FILE") {
        let found = hosts_file(Path::new(&path), host);
        if !found.is_empty() {
            return Ok(found
                .into_iter()
                .map(|ip| SocketAddr::new(ip, port))
                .collect());
        }
    }
    let mut addrs: Vec<SocketAddr> = (host, port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve `{host}`: {e}"))?
        .collect();
    addrs.sort();
    addrs.dedup();
    if addrs.is_empty() {
        return Err(format!("`{host}` resolves to no address"));
    }
    Ok(addrs)
}

/// Addresses for `host` in a hosts-format file (`IP name [name...]`, `#` comments).
fn hosts_file(path: &Path, host: &str) -> Vec<IpAddr> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Vec::new();
    };
    text.lines()
        .map(|l| l.split('#').next().unwrap_or(""))
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            let ip: IpAddr = words.next()?.parse().ok()?;
            words.any(|n| n.eq_ignore_ascii_case(host)).then_some(ip)
        })
        .collect()
}

/// Resolves every server entry of `pool`; an entry that fails keeps `previous` (if any).
pub fn resolve_entries(
    pool_name: &str,
    entries: &[String],
    previous: Option<&[Vec<SocketAddr>]>,
) -> Vec<Vec<SocketAddr>> {
    entries
        .iter()
        .enumerate()
        .map(|(i, addr)| match resolve(addr) {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(upstream = pool_name, server = %addr, "{e}; retrying");
                previous.and_then(|p| p.get(i).cloned()).unwrap_or_default()
            }
        })
        .collect()
}

/// Starts the re-resolution task of `pool` on the current runtime unless one already runs.
pub fn spawn(pool: &Arc<Pool>) {
    if pool.claim_resolver() {
        tokio::spawn(run(Arc::downgrade(pool)));
    }
}

async fn run(pool: Weak<Pool>) {
    let mut last: Option<Vec<Vec<SocketAddr>>> = None;
    loop {
        let Some(strong) = pool.upgrade() else { return };
        let interval = strong.source.resolve_interval.0;
        let name = strong.name.clone();
        let entries: Vec<String> = strong
            .source
            .servers
            .iter()
            .map(|s| s.addr.clone())
            .collect();
        drop(strong);
        tokio::time::sleep(interval).await;
        let previous = last.take();
        let resolved = tokio::task::spawn_blocking(move || {
            let r = resolve_entries(&name, &entries, previous.as_deref());
            (r, previous)
        })
        .await;
        let Ok((resolved, _)) = resolved else {
            continue;
        };
        let Some(strong) = pool.upgrade() else { return };
        if strong.set_addresses(&resolved) {
            let n: usize = resolved.iter().map(Vec::len).sum();
            tracing::info!(upstream = %strong.name, "DNS answers changed: {n} servers");
        }
        last = Some(resolved);
    }
}
