//! DNS upstreams: a server written as `name:port` is re-resolved every `resolve_interval`, each
//! address its own backend. The answers come from a hosts file (`RPROXY_HOSTS_FILE`) that the
//! test rewrites; the upstreams listen on the same port on 127.0.0.2, .3 and .4.

mod common;

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;

/// Three upstreams on one port, on three loopback addresses.
async fn three_upstreams() -> (u16, Vec<Upstream>) {
    for _ in 0..20 {
        let port = free_port();
        let mut ups = Vec::new();
        for (i, name) in ["a", "b", "c"].iter().enumerate() {
            let ip = Ipv4Addr::new(127, 0, 0, 2 + i as u8);
            if std::net::TcpListener::bind((ip, port)).is_err() {
                break;
            }
            ups.push(Upstream::builder(name).ip(ip).port(port).start().await);
        }
        if ups.len() == 3 {
            return (port, ups);
        }
    }
    panic!("no port free on 127.0.0.2-4");
}

fn hosts(path: &std::path::Path, ips: &[&str]) {
    let text: String = ips
        .iter()
        .map(|ip| format!("{ip} app.internal\n"))
        .collect();
    // Write and rename, as a resolver's file would change: never half a file.
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).expect("write hosts");
    std::fs::rename(&tmp, path).expect("rename hosts");
}

/// Which servers answer `n` requests.
async fn answers(proxy: &Proxy, n: usize) -> BTreeMap<String, usize> {
    let mut seen = BTreeMap::new();
    for _ in 0..n {
        let resp = proxy.get("/").await;
        assert_eq!(resp.status().as_u16(), 200);
        *seen.entry(resp.text().await.expect("body")).or_insert(0) += 1;
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changing_answers_add_and_remove_backends_without_failures() {
    let (port, _ups) = three_upstreams().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let hosts_path = dir.path().join("hosts");
    hosts(&hosts_path, &["127.0.0.2"]);
    let proxy = ProxyBuilder::new()
        .env("RPROXY_HOSTS_FILE", hosts_path.to_str().expect("utf-8 path"))
        .yaml(&format!(
            "upstreams:\n  app:\n    servers: [app.internal:{port}]\n    resolve_interval: 200ms\n    \
             health: {{ path: /health, interval: 200ms }}\nroutes:\n  - {{ path: /, upstream: app }}\n"
        ))
        .start()
        .await;
    assert_eq!(answers(&proxy, 6).await.keys().collect::<Vec<_>>(), ["a"]);

    // A load loop runs through every change; not one request may fail.
    let stop = Arc::new(AtomicBool::new(false));
    let (sent, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let mut load = Vec::new();
    for _ in 0..4 {
        let (url, stop, sent, failed) =
            (proxy.url("/"), stop.clone(), sent.clone(), failed.clone());
        load.push(tokio::spawn(async move {
            let client = client();
            while !stop.load(Ordering::Relaxed) {
                let ok = matches!(client.get(&url).send().await, Ok(r) if r.status() == 200);
                sent.fetch_add(1, Ordering::Relaxed);
                if !ok {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }

    hosts(&hosts_path, &["127.0.0.2", "127.0.0.3", "127.0.0.4"]);
    let all_three = wait_until(Duration::from_secs(10), || async {
        answers(&proxy, 12).await.len() == 3
    })
    .await;
    assert!(all_three, "new addresses get traffic after passing a probe");

    hosts(&hosts_path, &["127.0.0.4"]);
    let only_c = wait_until(Duration::from_secs(10), || async {
        answers(&proxy, 8).await.keys().collect::<Vec<_>>() == ["c"]
    })
    .await;
    assert!(only_c, "addresses that disappear stop getting traffic");

    stop.store(true, Ordering::Relaxed);
    for task in load {
        task.await.expect("load task");
    }
    let (sent, failed) = (sent.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    println!("DNS changes under load: {sent} requests, {failed} failed");
    assert!(sent > 50, "the load loop ran ({sent} requests)");
    assert_eq!(failed, 0, "no request fails while the answers change");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_that_does_not_resolve_is_retried_not_fatal() {
    let (port, _ups) = three_upstreams().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let hosts_path = dir.path().join("hosts");
    let proxy = ProxyBuilder::new()
        .env("RPROXY_HOSTS_FILE", hosts_path.to_str().expect("utf-8 path"))
        .yaml(&format!(
            "upstreams:\n  app:\n    servers: [nowhere.invalid:{port}]\n    resolve_interval: 200ms\n    \
             health: {{ path: /health, interval: 200ms }}\nroutes:\n  - {{ path: /, upstream: app }}\n"
        ))
        .start()
        .await;
    let resp = proxy.get("/").await;
    assert_eq!(
        resp.status().as_u16(),
        503,
        "no address yet: 503, and the proxy runs"
    );
    assert!(resp.headers().contains_key("retry-after"));

    std::fs::write(&hosts_path, "127.0.0.3 nowhere.invalid\n").expect("write hosts");
    let served = wait_until(Duration::from_secs(10), || async {
        let resp = proxy.get("/").await;
        resp.status() == 200 && resp.text().await.unwrap_or_default() == "b"
    })
    .await;
    assert!(
        served,
        "the name resolved later and its server took traffic"
    );
}
