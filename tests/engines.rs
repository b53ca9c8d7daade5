//! Both engines, one rule: the same requests through rproxy's own path and through pingora's
//! proxy (`server.fast_path: false`) give the upstream the same head and the client the same
//! answers: forwarding and hop-by-hop headers, error statuses with their local responses, and
//! retries. Each table runs once per engine.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{dead_addr, raw_request, raw_status, read_head, Proxy, RawUpstream, UpstreamBuilder};
use tokio::io::AsyncWriteExt;

/// (name, `server.fast_path`).
const ENGINES: [(&str, bool); 2] = [("fast", true), ("pingora", false)];

async fn proxy(fast: bool, yaml: &str) -> Proxy {
    Proxy::builder()
        .server(&format!("fast_path: {fast}"))
        .yaml(yaml)
        .start()
        .await
}

fn one_pool(servers: &[String], extra: &str) -> String {
    format!(
        "upstreams:\n  app:\n    servers: [{}]\n{extra}routes:\n  - {{ host: app.test, path: /, upstream: app, max_body: 1KiB }}\n",
        servers.join(", ")
    )
}

/// An upstream that keeps every request head it reads and answers each with `response`.
async fn recording(response: &'static str) -> (RawUpstream, Arc<Mutex<Vec<String>>>) {
    let heads = Arc::new(Mutex::new(Vec::new()));
    let seen = heads.clone();
    let up = RawUpstream::start(move |mut s| {
        let seen = seen.clone();
        async move {
            loop {
                let head = read_head(&mut s).await;
                if head.is_empty() {
                    return;
                }
                seen.lock().unwrap().push(head);
                if s.write_all(response.as_bytes()).await.is_err() {
                    return;
                }
            }
        }
    })
    .await;
    (up, heads)
}

/// The header lines of a head, names lowercased, sorted: what must match across engines.
fn lines(head: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = head
        .split("\r\n")
        .skip(1)
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    out.sort();
    out
}

fn values<'a>(lines: &'a [(String, String)], name: &str) -> Vec<&'a str> {
    lines
        .iter()
        .filter(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
        .collect()
}

const UPSTREAM_ANSWER: &str =
    "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive, X-Hop\r\n\
    X-Hop: 1\r\nKeep-Alive: timeout=5\r\nDate: Thu, 01 Jan 1970 00:00:00 GMT\r\nX-Up: yes\r\n\
    X-Request-Id: from-upstream\r\n\r\nok";

/// Requests whose forwarded heads are compared: (what, request).
const REQUESTS: &[(&str, &str)] = &[
    (
        "hop-by-hop, X-Forwarded-For lines, cookies",
        "GET /a?b=1 HTTP/1.1\r\nHost: app.test:8080\r\nX-Forwarded-For: 10.0.0.1\r\n\
         Connection: keep-alive, X-Secret\r\nX-Secret: 1\r\nTE: trailers\r\nProxy-Connection: x\r\n\
         Keep-Alive: timeout=9\r\nX-Real-IP: 6.6.6.6\r\nX-Forwarded-Proto: gopher\r\n\
         Cookie: a=1\r\nCookie: b=2\r\nx-forwarded-for: 10.0.0.2\r\nX-Request-Id: rid-1\r\n\
         Accept: */*\r\n\r\n",
    ),
    (
        "an upgrade that is not a WebSocket",
        "GET /u HTTP/1.1\r\nHost: app.test\r\nConnection: Upgrade, HTTP2-Settings\r\n\
         Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAoAAAAAIAAAAA\r\nX-Request-Id: rid-3\r\n\r\n",
    ),
    (
        "a fragment in the target, two X-Request-Id lines (found by fuzz/engines)",
        "GET /f?q=1#frag HTTP/1.1\r\nHost: app.test\r\nX-Request-Id: rid-4\r\n\
         X-Request-Id: second\r\n\r\n",
    ),
    (
        "a body of declared length",
        "POST /p HTTP/1.1\r\nHost: app.test\r\nContent-Length: 3\r\nConnection: content-length\r\n\
         X-Request-Id: rid-2\r\n\r\nabc",
    ),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_engines_forward_the_same_heads_both_ways() {
    let mut upstream_heads: Vec<Vec<Vec<(String, String)>>> = Vec::new();
    let mut client_heads: Vec<Vec<Vec<(String, String)>>> = Vec::new();
    for (engine, fast) in ENGINES {
        let (up, heads) = recording(UPSTREAM_ANSWER).await;
        let proxy = proxy(fast, &one_pool(&[up.host_port()], "")).await;
        let mut answers = Vec::new();
        for (what, req) in REQUESTS {
            let resp = raw_request(proxy.http_addr(), req.as_bytes()).await;
            assert_eq!(raw_status(&resp), 200, "{engine}, {what}: {resp}");
            assert!(resp.ends_with("ok"), "{engine}, {what}: {resp}");
            let head = resp.split("\r\n\r\n").next().unwrap_or("");
            let mut got = lines(head);
            // Date is the proxy's clock: checked, then left out of the comparison.
            let date = values(&got, "date");
            assert_eq!(date.len(), 1, "{engine}, {what}: one Date: {head}");
            assert!(
                !date[0].contains("1970"),
                "{engine}, {what}: rproxy's Date: {head}"
            );
            got.retain(|(n, _)| n != "date" && n != "connection");
            assert_eq!(values(&got, "x-up"), ["yes"], "{engine}, {what}");
            assert!(values(&got, "x-hop").is_empty(), "{engine}, {what}: {head}");
            assert!(
                values(&got, "keep-alive").is_empty(),
                "{engine}, {what}: {head}"
            );
            assert_eq!(values(&got, "content-length"), ["2"], "{engine}, {what}");
            answers.push(got);
        }
        let fragment = heads
            .lock()
            .unwrap()
            .iter()
            .any(|h| h.starts_with("GET /f?q=1 HTTP/1.1\r\n"));
        assert!(
            fragment,
            "{engine}: the target goes up without its fragment"
        );
        let mut seen: Vec<Vec<(String, String)>> =
            heads.lock().unwrap().iter().map(|h| lines(h)).collect();
        assert_eq!(seen.len(), REQUESTS.len(), "{engine}: {seen:?}");
        // In the order of REQUESTS, whatever order they arrived in.
        let order = ["rid-1", "rid-3", "rid-4", "rid-2"];
        seen.sort_by_key(|h| {
            order
                .iter()
                .position(|id| values(h, "x-request-id") == [*id])
        });
        let first = &seen[0];
        assert_eq!(
            values(first, "x-forwarded-for"),
            ["10.0.0.1, 10.0.0.2, 127.0.0.1"],
            "{engine}: every X-Forwarded-For line, then the client"
        );
        assert_eq!(values(first, "x-real-ip"), ["127.0.0.1"], "{engine}");
        assert_eq!(values(first, "x-forwarded-proto"), ["http"], "{engine}");
        assert_eq!(
            values(first, "x-forwarded-host"),
            ["app.test:8080"],
            "{engine}"
        );
        assert_eq!(values(first, "host"), ["app.test:8080"], "{engine}");
        assert_eq!(values(first, "cookie"), ["a=1; b=2"], "{engine}");
        assert_eq!(values(first, "x-request-id"), ["rid-1"], "{engine}");
        for gone in [
            "x-secret",
            "te",
            "proxy-connection",
            "keep-alive",
            "connection",
        ] {
            assert!(
                values(first, gone).is_empty(),
                "{engine}: {gone} forwarded: {first:?}"
            );
        }
        for gone in ["upgrade", "http2-settings", "connection"] {
            assert!(
                values(&seen[1], gone).is_empty(),
                "{engine}: {gone}: {:?}",
                seen[1]
            );
        }
        assert_eq!(
            values(&seen[3], "content-length"),
            ["3"],
            "{engine}: {:?}",
            seen[3]
        );
        for (i, id) in order.iter().enumerate() {
            assert_eq!(values(&answers[i], "x-request-id"), [*id], "{engine}");
        }
        upstream_heads.push(seen);
        client_heads.push(answers);
    }
    assert_eq!(
        upstream_heads[0], upstream_heads[1],
        "the upstream gets the same head from both engines"
    );
    assert_eq!(
        client_heads[0], client_heads[1],
        "the client gets the same head from both engines"
    );
}

/// The body of a response rproxy makes itself.
fn local_body(status: u16, reason: &str) -> String {
    format!("{status} {reason}\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_engines_answer_failures_alike() {
    let sick = UpstreamBuilder::new("sick").health(500).start().await;
    let slow = UpstreamBuilder::new("slow")
        .delay(Duration::from_secs(3))
        .start()
        .await;
    let yaml = format!(
        "upstreams:\n  sick:\n    servers: [{}]\n    health: {{ path: /health, interval: 200ms, timeout: 500ms }}\n  \
         dead:\n    servers: [{}]\n    retries: 0\n  slow:\n    servers: [{}]\n    read_timeout: 500ms\n    retries: 0\n\
         routes:\n  - {{ host: app.test, path: /sick, upstream: sick }}\n  - {{ host: app.test, path: /dead, upstream: dead }}\n  \
         - {{ host: app.test, path: /slow, upstream: slow, max_body: 1KiB }}\n",
        sick.host_port(),
        dead_addr(),
        slow.host_port()
    );
    // (what, request, status, reason, a header the answer must carry)
    let cases: &[(&str, &str, u16, &str, Option<&str>)] = &[
        (
            "no route",
            "GET / HTTP/1.1\r\nHost: other.test\r\n\r\n",
            404,
            "Not Found",
            None,
        ),
        (
            "no healthy server",
            "GET /sick HTTP/1.1\r\nHost: app.test\r\n\r\n",
            503,
            "Service Unavailable",
            Some("retry-after: 1"),
        ),
        (
            "refused",
            "GET /dead HTTP/1.1\r\nHost: app.test\r\n\r\n",
            502,
            "Bad Gateway",
            None,
        ),
        (
            "read timeout",
            "GET /slow HTTP/1.1\r\nHost: app.test\r\n\r\n",
            504,
            "Gateway Timeout",
            None,
        ),
        (
            "declared body over max_body",
            "POST /slow HTTP/1.1\r\nHost: app.test\r\nContent-Length: 5000\r\n\r\n",
            413,
            "Payload Too Large",
            None,
        ),
    ];
    let mut answers: Vec<Vec<(u16, String)>> = Vec::new();
    for (engine, fast) in ENGINES {
        let proxy = proxy(fast, &yaml).await;
        let mut got = Vec::new();
        for (what, req, status, reason, header) in cases {
            let resp = raw_request(proxy.http_addr(), req.as_bytes()).await;
            assert_eq!(raw_status(&resp), *status, "{engine}, {what}: {resp}");
            let lower = resp.to_ascii_lowercase();
            assert!(lower.contains("x-request-id: "), "{engine}, {what}: {resp}");
            if let Some(h) = header {
                assert!(lower.contains(h), "{engine}, {what}: no {h}: {resp}");
            }
            let body = resp.split("\r\n\r\n").nth(1).unwrap_or("");
            assert_eq!(body, local_body(*status, reason), "{engine}, {what}");
            got.push((*status, body.to_string()));
        }
        answers.push(got);
    }
    assert_eq!(answers[0], answers[1]);
    assert_eq!(
        slow.requests(),
        2,
        "one read-timed-out GET per engine, never sent twice"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_engines_retry_alike() {
    for (engine, fast) in ENGINES {
        // A server that reads the request and closes without an answer, and a good one.
        let resetting = RawUpstream::start(|mut s| async move {
            let _ = read_head(&mut s).await;
        })
        .await;
        let (good, _) = recording("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok").await;
        let servers = [
            dead_addr().to_string(),
            resetting.host_port(),
            good.host_port(),
        ];
        let yaml = one_pool(&servers, "    balance: round_robin\n    retries: 2\n");
        let proxy = proxy(fast, &yaml).await;
        for i in 0..6 {
            let req = format!("GET /g/{i} HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n");
            let resp = raw_request(proxy.http_addr(), req.as_bytes()).await;
            assert_eq!(
                raw_status(&resp),
                200,
                "{engine}: an idempotent GET goes again: {resp}"
            );
        }
        let before = resetting.connections();
        let mut statuses = Vec::new();
        for i in 0..6 {
            let req = format!(
                "POST /p/{i} HTTP/1.1\r\nHost: app.test\r\nContent-Length: 1\r\nConnection: close\r\n\r\nx"
            );
            statuses.push(raw_status(
                &raw_request(proxy.http_addr(), req.as_bytes()).await,
            ));
        }
        let resets = resetting.connections() - before;
        let failed = statuses.iter().filter(|&&s| s == 502).count();
        assert!(
            resets > 0,
            "{engine}: round robin reached the resetting server"
        );
        assert_eq!(
            failed, resets,
            "{engine}: a POST the server reset is answered 502, never sent again: {statuses:?}"
        );
        assert!(
            statuses.iter().all(|&s| s == 200 || s == 502),
            "{engine}: {statuses:?}"
        );
    }
}
