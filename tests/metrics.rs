//! `/metrics`: parses as Prometheus text, carries the contract's names with samples once there
//! was traffic, counts exactly the requests sent, and follows health, reloads and WebSockets.

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::prom::Exposition;
use common::tls::TestCert;
use common::ws::{self, echo_roundtrips};
use common::{client, wait_until, Proxy, Upstream};

const WAIT: Duration = Duration::from_secs(5);
const FAST_HEALTH: &str = "{ path: /health, interval: 200ms, timeout: 500ms, rise: 1, fall: 2 }";

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// A named route `web` (`/`) and an unnamed `/api`, both to health-checked pool `app` on `up`.
async fn proxy_for(up: &Upstream) -> Proxy {
    Proxy::start(&format!(
        "upstreams:\n  app:\n    servers: [{}]\n    health: {FAST_HEALTH}\n\
         routes:\n  - {{ name: web, path: /, upstream: app }}\n  - {{ path: /api, upstream: app }}\n",
        up.host_port()
    ))
    .await
}

/// Sends `n` GETs to `path`, asking the upstream to answer `status`; checks each answer.
async fn send(proxy: &Proxy, path: &str, status: u16, n: usize) {
    let client = client();
    for i in 0..n {
        let resp = client
            .get(proxy.url(path))
            .header("x-status", status.to_string())
            .send()
            .await
            .unwrap_or_else(|e| panic!("request {i}: {e}"));
        assert_eq!(resp.status().as_u16(), status, "request {i} to {path}");
        resp.bytes().await.unwrap();
    }
}

/// The sum of every `rproxy_requests_total` sample.
fn requests_counted(m: &Exposition) -> f64 {
    m.find("rproxy_requests_total", &[]).map(|s| s.value).sum()
}

/// Checks the histogram `name{labels}`: cumulative buckets ending in `+Inf`, `_count` equal to
/// the `+Inf` bucket and to `count`, a positive `_sum`.
fn check_histogram(m: &Exposition, name: &str, labels: &[(&str, &str)], count: f64) {
    assert_eq!(m.types.get(name).map(String::as_str), Some("histogram"));
    let mut buckets: Vec<(f64, f64)> = m
        .find(&format!("{name}_bucket"), labels)
        .map(|s| {
            let le = s.labels.get("le").expect("bucket without le");
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().expect("le is a float")
            };
            (le, s.value)
        })
        .collect();
    assert!(buckets.len() >= 2, "{name}{labels:?}: buckets {buckets:?}");
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    assert!(
        buckets.windows(2).all(|w| w[0].1 <= w[1].1),
        "buckets are cumulative: {buckets:?}"
    );
    let (last_le, inf) = *buckets.last().unwrap();
    assert!(last_le.is_infinite(), "a +Inf bucket: {buckets:?}");
    assert_eq!(inf, count, "{name}{labels:?} +Inf bucket");
    assert_eq!(
        m.value(&format!("{name}_count"), labels),
        Some(count),
        "{name}_count{labels:?}"
    );
    let sum = m.value(&format!("{name}_sum"), labels).expect("_sum");
    assert!(
        sum > 0.0 && sum < count * 10.0,
        "{name}_sum{labels:?} = {sum}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_parse_and_count_exactly() {
    let started = now();
    let up = Upstream::named("app").await;
    let proxy = proxy_for(&up).await;
    let server = up.host_port();

    send(&proxy, "/page", 200, 7).await;
    send(&proxy, "/page", 404, 3).await;
    send(&proxy, "/api/x", 200, 2).await;

    let web = [("route", "web"), ("upstream", "app")];
    // The counters move after the response is sent: wait for all 12, then look closely.
    wait_until(WAIT, || async {
        requests_counted(&proxy.metrics_parsed().await) >= 12.0
    })
    .await;
    let m = proxy.metrics_parsed().await;

    // Every family the contract names that has seen an event by now.
    for name in [
        "rproxy_requests_total",
        "rproxy_request_duration_seconds",
        "rproxy_upstream_healthy",
        "rproxy_upstream_requests_total",
        "rproxy_active_connections",
        "rproxy_config_last_reload_success_timestamp_seconds",
    ] {
        assert!(
            m.samples
                .iter()
                .any(|s| common::prom::family_of(&s.name) == name),
            "no samples for {name}\n{m:#?}"
        );
    }
    assert_eq!(
        m.types.get("rproxy_requests_total").map(String::as_str),
        Some("counter")
    );

    // Exact counts per route and code.
    let code = |c: &'static str| [("route", "web"), ("upstream", "app"), ("code", c)];
    assert_eq!(m.value("rproxy_requests_total", &code("200")), Some(7.0));
    assert_eq!(m.value("rproxy_requests_total", &code("404")), Some(3.0));
    assert_eq!(
        m.value(
            "rproxy_requests_total",
            &[("route", "*/api"), ("upstream", "app"), ("code", "200")]
        ),
        Some(2.0),
        "an unnamed route is labelled host+path"
    );
    assert_eq!(
        requests_counted(&m),
        12.0,
        "nothing else was counted: {:#?}",
        m.find("rproxy_requests_total", &[]).collect::<Vec<_>>()
    );
    check_histogram(&m, "rproxy_request_duration_seconds", &web, 10.0);
    check_histogram(
        &m,
        "rproxy_request_duration_seconds",
        &[("route", "*/api"), ("upstream", "app")],
        2.0,
    );

    // Per server, labelled with the address as written.
    let per = |c: &'static str| {
        [
            ("upstream", "app"),
            ("server", server.as_str()),
            ("code", c),
        ]
    };
    assert_eq!(
        m.value("rproxy_upstream_requests_total", &per("200")),
        Some(9.0)
    );
    assert_eq!(
        m.value("rproxy_upstream_requests_total", &per("404")),
        Some(3.0)
    );
    assert_eq!(
        m.value(
            "rproxy_upstream_healthy",
            &[("upstream", "app"), ("server", server.as_str())]
        ),
        Some(1.0)
    );
    assert_eq!(
        m.types.get("rproxy_upstream_healthy").map(String::as_str),
        Some("gauge")
    );

    let conns: Vec<_> = m.find("rproxy_active_connections", &[]).collect();
    assert!(
        conns
            .iter()
            .all(|s| s.labels.contains_key("listener") && s.value >= 0.0),
        "{conns:?}"
    );
    let stamp = m
        .value("rproxy_config_last_reload_success_timestamp_seconds", &[])
        .expect("last reload timestamp");
    assert!(
        stamp >= started - 1.0 && stamp <= now() + 1.0,
        "the initial load is stamped: {stamp} (test started {started})"
    );
    // The initial load is not a reload.
    assert_eq!(
        m.value("rproxy_config_reloads_total", &[("result", "ok")])
            .unwrap_or(0.0),
        0.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn active_connections_follows_open_connections() {
    let up = Upstream::named("app").await;
    let proxy = proxy_for(&up).await;
    let total = |m: &Exposition| {
        m.find("rproxy_active_connections", &[])
            .map(|s| s.value)
            .sum::<f64>()
    };
    let base = total(&proxy.metrics_parsed().await);

    // Three keep-alive connections held open by three raw clients.
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut s = tokio::net::TcpStream::connect(proxy.http_addr())
            .await
            .unwrap_or_else(|e| panic!("connect after /readyz said 200: {e}"));
        tokio::io::AsyncWriteExt::write_all(
            &mut s,
            b"GET /x HTTP/1.1\r\nHost: a\r\nConnection: keep-alive\r\n\r\n",
        )
        .await
        .unwrap();
        let resp = common::read_response(&mut s, WAIT).await;
        assert_eq!(common::raw_status(&resp), 200, "{resp}");
        held.push(s);
    }
    assert!(
        wait_until(WAIT, || async {
            total(&proxy.metrics_parsed().await) == base + 3.0
        })
        .await,
        "3 open connections: {:#?}",
        proxy
            .metrics_parsed()
            .await
            .find("rproxy_active_connections", &[])
            .collect::<Vec<_>>()
    );
    drop(held);
    assert!(
        wait_until(WAIT, || async {
            total(&proxy.metrics_parsed().await) == base
        })
        .await,
        "closed connections are no longer counted"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_gauge_flips_with_probes() {
    let up = Upstream::named("app").await;
    let proxy = proxy_for(&up).await;
    let server = up.host_port();
    let labels = [("upstream", "app"), ("server", server.as_str())];
    assert_eq!(
        proxy.metric("rproxy_upstream_healthy", &labels).await,
        Some(1.0)
    );

    up.set_health(503);
    assert!(
        wait_until(WAIT, || async {
            proxy.metric("rproxy_upstream_healthy", &labels).await == Some(0.0)
        })
        .await,
        "the gauge does not drop to 0 after failed probes"
    );
    assert_eq!(proxy.get("/").await.status().as_u16(), 503);

    up.set_health(200);
    assert!(
        wait_until(WAIT, || async {
            proxy.metric("rproxy_upstream_healthy", &labels).await == Some(1.0)
        })
        .await,
        "the gauge does not return to 1"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloads_and_websockets_are_counted() {
    let up = Upstream::named("app").await;
    let echo = ws::echo_upstream().await;
    let proxy = Proxy::start(&format!(
        "upstreams:\n  app:\n    servers: [{}]\n  ws:\n    servers: [{}]\n\
         routes:\n  - {{ name: chat, path: /ws, upstream: ws }}\n  - {{ path: /, upstream: app }}\n",
        up.host_port(),
        echo.host_port()
    ))
    .await;
    let first = proxy
        .metric("rproxy_config_last_reload_success_timestamp_seconds", &[])
        .await
        .expect("timestamp after the initial load");

    proxy.signal(libc::SIGHUP);
    assert!(
        proxy.wait_reloads_above("ok", 0.0, WAIT).await,
        "SIGHUP is counted as result=\"ok\"\n{}",
        proxy.stderr()
    );
    let m = proxy.metrics_parsed().await;
    assert_eq!(
        m.value("rproxy_config_reloads_total", &[("result", "ok")]),
        Some(1.0)
    );
    assert_eq!(
        m.types
            .get("rproxy_config_reloads_total")
            .map(String::as_str),
        Some("counter")
    );
    let second = m
        .value("rproxy_config_last_reload_success_timestamp_seconds", &[])
        .unwrap();
    assert!(second >= first, "{second} < {first}");

    let gauge = [("route", "chat")];
    let mut socket = ws::connect(&format!("ws://127.0.0.1:{}/ws", proxy.http))
        .await
        .unwrap();
    echo_roundtrips(&mut socket, 1, "m").await.unwrap();
    assert!(
        wait_until(WAIT, || async {
            proxy.metric("rproxy_websocket_connections", &gauge).await == Some(1.0)
        })
        .await,
        "an open WebSocket is counted: {:?}",
        proxy.metric("rproxy_websocket_connections", &gauge).await
    );
    ws::close(socket).await;
    assert!(
        wait_until(WAIT, || async {
            proxy.metric("rproxy_websocket_connections", &gauge).await == Some(0.0)
        })
        .await,
        "a closed WebSocket is no longer counted"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_expiry_is_exported() {
    let cert = TestCert::new(&["a.test"]);
    let up = Upstream::named("app").await;
    let builder = Proxy::builder().https();
    cert.write(&builder.dir().join("certs"), "a");
    let proxy = builder
        .yaml(&format!(
            "upstreams:\n  app:\n    servers: [{}]\nroutes:\n  - {{ path: /, upstream: app }}\n",
            up.host_port()
        ))
        .start()
        .await;
    let m = proxy.metrics_parsed().await;
    let expiry = m
        .value(
            "rproxy_certificate_expiry_timestamp_seconds",
            &[("domain", "a.test")],
        )
        .unwrap_or_else(|| panic!("no expiry for a.test: {m:#?}"));
    // rcgen's default validity ends in 4096; anything well past now is right.
    assert!(
        expiry > now() + 365.0 * 86400.0,
        "expiry {expiry} is not a far-future unix time"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pools_are_described_with_their_protocol() {
    let up = Upstream::named("app").await;
    let pools = |grpc: bool| {
        let grpc = match grpc {
            true => "  grpc:\n    servers: [127.0.0.1:9]\n    protocol: h2c\n",
            false => "",
        };
        format!(
            "upstreams:\n  app:\n    servers: [{}]\n{grpc}routes:\n  - {{ path: /, upstream: app }}\n",
            up.host_port()
        )
    };
    let mut proxy = Proxy::start(&pools(true)).await;
    let m = proxy.metrics_parsed().await;
    let info =
        |pool: &'static str, protocol: &'static str| [("upstream", pool), ("protocol", protocol)];
    assert_eq!(
        m.value("rproxy_upstream_info", &info("app", "http1")),
        Some(1.0)
    );
    assert_eq!(
        m.value("rproxy_upstream_info", &info("grpc", "h2c")),
        Some(1.0)
    );

    let yaml = proxy.yaml.replacen(&pools(true), &pools(false), 1);
    proxy.rewrite(&yaml);
    assert!(
        proxy.wait_reloads_above("ok", 0.0, WAIT).await,
        "{}",
        proxy.stderr()
    );
    let m = proxy.metrics_parsed().await;
    assert_eq!(
        m.value("rproxy_upstream_info", &info("app", "http1")),
        Some(1.0)
    );
    assert_eq!(m.value("rproxy_upstream_info", &info("grpc", "h2c")), None);
}
