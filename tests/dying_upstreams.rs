//! Upstreams that die: a server killed under load costs no idempotent request, a dead server is
//! ejected passively after `health.fall` failed requests (long before its next probe) and
//! brought back by probes when it returns; a POST is never replayed once its body was sent,
//! while a GET reset before any response byte is retried on another server.

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{
    client, fresh_client, read_head, wait_until, Proxy, RawUpstream, Upstream, UpstreamBuilder,
};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

fn pool_yaml(servers: &[String], extra: &str) -> String {
    format!(
        "upstreams:\n  app:\n    servers: [{}]\n    balance: round_robin\n    connect_timeout: 1s\n    read_timeout: 5s\n{extra}\
         routes:\n  - {{ path: /, upstream: app }}\n",
        servers.join(", ")
    )
}

async fn healthy(proxy: &Proxy, server: &str) -> Option<f64> {
    proxy
        .metric(
            "rproxy_upstream_healthy",
            &[("upstream", "app"), ("server", server)],
        )
        .await
}

/// Waits until nothing accepts connections on `addr` any more (the stopped upstream's
/// listener is really gone).
async fn wait_refused(addr: std::net::SocketAddr) {
    let gone = wait_until(Duration::from_secs(5), || async {
        TcpStream::connect(addr).await.is_err()
    })
    .await;
    assert!(gone, "{addr} still accepts connections after stop()");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_a_server_under_load_fails_no_idempotent_request() {
    const CLIENTS: usize = 8;
    let ups = [
        Upstream::named("a").await,
        Upstream::named("b").await,
        Upstream::named("c").await,
    ];
    let servers: Vec<String> = ups.iter().map(Upstream::host_port).collect();
    let proxy = Proxy::start(&pool_yaml(
        &servers,
        "    health: { path: /health, interval: 1s, fall: 2 }\n    retries: 2\n",
    ))
    .await;

    let sent = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let mut workers = Vec::new();
    for w in 0..CLIENTS {
        let (sent, failures, stop) = (sent.clone(), failures.clone(), stop.clone());
        let url = proxy.url("/load");
        workers.push(tokio::spawn(async move {
            let c = client();
            let mut i = 0;
            while !stop.load(Ordering::SeqCst) {
                let outcome = c
                    .get(format!("{url}/{w}/{i}"))
                    .timeout(Duration::from_secs(5))
                    .send()
                    .await;
                sent.fetch_add(1, Ordering::SeqCst);
                match outcome {
                    Ok(r) if r.status().as_u16() == 200 => {
                        // The body must arrive whole too.
                        if let Err(e) = r.bytes().await {
                            failures.lock().unwrap().push(format!("{w}/{i}: body: {e}"));
                        }
                    }
                    Ok(r) => failures
                        .lock()
                        .unwrap()
                        .push(format!("{w}/{i}: status {}", r.status())),
                    Err(e) => failures.lock().unwrap().push(format!("{w}/{i}: {e}")),
                }
                i += 1;
            }
        }));
    }

    tokio::time::sleep(Duration::from_secs(1)).await;
    let before_kill = sent.load(Ordering::SeqCst);
    let b_before = ups[1].requests();
    ups[1].stop();
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::SeqCst);
    for w in workers {
        w.await.unwrap();
    }

    let sent = sent.load(Ordering::SeqCst);
    let failures = failures.lock().unwrap().clone();
    let failed = failures.len();
    println!("upstream kill: {sent} requests, {failed} failed");
    println!(
        "  {before_kill} before the kill; served by a/b/c: {}/{}/{}",
        ups[0].requests(),
        ups[1].requests(),
        ups[2].requests()
    );
    assert!(
        before_kill > 0 && b_before > 0,
        "the load reached the server before it was killed"
    );
    assert!(
        failures.is_empty(),
        "{failed} of {sent} GETs failed:\n{}\n--- stderr ---\n{}",
        failures.join("\n"),
        proxy.stderr()
    );
    assert_eq!(healthy(&proxy, &servers[1]).await, Some(0.0));
    assert_eq!(healthy(&proxy, &servers[0]).await, Some(1.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_server_is_ejected_passively_before_its_next_probe() {
    let dying = Upstream::named("dying").await;
    let live = Upstream::named("live").await;
    let servers = [dying.host_port(), live.host_port()];
    // Probes every 30 s: only passive health can eject within the next few seconds.
    let proxy = Proxy::start(&pool_yaml(
        &servers,
        "    health: { path: /health, interval: 30s, fall: 2 }\n    retries: 2\n",
    ))
    .await;
    assert_eq!(healthy(&proxy, &servers[0]).await, Some(1.0));
    // Both serve before the kill.
    let counts = common::count_servers(&client(), &proxy.url("/warm"), 4).await;
    assert_eq!(counts.len(), 2, "{counts:?}");

    dying.stop();
    wait_refused(dying.addr).await;
    let started = Instant::now();
    let c = fresh_client();
    let mut requests = 0;
    let ejected = wait_until(Duration::from_secs(5), || {
        let (c, proxy, servers) = (&c, &proxy, &servers);
        requests += 1;
        async move {
            let resp = c.get(proxy.url("/after-kill")).send().await.unwrap();
            assert_eq!(
                resp.status().as_u16(),
                200,
                "GET retried onto the live server"
            );
            healthy(proxy, &servers[0]).await == Some(0.0)
        }
    })
    .await;
    let took = started.elapsed();
    println!("passive ejection after {requests} requests, {took:?}");
    assert!(
        ejected,
        "the dead server is still marked healthy {took:?} after {requests} requests"
    );
    assert!(
        took < Duration::from_secs(5),
        "ejection took {took:?}: probes (every 30 s) cannot have done it"
    );

    // Ejected: every request now goes straight to the live server.
    let live_before = live.requests();
    let counts = common::count_servers(&fresh_client(), &proxy.url("/ejected"), 6).await;
    assert_eq!(counts.get("live"), Some(&6), "{counts:?}");
    assert_eq!(live.requests(), live_before + 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarted_server_is_brought_back_by_probes() {
    let dying = Upstream::named("first-life").await;
    let live = Upstream::named("live").await;
    let port = dying.addr.port();
    let servers = [dying.host_port(), live.host_port()];
    let proxy = Proxy::start(&pool_yaml(
        &servers,
        "    health: { path: /health, interval: 300ms, timeout: 500ms, fall: 2, rise: 1 }\n    retries: 2\n",
    ))
    .await;
    assert_eq!(healthy(&proxy, &servers[0]).await, Some(1.0));

    dying.stop();
    wait_refused(dying.addr).await;
    let down = wait_until(Duration::from_secs(5), || async {
        healthy(&proxy, &servers[0]).await == Some(0.0)
    })
    .await;
    assert!(down, "the stopped server was never marked unhealthy");
    let counts = common::count_servers(&fresh_client(), &proxy.url("/while-down"), 4).await;
    assert_eq!(counts.get("live"), Some(&4), "{counts:?}");

    let reborn = UpstreamBuilder::new("second-life").port(port).start().await;
    let started = Instant::now();
    let up_again = wait_until(Duration::from_secs(5), || async {
        healthy(&proxy, &servers[0]).await == Some(1.0)
    })
    .await;
    assert!(
        up_again,
        "the restarted server is not healthy again after {:?}",
        started.elapsed()
    );
    let counts = common::count_servers(&fresh_client(), &proxy.url("/back"), 6).await;
    assert!(
        counts.get("second-life").copied().unwrap_or(0) >= 2,
        "the restarted server gets traffic again: {counts:?}"
    );
    assert!(reborn.requests() >= 2);
}

/// A raw upstream that reads a request head and its `Content-Length` body, counts it, then
/// resets the connection without answering.
async fn reset_after_body(complete: Arc<AtomicUsize>) -> RawUpstream {
    RawUpstream::start(move |mut s: TcpStream| {
        let complete = complete.clone();
        async move {
            let head = read_head(&mut s).await;
            let (head_part, already) = head.split_once("\r\n\r\n").unwrap_or((&head, ""));
            let len = head_part
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse::<usize>().ok())?
                })
                .unwrap_or(0);
            let mut body = already.len();
            let mut buf = [0u8; 4096];
            while body < len {
                match tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await {
                    Ok(Ok(n)) if n > 0 => body += n,
                    _ => return,
                }
            }
            complete.fetch_add(1, Ordering::SeqCst);
            let _ = s.set_zero_linger();
            drop(s);
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn post_is_never_replayed_after_its_body_was_sent() {
    let complete = Arc::new(AtomicUsize::new(0));
    let first = reset_after_body(complete.clone()).await;
    let second = reset_after_body(complete.clone()).await;
    let proxy = Proxy::start(&pool_yaml(
        &[first.host_port(), second.host_port()],
        "    retries: 2\n",
    ))
    .await;

    let resp = client()
        .post(proxy.url("/order"))
        .body("pay 100 EUR")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 502);
    let connections = first.connections() + second.connections();
    assert_eq!(
        complete.load(Ordering::SeqCst),
        1,
        "the upstreams saw the POST {} times ({connections} connections)",
        complete.load(Ordering::SeqCst)
    );
    assert_eq!(connections, 1, "the POST was sent again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_reset_before_any_response_byte_is_retried_elsewhere() {
    // Reads the request head, then resets the connection without a byte of response.
    let rude = RawUpstream::start(|mut s: TcpStream| async move {
        let _ = read_head(&mut s).await;
        let _ = s.set_zero_linger();
    })
    .await;
    let live = Upstream::named("live").await;
    let proxy = Proxy::start(&pool_yaml(
        &[rude.host_port(), live.host_port()],
        "    retries: 2\n",
    ))
    .await;

    let counts = common::count_servers(&fresh_client(), &proxy.url("/idempotent"), 6).await;
    assert_eq!(counts.get("live"), Some(&6), "{counts:?}");
    assert!(
        rude.connections() >= 3,
        "round robin sent {} of 6 first tries to the resetting server",
        rude.connections()
    );
}
