//! Response compression (`compress` on a route), end to end with curl as the client over
//! HTTP/1.1, h2c and TLS h2, against a real hyper upstream: each encoding decodes to the
//! upstream's body (1 MiB of JSON, streamed), Accept-Encoding q-values choose, Vary is set,
//! what must be left alone is, and an SSE stream keeps its cadence when compressed.

mod common;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::io::AsyncBufReadExt;
use tokio::net::TcpListener;

use common::curl::{curl, decode, Got, Proto, PROTOS};
use common::Proxy;

type Body = BoxBody<Bytes, Infallible>;

const CT: &str = "content-type";

/// About 1 MiB of JSON, the same every time.
fn big_json() -> Bytes {
    let mut s = String::from("[");
    let mut i = 0;
    while s.len() < 1 << 20 {
        if i > 0 {
            s.push(',');
        }
        s.push_str(&format!(
            r#"{{"id":{i},"name":"item-{i}","tags":["alpha","beta"],"score":{}}}"#,
            i * 37 % 1000
        ));
        i += 1;
    }
    s.push(']');
    Bytes::from(s)
}

fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into()).map_err(|e| match e {}).boxed()
}

/// `body` streamed in 16 KiB pieces (chunked: no length announced).
fn streamed(body: Bytes) -> Body {
    let pieces: Vec<Bytes> = body.chunks(16 << 10).map(Bytes::copy_from_slice).collect();
    let stream = futures_util::stream::iter(pieces).map(|b| Ok(Frame::data(b)));
    BodyExt::boxed(StreamBody::new(stream))
}

/// Five events, 200 ms apart.
fn events() -> Body {
    let stream = futures_util::stream::unfold(0u32, |i| async move {
        if i == 5 {
            return None;
        }
        if i > 0 {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let event = format!(
            "id: {i}\ndata: {{\"event\":{i},\"pad\":\"{}\"}}\n\n",
            "x".repeat(64)
        );
        Some((Ok(Frame::data(Bytes::from(event))), i + 1))
    });
    BodyExt::boxed(StreamBody::new(stream))
}

async fn answer(req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let r = Response::builder();
    let long = "compressible text ".repeat(200);
    let resp = match req.uri().path() {
        "/json" => r.header(CT, "application/json").body(streamed(big_json())),
        "/json-cl" => r.header(CT, "application/json").body(full(big_json())),
        "/small" => r
            .header(CT, "application/json")
            .body(full(r#"{"ok":true}"#)),
        "/png" => r.header(CT, "image/png").body(full(vec![7u8; 4096])),
        "/png-big" => r.header(CT, "image/png").body(full(vec![7u8; 16384])),
        "/encoded" => r
            .header(CT, "text/plain")
            .header("content-encoding", "gzip")
            .body(full(vec![1u8; 4096])),
        "/no-transform" => r
            .header(CT, "text/plain")
            .header("cache-control", "public, no-transform")
            .body(full(long)),
        "/etag" => r
            .header(CT, "text/html; charset=utf-8")
            .header("etag", "\"v1\"")
            .header("vary", "Origin")
            .header("accept-ranges", "bytes")
            .body(full(long)),
        "/204" => r.status(204).body(full("")),
        "/304" => r
            .status(304)
            .header(CT, "text/plain")
            .header("etag", "\"v1\"")
            .body(full("")),
        "/range" if req.headers().contains_key("range") => r
            .status(206)
            .header(CT, "text/plain")
            .header("content-range", "bytes 0-9/3600")
            .body(full(long[..10].to_string())),
        "/range" => r.header(CT, "text/plain").body(full(long)),
        "/sse" => r
            .header(CT, "text/event-stream")
            .header("cache-control", "no-cache")
            .body(events()),
        _ => r.status(404).body(full("")),
    };
    Ok(resp.expect("response"))
}

async fn upstream() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service_fn(answer))
                    .await;
            });
        }
    });
    addr
}

async fn proxy() -> Proxy {
    let up = upstream().await;
    Proxy::builder()
        .https()
        .yaml(&format!(
            r#"upstreams:
  app:
    servers: ["{up}"]
routes:
  - path: /
    upstream: app
    compress: true
  - path: /pref
    upstream: app
    strip_prefix: true
    compress: [gzip, br]
  - path: /plain
    upstream: app
    strip_prefix: true
  - path: /custom
    upstream: app
    strip_prefix: true
    compress: [zstd]
    compress_types: [image/png, "*+xml"]
    compress_min_size: 8KiB
"#
        ))
        .start()
        .await
}

fn varies(got: &Got) -> bool {
    got.header("vary")
        .is_some_and(|v| v.contains("accept-encoding"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_encoding_streams_a_megabyte_that_decodes_to_the_upstreams_body() {
    let p = proxy().await;
    let want = big_json();
    for proto in PROTOS {
        for encoding in ["gzip", "br", "zstd"] {
            for path in ["/json", "/json-cl"] {
                let got = curl(
                    &p,
                    proto,
                    path,
                    &["-H", &format!("accept-encoding: {encoding}")],
                )
                .await;
                let at = format!("{proto:?} {path} {encoding}: {}", got.head);
                assert_eq!(got.status(), "200", "{at}");
                assert_eq!(got.header("content-encoding"), Some(encoding), "{at}");
                assert!(varies(&got), "{at}");
                assert_eq!(got.header("content-length"), None, "{at}");
                if let Proto::H1 = proto {
                    assert_eq!(got.header("transfer-encoding"), Some("chunked"), "{at}");
                }
                assert!(
                    got.body.len() < want.len() / 4,
                    "{at}: {} bytes",
                    got.body.len()
                );
                assert!(
                    decode(encoding, &got.body) == want,
                    "{at}: decoded body differs"
                );
            }
        }
    }
    // A client that decodes by itself (curl --compressed offers deflate, gzip, br, zstd).
    let out = tokio::process::Command::new("curl")
        .args(["-sS", "--compressed", "--http1.1", &p.url("/json")])
        .output()
        .await
        .expect("curl");
    assert!(
        out.stdout == want,
        "curl --compressed got {} bytes",
        out.stdout.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accept_encoding_q_values_choose() {
    let p = proxy().await;
    let cases: &[(&str, &str, Option<&str>)] = &[
        ("/json", "gzip, deflate, br, zstd", Some("br")),
        ("/json", "gzip, zstd", Some("zstd")),
        ("/json", "br;q=0, gzip", Some("gzip")),
        ("/json", "gzip;q=0.5, zstd;q=0.9, br;q=0.1", Some("zstd")),
        ("/json", "*", Some("br")),
        ("/json", "*;q=0, gzip;q=0.2", Some("gzip")),
        ("/json", "*;q=0", None),
        ("/json", "identity", None),
        ("/json", "gzip;q=0.5, identity", None),
        ("/json", "deflate", None),
        ("/pref/json", "br, gzip, zstd", Some("gzip")),
        ("/pref/json", "zstd", None),
        ("/pref/json", "gzip;q=0.4, br", Some("br")),
    ];
    for &(path, accept, want) in cases {
        let got = curl(
            &p,
            Proto::H1,
            path,
            &["-H", &format!("accept-encoding: {accept}")],
        )
        .await;
        let at = format!("{path} `{accept}`: {}", got.head);
        assert_eq!(got.header("content-encoding"), want, "{at}");
        assert!(varies(&got), "{at}");
        if let Some(e) = want {
            assert!(decode(e, &got.body) == big_json(), "{at}");
        } else {
            assert!(
                got.body == big_json(),
                "{at}: body not as the upstream sent it"
            );
        }
    }
    let got = curl(&p, Proto::H1, "/json", &[]).await;
    assert_eq!(
        got.header("content-encoding"),
        None,
        "no Accept-Encoding: {}",
        got.head
    );
    assert!(varies(&got), "{}", got.head);
    let got = curl(
        &p,
        Proto::H1,
        "/plain/json",
        &["-H", "accept-encoding: gzip"],
    )
    .await;
    assert_eq!(
        got.header("content-encoding"),
        None,
        "route without compress"
    );
    assert!(
        got.header("vary").is_none(),
        "route without compress: {}",
        got.head
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_is_left_alone() {
    let p = proxy().await;
    let gzip: &[&str] = &["-H", "accept-encoding: gzip, br"];
    for proto in PROTOS {
        let get = |path: &'static str| curl(&p, proto, path, gzip);
        for path in ["/png", "/encoded", "/no-transform"] {
            let got = get(path).await;
            let at = format!("{proto:?} {path}: {}", got.head);
            assert_eq!(
                got.header("content-length"),
                Some(got.body.len().to_string().as_str()),
                "{at}"
            );
            assert!(got.header("vary").is_none(), "{at}");
            assert_ne!(got.header("content-encoding"), Some("br"), "{at}");
        }
        assert_eq!(
            get("/encoded").await.header("content-encoding"),
            Some("gzip")
        );
        assert_eq!(get("/encoded").await.body, vec![1u8; 4096]);

        // Below compress_min_size (512): as it is, but it varies.
        let got = get("/small").await;
        assert_eq!(got.body, br#"{"ok":true}"#, "{proto:?}");
        assert_eq!(got.header("content-encoding"), None, "{proto:?}");
        assert!(varies(&got), "{proto:?}: {}", got.head);

        for path in ["/204", "/304"] {
            let got = get(path).await;
            let at = format!("{proto:?} {path}: {}", got.head);
            assert_eq!(got.status(), &path[1..], "{at}");
            assert_eq!(got.header("content-encoding"), None, "{at}");
            assert!(got.body.is_empty(), "{at}");
        }
        if let Some(etag) = get("/304").await.header("etag") {
            assert_eq!(etag, "\"v1\"", "a 304's ETag stays strong");
        }

        let mut ranged = gzip.to_vec();
        ranged.extend(["-H", "range: bytes=0-9"]);
        let got = curl(&p, proto, "/range", &ranged).await;
        let at = format!("{proto:?} range: {}", got.head);
        assert_eq!(got.status(), "206", "{at}");
        assert_eq!(got.header("content-encoding"), None, "{at}");
        assert_eq!(got.body, b"compressib", "{at}");

        let mut head = gzip.to_vec();
        head.push("-I");
        let got = curl(&p, proto, "/json-cl", &head).await;
        let at = format!("{proto:?} HEAD: {}", got.head);
        assert_eq!(got.header("content-encoding"), None, "{at}");
        assert_eq!(
            got.header("content-length"),
            Some(big_json().len().to_string().as_str()),
            "{at}"
        );
        assert!(varies(&got), "{at}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compressed_heads_weaken_the_etag_and_merge_vary() {
    let p = proxy().await;
    for proto in PROTOS {
        let got = curl(&p, proto, "/etag", &["-H", "accept-encoding: gzip"]).await;
        let at = format!("{proto:?}: {}", got.head);
        assert_eq!(got.header("content-encoding"), Some("gzip"), "{at}");
        assert_eq!(got.header("etag"), Some("w/\"v1\""), "{at}");
        assert_eq!(got.header("vary"), Some("origin, accept-encoding"), "{at}");
        assert_eq!(got.header("accept-ranges"), None, "{at}");
        assert_eq!(
            decode("gzip", &got.body),
            "compressible text ".repeat(200).as_bytes()
        );
        // Not compressed (no acceptable encoding): the strong ETag and Accept-Ranges stay.
        let got = curl(&p, proto, "/etag", &["-H", "accept-encoding: identity"]).await;
        let at = format!("{proto:?}: {}", got.head);
        assert_eq!(got.header("etag"), Some("\"v1\""), "{at}");
        assert_eq!(got.header("vary"), Some("origin, accept-encoding"), "{at}");
        assert_eq!(got.header("accept-ranges"), Some("bytes"), "{at}");
    }
}

/// Each event of a compressed event stream reaches the client when the upstream sends it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compressed_event_stream_keeps_its_cadence() {
    let p = proxy().await;
    for proto in [Proto::H1, Proto::H2c] {
        for encoding in ["gzip", "br", "zstd"] {
            let flag = match proto {
                Proto::H1 => "--http1.1",
                _ => "--http2-prior-knowledge",
            };
            let head = p.dir().join(format!("sse-{proto:?}-{encoding}.head"));
            let mut child = tokio::process::Command::new("curl")
                .args(["-sS", "-N", "--compressed", "--max-time", "20", flag])
                .args(["-H", &format!("accept-encoding: {encoding}"), "-D"])
                .arg(&head)
                .arg(p.url("/sse"))
                .stdout(std::process::Stdio::piped())
                .spawn()
                .expect("curl");
            let start = Instant::now();
            let mut lines = tokio::io::BufReader::new(child.stdout.take().expect("stdout")).lines();
            let mut arrived = Vec::new();
            while let Ok(Some(line)) = lines.next_line().await {
                if line.starts_with("data:") {
                    arrived.push(start.elapsed());
                }
            }
            let ended = start.elapsed();
            let _ = child.wait().await;
            let head = std::fs::read_to_string(&head)
                .unwrap_or_default()
                .to_ascii_lowercase();
            let at = format!("{proto:?} {encoding}: {arrived:?}, ended {ended:?}\n{head}");
            assert!(
                head.contains(&format!("content-encoding: {encoding}")),
                "{at}"
            );
            assert_eq!(arrived.len(), 5, "{at}");
            for (i, t) in arrived.iter().enumerate() {
                // Event i is sent 200 ms * i after the first: it must not wait for the end.
                let before_end = ended.saturating_sub(*t);
                let due = Duration::from_millis(200 * (4 - i as u64));
                assert!(
                    before_end + Duration::from_millis(120) >= due,
                    "event {i}: {at}"
                );
            }
            assert!(
                arrived[4] - arrived[0] >= Duration::from_millis(600),
                "{at}"
            );
        }
    }
}

/// `precompressed: true` on a static route: the `.br`/`.zst`/`.gz` beside a file, chosen by
/// the same Accept-Encoding rule, with Vary; the file itself otherwise.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn precompressed_static_files() {
    let js = "console.log('hello');\n".repeat(100);
    let gz = {
        use std::io::Write;
        let mut w = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        w.write_all(js.as_bytes()).expect("gzip");
        w.finish().expect("gzip")
    };
    let p = Proxy::builder()
        .https()
        .file("www/app.js", &js)
        .file("www/app.js.gz", &gz)
        .file("www/app.js.br", b"pretend brotli")
        .file("www/app.css", "body { color: red }")
        .file("plain/app.js", &js)
        .file("plain/app.js.gz", &gz)
        .yaml(
            "routes:\n  - { path: /s, static: www, precompressed: true }\n  \
             - { path: /p, static: plain }\n",
        )
        .start()
        .await;
    for proto in PROTOS {
        let get = |path: &'static str, accept: &'static str| {
            let header = format!("accept-encoding: {accept}");
            let p = &p;
            async move { curl(p, proto, path, &["-H", &header]).await }
        };
        let got = get("/s/app.js", "gzip, br").await;
        let at = format!("{proto:?}: {}", got.head);
        assert_eq!(got.header("content-encoding"), Some("br"), "{at}");
        assert_eq!(got.body, b"pretend brotli", "{at}");
        assert!(varies(&got), "{at}");
        assert!(
            got.header("content-type")
                .is_some_and(|t| t.contains("javascript")),
            "{at}"
        );

        let got = get("/s/app.js", "br;q=0, gzip").await;
        assert_eq!(got.header("content-encoding"), Some("gzip"), "{}", got.head);
        assert_eq!(decode("gzip", &got.body), js.as_bytes());

        for accept in ["zstd", "identity", "br;q=0, gzip;q=0"] {
            let got = get("/s/app.js", accept).await;
            let at = format!("{proto:?} `{accept}`: {}", got.head);
            assert_eq!(got.header("content-encoding"), None, "{at}");
            assert_eq!(got.body, js.as_bytes(), "{at}");
            assert!(varies(&got), "{at}");
        }

        let got = get("/s/app.css", "br, gzip").await;
        assert_eq!(got.header("content-encoding"), None, "{}", got.head);
        assert!(
            got.header("vary").is_none(),
            "no variant, no Vary: {}",
            got.head
        );

        let got = get("/p/app.js", "gzip").await;
        assert_eq!(
            got.header("content-encoding"),
            None,
            "route without precompressed"
        );
        assert_eq!(got.body, js.as_bytes());

        let got = curl(
            &p,
            proto,
            "/s/app.js",
            &["-I", "-H", "accept-encoding: gzip"],
        )
        .await;
        let at = format!("{proto:?} HEAD: {}", got.head);
        assert_eq!(got.header("content-encoding"), Some("gzip"), "{at}");
        assert_eq!(
            got.header("content-length"),
            Some(gz.len().to_string().as_str()),
            "{at}"
        );
    }
}

/// `compress_types` replaces the default list and `compress_min_size` the default minimum;
/// an HTTP/1.0 client gets nothing compressed (as nginx's `gzip_http_version 1.1`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_overrides_and_http10() {
    let p = proxy().await;
    let zstd: &[&str] = &["-H", "accept-encoding: zstd, gzip"];
    for proto in PROTOS {
        let got = curl(&p, proto, "/custom/png-big", zstd).await;
        let at = format!("{proto:?} png, 16 KiB, listed: {}", got.head);
        assert_eq!(got.header("content-encoding"), Some("zstd"), "{at}");
        assert_eq!(decode("zstd", &got.body), vec![7u8; 16384], "{at}");
        let got = curl(&p, proto, "/custom/png", zstd).await;
        let at = format!("{proto:?} png, 4 KiB, below 8 KiB: {}", got.head);
        assert_eq!(got.header("content-encoding"), None, "{at}");
        assert!(varies(&got), "{at}");
        for path in ["/custom/json", "/custom/etag"] {
            let got = curl(&p, proto, path, zstd).await;
            let at = format!("{proto:?} {path}, not listed: {}", got.head);
            assert_eq!(got.header("content-encoding"), None, "{at}");
            assert!(!varies(&got), "{at}");
        }
    }
    let got = curl(
        &p,
        Proto::H1,
        "/json-cl",
        &["--http1.0", "-H", "accept-encoding: gzip"],
    )
    .await;
    assert_eq!(
        got.header("content-encoding"),
        None,
        "HTTP/1.0: {}",
        got.head
    );
    assert!(varies(&got), "HTTP/1.0: {}", got.head);
    assert_eq!(got.body.len(), big_json().len());
}
