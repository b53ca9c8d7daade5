//! The access log (target `rproxy::access`, one line per request on stderr, text or
//! `--log-format json`) and `X-Request-Id`: made when absent, kept when the client sent a
//! usable one, sent upstream and returned on proxied and local answers alike.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{client, wait_until, Proxy, Upstream};

const WAIT: Duration = Duration::from_secs(5);
const FIELDS: &[&str] = &[
    "client",
    "method",
    "host",
    "path",
    "status",
    "route",
    "upstream",
    "server",
    "bytes_in",
    "bytes_out",
    "upstream_ms",
    "ms",
    "request_id",
];

/// Routes `/app` to an echo upstream; anything else is a 404 from rproxy itself.
fn yaml(up: &Upstream) -> String {
    format!(
        "upstreams:\n  app:\n    servers: [{}]\nroutes:\n  - {{ path: /app, upstream: app }}\n",
        up.host_port()
    )
}

/// Removes ANSI colour sequences (`ESC [ ... letter`).
fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The `key=value` fields of a text log line (values unquoted).
fn text_fields(line: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut rest = line;
    while let Some(eq) = rest.find('=') {
        let key = rest[..eq].rsplit(' ').next().unwrap_or("").to_string();
        let after = &rest[eq + 1..];
        let (value, next) = if let Some(quoted) = after.strip_prefix('"') {
            let end = quoted.find('"').unwrap_or(quoted.len());
            (&quoted[..end], quoted.get(end + 1..).unwrap_or(""))
        } else {
            let end = after.find(' ').unwrap_or(after.len());
            (&after[..end], &after[end..])
        };
        out.insert(key, value.to_string());
        rest = next;
    }
    out
}

/// The access lines of a text log, as field maps.
fn text_access_lines(stderr: &str) -> Vec<BTreeMap<String, String>> {
    strip_ansi(stderr)
        .lines()
        .filter(|l| l.contains("rproxy::access"))
        .map(text_fields)
        .collect()
}

/// The one access line (field map) whose `path` is `path`.
fn one_for<'a, T>(lines: &'a [T], path: &str, get: impl Fn(&T) -> Option<String>) -> &'a T {
    let found: Vec<&T> = lines
        .iter()
        .filter(|l| get(l).as_deref() == Some(path))
        .collect();
    assert_eq!(found.len(), 1, "access lines for {path}: {}", found.len());
    found[0]
}

fn is_request_id(id: &str) -> bool {
    id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit())
}

/// What one client request got back.
struct Answer {
    status: u16,
    body_len: usize,
    request_id: String,
}

async fn request(proxy: &Proxy, method: &str, path: &str, body: &'static str) -> Answer {
    let resp = client()
        .request(method.parse().unwrap(), proxy.url(path))
        .body(body)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
    let status = resp.status().as_u16();
    let request_id = resp
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let body_len = resp.bytes().await.unwrap().len();
    Answer {
        status,
        body_len,
        request_id,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_access_line_per_request() {
    let up = Upstream::echo("app").await;
    let proxy = Proxy::start(&yaml(&up)).await;
    let get = request(&proxy, "GET", "/app/one", "").await;
    let post = request(&proxy, "POST", "/app/two", "hello").await;
    let missing = request(&proxy, "GET", "/nothing", "").await;
    assert_eq!((get.status, post.status, missing.status), (200, 200, 404));

    assert!(
        wait_until(WAIT, || async {
            text_access_lines(&proxy.stderr()).len() >= 3
        })
        .await,
        "three access lines\n{}",
        proxy.stderr()
    );
    let lines = text_access_lines(&proxy.stderr());
    let path = |l: &BTreeMap<String, String>| l.get("path").cloned();
    for l in &lines {
        for f in FIELDS.iter().filter(|f| **f != "upstream_ms") {
            assert!(l.contains_key(*f), "field {f} missing: {l:?}");
        }
    }

    let host = format!("127.0.0.1:{}", proxy.http);
    let l = one_for(&lines, "/app/one", path);
    assert_eq!(l["client"], "127.0.0.1");
    assert_eq!(l["method"], "GET");
    assert_eq!(l["host"], host);
    assert_eq!(l["status"], "200");
    assert_eq!(l["route"], "*/app");
    assert_eq!(l["upstream"], "app", "upstream names the pool: {l:?}");
    assert_eq!(
        l["upstream_protocol"], "http1",
        "the pool's protocol: {l:?}"
    );
    assert_eq!(
        l["server"],
        up.host_port(),
        "server names the pool member: {l:?}"
    );
    assert_eq!(l["bytes_in"], "0");
    assert_eq!(l["bytes_out"], get.body_len.to_string(), "{l:?}");
    assert_eq!(l["request_id"], get.request_id);
    for f in ["ms", "upstream_ms"] {
        let v: f64 = l
            .get(f)
            .unwrap_or_else(|| panic!("{f} missing on a proxied request: {l:?}"))
            .parse()
            .unwrap_or_else(|_| panic!("{f} is a number: {l:?}"));
        assert!((0.0..10_000.0).contains(&v), "{f} = {v}");
    }

    let l = one_for(&lines, "/app/two", path);
    assert_eq!(l["method"], "POST");
    assert_eq!(l["bytes_in"], "5");
    assert_eq!(l["request_id"], post.request_id);

    let l = one_for(&lines, "/nothing", path);
    assert_eq!(l["status"], "404");
    assert_eq!(l["request_id"], missing.request_id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_access_lines_parse() {
    let up = Upstream::echo("app").await;
    let proxy = Proxy::builder()
        .arg("--log-format")
        .arg("json")
        .yaml(&yaml(&up))
        .start()
        .await;
    let get = request(&proxy, "GET", "/app/one", "").await;
    let post = request(&proxy, "POST", "/app/two", "hello").await;
    let missing = request(&proxy, "GET", "/nothing", "").await;

    let access = |stderr: &str| -> Vec<serde_json::Value> {
        stderr
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v["target"] == "rproxy::access")
            .collect()
    };
    assert!(
        wait_until(WAIT, || async { access(&proxy.stderr()).len() >= 3 }).await,
        "three JSON access lines\n{}",
        proxy.stderr()
    );
    // Every line on stderr is one JSON object.
    let stderr = proxy.stderr();
    for line in stderr.lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {line}\n--- stderr ---\n{stderr}"));
        assert!(v.is_object(), "not an object: {line}");
    }

    let lines = access(&stderr);
    let path = |v: &serde_json::Value| v["fields"]["path"].as_str().map(str::to_string);
    for v in &lines {
        for f in FIELDS.iter().filter(|f| **f != "upstream_ms") {
            assert!(v["fields"].get(*f).is_some(), "field {f} missing: {v}");
        }
    }
    let f = &one_for(&lines, "/app/one", path)["fields"];
    assert_eq!(f["method"], "GET");
    assert_eq!(f["client"], "127.0.0.1");
    assert_eq!(f["host"], format!("127.0.0.1:{}", proxy.http));
    assert_eq!(f["status"].as_u64(), Some(200), "{f}");
    assert_eq!(f["route"], "*/app");
    assert_eq!(f["bytes_out"].as_u64(), Some(get.body_len as u64), "{f}");
    assert!(f["ms"].as_f64().is_some(), "{f}");
    assert!(f["upstream_ms"].as_f64().is_some(), "{f}");
    assert_eq!(f["request_id"], get.request_id.as_str());

    let f = &one_for(&lines, "/app/two", path)["fields"];
    assert_eq!(f["bytes_in"].as_u64(), Some(5), "{f}");
    assert_eq!(f["request_id"], post.request_id.as_str());
    let f = &one_for(&lines, "/nothing", path)["fields"];
    assert_eq!(f["status"].as_u64(), Some(404), "{f}");
    assert_eq!(f["request_id"], missing.request_id.as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_id_is_made_when_absent() {
    let up = Upstream::echo("app").await;
    let proxy = Proxy::start(&yaml(&up)).await;

    let first = request(&proxy, "GET", "/app/a", "").await;
    assert!(is_request_id(&first.request_id), "{:?}", first.request_id);
    let seen = up.last_seen().unwrap();
    assert_eq!(
        seen.header("x-request-id"),
        Some(first.request_id.as_str()),
        "the upstream gets the id the client gets back"
    );
    assert_eq!(seen.headers["x-request-id"].len(), 1);

    let second = request(&proxy, "GET", "/app/b", "").await;
    assert!(is_request_id(&second.request_id));
    assert_ne!(first.request_id, second.request_id, "ids are unique");

    // Local answers carry one too.
    let missing = request(&proxy, "GET", "/nothing", "").await;
    assert_eq!(missing.status, 404);
    assert!(
        is_request_id(&missing.request_id),
        "404 from rproxy: {:?}",
        missing.request_id
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_request_id_is_kept() {
    let up = Upstream::echo("app").await;
    let proxy = Proxy::start(&yaml(&up)).await;
    let longest = "x".repeat(128);
    let too_long = "y".repeat(129);

    for (id, kept) in [
        ("my-trace-0001", true),
        (
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            true,
        ),
        (longest.as_str(), true),
        (too_long.as_str(), false),
    ] {
        for path in ["/app/x", "/nothing"] {
            let resp = client()
                .get(proxy.url(path))
                .header("x-request-id", id)
                .send()
                .await
                .unwrap();
            let back = resp
                .headers()
                .get_all("x-request-id")
                .iter()
                .map(|v| v.to_str().unwrap().to_string())
                .collect::<Vec<_>>();
            assert_eq!(back.len(), 1, "{path}: one X-Request-Id back: {back:?}");
            if kept {
                assert_eq!(back[0], id, "{path}: the client's id comes back unchanged");
            } else {
                assert!(
                    is_request_id(&back[0]),
                    "{path}: a {}-char id is replaced: {:?}",
                    id.len(),
                    back[0]
                );
            }
            if path == "/app/x" {
                let seen = up.last_seen().unwrap();
                assert_eq!(
                    seen.headers["x-request-id"],
                    vec![back[0].clone()],
                    "the upstream sees exactly the id returned"
                );
            }
        }
    }
}
