//! Certificates reloaded from disk: a replaced `a.crt`/`a.key` is served to the next handshake
//! without a restart, and a replacement that does not parse keeps the last good one in service.

mod common;

use std::time::Duration;

use common::reload::write_atomic;
use common::tls::{handshake, TestCert};
use common::{wait_until, Proxy, Upstream};

const WAIT: Duration = Duration::from_secs(5);

/// A proxy with an https listener whose `certs` dir holds `cert` as `a.crt` + `a.key`.
async fn proxy_with(cert: &TestCert, up: &Upstream) -> Proxy {
    let builder = Proxy::builder().https();
    cert.write(&builder.dir().join("certs"), "a");
    builder
        .yaml(&format!(
            "upstreams:\n  app:\n    servers: [{}]\nroutes:\n  - path: /\n    upstream: app\n",
            up.host_port()
        ))
        .start()
        .await
}

/// Replaces `a.crt` and `a.key` in the proxy's `certs` dir (each file atomically).
fn replace(proxy: &Proxy, cert_pem: &str, key_pem: &str) {
    let dir = proxy.dir().join("certs");
    write_atomic(&dir.join("a.key"), key_pem);
    write_atomic(&dir.join("a.crt"), cert_pem);
}

/// Whether the next handshake for `a.test` gets `cert`.
async fn serves(proxy: &Proxy, cert: &TestCert) -> bool {
    match handshake(proxy.https_addr(), "a.test", &[]).await {
        Ok(h) => h.leaf() == &cert.der,
        Err(_) => false,
    }
}

/// Reloads run so far, good or bad.
async fn reload_attempts(proxy: &Proxy) -> f64 {
    proxy.reloads("ok").await + proxy.reloads("error").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replaced_certificate_is_served_without_restart() {
    let up = Upstream::named("app").await;
    let first = TestCert::new(&["a.test"]);
    let mut proxy = proxy_with(&first, &up).await;
    let pid = proxy.pid();
    assert!(serves(&proxy, &first).await, "{}", proxy.stderr());

    let second = TestCert::new(&["a.test"]);
    assert_ne!(first.der, second.der);
    replace(&proxy, &second.cert_pem, &second.key_pem);
    assert!(
        wait_until(WAIT, || serves(&proxy, &second)).await,
        "the replaced certificate is not served within {WAIT:?}\n{}",
        proxy.stderr()
    );
    assert!(proxy.try_exit().is_none(), "no restart");
    assert_eq!(proxy.pid(), pid);

    // And a full request over the new certificate, verified against it.
    let client = common::tls::https_client_builder(&[&second], &["a.test"], proxy.https_addr())
        .build()
        .unwrap();
    let resp = client
        .get(format!("https://a.test:{}/", proxy.https_addr().port()))
        .send()
        .await
        .unwrap_or_else(|e| panic!("https GET with the new cert: {e}\n{}", proxy.stderr()));
    assert_eq!(resp.status().as_u16(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_replacement_keeps_the_last_good_certificate() {
    let up = Upstream::named("app").await;
    let good = TestCert::new(&["a.test"]);
    let proxy = proxy_with(&good, &up).await;
    assert!(serves(&proxy, &good).await, "{}", proxy.stderr());

    let before = reload_attempts(&proxy).await;
    replace(
        &proxy,
        "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n",
        "garbage, not a key\n",
    );
    // Wait until the change was looked at (a reload ran, ok or not).
    assert!(
        wait_until(WAIT, || async { reload_attempts(&proxy).await > before }).await,
        "the certificate directory change was not noticed\n{}",
        proxy.stderr()
    );
    for _ in 0..3 {
        let h = handshake(proxy.https_addr(), "a.test", &[])
            .await
            .unwrap_or_else(|e| panic!("{e}\n{}", proxy.stderr()));
        assert!(
            h.leaf() == &good.der,
            "after a garbage replacement a.test no longer gets the last good certificate\n{}",
            proxy.stderr()
        );
    }

    // A good file again is picked up.
    let next = TestCert::new(&["a.test"]);
    replace(&proxy, &next.cert_pem, &next.key_pem);
    assert!(
        wait_until(WAIT, || serves(&proxy, &next)).await,
        "a valid certificate after the garbage one is not served\n{}",
        proxy.stderr()
    );
}
