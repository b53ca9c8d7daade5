//! A client that leaves cancels its request upstream, as behind nginx: a FastAPI app working
//! for a client that gave up after 1 s sees `request.is_disconnected()` turn true within 2 s,
//! over HTTP/1.1 and HTTP/2, while it works before sending a response head and while it streams
//! server-sent events, on both engines. The access log says 499 and the metrics count it.

mod common;

use std::time::{Duration, Instant};

use common::python_apps::{repo_dir, require_python_deps, PyApp};
use common::{client, Proxy, POLL};

/// (name, `server.fast_path`).
const ENGINES: [(&str, bool); 2] = [("fast", true), ("pingora", false)];
/// When the client gives up.
const PATIENCE: &str = "1";
/// How long the app would work if nobody told it the client left.
const WORK_SECS: u32 = 8;
/// How soon after it started the app must have seen its client leave.
const SEEN_WITHIN: f64 = 2.0;

/// (name, curl's protocol flag).
const PROTOCOLS: [(&str, &str); 2] = [("h1", "--http1.1"), ("h2", "--http2")];
/// (name, path): working before the response head, and streaming events.
const WORK: [(&str, &str); 2] = [("before the head", "/slow"), ("during SSE", "/sse")];

/// Runs curl that gives up after [`PATIENCE`] seconds.
async fn impatient(proto: &str, url: String) {
    let out = tokio::process::Command::new("curl")
        .args(["-sk", "-o", "/dev/null", "--max-time", PATIENCE, proto])
        .arg(url)
        .output()
        .await
        .expect("run curl (apt-get install curl)");
    // 28: curl's own timeout, i.e. it gave up while the app was still working.
    assert_eq!(out.status.code(), Some(28), "curl did not time out");
}

/// How long after it started the app saw the client of `tag` leave; `None` if it has not.
async fn left_after(app: &PyApp, tag: &str) -> Option<f64> {
    let resp = client()
        .get(app.url(&format!("/seen?tag={tag}")))
        .send()
        .await
        .ok()?;
    common::json_body(resp).await["left_after"].as_f64()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_app_hears_a_client_leave_on_both_engines_and_protocols() {
    require_python_deps();
    let mut app = PyApp::uvicorn(&repo_dir("tests/apps"), "watch:app");
    app.wait_healthy().await;
    for (engine, fast) in ENGINES {
        let proxy = Proxy::builder()
            .server(&format!("fast_path: {fast}"))
            .https()
            .yaml(&format!(
                "upstreams:\n  app:\n    servers: [{}]\nroutes:\n  - {{ name: app, path: /, upstream: app }}\n",
                app.addr()
            ))
            .start()
            .await;
        let port = proxy.https_addr().port();
        // Every case at once: each client leaves after 1 s.
        let mut cases = Vec::new();
        for (proto, flag) in PROTOCOLS {
            for (work, path) in WORK {
                let tag = format!("{engine}-{proto}-{}", &path[1..]);
                let url = format!("https://127.0.0.1:{port}{path}?tag={tag}&secs={WORK_SECS}");
                cases.push((
                    format!("{engine}, {proto}, {work}"),
                    tag,
                    impatient(flag, url),
                ));
            }
        }
        let (names, tags): (Vec<String>, Vec<String>) =
            cases.iter().map(|(n, t, _)| (n.clone(), t.clone())).unzip();
        futures_util::future::join_all(cases.into_iter().map(|(_, _, c)| c)).await;
        let deadline = Instant::now() + Duration::from_secs(4);
        for (name, tag) in names.iter().zip(&tags) {
            let mut seen = None;
            while seen.is_none() && Instant::now() < deadline {
                seen = left_after(&app, tag).await;
                if seen.is_none() {
                    tokio::time::sleep(POLL).await;
                }
            }
            let Some(after) = seen else {
                panic!(
                    "{name}: the app never saw its client leave\n{}",
                    proxy.stderr()
                );
            };
            println!("{name}: the app saw the client leave {after:.2} s in");
            assert!(
                after < SEEN_WITHIN,
                "{name}: the app saw its client leave only {after:.2} s in"
            );
        }
        let log = proxy.stderr();
        let gone = log
            .lines()
            .filter(|l| l.contains("rproxy::access") && l.contains("status=499"))
            .count();
        assert_eq!(gone, tags.len(), "{engine}: 499 in the access log\n{log}");
        let counted = proxy
            .metric(
                "rproxy_requests_total",
                &[("route", "app"), ("code", "499")],
            )
            .await;
        assert_eq!(
            counted,
            Some(tags.len() as f64),
            "{engine}: 499 in the metrics"
        );
    }
}
