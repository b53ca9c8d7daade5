//! The only step from configuration to runtime: builds pools (reusing unchanged ones so their
//! health state survives), routes, the route table and the certificate store, beside whatever
//! is running. Failures are collected as problems; nothing is started here.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use http::header::{HeaderName, HeaderValue};

use super::limit::RateLimit;
use super::{Route, RouteTable, Target};
use crate::acme::{directory_url, AcmeSettings, Challenge};
use crate::config::model::{Compress, RouteConfig, UpstreamConfig};
use crate::config::{ConfigError, Loaded, Problem};
use crate::request::client::TrustedProxies;
use crate::request::compress::{Compression, Encoding, TypePattern};
use crate::state::{Runtime, Settings};
use crate::tls::{CertStore, InlineCert};
use crate::upstream::peer::ClientTls;
use crate::upstream::sticky::DefaultKey;
use crate::upstream::{dns, Pool};

/// A compiled configuration, ready to publish.
#[derive(Debug)]
pub struct Compiled {
    pub runtime: Runtime,
    /// Certificates for the https listener, when there is one.
    pub certs: Option<CertStore>,
}

/// Validates and compiles `loaded`; `previous` lends pools whose settings did not change.
pub fn compile(loaded: &Loaded, previous: Option<&Runtime>) -> Result<Compiled, ConfigError> {
    compile_with_certs(loaded, &[], previous, None)
}

/// As `compile`, with certificates held in memory (`inline`, from Kubernetes Secrets) beside
/// the certificate files; `previous_certs` lets a certificate file that turned bad keep its
/// last good certificate (reloads only).
pub fn compile_with_certs(
    loaded: &Loaded,
    inline: &[InlineCert],
    previous: Option<&Runtime>,
    previous_certs: Option<&CertStore>,
) -> Result<Compiled, ConfigError> {
    let mut problems = crate::config::validate(loaded);
    if !problems.is_empty() {
        return Err(loaded.source.locate(problems).into());
    }
    let c = &loaded.config;
    let mut pools = BTreeMap::new();
    // Sticky cookies keep their key across reloads.
    let sticky_key = previous.map_or_else(DefaultKey::random, |rt| rt.sticky_key.clone());
    for (name, cfg) in &c.upstreams {
        match build_pool(loaded, name, cfg, previous, &sticky_key) {
            Ok(pool) => {
                pools.insert(name.clone(), pool);
            }
            Err(p) => problems.push(p),
        }
    }
    let mut routes = RouteTable::default();
    // A route to a pool that failed to build was already reported through that pool.
    let failed = |rc: &RouteConfig| rc.upstream.as_ref().is_some_and(|u| !pools.contains_key(u));
    for (i, rc) in c.routes.iter().enumerate().filter(|(_, rc)| !failed(rc)) {
        match build_route(loaded, i, rc, &pools) {
            Ok(route) => routes.insert(rc.host.as_deref(), Arc::new(route)),
            Err(p) => problems.push(p),
        }
    }
    routes.finish();
    let certs = match c.listen.https.is_some() {
        true => build_certs(loaded, &routes, previous_certs)
            .map(|mut store| {
                store.add_inline(inline);
                store
            })
            .map_err(|p| problems.extend(p))
            .ok(),
        false => None,
    };
    let acme = build_acme(loaded, &routes, certs.as_ref());
    if !problems.is_empty() {
        return Err(loaded.source.locate(problems).into());
    }
    let https_port = c
        .listen
        .https
        .as_ref()
        .and_then(|a| a.addr.parse::<SocketAddr>().ok())
        .map(|a| a.port());
    let redirect_https = https_port.filter(|_| c.tls.redirect_http.unwrap_or(true));
    let settings = Settings {
        header_timeout: c.server.header_timeout.0,
        keepalive_timeout: c.server.keepalive_timeout.0,
        body_timeout: c.server.body_timeout.0,
        max_header_size: c.server.max_header_size.0,
        grace_period: c.server.grace_period.0,
        max_connections: c.server.max_connections,
        fast_path: c.server.fast_path,
        // Checked by `validate`.
        trusted_proxies: TrustedProxies::parse(&c.server.trusted_proxies).unwrap_or_default(),
        proxy_protocol_http: c.listen.http.as_ref().is_some_and(|l| l.proxy_protocol),
        proxy_protocol_https: c.listen.https.as_ref().is_some_and(|l| l.proxy_protocol),
    };
    Ok(Compiled {
        runtime: Runtime {
            routes,
            pools,
            redirect_https,
            https_port,
            settings,
            acme,
            sticky_key,
        },
        certs,
    })
}

/// Reuses the running pool when its settings did not change; otherwise builds it, resolving
/// names now (a name that does not resolve leaves its entry empty and is retried at runtime).
fn build_pool(
    loaded: &Loaded,
    name: &str,
    cfg: &UpstreamConfig,
    previous: Option<&Runtime>,
    key: &DefaultKey,
) -> Result<Arc<Pool>, Problem> {
    let old = previous.and_then(|rt| rt.pools.get(name));
    if let Some(old) = old.filter(|p| p.source == *cfg) {
        return Ok(old.clone());
    }
    let tls = match cfg.tls_options() {
        Some(opts) if opts.insecure_skip_verify => {
            tracing::warn!(
                upstream = name,
                "tls.insecure_skip_verify: the certificates of this pool's servers are NOT verified"
            );
            Some(
                ClientTls::load(&opts, &loaded.dir)
                    .map_err(|why| Problem::at(format!("upstreams.{name}.tls"), why))?,
            )
        }
        Some(opts) => Some(
            ClientTls::load(&opts, &loaded.dir)
                .map_err(|why| Problem::at(format!("upstreams.{name}.tls"), why))?,
        ),
        None => None,
    };
    let entries: Vec<String> = cfg.servers.iter().map(|s| s.addr.clone()).collect();
    let resolved = dns::resolve_entries(name, &entries, None);
    let pool = Pool::new(name, cfg, &resolved, tls, key);
    if let Some(old) = old {
        pool.inherit_health(old);
    }
    Ok(Arc::new(pool))
}

fn build_route(
    loaded: &Loaded,
    i: usize,
    rc: &RouteConfig,
    pools: &BTreeMap<String, Arc<Pool>>,
) -> Result<Route, Problem> {
    let target = match (&rc.upstream, &rc.static_dir) {
        (Some(name), _) => Target::Upstream(pools.get(name).cloned().ok_or_else(|| {
            Problem::at(
                format!("routes[{i}].upstream"),
                format!("no upstream named `{name}`"),
            )
        })?),
        (None, Some(dir)) => {
            let dir = loaded.resolve(dir);
            let canonical = dir.canonicalize().map_err(|e| {
                Problem::at(
                    format!("routes[{i}].static"),
                    format!("`{}`: {e}", dir.display()),
                )
            })?;
            Target::Static(canonical)
        }
        (None, None) => {
            return Err(Problem::at(
                format!("routes[{i}]"),
                "no upstream or static target",
            ))
        }
    };
    let name = rc
        .name
        .clone()
        .unwrap_or_else(|| format!("{}{}", rc.host.as_deref().unwrap_or("*"), rc.path));
    let mut route = match rc.exact {
        true => Route::exact(name, &rc.path, target),
        false => Route::new(name, &rc.path, target),
    };
    route.redirect_https = rc.redirect_https;
    route.websocket = rc.websocket;
    route.websocket_idle_timeout = rc.websocket_idle_timeout.0;
    route.max_body = rc.max_body.0;
    route.strip_prefix = rc.strip_prefix;
    route.hsts = rc.hsts;
    route.max_concurrent = rc.max_concurrent;
    if let Some(text) = &rc.rate_limit {
        let limit = RateLimit::parse(text)
            .map_err(|why| Problem::at(format!("routes[{i}].rate_limit"), why))?;
        route.rate_limit = Some(limit);
    }
    route.compress = compression(i, rc)?;
    route.precompressed = rc.precompressed;
    for (k, v) in &rc.headers {
        let name = HeaderName::from_bytes(k.as_bytes());
        let value = HeaderValue::from_str(v);
        match (name, value) {
            (Ok(n), Ok(v)) => route.headers.push((n, v)),
            _ => {
                return Err(Problem::at(
                    format!("routes[{i}].headers.{k}"),
                    "invalid header",
                ))
            }
        }
    }
    Ok(route)
}

fn build_certs(
    loaded: &Loaded,
    routes: &RouteTable,
    previous: Option<&CertStore>,
) -> Result<CertStore, Vec<Problem>> {
    let tls = &loaded.config.tls;
    let root = certs_root(loaded);
    let static_dir = Some(root.as_path()).filter(|d| tls.certs.is_some() || d.is_dir());
    let acme_dir = tls.acme.as_ref().map(|_| root.join("acme"));
    let names: Vec<String> = routes.exact_hosts().map(str::to_string).collect();
    CertStore::load(
        static_dir,
        acme_dir.as_deref(),
        &names,
        tls.self_signed,
        previous,
    )
}

/// The compiled `tls.acme`: by default every routed DNS name no static certificate covers.
fn build_acme(
    loaded: &Loaded,
    routes: &RouteTable,
    certs: Option<&CertStore>,
) -> Option<Arc<AcmeSettings>> {
    let acme = loaded.config.tls.acme.as_ref()?;
    let domains = match &acme.domains {
        Some(d) => d.iter().map(|n| n.to_ascii_lowercase()).collect(),
        None => {
            let mut names: Vec<String> = routes
                .exact_hosts()
                .filter(|h| h.parse::<std::net::IpAddr>().is_err() && h.contains('.'))
                .filter(|h| !certs.is_some_and(|c| c.covers_static(h)))
                .map(str::to_string)
                .collect();
            names.sort();
            names
        }
    };
    let challenge = match acme.challenge.as_deref() {
        Some("tls-alpn-01") => Challenge::TlsAlpn01,
        _ => Challenge::Http01,
    };
    Some(Arc::new(AcmeSettings {
        dir: certs_root(loaded).join("acme"),
        directory: directory_url(acme.directory.as_deref().unwrap_or("letsencrypt")),
        ca: acme.ca.as_ref().map(|p| loaded.resolve(p)),
        email: acme.email.clone(),
        challenge,
        domains,
        renew_before: acme.renew_before.map(|d| d.0),
    }))
}

/// Where certificates live: `tls.certs`, else `certs/` beside the configuration file.
pub fn certs_root(loaded: &Loaded) -> std::path::PathBuf {
    match &loaded.config.tls.certs {
        Some(d) => loaded.resolve(d),
        None => loaded.dir.join("certs"),
    }
}

/// A route's `compress`, `compress_types` and `compress_min_size`, compiled.
fn compression(i: usize, rc: &RouteConfig) -> Result<Option<Compression>, Problem> {
    let bad = |k: &str, why: &str| Problem::at(format!("routes[{i}].{k}"), why);
    let encodings = match &rc.compress {
        Compress::Off => return Ok(None),
        Compress::On => Encoding::DEFAULT_ORDER.to_vec(),
        Compress::List(names) => names
            .iter()
            .map(|n| Encoding::parse(n).ok_or_else(|| bad("compress", "unknown encoding")))
            .collect::<Result<_, _>>()?,
    };
    let mut c = Compression::with_defaults(encodings);
    if let Some(types) = &rc.compress_types {
        c.types = types
            .iter()
            .map(|t| TypePattern::parse(t).ok_or_else(|| bad("compress_types", "bad media type")))
            .collect::<Result<_, _>>()?;
    }
    if let Some(min) = rc.compress_min_size {
        c.min_size = min.0;
    }
    Ok(Some(c))
}
