//! TLS posture of the https listener: TLS 1.2 and 1.3 are accepted, TLS 1.1 and 1.0 refused
//! (checked with `openssl s_client`, since rustls cannot speak them), and `hsts: true` adds
//! `Strict-Transport-Security` to https responses only.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::tls::{https_client_builder, TestCert};
use common::{client, Proxy, Upstream};
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ProtocolVersion, RootCertStore, SupportedProtocolVersion};
use tokio::net::TcpStream;

const NAMES: [&str; 2] = ["secure.test", "plain.test"];

/// A proxy with an https listener serving `cert` for both names; `secure.test` has HSTS on.
async fn start(cert: &TestCert, up: &Upstream) -> Proxy {
    let builder = Proxy::builder().https();
    cert.write(&builder.dir().join("certs"), "site");
    builder
        .yaml(&format!(
            "upstreams:\n  app:\n    servers: [{}]\nroutes:\n  - {{ host: secure.test, path: /, upstream: app, hsts: true }}\n  - {{ host: plain.test, path: /, upstream: app }}\n",
            up.host_port()
        ))
        .start()
        .await
}

/// Handshakes offering only `version`; returns the negotiated protocol version.
async fn handshake(
    proxy: &Proxy,
    cert: &TestCert,
    version: &'static SupportedProtocolVersion,
) -> Result<ProtocolVersion, String> {
    let mut roots = RootCertStore::empty();
    roots.add(cert.der.clone()).expect("add root");
    let config =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_protocol_versions(&[version])
            .expect("protocol version")
            .with_root_certificates(roots)
            .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let work = async {
        let tcp = TcpStream::connect(proxy.https_addr())
            .await
            .map_err(|e| e.to_string())?;
        let name = ServerName::try_from("secure.test").unwrap();
        let tls = connector
            .connect(name, tcp)
            .await
            .map_err(|e| e.to_string())?;
        tls.get_ref()
            .1
            .protocol_version()
            .ok_or_else(|| "no protocol version".to_string())
    };
    tokio::time::timeout(Duration::from_secs(10), work)
        .await
        .map_err(|_| "handshake timed out".to_string())?
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accepts_tls_1_2_and_1_3() {
    let cert = TestCert::new(&NAMES);
    let up = Upstream::named("app").await;
    let proxy = start(&cert, &up).await;
    assert_eq!(
        handshake(&proxy, &cert, &rustls::version::TLS13).await,
        Ok(ProtocolVersion::TLSv1_3)
    );
    assert_eq!(
        handshake(&proxy, &cert, &rustls::version::TLS12).await,
        Ok(ProtocolVersion::TLSv1_2)
    );
}

/// Runs `openssl s_client` against the https listener with `flag` (`-tls1_2`, `-tls1_1`, ...)
/// and a cipher list that lets OpenSSL 3 offer the old protocols at all; returns whether the
/// handshake succeeded and the output. `None` when openssl is not installed.
async fn s_client(proxy: &Proxy, flag: &str) -> Option<(bool, String)> {
    let run = tokio::process::Command::new("openssl")
        .args(["s_client", "-connect"])
        .arg(proxy.https_addr().to_string())
        .args([
            "-servername",
            "secure.test",
            flag,
            "-cipher",
            "DEFAULT:@SECLEVEL=0",
        ])
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = match tokio::time::timeout(Duration::from_secs(10), run).await {
        Ok(Ok(out)) => out,
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Ok(Err(e)) => panic!("run openssl: {e}"),
        Err(_) => panic!("openssl s_client {flag} did not finish within 10 s"),
    };
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let negotiated = text.contains("Cipher is ") && !text.contains("Cipher is (NONE)");
    Some((out.status.success() && negotiated, text))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refuses_tls_1_1_and_1_0() {
    let cert = TestCert::new(&NAMES);
    let up = Upstream::named("app").await;
    let proxy = start(&cert, &up).await;

    let Some((ok, text)) = s_client(&proxy, "-tls1_2").await else {
        eprintln!("SKIPPED refuses_tls_1_1_and_1_0: `openssl` is not installed");
        return;
    };
    // The control: this openssl does complete a handshake with the listener.
    assert!(ok, "openssl s_client -tls1_2 failed:\n{text}");

    for flag in ["-tls1_1", "-tls1"] {
        let (ok, text) = s_client(&proxy, flag).await.expect("openssl");
        assert!(!ok, "the https listener accepted {flag}:\n{text}");
        if text.contains("no protocols available") {
            eprintln!("SKIPPED {flag}: this openssl build cannot offer it at all:\n{text}");
            continue;
        }
        // The server refused: an alert (rustls answers `handshake failure`) or a closed
        // connection, not a client-side problem.
        assert!(
            text.contains("alert") || text.contains("unexpected eof"),
            "{flag} failed without a refusal from the server:\n{text}"
        );
    }
    // The listener is still fine afterwards.
    assert_eq!(
        handshake(&proxy, &cert, &rustls::version::TLS13).await,
        Ok(ProtocolVersion::TLSv1_3)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hsts_is_added_on_https_only_and_only_where_asked() {
    let cert = TestCert::new(&NAMES);
    let up = Upstream::named("app").await;
    let proxy = start(&cert, &up).await;
    let https = https_client_builder(&[&cert], &NAMES, proxy.https_addr())
        .build()
        .unwrap();
    let port = proxy.https_addr().port();

    let resp = https
        .get(format!("https://secure.test:{port}/"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let hsts = resp
        .headers()
        .get("strict-transport-security")
        .unwrap_or_else(|| panic!("no HSTS on https with hsts: true: {:?}", resp.headers()))
        .to_str()
        .unwrap()
        .to_string();
    let max_age: u64 = hsts
        .split(';')
        .find_map(|p| p.trim().strip_prefix("max-age="))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("HSTS without a max-age: {hsts}"));
    assert!(max_age >= 86_400, "HSTS max-age {max_age}");

    let resp = https
        .get(format!("https://plain.test:{port}/"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert!(
        !resp.headers().contains_key("strict-transport-security"),
        "HSTS on a route without hsts: {:?}",
        resp.headers()
    );

    // Never on plain http, not even for the hsts route.
    let resp = client()
        .get(proxy.url("/"))
        .header("host", "secure.test")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert!(
        !resp.headers().contains_key("strict-transport-security"),
        "HSTS on plain http: {:?}",
        resp.headers()
    );
}
