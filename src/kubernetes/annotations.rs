//! ingress-nginx annotations (`nginx.ingress.kubernetes.io/...`) on an Ingress: the ones rproxy
//! honours become route and pool settings; every other one with that prefix is a problem
//! ("unsupported, ignored"), never silence. README.md's table lists `SUPPORTED`.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::config::model::{
    parse_duration, parse_size, Dur, StickyConfig, UpstreamConfig, UpstreamProtocol, UpstreamTls,
    UpstreamTlsOptions,
};
use crate::routing::limit::RateLimit;
use crate::upstream::sticky::is_cookie_name;

/// The prefix of ingress-nginx's annotations.
pub const PREFIX: &str = "nginx.ingress.kubernetes.io/";

/// The annotations (after `PREFIX`) rproxy honours.
pub const SUPPORTED: &[&str] = &[
    "ssl-redirect",
    "force-ssl-redirect",
    "proxy-body-size",
    "proxy-connect-timeout",
    "proxy-read-timeout",
    "proxy-send-timeout",
    "backend-protocol",
    "limit-rps",
    "affinity",
    "session-cookie-name",
    "session-cookie-max-age",
    "rewrite-target",
    "use-regex",
];

/// ingress-nginx's cookie name when `session-cookie-name` is not given.
const DEFAULT_COOKIE: &str = "INGRESSCOOKIE";

/// What an Ingress's annotations ask of its routes and pools.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Annotations {
    /// `ssl-redirect`: redirect http -> https for hosts with TLS (ingress-nginx default: true).
    pub ssl_redirect: Option<bool>,
    /// `force-ssl-redirect`: redirect even hosts without TLS.
    pub force_ssl_redirect: bool,
    /// `proxy-body-size` (`0`: no limit).
    pub max_body: Option<u64>,
    /// `limit-rps`, as a route's `rate_limit`.
    pub rate_limit: Option<String>,
    /// `rewrite-target`; served only where it maps onto `strip_prefix` (see `strip_rewrite`).
    pub rewrite_target: Option<String>,
    /// `use-regex`.
    pub use_regex: bool,
    /// What goes into the Ingress's pools.
    pub pool: PoolSettings,
}

/// Settings an Ingress gives the pools of its backends.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PoolSettings {
    pub connect_timeout: Option<Duration>,
    pub read_timeout: Option<Duration>,
    pub write_timeout: Option<Duration>,
    pub protocol: Option<BackendProtocol>,
    pub sticky: Option<StickyConfig>,
}

/// `backend-protocol`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendProtocol {
    Http,
    /// TLS to the pods, not verified (ingress-nginx's `proxy-ssl-verify` is off by default).
    Https,
    /// gRPC in cleartext: HTTP/2 with prior knowledge.
    Grpc,
    /// gRPC over TLS, not verified.
    Grpcs,
}

impl PoolSettings {
    /// Nothing asked: the Ingress shares the Service's pool with other such Ingresses.
    pub fn is_default(&self) -> bool {
        *self == PoolSettings::default()
    }

    /// Writes these settings into a pool.
    pub fn apply(&self, pool: &mut UpstreamConfig) {
        if let Some(t) = self.connect_timeout {
            pool.connect_timeout = Dur(t);
        }
        if let Some(t) = self.read_timeout {
            pool.read_timeout = Dur(t);
        }
        if let Some(t) = self.write_timeout {
            pool.write_timeout = Dur(t);
        }
        let unverified = || {
            Some(UpstreamTls::Options(UpstreamTlsOptions {
                insecure_skip_verify: true,
                ..Default::default()
            }))
        };
        match self.protocol {
            None | Some(BackendProtocol::Http) => {}
            Some(BackendProtocol::Https) => pool.tls = unverified(),
            Some(BackendProtocol::Grpc) => pool.protocol = UpstreamProtocol::H2c,
            Some(BackendProtocol::Grpcs) => {
                pool.protocol = UpstreamProtocol::H2;
                pool.tls = unverified();
            }
        }
        pool.sticky = self.sticky.clone();
    }
}

/// Reads an Ingress's annotations; returns what they ask and a message per annotation that is
/// unsupported or whose value does not parse (that one is ignored, the rest applies).
pub fn parse(annotations: &BTreeMap<String, String>) -> (Annotations, Vec<String>) {
    let mut a = Annotations::default();
    let mut problems = Vec::new();
    let mut bad = |key: &str, value: &str, expected: &str| {
        problems.push(format!(
            "annotation {PREFIX}{key}: `{value}` is not {expected}; ignored"
        ));
    };
    let ours = annotations
        .iter()
        .filter_map(|(k, v)| Some((k.strip_prefix(PREFIX)?, v.trim())));
    let mut cookie: Option<String> = None;
    let mut cookie_ttl: Option<Duration> = None;
    let mut affinity = false;
    let mut unsupported = Vec::new();
    for (key, value) in ours {
        match key {
            "ssl-redirect" => match parse_bool(value) {
                Some(b) => a.ssl_redirect = Some(b),
                None => bad(key, value, "true or false"),
            },
            "force-ssl-redirect" => match parse_bool(value) {
                Some(b) => a.force_ssl_redirect = b,
                None => bad(key, value, "true or false"),
            },
            "proxy-body-size" => match value {
                "0" => a.max_body = Some(u64::MAX),
                _ => match parse_size(value) {
                    Some(n) => a.max_body = Some(n),
                    None => bad(key, value, "a size like 8m or 1g"),
                },
            },
            "proxy-connect-timeout" | "proxy-read-timeout" | "proxy-send-timeout" => {
                let Some(t) = parse_seconds(value) else {
                    bad(key, value, "a number of seconds");
                    continue;
                };
                let slot = match key {
                    "proxy-connect-timeout" => &mut a.pool.connect_timeout,
                    "proxy-read-timeout" => &mut a.pool.read_timeout,
                    _ => &mut a.pool.write_timeout,
                };
                *slot = Some(t);
            }
            "backend-protocol" => match value.to_ascii_uppercase().as_str() {
                "HTTP" => a.pool.protocol = Some(BackendProtocol::Http),
                "HTTPS" => a.pool.protocol = Some(BackendProtocol::Https),
                "GRPC" => a.pool.protocol = Some(BackendProtocol::Grpc),
                "GRPCS" => a.pool.protocol = Some(BackendProtocol::Grpcs),
                _ => bad(key, value, "HTTP, HTTPS, GRPC or GRPCS (rproxy's subset)"),
            },
            "limit-rps" => {
                let rate = format!("{value}/s");
                match RateLimit::parse(&rate) {
                    Ok(_) => a.rate_limit = Some(rate),
                    Err(_) => bad(key, value, "a number of requests per second"),
                }
            }
            "affinity" => match value {
                "cookie" => affinity = true,
                _ => bad(key, value, "`cookie`"),
            },
            "session-cookie-name" if is_cookie_name(value) => cookie = Some(value.to_string()),
            "session-cookie-name" => bad(key, value, "a cookie name"),
            "session-cookie-max-age" => match parse_seconds(value) {
                Some(t) => cookie_ttl = Some(t),
                None => bad(key, value, "a number of seconds"),
            },
            "rewrite-target" => a.rewrite_target = Some(value.to_string()),
            "use-regex" => match parse_bool(value) {
                Some(b) => a.use_regex = b,
                None => bad(key, value, "true or false"),
            },
            other => unsupported.push(other),
        }
    }
    if affinity {
        a.pool.sticky = Some(StickyConfig {
            cookie: Some(cookie.unwrap_or_else(|| DEFAULT_COOKIE.to_string())),
            ttl: cookie_ttl.map(Dur),
            secret: None,
        });
    }
    for key in unsupported {
        problems.push(format!(
            "annotation {PREFIX}{key} is not supported by rproxy; ignored"
        ));
    }
    (a, problems)
}

/// The prefix to strip when `rewrite-target` on `path` is what `strip_prefix` does, else `None`:
/// `/` on a plain path, `/$2` on `PREFIX(/|$)(.*)`, `/$1` on `PREFIX/?(.*)` or `PREFIX/(.*)`.
pub fn strip_rewrite(path: &str, target: &str) -> Option<String> {
    let prefix = match target {
        "/" => path,
        "/$2" => path.strip_suffix("(/|$)(.*)")?,
        "/$1" => path
            .strip_suffix("/?(.*)")
            .or_else(|| path.strip_suffix("/(.*)"))?,
        _ => return None,
    };
    if is_regex(prefix) {
        return None;
    }
    Some(if prefix.is_empty() { "/" } else { prefix }.to_string())
}

/// Does a path use regular-expression syntax (ingress-nginx `use-regex` paths)?
pub fn is_regex(path: &str) -> bool {
    path.contains([
        '(', ')', '[', ']', '{', '}', '*', '+', '?', '|', '^', '$', '\\',
    ])
}

fn parse_bool(v: &str) -> Option<bool> {
    match v.to_ascii_lowercase().as_str() {
        "true" => Some(true),
        "false" => Some(false),
        _ => None,
    }
}

/// ingress-nginx timeouts are seconds without a unit; `30s` style is taken too.
fn parse_seconds(v: &str) -> Option<Duration> {
    match v.parse::<u64>() {
        Ok(n) => Some(Duration::from_secs(n)),
        Err(_) => parse_duration(v),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rewrites_that_are_strip_prefix() {
        assert_eq!(strip_rewrite("/api", "/").as_deref(), Some("/api"));
        assert_eq!(
            strip_rewrite("/something(/|$)(.*)", "/$2").as_deref(),
            Some("/something")
        );
        assert_eq!(strip_rewrite("/v1/?(.*)", "/$1").as_deref(), Some("/v1"));
        assert_eq!(strip_rewrite("/(.*)", "/$1").as_deref(), Some("/"));
        assert_eq!(strip_rewrite("/api", "/v2/$1"), None);
        assert_eq!(strip_rewrite("/a(b)?(/|$)(.*)", "/$2"), None);
    }

    #[test]
    fn values() {
        let map = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| (format!("{PREFIX}{k}"), v.to_string()))
                .collect::<BTreeMap<_, _>>()
        };
        let (a, problems) = parse(&map(&[
            ("proxy-body-size", "8m"),
            ("proxy-read-timeout", "120"),
            ("limit-rps", "5"),
            ("affinity", "cookie"),
            ("session-cookie-max-age", "3600"),
            ("enable-cors", "true"),
            ("proxy-connect-timeout", "soon"),
        ]));
        assert_eq!(a.max_body, Some(8 << 20));
        assert_eq!(a.pool.read_timeout, Some(Duration::from_secs(120)));
        assert_eq!(a.rate_limit.as_deref(), Some("5/s"));
        let sticky = a.pool.sticky.unwrap_or_default();
        assert_eq!(sticky.cookie.as_deref(), Some("INGRESSCOOKIE"));
        assert_eq!(sticky.ttl, Some(Dur(Duration::from_secs(3600))));
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems
            .iter()
            .any(|p| p.contains("enable-cors is not supported")));
        assert!(problems
            .iter()
            .any(|p| p.contains("`soon` is not a number")));
    }
}
