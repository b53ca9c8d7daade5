//! Assembles the pingora server from a compiled configuration: the http, https and admin
//! listeners, the per-connection wrapper (connection counts, the fast path or pingora's proxy,
//! header timeouts) and the background supervisor that runs health probes for every pool.

use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use async_trait::async_trait;
use pingora_core::apps::{HttpServerApp, HttpServerOptions, ReusedHttpStream, ServerApp};
use pingora_core::listeners::{ListenerConfig, PreTlsProcess};
use pingora_core::protocols::http::v2::server::{default_h2_options, H2Options};
use pingora_core::protocols::http::ServerSession;
use pingora_core::protocols::l4::stream::{L4BufferSettings, Stream as L4Stream};
use pingora_core::protocols::{Stream, ALPN};
use pingora_core::server::configuration::ServerConf;
use pingora_core::server::{Server, ShutdownWatch};
use pingora_core::services::background::{background_service, BackgroundService};
use pingora_core::services::listening::Service;
use pingora_error::{Error, ErrorType};
use pingora_proxy::HttpProxy;
use pingora_timeout::fast_timeout::fast_timeout;

use crate::acme::alpn::AlpnResponder;
use crate::acme::AcmeService;
use crate::admin::{Admin, AdminService};
use crate::config::Loaded;
use crate::fast;
use crate::kubernetes::controller::KubernetesService;
use crate::metrics;
use crate::proxy::Proxy;
use crate::proxy_protocol;
use crate::reload::{ReloadService, Reloader};
use crate::request::Listener;
use crate::routing::compile::Compiled;
use crate::sniff;
use crate::state::State;
use crate::tls::{self, CertResolver};
use crate::upstream::{dns, health};

/// Why the server could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("TLS listener: {0}")]
    Tls(String),
}

tokio::task_local! {
    /// Per-connection state for HTTP/1 connections (h2 streams run in their own tasks).
    static CONN: ConnState;
}

struct ConnState {
    accepted: Instant,
    requests: Cell<u32>,
    headers_read: Cell<bool>,
}

impl ConnState {
    fn new(accepted: Instant) -> ConnState {
        ConnState {
            accepted,
            requests: Cell::new(0),
            headers_read: Cell::new(false),
        }
    }
}

/// Called by the proxy once a request's headers are in: the header deadline no longer applies.
pub fn headers_received() {
    let _ = CONN.try_with(|c| c.headers_read.set(true));
}

/// pingora's proxy for one listener: tries the fast path first for HTTP/2 streams, and applies
/// `server.header_timeout` to the request heads of the HTTP/1 connections handed to it.
struct Timed {
    inner: Arc<HttpProxy<Proxy>>,
    /// Our own path, tried first for HTTP/2 streams.
    fast: Arc<fast::Engine>,
    state: Arc<State>,
    options: HttpServerOptions,
}

#[async_trait]
impl HttpServerApp for Timed {
    async fn process_new_http(
        self: &Arc<Self>,
        session: ServerSession,
        shutdown: &ShutdownWatch,
    ) -> Option<ReusedHttpStream> {
        // HTTP/2 streams run in tasks of their own, outside `CONN`: their connection's
        // preface is already in, so no head deadline applies to them.
        let Ok((first, accepted)) = CONN.try_with(|c| {
            let n = c.requests.get();
            c.requests.set(n.saturating_add(1));
            c.headers_read.set(false);
            (n == 0, c.accepted)
        }) else {
            let session = if self.state.peek().settings.fast_path {
                self.fast.serve_h2(session).await?
            } else {
                session
            };
            // pingora's future is large: on the heap, and only for the streams it takes, so
            // that this future (boxed per stream) stays small to build and move.
            return Box::pin(self.inner.process_new_http(session, shutdown)).await;
        };
        let rt = self.state.peek();
        let settings = &rt.settings;
        let mut session = session;
        // Pipelined requests are answered in order (pingora's default closes the connection
        // after the first, dropping the rest).
        session.set_pipelining_enabled(true);
        let limit = if first {
            // One deadline from accept for the whole first request head.
            settings.header_timeout.saturating_sub(accepted.elapsed())
        } else {
            // A reused connection may idle for keepalive_timeout, then send its head.
            session.set_keepalive(Some(settings.keepalive_timeout.as_secs().max(1)));
            settings.keepalive_timeout + settings.header_timeout
        };
        drop(rt);
        let mut request = Box::pin(self.inner.process_new_http(session, shutdown));
        // pingora's coarse timer wheel: far cheaper per request than a tokio timer.
        if let Ok(done) = fast_timeout(limit, &mut request).await {
            return done;
        }
        if CONN.try_with(|c| c.headers_read.get()).unwrap_or(true) {
            request.await
        } else {
            tracing::debug!("no complete request head in time; closing");
            None
        }
    }

    fn server_options(&self) -> Option<&HttpServerOptions> {
        Some(&self.options)
    }

    /// pingora's HTTP/2 settings (its bounded header list and 100 concurrent streams), plus
    /// SETTINGS_ENABLE_CONNECT_PROTOCOL: browsers then open WebSockets on the connection
    /// (RFC 8441; `proxy/websocket.rs` carries them).
    fn h2_options(&self) -> Option<H2Options> {
        let mut options = default_h2_options();
        options.enable_connect_protocol();
        Some(options)
    }

    async fn http_cleanup(&self) {
        self.inner.http_cleanup().await;
    }
}

/// Counts connections, gives each its own `CONN` state and, on the plain listener, picks h2c
/// or HTTP/1 from the first bytes (pingora's own h2c check blocks on requests under 24 bytes).
struct Edge {
    h1: Arc<Timed>,
    /// Set on the plain listener: the app for connections that start with the h2c preface.
    h2c: Option<Arc<Timed>>,
    /// Our own HTTP/1.1 path, which hands pingora what it does not take.
    fast: Arc<fast::Engine>,
    kind: Listener,
    listener: &'static str,
    state: Arc<State>,
    /// Connections open on this listener.
    open: Arc<AtomicUsize>,
}

struct ConnCount(Arc<State>, &'static str, Arc<AtomicUsize>);

impl Drop for ConnCount {
    fn drop(&mut self) {
        self.0.connection_closed();
        self.2.fetch_sub(1, Ordering::AcqRel);
        metrics::connection_closed(self.1);
    }
}

#[async_trait]
impl ServerApp for Edge {
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let accepted = Instant::now();
        let open = self.open.fetch_add(1, Ordering::AcqRel) + 1;
        self.state.connection_opened();
        metrics::connection_opened(self.listener);
        let _count = ConnCount(self.state.clone(), self.listener, self.open.clone());
        if self
            .state
            .peek()
            .settings
            .max_connections
            .is_some_and(|max| open > max)
        {
            tracing::warn!(
                listener = self.listener,
                "server.max_connections reached; closing a new connection"
            );
            return None;
        }
        let fast = self.state.peek().settings.fast_path;
        let (stream, app) = match &self.h2c {
            // TLS: HTTP/2 (ALPN h2) goes to pingora's h2 server, HTTP/1.1 to the fast path.
            None if stream.selected_alpn_proto() == Some(ALPN::H2) => (stream, &self.h1),
            None if fast => return self.fast_h1(stream, accepted, shutdown).await,
            None => (stream, &self.h1),
            Some(h2c) => {
                let stream = proxy_header_plain(&self.state, self.kind, stream).await?;
                let deadline = self.state.peek().settings.header_timeout;
                match sniff::sniff(stream, deadline).await {
                    (Some(s), sniff::Start::H2c) => (s, h2c),
                    (Some(s), sniff::Start::Http1) if fast => {
                        return self.fast_h1(s, accepted, shutdown).await
                    }
                    (Some(s), sniff::Start::Http1) => (s, &self.h1),
                    _ => return None,
                }
            }
        };
        // pingora's future is large: on the heap, so a connection on the fast path (below)
        // does not carry its room.
        Box::pin(CONN.scope(ConnState::new(accepted), app.process_new(stream, shutdown))).await
    }

    async fn cleanup(&self) {
        self.h1.cleanup().await;
        if let Some(h2c) = &self.h2c {
            h2c.cleanup().await;
        }
    }
}

impl Edge {
    /// Serves an HTTP/1.1 connection (plain or TLS) on the fast path; what it does not take,
    /// pingora does, from that request on (its head deadline starts over there).
    async fn fast_h1(
        &self,
        stream: Stream,
        accepted: Instant,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        match self.fast.serve(stream, accepted, shutdown).await {
            fast::Left::Closed => None,
            fast::Left::Elsewhere(stream) => {
                let state = ConnState::new(Instant::now());
                Box::pin(CONN.scope(state, self.h1.process_new(stream, shutdown))).await
            }
        }
    }
}

/// What runs on a TLS connection before its handshake: the PROXY protocol header, then the peek
/// at the ClientHello for ACME TLS-ALPN-01 validations (a no-op without them).
struct BeforeTls {
    state: Arc<State>,
    acme: AlpnResponder,
}

#[async_trait]
impl PreTlsProcess for BeforeTls {
    async fn process(&self, stream: &mut L4Stream) -> pingora_error::Result<()> {
        if let Err(refused) = proxy_header(&self.state, Listener::Https, stream).await {
            return Error::e_explain(ErrorType::ConnectionClosed, refused.to_string());
        }
        self.acme.process(stream).await
    }
}

/// Reads the PROXY protocol header of a connection to `listener`, when it takes them.
async fn proxy_header(
    state: &State,
    listener: Listener,
    l4: &mut L4Stream,
) -> Result<(), proxy_protocol::Refused> {
    let rt = state.runtime();
    if !rt.settings.proxy_protocol(listener) {
        return Ok(());
    }
    let (trusted, deadline) = (&rt.settings.trusted_proxies, rt.settings.header_timeout);
    let read = proxy_protocol::accept(l4, trusted, deadline).await;
    if let Err(refused) = &read {
        tracing::warn!(listener = listener.proto(), "connection closed: {refused}");
    }
    read
}

/// As `proxy_header`, for a plain connection.
async fn proxy_header_plain(state: &State, listener: Listener, stream: Stream) -> Option<Stream> {
    if !state.peek().settings.proxy_protocol(listener) {
        return Some(stream);
    }
    let mut l4 = stream.into_any().downcast::<L4Stream>().ok()?;
    proxy_header(state, listener, &mut l4).await.ok()?;
    Some(l4)
}

/// Starts health probes for every pool of the published configuration, including pools that a
/// later publish adds.
struct Supervisor {
    state: Arc<State>,
}

#[async_trait]
impl BackgroundService for Supervisor {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        loop {
            for pool in self.state.runtime().pools.values() {
                health::spawn(pool);
                dns::spawn(pool);
            }
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = tokio::time::sleep(Duration::from_millis(250)) => {}
            }
        }
    }
}

/// Where the configuration comes from once the server runs.
pub enum Source {
    /// The file (`-c`): SIGHUP and changes of the file reload it.
    File,
    /// The cluster (`rproxy --kubernetes`): the file is the base, Ingresses add to it; not
    /// ready until the first configuration from the cluster is published.
    Kubernetes {
        kube: Box<kube::Config>,
        options: crate::kubernetes::Options,
        /// The base file (`-c`), read again on SIGHUP; `None` for the built-in base.
        base_file: Option<std::path::PathBuf>,
    },
}

/// Builds the server and the shared state for a compiled configuration read from a file.
pub fn build_server(
    loaded: &Loaded,
    compiled: Compiled,
) -> Result<(Server, Arc<State>), BuildError> {
    build_server_for(loaded, compiled, Source::File)
}

/// Builds the server and the shared state for a compiled configuration and its `source`.
pub fn build_server_for(
    loaded: &Loaded,
    compiled: Compiled,
    source: Source,
) -> Result<(Server, Arc<State>), BuildError> {
    let c = &loaded.config;
    let resolver = compiled
        .certs
        .map(|store| Arc::new(CertResolver::new(store)));
    let state = Arc::new(State::new(compiled.runtime, resolver.clone()));
    let mut server = Server::new_with_opt_and_conf(None, server_conf(loaded));
    server.bootstrap();
    let conf = server.configuration.clone();

    if let Some(listen) = &c.listen.http {
        let mut service = proxy_service(&conf, &state, Listener::Http);
        service.add_listener(ListenerConfig::tcp(listen.addr.as_str()).l4_buffer(l4_buffer()));
        server.add_service(service);
    }
    if let (Some(listen), Some(resolver)) = (&c.listen.https, resolver) {
        let mut service = proxy_service(&conf, &state, Listener::Https);
        service
            .endpoints()
            .set_pre_tls_callback(Arc::new(BeforeTls {
                state: state.clone(),
                acme: AlpnResponder {
                    state: state.clone(),
                },
            }));
        let settings =
            tls::listener_settings(resolver).map_err(|e| BuildError::Tls(e.to_string()))?;
        service.add_listener(
            ListenerConfig::tcp(listen.addr.as_str())
                .tls(settings)
                .l4_buffer(l4_buffer()),
        );
        server.add_service(service);
    }
    if let Some(addr) = c.listen.admin.as_deref().and_then(|a| a.parse().ok()) {
        let proxies = [&c.listen.http, &c.listen.https];
        let listeners = proxies
            .into_iter()
            .flatten()
            .filter_map(|l| l.addr.parse().ok())
            .collect();
        let admin = Arc::new(Admin::new(state.clone(), addr, listeners));
        let mut service = background_service("admin", AdminService { admin });
        service.threads = Some(1);
        server.add_service(service);
    }
    let mut supervisor = background_service(
        "supervisor",
        Supervisor {
            state: state.clone(),
        },
    );
    supervisor.threads = Some(1);
    server.add_service(supervisor);
    let mut acme = background_service(
        "acme",
        AcmeService {
            state: state.clone(),
        },
    );
    acme.threads = Some(1);
    server.add_service(acme);
    match source {
        Source::File => {
            let reloader = Arc::new(Reloader::new(loaded.clone(), state.clone()));
            let mut reload = background_service("reload", ReloadService { reloader });
            reload.threads = Some(1);
            server.add_service(reload);
        }
        Source::Kubernetes {
            kube,
            options,
            base_file,
        } => {
            state.await_source();
            let controller = KubernetesService {
                kube: *kube,
                options,
                base: loaded.clone(),
                base_file,
                state: state.clone(),
            };
            let mut service = background_service("kubernetes", controller);
            service.threads = Some(1);
            server.add_service(service);
        }
    }
    Ok((server, state))
}

fn proxy_service(conf: &Arc<ServerConf>, state: &Arc<State>, listener: Listener) -> Service<Edge> {
    let engine = Arc::new(fast::Engine {
        state: state.clone(),
        listener,
    });
    let app = |h2c: bool| {
        let proxy = Proxy {
            listener,
            state: state.clone(),
        };
        let mut options = HttpServerOptions::default();
        options.h2c = h2c;
        options.h2_idle_timeout = Some(state.runtime().settings.keepalive_timeout);
        let mut inner = pingora_proxy::http_proxy(conf, proxy);
        // CONNECT reaches `request_filter`, which carries RFC 8441 WebSockets and refuses the
        // rest (pingora would answer every CONNECT 405 itself).
        let mut proxy_options = HttpServerOptions::default();
        proxy_options.allow_connect_method_proxying = true;
        inner.server_options = Some(proxy_options);
        Arc::new(Timed {
            inner: Arc::new(inner),
            fast: engine.clone(),
            state: state.clone(),
            options,
        })
    };
    let h2c = (listener == Listener::Http).then(|| app(true));
    let fast = engine.clone();
    let edge = Edge {
        h1: app(false),
        h2c,
        fast,
        kind: listener,
        listener: listener.proto(),
        state: state.clone(),
        open: Arc::default(),
    };
    Service::new(format!("{} proxy", listener.proto()), edge)
}

/// Per-connection socket buffers. pingora's default read buffer is 64 KiB, allocated for every
/// connection, idle ones included. Every reader above the socket has a buffer of its own (the
/// fast path's, rustls's, pingora's HTTP/1 and h2 codecs), so reads go to them unbuffered; a
/// small write buffer lets pingora's path send a head and a short body in one write.
fn l4_buffer() -> L4BufferSettings {
    L4BufferSettings::new(0, L4_WRITE_BUFFER)
}

const L4_WRITE_BUFFER: usize = 1460;

fn server_conf(loaded: &Loaded) -> ServerConf {
    let c = &loaded.config;
    let tmp = std::env::temp_dir();
    let pid = std::process::id();
    ServerConf {
        threads: c
            .server
            .threads
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())),
        pid_file: tmp.join(format!("rproxy-{pid}.pid")).display().to_string(),
        upgrade_sock: tmp.join(format!("rproxy-{pid}.sock")).display().to_string(),
        grace_period_seconds: Some(c.server.grace_period.0.as_secs().max(1)),
        graceful_shutdown_timeout_seconds: Some(1),
        // One single-threaded runtime per thread: no cross-thread wakeups or task stealing on
        // the request path (BENCHMARKS.md).
        work_stealing: false,
        ..ServerConf::default()
    }
}
