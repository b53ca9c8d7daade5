//! Load-balancing algorithms: spread, weights, stickiness (ip_hash, consistent_hash) and
//! least_conn's preference for idle servers.

mod common;

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::time::Duration;

use common::{client, client_builder, count_servers, wait_until, Proxy, Upstream};

/// Starts `names.len()` upstreams and a proxy with one pool `app` using `balance`.
/// `weights` (same length as `names`) adds `weight:` per server when given.
async fn pool(balance: &str, names: &[&str], weights: Option<&[u32]>) -> (Proxy, Vec<Upstream>) {
    let mut ups = Vec::new();
    let mut servers = String::new();
    for (i, n) in names.iter().enumerate() {
        let u = Upstream::named(n).await;
        match weights {
            Some(w) => servers.push_str(&format!(
                "      - {{ addr: {}, weight: {} }}\n",
                u.host_port(),
                w[i]
            )),
            None => servers.push_str(&format!("      - {}\n", u.host_port())),
        }
        ups.push(u);
    }
    let proxy = Proxy::start(&format!(
        "upstreams:\n  app:\n    balance: {balance}\n    servers:\n{servers}routes:\n  - {{ path: /, upstream: app }}\n"
    ))
    .await;
    (proxy, ups)
}

fn assert_all_used(counts: &HashMap<String, usize>, names: &[&str], total: usize) {
    assert_eq!(counts.values().sum::<usize>(), total, "{counts:?}");
    for n in names {
        assert!(
            counts.get(*n).copied().unwrap_or(0) > 0,
            "{n} got no request: {counts:?}"
        );
    }
    assert!(
        counts.keys().all(|k| names.contains(&k.as_str())),
        "unknown server answered: {counts:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_spreads_evenly() {
    let names = ["a", "b", "c"];
    let (proxy, _ups) = pool("round_robin", &names, None).await;
    let counts = count_servers(&client(), &proxy.url("/"), 60).await;
    assert_all_used(&counts, &names, 60);
    for n in names {
        let c = counts[n];
        assert!(
            (15..=25).contains(&c),
            "round robin near 20 each: {counts:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weighted_follows_weights() {
    let names = ["light", "heavy"];
    let (proxy, _ups) = pool("weighted", &names, Some(&[1, 3])).await;
    let counts = count_servers(&client(), &proxy.url("/"), 80).await;
    assert_all_used(&counts, &names, 80);
    let (light, heavy) = (counts["light"] as f64, counts["heavy"] as f64);
    let ratio = heavy / light;
    assert!(
        (1.8..=5.0).contains(&ratio),
        "1:3 weights give roughly 1:3 traffic: {counts:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_uses_every_server() {
    let names = ["a", "b", "c"];
    let (proxy, _ups) = pool("random", &names, None).await;
    let counts = count_servers(&client(), &proxy.url("/"), 60).await;
    assert_all_used(&counts, &names, 60);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_conn_spreads_sequential_requests() {
    let names = ["a", "b", "c"];
    let (proxy, _ups) = pool("least_conn", &names, None).await;
    let counts = count_servers(&client(), &proxy.url("/"), 60).await;
    assert_all_used(&counts, &names, 60);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_conn_avoids_the_busy_server() {
    let names = ["a", "b"];
    let (proxy, ups) = pool("least_conn", &names, None).await;

    // Hold one server busy with a slow request.
    let slow_url = proxy.url("/slow");
    let slow = tokio::spawn(async move {
        client()
            .get(slow_url)
            .header("x-delay-ms", "3000")
            .send()
            .await
            .map(|r| r.status().as_u16())
    });
    let busy = wait_until(Duration::from_secs(5), || {
        let ups = &ups;
        async move { ups.iter().any(|u| u.state.in_flight() == 1) }
    })
    .await;
    assert!(busy, "the slow request reached an upstream");
    let busy_name = ups
        .iter()
        .find(|u| u.state.in_flight() == 1)
        .unwrap()
        .name()
        .to_string();
    let idle_name = names.iter().find(|n| **n != busy_name).unwrap().to_string();

    let counts = count_servers(&client(), &proxy.url("/quick"), 8).await;
    assert_eq!(
        counts.get(&idle_name).copied().unwrap_or(0),
        8,
        "all quick requests go to the idle server {idle_name}: {counts:?}"
    );
    assert_eq!(slow.await.unwrap().unwrap(), 200);
}

/// A client whose connections come from `ip` (any 127.0.0.0/8 address works on Linux).
fn client_from(ip: IpAddr) -> reqwest::Client {
    client_builder()
        .local_address(ip)
        .pool_max_idle_per_host(0)
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ip_hash_is_sticky_per_client() {
    let names = ["a", "b", "c"];
    let (proxy, _ups) = pool("ip_hash", &names, None).await;

    // Addresses in different /24s, so a /24-based hash (as nginx's) also spreads them.
    let ips: Vec<IpAddr> = (1..=12u8)
        .map(|i| IpAddr::from([127, i, i.wrapping_mul(7), 1]))
        .collect();
    let mut chosen = HashSet::new();
    for ip in &ips {
        let counts = count_servers(&client_from(*ip), &proxy.url("/"), 8).await;
        assert_eq!(
            counts.len(),
            1,
            "client {ip} stuck to one server: {counts:?}"
        );
        chosen.insert(counts.into_keys().next().unwrap());
    }
    assert!(
        chosen.len() > 1,
        "12 clients spread over more than one server: {chosen:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consistent_hash_is_sticky_per_path() {
    let names = ["a", "b", "c"];
    let (proxy, _ups) = pool("consistent_hash", &names, None).await;
    let c = client();

    let mut chosen = HashSet::new();
    for i in 0..20 {
        let url = proxy.url(&format!("/item/{i}"));
        let counts = count_servers(&c, &url, 4).await;
        assert_eq!(counts.len(), 1, "/item/{i} stuck to one server: {counts:?}");
        chosen.insert(counts.into_keys().next().unwrap());
    }
    assert!(
        chosen.len() > 1,
        "20 paths spread over more than one server: {chosen:?}"
    );
}
