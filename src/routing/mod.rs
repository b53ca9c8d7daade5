//! The compiled, immutable route table: host index (exact > `*.wildcard` > any), then the
//! longest whole-segment path prefix (an exact-path route beats a prefix of the same length).
//! Built once per configuration by `compile`.

pub mod compile;
pub mod limit;

use fnv::FnvHashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::header::{HeaderName, HeaderValue};

use crate::upstream::Pool;

/// Where a route sends its requests.
#[derive(Debug)]
pub enum Target {
    Upstream(Arc<Pool>),
    Static(PathBuf),
}

/// One compiled route.
#[derive(Debug)]
pub struct Route {
    /// Metrics and log label.
    pub name: String,
    /// Path prefix without a trailing slash (`""` for `/`); with `exact`, the whole path.
    pub prefix: String,
    /// Only `prefix` itself matches (Kubernetes `pathType: Exact`), not the paths below it.
    pub exact: bool,
    /// This route's own say on the http -> https redirect; `None` follows `tls.redirect_http`.
    pub redirect_https: Option<bool>,
    pub target: Target,
    pub websocket: bool,
    pub websocket_idle_timeout: Duration,
    pub max_body: u64,
    pub strip_prefix: bool,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub hsts: bool,
    pub max_concurrent: Option<u32>,
    /// Requests per client IP (`rate_limit`).
    pub rate_limit: Option<limit::RateLimit>,
    /// Response compression (`compress`); `None`: off.
    pub compress: Option<crate::request::compress::Compression>,
    /// A static route serves `file.br`/`.zst`/`.gz` beside a file (`precompressed`).
    pub precompressed: bool,
    inflight: AtomicU32,
}

impl Route {
    pub fn new(name: String, prefix: &str, target: Target) -> Route {
        Route {
            name,
            prefix: normalize_prefix(prefix),
            exact: false,
            redirect_https: None,
            target,
            websocket: true,
            websocket_idle_timeout: Duration::from_secs(3600),
            max_body: 10 << 20,
            strip_prefix: false,
            headers: Vec::new(),
            hsts: false,
            max_concurrent: None,
            rate_limit: None,
            compress: None,
            precompressed: false,
            inflight: AtomicU32::new(0),
        }
    }

    /// A route that matches `path` only (the query aside), not the paths below it.
    pub fn exact(name: String, path: &str, target: Target) -> Route {
        let mut route = Route::new(name, path, target);
        route.exact = true;
        route.prefix = path.to_string();
        route
    }

    /// Does this route's prefix cover `path` on whole segments (or equal it, for `exact`)?
    pub fn matches(&self, path: &str) -> bool {
        if self.exact {
            let bare = path.split_once('?').map_or(path, |(p, _)| p);
            return bare == self.prefix;
        }
        path_has_prefix(path, &self.prefix)
    }

    /// The path (and query) to send upstream: with the prefix removed when `strip_prefix` is set.
    pub fn upstream_path<'a>(&self, path_and_query: &'a str) -> std::borrow::Cow<'a, str> {
        if !self.strip_prefix || self.prefix.is_empty() {
            return path_and_query.into();
        }
        let rest = path_and_query.get(self.prefix.len()..).unwrap_or("");
        if rest.starts_with('/') {
            rest.into()
        } else {
            format!("/{rest}").into()
        }
    }

    /// Takes an in-flight slot; `None` when `max_concurrent` is reached.
    pub fn enter(self: &Arc<Self>) -> Option<InflightGuard> {
        let now = self.inflight.fetch_add(1, Ordering::AcqRel) + 1;
        if self.max_concurrent.is_some_and(|max| now > max) {
            self.inflight.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(InflightGuard(self.clone()))
    }
}

/// Releases a route's in-flight slot when dropped.
#[derive(Debug)]
pub struct InflightGuard(Arc<Route>);

impl Drop for InflightGuard {
    fn drop(&mut self) {
        self.0.inflight.fetch_sub(1, Ordering::AcqRel);
    }
}

fn normalize_prefix(p: &str) -> String {
    p.trim_end_matches('/').to_string()
}

/// `/api` covers `/api`, `/api/` and `/api/x`, not `/apix`. The empty prefix covers everything.
fn path_has_prefix(path: &str, prefix: &str) -> bool {
    match path.strip_prefix(prefix) {
        Some(rest) => rest.is_empty() || rest.starts_with('/') || rest.starts_with('?'),
        None => false,
    }
}

/// Routes of one host level, longest prefix first.
#[derive(Debug, Default)]
struct Level(Vec<Arc<Route>>);

impl Level {
    fn find(&self, path: &str) -> Option<&Arc<Route>> {
        self.0.iter().find(|r| r.matches(path))
    }
}

/// Host index -> routes by prefix.
#[derive(Debug, Default)]
pub struct RouteTable {
    exact: FnvHashMap<String, Level>,
    /// Keyed by the suffix after `*.`, e.g. `example.com`.
    wildcard: FnvHashMap<String, Level>,
    any: Level,
}

impl RouteTable {
    /// Adds a route for `host` (`None` = any host). Call `finish` when done.
    pub fn insert(&mut self, host: Option<&str>, route: Arc<Route>) {
        let level = match host.map(|h| h.to_ascii_lowercase()) {
            None => &mut self.any,
            Some(h) => match h.strip_prefix("*.") {
                Some(suffix) => self.wildcard.entry(suffix.to_string()).or_default(),
                None => self.exact.entry(h).or_default(),
            },
        };
        level.0.push(route);
    }

    /// Sorts every level so the longest prefix is tried first.
    pub fn finish(&mut self) {
        let levels = self
            .exact
            .values_mut()
            .chain(self.wildcard.values_mut())
            .chain(std::iter::once(&mut self.any));
        for level in levels {
            level
                .0
                .sort_by_key(|r| std::cmp::Reverse((r.prefix.len(), r.exact)));
        }
    }

    /// Finds the route for a request's `host` (port and case ignored) and `path`.
    pub fn lookup(&self, host: &str, path: &str) -> Option<&Arc<Route>> {
        let host = normalize_host(host);
        if let Some(r) = self.exact.get(host.as_ref()).and_then(|l| l.find(path)) {
            return Some(r);
        }
        let wildcard = self.wildcard_levels(&host).find_map(|l| l.find(path));
        wildcard.or_else(|| self.any.find(path))
    }

    /// Is `host` served by some route (exact, wildcard or a host-less one)?
    pub fn routes_host(&self, host: &str) -> bool {
        let host = normalize_host(host);
        let wildcard = self.wildcard_levels(&host).next().is_some();
        wildcard || !self.any.0.is_empty() || self.exact.contains_key(host.as_ref())
    }

    /// Exact host names that have routes (for certificates).
    pub fn exact_hosts(&self) -> impl Iterator<Item = &str> {
        self.exact.keys().map(String::as_str)
    }

    /// Wildcard levels covering `host`, most specific first.
    fn wildcard_levels<'s, 'h>(
        &'s self,
        host: &'h str,
    ) -> impl Iterator<Item = &'s Level> + use<'s, 'h> {
        let suffixes = std::iter::successors(host.split_once('.').map(|(_, s)| s), |s| {
            s.split_once('.').map(|(_, s)| s)
        });
        suffixes
            .take_while(move |_| !self.wildcard.is_empty())
            .filter_map(move |s| self.wildcard.get(s))
    }
}

/// Lower-cased host without port or trailing dot; allocates only when the case is mixed.
fn normalize_host(host: &str) -> std::borrow::Cow<'_, str> {
    let host = strip_port(host).trim_end_matches('.');
    if host.bytes().any(|b| b.is_ascii_uppercase()) {
        host.to_ascii_lowercase().into()
    } else {
        host.into()
    }
}

/// `example.com:8080` -> `example.com`; `[::1]:80` -> `[::1]`.
pub fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host
            .split_once(']')
            .map(|(h, _)| &host[..h.len() + 1])
            .unwrap_or(host);
    }
    match host.bytes().rposition(|b| b == b':') {
        Some(i) if host.as_bytes()[i + 1..].iter().all(u8::is_ascii_digit) => &host[..i],
        _ => host,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(name: &str, prefix: &str) -> Arc<Route> {
        Arc::new(Route::new(
            name.into(),
            prefix,
            Target::Static(PathBuf::from(".")),
        ))
    }

    fn table() -> RouteTable {
        let mut t = RouteTable::default();
        t.insert(Some("app.example.com"), route("exact-api", "/api"));
        t.insert(Some("app.example.com"), route("exact-root", "/"));
        t.insert(Some("*.example.com"), route("wild", "/"));
        t.insert(Some("*.example.com"), route("wild-deep", "/deep/er"));
        t.insert(Some("only.example.com"), route("only-x", "/x"));
        t.insert(None, route("any", "/"));
        t.insert(None, route("any-static", "/static"));
        t.finish();
        t
    }

    #[test]
    fn host_levels_and_prefixes() {
        let t = table();
        let name = |h: &str, p: &str| t.lookup(h, p).map(|r| r.name.clone()).unwrap_or_default();
        assert_eq!(name("app.example.com", "/api/x"), "exact-api");
        assert_eq!(name("APP.example.com:8443", "/api"), "exact-api");
        assert_eq!(name("app.example.com", "/apix"), "exact-root");
        assert_eq!(name("b.example.com", "/deep/er/x"), "wild-deep");
        assert_eq!(name("a.b.example.com", "/deep"), "wild");
        assert_eq!(name("only.example.com", "/x/1"), "only-x");
        // No route of the exact host matches: fall back to the wildcard level.
        assert_eq!(name("only.example.com", "/y"), "wild");
        assert_eq!(name("other.org", "/static/a.css"), "any-static");
        assert_eq!(name("other.org", "/staticx"), "any");
    }

    #[test]
    fn exact_paths() {
        let mut t = RouteTable::default();
        let target = || Target::Static(PathBuf::from("."));
        t.insert(
            None,
            Arc::new(Route::exact("exact".into(), "/foo", target())),
        );
        t.insert(None, route("prefix", "/foo"));
        t.insert(
            None,
            Arc::new(Route::exact("slash".into(), "/bar/", target())),
        );
        t.finish();
        let name = |p: &str| t.lookup("a", p).map(|r| r.name.clone()).unwrap_or_default();
        assert_eq!(name("/foo"), "exact");
        assert_eq!(name("/foo?x=1"), "exact");
        assert_eq!(name("/foo/"), "prefix");
        assert_eq!(name("/foo/x"), "prefix");
        assert_eq!(name("/bar/"), "slash");
        assert_eq!(name("/bar"), "");
    }

    #[test]
    fn strip_prefix_paths() {
        let mut r = Route::new("r".into(), "/api/", Target::Static(PathBuf::from(".")));
        r.strip_prefix = true;
        assert_eq!(r.upstream_path("/api/users?x=1"), "/users?x=1");
        assert_eq!(r.upstream_path("/api"), "/");
        assert_eq!(r.upstream_path("/api?q"), "/?q");
    }

    #[test]
    fn ports_are_stripped() {
        assert_eq!(strip_port("a.com:80"), "a.com");
        assert_eq!(strip_port("[::1]:80"), "[::1]");
        assert_eq!(strip_port("a.com"), "a.com");
    }
}
