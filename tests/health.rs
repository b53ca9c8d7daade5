//! Active health checks: a server gets traffic only after passing a probe, leaves the rotation
//! after `fall` failed probes, comes back after `rise` passes; `path` and `expect` are honoured.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::{client, count_servers, dead_addr, wait_until, Proxy, Upstream, UpstreamBuilder};

const FAST_HEALTH: &str = "{ path: /health, interval: 200ms, timeout: 500ms, rise: 1, fall: 2 }";

fn pool_yaml(servers: &[String], health: &str) -> String {
    format!(
        "upstreams:\n  app:\n    balance: round_robin\n    servers: [{}]\n    health: {health}\n\
         routes:\n  - {{ path: /, upstream: app }}\n",
        servers.join(", ")
    )
}

/// Sends `n` requests and returns the per-server counts (every answer must be 200).
async fn spread(proxy: &Proxy, n: usize) -> HashMap<String, usize> {
    count_servers(&client(), &proxy.url("/"), n).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_member_never_gets_traffic() {
    let live = Upstream::named("live").await;
    let dead = dead_addr();
    let proxy = Proxy::start(&pool_yaml(
        &[live.host_port(), dead.to_string()],
        FAST_HEALTH,
    ))
    .await;

    // `count_servers` panics on any non-200 answer.
    let counts = spread(&proxy, 30).await;
    assert_eq!(counts.get("live"), Some(&30), "{counts:?}");
    assert!(live.state.health_checks() > 0, "the live server was probed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traffic_only_after_a_passed_probe() {
    let good = Upstream::named("good").await;
    let sick = UpstreamBuilder::new("sick").health(503).start().await;
    let proxy = Proxy::start(&pool_yaml(
        &[good.host_port(), sick.host_port()],
        FAST_HEALTH,
    ))
    .await;

    let counts = spread(&proxy, 20).await;
    assert_eq!(counts.get("good"), Some(&20), "{counts:?}");
    assert_eq!(sick.requests(), 0, "a server failing probes gets nothing");
    assert!(sick.state.health_checks() > 0, "the sick server was probed");

    // It recovers: within a few intervals it gets traffic.
    sick.set_health(200);
    let back = wait_until(Duration::from_secs(5), || async {
        spread(&proxy, 4).await.contains_key("sick")
    })
    .await;
    assert!(back, "the recovered server gets traffic again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_member_leaves_and_returns() {
    let a = Upstream::named("a").await;
    let b = Upstream::named("b").await;
    let proxy = Proxy::start(&pool_yaml(&[a.host_port(), b.host_port()], FAST_HEALTH)).await;

    let counts = spread(&proxy, 10).await;
    assert!(
        counts.contains_key("a") && counts.contains_key("b"),
        "{counts:?}"
    );

    // interval 200ms x fall 2: out of rotation well within 3 s.
    b.set_health(503);
    let flipped_at = std::time::Instant::now();
    let gone = wait_until(Duration::from_secs(3), || async {
        spread(&proxy, 6).await.get("a") == Some(&6)
    })
    .await;
    assert!(gone, "b still gets traffic 3 s after its probes fail");
    let took = flipped_at.elapsed();
    let before = b.requests();
    let counts = spread(&proxy, 20).await;
    assert_eq!(counts.get("a"), Some(&20), "{counts:?}");
    assert_eq!(b.requests(), before, "no request reached the unhealthy b");
    assert!(
        took < Duration::from_secs(2),
        "removal took {took:?}, want about interval x fall"
    );

    b.set_health(200);
    let back = wait_until(Duration::from_secs(3), || async {
        spread(&proxy, 4).await.contains_key("b")
    })
    .await;
    assert!(back, "b gets traffic again after it recovers");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe_path_and_expect_range_are_used() {
    // Health answers 204 on /hc: healthy with 200-399, unhealthy with exactly 200.
    let ranged = UpstreamBuilder::new("ranged")
        .health_path("/hc")
        .health(204)
        .start()
        .await;
    let strict = UpstreamBuilder::new("strict")
        .health_path("/hc")
        .health(204)
        .start()
        .await;
    let proxy = Proxy::start(&format!(
        r#"upstreams:
  ranged:
    servers: [{}]
    health: {{ path: /hc, interval: 200ms, timeout: 500ms, expect: 200-399 }}
  strict:
    servers: [{}]
    health: {{ path: /hc, interval: 200ms, timeout: 500ms, expect: 200 }}
routes:
  - {{ path: /ranged, upstream: ranged }}
  - {{ path: /strict, upstream: strict }}
"#,
        ranged.host_port(),
        strict.host_port()
    ))
    .await;

    assert!(
        ranged.state.health_checks() > 0,
        "probes use the configured path"
    );
    let resp = proxy.get("/ranged").await;
    assert_eq!(resp.status().as_u16(), 200);
    let resp = proxy.get("/strict").await;
    assert_eq!(resp.status().as_u16(), 503, "204 is outside `expect: 200`");
    assert_eq!(strict.requests(), 0);

    strict.set_health(200);
    let up = wait_until(Duration::from_secs(3), || async {
        proxy.get("/strict").await.status().as_u16() == 200
    })
    .await;
    assert!(up, "strict turns healthy when its probe answers 200");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_health_block_every_server_is_eligible() {
    let a = Upstream::named("a").await;
    let b = UpstreamBuilder::new("b").health(503).start().await;
    let proxy = Proxy::start(&format!(
        "upstreams:\n  app:\n    servers: [{}, {}]\nroutes:\n  - {{ path: /, upstream: app }}\n",
        a.host_port(),
        b.host_port()
    ))
    .await;
    let counts = spread(&proxy, 10).await;
    assert!(
        counts.contains_key("a") && counts.contains_key("b"),
        "no probes, so both serve: {counts:?}"
    );
    assert_eq!(b.state.health_checks(), 0, "no health block, no probes");
}
