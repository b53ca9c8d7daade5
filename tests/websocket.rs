//! WebSocket through rproxy: echo over ws:// and wss://, the fast-101 upstream of pingora issue
//! #946 over a few hundred connections, and the idle rules (a quiet WebSocket outlives the pool's
//! `read_timeout` and is closed after the route's `websocket_idle_timeout`).

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::tls::{client_config, TestCert};
use common::ws::{self, echo_roundtrips, next_data, GREETING};
use common::{Proxy, RawUpstream};
use futures_util::StreamExt;
use tokio_tungstenite::tungstenite::Message;

/// YAML routing `/` to a pool of one server, with extra pool and route lines.
fn ws_yaml(server: &RawUpstream, pool_extra: &str, route_extra: &str) -> String {
    format!(
        "upstreams:\n  ws:\n    servers: [{}]\n{pool_extra}routes:\n  - path: /\n    upstream: ws\n{route_extra}",
        server.host_port()
    )
}

fn ws_url(proxy: &Proxy, path: &str) -> String {
    format!("ws://127.0.0.1:{}{path}", proxy.http)
}

#[tokio::test]
async fn echo_over_ws() {
    let up = ws::echo_upstream().await;
    let proxy = Proxy::start(&ws_yaml(&up, "", "")).await;

    let mut client = ws::connect(&ws_url(&proxy, "/ws"))
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", proxy.stderr()));
    echo_roundtrips(&mut client, 100, "ws")
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", proxy.stderr()));
    ws::close(client).await;
}

#[tokio::test]
async fn echo_over_wss() {
    let cert = TestCert::new(&["a.test"]);
    let up = ws::echo_upstream().await;
    let builder = Proxy::builder().https();
    cert.write(&builder.dir().join("certs"), "a");
    let proxy = builder.yaml(&ws_yaml(&up, "", "")).start().await;
    let addr = proxy.https_addr();

    let url = format!("wss://a.test:{}/ws", addr.port());
    // No ALPN: tungstenite speaks WebSocket over HTTP/1.1 (RFC 8441 is in websocket_h2.rs).
    let mut client = ws::connect_tls(addr, &url, client_config(&[&cert], &[]))
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", proxy.stderr()));
    echo_roundtrips(&mut client, 100, "wss")
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", proxy.stderr()));
    ws::close(client).await;

    // A client that asks for http/1.1 over ALPN (as browsers do for WebSockets) gets it.
    let tls = client_config(&[&cert], &[b"http/1.1"]);
    let mut client = ws::connect_tls(addr, &url, tls)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", proxy.stderr()));
    echo_roundtrips(&mut client, 4, "wss-alpn").await.unwrap();
    ws::close(client).await;
}

/// Pingora issue #946: an upstream that answers `101` (and sends a first frame) the instant it
/// has read the request head used to tear down a share of tunnels right after the 101. Every one
/// of these connections must get the greeting and complete an echo.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fast_101_upstream_never_loses_a_tunnel() {
    const CONNECTIONS: usize = 300;
    const CONCURRENT: usize = 50;

    let up = ws::fast_upstream().await;
    let proxy = Proxy::start(&ws_yaml(&up, "", "")).await;
    let url = Arc::new(ws_url(&proxy, "/fast"));

    let results: Vec<Result<(), String>> = futures_util::stream::iter(0..CONNECTIONS)
        .map(|i| {
            let url = url.clone();
            async move {
                let mut client = ws::connect(&url).await.map_err(|e| format!("#{i}: {e}"))?;
                let first = next_data(&mut client, ws::STEP)
                    .await
                    .map_err(|e| format!("#{i}: greeting: {e}"))?;
                if first != Message::text(GREETING) {
                    return Err(format!("#{i}: first message {first:?}"));
                }
                echo_roundtrips(&mut client, 3, &format!("c{i}"))
                    .await
                    .map_err(|e| format!("#{i}: {e}"))?;
                ws::close(client).await;
                Ok(())
            }
        })
        .buffer_unordered(CONCURRENT)
        .collect()
        .await;

    let failures: Vec<&String> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    assert!(
        failures.is_empty(),
        "{} of {CONNECTIONS} tunnels failed; first ones: {:#?}\n--- stderr ---\n{}",
        failures.len(),
        failures.iter().take(5).collect::<Vec<_>>(),
        proxy.stderr()
    );
}

#[tokio::test]
async fn quiet_websocket_outlives_read_timeout() {
    let up = ws::echo_upstream().await;
    let proxy = Proxy::start(&ws_yaml(
        &up,
        "    read_timeout: 1s\n",
        "    websocket_idle_timeout: 1h\n",
    ))
    .await;

    let mut client = ws::connect(&ws_url(&proxy, "/quiet")).await.unwrap();
    echo_roundtrips(&mut client, 2, "before").await.unwrap();

    // Quiet for well over read_timeout; the connection must stay open.
    match tokio::time::timeout(Duration::from_millis(2500), client.next()).await {
        Err(_) => {}
        Ok(other) => panic!(
            "quiet WebSocket was not left alone: {other:?}\n--- stderr ---\n{}",
            proxy.stderr()
        ),
    }
    echo_roundtrips(&mut client, 2, "after")
        .await
        .unwrap_or_else(|e| panic!("after 2.5 s of quiet: {e}\n{}", proxy.stderr()));
    ws::close(client).await;
}

#[tokio::test]
async fn quiet_websocket_is_closed_after_websocket_idle_timeout() {
    let up = ws::echo_upstream().await;
    let proxy = Proxy::start(&ws_yaml(&up, "", "    websocket_idle_timeout: 1s\n")).await;

    let mut client = ws::connect(&ws_url(&proxy, "/idle")).await.unwrap();
    echo_roundtrips(&mut client, 2, "before").await.unwrap();

    let quiet_since = Instant::now();
    let end = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match client.next().await {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return,
                Some(Ok(_)) => {}
            }
        }
    })
    .await;
    let waited = quiet_since.elapsed();
    assert!(
        end.is_ok(),
        "a WebSocket quiet for 10 s was still open with websocket_idle_timeout: 1s\n--- stderr ---\n{}",
        proxy.stderr()
    );
    assert!(
        waited >= Duration::from_millis(800),
        "closed after {waited:?}, before the 1 s idle timeout"
    );
}
