//! End to end against real uvicorn: three workers running `examples/fastapi/app.py` behind
//! rproxy. Requests reach every worker, WebSockets echo, forwarding headers arrive, and a worker
//! whose `/health` fails stops getting traffic (and gets it back when it recovers).
//!
//! Needs `python3` with FastAPI and uvicorn (`python3 -m pip install -r
//! examples/fastapi/requirements.txt`; `.ci/run` installs them). Without them these tests fail.

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::python_apps::{fastapi_workers, PyApp};
use common::ws::{self, echo_roundtrips};
use common::{client, Proxy, POLL};
use futures_util::StreamExt;

/// Three workers, each answering `/health`, and rproxy in front (probes every 300 ms).
async fn setup() -> (Vec<PyApp>, Proxy) {
    let (workers, servers) = fastapi_workers(3).await;
    let proxy = Proxy::start(&format!(
        "upstreams:\n  fastapi:\n    servers: [{}]\n    health:\n      path: /health\n      \
         interval: 300ms\n      timeout: 1s\n      rise: 1\n      fall: 2\n\
         routes:\n  - name: fastapi\n    path: /\n    upstream: fastapi\n",
        servers.join(", ")
    ))
    .await;
    (workers, proxy)
}

/// `GET /api/hello` through the proxy: the answering worker's port.
async fn hello_worker(proxy: &Proxy, http: &reqwest::Client) -> u16 {
    let resp = http
        .get(proxy.url("/api/hello"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET /api/hello: {e}\n{}", proxy.stderr()));
    assert_eq!(
        resp.status().as_u16(),
        200,
        "GET /api/hello\n{}",
        proxy.stderr()
    );
    let body = resp.text().await.expect("body from the app");
    let json: serde_json::Value = serde_json::from_str(&body).expect("JSON from the app");
    json["worker"]
        .as_u64()
        .expect("`worker` in the app's answer") as u16
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_reach_every_worker_and_websockets_echo() {
    let (workers, proxy) = setup().await;
    let http = client();

    let want: BTreeSet<u16> = workers.iter().map(|w| w.port).collect();
    let mut seen = BTreeSet::new();
    for _ in 0..30 {
        seen.insert(hello_worker(&proxy, &http).await);
    }
    assert_eq!(seen, want, "30 requests did not reach all three workers");

    // What the app sees of the forwarding headers.
    let resp = http.get(proxy.url("/api/headers")).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let json: serde_json::Value = serde_json::from_str(&resp.text().await.unwrap()).unwrap();
    let h = &json["headers"];
    assert_eq!(h["x-forwarded-proto"], "http", "{json}");
    assert_eq!(h["x-real-ip"], "127.0.0.1", "{json}");
    assert_eq!(h["host"], format!("127.0.0.1:{}", proxy.http), "{json}");

    let mut client = ws::connect(&format!("ws://127.0.0.1:{}/ws", proxy.http))
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", proxy.stderr()));
    echo_roundtrips(&mut client, 50, "fastapi")
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", proxy.stderr()));
    ws::close(client).await;
}

/// Many concurrent WebSocket connects to real uvicorn (pingora issue #946 showed up here about
/// once in a thousand): every one must echo.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_websockets_through_uvicorn() {
    const CONNECTIONS: usize = 200;
    let (_workers, proxy) = setup().await;
    let url = Arc::new(format!("ws://127.0.0.1:{}/ws", proxy.http));

    let failures: Vec<String> = futures_util::stream::iter(0..CONNECTIONS)
        .map(|i| {
            let url = url.clone();
            async move {
                let mut client = ws::connect(&url).await.map_err(|e| format!("#{i}: {e}"))?;
                echo_roundtrips(&mut client, 2, &format!("c{i}"))
                    .await
                    .map_err(|e| format!("#{i}: {e}"))?;
                ws::close(client).await;
                Ok::<_, String>(())
            }
        })
        .buffer_unordered(25)
        .filter_map(|r| async move { r.err() })
        .collect()
        .await;
    assert!(
        failures.is_empty(),
        "{} of {CONNECTIONS} WebSockets failed; first ones: {:#?}\n--- stderr ---\n{}",
        failures.len(),
        failures.iter().take(5).collect::<Vec<_>>(),
        proxy.stderr()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_worker_stops_getting_traffic_until_it_recovers() {
    let (workers, proxy) = setup().await;
    let http = client();
    let failed = &workers[0];

    let resp = http.post(failed.url("/admin/fail")).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let resp = http.get(failed.url("/health")).send().await.unwrap();
    assert_eq!(
        resp.status().as_u16(),
        503,
        "POST /admin/fail did not fail /health"
    );

    // Within a bounded time, a round of 9 requests sees only the two healthy workers.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut round = BTreeSet::new();
        for _ in 0..9 {
            round.insert(hello_worker(&proxy, &http).await);
        }
        if !round.contains(&failed.port) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "worker {} still gets traffic 10 s after its /health started failing\n{}",
            failed.port,
            proxy.stderr()
        );
        tokio::time::sleep(POLL).await;
    }
    // And it stays out; the other two share the traffic.
    let mut seen = BTreeSet::new();
    for _ in 0..30 {
        seen.insert(hello_worker(&proxy, &http).await);
    }
    let want: BTreeSet<u16> = workers[1..].iter().map(|w| w.port).collect();
    assert_eq!(seen, want, "after the failure, traffic went to {seen:?}");

    // Recovery brings it back.
    let resp = http
        .post(failed.url("/admin/recover"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut round = BTreeSet::new();
        for _ in 0..9 {
            round.insert(hello_worker(&proxy, &http).await);
        }
        if round.contains(&failed.port) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "worker {} got no traffic 10 s after recovering\n{}",
            failed.port,
            proxy.stderr()
        );
        tokio::time::sleep(POLL).await;
    }
}
