//! Per-route limits: `rate_limit` (per client IP, fixed windows, 429 + `Retry-After`) and
//! `max_concurrent` (503 + `Retry-After` above the in-flight limit), and `rproxy -t` naming the
//! key path of a bad `rate_limit`.

mod common;

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use common::{check_config, client, client_builder, Proxy, Upstream};

fn route(up: &Upstream, limits: &str) -> String {
    format!(
        "upstreams:\n  app:\n    servers: [{}]\nroutes:\n  - {{ path: /limited, upstream: app, {limits} }}\n  - {{ path: /, upstream: app }}\n",
        up.host_port()
    )
}

/// A client whose connections come from `ip` (any 127.0.0.0/8 address is local on Linux).
fn client_from(ip: Ipv4Addr) -> reqwest::Client {
    client_builder()
        .local_address(IpAddr::V4(ip))
        .build()
        .expect("reqwest client")
}

async fn statuses(c: &reqwest::Client, url: &str, n: usize) -> Vec<(u16, Option<String>)> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let resp = c.get(url).send().await.expect("GET");
        let retry_after = resp
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        out.push((resp.status().as_u16(), retry_after));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_is_per_client_ip_and_window() {
    let up = Upstream::named("app").await;
    let proxy = Proxy::start(&route(&up, "rate_limit: 5/s")).await;
    let url = proxy.url("/limited/x");
    let one = client_from(Ipv4Addr::new(127, 0, 0, 1));
    let two = client_from(Ipv4Addr::new(127, 0, 0, 2));

    // Windows are fixed: a burst that straddles a window boundary may legitimately pass, so
    // try up to three bursts, each in a fresh window.
    let mut bursts = Vec::new();
    let limited = loop {
        let started = Instant::now();
        let got = statuses(&one, &url, 6).await;
        let took = started.elapsed();
        let first5: Vec<u16> = got[..5].iter().map(|(s, _)| *s).collect();
        assert_eq!(
            first5, [200; 5],
            "the first 5 requests of a fresh window pass: {got:?}"
        );
        if got[5].0 == 429 {
            break got[5].clone();
        }
        bursts.push(format!("{got:?} in {took:?}"));
        assert!(
            bursts.len() < 3,
            "the 6th request within a second was never limited: {bursts:?}"
        );
        tokio::time::sleep(Duration::from_millis(1100)).await;
    };
    let retry_after: u64 = limited
        .1
        .as_deref()
        .expect("429 carries Retry-After")
        .parse()
        .expect("Retry-After is a number of seconds");
    assert!((1..=2).contains(&retry_after), "Retry-After: {retry_after}");

    // Another client IP has its own budget, right now.
    let other = statuses(&two, &url, 5).await;
    assert!(
        other.iter().all(|(s, _)| *s == 200),
        "127.0.0.2 is limited by 127.0.0.1's requests: {other:?}"
    );
    // Other routes are not limited at all.
    let free = statuses(&one, &proxy.url("/free"), 10).await;
    assert!(free.iter().all(|(s, _)| *s == 200), "{free:?}");

    // After the window, 127.0.0.1 is served again.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let later = statuses(&one, &url, 3).await;
    assert!(
        later.iter().all(|(s, _)| *s == 200),
        "still limited after the window passed: {later:?}"
    );
}

/// With minute windows nothing rolls over during the test, so this also shows that one
/// client's exhausted budget leaves another's untouched, and the reverse.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_per_minute_with_burst_per_ip() {
    let up = Upstream::named("app").await;
    let proxy = Proxy::start(&route(&up, "rate_limit: 3/m burst 2")).await;
    let url = proxy.url("/limited/m");
    let one = client_from(Ipv4Addr::new(127, 0, 0, 1));
    let two = client_from(Ipv4Addr::new(127, 0, 0, 2));

    let got = statuses(&one, &url, 7).await;
    let codes: Vec<u16> = got.iter().map(|(s, _)| *s).collect();
    assert_eq!(
        codes,
        [200, 200, 200, 200, 200, 429, 429],
        "3/m plus a burst of 2: {got:?}"
    );
    assert_eq!(got[5].1.as_deref(), Some("60"), "{got:?}");

    let got = statuses(&two, &url, 6).await;
    let codes: Vec<u16> = got.iter().map(|(s, _)| *s).collect();
    assert_eq!(
        codes,
        [200, 200, 200, 200, 200, 429],
        "127.0.0.2's own budget: {got:?}"
    );
    let again = statuses(&one, &url, 1).await;
    assert_eq!(again[0].0, 429, "127.0.0.1 is still limited: {again:?}");
    assert_eq!(up.requests(), 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_concurrent_refuses_the_third_in_flight_request() {
    let up = Upstream::named("app").await;
    let proxy = Proxy::start(&route(&up, "max_concurrent: 2")).await;
    let url = proxy.url("/limited/slow");

    let slow = |c: reqwest::Client, url: String| async move {
        c.get(url)
            .header("x-delay-ms", "1500")
            .send()
            .await
            .map(|r| r.status().as_u16())
    };
    let a = tokio::spawn(slow(client(), url.clone()));
    let b = tokio::spawn(slow(client(), url.clone()));
    let both_in = common::wait_until(Duration::from_secs(3), || async {
        up.state.in_flight() == 2
    })
    .await;
    assert!(both_in, "the two slow requests never reached the upstream");

    let started = Instant::now();
    let third = client().get(&url).send().await.unwrap();
    assert_eq!(
        third.status().as_u16(),
        503,
        "third request while 2 are in flight"
    );
    assert!(
        third.headers().contains_key("retry-after"),
        "{:?}",
        third.headers()
    );
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "refused at once, not queued: {:?}",
        started.elapsed()
    );
    assert_eq!(
        up.requests(),
        2,
        "the refused request never reached the upstream"
    );
    // The limit is per route: another route is served meanwhile.
    assert_eq!(proxy.get("/other").await.status().as_u16(), 200);

    assert_eq!(a.await.unwrap().unwrap(), 200);
    assert_eq!(b.await.unwrap().unwrap(), 200);
    // Slots are given back when requests finish (also the refused one's).
    let after = statuses(&client(), &url, 3).await;
    assert!(after.iter().all(|(s, _)| *s == 200), "{after:?}");
}

#[test]
fn bad_rate_limits_are_rejected_by_check_with_the_key_path() {
    let dir = tempfile::tempdir().unwrap();
    let file = |name: &str, value: &str| {
        let path = dir.path().join(name);
        std::fs::write(
            &path,
            format!(
                "listen:\n  http: \"127.0.0.1:0\"\nupstreams:\n  app:\n    servers: [127.0.0.1:9]\n\
                 routes:\n  - {{ path: /, upstream: app, rate_limit: \"{value}\" }}\n"
            ),
        )
        .unwrap();
        path
    };
    for value in [
        "fast",
        "0/s",
        "5/h",
        "10/s burst",
        "10/s burst x",
        "-1/s",
        "5/s 7",
    ] {
        let out = check_config(&file("bad.yaml", value));
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(out.status.code(), Some(1), "rate_limit `{value}`: {text}");
        assert!(
            text.contains("routes[0].rate_limit"),
            "rate_limit `{value}`: the message names the key path: {text}"
        );
    }
    for value in ["5/s", "600/m", "10/s burst 20"] {
        let out = check_config(&file("good.yaml", value));
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(out.status.code(), Some(0), "rate_limit `{value}`: {text}");
    }
}
