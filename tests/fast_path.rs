//! The HTTP/1.1 fast path (`src/h1`) end to end on the plain listener: the response framings it
//! relays (chunked with trailers, close-delimited, bodiless), pipelined and keep-alive requests
//! on one client connection, per-thread reuse of upstream connections and stale pooled ones,
//! request bodies read whole or streamed, interim responses, bad upstream framing, a connection
//! handed to pingora's path mid-way, and X-Request-Id.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::wire::*;
use common::{Proxy, RawUpstream, Upstream};
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

/// One pool `app` with the given servers, and a catch-all route to it.
fn app_yaml(server: &str) -> String {
    format!(
        "upstreams:\n  app:\n    servers: [{server}]\n    connect_timeout: 1s\n    read_timeout: 5s\n\
         routes:\n  - {{ path: /, upstream: app }}\n"
    )
}

// ---------------------------------------------------------------------------------------------
// Response framings
// ---------------------------------------------------------------------------------------------

/// A chunked response whose framing is split awkwardly across reads.
const CHUNKED_PIECES: [&str; 6] = [
    "5\r\nhel",
    "lo\r\n1a;ext=1\r\nabcdefghijklm",
    "nopqrstuvwxyz\r\n",
    "3\r\n",
    "!!!\r\n0\r\nX-Checksum: 42\r\n",
    "\r\n",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_responses_with_trailers_pass_through_and_the_connection_stays_in_step() {
    let big = payload(200_000, 7);
    let big_body = big.clone();
    let up = RawUpstream::start(move |mut s: TcpStream| {
        let big = big_body.clone();
        async move {
            let mut buf = Vec::new();
            while let Some(req) = next_request(&mut s, &mut buf).await {
                let head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
                match req.path.as_str() {
                    "/chunked" => {
                        let mut pieces: Vec<&[u8]> = vec![&head[..]];
                        pieces.extend(CHUNKED_PIECES.iter().map(|p| p.as_bytes()));
                        write_pieces(&mut s, &pieces).await;
                    }
                    "/big" => {
                        // One chunk far larger than a read, then a small one, in one write.
                        let mut all = head.to_vec();
                        all.extend_from_slice(format!("{:x}\r\n", big.len()).as_bytes());
                        all.extend_from_slice(&big);
                        all.extend_from_slice(b"\r\n3\r\nend\r\n0\r\n\r\n");
                        let _ = s.write_all(&all).await;
                    }
                    path => {
                        let _ = s.write_all(&ok(path)).await;
                    }
                }
            }
        }
    })
    .await;
    let proxy = on_the_fast_path(&app_yaml(&up.host_port())).await;
    let mut conn = Conn::open(&proxy).await;

    let resp = conn.get("/chunked").await;
    assert_eq!(resp.status, 200);
    assert_eq!(resp.header("content-length"), None);
    assert_eq!(resp.text(), "helloabcdefghijklmnopqrstuvwxyz!!!");
    // Passed through verbatim: chunk extension and trailer included.
    assert_eq!(
        String::from_utf8_lossy(&resp.raw),
        CHUNKED_PIECES.concat(),
        "the chunked body as the upstream wrote it"
    );

    let resp = conn.get("/big").await;
    assert_eq!(resp.status, 200);
    let mut want = big.clone();
    want.extend_from_slice(b"end");
    assert!(resp.body == want, "the 200 000-byte chunk arrived altered");

    let resp = conn.get("/after").await;
    assert_ok(&resp, "/after");
    assert_eq!(
        up.connections(),
        1,
        "the upstream connection is reused after each chunked body"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_delimited_response_arrives_whole_and_closes_the_client_connection() {
    let body = payload(100_000, 11);
    let sent = body.clone();
    let up = RawUpstream::start(move |mut s: TcpStream| {
        let body = sent.clone();
        async move {
            let mut buf = Vec::new();
            if next_request(&mut s, &mut buf).await.is_none() {
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
    let mut conn = Conn::open(&proxy).await;

    // The reader takes a body without Content-Length or chunked up to the close, so getting a
    // response at all means the proxy closed the client connection after it.
    let resp = conn.get("/stream").await;
    assert_eq!(resp.status, 200);
    assert_eq!(resp.header("connection"), Some("close"));
    assert_eq!(resp.header("content-length"), None);
    assert_eq!(resp.header("transfer-encoding"), None);
    assert_eq!(resp.body.len(), body.len());
    assert!(
        resp.body == body,
        "the close-delimited body arrived altered"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_204_and_304_responses_end_at_their_head() {
    let up = keep_alive_upstream(|req| match req.path.as_str() {
        // What a GET would get is 1234 bytes; a HEAD answer announces it and sends none.
        "/head" => {
            b"HTTP/1.1 200 OK\r\nContent-Length: 1234\r\nContent-Type: text/plain\r\n\r\n".to_vec()
        }
        "/204" => b"HTTP/1.1 204 No Content\r\nX-Kind: none\r\n\r\n".to_vec(),
        "/304" => {
            b"HTTP/1.1 304 Not Modified\r\nETag: \"v1\"\r\nContent-Length: 50\r\n\r\n".to_vec()
        }
        path => ok(path),
    })
    .await;
    let proxy = on_the_fast_path(&app_yaml(&up.host_port())).await;
    let mut conn = Conn::open(&proxy).await;
    // Well inside the upstream read_timeout (5 s): a proxy waiting for a body fails here.
    let prompt = Duration::from_secs(2);

    conn.send(b"HEAD /head HTTP/1.1\r\nHost: fast.test\r\n\r\n")
        .await;
    let resp = conn.response_within(prompt, true).await;
    assert_eq!(resp.status, 200);
    assert_eq!(resp.header("content-length"), Some("1234"));
    for (path, status) in [("/204", 204), ("/304", 304)] {
        conn.send(get("/after").as_bytes()).await;
        let after = conn.response_within(prompt, false).await;
        assert_ok(&after, "/after");
        conn.send(get(path).as_bytes()).await;
        let resp = conn.response_within(prompt, false).await;
        assert_eq!(resp.status, status, "{path}");
    }
    conn.send(get("/after").as_bytes()).await;
    let after = conn.response_within(prompt, false).await;
    assert_ok(&after, "/after");
    assert!(conn.buf.is_empty(), "bytes after the last response");
    assert_eq!(
        up.connections(),
        1,
        "bodiless answers leave the upstream connection reusable"
    );
}

// ---------------------------------------------------------------------------------------------
// Several requests on one connection
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_requests_are_answered_in_order() {
    let up = keep_alive_upstream(|req| {
        let body = String::from_utf8_lossy(&req.body);
        ok(&format!("{} {} {body}", req.method, req.path))
    })
    .await;
    let proxy = on_the_fast_path(&app_yaml(&up.host_port())).await;
    let mut conn = Conn::open(&proxy).await;

    conn.send(
        b"GET /one HTTP/1.1\r\nHost: fast.test\r\n\r\n\
          POST /two HTTP/1.1\r\nHost: fast.test\r\nContent-Length: 5\r\n\r\nhello\
          GET /three?x=1 HTTP/1.1\r\nHost: fast.test\r\nConnection: close\r\n\r\n",
    )
    .await;
    let mut got = Vec::new();
    for _ in 0..3 {
        let resp = conn.response(false).await;
        got.push((
            resp.status,
            resp.text(),
            resp.header("connection").map(str::to_string),
        ));
    }
    let keep = Some("keep-alive".to_string());
    assert_eq!(
        got,
        [
            (200, "GET /one ".to_string(), keep.clone()),
            (200, "POST /two hello".to_string(), keep),
            (
                200,
                "GET /three?x=1 ".to_string(),
                Some("close".to_string())
            ),
        ]
    );
    assert!(conn.is_closed().await, "open after `Connection: close`");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sequential_requests_reuse_pooled_upstream_connections() {
    let up = keep_alive_upstream(|req| ok(&req.path)).await;
    let proxy = on_the_fast_path(&app_yaml(&up.host_port())).await;
    let mut conn = Conn::open(&proxy).await;
    for i in 0..20 {
        assert_ok(&conn.get(&format!("/seq/{i}")).await, &format!("/seq/{i}"));
    }
    assert_eq!(up.connections(), 1, "20 requests on one client connection");
    drop(conn);

    for c in 0..5 {
        let mut conn = Conn::open(&proxy).await;
        for i in 0..4 {
            let path = format!("/conn/{c}/{i}");
            assert_ok(&conn.get(&path).await, &path);
        }
    }
    // The pool is per proxy thread (2 threads): at most one connection each.
    let opened = up.connections();
    assert!(
        opened <= 2,
        "40 requests over 6 client connections, one after the other, opened {opened} upstream connections"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_closing_after_each_answer_costs_no_get() {
    // Keep-alive by its head (no `Connection: close`), yet closed right after the answer.
    let up = RawUpstream::start(|mut s: TcpStream| async move {
        let mut buf = Vec::new();
        if let Some(req) = next_request(&mut s, &mut buf).await {
            let _ = s.write_all(&ok(&req.path)).await;
        }
    })
    .await;
    let proxy = on_the_fast_path(&app_yaml(&up.host_port())).await;

    let mut failures = Vec::new();
    let mut conn = Conn::open(&proxy).await;
    for i in 0..20 {
        // Ten on one client connection, then ten on fresh ones.
        let path = format!("/{i}");
        let resp = if i < 10 {
            conn.get(&path).await
        } else {
            Conn::open(&proxy).await.get(&path).await
        };
        if (resp.status, resp.text()) != (200, path.clone()) {
            failures.push(format!("{path}: {} {}", resp.status, resp.text()));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_on_a_pooled_connection_the_upstream_drops_is_retried() {
    // Answers the first request of a connection; reads the next one and closes unanswered, the
    // way a server whose keep-alive timer fired as the request arrived does.
    let dropped = Arc::new(AtomicUsize::new(0));
    let count = dropped.clone();
    let up = RawUpstream::start(move |mut s: TcpStream| {
        let count = count.clone();
        async move {
            let mut buf = Vec::new();
            let Some(req) = next_request(&mut s, &mut buf).await else {
                return;
            };
            if s.write_all(&ok(&req.path)).await.is_err() {
                return;
            }
            if next_request(&mut s, &mut buf).await.is_some() {
                count.fetch_add(1, Ordering::SeqCst);
            }
        }
    })
    .await;
    let proxy = on_the_fast_path(&app_yaml(&up.host_port())).await;
    let mut conn = Conn::open(&proxy).await;
    for i in 0..10 {
        let path = format!("/retry/{i}");
        let resp = conn.get(&path).await;
        assert_ok(&resp, &path);
    }
    assert!(
        dropped.load(Ordering::SeqCst) >= 1,
        "the proxy never sent a request on a pooled connection, so nothing was retried"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_bodies_arrive_byte_exact_whether_read_whole_or_streamed() {
    let up = Upstream::echo("echo").await;
    let proxy = on_the_fast_path(&app_yaml(&up.host_port())).await;
    let mut conn = Conn::open(&proxy).await;

    // Up to 64 KiB the body is read whole first; past that it is streamed.
    let sizes = [3_000usize, 64 << 10, (64 << 10) + 1, 1 << 20];
    let bodies: Vec<Vec<u8>> = sizes.iter().map(|&n| payload(n, n as u64)).collect();
    for (i, body) in bodies.iter().enumerate() {
        let head = format!(
            "POST /upload/{i} HTTP/1.1\r\nHost: fast.test\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        conn.send(head.as_bytes()).await;
        if i == 0 {
            // The small body comes after the head, in a read of its own.
            tokio::time::sleep(PIECE_GAP).await;
        }
        conn.send(body).await;
        let resp = conn.response(false).await;
        assert_eq!(resp.status, 200, "POST of {} bytes", body.len());
        let seen: serde_json::Value = serde_json::from_slice(&resp.body).expect("echo JSON");
        assert_eq!(seen["body_len"], body.len(), "POST of {} bytes", body.len());
    }
    // The connection is still in step after the bodies.
    let resp = conn.get("/after").await;
    assert_eq!(resp.status, 200);

    let seen = up.state.seen();
    assert_eq!(seen.len(), bodies.len() + 1);
    for (i, (body, seen)) in bodies.iter().zip(&seen).enumerate() {
        assert_eq!(seen.uri, format!("/upload/{i}"));
        assert!(
            seen.body[..] == body[..],
            "the body of {} bytes arrived altered ({} bytes)",
            body.len(),
            seen.body.len()
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Odd upstream answers
// ---------------------------------------------------------------------------------------------

/// Writes, for each request, the pieces its path names (with [`PIECE_GAP`] between them).
async fn scripted_upstream(script: fn(&str) -> Vec<&'static str>) -> RawUpstream {
    RawUpstream::start(move |mut s: TcpStream| async move {
        let mut buf = Vec::new();
        while let Some(req) = next_request(&mut s, &mut buf).await {
            let pieces: Vec<&[u8]> = script(&req.path).iter().map(|p| p.as_bytes()).collect();
            write_pieces(&mut s, &pieces).await;
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interim_responses_are_dropped_before_the_final_one() {
    let up = scripted_upstream(|path| match path {
        "/together" => vec![
            "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n\
              HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfinal",
        ],
        "/apart" => vec![
            "HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfinal",
        ],
        _ => vec!["HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nafter"],
    })
    .await;
    let proxy = on_the_fast_path(&app_yaml(&up.host_port())).await;
    let mut conn = Conn::open(&proxy).await;
    for path in ["/together", "/apart"] {
        let resp = conn.get(path).await;
        assert_eq!((resp.status, resp.text()), (200, "final".into()), "{path}");
        assert_eq!(resp.header("link"), None, "{path}: the 103's header leaked");
        assert_ok(&conn.get("/after").await, "after");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn final_head_split_after_an_interim_response_is_still_read() {
    // The 103 and the start of the final head come in one read, the head's end in the next.
    let up = scripted_upstream(|_| {
        vec![
            "HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n\
              HTTP/1.1 200 OK\r\nContent-Length: 5\r\n",
            "\r\nfinal",
        ]
    })
    .await;
    let proxy = on_the_fast_path(&app_yaml(&up.host_port())).await;
    let mut conn = Conn::open(&proxy).await;
    assert_ok(&conn.get("/split").await, "final");
}

/// Upstream answers by path that no framing rule makes sense of.
const MALFORMED: [(&str, &str); 6] = [
    (
        "/two-lengths",
        "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
    ),
    (
        "/length-list",
        "HTTP/1.1 200 OK\r\nContent-Length: 5, 6\r\n\r\nhello!",
    ),
    (
        "/bad-length",
        "HTTP/1.1 200 OK\r\nContent-Length: -5\r\n\r\nhello",
    ),
    ("/garbage", "SSH-2.0-OpenSSH_9.6\r\n\r\nhello"),
    (
        "/unasked-101",
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\nConnection: upgrade\r\n\r\nhello",
    ),
    (
        "/bad-chunk",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
    ),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_upstream_responses_are_502() {
    let up = RawUpstream::start(|mut s: TcpStream| async move {
        let mut buf = Vec::new();
        let Some(req) = next_request(&mut s, &mut buf).await else {
            return;
        };
        let answer = MALFORMED.iter().find(|(path, _)| *path == req.path).map_or(
            "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
            |(_, a)| *a,
        );
        let _ = s.write_all(answer.as_bytes()).await;
        // Held open until the proxy is done, so only the framing can end the answer.
        let _ = read_more(&mut s, &mut buf).await;
    })
    .await;
    let proxy = on_the_fast_path(&app_yaml(&up.host_port())).await;

    let mut wrong = Vec::new();
    for (path, _) in MALFORMED {
        let resp = Conn::open(&proxy).await.get(path).await;
        if resp.status != 502 || resp.text().contains("hello") {
            wrong.push(format!(
                "{path}: {} {:?} {}",
                resp.status,
                resp.headers,
                resp.text()
            ));
        }
    }
    assert!(wrong.is_empty(), "not a clean 502:\n{}", wrong.join("\n"));
    // A well-formed answer still goes through.
    let resp = Conn::open(&proxy).await.get("/fine").await;
    assert_ok(&resp, "ok");
}

// ---------------------------------------------------------------------------------------------
// Handoff to pingora's path, request ids
// ---------------------------------------------------------------------------------------------

async fn upstream_and_static_proxy(up: &RawUpstream) -> Proxy {
    Proxy::builder()
        .server(FAST)
        .file("site/hello.txt", "hello from disk")
        .yaml(&format!(
            "upstreams:\n  app:\n    servers: [{}]\n    read_timeout: 5s\n\
             routes:\n  - {{ path: /static, static: ./site }}\n  - {{ path: /, upstream: app }}\n",
            up.host_port()
        ))
        .start()
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_static_request_mid_connection_hands_over_and_later_requests_still_work() {
    let up = keep_alive_upstream(|req| ok(&format!("upstream {}", req.path))).await;
    let proxy = upstream_and_static_proxy(&up).await;
    let mut conn = Conn::open(&proxy).await;

    let first = conn.get("/api/1").await;
    assert_ok(&first, "upstream /api/1");
    let second = conn.get("/static/hello.txt").await;
    assert_ok(&second, "hello from disk");
    let third = conn.get("/api/3").await;
    assert_ok(&third, "upstream /api/3");
    let fourth = conn.get("/static/hello.txt").await;
    assert_eq!(fourth.status, 200);
}

/// Pipelined requests across a handoff: the second only exists in the bytes the fast path put
/// back for pingora, and pingora (with pipelining on) hands the third on to the next request.
/// Each is answered right, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_requests_across_a_handoff_are_all_answered_in_order() {
    let up = keep_alive_upstream(|req| ok(&format!("upstream {}", req.path))).await;
    let proxy = upstream_and_static_proxy(&up).await;
    let mut conn = Conn::open(&proxy).await;

    conn.send(
        format!(
            "{}{}{}",
            get("/api/1"),
            get("/static/hello.txt"),
            get("/api/3")
        )
        .as_bytes(),
    )
    .await;
    let want = ["upstream /api/1", "hello from disk", "upstream /api/3"];
    for want in want {
        assert_ok(&conn.response(false).await, want);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn x_request_id_is_kept_or_generated_and_sent_both_ways() {
    let up = request_id_upstream().await;
    let proxy = on_the_fast_path(&app_yaml(&up.host_port())).await;
    let mut conn = Conn::open(&proxy).await;

    conn.send(b"GET /a HTTP/1.1\r\nHost: fast.test\r\nX-Request-Id: client-id.42_x\r\n\r\n")
        .await;
    let resp = conn.response(false).await;
    assert_eq!(resp.status, 200);
    assert_eq!(values(&resp.headers, "x-request-id"), ["client-id.42_x"]);
    assert_eq!(resp.text(), "client-id.42_x", "what the upstream got");

    let mut generated = Vec::new();
    for request in [
        get("/none"),
        get("/none"),
        // Not printable ASCII (a space), and too long: both replaced.
        "GET /bad HTTP/1.1\r\nHost: fast.test\r\nX-Request-Id: has space\r\n\r\n".to_string(),
        format!(
            "GET /long HTTP/1.1\r\nHost: fast.test\r\nX-Request-Id: {}\r\n\r\n",
            "a".repeat(129)
        ),
    ] {
        conn.send(request.as_bytes()).await;
        let resp = conn.response(false).await;
        assert_eq!(resp.status, 200);
        let ids = values(&resp.headers, "x-request-id");
        generated.push(generated_id(&ids, &resp.text(), &format!("{request:?}")));
    }
    generated.sort();
    generated.dedup();
    assert_eq!(generated.len(), 4, "each request gets an id of its own");
}

/// HTTP/1.1 over TLS takes the fast path too: the upstream is told `https`, the route's HSTS is
/// added, and a request for pingora's path mid-connection (a static file) is answered through
/// the same TLS stream, its bytes put back, before the connection goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_http1_takes_the_fast_path_and_hands_over_through_tls() {
    let up = keep_alive_upstream(|req| {
        let proto = values(&req.headers, "x-forwarded-proto").join(",");
        ok(&format!("upstream {} {proto}", req.path))
    })
    .await;
    let cert = common::tls::TestCert::new(&["fast.test"]);
    let builder = Proxy::builder()
        .server(FAST)
        .https()
        .file("site/hello.txt", "hello from disk");
    cert.write(&builder.dir().join("certs"), "fast");
    let proxy = builder
        .yaml(&format!(
            "upstreams:\n  app:\n    servers: [{}]\n    read_timeout: 5s\n\
             routes:\n  - {{ path: /static, static: ./site }}\n  - {{ path: /, upstream: app, hsts: true }}\n",
            up.host_port()
        ))
        .start()
        .await;
    let mut conn = Conn::open_tls(&proxy, &cert).await;

    let first = conn.get("/api/1").await;
    assert_ok(&first, "upstream /api/1 https");
    assert_eq!(
        values(&first.headers, "strict-transport-security"),
        ["max-age=31536000"]
    );
    assert_ok(&conn.get("/static/hello.txt").await, "hello from disk");
    assert_ok(&conn.get("/api/3").await, "upstream /api/3 https");
    // After the hand-over the connection stays with pingora, whose upstream pool is its own.
    assert!(
        up.connections() <= 2,
        "{} upstream connections",
        up.connections()
    );
}
