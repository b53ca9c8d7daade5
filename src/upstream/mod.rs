//! Upstream pools: their servers with live health and load state, the peer settings used to
//! reach them, and selection (`select.rs`) gated on our own active probes (`health.rs`).

pub mod dns;
pub mod health;
pub mod peer;
mod probe_over_peer;
pub mod select;
pub mod sticky;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;

use crate::config::model::{Balance, HealthConfig, UpstreamConfig};
use select::Selector;
use sticky::{DefaultKey, Sticky, Token};

/// One server of a pool.
#[derive(Debug)]
pub struct Backend {
    pub addr: SocketAddr,
    /// As written in the config (metrics label).
    pub label: String,
    /// The server's name (or address) without the port: what TLS sends and verifies.
    pub name: String,
    pub weight: u32,
    healthy: AtomicBool,
    active: AtomicUsize,
    /// Consecutive failed requests (connect errors, resets) since the last good response.
    failures: std::sync::atomic::AtomicU32,
    /// Whose turn it is to open a stream on this server's HTTP/2 connections.
    pub stream_turn: peer::StreamTurn,
}

/// `app.internal` of `app.internal:8443/10.0.0.7`, `::1` of `[::1]:8443`.
fn server_name(label: &str) -> String {
    let entry = label.split('/').next().unwrap_or(label);
    let host = entry.rsplit_once(':').map_or(entry, |(host, _)| host);
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .to_string()
}

impl Backend {
    pub fn new(addr: SocketAddr, label: String, weight: u32, healthy: bool) -> Backend {
        Backend {
            addr,
            name: server_name(&label),
            label,
            weight,
            healthy: AtomicBool::new(healthy),
            active: AtomicUsize::new(0),
            failures: std::sync::atomic::AtomicU32::new(0),
            stream_turn: peer::StreamTurn::default(),
        }
    }

    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Acquire)
    }

    pub(crate) fn set_healthy(&self, healthy: bool) {
        self.healthy.store(healthy, Ordering::Release);
    }

    /// Counts a failed request; returns the consecutive failures so far.
    pub fn record_failure(&self) -> u32 {
        self.failures.fetch_add(1, Ordering::AcqRel) + 1
    }

    pub fn record_success(&self) {
        if self.failures.load(Ordering::Relaxed) != 0 {
            self.failures.store(0, Ordering::Release);
        }
    }

    /// Requests in flight to this server.
    pub fn active(&self) -> usize {
        self.active.load(Ordering::Relaxed)
    }

    /// Counts a request in flight until the guard is dropped.
    pub fn begin(self: &Arc<Self>) -> ActiveGuard {
        self.active.fetch_add(1, Ordering::Relaxed);
        ActiveGuard(self.clone(), false)
    }
}

/// Decrements a backend's in-flight count when released or dropped.
#[derive(Debug)]
pub struct ActiveGuard(Arc<Backend>, bool);

impl ActiveGuard {
    pub fn backend(&self) -> &Arc<Backend> {
        &self.0
    }

    /// The server has answered in full: it no longer counts this request (before the last
    /// bytes reach the client, whose next request may come at once), though the guard is kept.
    pub fn release(&mut self) {
        if !std::mem::replace(&mut self.1, true) {
            self.0.active.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.release();
    }
}

/// Timeouts and retry budget for requests to a pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerSettings {
    pub connect_timeout: Duration,
    pub read_timeout: Duration,
    pub write_timeout: Duration,
    pub idle_timeout: Duration,
    pub retries: u32,
    /// Idle connections kept per server and worker thread.
    pub keepalive: usize,
}

/// The servers of a pool at one moment, with the selection state built for them.
#[derive(Debug)]
pub struct Members {
    pub backends: Vec<Arc<Backend>>,
    selector: Selector,
    /// Each backend's sticky cookie value, when the pool is sticky.
    tokens: Vec<Token>,
}

/// A named pool of servers. Membership changes when a DNS name's answers change.
#[derive(Debug)]
pub struct Pool {
    pub name: String,
    pub peer: PeerSettings,
    /// The protocol and TLS of connections to the servers.
    pub transport: peer::Transport,
    pub health: Option<HealthConfig>,
    members: ArcSwap<Members>,
    /// The config this pool was built from, to reuse it across reloads when unchanged.
    pub(crate) source: UpstreamConfig,
    /// Sticky sessions, when on.
    pub sticky: Option<Sticky>,
    first_round_done: AtomicBool,
    probing: AtomicBool,
    resolving: AtomicBool,
}

/// The sticky settings of pool `name`, when `balance: cookie` or a `sticky:` block asks.
fn sticky(name: &str, source: &UpstreamConfig, key: &DefaultKey) -> Option<Sticky> {
    let config = match (&source.sticky, source.balance) {
        (Some(c), _) => c.clone(),
        (None, Balance::Cookie) => Default::default(),
        (None, _) => return None,
    };
    let cookie = config
        .cookie
        .unwrap_or_else(|| sticky::default_cookie(name));
    let ttl = config.ttl.map(|d| d.0);
    Some(Sticky::new(
        name,
        cookie,
        ttl,
        config.secret.as_deref(),
        key,
    ))
}

/// What a selection may hash on.
#[derive(Debug, Clone, Copy, Default)]
pub struct SelectKey<'a> {
    pub client_ip: Option<std::net::IpAddr>,
    pub uri: &'a str,
    /// The value of the pool's sticky cookie in the request.
    pub sticky: Option<&'a [u8]>,
}

impl Pool {
    /// Builds a pool; `resolved[i]` holds the addresses of `source.servers[i]`; `tls` is its
    /// TLS, read already (`peer::ClientTls::load`); sticky cookies without a `secret` are signed
    /// with `key`.
    pub fn new(
        name: &str,
        source: &UpstreamConfig,
        resolved: &[Vec<SocketAddr>],
        tls: Option<peer::ClientTls>,
        key: &DefaultKey,
    ) -> Pool {
        let gated = source.health.is_some();
        let peer = PeerSettings {
            connect_timeout: source.connect_timeout.0,
            read_timeout: source.read_timeout.0,
            write_timeout: source.write_timeout.0,
            idle_timeout: source.idle_timeout.0,
            retries: source.retries,
            keepalive: source.keepalive as usize,
        };
        let transport = peer::Transport::new(source.protocol, tls, source.max_streams as usize);
        let pool = Pool {
            name: name.to_string(),
            peer,
            transport,
            health: source.health.clone(),
            members: ArcSwap::from_pointee(Members {
                backends: Vec::new(),
                selector: Selector::new(source.balance, &[]),
                tokens: Vec::new(),
            }),
            source: source.clone(),
            sticky: sticky(name, source, key),
            first_round_done: AtomicBool::new(!gated),
            probing: AtomicBool::new(false),
            resolving: AtomicBool::new(false),
        };
        pool.set_addresses(resolved);
        pool
    }

    /// The pingora peer of `server` (the proxy's and the probes').
    pub fn http_peer(&self, server: &Backend) -> pingora_core::upstreams::peer::HttpPeer {
        self.transport.http_peer(server, &self.peer)
    }

    /// The servers now.
    pub fn members(&self) -> Arc<Members> {
        self.members.load_full()
    }

    /// Replaces the membership with `resolved` (per config entry). Servers that stay keep their
    /// state; new ones start unhealthy when the pool is probed; removed ones drain (requests in
    /// flight keep them alive). Returns whether anything changed.
    pub fn set_addresses(&self, resolved: &[Vec<SocketAddr>]) -> bool {
        let current = self.members.load();
        let gated = self.health.is_some();
        let mut backends = Vec::new();
        for (entry, addrs) in self.source.servers.iter().zip(resolved) {
            let is_name = entry.addr.parse::<SocketAddr>().is_err();
            for addr in addrs {
                if backends.iter().any(|b: &Arc<Backend>| b.addr == *addr) {
                    continue;
                }
                let kept = current.backends.iter().find(|b| b.addr == *addr).cloned();
                backends.push(kept.unwrap_or_else(|| {
                    let label = if is_name {
                        format!("{}/{}", entry.addr, addr.ip())
                    } else {
                        entry.addr.clone()
                    };
                    Arc::new(Backend::new(*addr, label, entry.weight, !gated))
                }));
            }
        }
        let same = backends.len() == current.backends.len()
            && backends
                .iter()
                .zip(current.backends.iter())
                .all(|(a, b)| Arc::ptr_eq(a, b));
        if same && !current.backends.is_empty() {
            return false;
        }
        for gone in current
            .backends
            .iter()
            .filter(|b| !backends.iter().any(|n| Arc::ptr_eq(n, b)))
        {
            crate::metrics::forget_upstream_server(&self.name, &gone.label);
        }
        let weights: Vec<u32> = backends.iter().map(|b| b.weight).collect();
        let selector = Selector::new(self.source.balance, &weights);
        let tokens = match &self.sticky {
            Some(s) => backends.iter().map(|b| s.token(b)).collect(),
            None => Vec::new(),
        };
        let members = Members {
            backends,
            selector,
            tokens,
        };
        self.members.store(Arc::new(members));
        true
    }

    /// Config entries that are DNS names (re-resolved at runtime).
    pub fn has_names(&self) -> bool {
        self.source
            .servers
            .iter()
            .any(|s| s.addr.parse::<SocketAddr>().is_err())
    }

    pub fn balance(&self) -> Balance {
        self.source.balance
    }

    /// Picks a healthy server whose address is not in `exclude`: the one the request's sticky
    /// cookie names when it is one, else by the pool's algorithm.
    pub fn select(&self, key: &SelectKey, exclude: &[SocketAddr]) -> Option<Arc<Backend>> {
        let m = self.members.load();
        let eligible =
            |i: usize| m.backends[i].is_healthy() && !exclude.contains(&m.backends[i].addr);
        let named = key
            .sticky
            .and_then(|v| m.tokens.iter().position(|t| t.as_bytes() == v));
        let i = match named.filter(|&i| eligible(i)) {
            Some(i) => i,
            None => m.selector.pick(&m.backends, key, eligible)?,
        };
        Some(m.backends[i].clone())
    }

    /// The `Set-Cookie` value of a response from `server` to a request whose sticky cookie was
    /// `sent`: `None` unless the pool is sticky and the cookie does not name `server` already.
    pub fn sticky_cookie(
        &self,
        server: &Backend,
        sent: Option<&[u8]>,
        https: bool,
    ) -> Option<String> {
        let sticky = self.sticky.as_ref()?;
        let m = self.members.load();
        let token = match m.backends.iter().position(|b| std::ptr::eq(&**b, server)) {
            Some(i) => m.tokens.get(i)?.clone(),
            None => sticky.token(server),
        };
        (sent != Some(token.as_bytes())).then(|| sticky.set_cookie(&token, https))
    }

    /// True once every server has been probed at least once (always true without probes).
    pub fn probed_once(&self) -> bool {
        self.first_round_done.load(Ordering::Acquire)
    }

    pub fn has_healthy(&self) -> bool {
        self.members.load().backends.iter().any(|b| b.is_healthy())
    }

    /// Takes over the health of servers this pool shares with `old` (same address), so a
    /// membership change does not gate servers that are already known to be healthy.
    pub fn inherit_health(&self, old: &Pool) {
        if self.health.is_none() || old.health.is_none() {
            return;
        }
        let old_members = old.members();
        for b in &self.members().backends {
            if let Some(prev) = old_members.backends.iter().find(|o| o.addr == b.addr) {
                b.set_healthy(prev.is_healthy());
            }
        }
    }

    /// Passive health: a request to `backend` failed. After `health.fall` failures in a row the
    /// server is taken out before its next probe; the probes bring it back. Pools without probes
    /// never eject (nothing would bring the server back).
    pub fn report_failure(&self, backend: &Backend) {
        let failures = backend.record_failure();
        let Some(health) = &self.health else { return };
        if failures >= health.fall && backend.is_healthy() {
            backend.set_healthy(false);
            crate::metrics::set_upstream_healthy(&self.name, &backend.label, false);
            tracing::warn!(upstream = %self.name, server = %backend.label, "server ejected after {failures} failed requests");
        }
    }

    /// Claims the right to run this pool's prober; true for the first caller only.
    pub(crate) fn claim_prober(&self) -> bool {
        self.health.is_some() && !self.probing.swap(true, Ordering::AcqRel)
    }

    /// Claims the right to run this pool's resolver; true for the first caller only.
    pub(crate) fn claim_resolver(&self) -> bool {
        self.has_names() && !self.resolving.swap(true, Ordering::AcqRel)
    }

    pub(crate) fn mark_probed_once(&self) {
        self.first_round_done.store(true, Ordering::Release);
    }
}
