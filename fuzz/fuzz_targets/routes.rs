//! Builds a `RouteTable` from fuzzed host patterns (exact, `*.wildcard`, any) and prefixes, then
//! looks fuzzed hosts and paths up, checking the answer against a plain model of the rules:
//! exact host > most specific `*.suffix` > host-less, and within a level the longest prefix
//! that covers the path on whole segments (first inserted on a tie).
#![no_main]

use std::path::PathBuf;
use std::sync::Arc;

use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;
use rproxy::routing::{strip_port, Route, RouteTable, Target};

#[derive(Debug, Arbitrary)]
struct Input {
    routes: Vec<RouteIn>,
    queries: Vec<(String, String)>,
}

#[derive(Debug, Arbitrary)]
struct RouteIn {
    host: Option<String>,
    prefix: String,
    strip_prefix: bool,
}

fuzz_target!(|input: Input| {
    let mut table = RouteTable::default();
    let mut all: Vec<(Option<String>, Arc<Route>)> = Vec::new();
    for (i, r) in input.routes.iter().take(64).enumerate() {
        let mut route = Route::new(
            format!("r{i}"),
            &r.prefix,
            Target::Static(PathBuf::from(".")),
        );
        route.strip_prefix = r.strip_prefix;
        let route = Arc::new(route);
        table.insert(r.host.as_deref(), route.clone());
        all.push((r.host.clone(), route));
    }
    table.finish();

    for (host, path) in input.queries.iter().take(64) {
        check_strip_port(host);
        let found = table.lookup(host, path);
        let expected = model_lookup(&all, host, path);
        match (found, expected) {
            (Some(f), Some(e)) => assert!(
                Arc::ptr_eq(f, e),
                "{host:?} {path:?}: got {} ({:?}), the model says {} ({:?})",
                f.name,
                f.prefix,
                e.name,
                e.prefix
            ),
            (None, None) => {}
            (f, e) => panic!(
                "{host:?} {path:?}: got {:?}, the model says {:?}",
                f.map(|r| &r.name),
                e.map(|r| &r.name)
            ),
        }
        if let Some(route) = found {
            assert!(
                table.routes_host(host),
                "{host:?} has a route but routes_host says no"
            );
            let rest = path
                .strip_prefix(route.prefix.as_str())
                .expect("the route's prefix starts the path");
            assert!(
                rest.is_empty() || rest.starts_with('/') || rest.starts_with('?'),
                "prefix {:?} cuts {path:?} inside a segment",
                route.prefix
            );
            let upstream = route.upstream_path(path);
            if route.strip_prefix && !route.prefix.is_empty() {
                assert!(upstream.starts_with('/'), "{path:?} -> {upstream:?}");
            } else {
                assert_eq!(upstream, path.as_str());
            }
        }
    }
});

/// `a.com:80` -> `a.com`; only a run of digits after the last `:` is a port.
fn check_strip_port(host: &str) {
    let h = strip_port(host);
    assert!(host.starts_with(h), "{host:?} -> {h:?} is not a prefix");
    if h.len() < host.len() && !host.starts_with('[') {
        let port = &host[h.len()..];
        assert!(port.starts_with(':'), "{host:?} -> {h:?}");
        assert!(
            port[1..].bytes().all(|b| b.is_ascii_digit()),
            "{host:?} -> {h:?}"
        );
    }
}

fn model_lookup<'a>(
    all: &'a [(Option<String>, Arc<Route>)],
    host: &str,
    path: &str,
) -> Option<&'a Arc<Route>> {
    let host = strip_port(host).trim_end_matches('.').to_ascii_lowercase();
    let exact = |(h, _): &&(Option<String>, Arc<Route>)| {
        h.as_ref().is_some_and(|h| {
            let h = h.to_ascii_lowercase();
            !h.starts_with("*.") && h == host
        })
    };
    if let Some(r) = best(all.iter().filter(exact), path) {
        return Some(r);
    }
    // Suffixes after each dot, longest (most specific) first.
    let mut rest = host.as_str();
    while let Some((_, suffix)) = rest.split_once('.') {
        let pattern = format!("*.{suffix}");
        let level = all
            .iter()
            .filter(|(h, _)| {
                h.as_ref()
                    .is_some_and(|h| h.to_ascii_lowercase() == pattern)
            })
            .collect::<Vec<_>>();
        if !level.is_empty() {
            if let Some(r) = best(level.into_iter(), path) {
                return Some(r);
            }
        }
        rest = suffix;
    }
    best(all.iter().filter(|(h, _)| h.is_none()), path)
}

/// The longest matching prefix; the first inserted among equals.
fn best<'a>(
    level: impl Iterator<Item = &'a (Option<String>, Arc<Route>)>,
    path: &str,
) -> Option<&'a Arc<Route>> {
    let mut best: Option<&Arc<Route>> = None;
    for (_, r) in level {
        let covers = path
            .strip_prefix(r.prefix.as_str())
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/') || rest.starts_with('?'));
        if covers && best.is_none_or(|b| r.prefix.len() > b.prefix.len()) {
            best = Some(r);
        }
    }
    best
}
