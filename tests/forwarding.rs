//! What the upstream sees: X-Forwarded-*, X-Real-IP, the client's Host, no hop-by-hop headers,
//! route `headers`; and that method, path, query, body and the response come through intact.

mod common;

use std::time::Duration;

use common::{client, client_builder, json_body, raw_status, Proxy, Upstream};
use serde_json::Value;

async fn echo_proxy() -> (Proxy, Upstream) {
    let up = Upstream::echo("echo").await;
    let proxy = Proxy::builder()
        .https()
        .yaml(&format!(
            r#"upstreams:
  app:
    servers: [{}]
routes:
  - path: /
    upstream: app
    headers:
      X-Env: prod
      X-Route-Tag: "tagged value"
"#,
            up.host_port()
        ))
        .start()
        .await;
    (proxy, up)
}

/// The header values the upstream saw for `name`.
fn header<'a>(seen: &'a Value, name: &str) -> Vec<&'a str> {
    seen["headers"][name]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_headers_are_set() {
    let (proxy, _up) = echo_proxy().await;
    let resp = client()
        .get(proxy.url("/path?q=1"))
        .header("host", "app.example.com:8080")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let seen = json_body(resp).await;

    assert_eq!(header(&seen, "host"), ["app.example.com:8080"], "{seen}");
    assert_eq!(header(&seen, "x-forwarded-for"), ["127.0.0.1"], "{seen}");
    assert_eq!(header(&seen, "x-forwarded-proto"), ["http"], "{seen}");
    assert_eq!(
        header(&seen, "x-forwarded-host"),
        ["app.example.com:8080"],
        "{seen}"
    );
    assert_eq!(header(&seen, "x-real-ip"), ["127.0.0.1"], "{seen}");
    assert_eq!(seen["uri"], "/path?q=1");
    assert_eq!(seen["method"], "GET");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn x_forwarded_for_is_appended_and_spoofs_are_replaced() {
    let (proxy, _up) = echo_proxy().await;
    let resp = client()
        .get(proxy.url("/"))
        .header("x-forwarded-for", "203.0.113.7, 10.0.0.1")
        .header("x-real-ip", "198.51.100.1")
        .header("x-forwarded-proto", "https")
        .send()
        .await
        .unwrap();
    let seen = json_body(resp).await;
    let xff = header(&seen, "x-forwarded-for").join(", ");
    assert_eq!(xff, "203.0.113.7, 10.0.0.1, 127.0.0.1", "{seen}");
    assert_eq!(header(&seen, "x-real-ip"), ["127.0.0.1"], "{seen}");
    assert_eq!(
        header(&seen, "x-forwarded-proto"),
        ["http"],
        "plain http is http whatever the client claims: {seen}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_requests_are_forwarded_as_https() {
    let (proxy, _up) = echo_proxy().await;
    let https = client_builder()
        .danger_accept_invalid_certs(true)
        .build()
        .unwrap();
    let port = proxy.https.unwrap();
    let resp = https
        .get(format!("https://127.0.0.1:{port}/secure"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("https request: {e:?}\n{}", proxy.stderr()));
    assert_eq!(resp.status().as_u16(), 200);
    let seen = json_body(resp).await;
    assert_eq!(header(&seen, "x-forwarded-proto"), ["https"], "{seen}");
    assert_eq!(
        header(&seen, "x-forwarded-host"),
        [format!("127.0.0.1:{port}").as_str()],
        "{seen}"
    );
    assert_eq!(seen["uri"], "/secure");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hop_by_hop_headers_are_dropped() {
    let (proxy, _up) = echo_proxy().await;
    let req = "GET /hop HTTP/1.1\r\n\
               Host: hop.test\r\n\
               Connection: close, X-Custom-Hop\r\n\
               X-Custom-Hop: secret\r\n\
               Keep-Alive: timeout=5\r\n\
               TE: trailers\r\n\
               Trailer: X-Checksum\r\n\
               Proxy-Authorization: Basic dXNlcjpwYXNz\r\n\
               Proxy-Connection: keep-alive\r\n\
               X-End-To-End: kept\r\n\
               \r\n";
    let raw = proxy.raw(req.as_bytes()).await;
    assert_eq!(raw_status(&raw), 200, "{raw}");
    let body = raw.split("\r\n\r\n").nth(1).unwrap_or("");
    // The echo body may be chunked; take the JSON object out of it.
    let json = &body[body.find('{').unwrap()..=body.rfind('}').unwrap()];
    let seen: Value = serde_json::from_str(json).unwrap();

    for h in [
        "x-custom-hop",
        "keep-alive",
        "te",
        "trailer",
        "proxy-authorization",
        "proxy-connection",
    ] {
        assert!(
            header(&seen, h).is_empty(),
            "hop-by-hop `{h}` reached the upstream: {seen}"
        );
    }
    let conn = header(&seen, "connection").join(",").to_ascii_lowercase();
    assert!(
        !conn.contains("x-custom-hop"),
        "the client's Connection header reached the upstream: {seen}"
    );
    assert_eq!(header(&seen, "x-end-to-end"), ["kept"], "{seen}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_headers_are_set() {
    let (proxy, _up) = echo_proxy().await;
    let resp = client()
        .get(proxy.url("/"))
        .header("x-env", "dev")
        .send()
        .await
        .unwrap();
    let seen = json_body(resp).await;
    assert_eq!(
        header(&seen, "x-env"),
        ["prod"],
        "set, not appended: {seen}"
    );
    assert_eq!(header(&seen, "x-route-tag"), ["tagged value"], "{seen}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn method_body_and_response_pass_through() {
    let (proxy, up) = echo_proxy().await;
    let body = vec![b'x'; 100_000];
    let resp = client()
        .put(proxy.url("/upload?id=7"))
        .header("content-type", "application/octet-stream")
        .header("x-status", "201")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 201, "upstream status comes back");
    assert_eq!(
        resp.headers()["x-server"],
        "echo",
        "upstream headers come back"
    );
    let seen = json_body(resp).await;
    assert_eq!(seen["method"], "PUT");
    assert_eq!(seen["uri"], "/upload?id=7");
    assert_eq!(seen["body_len"], 100_000);
    assert_eq!(up.last_seen().unwrap().body, body);

    // A chunked request body arrives whole too.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        (0..10).map(|i| Ok(vec![b'a' + i as u8; 1000])).collect();
    let resp = client()
        .post(proxy.url("/stream"))
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
            chunks,
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let seen = up.last_seen().unwrap();
    assert_eq!(seen.method, "POST");
    assert_eq!(seen.body.len(), 10_000);
    assert_eq!(&seen.body[..1000], &[b'a'; 1000][..]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_clients_get_many_answers() {
    let (proxy, up) = echo_proxy().await;
    let c = client_builder()
        .pool_max_idle_per_host(1)
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    for i in 0..20 {
        let resp = c.get(proxy.url(&format!("/n/{i}"))).send().await.unwrap();
        assert_eq!(resp.status().as_u16(), 200);
        let seen = json_body(resp).await;
        assert_eq!(seen["uri"], format!("/n/{i}"));
    }
    assert_eq!(up.requests(), 20);
}
