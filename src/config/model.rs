//! The serde mirror of `proxy.yaml`: plain data and defaults, no behaviour (the syntax of
//! values is `values.rs`'s). `compile` turns these into runtime types; `validate` checks their meaning.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

pub use super::values::{parse_duration, parse_size, Compress, Dur, Size, StatusRange};

/// The whole file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub server: ServerConfig,
    #[serde(default)]
    pub listen: ListenConfig,
    #[serde(default)]
    pub tls: TlsConfig,
    #[serde(default)]
    pub upstreams: BTreeMap<String, UpstreamConfig>,
    #[serde(default)]
    pub routes: Vec<RouteConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Worker threads; default: number of cores.
    pub threads: Option<usize>,
    #[serde(default = "defaults::grace_period")]
    pub grace_period: Dur,
    /// How long a client may take to send a request's headers.
    #[serde(default = "defaults::header_timeout")]
    pub header_timeout: Dur,
    /// How long an idle keep-alive connection (HTTP/1.1 or HTTP/2) is kept open.
    #[serde(default = "defaults::keepalive_timeout")]
    pub keepalive_timeout: Dur,
    /// How long a client may stay silent while sending a request body.
    #[serde(default = "defaults::body_timeout")]
    pub body_timeout: Dur,
    /// Most client connections a listener keeps open; more are closed at once. Default: none.
    pub max_connections: Option<usize>,
    /// Largest request header block; above it the client gets 431.
    #[serde(default = "defaults::max_header_size")]
    pub max_header_size: Size,
    /// rproxy's own request path for the common request (`crate::fast`); `false` sends every
    /// request through pingora's proxy (a fallback, and how tests hold both engines to one rule).
    #[serde(default = "defaults::fast_path")]
    pub fast_path: bool,
    /// Peers (addresses or CIDRs) believed about the client: their PROXY protocol headers and
    /// X-Forwarded-For name it (nginx's `set_real_ip_from`). Default: none.
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            threads: None,
            max_connections: None,
            grace_period: defaults::grace_period(),
            header_timeout: defaults::header_timeout(),
            keepalive_timeout: defaults::keepalive_timeout(),
            body_timeout: defaults::body_timeout(),
            max_header_size: defaults::max_header_size(),
            fast_path: defaults::fast_path(),
            trusted_proxies: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenConfig {
    pub http: Option<ListenAddr>,
    pub https: Option<ListenAddr>,
    pub admin: Option<String>,
}

impl ListenConfig {
    /// Every listener's key and address.
    pub fn addrs(&self) -> impl Iterator<Item = (&'static str, &str)> {
        fn proxy(l: &Option<ListenAddr>) -> Option<&str> {
            l.as_ref().map(|l| l.addr.as_str())
        }
        let keyed = [
            ("http", proxy(&self.http)),
            ("https", proxy(&self.https)),
            ("admin", self.admin.as_deref()),
        ];
        keyed.into_iter().filter_map(|(k, a)| Some((k, a?)))
    }
}

/// A proxy listener: `host:port`, or `{ addr: host:port, proxy_protocol: true }` when a load
/// balancer in front sends a PROXY protocol header before each connection's bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenAddr {
    pub addr: String,
    pub proxy_protocol: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// Directory of static certificates; default `certs` beside the config file.
    pub certs: Option<PathBuf>,
    /// Default: true when an https listener is set.
    pub redirect_http: Option<bool>,
    #[serde(default = "defaults::yes")]
    pub self_signed: bool,
    pub acme: Option<AcmeConfig>,
}

impl Default for TlsConfig {
    fn default() -> Self {
        TlsConfig {
            certs: None,
            redirect_http: None,
            self_signed: true,
            acme: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AcmeConfig {
    pub email: Option<String>,
    pub directory: Option<String>,
    pub ca: Option<PathBuf>,
    pub challenge: Option<String>,
    pub domains: Option<Vec<String>>,
    pub renew_before: Option<Dur>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Balance {
    #[default]
    RoundRobin,
    Weighted,
    LeastConn,
    IpHash,
    ConsistentHash,
    Random,
    /// Sticky sessions over round robin (`sticky:` with its defaults).
    Cookie,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    pub servers: Vec<ServerEntry>,
    #[serde(default)]
    pub balance: Balance,
    pub health: Option<HealthConfig>,
    #[serde(default = "defaults::connect_timeout")]
    pub connect_timeout: Dur,
    #[serde(default = "defaults::io_timeout")]
    pub read_timeout: Dur,
    #[serde(default = "defaults::io_timeout")]
    pub write_timeout: Dur,
    #[serde(default = "defaults::idle_timeout")]
    pub idle_timeout: Dur,
    #[serde(default = "defaults::retries")]
    pub retries: u32,
    /// Idle keep-alive connections kept per server and worker thread (nginx `keepalive`); 0
    /// closes each upstream connection after its response.
    #[serde(default = "defaults::keepalive")]
    pub keepalive: u32,
    /// How often `name:port` servers are resolved again.
    #[serde(default = "defaults::resolve_interval")]
    pub resolve_interval: Dur,
    /// The protocol spoken to the servers.
    #[serde(default)]
    pub protocol: UpstreamProtocol,
    /// TLS to the servers: `true`, or a block of options. `h2` and `auto` imply it.
    pub tls: Option<UpstreamTls>,
    /// Most streams rproxy opens at once on one HTTP/2 connection to a server (fewer when the
    /// server's SETTINGS_MAX_CONCURRENT_STREAMS says so); more connections are opened past it.
    #[serde(default = "defaults::max_streams")]
    pub max_streams: u32,
    /// Sticky sessions: a cookie sends a client back to the server that answered it.
    pub sticky: Option<StickyConfig>,
    /// The servers come from service discovery (Kubernetes EndpointSlices), not from the file:
    /// an empty list means "none ready now" (503), not a mistake. Never read from YAML.
    #[serde(skip)]
    pub discovered: bool,
}

impl UpstreamConfig {
    /// A pool of `servers` with every other setting at its default.
    pub fn with_servers(servers: Vec<ServerEntry>) -> UpstreamConfig {
        UpstreamConfig {
            servers,
            balance: Balance::default(),
            health: None,
            connect_timeout: defaults::connect_timeout(),
            read_timeout: defaults::io_timeout(),
            write_timeout: defaults::io_timeout(),
            idle_timeout: defaults::idle_timeout(),
            retries: defaults::retries(),
            keepalive: defaults::keepalive(),
            resolve_interval: defaults::resolve_interval(),
            protocol: UpstreamProtocol::default(),
            tls: None,
            max_streams: defaults::max_streams(),
            sticky: None,
            discovered: false,
        }
    }
}

/// A pool's sticky sessions (nginx's `sticky cookie`, HAProxy's `cookie ... insert`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StickyConfig {
    /// The cookie's name; default `rproxy_<pool>`.
    pub cookie: Option<String>,
    /// The cookie's `Max-Age`; default: a session cookie.
    pub ttl: Option<Dur>,
    /// The HMAC key of the cookie's value; give the same one to every replica. Default: a
    /// random key made at start (kept across reloads).
    pub secret: Option<String>,
}

/// How rproxy speaks to a pool's servers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UpstreamProtocol {
    /// HTTP/1.1 (over TLS with `tls`).
    #[default]
    Http1,
    /// HTTP/2 in cleartext, with prior knowledge (Hypercorn, grpcio without TLS).
    H2c,
    /// HTTP/2 over TLS (ALPN `h2` only).
    H2,
    /// TLS, and whatever ALPN picks: HTTP/2 or HTTP/1.1.
    Auto,
}

impl UpstreamProtocol {
    /// As written in the config (the access log's `upstream_protocol`).
    pub fn name(self) -> &'static str {
        match self {
            UpstreamProtocol::Http1 => "http1",
            UpstreamProtocol::H2c => "h2c",
            UpstreamProtocol::H2 => "h2",
            UpstreamProtocol::Auto => "auto",
        }
    }

    /// Does this protocol run over TLS whatever `tls` says?
    pub fn needs_tls(self) -> bool {
        matches!(self, UpstreamProtocol::H2 | UpstreamProtocol::Auto)
    }
}

/// `tls:` of a pool: on/off, or the options of a TLS connection to its servers.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(
    untagged,
    expecting = "true, false, or a block with sni, ca, client_cert, client_key, insecure_skip_verify"
)]
pub enum UpstreamTls {
    On(bool),
    Options(UpstreamTlsOptions),
}

/// The options of TLS to a pool's servers.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamTlsOptions {
    /// The name sent (SNI) and verified; default: the server's name as written.
    pub sni: Option<String>,
    /// CA certificates (PEM) the servers' certificates are verified against, instead of the
    /// system's roots.
    pub ca: Option<PathBuf>,
    /// A client certificate (PEM, with its chain) presented to the servers (mTLS), and its key.
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
    /// Accept any certificate: testing only, logged as a warning at every load.
    #[serde(default)]
    pub insecure_skip_verify: bool,
}

impl UpstreamConfig {
    /// The TLS options of this pool's connections, if they use TLS.
    pub fn tls_options(&self) -> Option<UpstreamTlsOptions> {
        match &self.tls {
            Some(UpstreamTls::Options(o)) => Some(o.clone()),
            Some(UpstreamTls::On(true)) => Some(UpstreamTlsOptions::default()),
            Some(UpstreamTls::On(false)) => None,
            None => self.protocol.needs_tls().then(UpstreamTlsOptions::default),
        }
    }
}

/// One upstream server: `127.0.0.1:8000` or `{ addr: 127.0.0.1:8000, weight: 2 }`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerEntry {
    pub addr: String,
    pub weight: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthConfig {
    #[serde(default = "defaults::health_path")]
    pub path: String,
    #[serde(default = "defaults::health_interval")]
    pub interval: Dur,
    #[serde(default = "defaults::health_timeout")]
    pub timeout: Dur,
    #[serde(default = "defaults::rise")]
    pub rise: u32,
    #[serde(default = "defaults::fall")]
    pub fall: u32,
    #[serde(default = "defaults::expect")]
    pub expect: StatusRange,
    /// Probe with gRPC's `grpc.health.v1.Health/Check` (SERVING passes) instead of `GET path`.
    #[serde(default)]
    pub grpc: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Name used in metrics and logs; default `host+path`.
    pub name: Option<String>,
    pub host: Option<String>,
    #[serde(default = "defaults::route_path")]
    pub path: String,
    /// `path` matches only itself (Kubernetes `pathType: Exact`), not the paths below it.
    #[serde(default)]
    pub exact: bool,
    pub upstream: Option<String>,
    #[serde(rename = "static")]
    pub static_dir: Option<PathBuf>,
    #[serde(default = "defaults::yes")]
    pub websocket: bool,
    #[serde(default = "defaults::websocket_idle_timeout")]
    pub websocket_idle_timeout: Dur,
    #[serde(default = "defaults::max_body")]
    pub max_body: Size,
    #[serde(default)]
    pub strip_prefix: bool,
    pub rate_limit: Option<String>,
    pub max_concurrent: Option<u32>,
    #[serde(default)]
    pub hsts: bool,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Response compression (nginx `gzip on`): `true` (br, zstd, gzip) or the encodings in the
    /// server's order of preference, e.g. `[br, gzip]`. Default: off.
    #[serde(default)]
    pub compress: Compress,
    /// Media types compressed (nginx `gzip_types`): `text/*`, `*+json`, `application/json`, `*`.
    /// Default: `crate::request::compress::DEFAULT_TYPES`.
    pub compress_types: Option<Vec<String>>,
    /// Responses with a Content-Length below this are not compressed (nginx
    /// `gzip_min_length`). Default: 512.
    pub compress_min_size: Option<Size>,
    /// A static route sends `file.br`, `file.zst` or `file.gz` beside `file` to a client that
    /// accepts it (nginx `gzip_static on`, Caddy `precompressed`). Default: false.
    #[serde(default)]
    pub precompressed: bool,
    /// This route's own say on the http -> https redirect (ingress-nginx `ssl-redirect`):
    /// `true` redirects even when `tls.redirect_http` is off, `false` serves plain HTTP.
    /// Default: `tls.redirect_http`.
    pub redirect_https: Option<bool>,
}

impl RouteConfig {
    /// A route of `host` + `path` to the pool `upstream`, every other setting at its default.
    pub fn to_upstream(host: Option<String>, path: String, upstream: String) -> RouteConfig {
        RouteConfig {
            name: None,
            host,
            path,
            exact: false,
            upstream: Some(upstream),
            static_dir: None,
            websocket: true,
            websocket_idle_timeout: defaults::websocket_idle_timeout(),
            max_body: defaults::max_body(),
            strip_prefix: false,
            rate_limit: None,
            max_concurrent: None,
            hsts: false,
            headers: BTreeMap::new(),
            redirect_https: None,
            compress: Compress::Off,
            compress_types: None,
            compress_min_size: None,
            precompressed: false,
        }
    }
}

mod defaults {
    use super::{Dur, Size, StatusRange};
    use std::time::Duration;

    const fn secs(s: u64) -> Dur {
        Dur(Duration::from_secs(s))
    }
    pub fn yes() -> bool {
        true
    }
    pub fn grace_period() -> Dur {
        secs(10)
    }
    pub fn header_timeout() -> Dur {
        secs(10)
    }
    pub fn keepalive_timeout() -> Dur {
        secs(75)
    }
    pub fn body_timeout() -> Dur {
        secs(60)
    }
    pub fn max_header_size() -> Size {
        Size(64 << 10)
    }
    pub fn connect_timeout() -> Dur {
        secs(5)
    }
    pub fn io_timeout() -> Dur {
        secs(60)
    }
    pub fn idle_timeout() -> Dur {
        secs(90)
    }
    pub fn fast_path() -> bool {
        true
    }
    pub fn retries() -> u32 {
        2
    }
    /// Above the requests a thread has in flight at 1,000 client connections, so a busy pool
    /// does not open and close a connection per request.
    pub fn keepalive() -> u32 {
        1024
    }
    /// As many as nginx's and Go's servers allow by default.
    pub fn max_streams() -> u32 {
        100
    }
    pub fn resolve_interval() -> Dur {
        secs(5)
    }
    pub fn health_path() -> String {
        "/health".into()
    }
    pub fn health_interval() -> Dur {
        secs(2)
    }
    pub fn health_timeout() -> Dur {
        secs(1)
    }
    pub fn rise() -> u32 {
        1
    }
    pub fn fall() -> u32 {
        2
    }
    pub fn expect() -> StatusRange {
        StatusRange(200, 399)
    }
    pub fn route_path() -> String {
        "/".into()
    }
    pub fn websocket_idle_timeout() -> Dur {
        secs(3600)
    }
    pub fn max_body() -> Size {
        Size(10 << 20)
    }
}
