//! The fast path for HTTP/2 streams (`src/fast/h2.rs`) end to end, over TLS (ALPN h2) and h2c
//! with prior knowledge: upstream framings turned into h2 bodies (chunked decoded, close-delimited,
//! bodiless), request bodies read whole or handed to pingora's path, many streams over a few
//! pooled upstream connections, the forwarded head (cookies joined, Host from `:authority`),
//! X-Request-Id, error answers that leave the connection usable, and HSTS.

mod common;

use std::time::{Duration, Instant};

use common::h2client::{Got, H2};
use common::tls::TestCert;
use common::wire::{
    generated_id, keep_alive_upstream, next_request, ok, payload, read_more, request_id_upstream,
    write_pieces,
};
use common::{dead_addr, Proxy, RawUpstream, Upstream};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// These tests hold rproxy's own engine to its byte-level behaviour (framing, pipelining,
/// interim responses, connection reuse), so they pin it even when the suite runs over
/// pingora's path (`RPROXY_TEST_ENGINE=pingora`); what both engines must share is in
/// tests/engines.rs and the rest of the suite.
const FAST: &str = "fast_path: true";

async fn on_the_fast_path(yaml: &str) -> Proxy {
    Proxy::builder().server(FAST).yaml(yaml).start().await
}

/// One pool `app` with the given server, and a catch-all route to it.
fn app_yaml(server: &str) -> String {
    format!(
        "upstreams:\n  app:\n    servers: [{server}]\n    connect_timeout: 1s\n    read_timeout: 5s\n\
         routes:\n  - {{ path: /, upstream: app }}\n"
    )
}

/// A proxy with an https listener holding a certificate for `fast.test`, and that certificate.
async fn tls_proxy(yaml: &str) -> (Proxy, TestCert) {
    let cert = TestCert::new(&["fast.test"]);
    let builder = Proxy::builder().server(FAST).https();
    cert.write(&builder.dir().join("certs"), "fast");
    (builder.yaml(yaml).start().await, cert)
}

/// `chunks` in chunked framing (an extension on the second), then a trailer.
fn chunked(chunks: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, c) in chunks.iter().enumerate() {
        let ext = if i == 1 { ";ext=1" } else { "" };
        out.extend_from_slice(format!("{:x}{ext}\r\n", c.len()).as_bytes());
        out.extend_from_slice(c);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"0\r\nX-Checksum: 42\r\n\r\n");
    out
}

/// `bytes` cut at `cuts` (ascending offsets).
fn split_at<'a>(bytes: &'a [u8], cuts: &[usize]) -> Vec<&'a [u8]> {
    let mut pieces = Vec::new();
    let mut from = 0;
    for &cut in cuts.iter().chain([bytes.len()].iter()) {
        pieces.push(&bytes[from..cut]);
        from = cut;
    }
    pieces
}

// ---------------------------------------------------------------------------------------------
// Response framings
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_responses_reach_h2_clients_decoded_and_sized_ones_keep_their_length() {
    let sizes = [1usize, 300, 20_000, 7, 40_000, 5];
    let chunks: Vec<Vec<u8>> = sizes.iter().map(|&n| payload(n, n as u64)).collect();
    let want: Vec<u8> = chunks.concat();
    let sized = payload(50_000, 3);
    let (framed, sent) = (chunked(&chunks), sized.clone());
    let up = RawUpstream::start(move |mut s: TcpStream| {
        let (framed, sized) = (framed.clone(), sent.clone());
        async move {
            let mut buf = Vec::new();
            while let Some(req) = next_request(&mut s, &mut buf).await {
                if req.path == "/chunked" {
                    let head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
                    // Cut inside a size line, a chunk, a CRLF, the extension and the trailer.
                    let cuts = [2, 8, 12, 200, 16_000, 20_330, 20_340, framed.len() - 8];
                    let mut pieces: Vec<&[u8]> = vec![&head[..]];
                    pieces.extend(split_at(&framed, &cuts));
                    write_pieces(&mut s, &pieces).await;
                } else {
                    let mut resp = b"HTTP/1.1 200 OK\r\nContent-Length: 50000\r\n\r\n".to_vec();
                    resp.extend_from_slice(&sized);
                    let _ = s.write_all(&resp).await;
                }
            }
        }
    })
    .await;
    let (proxy, cert) = tls_proxy(&app_yaml(&up.host_port())).await;
    let h2 = H2::tls(&proxy, &cert).await;

    for round in 0..2 {
        let got = h2.get("/chunked").await;
        assert_eq!(got.status, 200, "round {round}");
        assert_eq!(got.header("transfer-encoding"), None);
        assert_eq!(got.header("content-length"), None);
        assert!(
            got.body == want,
            "round {round}: the chunked body arrived altered ({} bytes, want {})",
            got.body.len(),
            want.len()
        );
        let got = h2.get("/sized").await;
        assert_eq!(got.status, 200, "round {round}");
        assert_eq!(got.header("content-length"), Some("50000"));
        assert!(
            got.body == sized,
            "round {round}: the sized body arrived altered"
        );
    }
    // Each decoded chunked body left its upstream connection in step for the next request.
    assert!(
        up.connections() <= 2,
        "4 requests one after the other opened {} upstream connections",
        up.connections()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_delimited_response_reaches_the_h2_client_whole_and_ends_the_stream() {
    let body = payload(100_000, 11);
    let sent = body.clone();
    let up = RawUpstream::start(move |mut s: TcpStream| {
        let body = sent.clone();
        async move {
            let mut buf = Vec::new();
            let Some(req) = next_request(&mut s, &mut buf).await else {
                return;
            };
            if req.path != "/stream" {
                let _ = s.write_all(&ok(&req.path)).await;
                return;
            }
            let head = b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n\r\n";
            let mut pieces: Vec<&[u8]> = vec![&head[..]];
            pieces.extend(body.chunks(20_000));
            write_pieces(&mut s, &pieces).await;
            // Dropping the stream ends the body.
        }
    })
    .await;
    let proxy = on_the_fast_path(&app_yaml(&up.host_port())).await;
    let h2 = H2::h2c(&proxy).await;

    // `get` reads to END_STREAM: a stream left open or reset fails here.
    let got = h2.get("/stream").await;
    assert_eq!(got.status, 200);
    assert_eq!(got.header("content-length"), None);
    assert_eq!(got.body.len(), body.len());
    assert!(got.body == body, "the close-delimited body arrived altered");
    let after = h2.get("/after").await;
    assert_eq!((after.status, after.text()), (200, "/after".to_string()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_response_cut_off_upstream_is_not_ended_cleanly_over_h2() {
    let up = RawUpstream::start(|mut s: TcpStream| async move {
        let mut buf = Vec::new();
        let Some(req) = next_request(&mut s, &mut buf).await else {
            return;
        };
        if req.path != "/cut" {
            let _ = s.write_all(&ok(&req.path)).await;
            return;
        }
        // Two chunks, then the upstream goes away before the last chunk.
        let cut =
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n5\r\nworld\r\n";
        let _ = s.write_all(cut).await;
    })
    .await;
    let proxy = on_the_fast_path(&app_yaml(&up.host_port())).await;
    let h2 = H2::h2c(&proxy).await;

    let req = h2.request("GET", "/cut").body(()).unwrap();
    match h2.try_send(req, &[]).await {
        Err(e) => println!("cut-off body: {e}"),
        Ok(got) => panic!(
            "a chunked body the upstream cut off ended with END_STREAM as if whole: {} {:?}",
            got.status,
            got.text()
        ),
    }
    let after = h2.get("/after").await;
    assert_eq!((after.status, after.text()), (200, "/after".to_string()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_204_and_304_responses_end_at_their_head_over_h2() {
    let up = keep_alive_upstream(|req| match req.path.as_str() {
        "/head" => {
            b"HTTP/1.1 200 OK\r\nContent-Length: 1234\r\nContent-Type: text/plain\r\n\r\n".to_vec()
        }
        "/204" => b"HTTP/1.1 204 No Content\r\nX-Kind: none\r\n\r\n".to_vec(),
        "/304" => b"HTTP/1.1 304 Not Modified\r\nETag: \"v1\"\r\n\r\n".to_vec(),
        // A 304 may carry the Content-Length a 200 would have (RFC 9110 8.6); still no content.
        "/304-sized" => {
            b"HTTP/1.1 304 Not Modified\r\nETag: \"v1\"\r\nContent-Length: 50\r\n\r\n".to_vec()
        }
        path => ok(path),
    })
    .await;
    let proxy = on_the_fast_path(&app_yaml(&up.host_port())).await;
    let h2 = H2::h2c(&proxy).await;
    // Well inside the upstream read_timeout (5 s): a proxy waiting for a body fails here.
    let prompt = Duration::from_secs(2);

    let mut wrong = Vec::new();
    for (method, path, status) in [
        ("HEAD", "/head", 200),
        ("GET", "/204", 204),
        ("GET", "/304", 304),
        ("GET", "/304-sized", 304),
    ] {
        let req = h2.request(method, path).body(()).unwrap();
        let got = tokio::time::timeout(prompt, h2.try_send(req, &[]))
            .await
            .unwrap_or_else(|_| Err(format!("no end of stream within {prompt:?}")));
        match got {
            Ok(got) if got.status == status && got.body.is_empty() => {
                if method == "HEAD" {
                    assert_eq!(got.header("content-length"), Some("1234"));
                }
            }
            Ok(got) => wrong.push(format!("{method} {path}: {} {:?}", got.status, got.text())),
            Err(e) => wrong.push(format!("{method} {path}: {e}")),
        }
        let after = h2.get("/after").await;
        assert_eq!(after.status, 200, "after {method} {path}");
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    assert!(
        up.connections() <= 2,
        "bodiless answers left {} upstream connections unusable",
        up.connections()
    );
}

// ---------------------------------------------------------------------------------------------
// Request bodies, many streams
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_bodies_arrive_byte_exact_read_whole_or_handed_to_pingora() {
    let up = Upstream::echo("echo").await;
    let proxy = on_the_fast_path(&app_yaml(&up.host_port())).await;
    let h2 = H2::h2c(&proxy).await;

    // (path, size, declared length, DATA frames): up to 64 KiB with a length the fast path reads
    // whole; without a length or past 64 KiB pingora's path takes the stream.
    let cases = [
        ("/small", 3_000usize, true, 2usize),
        ("/exact", 64 << 10, true, 1),
        ("/unsized", 35_000, false, 5),
        ("/large", 1 << 20, true, 1),
    ];
    for (path, size, sized, frames) in cases {
        let body = payload(size, size as u64);
        let mut req = h2.request("POST", path);
        if sized {
            req = req.header("content-length", size);
        }
        let pieces: Vec<&[u8]> = body.chunks(size.div_ceil(frames)).collect();
        let got = h2.send(req.body(()).unwrap(), &pieces).await;
        assert_eq!(got.status, 200, "POST {path}: {}", got.text());
        let echo: serde_json::Value = serde_json::from_slice(&got.body).expect("echo JSON");
        assert_eq!(echo["body_len"], size, "POST {path}");
        let seen = up.state.seen();
        let seen = seen.iter().find(|s| s.uri == path).expect("seen upstream");
        assert!(
            seen.body[..] == body[..],
            "POST {path}: the body of {size} bytes arrived altered ({} bytes)",
            seen.body.len()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_concurrent_streams_share_a_few_pooled_upstream_connections() {
    const STREAMS: usize = 100;
    const ROUNDS: usize = 5;
    let up = keep_alive_upstream(|req| ok(&req.path)).await;
    let proxy = on_the_fast_path(&app_yaml(&up.host_port())).await;
    let h2 = H2::h2c(&proxy).await;

    let mut wrong = Vec::new();
    for round in 0..ROUNDS {
        let mut streams = tokio::task::JoinSet::new();
        for i in 0..STREAMS {
            let h2 = h2.clone();
            streams.spawn(async move {
                let path = format!("/c/{round}/{i}");
                let req = h2.request("GET", &path).body(()).unwrap();
                (path, h2.try_send(req, &[]).await)
            });
        }
        while let Some(done) = streams.join_next().await {
            match done.expect("stream task") {
                (path, Ok(got)) if (got.status, got.text()) == (200, path.clone()) => {}
                (path, Ok(got)) => wrong.push(format!("{path}: {} {}", got.status, got.text())),
                (path, Err(e)) => wrong.push(format!("{path}: {e}")),
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "{} wrong:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
    let opened = up.connections();
    println!(
        "{} requests over one h2 connection opened {opened} upstream connections",
        STREAMS * ROUNDS
    );
    // A round can need a connection per stream, and a thread keeps 64 idle ones per server, so
    // even with every round fully concurrent the rounds after the first open at most 36 each:
    // 100 + 4 * 36 = 244 for 500 requests. Without pooling it would be 500.
    assert!(
        opened * 2 <= STREAMS * ROUNDS,
        "{} requests in rounds of {STREAMS} concurrent streams opened {opened} upstream connections",
        STREAMS * ROUNDS
    );
}

// ---------------------------------------------------------------------------------------------
// What the upstream gets, what the client gets
// ---------------------------------------------------------------------------------------------

/// Sends a GET with three `cookie` fields, `te: trailers`, a client X-Forwarded-For and no Host,
/// and checks the head the echo upstream `up` got.
async fn check_forwarded_head(h2: &H2, up: &Upstream, proto: &str) {
    let path = format!("/headers/{proto}?x=1");
    let req = h2
        .request("GET", &path)
        .header("cookie", "a=1")
        .header("cookie", "b=2")
        .header("cookie", "c=3")
        .header("te", "trailers")
        .header("x-forwarded-for", "10.0.0.1")
        .header("x-end-to-end", "kept")
        .body(())
        .unwrap();
    let got = h2.send(req, &[]).await;
    assert_eq!(got.status, 200, "{proto}");
    let seen = up.state.seen();
    let seen = seen.iter().find(|s| s.uri == path).expect("seen upstream");
    let header = |name: &str| seen.headers.get(name).cloned().unwrap_or_default();
    let authority = h2.authority();
    for (name, want) in [
        ("cookie", "a=1; b=2; c=3"),
        ("host", authority),
        ("x-forwarded-for", "10.0.0.1, 127.0.0.1"),
        ("x-real-ip", "127.0.0.1"),
        ("x-forwarded-proto", proto),
        ("x-forwarded-host", authority),
        ("x-end-to-end", "kept"),
    ] {
        assert_eq!(
            header(name),
            [want],
            "{proto}: `{name}` upstream: {:?}",
            seen.headers
        );
    }
    assert_eq!(
        header("te"),
        Vec::<String>::new(),
        "{proto}: `te` reached the upstream"
    );
    assert_eq!(seen.version, "HTTP/1.1", "{proto}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_head_joins_cookies_takes_host_from_authority_and_sets_x_forwarded() {
    let up = Upstream::echo("echo").await;
    let (proxy, cert) = tls_proxy(&app_yaml(&up.host_port())).await;
    check_forwarded_head(&H2::tls(&proxy, &cert).await, &up, "https").await;
    check_forwarded_head(&H2::h2c(&proxy).await, &up, "http").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn x_request_id_is_kept_or_generated_and_the_same_both_ways_over_h2() {
    let up = request_id_upstream().await;
    let (proxy, cert) = tls_proxy(&app_yaml(&up.host_port())).await;
    let h2 = H2::tls(&proxy, &cert).await;
    let with_id = |id: &str| {
        let req = h2.request("GET", "/id");
        if id.is_empty() {
            req
        } else {
            req.header("x-request-id", id)
        }
        .body(())
        .unwrap()
    };

    let got = h2.send(with_id("client-id.42_x"), &[]).await;
    assert_eq!(got.status, 200);
    assert_eq!(got.all("x-request-id"), ["client-id.42_x"]);
    assert_eq!(got.text(), "client-id.42_x", "what the upstream got");

    let mut generated = Vec::new();
    // None twice, one with a space, one too long: each gets an id of its own.
    for sent in [
        String::new(),
        String::new(),
        "has space".into(),
        "a".repeat(129),
    ] {
        let got = h2.send(with_id(&sent), &[]).await;
        assert_eq!(got.status, 200);
        let ids = got.all("x-request-id");
        generated.push(generated_id(&ids, &got.text(), &format!("sent {sent:?}")));
    }
    generated.sort();
    generated.dedup();
    assert_eq!(generated.len(), 4, "each request gets an id of its own");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_answers_over_h2_leave_the_connection_usable() {
    let live = Upstream::named("live").await;
    let sick = Upstream::builder("sick").health(500).start().await;
    let slow = Upstream::builder("slow")
        .delay(Duration::from_secs(3))
        .start()
        .await;
    let garbage = RawUpstream::start(|mut s: TcpStream| async move {
        let mut buf = Vec::new();
        if next_request(&mut s, &mut buf).await.is_some() {
            let _ = s.write_all(b"SSH-2.0-OpenSSH_9.6\r\n\r\nhello").await;
            // Held open, so only the garbage can end the answer.
            let _ = read_more(&mut s, &mut buf).await;
        }
    })
    .await;
    let yaml = format!(
        "upstreams:\n\
         \x20 live: {{ servers: [{}] }}\n\
         \x20 sick:\n    servers: [{}]\n    health: {{ path: /health, interval: 200ms, timeout: 500ms }}\n\
         \x20 dead: {{ servers: [{}], retries: 0, connect_timeout: 1s }}\n\
         \x20 slow: {{ servers: [{}], read_timeout: 300ms }}\n\
         \x20 garbage: {{ servers: [{}], read_timeout: 5s }}\n\
         routes:\n\
         \x20 - {{ path: /sick, upstream: sick }}\n\
         \x20 - {{ path: /dead, upstream: dead }}\n\
         \x20 - {{ path: /slow, upstream: slow }}\n\
         \x20 - {{ path: /garbage, upstream: garbage }}\n\
         \x20 - {{ path: /, upstream: live }}\n",
        live.host_port(),
        sick.host_port(),
        dead_addr(),
        slow.host_port(),
        garbage.host_port()
    );
    let (proxy, cert) = tls_proxy(&yaml).await;
    let h2 = H2::tls(&proxy, &cert).await;

    for (path, status) in [
        ("/sick/a", 503),
        ("/dead/a", 502),
        ("/slow/a", 504),
        ("/garbage/a", 502),
    ] {
        let started = Instant::now();
        let got = h2.get(path).await;
        assert_eq!(got.status, status, "{path}: {}", got.text());
        assert!(
            !got.text().contains("127.0.0.1"),
            "{path}: names internals: {}",
            got.text()
        );
        assert!(!got.text().contains("hello"), "{path}: garbage passed on");
        if status == 503 {
            assert!(
                got.header("retry-after").is_some(),
                "{path}: {:?}",
                got.headers
            );
        }
        if status == 504 {
            let took = started.elapsed();
            assert!(
                took < Duration::from_secs(2),
                "{path}: the 504 took {took:?}"
            );
        }
        let after = h2.get("/live/after").await;
        assert_eq!(
            (after.status, after.text()),
            (200, "live".into()),
            "after {path}"
        );
    }
    assert_eq!(sick.requests(), 0, "the unhealthy server got a request");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hsts_is_added_on_https_routes_that_ask_and_an_upstream_one_passes_otherwise() {
    let up = keep_alive_upstream(|req| {
        if req.path.ends_with("/own") {
            let body = "own";
            format!(
                "HTTP/1.1 200 OK\r\nStrict-Transport-Security: max-age=5\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .into_bytes()
        } else {
            ok(&req.path)
        }
    })
    .await;
    let yaml = format!(
        "upstreams:\n  app:\n    servers: [{}]\nroutes:\n\
         \x20 - {{ path: /hsts, upstream: app, hsts: true }}\n  - {{ path: /, upstream: app }}\n",
        up.host_port()
    );
    let (proxy, cert) = tls_proxy(&yaml).await;
    let tls = H2::tls(&proxy, &cert).await;
    let h2c = H2::h2c(&proxy).await;
    const OURS: &str = "max-age=31536000";

    let hsts = |got: &Got| got.all("strict-transport-security").join(" | ");
    for (h2, path, want) in [
        (&tls, "/hsts/plain", OURS),
        // The route's value replaces the upstream's: one header, not two.
        (&tls, "/hsts/own", OURS),
        (&tls, "/plain", ""),
        (&tls, "/own", "max-age=5"),
        // Only https responses get HSTS.
        (&h2c, "/hsts/plain", ""),
    ] {
        let got = h2.get(path).await;
        assert_eq!(got.status, 200, "{} {path}", h2.base);
        assert_eq!(hsts(&got), want, "{} {path}", h2.base);
    }
}
