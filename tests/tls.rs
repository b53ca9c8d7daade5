//! TLS termination: certificates chosen by SNI from `tls.certs`, the self-signed fallback,
//! HTTP/2 and HTTP/1.1 over TLS (ALPN), h2c on the plain listener, and the http -> https redirect.

mod common;

use common::tls::{handshake, https_client_builder, TestCert};
use common::{client_builder, Proxy, Upstream};
use reqwest::Version;

/// Two certificates, `a.test` and `b.test`, in `<dir>/certs` as `a.crt`+`a.key`, `b.crt`+`b.key`.
struct Certs {
    a: TestCert,
    b: TestCert,
}

impl Certs {
    fn new() -> Certs {
        Certs {
            a: TestCert::new(&["a.test"]),
            b: TestCert::new(&["b.test"]),
        }
    }
}

/// A proxy with an https listener whose `certs` hold a.test and b.test, routing `/` to `up`.
async fn tls_proxy(certs: &Certs, up: &Upstream, tls_block: Option<&str>) -> Proxy {
    let builder = Proxy::builder().https();
    certs.a.write(&builder.dir().join("certs"), "a");
    certs.b.write(&builder.dir().join("certs"), "b");
    let builder = match tls_block {
        Some(block) => builder.tls(block),
        None => builder,
    };
    builder
        .yaml(&format!(
            "upstreams:\n  app:\n    servers: [{}]\nroutes:\n  - path: /\n    upstream: app\n",
            up.host_port()
        ))
        .start()
        .await
}

#[tokio::test]
async fn sni_selects_the_matching_certificate() {
    let certs = Certs::new();
    let up = Upstream::named("app").await;
    let proxy = tls_proxy(&certs, &up, None).await;
    let addr = proxy.https_addr();

    let a = handshake(addr, "a.test", &[]).await.unwrap();
    assert!(
        a.leaf() == &certs.a.der,
        "SNI a.test did not get the a.test certificate\n{}",
        proxy.stderr()
    );
    let b = handshake(addr, "b.test", &[]).await.unwrap();
    assert!(
        b.leaf() == &certs.b.der,
        "SNI b.test did not get the b.test certificate"
    );

    // Name matching ignores case, as DNS does.
    let upper = handshake(addr, "A.TEST", &[]).await.unwrap();
    assert!(
        upper.leaf() == &certs.a.der,
        "SNI A.TEST did not get the a.test certificate"
    );
}

#[tokio::test]
async fn unknown_or_missing_sni_gets_the_self_signed_fallback() {
    let certs = Certs::new();
    let up = Upstream::named("app").await;
    let proxy = tls_proxy(&certs, &up, None).await;
    let addr = proxy.https_addr();

    let other = handshake(addr, "c.test", &[]).await.unwrap();
    assert!(
        other.leaf() != &certs.a.der && other.leaf() != &certs.b.der,
        "c.test got a configured certificate"
    );

    // An IP address as the server name sends no SNI at all.
    let no_sni = handshake(addr, "127.0.0.1", &[]).await.unwrap();
    assert!(
        no_sni.leaf() != &certs.a.der && no_sni.leaf() != &certs.b.der,
        "no SNI got a configured certificate"
    );

    // The fallback still carries requests.
    let client = client_builder()
        .danger_accept_invalid_certs(true)
        .resolve("c.test", addr)
        .build()
        .unwrap();
    let resp = client
        .get(format!("https://c.test:{}/x", addr.port()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(resp.text().await.unwrap(), "app");
}

#[tokio::test]
async fn http2_and_http1_over_tls() {
    let certs = Certs::new();
    let up = Upstream::named("app").await;
    let proxy = tls_proxy(&certs, &up, None).await;
    let addr = proxy.https_addr();

    // ALPN offers h2 first: the server must pick it.
    let hs = handshake(addr, "a.test", &[b"h2", b"http/1.1"])
        .await
        .unwrap();
    assert_eq!(
        hs.alpn.as_deref(),
        Some(&b"h2"[..]),
        "ALPN did not select h2"
    );

    let h2 = https_client_builder(&[&certs.a, &certs.b], &["a.test", "b.test"], addr)
        .build()
        .unwrap();
    for name in ["a.test", "b.test"] {
        let resp = h2
            .get(format!("https://{name}:{}/hello", addr.port()))
            .send()
            .await
            .unwrap_or_else(|e| panic!("https GET {name}: {e}\n{}", proxy.stderr()));
        assert_eq!(resp.version(), Version::HTTP_2, "{name}: not HTTP/2");
        assert_eq!(resp.status().as_u16(), 200);
        assert_eq!(resp.text().await.unwrap(), "app");
    }

    let h1 = https_client_builder(&[&certs.a], &["a.test"], addr)
        .http1_only()
        .build()
        .unwrap();
    let resp = h1
        .get(format!("https://a.test:{}/hello", addr.port()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.version(), Version::HTTP_11);
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(resp.text().await.unwrap(), "app");

    // Many requests multiplexed on one h2 connection.
    let url = format!("https://a.test:{}/many", addr.port());
    let answers = futures_util::future::join_all((0..20).map(|_| h2.get(&url).send())).await;
    for resp in answers {
        let resp = resp.unwrap();
        assert_eq!(resp.version(), Version::HTTP_2);
        assert_eq!(resp.status().as_u16(), 200);
    }
}

#[tokio::test]
async fn h2c_prior_knowledge_on_the_plain_listener() {
    let up = Upstream::named("app").await;
    let proxy = Proxy::start(&format!(
        "upstreams:\n  app:\n    servers: [{}]\nroutes:\n  - path: /\n    upstream: app\n",
        up.host_port()
    ))
    .await;

    let h2c = client_builder().http2_prior_knowledge().build().unwrap();
    let resp = h2c
        .get(proxy.url("/h2c"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("h2c GET: {e}\n{}", proxy.stderr()));
    assert_eq!(resp.version(), Version::HTTP_2);
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(resp.text().await.unwrap(), "app");

    // HTTP/1.1 shares the port.
    let resp = proxy.get("/h1").await;
    assert_eq!(resp.version(), Version::HTTP_11);
    assert_eq!(resp.text().await.unwrap(), "app");
}

#[tokio::test]
async fn http_redirects_to_https_keeping_host_path_and_query() {
    let certs = Certs::new();
    let up = Upstream::named("app").await;
    let proxy = tls_proxy(&certs, &up, Some("  certs: certs\n  redirect_http: true\n")).await;
    let https_port = proxy.https_addr().port();

    for host in ["a.test", "a.test:1234", "A.Test", "127.0.0.1:1234"] {
        let resp = proxy.get_host(host, "/some/path?x=1&y=two").await;
        assert_eq!(resp.status().as_u16(), 308, "Host {host}");
        let location = resp
            .headers()
            .get("location")
            .expect("Location header")
            .to_str()
            .unwrap()
            .to_string();
        let expected = format!(
            "https://{}:{https_port}/some/path?x=1&y=two",
            host.split(':').next().unwrap()
        );
        assert!(
            location.eq_ignore_ascii_case(&expected),
            "Host {host}: Location {location}, expected {expected}"
        );
    }
    assert_eq!(
        up.requests(),
        0,
        "a redirected request reached the upstream"
    );

    // The https side serves the route.
    let client = https_client_builder(&[&certs.a], &["a.test"], proxy.https_addr())
        .build()
        .unwrap();
    let resp = client
        .get(format!("https://a.test:{https_port}/some/path?x=1"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(resp.text().await.unwrap(), "app");
}

#[tokio::test]
async fn redirect_is_the_default_when_https_is_set() {
    let certs = Certs::new();
    let up = Upstream::named("app").await;
    let proxy = tls_proxy(&certs, &up, Some("  certs: certs\n")).await;
    let resp = proxy.get_host("b.test", "/x?y=1").await;
    assert_eq!(resp.status().as_u16(), 308);
    let location = resp.headers().get("location").expect("Location header");
    assert_eq!(
        location.to_str().unwrap(),
        format!("https://b.test:{}/x?y=1", proxy.https_addr().port())
    );
}

#[tokio::test]
async fn without_redirect_the_http_listener_serves_routes() {
    let certs = Certs::new();
    let up = Upstream::named("app").await;
    let proxy = tls_proxy(
        &certs,
        &up,
        Some("  certs: certs\n  redirect_http: false\n"),
    )
    .await;
    let resp = proxy.get_host("a.test", "/plain").await;
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(resp.text().await.unwrap(), "app");
}
