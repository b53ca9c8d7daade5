//! What a client gets when things go wrong: 503 + Retry-After, 502 (with bounded retries of
//! idempotent requests), 504, 413 (Content-Length and chunked), 431, 400, and a header timeout.

mod common;

use std::time::{Duration, Instant};

use common::{
    client, dead_addr, fresh_client, raw_request, raw_request_timeout, raw_status, read_head,
    read_response, Proxy, RawUpstream, Upstream, UpstreamBuilder,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn one_pool(servers: &[String], extra: &str) -> String {
    format!(
        "upstreams:\n  app:\n    servers: [{}]\n{extra}routes:\n  - {{ path: /, upstream: app, max_body: 1KiB }}\n",
        servers.join(", ")
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_healthy_server_is_503_with_retry_after() {
    let sick = UpstreamBuilder::new("sick").health(500).start().await;
    let proxy = Proxy::start(&one_pool(
        &[sick.host_port()],
        "    health: { path: /health, interval: 200ms, timeout: 500ms }\n",
    ))
    .await;
    let resp = proxy.get("/").await;
    assert_eq!(resp.status().as_u16(), 503);
    assert!(
        resp.headers().contains_key("retry-after"),
        "{:?}",
        resp.headers()
    );
    let body = resp.text().await.unwrap();
    assert!(!body.contains("127.0.0.1"), "names no internals: {body}");
    assert_eq!(sick.requests(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_connections_are_retried_on_another_server() {
    let live = Upstream::named("live").await;
    let proxy = Proxy::start(&one_pool(
        &[
            dead_addr().to_string(),
            live.host_port(),
            dead_addr().to_string(),
        ],
        "    balance: round_robin\n    retries: 2\n    connect_timeout: 1s\n",
    ))
    .await;
    let c = client();
    for i in 0..12 {
        let resp = c.get(proxy.url(&format!("/r/{i}"))).send().await.unwrap();
        assert_eq!(
            resp.status().as_u16(),
            200,
            "GET {i} retried onto the live server"
        );
        assert_eq!(resp.headers()["x-server"], "live");
    }
    assert_eq!(live.requests(), 12);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_zero_means_no_retry() {
    let live = Upstream::named("live").await;
    let proxy = Proxy::start(&one_pool(
        &[dead_addr().to_string(), live.host_port()],
        "    balance: round_robin\n    retries: 0\n    connect_timeout: 1s\n",
    ))
    .await;
    // A fresh connection per request keeps this test about retries only (see
    // `error_responses_keep_alive_or_say_close`).
    let c = fresh_client();
    let mut bad = 0;
    for _ in 0..10 {
        let resp = c.get(proxy.url("/")).send().await.unwrap();
        match resp.status().as_u16() {
            200 => assert_eq!(resp.headers()["x-server"], "live"),
            502 => bad += 1,
            other => panic!("status {other}"),
        }
    }
    assert!(
        (1..10).contains(&bad),
        "with retries: 0 the dead server's turns fail with 502 ({bad}/10)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_refused_is_502() {
    let proxy = Proxy::start(&one_pool(
        &[dead_addr().to_string(), dead_addr().to_string()],
        "    retries: 2\n    connect_timeout: 1s\n",
    ))
    .await;
    let started = Instant::now();
    let resp = proxy.get("/").await;
    assert_eq!(resp.status().as_u16(), 502);
    assert!(started.elapsed() < Duration::from_secs(5));
    let body = resp.text().await.unwrap();
    assert!(!body.contains("127.0.0.1"), "names no internals: {body}");

    // Not idempotent: still a clean 502.
    let resp = client()
        .post(proxy.url("/"))
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 502);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_before_response_is_502_with_bounded_retries() {
    // Reads the request head, then closes without answering.
    let rude = RawUpstream::start(|mut s: TcpStream| async move {
        let _ = read_head(&mut s).await;
    })
    .await;
    let proxy = Proxy::start(&one_pool(
        &[rude.host_port()],
        "    retries: 2\n    connect_timeout: 1s\n    read_timeout: 2s\n",
    ))
    .await;
    let resp = proxy.get("/").await;
    assert_eq!(resp.status().as_u16(), 502);
    let tries = rude.connections();
    assert!(
        (1..=3).contains(&tries),
        "1 try + at most 2 retries, got {tries} connections"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_upstream_is_504() {
    let slow = UpstreamBuilder::new("slow")
        .delay(Duration::from_secs(5))
        .start()
        .await;
    let proxy = Proxy::start(&one_pool(
        &[slow.host_port()],
        "    read_timeout: 300ms\n    retries: 0\n",
    ))
    .await;
    let started = Instant::now();
    let resp = proxy.get("/").await;
    assert_eq!(resp.status().as_u16(), 504);
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(3),
        "504 after about read_timeout, took {took:?}"
    );
}

/// A read timeout is answered at once: neither server of the pool gets the request again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_timeouts_are_not_retried() {
    let a = UpstreamBuilder::new("a")
        .delay(Duration::from_secs(3))
        .start()
        .await;
    let b = UpstreamBuilder::new("b")
        .delay(Duration::from_secs(3))
        .start()
        .await;
    let proxy = Proxy::start(&one_pool(
        &[a.host_port(), b.host_port()],
        "    read_timeout: 300ms\n    retries: 2\n",
    ))
    .await;
    for path in ["/slow", "/slow-again"] {
        let resp = proxy.get(path).await;
        assert_eq!(resp.status().as_u16(), 504);
    }
    // A chunked request goes through pingora's proxy: the same rule there.
    let chunked =
        b"GET /slow-chunked HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
    let resp = raw_request_timeout(proxy.http_addr(), chunked, Duration::from_secs(5)).await;
    assert_eq!(raw_status(&resp), 504, "{resp}");
    assert_eq!(
        a.requests() + b.requests(),
        3,
        "one try per request: a: {}, b: {}",
        a.requests(),
        b.requests()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn body_over_max_body_is_413_with_content_length() {
    let up = Upstream::echo("app").await;
    let proxy = Proxy::start(&one_pool(&[up.host_port()], "")).await;

    // Under the limit: forwarded.
    let small = vec![b's'; 1000];
    let resp = client()
        .post(proxy.url("/small"))
        .body(small.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(up.last_seen().unwrap().body, small);

    let mut req =
        b"POST /big HTTP/1.1\r\nHost: x\r\nContent-Length: 4096\r\nConnection: close\r\n\r\n"
            .to_vec();
    req.extend(std::iter::repeat_n(b'b', 4096));
    let resp = proxy.raw(&req).await;
    assert_eq!(raw_status(&resp), 413, "{resp}");
    assert!(
        up.state.seen().iter().all(|s| s.uri != "/big"),
        "the upstream never saw the oversized request"
    );
}

fn chunked(path: &str, chunks: usize, size: usize) -> Vec<u8> {
    let mut req = format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    )
    .into_bytes();
    for _ in 0..chunks {
        req.extend(format!("{size:x}\r\n").as_bytes());
        req.extend(std::iter::repeat_n(b'c', size));
        req.extend(b"\r\n");
    }
    req.extend(b"0\r\n\r\n");
    req
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn body_over_max_body_is_413_when_chunked() {
    let up = Upstream::echo("app").await;
    let proxy = Proxy::start(&one_pool(&[up.host_port()], "")).await;

    // 4 x 200 = 800 bytes: under the 1KiB limit.
    let resp = proxy.raw(&chunked("/small", 4, 200)).await;
    assert_eq!(raw_status(&resp), 200, "{resp}");
    assert_eq!(up.last_seen().unwrap().body.len(), 800);

    // 8 x 500 = 4000 bytes: over it.
    let resp = proxy.raw(&chunked("/big", 8, 500)).await;
    assert_eq!(raw_status(&resp), 413, "{resp}");
    assert!(
        up.state
            .seen()
            .iter()
            .all(|s| s.uri != "/big" || s.body.len() <= 1024),
        "the upstream never got the whole oversized body"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_too_large_is_431() {
    let up = Upstream::named("app").await;
    let proxy = Proxy::builder()
        .server("max_header_size: 4KiB")
        .yaml(&one_pool(&[up.host_port()], ""))
        .start()
        .await;

    let ok = format!(
        "GET / HTTP/1.1\r\nHost: x\r\nX-Fill: {}\r\nConnection: close\r\n\r\n",
        "a".repeat(1024)
    );
    let resp = proxy.raw(ok.as_bytes()).await;
    assert_eq!(raw_status(&resp), 200, "1 KiB of headers is fine: {resp}");

    let big = format!(
        "GET / HTTP/1.1\r\nHost: x\r\nX-Fill: {}\r\nConnection: close\r\n\r\n",
        "a".repeat(8 * 1024)
    );
    let resp = proxy.raw(big.as_bytes()).await;
    assert_eq!(raw_status(&resp), 431, "{resp}");

    // Many small headers count too.
    let mut many = String::from("GET / HTTP/1.1\r\nHost: x\r\n");
    for i in 0..100 {
        many.push_str(&format!("X-H{i}: {}\r\n", "v".repeat(60)));
    }
    many.push_str("Connection: close\r\n\r\n");
    let resp = proxy.raw(many.as_bytes()).await;
    assert_eq!(raw_status(&resp), 431, "{resp}");
    assert_eq!(up.requests(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_are_400() {
    let up = Upstream::named("app").await;
    let proxy = Proxy::start(&one_pool(&[up.host_port()], "")).await;
    let cases: &[&[u8]] = &[
        b"GARBAGE\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nBad Header Line\r\n\r\n",
        b"GET / HTTP/9.9 extra\r\nHost: x\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
        b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03\r\n\r\n",
    ];
    let addr = proxy.http_addr();
    let answers = futures_util::future::join_all(
        cases
            .iter()
            .map(|req| raw_request_timeout(addr, req, Duration::from_secs(3))),
    )
    .await;
    let mut wrong = Vec::new();
    for (req, resp) in cases.iter().zip(answers) {
        if raw_status(&resp) != 400 {
            wrong.push(format!(
                "{:?} -> {:?}",
                String::from_utf8_lossy(req),
                resp.lines().next().unwrap_or("<no answer within 3 s>")
            ));
        }
    }
    assert!(wrong.is_empty(), "want 400:\n{}", wrong.join("\n"));
    assert_eq!(up.requests(), 0);

    // The proxy still serves afterwards.
    assert_eq!(proxy.get("/").await.status().as_u16(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_headers_are_cut_off_after_header_timeout() {
    let up = Upstream::named("app").await;
    let proxy = Proxy::builder()
        .server("header_timeout: 1s")
        .yaml(&one_pool(&[up.host_port()], ""))
        .start()
        .await;

    // A slowloris: one header byte every 100 ms, never finishing the head.
    let stream = TcpStream::connect(proxy.http_addr()).await.unwrap();
    let (mut rd, mut wr) = stream.into_split();
    let started = Instant::now();
    let reader = tokio::spawn(async move {
        let mut buf = Vec::new();
        // Returns at EOF or error (reset): the connection is gone.
        let _ = rd.read_to_end(&mut buf).await;
        String::from_utf8_lossy(&buf).into_owned()
    });
    let _ = wr.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").await;
    let drip =
        b"X-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    let mut i = 0;
    let closed_after = loop {
        if reader.is_finished() {
            break Some(started.elapsed());
        }
        if started.elapsed() > Duration::from_secs(5) {
            break None;
        }
        // Writes may fail once the proxy has closed; the reader then finishes.
        let _ = wr.write_all(&drip[i % drip.len()..=i % drip.len()]).await;
        i += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let took = closed_after.expect("the connection is still open after 5 s");
    assert!(
        took >= Duration::from_millis(700),
        "closed before the 1 s header timeout: {took:?}"
    );
    assert!(
        took < Duration::from_secs(4),
        "closed {took:?} after connecting, want about header_timeout (1 s)"
    );
    let answer = reader.await.unwrap();
    assert!(
        answer.is_empty() || raw_status(&answer) == 408,
        "a timed-out client gets nothing or 408: {answer}"
    );
    assert_eq!(up.requests(), 0);

    // A prompt client on another connection is unaffected.
    let resp = raw_request(
        proxy.http_addr(),
        b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(raw_status(&resp), 200, "{resp}");
}

/// After an error answer the connection either stays usable or the answer says
/// `Connection: close`; a client must never see `keep-alive` and then a dead socket.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_responses_keep_alive_or_say_close() {
    let live = Upstream::named("live").await;
    let proxy = Proxy::start(&format!(
        "upstreams:\n  live:\n    servers: [{}]\n  dead:\n    servers: [{}]\n    retries: 0\n\
         routes:\n  - {{ host: live.test, path: /, upstream: live }}\n  - {{ host: dead.test, path: /, upstream: dead }}\n",
        live.host_port(),
        dead_addr()
    ))
    .await;

    let mut broken = Vec::new();
    for (host, want) in [("dead.test", 502), ("nowhere.test", 404)] {
        let mut s = TcpStream::connect(proxy.http_addr()).await.unwrap();
        let req = format!("GET /first HTTP/1.1\r\nHost: {host}\r\n\r\n");
        s.write_all(req.as_bytes()).await.unwrap();
        let first = read_response(&mut s, Duration::from_secs(5)).await;
        assert_eq!(raw_status(&first), want, "{first}");
        let head = first.split("\r\n\r\n").next().unwrap().to_ascii_lowercase();
        if head.contains("connection: close") {
            continue;
        }
        let _ = s
            .write_all(b"GET /second HTTP/1.1\r\nHost: live.test\r\n\r\n")
            .await;
        let second = read_response(&mut s, Duration::from_secs(5)).await;
        if raw_status(&second) != 200 {
            broken.push(format!(
                "{want} without `Connection: close`, then the next request on the connection got {:?}:\n{first}",
                second.lines().next().unwrap_or("<nothing: connection closed>")
            ));
        }
    }
    assert!(broken.is_empty(), "{}", broken.join("\n---\n"));
}
