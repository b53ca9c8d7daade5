//! The one place live configuration is published: an `ArcSwap<Runtime>` that every request
//! loads once, plus process-wide flags (draining) that the admin endpoints report.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;

use crate::request::client::TrustedProxies;
use crate::request::Listener;
use crate::routing::RouteTable;
use crate::tls::CertResolver;
use crate::upstream::sticky::DefaultKey;
use crate::upstream::Pool;

/// Server-wide settings that requests read.
#[derive(Debug, Clone)]
pub struct Settings {
    pub header_timeout: Duration,
    pub keepalive_timeout: Duration,
    pub body_timeout: Duration,
    pub max_header_size: u64,
    pub grace_period: Duration,
    pub max_connections: Option<usize>,
    /// Requests may take rproxy's own path (`server.fast_path`).
    pub fast_path: bool,
    /// Peers believed about the client (`server.trusted_proxies`).
    pub trusted_proxies: TrustedProxies,
    /// Connections to the http listener start with a PROXY protocol header.
    pub proxy_protocol_http: bool,
    /// Connections to the https listener start with a PROXY protocol header.
    pub proxy_protocol_https: bool,
}

impl Settings {
    /// Do connections to `listener` start with a PROXY protocol header?
    pub fn proxy_protocol(&self, listener: Listener) -> bool {
        match listener {
            Listener::Http => self.proxy_protocol_http,
            Listener::Https => self.proxy_protocol_https,
        }
    }
}

/// One compiled configuration: immutable once published.
#[derive(Debug)]
pub struct Runtime {
    pub routes: RouteTable,
    pub pools: BTreeMap<String, Arc<Pool>>,
    /// The https port to redirect plain-HTTP requests to, when redirecting is on.
    pub redirect_https: Option<u16>,
    /// The https listener's port, for routes that redirect on their own (`redirect_https`).
    pub https_port: Option<u16>,
    /// Automatic certificates, when `tls.acme` is set.
    pub acme: Option<Arc<crate::acme::AcmeSettings>>,
    pub settings: Settings,
    /// The key of sticky cookies for pools that give no `secret` (kept across reloads).
    pub sticky_key: DefaultKey,
}

/// Each pool's name and the protocol spoken to its servers.
fn pool_protocols(rt: &Runtime) -> impl Iterator<Item = (&str, &'static str)> + Clone {
    rt.pools
        .iter()
        .map(|(name, pool)| (name.as_str(), pool.transport.protocol.name()))
}

/// Shared by every listener and background task.
#[derive(Debug)]
pub struct State {
    runtime: ArcSwap<Runtime>,
    pub certs: Option<Arc<CertResolver>>,
    draining: AtomicBool,
    /// Set once every pool has finished its first probe round; reloads do not unset it.
    ready: AtomicBool,
    /// Not ready until a configuration source (Kubernetes) has published its first
    /// configuration (`await_source` / `source_ready`).
    awaiting_source: AtomicBool,
    connections: AtomicUsize,
}

impl State {
    pub fn new(runtime: Runtime, certs: Option<Arc<CertResolver>>) -> State {
        crate::metrics::describe_pools(std::iter::empty(), pool_protocols(&runtime));
        State {
            runtime: ArcSwap::from_pointee(runtime),
            certs,
            draining: AtomicBool::new(false),
            ready: AtomicBool::new(false),
            awaiting_source: AtomicBool::new(false),
            connections: AtomicUsize::new(0),
        }
    }

    /// The configuration in force now; a request keeps it to its end.
    pub fn runtime(&self) -> Arc<Runtime> {
        self.runtime.load_full()
    }

    /// A short-lived look at the current configuration, cheaper than `runtime()`: for reads
    /// that end before the next await.
    pub fn peek(&self) -> arc_swap::Guard<Arc<Runtime>> {
        self.runtime.load()
    }

    /// Makes `runtime` the configuration for every request that starts from now on.
    pub fn publish(&self, runtime: Runtime) {
        let old = self.runtime.load();
        crate::metrics::describe_pools(pool_protocols(&old), pool_protocols(&runtime));
        self.runtime.store(Arc::new(runtime));
    }

    /// Ready: not draining and every pool has finished its first round of probes.
    pub fn is_ready(&self) -> bool {
        if self.is_draining() || self.awaiting_source.load(Ordering::Acquire) {
            return false;
        }
        if !self.ready.load(Ordering::Acquire)
            && self.runtime.load().pools.values().all(|p| p.probed_once())
        {
            self.ready.store(true, Ordering::Release);
        }
        self.ready.load(Ordering::Acquire)
    }

    /// Holds readiness until `source_ready`: the configuration at start is not the whole one.
    pub fn await_source(&self) {
        self.awaiting_source.store(true, Ordering::Release);
    }

    /// The configuration source has published its first configuration.
    pub fn source_ready(&self) {
        self.awaiting_source.store(false, Ordering::Release);
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Release);
    }

    /// Client connections open now, on every proxy listener.
    pub fn open_connections(&self) -> usize {
        self.connections.load(Ordering::Acquire)
    }

    pub fn connection_opened(&self) {
        self.connections.fetch_add(1, Ordering::AcqRel);
    }

    pub fn connection_closed(&self) {
        self.connections.fetch_sub(1, Ordering::AcqRel);
    }
}
