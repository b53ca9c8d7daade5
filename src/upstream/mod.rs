//! Upstream pools: their servers with live health and load state, the peer settings used to
//! reach them, and selection (`select.rs`) gated on our own active probes (`health.rs`).

pub mod health;
pub mod select;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::config::model::{Balance, HealthConfig, UpstreamConfig};
use select::Selector;

/// One server of a pool.
#[derive(Debug)]
pub struct Backend {
    pub addr: SocketAddr,
    /// As written in the config (metrics label).
    pub label: String,
    pub weight: u32,
    healthy: AtomicBool,
    active: AtomicUsize,
}

impl Backend {
    pub fn new(addr: SocketAddr, label: String, weight: u32, healthy: bool) -> Backend {
        Backend {
            addr,
            label,
            weight,
            healthy: AtomicBool::new(healthy),
            active: AtomicUsize::new(0),
        }
    }

    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Acquire)
    }

    pub(crate) fn set_healthy(&self, healthy: bool) {
        self.healthy.store(healthy, Ordering::Release);
    }

    /// Requests in flight to this server.
    pub fn active(&self) -> usize {
        self.active.load(Ordering::Relaxed)
    }

    /// Counts a request in flight until the guard is dropped.
    pub fn begin(self: &Arc<Self>) -> ActiveGuard {
        self.active.fetch_add(1, Ordering::Relaxed);
        ActiveGuard(self.clone())
    }
}

/// Decrements a backend's in-flight count when dropped.
#[derive(Debug)]
pub struct ActiveGuard(Arc<Backend>);

impl ActiveGuard {
    pub fn backend(&self) -> &Arc<Backend> {
        &self.0
    }
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::Relaxed);
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
}

/// A named pool of servers.
#[derive(Debug)]
pub struct Pool {
    pub name: String,
    pub backends: Vec<Arc<Backend>>,
    pub peer: PeerSettings,
    pub health: Option<HealthConfig>,
    selector: Selector,
    /// The config this pool was built from, to reuse it across reloads when unchanged.
    pub(crate) source: UpstreamConfig,
    first_round_done: AtomicBool,
    probing: AtomicBool,
}

/// What a selection may hash on.
#[derive(Debug, Clone, Copy, Default)]
pub struct SelectKey<'a> {
    pub client_ip: Option<std::net::IpAddr>,
    pub uri: &'a str,
}

impl Pool {
    /// Builds a pool from resolved addresses (one per config entry).
    pub fn new(name: &str, source: &UpstreamConfig, addrs: Vec<SocketAddr>) -> Pool {
        let gated = source.health.is_some();
        let backends: Vec<Arc<Backend>> = source
            .servers
            .iter()
            .zip(addrs)
            .map(|(s, addr)| Arc::new(Backend::new(addr, s.addr.clone(), s.weight, !gated)))
            .collect();
        let peer = PeerSettings {
            connect_timeout: source.connect_timeout.0,
            read_timeout: source.read_timeout.0,
            write_timeout: source.write_timeout.0,
            idle_timeout: source.idle_timeout.0,
            retries: source.retries,
        };
        let weights: Vec<u32> = backends.iter().map(|b| b.weight).collect();
        Pool {
            name: name.to_string(),
            selector: Selector::new(source.balance, &weights),
            backends,
            peer,
            health: source.health.clone(),
            source: source.clone(),
            first_round_done: AtomicBool::new(!gated),
            probing: AtomicBool::new(false),
        }
    }

    pub fn balance(&self) -> Balance {
        self.selector.balance()
    }

    /// Picks a healthy server not in `exclude` (indexes into `backends`).
    pub fn select(&self, key: &SelectKey, exclude: &[usize]) -> Option<usize> {
        self.selector.pick(&self.backends, key, |i| {
            self.backends[i].is_healthy() && !exclude.contains(&i)
        })
    }

    /// True once every server has been probed at least once (always true without probes).
    pub fn probed_once(&self) -> bool {
        self.first_round_done.load(Ordering::Acquire)
    }

    pub fn has_healthy(&self) -> bool {
        self.backends.iter().any(|b| b.is_healthy())
    }

    /// Takes over the health of servers this pool shares with `old` (same address), so a
    /// membership change does not gate servers that are already known to be healthy.
    pub fn inherit_health(&self, old: &Pool) {
        if self.health.is_none() || old.health.is_none() {
            return;
        }
        for b in &self.backends {
            if let Some(prev) = old.backends.iter().find(|o| o.addr == b.addr) {
                b.set_healthy(prev.is_healthy());
            }
        }
    }

    /// Claims the right to run this pool's prober; true for the first caller only.
    pub(crate) fn claim_prober(&self) -> bool {
        self.health.is_some() && !self.probing.swap(true, Ordering::AcqRel)
    }

    pub(crate) fn mark_probed_once(&self) {
        self.first_round_done.store(true, Ordering::Release);
    }
}
