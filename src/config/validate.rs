//! Semantic checks of a parsed configuration: every problem is collected with its key path,
//! so `rproxy -t` can list them all. Nothing here touches the network.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;

use http::header::{HeaderName, HeaderValue};

use super::model::{
    AcmeConfig, Compress, Config, RouteConfig, StickyConfig, UpstreamConfig, UpstreamProtocol,
    UpstreamTls,
};
use super::{did_you_mean, Loaded, Problem};
use crate::request::client::TrustedProxies;
use crate::request::compress::{Encoding, TypePattern};
use crate::upstream::peer::ClientTls;
use crate::upstream::sticky::is_cookie_name;

/// Checks everything that can be checked without starting anything. For a file that did not
/// parse whole, checks that would judge a part that did not parse (`Source::gaps`) stay quiet.
pub fn validate(loaded: &Loaded) -> Vec<Problem> {
    let mut p = Vec::new();
    let c = &loaded.config;
    check_listen(c, &mut p);
    check_tls(loaded, &mut p);
    for (name, pool) in &c.upstreams {
        check_pool(name, pool, &mut p);
        check_upstream_protocol(loaded, name, pool, &mut p);
    }
    for (i, route) in c.routes.iter().enumerate() {
        check_route(loaded, i, route, &mut p);
    }
    check_duplicate_routes(loaded, &mut p);
    let gaps = &loaded.source.gaps;
    p.retain(|p| !gaps.covers(&p.location) && !gaps.touches(&p.location));
    p
}

/// Two routes with the same host and path: the later one is reported.
fn check_duplicate_routes(loaded: &Loaded, p: &mut Vec<Problem>) {
    let gaps = &loaded.source.gaps;
    let mut seen = HashMap::new();
    for (i, route) in loaded.config.routes.iter().enumerate() {
        let at = |k: &str| format!("routes[{i}].{k}");
        if gaps.covers(&at("host")) || gaps.covers(&at("path")) {
            continue;
        }
        let path = match route.exact {
            true => route.path.clone(),
            false => route.path.trim_end_matches('/').to_string(),
        };
        let key = (
            route.host.as_deref().map(str::to_ascii_lowercase),
            path,
            route.exact,
        );
        match seen.entry(key) {
            Entry::Occupied(first) => p.push(Problem::at(
                at("path"),
                format!("same host and path as routes[{}]", first.get()),
            )),
            Entry::Vacant(slot) => {
                slot.insert(i);
            }
        }
    }
}

fn check_listen(c: &Config, p: &mut Vec<Problem>) {
    let l = &c.listen;
    let addrs: Vec<(&str, &str)> = l.addrs().collect();
    for (key, a) in &addrs {
        if a.parse::<SocketAddr>().is_err() {
            p.push(Problem::at(
                format!("listen.{key}"),
                format!("`{a}` is not an address like 0.0.0.0:80 or [::]:443"),
            ));
        }
    }
    if l.http.is_none() && l.https.is_none() {
        p.push(Problem::at(
            "listen",
            "set at least one of listen.http and listen.https",
        ));
    }
    if addrs.iter().map(|(_, a)| a).collect::<HashSet<_>>().len() != addrs.len() {
        p.push(Problem::at("listen", "two listeners share one address"));
    }
    check_real_ip(c, p);
    if c.server.max_connections == Some(0) {
        p.push(Problem::at("server.max_connections", "must be at least 1"));
    }
    if c.server.threads == Some(0) {
        p.push(Problem::at("server.threads", "must be at least 1"));
    }
    if c.server.keepalive_timeout.0.as_secs() == 0 {
        p.push(Problem::at(
            "server.keepalive_timeout",
            "must be at least 1s",
        ));
    }
    if c.server.header_timeout.0.is_zero() {
        p.push(Problem::at("server.header_timeout", "must be more than 0"));
    }
}

/// `server.trusted_proxies` parses, and a PROXY protocol listener has someone to trust.
fn check_real_ip(c: &Config, p: &mut Vec<Problem>) {
    for (i, entry) in c.server.trusted_proxies.iter().enumerate() {
        if let Err(e) = TrustedProxies::parse(std::slice::from_ref(entry)) {
            p.push(Problem::at(
                format!("server.trusted_proxies[{i}]"),
                e.to_string(),
            ));
        }
    }
    let l = &c.listen;
    for (key, listen) in [("http", &l.http), ("https", &l.https)] {
        if listen.as_ref().is_some_and(|l| l.proxy_protocol) && c.server.trusted_proxies.is_empty()
        {
            p.push(Problem::at(
                format!("listen.{key}.proxy_protocol"),
                "needs server.trusted_proxies: the balancers whose PROXY headers are believed \
                 (0.0.0.0/0 and ::/0 to believe any peer)",
            ));
        }
    }
}

fn check_tls(loaded: &Loaded, p: &mut Vec<Problem>) {
    let t = &loaded.config.tls;
    if let Some(dir) = &t.certs {
        let dir = loaded.resolve(dir);
        if !dir.is_dir() {
            p.push(Problem::at(
                "tls.certs",
                format!("`{}` is not a directory", dir.display()),
            ));
        }
    }
    if let Some(acme) = &t.acme {
        check_acme(loaded, acme, p);
    }
    if t.redirect_http == Some(true) && loaded.config.listen.https.is_none() {
        p.push(Problem::at(
            "tls.redirect_http",
            "needs listen.https to redirect to",
        ));
    }
}

fn check_acme(loaded: &Loaded, acme: &AcmeConfig, p: &mut Vec<Problem>) {
    let listen = &loaded.config.listen;
    if listen.https.is_none() {
        p.push(Problem::at(
            "tls.acme",
            "needs listen.https to serve the certificates",
        ));
    }
    match acme.challenge.as_deref() {
        None | Some("http-01") if listen.http.is_none() => p.push(Problem::at(
            "tls.acme.challenge",
            "http-01 needs listen.http (answered on port 80); or use tls-alpn-01",
        )),
        None | Some("http-01") | Some("tls-alpn-01") => {}
        Some(other) => p.push(Problem::at(
            "tls.acme.challenge",
            format!("`{other}` is not a challenge type: use http-01 or tls-alpn-01"),
        )),
    }
    if let Some(dir) = acme.directory.as_deref() {
        let known = matches!(dir, "letsencrypt" | "letsencrypt-staging");
        if !known && !dir.starts_with("https://") && !dir.starts_with("http://") {
            p.push(Problem::at(
                "tls.acme.directory",
                format!("`{dir}` is not letsencrypt, letsencrypt-staging or a directory URL"),
            ));
        }
    }
    if let Some(ca) = &acme.ca {
        let ca = loaded.resolve(ca);
        if std::fs::read(&ca).is_err() {
            p.push(Problem::at(
                "tls.acme.ca",
                format!("cannot read `{}`", ca.display()),
            ));
        }
    }
    for (i, d) in acme.domains.iter().flatten().enumerate() {
        let dns = d.contains('.') && d.parse::<std::net::IpAddr>().is_err() && !d.starts_with("*.");
        if !dns || check_host_pattern(d).is_err() {
            p.push(Problem::at(
                format!("tls.acme.domains[{i}]"),
                format!("`{d}` is not a DNS name (IP addresses and wildcards cannot be ordered by HTTP-01/TLS-ALPN-01)"),
            ));
        }
    }
}

/// The most idle upstream connections a pool may keep per server and thread.
const MAX_KEEPALIVE: u32 = 65_536;

fn check_sticky(name: &str, sticky: &StickyConfig, p: &mut Vec<Problem>) {
    let at = |k: &str| format!("upstreams.{name}.sticky.{k}");
    if let Some(cookie) = sticky.cookie.as_deref().filter(|c| !is_cookie_name(c)) {
        p.push(Problem::at(
            at("cookie"),
            format!("`{cookie}` is not a cookie name (letters, digits and !#$%&'*+-.^_`|~)"),
        ));
    }
    if sticky.secret.as_deref().is_some_and(|s| s.len() < 16) {
        p.push(Problem::at(at("secret"), "use at least 16 characters"));
    }
}

fn check_pool(name: &str, pool: &UpstreamConfig, p: &mut Vec<Problem>) {
    let at = |k: &str| format!("upstreams.{name}.{k}");
    if pool.servers.is_empty() && !pool.discovered {
        p.push(Problem::at(
            at("servers"),
            "a pool needs at least one server",
        ));
    }
    for (i, s) in pool.servers.iter().enumerate() {
        if let Err(why) = check_host_port(&s.addr) {
            p.push(Problem::at(format!("upstreams.{name}.servers[{i}]"), why));
        }
        if s.weight == 0 {
            p.push(Problem::at(
                format!("upstreams.{name}.servers[{i}].weight"),
                "must be at least 1",
            ));
        }
    }
    if pool.keepalive > MAX_KEEPALIVE {
        p.push(Problem::at(
            at("keepalive"),
            format!("at most {MAX_KEEPALIVE} idle connections per server and thread"),
        ));
    }
    if pool.resolve_interval.0.is_zero() {
        p.push(Problem::at(at("resolve_interval"), "must be more than 0"));
    }
    if let Some(sticky) = &pool.sticky {
        check_sticky(name, sticky, p);
    }
    if let Some(h) = &pool.health {
        if !h.path.starts_with('/') {
            p.push(Problem::at(at("health.path"), "must start with /"));
        }
        if h.interval.0.is_zero() {
            p.push(Problem::at(at("health.interval"), "must be more than 0"));
        }
        if h.timeout.0.is_zero() {
            p.push(Problem::at(at("health.timeout"), "must be more than 0"));
        }
        if h.rise == 0 || h.fall == 0 {
            p.push(Problem::at(
                at("health"),
                "rise and fall must be at least 1",
            ));
        }
    }
    for (k, d) in [
        ("connect_timeout", pool.connect_timeout),
        ("read_timeout", pool.read_timeout),
        ("write_timeout", pool.write_timeout),
    ] {
        if d.0.is_zero() {
            p.push(Problem::at(at(k), "must be more than 0"));
        }
    }
}

/// Most streams a pool may open on one HTTP/2 connection.
const MAX_STREAMS: u32 = 10_000;

/// The protocol, TLS and gRPC probing of a pool agree, and its TLS files are usable.
fn check_upstream_protocol(
    loaded: &Loaded,
    name: &str,
    pool: &UpstreamConfig,
    p: &mut Vec<Problem>,
) {
    let at = |k: &str| format!("upstreams.{name}.{k}");
    let protocol = pool.protocol;
    if protocol.needs_tls() && pool.tls == Some(UpstreamTls::On(false)) {
        p.push(Problem::at(
            at("tls"),
            "h2 and auto run over TLS (h2c is HTTP/2 without it)",
        ));
    }
    if protocol == UpstreamProtocol::H2c && pool.tls_options().is_some() {
        p.push(Problem::at(
            at("tls"),
            "h2c is cleartext HTTP/2: use protocol h2 (or auto) for TLS",
        ));
    }
    if pool.max_streams == 0 || pool.max_streams > MAX_STREAMS {
        p.push(Problem::at(
            at("max_streams"),
            format!("must be 1 to {MAX_STREAMS}"),
        ));
    }
    if pool.health.as_ref().is_some_and(|h| h.grpc) && protocol == UpstreamProtocol::Http1 {
        p.push(Problem::at(
            at("health.grpc"),
            "gRPC probes need an HTTP/2 pool (protocol h2c, h2 or auto)",
        ));
    }
    if let Some(opts) = pool.tls_options() {
        if let Err(why) = ClientTls::load(&opts, &loaded.dir) {
            p.push(Problem::at(at("tls"), why));
        }
        if opts
            .sni
            .as_deref()
            .is_some_and(|s| s.is_empty() || s.contains(['/', ' ', ':']))
        {
            p.push(Problem::at(at("tls.sni"), "must be a DNS name"));
        }
    }
}

/// `host:port` with a port number; IPv6 in brackets.
fn check_host_port(addr: &str) -> Result<(), String> {
    if addr.parse::<SocketAddr>().is_ok() {
        return Ok(());
    }
    let bad =
        || format!("`{addr}` is not a server address like 127.0.0.1:8000 or app.internal:8000");
    let (host, port) = addr.rsplit_once(':').ok_or_else(bad)?;
    port.parse::<u16>().map_err(|_| bad())?;
    let host_ok = !host.is_empty()
        && host
            .split('.')
            .all(|l| !l.is_empty() && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'));
    if host_ok {
        Ok(())
    } else {
        Err(bad())
    }
}

fn check_route(loaded: &Loaded, i: usize, r: &RouteConfig, p: &mut Vec<Problem>) {
    let at = |k: &str| format!("routes[{i}].{k}");
    if !r.path.starts_with('/') {
        p.push(Problem::at(
            at("path"),
            format!("`{}` must start with /", r.path),
        ));
    }
    if let Some(h) = &r.host {
        if let Err(why) = check_host_pattern(h) {
            p.push(Problem::at(at("host"), why));
        }
    }
    match (&r.upstream, &r.static_dir) {
        (Some(_), Some(_)) => p.push(Problem::at(
            format!("routes[{i}]"),
            "set either `upstream` or `static`, not both",
        )),
        (None, None) => p.push(Problem::at(
            format!("routes[{i}]"),
            "set `upstream` (a pool name) or `static` (a directory)",
        )),
        (Some(u), None)
            if !loaded.config.upstreams.contains_key(u)
                && !loaded.source.gaps.covers(&format!("upstreams.{u}")) =>
        {
            let hint = did_you_mean(u, loaded.config.upstreams.keys().map(String::as_str))
                .map(|c| format!(" (did you mean `{c}`?)"))
                .unwrap_or_default();
            p.push(Problem::at(
                at("upstream"),
                format!("no upstream named `{u}`{hint}"),
            ));
        }
        (None, Some(dir)) => {
            let dir = loaded.resolve(dir);
            if !dir.is_dir() {
                p.push(Problem::at(
                    at("static"),
                    format!("`{}` is not a directory", dir.display()),
                ));
            }
        }
        _ => {}
    }
    if let Some(Err(why)) = r
        .rate_limit
        .as_deref()
        .map(crate::routing::limit::RateLimit::parse)
    {
        p.push(Problem::at(at("rate_limit"), why));
    }
    if r.max_concurrent == Some(0) {
        p.push(Problem::at(at("max_concurrent"), "must be at least 1"));
    }
    if r.redirect_https == Some(true) && loaded.config.listen.https.is_none() {
        p.push(Problem::at(
            at("redirect_https"),
            "needs listen.https to redirect to",
        ));
    }
    if r.websocket_idle_timeout.0.is_zero() {
        p.push(Problem::at(
            at("websocket_idle_timeout"),
            "must be more than 0",
        ));
    }
    check_compress(i, r, p);
    for (name, value) in &r.headers {
        if HeaderName::from_bytes(name.as_bytes()).is_err() {
            p.push(Problem::at(
                at(&format!("headers.{name}")),
                "is not a valid header name",
            ));
        } else if PER_CONNECTION.iter().any(|h| name.eq_ignore_ascii_case(h)) {
            p.push(Problem::at(
                at(&format!("headers.{name}")),
                "describes one connection or the body's framing; rproxy sets it per request",
            ));
        }
        if HeaderValue::from_str(value).is_err() {
            p.push(Problem::at(
                at(&format!("headers.{name}")),
                "is not a valid header value",
            ));
        }
    }
}

/// `compress` names known encodings, each once; its overrides come with it and parse.
fn check_compress(i: usize, r: &RouteConfig, p: &mut Vec<Problem>) {
    let at = |k: &str| format!("routes[{i}].{k}");
    if let Compress::List(names) = &r.compress {
        if names.is_empty() {
            p.push(Problem::at(
                at("compress"),
                "an empty list: name encodings (br, zstd, gzip) or write `false`",
            ));
        }
        let mut seen = HashSet::new();
        for (j, name) in names.iter().enumerate() {
            match Encoding::parse(name) {
                None => p.push(Problem::at(
                    at(&format!("compress[{j}]")),
                    format!("unknown encoding `{name}`: expected br, zstd or gzip"),
                )),
                Some(e) if !seen.insert(e) => p.push(Problem::at(
                    at(&format!("compress[{j}]")),
                    format!("`{name}` is listed twice"),
                )),
                Some(_) => {}
            }
        }
    }
    let on = r.compress != Compress::Off;
    for (key, set) in [
        ("compress_types", r.compress_types.is_some()),
        ("compress_min_size", r.compress_min_size.is_some()),
    ] {
        if set && !on {
            p.push(Problem::at(at(key), "has no effect without `compress`"));
        }
    }
    if r.precompressed && r.static_dir.is_none() {
        p.push(Problem::at(
            at("precompressed"),
            "serves compressed files beside a `static` route's files; an upstream route takes `compress`",
        ));
    }
    if on && r.static_dir.is_some() {
        p.push(Problem::at(
            at("compress"),
            "compresses upstream responses; a `static` route takes `precompressed: true`",
        ));
    }
    for (j, t) in r.compress_types.iter().flatten().enumerate() {
        if TypePattern::parse(t).is_none() {
            p.push(Problem::at(
                at(&format!("compress_types[{j}]")),
                format!("`{t}` is not a media type like text/html, text/*, *+json or *"),
            ));
        }
    }
}

/// Headers a route may not set: each hop decides them itself.
const PER_CONNECTION: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "upgrade",
    "transfer-encoding",
    "content-length",
];

/// `example.com`, `*.example.com` or an IP address; no scheme, port or path.
fn check_host_pattern(h: &str) -> Result<(), String> {
    let name = h.strip_prefix("*.").unwrap_or(h);
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    };
    if name.parse::<std::net::IpAddr>().is_ok() || name.split('.').all(label_ok) {
        Ok(())
    } else {
        Err(format!("`{h}` is not a host name like app.example.com or *.example.com (no scheme, port or path)"))
    }
}
